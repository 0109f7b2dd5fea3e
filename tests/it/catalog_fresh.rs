//! A catalog copy that is never stale: DDL through sluice is visible to
//! every session at once, DDL made straight on the warehouse within the
//! change probe's period plus a refresh, and the managed copy runs,
//! restarts and stops with sluice.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::catalog::{Jdbc, Offload, SCHEMA, catalog_statements, comparable_metadata};
use crate::support::*;

fn describe(url: &str, command: &str) -> String {
    let out = psql(url, &["-c", command]);
    assert!(out.status.success(), "{command}: {}", stderr(&out));
    stdout(&out)
}

/// Through one session, each DDL; at once, from other sessions, psql's
/// `\d` and PgJDBC's DatabaseMetaData see it exactly as the node does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_through_sluice_is_visible_to_every_session_at_once() {
    let o = Offload::start_with(
        "fresh-rw",
        "probe_interval = \"0s\"\n[admin]\nauth = \"scram\"\n[[admin.users]]\nname = \"ops\"\npassword = \"ops-pw\"",
    );
    let via = o.sluice.url("postgres");
    let direct = o.nodes[0].conn_string("postgres");
    let steps: &[(&str, &[&str])] = &[
        (
            "CREATE TABLE shop.fresh_one (id int)",
            &["\\dt shop.*", "\\d shop.fresh_one"],
        ),
        (
            "ALTER TABLE shop.orders ADD COLUMN note text",
            &["\\d shop.orders", "\\d+ shop.big_orders"],
        ),
        (
            "COMMENT ON TABLE shop.fresh_one IS 'made through sluice'",
            &["\\dt+ shop.fresh_one"],
        ),
        (
            "CREATE VIEW shop.fresh_view AS SELECT id FROM shop.fresh_one",
            &["\\dv shop.*", "\\d shop.fresh_view"],
        ),
        (
            "GRANT SELECT ON shop.fresh_one TO analyst",
            &["\\dp shop.fresh_one"],
        ),
        ("DROP VIEW shop.fresh_view", &["\\dv shop.*"]),
        (
            "CREATE TABLE shop.doomed (id int REFERENCES shop.customers)",
            &["\\dt shop.*", "\\d shop.customers"],
        ),
        (
            "DROP TABLE shop.doomed",
            &["\\dt shop.*", "\\d shop.customers"],
        ),
    ];
    let writer = o.sluice.client().await;
    let reader = o.sluice.client().await;
    let jdbc = Jdbc::compile();
    for (ddl, checks) in steps {
        writer.batch_execute(ddl).await.unwrap();
        // The warehouse's other node follows, as a real cluster would.
        o.nodes[1].psql("postgres", ddl).unwrap();
        for command in *checks {
            assert_eq!(
                describe(&via, command),
                describe(&direct, command),
                "after {ddl:?}, {command} through sluice differs from direct"
            );
        }
        let tables: i64 = reader
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'shop' AND c.relname = 'fresh_one'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(tables, 1, "after {ddl:?} another session lost fresh_one");
        // DBeaver's DatabaseMetaData (getTables, getColumns, ...) too.
        let direct_md = comparable_metadata(&jdbc.metadata(o.nodes[0].port()));
        let through = jdbc.metadata(o.sluice.port);
        assert_eq!(
            comparable_metadata(&through),
            direct_md,
            "after {ddl:?}, DatabaseMetaData through sluice differs from direct"
        );
        // And once the copy answers again (refreshed), from the copy.
        o.sluice
            .wait_catalog_current("postgres", Duration::from_secs(30));
        for command in *checks {
            assert_eq!(
                describe(&via, command),
                describe(&direct, command),
                "after {ddl:?} and a refresh, {command} from the copy differs from direct"
            );
        }
        assert_eq!(
            comparable_metadata(&jdbc.metadata(o.sluice.port)),
            direct_md,
            "after {ddl:?} and a refresh, DatabaseMetaData from the copy differs from direct"
        );
    }
    for node in &o.nodes {
        node.psql(
            "postgres",
            "INSERT INTO shop.orders VALUES (2, 1, 'new', 5)",
        )
        .unwrap();
    }
    let (direct_md, through_md) = (
        jdbc.metadata(o.nodes[0].port()),
        jdbc.metadata(o.sluice.port),
    );
    assert_eq!(
        comparable_metadata(&through_md),
        comparable_metadata(&direct_md),
        "DatabaseMetaData through sluice differs from direct after the DDL"
    );
    assert!(
        through_md.contains("columns: orders note text"),
        "{through_md}"
    );
    assert!(
        through_md.contains("tables: fresh_one TABLE made through sluice"),
        "{through_md}"
    );

    // Once refreshed, the copy answers again: nothing reaches the nodes.
    o.sluice
        .wait_catalog_current("postgres", Duration::from_secs(30));
    let expected = describe(&direct, "\\d shop.orders");
    let marks = o.log_marks();
    assert_eq!(describe(&via, "\\d shop.orders"), expected);
    let leaked = o.statements_since(&marks);
    assert!(
        catalog_statements(&leaked).is_empty(),
        "lookups reached a node after the refresh:\n{}",
        catalog_statements(&leaked).join("\n")
    );
    // The refreshes copied the changed relations, not the database.
    let (_, metrics) = o.sluice.http_get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_catalog_refreshes_total")
                && l.contains("kind=\"incremental\"")
                && l.contains("result=\"ok\"")),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_catalog_stale{database=\"postgres\"} 0"),
        "{metrics}"
    );
    // SHOW CATALOG on the admin console tells the same.
    let console = psql(
        &format!(
            "host=127.0.0.1 port={} user=ops password=ops-pw dbname=sluice",
            o.sluice.port
        ),
        &["-c", "SHOW CATALOG"],
    );
    let shown = format!("{}{}", stdout(&console), stderr(&console));
    assert!(
        shown.contains("postgres") && shown.contains("current"),
        "{shown}"
    );
}

/// DDL made straight on the warehouse: seen within the probe's period plus
/// the refresh, and no lookup goes back to the old answer once it saw the
/// new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_made_on_the_warehouse_is_seen_within_the_probe_interval() {
    let o = Offload::start_with("fresh-probe", "probe_interval = \"1s\"");
    let client = o.sluice.client().await;
    let count = "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'made_elsewhere'";
    assert_eq!(
        client.query_one(count, &[]).await.unwrap().get::<_, i64>(0),
        0
    );
    for node in &o.nodes {
        node.psql(
            "postgres",
            "CREATE TABLE shop.made_elsewhere (id int PRIMARY KEY, at timestamptz); \
             COMMENT ON COLUMN shop.made_elsewhere.at IS 'by an ETL job'",
        )
        .unwrap();
    }
    let made = Instant::now();
    let mut seen_at = None;
    while made.elapsed() < Duration::from_secs(15) {
        let n: i64 = client.query_one(count, &[]).await.unwrap().get(0);
        match (n, seen_at) {
            (1, None) => seen_at = Some(made.elapsed()),
            (0, Some(_)) => panic!("a lookup went back to the old catalog"),
            _ => {}
        }
        if seen_at.is_some_and(|t| made.elapsed() > t + Duration::from_secs(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen_at = seen_at.expect("the table made on the warehouse never showed through sluice");
    assert!(
        seen_at < Duration::from_secs(1 + 5),
        "seen after {seen_at:?}, more than the probe interval + 5 s"
    );
    o.sluice
        .wait_catalog_current("postgres", Duration::from_secs(30));
    let direct = o.nodes[0].conn_string("postgres");
    let via = o.sluice.url("postgres");
    let expected = describe(&direct, "\\d+ shop.made_elsewhere");
    let marks = o.log_marks();
    assert_eq!(describe(&via, "\\d+ shop.made_elsewhere"), expected);
    assert!(catalog_statements(&o.statements_since(&marks)).is_empty());
    // A dropped table goes too.
    for node in &o.nodes {
        node.psql("postgres", "DROP TABLE shop.made_elsewhere")
            .unwrap();
    }
    let dropped = Instant::now();
    loop {
        let n: i64 = client.query_one(count, &[]).await.unwrap().get(0);
        if n == 0 {
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(10),
            "the dropped table still shows through sluice"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `[catalog]` without `dsn`: sluice runs the copy, answers lookups from
/// it, restarts it after a crash, and stops it when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_managed_copy_answers_restarts_and_stops_with_sluice() {
    let node_opts = |n: &str| {
        ClusterOptions::new(cache_dir())
            .with_name(format!("managed-{n}"))
            .with_statement_log()
    };
    let nodes = [node_with(node_opts("a")), node_with(node_opts("b"))];
    for n in &nodes {
        n.psql("postgres", SCHEMA).unwrap();
    }
    let catalog_dir = tempfile::Builder::new()
        .prefix("sluice-managed-")
        .tempdir()
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(catalog_dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let data_dir = catalog_dir.path().join("copy");
    let mut sluice = Sluice::start(
        &[&nodes[0], &nodes[1]],
        &Setup {
            tail: format!(
                "[catalog]\ndata_dir = {:?}\nretry_after = \"200ms\"\n",
                data_dir.display().to_string()
            ),
            ..Setup::default()
        },
    );
    sluice.wait_catalog_current("postgres", Duration::from_secs(60));
    let via = sluice.url("postgres");
    let direct = nodes[0].conn_string("postgres");
    let commands = ["\\d shop.orders", "\\dt shop.*", "\\dT shop.*"];
    let expected: Vec<String> = commands.iter().map(|c| describe(&direct, c)).collect();
    let jdbc = Jdbc::compile();
    let direct_md = jdbc.metadata(nodes[0].port());
    let marks: Vec<usize> = nodes.iter().map(|n| n.read_log().len()).collect();
    let since = |marks: &[usize]| -> String {
        nodes
            .iter()
            .zip(marks)
            .map(|(n, m)| n.read_log()[*m..].to_string())
            .collect()
    };
    for (command, expected) in commands.iter().zip(&expected) {
        assert_eq!(&describe(&via, command), expected, "{command}");
    }
    let through_md = jdbc.metadata(sluice.port);
    assert_eq!(
        comparable_metadata(&through_md),
        comparable_metadata(&direct_md)
    );
    assert!(
        through_md.contains("enum column: \"shop\".\"order_status\" = paid"),
        "{through_md}"
    );
    let leaked = since(&marks);
    assert!(
        catalog_statements(&leaked).is_empty(),
        "lookups reached a node:\n{}",
        catalog_statements(&leaked).join("\n")
    );

    // The copy's postmaster dies: lookups are answered by the node meanwhile.
    let pid = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let client = sluice.client().await;
    let q = "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'orders'";
    assert_eq!(client.query_one(q, &[]).await.unwrap().get::<_, i64>(0), 1);
    sluice.wait_for_log(
        "the managed catalog copy is running again",
        Duration::from_secs(30),
    );
    let new_pid = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
    assert_ne!(new_pid.lines().next().unwrap().trim(), pid);
    sluice.wait_catalog_current("postgres", Duration::from_secs(30));
    // Back on the copy (after the pool's rest).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let marks: Vec<usize> = nodes.iter().map(|n| n.read_log().len()).collect();
    assert_eq!(describe(&via, "\\d shop.orders"), expected[0]);
    assert!(
        catalog_statements(&since(&marks)).is_empty(),
        "{}",
        since(&marks)
    );

    // sluice stops: so does its copy.
    drop(client);
    let postmaster = new_pid.lines().next().unwrap().trim().to_string();
    sluice.signal("TERM");
    assert!(
        sluice.wait_exit(Duration::from_secs(60)).is_some(),
        "sluice did not stop"
    );
    // Exited: gone, or a zombie until the machine's init reaps it.
    let alive = std::fs::read_to_string(format!("/proc/{postmaster}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    });
    assert!(
        !alive,
        "the managed copy's postmaster {postmaster} outlived sluice"
    );
    assert!(!data_dir.join("postmaster.pid").exists());
}

/// An ordinary PostgreSQL server as the copy of a PostgreSQL warehouse
/// would answer OID-keyed lookups wrongly: refused, with what to do.
#[test]
fn an_ordinary_server_as_the_copy_of_a_postgres_warehouse_is_refused() {
    let node = node_with(ClusterOptions::new(cache_dir()).with_name("plain-node"));
    let copy = node_with(ClusterOptions::new(cache_dir()).with_name("plain-copy"));
    let dir = tempfile::tempdir().unwrap();
    let config = catalog_config(dir.path(), &node.addr(), copy.port(), "");
    refused_by_check_and_run(
        &config,
        &["ordinary PostgreSQL server", "Remove catalog.dsn", "-b"],
    );
    // `sluice check` names what it compared when all is well.
    let good = node_with(
        ClusterOptions::new(cache_dir())
            .with_name("good-copy")
            .with_server_option("-b"),
    );
    let config = catalog_config(dir.path(), &node.addr(), good.port(), "");
    let out = sluice_check(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("binary-upgrade mode; warehouse node"),
        "{}",
        stdout(&out)
    );
}
