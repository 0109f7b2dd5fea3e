//! Vertica clients (vertica-python, the real driver) through sluice in front
//! of PostgreSQL nodes: the translating relay of src/frontend/translate.rs.
//!
//! The scripts in tests/it/vertica/ do the talking and compare what
//! vertica-python reads with what psycopg reads straight from the node. They
//! run in the virtualenv scripts/setup.sh creates (`target/venv`); without it these tests fail and say how to make it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// The test venv's Python, with vertica-python and psycopg.
pub(crate) fn python() -> PathBuf {
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

/// client.py's command line for a scenario.
fn client_py(name: &str, sluice: &Sluice, node: &LocalCluster, extra: &[&str]) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/vertica/client.py");
    let mut command = Command::new(python());
    command
        .arg(script)
        .arg(name)
        .arg(sluice.port.to_string())
        .arg(node.port().to_string())
        .args(extra);
    command
}

/// Runs a scenario of client.py; fails the test with its output unless it
/// ends with "ok <scenario>".
fn scenario(name: &str, sluice: &Sluice, node: &LocalCluster, extra: &[&str]) -> String {
    let out = client_py(name, sluice, node, extra)
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

/// With `[pooling] idle_detach`, a translated vertica-python session gives
/// its node connection back between transactions and takes one again,
/// with its settings; its transactions and errors are unchanged.
#[test]
fn vertica_python_sessions_detach_between_transactions() {
    let node = node("vertica-detach");
    let setup = Setup {
        tail: "[pooling]\nidle_detach = \"200ms\"\n".into(),
        ..Setup::default()
    };
    let sluice = Sluice::start(&[&node], &setup);
    scenario("detach", &sluice, &node, &[]);
    assert!(
        sluice.metric("sluice_session_reattached_total").unwrap() >= 2.0,
        "the session detached and came back\n{}",
        sluice.log()
    );
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
    require_passwords(&node, &["host all carol 127.0.0.1/32 scram-sha-256"]);
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

fn with_rules(rules: &str) -> Setup {
    Setup {
        tail: format!("[admin]\nauth = \"trust\"\n\n{rules}"),
        ..Setup::default()
    }
}

#[test]
fn reject_rules_refuse_vertica_queries_simple_and_prepared() {
    let node = node("vertica-rules");
    let sluice = Sluice::start(
        &[&node],
        &with_rules(
            "[[rules]]\nname = \"no-secrets\"\ntables = [\"vp_secret\"]\naction = \"reject\"\nmessage = \"secrets stay put\"\n",
        ),
    );
    let out = scenario("rules", &sluice, &node, &["no-secrets"]);
    assert!(out.contains("session usable after refusals"), "{out}");
    let (_, metrics) = sluice.http_get("/metrics");
    assert!(
        metrics.contains("rule=\"no-secrets\""),
        "rule hits are counted: {metrics}"
    );
}

#[test]
fn a_cancel_rule_stops_an_overrunning_vertica_query() {
    let node = node("vertica-watchdog");
    let sluice = Sluice::start(
        &[&node],
        &with_rules(
            "[[rules]]\nname = \"sleepy\"\npattern = \"(?i)pg_sleep\"\naction = \"cancel\"\nmax_duration = \"300ms\"\n",
        ),
    );
    scenario("watchdog", &sluice, &node, &["sleepy"]);
}

#[test]
fn vertica_queries_show_in_statistics() {
    let node = node("vertica-stats");
    let sluice = Sluice::start(&[&node], &with_rules(""));
    scenario("statistics", &sluice, &node, &[]);
    let (status, body) = sluice.http_get("/queries?top=50&order=calls");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let queries = json["queries"].as_array().unwrap();
    let by_sample = |needle: &str| {
        queries
            .iter()
            .find(|q| q["sample"].as_str().is_some_and(|s| s.contains(needle)))
            .unwrap_or_else(|| panic!("no fingerprint for {needle:?} in {queries:#?}"))
    };
    let simple = by_sample("vp_stat_marker");
    assert_eq!(simple["sample"], "SELECT ? AS vp_stat_marker", "{simple:#}");
    assert_eq!(simple["calls"], 3, "{simple:#}");
    assert_eq!(simple["rows"], 3, "{simple:#}");
    assert_eq!(simple["top_users"][0][0], "postgres", "{simple:#}");
    let prepared = by_sample("vp_prepared_marker");
    assert_eq!(prepared["calls"], 1, "{prepared:#}");

    let fingerprint = simple["fingerprint"].as_str().unwrap().to_string();
    let shown = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let admin = connect(&format!(
            "host=127.0.0.1 port={} user=ops dbname=sluice",
            sluice.port
        ))
        .await;
        admin.simple_query("SHOW QUERIES").await.unwrap()
    });
    let found = shown.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => {
            r.get(0) == Some(fingerprint.as_str()) && r.get(1) == Some("3")
        }
        _ => false,
    });
    assert!(found, "SHOW QUERIES lists {fingerprint} with 3 calls");
}

#[test]
fn vertica_python_reads_dml_row_counts_as_from_vertica() {
    let node = node("vertica-rowcounts");
    let sluice = Sluice::start(&[&node], &Setup::default());
    scenario("row_counts", &sluice, &node, &[]);
}

#[test]
fn an_error_rolls_back_only_its_statement_as_on_vertica() {
    let node = node("vertica-statement");
    let sluice = Sluice::start(&[&node], &Setup::default());
    let out = scenario("statement_rollback", &sluice, &node, &[]);
    assert!(out.contains("statement-level rollback kept"), "{out}");
    // sluice's savepoints never show in the client's statistics.
    let (_, queries) = sluice.http_get("/queries?top=100");
    assert!(!queries.contains("sluice_statement"), "{queries}");
}

/// A translated session ended by sluice while a large result streams and
/// while a COPY runs, from the admin console (KILL CLIENT) and by the end
/// of a drain: the driver gets whole messages, then sluice's FATAL.
#[test]
fn a_vertica_session_ended_mid_result_or_mid_copy_gets_whole_messages_and_a_clear_error() {
    use std::io::{BufRead, BufReader};
    let node = node("vertica-ended");
    for what in ["result", "copy"] {
        for by_drain in [false, true] {
            let setup = Setup {
                server: if by_drain {
                    "drain_timeout = \"500ms\"".into()
                } else {
                    String::new()
                },
                tail: "[admin]\nauth = \"trust\"\n".into(),
                ..Setup::default()
            };
            let mut sluice = Sluice::start(&[&node], &setup);
            let mut child = client_py("killed", &sluice, &node, &[what])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("python runs");
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut seen = Vec::new();
            for line in lines.by_ref() {
                let line = line.unwrap();
                seen.push(line.clone());
                if line == "streaming" {
                    break;
                }
            }
            assert!(
                seen.contains(&"streaming".to_string()),
                "{seen:?}\n{}",
                sluice.log()
            );
            if by_drain {
                sluice.signal("TERM");
            } else {
                let admin = format!("host=127.0.0.1 port={} user=ops dbname=sluice", sluice.port);
                let clients = psql(&admin, &["-At", "-F", "|", "-c", "SHOW CLIENTS"]);
                let id = stdout(&clients)
                    .lines()
                    .find(|l| l.contains("vertica"))
                    .and_then(|l| l.split('|').next().map(str::to_string))
                    .unwrap_or_else(|| panic!("{}", stdout(&clients)));
                let killed = psql(&admin, &["-c", &format!("KILL CLIENT {id}")]);
                assert!(killed.status.success(), "{}", stderr(&killed));
            }
            let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
            let status = child.wait().unwrap();
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            let out = rest.join("\n");
            assert!(
                status.success(),
                "{what} (drain: {by_drain}): {out}\n{err}\n--- sluice log ---\n{}",
                sluice.log()
            );
            let why = if by_drain {
                "sluice is shutting down"
            } else {
                "an administrator closed this session"
            };
            if what == "result" {
                assert!(out.contains(why), "{what} (drain: {by_drain}): {out}");
            } else {
                // The COPY ended on the node with the session: nothing of it stays.
                let rows = node
                    .psql("postgres", "SELECT count(*) FROM vp_copy_kill")
                    .unwrap();
                assert_eq!(rows.trim(), "0");
            }
            assert!(sluice.log().contains("reason=Killed"), "{}", sluice.log());
            // The node's session ended with it, not left running the query.
            let _ = sluice.wait_exit(Duration::from_secs(10));
        }
    }
}
