//! A batch of catalog lookups answered by the catalog copy: the one
//! exchange both kinds of session use (PostgreSQL clients as they are,
//! Vertica clients converted by [`super::translate`]). Whether the copy may
//! answer at all is for what the node owes ([`super::owed`]) to say.
//!
//! The copy runs each lookup under the session's role and search path, so
//! privilege-filtered and visibility-dependent lookups answer as the node
//! would. Its answer is held back until whole (up to
//! [`CATALOG_ANSWER_BUFFER`]): a copy that fails or stalls before the first
//! byte reaches the client is replaced by the node without the client
//! noticing. Its ReadyForQuery carries the node's transaction status, since
//! the client's transaction lives on the node. A Vertica session converts
//! each message on the way ([`Answers`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::downstream::ClientWriter;
use super::observe::SessionObserver;
use super::owed::NodeProgress;
use super::router::{Batch, Router};
use crate::catalog::{CatalogConn, CatalogError, CatalogPool, Lease};
use crate::metrics::{Metrics, QueryEnd, Route};
use crate::protocol::frame::{Frame, Item};
use crate::protocol::{ProtocolError, backend, frontend};

/// How much of a catalog answer is held back before it streams.
pub(super) const CATALOG_ANSWER_BUFFER: usize = 1 << 20;

/// Why the catalog copy did not answer a batch.
pub(super) enum CatalogMiss {
    /// Nothing reached the client: the node can answer instead.
    Unanswered(CatalogError),
    /// Part of the answer reached the client: the session cannot go on.
    Broken(CatalogError),
    /// The client's connection failed while sluice wrote to it.
    ClientGone(std::io::Error),
}

/// A catalog miss the session cannot recover from.
pub(super) enum CatalogFailure {
    /// Part of the answer reached the client.
    Broken(CatalogError),
    /// The client's connection failed while sluice wrote to it.
    ClientGone(std::io::Error),
}

impl CatalogMiss {
    /// `Ok`: nothing reached the client and the node answers instead
    /// (logged and counted as a fallback); `Err`: the session cannot go on.
    pub(super) fn fall_back(self, metrics: &Metrics) -> Result<(), CatalogFailure> {
        match self {
            CatalogMiss::Unanswered(e) => {
                tracing::info!(error = %e, "the catalog copy could not answer; the node answers instead");
                metrics.catalog_fallback();
                Ok(())
            }
            CatalogMiss::Broken(e) => Err(CatalogFailure::Broken(e)),
            CatalogMiss::ClientGone(e) => Err(CatalogFailure::ClientGone(e)),
        }
    }
}

/// The catalog copy for a batch the router found to be a lookup, when one
/// is configured and not resting after a failure; a lookup the copy cannot
/// take is counted as a fallback to the node.
pub(super) fn copy_for(
    batch: &Batch,
    catalog: Option<&Arc<CatalogPool>>,
    database: &str,
    metrics: &Metrics,
) -> Option<Arc<CatalogPool>> {
    if !batch.catalog_ok {
        return None;
    }
    let pool = catalog?;
    if !pool.is_available() {
        tracing::debug!(
            "a catalog lookup goes to the node: the catalog copy is resting after a failure"
        );
        metrics.catalog_fallback();
        return None;
    }
    if stale(pool, database) {
        return None;
    }
    Some(pool.clone())
}

/// Whether the copy of `database` may lag behind what the client could
/// know (a committed catalog change not yet refreshed): the lookup goes to
/// the node, counted by the freshness as a stale lookup.
fn stale(pool: &CatalogPool, database: &str) -> bool {
    let stale = pool.freshness().stale_for_lookup(database);
    if stale {
        tracing::debug!(
            database,
            "a catalog lookup goes to the node: the catalog copy may lag behind it"
        );
    }
    stale
}

/// Waits until the node has answered everything sent before a lookup (the
/// caller has written it), then tells whether the copy may answer: not
/// after the transaction failed or changed the schema, and not when what
/// the node just answered made the copy stale (a DDL batch sent ahead of
/// the lookup in the same write commits only now).
pub(super) async fn node_settled_for_copy(
    progress: &NodeProgress,
    pool: &CatalogPool,
    database: &str,
) -> bool {
    progress.idle().await;
    if !progress.owed().catalog_may_answer() {
        tracing::debug!(
            "a catalog lookup goes to the node: the transaction failed or changed the schema"
        );
        return false;
    }
    !stale(pool, database)
}

/// How the copy's answer reaches the client.
pub(super) trait Answers {
    /// Rows are needed whole (to convert them), not as relayable runs.
    fn whole_rows(&self) -> bool;
    /// Appends the client's form of one message of the answer (not
    /// ReadyForQuery, ParameterStatus or notifications, handled here).
    fn message(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), ProtocolError>;
    /// The answer ended with ReadyForQuery.
    fn ready(&mut self) {}
    /// Nothing of the answer reached the client, and the node answers the
    /// batch instead: what [`Answers::message`] noted must be as before.
    fn unanswered(&mut self) {}
}

/// A PostgreSQL client: the copy's answer as it is.
pub(super) struct AsIs;

impl Answers for AsIs {
    fn whole_rows(&self) -> bool {
        false
    }
    fn message(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), ProtocolError> {
        out.extend_from_slice(frame.raw());
        Ok(())
    }
}

/// The session a lookup runs for.
pub(super) struct Lookup<'a> {
    pub database: &'a str,
    pub user: &'a str,
    pub progress: &'a NodeProgress,
    pub observer: &'a SessionObserver,
    pub metrics: &'a Metrics,
    /// sluice ended the batch with a Sync of its own (a Vertica client's
    /// batch up to Flush): the copy's ReadyForQuery is not the client's.
    pub hide_ready: bool,
}

/// Has the catalog copy answer a batch.
pub(super) async fn answer_from_catalog(
    pool: &CatalogPool,
    router: &mut Router,
    batch: &Batch,
    lookup: &Lookup<'_>,
    client_wr: &tokio::sync::Mutex<ClientWriter>,
    answers: &mut (dyn Answers + Send),
) -> Result<(), CatalogMiss> {
    let started = Instant::now();
    let mut lease = pool
        .lease(lookup.database)
        .await
        .map_err(CatalogMiss::Unanswered)?;
    let limit = pool.settings().answer_timeout;
    let result = exchange(&mut lease, router, batch, lookup, client_wr, limit, answers).await;
    if let Err(CatalogMiss::Unanswered(e @ CatalogError::Timeout { .. })) = &result {
        pool.rest(e);
    }
    match &result {
        Ok(()) => {
            pool.give_back(lease, true);
            lookup
                .metrics
                .query_finished(QueryEnd::Answered(Route::Catalog), started.elapsed());
        }
        Err(CatalogMiss::Unanswered(CatalogError::Io(_))) | Err(CatalogMiss::Broken(_)) => {
            // The connection is gone or mid-answer: not reusable.
        }
        Err(_) => pool.give_back(lease, false),
    }
    result
}

async fn exchange(
    lease: &mut Lease,
    router: &mut Router,
    batch: &Batch,
    lookup: &Lookup<'_>,
    client_wr: &tokio::sync::Mutex<ClientWriter>,
    limit: Duration,
    answers: &mut (dyn Answers + Send),
) -> Result<(), CatalogMiss> {
    let conn = &mut lease.conn;
    conn.set_whole_rows(answers.whole_rows());
    // Until the first byte reaches the client, a copy that has not
    // answered by the deadline is given up on and the node answers;
    // answers are held back until whole (CATALOG_ANSWER_BUFFER), so this
    // covers all but the largest, which are never cut off mid-stream.
    let deadline = tokio::time::Instant::now() + limit;
    let late = || CatalogError::Timeout {
        addr: "the catalog copy".into(),
        timeout: limit,
    };
    let mut request = BytesMut::new();
    // The copy's connection takes on the session's role and search path
    // first, so privilege-filtered and visibility-dependent lookups
    // answer as the node would.
    let mut prelude = Vec::new();
    if conn.role.as_deref() != Some(lookup.user) {
        prelude.push(format!("SET ROLE \"{}\"", lookup.user.replace('"', "\"\"")));
    }
    let search_path = router.search_path().map(str::to_string);
    if conn.search_path != search_path {
        prelude.push(
            search_path
                .clone()
                .unwrap_or_else(|| "RESET search_path".into()),
        );
    }
    let set_role = !prelude.is_empty();
    if set_role {
        request.extend_from_slice(frontend::encode_query(&prelude.join("; ")).raw());
    }
    let plan = router.catalog_plan(batch, &mut conn.prepared);
    for frame in &plan.frames {
        request.extend_from_slice(frame.raw());
    }
    if lookup.hide_ready {
        request.extend_from_slice(&frontend::SYNC_MESSAGE);
    }
    tokio::time::timeout_at(deadline, conn.send(&request))
        .await
        .unwrap_or_else(|_| Err(late()))
        .map_err(CatalogMiss::Unanswered)?;
    if set_role {
        let mut refused = None;
        loop {
            let frame = tokio::time::timeout_at(deadline, conn.next_frame())
                .await
                .unwrap_or_else(|_| Err(late()))
                .map_err(CatalogMiss::Unanswered)?;
            match frame.tag() {
                backend::ERROR_RESPONSE => refused = Some(backend::error_summary(frame.body()).1),
                backend::READY_FOR_QUERY => break,
                _ => {}
            }
        }
        if let Some(message) = refused {
            // The role is not in the copy yet (a sync will bring it).
            drain_to_ready(conn)
                .await
                .map_err(CatalogMiss::Unanswered)?;
            return Err(CatalogMiss::Unanswered(CatalogError::Refused {
                code: "42704".into(),
                message,
            }));
        }
        conn.role = Some(lookup.user.to_string());
        conn.search_path = search_path;
    }
    for _ in 0..plan.hidden_answers {
        let frame = tokio::time::timeout_at(deadline, conn.next_frame())
            .await
            .unwrap_or_else(|_| Err(late()))
            .map_err(CatalogMiss::Unanswered)?;
        if frame.tag() == backend::ERROR_RESPONSE {
            let (code, message) = backend::error_summary(frame.body());
            conn.prepared.clear();
            drain_to_ready(conn)
                .await
                .map_err(CatalogMiss::Unanswered)?;
            return Err(CatalogMiss::Unanswered(CatalogError::Refused {
                code,
                message,
            }));
        }
    }
    let status = lookup.progress.owed().shown_status();
    let mut client = client_wr.lock().await;
    let mut out = BytesMut::new();
    let mut written = false;
    loop {
        let next = if written {
            conn.next_item().await
        } else {
            tokio::time::timeout_at(deadline, conn.next_item())
                .await
                .unwrap_or_else(|_| Err(late()))
        };
        let item = match next {
            Ok(item) => item,
            Err(e) if written => return Err(CatalogMiss::Broken(e)),
            Err(e) => return Err(CatalogMiss::Unanswered(e)),
        };
        let done = match item {
            Item::Relay(rows) => {
                out.extend_from_slice(&rows);
                false
            }
            Item::Inspect(frame) => match frame.tag() {
                // The copy's own parameters and notifications are not the session's.
                backend::PARAMETER_STATUS | b'A' => false,
                // The copy is closing this connection (shutdown, a sync's
                // swap): before any answer went out, the node can answer.
                backend::ERROR_RESPONSE
                    if !written && out.is_empty() && backend::is_fatal(frame.body()) =>
                {
                    let (code, message) = backend::error_summary(frame.body());
                    return Err(CatalogMiss::Unanswered(CatalogError::Refused {
                        code,
                        message,
                    }));
                }
                backend::READY_FOR_QUERY => {
                    answers.ready();
                    if !lookup.hide_ready {
                        backend::encode_ready_for_query(&mut out, status);
                    }
                    true
                }
                _ => {
                    let converted = answers.message(&frame, &mut out);
                    match converted {
                        Ok(()) => false,
                        Err(e) if written => {
                            return Err(CatalogMiss::Broken(CatalogError::Protocol(e)));
                        }
                        Err(e) => return Err(CatalogMiss::Unanswered(CatalogError::Protocol(e))),
                    }
                }
            },
        };
        // Catalog answers are small; holding one back until it is whole
        // means a copy that fails mid-answer leaves nothing half-sent,
        // and the node can answer instead.
        if done || out.len() >= CATALOG_ANSWER_BUFFER {
            if !out.is_empty() {
                lookup.observer.client_written(out.len());
                client
                    .write_all(&out)
                    .await
                    .map_err(CatalogMiss::ClientGone)?;
                // A large answer streams in relayed runs: if the copy fails
                // now, the client may be inside a row.
                client.set_mid_message(!conn.at_boundary());
            }
            written = true;
            out.clear();
        }
        if done {
            return Ok(());
        }
    }
}

/// Reads and drops answers up to the next ReadyForQuery.
async fn drain_to_ready(conn: &mut CatalogConn) -> Result<(), CatalogError> {
    loop {
        if let Item::Inspect(frame) = conn.next_item().await?
            && frame.tag() == backend::READY_FOR_QUERY
        {
            return Ok(());
        }
    }
}
