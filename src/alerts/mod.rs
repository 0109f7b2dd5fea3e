//! Alerts: events worth a human's attention, folded, throttled and posted
//! to a Slack incoming webhook.
//!
//! The seam is a channel: anything that notices a problem (health checks,
//! catalog sync, rules) calls [`Alerts::raise`], which never waits — the
//! queue is bounded, and when it is full the event is counted
//! (`sluice_alerts_dropped_total`) and dropped, so a slow or dead webhook
//! never slows a query. One task ([`run`]) owns everything else:
//!
//! * [`thresholds`]: every `alerts.evaluation_interval`, samples sluice's
//!   counters and checks `[[alerts.thresholds]]` over their windows;
//! * [`dispatch`]: folds what arrives within `alerts.group_wait` into one
//!   message per kind (a burst of 500 cancellations is one message saying
//!   500), applies `alerts.cooldown` and pairs firing with resolved;
//! * [`slack`]: a second task posts the messages, with a timeout and
//!   retries that honour Retry-After.
//!
//! Active and recent alerts are kept for `SHOW ALERTS`.

pub mod dispatch;
pub mod slack;
pub mod thresholds;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Current;
use crate::metrics::Metrics;

/// Something that happened, as its source reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum AlertEvent {
    /// A node left rotation after failed health checks.
    NodeDown { node: String, reason: String },
    /// A node is back in rotation.
    NodeUp { node: String },
    /// A catalog sync run failed.
    CatalogSyncFailed { error: String },
    /// A catalog sync run succeeded (resolves a failure).
    CatalogSyncSucceeded,
    /// The managed catalog copy's server stopped; sluice restarts it.
    CatalogCopyDown { reason: String },
    /// The managed catalog copy runs again (resolves `CatalogCopyDown`).
    CatalogCopyUp,
    /// A rule cancelled a running query.
    QueryCancelled {
        user: String,
        application: String,
        rule: String,
        fingerprint: String,
        duration: Duration,
        /// The query text; masked before it is sent anywhere.
        sample: String,
    },
}

/// How many recent alerts `SHOW ALERTS` keeps.
const RECENT: usize = 100;

/// One line of `SHOW ALERTS`.
#[derive(Clone, Debug)]
pub struct AlertRecord {
    pub at: SystemTime,
    /// "firing" or "resolved".
    pub state: &'static str,
    pub key: String,
    pub summary: String,
    /// How many events this message folded.
    pub count: usize,
    /// "queued", "sent", "failed", "suppressed (cooldown)", "no webhook".
    pub delivery: String,
}

#[derive(Default)]
struct Book {
    /// Alerts firing now, by key.
    active: BTreeMap<String, AlertRecord>,
    recent: VecDeque<AlertRecord>,
}

/// The handle every part of sluice raises alerts through.
pub struct Alerts {
    tx: mpsc::Sender<AlertEvent>,
    /// Taken once by [`run`].
    rx: Mutex<Option<mpsc::Receiver<AlertEvent>>>,
    metrics: Arc<Metrics>,
    book: Mutex<Book>,
}

impl Alerts {
    pub fn new(queue_size: usize, metrics: Arc<Metrics>) -> Alerts {
        let (tx, rx) = mpsc::channel(queue_size.max(1));
        Alerts {
            tx,
            rx: Mutex::new(Some(rx)),
            metrics,
            book: Mutex::default(),
        }
    }

    /// Queues an event; never waits. A full queue drops it and counts it.
    pub fn raise(&self, event: AlertEvent) {
        if self.tx.try_send(event).is_err() {
            self.metrics.alert_dropped();
        }
    }

    /// Alerts firing now, oldest first.
    pub fn active(&self) -> Vec<AlertRecord> {
        let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = book.active.values().cloned().collect();
        v.sort_by_key(|r| r.at);
        v
    }

    /// Recent messages, newest first.
    pub fn recent(&self) -> Vec<AlertRecord> {
        let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        book.recent.iter().rev().cloned().collect()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn record(&self, record: AlertRecord, keys: &[String]) {
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            if record.state == "firing" {
                book.active
                    .entry(key.clone())
                    .or_insert_with(|| AlertRecord {
                        key: key.clone(),
                        ..record.clone()
                    });
            } else {
                book.active.remove(key);
            }
        }
        if book.recent.len() == RECENT {
            book.recent.pop_front();
        }
        book.recent.push_back(record);
    }

    /// Updates the delivery column of a recent record (by its position id).
    fn delivered(&self, at: SystemTime, key: &str, delivery: &str) {
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = book
            .recent
            .iter_mut()
            .rev()
            .find(|r| r.at == at && r.key == key)
        {
            r.delivery = delivery.to_string();
        }
    }
}

/// Runs the alerting tasks until `stop`: `current` is the configuration in
/// effect, `gauges` what the thresholds read beside the metrics.
pub async fn run(
    alerts: Arc<Alerts>,
    current: impl Current + Clone,
    gauges: impl Fn() -> thresholds::Gauges + Send,
    stop: CancellationToken,
) {
    let Some(mut rx) = alerts.rx.lock().ok().and_then(|mut r| r.take()) else {
        tracing::error!("the alert task was started twice; the second one stops");
        return;
    };
    let (out_tx, out_rx) = mpsc::channel(64);
    tokio::spawn(slack::send_loop(
        alerts.clone(),
        out_rx,
        current.clone(),
        stop.clone(),
    ));
    let mut dispatcher = dispatch::Dispatcher::default();
    let mut engine = thresholds::Engine::default();
    let mut next_evaluation = tokio::time::Instant::now();
    loop {
        let config = current.config();
        let deadline = dispatcher
            .flush_at()
            .map(|t| t.min(next_evaluation))
            .unwrap_or(next_evaluation);
        tokio::select! {
            event = rx.recv() => match event {
                Some(event) => dispatcher.push_event(event, &config.alerts, tokio::time::Instant::now()),
                None => return,
            },
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stop.cancelled() => return,
        }
        let now = tokio::time::Instant::now();
        if now >= next_evaluation {
            let sample = thresholds::Sample::take(&alerts.metrics, gauges(), now);
            for change in engine.evaluate(sample, &config.alerts.thresholds) {
                dispatcher.push_threshold(change, now, &config.alerts);
            }
            next_evaluation = now + config.alerts.evaluation_interval;
        }
        for message in dispatcher.flush(now, &config.alerts) {
            alerts.record(message.record.clone(), &message.keys);
            if config.alerts.slack_webhook_url.is_none() {
                alerts.delivered(message.record.at, &message.record.key, "no webhook");
                continue;
            }
            if message.record.delivery != "queued" {
                continue;
            }
            if out_tx.try_send(message).is_err() {
                alerts.metrics.alert_dropped();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = Arc::new(Metrics::new());
        let alerts = Alerts::new(2, metrics.clone());
        for _ in 0..5 {
            alerts.raise(AlertEvent::CatalogSyncSucceeded);
        }
        let text = metrics.render();
        assert!(text.contains("sluice_alerts_dropped_total 3"), "{text}");
    }

    #[test]
    fn the_book_keeps_active_alerts_until_resolved() {
        let alerts = Alerts::new(1, Arc::new(Metrics::new()));
        let record = |state| AlertRecord {
            at: SystemTime::now(),
            state,
            key: "node_down".into(),
            summary: "node a:1 is down".into(),
            count: 1,
            delivery: "queued".into(),
        };
        alerts.record(record("firing"), &["node_down:a:1".into()]);
        assert_eq!(alerts.active().len(), 1);
        alerts.delivered(alerts.recent()[0].at, "node_down", "sent");
        assert_eq!(alerts.recent()[0].delivery, "sent");
        alerts.record(record("resolved"), &["node_down:a:1".into()]);
        assert!(alerts.active().is_empty());
        assert_eq!(alerts.recent().len(), 2);
    }
}
