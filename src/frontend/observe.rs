//! What a session reports about itself while it relays: bytes, queries and
//! their durations, errors by SQLSTATE class, and its state for
//! `SHOW CLIENTS`.
//!
//! Kept apart from the relay so that the session code carries one call per
//! event. Every call is a few atomic operations on handles made in advance
//! (see [`crate::metrics`]); none allocates except the first error of a new
//! SQLSTATE class. Times come from the caller, which reads the clock once
//! per event for everything that records it (metrics here, statistics in
//! the [`super::guard::QueryGuard`]).

use std::sync::Arc;
use std::time::Instant;

use crate::backend::Node;
use crate::frontend::guard::QueryGuard;
use crate::frontend::registry::{ClientState, SessionEntry};
use crate::metrics::{Metrics, QueryClock, Route};
use crate::protocol::backend::{self, TransactionStatus};

pub struct SessionObserver {
    metrics: Arc<Metrics>,
    node: Arc<Node>,
    entry: Arc<SessionEntry>,
    clock: QueryClock,
}

impl SessionObserver {
    pub fn new(
        metrics: Arc<Metrics>,
        node: Arc<Node>,
        entry: Arc<SessionEntry>,
    ) -> SessionObserver {
        SessionObserver {
            metrics,
            node,
            entry,
            clock: QueryClock::default(),
        }
    }

    /// Bytes read from the client.
    pub fn client_read(&self, bytes: usize) {
        self.metrics.client_received(bytes);
    }

    /// Bytes written to the client.
    pub fn client_written(&self, bytes: usize) {
        self.metrics.client_sent(bytes);
    }

    /// At `now`, the client sent a Query, Sync or FunctionCall: the node
    /// will answer it with ReadyForQuery.
    pub fn request(&self, now: Instant) {
        self.clock.request(now);
        self.entry.set_state(ClientState::Active);
    }

    /// At `now`, the node sent ReadyForQuery; `cancelled`: it ends a query
    /// a rule cancelled, counted under that route rather than the node's.
    pub fn ready_for_query(&self, status: TransactionStatus, now: Instant, cancelled: bool) {
        if let Some(elapsed) = self.clock.ready(now) {
            let route = if cancelled {
                Route::Cancelled
            } else {
                Route::Node
            };
            self.metrics.query_finished(route, elapsed);
            self.node.metrics().query();
        }
        if !self.clock.busy() {
            self.entry
                .set_state(ClientState::after_ready_for_query(status));
        }
    }

    /// The node sent an ErrorResponse with this body.
    pub fn error(&self, body: &[u8]) {
        if let Some(class) = backend::error_class(body) {
            self.metrics.error(class);
        }
    }
}

/// ReadyForQuery answers read from the node but not yet recorded: the node
/// direction records them once the client has the answer, so statistics
/// and metrics (shared maps, cold after every idle wait) stay off the path
/// of the answer. Times are taken when each ReadyForQuery is read.
#[derive(Default)]
pub struct Finished {
    /// Per ReadyForQuery: bytes of the answer it ends, its status, when it came.
    ready: Vec<(usize, TransactionStatus, Instant)>,
}

impl Finished {
    /// A ReadyForQuery ending an answer of `bytes` bytes to the client.
    pub fn ready(&mut self, bytes: usize, status: TransactionStatus) {
        self.ready.push((bytes, status, Instant::now()));
    }

    /// `written` bytes reached the client: records the answers that ended
    /// in them, then `rest` bytes of the next answer.
    pub fn record(
        &mut self,
        observer: &SessionObserver,
        guard: &QueryGuard,
        written: usize,
        rest: usize,
    ) {
        observer.client_written(written);
        for (bytes, status, at) in self.ready.drain(..) {
            guard.bytes(bytes);
            let cancelled = guard.ready(at);
            observer.ready_for_query(status, at, cancelled);
        }
        guard.bytes(rest);
    }
}
