//! Hardening (issue 8): sluice keeps serving everybody else whatever one
//! client, one node or the operator does. Every loop here is bounded in
//! count and time, and all traffic stays on loopback.
//!
//! Sizes are moderate so that the whole suite stays quick on two cores;
//! `SLUICE_STORM=N` scales the malformed-connection storm and
//! `SLUICE_CLIENTS=N` the concurrent-client test (docs/reliability.md has
//! the figures of the larger runs).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift: enough randomness for garbage, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn packet(code: i32, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 8) as i32).to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(body);
    v
}

const SSL_REQUEST: i32 = 80877103;

/// One hostile connection of kind `i % 6`; returns once sluice closed it.
fn hostile_connection(port: u16, i: usize, rng: &mut Rng) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = [0u8; 256];
    let bytes = match i % 6 {
        // Random bytes, of random length.
        0 => {
            let n = 1 + (rng.next() % 600) as usize;
            rng.bytes(n)
        }
        // A truncated header: part of a length word, then nothing.
        1 => {
            let n = 1 + (rng.next() % 3) as usize;
            rng.bytes(n)
        }
        // A length of 0x7fffffff and a little of the body.
        2 => {
            let mut v = vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0];
            v.extend(rng.bytes(64));
            v
        }
        // SSLRequest, then garbage instead of a ClientHello.
        3 => {
            let mut v = packet(SSL_REQUEST, b"");
            v.extend(rng.bytes(200));
            v
        }
        // SSLRequest, then a TLS record header that promises a ClientHello
        // and delivers junk.
        4 => {
            let _ = s.write_all(&packet(SSL_REQUEST, b""));
            let _ = s.read(&mut sink[..1]);
            let mut v = vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ];
            v.extend(rng.bytes(300));
            v
        }
        // A StartupMessage cut in the middle of its parameters.
        _ => {
            let mut v = ((200i32).to_be_bytes()).to_vec();
            v.extend_from_slice(&(3i32 << 16).to_be_bytes());
            v.extend_from_slice(b"user\0postgres\0database\0post");
            v
        }
    };
    let _ = s.write_all(&bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    while let Ok(n) = s.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_malformed_connections_leave_a_querying_client_unharmed() {
    let node = node("hard-storm");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let sluice = Sluice::start(
        &[&node],
        &Setup {
            server: "startup_timeout = \"2s\"".into(),
            tail: format!("[server.tls]\ncert = {cert:?}\nkey = {key:?}\nmode = \"prefer\"\n"),
            ..Setup::default()
        },
    );
    let total = env_count("SLUICE_STORM", 5000);
    let good = sluice.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let querying = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut errors) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match good.query_one("SELECT 40 + 2", &[]).await {
                    Ok(row) if row.get::<_, i32>(0) == 42 => ok += 1,
                    Ok(_) => errors.push("wrong answer".to_string()),
                    Err(e) => errors.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, errors)
        })
    };

    let port = sluice.port;
    let storm = move |from: usize, to: usize| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 7919));
                    for i in (from + t..to).step_by(4) {
                        hostile_connection(port, i, &mut rng);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    };
    let started = Instant::now();
    // A first tenth warms allocator arenas and buffers; the rest must not grow them much.
    let warm = total / 10;
    tokio::task::spawn_blocking(move || storm(0, warm))
        .await
        .unwrap();
    let rss_warm = sluice.rss_kib();
    tokio::task::spawn_blocking(move || storm(warm, total))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let rss_end = sluice.rss_kib();
    stop.store(true, Ordering::Relaxed);
    let (ok, errors) = querying.await.unwrap();
    eprintln!(
        "malformed storm: {total} connections in {elapsed:?}; good client ran {ok} queries, \
         {} errors; sluice RSS {rss_warm} KiB after {warm}, {rss_end} KiB after {total}",
        errors.len()
    );
    assert!(errors.is_empty(), "the good client saw errors: {errors:?}");
    assert!(ok >= 3, "the good client kept querying ({ok} queries)");
    assert!(
        rss_end < rss_warm + 16 * 1024,
        "sluice's memory grew from {rss_warm} KiB to {rss_end} KiB"
    );
    // And it still serves new clients.
    let fresh = sluice.client().await;
    fresh.simple_query("SELECT 1").await.unwrap();
}

/// A TCP listener that accepts and reads, and never writes a byte.
struct BlackHole {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let mut sink = [0u8; 1024];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true).unwrap();
                    held.push(s);
                }
                for s in &mut held {
                    let _ = s.read(&mut sink);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        BlackHole { addr, stop }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_answers_trips_the_timeouts_and_the_other_node_serves() {
    let good = node("hard-blackhole");
    let hole = BlackHole::start();
    // warehouse.tls.mode = "prefer": sluice sends an SSLRequest at connect
    // and waits for its answer within connect_timeout (the black hole
    // accepts the TCP connection, so only the answer can time out).
    let sluice = Sluice::start_addrs(
        &[hole.addr.clone(), good.addr()],
        &Setup {
            warehouse: "unhealthy_after = 2\n[warehouse.tls]\nmode = \"prefer\"".into(),
            ..Setup::default()
        },
    );
    // Replace the harness's connect_timeout of 2 s by 300 ms, on reload.
    let text = std::fs::read_to_string(sluice.config_path())
        .unwrap()
        .replace("connect_timeout = \"2s\"", "connect_timeout = \"300ms\"");
    std::fs::write(sluice.config_path(), text).unwrap();
    sluice.signal("HUP");
    sluice.wait_for_log("configuration reloaded", Duration::from_secs(5));

    let mut slowest = Duration::ZERO;
    for _ in 0..6 {
        let started = Instant::now();
        let client = sluice.client().await;
        assert_eq!(node_port(&client).await, good.port());
        slowest = slowest.max(started.elapsed());
    }
    sluice.wait_for_log(
        &format!(
            "node {} did not accept the connection within 300ms",
            hole.addr
        ),
        Duration::from_secs(5),
    );
    sluice.wait_for_log("no answer within 1s", Duration::from_secs(5));
    sluice.wait_for_log("is out of rotation", Duration::from_secs(5));
    // Out of rotation, the black hole costs new sessions nothing.
    let started = Instant::now();
    for _ in 0..4 {
        let client = sluice.client().await;
        client.simple_query("SELECT 1").await.unwrap();
    }
    let after = started.elapsed() / 4;
    eprintln!(
        "black-hole node: slowest session before it left rotation {slowest:?}, \
         sessions after {after:?} each"
    );
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    assert!(after < Duration::from_millis(300), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_answers_the_startup_does_not_hold_sessions_without_tls() {
    // Without TLS to nodes, nothing is exchanged at connect: the wait for
    // the node's answer to the startup packet is what must time out, and the
    // session must move on to the next node. Health checks are kept from
    // taking the black hole out of rotation, so every session meets it.
    let good = node("hard-blackhole-plain");
    let hole = BlackHole::start();
    let sluice = Sluice::start_addrs(
        &[hole.addr.clone(), good.addr()],
        &Setup {
            warehouse: "unhealthy_after = 100".into(),
            ..Setup::default()
        },
    );
    for _ in 0..3 {
        let started = Instant::now();
        let client = tokio::time::timeout(Duration::from_secs(10), sluice.client())
            .await
            .expect("the session does not hang on the silent node");
        assert_eq!(node_port(&client).await, good.port());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    sluice.wait_for_log("did not answer the startup within", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_fails_its_sessions_at_once_and_returns_only_after_healthy_after_checks() {
    let mut a = node("hard-kill-a");
    let b = node("hard-kill-b");
    let sluice = Sluice::start(
        &[&a, &b],
        &Setup {
            // The harness checks every 200 ms.
            warehouse: "healthy_after = 5".into(),
            ..Setup::default()
        },
    );
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    while on_a.len() < 3 || on_b.len() < 2 {
        let client = sluice.client().await;
        if node_port(&client).await == a.port() {
            on_a.push(client);
        } else {
            on_b.push(client);
        }
    }
    let sleeping: Vec<_> = on_a
        .into_iter()
        .map(|c| tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await.err() }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a_addr = a.addr();
    let killed = Instant::now();
    a.stop_immediate().unwrap();
    for task in sleeping {
        let err = tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("every session on the killed node errors within a second")
            .unwrap()
            .expect("the query cannot succeed");
        let code = sqlstate(&err);
        assert!(
            code.starts_with("08") || code.starts_with("57P") || err.is_closed(),
            "{code}: {err}"
        );
    }
    let errored = killed.elapsed();
    // Sessions on the other node are untouched.
    for c in &on_b {
        assert_eq!(node_port(c).await, b.port());
    }
    sluice.wait_for_log("is out of rotation", Duration::from_secs(3));
    let out_of_rotation = killed.elapsed();
    assert!(sluice.log().contains(&format!("node=\"{a_addr}\"")));
    for _ in 0..4 {
        assert_eq!(node_port(&sluice.client().await).await, b.port());
    }

    a.start_again().unwrap();
    let restarted = Instant::now();
    // Healthy again, but not yet for healthy_after = 5 checks: still out.
    for _ in 0..4 {
        assert_eq!(node_port(&sluice.client().await).await, b.port());
    }
    sluice.wait_for_log("back in rotation", Duration::from_secs(10));
    let back = restarted.elapsed();
    eprintln!(
        "killed node: sessions errored {errored:?} after the kill, out of rotation after \
         {out_of_rotation:?}; back in rotation {back:?} after its restart"
    );
    assert!(
        back >= Duration::from_millis(600),
        "5 good checks 200 ms apart take 800 ms, not {back:?}"
    );
    let mut ports = Vec::new();
    for _ in 0..4 {
        ports.push(node_port(&sluice.client().await).await);
    }
    assert!(ports.contains(&a.port()), "{ports:?}");
}

/// Raises this process's open-files limit to its hard limit; sluice,
/// started after, inherits it.
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_concurrent_clients_are_all_served() {
    let nofile = raise_nofile() as usize;
    // Per client: one socket here and one in the fake node (this process),
    // two in sluice. A machine with a lower limit runs fewer, and says so.
    let clients = env_count("SLUICE_CLIENTS", 5000).min(nofile.saturating_sub(300) / 2);
    if clients < 5000 {
        eprintln!(
            "the open-files limit {nofile} allows {clients} clients, not 5000: raise it (ulimit -n)"
        );
    }
    assert!(clients >= 1000, "the open-files limit {nofile} is too low");
    let fake = FakeNode::start();
    let sluice = Sluice::start_addrs(
        &[fake.addr()],
        &Setup {
            server: format!("max_client_connections = {}", clients + 10),
            ..Setup::default()
        },
    );
    // Warm up, then measure sluice's memory with no client.
    sluice
        .client()
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = sluice.rss_kib();
    let started = Instant::now();
    let url = sluice.url("postgres");
    let failures = Arc::new(AtomicUsize::new(0));
    let mut open = Vec::with_capacity(clients);
    // Connect in waves of 100, as a pool warming up would.
    for wave in (0..clients).collect::<Vec<_>>().chunks(100) {
        let tasks: Vec<_> = wave
            .iter()
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { try_connect(&url).await })
            })
            .collect();
        for t in tasks {
            match t.await.unwrap() {
                Ok(c) => open.push(c),
                Err(e) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("connect failed: {e}");
                }
            }
        }
    }
    let connected = started.elapsed();
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!(open.len(), clients);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = sluice.rss_kib();
    // A steady load: every client runs three queries, spread over time.
    let open = Arc::new(open);
    let load_started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let open = open.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis((i % 50) as u64 * 10)).await;
                for _ in 0..3 {
                    let rows = open[i].simple_query("SELECT 1").await?;
                    assert!(rows.len() >= 2, "a row and the command tag");
                }
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .collect();
    let mut query_errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            query_errors.push(e.to_string());
        }
    }
    let load = load_started.elapsed();
    let per_client = (rss_idle.saturating_sub(rss_before)) as f64 / clients as f64;
    eprintln!(
        "{clients} concurrent clients: connected in {connected:?}, {} queries in {load:?}; \
         sluice RSS {rss_before} KiB without clients, {rss_idle} KiB with {clients} idle \
         ({per_client:.1} KiB per idle client, its node connection included); \
         fake node holds {} connections",
        3 * clients,
        fake.open_connections()
    );
    assert!(query_errors.is_empty(), "{query_errors:?}");
    assert!(
        per_client < 256.0,
        "an idle client costs {per_client:.1} KiB in sluice"
    );
}

/// Clients that query in a loop until told to stop; returns their error count.
fn query_loop(
    url: String,
    clients: usize,
    sql: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, Vec<String>)>> {
    (0..clients)
        .map(|_| {
            let url = url.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = connect(&url).await;
                let (mut ok, mut errors) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match client.simple_query(sql).await {
                        Ok(_) => ok += 1,
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (ok, errors)
            })
        })
        .collect()
}

async fn totals(tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>) -> (u64, Vec<String>) {
    let mut ok = 0;
    let mut errors = Vec::new();
    for t in tasks {
        let (o, e) = t.await.unwrap();
        ok += o;
        errors.extend(e);
    }
    (ok, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sighup_reloads_under_load_cost_no_client_an_error() {
    let a = node("hard-reload");
    let fake = FakeNode::start();
    let nodes = [a.addr()];
    let sluice = Sluice::start_addrs(
        &nodes,
        &Setup {
            server: "watch_config = false".into(),
            ..Setup::default()
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = query_loop(sluice.url("postgres"), 32, "SELECT 1", stop.clone());
    let started = Instant::now();
    let reloads = 100;
    for i in 0..reloads {
        // Alternate between one and two nodes, and change a health-check key.
        let nodes: Vec<String> = if i % 2 == 0 {
            vec![a.addr(), fake.addr()]
        } else {
            vec![a.addr()]
        };
        sluice.write_config(
            &nodes,
            &Setup {
                server: "watch_config = false".into(),
                warehouse: format!("unhealthy_after = {}", 1 + i % 3),
                ..Setup::default()
            },
        );
        sluice.signal("HUP");
        // Each reload is seen before the next signal (signals would merge).
        let deadline = Instant::now() + Duration::from_secs(5);
        while sluice.log().matches("configuration reloaded").count() < i + 1 {
            assert!(Instant::now() < deadline, "reload {i} was not logged");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // A broken file is refused and the running configuration stays.
    std::fs::write(sluice.config_path(), "[server]\nlisten = \"nowhere\"\n").unwrap();
    sluice.signal("HUP");
    sluice.wait_for_log("reload refused", Duration::from_secs(5));
    let fresh = sluice.client().await;
    fresh.simple_query("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, errors) = totals(tasks).await;
    eprintln!(
        "{reloads} reloads in {:?} under 32 querying clients: {ok} queries, {} errors",
        started.elapsed(),
        errors.len()
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(ok > 1000, "the clients kept querying: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_queries_refuses_new_ones_and_exits() {
    let a = node("hard-drain");
    let mut sluice = Sluice::start(
        &[&a],
        &Setup {
            server: "drain_timeout = \"20s\"".into(),
            ..Setup::default()
        },
    );
    let url = sluice.url("postgres");
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(connect(&url).await);
    }
    // Every client has a query in flight when the signal comes.
    let in_flight: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                let r = c.simple_query("SELECT pg_sleep(1.5), 7").await;
                drop(c);
                r.map(|_| ()).map_err(|e| e.to_string())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    sluice.signal("TERM");
    sluice.wait_for_log("waiting for open sessions", Duration::from_secs(5));
    let mut refused = 0;
    for _ in 0..10 {
        let err = try_connect(&url)
            .await
            .expect_err("draining refuses new sessions");
        assert_eq!(sqlstate(&err), "57P03");
        refused += 1;
    }
    for t in in_flight {
        t.await.unwrap().expect("the in-flight query finishes");
    }
    let status = sluice
        .wait_exit(Duration::from_secs(10))
        .expect("sluice exits once the last session ends");
    assert!(status.success());
    eprintln!("drain under load: 16 in-flight queries finished, {refused} new sessions got 57P03");
}

#[test]
fn a_storm_of_a_thousand_cancel_requests_cancels_only_what_it_should() {
    let a = node("hard-cancel-a");
    let b = node("hard-cancel-b");
    let sluice = Sluice::start(&[&a, &b], &Setup::default());
    // Two sessions, one on each node (round robin), both running pg_sleep.
    let mut target = RawSession::open(sluice.port);
    let mut bystander = RawSession::open(sluice.port);
    target.send_query("SELECT pg_sleep(5)");
    bystander.send_query("SELECT pg_sleep(2)");
    std::thread::sleep(Duration::from_millis(200));

    let port = sluice.port;
    let (pid, secret) = (target.process_id, target.secret.clone());
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let secret = secret.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0xdead_beef ^ ((t + 1) * 104_729));
                for i in 0..250 {
                    if t == 0 && i == 125 {
                        send_cancel(port, pid, &secret);
                        continue;
                    }
                    // Forged: random keys, and the real process id with a wrong secret.
                    let forged_pid = if i % 2 == 0 { pid } else { rng.next() as i32 };
                    let mut forged = rng.bytes(secret.len());
                    if forged == secret {
                        forged[0] ^= 1;
                    }
                    send_cancel(port, forged_pid, &forged);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let storm = started.elapsed();
    assert_eq!(
        target.finish_query().as_deref(),
        Some("57014"),
        "the one valid cancel reached the target's node"
    );
    assert_eq!(
        bystander.finish_query(),
        None,
        "999 forged cancels cancelled nothing"
    );
    let log = sluice.log();
    let forwarded = log.matches("forwarded a cancel request").count();
    eprintln!("cancel storm: 1000 requests in {storm:?}, {forwarded} forwarded to a node");
    assert_eq!(forwarded, 1, "only the valid key is forwarded");
    // Sessions still work.
    target.send_query("SELECT 1");
    assert_eq!(target.finish_query(), None);
}

#[test]
fn cancel_requests_to_nodes_are_rate_limited() {
    let a = node("hard-cancel-rate");
    let sluice = Sluice::start(
        &[&a],
        &Setup {
            server: "cancel_rate = 2\ncancel_burst = 3".into(),
            ..Setup::default()
        },
    );
    let session = RawSession::open(sluice.port);
    // A client replaying its own (valid) key in a loop: no query runs, so
    // each forward is harmless, but each would open a node connection.
    let started = Instant::now();
    for _ in 0..40 {
        send_cancel(sluice.port, session.process_id, &session.secret);
    }
    sluice.wait_for_log("faster than server.cancel_rate", Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    let log = sluice.log();
    // Attempts that passed the limit, whether the node took them or not.
    let passed = log.matches("forwarded a cancel request").count()
        + log.matches("could not forward a cancel request").count();
    let took = started.elapsed().as_secs_f64();
    assert!(
        passed >= 3 && passed as f64 <= 3.0 + 2.0 * took + 1.0,
        "the burst of 3 passed, then about 2 a second over {took:.1}s: {passed} passed\n{log}"
    );
    assert_eq!(
        log.matches("faster than server.cancel_rate").count(),
        1,
        "the flood is logged once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_sessions_of_one_user_get_53300_and_others_are_served() {
    let fake = FakeNode::start();
    let sluice = Sluice::start_addrs(
        &[fake.addr()],
        &Setup {
            server: "max_client_connections_per_user = 3".into(),
            ..Setup::default()
        },
    );
    let url = |user: &str| format!("host=127.0.0.1 port={} user={user} dbname=dwh", sluice.port);
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(connect(&url("alice")).await);
    }
    let err = try_connect(&url("alice"))
        .await
        .expect_err("a fourth session of alice is refused");
    assert_eq!(sqlstate(&err), "53300");
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("max_client_connections_per_user"),
        "{err}"
    );
    // Bob is not affected, and alice gets her place back when one closes.
    let bob = connect(&url("bob")).await;
    bob.simple_query("SELECT 1").await.unwrap();
    drop(alice.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_connect(&url("alice")).await {
            Ok(c) => {
                c.simple_query("SELECT 1").await.unwrap();
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("alice's place did not come back: {e}"),
        }
    }
    for c in &alice {
        c.simple_query("SELECT 1").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_the_logs_of_a_full_run() {
    const SERVICE: &str = "svc-pw-7d1e0c55";
    const WEBHOOK_TOKEN: &str = "whk-9b3f2a11";
    const ADMIN: &str = "adm-pw-44c0e9f3";
    let mut a = node("hard-secrets-a");
    let b = node("hard-secrets-b");
    // A webhook URL that refuses connections: alert delivery fails and is
    // logged, which is where a URL would most likely leak.
    let webhook = format!(
        "http://127.0.0.1:{}/services/T0/B0/{WEBHOOK_TOKEN}",
        free_port()
    );
    let mut sluice = Sluice::start(
        &[&a, &b],
        &Setup {
            server: "drain_timeout = \"2s\"".into(),
            warehouse: format!("service_password = \"{SERVICE}\""),
            tail: format!(
                "[admin]\nauth = \"scram\"\n[[admin.users]]\nname = \"ops\"\npassword = \"{ADMIN}\"\n\
                 [alerts]\nslack_webhook_url = \"{webhook}\"\ngroup_wait = \"100ms\"\n\
                 timeout = \"500ms\"\nmax_retries = 1\n"
            ),
            ..Setup::default()
        },
    );
    // Queries, an error, the console with SHOW CONFIG, a node failure with
    // its alert, a reload, a cancel, a drain.
    let client = sluice.client().await;
    client.simple_query("SELECT 1").await.unwrap();
    let _ = client.simple_query("SELECT * FROM no_such_table").await;
    let admin = connect(&format!(
        "host=127.0.0.1 port={} user=ops password={ADMIN} dbname=sluice",
        sluice.port
    ))
    .await;
    let mut shown = String::new();
    for command in ["SHOW CONFIG", "SHOW NODES", "SHOW ALERTS", "SHOW CLIENTS"] {
        for m in admin.simple_query(command).await.unwrap() {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                for i in 0..r.len() {
                    shown.push_str(r.get(i).unwrap_or(""));
                    shown.push('\t');
                }
            }
        }
    }
    let _ = try_connect(&format!(
        "host=127.0.0.1 port={} user=ops password=wrong dbname=sluice",
        sluice.port
    ))
    .await;
    a.stop().unwrap();
    sluice.wait_for_log("is out of rotation", Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sluice.signal("HUP");
    sluice.wait_for_log("configuration reloaded", Duration::from_secs(5));
    let (_, metrics) = sluice.http_get("/metrics");
    drop((client, admin));
    sluice.signal("TERM");
    sluice.wait_exit(Duration::from_secs(10));

    let log = sluice.log();
    for (what, secret) in [
        ("service password", SERVICE),
        ("webhook URL", WEBHOOK_TOKEN),
        ("admin password", ADMIN),
    ] {
        assert!(!log.contains(secret), "the {what} is in the log:\n{log}");
        assert!(
            !shown.contains(secret),
            "the {what} is shown by the console: {shown}"
        );
        assert!(!metrics.contains(secret), "the {what} is in the metrics");
    }
    assert!(
        log.contains("sluice stopped"),
        "a full run, to its end:\n{log}"
    );
}

/// The certificate subject a TLS handshake with sluice presents, or the
/// handshake's failure, via `openssl s_client -starttls postgres`.
fn s_client(port: u16, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-starttls", "postgres"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let handshake = text.contains("Cipher is") && !text.contains("Cipher is (NONE)");
    (handshake, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_is_refused_and_certificates_reload_on_sighup() {
    let node = node("hard-tls");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let sluice = Sluice::start(
        &[&node],
        &Setup {
            server: "watch_config = false".into(),
            tail: format!("[server.tls]\ncert = {cert:?}\nkey = {key:?}\nmode = \"require\"\n"),
            ..Setup::default()
        },
    );
    let (ok, text) = s_client(sluice.port, &["-tls1_2"]);
    assert!(ok, "a TLS 1.2 handshake works:\n{text}");
    assert!(
        text.contains("CN = localhost") || text.contains("CN=localhost"),
        "{text}"
    );
    let (ok, text) = s_client(sluice.port, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(!ok, "a TLS 1.1 handshake is refused:\n{text}");

    // A renewed certificate: new files in place, SIGHUP, new handshakes see it.
    let renewed = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=renewed.sluice.test"])
        .arg("-keyout")
        .arg(renewed.path().join("key.pem"))
        .arg("-out")
        .arg(renewed.path().join("cert.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::copy(renewed.path().join("cert.pem"), &cert).unwrap();
    std::fs::copy(renewed.path().join("key.pem"), &key).unwrap();
    // An open TLS session is not disturbed by the reload.
    let open = psql(
        &format!("{} sslmode=require", sluice.url("postgres")),
        &["-At", "-c", "SELECT 1"],
    );
    assert!(open.status.success(), "{}", stderr(&open));
    sluice.signal("HUP");
    sluice.wait_for_log("configuration reloaded", Duration::from_secs(5));
    let (ok, text) = s_client(sluice.port, &["-tls1_3"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("renewed.sluice.test"),
        "the new certificate is served:\n{text}"
    );
}
