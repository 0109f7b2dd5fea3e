//! Threshold alerts: `[[alerts.thresholds]]` checked against samples of
//! sluice's counters.
//!
//! Every evaluation takes a [`Sample`] (cumulative counts and current
//! gauges) and keeps the samples of the longest window. A count over a
//! window is the difference between the newest sample and the oldest one
//! inside the window. A threshold fires once its condition has held for its
//! `for` duration, and resolves when the condition stops holding.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Condition, Threshold, ThresholdMetric};
use crate::metrics::{LATENCY_BUCKETS, Metrics, quantile};

/// Sluice's numbers at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub queries: u64,
    pub errors: u64,
    pub rejected: u64,
    pub cancelled: u64,
    pub catalog_fallbacks: u64,
    pub latency: [u64; LATENCY_BUCKETS.len() + 1],
    pub client_connections: u64,
    pub healthy_nodes: u64,
}

/// What the thresholds read besides the metrics' totals: gauges of the
/// running sluice, from whoever runs the alerts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    pub client_connections: u64,
    pub healthy_nodes: u64,
}

impl Sample {
    pub fn take(metrics: &Metrics, gauges: Gauges, at: Instant) -> Sample {
        let t = &metrics.totals;
        Sample {
            at,
            queries: t.queries.load(Ordering::Relaxed),
            errors: t.errors.load(Ordering::Relaxed),
            rejected: t.rejected.load(Ordering::Relaxed),
            cancelled: t.cancelled.load(Ordering::Relaxed),
            catalog_fallbacks: t.catalog_fallbacks.load(Ordering::Relaxed),
            latency: metrics.latency_snapshot(),
            client_connections: gauges.client_connections,
            healthy_nodes: gauges.healthy_nodes,
        }
    }
}

/// A threshold started or stopped firing.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Firing {
        name: String,
        metric: ThresholdMetric,
        value: f64,
        condition: Condition,
        window: Duration,
    },
    Resolved {
        name: String,
        metric: ThresholdMetric,
        value: f64,
    },
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Change::Firing { name, .. } | Change::Resolved { name, .. } => name,
        }
    }

    /// One sentence for the message.
    pub fn describe(&self) -> String {
        match self {
            Change::Firing {
                metric,
                value,
                condition,
                window,
                ..
            } => format!(
                "{} is {} over the last {} ({condition})",
                metric.as_str(),
                show(*value),
                humantime::format_duration(*window)
            ),
            Change::Resolved { metric, value, .. } => {
                format!("{} is {} now", metric.as_str(), show(*value))
            }
        }
    }
}

fn show(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

#[derive(Default)]
struct ThresholdState {
    /// Since when the condition holds, while it does.
    since: Option<Instant>,
    firing: bool,
}

#[derive(Default)]
pub struct Engine {
    samples: VecDeque<Sample>,
    states: HashMap<String, ThresholdState>,
}

impl Engine {
    /// Adds a sample and returns the thresholds that changed.
    pub fn evaluate(&mut self, sample: Sample, thresholds: &[Threshold]) -> Vec<Change> {
        let now = sample.at;
        let longest = thresholds
            .iter()
            .map(|t| t.window)
            .max()
            .unwrap_or_default();
        self.samples.push_back(sample);
        // Keep one sample at or before the longest window's start.
        while self.samples.len() > 2 && now.duration_since(self.samples[1].at) >= longest {
            self.samples.pop_front();
        }
        self.states
            .retain(|name, _| thresholds.iter().any(|t| t.name == *name));
        let mut changes = Vec::new();
        for t in thresholds {
            let value = self.value(t.metric, t.window);
            let state = self.states.entry(t.name.clone()).or_default();
            if t.condition.holds(value) {
                let since = *state.since.get_or_insert(now);
                if !state.firing && now.duration_since(since) >= t.hold {
                    state.firing = true;
                    changes.push(Change::Firing {
                        name: t.name.clone(),
                        metric: t.metric,
                        value,
                        condition: t.condition,
                        window: t.window,
                    });
                }
            } else {
                state.since = None;
                if state.firing {
                    state.firing = false;
                    changes.push(Change::Resolved {
                        name: t.name.clone(),
                        metric: t.metric,
                        value,
                    });
                }
            }
        }
        changes
    }

    fn value(&self, metric: ThresholdMetric, window: Duration) -> f64 {
        let Some(newest) = self.samples.back() else {
            return 0.0;
        };
        // The oldest sample no older than the window (or the oldest kept).
        let oldest = self
            .samples
            .iter()
            .find(|s| newest.at.duration_since(s.at) <= window)
            .unwrap_or(newest);
        let delta = |f: fn(&Sample) -> u64| f(newest).saturating_sub(f(oldest)) as f64;
        match metric {
            ThresholdMetric::RejectedQueries => delta(|s| s.rejected),
            ThresholdMetric::CancelledQueries => delta(|s| s.cancelled),
            ThresholdMetric::Queries => delta(|s| s.queries),
            ThresholdMetric::Errors => delta(|s| s.errors),
            ThresholdMetric::CatalogFallbacks => delta(|s| s.catalog_fallbacks),
            ThresholdMetric::ErrorRate => {
                let queries = delta(|s| s.queries);
                if queries == 0.0 {
                    0.0
                } else {
                    delta(|s| s.errors) / queries
                }
            }
            ThresholdMetric::P99LatencySeconds => {
                let counts: Vec<u64> = newest
                    .latency
                    .iter()
                    .zip(oldest.latency.iter())
                    .map(|(n, o)| n.saturating_sub(*o))
                    .collect();
                quantile(&counts, 0.99).unwrap_or(0.0)
            }
            ThresholdMetric::ClientConnections => newest.client_connections as f64,
            ThresholdMetric::HealthyNodes => newest.healthy_nodes as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, rejected: u64, healthy: u64) -> Sample {
        Sample {
            at,
            queries: rejected * 2,
            errors: rejected,
            rejected,
            cancelled: 0,
            catalog_fallbacks: 0,
            latency: [0; LATENCY_BUCKETS.len() + 1],
            client_connections: 0,
            healthy_nodes: healthy,
        }
    }

    fn threshold(metric: ThresholdMetric, condition: Condition, hold: u64) -> Threshold {
        Threshold {
            name: "t".into(),
            metric,
            window: Duration::from_secs(60),
            condition,
            hold: Duration::from_secs(hold),
        }
    }

    #[test]
    fn a_count_over_the_window_fires_after_for_and_resolves() {
        let t = [threshold(
            ThresholdMetric::RejectedQueries,
            Condition::Above(10.0),
            10,
        )];
        let mut e = Engine::default();
        let t0 = Instant::now();
        let s = |secs: u64, n| sample(t0 + Duration::from_secs(secs), n, 1);
        assert!(e.evaluate(s(0, 0), &t).is_empty());
        assert!(
            e.evaluate(s(5, 20), &t).is_empty(),
            "must hold for 10 s first"
        );
        let c = e.evaluate(s(15, 25), &t);
        assert!(
            matches!(&c[..], [Change::Firing { value, .. }] if *value == 25.0),
            "{c:?}"
        );
        assert!(e.evaluate(s(20, 26), &t).is_empty(), "fires once");
        // 70 s after the burst, the window no longer holds it.
        let c = e.evaluate(s(80, 26), &t);
        assert!(matches!(&c[..], [Change::Resolved { .. }]), "{c:?}");
    }

    #[test]
    fn gauges_and_rates_are_read_as_they_are() {
        let t = [
            threshold(ThresholdMetric::HealthyNodes, Condition::Below(2.0), 0),
            Threshold {
                name: "rate".into(),
                ..threshold(ThresholdMetric::ErrorRate, Condition::Above(0.4), 0)
            },
        ];
        let mut e = Engine::default();
        let t0 = Instant::now();
        assert!(e.evaluate(sample(t0, 0, 2), &t).is_empty());
        let c = e.evaluate(sample(t0 + Duration::from_secs(1), 10, 1), &t);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            c[1].describe()
                .starts_with("error_rate is 0.500 over the last 1m")
        );
    }
}
