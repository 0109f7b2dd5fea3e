//! sluice: a query proxy for analytics warehouses.
//!
//! Clients (DBeaver, DataGrip, Tableau, psql, Vertica drivers) connect to
//! sluice as if it were the warehouse; sluice relays each session to one of
//! the warehouse nodes, chosen round robin among the healthy ones.
//!
//! # Layout
//! * [`protocol`]: the wire protocol as bytes; no I/O.
//! * [`config`]: the TOML configuration, validated with line-and-key errors.
//! * [`frontend`]: the client side: listener, pre-startup negotiation, sessions.
//! * [`backend`]: the node side: node list, round robin, connections, health checks.
//! * [`auth`]: clients authenticated by sluice (`auth_query`, cleartext), and node logins on their behalf.
//! * [`cancel`]: sluice's own cancel keys and the node keys they stand for.
//! * [`catalog`]: the catalog copy: its connection pool and the sync that fills it.
//! * [`classify`]: what a query reads and writes, and so where it runs.
//! * [`cluster`]: several instances as one: cancel requests forwarded to peers.
//! * [`server`]: the running proxy: shared state, reload, drain and shutdown.
//! * [`http`]: `/healthz`, `/readyz` for orchestrators and `/metrics` for Prometheus.
//! * [`metrics`]: every exported metric, registered once.
//! * [`stats`]: query statistics by fingerprint, bounded.
//! * [`admin`]: the admin console on the virtual database `sluice`.
//! * [`alerts`]: events and thresholds, folded and posted to a Slack webhook.
//! * [`net`], [`tls`]: one stream type for plain and TLS sockets; rustls setup.
//! * [`localpg`]: throwaway local PostgreSQL clusters, for `sluice demo` and the tests.
//! * [`demo`]: the embedded demo.
//! * [`lex`]: SQL lexing (comments, literals, quoted names) shared by masking, scanning and translation.
//! * [`explain`]: `sluice explain`, the route and rule verdicts for one query.

pub mod admin;
pub mod alerts;
pub mod auth;
pub mod backend;
pub mod cancel;
pub mod catalog;
pub mod classify;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod explain;
pub mod frontend;
pub mod generation;
pub mod health;
pub mod http;
pub mod lex;
pub mod localpg;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod registry;
pub mod scram;
pub mod server;
pub mod stats;
pub mod tls;

/// An error with its chain of causes, as one line for a log: Display
/// implementations here name only their own layer (`cannot connect to ...`),
/// so the causes must be appended to read the whole story.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
