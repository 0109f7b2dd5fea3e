//! The running proxy: start-up, reload and shutdown. The top of the module
//! graph: it builds every part and hands each the few things it uses (the
//! client side its [`Frontend`], the admin console its [`Console`], the
//! HTTP endpoints, health checks, alerts and the catalog refresher theirs);
//! nothing but `main.rs` and the demo imports it.
//!
//! Each reload publishes a new [`Generation`] (see [`crate::generation`]);
//! each session keeps the generation it started with, so a reload never
//! disturbs an open session.
//!
//! Reload happens on SIGHUP and, with `server.watch_config`, when the
//! config file or a file it names changes: [`watch_config`] polls their
//! contents, which also sees Kubernetes swapping a ConfigMap's `..data`
//! symlink (inotify on the file itself would not).
//!
//! Shutdown has two speeds. Draining (SIGTERM) refuses new sessions with
//! 57P03 and waits up to `server.drain_timeout` for open ones to end; then,
//! or at once on SIGINT, the `kill` token closes every session.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Console;
use crate::alerts::Alerts;
use crate::backend::{Node, NodeSet};
use crate::cancel::CancelRegistry;
use crate::catalog::managed::ManagedCopy;
use crate::config::Config;
use crate::frontend::Frontend;
use crate::generation::{CatalogCopy, Generation, Generations};
use crate::health;
use crate::metrics::Metrics;
use crate::stats::QueryStats;
use crate::tls::TlsError;

/// How often histogram samples are folded (see [`Metrics::run_upkeep`]).
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the catalog copy cannot be used: {0}")]
    Catalog(String),
}

/// One running sluice: the parts it built, and what only start-up, reload
/// and shutdown need.
pub struct Sluice {
    generations: watch::Sender<Arc<Generation>>,
    /// The client side's view: nodes, sessions, cancels, statistics.
    pub frontend: Arc<Frontend>,
    /// The catalog copy's freshness and the managed copy.
    pub catalog_copy: CatalogCopy,
    /// Ends background tasks (health checks, HTTP).
    stop: CancellationToken,
    config_path: Option<PathBuf>,
    /// The managed copy's supervisor, awaited at stop (it stops the copy).
    copy_supervisor: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Starts the managed catalog copy when `[catalog]` names no `dsn`, after
/// checking that its binaries can hold the warehouse's catalog; checks an
/// external copy for a PostgreSQL warehouse is in binary-upgrade mode.
async fn start_catalog_copy(config: &Config) -> Result<CatalogCopy, StartError> {
    let mut copy = CatalogCopy::default();
    let Some(catalog) = &config.catalog else {
        return Ok(copy);
    };
    match crate::catalog::managed::check(config).await {
        crate::catalog::managed::Verdict::Fine(note) => tracing::info!("{note}"),
        crate::catalog::managed::Verdict::Unsure(note) => tracing::warn!("{note}"),
        crate::catalog::managed::Verdict::Refused(why) => return Err(StartError::Catalog(why)),
    }
    if let Some(settings) = catalog.managed.clone() {
        let catalog = catalog.clone();
        let started = tokio::task::spawn_blocking(move || ManagedCopy::start(&settings, &catalog))
            .await
            .map_err(|e| StartError::Catalog(e.to_string()))?
            .map_err(|e| {
                StartError::Catalog(format!("the managed catalog copy did not start: {e}"))
            })?;
        copy.managed = Some(Arc::new(started));
    }
    Ok(copy)
}

impl Sluice {
    /// The configuration generation new sessions start with.
    pub fn generation(&self) -> Arc<Generation> {
        self.generations.borrow().clone()
    }

    fn start_health_checks(&self, nodes: Vec<Arc<Node>>) {
        for node in nodes {
            tokio::spawn(health::run(
                node,
                Generations::new(self.generations.subscribe()),
                self.frontend.alerts.clone(),
                self.stop.clone(),
            ));
        }
    }

    /// Puts a new configuration into effect for new sessions.
    pub fn reload(&self, config: Config) -> Result<(), TlsError> {
        let old = self.generation();
        for (key, changed) in [
            (
                "server.listen",
                old.config.server.listen != config.server.listen,
            ),
            (
                "server.metrics_listen",
                old.config.server.metrics_listen != config.server.metrics_listen,
            ),
            (
                "cluster.instance_id",
                old.config.cluster.instance_id != config.cluster.instance_id,
            ),
        ] {
            if changed {
                tracing::warn!(
                    key,
                    "this key changed but takes effect only after a restart"
                );
            }
        }
        let generation = Generation::new(config, &self.catalog_copy)?;
        let joined = self
            .frontend
            .nodes
            .replace(&generation.config.warehouse.nodes);
        self.frontend
            .nodes
            .set_cap(generation.config.pooling.max_node_connections);
        let nodes = generation.config.warehouse.nodes.len();
        self.generations.send_replace(Arc::new(generation));
        self.start_health_checks(joined);
        tracing::info!(
            nodes,
            rules = self.generation().config.rules.rules().len(),
            "configuration reloaded"
        );
        Ok(())
    }

    /// Reloads the file sluice was started with; a bad file changes nothing.
    pub fn reload_from_file(&self) {
        if let Err(e) = self.try_reload_from_file() {
            tracing::error!("reload refused; the running configuration stays in effect:\n{e}");
        }
    }

    /// Reloads the file; returns the number of nodes, or every problem found.
    pub fn try_reload_from_file(&self) -> Result<usize, String> {
        let Some(path) = &self.config_path else {
            return Err("sluice was not started from a config file".into());
        };
        let config = Config::load(path).map_err(|e| e.to_string())?;
        log_warnings(&config);
        let nodes = config.warehouse.nodes.len();
        self.reload(config).map_err(|e| e.to_string())?;
        Ok(nodes)
    }
}

/// What the configuration's files contain: the config file and every file
/// it names. A file that cannot be read counts as its error, so that its
/// coming back is a change too.
async fn config_fingerprint(path: &std::path::Path, config: &Config) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    let mut files = vec![path.to_path_buf()];
    files.extend(config.referenced_files());
    for file in files {
        match tokio::fs::read(&file).await {
            Ok(bytes) => bytes.hash(&mut hasher),
            Err(e) => e.kind().hash(&mut hasher),
        }
    }
    hasher.finish()
}

/// Reloads when the configuration's files change (`server.watch_config`),
/// checking every `server.watch_interval`. A half-written file is refused
/// like any bad file, and the finished one differs from it, so it is
/// reloaded on the next check.
pub async fn watch_config(sluice: Arc<Sluice>, path: PathBuf, stop: CancellationToken) {
    let mut seen = config_fingerprint(&path, &sluice.generation().config).await;
    loop {
        let interval = sluice.generation().config.server.watch_interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        let config = sluice.generation().config.clone();
        let now = config_fingerprint(&path, &config).await;
        if now == seen {
            continue;
        }
        seen = now;
        if !config.server.watch_config {
            continue;
        }
        tracing::info!(path = %path.display(), "the configuration files changed: reloading");
        sluice.reload_from_file();
        // A reload may name other files: fingerprint what is now in effect.
        seen = config_fingerprint(&path, &sluice.generation().config).await;
    }
}

/// A started sluice and the addresses it listens on.
pub struct Running {
    pub sluice: Arc<Sluice>,
    pub listen_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
}

/// Binds the listeners and starts serving.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, StartError> {
    let bind = |key: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { key, addr, source })
    };
    let listener = bind("server.listen", config.server.listen).await?;
    let metrics_listener = match config.server.metrics_listen {
        Some(addr) => Some(bind("server.metrics_listen", addr).await?),
        None => None,
    };
    log_warnings(&config);
    let listen_addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let catalog_copy = start_catalog_copy(&config).await?;
    let generation = Arc::new(Generation::new(config, &catalog_copy)?);
    let (generations, _) = watch::channel(generation.clone());
    let metrics = Arc::new(Metrics::new());
    let alerts = Arc::new(Alerts::new(
        generation.config.alerts.queue_size,
        metrics.clone(),
    ));
    let nodes = Arc::new(NodeSet::with_metrics(metrics.clone()));
    // Query statistics are sized at start (`stats.max_fingerprints` takes
    // effect on restart).
    let stats = Arc::new(QueryStats::new(generation.config.stats.max_fingerprints));
    let registry = Arc::default();
    let kill = CancellationToken::new();
    let (for_console, for_frontend) = (
        Generations::new(generations.subscribe()),
        Generations::new(generations.subscribe()),
    );
    let sluice = Arc::new_cyclic(|me: &std::sync::Weak<Sluice>| {
        let me = me.clone();
        let console = Arc::new(Console {
            nodes: nodes.clone(),
            registry: Arc::clone(&registry),
            metrics: metrics.clone(),
            stats: stats.clone(),
            alerts: alerts.clone(),
            catalog_copy: catalog_copy.clone(),
            generations: for_console,
            kill: kill.clone(),
            reload: Box::new(move || match me.upgrade() {
                Some(sluice) => sluice.try_reload_from_file(),
                None => Err("sluice is stopping".into()),
            }),
        });
        let frontend = Arc::new(Frontend {
            generations: for_frontend,
            nodes,
            cancels: Arc::new(CancelRegistry::new(generation.config.cluster.instance_id)),
            registry,
            metrics,
            stats,
            alerts,
            secrets: Default::default(),
            greetings: Default::default(),
            console,
            listen_addr,
            clients: AtomicUsize::new(0),
            clients_by_user: DashMap::new(),
            sessions: TaskTracker::new(),
            draining: CancellationToken::new(),
            kill,
        });
        Sluice {
            generations,
            frontend,
            catalog_copy,
            stop: CancellationToken::new(),
            config_path,
            copy_supervisor: std::sync::Mutex::new(None),
        }
    });
    let frontend = &sluice.frontend;
    let joined = frontend.nodes.replace(&generation.config.warehouse.nodes);
    frontend
        .nodes
        .set_cap(generation.config.pooling.max_node_connections);
    sluice.start_health_checks(joined);
    if generation.config.catalog.is_some() {
        let ctx = crate::catalog::refresh::Context {
            freshness: sluice.catalog_copy.freshness.clone(),
            metrics: frontend.metrics.clone(),
            alerts: frontend.alerts.clone(),
        };
        tokio::spawn(crate::catalog::refresh::Refresher::new().run(
            ctx,
            Generations::new(sluice.generations.subscribe()),
            sluice.stop.clone(),
        ));
    }
    if let Some(managed) = &sluice.catalog_copy.managed {
        let supervised = tokio::spawn(crate::catalog::managed::supervise(
            managed.clone(),
            sluice.catalog_copy.freshness.clone(),
            frontend.alerts.clone(),
            sluice.stop.clone(),
        ));
        sluice
            .copy_supervisor
            .lock()
            .expect("supervisor lock")
            .replace(supervised);
    }
    let gauges = {
        let frontend = frontend.clone();
        move || crate::alerts::thresholds::Gauges {
            client_connections: frontend.clients.load(Ordering::Relaxed) as u64,
            healthy_nodes: frontend.nodes.healthy_count() as u64,
        }
    };
    tokio::spawn(crate::alerts::run(
        frontend.alerts.clone(),
        Generations::new(sluice.generations.subscribe()),
        gauges,
        sluice.stop.clone(),
    ));
    tokio::spawn(metrics_upkeep(
        frontend.metrics.clone(),
        sluice.stop.clone(),
    ));
    if let Some(path) = sluice.config_path.clone() {
        tokio::spawn(watch_config(sluice.clone(), path, sluice.stop.clone()));
    }

    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    tokio::spawn(crate::frontend::listener::accept_loop(
        frontend.clone(),
        listener,
    ));
    if let Some(l) = metrics_listener {
        let endpoints = crate::http::Endpoints {
            metrics: frontend.metrics.clone(),
            freshness: sluice.catalog_copy.freshness.clone(),
            stats: frontend.stats.clone(),
            not_ready: {
                let frontend = frontend.clone();
                Box::new(move || frontend.not_ready_reason())
            },
        };
        tokio::spawn(crate::http::serve(
            Arc::new(endpoints),
            l,
            sluice.stop.clone(),
        ));
    }
    tracing::info!(listen = %listen_addr, metrics = ?metrics_addr,
        nodes = ?generation.config.warehouse.nodes,
        instance_id = generation.config.cluster.instance_id,
        peers = ?generation.config.cluster.peers, "sluice is serving");
    Ok(Running {
        sluice,
        listen_addr,
        metrics_addr,
    })
}

/// Folds histogram samples every few seconds, so a scrape stays cheap
/// however many queries ran since the last one.
async fn metrics_upkeep(metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP);
    loop {
        tokio::select! {
            _ = tick.tick() => metrics.run_upkeep(),
            _ = stop.cancelled() => return,
        }
    }
}

fn log_warnings(config: &Config) {
    for w in &config.warnings {
        tracing::warn!(key = w.key, line = w.line, "{}", w.message);
    }
}

impl Running {
    /// Serves until SIGTERM (drain) or SIGINT (stop now); SIGHUP reloads.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    self.sluice.reload_from_file();
                }
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM: draining");
                    self.drain().await;
                    return Ok(());
                }
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT: stopping now");
                    self.stop_now().await;
                    return Ok(());
                }
            }
        }
    }

    /// Refuses new sessions and waits for open ones, up to the drain timeout.
    pub async fn drain(&self) {
        let s = &self.sluice.frontend;
        s.draining.cancel();
        s.sessions.close();
        let timeout = self.sluice.generation().config.server.drain_timeout;
        let open = s.clients.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(open, ?timeout, "waiting for open sessions to end");
        if tokio::time::timeout(timeout, s.sessions.wait())
            .await
            .is_err()
        {
            let open = s.clients.load(std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(open, "drain timeout passed; closing the remaining sessions");
        }
        self.stop_now().await;
    }

    /// Closes every session and stops.
    pub async fn stop_now(&self) {
        let s = &self.sluice;
        let f = &s.frontend;
        f.draining.cancel();
        f.kill.cancel();
        f.sessions.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), f.sessions.wait()).await;
        s.stop.cancel();
        let supervisor = s.copy_supervisor.lock().expect("supervisor lock").take();
        if let Some(supervisor) = supervisor {
            // It stops the managed catalog copy on its way out.
            let _ = tokio::time::timeout(Duration::from_secs(70), supervisor).await;
        }
        tracing::info!("sluice stopped");
    }
}
