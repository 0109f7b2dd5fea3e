//! The refresher: keeps the catalog copy following the warehouse, and tells
//! [`Freshness`] when a database may answer again.
//!
//! Inside `sluice run` one task does it all, so refreshes never overlap:
//!
//! 1. every `catalog.probe_interval` it runs the change probe on each
//!    warehouse database over connections it keeps open (no backend start
//!    per probe): the statistics gate ([`shape::PROBE_GATE`]), and when it
//!    moved or every [`shape::FULL_PROBE_EVERY`] periods the probe proper
//!    ([`shape::PROBE`]); an answer that moved marks the database changed —
//!    stale — as a session's committed DDL does;
//! 2. a stale database is refreshed once sessions stop reporting changes
//!    for `catalog.refresh_debounce` (at most 20 debounce periods), so a
//!    script of 500 CREATEs costs one or two refreshes, not 500;
//! 3. a refresh reads every relation's row versions on the node
//!    ([`shape::VERSIONS`]; one pass), compares the shapes of those that moved
//!    since its last refresh (all of them after a start) on the node and
//!    on the copy ([`shape::RELATIONS`], [`shape::OTHER_OBJECTS`]), and
//!    copies only the relations that differ, with whatever depends on them in the copy
//!    ([`sync::copy_relations`]); the whole database when something other
//!    than relations changed, when more than `catalog.max_incremental`
//!    relations did, when the copy lacks the database, or when the
//!    incremental copy fails or does not come out equal.
//!
//! Roles are shared by all databases: when the probe's roles part moves,
//! they are copied again (`pg_dumpall --roles-only`) before the next
//! database refresh.
//!
//! A Vertica warehouse has no pg_dump and no OIDs to keep: its probe
//! reads counts and creation times of the v_catalog tables clients read
//! ([`VERTICA_PROBE`]), and a refresh copies those tables again
//! ([`super::vertica_sync`]), a few statements whatever the catalog's
//! size.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::shape::{self, Relation, Shapes};
use super::sync::{self, Endpoint, SyncError};
use super::{CatalogPool, Freshness, RefreshKind};
use crate::config::{Catalog, Config, Dialect};

/// After a failed refresh, the database is tried again after this long,
/// doubling with each failure in a row up to [`RETRY_AT_MOST`] (it stays
/// stale meanwhile: its lookups go to the node).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
const RETRY_AT_MOST: Duration = Duration::from_secs(300);

/// With the probe off, the one probe at start (which lists the databases)
/// is followed by the next after this long.
const PROBE_OFF: Duration = Duration::from_secs(365 * 24 * 3600);

/// The Vertica probe, per v_catalog table: what moves when its rows do.
pub const VERTICA_PROBE: &[(&str, &str)] = &[
    (
        "tables",
        "COUNT(*) || ':' || COALESCE(MAX(create_time)::VARCHAR, '')",
    ),
    (
        "views",
        "COUNT(*) || ':' || COALESCE(MAX(create_time)::VARCHAR, '')",
    ),
    (
        "columns",
        "COUNT(*) || ':' || COALESCE(SUM(LENGTH(column_name) + LENGTH(data_type) + ordinal_position), 0)",
    ),
    ("schemata", "COUNT(*)"),
    (
        "comments",
        "COUNT(*) || ':' || COALESCE(SUM(LENGTH(comment)), 0)",
    ),
    ("projections", "COUNT(*)"),
    ("users", "COUNT(*)"),
];

/// What the refresher needs of the running sluice.
pub struct Context {
    pub freshness: Arc<Freshness>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub alerts: Arc<crate::alerts::Alerts>,
}

/// The configuration the refresher works with now (it follows reloads).
pub trait Current: crate::config::Current {
    fn pool(&self) -> Option<Arc<CatalogPool>>;
}

/// What the refresher keeps between rounds.
#[derive(Default)]
pub struct Refresher {
    /// The node the last probe read, and its open connections by database.
    node: Option<String>,
    probe_clients: HashMap<String, tokio_postgres::Client>,
    /// The last probe answer per database.
    probed: HashMap<String, String>,
    /// The last gate answer per database, and how many periods ago the
    /// full probe last ran there.
    gated: HashMap<String, (String, u32)>,
    /// The probe's roles part, last seen.
    roles: Option<String>,
    /// Roles must be copied again before the next database refresh.
    roles_dirty: bool,
    /// Databases whose last refresh failed, and when to try again.
    retry_at: HashMap<String, Instant>,
    /// Failures in a row per database, for the retry's backoff.
    failures: HashMap<String, u32>,
    /// A failure was alerted and not yet resolved.
    failing: bool,
    /// Per database, each relation's versions ([`shape::VERSIONS`]) on the node
    /// as of the start of its last successful refresh: a baseline the copy
    /// matched.
    versions: HashMap<String, HashMap<u32, String>>,
    /// Vertica: which v_catalog tables the probe reads (found at the first probe).
    vertica_tables: Option<Vec<&'static str>>,
}

impl Refresher {
    pub fn new() -> Refresher {
        Refresher {
            // The copy may have been synced by an older warehouse state:
            // roles are copied once per start.
            roles_dirty: true,
            ..Refresher::default()
        }
    }

    /// Runs until `stop`: probes, refreshes stale databases, and runs the
    /// periodic full sync (`catalog.sync_interval`) if one is set.
    pub async fn run(mut self, ctx: Context, current: impl Current, stop: CancellationToken) {
        let mut next_probe = Instant::now();
        let mut next_full: Option<Instant> = None;
        loop {
            let config = current.config();
            let Some(catalog) = config.catalog.clone() else {
                stop.cancelled().await;
                return;
            };
            let pool = current.pool();
            let now = Instant::now();
            if now >= next_probe {
                if let Err(e) = self.probe(&config, &catalog, &ctx.freshness).await {
                    // The node may be down; the next probe tries the next one.
                    tracing::warn!(error = %e, "the catalog change probe failed");
                }
                next_probe = Instant::now() + catalog.probe_interval.unwrap_or(PROBE_OFF);
            }
            match (catalog.sync_interval, next_full) {
                (Some(every), None) => next_full = Some(now + every),
                (Some(every), Some(at)) if now >= at => {
                    self.full_sync(&config, pool.as_deref(), &ctx).await;
                    next_full = Some(Instant::now() + every);
                }
                (None, _) => next_full = None,
                _ => {}
            }
            if !ctx.freshness.stale_databases().is_empty() {
                debounce(&ctx.freshness, catalog.refresh_debounce, &stop).await;
                for database in ctx.freshness.stale_databases() {
                    if self
                        .retry_at
                        .get(&database)
                        .is_some_and(|at| Instant::now() < *at)
                    {
                        continue;
                    }
                    self.refresh_logged(&config, &catalog, pool.as_deref(), &database, &ctx)
                        .await;
                    if stop.is_cancelled() {
                        return;
                    }
                }
            }
            let wake_at = [Some(next_probe), next_full]
                .into_iter()
                .flatten()
                .chain(self.retry_at.values().copied())
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep_until(wake_at.into()) => {}
                _ = ctx.freshness.woken() => {}
                _ = stop.cancelled() => return,
            }
            self.retry_at.retain(|_, at| Instant::now() < *at);
        }
    }

    /// One refresh of `database`, counted, logged and alerted.
    async fn refresh_logged(
        &mut self,
        config: &Config,
        catalog: &Catalog,
        pool: Option<&CatalogPool>,
        database: &str,
        ctx: &Context,
    ) {
        let mark = ctx.freshness.refresh_starts(database);
        let started = Instant::now();
        let result = self.refresh(config, catalog, pool, database).await;
        let elapsed = started.elapsed();
        match result {
            Ok((kind, relations)) => {
                ctx.freshness
                    .refreshed(database, mark, kind, relations, elapsed);
                ctx.metrics.catalog_refresh(kind.as_str(), true, elapsed);
                self.retry_at.remove(database);
                self.failures.remove(database);
                tracing::info!(database, kind = kind.as_str(), relations, elapsed = ?elapsed,
                    "catalog refresh finished");
                if std::mem::take(&mut self.failing) {
                    ctx.alerts
                        .raise(crate::alerts::AlertEvent::CatalogSyncSucceeded);
                }
            }
            Err(e) => {
                ctx.freshness.refresh_failed(database, &e.to_string());
                // What it would have done is unknown: counted apart.
                ctx.metrics.catalog_refresh("refresh", false, elapsed);
                let failures = self.failures.entry(database.to_string()).or_default();
                *failures += 1;
                let wait = RETRY_AFTER_FAILURE
                    .saturating_mul(1 << (*failures - 1).min(6))
                    .min(RETRY_AT_MOST);
                self.retry_at
                    .insert(database.to_string(), Instant::now() + wait);
                tracing::error!(database, error = %e,
                    "catalog refresh failed; the database's lookups go to the nodes until one succeeds");
                self.failing = true;
                ctx.alerts
                    .raise(crate::alerts::AlertEvent::CatalogSyncFailed {
                        error: e.to_string(),
                    });
            }
        }
    }

    /// The periodic full sync: every database copied whole.
    async fn full_sync(&mut self, config: &Config, pool: Option<&CatalogPool>, ctx: &Context) {
        let marks: Vec<(String, u64)> = ctx
            .freshness
            .snapshot()
            .into_iter()
            .map(|s| {
                let mark = ctx.freshness.refresh_starts(&s.database);
                (s.database, mark)
            })
            .collect();
        let started = Instant::now();
        match sync::sync_once(config, pool).await {
            Ok(report) => {
                for (database, mark) in marks {
                    if report.databases.contains(&database) {
                        ctx.freshness.refreshed(
                            &database,
                            mark,
                            RefreshKind::Full,
                            0,
                            started.elapsed(),
                        );
                    }
                }
                ctx.metrics.catalog_refresh("full", true, started.elapsed());
                ctx.alerts
                    .raise(crate::alerts::AlertEvent::CatalogSyncSucceeded);
            }
            Err(e) => {
                ctx.metrics
                    .catalog_refresh("full", false, started.elapsed());
                tracing::error!(error = %e, "catalog sync failed; the previous catalog copy keeps serving");
                ctx.alerts
                    .raise(crate::alerts::AlertEvent::CatalogSyncFailed {
                        error: e.to_string(),
                    });
            }
        }
    }

    /// Runs the change probe on every database of the warehouse; a
    /// database whose answer moved (or that is probed for the first time)
    /// is marked changed. After a failure the next probe starts over with
    /// the first node that answers.
    pub async fn probe(
        &mut self,
        config: &Config,
        catalog: &Catalog,
        freshness: &Freshness,
    ) -> Result<(), SyncError> {
        let result = match catalog.dialect {
            Dialect::Postgres => self.probe_postgres(config, freshness).await,
            Dialect::Vertica => self.probe_vertica(config, freshness).await,
        };
        if result.is_err() {
            self.node = None;
            self.probe_clients.clear();
        }
        result
    }

    async fn probe_postgres(
        &mut self,
        config: &Config,
        freshness: &Freshness,
    ) -> Result<(), SyncError> {
        let w = &config.warehouse;
        let node = match &self.node {
            Some(n) => n.clone(),
            None => {
                let (node, _) = sync::pick_node(config).await?;
                self.node = Some(node.clone());
                node
            }
        };
        let source = Endpoint::node(config, &node);
        let databases = {
            let client = self
                .probe_client(&source, &w.service_database, w.connect_timeout)
                .await?;
            client
                .query(sync::DATABASES, &[])
                .await
                .map_err(|e| query_failed(&node, "listing databases", e))?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        };
        self.probe_clients.retain(|db, _| databases.contains(db));
        self.gated.retain(|db, _| databases.contains(db));
        for database in &databases {
            let gate: String = self
                .probe_client(&source, database, w.connect_timeout)
                .await?
                .query_one(shape::PROBE_GATE, &[])
                .await
                .map_err(|e| query_failed(&node, "the change probe", e))?
                .get(0);
            let probed_before = self.probed.contains_key(database);
            let (last_gate, periods) = self
                .gated
                .entry(database.clone())
                .or_insert_with(|| (String::new(), shape::FULL_PROBE_EVERY));
            *periods += 1;
            // Counting off ("off ..."): the gate never moves; probe always.
            let moved = *last_gate != gate || gate.starts_with("off");
            if !moved && *periods < shape::FULL_PROBE_EVERY && probed_before {
                continue;
            }
            *last_gate = gate;
            *periods = 0;
            let client = self
                .probe_client(&source, database, w.connect_timeout)
                .await?;
            let answer: String = client
                .query_one(shape::PROBE, &[])
                .await
                .map_err(|e| query_failed(&node, "the change probe", e))?
                .get(0);
            let roles = shape::probe_roles(&answer).to_string();
            if self.roles.as_ref().is_some_and(|r| *r != roles) {
                tracing::info!("the warehouse's roles changed; the catalog copy copies them again");
                self.roles_dirty = true;
                freshness.changed_everywhere();
            }
            self.roles = Some(roles);
            if self.probed.get(database) != Some(&answer) {
                if self.probed.contains_key(database) {
                    tracing::info!(
                        database,
                        "the warehouse's catalog changed; refreshing the catalog copy"
                    );
                }
                freshness.changed(database);
                self.probed.insert(database.clone(), answer);
            }
        }
        Ok(())
    }

    async fn probe_client(
        &mut self,
        source: &Endpoint,
        database: &str,
        timeout: Duration,
    ) -> Result<&tokio_postgres::Client, SyncError> {
        if self
            .probe_clients
            .get(database)
            .is_none_or(|c| c.is_closed())
        {
            let client = source
                .client(database, timeout)
                .await
                .map_err(|e| SyncError::NoNode(format!("{}:{}: {e}", source.host, source.port)))?;
            self.probe_clients.insert(database.to_string(), client);
        }
        Ok(&self.probe_clients[database])
    }

    async fn probe_vertica(
        &mut self,
        config: &Config,
        freshness: &Freshness,
    ) -> Result<(), SyncError> {
        let database = config.warehouse.service_database.clone();
        let (node, mut conn) = super::vertica_sync::open_source(config).await?;
        if self.vertica_tables.is_none() {
            let mut present = Vec::new();
            for (table, _) in VERTICA_PROBE {
                let sql = format!("{} SELECT COUNT(*) FROM v_catalog.{table}", shape::MARKER);
                if super::vertica_sync::simple(&mut conn, &sql)
                    .await
                    .map_err(|e| SyncError::NoNode(format!("{node}: {e}")))?
                    .is_ok()
                {
                    present.push(*table);
                }
            }
            self.vertica_tables = Some(present);
        }
        let parts: Vec<String> = VERTICA_PROBE
            .iter()
            .filter(|(t, _)| self.vertica_tables.as_ref().is_some_and(|p| p.contains(t)))
            .map(|(table, what)| format!("(SELECT {what} FROM v_catalog.{table})"))
            .collect();
        let sql = format!("{} SELECT {}", shape::MARKER, parts.join(" || ' ' || "));
        let answer = super::vertica_sync::simple(&mut conn, &sql)
            .await
            .map_err(|e| SyncError::NoNode(format!("{node}: {e}")))?;
        let _ = conn
            .send(&crate::protocol::frontend::TERMINATE_MESSAGE)
            .await;
        let answer = match answer {
            Ok(rows) => rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .unwrap_or_default(),
            Err((code, message)) => {
                self.vertica_tables = None;
                return Err(SyncError::Source {
                    node,
                    table: "(the change probe)".into(),
                    message: format!("{message} (SQLSTATE {code})"),
                });
            }
        };
        if self.probed.get(&database) != Some(&answer) {
            freshness.changed(&database);
            self.probed.insert(database, answer);
        }
        Ok(())
    }

    /// Brings one database of the copy up to date; says what it did and
    /// how many relations it copied.
    pub async fn refresh(
        &mut self,
        config: &Config,
        catalog: &Catalog,
        pool: Option<&CatalogPool>,
        database: &str,
    ) -> Result<(RefreshKind, usize), SyncError> {
        if catalog.dialect == Dialect::Vertica {
            if database != config.warehouse.service_database {
                // Vertica clients' lookups run on the copy's one database.
                return Ok((RefreshKind::Unchanged, 0));
            }
            super::vertica_sync::sync(config, catalog, pool).await?;
            return Ok((RefreshKind::Full, 0));
        }
        let (node, databases) = sync::pick_node(config).await?;
        let source = Endpoint::node(config, &node);
        let copy = Endpoint::copy(catalog);
        if self.roles_dirty {
            sync::sync_roles(&source, &copy).await?;
            self.roles_dirty = false;
        }
        let Some(db) = databases.iter().find(|d| d.name == database) else {
            // No such database on the warehouse: there is nothing to copy,
            // and the node answers its sessions' lookups with the error
            // they would get anyway.
            return Ok((RefreshKind::Unchanged, 0));
        };
        let timeout = config.warehouse.connect_timeout;
        let node_client = source
            .client(database, timeout)
            .await
            .map_err(|e| SyncError::NoNode(format!("{node}: {e}")))?;
        // The probe's answers now: what this refresh covers, so the next
        // probe does not take the change it copies for a new one.
        let gate: String = node_client
            .query_one(shape::PROBE_GATE, &[])
            .await
            .map_err(|e| query_failed(&node, "the change probe", e))?
            .get(0);
        let probe: String = node_client
            .query_one(shape::PROBE, &[])
            .await
            .map_err(|e| query_failed(&node, "the change probe", e))?
            .get(0);
        let versions = versions_of(&node_client)
            .await
            .map_err(|e| query_failed(&node, "reading relation versions", e))?;
        // Only relations whose versions moved since the last refresh can
        // differ from the copy; without a last refresh, all are compared.
        let candidates = self
            .versions
            .remove(database)
            .map(|last| shape::moved(&last, &versions));
        let total = versions.len();
        let (kind, relations) = refresh_relations(
            &source,
            &copy,
            &node,
            &node_client,
            db,
            catalog,
            pool,
            candidates.as_deref(),
        )
        .await?;
        self.gated.insert(database.to_string(), (gate, 0));
        self.probed.insert(database.to_string(), probe);
        Ok(match kind {
            // A full sync copied the node as of its dump, later than these
            // versions: a relation created in between is in the copy but
            // not in them, and its drop would go unnoticed. The next
            // refresh compares every relation instead.
            RefreshKind::Full => (kind, total),
            // Every relation whose versions did not move since they were
            // read is in the copy as it was then: those that moved since
            // the last refresh were compared (and copied) after this read.
            _ => {
                self.versions.insert(database.to_string(), versions);
                (kind, relations)
            }
        })
    }
}

/// The comparison and the copying of one database's relations.
#[allow(clippy::too_many_arguments)]
async fn refresh_relations(
    source: &Endpoint,
    copy: &Endpoint,
    node: &str,
    node_client: &tokio_postgres::Client,
    db: &sync::Database,
    catalog: &Catalog,
    pool: Option<&CatalogPool>,
    candidates: Option<&[u32]>,
) -> Result<(RefreshKind, usize), SyncError> {
    let database = db.name.as_str();
    let timeout = catalog.connect_timeout;
    let copy_client = match copy.client(database, timeout).await {
        Ok(c) => c,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) => {
            tracing::info!(
                database,
                "the catalog copy has no such database yet; copying it whole"
            );
            sync::sync_database(source, copy, db, pool).await?;
            return Ok((RefreshKind::Full, 0));
        }
        Err(e) => return Err(copy_failed("connecting", e)),
    };
    // Both sides at once.
    let (on_node, on_copy) = tokio::join!(
        shapes_and_others(node_client, candidates),
        shapes_and_others(&copy_client, candidates)
    );
    let (node_shapes, node_other) =
        on_node.map_err(|e| query_failed(node, "reading relation shapes", e))?;
    let (copy_shapes, copy_other) =
        on_copy.map_err(|e| copy_failed("reading relation shapes", e))?;
    let whole = |why: &str| {
        tracing::info!(database, why, "copying the database whole");
    };
    if node_other != copy_other {
        whole("objects other than relations changed");
        sync::sync_database(source, copy, db, pool).await?;
        return Ok((RefreshKind::Full, 0));
    }
    let diff = shape::compare(&node_shapes, &copy_shapes);
    if diff.is_empty() {
        return Ok((RefreshKind::Unchanged, 0));
    }
    if diff.len() > catalog.max_incremental {
        whole("more relations changed than catalog.max_incremental");
        sync::sync_database(source, copy, db, pool).await?;
        return Ok((RefreshKind::Full, 0));
    }
    let mut node_shapes = node_shapes;
    let (drop, copied) = match plan(
        &copy_client,
        node_client,
        &mut node_shapes,
        &copy_shapes,
        diff,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return Err(copy_failed("reading dependencies", e)),
    };
    let attempt = sync::copy_relations(source, copy, database, &drop, &copied).await;
    let verified = match attempt {
        Ok(()) => verify(&copy_client, &node_shapes, &node_other, &copied).await,
        Err(e) => {
            tracing::warn!(database, error = %e, "copying the changed relations failed");
            false
        }
    };
    if !verified {
        whole("the incremental copy did not come out equal to the warehouse");
        sync::sync_database(source, copy, db, pool).await?;
        return Ok((RefreshKind::Full, 0));
    }
    Ok((RefreshKind::Incremental, drop.len().max(copied.len())))
}

fn query_failed(node: &str, what: &str, e: tokio_postgres::Error) -> SyncError {
    SyncError::Source {
        node: node.to_string(),
        table: what.to_string(),
        message: e.to_string(),
    }
}

fn copy_failed(what: &str, e: tokio_postgres::Error) -> SyncError {
    SyncError::CopyRefused {
        what: what.to_string(),
        message: e.to_string(),
    }
}

async fn versions_of(
    client: &tokio_postgres::Client,
) -> Result<HashMap<u32, String>, tokio_postgres::Error> {
    Ok(client
        .query(shape::VERSIONS, &[])
        .await?
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u32, r.get::<_, String>(1)))
        .collect())
}

/// Relation shapes (of all relations, or of those with the given OIDs)
/// and the other objects' md5.
async fn shapes_and_others(
    client: &tokio_postgres::Client,
    only: Option<&[u32]>,
) -> Result<(Shapes, String), tokio_postgres::Error> {
    let shapes = shapes_of(client, only).await?;
    let other: String = client.query_one(shape::OTHER_OBJECTS, &[]).await?.get(0);
    Ok((shapes, other))
}

/// Relation shapes, of all relations or of those with the given OIDs.
async fn shapes_of(
    client: &tokio_postgres::Client,
    only: Option<&[u32]>,
) -> Result<Shapes, tokio_postgres::Error> {
    let rows = match only {
        None => client.query(shape::RELATIONS, &[]).await?,
        Some(oids) => {
            let oids: Vec<i64> = oids.iter().map(|o| i64::from(*o)).collect();
            let sql = format!(
                "{} SELECT * FROM ({}) r WHERE r.oid = ANY($1::int8[])",
                shape::MARKER,
                shape::RELATIONS
            );
            client.query(&sql, &[&oids]).await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| {
            let rel = relation(r);
            (rel.oid, (rel, r.get::<_, String>(4)))
        })
        .collect())
}

fn relation(row: &tokio_postgres::Row) -> Relation {
    Relation {
        oid: row.get::<_, i64>(0) as u32,
        schema: row.get(1),
        name: row.get(2),
        kind: row.get::<_, String>(3).chars().next().unwrap_or('r'),
    }
}

/// What to drop from the copy and what to copy again: the difference,
/// plus every relation of the copy that dropping it would drop too
/// (copied again from the node where it still exists there).
///
/// The dependents did not move themselves, so the comparison may not have
/// read their shapes: those are read from the node here (and added to
/// `node_shapes`, against which the copy is verified).
async fn plan(
    copy: &tokio_postgres::Client,
    node: &tokio_postgres::Client,
    node_shapes: &mut Shapes,
    copy_shapes: &Shapes,
    diff: shape::Difference,
) -> Result<(Vec<Relation>, Vec<Relation>), tokio_postgres::Error> {
    let seeds: Vec<u32> = diff
        .drop
        .iter()
        .chain(&diff.copy)
        .map(|r| r.oid)
        .filter(|oid| copy_shapes.contains_key(oid))
        .collect();
    let dependents: Vec<Relation> = if seeds.is_empty() {
        Vec::new()
    } else {
        copy.query(shape::DEPENDENTS, &[&seeds])
            .await?
            .iter()
            .map(relation)
            .collect()
    };
    let mut dropped: HashSet<u32> = HashSet::new();
    let mut drop = Vec::new();
    for rel in diff.drop.into_iter().chain(dependents) {
        if dropped.insert(rel.oid) {
            drop.push(rel);
        }
    }
    let unread: Vec<u32> = drop
        .iter()
        .map(|r| r.oid)
        .filter(|oid| !node_shapes.contains_key(oid))
        .collect();
    if !unread.is_empty() {
        node_shapes.extend(shapes_of(node, Some(&unread)).await?);
    }
    let mut copied_oids: HashSet<u32> = diff.copy.iter().map(|r| r.oid).collect();
    let mut copied = diff.copy;
    for rel in &drop {
        if let Some((on_node, _)) = node_shapes.get(&rel.oid)
            && copied_oids.insert(rel.oid)
        {
            copied.push(on_node.clone());
        }
    }
    Ok((drop, copied))
}

/// Whether the relations just copied, and the other objects, now look
/// on the copy as they did on the node.
async fn verify(
    copy: &tokio_postgres::Client,
    node_shapes: &Shapes,
    node_other: &str,
    copied: &[Relation],
) -> bool {
    let oids: Vec<u32> = copied.iter().map(|r| r.oid).collect();
    match shapes_and_others(copy, Some(&oids)).await {
        Ok((copy_shapes, copy_other)) => {
            copy_other == node_other
                && copied.iter().all(|r| {
                    copy_shapes.get(&r.oid).map(|(_, s)| s)
                        == node_shapes.get(&r.oid).map(|(_, s)| s)
                })
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the copied relations back failed");
            false
        }
    }
}

/// Waits until sessions have reported no change for `quiet`, or 20 times
/// that in all.
async fn debounce(freshness: &Freshness, quiet: Duration, stop: &CancellationToken) {
    let until = Instant::now() + quiet * 20;
    loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(quiet.min(until - now)) => return,
            _ = freshness.woken() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One round for `sluice catalog-sync` without `--full`: every database
/// probed and refreshed once. Returns what each refresh did.
pub async fn refresh_once(config: &Config) -> Result<Vec<(String, RefreshKind, usize)>, SyncError> {
    let catalog = config.catalog.as_ref().ok_or(SyncError::NotConfigured)?;
    let freshness = Freshness::new();
    let mut refresher = Refresher::new();
    refresher.probe(config, catalog, &freshness).await?;
    let mut done = Vec::new();
    let databases = freshness.stale_databases();
    for database in databases {
        let (kind, n) = refresher.refresh(config, catalog, None, &database).await?;
        done.push((database, kind, n));
    }
    Ok(done)
}
