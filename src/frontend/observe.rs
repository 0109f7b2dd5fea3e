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

    /// At `now`, the node sent ReadyForQuery.
    pub fn ready_for_query(&self, status: TransactionStatus, now: Instant) {
        if let Some(elapsed) = self.clock.ready(now) {
            self.metrics.query_finished(Route::Node, elapsed);
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
