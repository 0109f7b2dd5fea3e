//! Everything a session does passes through sluice unchanged: simple and
//! extended protocol, COPY both ways, errors, notifications, cancel.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::SimpleQueryMessage;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_protocol_and_prepared_statements() {
    let node = node("proto");
    let sluice = Sluice::start(&[&node], &Setup::default());
    let client = sluice.client().await;

    // Simple protocol, several statements in one Query.
    let messages = client
        .simple_query("CREATE TABLE t (id int primary key, name text); INSERT INTO t VALUES (1, 'a'), (2, 'b'); SELECT name FROM t ORDER BY id")
        .await
        .unwrap();
    let names: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["a", "b"]);

    // Extended protocol with binary parameters and results, unnamed and prepared.
    let row = client
        .query_one("SELECT $1::int + 1, $2::text || '!'", &[&41i32, &"hi"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");
    let stmt = client
        .prepare("SELECT name FROM t WHERE id = $1")
        .await
        .unwrap();
    for (id, name) in [(1, "a"), (2, "b"), (1, "a")] {
        let row = client.query_one(&stmt, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), name);
    }
    let n = client
        .execute("UPDATE t SET name = upper(name) WHERE id > $1", &[&0i32])
        .await
        .unwrap();
    assert_eq!(n, 2);

    // Large result: 200k rows of ~100 bytes stream through.
    let rows = client
        .query(
            "SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 200_000);
    assert_eq!(rows[199_999].get::<_, i32>(0), 200_000);

    // Notices come through.
    let out = psql(
        &sluice.url("postgres"),
        &[
            "-c",
            "DO $$ BEGIN RAISE NOTICE 'hello from the node'; END $$",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("NOTICE:  hello from the node"),
        "{}",
        stderr(&out)
    );

    // psql's extended-protocol path and \d describe commands work too.
    let out = psql(
        &sluice.url("postgres"),
        &["-At", "-c", "SELECT count(*) FROM t", "-c", "\\d t"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("2\n"), "{}", stdout(&out));
    assert!(stdout(&out).contains("name"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_of_a_million_rows_match_direct() {
    let node = node("copy");
    let sluice = Sluice::start(&[&node], &Setup::default());
    let client = sluice.client().await;
    client
        .batch_execute("CREATE TABLE big (id int, payload text)")
        .await
        .unwrap();

    // COPY IN through sluice.
    let sink = client.copy_in("COPY big FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut sent = Checksum::default();
    let mut chunk = String::new();
    for i in 1..=1_000_000u32 {
        chunk.push_str(&format!("{i}\trow-{i}\n"));
        if chunk.len() > 64 * 1024 {
            sent.update(chunk.as_bytes());
            sink.send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
        }
    }
    sent.update(chunk.as_bytes());
    sink.send(Bytes::from(chunk)).await.unwrap();
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 1_000_000);

    // COPY OUT through sluice and directly: same count, same bytes.
    async fn copy_out(client: &tokio_postgres::Client) -> (u64, Checksum) {
        let stream = client
            .copy_out("COPY (SELECT * FROM big ORDER BY id) TO STDOUT")
            .await
            .unwrap();
        futures_util::pin_mut!(stream);
        let mut sum = Checksum::default();
        let mut lines = 0;
        while let Some(chunk) = stream.try_next().await.unwrap() {
            lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            sum.update(&chunk);
        }
        (lines, sum)
    }
    let (via_lines, via_sum) = copy_out(&client).await;
    let direct = connect(&node.conn_string("postgres")).await;
    let (direct_lines, direct_sum) = copy_out(&direct).await;
    assert_eq!(via_lines, 1_000_000);
    assert_eq!(via_lines, direct_lines);
    assert_eq!(via_sum.0, direct_sum.0);
    assert_eq!(via_sum.0, sent.0, "the rows read back are the rows sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_mid_transaction_then_recovery() {
    let node = node("txerr");
    let sluice = Sluice::start(&[&node], &Setup::default());
    let client = sluice.client().await;
    client
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let err = client.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&err), "22012");
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "25P02",
        "the transaction is aborted until it ends"
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the failed transaction left nothing behind");
    // Extended protocol error, then the session goes on.
    let err = client
        .query("SELECT * FROM no_such_table", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    assert_eq!(
        client
            .query_one("SELECT 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_between_two_sessions() {
    let node = node("notify");
    let sluice = Sluice::start(&[&node], &Setup::default());
    let (listener, mut conn) =
        tokio_postgres::connect(&sluice.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener.batch_execute("LISTEN sluice_test").await.unwrap();
    let notifier = sluice.client().await;
    notifier
        .batch_execute("NOTIFY sluice_test, 'payload-1'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("notification arrives");
    assert_eq!(
        got,
        Some(("sluice_test".to_string(), "payload-1".to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_pg_sleep_returns_57014_within_a_second() {
    let node = node("cancel");
    let sluice = Sluice::start(&[&node], &Setup::default());
    let client = sluice.client().await;
    let token = client.cancel_token();
    let query =
        tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), query)
        .await
        .expect("the query ends")
        .unwrap();
    let elapsed = started.elapsed();
    let err = result.expect_err("pg_sleep(60) was cancelled");
    assert_eq!(sqlstate(&err), "57014");
    assert!(elapsed < Duration::from_secs(1), "cancel took {elapsed:?}");

    // A forged key cancels nothing.
    let client = sluice.client().await;
    let mut forged = vec![0u8; 16];
    forged[..4].copy_from_slice(&16i32.to_be_bytes());
    forged[4..8].copy_from_slice(&80877102i32.to_be_bytes());
    forged[8..].copy_from_slice(&[0, 0, 0, 1, 9, 9, 9, 9]);
    let sleeper =
        tokio::spawn(async move { client.simple_query("SELECT pg_sleep(1)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", sluice.port)).unwrap();
        s.write_all(&forged).unwrap();
    }
    sleeper
        .await
        .unwrap()
        .expect("a forged cancel key does not cancel anything");
}
