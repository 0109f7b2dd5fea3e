//! TLS on both legs: clients to sluice (rustls), sluice to nodes.

use crate::support::*;

fn tls_setup(cert: &std::path::Path, key: &std::path::Path, mode: &str) -> Setup {
    Setup {
        tail: format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\nmode = \"{mode}\"\n",
            cert, key
        ),
        ..Setup::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_with_tls_and_plaintext_is_refused_in_require_mode() {
    let node = node("tls-client");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());

    let sluice = Sluice::start(&[&node], &tls_setup(&cert, &key, "prefer"));
    let url = sluice.url("postgres");
    let out = psql(
        &format!("{url} sslmode=require"),
        &["-c", "\\conninfo", "-At", "-c", "SELECT 40 + 2"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("SSL connection (protocol: TLSv1."),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("42"));
    // prefer also serves plaintext clients.
    let out = psql(
        &format!("{url} sslmode=disable"),
        &["-At", "-c", "SELECT 1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    drop(sluice);

    let sluice = Sluice::start(&[&node], &tls_setup(&cert, &key, "require"));
    let url = sluice.url("postgres");
    let out = psql(&format!("{url} sslmode=disable"), &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("sluice accepts only TLS connections"),
        "{}",
        stderr(&out)
    );
    let out = psql(
        &format!("{url} sslmode=require"),
        &["-At", "-c", "SELECT 1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_against_a_test_ca() {
    let node = node("tls-ca");
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_signed_cert(dir.path());
    let sluice = Sluice::start(&[&node], &tls_setup(&cert, &key, "require"));
    let url = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        sluice.port,
        ca.display()
    );
    let out = psql(&url, &["-At", "-c", "SELECT 'verified'"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "verified");
    // A client that trusts another CA refuses sluice's certificate.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = ca_signed_cert(other.path());
    let url = url.replace(&ca.display().to_string(), &other_ca.display().to_string());
    let out = psql(&url, &["-c", "SELECT 1"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_speaks_tls_to_nodes_and_relays_scram_logins() {
    let mut node = node("tls-node");
    let dir = tempfile::tempdir().unwrap();
    let node_dir = tempfile::tempdir().unwrap();
    let (node_cert, node_key) = self_signed_cert(node_dir.path());
    node.enable_tls(&node_cert, &node_key).unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    // A SCRAM user. Channel binding cannot cross a proxy with TLS on both
    // legs: with it disabled the login works; with libpq's default the
    // node's refusal reaches the client with sluice's hint.
    node.psql(
        "postgres",
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE alice LOGIN PASSWORD 'wonderland'",
    )
    .unwrap();
    require_passwords(&node, &["host all alice 127.0.0.1/32 scram-sha-256"]);

    let mut setup = tls_setup(&cert, &key, "prefer");
    setup
        .tail
        .push_str("\n[warehouse.tls]\nmode = \"require\"\n");
    let sluice = Sluice::start(&[&node], &setup);
    let url = format!("{} sslmode=require", sluice.url("postgres"));
    let out = psql(
        &url,
        &[
            "-At",
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "t",
        "the node sees a TLS connection from sluice"
    );

    let url = format!(
        "host=127.0.0.1 port={} user=alice password=wonderland dbname=postgres sslmode=require channel_binding=disable",
        sluice.port
    );
    let out = psql(&url, &["-At", "-c", "SELECT current_user"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "alice");
    let out = psql(
        &url.replace("channel_binding=disable", "channel_binding=prefer"),
        &["-c", "SELECT 1"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("connect with channel_binding=disable"),
        "{}",
        stderr(&out)
    );
    // A wrong password is the node's verdict, relayed.
    let out = psql(
        &url.replace("wonderland", "looking-glass"),
        &["-c", "SELECT 1"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("password authentication failed for user \"alice\""),
        "{}",
        stderr(&out)
    );
}
