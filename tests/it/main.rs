//! Integration tests: real PostgreSQL servers (started per test from a
//! template), the real sluice binary as a child process, real clients
//! (tokio-postgres, psql, raw sockets).
//!
//! Tests need the PostgreSQL server binaries; without them they fail with a
//! message that says how to install them.

mod support;

mod catalog;
mod catalog_fresh;
mod cluster;
mod failover;
mod hardening;
mod observability;
mod operations;
mod pooling;
mod relay;
mod reuse;
mod rules;
mod startup;
mod tls;
mod vertica;
mod vertica_catalog;
mod vertica_relay;
