//! Query statistics by fingerprint: which query shapes cost most, and who
//! sends them. Read by `SHOW QUERIES` and `GET /queries`.
//!
//! One entry per fingerprint in a sharded map (DashMap): recording a query
//! locks only its entry's shard, for a few additions. Memory is bounded: at
//! capacity, a new fingerprint evicts the least recently seen of a sample of
//! entries (approximate LRU, as Redis does it), so one burst of ad-hoc shapes
//! cannot grow the map and eviction never scans it all. Top users and
//! applications are kept per entry with the space-saving algorithm: at most
//! [`TOP_NAMES`] names, a newcomer replacing the least counted.

use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use serde::Serialize;

use crate::classify::Fingerprint;
use crate::classify::fingerprint::mask;
use crate::metrics::{LATENCY_BUCKETS, quantile};

/// Users and applications remembered per fingerprint.
pub const TOP_NAMES: usize = 5;
/// Entries looked at to choose one to evict.
const EVICTION_SAMPLE: usize = 16;
/// Sample texts are cut to this many bytes.
const MAX_SAMPLE: usize = 2048;

/// How one query ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran, and finished without error.
    Ok,
    /// It ran, and the node answered with an error.
    Error,
    /// A rule rejected it; it never ran.
    Rejected,
    /// A rule's watchdog cancelled it.
    Cancelled,
}

/// One finished query, as the session reports it.
#[derive(Clone, Copy, Debug)]
pub struct Execution<'a> {
    pub fingerprint: Fingerprint,
    pub user: &'a str,
    pub application: &'a str,
    /// The query text; masked before it is kept.
    pub text: &'a str,
    pub duration: Duration,
    /// When it ended (the session's clock reading, shared with metrics).
    pub finished: Instant,
    pub rows: u64,
    /// Bytes sent to the client for it.
    pub bytes: u64,
    pub outcome: Outcome,
}

struct Entry {
    calls: u64,
    errors: u64,
    rejected: u64,
    cancelled: u64,
    total: Duration,
    max: Duration,
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    rows: u64,
    bytes: u64,
    last_seen: Instant,
    users: Vec<(Box<str>, u64)>,
    applications: Vec<(Box<str>, u64)>,
    sample: String,
}

/// Counts `name` among at most [`TOP_NAMES`] (space-saving).
fn count_name(names: &mut Vec<(Box<str>, u64)>, name: &str) {
    if let Some(e) = names.iter_mut().find(|(n, _)| &**n == name) {
        e.1 += 1;
    } else if names.len() < TOP_NAMES {
        names.push((name.into(), 1));
    } else if let Some(min) = names.iter_mut().min_by_key(|(_, c)| *c) {
        *min = (name.into(), min.1 + 1);
    }
}

/// The order of [`QueryStats::top`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    TotalTime,
    MeanTime,
    MaxTime,
    Calls,
    Errors,
    Rows,
    Bytes,
    LastSeen,
}

impl Order {
    pub const NAMES: &'static str =
        "total_time, mean_time, max_time, calls, errors, rows, bytes, last_seen";

    pub fn from_name(name: &str) -> Option<Order> {
        Some(match name {
            "total_time" => Order::TotalTime,
            "mean_time" => Order::MeanTime,
            "max_time" => Order::MaxTime,
            "calls" | "count" => Order::Calls,
            "errors" => Order::Errors,
            "rows" => Order::Rows,
            "bytes" => Order::Bytes,
            "last_seen" => Order::LastSeen,
            _ => return None,
        })
    }
}

/// One fingerprint's statistics, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct QuerySummary {
    pub fingerprint: String,
    pub calls: u64,
    pub errors: u64,
    pub rejected: u64,
    pub cancelled: u64,
    pub total_seconds: f64,
    pub mean_seconds: f64,
    pub max_seconds: f64,
    /// Upper bounds of the latency buckets the percentiles fall in.
    pub p50_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    pub rows: u64,
    pub bytes: u64,
    /// RFC 3339, seconds.
    pub last_seen: String,
    pub top_users: Vec<(String, u64)>,
    pub top_applications: Vec<(String, u64)>,
    /// The first text seen, literals masked.
    pub sample: String,
}

pub struct QueryStats {
    /// foldhash: one u64 key per query, hashed for a fraction of SipHash's cost.
    entries: DashMap<Fingerprint, Entry, foldhash::fast::RandomState>,
    capacity: usize,
}

impl QueryStats {
    pub fn new(capacity: usize) -> QueryStats {
        QueryStats {
            entries: DashMap::default(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn record(&self, e: Execution<'_>) {
        if !self.entries.contains_key(&e.fingerprint) && self.entries.len() >= self.capacity {
            self.evict_one();
        }
        let now = e.finished;
        let mut entry = self.entries.entry(e.fingerprint).or_insert_with(|| Entry {
            calls: 0,
            errors: 0,
            rejected: 0,
            cancelled: 0,
            total: Duration::ZERO,
            max: Duration::ZERO,
            buckets: [0; LATENCY_BUCKETS.len() + 1],
            rows: 0,
            bytes: 0,
            last_seen: now,
            users: Vec::new(),
            applications: Vec::new(),
            sample: {
                let mut s = mask(e.text);
                if s.len() > MAX_SAMPLE {
                    let mut cut = MAX_SAMPLE;
                    while !s.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    s.truncate(cut);
                    s.push_str("...");
                }
                s
            },
        });
        let x = entry.value_mut();
        x.calls += 1;
        match e.outcome {
            Outcome::Ok => {}
            Outcome::Error => x.errors += 1,
            Outcome::Rejected => x.rejected += 1,
            Outcome::Cancelled => {
                x.cancelled += 1;
                x.errors += 1;
            }
        }
        if e.outcome != Outcome::Rejected {
            x.total += e.duration;
            x.max = x.max.max(e.duration);
            let secs = e.duration.as_secs_f64();
            let i = LATENCY_BUCKETS
                .iter()
                .position(|&b| secs <= b)
                .unwrap_or(LATENCY_BUCKETS.len());
            x.buckets[i] += 1;
        }
        x.rows += e.rows;
        x.bytes += e.bytes;
        x.last_seen = now;
        count_name(&mut x.users, e.user);
        count_name(&mut x.applications, e.application);
    }

    fn evict_one(&self) {
        // Collected first: the iterator holds a shard lock until it drops.
        let victim = self
            .entries
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|e| e.value().last_seen)
            .map(|e| *e.key());
        if let Some(victim) = victim {
            self.entries.remove(&victim);
        }
    }

    /// The `n` first fingerprints in `order` (largest first; last_seen: newest first).
    pub fn top(&self, n: usize, order: Order) -> Vec<QuerySummary> {
        let mut all: Vec<(f64, QuerySummary)> = self
            .entries
            .iter()
            .map(|e| {
                let s = summary(*e.key(), e.value());
                let key = match order {
                    Order::TotalTime => s.total_seconds,
                    Order::MeanTime => s.mean_seconds,
                    Order::MaxTime => s.max_seconds,
                    Order::Calls => s.calls as f64,
                    Order::Errors => s.errors as f64,
                    Order::Rows => s.rows as f64,
                    Order::Bytes => s.bytes as f64,
                    Order::LastSeen => -(e.value().last_seen.elapsed().as_secs_f64()),
                };
                (key, s)
            })
            .collect();
        all.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| a.1.fingerprint.cmp(&b.1.fingerprint))
        });
        all.into_iter().take(n).map(|(_, s)| s).collect()
    }

    /// One fingerprint's statistics.
    pub fn get(&self, fingerprint: Fingerprint) -> Option<QuerySummary> {
        self.entries
            .get(&fingerprint)
            .map(|e| summary(fingerprint, e.value()))
    }
}

fn summary(fingerprint: Fingerprint, e: &Entry) -> QuerySummary {
    let ran = e.calls - e.rejected;
    let names = |v: &[(Box<str>, u64)]| {
        let mut v: Vec<(String, u64)> = v.iter().map(|(n, c)| (n.to_string(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    QuerySummary {
        fingerprint: fingerprint.to_string(),
        calls: e.calls,
        errors: e.errors,
        rejected: e.rejected,
        cancelled: e.cancelled,
        total_seconds: e.total.as_secs_f64(),
        mean_seconds: if ran == 0 {
            0.0
        } else {
            e.total.as_secs_f64() / ran as f64
        },
        max_seconds: e.max.as_secs_f64(),
        p50_seconds: quantile(&e.buckets, 0.50),
        p95_seconds: quantile(&e.buckets, 0.95),
        p99_seconds: quantile(&e.buckets, 0.99),
        rows: e.rows,
        bytes: e.bytes,
        // The wall clock is read when statistics are shown, not per query.
        last_seen: humantime::format_rfc3339_seconds(
            SystemTime::now()
                .checked_sub(e.last_seen.elapsed())
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )
        .to_string(),
        top_users: names(&e.users),
        top_applications: names(&e.applications),
        sample: e.sample.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stats: &QueryStats, fp: u64, user: &str, ms: u64, outcome: Outcome) {
        stats.record(Execution {
            fingerprint: Fingerprint(fp),
            user,
            application: "psql",
            text: "SELECT * FROM t WHERE id = 42",
            duration: Duration::from_millis(ms),
            finished: Instant::now(),
            rows: 2,
            bytes: 100,
            outcome,
        });
    }

    #[test]
    fn counts_times_percentiles_and_names() {
        let stats = QueryStats::new(100);
        for i in 0..10 {
            run(
                &stats,
                1,
                if i < 7 { "alice" } else { "bob" },
                10,
                Outcome::Ok,
            );
        }
        run(&stats, 1, "carol", 2000, Outcome::Error);
        run(&stats, 1, "carol", 0, Outcome::Rejected);
        run(&stats, 2, "alice", 1, Outcome::Ok);
        let s = stats.get(Fingerprint(1)).unwrap();
        assert_eq!((s.calls, s.errors, s.rejected), (12, 1, 1));
        assert!((s.total_seconds - 2.1).abs() < 1e-9, "{}", s.total_seconds);
        assert!((s.max_seconds - 2.0).abs() < 1e-9);
        assert!(s.p50_seconds.unwrap() <= 0.025, "{:?}", s.p50_seconds);
        assert!(s.p99_seconds.unwrap() >= 2.0, "{:?}", s.p99_seconds);
        assert_eq!((s.rows, s.bytes), (24, 1200));
        assert_eq!(s.top_users[0], ("alice".to_string(), 7));
        assert_eq!(s.sample, "SELECT * FROM t WHERE id = ?");
        let top = stats.top(10, Order::TotalTime);
        assert_eq!(top[0].fingerprint, Fingerprint(1).to_string());
        assert_eq!(stats.top(1, Order::Calls).len(), 1);
    }

    #[test]
    fn memory_stays_bounded() {
        let stats = QueryStats::new(8);
        for i in 0..1000 {
            run(&stats, i, "u", 1, Outcome::Ok);
        }
        assert!(stats.len() <= 8);
        // The newest survives.
        assert!(stats.get(Fingerprint(999)).is_some());
    }

    #[test]
    fn top_names_keep_the_heavy_hitters() {
        let mut names = Vec::new();
        for i in 0..100 {
            count_name(&mut names, "heavy");
            count_name(&mut names, &format!("one-off-{i}"));
        }
        assert!(names.len() <= TOP_NAMES);
        assert!(names.iter().any(|(n, c)| &**n == "heavy" && *c == 100));
    }
}
