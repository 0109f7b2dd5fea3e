//! What a session reports about itself while it relays: bytes, queries and
//! their durations, errors by SQLSTATE class, and its state for
//! `SHOW CLIENTS`.
//!
//! Kept apart from the relay so that the session code carries one call per
//! event. Every call is a few atomic operations on handles made in advance
//! (see [`crate::metrics`]); none allocates except the first error of a new
//! SQLSTATE class. Times come from the caller, which reads the clock once
//! per event for everything that records it (metrics here, statistics in
//! the [`super::guard::QueryGuard`]); when each query started is kept by
//! the queue of what the node owes ([`super::owed`]).

use std::sync::Arc;
use std::time::Duration;

use super::owed::{Done, Kind};
use crate::backend::Node;
use crate::metrics::{Metrics, QueryEnd, Route};
use crate::protocol::backend::{self, TransactionStatus};
use crate::registry::{ClientState, SessionEntry};

pub struct SessionObserver {
    metrics: Arc<Metrics>,
    entry: Arc<SessionEntry>,
}

impl SessionObserver {
    pub fn new(metrics: Arc<Metrics>, entry: Arc<SessionEntry>) -> SessionObserver {
        SessionObserver { metrics, entry }
    }

    /// The session's registry entry (node and pooling state for `SHOW CLIENTS`).
    pub fn entry(&self) -> &SessionEntry {
        &self.entry
    }

    /// Bytes read from the client.
    pub fn client_read(&self, bytes: usize) {
        self.metrics.client_received(bytes);
    }

    /// Bytes written to the client.
    pub fn client_written(&self, bytes: usize) {
        self.metrics.client_sent(bytes);
    }

    /// A batch went to the node: the session is active.
    pub fn asked(&self) {
        self.entry.set_state(ClientState::Active);
    }

    /// A batch ended `elapsed` after it was sent: a client's is a query
    /// answered by the node, or cancelled by a rule's watchdog (counted
    /// there, once).
    pub(super) fn finished(&self, done: &Done, elapsed: Duration, node: &Node) {
        if done.kind != Kind::Client {
            return;
        }
        let route = if done.cancelled {
            QueryEnd::Cancelled
        } else {
            QueryEnd::Answered(Route::Node)
        };
        self.metrics.query_finished(route, elapsed);
        node.metrics().query();
    }

    /// The node owes nothing more: the session waits for its client.
    pub fn settled(&self, status: TransactionStatus) {
        self.entry
            .set_state(ClientState::after_ready_for_query(status));
    }

    /// The node sent an ErrorResponse with this body.
    pub fn error(&self, body: &[u8]) {
        if let Some(class) = backend::error_class(body) {
            self.metrics.error(class);
        }
    }
}
