//! Vertica's catalog in the catalog copy: `sluice catalog-sync` with
//! `catalog.dialect = "vertica"`, and vertica-python's v_catalog lookups
//! answered by the copy instead of the node.
//!
//! The "Vertica warehouse" is a PostgreSQL node holding a `v_catalog`
//! schema with Vertica-like tables (no Vertica server is available here);
//! the clients are the real vertica-python driver.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::*;

const FIXTURE: &str = r#"
CREATE SCHEMA v_catalog;
CREATE TABLE v_catalog.tables (
    table_schema_id int8, table_schema varchar(128), table_id int8,
    table_name varchar(128), owner_name text, is_temp_table bool,
    is_system_table bool, create_time timestamptz, partition_expression text);
INSERT INTO v_catalog.tables VALUES
    (1, 'public', 45035996273704980, 'orders', 'dbadmin', false, false, '2024-01-02 03:04:05+00', ''),
    (1, 'public', 45035996273704982, 'customers', 'dbadmin', false, false, '2024-01-02 03:04:06+00', NULL);
CREATE TABLE v_catalog.columns (
    table_id int8, table_schema text, table_name text, column_name text,
    data_type text, data_type_id int8, numeric_precision int8,
    ordinal_position int8, is_nullable bool, column_default text);
INSERT INTO v_catalog.columns VALUES
    (45035996273704980, 'public', 'orders', 'id', 'int', 6, NULL, 1, false, NULL),
    (45035996273704980, 'public', 'orders', 'amount', 'numeric(10,2)', 16, 10, 2, true, '0.0');
CREATE TABLE v_catalog.comments (object_id int8, object_type text, object_name text, comment text);
INSERT INTO v_catalog.comments VALUES
    (45035996273704980, 'TABLE', 'orders', E'tab\there, back\\slash, new\nline');
CREATE TABLE v_catalog.users (user_id int8, user_name text, is_super_user bool);
INSERT INTO v_catalog.users VALUES (1, 'postgres', true), (2, 'vanalyst', false);
CREATE TABLE public.orders (id int, amount numeric(10,2));
CREATE TABLE public.customers (id int, name text);
INSERT INTO public.orders VALUES (1, 9.5);
"#;

/// A fixture warehouse node, a catalog copy started normally, and sluice
/// with `catalog.dialect = "vertica"`.
struct Fixture {
    node: LocalCluster,
    copy: LocalCluster,
    sluice: Sluice,
}

impl Fixture {
    fn start(name: &str, copy_options: &[&str]) -> Fixture {
        Fixture::start_with(name, copy_options, "")
    }

    /// With extra `[catalog]` keys.
    fn start_with(name: &str, copy_options: &[&str], catalog_keys: &str) -> Fixture {
        let node = node_with(
            ClusterOptions::new(cache_dir())
                .with_name(format!("{name}-node"))
                .with_statement_log(),
        );
        node.psql("postgres", FIXTURE).unwrap();
        let mut opts = ClusterOptions::new(cache_dir()).with_name(format!("{name}-copy"));
        for o in copy_options {
            opts = opts.with_server_option(*o);
        }
        let copy = node_with(opts);
        let sluice = Sluice::start(
            &[&node],
            &Setup {
                tail: format!(
                    "[catalog]\ndsn = \"host=127.0.0.1 port={} user=postgres\"\ndialect = \"vertica\"\n{catalog_keys}\n",
                    copy.port()
                ),
                ..Setup::default()
            },
        );
        sluice.wait_catalog_current("postgres", std::time::Duration::from_secs(60));
        Fixture { node, copy, sluice }
    }

    fn sync(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["catalog-sync", "--config"])
            .arg(self.sluice.config_path())
            .env("SLUICE_LOG", "sluice=debug,info")
            .output()
            .unwrap()
    }

    fn synced(&self) -> String {
        let out = self.sync();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success(), "catalog-sync failed:\n{text}");
        text
    }

    fn on_copy(&self, sql: &str) -> String {
        let out = psql(&self.copy.conn_string("postgres"), &["-At", "-c", sql]);
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        stdout(&out)
    }

    fn python_scenario(&self, expected_tables: &str) -> String {
        let script =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/vertica/client.py");
        let python =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python");
        assert!(
            python.exists(),
            "the Vertica client tests need target/venv: run `bash scripts/setup.sh`"
        );
        let out = Command::new(python)
            .arg(script)
            .arg("catalog")
            .arg(self.sluice.port.to_string())
            .arg(self.node.port().to_string())
            .arg(expected_tables)
            .output()
            .unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            out.status.success() && stdout(&out).contains("ok catalog"),
            "scenario catalog failed:\n{text}\n--- sluice log ---\n{}",
            self.sluice.log()
        );
        text
    }
}

/// Statements in a node's log that read v_catalog.
fn v_catalog_statements(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("statement:") || l.contains("execute"))
        .filter(|l| !l.contains("sluice catalog probe"))
        .filter(|l| l.contains("v_catalog"))
        .collect()
}

#[test]
fn catalog_sync_copies_v_catalog_and_swaps_it_whole() {
    let f = Fixture::start("vcat-sync", &[]);
    let log = f.synced();
    assert!(
        log.contains("v_catalog.views is missing"),
        "a table the node lacks is skipped with a log line:\n{log}"
    );
    assert_eq!(
        f.on_copy(
            "SELECT table_name, table_id, is_temp_table, create_time AT TIME ZONE 'UTC', partition_expression IS NULL \
             FROM v_catalog.tables ORDER BY 1"
        ),
        "customers|45035996273704982|f|2024-01-02 03:04:06|t\norders|45035996273704980|f|2024-01-02 03:04:05|f\n"
    );
    // Types derived from the result's RowDescription, as Vertica would show them.
    assert_eq!(
        f.on_copy(
            "SELECT column_name || ' ' || data_type FROM information_schema.columns \
             WHERE table_schema = 'v_catalog' AND table_name = 'tables' ORDER BY ordinal_position"
        ),
        "table_schema_id bigint\ntable_schema text\ntable_id bigint\ntable_name text\nowner_name text\n\
         is_temp_table boolean\nis_system_table boolean\ncreate_time timestamp with time zone\n\
         partition_expression text\n"
    );
    assert_eq!(
        f.on_copy("SELECT comment FROM v_catalog.comments"),
        "tab\there, back\\slash, new\nline\n",
        "COPY escaping keeps tabs, backslashes and newlines"
    );
    assert_eq!(
        f.on_copy("SELECT column_default, numeric_precision FROM v_catalog.columns ORDER BY ordinal_position"),
        "|\n0.0|10\n"
    );
    assert_eq!(
        f.on_copy("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'vanalyst'"),
        "f\n",
        "v_catalog.users become NOLOGIN roles"
    );
    assert_eq!(
        f.on_copy("SELECT has_table_privilege('vanalyst', 'v_catalog.tables', 'SELECT')"),
        "t\n"
    );

    // A second sync after the warehouse changed, with readers all along:
    // each sees the old copy or the new one, never an error or a mix.
    f.node
        .psql(
            "postgres",
            "INSERT INTO v_catalog.tables VALUES (1, 'public', 45035996273704990, 'refunds', 'dbadmin', false, false, now(), NULL); \
             DROP TABLE v_catalog.comments",
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let copy_url = f.copy.conn_string("postgres");
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = connect(&copy_url).await;
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n: i64 = client
                        .query_one("SELECT count(*) FROM v_catalog.tables", &[])
                        .await
                        .expect("v_catalog.tables is readable during the swap")
                        .get(0);
                    seen.push(n);
                }
                seen
            })
        })
    };
    f.synced();
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(
        seen.iter().all(|n| *n == 2 || *n == 3),
        "readers saw {seen:?}"
    );
    assert_eq!(f.on_copy("SELECT count(*) FROM v_catalog.tables"), "3\n");
    assert_eq!(
        f.on_copy("SELECT to_regclass('v_catalog.comments') IS NULL"),
        "t\n",
        "a table gone from the warehouse is gone from the copy"
    );
}

#[test]
fn a_copy_in_binary_upgrade_mode_is_refused_with_a_clear_message() {
    let node = node_with(ClusterOptions::new(cache_dir()).with_name("vcat-binup-node"));
    let copy = node_with(
        ClusterOptions::new(cache_dir())
            .with_name("vcat-binup-copy")
            .with_server_option("-b"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = catalog_config(
        dir.path(),
        &node.addr(),
        copy.port(),
        "dialect = \"vertica\"",
    );
    // `sluice check` refuses it, and so does `sluice run`, before serving.
    refused_by_check_and_run(&config, &["binary-upgrade mode", "start it normally"]);
}

#[test]
fn vertica_python_lookups_are_answered_by_the_copy_and_data_by_the_node() {
    let mut f = Fixture::start("vcat-route", &[]);
    f.synced();
    // The node now differs from the copy: an answer with "late" came from the node.
    f.node
        .psql(
            "postgres",
            "INSERT INTO v_catalog.tables VALUES (1, 'public', 7, 'late', 'dbadmin', false, false, now(), NULL)",
        )
        .unwrap();
    let mark = f.node.read_log().len();
    f.python_scenario("customers,orders");
    let log = f.node.read_log()[mark..].to_string();
    assert!(
        v_catalog_statements(&log).is_empty(),
        "v_catalog lookups reached the node:\n{}",
        v_catalog_statements(&log).join("\n")
    );
    assert!(
        log.contains("public.orders"),
        "data queries ran on the node:\n{log}"
    );

    // The copy down: the node answers, without an error.
    f.copy.stop().unwrap();
    let mark = f.node.read_log().len();
    f.python_scenario("customers,late,orders");
    let log = f.node.read_log()[mark..].to_string();
    assert!(!v_catalog_statements(&log).is_empty(), "{log}");
}

#[test]
fn the_change_probe_sees_a_new_vertica_table_and_the_copy_follows() {
    let f = Fixture::start_with("vcat-probe", &[], "probe_interval = \"1s\"");
    let count = "SELECT count(*) FROM v_catalog.tables";
    assert_eq!(f.on_copy(count).trim(), "2");
    f.node
        .psql(
            "postgres",
            "INSERT INTO v_catalog.tables VALUES \
             (1, 'public', 45035996273704990, 'made_by_etl', 'dbadmin', false, false, now(), NULL)",
        )
        .unwrap();
    let made = std::time::Instant::now();
    while f.on_copy(count).trim() != "3" {
        assert!(
            made.elapsed() < std::time::Duration::from_secs(15),
            "the copy did not follow the warehouse:\n{}",
            f.sluice.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The probe is one statement per period, marked as sluice's own.
    let log = f.node.read_log();
    let probes = log
        .lines()
        .filter(|l| l.contains("statement: /* sluice catalog probe */ SELECT (SELECT COUNT(*)"))
        .count();
    assert!(probes >= 1, "no probe in the node's log");
}
