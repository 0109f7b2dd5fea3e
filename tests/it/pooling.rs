//! Idle sessions give their node connection back (`[pooling] idle_detach`)
//! and take one again for their next query, with what they had set; the
//! cap on node connections (`max_node_connections`) and the wait for one;
//! clients authenticated by sluice (`[auth] mode = "auth_query"`), so that
//! it can log in again for them.

use std::time::Duration;

use crate::support::*;

fn pooling(keys: &str) -> Setup {
    Setup {
        warehouse: "idle_connections = 100".into(),
        tail: format!("[pooling]\n{keys}\n"),
        ..Setup::default()
    }
}

/// Sessions through sluice as the node counts them (all but this one).
async fn node_sessions(node: &tokio_postgres::Client) -> i64 {
    node.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
         AND application_name NOT LIKE 'sluice %'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// A connection string for user postgres as application `app`.
fn app_url(sluice: &Sluice, app: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres application_name={app}",
        sluice.port
    )
}

/// Columns of an admin console command's rows (`[admin] auth = "trust"`).
async fn admin_rows(sluice: &Sluice, command: &str, columns: &[&str]) -> Vec<Vec<String>> {
    let admin = connect(&format!(
        "host=127.0.0.1 port={} user=ops dbname=sluice",
        sluice.port
    ))
    .await;
    admin
        .simple_query(command)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                columns
                    .iter()
                    .map(|c| r.get(*c).unwrap_or_default().to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Waits until sluice's gauge of detached sessions reads `n`.
fn wait_detached(sluice: &Sluice, n: f64) {
    for _ in 0..100 {
        if sluice.metric("sluice_detached_sessions") == Some(n) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "sluice_detached_sessions never read {n} (now {:?})",
        sluice.metric("sluice_detached_sessions")
    );
}

/// The test process and sluice hold two sockets per client.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    assert!(
        limit.rlim_max >= 4096,
        "this test needs 4096 open files (ulimit -Hn is {})",
        limit.rlim_max
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_clients_share_a_node_that_admits_a_hundred() {
    raise_open_files();
    let mut opts = sluice::localpg::ClusterOptions::new(cache_dir()).with_name("pool-1000");
    opts.extra_conf
        .push(("max_connections".into(), "100".into()));
    let node = node_with(opts);
    let sluice = Sluice::start(
        &[&node],
        &pooling("idle_detach = \"300ms\"\nmax_node_connections = 90\nwait_timeout = \"20s\""),
    );
    let url = sluice.url("postgres");
    let direct = connect(&node.conn_string("postgres")).await;

    let mut opening = Vec::new();
    let clients_n: usize = std::env::var("POOL_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for _ in 0..clients_n {
        let url = url.clone();
        opening.push(tokio::spawn(async move { try_connect(&url).await }));
    }
    let mut clients = Vec::new();
    for o in opening {
        clients.push(std::sync::Arc::new(
            o.await.unwrap().expect("every client is let in"),
        ));
    }
    wait_detached(&sluice, clients_n as f64);
    let idle = node_sessions(&direct).await;
    assert!(idle <= 90, "{idle} node sessions for 1000 idle clients");

    let mut running = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        running.push(tokio::spawn(async move {
            let row = c.query_one("SELECT $1::int + 1", &[&(i as i32)]).await?;
            Ok::<i32, tokio_postgres::Error>(row.get(0))
        }));
    }
    let mut most = 0;
    for (i, r) in running.into_iter().enumerate() {
        let r = r.await.unwrap();
        if r.is_err() {
            std::fs::write("/tmp/pool.log", sluice.log()).unwrap();
        }
        assert_eq!(r.expect("every query succeeds"), i as i32 + 1);
        if i % 100 == 0 {
            most = most.max(node_sessions(&direct).await);
        }
    }
    assert!(
        most <= 90,
        "{most} node sessions at once, over the cap of 90"
    );
    assert!(sluice.metric("sluice_session_reattached_total").unwrap() >= clients_n as f64);
}

/// The session's settings, prepared statements and role survive a detach:
/// the answers are those of a session that never detached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_session_set_follows_it_to_its_next_connection() {
    let node = node("pool-state");
    node.psql("postgres", "CREATE ROLE analyst; CREATE SCHEMA sales; CREATE TABLE sales.t AS SELECT 42 AS v; GRANT USAGE ON SCHEMA sales TO analyst; GRANT SELECT ON sales.t TO analyst")
        .unwrap();
    let sluice = Sluice::start(&[&node], &pooling("idle_detach = \"200ms\""));
    let client = sluice.client().await;
    client
        .batch_execute("SET search_path = sales, public; SET application_name = 'tableau-ish'; SET work_mem = '77MB'; SET ROLE analyst")
        .await
        .unwrap();
    let statement = client.prepare("SELECT v + $1::int FROM t").await.unwrap();
    let pid_before: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    wait_detached(&sluice, 1.0);

    let row = client.query_one(&statement, &[&1i32]).await.unwrap();
    assert_eq!(
        row.get::<_, i32>(0),
        43,
        "the prepared statement, under its name"
    );
    let row = client
        .query_one(
            "SELECT current_setting('search_path'), current_setting('application_name'), current_setting('work_mem'), current_user::text, pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "sales, public");
    assert_eq!(row.get::<_, String>(1), "tableau-ish");
    assert_eq!(row.get::<_, String>(2), "77MB");
    assert_eq!(row.get::<_, String>(3), "analyst");
    let _ = pid_before;
    assert_eq!(sluice.metric("sluice_detached_sessions"), Some(0.0));
    assert!(sluice.metric("sluice_session_reattached_total").unwrap() >= 1.0);
}

/// Temporary tables, LISTEN and advisory locks cannot follow a session:
/// it keeps its connection, and its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_holding_what_cannot_be_replayed_stay_pinned() {
    let node = node("pool-pinned");
    let sluice = Sluice::start(
        &[&node],
        &pooling("idle_detach = \"200ms\"\n[admin]\nauth = \"trust\""),
    );
    let temp = sluice.client().await;
    temp.batch_execute("CREATE TEMP TABLE \"#Tableau_1\" AS SELECT 1 AS a")
        .await
        .unwrap();
    let cursor = sluice.client().await;
    cursor
        .batch_execute("DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1, 3)")
        .await
        .unwrap();
    let plain = sluice.client().await;
    plain.batch_execute("SELECT 1").await.unwrap();
    // Only the plain session detaches.
    wait_detached(&sluice, 1.0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sluice.metric("sluice_detached_sessions"), Some(1.0));
    let row = temp
        .query_one("SELECT a FROM \"#Tableau_1\"", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    let rows = cursor.query("FETCH ALL FROM c", &[]).await.unwrap();
    assert_eq!(rows.len(), 3);
    // The admin console says which sessions are pinned, and why.
    let mut pooling: Vec<String> = admin_rows(&sluice, "SHOW CLIENTS", &["pooling"])
        .await
        .concat();
    pooling.sort();
    assert_eq!(
        pooling,
        [
            "detached",
            "pinned (open cursor c)",
            "pinned (temporary objects)"
        ]
    );
    let detached = admin_rows(&sluice, "SHOW POOLS", &["detached_sessions"])
        .await
        .concat();
    assert_eq!(detached, ["1"]);
    // With the temporary table gone, that session may detach too.
    temp.batch_execute("DROP TABLE \"#Tableau_1\"")
        .await
        .unwrap();
    plain.batch_execute("SELECT 1").await.unwrap();
    wait_detached(&sluice, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_session_stays_pinned_and_gets_its_notifications() {
    use futures_util::StreamExt;
    let node = node("pool-listen");
    let sluice = Sluice::start(&[&node], &pooling("idle_detach = \"200ms\""));
    let (client, mut connection) =
        tokio_postgres::connect(&sluice.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(stream.for_each(move |m| {
        if let Ok(tokio_postgres::AsyncMessage::Notification(n)) = m {
            let _ = tx.send(n.payload().to_string());
        }
        futures_util::future::ready(())
    }));
    client.batch_execute("LISTEN reports").await.unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(sluice.metric("sluice_detached_sessions"), Some(0.0));
    let other = connect(&node.conn_string("postgres")).await;
    other
        .batch_execute("NOTIFY reports, 'ready'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some("ready"));
}

/// At the cap, a session waits for a connection, then is told why not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_session_waits_then_gets_53300() {
    let node = node("pool-cap");
    let sluice = Sluice::start(
        &[&node],
        &pooling("max_node_connections = 1\nwait_timeout = \"300ms\""),
    );
    let first = sluice.client().await;
    first.batch_execute("SELECT 1").await.unwrap();
    let Err(err) = try_connect(&sluice.url("postgres")).await else {
        panic!("refused at the cap");
    };
    assert_eq!(sqlstate(&err), "53300", "{err}");
    assert!(
        format!("{err:?}").contains("max_node_connections"),
        "{err:?}"
    );
    // When the first leaves, its slot is free again.
    drop(first);
    let mut ok = false;
    for _ in 0..20 {
        if try_connect(&sluice.url("postgres")).await.is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "the freed slot is taken again");
}

/// `auth_query`: sluice checks passwords against the warehouse's secrets,
/// SCRAM and MD5, and logs in again for the client after a detach without
/// knowing the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_users_log_in_through_sluice_and_again_after_a_detach() {
    let node = node("pool-auth");
    node.psql(
        "postgres",
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE alice LOGIN PASSWORD 'wonderland-7'; \
         SET password_encryption = 'md5'; CREATE ROLE bob LOGIN PASSWORD 'builder-9'",
    )
    .unwrap();
    require_passwords(
        &node,
        &[
            "host all alice 127.0.0.1/32 scram-sha-256",
            "host all bob 127.0.0.1/32 md5",
        ],
    );
    // No kept connections: every re-attach is a new login on the node.
    let setup = Setup {
        warehouse: "idle_connections = 0".into(),
        tail: "[auth]\nmode = \"auth_query\"\n[pooling]\nidle_detach = \"200ms\"\n".into(),
        ..Setup::default()
    };
    let sluice = Sluice::start(&[&node], &setup);
    let url = |user: &str, password: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=postgres",
            sluice.port
        )
    };
    for (user, password) in [("alice", "wonderland-7"), ("bob", "builder-9")] {
        let client = try_connect(&url(user, password))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e:?}"));
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        wait_detached(&sluice, 1.0);
        let row = client
            .query_one("SELECT current_user::text, pg_backend_pid()", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), user);
        assert_ne!(
            row.get::<_, i32>(1),
            pid,
            "{user}: a new node login after the detach"
        );
        drop(client);
        wait_detached(&sluice, 0.0);
    }
    for (user, password) in [
        ("alice", "wrong"),
        ("bob", "wrong"),
        ("nobody", "wonderland-7"),
    ] {
        let Err(err) = try_connect(&url(user, password)).await else {
            panic!("refused");
        };
        assert_eq!(sqlstate(&err), "28P01", "{user}: {err:?}");
        assert_eq!(
            err.as_db_error().unwrap().message(),
            format!("password authentication failed for user \"{user}\""),
            "the node's own words"
        );
    }
    let log = sluice.log();
    for secret in ["wonderland-7", "builder-9", "SCRAM-SHA-256$"] {
        assert!(!log.contains(secret), "the log shows {secret:?}");
    }
}

/// Once a node greeted a startup packet, the next session with it starts
/// without a node, and takes one only for a query that needs it; its
/// cancel key reaches the query on whichever node connection it has then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_starts_without_a_node_and_its_cancel_key_follows_it() {
    let node = node("pool-greet");
    let setup = Setup {
        warehouse: "idle_connections = 0".into(),
        ..pooling("idle_detach = \"200ms\"")
    };
    let sluice = Sluice::start(&[&node], &setup);
    let direct = connect(&node.conn_string("postgres")).await;
    let first = sluice.client().await;
    first.batch_execute("SELECT 1").await.unwrap();
    wait_detached(&sluice, 1.0);
    drop(first);
    wait_detached(&sluice, 0.0);

    let client = sluice.client().await;
    assert_eq!(
        sluice.metric("sluice_detached_sessions"),
        Some(1.0),
        "started detached"
    );
    assert_eq!(
        node_sessions(&direct).await,
        0,
        "no node session for an idle client"
    );
    // A cancel now finds nothing to cancel, and harms nothing.
    client
        .cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .unwrap();
    let token = client.cancel_token();
    let sleeping = tokio::spawn(async move { client.batch_execute("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), sleeping)
        .await
        .expect("the cancel reached the node")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
}

fn transaction_pooling(applications: &str, keys: &str) -> Setup {
    Setup {
        warehouse: "idle_connections = 100".into(),
        tail: format!(
            "[pooling]\n{keys}\n[[pooling.transaction]]\napplications = [{applications}]\n"
        ),
        ..Setup::default()
    }
}

/// pgbench with prepared statements, pooled per transaction: 16 clients
/// on 4 node connections, every transaction succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_runs_pooled_per_transaction() {
    let node = node("pool-pgbench");
    let bindir = node.bindir().to_path_buf();
    let init = std::process::Command::new(bindir.join("pgbench"))
        .args([
            "-i",
            "-s",
            "1",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &node.port().to_string(),
            "-U",
            "postgres",
            "postgres",
        ])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    let sluice = Sluice::start(
        &[&node],
        &transaction_pooling(
            "\"pgbench\"",
            "max_node_connections = 4\nwait_timeout = \"30s\"",
        ),
    );
    let direct = connect(&node.conn_string("postgres")).await;
    // pgbench through sluice as application "pgbench", with `args`.
    let pgbench = |args: &[&str]| {
        let mut cmd = std::process::Command::new(bindir.join("pgbench"));
        cmd.args(args)
            .args([
                "-T",
                "3",
                "-h",
                "127.0.0.1",
                "-p",
                &sluice.port.to_string(),
                "-U",
                "postgres",
                "postgres",
            ])
            .env("PGAPPNAME", "pgbench")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let run = pgbench(&["-M", "prepared", "-S", "-c", "16", "-j", "2"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = node_sessions(&direct).await;
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "pgbench failed");
    assert!(
        during <= 4,
        "{during} node sessions for 16 clients capped at 4"
    );
    assert!(
        sluice.metric("sluice_session_reattached_total").unwrap() > 100.0,
        "sessions moved between connections per transaction"
    );
    // TPC-B: multi-statement transactions, row locks, waits for a
    // connection. One thread per client: pgbench prepares a script's
    // statements with a blocking call, which would stall the other
    // clients of its thread while they hold connections in transactions
    // (with any transaction pooler).
    let child = pgbench(&["-M", "prepared", "-c", "16", "-j", "16"]);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pgbench TPC-B failed: {}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("number of failed transactions: 0"),
        "{}",
        stdout(&out)
    );
}

/// Two clients pooled per transaction on one node connection: statements
/// of the same name do not collide, a client's SET follows it and does
/// not reach the other, a transaction stays on its connection, and SQL
/// PREPARE pins the session that uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_pooled_per_transaction_keep_their_own_statements_and_settings() {
    let node = node("pool-tx");
    let sluice = Sluice::start(
        &[&node],
        &transaction_pooling(
            "\"etl*\"",
            "max_node_connections = 1\nwait_timeout = \"10s\"",
        ),
    );
    let url = |app: &str| app_url(&sluice, app);
    let a = connect(&url("etl-a")).await;
    let b = connect(&url("etl-b")).await;
    // tokio-postgres names both clients' first statement s0.
    let sa = a.prepare("SELECT 'a:' || $1::text").await.unwrap();
    let sb = b.prepare("SELECT 'b:' || $1::text").await.unwrap();
    a.batch_execute("SET application_name = 'etl-a-renamed'")
        .await
        .unwrap();
    for i in 0..5 {
        let x = i.to_string();
        let ra: String = a.query_one(&sa, &[&x]).await.unwrap().get(0);
        let rb: String = b.query_one(&sb, &[&x]).await.unwrap().get(0);
        assert_eq!((ra, rb), (format!("a:{i}"), format!("b:{i}")));
        let name_a: String = a
            .query_one("SELECT current_setting('application_name')", &[])
            .await
            .unwrap()
            .get(0);
        let name_b: String = b
            .query_one("SELECT current_setting('application_name')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            (name_a.as_str(), name_b.as_str()),
            ("etl-a-renamed", "etl-b")
        );
    }
    // A transaction holds its connection: b waits until a commits.
    a.batch_execute("BEGIN; CREATE TABLE held (v int); INSERT INTO held VALUES (1)")
        .await
        .unwrap();
    let b_sees = tokio::spawn(async move {
        let n: i64 = b
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'held'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b_sees.is_finished(), "b must wait for the only connection");
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(b_sees.await.unwrap(), 1);
    // SQL PREPARE cannot move between connections: the session is pinned.
    let c = connect(&url("etl-c")).await;
    drop(a);
    c.batch_execute("PREPARE p AS SELECT 41 + 1").await.unwrap();
    let r: i32 = c.query_one("EXECUTE p", &[]).await.unwrap().get(0);
    assert_eq!(r, 42);
}

/// Real drivers' server-side prepared statements and settings survive a
/// detach: PgJDBC with prepareThreshold=1, psycopg with prepare=True. Each
/// prints the same results before and after the pause that detached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_and_psycopg_prepared_statements_survive_a_detach() {
    let node = node("pool-drivers");
    node.psql(
        "postgres",
        "CREATE SCHEMA pool_clients; CREATE TABLE pool_clients.t AS SELECT 7 AS v",
    )
    .unwrap();
    let sluice = Sluice::start(&[&node], &pooling("idle_detach = \"200ms\""));
    let expected = "round 0: 7\nround 0: 14\nround 0: 21\nround 1: 7\nround 1: 14\nround 1: 21\n";

    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        std::path::Path::new(jar).exists(),
        "PgJDBC is missing: apt-get install -y libpostgresql-jdbc-java (scripts/setup.sh does it)"
    );
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/clients/Detach.java");
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/postgres?sslmode=disable&prepareThreshold=1",
        sluice.port
    );
    let out = std::process::Command::new("java")
        .args(["-cp", jar, source, &url, "1000"])
        .output()
        .expect("java runs (apt-get install -y default-jdk-headless)");
    assert!(out.status.success(), "PgJDBC: {}", stderr(&out));
    assert_eq!(stdout(&out), expected, "PgJDBC");
    let after_jdbc = sluice.metric("sluice_session_reattached_total").unwrap();
    assert!(
        after_jdbc >= 1.0,
        "the PgJDBC session detached and came back"
    );

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/clients/detach_psycopg.py"
    );
    let out = std::process::Command::new(crate::vertica::python())
        .args([script, &sluice.port.to_string(), "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "psycopg: {}", stderr(&out));
    assert_eq!(stdout(&out), expected, "psycopg");
    assert!(
        sluice.metric("sluice_session_reattached_total").unwrap() > after_jdbc,
        "the psycopg session detached and came back"
    );
}

/// `[auth] mode = "cleartext"`: a TLS client's password is checked by a
/// node login and used again for the session's next login, after a detach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_passwords_over_tls_log_in_again_after_a_detach() {
    let node = node("pool-cleartext");
    node.psql(
        "postgres",
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE carol LOGIN PASSWORD 'ldap-ish-3'",
    )
    .unwrap();
    require_passwords(&node, &["host all carol 127.0.0.1/32 scram-sha-256"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let setup = Setup {
        warehouse: "idle_connections = 0".into(),
        tail: format!(
            "[server.tls]\ncert = {cert:?}\nkey = {key:?}\nmode = \"prefer\"\n[auth]\nmode = \"cleartext\"\n[pooling]\nidle_detach = \"200ms\"\n"
        ),
        ..Setup::default()
    };
    let sluice = Sluice::start(&[&node], &setup);
    let url = |password: &str| {
        format!(
            "host=127.0.0.1 port={} user=carol password={password} dbname=postgres sslmode=require",
            sluice.port
        )
    };
    let out = psql(
        &url("ldap-ish-3"),
        &[
            "-At",
            "-c",
            "SELECT pg_backend_pid()",
            "-c",
            "\\! sleep 1",
            "-c",
            "SELECT pg_backend_pid(), current_user",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let (pid, rest) = lines[1].split_once('|').unwrap();
    assert_ne!(lines[0], pid, "a new node login after the detach");
    assert_eq!(rest, "carol");
    let out = psql(&url("wrong"), &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("password authentication failed for user \"carol\""),
        "{}",
        stderr(&out)
    );
    assert!(
        !sluice.log().contains("ldap-ish-3"),
        "the password is in the log"
    );
}

/// A Tableau-like ODBC session (psqlODBC): its temporary table and WITH
/// HOLD cursor pin it, and it reads them whole across pauses longer than
/// `idle_detach`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tableau_like_odbc_session_keeps_its_temp_table_and_cursor() {
    let node = node("pool-odbc");
    let sluice = Sluice::start(&[&node], &pooling("idle_detach = \"200ms\""));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/clients/tableau_odbc.py"
    );
    let out = std::process::Command::new(crate::vertica::python())
        .args([script, &sluice.port.to_string(), "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psqlODBC (apt-get install -y odbc-postgresql unixodbc; scripts/setup.sh does it): {}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&out),
        "fetched [1, 2, 3]\ntemp table (100, 5050)\nfetched [4, 5]\n"
    );
}

/// A rule's watchdog cancels a query on whichever node connection the
/// session has when it runs, and statistics count it, across detaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_cancel_budget_holds_after_a_reattach() {
    let node = node("pool-rules");
    let mut setup = pooling("idle_detach = \"200ms\"");
    setup.tail.push_str(
        "[[rules]]\nname = \"sleepy\"\npattern = \"(?i)pg_sleep\"\naction = \"cancel\"\nmax_duration = \"700ms\"\n",
    );
    let sluice = Sluice::start(&[&node], &setup);
    let client = sluice.client().await;
    client.batch_execute("SELECT 1").await.unwrap();
    wait_detached(&sluice, 1.0);
    let started = std::time::Instant::now();
    let err = client
        .batch_execute("SELECT pg_sleep(10)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancelled at its budget"
    );
    wait_detached(&sluice, 1.0);
    let row = client.query_one("SELECT 40 + 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

/// A client that stops reading in the middle of a large answer keeps its
/// node connection (sluice reads the node only as fast as the client
/// reads), and gets the whole answer. That an answer read from the node
/// but not yet written holds a detach back too is pinned by the unit test
/// `quiet_waits_for_the_answer_to_be_written_and_the_transaction_to_end`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_its_whole_answer_before_any_detach() {
    let node = node("pool-slow");
    let sluice = Sluice::start(&[&node], &pooling("idle_detach = \"100ms\""));
    let mut raw = RawSession::open(sluice.port);
    // About 8 MB: far more than the sockets between them hold.
    raw.send_query("SELECT repeat('x', 400) FROM generate_series(1, 20000)");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sluice.metric("sluice_detached_sessions"),
        Some(0.0),
        "detached while the client had not read its answer"
    );
    let mut rows = 0;
    loop {
        let (tag, _) = raw.read_message();
        match tag {
            b'D' => rows += 1,
            b'Z' => break,
            _ => {}
        }
    }
    assert_eq!(rows, 20000);
    wait_detached(&sluice, 1.0);
    raw.send_query("SELECT 1");
    assert_eq!(raw.finish_query(), None);
}

/// A session waiting for a connection under the cap is ended by KILL
/// CLIENT at once, not at the end of `wait_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_ends_a_wait_for_a_connection() {
    let node = node("pool-kill");
    let sluice = Sluice::start(
        &[&node],
        &pooling(
            "idle_detach = \"200ms\"\nmax_node_connections = 1\nwait_timeout = \"60s\"\n[admin]\nauth = \"trust\"",
        ),
    );
    let url = |app: &str| app_url(&sluice, app);
    let waiter = connect(&url("waiter")).await;
    waiter.batch_execute("SELECT 1").await.unwrap();
    wait_detached(&sluice, 1.0);
    let holder = connect(&url("holder")).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let waiting = tokio::spawn(async move { waiter.batch_execute("SELECT 2").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the only connection is in a transaction"
    );
    let clients = admin_rows(&sluice, "SHOW CLIENTS", &["id", "application"]).await;
    let waiter = clients
        .iter()
        .find(|c| c[1] == "waiter")
        .expect("the waiting session is listed");
    admin_rows(&sluice, &format!("KILL CLIENT {}", waiter[0]), &[]).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the wait ended at once")
        .unwrap();
    assert!(ended.is_err());
    holder.batch_execute("COMMIT").await.unwrap();
}
