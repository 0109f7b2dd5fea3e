//! The `[admin]` and `[alerts]` sections: who may use the admin console, and
//! where and when sluice sends alerts.

use std::time::Duration;

use toml::Spanned;

use super::raw::{RawAdmin, RawAlerts, RawThreshold};
use super::{Secret, Validator};
use crate::scram::Verifier;

#[derive(Debug, Clone)]
pub struct Admin {
    pub auth: AdminAuth,
    pub users: Vec<AdminUser>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAuth {
    /// SCRAM-SHA-256 against `[[admin.users]]`.
    Scram,
    /// No password: anyone who reaches the listener is an admin. Only when
    /// written in the file.
    Trust,
}

#[derive(Debug, Clone)]
pub struct AdminUser {
    pub name: String,
    pub verifier: Verifier,
}

#[derive(Debug, Clone)]
pub struct Alerts {
    /// `None`: no webhook, alerts are only kept for `SHOW ALERTS`.
    pub slack_webhook_url: Option<Secret>,
    pub cooldown: Duration,
    pub send_resolved: bool,
    /// Events of one kind arriving within this are folded into one message.
    pub group_wait: Duration,
    pub evaluation_interval: Duration,
    pub timeout: Duration,
    pub max_retries: u32,
    pub queue_size: usize,
    pub events: AlertEvents,
    pub thresholds: Vec<Threshold>,
}

#[derive(Debug, Clone, Copy)]
pub struct AlertEvents {
    pub node_down: bool,
    pub catalog_sync_failed: bool,
    pub query_cancelled: bool,
}

#[derive(Debug, Clone)]
pub struct Threshold {
    pub name: String,
    pub metric: ThresholdMetric,
    pub window: Duration,
    pub condition: Condition,
    /// The condition must hold this long before the alert fires.
    pub hold: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    Above(f64),
    Below(f64),
}

impl Condition {
    pub fn holds(self, value: f64) -> bool {
        match self {
            Condition::Above(limit) => value > limit,
            Condition::Below(limit) => value < limit,
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Above(v) => write!(f, "above {v}"),
            Condition::Below(v) => write!(f, "below {v}"),
        }
    }
}

/// What a threshold watches. Counts are over the window; the others are
/// values now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdMetric {
    /// Queries refused by rules, in the window.
    RejectedQueries,
    /// Queries cancelled by rules, in the window.
    CancelledQueries,
    /// Queries of every route, in the window.
    Queries,
    /// ErrorResponses sent to clients, in the window.
    Errors,
    /// Errors per query in the window (0 when there was no query).
    ErrorRate,
    /// 99th percentile query duration in the window, in seconds (bucket bound).
    P99LatencySeconds,
    /// Client sessions open now.
    ClientConnections,
    /// Nodes in rotation now.
    HealthyNodes,
    /// Catalog queries that fell back to a node, in the window.
    CatalogFallbacks,
}

impl ThresholdMetric {
    pub const CHOICES: [(&'static str, ThresholdMetric); 9] = [
        ("rejected_queries", ThresholdMetric::RejectedQueries),
        ("cancelled_queries", ThresholdMetric::CancelledQueries),
        ("queries", ThresholdMetric::Queries),
        ("errors", ThresholdMetric::Errors),
        ("error_rate", ThresholdMetric::ErrorRate),
        ("p99_latency_seconds", ThresholdMetric::P99LatencySeconds),
        ("client_connections", ThresholdMetric::ClientConnections),
        ("healthy_nodes", ThresholdMetric::HealthyNodes),
        ("catalog_fallbacks", ThresholdMetric::CatalogFallbacks),
    ];

    pub fn as_str(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

impl Validator<'_> {
    pub(super) fn admin(&mut self, raw: RawAdmin) -> Option<Admin> {
        let auth = self.choice(
            "admin.auth",
            &raw.auth,
            &[("scram", AdminAuth::Scram), ("trust", AdminAuth::Trust)],
        );
        let mut users: Vec<AdminUser> = Vec::new();
        let mut ok = true;
        for (i, u) in raw.users.iter().enumerate() {
            let key = format!("admin.users[{i}]");
            let name = u.name.get_ref();
            if name.is_empty() {
                self.problem(u.name.span(), &format!("{key}.name"), "must not be empty");
                ok = false;
                continue;
            }
            if users.iter().any(|x| x.name == *name) {
                self.problem(
                    u.name.span(),
                    &format!("{key}.name"),
                    format!("{name:?} is listed twice"),
                );
                ok = false;
                continue;
            }
            let password = u.password.get_ref();
            let verifier = if Verifier::is_verifier(password) {
                match Verifier::parse(password) {
                    Ok(v) => v,
                    Err(why) => {
                        // The value is a secret: name the problem, not the text.
                        self.problem(u.password.span(), &format!("{key}.password"), why);
                        ok = false;
                        continue;
                    }
                }
            } else if password.is_empty() {
                self.problem(
                    u.password.span(),
                    &format!("{key}.password"),
                    "must not be empty; write a SCRAM-SHA-256 verifier",
                );
                ok = false;
                continue;
            } else {
                self.warning(
                    u.password.span(),
                    &format!("{key}.password"),
                    "is plain text; store a SCRAM-SHA-256 verifier instead (e.g. from PostgreSQL: SET password_encryption = 'scram-sha-256'; then SELECT rolpassword FROM pg_authid)",
                );
                Verifier::from_password(password)
            };
            users.push(AdminUser {
                name: name.clone(),
                verifier,
            });
        }
        Some(Admin {
            auth: auth?,
            users: ok.then_some(users)?,
        })
    }

    pub(super) fn alerts(&mut self, raw: RawAlerts) -> Option<Alerts> {
        let url = raw.slack_webhook_url.get_ref();
        let slack_webhook_url = if url.is_empty() {
            Some(None)
        } else {
            match reqwest::Url::parse(url) {
                Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {
                    Some(Some(Secret::new(url.clone())))
                }
                // The URL is a secret: say what is wrong without echoing it.
                _ => {
                    self.problem(
                        raw.slack_webhook_url.span(),
                        "alerts.slack_webhook_url",
                        "is not an http:// or https:// URL",
                    );
                    None
                }
            }
        };
        let cooldown = self.duration("alerts.cooldown", &raw.cooldown);
        let group_wait = self.duration_or_zero("alerts.group_wait", &raw.group_wait);
        let evaluation = self.duration("alerts.evaluation_interval", &raw.evaluation_interval);
        let timeout = self.duration("alerts.timeout", &raw.timeout);
        let retries = self.count("alerts.max_retries", &raw.max_retries, 0, 20);
        let queue = self.count("alerts.queue_size", &raw.queue_size, 1, 1_000_000);
        let mut thresholds = Vec::new();
        let mut ok = true;
        for (i, t) in raw.thresholds.iter().enumerate() {
            match self.threshold(&format!("alerts.thresholds[{i}]"), t, &raw.thresholds[..i]) {
                Some(t) => thresholds.push(t),
                None => ok = false,
            }
        }
        Some(Alerts {
            slack_webhook_url: slack_webhook_url?,
            cooldown: cooldown?,
            send_resolved: raw.send_resolved,
            group_wait: group_wait?,
            evaluation_interval: evaluation?,
            timeout: timeout?,
            max_retries: retries? as u32,
            queue_size: queue?,
            events: AlertEvents {
                node_down: raw.events.node_down,
                catalog_sync_failed: raw.events.catalog_sync_failed,
                query_cancelled: raw.events.query_cancelled,
            },
            thresholds: ok.then_some(thresholds)?,
        })
    }

    fn threshold(
        &mut self,
        key: &str,
        t: &RawThreshold,
        earlier: &[RawThreshold],
    ) -> Option<Threshold> {
        let name = t.name.get_ref();
        let mut ok = true;
        if name.is_empty() {
            self.problem(t.name.span(), &format!("{key}.name"), "must not be empty");
            ok = false;
        } else if earlier.iter().any(|e| e.name.get_ref() == name) {
            self.problem(
                t.name.span(),
                &format!("{key}.name"),
                format!("{name:?} is used by another threshold"),
            );
            ok = false;
        }
        let metric = self.choice(
            &format!("{key}.metric"),
            &t.metric,
            &ThresholdMetric::CHOICES,
        );
        let window = self.duration(&format!("{key}.window"), &t.window);
        let hold = self.duration_or_zero(&format!("{key}.for"), &t.hold);
        let finite = |v: &Spanned<f64>| v.get_ref().is_finite();
        let condition = match (&t.above, &t.below) {
            (Some(a), None) if finite(a) => Some(Condition::Above(*a.get_ref())),
            (None, Some(b)) if finite(b) => Some(Condition::Below(*b.get_ref())),
            (Some(_), Some(b)) => {
                self.problem(
                    b.span(),
                    key,
                    "has both above and below; write one (use two thresholds for a band)",
                );
                None
            }
            (None, None) => {
                self.problem(t.name.span(), key, "needs above = N or below = N");
                None
            }
            (Some(v), None) | (None, Some(v)) => {
                self.problem(v.span(), key, "limit must be a finite number");
                None
            }
        };
        if !ok {
            return None;
        }
        Some(Threshold {
            name: name.clone(),
            metric: metric?,
            window: window?,
            condition: condition?,
            hold: hold?,
        })
    }

    /// A duration that may be zero ("0s").
    fn duration_or_zero(&mut self, key: &str, value: &Spanned<String>) -> Option<Duration> {
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
            Err(_) => self.duration(key, value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

    #[test]
    fn admin_and_alerts_default_to_off() {
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\n").unwrap();
        assert_eq!(c.admin.auth, AdminAuth::Scram);
        assert!(c.admin.users.is_empty());
        assert!(c.alerts.slack_webhook_url.is_none());
        assert_eq!(c.alerts.cooldown, Duration::from_secs(600));
        assert!(c.alerts.events.node_down);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn admin_users_and_thresholds_are_validated_with_line_and_key() {
        let verifier = postgres_protocol::password::scram_sha_256(b"pw");
        let src = format!(
            "[warehouse]\nnodes = [\"a:1\"]\n\
             [admin]\nauth = \"scram\"\n\
             [[admin.users]]\nname = \"ops\"\npassword = \"{verifier}\"\n\
             [[admin.users]]\nname = \"dev\"\npassword = \"plain\"\n\
             [alerts]\nslack_webhook_url = \"http://127.0.0.1:9/hook-secret\"\ncooldown = \"1m\"\n\
             [[alerts.thresholds]]\nname = \"blocked\"\nmetric = \"rejected_queries\"\nwindow = \"5m\"\nabove = 20\nfor = \"1m\"\n"
        );
        let c = parse(&src).unwrap();
        assert_eq!(c.admin.users.len(), 2);
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].key, "admin.users[1].password");
        assert_eq!(c.warnings[0].line, Some(10));
        let t = &c.alerts.thresholds[0];
        assert_eq!(t.metric, ThresholdMetric::RejectedQueries);
        assert_eq!(t.condition, Condition::Above(20.0));
        assert_eq!(t.hold, Duration::from_secs(60));
        assert!(
            !format!("{c:?}").contains("hook-secret"),
            "the webhook URL is a secret"
        );

        let bad = "[warehouse]\nnodes = [\"a:1\"]\n\
             [admin]\nauth = \"none\"\n\
             [[admin.users]]\nname = \"ops\"\npassword = \"SCRAM-SHA-256$x\"\n\
             [alerts]\nslack_webhook_url = \"hooks.slack.com/secret-part\"\n\
             [[alerts.thresholds]]\nname = \"t\"\nmetric = \"cpu\"\nabove = 1\nbelow = 2\n\
             [[alerts.thresholds]]\nname = \"t\"\nmetric = \"errors\"\n";
        let err = parse(bad).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("sluice.toml:4: admin.auth: \"none\" is not one of"),
            "{text}"
        );
        assert!(
            text.contains(
                "sluice.toml:7: admin.users[0].password: is not a SCRAM-SHA-256 verifier"
            ),
            "{text}"
        );
        assert!(
            text.contains("sluice.toml:9: alerts.slack_webhook_url: is not an http"),
            "{text}"
        );
        assert!(!text.contains("secret-part"), "{text}");
        assert!(
            text.contains("sluice.toml:12: alerts.thresholds[0].metric: \"cpu\" is not one of"),
            "{text}"
        );
        assert!(
            text.contains("sluice.toml:14: alerts.thresholds[0]: has both above and below"),
            "{text}"
        );
        assert!(
            text.contains("sluice.toml:16: alerts.thresholds[1].name: \"t\" is used by another"),
            "{text}"
        );
        assert!(
            text.contains("alerts.thresholds[1]: needs above = N or below = N"),
            "{text}"
        );
    }
}
