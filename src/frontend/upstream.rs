//! The client direction of a session, for both kinds of session: a
//! PostgreSQL client relayed to its node ([`super::session`]) and a Vertica
//! client translated for a PostgreSQL node ([`super::translate`]).
//!
//! [`Upstream::run`] reads the client's messages, has the [`Router`] gather
//! them into batches, and decides each batch's fate in one place: the rules
//! ([`Screening`]) may answer it here, the catalog copy may answer a lookup
//! ([`super::catalog_answer`]), and otherwise it is queued for the node,
//! with what the node direction needs to know of it: an entry in what the
//! node owes ([`NodeProgress`]), with what it executes and its budget from
//! the [`QueryGuard`].
//!
//! What a Vertica client needs on top of the PostgreSQL protocol is behind
//! one small trait, [`ClientSide`]: a generic parameter, not a trait
//! object, so the relayed session, benchmarked per transaction, gets the
//! plain loop with the PostgreSQL choices inlined. The node direction has
//! its mirror in [`super::downstream`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::catalog_answer::{
    Answers, CatalogFailure, CatalogMiss, Lookup, answer_from_catalog, copy_for,
    node_settled_for_copy,
};
use super::guard::{AnswerEnd, QueryGuard, Screened, Screening};
use super::observe::SessionObserver;
use super::owed::{Kind, NodeProgress, Sent};
use super::router::{Batch, Plan, Router};
use super::statements::Statements;
use crate::catalog::{CatalogError, CatalogPool};
use crate::metrics::Metrics;
use crate::net::{MessageStream, ReadHalf, WriteHalf};

use super::downstream::ClientWriter;
use crate::protocol::backend::{self, ErrorFields};
use crate::protocol::frame::{Frame, Item};
use crate::protocol::{ProtocolError, frontend};

/// What is gathered for the node goes out before this much has gathered,
/// even if more of the client's messages are already read.
const MAX_GATHERED: usize = 64 * 1024;

/// The watchdog's budget for a batch, named by its rule.
pub(super) type Budget = Option<(Duration, Arc<str>)>;

/// Why the client direction stopped; each session turns it into its own end.
#[derive(Debug)]
pub(super) enum Stop {
    ClientLeft,
    ClientProtocol(ProtocolError),
    /// sluice's own answer could not be put in the client's terms.
    NodeProtocol(ProtocolError),
    /// The catalog copy failed after part of its answer reached the client.
    CatalogBroken(CatalogError),
    Io(std::io::Error),
    /// The session has been idle outside a transaction for
    /// `[pooling] idle_detach`: it may give its node connection back.
    Detach,
    /// Detached, the session has something for a node (gathered in
    /// [`Upstream::out`]): it needs a connection again.
    NeedNode,
}

/// What a kind of client needs beyond relaying PostgreSQL messages as they
/// are.
pub(super) trait ClientSide {
    /// The client speaks Vertica's protocol to PostgreSQL nodes.
    const TRANSLATED: bool;

    /// A client message in PostgreSQL's terms, noting what its answers will
    /// need.
    fn translate(&mut self, frame: Frame) -> Result<Frame, ProtocolError>;

    /// sluice answers `batch` itself (the node never sees it): appends the
    /// client's form of the rule's `rejection`, if any, to `answer`.
    fn answer_here(
        &mut self,
        batch: &Batch,
        rejection: Option<&ErrorFields>,
        answer: &mut BytesMut,
    ) -> Result<(), ProtocolError>;

    /// Whether `batch` must wait until the node has answered everything
    /// before it (what sluice sends ahead of it depends on how that ended).
    fn waits_for_node(&self, _batch: &Batch, _progress: &NodeProgress) -> bool {
        false
    }

    /// The messages that carry `batch` to the node, appending any of the
    /// session's own that must go ahead of them to `out` (and what the node
    /// owes for them to `progress`).
    fn plan_for_node(
        &mut self,
        router: &mut Router,
        batch: Batch,
        out: &mut BytesMut,
        progress: &NodeProgress,
    ) -> Plan;

    /// How the catalog copy's answer to the next batch reaches the client.
    fn catalog_answers(&mut self) -> impl Answers + Send + '_;
}

/// The client direction: reads the client's messages, routes each batch to
/// the node or the catalog copy.
pub(super) struct Upstream<'a, C> {
    /// Rules, the watchdog's queue and statistics.
    pub guard: &'a QueryGuard,
    /// Rejected batches and what follows them up to their Sync.
    pub screening: Screening,
    pub router: Router,
    pub catalog: Option<Arc<CatalogPool>>,
    pub user: &'a str,
    pub database: &'a str,
    pub progress: &'a NodeProgress,
    pub observer: &'a SessionObserver,
    pub metrics: &'a Arc<Metrics>,
    pub client: C,
    /// What is gathered for the node, so that a read's worth of messages
    /// costs one write; kept across a detach until a node takes it.
    pub out: BytesMut,
    /// Batches read but not yet decided (a detached session stopped for a
    /// node after the one before them).
    pub batches: VecDeque<Batch>,
    /// `[pooling] idle_detach`, when this session may detach at all.
    pub detach: Option<Duration>,
    /// False after a detach found state that pins the session, until its
    /// next query to the node.
    pub detach_armed: bool,
    /// Since when the node has had nothing to do for this session.
    pub idle_since: Option<Instant>,
    /// A session pooled per transaction: its statements under names of
    /// sluice's, and its SETs.
    pub statements: Option<Statements>,
}

impl<C: ClientSide> Upstream<'_, C> {
    /// Runs until the client leaves, the session cannot go on, or it
    /// detaches or needs a node again ([`Stop::Detach`], [`Stop::NeedNode`];
    /// it may be run again after either). `wr` is the node, `None` while
    /// detached.
    pub(super) async fn run(
        &mut self,
        from: &mut MessageStream<ReadHalf>,
        mut wr: Option<&mut WriteHalf>,
        client_wr: &tokio::sync::Mutex<ClientWriter>,
    ) -> Stop {
        loop {
            while let Some(batch) = self.batches.pop_front() {
                if let Err(stop) = self.decide(batch, &mut wr, client_wr).await {
                    return stop;
                }
                if wr.is_none() && !self.out.is_empty() {
                    return Stop::NeedNode;
                }
            }
            let item = match from.buffered() {
                Ok(Some(item)) => item,
                Ok(None) => {
                    if let Err(e) = self.write_out(&mut wr).await {
                        return e;
                    }
                    match self.wait_for_client(from, wr.is_some()).await {
                        Ok(0) => return Stop::ClientLeft,
                        Ok(n) => self.observer.client_read(n),
                        Err(stop) => return stop,
                    }
                    continue;
                }
                Err(e) => return Stop::ClientProtocol(e),
            };
            match item {
                Item::Relay(bytes) => {
                    // Unrouted bytes (COPY data, ...) follow what came before them.
                    if let Some(batch) = self.router.take_pending() {
                        self.queue_for_node(batch, None);
                    }
                    self.out.extend_from_slice(&bytes);
                }
                Item::Inspect(frame) => match frame.tag() {
                    // Terminate: the node learns it when the session closes it.
                    frontend::TERMINATE => return Stop::ClientLeft,
                    frontend::FUNCTION_CALL => {
                        if let Some(batch) = self.router.take_pending() {
                            self.queue_for_node(batch, None);
                        }
                        self.asked_node(Sent {
                            readies: 1,
                            ..Sent::default()
                        });
                        self.out.extend_from_slice(frame.raw());
                    }
                    _ => {
                        let frame = match &mut self.statements {
                            Some(statements) => match statements.rename(frame) {
                                Ok(f) => f,
                                Err(e) => return Stop::ClientProtocol(e),
                            },
                            None => frame,
                        };
                        let frame = match self.client.translate(frame) {
                            Ok(f) => f,
                            Err(e) => return Stop::ClientProtocol(e),
                        };
                        match self.router.push(frame) {
                            Ok(batches) => self.batches.extend(batches),
                            Err(e) => return Stop::ClientProtocol(e),
                        }
                        continue;
                    }
                },
            }
            if wr.is_none() {
                return Stop::NeedNode;
            }
            if self.out.len() > MAX_GATHERED
                && let Err(e) = self.write_out(&mut wr).await
            {
                return e;
            }
        }
    }

    /// Decides one batch's fate: answered here, by the catalog copy, or
    /// queued for the node.
    async fn decide(
        &mut self,
        batch: Batch,
        wr: &mut Option<&mut WriteHalf>,
        client_wr: &tokio::sync::Mutex<ClientWriter>,
    ) -> Result<(), Stop> {
        let Some(budget) = self.screen(&batch, wr, client_wr).await? else {
            return Ok(());
        };
        if self.client.waits_for_node(&batch, self.progress) {
            self.write_out(wr).await?;
            self.progress.idle().await;
        }
        if let Some(pool) = copy_for(&batch, self.catalog.as_ref(), self.database, self.metrics)
            && self
                .answered_by_catalog(&pool, &batch, wr, client_wr)
                .await?
        {
            return Ok(());
        }
        self.queue_for_node(batch, budget);
        if self.out.len() > MAX_GATHERED {
            self.write_out(wr).await?;
        }
        Ok(())
    }

    /// Waits for the client's next bytes. An attached session that may
    /// detach stops waiting once the node has been idle, outside a
    /// transaction, for `[pooling] idle_detach`.
    async fn wait_for_client(
        &mut self,
        from: &mut MessageStream<ReadHalf>,
        attached: bool,
    ) -> Result<usize, Stop> {
        let after = match self.detach {
            Some(after) if attached && self.detach_armed => after,
            _ => return from.fill().await.map_err(Stop::Io),
        };
        let progress = self.progress;
        let since = self.idle_since;
        let idle_long_enough = async move {
            let since = match since {
                Some(since) => since,
                None => {
                    progress.quiet().await;
                    Instant::now()
                }
            };
            tokio::time::sleep_until((since + after).into()).await;
        };
        let read = tokio::select! {
            biased;
            read = from.fill() => read.map_err(Stop::Io)?,
            () = idle_long_enough => return Err(Stop::Detach),
        };
        if self.idle_since.is_none() && self.progress.owed().idle_in_no_transaction() {
            // Catalog lookups and rejections keep the node idle: the clock
            // runs from the first of them.
            self.idle_since = Some(Instant::now());
        }
        Ok(read)
    }

    /// Writes what was gathered for the node, if anything; a detached
    /// session must take a node first.
    async fn write_out(&mut self, wr: &mut Option<&mut WriteHalf>) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let Some(wr) = wr.as_deref_mut() else {
            return Err(Stop::NeedNode);
        };
        wr.write_all(&self.out).await.map_err(Stop::Io)?;
        self.out.clear();
        Ok(())
    }

    /// Applies the rules to a batch before it goes anywhere. `Ok(None)`:
    /// the batch was answered here (rejected, or dropped up to its Sync);
    /// `Ok(Some(budget))`: send it, with the watchdog's budget if any.
    async fn screen(
        &mut self,
        batch: &Batch,
        wr: &mut Option<&mut WriteHalf>,
        client_wr: &tokio::sync::Mutex<ClientWriter>,
    ) -> Result<Option<Budget>, Stop> {
        let (rejection, end) = match self
            .screening
            .screen(self.guard, &batch.checked, batch.syncs)
        {
            Screened::Run(budget) => return Ok(Some(budget)),
            Screened::Answer { rejection, end } => (rejection, end),
        };
        // Answers to what was sent before must reach the client first.
        self.write_out(wr).await?;
        self.progress.idle().await;
        let mut answer = BytesMut::new();
        self.client
            .answer_here(batch, rejection.as_ref(), &mut answer)
            .map_err(Stop::NodeProtocol)?;
        match end {
            AnswerEnd::AtSync => {}
            AnswerEnd::SyncNode => {
                // The node still answers what it holds (up to a Flush, some
                // of it maybe not yet): the rejection goes to the client
                // after those answers, just ahead of the Sync's ReadyForQuery.
                self.out.extend_from_slice(&frontend::SYNC_MESSAGE);
                self.asked_node(Sent {
                    readies: 1,
                    answer_ahead: Some(std::mem::take(&mut answer).freeze()),
                    ..Sent::default()
                });
            }
            AnswerEnd::Ready => {
                let status = self.progress.owed().shown_status();
                backend::encode_ready_for_query(&mut answer, status);
            }
        }
        if !answer.is_empty() {
            self.observer.client_written(answer.len());
            let mut client = client_wr.lock().await;
            client.write_all(&answer).await.map_err(Stop::Io)?;
        }
        Ok(None)
    }

    /// Has the catalog copy answer a lookup once the node has answered
    /// everything before it. `Ok(false)`: the node answers instead.
    async fn answered_by_catalog(
        &mut self,
        pool: &CatalogPool,
        batch: &Batch,
        wr: &mut Option<&mut WriteHalf>,
        client_wr: &tokio::sync::Mutex<ClientWriter>,
    ) -> Result<bool, Stop> {
        self.write_out(wr).await?;
        if !node_settled_for_copy(self.progress, pool, self.database).await {
            return Ok(false);
        }
        // Only a Vertica client's router lets a batch up to Flush (a
        // prepare) go to the copy; sluice closes it with a Sync of its own.
        let hide_ready = batch.syncs == 0;
        let lookup = Lookup {
            database: self.database,
            user: self.user,
            progress: self.progress,
            observer: self.observer,
            metrics: self.metrics,
            hide_ready,
        };
        let mut answers = self.client.catalog_answers();
        let answered = answer_from_catalog(
            pool,
            &mut self.router,
            batch,
            &lookup,
            client_wr,
            &mut answers,
        )
        .await;
        let miss = match answered {
            Ok(()) => {
                if hide_ready {
                    self.router.flush_answered_by_catalog();
                }
                return Ok(true);
            }
            Err(miss) => miss,
        };
        if let CatalogMiss::Unanswered(_) = miss {
            answers.unanswered();
        }
        match miss.fall_back(self.metrics) {
            Ok(()) => Ok(false),
            Err(CatalogFailure::Broken(e)) => Err(Stop::CatalogBroken(e)),
            Err(CatalogFailure::ClientGone(e)) => Err(Stop::Io(e)),
        }
    }

    /// A message that is not a batch of its own went to the node (a
    /// FunctionCall, a Sync ending a refused batch): what the node owes for it.
    fn asked_node(&mut self, sent: Sent) {
        self.idle_since = None;
        self.detach_armed = true;
        self.observer.asked();
        self.progress.send(Kind::Client, sent, Instant::now());
    }

    /// Queues a batch for the node, preparing there first any statement the
    /// catalog copy prepared, and notes what the node owes for it, with the
    /// watchdog's `budget`.
    fn queue_for_node(&mut self, mut batch: Batch, budget: Budget) {
        self.idle_since = None;
        self.detach_armed = true;
        let out = &mut self.out;
        let checked = std::mem::take(&mut batch.checked);
        let (syncs, ddl) = (batch.syncs, batch.ddl);
        self.screening.sent(syncs);
        let plan = self
            .client
            .plan_for_node(&mut self.router, batch, out, self.progress);
        for frame in &plan.frames {
            out.extend_from_slice(frame.raw());
        }
        // One clock reading for the metrics' and the statistics' start.
        let now = Instant::now();
        if syncs > 0 {
            self.observer.asked();
        }
        // A Flush alone (vertica-python sends one after each Sync) asks
        // for nothing: the node owes nothing for it.
        if syncs == 0 && plan.frames.iter().all(|f| f.tag() == frontend::FLUSH) {
            return;
        }
        let sent = Sent {
            readies: u32::try_from(syncs).unwrap_or(u32::MAX),
            hidden_parse_completes: plan.hidden_answers,
            hidden_close_completes: plan.hidden_closes,
            ddl,
            statement_level: plan.statement_level,
            execution: self.guard.execution(&checked, budget),
            answer_ahead: None,
        };
        self.progress.send(Kind::Client, sent, now);
    }
}
