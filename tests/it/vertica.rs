//! Vertica clients (vertica-python, the real driver) through sluice in front
//! of PostgreSQL nodes: the translating relay of src/frontend/translate.rs.
//!
//! The scripts in tests/it/vertica/ do the talking and compare what
//! vertica-python reads with what psycopg reads straight from the node. They
//! run in the virtualenv scripts/setup.sh creates (`target/venv`); without it these tests fail and say how to make it.

use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/venv");
    let python = venv.join("bin/python");
    let ok = python.exists()
        && Command::new(&python)
            .args(["-c", "import vertica_python, psycopg"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Vertica client tests need vertica-python and psycopg in {}: run `bash scripts/setup.sh` \
         (it installs tests/it/clients/requirements.txt into target/venv)",
        venv.display()
    );
    python
}

/// Runs a scenario of client.py; fails the test with its output unless it
/// ends with "ok <scenario>".
fn scenario(name: &str, sluice: &Sluice, node: &LocalCluster, extra: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/vertica/client.py");
    let out = Command::new(python())
        .arg(script)
        .arg(name)
        .arg(sluice.port.to_string())
        .arg(node.port().to_string())
        .args(extra)
        .output()
        .expect("python runs");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        out.status.success() && stdout(&out).contains(&format!("ok {name}")),
        "scenario {name} {extra:?} failed:\n{text}\n--- sluice log ---\n{}",
        sluice.log()
    );
    text
}

#[test]
fn vertica_python_reads_every_common_type_as_psycopg_does() {
    let node = node("vertica-types");
    let sluice = Sluice::start(&[&node], &Setup::default());
    let out = scenario("types", &sluice, &node, &[]);
    assert!(out.contains("server protocol 196624"), "{out}");
    // Asking for load balancing: sluice declines, the client carries on.
    scenario("types", &sluice, &node, &["load_balance"]);
    assert!(
        sluice.log().contains("dialect=vertica"),
        "the session's dialect is logged"
    );
}

#[test]
fn vertica_python_over_tls_with_load_balancing() {
    let node = node("vertica-tls");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let setup = Setup {
        tail: format!("[server.tls]\ncert = {cert:?}\nkey = {key:?}\nmode = \"prefer\"\n"),
        ..Setup::default()
    };
    let sluice = Sluice::start(&[&node], &setup);
    scenario("types", &sluice, &node, &["tls"]);
    scenario("types", &sluice, &node, &["tls", "load_balance"]);
}

#[test]
fn vertica_python_prepared_statements_and_executemany() {
    let node = node("vertica-prepared");
    let sluice = Sluice::start(&[&node], &Setup::default());
    scenario("prepared", &sluice, &node, &[]);
}

#[test]
fn vertica_python_sees_sqlstates() {
    let node = node("vertica-errors");
    let sluice = Sluice::start(&[&node], &Setup::default());
    scenario("errors", &sluice, &node, &[]);
}

#[test]
fn vertica_python_autocommit_and_transactions() {
    let node = node("vertica-tx");
    let sluice = Sluice::start(&[&node], &Setup::default());
    scenario("transactions", &sluice, &node, &[]);
}

#[test]
fn vertica_python_cancels_a_running_query() {
    let node = node("vertica-cancel");
    let sluice = Sluice::start(&[&node], &Setup::default());
    scenario("cancel", &sluice, &node, &[]);
}

#[test]
fn a_scram_node_is_reached_with_the_password_a_vertica_client_gives() {
    let node = node("vertica-scram");
    node.psql(
        "postgres",
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE carol LOGIN PASSWORD 'l00king-glass'",
    )
    .unwrap();
    let hba = node.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all carol 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    node.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let setup = Setup {
        tail: format!("[server.tls]\ncert = {cert:?}\nkey = {key:?}\nmode = \"prefer\"\n"),
        ..Setup::default()
    };
    let sluice = Sluice::start(&[&node], &setup);
    let out = scenario("login", &sluice, &node, &["carol", "l00king-glass", "tls"]);
    assert!(out.contains("wrong password refused"), "{out}");
}
