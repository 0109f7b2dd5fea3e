//! From events to messages: folding, cooldown, firing and resolved.
//!
//! Every notice has an *id* (what is wrong: `node_down:10.0.0.5:5433`) and a
//! *group* (what kind of message it belongs in: `node_down`). Notices that
//! arrive within `group_wait` of the first pending one are flushed together,
//! one message per group and state, with a count. A firing id is not sent
//! again within `cooldown` of its last message; its resolved message is sent
//! only if its firing message was, so they always come in pairs.
//!
//! No I/O and no clock of its own: the caller passes `now`, so tests drive
//! time by hand.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use tokio::time::Instant;

use super::thresholds::Change;
use super::{AlertEvent, AlertRecord};
use crate::config::Alerts as AlertsConfig;

/// How many folded events a message lists one by one.
const LISTED: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Firing,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

#[derive(Debug)]
struct Notice {
    id: String,
    group: String,
    state: State,
    /// The message title when this notice is alone.
    title: String,
    /// The title when several notices of the group fold: gets a count.
    folded_title: String,
    detail: String,
    /// A one-off event (a cancelled query): never "active".
    one_off: bool,
}

/// One message to send (or only to record, when suppressed).
#[derive(Clone, Debug)]
pub struct Message {
    pub record: AlertRecord,
    /// The ids this message fires or resolves.
    pub keys: Vec<String>,
    pub state: State,
    pub title: String,
    pub details: Vec<String>,
}

#[derive(Default)]
pub struct Dispatcher {
    pending: Vec<Notice>,
    first_pending: Option<Instant>,
    group_wait: std::time::Duration,
    last_sent: HashMap<String, Instant>,
    /// Ids firing now.
    firing: HashSet<String>,
    /// Ids whose firing message was sent and whose resolved message is due.
    notified: HashSet<String>,
}

impl Dispatcher {
    /// When the pending notices are due, if there are any.
    pub fn flush_at(&self) -> Option<Instant> {
        self.first_pending.map(|t| t + self.group_wait)
    }

    fn push(&mut self, notice: Notice, now: Instant, config: &AlertsConfig) {
        if !notice.one_off {
            match notice.state {
                State::Firing => {
                    if !self.firing.insert(notice.id.clone()) {
                        return; // already firing: nothing new to say
                    }
                }
                State::Resolved => {
                    if !self.firing.remove(&notice.id) {
                        return; // never fired (e.g. a node's first good check)
                    }
                }
            }
        }
        self.group_wait = config.group_wait;
        self.first_pending.get_or_insert(now);
        self.pending.push(notice);
    }

    pub fn push_event(&mut self, event: AlertEvent, config: &AlertsConfig, now: Instant) {
        let on = &config.events;
        let notice = match event {
            AlertEvent::NodeDown { node, reason } if on.node_down => Notice {
                id: format!("node_down:{node}"),
                group: "node_down".into(),
                state: State::Firing,
                title: format!("node {node} is down"),
                folded_title: "nodes are down".into(),
                detail: format!("{node}: {reason}"),
                one_off: false,
            },
            AlertEvent::NodeUp { node } => Notice {
                id: format!("node_down:{node}"),
                group: "node_down".into(),
                state: State::Resolved,
                title: format!("node {node} is back up"),
                folded_title: "nodes are back up".into(),
                detail: format!("{node} passes its health checks and is back in rotation"),
                one_off: false,
            },
            AlertEvent::CatalogSyncFailed { error } if on.catalog_sync_failed => Notice {
                id: "catalog_sync".into(),
                group: "catalog_sync".into(),
                state: State::Firing,
                title: "catalog sync failed".into(),
                folded_title: "catalog sync failures".into(),
                detail: error,
                one_off: false,
            },
            AlertEvent::CatalogSyncSucceeded => Notice {
                id: "catalog_sync".into(),
                group: "catalog_sync".into(),
                state: State::Resolved,
                title: "catalog sync works again".into(),
                folded_title: "catalog sync works again".into(),
                detail: "the last catalog sync run succeeded".into(),
                one_off: false,
            },
            AlertEvent::CatalogCopyDown { reason } if on.catalog_sync_failed => Notice {
                id: "catalog_copy".into(),
                group: "catalog_copy".into(),
                state: State::Firing,
                title: "the managed catalog copy is down".into(),
                folded_title: "the managed catalog copy is down".into(),
                detail: format!(
                    "{reason}; catalog lookups go to the warehouse nodes while sluice restarts it"
                ),
                one_off: false,
            },
            AlertEvent::CatalogCopyUp => Notice {
                id: "catalog_copy".into(),
                group: "catalog_copy".into(),
                state: State::Resolved,
                title: "the managed catalog copy runs again".into(),
                folded_title: "the managed catalog copy runs again".into(),
                detail: "sluice restarted it; lookups return to it once it is checked against the warehouse".into(),
                one_off: false,
            },
            AlertEvent::QueryCancelled {
                user,
                application,
                rule,
                fingerprint,
                duration,
                sample,
            } if on.query_cancelled => Notice {
                id: format!("query_cancelled:{rule}"),
                group: format!("query_cancelled:{rule}"),
                state: State::Firing,
                title: format!("rule {rule} cancelled a query"),
                folded_title: format!("queries cancelled by rule {rule}"),
                detail: format!(
                    "user {user}, application {app}, after {d}, fingerprint {fingerprint}: {sample}",
                    app = if application.is_empty() {
                        "(none)"
                    } else {
                        &application
                    },
                    d = humantime::format_duration(std::time::Duration::from_millis(
                        duration.as_millis() as u64
                    )),
                    sample = mask_literals(&sample, 200),
                ),
                one_off: true,
            },
            _ => return, // switched off in alerts.events
        };
        self.push(notice, now, config);
    }

    pub fn push_threshold(&mut self, change: Change, now: Instant, config: &AlertsConfig) {
        let (state, title) = match &change {
            Change::Firing { name, .. } => (State::Firing, format!("threshold {name} crossed")),
            Change::Resolved { name, .. } => (
                State::Resolved,
                format!("threshold {name} is back to normal"),
            ),
        };
        let detail = change.describe();
        let name = change.name().to_string();
        self.push(
            Notice {
                id: format!("threshold:{name}"),
                group: format!("threshold:{name}"),
                state,
                folded_title: title.clone(),
                title,
                detail,
                one_off: false,
            },
            now,
            config,
        );
    }

    /// The messages due at `now`, one per group and state.
    pub fn flush(&mut self, now: Instant, config: &AlertsConfig) -> Vec<Message> {
        match self.flush_at() {
            Some(at) if now >= at => {}
            _ => return Vec::new(),
        }
        self.first_pending = None;
        let pending = std::mem::take(&mut self.pending);
        let mut order: Vec<(String, State)> = Vec::new();
        let mut groups: HashMap<(String, State), Vec<Notice>> = HashMap::new();
        for n in pending {
            let k = (n.group.clone(), n.state);
            if !groups.contains_key(&k) {
                order.push(k.clone());
            }
            groups.entry(k).or_default().push(n);
        }
        let mut out = Vec::new();
        for k in order {
            let notices = groups.remove(&k).unwrap_or_default();
            if let Some(m) = self.message(notices, k.1, now, config) {
                out.push(m);
            }
        }
        out
    }

    fn message(
        &mut self,
        notices: Vec<Notice>,
        state: State,
        now: Instant,
        config: &AlertsConfig,
    ) -> Option<Message> {
        let first = notices.first()?;
        let group = first.group.clone();
        let count = notices.len();
        let mut ids: Vec<String> = Vec::new();
        for n in &notices {
            if !ids.contains(&n.id) {
                ids.push(n.id.clone());
            }
        }
        let delivery = match state {
            State::Firing => {
                let due: Vec<&String> = ids
                    .iter()
                    .filter(|id| {
                        self.last_sent
                            .get(*id)
                            .is_none_or(|t| now.duration_since(*t) >= config.cooldown)
                    })
                    .collect();
                if due.is_empty() {
                    "suppressed (cooldown)"
                } else {
                    for id in due {
                        self.last_sent.insert(id.clone(), now);
                        if !first.one_off {
                            self.notified.insert(id.clone());
                        }
                    }
                    "queued"
                }
            }
            State::Resolved => {
                let was_notified = ids.iter().any(|id| self.notified.contains(id));
                for id in &ids {
                    self.notified.remove(id);
                }
                if !was_notified {
                    "suppressed (cooldown)"
                } else if !config.send_resolved {
                    "not sent (send_resolved = false)"
                } else {
                    "queued"
                }
            }
        };
        let title = if count == 1 {
            first.title.clone()
        } else {
            format!("{count} {}", first.folded_title)
        };
        let mut details: Vec<String> = notices
            .iter()
            .take(LISTED)
            .map(|n| n.detail.clone())
            .collect();
        if count > LISTED {
            details.push(format!("… and {} more", count - LISTED));
        }
        Some(Message {
            record: AlertRecord {
                at: SystemTime::now(),
                state: state.as_str(),
                key: group,
                summary: title.clone(),
                count,
                delivery: delivery.to_string(),
            },
            // One-offs are never active; keep them out of the active list.
            keys: if first.one_off { Vec::new() } else { ids },
            state,
            title,
            details,
        })
    }
}

/// A query text safe to post: string and number literals become `?`, and
/// the text is cut to `max` characters. Identifiers stay: they say which
/// table the query read.
pub fn mask_literals(sql: &str, max: usize) -> String {
    let mut out = String::with_capacity(sql.len().min(max + 1));
    let mut chars = sql.chars().peekable();
    let mut prev_ident = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            // Skip to the closing quote; '' inside is an escaped quote.
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                    }
                    Some('\'') | None => break,
                    Some(_) => {}
                }
            }
            out.push('?');
            prev_ident = false;
        } else if c.is_ascii_digit() && !prev_ident {
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_digit() || *c == '.')
            {
                chars.next();
            }
            out.push('?');
        } else if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
            prev_ident = false;
        } else {
            out.push(c);
            prev_ident = c.is_alphanumeric() || c == '_';
        }
        if out.chars().count() > max {
            let cut: String = out.chars().take(max).collect();
            return format!("{cut}…");
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> AlertsConfig {
        crate::config::Config::parse(
            "[warehouse]\nnodes = [\"a:1\"]\n[alerts]\ngroup_wait = \"1s\"\ncooldown = \"10m\"\n",
            "t.toml",
            std::path::Path::new("."),
        )
        .unwrap()
        .alerts
    }

    fn down(node: &str) -> AlertEvent {
        AlertEvent::NodeDown {
            node: node.into(),
            reason: "connection refused".into(),
        }
    }

    fn up(node: &str) -> AlertEvent {
        AlertEvent::NodeUp { node: node.into() }
    }

    fn cancelled(i: usize) -> AlertEvent {
        AlertEvent::QueryCancelled {
            user: "bob".into(),
            application: "tableau".into(),
            rule: "long-scan".into(),
            fingerprint: "f00".into(),
            duration: Duration::from_secs(30),
            sample: format!("SELECT * FROM t WHERE id = {i} AND name = 'secret'"),
        }
    }

    #[test]
    fn a_burst_folds_into_one_message_with_a_count() {
        let c = config();
        let mut d = Dispatcher::default();
        let t0 = Instant::now();
        for i in 0..500 {
            d.push_event(cancelled(i), &c, t0 + Duration::from_millis(i as u64));
        }
        assert!(d.flush(t0 + Duration::from_millis(999), &c).is_empty());
        let out = d.flush(t0 + Duration::from_secs(1), &c);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].title, "500 queries cancelled by rule long-scan");
        assert_eq!(out[0].record.count, 500);
        assert_eq!(out[0].details.len(), LISTED + 1);
        assert!(
            !out[0].details[0].contains("secret"),
            "{}",
            out[0].details[0]
        );
        assert!(out[0].keys.is_empty(), "cancellations are never active");
        // The next burst within the cooldown is recorded, not sent.
        d.push_event(cancelled(1), &c, t0 + Duration::from_secs(5));
        let out = d.flush(t0 + Duration::from_secs(6), &c);
        assert_eq!(out[0].record.delivery, "suppressed (cooldown)");
    }

    #[test]
    fn down_and_up_make_one_pair_and_repeats_are_ignored() {
        let c = config();
        let mut d = Dispatcher::default();
        let t0 = Instant::now();
        d.push_event(up("a:1"), &c, t0);
        assert_eq!(d.flush_at(), None, "up without down says nothing");
        d.push_event(down("a:1"), &c, t0);
        d.push_event(down("a:1"), &c, t0);
        let out = d.flush(t0 + Duration::from_secs(1), &c);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].title, "node a:1 is down");
        assert_eq!(out[0].record.delivery, "queued");
        d.push_event(up("a:1"), &c, t0 + Duration::from_secs(30));
        let out = d.flush(t0 + Duration::from_secs(31), &c);
        assert_eq!(out[0].state, State::Resolved);
        assert_eq!(out[0].record.delivery, "queued");
        // Down again within the cooldown: neither message is sent.
        d.push_event(down("a:1"), &c, t0 + Duration::from_secs(40));
        d.push_event(up("a:1"), &c, t0 + Duration::from_secs(40));
        let out = d.flush(t0 + Duration::from_secs(41), &c);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|m| m.record.delivery != "queued"), "{out:?}");
        // After the cooldown it is news again.
        d.push_event(down("a:1"), &c, t0 + Duration::from_secs(700));
        let out = d.flush(t0 + Duration::from_secs(701), &c);
        assert_eq!(out[0].record.delivery, "queued");
    }

    #[test]
    fn two_nodes_down_at_once_fold() {
        let c = config();
        let mut d = Dispatcher::default();
        let t0 = Instant::now();
        d.push_event(down("a:1"), &c, t0);
        d.push_event(down("b:1"), &c, t0);
        let out = d.flush(t0 + Duration::from_secs(1), &c);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].title, "2 nodes are down");
        assert_eq!(out[0].keys, vec!["node_down:a:1", "node_down:b:1"]);
    }

    #[test]
    fn literals_are_masked() {
        assert_eq!(
            mask_literals("select *  from t1 where a = 'x''y' and b=42.5", 200),
            "select * from t1 where a = ? and b=?"
        );
        assert_eq!(mask_literals("select 'unterminated", 200), "select ?");
        assert_eq!(mask_literals("abcdef", 3), "abc…");
    }
}
