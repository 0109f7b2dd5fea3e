//! Metrics: every counter, gauge and histogram sluice exports, created once.
//!
//! The `metrics` macros look a metric up by name and labels on every call
//! (≈ 60–150 ns with labels); the relay counts every write, so [`Metrics`]
//! registers each handle once, at start, and hands out plain methods
//! (`metrics.query_routed(QueryEnd::Rejected)`). Per-node handles are made when a
//! node joins ([`Metrics::node`]). Labels that are only known at run time and
//! stay few (SQLSTATE classes, rule names) are registered on first use and
//! cached.
//!
//! The recorder is sluice's own, not installed as the process-global one, so
//! that two sluices in one process (tests) keep separate numbers. Prometheus
//! text comes from [`Metrics::render`], served by [`crate::http`];
//! [`Metrics::run_upkeep`] must run every few seconds, or histograms keep
//! their raw samples until the next scrape.
//!
//! Besides the exported handles, [`Totals`] keeps a few plain atomics that
//! sluice itself reads back (threshold alerts, the admin console): exported
//! handles cannot be read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub use crate::classify::Route;

/// Upper bounds (seconds) of the latency buckets, exported and internal alike.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How a query ended, as `sluice_queries_total{route}` labels it:
/// answered where it was routed ([`Route`], the one type for where a query
/// goes), or stopped by a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryEnd {
    /// Answered by a warehouse node or by the catalog copy.
    Answered(Route),
    /// Refused by a rule before it reached a node.
    Rejected,
    /// Cancelled by a rule while it ran.
    Cancelled,
}

impl QueryEnd {
    pub const ALL: [QueryEnd; 4] = [
        QueryEnd::Answered(Route::Node),
        QueryEnd::Answered(Route::Catalog),
        QueryEnd::Rejected,
        QueryEnd::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueryEnd::Answered(Route::Node) => "node",
            QueryEnd::Answered(Route::Catalog) => "catalog",
            QueryEnd::Rejected => "rejected",
            QueryEnd::Cancelled => "cancelled",
        }
    }

    fn index(self) -> usize {
        match self {
            QueryEnd::Answered(Route::Node) => 0,
            QueryEnd::Answered(Route::Catalog) => 1,
            QueryEnd::Rejected => 2,
            QueryEnd::Cancelled => 3,
        }
    }
}

/// Why a client connection was refused before its session started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over `server.max_client_connections`.
    Limit,
    /// Over `server.max_client_connections_per_user`.
    UserLimit,
    /// sluice is draining.
    Draining,
    /// No node was healthy or reachable.
    NoNode,
    /// The admin console refused the login.
    AdminAuth,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::Limit,
        Refusal::UserLimit,
        Refusal::Draining,
        Refusal::NoNode,
        Refusal::AdminAuth,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::UserLimit => "user_limit",
            Refusal::Draining => "draining",
            Refusal::NoNode => "no_node",
            Refusal::AdminAuth => "admin_auth",
        }
    }
}

/// Query latencies counted in [`LATENCY_BUCKETS`], readable for percentiles.
pub struct LatencyBuckets {
    /// One count per bound, plus one for "above the last bound".
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

impl Default for LatencyBuckets {
    fn default() -> Self {
        LatencyBuckets {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyBuckets {
    pub fn record(&self, seconds: f64) {
        self.record_in(bucket_of(seconds));
    }

    fn record_in(&self, bucket: usize) {
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> [u64; LATENCY_BUCKETS.len() + 1] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

/// The index in [`LatencyBuckets`] of a duration of `seconds`.
fn bucket_of(seconds: f64) -> usize {
    LATENCY_BUCKETS
        .iter()
        .position(|&b| seconds <= b)
        .unwrap_or(LATENCY_BUCKETS.len())
}

/// `sluice_query_duration_seconds` for one route, kept by sluice rather
/// than the exporter: recorded once per query, where the exporter's
/// histograms buffer every sample until upkeep (several times the cost,
/// measured per transaction). Rendered in [`Metrics::render`].
#[derive(Default)]
struct QueryDurations {
    buckets: LatencyBuckets,
    sum_nanos: AtomicU64,
}

/// The `q` quantile (0..1) of bucket counts, as the upper bound of the bucket
/// it falls in (the last bound for the overflow bucket); `None` without samples.
pub fn quantile(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(LATENCY_BUCKETS[i.min(LATENCY_BUCKETS.len() - 1)]);
        }
    }
    Some(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1])
}

/// Counts sluice reads back: cumulative since start.
#[derive(Default)]
pub struct Totals {
    pub queries: AtomicU64,
    pub errors: AtomicU64,
    pub rejected: AtomicU64,
    pub cancelled: AtomicU64,
    pub catalog_fallbacks: AtomicU64,
}

/// A node's handles, made when the node joins the configuration.
#[derive(Clone)]
pub struct NodeMetrics {
    up: Gauge,
    server_connections: Gauge,
    health_check_duration: Histogram,
    health_check_failures: Counter,
    queries: Counter,
    /// Node connections handed from a client that left to a new one.
    connections_reused: Counter,
    /// Node connections kept between clients, now.
    idle_connections: Gauge,
    /// Sessions waiting for a connection under `[pooling] max_node_connections`.
    pool_waiting: Gauge,
}

impl NodeMetrics {
    /// Handles that record nothing (nodes made outside a running sluice).
    pub fn noop() -> NodeMetrics {
        NodeMetrics {
            up: Gauge::noop(),
            server_connections: Gauge::noop(),
            health_check_duration: Histogram::noop(),
            health_check_failures: Counter::noop(),
            connections_reused: Counter::noop(),
            idle_connections: Gauge::noop(),
            queries: Counter::noop(),
            pool_waiting: Gauge::noop(),
        }
    }

    /// How many sessions wait for a connection to this node now.
    pub fn set_pool_waiting(&self, n: usize) {
        self.pool_waiting.set(n as f64);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.up.set(if healthy { 1.0 } else { 0.0 });
    }

    pub fn health_checked(&self, elapsed: Duration, passed: bool) {
        self.health_check_duration.record(elapsed.as_secs_f64());
        if !passed {
            self.health_check_failures.increment(1);
        }
    }

    pub fn server_connection_opened(&self) {
        self.server_connections.increment(1.0);
    }

    pub fn server_connection_closed(&self) {
        self.server_connections.decrement(1.0);
    }

    /// A kept node connection went to a new client.
    pub fn connection_reused(&self) {
        self.connections_reused.increment(1);
    }

    /// How many node connections are kept between clients.
    pub fn set_idle_connections(&self, n: usize) {
        self.idle_connections.set(n as f64);
    }

    pub(crate) fn query(&self) {
        self.queries.increment(1);
    }
}

/// Every metric of one running sluice.
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    pub totals: Totals,
    client_connections: Gauge,
    client_connections_total: Counter,
    client_refused: [Counter; Refusal::ALL.len()],
    queries: [Counter; 4],
    query_duration: [QueryDurations; 4],
    client_received_bytes: Counter,
    client_sent_bytes: Counter,
    errors: DashMap<[u8; 2], Counter>,
    parse_failures: Counter,
    classification_cache_hits: Counter,
    classification_cache_misses: Counter,
    rule_hits: DashMap<(String, String), Counter>,
    catalog_sync_ok: Counter,
    catalog_sync_failed: Counter,
    catalog_sync_last_success: Gauge,
    catalog_fallbacks: Counter,
    alerts_sent: Counter,
    alerts_failed: Counter,
    alerts_dropped: Counter,
    admin_commands: Counter,
    detached_sessions: Gauge,
    pool_wait: Histogram,
    reattached: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let recorder = Arc::new(recorder);
        metrics::with_local_recorder(&*recorder, || {
            describe();
            Metrics {
                handle,
                totals: Totals::default(),
                client_connections: metrics::gauge!("sluice_client_connections"),
                client_connections_total: metrics::counter!("sluice_client_connections_total"),
                client_refused: Refusal::ALL.map(|r| {
                    metrics::counter!("sluice_client_connections_refused_total", "reason" => r.as_str())
                }),
                queries: QueryEnd::ALL
                    .map(|r| metrics::counter!("sluice_queries_total", "route" => r.as_str())),
                query_duration: Default::default(),
                client_received_bytes: metrics::counter!("sluice_client_received_bytes_total"),
                client_sent_bytes: metrics::counter!("sluice_client_sent_bytes_total"),
                errors: DashMap::new(),
                parse_failures: metrics::counter!("sluice_parse_failures_total"),
                classification_cache_hits: metrics::counter!(
                    "sluice_classification_cache_total", "result" => "hit"
                ),
                classification_cache_misses: metrics::counter!(
                    "sluice_classification_cache_total", "result" => "miss"
                ),
                rule_hits: DashMap::new(),
                catalog_sync_ok: metrics::counter!("sluice_catalog_sync_runs_total", "result" => "ok"),
                catalog_sync_failed: metrics::counter!(
                    "sluice_catalog_sync_runs_total", "result" => "failed"
                ),
                catalog_sync_last_success: metrics::gauge!(
                    "sluice_catalog_sync_last_success_timestamp_seconds"
                ),
                catalog_fallbacks: metrics::counter!("sluice_catalog_fallbacks_total"),
                alerts_sent: metrics::counter!("sluice_alerts_sent_total"),
                alerts_failed: metrics::counter!("sluice_alerts_failed_total"),
                alerts_dropped: metrics::counter!("sluice_alerts_dropped_total"),
                admin_commands: metrics::counter!("sluice_admin_commands_total"),
                detached_sessions: metrics::gauge!("sluice_detached_sessions"),
                pool_wait: metrics::histogram!("sluice_pool_wait_seconds"),
                reattached: metrics::counter!("sluice_session_reattached_total"),
                recorder: recorder.clone(),
            }
        })
    }

    /// The handles of a node that joins; its health starts as "up", as the node does.
    pub fn node(&self, addr: &str) -> NodeMetrics {
        let addr = addr.to_string();
        let m = metrics::with_local_recorder(&*self.recorder, || NodeMetrics {
            up: metrics::gauge!("sluice_node_up", "node" => addr.clone()),
            server_connections: metrics::gauge!("sluice_server_connections", "node" => addr.clone()),
            health_check_duration: metrics::histogram!(
                "sluice_health_check_duration_seconds", "node" => addr.clone()
            ),
            health_check_failures: metrics::counter!(
                "sluice_health_check_failures_total", "node" => addr.clone()
            ),
            queries: metrics::counter!("sluice_node_queries_total", "node" => addr.clone()),
            connections_reused: metrics::counter!(
                "sluice_node_connections_reused_total", "node" => addr.clone()
            ),
            idle_connections: metrics::gauge!("sluice_node_idle_connections", "node" => addr.clone()),
            pool_waiting: metrics::gauge!("sluice_pool_waiting_clients", "node" => addr.clone()),
        });
        m.set_healthy(true);
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut text = self.handle.render();
        let name = "sluice_query_duration_seconds";
        let _ = write!(
            text,
            "# HELP {name} Query duration from the client's Query or Sync to ReadyForQuery, by route.\n\
             # TYPE {name} histogram\n"
        );
        for route in QueryEnd::ALL {
            let durations = &self.query_duration[route.index()];
            let route = route.as_str();
            let counts = durations.buckets.snapshot();
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS.iter().zip(&counts) {
                cumulative += count;
                let _ = writeln!(
                    text,
                    "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += counts[LATENCY_BUCKETS.len()];
            let sum = durations.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                text,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(text, "{name}_sum{{route=\"{route}\"}} {sum}");
            let _ = writeln!(text, "{name}_count{{route=\"{route}\"}} {cumulative}");
        }
        text
    }

    /// Folds buffered histogram samples; run every few seconds.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    // ---- clients

    pub fn client_connected(&self) {
        self.client_connections.increment(1.0);
        self.client_connections_total.increment(1);
    }

    pub fn client_disconnected(&self) {
        self.client_connections.decrement(1.0);
    }

    /// A session is without a node connection (`true`), or no longer:
    /// it took one again or ended.
    pub fn session_detached(&self, detached: bool) {
        if detached {
            self.detached_sessions.increment(1.0);
        } else {
            self.detached_sessions.decrement(1.0);
        }
    }

    /// A detached session took a node connection again.
    pub fn session_reattached(&self) {
        self.reattached.increment(1);
    }

    /// How long a detached session took to have a node connection again
    /// (waiting under the cap, and the login).
    pub fn pool_waited(&self, waited: Duration) {
        self.pool_wait.record(waited.as_secs_f64());
    }

    pub fn client_refused(&self, why: Refusal) {
        self.client_refused[why as usize].increment(1);
    }

    /// Bytes read from a client (one call per read, not per message).
    pub fn client_received(&self, bytes: usize) {
        self.client_received_bytes.increment(bytes as u64);
    }

    /// Bytes written to a client (one call per write).
    pub fn client_sent(&self, bytes: usize) {
        self.client_sent_bytes.increment(bytes as u64);
    }

    // ---- queries

    /// Counts a query by where it went, without a duration (e.g. a rejection
    /// answered at once).
    pub fn query_routed(&self, route: QueryEnd) {
        self.queries[route.index()].increment(1);
        self.totals.queries.fetch_add(1, Ordering::Relaxed);
        match route {
            QueryEnd::Rejected => self.totals.rejected.fetch_add(1, Ordering::Relaxed),
            QueryEnd::Cancelled => self.totals.cancelled.fetch_add(1, Ordering::Relaxed),
            QueryEnd::Answered(_) => 0,
        };
    }

    /// Counts a finished query and its duration, client request to ReadyForQuery.
    pub fn query_finished(&self, route: QueryEnd, elapsed: Duration) {
        self.query_routed(route);
        let bucket = bucket_of(elapsed.as_secs_f64());
        let durations = &self.query_duration[route.index()];
        durations.buckets.record_in(bucket);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        durations.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Query latencies of every route, by bucket, since start: what latency
    /// thresholds read.
    pub fn latency_snapshot(&self) -> [u64; LATENCY_BUCKETS.len() + 1] {
        let routes = self.query_duration.each_ref().map(|d| d.buckets.snapshot());
        std::array::from_fn(|i| routes.iter().map(|counts| counts[i]).sum())
    }

    /// Counts an ErrorResponse by its SQLSTATE class (the first two characters).
    pub fn error(&self, class: [u8; 2]) {
        self.totals.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.errors.get(&class) {
            c.increment(1);
            return;
        }
        // Classes are [0-9A-Z]{2}; anything else is counted as "??" so a
        // broken node cannot make unbounded label values.
        let valid = class
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
        let class = if valid { class } else { *b"??" };
        let label = String::from_utf8_lossy(&class).into_owned();
        let counter = self.errors.entry(class).or_insert_with(|| {
            metrics::with_local_recorder(
                &*self.recorder,
                || metrics::counter!("sluice_errors_total", "class" => label),
            )
        });
        counter.increment(1);
    }

    /// A query the classifier could not parse (it fell back to a token scan).
    pub fn parse_failure(&self) {
        self.parse_failures.increment(1);
    }

    /// A classification answered from the cache (`hit`) or computed (`miss`).
    pub fn classification_cache(&self, hit: bool) {
        if hit {
            self.classification_cache_hits.increment(1)
        } else {
            self.classification_cache_misses.increment(1)
        }
    }

    /// A rule matched a query and `action` ("reject", "cancel", "log", ...) was taken.
    pub fn rule_hit(&self, rule: &str, action: &str) {
        let key = (rule.to_string(), action.to_string());
        if let Some(c) = self.rule_hits.get(&key) {
            c.increment(1);
            return;
        }
        let counter = self.rule_hits.entry(key.clone()).or_insert_with(|| {
            metrics::with_local_recorder(
                &*self.recorder,
                || metrics::counter!("sluice_rule_hits_total", "rule" => key.0, "action" => key.1),
            )
        });
        counter.increment(1);
    }

    /// Hit counts per (rule, action), for `SHOW RULES`. Counters cannot be
    /// read back, so this reads the rendered text: it is for the console only.
    pub fn rule_hit_counts(&self) -> Vec<(String, String, u64)> {
        let text = self.render();
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("sluice_rule_hits_total{"))
        {
            let label = |name: &str| {
                let start = line.find(&format!("{name}=\""))? + name.len() + 2;
                let end = line[start..].find('"')? + start;
                Some(line[start..end].to_string())
            };
            let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(rule), Some(action), Some(v)) = (label("rule"), label("action"), value) {
                out.push((rule, action, v as u64));
            }
        }
        out
    }

    /// One catalog sync run ended.
    pub fn catalog_sync(&self, ok: bool) {
        if ok {
            self.catalog_sync_ok.increment(1);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.catalog_sync_last_success.set(now);
        } else {
            self.catalog_sync_failed.increment(1);
        }
    }

    /// One refresh of the catalog copy ended (`kind`: what it did, see
    /// [`crate::catalog::RefreshKind`]; a failed refresh, whose kind is not
    /// known, is `refresh`; a failed periodic full sync `full`). Rare:
    /// handles are made per call.
    pub fn catalog_refresh(&self, kind: &'static str, ok: bool, elapsed: Duration) {
        let result = if ok { "ok" } else { "failed" };
        metrics::with_local_recorder(&*self.recorder, || {
            metrics::counter!("sluice_catalog_refreshes_total", "kind" => kind, "result" => result)
                .increment(1);
            if ok {
                metrics::histogram!("sluice_catalog_refresh_seconds", "kind" => kind)
                    .record(elapsed.as_secs_f64());
            }
        });
        if kind == "full" {
            self.catalog_sync(ok);
        }
    }

    /// A catalog query that the catalog copy could not answer went to a node.
    pub fn catalog_fallback(&self) {
        self.catalog_fallbacks.increment(1);
        self.totals
            .catalog_fallbacks
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn alert_sent(&self) {
        self.alerts_sent.increment(1);
    }

    pub fn alert_failed(&self) {
        self.alerts_failed.increment(1);
    }

    /// An alert event found the queue full and was dropped.
    pub fn alert_dropped(&self) {
        self.alerts_dropped.increment(1);
    }

    pub fn admin_command(&self) {
        self.admin_commands.increment(1);
    }
}

/// HELP lines; units are in the names already (Prometheus convention).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("sluice_client_connections", "Client sessions open now.");
    describe_gauge!(
        "sluice_detached_sessions",
        "Client sessions open without a node connection ([pooling] idle_detach)."
    );
    describe_counter!(
        "sluice_session_reattached_total",
        "Times a detached session took a node connection again."
    );
    describe_histogram!(
        "sluice_pool_wait_seconds",
        Unit::Seconds,
        "Time a detached session took to have a node connection again: waiting under the cap, then the login."
    );
    describe_gauge!(
        "sluice_pool_waiting_clients",
        "Sessions waiting for a connection to the node under [pooling] max_node_connections."
    );
    describe_counter!(
        "sluice_client_connections_total",
        "Client sessions started."
    );
    describe_counter!(
        "sluice_client_connections_refused_total",
        "Client connections refused before their session started, by reason."
    );
    describe_counter!(
        "sluice_queries_total",
        "Queries by route: node, catalog, rejected, cancelled."
    );
    describe_counter!(
        "sluice_client_received_bytes_total",
        Unit::Bytes,
        "Bytes received from clients."
    );
    describe_counter!(
        "sluice_client_sent_bytes_total",
        Unit::Bytes,
        "Bytes sent to clients."
    );
    describe_counter!(
        "sluice_errors_total",
        "ErrorResponses sent to clients, by SQLSTATE class."
    );
    describe_counter!(
        "sluice_parse_failures_total",
        "Queries the SQL parser could not parse."
    );
    describe_counter!(
        "sluice_classification_cache_total",
        "Query classifications by cache result."
    );
    describe_counter!("sluice_rule_hits_total", "Rule matches by rule and action.");
    describe_counter!(
        "sluice_catalog_sync_runs_total",
        "Catalog sync runs by result."
    );
    describe_gauge!(
        "sluice_catalog_sync_last_success_timestamp_seconds",
        "Unix time of the last successful catalog sync."
    );
    describe_counter!(
        "sluice_catalog_refreshes_total",
        "Refreshes of the catalog copy by kind (unchanged, incremental, full; refresh: failed before it knew) and result."
    );
    describe_histogram!(
        "sluice_catalog_refresh_seconds",
        Unit::Seconds,
        "Duration of successful catalog copy refreshes, by kind."
    );
    describe_counter!(
        "sluice_catalog_fallbacks_total",
        "Catalog queries sent to a node instead."
    );
    describe_counter!(
        "sluice_alerts_sent_total",
        "Alert messages the webhook accepted."
    );
    describe_counter!(
        "sluice_alerts_failed_total",
        "Alert messages given up after retries."
    );
    describe_counter!(
        "sluice_alerts_dropped_total",
        "Alert events dropped because the queue was full."
    );
    describe_counter!("sluice_admin_commands_total", "Admin console commands run.");
    describe_gauge!(
        "sluice_node_up",
        "1 while the node is in rotation (passes its health checks), else 0."
    );
    describe_gauge!(
        "sluice_server_connections",
        "Sessions relayed to the node now."
    );
    describe_histogram!(
        "sluice_health_check_duration_seconds",
        Unit::Seconds,
        "Health check duration (login and SELECT 1)."
    );
    describe_counter!(
        "sluice_health_check_failures_total",
        "Failed health checks."
    );
    describe_counter!("sluice_node_queries_total", "Queries relayed to the node.");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn handles_record_into_the_rendered_text() {
        let m = Metrics::new();
        m.client_connected();
        m.client_connected();
        m.client_disconnected();
        m.query_finished(QueryEnd::Answered(Route::Node), Duration::from_millis(3));
        m.query_routed(QueryEnd::Rejected);
        m.error(*b"42");
        m.error(*b"42");
        m.error([0, 0xff]);
        m.rule_hit("no-select-star", "reject");
        let node = m.node("127.0.0.1:5441");
        node.set_healthy(false);
        m.run_upkeep();
        let text = m.render();
        assert_eq!(value(&text, "sluice_client_connections"), Some(1.0));
        assert_eq!(value(&text, "sluice_client_connections_total"), Some(2.0));
        assert_eq!(
            value(&text, "sluice_queries_total{route=\"node\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "sluice_queries_total{route=\"rejected\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "sluice_errors_total{class=\"42\"}"), Some(2.0));
        assert_eq!(value(&text, "sluice_errors_total{class=\"??\"}"), Some(1.0));
        assert_eq!(
            value(&text, "sluice_node_up{node=\"127.0.0.1:5441\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(
                &text,
                "sluice_query_duration_seconds_bucket{route=\"node\",le=\"0.005\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "sluice_query_duration_seconds_bucket{route=\"node\",le=\"+Inf\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "sluice_query_duration_seconds_sum{route=\"node\"}"),
            Some(0.003)
        );
        assert_eq!(
            value(
                &text,
                "sluice_query_duration_seconds_count{route=\"catalog\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            text.matches("# TYPE sluice_query_duration_seconds histogram")
                .count(),
            1
        );
        assert_eq!(
            m.rule_hit_counts(),
            vec![("no-select-star".into(), "reject".into(), 1)]
        );
        assert_eq!(m.totals.rejected.load(Ordering::Relaxed), 1);
        let latency = m.latency_snapshot();
        assert_eq!(latency.iter().sum::<u64>(), 1, "one query finished");
        assert_eq!(latency[2], 1, "3 ms falls in the 5 ms bucket");
        assert_eq!(m.totals.queries.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn quantiles_come_from_bucket_counts() {
        let b = LatencyBuckets::default();
        for _ in 0..98 {
            b.record(0.002);
        }
        b.record(3.0);
        b.record(1000.0);
        let counts = b.snapshot();
        assert_eq!(quantile(&counts, 0.5), Some(0.0025));
        assert_eq!(quantile(&counts, 0.99), Some(5.0));
        assert_eq!(quantile(&counts, 1.0), Some(300.0));
        assert_eq!(quantile(&[0; 17], 0.99), None);
    }
}
