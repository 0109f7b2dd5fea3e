//! Observability: /metrics after a known workload, Slack alerts through a
//! real local webhook receiver, and the admin console through psql and
//! tokio-postgres.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

// ---------------------------------------------------------------- /metrics

/// One sample of the Prometheus text format: name, labels, value.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

/// A small parser of the text exposition format: comments skipped,
/// `name{a="b",c="d"} value`, label values with \" and \\ escapes.
fn parse_prometheus(text: &str) -> Samples {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                loop {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    if key.is_empty() {
                        break;
                    }
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => value.push(chars.next().unwrap_or('\\')),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(key.trim_start_matches(',').to_string(), value);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name.to_string(), labels)
            }
        };
        out.push((name, labels, value));
    }
    out
}

/// The sum of a metric's samples whose labels include `want`.
fn metric(samples: &Samples, name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

fn scrape(sluice: &Sluice) -> Samples {
    let (status, body) = sluice.http_get("/metrics");
    assert_eq!(status, 200, "{body}");
    parse_prometheus(&body)
}

#[test]
fn the_prometheus_parser_reads_labels_and_escapes() {
    let s =
        parse_prometheus("# HELP x y\nx_total 3\ny{a=\"1\",b=\"q\\\"x\"} 2.5\ny{a=\"2\"} +Inf\n");
    assert_eq!(metric(&s, "x_total", &[]), 3.0);
    assert_eq!(metric(&s, "y", &[("b", "q\"x")]), 2.5);
    assert_eq!(s[2].1.get("a").unwrap(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_a_known_workload_runs() {
    let a = node("metrics");
    let sluice = Sluice::start(&[&a], &Setup::default());
    let node = a.addr();
    let before = scrape(&sluice);
    assert_eq!(metric(&before, "sluice_node_up", &[("node", &node)]), 1.0);
    assert_eq!(metric(&before, "sluice_client_connections", &[]), 0.0);

    let client = sluice.client().await;
    for _ in 0..5 {
        client.simple_query("SELECT 1").await.unwrap();
    }
    let err = client.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&err), "22012");
    // The histogram's samples are folded by the upkeep task every 5 s.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let during = scrape(&sluice);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        metric(&during, name, labels) - metric(&before, name, labels)
    };
    assert_eq!(metric(&during, "sluice_client_connections", &[]), 1.0);
    assert_eq!(delta("sluice_client_connections_total", &[]), 1.0);
    assert_eq!(
        metric(&during, "sluice_server_connections", &[("node", &node)]),
        1.0
    );
    assert_eq!(delta("sluice_queries_total", &[("route", "node")]), 6.0);
    assert_eq!(delta("sluice_node_queries_total", &[("node", &node)]), 6.0);
    assert_eq!(
        delta("sluice_query_duration_seconds_count", &[("route", "node")]),
        6.0
    );
    assert_eq!(
        metric(
            &during,
            "sluice_query_duration_seconds_bucket",
            &[("route", "node"), ("le", "+Inf")]
        ),
        metric(
            &during,
            "sluice_query_duration_seconds_count",
            &[("route", "node")]
        ),
    );
    assert_eq!(delta("sluice_errors_total", &[("class", "22")]), 1.0);
    assert!(delta("sluice_client_received_bytes_total", &[]) >= 6.0 * 14.0);
    assert!(delta("sluice_client_sent_bytes_total", &[]) > 0.0);
    assert!(
        metric(
            &during,
            "sluice_health_check_duration_seconds_count",
            &[("node", &node)]
        ) > 0.0
    );
    for registered in [
        "sluice_client_connections_refused_total",
        "sluice_catalog_sync_runs_total",
        "sluice_classification_cache_total",
        "sluice_parse_failures_total",
        "sluice_alerts_sent_total",
        "sluice_alerts_dropped_total",
        "sluice_catalog_sync_last_success_timestamp_seconds",
    ] {
        assert!(
            during.iter().any(|(n, _, _)| n == registered),
            "{registered} is exported before its first event"
        );
    }
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = scrape(&sluice);
    assert_eq!(metric(&after, "sluice_client_connections", &[]), 0.0);
    assert_eq!(
        metric(&after, "sluice_server_connections", &[("node", &node)]),
        0.0
    );
}

// ---------------------------------------------------------------- webhook

#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Accept,
    /// Answer 500 to the first n requests.
    FailFirst(usize),
    /// Read the request and never answer.
    Hang,
}

/// A real HTTP server standing in for Slack: records each POSTed body.
struct Webhook {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Webhook {
    fn start(behaviour: Behaviour) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = bodies.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let seen = seen.clone();
                std::thread::spawn(move || serve(stream, n, behaviour, seen));
            }
        });
        Webhook { port, bodies }
    }

    fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/services/T000/B000/secret-token",
            self.port
        )
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived, or fails the test.
    fn wait_for(&self, n: usize, timeout: Duration, sluice: &Sluice) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let b = self.bodies();
            if b.len() >= n {
                return b;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "the webhook got {:?}, not {n} requests, within {timeout:?}\n{}",
            self.bodies(),
            sluice.log()
        );
    }
}

fn serve(
    stream: std::net::TcpStream,
    n: usize,
    behaviour: Behaviour,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    seen.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    let status = match behaviour {
        Behaviour::Hang => {
            std::thread::sleep(Duration::from_secs(120));
            return;
        }
        Behaviour::FailFirst(k) if n < k => "500 Internal Server Error",
        _ => "200 OK",
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
}

fn alerting(webhook: &Webhook, extra: &str) -> Setup {
    Setup {
        // A health check slowed by a loaded test machine must not read as a
        // node going down and make an extra message.
        warehouse: "unhealthy_after = 3".into(),
        tail: format!(
            "[alerts]\nslack_webhook_url = \"{}\"\ngroup_wait = \"300ms\"\nevaluation_interval = \"100ms\"\n\
             timeout = \"2s\"\nmax_retries = 3\n{extra}\n",
            webhook.url()
        ),
        ..Setup::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_alerts_once_and_its_restart_resolves_once() {
    let mut a = node("alert-a");
    let b = node("alert-b");
    let webhook = Webhook::start(Behaviour::Accept);
    let sluice = Sluice::start(&[&a, &b], &alerting(&webhook, ""));
    a.stop().unwrap();
    let bodies = webhook.wait_for(1, Duration::from_secs(10), &sluice);
    let down: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(
        down["text"],
        format!("[FIRING] sluice: node {} is down", a.addr())
    );
    assert!(down["blocks"].as_array().is_some_and(|b| !b.is_empty()));
    a.start_again().unwrap();
    let bodies = webhook.wait_for(2, Duration::from_secs(10), &sluice);
    assert!(
        bodies[1].contains(&format!("[RESOLVED] sluice: node {} is back up", a.addr())),
        "{}",
        bodies[1]
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        webhook.bodies().len(),
        2,
        "one message each: {:?}",
        webhook.bodies()
    );
    let log = sluice.log();
    assert!(
        !log.contains("secret-token"),
        "the webhook URL is a secret:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_fires_once_per_cooldown() {
    let a = node("threshold");
    let webhook = Webhook::start(Behaviour::Accept);
    let setup = alerting(
        &webhook,
        "cooldown = \"10m\"\nsend_resolved = false\n\
         [[alerts.thresholds]]\nname = \"errors\"\nmetric = \"errors\"\nwindow = \"1s\"\nabove = 2\n\
         [admin]\nauth = \"trust\"\n",
    );
    let sluice = Sluice::start(&[&a], &setup);
    let client = sluice.client().await;
    let burst = || async {
        for _ in 0..4 {
            client.simple_query("SELECT 1/0").await.unwrap_err();
        }
    };
    burst().await;
    let bodies = webhook.wait_for(1, Duration::from_secs(5), &sluice);
    assert!(
        bodies[0].contains("[FIRING] sluice: threshold errors crossed"),
        "{}",
        bodies[0]
    );
    assert!(
        bodies[0].contains("errors is 4 over the last 1s"),
        "{}",
        bodies[0]
    );
    // The window passes (resolved, not sent), then the threshold is crossed
    // again within the cooldown: not sent again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    burst().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(webhook.bodies().len(), 1, "{:?}", webhook.bodies());
    let admin = admin_client(&sluice).await;
    let alerts = rows(&admin, "SHOW ALERTS").await;
    assert!(
        alerts
            .iter()
            .any(|r| r[2] == "threshold:errors" && r[5] == "suppressed (cooldown)"),
        "{alerts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_failing_together_fold_into_one_message() {
    let mut a = node("fold-a");
    let mut b = node("fold-b");
    let webhook = Webhook::start(Behaviour::Accept);
    let mut setup = alerting(&webhook, "");
    setup.tail = setup
        .tail
        .replace("group_wait = \"300ms\"", "group_wait = \"3s\"");
    let sluice = Sluice::start(&[&a, &b], &setup);
    a.stop().unwrap();
    b.stop().unwrap();
    let bodies = webhook.wait_for(1, Duration::from_secs(10), &sluice);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(webhook.bodies().len(), 1, "{:?}", webhook.bodies());
    assert!(
        bodies[0].contains("[FIRING] sluice: 2 nodes are down"),
        "{}",
        bodies[0]
    );
    assert!(bodies[0].contains(&a.addr()) && bodies[0].contains(&b.addr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_500_is_retried_and_the_alert_delivered_once() {
    let mut a = node("retry-a");
    let b = node("retry-b");
    let webhook = Webhook::start(Behaviour::FailFirst(1));
    let sluice = Sluice::start(&[&a, &b], &alerting(&webhook, ""));
    a.stop().unwrap();
    let bodies = webhook.wait_for(2, Duration::from_secs(10), &sluice);
    assert_eq!(bodies[0], bodies[1], "the retry sends the same message");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(webhook.bodies().len(), 2);
    let m = scrape(&sluice);
    assert_eq!(metric(&m, "sluice_alerts_sent_total", &[]), 1.0);
    assert_eq!(metric(&m, "sluice_alerts_failed_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_slow_queries() {
    let a = node("hang-a");
    let mut b = node("hang-b");
    let webhook = Webhook::start(Behaviour::Hang);
    let mut setup = alerting(&webhook, "");
    setup.tail = setup.tail.replace("timeout = \"2s\"", "timeout = \"60s\"");
    let sluice = Sluice::start(&[&a, &b], &setup);
    let client = sluice.client().await;
    let run = || async {
        let start = Instant::now();
        for _ in 0..300 {
            client.simple_query("SELECT 1").await.unwrap();
        }
        start.elapsed()
    };
    let baseline = run().await;
    b.stop().unwrap();
    webhook.wait_for(1, Duration::from_secs(10), &sluice);
    // The alert sender now waits on a webhook that never answers.
    let during = run().await;
    assert!(
        during < baseline * 3 + Duration::from_millis(500),
        "300 queries took {during:?} with the webhook hanging, {baseline:?} before"
    );
}

// ---------------------------------------------------------------- console

const ADMIN_PASSWORD: &str = "correct horse";

fn admin_setup() -> Setup {
    let verifier = postgres_protocol::password::scram_sha_256(ADMIN_PASSWORD.as_bytes());
    Setup {
        tail: format!(
            "[admin]\nauth = \"scram\"\n[[admin.users]]\nname = \"ops\"\npassword = \"{verifier}\"\n\
             [alerts]\nslack_webhook_url = \"https://hooks.slack.com/services/T0/B0/very-secret\"\n"
        ),
        ..Setup::default()
    }
}

fn admin_url(sluice: &Sluice, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=ops password='{password}' dbname=sluice",
        sluice.port
    )
}

async fn admin_client(sluice: &Sluice) -> tokio_postgres::Client {
    connect(&admin_url(sluice, ADMIN_PASSWORD)).await
}

/// The rows of a console command, as text.
async fn rows(client: &tokio_postgres::Client, command: &str) -> Vec<Vec<String>> {
    client
        .simple_query(command)
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_console_answers_psql_with_tables() {
    let a = node("console-psql");
    let sluice = Sluice::start(&[&a], &admin_setup());
    let out = Command::new("psql")
        .arg("-X")
        .arg(format!(
            "host=127.0.0.1 port={} user=ops dbname=sluice",
            sluice.port
        ))
        .args([
            "-c",
            "SHOW NODES",
            "-c",
            "SHOW CLIENTS",
            "-c",
            "SHOW SERVERS",
            "-c",
            "SHOW QUERIES",
            "-c",
            "SHOW RULES",
            "-c",
            "SHOW ALERTS",
            "-c",
            "SHOW CONFIG",
            "-c",
            "SHOW VERSION",
        ])
        .env("PGPASSWORD", ADMIN_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for header in [
        "node | healthy | paused | sessions | assigned_total | idle_connections",
        "id | user | database | application | peer | node | state | connected_at",
        "node | connections | state",
        "fingerprint | calls",
        "position | rule | action | conditions | hits | message",
        "state | at | alert | summary | events | delivery",
        "key | value",
        "version",
    ] {
        assert!(
            text.lines().any(|l| l
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains(header)),
            "no {header:?} in:\n{text}"
        );
    }
    assert!(text.contains(&a.addr()), "{text}");
    assert!(
        text.contains(concat!("sluice ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("alerts.slack_webhook_url"), "{text}");
    assert!(
        !text.contains("very-secret"),
        "SHOW CONFIG hides the webhook URL:\n{text}"
    );
    assert!(
        stderr(&out).contains("no [[rules]] are configured"),
        "{}",
        stderr(&out)
    );

    let wrong = Command::new("psql")
        .arg("-X")
        .arg(format!(
            "host=127.0.0.1 port={} user=ops dbname=sluice",
            sluice.port
        ))
        .args(["-c", "SHOW NODES"])
        .env("PGPASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("password authentication failed for user \"ops\""),
        "{}",
        stderr(&wrong)
    );
    assert!(!sluice.log().contains(ADMIN_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_kill_and_errors_on_the_console() {
    let a = node("console-a");
    let b = node("console-b");
    let sluice = Sluice::start(&[&a, &b], &admin_setup());
    let admin = admin_client(&sluice).await;

    // PAUSE: every new session goes to the other node; open ones stay.
    let on_a = loop {
        let c = sluice.client().await;
        if node_port(&c).await == a.port() {
            break c;
        }
    };
    assert!(
        rows(&admin, &format!("PAUSE NODE '{}'", a.addr()))
            .await
            .is_empty()
    );
    let nodes = rows(&admin, "SHOW NODES").await;
    let row_a = nodes.iter().find(|r| r[0] == a.addr()).unwrap();
    assert_eq!(row_a[2], "true", "{nodes:?}");
    for _ in 0..4 {
        assert_eq!(node_port(&sluice.client().await).await, b.port());
    }
    assert_eq!(node_port(&on_a).await, a.port(), "open sessions run on");
    rows(&admin, &format!("RESUME NODE '{}'", a.addr())).await;
    let mut ports = Vec::new();
    for _ in 0..4 {
        ports.push(node_port(&sluice.client().await).await);
    }
    assert!(ports.contains(&a.port()), "{ports:?}");

    // SHOW CLIENTS lists the session; KILL CLIENT ends it.
    let clients = rows(&admin, "SHOW CLIENTS").await;
    let mine = clients
        .iter()
        .find(|r| r[5] == a.addr() && r[1] == "postgres" && r[6] == "idle")
        .unwrap_or_else(|| panic!("{clients:?}"));
    let id = mine[0].clone();
    assert!(rows(&admin, &format!("KILL CLIENT {id}")).await.is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        on_a.simple_query("SELECT 1").await.is_err(),
        "the killed session is closed"
    );
    assert!(
        sluice.log().contains("command=KillClient"),
        "{}",
        sluice.log()
    );
    let clients = rows(&admin, "SHOW CLIENTS").await;
    assert!(!clients.iter().any(|r| r[0] == id), "{clients:?}");
    let servers = rows(&admin, "SHOW SERVERS").await;
    assert_eq!(servers.len(), 2);

    // Mistakes are errors with a SQLSTATE and a sentence.
    let e = admin.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42601");
    assert!(
        e.as_db_error().unwrap().message().contains("SHOW NODES"),
        "{e:?}"
    );
    let e = admin
        .simple_query("PAUSE NODE 'nowhere:1'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42704");
    let e = admin.simple_query("KILL CLIENT 999999").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42704");
    let e = admin.query("SHOW NODES", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "extended protocol is refused: {e:?}");

    // RELOAD re-reads the file; a broken one is refused with its problems.
    sluice.write_config(&[a.addr()], &admin_setup());
    rows(&admin, "RELOAD").await;
    assert_eq!(rows(&admin, "SHOW NODES").await.len(), 1);
    std::fs::write(sluice.config_path(), "[warehouse]\nnodes = [\"nope\"]\n").unwrap();
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(sqlstate(&e), "F0000");
    assert!(
        e.as_db_error()
            .unwrap()
            .detail()
            .unwrap_or("")
            .contains("has no port")
    );
    // The console still answers after its errors.
    assert_eq!(rows(&admin, "SHOW VERSION").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_without_users_and_trusts_only_when_told() {
    let a = node("console-auth");
    let sluice = Sluice::start(&[&a], &Setup::default());
    let e = try_connect(&format!(
        "host=127.0.0.1 port={} user=ops dbname=sluice",
        sluice.port
    ))
    .await
    .expect_err("no admin users: refused");
    assert_eq!(sqlstate(&e), "28000");
    let m = scrape(&sluice);
    assert_eq!(
        metric(
            &m,
            "sluice_client_connections_refused_total",
            &[("reason", "admin_auth")]
        ),
        1.0
    );
    drop(sluice);
    let sluice = Sluice::start(
        &[&a],
        &Setup {
            tail: "[admin]\nauth = \"trust\"\n".into(),
            ..Setup::default()
        },
    );
    let admin = connect(&format!(
        "host=127.0.0.1 port={} user=anyone dbname=sluice",
        sluice.port
    ))
    .await;
    assert_eq!(rows(&admin, "SHOW NODES").await.len(), 1);
}

#[test]
fn check_warns_about_a_plain_text_admin_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.toml");
    std::fs::write(
        &path,
        "[warehouse]\nnodes = [\"db1:5432\"]\n\n[[admin.users]]\nname = \"ops\"\npassword = \"hunter2\"\n",
    )
    .unwrap();
    let out = sluice_check(&path);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plain.toml:6: admin.users[0].password: warning: is plain text"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
