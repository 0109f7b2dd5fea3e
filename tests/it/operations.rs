//! Operating sluice: `sluice check`, SIGHUP reload, SIGTERM drain.

use std::time::Duration;

use crate::support::*;

#[test]
fn check_lists_every_problem_with_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1\"\n\n[warehouse]\nnodes = [\"db1:5432\", \"db2\"]\nhealth_check_interval = \"often\"\n",
    )
    .unwrap();
    let out = sluice_check(&path);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("bad.toml:2: server.listen:"), "{text}");
    assert!(
        text.contains("bad.toml:5: warehouse.nodes[1]: \"db2\" has no port"),
        "{text}"
    );
    assert!(
        text.contains("bad.toml:6: warehouse.health_check_interval:"),
        "{text}"
    );

    std::fs::write(&path, "[warehouse]\nnodes = [\"db1:5432\"]\n").unwrap();
    let out = sluice_check(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 node"));
}

#[test]
fn the_example_config_is_valid() {
    for path in [
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/sluice.toml"),
        // The container image's default configuration.
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker/sluice.toml"),
    ] {
        let out = sluice_check(path);
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_node_without_dropping_sessions_and_refuses_a_broken_config() {
    let a = node("reload-a");
    let b = node("reload-b");
    let sluice = Sluice::start(&[&a], &Setup::default());
    let open = sluice.client().await;
    assert_eq!(node_port(&open).await, a.port());

    // A broken file is refused; the running config stays.
    std::fs::write(sluice.config_path(), "[warehouse]\nnodes = [\"nope\"]\n").unwrap();
    sluice.signal("HUP");
    sluice.wait_for_log("reload refused", Duration::from_secs(5));
    assert_eq!(node_port(&sluice.client().await).await, a.port());

    sluice.write_config(&[a.addr(), b.addr()], &Setup::default());
    sluice.signal("HUP");
    sluice.wait_for_log("configuration reloaded", Duration::from_secs(5));
    let mut ports = Vec::new();
    for _ in 0..4 {
        ports.push(node_port(&sluice.client().await).await);
    }
    assert!(
        ports.contains(&b.port()),
        "the added node takes sessions: {ports:?}"
    );
    assert!(ports.contains(&a.port()));
    // The session opened before both reloads is still there.
    assert_eq!(node_port(&open).await, a.port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_sessions_and_refuses_new_ones_with_57p03() {
    let a = node("drain");
    let mut sluice = Sluice::start(
        &[&a],
        &Setup {
            server: "drain_timeout = \"20s\"".into(),
            ..Setup::default()
        },
    );
    let open = sluice.client().await;
    sluice.signal("TERM");
    sluice.wait_for_log("waiting for open sessions", Duration::from_secs(5));
    let err = try_connect(&sluice.url("postgres"))
        .await
        .expect_err("new sessions are refused while draining");
    assert_eq!(sqlstate(&err), "57P03");
    assert_eq!(sluice.http_get("/readyz").0, 503);
    // The open session keeps working until its client leaves.
    assert_eq!(
        open.query_one("SELECT 5", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        5
    );
    drop(open);
    let status = sluice
        .wait_exit(Duration::from_secs(10))
        .expect("sluice exits once the last session ends");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_closes_sessions_that_stay() {
    let a = node("drain-timeout");
    let mut sluice = Sluice::start(
        &[&a],
        &Setup {
            server: "drain_timeout = \"500ms\"".into(),
            ..Setup::default()
        },
    );
    let open = sluice.client().await;
    sluice.signal("TERM");
    let status = sluice
        .wait_exit(Duration::from_secs(10))
        .expect("sluice exits after the drain timeout");
    assert!(status.success());
    assert!(open.simple_query("SELECT 1").await.is_err());
    assert!(sluice.log().contains("drain timeout passed"));
}

/// Kubernetes mounts a ConfigMap as `sluice.toml -> ..data/sluice.toml`,
/// `..data -> ..<timestamp>/`, and updates it by swapping `..data`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_update_is_reloaded_without_a_signal() {
    use std::os::unix::fs::symlink;
    let a = node("watch-a");
    let b = node("watch-b");
    let setup = Setup {
        server: "watch_interval = \"200ms\"".into(),
        ..Setup::default()
    };
    let sluice = Sluice::start(&[&a], &setup);
    let open = sluice.client().await;
    assert_eq!(node_port(&open).await, a.port());

    // Turn the plain file into the ConfigMap layout, same content.
    let dir = sluice.dir();
    let text_a = std::fs::read_to_string(sluice.config_path()).unwrap();
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/sluice.toml"), &text_a).unwrap();
    symlink("..v1", dir.join("..data")).unwrap();
    symlink("..data/sluice.toml", dir.join("link.tmp")).unwrap();
    std::fs::rename(dir.join("link.tmp"), sluice.config_path()).unwrap();

    // The update: a new directory, and `..data` swapped to it atomically.
    let text_b = text_a.replace(&a.addr(), &b.addr());
    assert_ne!(text_a, text_b);
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/sluice.toml"), &text_b).unwrap();
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();

    sluice.wait_for_log("configuration files changed", Duration::from_secs(5));
    sluice.wait_for_log("configuration reloaded", Duration::from_secs(5));
    for _ in 0..3 {
        assert_eq!(node_port(&sluice.client().await).await, b.port());
    }
    // The session opened before the change stays on its node.
    assert_eq!(node_port(&open).await, a.port());
    assert_eq!(
        sluice.log().matches("configuration reloaded").count(),
        1,
        "one change, one reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_false_leaves_reload_to_sighup() {
    let a = node("nowatch-a");
    let b = node("nowatch-b");
    let setup = Setup {
        server: "watch_config = false\nwatch_interval = \"100ms\"".into(),
        ..Setup::default()
    };
    let sluice = Sluice::start(&[&a], &setup);
    sluice.write_config(&[b.addr()], &setup);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(node_port(&sluice.client().await).await, a.port());
    assert!(!sluice.log().contains("configuration reloaded"));
    sluice.signal("HUP");
    sluice.wait_for_log("configuration reloaded", Duration::from_secs(5));
    assert_eq!(node_port(&sluice.client().await).await, b.port());
}
