//! Shared test fixtures: local PostgreSQL nodes and a sluice child process.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub use sluice::localpg::{ClusterOptions, LocalCluster};

mod fake_node;
pub mod fake_vertica;
mod raw;
pub use fake_node::FakeNode;
pub use raw::{RawSession, send_cancel};

/// Where the initdb template is kept between test runs.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("localpg")
}

/// Starts a throwaway PostgreSQL node, or fails the test saying why.
pub fn node(name: &str) -> LocalCluster {
    node_with(ClusterOptions::new(cache_dir()).with_name(name))
}

pub fn node_with(opts: ClusterOptions) -> LocalCluster {
    LocalCluster::start(&opts)
        .unwrap_or_else(|e| panic!("cannot start a PostgreSQL node for this test: {e}"))
}

/// Puts `lines` (e.g. `host all alice 127.0.0.1/32 scram-sha-256`) ahead
/// of the node's pg_hba.conf and reloads it: those users must then log in
/// with a password, everyone else stays trusted.
pub fn require_passwords(node: &LocalCluster, lines: &[&str]) {
    let hba = node.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("{}\n{old}", lines.join("\n"))).unwrap();
    node.psql("postgres", "SELECT pg_reload_conf()").unwrap();
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What goes into a test's sluice.toml besides listeners and nodes.
#[derive(Default, Clone)]
pub struct Setup {
    /// Extra `key = value` lines for [server].
    pub server: String,
    /// Extra `key = value` lines for [warehouse].
    pub warehouse: String,
    /// Whole tables appended at the end, e.g. "[server.tls] ...".
    pub tail: String,
    /// The client port; a free one when `None`.
    pub port: Option<u16>,
}

/// sluice running as a child process, killed when dropped.
pub struct Sluice {
    child: Child,
    pub port: u16,
    pub metrics_port: u16,
    dir: tempfile::TempDir,
}

impl Sluice {
    pub fn start(nodes: &[&LocalCluster], setup: &Setup) -> Sluice {
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
        Sluice::start_addrs(&addrs, setup)
    }

    pub fn start_addrs(nodes: &[String], setup: &Setup) -> Sluice {
        // A free port is free when asked; another test may take it before
        // sluice binds it. sluice then exits saying so, and gets new ports.
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = setup.port.unwrap_or_else(free_port);
            let metrics_port = free_port();
            let mut s = Sluice {
                child: Command::new("true").spawn().unwrap(),
                port,
                metrics_port,
                dir,
            };
            s.write_config(nodes, setup);
            let log = std::fs::File::create(s.log_path()).unwrap();
            s.child = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["run", "--config"])
                .arg(s.config_path())
                .env("SLUICE_LOG", "sluice=debug,info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            match s.wait_serving() {
                Ok(()) => return s,
                Err(log) if log.contains("cannot listen") && setup.port.is_none() => continue,
                Err(log) => panic!("sluice did not start:\n{log}"),
            }
        }
        panic!("sluice could not get free ports in 5 tries");
    }

    /// The sluice child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's resident memory in KiB (VmRSS in /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("sluice is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sluice.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sluice.log")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the config file (it takes effect at start or on SIGHUP).
    pub fn write_config(&self, nodes: &[String], setup: &Setup) {
        let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:{}\"\n{}\n\n\
             [warehouse]\nnodes = [{}]\nservice_user = \"postgres\"\nhealth_check_interval = \"200ms\"\n\
             health_check_timeout = \"1s\"\nconnect_timeout = \"2s\"\n{}\n\n{}\n",
            self.port,
            self.metrics_port,
            setup.server,
            nodes.join(", "),
            setup.warehouse,
            setup.tail
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Waits for sluice's own "serving" line: a connection that succeeds
    /// could be another test's listener on a port taken meanwhile.
    fn wait_serving(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "sluice exited during start-up ({status}):\n{}",
                    self.log()
                ));
            }
            if self.log().contains("sluice is serving")
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("sluice did not serve within 15 s:\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, or fails the test.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "sluice's log did not show {needle:?} within {timeout:?}:\n{}",
            self.log()
        );
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A libpq connection string to sluice.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url("postgres")).await
    }

    /// A plain HTTP GET on the metrics listener: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_port, path)
    }

    /// One metric's value as /metrics shows it (`name{labels}` exactly).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Waits until sluice says the catalog copy of `database` is current
    /// (its first refresh since start is done), or fails the test.
    pub fn wait_catalog_current(&self, database: &str, timeout: Duration) {
        let series = format!("sluice_catalog_stale{{database=\"{database}\"}}");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.metric(&series) == Some(0.0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the catalog copy of {database} was not current within {timeout:?}:\n{}",
            self.log()
        );
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        // SIGINT first: sluice stops what it runs (a managed catalog copy).
        if let Ok(None) = self.child.try_wait() {
            self.signal("INT");
            let _ = self.wait_exit(Duration::from_secs(15));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sluice log ---\n{}", self.log());
        }
    }
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Connects with tokio-postgres (no TLS) and drives the connection in the background.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

pub async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The port of the node serving this session.
pub async fn node_port(client: &tokio_postgres::Client) -> u16 {
    let row = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap();
    row.get::<_, i32>(0) as u16
}

/// Runs `sluice check --config <path>`.
pub fn sluice_check(path: impl AsRef<Path>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(path.as_ref())
        .output()
        .expect("the sluice binary runs")
}

/// Runs psql with a connection string and SQL; returns its output.
pub fn psql(url: &str, args: &[&str]) -> Output {
    Command::new("psql")
        .arg("-X")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg(url)
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs (apt-get install -y postgresql-client)")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("(no SQLSTATE: {e})"))
}

/// FNV-1a, to compare large streams without keeping them.
#[derive(Clone, Copy)]
pub struct Checksum(pub u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xcbf29ce484222325)
    }
}

impl Checksum {
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

/// Generates a self-signed certificate (CN and SAN localhost, 127.0.0.1) in `dir`:
/// returns (cert, key) paths.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

/// A test CA and a server certificate it signed for localhost: (ca, cert, key).
pub fn ca_signed_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=sluice test CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("server.pem"),
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a config with one node and `[catalog] dsn` pointing at `copy_port`
/// (plus `catalog_keys`) into `dir`, for `sluice check` and `sluice run`
/// that must refuse or accept it before serving.
pub fn catalog_config(dir: &Path, node: &str, copy_port: u16, catalog_keys: &str) -> PathBuf {
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"\"\n[warehouse]\nnodes = [{node:?}]\nservice_user = \"postgres\"\n\
             [catalog]\ndsn = \"host=127.0.0.1 port={copy_port} user=postgres\"\n{catalog_keys}\n"
        ),
    )
    .unwrap();
    config
}

/// Runs `sluice check` and `sluice run` on `config`: both must fail before
/// serving, and their stderr must contain every one of `needles`.
pub fn refused_by_check_and_run(config: &Path, needles: &[&str]) {
    for command in ["check", "run"] {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([command, "--config"])
            .arg(config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "sluice {command} accepted it");
        let text = stderr(&out);
        assert!(needles.iter().all(|n| text.contains(n)), "{text}");
    }
}
