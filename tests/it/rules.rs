//! Bad-query rules, fingerprints and query statistics (issue 4), through
//! sluice to real PostgreSQL nodes.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

const RULES: &str = r#"
[admin]
auth = "trust"

[[rules]]
name = "no-cartesian"
cross_join = true
action = "reject"
message = "join your tables on a key"

[[rules]]
name = "no-star-on-events"
tables = ["public.events*"]
select_star = true
action = "reject"
message = "name the columns of events"

[[rules]]
name = "no-deletes"
statement = ["delete"]
action = "reject"

[[rules]]
name = "no-terminate"
pattern = "(?i)\\bpg_terminate_backend\\b"
action = "reject"

[[rules]]
name = "other-database-only"
databases = ["elsewhere"]
select_star = true
action = "reject"

[[rules]]
name = "count-users-scans"
tables = ["users"]
no_where = true
action = "log"
"#;

async fn prepare(node: &LocalCluster) {
    let direct = connect(&node.conn_string("postgres")).await;
    direct
        .batch_execute(
            "CREATE TABLE events (id int, day date); INSERT INTO events VALUES (1, '2024-01-01'), (2, '2024-01-02');
             CREATE TABLE users (id int, name text); INSERT INTO users VALUES (1, 'a'), (2, 'b'), (3, 'c');
             CREATE TABLE a (x int); CREATE TABLE b (x int);",
        )
        .await
        .unwrap();
}

fn setup(tail: &str) -> Setup {
    Setup {
        tail: tail.to_string(),
        ..Setup::default()
    }
}

/// The error of a simple query that must fail.
async fn refused(client: &tokio_postgres::Client, sql: &str) -> tokio_postgres::Error {
    match client.simple_query(sql).await {
        Ok(_) => panic!("{sql:?} was not refused"),
        Err(e) => e,
    }
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!("{} / {}", d.message(), d.hint().unwrap_or("")))
        .unwrap_or_else(|| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reject_what_they_match_and_nothing_else() {
    let a = node("rules-reject");
    prepare(&a).await;
    let sluice = Sluice::start(&[&a], &setup(RULES));
    let client = sluice.client().await;

    for (sql, rule) in [
        ("SELECT a.x FROM a CROSS JOIN b", "no-cartesian"),
        ("SELECT a.x FROM a, b", "no-cartesian"),
        ("select a.x from A, \"b\" where a.x > 1", "no-cartesian"),
        ("SELECT * FROM events", "no-star-on-events"),
        (
            "select /* just one */ E.* from PUBLIC.\"events\" e",
            "no-star-on-events",
        ),
        (
            "WITH recent AS (SELECT * FROM events WHERE day > '2024-01-01') SELECT count(*) FROM recent",
            "no-star-on-events",
        ),
        (
            "SELECT id FROM (SELECT * FROM events) s",
            "no-star-on-events",
        ),
        ("DELETE FROM users WHERE id = 1", "no-deletes"),
        ("dElEtE /* x */ FROM users", "no-deletes"),
        ("SELECT PG_TERMINATE_BACKEND(1)", "no-terminate"),
        ("SELEC pg_terminate_backend(1)", "no-terminate"),
    ] {
        let e = refused(&client, sql).await;
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
        let text = message(&e);
        assert!(text.contains(&format!("\"{rule}\"")), "{sql}: {text}");
        assert!(
            text.contains("administrators"),
            "the hint says whom to ask: {text}"
        );
        // The session goes on.
        client.simple_query("SELECT 1").await.unwrap();
    }
    let e = refused(&client, "SELECT a.x FROM a, b").await;
    assert!(
        message(&e).contains("join your tables on a key"),
        "{}",
        message(&e)
    );

    // Not matched: other shapes, comments that only mention a function,
    // rules for another database.
    for sql in [
        "SELECT count(*) FROM events",
        "SELECT id, day FROM events",
        "SELECT a.x FROM a JOIN b ON a.x = b.x",
        "SELECT a.x FROM a, b WHERE a.x = b.x",
        "SELECT 1 /* pg_terminate_backend */",
        "SELECT * FROM users",
        "UPDATE users SET name = 'z' WHERE id = 3",
    ] {
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    // One rejected statement rejects the whole text before any of it runs.
    let e = refused(
        &client,
        "INSERT INTO users VALUES (9, 'x'); DELETE FROM users",
    )
    .await;
    assert_eq!(sqlstate(&e), "42501");
    let n = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 3, "nothing of a rejected text ran");

    // Extended protocol: the error, then the session is usable.
    let e = client
        .query("SELECT * FROM events WHERE id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    let rows = client
        .query("SELECT id FROM events WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let e = client
        .prepare("DELETE FROM users WHERE id = $1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    let rows = client.query("SELECT $1::int + 1", &[&41i32]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 42);

    // Inside a transaction: the rejection does not break it.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .simple_query("INSERT INTO a VALUES (1)")
        .await
        .unwrap();
    refused(&client, "SELECT * FROM events").await;
    client
        .simple_query("INSERT INTO a VALUES (2)")
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    let n = client
        .query_one("SELECT count(*) FROM a", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 2);

    // Hits are counted per rule; the unparsed text is counted too.
    let (_, metrics) = sluice.http_get("/metrics");
    assert!(
        metrics.contains("sluice_rule_hits_total{action=\"reject\",rule=\"no-star-on-events\"} 6")
            || metrics
                .contains("sluice_rule_hits_total{rule=\"no-star-on-events\",action=\"reject\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_parse_failures_total 1"),
        "{metrics}"
    );
    let admin = connect(&format!(
        "host=127.0.0.1 port={} user=ops dbname=sluice",
        sluice.port
    ))
    .await;
    let rules = admin.simple_query("SHOW RULES").await.unwrap();
    let rows: Vec<Vec<String>> = rules
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    let deletes = rows
        .iter()
        .find(|r| r[1] == "no-deletes")
        .expect("SHOW RULES lists every rule");
    assert_eq!(deletes[4], "4", "{rows:?}");
    let logged = rows.iter().find(|r| r[1] == "count-users-scans").unwrap();
    assert_eq!(logged[2], "log");
    assert_eq!(
        logged[4], "2",
        "SELECT * FROM users, and executing (not preparing) count(*): {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_rule_stops_an_overrunning_query() {
    let a = node("rules-cancel");
    let sluice = Sluice::start(
        &[&a],
        &setup(
            "[[rules]]\nname = \"sleepy\"\npattern = \"(?i)pg_sleep\"\naction = \"cancel\"\nmax_duration = \"700ms\"\n",
        ),
    );
    // psql shows the notice and the node's error.
    let started = Instant::now();
    let out = psql(&sluice.url("postgres"), &["-c", "SELECT pg_sleep(30)"]);
    let elapsed = started.elapsed();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(600), "took {elapsed:?}");
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    assert!(
        err.contains("sluice rule \"sleepy\" cancelled this query"),
        "{err}"
    );

    // The node shows no query still running; the session goes on.
    let client = sluice.client().await;
    let e = client
        .simple_query("SELECT pg_sleep(30)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014");
    let direct = connect(&a.conn_string("postgres")).await;
    let active = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND state = 'active' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(active.get::<_, i64>(0), 0);
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert!(!rows.is_empty());
    // Quick queries are left alone.
    client.simple_query("SELECT pg_sleep(0.05)").await.unwrap();
    let (_, metrics) = sluice.http_get("/metrics");
    assert!(metrics.contains("rule=\"sleepy\""), "{metrics}");
    // Each cancelled query counts once, as cancelled, not also as answered
    // by the node (the error-rate threshold divides by these).
    assert!(
        metrics.contains("sluice_queries_total{route=\"cancelled\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_queries_total{route=\"node\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_limit_cancels_any_query() {
    let a = node("rules-limit");
    let sluice = Sluice::start(&[&a], &setup("[limits]\nmax_query_duration = \"500ms\"\n"));
    let client = sluice.client().await;
    let e = client
        .simple_query("SELECT pg_sleep(20)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    client.simple_query("SELECT 1").await.unwrap();
}

fn find<'a>(queries: &'a [serde_json::Value], sample: &str) -> &'a serde_json::Value {
    queries
        .iter()
        .find(|q| q["sample"].as_str() == Some(sample))
        .unwrap_or_else(|| panic!("no fingerprint with sample {sample:?} in {queries:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_fold_literals_and_count_a_known_mix() {
    let a = node("rules-stats");
    prepare(&a).await;
    let sluice = Sluice::start(&[&a], &setup(RULES));
    let client = sluice.client().await;
    for id in [1, 2, 3] {
        client
            .simple_query(&format!("SELECT id, name FROM users WHERE id = {id}"))
            .await
            .unwrap();
    }
    client
        .simple_query("select ID, NAME from users /* dashboard */ where id = 99")
        .await
        .unwrap();
    client
        .query("SELECT id, name FROM users WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    client
        .simple_query("SELECT id, name FROM users WHERE id = 'x'")
        .await
        .unwrap_err();
    for _ in 0..2 {
        client
            .simple_query("SELECT id FROM users WHERE id IN (1, 2, 3)")
            .await
            .unwrap();
    }
    client
        .simple_query("SELECT id FROM users WHERE id IN (3)")
        .await
        .unwrap();
    refused(&client, "SELECT * FROM events WHERE id = 5").await;

    let (status, body) = sluice.http_get("/queries?top=50&order=calls");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let queries = json["queries"].as_array().unwrap().clone();
    let point = find(&queries, "SELECT id, name FROM users WHERE id = ?");
    assert_eq!(point["calls"], 6, "{point:#}");
    assert_eq!(point["errors"], 1, "{point:#}");
    assert_eq!(
        point["rows"], 4,
        "three rows, one miss, one by parameter: {point:#}"
    );
    assert!(point["total_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(point["top_users"][0][0], "postgres");
    let list = find(&queries, "SELECT id FROM users WHERE id IN (?, ?, ?)");
    assert_eq!(list["calls"], 3, "IN-lists of any length fold: {list:#}");
    assert_ne!(list["fingerprint"], point["fingerprint"]);
    let rejected = find(&queries, "SELECT * FROM events WHERE id = ?");
    assert_eq!(rejected["rejected"], 1);
    // Ordered by calls.
    assert_eq!(queries[0]["fingerprint"], point["fingerprint"]);

    let (status, _) = sluice.http_get("/queries?order=nonsense");
    assert_eq!(status, 400);

    // SHOW QUERIES has the same figures.
    let admin = connect(&format!(
        "host=127.0.0.1 port={} user=ops dbname=sluice",
        sluice.port
    ))
    .await;
    let shown = admin.simple_query("SHOW QUERIES").await.unwrap();
    let found = shown.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => {
            r.get(0) == point["fingerprint"].as_str() && r.get(1) == Some("6")
        }
        _ => false,
    });
    assert!(found, "SHOW QUERIES lists the fingerprint with 6 calls");

    // `sluice explain` agrees on the fingerprint and tells why a rule matches.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["explain", "--config"])
        .arg(sluice.config_path())
        .args(["--user", "postgres", "--database", "postgres"])
        .arg("select id, name from users where id = 12345")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "fingerprint: {}",
            point["fingerprint"].as_str().unwrap()
        )),
        "{text}"
    );
    assert!(text.contains("route: node"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["explain", "--config"])
        .arg(sluice.config_path())
        .arg("SELECT e.* FROM events e, users u")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rule \"no-cartesian\" (reject): MATCHES"),
        "{text}"
    );
    assert!(text.contains("cross_join = true"), "{text}");
    assert!(
        text.contains("rule \"no-star-on-events\" (reject): would match"),
        "{text}"
    );
    assert!(
        text.contains("verdict: reject by rule \"no-cartesian\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_the_active_rules() {
    let a = node("rules-reload");
    let sluice = Sluice::start(&[&a], &Setup::default());
    let client = sluice.client().await;
    client
        .simple_query("SELECT * FROM pg_class LIMIT 1")
        .await
        .unwrap();

    sluice.write_config(
        &[a.addr()],
        &setup("[[rules]]\nname = \"limit-please\"\nno_limit = true\nselect_star = true\naction = \"reject\"\n"),
    );
    sluice.signal("HUP");
    sluice.wait_for_log("rules=1", Duration::from_secs(10));
    let fresh = sluice.client().await;
    let e = refused(&fresh, "SELECT * FROM pg_class").await;
    assert!(message(&e).contains("limit-please"), "{}", message(&e));
    fresh
        .simple_query("SELECT * FROM pg_class LIMIT 1")
        .await
        .unwrap();

    // A bad rule file is refused whole; the rules in force stay.
    std::fs::write(
        sluice.config_path(),
        std::fs::read_to_string(sluice.config_path())
            .unwrap()
            .replace("no_limit = true", "pattern = \"(\""),
    )
    .unwrap();
    sluice.signal("HUP");
    sluice.wait_for_log("not a valid regular expression", Duration::from_secs(10));
    let third = sluice.client().await;
    refused(&third, "SELECT * FROM pg_class").await;
}

/// A driver pipelining a prepare up to Flush and then a batch a rule
/// rejects: sluice's rejection reaches the client after the node's answers
/// to the prepare, just ahead of the Sync's ReadyForQuery, in protocol order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_after_a_flush_follows_the_nodes_answers() {
    let node = node("rules-after-flush");
    prepare(&node).await;
    let sluice = Sluice::start(&[&node], &setup(RULES));
    let port = sluice.port;
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut session = RawSession::open(port);
        fn message(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut m = vec![tag];
            m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            m.extend_from_slice(body);
            m
        }
        let parse = |name: &str, sql: &str| {
            let mut b = Vec::new();
            b.extend_from_slice(name.as_bytes());
            b.push(0);
            b.extend_from_slice(sql.as_bytes());
            b.push(0);
            b.extend_from_slice(&0i16.to_be_bytes());
            message(b'P', &b)
        };
        let mut write = Vec::new();
        write.extend(parse("s1", "SELECT 1"));
        write.extend(message(b'D', b"Ss1\0"));
        write.extend(message(b'H', b""));
        // In the same write: a batch a rule rejects (a delete).
        write.extend(parse("s2", "DELETE FROM users"));
        write.extend(message(b'B', b"\0s2\0\0\0\0\0\0\0"));
        write.extend(message(b'E', b"\0\0\0\0\0"));
        write.extend(message(b'S', b""));
        session.tcp.write_all(&write).unwrap();
        let mut tags = Vec::new();
        loop {
            let (tag, _) = session.read_message();
            tags.push(tag);
            if tag == b'Z' {
                break;
            }
        }
        assert_eq!(tags, b"1tTEZ", "{:?}", String::from_utf8_lossy(&tags));
        // The session goes on.
        session.send_query("SELECT 1");
        assert_eq!(session.finish_query(), None);
    })
    .await
    .unwrap();
    let users = connect(&node.conn_string("postgres"))
        .await
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(users, 3, "the rejected delete never ran");
}
