//! Node choice: round robin over healthy nodes, out of rotation when a node
//! fails its health checks, back when it answers again.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_evenly_over_two_nodes() {
    let a = node("rr-a");
    let b = node("rr-b");
    let sluice = Sluice::start(&[&a, &b], &Setup::default());
    let mut on_a = 0;
    let mut on_b = 0;
    let mut clients = Vec::new();
    for _ in 0..10 {
        let client = sluice.client().await;
        let port = node_port(&client).await;
        if port == a.port() {
            on_a += 1;
        } else if port == b.port() {
            on_b += 1;
        } else {
            panic!("session landed on port {port}, which is neither node");
        }
        clients.push(client);
    }
    assert_eq!((on_a, on_b), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_takes_no_sessions_and_returns_after_restart() {
    let mut a = node("down-a");
    let b = node("down-b");
    let sluice = Sluice::start(&[&a, &b], &Setup::default());
    let a_addr = a.addr();
    a.stop().unwrap();
    sluice.wait_for_log(&format!("node=\"{a_addr}\""), Duration::from_secs(5));
    sluice.wait_for_log("is out of rotation", Duration::from_secs(5));
    for _ in 0..6 {
        let client = sluice.client().await;
        assert_eq!(
            node_port(&client).await,
            b.port(),
            "a down node takes no new sessions"
        );
    }
    a.start_again().unwrap();
    sluice.wait_for_log("back in rotation", Duration::from_secs(5));
    let mut ports = Vec::new();
    for _ in 0..4 {
        ports.push(node_port(&sluice.client().await).await);
    }
    assert!(
        ports.contains(&a.port()),
        "the restarted node serves again: {ports:?}"
    );
    assert!(ports.contains(&b.port()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_query_errors_its_sessions_at_once() {
    let mut a = node("kill-a");
    let sluice = Sluice::start(&[&a], &Setup::default());
    let client = sluice.client().await;
    let query =
        tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.stop_immediate().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(2), query)
        .await
        .expect("the session ends at once")
        .unwrap();
    let err = result.expect_err("the query cannot succeed on a dead node");
    let text = err.to_string();
    let code = sqlstate(&err);
    assert!(
        code.starts_with("57P") || code.starts_with("08") || text.contains("closed"),
        "{code}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_node_down_clients_get_a_clear_error_and_readyz_fails() {
    let mut a = node("alldown");
    let sluice = Sluice::start(&[&a], &Setup::default());
    assert_eq!(sluice.http_get("/readyz").0, 200);
    assert_eq!(sluice.http_get("/healthz").0, 200);
    a.stop().unwrap();
    sluice.wait_for_log("is out of rotation", Duration::from_secs(5));
    let started = std::time::Instant::now();
    let err = try_connect(&sluice.url("postgres"))
        .await
        .expect_err("no node, no session");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the error comes at once"
    );
    assert_eq!(sqlstate(&err), "08006");
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("no warehouse node is available"),
        "{err}"
    );
    let (status, body) = sluice.http_get("/readyz");
    assert_eq!(status, 503);
    assert!(
        body.contains("none of the 1 warehouse nodes is healthy"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_skipped_for_the_next() {
    // A node that is configured but refuses connections, before any health
    // check has marked it down: the session moves on to the next node.
    let b = node("skip-b");
    let dead = format!("127.0.0.1:{}", free_port());
    let sluice = Sluice::start_addrs(
        &[dead.clone(), b.addr()],
        &Setup {
            warehouse: "unhealthy_after = 100".into(),
            ..Setup::default()
        },
    );
    for _ in 0..4 {
        let client = sluice.client().await;
        assert_eq!(node_port(&client).await, b.port());
    }
}
