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
//! * [`registry`]: the open sessions, for the admin console.
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
pub mod registry;
pub mod router;
pub mod session;
pub mod translate;
mod upstream;
pub mod vertica_sql;
