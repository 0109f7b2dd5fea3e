//! Node connections kept between clients (`warehouse.idle_connections`):
//! a client that connects per query gets the node connection the last one
//! left, reset, when the node let that one in without a password and the
//! startup packets are the same; otherwise a connection of its own.

use std::time::Duration;

use crate::support::*;

/// The node backend's pid as seen by a fresh psql connection through sluice.
fn backend_pid(url: &str) -> String {
    let out = psql(url, &["-At", "-c", "SELECT pg_backend_pid()"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// Connects until a session lands on `pid` (the reset runs after the last
/// client left, so the first try may come too early).
fn lands_on(url: &str, pid: &str) -> bool {
    for _ in 0..30 {
        if backend_pid(url) == pid {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_login_reuses_the_node_connection_reset() {
    let node = node("reuse");
    node.psql(
        "postgres",
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE alice LOGIN PASSWORD 'wonderland'; CREATE ROLE bob",
    )
    .unwrap();
    require_passwords(&node, &["host all alice 127.0.0.1/32 scram-sha-256"]);
    let sluice = Sluice::start(&[&node], &Setup::default());
    let url = sluice.url("postgres");

    // The first session leaves state behind that must not reach the next.
    let out = psql(
        &url,
        &[
            "-At",
            "-c",
            "CREATE TEMP TABLE scratch (a int)",
            "-c",
            "SET work_mem = '77MB'",
            "-c",
            "PREPARE p AS SELECT 1",
            "-c",
            "LISTEN somewhere",
            "-c",
            "SET ROLE bob",
            "-c",
            "SELECT pg_backend_pid()",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = stdout(&out).lines().last().unwrap().trim().to_string();
    // A later session gets the kept node connection (the reset runs after
    // the last client left: the first tries may come too early), reset.
    let mut reused = None;
    for _ in 0..30 {
        let out = psql(
            &url,
            &[
                "-At",
                "-c",
                "SELECT pg_backend_pid(), current_user, current_setting('work_mem'), \
                 to_regclass('pg_temp.scratch') IS NULL, \
                 (SELECT count(*) FROM pg_prepared_statements), \
                 (SELECT count(*) FROM pg_listening_channels())",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let row = stdout(&out).trim().to_string();
        if row.split('|').next() == Some(pid.as_str()) {
            reused = Some(row);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let row = reused.expect("a later session gets the kept node connection");
    let fields: Vec<&str> = row.split('|').collect();
    assert_eq!(
        &fields[1..],
        ["postgres", "4MB", "t", "0", "0"],
        "the kept connection was reset"
    );
    assert!(lands_on(&url, &pid), "and kept again");

    // Another startup packet (application name) gets a connection of its own.
    let other_app = format!("{url} application_name=other");
    let other = backend_pid(&other_app);
    assert_ne!(other, pid);

    // Ending inside a transaction: the connection is closed, not kept.
    let out = psql(
        &url,
        &["-At", "-c", "BEGIN", "-c", "SELECT pg_backend_pid()"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let in_transaction = stdout(&out).lines().last().unwrap().trim().to_string();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_ne!(backend_pid(&url), in_transaction);
    }

    // A login the node checked by password is never handed to another client.
    let alice = format!(
        "host=127.0.0.1 port={} user=alice password=wonderland dbname=postgres",
        sluice.port
    );
    let first = backend_pid(&alice);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_ne!(backend_pid(&alice), first);
    }

    // The kept connections show in the metrics.
    let (_, metrics) = sluice.http_get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_node_connections_reused_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_zero_keeps_none() {
    let node = node("noreuse");
    let sluice = Sluice::start(
        &[&node],
        &Setup {
            warehouse: "idle_connections = 0".into(),
            ..Setup::default()
        },
    );
    let url = sluice.url("postgres");
    let first = backend_pid(&url);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_ne!(backend_pid(&url), first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_the_node_closed_is_not_handed_out() {
    let node = node("reuse-killed");
    let sluice = Sluice::start(&[&node], &Setup::default());
    let url = sluice.url("postgres");
    let pid = backend_pid(&url);
    std::thread::sleep(Duration::from_millis(300));
    // The node ends the kept backend; the next client must not notice.
    node.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = psql(&url, &["-At", "-c", "SELECT 1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1");
}
