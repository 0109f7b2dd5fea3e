//! What the node owes a session: one entry per batch sent, oldest first,
//! and the pure function that reads the node's answers against them.
//!
//! The client direction appends an entry when it writes a batch to the
//! node ([`Owed::send`]); the node direction hands every message it
//! inspects to [`Owed::message`] or, for ReadyForQuery, [`Owed::ready`],
//! which say what to do with it (relay it, hide it, put a rule's notice
//! ahead of it) and give back the batches that ended. Everything else the
//! session needs to know of the node is read from here: whether it owes
//! anything ([`Owed::settled`]), the transaction status (kept once, here),
//! whether the catalog copy may answer, what the watchdog watches, and
//! whether the connection is fit to keep.
//!
//! No sockets, no clock, no locks: the session keeps it behind one mutex
//! ([`NodeProgress`]) and the unit tests below feed
//! it tags.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::catalog::Freshness;
use crate::classify::Fingerprint;
use crate::protocol::backend::{self, TransactionStatus};
use crate::protocol::sqlstate;

/// A client that pipelines without reading its answers is stopped by
/// backpressure, but not before the sockets' buffers hold many small
/// batches: beyond this many entries, new batches join the last one
/// (their answers are still counted; only their separate timings are lost).
const MAX_ENTRIES: usize = 4096;

/// Whose batch an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// The login, ended by the first ReadyForQuery, which nobody asked for.
    Startup,
    /// The client's.
    Client,
    /// sluice's own (a Vertica session's hidden `BEGIN` and savepoints):
    /// the client sees none of its answers, errors included, unless FATAL.
    Hidden,
}

/// The statement a batch executes, for statistics and the watchdog.
#[derive(Clone, Debug)]
pub(super) struct Execution {
    pub fingerprint: Fingerprint,
    /// Its text (the first statement's, when the batch runs several).
    pub text: Arc<str>,
    /// The watchdog cancels it after this long, in the name of this rule.
    pub budget: Option<(Duration, Arc<str>)>,
}

/// What a batch sent to the node will be answered with.
#[derive(Debug, Default)]
pub(super) struct Sent {
    /// ReadyForQuery answers that end it (its Queries and Syncs); 0 for a
    /// batch ending at a Flush, whose answers end with the next batch's.
    pub readies: u32,
    /// Leading ParseCompletes answering Parses sluice sent ahead of it.
    pub hidden_parse_completes: u32,
    /// CloseCompletes answering Closes sluice added to it.
    pub hidden_close_completes: u32,
    /// It changes the catalog: the copy may not answer until it commits.
    pub ddl: bool,
    /// It runs under a savepoint of sluice's (a Vertica session in a
    /// transaction): when it fails, the transaction goes on.
    pub statement_level: bool,
    pub execution: Option<Execution>,
    /// sluice's own answer to part of the batch (a rule's rejection of what
    /// followed a Flush), in the client's terms: it goes just ahead of the
    /// batch's ReadyForQuery, after the node's answers to what it holds.
    pub answer_ahead: Option<bytes::Bytes>,
}

/// One batch whose answers have not all arrived.
#[derive(Debug)]
struct Owing {
    id: u64,
    kind: Kind,
    sent: Sent,
    started: Instant,
    /// The watchdog sent a cancel for it.
    fired: bool,
    rows: u64,
    bytes: u64,
    error: bool,
}

/// A batch whose answers have all arrived, to be recorded once the client
/// has them.
#[derive(Debug)]
pub(super) struct Done {
    pub kind: Kind,
    pub started: Instant,
    pub execution: Option<Execution>,
    /// Rows from its CommandComplete tags.
    pub rows: u64,
    /// Bytes of its answer as the client got them.
    pub bytes: u64,
    pub error: bool,
    /// The watchdog cancelled it.
    pub cancelled: bool,
}

/// What to do with a message from the node (other than ReadyForQuery).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Pass it on to the client.
    Relay,
    /// It answers something sluice sent: the client must not see it.
    Hide,
    /// The node's 57014 for a query the watchdog cancelled: a notice
    /// naming this rule goes just ahead of it.
    CancelledBy(Arc<str>),
}

/// What to do with a ReadyForQuery.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Ready {
    /// The status the client is shown.
    pub shown: TransactionStatus,
    /// It ends a batch of sluice's own: the client must not see it.
    pub hide: bool,
    /// A catalog change committed: the copy is stale for this database.
    pub catalog_changed: bool,
    /// The watchdog must look again: the running batch changed and a
    /// budget came or went with it.
    pub rewatch: bool,
    /// sluice's own answer to write just ahead of this ReadyForQuery.
    pub answer_ahead: Option<bytes::Bytes>,
}

/// The watchdog's view of the running batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Running {
    pub id: u64,
    pub deadline: Instant,
    pub budget: Duration,
    pub rule: Arc<str>,
}

/// What the node owes, in order.
#[derive(Debug)]
pub(super) struct Owed {
    queue: VecDeque<Owing>,
    next_id: u64,
    /// The last ReadyForQuery's status, as the node sent it.
    status: TransactionStatus,
    /// A batch that changes the catalog ended since the last Idle status:
    /// its change is not committed yet, or just was.
    ddl_since_idle: bool,
    /// A statement under sluice's savepoint failed: the next batch rolls
    /// back to it first, and meanwhile the client is shown `T`, as Vertica
    /// would.
    rollback_owed: bool,
    /// A query of sluice's own failed (a cancel landed on it, a savepoint
    /// was missing): the savepoint cannot be trusted, so the transaction's
    /// failure is the client's to see, until it ends.
    hidden_failed: bool,
    /// Answers the node gave are not all written to the client yet (kept
    /// for sessions that may detach: see [`NodeProgress::quiet`]).
    pub(super) unwritten: bool,
}

impl Owed {
    /// A session just opened at `now`: the node owes the login's end.
    pub(super) fn new(now: Instant) -> Owed {
        let mut owed = Owed {
            queue: VecDeque::new(),
            next_id: 0,
            status: TransactionStatus::Idle,
            ddl_since_idle: false,
            rollback_owed: false,
            hidden_failed: false,
            unwritten: false,
        };
        owed.send(
            Kind::Startup,
            Sent {
                readies: 1,
                ..Sent::default()
            },
            now,
        );
        owed
    }

    /// A batch went to the node at `now`. Returns whether the watchdog must
    /// look at it (it has a budget).
    pub(super) fn send(&mut self, kind: Kind, sent: Sent, now: Instant) -> bool {
        let watched = sent.execution.as_ref().is_some_and(|e| e.budget.is_some());
        let full = self.queue.len() >= MAX_ENTRIES;
        if let Some(last) = self.queue.back_mut()
            && last.kind == Kind::Client
            && kind == Kind::Client
            && (last.sent.readies == 0 || full)
        {
            // A prepare up to Flush is answered together with what follows
            // it: they are one batch to the statistics and the watchdog.
            if last.sent.execution.is_none() {
                last.sent.execution = sent.execution;
                last.started = now;
            }
            last.sent.readies += sent.readies;
            last.sent.hidden_parse_completes += sent.hidden_parse_completes;
            last.sent.hidden_close_completes += sent.hidden_close_completes;
            last.sent.ddl |= sent.ddl;
            last.sent.statement_level |= sent.statement_level;
            if last.sent.answer_ahead.is_none() {
                last.sent.answer_ahead = sent.answer_ahead;
            }
            return watched;
        }
        self.next_id += 1;
        self.queue.push_back(Owing {
            id: self.next_id,
            kind,
            sent,
            started: now,
            fired: false,
            rows: 0,
            bytes: 0,
            error: false,
        });
        watched
    }

    /// The node has answered everything that ends with a ReadyForQuery (a
    /// prepare up to Flush may still be open: its answer has no end).
    pub(super) fn settled(&self) -> bool {
        self.queue.iter().all(|o| o.sent.readies == 0)
    }

    /// The node owes nothing and no transaction is open: the connection is
    /// fit to serve another client once reset.
    pub(super) fn idle_in_no_transaction(&self) -> bool {
        self.queue.is_empty() && self.status == TransactionStatus::Idle && !self.unwritten
    }

    /// A batch up to Flush is the last sent: its answers have no end the
    /// queue can see, so nothing of sluice's own may follow it.
    pub(super) fn open_flush(&self) -> bool {
        self.queue.back().is_some_and(|o| o.sent.readies == 0)
    }

    /// Whether the node owes anything at all.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The last ReadyForQuery's status, as the node sent it.
    pub(super) fn status(&self) -> TransactionStatus {
        self.status
    }

    /// The status byte the client is shown for the node's last status: a
    /// statement that failed under sluice's savepoint leaves Vertica's
    /// transaction going.
    pub(super) fn shown_status(&self) -> TransactionStatus {
        match self.status {
            TransactionStatus::Failed if self.rollback_owed => TransactionStatus::InTransaction,
            s => s,
        }
    }

    /// Whether the next batch must first roll back to sluice's savepoint;
    /// asking takes the duty over (the caller sends the rollback).
    pub(super) fn take_rollback(&mut self) -> bool {
        std::mem::take(&mut self.rollback_owed)
    }

    /// Whether the catalog copy may answer a lookup now that the node is
    /// settled: not in a failed transaction, and not after a catalog change
    /// that has not committed yet (only the node shows it).
    pub(super) fn catalog_may_answer(&self) -> bool {
        self.status != TransactionStatus::Failed && !self.ddl_since_idle
    }

    /// A message from the node, other than ReadyForQuery.
    pub(super) fn message(&mut self, tag: u8, body: &[u8]) -> Action {
        let Some(front) = self.queue.front_mut() else {
            // Unasked (a notice, a notification, ParameterStatus).
            return Action::Relay;
        };
        match tag {
            backend::ERROR_RESPONSE => {
                if front.kind == Kind::Hidden {
                    if backend::is_fatal(body) {
                        return Action::Relay;
                    }
                    self.hidden_failed = true;
                    return Action::Hide;
                }
                front.error = true;
                let cancelled = front.fired
                    && backend::error_field(body, b'C')
                        == Some(sqlstate::QUERY_CANCELED.as_bytes());
                match &front.sent.execution {
                    Some(Execution {
                        budget: Some((_, rule)),
                        ..
                    }) if cancelled => Action::CancelledBy(rule.clone()),
                    _ => Action::Relay,
                }
            }
            _ if front.kind == Kind::Hidden => {
                // Notices and notifications are the session's, whoever asked.
                match tag {
                    backend::NOTICE_RESPONSE
                    | backend::NOTIFICATION_RESPONSE
                    | backend::PARAMETER_STATUS => Action::Relay,
                    _ => Action::Hide,
                }
            }
            backend::COMMAND_COMPLETE => {
                front.rows += rows_of_tag(body);
                Action::Relay
            }
            backend::PARSE_COMPLETE if front.sent.hidden_parse_completes > 0 => {
                front.sent.hidden_parse_completes -= 1;
                Action::Hide
            }
            backend::CLOSE_COMPLETE if front.sent.hidden_close_completes > 0 => {
                front.sent.hidden_close_completes -= 1;
                Action::Hide
            }
            _ => Action::Relay,
        }
    }

    /// A ReadyForQuery with `status`, ending an answer of `bytes` bytes to
    /// the client. Batches it ends go to `done`.
    pub(super) fn ready(
        &mut self,
        status: TransactionStatus,
        bytes: u64,
        done: &mut Vec<Done>,
    ) -> Ready {
        self.status = status;
        let mut hide = false;
        let mut rewatch = false;
        let mut answer_ahead = None;
        if let Some(front) = self.queue.front_mut() {
            front.bytes += bytes;
            front.sent.readies = front.sent.readies.saturating_sub(1);
            if front.sent.readies == 0 {
                answer_ahead = front.sent.answer_ahead.take();
            }
            hide = front.kind == Kind::Hidden;
            self.ddl_since_idle |= front.sent.ddl;
            if front.sent.statement_level
                && status == TransactionStatus::Failed
                && !self.hidden_failed
            {
                self.rollback_owed = true;
            }
            if front.sent.readies == 0 {
                let o = self.queue.pop_front().expect("the front entry");
                let budget = |o: Option<&Owing>| {
                    o.and_then(|o| o.sent.execution.as_ref())
                        .is_some_and(|e| e.budget.is_some())
                };
                rewatch = budget(Some(&o)) || budget(self.queue.front());
                done.push(Done {
                    kind: o.kind,
                    started: o.started,
                    execution: o.sent.execution,
                    rows: o.rows,
                    bytes: o.bytes,
                    error: o.error,
                    cancelled: o.fired,
                });
            }
        }
        let catalog_changed =
            status == TransactionStatus::Idle && std::mem::take(&mut self.ddl_since_idle);
        if status != TransactionStatus::Failed {
            // A rollback of the whole transaction (or its commit) ends the
            // statement's failure with it.
            self.rollback_owed = false;
        }
        if status == TransactionStatus::Idle {
            self.hidden_failed = false;
        }
        Ready {
            shown: self.shown_status(),
            hide,
            catalog_changed,
            rewatch,
            answer_ahead,
        }
    }

    /// The running batch, if the watchdog has a budget to keep for it.
    pub(super) fn running(&self) -> Option<Running> {
        let front = self.queue.front()?;
        let (budget, rule) = front.sent.execution.as_ref()?.budget.clone()?;
        if front.fired || front.sent.readies == 0 {
            return None;
        }
        Some(Running {
            id: front.id,
            deadline: front.started + budget,
            budget,
            rule,
        })
    }

    /// The watchdog cancels the running batch `id`, if it still runs:
    /// returns what it runs, for the alert.
    pub(super) fn fire(&mut self, id: u64) -> Option<Execution> {
        let front = self.queue.front_mut()?;
        if front.id != id || front.fired {
            return None;
        }
        front.fired = true;
        front.sent.execution.clone()
    }
}

/// What the node owes, shared by the session's two directions and its
/// watchdog: the client direction appends, the node direction consumes,
/// the watchdog reads the front. One lock, taken once per batch sent and
/// once per read of the node's answers.
pub(super) struct NodeProgress {
    owed: Mutex<Owed>,
    /// A ReadyForQuery arrived: for whoever waits for the node to settle.
    answer: tokio::sync::Notify,
    /// The running batch changed in a way the watchdog must see.
    watch: tokio::sync::Notify,
    /// Where a committed catalog change is reported, and for which database.
    catalog_changes: Option<(Arc<Freshness>, Arc<str>)>,
}

impl NodeProgress {
    /// `catalog_changes`: the catalog copy's freshness and the session's
    /// database, told when a statement that changes the catalog commits.
    pub(super) fn new(catalog_changes: Option<(Arc<Freshness>, Arc<str>)>) -> NodeProgress {
        NodeProgress {
            owed: Mutex::new(Owed::new(Instant::now())),
            answer: tokio::sync::Notify::new(),
            watch: tokio::sync::Notify::new(),
            catalog_changes,
        }
    }

    pub(super) fn owed(&self) -> MutexGuard<'_, Owed> {
        self.owed.lock().expect("what the node owes")
    }

    /// A batch went to the node at `now`.
    pub(super) fn send(&self, kind: Kind, sent: Sent, now: Instant) {
        if self.owed().send(kind, sent, now) {
            self.watch.notify_waiters();
        }
    }

    /// The node direction handled ReadyForQuery answers: wakes who waits,
    /// and reports a committed catalog change before the client can ask
    /// its next lookup.
    pub(super) fn answered(&self, catalog_changed: bool, rewatch: bool) {
        if catalog_changed && let Some((freshness, database)) = &self.catalog_changes {
            freshness.changed(database);
        }
        if rewatch {
            self.watch.notify_waiters();
        }
        self.answer.notify_waiters();
    }

    /// Waits until the node has answered everything asked so far.
    pub(super) async fn idle(&self) {
        loop {
            let notified = self.answer.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.owed().settled() {
                return;
            }
            notified.await;
        }
    }

    /// The node direction wrote what it had for the client.
    pub(super) fn written(&self) {
        self.owed().unwritten = false;
        self.answer.notify_waiters();
    }

    /// Waits until the node owes nothing, its answers are all with the
    /// client, and no transaction is open: the session may detach. Never
    /// returns while a transaction (or a prepare up to Flush) is open.
    pub(super) async fn quiet(&self) {
        loop {
            let notified = self.answer.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (quiet, in_transaction) = {
                let owed = self.owed();
                let settled = owed.is_empty() && !owed.unwritten;
                (owed.idle_in_no_transaction(), settled)
            };
            if quiet {
                return;
            }
            if in_transaction {
                // Settled in a transaction: only the client's next message
                // can change that.
                std::future::pending::<()>().await;
            }
            notified.await;
        }
    }

    /// A future the watchdog waits on for a change of the running batch;
    /// enabled before the caller looks at it.
    pub(super) fn watched(&self) -> tokio::sync::futures::Notified<'_> {
        self.watch.notified()
    }
}

/// The row count a CommandComplete's tag ends with ("SELECT 5", "INSERT 0
/// 5"); 0 for tags without one ("BEGIN") or with something else there.
fn rows_of_tag(body: &[u8]) -> u64 {
    let tag = body.strip_suffix(b"\0").unwrap_or(body);
    let count = match tag.iter().rposition(|&b| b == b' ') {
        Some(space) => &tag[space + 1..],
        None => tag,
    };
    if count.is_empty() || count.len() > 19 || !count.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    count.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransactionStatus::{Failed, Idle, InTransaction};

    const T0: fn() -> Instant = Instant::now;

    fn logged_in() -> Owed {
        let mut owed = Owed::new(T0());
        let mut done = Vec::new();
        let r = owed.ready(Idle, 0, &mut done);
        assert!(!r.hide);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].kind, Kind::Startup);
        assert!(owed.is_empty());
        owed
    }

    fn query(readies: u32) -> Sent {
        Sent {
            readies,
            execution: Some(Execution {
                fingerprint: Fingerprint::default(),
                text: "SELECT 1".into(),
                budget: None,
            }),
            ..Sent::default()
        }
    }

    /// sluice's SAVEPOINT ahead of a client's statement, then the statement.
    fn under_savepoint(owed: &mut Owed) {
        owed.send(Kind::Hidden, query(1), T0());
        let statement = Sent {
            statement_level: true,
            ..query(1)
        };
        owed.send(Kind::Client, statement, T0());
    }

    fn error(code: &str, severity: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.push(b'S');
        body.extend_from_slice(severity.as_bytes());
        body.push(0);
        body.push(b'C');
        body.extend_from_slice(code.as_bytes());
        body.extend_from_slice(b"\0\0");
        body
    }

    /// A session may detach only once the node's answers are all with the
    /// client and no transaction is open.
    #[tokio::test]
    async fn quiet_waits_for_the_answer_to_be_written_and_the_transaction_to_end() {
        let progress = NodeProgress::new(None);
        *progress.owed() = logged_in();
        let short = std::time::Duration::from_millis(50);
        let quiet = || tokio::time::timeout(short, progress.quiet());
        assert!(quiet().await.is_ok(), "idle from the start");

        progress.send(Kind::Client, query(1), T0());
        assert!(quiet().await.is_err(), "the node owes an answer");
        {
            let mut owed = progress.owed();
            owed.ready(Idle, 0, &mut Vec::new());
            owed.unwritten = true;
        }
        assert!(
            quiet().await.is_err(),
            "the answer is not with the client yet"
        );
        progress.written();
        assert!(quiet().await.is_ok());

        progress.send(Kind::Client, query(1), T0());
        progress.owed().ready(InTransaction, 0, &mut Vec::new());
        assert!(quiet().await.is_err(), "a transaction is open");
    }

    #[test]
    fn a_query_is_done_at_its_ready_for_query_with_its_rows_and_bytes() {
        let mut owed = logged_in();
        owed.send(Kind::Client, query(1), T0());
        assert!(!owed.settled());
        assert_eq!(owed.message(b'T', b""), Action::Relay);
        assert_eq!(owed.message(b'C', b"SELECT 3\0"), Action::Relay);
        let mut done = Vec::new();
        let r = owed.ready(Idle, 120, &mut done);
        assert_eq!(r.shown, Idle);
        assert!(!r.hide && !r.catalog_changed);
        assert_eq!(
            (done[0].rows, done[0].bytes, done[0].error),
            (3, 120, false)
        );
        assert!(owed.settled() && owed.is_empty());
    }

    #[test]
    fn a_prepare_up_to_flush_joins_the_batch_that_syncs_it() {
        let mut owed = logged_in();
        owed.send(Kind::Client, Sent::default(), T0());
        assert!(owed.settled(), "a Flush's answer has no end to wait for");
        owed.send(Kind::Client, query(1), T0());
        let mut done = Vec::new();
        owed.ready(Idle, 0, &mut done);
        assert_eq!(done.len(), 1);
        assert!(done[0].execution.is_some());
        assert!(owed.is_empty());
    }

    #[test]
    fn parse_completes_of_sluices_parses_are_hidden_and_only_those() {
        let mut owed = logged_in();
        owed.send(
            Kind::Client,
            Sent {
                readies: 1,
                hidden_parse_completes: 1,
                ..Sent::default()
            },
            T0(),
        );
        assert_eq!(owed.message(b'1', b""), Action::Hide);
        assert_eq!(owed.message(b'1', b""), Action::Relay);
        assert_eq!(owed.message(b'2', b""), Action::Relay);
    }

    #[test]
    fn hidden_batches_hide_everything_but_fatal_errors_and_notices() {
        let mut owed = logged_in();
        owed.send(Kind::Hidden, query(1), T0());
        owed.send(Kind::Client, query(1), T0());
        assert_eq!(owed.message(b'C', b"BEGIN\0"), Action::Hide);
        assert_eq!(owed.message(b'E', &error("25P02", "ERROR")), Action::Hide);
        assert_eq!(owed.message(b'N', b""), Action::Relay);
        assert_eq!(owed.message(b'E', &error("57P01", "FATAL")), Action::Relay);
        let mut done = Vec::new();
        assert!(owed.ready(InTransaction, 0, &mut done).hide);
        // The client's batch is next, shown.
        assert_eq!(owed.message(b'C', b"SELECT 1\0"), Action::Relay);
        assert!(!owed.ready(InTransaction, 0, &mut done).hide);
    }

    #[test]
    fn a_failed_statement_under_a_savepoint_shows_the_transaction_going() {
        let mut owed = logged_in();
        let mut done = Vec::new();
        // sluice's SAVEPOINT ahead of the statement, then the statement.
        under_savepoint(&mut owed);
        assert_eq!(owed.message(b'C', b"SAVEPOINT\0"), Action::Hide);
        assert!(owed.ready(InTransaction, 0, &mut done).hide);
        owed.message(b'E', &error("22012", "ERROR"));
        let r = owed.ready(Failed, 0, &mut done);
        assert_eq!((r.shown, r.hide), (InTransaction, false));
        assert_eq!(owed.shown_status(), InTransaction);
        assert!(!owed.catalog_may_answer());
        assert!(owed.take_rollback());
        assert!(!owed.take_rollback(), "the duty is taken once");
    }

    #[test]
    fn a_failed_query_of_sluices_leaves_the_failure_to_the_client() {
        let mut owed = logged_in();
        let mut done = Vec::new();
        // A cancel landed on sluice's SAVEPOINT: the statement after it
        // fails with 25P02, and no savepoint can be trusted to roll back to.
        under_savepoint(&mut owed);
        assert_eq!(owed.message(b'E', &error("57014", "ERROR")), Action::Hide);
        owed.ready(Failed, 0, &mut done);
        assert_eq!(owed.message(b'E', &error("25P02", "ERROR")), Action::Relay);
        assert_eq!(owed.ready(Failed, 0, &mut done).shown, Failed);
        assert!(!owed.take_rollback());
        // The client rolls back; the next transaction starts clean.
        owed.send(Kind::Client, query(1), T0());
        owed.ready(Idle, 0, &mut done);
        under_savepoint(&mut owed);
        owed.ready(InTransaction, 0, &mut done);
        owed.message(b'E', &error("22012", "ERROR"));
        assert_eq!(owed.ready(Failed, 0, &mut done).shown, InTransaction);
    }

    #[test]
    fn sluices_answer_to_part_of_a_batch_goes_ahead_of_its_ready_for_query() {
        let mut owed = logged_in();
        let mut done = Vec::new();
        // Parse/Describe/Flush went to the node; the Bind/Execute/Sync a
        // rule rejected becomes a Sync whose answer carries the rejection.
        owed.send(Kind::Client, Sent::default(), T0());
        owed.send(
            Kind::Client,
            Sent {
                readies: 1,
                answer_ahead: Some(bytes::Bytes::from_static(b"E...")),
                ..Sent::default()
            },
            T0(),
        );
        assert_eq!(owed.message(b'1', b""), Action::Relay);
        let r = owed.ready(Idle, 0, &mut done);
        assert_eq!(r.answer_ahead.as_deref(), Some(&b"E..."[..]));
        assert!(owed.is_empty());
    }

    #[test]
    fn parameter_status_reaches_the_client_whoever_asked() {
        let mut owed = logged_in();
        owed.send(Kind::Hidden, query(1), T0());
        assert_eq!(owed.message(b'S', b"TimeZone\0UTC\0"), Action::Relay);
    }

    #[test]
    fn a_plain_failed_transaction_shows_e_until_it_ends() {
        let mut owed = logged_in();
        let mut done = Vec::new();
        owed.send(Kind::Client, query(1), T0());
        owed.message(b'E', &error("22012", "ERROR"));
        assert_eq!(owed.ready(Failed, 0, &mut done).shown, Failed);
        assert!(done[0].error);
        assert!(!owed.take_rollback());
    }

    #[test]
    fn a_catalog_change_is_reported_when_it_commits() {
        let mut owed = logged_in();
        let mut done = Vec::new();
        owed.send(
            Kind::Client,
            Sent {
                readies: 1,
                ddl: true,
                ..Sent::default()
            },
            T0(),
        );
        let r = owed.ready(InTransaction, 0, &mut done);
        assert!(!r.catalog_changed);
        assert!(
            !owed.catalog_may_answer(),
            "uncommitted DDL: the node answers"
        );
        owed.send(Kind::Client, query(1), T0());
        assert!(owed.ready(Idle, 0, &mut done).catalog_changed);
        assert!(owed.catalog_may_answer());
    }

    #[test]
    fn the_watchdog_fires_once_and_the_cancel_brings_the_rules_notice() {
        let mut owed = logged_in();
        let sent = Sent {
            readies: 1,
            execution: Some(Execution {
                fingerprint: Fingerprint::default(),
                text: "SELECT pg_sleep(9)".into(),
                budget: Some((Duration::from_secs(1), "slow".into())),
            }),
            ..Sent::default()
        };
        assert!(owed.send(Kind::Client, sent, T0()));
        let running = owed.running().expect("a budget to keep");
        assert_eq!(&*running.rule, "slow");
        assert!(owed.fire(running.id).is_some());
        assert!(owed.fire(running.id).is_none());
        assert_eq!(owed.running(), None);
        assert_eq!(
            owed.message(b'E', &error("57014", "ERROR")),
            Action::CancelledBy("slow".into())
        );
        let mut done = Vec::new();
        let r = owed.ready(Idle, 0, &mut done);
        assert!(r.rewatch);
        assert!(done[0].cancelled && done[0].error);
    }

    #[test]
    fn an_uncancelled_57014_gets_no_notice() {
        let mut owed = logged_in();
        owed.send(Kind::Client, query(1), T0());
        assert_eq!(owed.message(b'E', &error("57014", "ERROR")), Action::Relay);
    }

    #[test]
    fn a_client_pipelining_without_end_does_not_grow_the_queue_for_ever() {
        let mut owed = logged_in();
        for _ in 0..MAX_ENTRIES * 3 {
            owed.send(Kind::Client, query(1), T0());
        }
        assert!(owed.queue.len() <= MAX_ENTRIES);
        let mut done = Vec::new();
        for _ in 0..MAX_ENTRIES * 3 {
            owed.ready(Idle, 0, &mut done);
        }
        assert!(owed.is_empty(), "every answer still counted");
    }

    #[test]
    fn row_counts_come_from_the_tag_end() {
        assert_eq!(rows_of_tag(b"SELECT 5\0"), 5);
        assert_eq!(rows_of_tag(b"INSERT 0 12\0"), 12);
        assert_eq!(rows_of_tag(b"COPY 3000000"), 3_000_000);
        assert_eq!(rows_of_tag(b"BEGIN\0"), 0);
        assert_eq!(rows_of_tag(b"SELECT \0"), 0);
        assert_eq!(rows_of_tag(b"SELECT 99999999999999999999\0"), 0);
        assert_eq!(rows_of_tag(b"\0"), 0);
        assert_eq!(rows_of_tag(b"x 1\xff\0"), 0);
    }
}
