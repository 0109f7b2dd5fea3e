//! What each console command does, and the rows it answers.

use std::time::SystemTime;

use super::Console;
use super::parser::{COMMANDS, Command};
use crate::config::{AdminAuth, Condition, Config};
use crate::protocol::backend::ErrorFields;
use crate::protocol::sqlstate;

/// A command's answer: optional rows, notices, and the CommandComplete tag.
#[derive(Debug, Default)]
pub struct Reply {
    pub notices: Vec<String>,
    pub columns: Option<Vec<&'static str>>,
    pub rows: Vec<Vec<Option<String>>>,
    pub tag: String,
}

impl Reply {
    fn rows(columns: &[&'static str], rows: Vec<Vec<Option<String>>>) -> Reply {
        Reply {
            tag: format!("SHOW {}", rows.len()),
            columns: Some(columns.to_vec()),
            rows,
            notices: Vec::new(),
        }
    }

    fn done(tag: &str) -> Reply {
        Reply {
            tag: tag.to_string(),
            ..Reply::default()
        }
    }

    fn notice(mut self, text: impl Into<String>) -> Reply {
        self.notices.push(text.into());
        self
    }
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

fn time(t: SystemTime) -> Option<String> {
    s(humantime::format_rfc3339_seconds(t))
}

pub fn execute(console: &Console, command: Command) -> Result<Reply, ErrorFields> {
    match command {
        Command::ShowNodes => Ok(show_nodes(console)),
        Command::ShowClients => Ok(show_clients(console)),
        Command::ShowServers => Ok(show_servers(console)),
        Command::ShowPools => Ok(show_pools(console)),
        Command::ShowQueries => Ok(show_queries(console)),
        Command::ShowRules => Ok(show_rules(console)),
        Command::ShowAlerts => Ok(show_alerts(console)),
        Command::ShowCatalog => Ok(show_catalog(console)),
        Command::ShowConfig => Ok(Reply::rows(
            &["key", "value"],
            config_rows(&console.generation().config)
                .into_iter()
                .map(|(k, v)| vec![Some(k), Some(v)])
                .collect(),
        )),
        Command::ShowVersion => Ok(Reply::rows(
            &["version"],
            vec![vec![s(concat!("sluice ", env!("CARGO_PKG_VERSION")))]],
        )),
        Command::ShowHelp => Ok(Reply::rows(&["commands"], vec![vec![s(COMMANDS)]])),
        Command::Reload => match console.try_reload_from_file() {
            Ok(nodes) => Ok(Reply::done("RELOAD").notice(format!(
                "configuration reloaded: {nodes} node(s); new sessions use it"
            ))),
            Err(problems) => Err(ErrorFields::error(
                sqlstate::CONFIG_FILE_ERROR,
                "reload refused; the running configuration stays in effect",
            )
            .with_detail(problems)),
        },
        Command::PauseNode(addr) => pause(console, &addr, true),
        Command::ResumeNode(addr) => pause(console, &addr, false),
        Command::KillClient(id) => {
            if console.registry.kill(id) {
                Ok(Reply::done("KILL"))
            } else {
                Err(ErrorFields::error(
                    sqlstate::UNDEFINED_OBJECT,
                    format!("no client session has id {id}"),
                )
                .with_hint("SHOW CLIENTS lists the open sessions and their ids."))
            }
        }
    }
}

fn show_nodes(console: &Console) -> Reply {
    let rows = console
        .nodes
        .all()
        .iter()
        .map(|n| {
            vec![
                s(n.addr()),
                s(n.is_healthy()),
                s(n.is_paused()),
                s(n.sessions()),
                s(n.assigned()),
                s(n.idle_count()),
            ]
        })
        .collect();
    Reply::rows(
        &[
            "node",
            "healthy",
            "paused",
            "sessions",
            "assigned_total",
            "idle_connections",
        ],
        rows,
    )
}

/// Each node's connections under `[pooling]`: attached to sessions, kept
/// between them, the cap, free slots and sessions waiting for one; and
/// the sessions detached from any node.
fn show_pools(console: &Console) -> Reply {
    let detached = console
        .registry
        .list()
        .iter()
        .filter(|c| c.pooling() == "detached")
        .count();
    let rows = console
        .nodes
        .all()
        .iter()
        .map(|n| {
            let slots = n.slots();
            vec![
                s(n.addr()),
                s(n.sessions()),
                s(n.idle_count()),
                slots.cap().and_then(s),
                slots.cap().and_then(|_| s(slots.free())),
                s(slots.waiting()),
                s(detached),
            ]
        })
        .collect();
    Reply::rows(
        &[
            "node",
            "attached",
            "kept",
            "max_node_connections",
            "free",
            "waiting",
            "detached_sessions",
        ],
        rows,
    )
}

fn show_servers(console: &Console) -> Reply {
    let rows = console
        .nodes
        .all()
        .iter()
        .map(|n| {
            let state = match (n.is_healthy(), n.is_paused()) {
                (false, _) => "down",
                (true, true) => "paused",
                (true, false) => "in rotation",
            };
            vec![s(n.addr()), s(n.sessions()), s(state)]
        })
        .collect();
    Reply::rows(&["node", "connections", "state"], rows)
}

fn show_clients(console: &Console) -> Reply {
    let rows = console
        .registry
        .list()
        .iter()
        .map(|c| {
            vec![
                s(c.id),
                s(&c.user),
                s(&c.database),
                s(&c.application),
                s(c.peer),
                s(c.node()),
                s(c.state().as_str()),
                time(c.connected_at),
                s(c.dialect()),
                s(c.pooling()),
            ]
        })
        .collect();
    Reply::rows(
        &[
            "id",
            "user",
            "database",
            "application",
            "peer",
            "node",
            "state",
            "connected_at",
            "dialect",
            "pooling",
        ],
        rows,
    )
}

/// The 50 query shapes that took most time.
fn show_queries(console: &Console) -> Reply {
    let secs = |v: f64| s(format!("{v:.3}"));
    let opt = |v: Option<f64>| v.map(|v| format!("{v}"));
    let names = |v: &[(String, u64)]| {
        s(v.iter()
            .map(|(n, c)| format!("{n} ({c})"))
            .collect::<Vec<_>>()
            .join(", "))
    };
    let rows: Vec<_> = console
        .stats
        .top(50, crate::stats::Order::TotalTime)
        .into_iter()
        .map(|q| {
            vec![
                s(&q.fingerprint),
                s(q.calls),
                s(q.errors),
                s(q.rejected),
                s(q.cancelled),
                secs(q.total_seconds),
                secs(q.mean_seconds),
                secs(q.max_seconds),
                opt(q.p50_seconds),
                opt(q.p95_seconds),
                opt(q.p99_seconds),
                s(q.rows),
                s(q.bytes),
                s(&q.last_seen),
                names(&q.top_users),
                names(&q.top_applications),
                s(&q.sample),
            ]
        })
        .collect();
    let reply = Reply::rows(
        &[
            "fingerprint",
            "calls",
            "errors",
            "rejected",
            "cancelled",
            "total_seconds",
            "mean_seconds",
            "max_seconds",
            "p50_seconds",
            "p95_seconds",
            "p99_seconds",
            "rows",
            "bytes",
            "last_seen",
            "top_users",
            "top_applications",
            "sample",
        ],
        rows,
    );
    if reply.rows.is_empty() {
        reply.notice("no query has finished yet")
    } else {
        reply
    }
}

/// The rules in force, in order, with their matches since start.
fn show_rules(console: &Console) -> Reply {
    let hits = console.metrics.rule_hit_counts();
    let config = console.generation().config.clone();
    let mut rows: Vec<_> = config
        .rules
        .rules()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let count: u64 = hits
                .iter()
                .filter(|(name, _, _)| **name == *r.name)
                .map(|(_, _, n)| n)
                .sum();
            let conditions: Vec<String> = r.conditions.iter().map(|c| c.key()).collect();
            let action = match r.action {
                crate::classify::Action::Cancel { budget } => {
                    format!("cancel after {}", humantime::format_duration(budget))
                }
                other => other.name().to_string(),
            };
            vec![
                s(i + 1),
                s(&r.name),
                s(action),
                s(conditions.join(", ")),
                s(count),
                s(&r.message),
            ]
        })
        .collect();
    // Rules matched before a reload removed them still have counts.
    for (name, action, count) in &hits {
        if !config.rules.rules().iter().any(|r| *r.name == **name) {
            rows.push(vec![
                None,
                s(name),
                s(format!("{action} (no longer configured)")),
                None,
                s(count),
                None,
            ]);
        }
    }
    let reply = Reply::rows(
        &[
            "position",
            "rule",
            "action",
            "conditions",
            "hits",
            "message",
        ],
        rows,
    );
    if reply.rows.is_empty() {
        reply.notice("no [[rules]] are configured")
    } else {
        reply
    }
}

fn show_alerts(console: &Console) -> Reply {
    let mut rows = Vec::new();
    for a in console.alerts.active() {
        rows.push(vec![
            s("active"),
            time(a.at),
            s(&a.key),
            s(&a.summary),
            s(a.count),
            s(&a.delivery),
        ]);
    }
    for a in console.alerts.recent() {
        rows.push(vec![
            s(a.state),
            time(a.at),
            s(&a.key),
            s(&a.summary),
            s(a.count),
            s(&a.delivery),
        ]);
    }
    Reply::rows(
        &["state", "at", "alert", "summary", "events", "delivery"],
        rows,
    )
}

/// The catalog copy, database by database: whether lookups may use it,
/// its last refresh, and the lookups the nodes took while it was stale.
fn show_catalog(console: &Console) -> Reply {
    let generation = console.generation();
    let Some(catalog) = &generation.config.catalog else {
        return Reply::rows(&["database"], Vec::new())
            .notice("no [catalog] is configured: every query goes to the nodes");
    };
    let copy = match &console.catalog_copy.managed {
        Some(m) => format!(
            "managed, PostgreSQL {} in {}, 127.0.0.1:{}{}",
            m.major,
            m.data_dir().display(),
            m.port(),
            if m.is_running() {
                ""
            } else {
                " (down: being restarted)"
            }
        ),
        None => format!("{}:{}", catalog.host, catalog.port),
    };
    let rows = console
        .catalog_copy
        .freshness
        .snapshot()
        .into_iter()
        .map(|d| {
            vec![
                s(&d.database),
                s(if d.stale { "stale" } else { "current" }),
                d.stale_for.map(|t| format!("{:.1}", t.as_secs_f64())),
                d.last_refresh.and_then(time),
                d.last_kind.map(|k| k.as_str().to_string()),
                d.last_elapsed.map(|t| format!("{:.3}", t.as_secs_f64())),
                s(d.last_relations),
                s(d.refreshes),
                s(d.failures),
                s(d.stale_lookups),
                d.last_error,
            ]
        })
        .collect();
    Reply::rows(
        &[
            "database",
            "state",
            "stale_seconds",
            "last_refresh",
            "last_kind",
            "last_seconds",
            "last_relations",
            "refreshes",
            "failures",
            "stale_lookups",
            "last_error",
        ],
        rows,
    )
    .notice(format!(
        "catalog copy: {copy}; change probe every {}",
        catalog
            .probe_interval
            .map_or("(off)".to_string(), |d| humantime::format_duration(d)
                .to_string())
    ))
}

fn pause(console: &Console, addr: &str, paused: bool) -> Result<Reply, ErrorFields> {
    let verb = if paused { "PAUSE" } else { "RESUME" };
    let Some(node) = console.nodes.find(addr) else {
        let known: Vec<String> = console
            .nodes
            .all()
            .iter()
            .map(|n| n.addr().to_string())
            .collect();
        return Err(ErrorFields::error(
            sqlstate::UNDEFINED_OBJECT,
            format!("no node {addr:?} in warehouse.nodes"),
        )
        .with_hint(format!(
            "Name a node as the configuration writes it: {}.",
            known.join(", ")
        )));
    };
    let changed = node.set_paused(paused);
    tracing::warn!(
        node = addr,
        paused,
        "node {} from the admin console",
        if paused { "paused" } else { "resumed" }
    );
    let reply = Reply::done(verb);
    Ok(match (changed, paused) {
        (false, true) => reply.notice(format!("node {addr} was already paused")),
        (false, false) => reply.notice(format!("node {addr} was not paused")),
        (true, true) => reply.notice(format!(
            "node {addr} takes no new sessions; its {} open session(s) run on",
            node.sessions()
        )),
        (true, false) => reply.notice(format!("node {addr} takes new sessions again")),
    })
}

/// Every setting as `key = value`, secrets masked.
pub fn config_rows(c: &Config) -> Vec<(String, String)> {
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let secret = |set: bool| if set { "(set, hidden)" } else { "(not set)" }.to_string();
    let mut rows = vec![
        ("server.listen".into(), c.server.listen.to_string()),
        (
            "server.metrics_listen".into(),
            c.server
                .metrics_listen
                .map(|a| a.to_string())
                .unwrap_or_default(),
        ),
        (
            "server.max_client_connections".into(),
            c.server.max_client_connections.to_string(),
        ),
        (
            "server.max_client_connections_per_user".into(),
            c.server
                .max_client_connections_per_user
                .map(|n| n.to_string())
                .unwrap_or("(no limit)".into()),
        ),
        ("server.drain_timeout".into(), d(c.server.drain_timeout)),
        ("server.startup_timeout".into(), d(c.server.startup_timeout)),
        (
            "server.max_message_size".into(),
            c.server.max_message_size.to_string(),
        ),
        (
            "server.max_startup_packet_size".into(),
            c.server.max_startup_packet_size.to_string(),
        ),
        (
            "server.max_startup_parameters".into(),
            c.server.max_startup_parameters.to_string(),
        ),
        (
            "server.cancel_rate".into(),
            c.server.cancel_rate.to_string(),
        ),
        (
            "server.cancel_burst".into(),
            c.server.cancel_burst.to_string(),
        ),
        (
            "server.tls.mode".into(),
            c.server
                .tls
                .as_ref()
                .map(|t| format!("{:?}", t.mode).to_lowercase())
                .unwrap_or("(no [server.tls])".into()),
        ),
        (
            "warehouse.dialect".into(),
            format!("{:?}", c.warehouse.dialect).to_lowercase(),
        ),
        ("warehouse.nodes".into(), c.warehouse.nodes.join(", ")),
        (
            "warehouse.health_check_interval".into(),
            d(c.warehouse.health_check_interval),
        ),
        (
            "warehouse.health_check_timeout".into(),
            d(c.warehouse.health_check_timeout),
        ),
        (
            "warehouse.healthy_after".into(),
            c.warehouse.healthy_after.to_string(),
        ),
        (
            "warehouse.unhealthy_after".into(),
            c.warehouse.unhealthy_after.to_string(),
        ),
        (
            "warehouse.connect_timeout".into(),
            d(c.warehouse.connect_timeout),
        ),
        (
            "warehouse.service_user".into(),
            c.warehouse.service_user.clone(),
        ),
        (
            "warehouse.service_password".into(),
            secret(!c.warehouse.service_password.is_empty()),
        ),
        (
            "warehouse.service_database".into(),
            c.warehouse.service_database.clone(),
        ),
        (
            "warehouse.tls.mode".into(),
            format!("{:?}", c.warehouse.tls.mode).to_lowercase(),
        ),
        (
            "admin.auth".into(),
            match c.admin.auth {
                AdminAuth::Scram => "scram",
                AdminAuth::Trust => "trust",
            }
            .into(),
        ),
    ];
    for (i, u) in c.admin.users.iter().enumerate() {
        rows.push((format!("admin.users[{i}].name"), u.name.clone()));
        rows.push((format!("admin.users[{i}].password"), secret(true)));
    }
    let optional = |v: Option<String>| v.unwrap_or_else(|| "(unset)".into());
    rows.extend([
        (
            "auth.mode".into(),
            match c.auth.mode {
                crate::config::AuthMode::Passthrough => "passthrough",
                crate::config::AuthMode::AuthQuery => "auth_query",
                crate::config::AuthMode::Cleartext => "cleartext",
            }
            .into(),
        ),
        ("auth.auth_query".into(), c.auth.auth_query.clone()),
        ("auth.cache".into(), d(c.auth.cache)),
        (
            "pooling.idle_detach".into(),
            optional(c.pooling.idle_detach.map(d)),
        ),
        (
            "pooling.max_node_connections".into(),
            optional(c.pooling.max_node_connections.map(|n| n.to_string())),
        ),
        ("pooling.wait_timeout".into(), d(c.pooling.wait_timeout)),
    ]);
    for (i, t) in c.pooling.transaction.iter().enumerate() {
        let globs = |g: &[crate::classify::rules::Glob]| {
            g.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", ")
        };
        rows.push((
            format!("pooling.transaction[{i}]"),
            format!(
                "users [{}] applications [{}] databases [{}]",
                globs(&t.users),
                globs(&t.applications),
                globs(&t.databases)
            ),
        ));
    }
    let a = &c.alerts;
    rows.extend([
        (
            "alerts.slack_webhook_url".into(),
            secret(a.slack_webhook_url.is_some()),
        ),
        ("alerts.cooldown".into(), d(a.cooldown)),
        ("alerts.send_resolved".into(), a.send_resolved.to_string()),
        ("alerts.group_wait".into(), d(a.group_wait)),
        (
            "alerts.evaluation_interval".into(),
            d(a.evaluation_interval),
        ),
        ("alerts.timeout".into(), d(a.timeout)),
        ("alerts.max_retries".into(), a.max_retries.to_string()),
        ("alerts.queue_size".into(), a.queue_size.to_string()),
        (
            "alerts.events.node_down".into(),
            a.events.node_down.to_string(),
        ),
        (
            "alerts.events.catalog_sync_failed".into(),
            a.events.catalog_sync_failed.to_string(),
        ),
        (
            "alerts.events.query_cancelled".into(),
            a.events.query_cancelled.to_string(),
        ),
    ]);
    for (i, t) in a.thresholds.iter().enumerate() {
        let cond = match t.condition {
            Condition::Above(v) => format!("above = {v}"),
            Condition::Below(v) => format!("below = {v}"),
        };
        rows.push((
            format!("alerts.thresholds[{i}]"),
            format!(
                "name = {:?}, metric = {:?}, window = {:?}, {cond}, for = {:?}",
                t.name,
                t.metric.as_str(),
                d(t.window),
                d(t.hold)
            ),
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_config_hides_secrets() {
        let c = Config::parse(
            "[warehouse]\nnodes = [\"a:1\"]\nservice_password = \"hunter2\"\n\
             [[admin.users]]\nname = \"ops\"\npassword = \"opspw\"\n\
             [alerts]\nslack_webhook_url = \"https://hooks.slack.com/services/T0/B0/XYZ\"\n",
            "t.toml",
            std::path::Path::new("."),
        )
        .unwrap();
        let text = format!("{:?}", config_rows(&c));
        for secret in ["hunter2", "opspw", "XYZ", "hooks.slack.com"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("(set, hidden)"));
        assert!(text.contains("\"admin.users[0].name\", \"ops\""));
    }
}
