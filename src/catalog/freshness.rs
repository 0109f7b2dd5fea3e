//! Whether the catalog copy is current, database by database.
//!
//! The copy may answer a lookup only when sluice knows it holds every
//! change the client could know of. Two things make a database stale: a
//! session of this sluice committing a statement that changes the catalog
//! ([`Freshness::changed`] from the session, before the client sees its
//! ReadyForQuery), and the change probe seeing the warehouse's catalog move
//! (DDL from ETL jobs or another sluice instance). While a database is
//! stale its lookups go to the node; the refresher ([`super::refresh`])
//! brings the copy up to date and marks it current again.
//!
//! Each database counts the changes learnt of (`changed`) and the count a
//! completed refresh covers (`current`): a refresh notes `changed` before
//! it reads the warehouse, so a change learnt while it runs keeps the
//! database stale until the next one. A database sluice has not yet
//! refreshed since it started counts as stale: sluice cannot tell whether
//! the copy it finds is current.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

/// What a refresh did, for `SHOW CATALOG` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshKind {
    /// Nothing differed between the warehouse and the copy.
    Unchanged,
    /// Only the changed relations were copied again.
    Incremental,
    /// The database was copied whole.
    Full,
}

impl RefreshKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshKind::Unchanged => "unchanged",
            RefreshKind::Incremental => "incremental",
            RefreshKind::Full => "full",
        }
    }
}

/// One database's state, as `SHOW CATALOG` shows it.
#[derive(Debug, Clone, Default)]
pub struct DatabaseState {
    pub database: String,
    pub stale: bool,
    /// Since when the copy is known to lag (or has not been refreshed).
    pub stale_for: Option<Duration>,
    pub last_refresh: Option<SystemTime>,
    pub last_kind: Option<RefreshKind>,
    pub last_elapsed: Option<Duration>,
    /// Relations copied again by the last refresh.
    pub last_relations: usize,
    pub refreshes: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Lookups the node answered because this database was stale.
    pub stale_lookups: u64,
}

#[derive(Debug, Default)]
struct Database {
    changed: u64,
    /// `None` until the first refresh since start completed.
    current: Option<u64>,
    stale_since: Option<Instant>,
    state: DatabaseState,
}

impl Database {
    fn is_stale(&self) -> bool {
        self.current.is_none_or(|c| c < self.changed)
    }
}

/// The freshness of every database of the copy; one per running sluice,
/// shared by its sessions and its refresher, across reloads.
#[derive(Debug, Default)]
pub struct Freshness {
    databases: Mutex<HashMap<String, Database>>,
    /// Wakes the refresher when a session reports a change.
    wake: Notify,
}

impl Freshness {
    pub fn new() -> Freshness {
        Freshness::default()
    }

    /// Whether lookups on `database` must go to the node now. Counts the
    /// lookup as sent to the node when it is.
    pub fn stale_for_lookup(&self, database: &str) -> bool {
        let mut dbs = self.databases.lock().expect("freshness lock");
        match dbs.get_mut(database) {
            Some(db) if !db.is_stale() => false,
            Some(db) => {
                db.state.stale_lookups += 1;
                true
            }
            None => {
                // Never refreshed since start: noted, so SHOW CATALOG lists it
                // and the refresher looks at it.
                let db = dbs.entry(database.to_string()).or_default();
                db.stale_since.get_or_insert_with(Instant::now);
                db.state.stale_lookups += 1;
                drop(dbs);
                self.wake.notify_one();
                true
            }
        }
    }

    /// A statement that changes the catalog of `database` committed (or
    /// the probe saw the warehouse's catalog move): lookups go to the node
    /// until a refresh that started after this completes.
    pub fn changed(&self, database: &str) {
        {
            let mut dbs = self.databases.lock().expect("freshness lock");
            let db = dbs.entry(database.to_string()).or_default();
            db.changed += 1;
            db.stale_since.get_or_insert_with(Instant::now);
        }
        self.wake.notify_one();
    }

    /// Marks every known database changed (roles are shared by all).
    pub fn changed_everywhere(&self) {
        {
            let mut dbs = self.databases.lock().expect("freshness lock");
            for db in dbs.values_mut() {
                db.changed += 1;
                db.stale_since.get_or_insert_with(Instant::now);
            }
        }
        self.wake.notify_one();
    }

    /// Waits until a session reports a change.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The databases that need a refresh now.
    pub fn stale_databases(&self) -> Vec<String> {
        let dbs = self.databases.lock().expect("freshness lock");
        let mut stale: Vec<String> = dbs
            .iter()
            .filter(|(_, db)| db.is_stale())
            .map(|(name, _)| name.clone())
            .collect();
        stale.sort();
        stale
    }

    /// Notes the start of a refresh of `database`; pass the mark to
    /// [`Freshness::refreshed`].
    pub fn refresh_starts(&self, database: &str) -> u64 {
        let mut dbs = self.databases.lock().expect("freshness lock");
        dbs.entry(database.to_string()).or_default().changed
    }

    /// A refresh that started at `mark` brought `database` up to date.
    pub fn refreshed(
        &self,
        database: &str,
        mark: u64,
        kind: RefreshKind,
        relations: usize,
        elapsed: Duration,
    ) {
        let mut dbs = self.databases.lock().expect("freshness lock");
        let db = dbs.entry(database.to_string()).or_default();
        db.current = Some(db.current.map_or(mark, |c| c.max(mark)));
        if !db.is_stale() {
            db.stale_since = None;
        }
        db.state.last_refresh = Some(SystemTime::now());
        db.state.last_kind = Some(kind);
        db.state.last_elapsed = Some(elapsed);
        db.state.last_relations = relations;
        db.state.refreshes += 1;
        db.state.last_error = None;
    }

    /// A refresh of `database` failed: it stays stale.
    pub fn refresh_failed(&self, database: &str, error: &str) {
        let mut dbs = self.databases.lock().expect("freshness lock");
        let db = dbs.entry(database.to_string()).or_default();
        db.state.failures += 1;
        db.state.last_error = Some(error.to_string());
    }

    /// Every database's state, by name.
    pub fn snapshot(&self) -> Vec<DatabaseState> {
        let dbs = self.databases.lock().expect("freshness lock");
        let mut out: Vec<DatabaseState> = dbs
            .iter()
            .map(|(name, db)| DatabaseState {
                database: name.clone(),
                stale: db.is_stale(),
                stale_for: db.stale_since.map(|s| s.elapsed()),
                ..db.state.clone()
            })
            .collect();
        out.sort_by(|a, b| a.database.cmp(&b.database));
        out
    }
}

/// A per-database series: name, type, help, and its value for a database.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DatabaseState) -> Option<f64>,
);

impl Freshness {
    /// Appends the per-database metrics in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let states = self.snapshot();
        let metrics: [Series; 4] = [
            (
                "sluice_catalog_stale",
                "gauge",
                "1 while the catalog copy may lag behind the warehouse for this database (its lookups go to the nodes).",
                |s| Some(if s.stale { 1.0 } else { 0.0 }),
            ),
            (
                "sluice_catalog_stale_seconds",
                "gauge",
                "How long the database has been stale (0 when current).",
                |s| Some(s.stale_for.map_or(0.0, |d| d.as_secs_f64())),
            ),
            (
                "sluice_catalog_last_refresh_timestamp_seconds",
                "gauge",
                "Unix time of the last completed refresh of the database.",
                |s| {
                    s.last_refresh
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs_f64())
                },
            ),
            (
                "sluice_catalog_stale_lookups_total",
                "counter",
                "Catalog lookups sent to a node because the copy of their database was stale.",
                |s| Some(s.stale_lookups as f64),
            ),
        ];
        for (name, kind, help, value) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for state in &states {
                if let Some(v) = value(state) {
                    let db = state.database.replace('\\', "\\\\").replace('"', "\\\"");
                    let _ = writeln!(out, "{name}{{database=\"{db}\"}} {v}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_is_stale_until_its_first_refresh() {
        let f = Freshness::new();
        assert!(f.stale_for_lookup("db"));
        let mark = f.refresh_starts("db");
        f.refreshed("db", mark, RefreshKind::Full, 3, Duration::ZERO);
        assert!(!f.stale_for_lookup("db"));
        assert_eq!(f.snapshot()[0].stale_lookups, 1);
    }

    #[test]
    fn a_change_during_a_refresh_keeps_the_database_stale() {
        let f = Freshness::new();
        let mark = f.refresh_starts("db");
        f.refreshed("db", mark, RefreshKind::Full, 0, Duration::ZERO);
        f.changed("db");
        assert!(f.stale_for_lookup("db"));
        let mark = f.refresh_starts("db");
        f.changed("db"); // committed while the refresh read the warehouse
        f.refreshed("db", mark, RefreshKind::Incremental, 1, Duration::ZERO);
        assert!(f.stale_for_lookup("db"), "the later change is not covered");
        assert_eq!(f.stale_databases(), ["db"]);
        let mark = f.refresh_starts("db");
        f.refreshed("db", mark, RefreshKind::Incremental, 1, Duration::ZERO);
        assert!(!f.stale_for_lookup("db"));
        assert!(f.stale_databases().is_empty());
    }

    #[test]
    fn a_failed_refresh_leaves_the_database_stale() {
        let f = Freshness::new();
        f.changed("db");
        f.refresh_failed("db", "pg_dump failed");
        assert!(f.stale_for_lookup("db"));
        let state = &f.snapshot()[0];
        assert_eq!(state.failures, 1);
        assert_eq!(state.last_error.as_deref(), Some("pg_dump failed"));
    }

    #[test]
    fn metrics_show_each_database() {
        let f = Freshness::new();
        f.changed("a\"b");
        let mut text = String::new();
        f.render(&mut text);
        assert!(
            text.contains("sluice_catalog_stale{database=\"a\\\"b\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE sluice_catalog_stale_lookups_total counter"));
    }

    #[test]
    fn roles_make_every_database_stale() {
        let f = Freshness::new();
        for db in ["a", "b"] {
            let mark = f.refresh_starts(db);
            f.refreshed(db, mark, RefreshKind::Unchanged, 0, Duration::ZERO);
        }
        f.changed_everywhere();
        assert_eq!(f.stale_databases(), ["a", "b"]);
    }
}
