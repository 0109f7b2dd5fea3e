//! Posting messages to a Slack incoming webhook.
//!
//! One task sends one message at a time, off the query path. Each attempt
//! is bounded by `alerts.timeout`; a 429 or 5xx answer, or no answer, is
//! retried up to `alerts.max_retries` times with exponential backoff, or
//! after the server's Retry-After when it sends one. Other 4xx answers are
//! not retried: the same request would fail the same way. The webhook URL
//! is a secret and is never logged; errors are logged without it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Alerts;
use super::dispatch::{Message, State};
use crate::config::Current;

/// The first retry waits this long; each next one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between attempts, whatever Retry-After says.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The JSON body Slack's incoming webhooks take: `text` (the notification
/// and fallback) and `blocks` (the formatted message).
pub fn payload(message: &Message) -> serde_json::Value {
    let (mark, label) = match message.state {
        State::Firing => (":red_circle:", "FIRING"),
        State::Resolved => (":large_green_circle:", "RESOLVED"),
    };
    let text = format!("[{label}] sluice: {}", message.title);
    let details = message
        .details
        .iter()
        .map(|d| format!("• {}", escape(d)))
        .collect::<Vec<_>>()
        .join("\n");
    let at = message
        .record
        .at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "text": text,
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": format!("{mark} *{label}* sluice: {}", escape(&message.title))}
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": if details.is_empty() { "-".to_string() } else { details }}
            },
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": format!(
                    "{} event{} · <!date^{at}^{{date_short_pretty}} {{time_secs}}|{at}> · alert `{}`",
                    message.record.count,
                    if message.record.count == 1 { "" } else { "s" },
                    escape(&message.record.key),
                )}]
            }
        ]
    })
}

/// Slack's mrkdwn needs &, < and > escaped.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Try again, after at least this long if the server said so.
    Retry(Option<Duration>, String),
    GiveUp(String),
}

/// Sends queued messages until `stop`.
pub async fn send_loop(
    alerts: Arc<Alerts>,
    mut rx: mpsc::Receiver<Message>,
    current: impl Current,
    stop: CancellationToken,
) {
    // rustls needs a process-wide provider for reqwest's configuration; the
    // project uses ring everywhere. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client for alerts; alerts will not be sent");
            return;
        }
    };
    loop {
        let message = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let config = current.config();
        let Some(url) = config.alerts.slack_webhook_url.clone() else {
            alerts.delivered(message.record.at, &message.record.key, "no webhook");
            continue;
        };
        let body = payload(&message);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let result = post(&client, url.expose(), &body, config.alerts.timeout).await;
            match result {
                Attempt::Delivered => break Ok(()),
                Attempt::GiveUp(why) => break Err(why),
                Attempt::Retry(_, why) if attempt > config.alerts.max_retries => break Err(why),
                Attempt::Retry(after, why) => {
                    let wait = after.unwrap_or(backoff).min(MAX_BACKOFF);
                    tracing::debug!(
                        attempt,
                        ?wait,
                        reason = why,
                        "alert not delivered; retrying"
                    );
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        };
        match outcome {
            Ok(()) => {
                alerts.metrics().alert_sent();
                alerts.delivered(message.record.at, &message.record.key, "sent");
                tracing::info!(
                    alert = message.record.key,
                    title = message.title,
                    "alert sent"
                );
            }
            Err(why) => {
                alerts.metrics().alert_failed();
                alerts.delivered(message.record.at, &message.record.key, "failed");
                tracing::warn!(
                    alert = message.record.key,
                    attempts = attempt,
                    reason = why,
                    "could not deliver an alert to the webhook"
                );
            }
        }
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Attempt {
    let response = client.post(url).timeout(timeout).json(body).send().await;
    let response = match response {
        Ok(r) => r,
        // Without the URL: reqwest's errors include it.
        Err(e) if e.is_timeout() => {
            return Attempt::Retry(
                None,
                format!("no answer within {}", humantime::format_duration(timeout)),
            );
        }
        Err(e) => return Attempt::Retry(None, describe(&e.without_url())),
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered;
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    if status.as_u16() == 429 || status.is_server_error() {
        Attempt::Retry(retry_after, format!("webhook answered {status}"))
    } else {
        Attempt::GiveUp(format!("webhook answered {status}; not retried"))
    }
}

/// Retry-After is seconds, or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate(value)?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn httpdate(value: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(&imf_to_rfc3339(value)?).ok()
}

/// "Sun, 06 Nov 1994 08:49:37 GMT" → "1994-11-06 08:49:37".
fn imf_to_rfc3339(value: &str) -> Option<String> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|&n| n == month)? + 1;
    Some(format!("{year}-{m:02}-{:0>2} {time}", day))
}

/// The error chain (given without the URL, which reqwest would print).
fn describe(e: &reqwest::Error) -> String {
    crate::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertRecord;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn the_payload_has_text_and_blocks() {
        let m = Message {
            record: AlertRecord {
                at: SystemTime::now(),
                state: "firing",
                key: "node_down".into(),
                summary: "node a:1 is down".into(),
                count: 1,
                delivery: "queued".into(),
            },
            keys: vec!["node_down:a:1".into()],
            state: State::Firing,
            title: "node a:1 is down".into(),
            details: vec!["a:1: <refused>".into()],
        };
        let p = payload(&m);
        assert_eq!(p["text"], "[FIRING] sluice: node a:1 is down");
        assert_eq!(p["blocks"].as_array().unwrap().len(), 3);
        assert!(
            p["blocks"][1]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("&lt;refused&gt;")
        );
    }
}
