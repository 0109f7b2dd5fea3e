//! Configuration: read in two stages.
//!
//! [`raw`] mirrors the TOML file and its defaults; [`Config::parse`] validates
//! every key, resolves it into the types the rest of sluice uses, and reports
//! every problem at once with its line and key path. Sessions receive an
//! `Arc<Config>` when they start; a reload builds a new one beside it, so a
//! session keeps the configuration it started with.

mod error;
mod observability;
mod raw;
mod rules;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

pub use error::{ConfigError, Problem};
pub use observability::{
    Admin, AdminAuth, AdminUser, AlertEvents, Alerts, Condition, Threshold, ThresholdMetric,
};
use raw::RawConfig;
pub use rules::{Limits, Stats};

use crate::classify::RuleSet;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub warehouse: Warehouse,
    pub admin: Admin,
    pub alerts: Alerts,
    /// Things that work but should be fixed (e.g. a plain-text admin
    /// password); `sluice check` prints them, `sluice run` logs them.
    pub warnings: Vec<Problem>,
    /// `None` when no `[catalog]` section: every query goes to the nodes.
    pub catalog: Option<Catalog>,
    pub cluster: Cluster,
    /// `[[rules]]`, in order.
    pub rules: RuleSet,
    pub limits: Limits,
    pub stats: Stats,
}

/// The PostgreSQL catalog copy that answers catalog lookups.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// What `catalog-sync` copies: PostgreSQL's catalog (a binary-upgrade
    /// restore) or Vertica's `v_catalog` tables. Defaults to
    /// `warehouse.dialect`; tests set it apart, since their "Vertica
    /// warehouse" is a PostgreSQL node holding a `v_catalog` schema.
    pub dialect: Dialect,
    pub host: String,
    pub port: u16,
    /// A superuser of the catalog copy: it must `SET ROLE` to each client's role.
    pub user: String,
    /// `Some` when sluice runs the copy itself (no `dsn`); `host` and
    /// `port` are then filled in once it has started.
    pub managed: Option<ManagedCatalog>,
    /// The change probe's period; `None` ("0s"): changes made elsewhere
    /// are only seen by `sync_interval`'s full syncs.
    pub probe_interval: Option<Duration>,
    /// How long sessions must report no catalog change before a refresh.
    pub refresh_debounce: Duration,
    /// More changed relations than this: the database is copied whole.
    pub max_incremental: usize,
    /// The directory of the PostgreSQL binaries: the managed copy's server,
    /// and pg_dump, pg_dumpall and psql (`catalog.postgres_bin`); `None`:
    /// found on the machine.
    pub postgres_bin: Option<std::path::PathBuf>,
    pub password: Secret,
    pub schemas: Vec<String>,
    pub allowed_functions: Vec<String>,
    pub pool_size: usize,
    /// How long a lookup may wait for a pooled connection before the node answers it.
    pub acquire_timeout: Duration,
    pub connect_timeout: Duration,
    /// After the copy failed, lookups go to the nodes for this long before it is tried again.
    pub retry_after: Duration,
    /// A lookup the copy has not answered within this goes to the node.
    pub answer_timeout: Duration,
    /// Periodic sync inside `sluice run`; `None`: only `sluice catalog-sync`.
    pub sync_interval: Option<Duration>,
    /// Classifications kept by query text.
    pub cache_size: usize,
    /// Query texts longer than this (bytes) are not parsed: they go to the node.
    pub max_parse_size: usize,
}

/// The catalog copy sluice runs itself.
#[derive(Debug, Clone)]
pub struct ManagedCatalog {
    pub data_dir: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// HTTP listener for /healthz, /readyz and /metrics; `None` when set to "".
    pub metrics_listen: Option<SocketAddr>,
    pub max_client_connections: usize,
    /// Threads relaying sessions (read at start only); see [`Server::threads`].
    pub worker_threads: usize,
    /// Sessions one user may hold at once; `None`: only the total limit applies.
    pub max_client_connections_per_user: Option<usize>,
    pub drain_timeout: Duration,
    pub startup_timeout: Duration,
    pub max_message_size: usize,
    pub max_startup_packet_size: usize,
    pub max_startup_parameters: usize,
    /// Reload when the file (or a file it names) changes, checked every `watch_interval`.
    pub watch_config: bool,
    pub watch_interval: Duration,
    /// CancelRequests forwarded to nodes per second, on average, and at once
    /// after a quiet spell: a flood cannot exhaust connections to the nodes.
    pub cancel_rate: u32,
    pub cancel_burst: u32,
    pub tls: Option<ServerTls>,
}

impl Server {
    /// The relay's thread count: `worker_threads`, or when 0, a quarter of
    /// the cores (at least one). A proxy's work is mostly system calls
    /// waking other processes; on a small machine it shares the cores with
    /// the warehouse and the clients, and one thread spends less CPU per
    /// query than several that hand sessions to each other (measured in
    /// docs/benchmarks.md).
    pub fn threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).max(1)),
            n => n,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTlsMode {
    /// Answer SSLRequest with 'N'.
    Disable,
    /// Offer TLS; plaintext clients are served too.
    Prefer,
    /// Refuse clients that do not ask for TLS.
    Require,
}

#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub mode: ClientTlsMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Vertica,
}

#[derive(Debug, Clone)]
pub struct Warehouse {
    pub dialect: Dialect,
    /// Node addresses as written (`host:port`); they also name the nodes.
    pub nodes: Vec<String>,
    pub health_check_interval: Duration,
    pub health_check_timeout: Duration,
    /// Consecutive good checks before a down node takes sessions again.
    pub healthy_after: u32,
    /// Consecutive failed checks before a node is taken out of rotation.
    pub unhealthy_after: u32,
    pub connect_timeout: Duration,
    /// Node connections kept per node, after their client left, for the
    /// next client that logs in the same way; 0 keeps none.
    pub idle_connections: usize,
    /// How long a kept node connection waits for a client before it closes.
    pub idle_timeout: Duration,
    pub service_user: String,
    pub service_password: Secret,
    /// Where `service_password` was read from, when it came from a file.
    pub service_password_file: Option<PathBuf>,
    pub service_database: String,
    pub tls: NodeTls,
}

/// Several sluice instances behind one load balancer, acting as one proxy.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// This instance's id (1..=[`crate::cancel::MAX_INSTANCE_ID`]), encoded
    /// in every cancel key it hands out.
    pub instance_id: u8,
    /// The other instances, `host:port`; a name may resolve to several addresses.
    pub peers: Vec<String>,
    /// Cancel requests forwarded to peers per second, on average.
    pub cancel_forward_rate: u32,
    /// How many may be forwarded at once after a quiet spell.
    pub cancel_forward_burst: u32,
    pub cancel_forward_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeTlsMode {
    Disable,
    /// TLS when the node offers it, without verifying its certificate.
    Prefer,
    /// TLS always, without verifying the certificate (libpq's `require`).
    Require,
    /// TLS with the certificate verified against `ca` and the node's host name.
    VerifyFull,
}

#[derive(Debug, Clone)]
pub struct NodeTls {
    pub mode: NodeTlsMode,
    pub ca: Option<PathBuf>,
}

/// A value that must never reach a log, an error or the admin console.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: shown.clone(),
            problems: vec![Problem {
                line: None,
                key: "(file)".into(),
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&source, &shown, base)
    }

    /// Validates configuration text; relative file paths resolve against `base`.
    /// The files besides the config file whose contents the configuration
    /// depends on: a change to any of them is a reason to reload.
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(t) = &self.server.tls {
            files.extend([t.cert.clone(), t.key.clone()]);
        }
        files.extend(self.warehouse.tls.ca.clone());
        files.extend(self.warehouse.service_password_file.clone());
        files
    }

    pub fn parse(source: &str, shown_path: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut v = Validator {
            source,
            base,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(source) {
            Ok(raw) => raw,
            Err(e) => {
                v.problems.push(Problem {
                    line: e.span().map(|s| v.line(&s)),
                    key: "(syntax)".into(),
                    message: e.message().trim().to_string(),
                });
                return Err(v.into_error(shown_path));
            }
        };
        let config = v.config(raw);
        match config {
            Some(mut c) if v.problems.is_empty() => {
                c.warnings = v.warnings;
                Ok(c)
            }
            _ => Err(v.into_error(shown_path)),
        }
    }
}

/// Collects problems while resolving raw values; each resolver returns
/// `None` for a bad value and records why.
struct Validator<'a> {
    source: &'a str,
    base: &'a Path,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Validator<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.source.len());
        self.source[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn problem(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        // Defaults carry an empty span at 0: they have no line.
        let line = (span != (0..0)).then(|| self.line(&span));
        self.problems.push(Problem {
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn warning(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let line = (span != (0..0)).then(|| self.line(&span));
        self.warnings.push(Problem {
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn into_error(self, path: &str) -> ConfigError {
        ConfigError {
            path: path.to_string(),
            problems: self.problems,
        }
    }

    fn duration(&mut self, key: &str, value: &Spanned<String>) -> Option<Duration> {
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.problem(value.span(), key, "must be longer than zero");
                None
            }
            Err(e) => {
                self.problem(
                    value.span(),
                    key,
                    format!(
                        "{:?} is not a duration ({e}); write e.g. \"500ms\", \"2s\", \"5m\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn count(&mut self, key: &str, value: &Spanned<i64>, min: i64, max: i64) -> Option<usize> {
        let n = *value.get_ref();
        if n < min || n > max {
            self.problem(
                value.span(),
                key,
                format!("must be between {min} and {max}, not {n}"),
            );
            return None;
        }
        Some(n as usize)
    }

    fn socket_addr(&mut self, key: &str, value: &Spanned<String>) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    value.span(),
                    key,
                    format!(
                        "{:?} is not an IP address with a port, e.g. \"127.0.0.1:5433\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        key: &str,
        value: &Spanned<String>,
        choices: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == value.get_ref()) {
            return Some(*t);
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        self.problem(
            value.span(),
            key,
            format!("{:?} is not one of {}", value.get_ref(), names.join(", ")),
        );
        None
    }

    fn file(&mut self, key: &str, value: &Spanned<String>) -> Option<PathBuf> {
        let path = self.base.join(value.get_ref());
        if let Err(e) = std::fs::metadata(&path) {
            self.problem(
                value.span(),
                key,
                format!("cannot read {}: {e}", path.display()),
            );
            return None;
        }
        Some(path)
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let server = self.server(raw.server);
        let Some(warehouse) = raw.warehouse else {
            self.problem(
                0..0,
                "warehouse",
                "missing section: add [warehouse] with nodes = [\"host:port\", ...]",
            );
            return None;
        };
        let warehouse = self.warehouse(warehouse.into_inner());
        let default_dialect = warehouse
            .as_ref()
            .map(|w| w.dialect)
            .unwrap_or(Dialect::Postgres);
        let catalog = match raw.catalog {
            Some(c) => self.catalog(c, default_dialect).map(Some),
            None => Some(None),
        };
        let admin = self.admin(raw.admin);
        let alerts = self.alerts(raw.alerts);
        let cluster = self.cluster(raw.cluster);
        let rules = self.rules(raw.rules);
        let limits = self.limits(raw.limits);
        let stats = self.stats(raw.stats);
        Some(Config {
            rules: rules?,
            limits: limits?,
            stats: stats?,
            server: server?,
            warehouse: warehouse?,
            catalog: catalog?,
            admin: admin?,
            alerts: alerts?,
            cluster: cluster?,
            warnings: Vec::new(),
        })
    }

    fn server(&mut self, raw: raw::RawServer) -> Option<Server> {
        let listen = self.socket_addr("server.listen", &raw.listen);
        let metrics_listen = if raw.metrics_listen.get_ref().is_empty() {
            Some(None)
        } else {
            self.socket_addr("server.metrics_listen", &raw.metrics_listen)
                .map(Some)
        };
        let worker_threads = self.count("server.worker_threads", &raw.worker_threads, 0, 1024);
        let max_clients = self.count(
            "server.max_client_connections",
            &raw.max_client_connections,
            1,
            1_000_000,
        );
        let max_per_user = match &raw.max_client_connections_per_user {
            None => Some(None),
            Some(v) => self
                .count("server.max_client_connections_per_user", v, 1, 1_000_000)
                .map(Some),
        };
        let cancel_rate = self.count("server.cancel_rate", &raw.cancel_rate, 1, 1_000_000);
        let cancel_burst = self.count("server.cancel_burst", &raw.cancel_burst, 1, 1_000_000);
        let drain = self.duration("server.drain_timeout", &raw.drain_timeout);
        let startup = self.duration("server.startup_timeout", &raw.startup_timeout);
        let max_message = self.count(
            "server.max_message_size",
            &raw.max_message_size,
            1024,
            1 << 30,
        );
        let max_startup = self.count(
            "server.max_startup_packet_size",
            &raw.max_startup_packet_size,
            64,
            1 << 20,
        );
        let max_params = self.count(
            "server.max_startup_parameters",
            &raw.max_startup_parameters,
            1,
            10_000,
        );
        let watch_interval = self.duration("server.watch_interval", &raw.watch_interval);
        let tls = match raw.tls {
            None => Some(None),
            Some(t) => {
                let cert = self.file("server.tls.cert", &t.cert);
                let key = self.file("server.tls.key", &t.key);
                let mode = self.choice(
                    "server.tls.mode",
                    &t.mode,
                    &[
                        ("disable", ClientTlsMode::Disable),
                        ("prefer", ClientTlsMode::Prefer),
                        ("require", ClientTlsMode::Require),
                    ],
                );
                if let (Some(cert), Some(key)) = (&cert, &key)
                    && let Err(e) = crate::tls::acceptor(cert, key)
                {
                    self.problem(t.cert.span(), "server.tls", e.to_string());
                }
                Some(Some(ServerTls {
                    cert: cert?,
                    key: key?,
                    mode: mode?,
                }))
            }
        };
        Some(Server {
            listen: listen?,
            metrics_listen: metrics_listen?,
            max_client_connections: max_clients?,
            worker_threads: worker_threads?,
            max_client_connections_per_user: max_per_user?,
            drain_timeout: drain?,
            startup_timeout: startup?,
            max_message_size: max_message?,
            max_startup_packet_size: max_startup?,
            max_startup_parameters: max_params?,
            watch_config: raw.watch_config,
            watch_interval: watch_interval?,
            cancel_rate: cancel_rate? as u32,
            cancel_burst: cancel_burst? as u32,
            tls: tls?,
        })
    }

    fn warehouse(&mut self, raw: raw::RawWarehouse) -> Option<Warehouse> {
        let dialect = self.choice(
            "warehouse.dialect",
            &raw.dialect,
            &[
                ("postgres", Dialect::Postgres),
                ("vertica", Dialect::Vertica),
            ],
        );
        let mut nodes: Vec<String> = Vec::new();
        if raw.nodes.get_ref().is_empty() {
            self.problem(
                raw.nodes.span(),
                "warehouse.nodes",
                "lists no node; add at least one \"host:port\"",
            );
        }
        for (i, node) in raw.nodes.get_ref().iter().enumerate() {
            let key = format!("warehouse.nodes[{i}]");
            match node_address_problem(node.get_ref()) {
                Some(why) => self.problem(node.span(), &key, why),
                None if nodes.contains(node.get_ref()) => self.problem(
                    node.span(),
                    &key,
                    format!("{:?} is listed twice", node.get_ref()),
                ),
                None => nodes.push(node.get_ref().clone()),
            }
        }
        let interval = self.duration(
            "warehouse.health_check_interval",
            &raw.health_check_interval,
        );
        let check_timeout =
            self.duration("warehouse.health_check_timeout", &raw.health_check_timeout);
        let healthy_after = self.count("warehouse.healthy_after", &raw.healthy_after, 1, 100);
        let unhealthy_after = self.count("warehouse.unhealthy_after", &raw.unhealthy_after, 1, 100);
        let connect_timeout = self.duration("warehouse.connect_timeout", &raw.connect_timeout);
        let idle_connections = self.count(
            "warehouse.idle_connections",
            &raw.idle_connections,
            0,
            10_000,
        );
        let idle_timeout = self.duration("warehouse.idle_timeout", &raw.idle_timeout);
        if raw.service_user.get_ref().is_empty() {
            self.problem(
                raw.service_user.span(),
                "warehouse.service_user",
                "must not be empty",
            );
        }
        let password = match &raw.service_password_file {
            None => Some((Secret::new(raw.service_password.clone()), None)),
            Some(_) if !raw.service_password.is_empty() => {
                self.problem(
                    0..0,
                    "warehouse.service_password_file",
                    "set together with service_password; keep only one of them",
                );
                None
            }
            Some(file) => self
                .file("warehouse.service_password_file", file)
                .and_then(|path| {
                    match std::fs::read_to_string(&path) {
                        // Files written by `echo` or editors end with a newline
                        // that is not part of the password.
                        Ok(text) => {
                            Some((Secret::new(text.trim_end_matches(['\n', '\r'])), Some(path)))
                        }
                        Err(e) => {
                            self.problem(
                                file.span(),
                                "warehouse.service_password_file",
                                format!("cannot read {}: {e}", path.display()),
                            );
                            None
                        }
                    }
                }),
        };
        let tls = match raw.tls {
            None => Some(NodeTls {
                mode: NodeTlsMode::Disable,
                ca: None,
            }),
            Some(t) => {
                let mode = self.choice(
                    "warehouse.tls.mode",
                    &t.mode,
                    &[
                        ("disable", NodeTlsMode::Disable),
                        ("prefer", NodeTlsMode::Prefer),
                        ("require", NodeTlsMode::Require),
                        ("verify-full", NodeTlsMode::VerifyFull),
                    ],
                );
                let ca = match &t.ca {
                    Some(ca) => self.file("warehouse.tls.ca", ca).map(Some),
                    None => Some(None),
                };
                if mode == Some(NodeTlsMode::VerifyFull) && t.ca.is_none() {
                    self.problem(
                        t.mode.span(),
                        "warehouse.tls.ca",
                        "is required with mode = \"verify-full\"",
                    );
                }
                Some(NodeTls {
                    mode: mode?,
                    ca: ca?,
                })
            }
        };
        if nodes.len() != raw.nodes.get_ref().len() {
            return None;
        }
        let (service_password, service_password_file) = password?;
        Some(Warehouse {
            dialect: dialect?,
            nodes,
            health_check_interval: interval?,
            health_check_timeout: check_timeout?,
            healthy_after: healthy_after? as u32,
            unhealthy_after: unhealthy_after? as u32,
            connect_timeout: connect_timeout?,
            idle_connections: idle_connections?,
            idle_timeout: idle_timeout?,
            service_user: raw.service_user.into_inner(),
            service_password,
            service_password_file,
            service_database: raw.service_database.into_inner(),
            tls: tls?,
        })
    }
}

impl Validator<'_> {
    /// `catalog.dsn`: host, port, user and password of an external copy.
    fn catalog_dsn(&mut self, dsn: &Spanned<String>) -> Option<(String, u16, String, String)> {
        let parsed: tokio_postgres::Config = match dsn.get_ref().parse() {
            Ok(c) => c,
            Err(e) => {
                self.problem(
                    dsn.span(),
                    "catalog.dsn",
                    format!("is not a libpq connection string: {e}"),
                );
                return None;
            }
        };
        let host = match parsed.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => {
                self.problem(
                    dsn.span(),
                    "catalog.dsn",
                    "needs host=<address> (a TCP host, not a socket path)",
                );
                return None;
            }
        };
        let port = parsed.get_ports().first().copied().unwrap_or(5432);
        let Some(user) = parsed.get_user().map(str::to_string) else {
            self.problem(
                dsn.span(),
                "catalog.dsn",
                "needs user=<superuser of the catalog copy>",
            );
            return None;
        };
        let password = parsed
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        Some((host, port, user, password))
    }

    fn catalog(&mut self, raw: raw::RawCatalog, default_dialect: Dialect) -> Option<Catalog> {
        let dialect = match &raw.dialect {
            Some(d) => self.choice(
                "catalog.dialect",
                d,
                &[
                    ("postgres", Dialect::Postgres),
                    ("vertica", Dialect::Vertica),
                ],
            ),
            None => Some(default_dialect),
        };
        let endpoint = match &raw.dsn {
            Some(dsn) => self.catalog_dsn(dsn),
            None => Some((
                // Filled in when the managed copy has started.
                "127.0.0.1".to_string(),
                0,
                crate::catalog::managed::SUPERUSER.to_string(),
                String::new(),
            )),
        };
        let managed = match (&raw.dsn, raw.data_dir.get_ref().as_str()) {
            (Some(_), _) => None,
            (None, "") => {
                self.problem(
                    raw.data_dir.span(),
                    "catalog.data_dir",
                    "is empty; name the directory sluice keeps its catalog copy in, or set catalog.dsn",
                );
                None
            }
            (None, dir) => Some(ManagedCatalog {
                data_dir: dir.into(),
            }),
        };
        if let Some(bin) = &raw.postgres_bin
            && !std::path::Path::new(bin.get_ref())
                .join("postgres")
                .is_file()
            && !std::path::Path::new(bin.get_ref())
                .join("pg_dump")
                .is_file()
        {
            self.problem(
                bin.span(),
                "catalog.postgres_bin",
                format!(
                    "{:?} holds neither postgres nor pg_dump; name the directory of the PostgreSQL server binaries (pg_config --bindir)",
                    bin.get_ref()
                ),
            );
        }
        if raw.schemas.is_empty() {
            self.problem(
                0..0,
                "catalog.schemas",
                "lists no schema; catalog lookups could never match",
            );
        }
        let probe_interval = match humantime::parse_duration(raw.probe_interval.get_ref()) {
            Ok(d) if d.is_zero() => Some(None),
            Ok(d) => Some(Some(d)),
            Err(e) => {
                self.problem(
                    raw.probe_interval.span(),
                    "catalog.probe_interval",
                    format!("is not a duration (\"10s\", or \"0s\" to turn the probe off): {e}"),
                );
                None
            }
        };
        let refresh_debounce = self.duration("catalog.refresh_debounce", &raw.refresh_debounce);
        let max_incremental = self.count(
            "catalog.max_incremental",
            &raw.max_incremental,
            1,
            1_000_000,
        );
        let pool_size = self.count("catalog.pool_size", &raw.pool_size, 1, 10_000);
        let acquire_timeout = self.duration("catalog.acquire_timeout", &raw.acquire_timeout);
        let connect_timeout = self.duration("catalog.connect_timeout", &raw.connect_timeout);
        let retry_after = self.duration("catalog.retry_after", &raw.retry_after);
        let answer_timeout = self.duration("catalog.answer_timeout", &raw.answer_timeout);
        let sync_interval = match &raw.sync_interval {
            Some(v) => self.duration("catalog.sync_interval", v).map(Some),
            None => Some(None),
        };
        let cache_size = self.count("catalog.cache_size", &raw.cache_size, 1, 10_000_000);
        let max_parse_size =
            self.count("catalog.max_parse_size", &raw.max_parse_size, 64, 64 << 20);
        let (host, port, user, password) = endpoint?;
        Some(Catalog {
            dialect: dialect?,
            host,
            port,
            user,
            postgres_bin: raw.postgres_bin.as_ref().map(|p| p.get_ref().into()),
            managed,
            probe_interval: probe_interval?,
            refresh_debounce: refresh_debounce?,
            max_incremental: max_incremental?,
            password: Secret::new(password),
            schemas: raw.schemas.iter().map(|s| s.to_lowercase()).collect(),
            allowed_functions: raw
                .allowed_functions
                .iter()
                .map(|s| s.to_lowercase())
                .collect(),
            pool_size: pool_size?,
            acquire_timeout: acquire_timeout?,
            connect_timeout: connect_timeout?,
            retry_after: retry_after?,
            answer_timeout: answer_timeout?,
            sync_interval: sync_interval?,
            cache_size: cache_size?,
            max_parse_size: max_parse_size?,
        })
    }

    fn cluster(&mut self, raw: raw::RawCluster) -> Option<Cluster> {
        let max_id = crate::cancel::MAX_INSTANCE_ID as i64;
        let key = "cluster.instance_id";
        let span = raw.instance_id.span();
        let number = match raw.instance_id.get_ref() {
            raw::RawInstanceId::Number(n) => Some(*n),
            raw::RawInstanceId::Text(t) if t == "hostname" => {
                let host = hostname();
                match ordinal_instance_id(&host) {
                    Some(n) => Some(n),
                    None => {
                        self.problem(
                            span.clone(),
                            key,
                            format!(
                                "\"hostname\" takes the number after the last '-' of the host name \
                                 (StatefulSet pod \"sluice-0\" is instance 1), but the host name is {host:?}"
                            ),
                        );
                        None
                    }
                }
            }
            raw::RawInstanceId::Text(t) => {
                self.problem(
                    span.clone(),
                    key,
                    format!("{t:?} is neither a number (1-{max_id}) nor \"hostname\""),
                );
                None
            }
        };
        let instance_id =
            number.and_then(|n| self.count(key, &Spanned::new(span.clone(), n), 1, max_id));
        let mut peers: Vec<String> = Vec::new();
        let mut peers_ok = true;
        for (i, peer) in raw.peers.iter().enumerate() {
            let key = format!("cluster.peers[{i}]");
            match node_address_problem(peer.get_ref()) {
                Some(why) => {
                    self.problem(peer.span(), &key, why);
                    peers_ok = false;
                }
                None if peers.contains(peer.get_ref()) => {
                    self.problem(
                        peer.span(),
                        &key,
                        format!("{:?} is listed twice", peer.get_ref()),
                    );
                    peers_ok = false;
                }
                None => peers.push(peer.get_ref().clone()),
            }
        }
        let rate = self.count(
            "cluster.cancel_forward_rate",
            &raw.cancel_forward_rate,
            1,
            1_000_000,
        );
        let burst = self.count(
            "cluster.cancel_forward_burst",
            &raw.cancel_forward_burst,
            1,
            1_000_000,
        );
        let timeout = self.duration(
            "cluster.cancel_forward_timeout",
            &raw.cancel_forward_timeout,
        );
        if !peers_ok {
            return None;
        }
        Some(Cluster {
            instance_id: instance_id? as u8,
            peers,
            cancel_forward_rate: rate? as u32,
            cancel_forward_burst: burst? as u32,
            cancel_forward_timeout: timeout?,
        })
    }
}

/// This machine's host name (a pod's name in Kubernetes).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it or truncates, and we stop at the first NUL either way.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The instance id of a StatefulSet pod: its ordinal plus one.
fn ordinal_instance_id(host: &str) -> Option<i64> {
    let (_, ordinal) = host.rsplit_once('-')?;
    ordinal.parse::<i64>().ok().map(|n| n + 1)
}

/// Why `addr` is not a usable `host:port`, if it is not.
fn node_address_problem(addr: &str) -> Option<String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Some(format!("{addr:?} has no port; write \"host:port\""));
    };
    if host.is_empty() {
        return Some(format!("{addr:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => None,
        _ => Some(format!("{addr:?} has no valid port (1-65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse(src, "sluice.toml", Path::new("."))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[warehouse]\nnodes = [\"127.0.0.1:5441\"]\n").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:5433");
        assert_eq!(c.server.max_message_size, 64 << 20);
        assert_eq!(c.warehouse.health_check_interval, Duration::from_secs(2));
        assert_eq!(c.warehouse.dialect, Dialect::Postgres);
        assert_eq!(c.warehouse.tls.mode, NodeTlsMode::Disable);
        assert_eq!(c.server.max_client_connections_per_user, None);
        assert_eq!((c.server.cancel_rate, c.server.cancel_burst), (100, 200));
    }

    #[test]
    fn hardening_limits_are_read_and_checked() {
        let c = parse(
            "[server]\nmax_client_connections_per_user = 20\ncancel_rate = 5\ncancel_burst = 10\n\
             [warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"host=h user=u\"\nmax_parse_size = 4096\n",
        )
        .unwrap();
        assert_eq!(c.server.max_client_connections_per_user, Some(20));
        assert_eq!((c.server.cancel_rate, c.server.cancel_burst), (5, 10));
        assert_eq!(c.catalog.unwrap().max_parse_size, 4096);
        let err = parse(
            "[server]\nmax_client_connections_per_user = 0\ncancel_rate = -1\n\
             [warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"host=h user=u\"\nmax_parse_size = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(":2: server.max_client_connections_per_user: must be between 1"),
            "{err}"
        );
        assert!(err.contains(":3: server.cancel_rate:"), "{err}");
        assert!(err.contains(":8: catalog.max_parse_size:"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_line_and_key() {
        let src = "[server]\nlisten = \"nowhere\"\ndrain_timeout = \"soon\"\n\n[warehouse]\ndialect = \"oracle\"\nnodes = [\"127.0.0.1:5441\", \"db\", \"127.0.0.1:5441\"]\n";
        let err = parse(src).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sluice.toml:2: server.listen:"), "{text}");
        assert!(
            text.contains("sluice.toml:3: server.drain_timeout:"),
            "{text}"
        );
        assert!(
            text.contains("sluice.toml:6: warehouse.dialect: \"oracle\" is not one of"),
            "{text}"
        );
        assert!(
            text.contains("sluice.toml:7: warehouse.nodes[1]: \"db\" has no port"),
            "{text}"
        );
        assert!(
            text.contains("warehouse.nodes[2]: \"127.0.0.1:5441\" is listed twice"),
            "{text}"
        );
        assert_eq!(err.problems.len(), 5);
    }

    #[test]
    fn unknown_keys_and_syntax_errors_name_their_line() {
        let err = parse("[warehouse]\nnodes = [\"a:1\"]\nnode_list = 3\n").unwrap_err();
        assert_eq!(err.problems[0].line, Some(3));
        assert!(err.problems[0].message.contains("node_list"), "{err}");
        let err = parse("[warehouse\n").unwrap_err();
        assert_eq!(err.problems[0].line, Some(1));
    }

    #[test]
    fn catalog_section_is_validated() {
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"host=127.0.0.1 port=5440 user=sluice password=pw\"\n").unwrap();
        let cat = c.catalog.unwrap();
        assert_eq!(
            (cat.host.as_str(), cat.port, cat.user.as_str()),
            ("127.0.0.1", 5440, "sluice")
        );
        assert_eq!(cat.password.expose(), "pw");
        assert_eq!(
            cat.schemas,
            ["pg_catalog", "information_schema", "v_catalog"]
        );
        assert!(cat.sync_interval.is_none());
        assert_eq!(cat.dialect, Dialect::Postgres);
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\ndialect = \"vertica\"\n[catalog]\ndsn = \"host=h user=u\"\n").unwrap();
        assert_eq!(
            c.catalog.unwrap().dialect,
            Dialect::Vertica,
            "defaults to the warehouse's"
        );
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"host=h user=u\"\ndialect = \"vertica\"\n").unwrap();
        assert_eq!(c.catalog.unwrap().dialect, Dialect::Vertica);
        let err = parse("[warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"host=h user=u\"\ndialect = \"db2\"\n").unwrap_err();
        assert!(
            err.to_string()
                .contains(":5: catalog.dialect: \"db2\" is not one of"),
            "{err}"
        );
        let err = parse(
            "[warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"port=5440\"\npool_size = 0\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(":4: catalog.dsn: needs host="), "{text}");
        assert!(text.contains(":5: catalog.pool_size:"), "{text}");
    }

    #[test]
    fn missing_warehouse_is_explained() {
        let err = parse("").unwrap_err();
        assert!(err.to_string().contains("warehouse: missing section"));
    }

    #[test]
    fn admin_and_alerts_default_to_off() {
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\n").unwrap();
        assert_eq!(c.admin.auth, AdminAuth::Scram);
        assert!(c.admin.users.is_empty());
        assert!(c.alerts.slack_webhook_url.is_none());
        assert_eq!(c.alerts.cooldown, Duration::from_secs(600));
        assert!(c.alerts.events.node_down);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn admin_users_and_thresholds_are_validated_with_line_and_key() {
        let verifier = postgres_protocol::password::scram_sha_256(b"pw");
        let src = format!(
            "[warehouse]\nnodes = [\"a:1\"]\n\
             [admin]\nauth = \"scram\"\n\
             [[admin.users]]\nname = \"ops\"\npassword = \"{verifier}\"\n\
             [[admin.users]]\nname = \"dev\"\npassword = \"plain\"\n\
             [alerts]\nslack_webhook_url = \"http://127.0.0.1:9/hook-secret\"\ncooldown = \"1m\"\n\
             [[alerts.thresholds]]\nname = \"blocked\"\nmetric = \"rejected_queries\"\nwindow = \"5m\"\nabove = 20\nfor = \"1m\"\n"
        );
        let c = parse(&src).unwrap();
        assert_eq!(c.admin.users.len(), 2);
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].key, "admin.users[1].password");
        assert_eq!(c.warnings[0].line, Some(10));
        let t = &c.alerts.thresholds[0];
        assert_eq!(t.metric, ThresholdMetric::RejectedQueries);
        assert_eq!(t.condition, Condition::Above(20.0));
        assert_eq!(t.hold, Duration::from_secs(60));
        assert!(
            !format!("{c:?}").contains("hook-secret"),
            "the webhook URL is a secret"
        );

        let bad = "[warehouse]\nnodes = [\"a:1\"]\n\
             [admin]\nauth = \"none\"\n\
             [[admin.users]]\nname = \"ops\"\npassword = \"SCRAM-SHA-256$x\"\n\
             [alerts]\nslack_webhook_url = \"hooks.slack.com/secret-part\"\n\
             [[alerts.thresholds]]\nname = \"t\"\nmetric = \"cpu\"\nabove = 1\nbelow = 2\n\
             [[alerts.thresholds]]\nname = \"t\"\nmetric = \"errors\"\n";
        let err = parse(bad).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("sluice.toml:4: admin.auth: \"none\" is not one of"),
            "{text}"
        );
        assert!(
            text.contains(
                "sluice.toml:7: admin.users[0].password: is not a SCRAM-SHA-256 verifier"
            ),
            "{text}"
        );
        assert!(
            text.contains("sluice.toml:9: alerts.slack_webhook_url: is not an http"),
            "{text}"
        );
        assert!(!text.contains("secret-part"), "{text}");
        assert!(
            text.contains("sluice.toml:12: alerts.thresholds[0].metric: \"cpu\" is not one of"),
            "{text}"
        );
        assert!(
            text.contains("sluice.toml:14: alerts.thresholds[0]: has both above and below"),
            "{text}"
        );
        assert!(
            text.contains("sluice.toml:16: alerts.thresholds[1].name: \"t\" is used by another"),
            "{text}"
        );
        assert!(
            text.contains("alerts.thresholds[1]: needs above = N or below = N"),
            "{text}"
        );
    }

    #[test]
    fn cluster_keys_are_checked() {
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\n").unwrap();
        assert_eq!(c.cluster.instance_id, 1);
        assert!(c.cluster.peers.is_empty());
        assert!(c.server.watch_config);
        let c = parse(
            "[warehouse]\nnodes = [\"a:1\"]\n[cluster]\ninstance_id = 2\npeers = [\"sluice.ns.svc:5433\", \"10.0.0.1:5433\"]\n",
        )
        .unwrap();
        assert_eq!(c.cluster.instance_id, 2);
        assert_eq!(c.cluster.peers.len(), 2);
        let err = parse(
            "[warehouse]\nnodes = [\"a:1\"]\n[cluster]\ninstance_id = 0\npeers = [\"b\"]\ncancel_forward_rate = 0\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(":4: cluster.instance_id: must be between 1 and 255, not 0"),
            "{text}"
        );
        assert!(
            text.contains(":5: cluster.peers[0]: \"b\" has no port"),
            "{text}"
        );
        assert!(text.contains(":6: cluster.cancel_forward_rate:"), "{text}");
    }

    #[test]
    fn instance_ids_can_come_from_a_statefulset_pod_name() {
        assert_eq!(ordinal_instance_id("sluice-0"), Some(1));
        assert_eq!(ordinal_instance_id("my-sluice-12"), Some(13));
        assert_eq!(ordinal_instance_id("sluice-7d9f8-abcde"), None);
        assert_eq!(ordinal_instance_id("sluice"), None);
        let err = parse("[warehouse]\nnodes = [\"a:1\"]\n[cluster]\ninstance_id = \"two\"\n")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains(":4: cluster.instance_id: \"two\" is neither"),
            "{err}"
        );
    }

    #[test]
    fn the_service_password_may_come_from_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
        let src = "[warehouse]\nnodes = [\"a:1\"]\nservice_password_file = \"pw\"\n";
        let c = Config::parse(src, "sluice.toml", &dir).unwrap();
        assert_eq!(c.warehouse.service_password.expose(), "s3cret");
        assert_eq!(c.referenced_files(), vec![dir.join("pw")]);
        let src = "[warehouse]\nnodes = [\"a:1\"]\nservice_password = \"x\"\nservice_password_file = \"pw\"\n";
        let err = Config::parse(src, "sluice.toml", &dir).unwrap_err();
        assert!(err.to_string().contains("keep only one of them"), "{err}");
        let src = "[warehouse]\nnodes = [\"a:1\"]\nservice_password_file = \"missing\"\n";
        let err = Config::parse(src, "sluice.toml", &dir).unwrap_err();
        assert!(
            err.to_string()
                .contains("sluice.toml:3: warehouse.service_password_file: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\nservice_password = \"hunter2\"\n").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.warehouse.service_password.expose(), "hunter2");
    }
}
