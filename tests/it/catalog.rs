//! Catalog offload: catalog lookups answered by the catalog copy, never by a
//! node; everything else exactly as direct.

use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

pub const SCHEMA: &str = "
CREATE ROLE analyst NOLOGIN;
CREATE SCHEMA shop;
CREATE TYPE shop.order_status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE shop.customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE shop.orders (
    id bigint PRIMARY KEY,
    customer_id int NOT NULL REFERENCES shop.customers,
    status shop.order_status NOT NULL DEFAULT 'new',
    amount numeric(10,2)
);
COMMENT ON TABLE shop.orders IS 'one row per order';
CREATE VIEW shop.big_orders AS SELECT * FROM shop.orders WHERE amount > 100;
GRANT USAGE ON SCHEMA shop TO analyst;
GRANT SELECT ON shop.customers TO analyst;
INSERT INTO shop.customers VALUES (1, 'ada');
INSERT INTO shop.orders VALUES (1, 1, 'paid', 120.50);
";

/// Two warehouse nodes with the same schema, a catalog copy in
/// binary-upgrade mode, and sluice in front, synced once.
pub struct Offload {
    pub nodes: Vec<LocalCluster>,
    pub copy: LocalCluster,
    pub sluice: Sluice,
}

impl Offload {
    pub fn start(name: &str) -> Offload {
        Offload::start_with(name, "")
    }

    /// With extra `[catalog]` keys.
    pub fn start_with(name: &str, catalog_keys: &str) -> Offload {
        let node_opts = |n: &str| {
            ClusterOptions::new(cache_dir())
                .with_name(format!("{name}-{n}"))
                .with_statement_log()
        };
        let nodes = vec![node_with(node_opts("a")), node_with(node_opts("b"))];
        for n in &nodes {
            n.psql("postgres", SCHEMA).unwrap();
        }
        let copy = node_with(
            ClusterOptions::new(cache_dir())
                .with_name(format!("{name}-copy"))
                .with_server_option("-b"),
        );
        let sluice = Sluice::start(
            &[&nodes[0], &nodes[1]],
            &Setup {
                tail: format!(
                    "[catalog]\ndsn = \"host=127.0.0.1 port={} user=postgres\"\n{catalog_keys}\n",
                    copy.port()
                ),
                ..Setup::default()
            },
        );
        // sluice copies the schema itself at start (the copy is empty).
        sluice.wait_catalog_current("postgres", std::time::Duration::from_secs(60));
        Offload {
            nodes,
            copy,
            sluice,
        }
    }

    /// A full sync by `sluice catalog-sync --full`, beside the running sluice.
    fn sync(&self) {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["catalog-sync", "--full", "--config"])
            .arg(self.sluice.config_path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "catalog-sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The nodes' statement logs from here on.
    pub fn log_marks(&self) -> Vec<usize> {
        self.nodes.iter().map(|n| n.read_log().len()).collect()
    }

    pub fn statements_since(&self, marks: &[usize]) -> String {
        self.nodes
            .iter()
            .zip(marks)
            .map(|(n, m)| n.read_log()[*m..].to_string())
            .collect()
    }
}

/// Catalog names that must not appear in a node's statement log (sluice's
/// own change probe and refresh aside).
pub fn catalog_statements(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("statement:") || l.contains("execute"))
        .filter(|l| !l.contains("sluice catalog probe"))
        .filter(|l| {
            [
                "pg_catalog",
                "information_schema",
                "pg_class",
                "pg_type",
                "pg_namespace",
                "pg_attribute",
            ]
            .iter()
            .any(|c| l.contains(c))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describe_commands_match_direct_and_never_reach_the_nodes() {
    let o = Offload::start("cat-psql");
    let via = o.sluice.url("postgres");
    let direct = o.nodes[0].conn_string("postgres");
    let commands = [
        "\\dt shop.*",
        "\\d shop.orders",
        "\\d+ shop.orders",
        "\\dT shop.*",
        "\\dv shop.*",
        "\\dn",
        "\\dp shop.customers",
    ];
    let expected: Vec<String> = commands
        .iter()
        .map(|cmd| stdout(&psql(&direct, &["-c", cmd])))
        .collect();
    let marks = o.log_marks();
    for (cmd, expected) in commands.iter().zip(&expected) {
        let through = psql(&via, &["-c", cmd]);
        assert!(through.status.success(), "{cmd}: {}", stderr(&through));
        assert_eq!(&stdout(&through), expected, "{cmd} differs through sluice");
    }
    assert!(expected[1].contains("order_status"), "{}", expected[1]);
    let leaked = o.statements_since(&marks);
    assert!(
        catalog_statements(&leaked).is_empty(),
        "catalog lookups reached a node:\n{}",
        catalog_statements(&leaked).join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_lookups_go_to_the_copy_and_data_to_the_nodes() {
    let o = Offload::start("cat-ext");
    let marks = o.log_marks();
    let client = o.sluice.client().await;
    // Prepared catalog lookups with parameters, run twice (named statements).
    let stmt = client.prepare("SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind::text = $2 ORDER BY 1").await.unwrap();
    for _ in 0..2 {
        let rows = client.query(&stmt, &[&"shop", &"r"]).await.unwrap();
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(names, ["customers", "orders"]);
    }
    let n: i64 = client.query_one("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'shop' AND table_name = 'orders'", &[]).await.unwrap().get(0);
    assert_eq!(n, 4);
    // The statement prepared on the copy is used in a batch with data: the node gets it too.
    let rows = client.query(&stmt, &[&"shop", &"v"]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(catalog_statements(&o.statements_since(&marks)).is_empty());

    // Data, mixed, temp tables, SET, transactions: the node, exactly as direct.
    let marks = o.log_marks();
    let amount: String = client
        .query_one("SELECT amount::text FROM shop.orders WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(amount, "120.50");
    let mixed: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN shop.orders o ON true WHERE c.relname = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mixed, 1);
    client
        .batch_execute("CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)")
        .await
        .unwrap();
    let x: i32 = client
        .query_one("SELECT x FROM scratch", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 1);
    client
        .batch_execute("SET search_path = shop, public")
        .await
        .unwrap();
    let name: String = client
        .query_one("SELECT name FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "ada");
    // The copy answers with the session's search path: shop.orders is visible.
    let visible: i64 = client
        .query_one("SELECT count(*) FROM pg_catalog.pg_class c WHERE c.relname = 'orders' AND pg_catalog.pg_table_is_visible(c.oid)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        visible, 1,
        "the session's search path applies to catalog lookups"
    );
    let log = o.statements_since(&marks);
    assert!(
        log.contains("JOIN shop.orders"),
        "the mixed query ran on a node:\n{log}"
    );
    assert!(log.contains("CREATE TEMP TABLE scratch"));

    // Inside a transaction that created a table, lookups see the node's uncommitted DDL.
    client
        .batch_execute("BEGIN; CREATE TABLE shop.fresh (a int)")
        .await
        .unwrap();
    let seen: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'fresh'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1, "the transaction's own DDL is visible");
    client.batch_execute("ROLLBACK").await.unwrap();
    // In a read-only transaction the copy answers, and the status stays 'in transaction'.
    client.batch_execute("BEGIN").await.unwrap();
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = 'shop'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    client
        .batch_execute("INSERT INTO shop.customers VALUES (2, 'bob'); ROLLBACK")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM shop.customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 1,
        "the rollback after a catalog lookup still rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_fall_back_to_the_node_when_the_copy_is_down() {
    let mut o = Offload::start("cat-down");
    let client = o.sluice.client().await;
    let q = "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'orders'";
    assert_eq!(client.query_one(q, &[]).await.unwrap().get::<_, i64>(0), 1);
    o.copy.stop_immediate().unwrap();
    for _ in 0..5 {
        assert_eq!(
            client.query_one(q, &[]).await.unwrap().get::<_, i64>(0),
            1,
            "answered by the node"
        );
        let fresh = o.sluice.client().await;
        assert_eq!(fresh.query_one(q, &[]).await.unwrap().get::<_, i64>(0), 1);
    }
    o.copy.start_again().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_during_twenty_syncs_never_fail_or_come_back_empty() {
    let o = Offload::start("cat-swap");
    // What a sync killed midway leaves behind: its staging database.
    o.copy
        .psql("postgres", "CREATE DATABASE sluice_staging_4194000")
        .unwrap();
    let url = o.sluice.url("postgres");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let hammer = tokio::spawn(async move {
        let client = connect(&url).await;
        let mut answers = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let rows = client
                .query("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'shop' AND c.relkind = 'r'", &[])
                .await
                .expect("a catalog lookup during a sync failed");
            assert_eq!(
                rows.len(),
                2,
                "a catalog lookup during a sync came back short"
            );
            answers += 1;
        }
        answers
    });
    for _ in 0..20 {
        let o = &o;
        tokio::task::block_in_place(|| o.sync());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = hammer.await.unwrap();
    assert!(answers > 20, "only {answers} lookups ran during the syncs");
    let left = o
        .copy
        .psql(
            "postgres",
            "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'sluice%'",
        )
        .unwrap();
    assert_eq!(left.trim(), "", "databases left in the copy by syncs");
}

/// MetaData.java (DBeaver's DatabaseMetaData calls over schema `shop`),
/// compiled once, run against any port.
pub struct Jdbc {
    /// Holds the compiled class until the tests are done with it.
    _build: tempfile::TempDir,
    classpath: String,
}

impl Jdbc {
    pub fn compile() -> Jdbc {
        let jar = jdbc_jar();
        let build = tempfile::tempdir().unwrap();
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/clients/MetaData.java"
        );
        let out = Command::new("javac")
            .arg("-d")
            .arg(build.path())
            .arg(src)
            .output()
            .expect("javac runs (apt-get install -y default-jdk-headless)");
        assert!(
            out.status.success(),
            "javac: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let classpath = format!("{}:{}", build.path().display(), jar.display());
        Jdbc {
            _build: build,
            classpath,
        }
    }

    /// What it prints through `port`.
    pub fn metadata(&self, port: u16) -> String {
        let out = Command::new("java")
            .args([
                "-cp",
                &self.classpath,
                "MetaData",
                &format!("jdbc:postgresql://127.0.0.1:{port}/postgres?sslmode=disable"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "java: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// MetaData.java's output with getTypeInfo's rows sorted: it orders by
/// type code only, and rows with equal codes come in heap order, which a
/// restored copy need not share.
pub fn comparable_metadata(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn jdbc_jar() -> PathBuf {
    let jar = PathBuf::from("/usr/share/java/postgresql.jar");
    assert!(
        jar.exists(),
        "PgJDBC is missing: apt-get install -y libpostgresql-jdbc-java (scripts/setup.sh does it)"
    );
    jar
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_database_metadata_matches_direct_without_touching_the_nodes() {
    let o = Offload::start("cat-jdbc");
    let jdbc = Jdbc::compile();
    let direct = jdbc.metadata(o.nodes[0].port());
    let marks = o.log_marks();
    let through = jdbc.metadata(o.sluice.port);
    assert_eq!(
        comparable_metadata(&through),
        comparable_metadata(&direct),
        "DatabaseMetaData through sluice differs from direct"
    );
    let not_types = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("type info:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(not_types(&through), not_types(&direct));
    assert!(
        through.contains("tables: orders TABLE one row per order"),
        "{through}"
    );
    assert!(
        through.contains("enum column: \"shop\".\"order_status\" = paid"),
        "{through}"
    );
    assert!(
        through.contains("imported keys: customers customer_id"),
        "{through}"
    );
    let leaked = o.statements_since(&marks);
    assert!(
        catalog_statements(&leaked).is_empty(),
        "catalog lookups reached a node:\n{}",
        catalog_statements(&leaked).join("\n")
    );
}

fn python() -> PathBuf {
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/venv/bin/python"
    ));
    assert!(
        venv.exists(),
        "the test venv is missing: run `bash scripts/setup.sh` (it creates target/venv with asyncpg)"
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_reads_an_enum_column_with_type_lookups_answered_by_the_copy() {
    let o = Offload::start("cat-asyncpg");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/clients/enum_asyncpg.py"
    );
    let run = |port: u16| {
        let out = Command::new(python())
            .arg(script)
            .arg(port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "asyncpg: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let direct = run(o.nodes[0].port());
    let marks = o.log_marks();
    let through = run(o.sluice.port);
    assert_eq!(through, direct);
    assert!(through.contains("order 1: paid"), "{through}");
    assert!(through.contains("type: order_status"), "{through}");
    let leaked = o.statements_since(&marks);
    assert!(
        catalog_statements(&leaked).is_empty(),
        "catalog lookups reached a node:\n{}",
        catalog_statements(&leaked).join("\n")
    );
}

/// Sends a signal to every process of a local cluster (postmaster and backends).
fn signal_cluster(cluster: &LocalCluster, signal: &str) {
    let pid = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    let _ = Command::new("pkill")
        .args([&format!("-{signal}"), "-P", &pid])
        .status();
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_catalog_copy_costs_a_lookup_at_most_the_answer_timeout() {
    let o = Offload::start_with("cat-frozen", "answer_timeout = \"500ms\"");
    let client = o.sluice.client().await;
    let q = "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'orders'";
    assert_eq!(client.query_one(q, &[]).await.unwrap().get::<_, i64>(0), 1);
    // The copy stops answering: its connection in the pool stays open.
    signal_cluster(&o.copy, "STOP");
    let started = std::time::Instant::now();
    let n: i64 = client.query_one(q, &[]).await.unwrap().get(0);
    let waited = started.elapsed();
    assert_eq!(n, 1, "the node answered instead");
    assert!(
        waited < std::time::Duration::from_secs(3),
        "the lookup waited {waited:?}"
    );
    // The pool rests: the next lookups go straight to the node.
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(client.query_one(q, &[]).await.unwrap().get::<_, i64>(0), 1);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    signal_cluster(&o.copy, "CONT");
    o.sluice.wait_for_log(
        "catalog lookups go to the nodes for now",
        std::time::Duration::from_secs(1),
    );
}
