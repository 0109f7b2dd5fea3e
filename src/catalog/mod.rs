//! The catalog copy: a PostgreSQL server holding the warehouse's schema (not
//! its data) that answers catalog lookups, so metadata floods never reach the
//! warehouse.
//!
//! * [`conn`]: one raw protocol connection to the copy (sluice relays its
//!   answers byte for byte, so it cannot go through a client library).
//! * [`pool`]: connections by database, leased per lookup, with a breaker
//!   that sends lookups to the nodes while the copy is failing.
//! * [`freshness`]: which databases of the copy may answer now; a
//!   database is stale from the commit of a catalog change until a
//!   refresh covers it.
//! * [`refresh`]: the refresher, which probes the warehouse for catalog
//!   changes and copies what changed ([`shape`] says what), or the whole
//!   database when that is simpler.
//! * [`sync`]: rebuilding the copy from a warehouse node and swapping it in;
//!   [`vertica_sync`] for Vertica's `v_catalog` tables.
//! * [`managed`]: the copy sluice runs itself when `[catalog]` names no
//!   `dsn`: initialised, started, watched and stopped by sluice.
//!
//! For a PostgreSQL warehouse the copy runs in binary-upgrade mode (`postgres -b`) and is loaded with
//! `pg_dump --binary-upgrade`, so every object keeps the OID it has on the
//! warehouse: clients feed OIDs from one catalog query into the next (psql's
//! `\d`, PgJDBC's type and ResultSetMetaData lookups), and those must agree
//! with what the node says. Binary-upgrade mode admits only superusers, which
//! suits a pool that logs in once and runs each lookup under `SET ROLE`.
//! For Vertica's `v_catalog` ([`vertica_sync`]) it runs normally: Vertica's
//! object ids are plain int8 columns, and no OIDs cross between lookups.

pub mod conn;
pub mod freshness;
pub mod managed;
pub mod pool;
pub mod refresh;
pub mod shape;
pub mod sync;
pub mod vertica_sync;

mod error;

pub use conn::{CatalogConn, Login};
pub use error::CatalogError;
pub use freshness::{Freshness, RefreshKind};
pub use pool::{CatalogPool, Lease};
