//! The client side: accepting connections, the pre-startup negotiation, and
//! the session that relays a client to its node.
//!
//! * [`listener`]: the accept loop, the client limit and draining.
//! * [`negotiate`]: SSLRequest, GSSENCRequest, LoadBalanceRequest,
//!   CancelRequest and the StartupMessage, before any typed message.
//! * [`session`]: one session from its node's choice to its last words,
//!   for both kinds of client.
//! * [`upstream`]: the client direction of both kinds of session: batches
//!   screened by the rules, answered by the catalog copy or sent to the node.
//! * [`downstream`]: the node direction of both kinds of session.
//! * [`owed`]: what the node owes a session, batch by batch: what the
//!   client sees of each answer, the transaction status, what the
//!   watchdog watches.
//! * [`observe`]: what a session reports to metrics and the registry.
//! * [`translate`]: a Vertica client in front of PostgreSQL nodes: the translating relay.
//! * [`catalog_answer`]: a batch answered by the catalog copy, for both kinds of session.
//! * [`router`]: batches of client messages, to the node or the catalog copy.
//! * [`guard`]: rules at work in a session: rejects, the cancel watchdog,
//!   query statistics.

mod catalog_answer;
mod downstream;
pub mod guard;
pub mod listener;
pub mod negotiate;
pub mod observe;
mod owed;
pub(crate) mod pooled;
pub mod router;
pub mod session;
mod statements;
pub mod translate;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Console;
use crate::alerts::Alerts;
use crate::backend::NodeSet;
use crate::cancel::CancelRegistry;
use crate::generation::{Generation, Generations};
use crate::metrics::Metrics;
use crate::registry::SessionRegistry;
use crate::stats::QueryStats;

/// What the client side uses of the running sluice: the listener's and
/// the sessions' view of it.
pub struct Frontend {
    pub generations: Generations,
    pub nodes: Arc<NodeSet>,
    /// sluice's cancel keys and the node keys they stand for.
    pub cancels: Arc<CancelRegistry>,
    /// Open sessions by id, for the admin console.
    pub registry: Arc<SessionRegistry>,
    pub metrics: Arc<Metrics>,
    /// Query statistics by fingerprint (`SHOW QUERIES`, `/queries`).
    pub stats: Arc<QueryStats>,
    pub alerts: Arc<Alerts>,
    /// Secrets read by `[auth] auth_query`, cached.
    pub secrets: Arc<crate::auth::Secrets>,
    /// Node greetings by startup packet, for sessions that start detached.
    pub greetings: crate::auth::Greetings,
    /// Where startups for the database `sluice` go.
    pub console: Arc<Console>,
    /// The client listener's address, as bound.
    pub listen_addr: SocketAddr,
    /// Client sessions now open.
    pub clients: AtomicUsize,
    /// Client sessions now open, by user (for `server.max_client_connections_per_user`).
    pub clients_by_user: DashMap<String, usize>,
    /// Session tasks, waited for when draining.
    pub sessions: TaskTracker,
    /// Set when draining starts: new sessions are refused.
    pub draining: CancellationToken,
    /// Ends every session and the accept loop.
    pub kill: CancellationToken,
}

impl Frontend {
    /// The configuration generation new sessions start with.
    pub fn generation(&self) -> Arc<Generation> {
        self.generations.current()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Why sluice should not get new clients now, if it should not.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.is_draining() {
            return Some("draining for shutdown".into());
        }
        if self.nodes.healthy_count() == 0 {
            return Some(format!(
                "none of the {} warehouse nodes is healthy",
                self.nodes.all().len()
            ));
        }
        None
    }
}
pub mod vertica_sql;
