//! What is Vertica's in a session of a Vertica client answered by a
//! PostgreSQL node: the login carried through, [`Translation`] for the
//! client direction and [`Conversion`] for the node direction. The session
//! itself — open, both loops, finish — is the one every client gets
//! ([`super::session`], [`super::upstream`], [`super::downstream`]).
//!
//! When `warehouse.dialect = "postgres"` and a Vertica driver connects, the
//! whole session is translated (vertica-protocol.md §5.2, with
//! [`crate::protocol::vertica`] doing the bytes):
//!
//! * startup: a PostgreSQL 3.0 StartupMessage stands for the client's; after
//!   login the client also gets `protocol_version`, `auto_commit` and
//!   `timezone`; PostgreSQL's NegotiateProtocolVersion never reaches it;
//! * authentication: cleartext and MD5 requests are relayed; a SCRAM request
//!   (codes 10–12 mean other things to Vertica drivers) is answered by sluice
//!   itself with the password it asked the client for in cleartext;
//! * client to node: Parse (`?` numbered), Bind (type OIDs dropped, text
//!   results), `SET SESSION AUTOCOMMIT`, and a hidden `BEGIN` ahead of the
//!   first statement after a transaction when autocommit is off (Vertica's
//!   default; PostgreSQL would commit each statement), and in a transaction
//!   each statement under a hidden savepoint, so that an error rolls back
//!   only its statement, as on Vertica;
//! * node to client: RowDescription and ParameterDescription in Vertica's
//!   layout, a CommandDescription after each Describe of a statement, errors
//!   without PostgreSQL's `V` field, bytea values octal-escaped, and DML
//!   answered with Vertica's row-count result (`OUTPUT`);
//! * rules, the watchdog and statistics: each batch is screened by the same
//!   guard as a PostgreSQL session's before it goes anywhere, in the client
//!   direction both share.
//!
//! Unlike the plain relay, both directions inspect every message (COPY data
//! from the client excepted): rows must be looked at to be converted.
//!
//! Catalog lookups (`v_catalog`, `pg_catalog`, ...) are classified by the
//! same [`Router`] as PostgreSQL sessions' and answered by the catalog copy
//! through the same exchange ([`super::catalog_answer`]), converted by the
//! same functions as the node's answers. A Vertica driver prepares with
//! Parse, Describe, Flush: such a batch may go to the copy too, closed by a
//! Sync of sluice's own whose ReadyForQuery the client never sees. Lookups
//! switch to the copy only when the node owes nothing; in a transaction that
//! changed the schema, in a failed one, or when the copy is down, the node
//! answers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::net::{MessageStream, ReadError, ReadHalf};
use crate::protocol::backend::{self, ErrorFields, TransactionStatus};
use crate::protocol::frame::{Frame, Treatment};
use crate::protocol::startup::{CancelKey, StartupMessage};
use crate::protocol::vertica::{self, Conversions};
use crate::protocol::{ProtocolError, frontend, login};

use super::catalog_answer::Answers;
use super::downstream::{ClientWriter, End, NodeSide};
use super::owed::{Kind, NodeProgress, Sent};
use super::router::{Batch, Plan, Router};
use super::upstream::ClientSide;
use super::vertica_sql;
use crate::auth::Credential;

/// The savepoint each statement of a Vertica client's transaction runs
/// under, so that its failure rolls back only itself, as on Vertica.
const SAVEPOINT: &str = "sluice_statement";

/// What the two directions of a translated session share: requests whose
/// answers need context, and how values convert.
#[derive(Default)]
pub(super) struct Shared {
    /// Describe(statement) sent, oldest first: (statement, command tag).
    describes: VecDeque<(Vec<u8>, String)>,
    /// Bind sent, oldest first: the statement each names.
    binds: VecDeque<Vec<u8>>,
    autocommit: bool,
    /// `auto_commit` changed; announced with the next ReadyForQuery.
    announce_autocommit: bool,
    /// How the current result's values convert.
    conversions: Conversions,
    /// How each described statement's results convert.
    by_statement: HashMap<Vec<u8>, Conversions>,
    /// The Describe(statement) being answered: (name, tag).
    describing: Option<(Vec<u8>, String)>,
    /// The running statement's result has a RowDescription (a SELECT, or
    /// DML with RETURNING): its row count stays in the CommandComplete tag.
    described: bool,
    /// Since the last BindComplete: the extended protocol, where results
    /// are described by Describe, not at execution.
    executing: bool,
    /// The executing statement was described with Vertica's row-count
    /// result ([`vertica::encode_row_count_description`]): its DataRow is owed.
    count_owed: bool,
    /// Statements described with Vertica's row-count result.
    counting: HashSet<Vec<u8>>,
}

impl Shared {
    /// What answering a batch consumes, to put back when the catalog copy
    /// fails before its answer reached the client and the node answers.
    fn answer_state(&self) -> AnswerState {
        (
            self.describes.clone(),
            self.binds.clone(),
            self.describing.clone(),
        )
    }

    fn restore(&mut self, state: AnswerState) {
        (self.describes, self.binds, self.describing) = state;
    }

    /// sluice answered a batch itself (a rule rejected it): the answers its
    /// Describes and Binds were noted for will never come. Its notes are
    /// the last ones, since the node owes nothing else by then.
    fn forget(&mut self, batch: &Batch) {
        for frame in &batch.frames {
            match frame.tag() {
                frontend::BIND => {
                    self.binds.pop_back();
                }
                frontend::DESCRIBE
                    if matches!(frontend::target(frame.body(), "Describe"), Ok((b'S', _))) =>
                {
                    self.describes.pop_back();
                }
                _ => {}
            }
        }
    }

    /// An answer ended with ReadyForQuery: what it asked about is answered.
    fn answered(&mut self) {
        self.describes.clear();
        self.binds.clear();
        self.describing = None;
        self.described = false;
        self.executing = false;
        self.count_owed = false;
    }

    /// Appends the Vertica form of a message answering the client's
    /// requests, from the node or the catalog copy alike.
    fn convert(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), ProtocolError> {
        match frame.tag() {
            backend::ERROR_RESPONSE | backend::NOTICE_RESPONSE => {
                out.extend_from_slice(vertica::error_to_vertica(frame.tag(), frame.body())?.raw());
            }
            vertica::PARAMETER_DESCRIPTION => {
                self.describing = self.describes.pop_front();
                out.extend_from_slice(
                    vertica::parameter_description_to_vertica(frame.body())?.raw(),
                );
            }
            vertica::ROW_DESCRIPTION => {
                let (t, conv) = vertica::row_description_to_vertica(frame.body())?;
                out.extend_from_slice(t.raw());
                self.described = true;
                if let Some((name, tag)) = self.describing.take() {
                    out.extend_from_slice(vertica::encode_command_description(&tag).raw());
                    self.by_statement.insert(name, conv.clone());
                }
                self.conversions = conv;
            }
            vertica::NO_DATA => match self.describing.take() {
                Some((name, tag)) => {
                    // Vertica describes DML by its row-count result.
                    if vertica::counts_rows(&tag) {
                        out.extend_from_slice(vertica::encode_row_count_description().raw());
                        self.counting.insert(name.clone());
                    } else {
                        out.extend_from_slice(frame.raw());
                        self.counting.remove(&name);
                    }
                    out.extend_from_slice(vertica::encode_command_description(&tag).raw());
                    self.by_statement.insert(name, Vec::new());
                }
                None => out.extend_from_slice(frame.raw()),
            },
            backend::BIND_COMPLETE => {
                // BindComplete: the rows that follow are this statement's.
                self.executing = true;
                self.count_owed = false;
                if let Some(name) = self.binds.pop_front() {
                    if let Some(conv) = self.by_statement.get(&name) {
                        self.conversions = conv.clone();
                    }
                    self.count_owed = self.counting.contains(&name);
                }
                out.extend_from_slice(frame.raw());
            }
            vertica::DATA_ROW => {
                match vertica::data_row_to_vertica(frame.body(), &self.conversions)? {
                    Some(row) => out.extend_from_slice(row.raw()),
                    None => out.extend_from_slice(frame.raw()),
                }
            }
            backend::COMMAND_COMPLETE => {
                // vertica-python reads `auto_commit` once the SET's
                // result ends, before ReadyForQuery.
                if self.announce_autocommit {
                    self.announce_autocommit = false;
                    vertica::encode_auto_commit(out, self.autocommit);
                }
                self.row_count(frame.body(), out);
                out.extend_from_slice(frame.raw());
            }
            vertica::NEGOTIATE_PROTOCOL_VERSION => {}
            _ => out.extend_from_slice(frame.raw()),
        }
        Ok(())
    }
}

impl Shared {
    /// Vertica answers DML with a result set holding the row count, where
    /// PostgreSQL only has the CommandComplete tag: a simple query's gets
    /// the RowDescription and the row, a prepared statement's (described
    /// with the RowDescription already) the row, ahead of `command_complete`.
    fn row_count(&mut self, command_complete: &[u8], out: &mut BytesMut) {
        let described = std::mem::take(&mut self.described);
        let Some(rows) = vertica::row_count(command_complete) else {
            return;
        };
        if self.executing {
            if std::mem::take(&mut self.count_owed) {
                out.extend_from_slice(vertica::encode_row_count(rows).raw());
            }
        } else if !described {
            out.extend_from_slice(vertica::encode_row_count_description().raw());
            out.extend_from_slice(vertica::encode_row_count(rows).raw());
        }
    }
}

type AnswerState = (
    VecDeque<(Vec<u8>, String)>,
    VecDeque<Vec<u8>>,
    Option<(Vec<u8>, String)>,
);

/// The catalog copy's answers, converted as the node's are.
struct FromCatalog<'a> {
    shared: &'a State,
    /// What answering consumes, as it was before the copy answered.
    before: AnswerState,
}

impl Answers for FromCatalog<'_> {
    fn whole_rows(&self) -> bool {
        true
    }
    fn message(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), ProtocolError> {
        self.shared
            .lock()
            .expect("session state")
            .convert(frame, out)
    }
    fn ready(&mut self) {
        self.shared.lock().expect("session state").answered();
    }
    fn unanswered(&mut self) {
        let before = std::mem::take(&mut self.before);
        self.shared.lock().expect("session state").restore(before);
    }
}

/// A translated session's shared state.
pub(super) type State = Mutex<Shared>;

impl Shared {
    /// The state of a session opened with `startup`.
    pub(super) fn for_session(startup: &StartupMessage) -> State {
        Mutex::new(Shared {
            autocommit: vertica::requested_autocommit(startup),
            ..Shared::default()
        })
    }
}

/// An error or notice of sluice's own in Vertica's layout.
fn encode_error(error: &ErrorFields, notice: bool, out: &mut BytesMut) {
    let mut pg = BytesMut::new();
    if notice {
        error.encode_notice(&mut pg);
    } else {
        error.encode(&mut pg);
    }
    match vertica::error_to_vertica(pg[0], &pg[5..]) {
        Ok(converted) => out.extend_from_slice(converted.raw()),
        // Not reached: sluice's own fields always convert.
        Err(_) => out.extend_from_slice(&pg),
    }
}

/// Every message of the node is looked at: rows must be, to be converted.
pub(super) fn node_treatment(_: u8) -> Treatment {
    Treatment::Inspect
}

/// COPY data and its end (CopyDone, CopyFail) stream through; everything
/// else is looked at. Held back by routing, a CopyDone would never reach the
/// node, which waits for it before answering.
pub(super) fn client_treatment(tag: u8) -> Treatment {
    match tag {
        b'd' | b'c' | b'f' => Treatment::Relay,
        _ => Treatment::Inspect,
    }
}

/// The next message of the node during the login.
async fn node_frame(node: &mut MessageStream<ReadHalf>) -> Result<Frame, End> {
    match node.frame().await {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(End::NodeClosed),
        Err(ReadError::Protocol(e)) => Err(End::NodeProtocol(e)),
        Err(ReadError::Io(e)) => Err(End::Io(e)),
    }
}

/// The client's password message during the login.
async fn expect_password(client: &mut MessageStream<ReadHalf>) -> Result<Frame, End> {
    let p = match client.frame().await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(End::ClientLeft),
        Err(ReadError::Protocol(e)) => return Err(End::ClientProtocol(e)),
        Err(ReadError::Io(e)) => return Err(End::Io(e)),
    };
    if p.tag() != frontend::PASSWORD {
        return Err(End::ClientProtocol(ProtocolError::Malformed {
            what: "authentication",
            why: "expected a password message",
        }));
    }
    Ok(p)
}

/// The login, up to the node's AuthenticationOk (forwarded).
///
/// Cleartext and MD5 requests are relayed (Vertica's MD5 request carries
/// a user salt too, which MD5 does not use, §2). A SCRAM request (codes
/// 10–12 mean other things to Vertica drivers) is answered by sluice itself
/// ([`login::Answerer`]), with the password it asks the client for in
/// cleartext.
pub(super) async fn authenticate(
    node: &mut MessageStream<ReadHalf>,
    node_wr: &mut (impl AsyncWrite + Unpin),
    client: &mut MessageStream<ReadHalf>,
    client_wr: &mut ClientWriter,
    user: &str,
    client_tls: bool,
) -> Result<Option<Credential>, End> {
    let mut answerer = login::Answerer::default();
    let mut password: Option<Vec<u8>> = None;
    // How sluice could log in again for this client (pooling): with no
    // password, with the one the client gave in clear text, or not at all
    // (an MD5 answer is good for one salt only).
    let mut again = Some(Credential::Trusted);
    loop {
        let frame = node_frame(node).await?;
        match frame.tag() {
            backend::AUTHENTICATION => {
                let request = login::request(frame.body(), false);
                let mut out = BytesMut::new();
                match request {
                    login::Request::Ok => {
                        client_wr.write_all(frame.raw()).await?;
                        if let Some(p) = password {
                            again = Some(Credential::Password(
                                String::from_utf8_lossy(&p).into_owned(),
                            ));
                        }
                        return Ok(again);
                    }
                    login::Request::Cleartext => {
                        client_wr.write_all(frame.raw()).await?;
                        let p = expect_password(client).await?;
                        node_wr.write_all(p.raw()).await?;
                        password = Some(p.body().strip_suffix(&[0]).unwrap_or(p.body()).to_vec());
                        continue;
                    }
                    login::Request::Md5 { salt } => {
                        vertica::encode_md5_request(&mut out, salt);
                        client_wr.write_all(&out).await?;
                        let p = expect_password(client).await?;
                        node_wr.write_all(p.raw()).await?;
                        again = None;
                        continue;
                    }
                    login::Request::Sasl { .. } if password.is_none() => {
                        if !client_tls {
                            tracing::warn!(
                                user,
                                "asking a Vertica client for its password in cleartext over an unencrypted connection (the node wants SCRAM); enable [server.tls]"
                            );
                        }
                        backend::encode_authentication_request(&mut out, backend::AUTH_CLEARTEXT);
                        client_wr.write_all(&out).await?;
                        out.clear();
                        let p = expect_password(client).await?;
                        password = Some(p.body().strip_suffix(&[0]).unwrap_or(p.body()).to_vec());
                    }
                    _ => {}
                }
                let secret = password.as_deref().unwrap_or_default();
                answerer
                    .answer(&request, user.as_bytes(), secret, &mut out)
                    .map_err(|e| End::Auth(format!("the warehouse node's login: {e}")))?;
                if !out.is_empty() {
                    node_wr.write_all(&out).await?;
                }
            }
            backend::ERROR_RESPONSE => {
                let e = vertica::error_to_vertica(frame.tag(), frame.body())
                    .map_err(End::NodeProtocol)?;
                client_wr.write_all(e.raw()).await?;
                return Err(End::Refused);
            }
            vertica::NEGOTIATE_PROTOCOL_VERSION => {}
            backend::NOTICE_RESPONSE => {
                let n = vertica::error_to_vertica(frame.tag(), frame.body())
                    .map_err(End::NodeProtocol)?;
                client_wr.write_all(n.raw()).await?;
            }
            _ => client_wr.write_all(frame.raw()).await?,
        }
    }
}

/// Messages that carry a statement: before the first of them after a
/// transaction ended, a session without autocommit opens one.
fn starts_work(tag: u8) -> bool {
    matches!(
        tag,
        frontend::QUERY | frontend::PARSE | frontend::BIND | frontend::EXECUTE
    )
}

/// Statements that begin or end a transaction, manage savepoints or set
/// how the transaction runs: they run as they are, never under sluice's own
/// savepoint (a client's savepoints would be released with it).
fn controls_transaction(batch: &Batch) -> bool {
    batch.frames.iter().any(|frame| {
        let text = match frame.tag() {
            frontend::QUERY => frontend::query_text(frame.body()).ok(),
            frontend::PARSE => frontend::parse_parts(frame.body()).ok().map(|p| p.text),
            _ => None,
        };
        let Some(text) = text.and_then(|t| std::str::from_utf8(t).ok()) else {
            return false;
        };
        matches!(
            vertica_sql::command_tag(text).as_str(),
            "BEGIN"
                | "START"
                | "COMMIT"
                | "END"
                | "ROLLBACK"
                | "ABORT"
                | "SAVEPOINT"
                | "RELEASE"
                | "PREPARE"
                // SET TRANSACTION ... must not run in a subtransaction; no
                // SET needs statement-level rollback.
                | "SET"
        )
    })
}

/// The client direction of a translated session: messages translated, the
/// context of their answers noted in [`Shared`], and Vertica's transaction
/// semantics kept in front of PostgreSQL.
///
/// Vertica's drivers default to autocommit off, and on Vertica an error
/// rolls back only the failing statement: the transaction goes on, and
/// clients never roll back after an error. PostgreSQL would commit each
/// statement, and would fail every statement after an error until the
/// client rolls back. So, hidden from the client: a `BEGIN` ahead of the
/// first statement after a transaction ended when autocommit is off, and in
/// a transaction each statement under a savepoint (`SAVEPOINT` ahead,
/// `RELEASE` after, `ROLLBACK TO` ahead of the next statement when it
/// failed); the client is shown status `T` where PostgreSQL says `E`.
pub(super) struct Translation<'a> {
    shared: &'a State,
    /// Statement name → command tag, for CommandDescription.
    tags: HashMap<Vec<u8>, String>,
    /// A batch up to Flush went under sluice's savepoint: the batch that
    /// syncs it ends the statement.
    savepoint_open: bool,
    /// A statement ran under sluice's savepoint: the next batch releases it
    /// (or rolls back to it) first.
    release_owed: bool,
}

impl<'a> Translation<'a> {
    pub(super) fn new(shared: &'a State) -> Translation<'a> {
        Translation {
            shared,
            tags: HashMap::new(),
            savepoint_open: false,
            release_owed: false,
        }
    }

    fn autocommit(&self) -> bool {
        self.shared.lock().expect("session state").autocommit
    }
}

/// Sends one query of sluice's own ahead of or after a client's batch; the
/// client sees none of its answers.
fn hidden_query(sql: &str, out: &mut BytesMut, progress: &NodeProgress) {
    out.extend_from_slice(frontend::encode_query(sql).raw());
    let sent = Sent {
        readies: 1,
        ..Sent::default()
    };
    progress.send(Kind::Hidden, sent, std::time::Instant::now());
}

impl ClientSide for Translation<'_> {
    const TRANSLATED: bool = true;

    /// Notes what the answers will need (CommandDescription tags,
    /// conversions by statement).
    fn translate(&mut self, frame: Frame) -> Result<Frame, ProtocolError> {
        let tag = frame.tag();
        let mut s = self.shared.lock().expect("session state");
        if tag == frontend::QUERY
            && let Ok(text) = frontend::query_text(frame.body())
            && let Some(on) = vertica_sql::set_autocommit(text)
        {
            s.autocommit = on;
            s.announce_autocommit = true;
            // PostgreSQL has no such setting; a custom one answers SET.
            let value = if on { "on" } else { "off" };
            return Ok(frontend::encode_query(&format!(
                "SET sluice.vertica_autocommit = '{value}'"
            )));
        }
        match tag {
            // A statement parsed again under its name replaces the old one,
            // as in Vertica (vertica-python reuses "s0"): the router closes
            // the old one on the node first.
            frontend::PARSE => vertica_sql::parse_to_postgres(frame.body()).map(|(f, name, t)| {
                self.tags.insert(name, t);
                f
            }),
            frontend::BIND => {
                let (_, statement, _) = frontend::bind_names(frame.body())?;
                s.binds.push_back(statement.to_vec());
                vertica::bind_to_postgres(frame.body())
            }
            frontend::DESCRIBE => {
                if let Ok((b'S', name)) = frontend::target(frame.body(), "Describe") {
                    let t = self
                        .tags
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| "SELECT".into());
                    s.describes.push_back((name.to_vec(), t));
                }
                Ok(frame)
            }
            _ => Ok(frame),
        }
    }

    /// The rejection in Vertica's layout; the answers noted for the batch
    /// will never come.
    fn answer_here(
        &mut self,
        batch: &Batch,
        rejection: Option<&ErrorFields>,
        answer: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        self.shared.lock().expect("session state").forget(batch);
        if let Some(error) = rejection {
            encode_error(error, false, answer);
        }
        Ok(())
    }

    /// What goes ahead of a statement depends on how the last one ended.
    fn waits_for_node(&self, batch: &Batch, progress: &NodeProgress) -> bool {
        batch.frames.iter().any(|f| starts_work(f.tag())) && !progress.owed().settled()
    }

    /// Ahead of the batch: the rollback to sluice's savepoint when the last
    /// statement failed, a `BEGIN` when autocommit is off and no
    /// transaction is open, and in a transaction the statement's savepoint.
    fn plan_for_node(
        &mut self,
        router: &mut Router,
        batch: Batch,
        out: &mut BytesMut,
        progress: &NodeProgress,
    ) -> Plan {
        let works = batch.frames.iter().any(|f| starts_work(f.tag()));
        let (status, rollback) = {
            let mut owed = progress.owed();
            if owed.open_flush() && !self.savepoint_open {
                // Answers of a prepare up to Flush are still coming, with
                // no end to tell them from those of a query sent now: the
                // batch goes as it is (not seen from vertica-python, which
                // executes what it prepares).
                tracing::debug!(
                    "a Vertica batch after an open prepare runs without sluice's savepoint"
                );
                let mut plan = router.node_plan(batch);
                plan.statement_level = false;
                return plan;
            }
            (owed.status(), owed.take_rollback())
        };
        let mut ahead: Vec<String> = Vec::new();
        // The last statement's savepoint goes first: rolled back to when the
        // statement failed, released when it did not. Never right after the
        // statement itself, where a COPY's data must follow it.
        if rollback {
            ahead.push(format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}"));
        }
        if std::mem::take(&mut self.release_owed)
            && (rollback || status == TransactionStatus::InTransaction)
        {
            ahead.push(format!("RELEASE SAVEPOINT {SAVEPOINT}"));
        }
        let mut statement_level = false;
        if works && !self.savepoint_open {
            let mut in_transaction = status != TransactionStatus::Idle;
            if !in_transaction && !self.autocommit() {
                ahead.push("BEGIN".into());
                in_transaction = true;
            }
            if in_transaction && !controls_transaction(&batch) {
                ahead.push(format!("SAVEPOINT {SAVEPOINT}"));
                if batch.syncs == 0 {
                    self.savepoint_open = true;
                } else {
                    statement_level = true;
                }
            }
        } else if self.savepoint_open && batch.syncs > 0 {
            self.savepoint_open = false;
            statement_level = true;
        }
        if !ahead.is_empty() {
            hidden_query(&ahead.join("; "), out, progress);
        }
        self.release_owed |= statement_level;
        let mut plan = router.node_plan(batch);
        plan.statement_level = statement_level;
        plan
    }

    fn catalog_answers(&mut self) -> impl Answers + Send + '_ {
        FromCatalog {
            shared: self.shared,
            before: self.shared.lock().expect("session state").answer_state(),
        }
    }
}

/// The node direction of a translated session: the node's answers in
/// Vertica's layout.
pub(super) struct Conversion<'a> {
    shared: &'a State,
    /// The protocol version agreed with the driver.
    protocol: i32,
}

impl<'a> Conversion<'a> {
    pub(super) fn new(shared: &'a State, startup: &StartupMessage) -> Conversion<'a> {
        Conversion {
            shared,
            protocol: vertica::negotiated_protocol(startup.vertica_protocol()),
        }
    }
}

impl NodeSide for Conversion<'_> {
    fn message(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), ProtocolError> {
        let mut s = self.shared.lock().expect("session state");
        match frame.tag() {
            backend::PARAMETER_STATUS => {
                out.extend_from_slice(frame.raw());
                if let Some((b"TimeZone", tz)) = vertica::parameter_status(frame.body()) {
                    let tz = String::from_utf8_lossy(tz).into_owned();
                    backend::encode_parameter_status(out, "timezone", &tz);
                }
                Ok(())
            }
            _ => s.convert(frame, out),
        }
    }

    /// Vertica drivers read `protocol_version`, `auto_commit` and
    /// `timezone` at login, ahead of the cancel key.
    fn backend_key(&mut self, key: &CancelKey, out: &mut BytesMut) {
        let autocommit = self.shared.lock().expect("session state").autocommit;
        vertica::encode_vertica_parameters(out, self.protocol, autocommit, "");
        backend::encode_backend_key_data(out, key);
    }

    fn ready(&mut self, out: &mut BytesMut) {
        let mut s = self.shared.lock().expect("session state");
        s.answered();
        if std::mem::take(&mut s.announce_autocommit) {
            vertica::encode_auto_commit(out, s.autocommit);
        }
    }

    fn error(&self, error: &ErrorFields, notice: bool, out: &mut BytesMut) {
        encode_error(error, notice, out);
    }
}
