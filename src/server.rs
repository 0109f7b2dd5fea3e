//! The running proxy: its shared state, start-up, reload and shutdown.
//!
//! A [`Generation`] is one configuration with the objects built from it (TLS
//! acceptor, node connector). Reload builds a new generation beside the old
//! one and publishes it; each session keeps the generation it started with,
//! so a reload never disturbs an open session.
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
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::Alerts;
use crate::backend::connect::NodeConnector;
use crate::backend::{Node, NodeSet, health};
use crate::cancel::CancelRegistry;
use crate::catalog::managed::ManagedCopy;
use crate::catalog::{CatalogPool, Freshness};
use crate::classify::{CatalogPolicy, ClassificationCache};
use crate::cluster::TokenBucket;
use crate::config::{ClientTlsMode, Config};
use crate::frontend::registry::SessionRegistry;
use crate::metrics::Metrics;
use crate::stats::QueryStats;
use crate::tls::{self, TlsError};

/// How often histogram samples are folded (see [`Metrics::run_upkeep`]).
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Classifications cached without a `[catalog]` section (which sets its own).
const DEFAULT_CLASSIFICATION_CACHE: usize = 10_000;

/// One configuration and what is built from it.
pub struct Generation {
    pub config: Arc<Config>,
    pub node_connector: NodeConnector,
    /// `None` when client TLS is not configured or disabled.
    pub client_tls: Option<TlsAcceptor>,
    /// Bounds the cancel requests forwarded to cluster peers.
    pub cancel_forwarding: TokenBucket,
    /// Query classifications by text.
    pub classifier: Option<Arc<ClassificationCache>>,
    /// The catalog copy's connections; `None` without `[catalog]`.
    pub catalog: Option<Arc<CatalogPool>>,
    /// Bounds the cancel requests sent to nodes (`server.cancel_rate`).
    pub cancel_to_nodes: TokenBucket,
}

/// The catalog copy's parts that outlive a configuration: whether each
/// database is current, and the copy sluice runs itself, if it does.
#[derive(Debug, Default)]
pub struct CatalogCopy {
    pub freshness: Arc<Freshness>,
    pub managed: Option<Arc<ManagedCopy>>,
}

impl Generation {
    pub fn new(mut config: Config, copy: &CatalogCopy) -> Result<Generation, TlsError> {
        if let Some(catalog) = config.catalog.as_mut()
            && catalog.managed.is_some()
        {
            match &copy.managed {
                Some(managed) => catalog.port = managed.port(),
                None => {
                    tracing::warn!(
                        "[catalog] without dsn asks for a managed catalog copy, which starts only with sluice: \
                         catalog lookups go to the nodes until sluice is restarted"
                    );
                    config.catalog = None;
                }
            }
        }
        let client_tls = match &config.server.tls {
            Some(t) if t.mode != ClientTlsMode::Disable => Some(tls::acceptor(&t.cert, &t.key)?),
            _ => None,
        };
        // Every query is classified: rules and statistics need its shape
        // and fingerprint even without a catalog copy.
        let classifier = Some(Arc::new(match &config.catalog {
            Some(c) => ClassificationCache::new(
                c.cache_size,
                CatalogPolicy {
                    schemas: c.schemas.clone(),
                    allowed_functions: c.allowed_functions.clone(),
                },
            )
            .with_max_parse_size(c.max_parse_size),
            None => {
                ClassificationCache::new(DEFAULT_CLASSIFICATION_CACHE, CatalogPolicy::default())
            }
        }));
        let catalog = config
            .catalog
            .clone()
            .map(|c| Arc::new(CatalogPool::new(c, copy.freshness.clone())));
        Ok(Generation {
            classifier,
            catalog,
            node_connector: NodeConnector::new(&config.warehouse)?,
            client_tls,
            cancel_forwarding: TokenBucket::new(
                config.cluster.cancel_forward_rate,
                config.cluster.cancel_forward_burst,
            ),
            cancel_to_nodes: TokenBucket::new(
                config.server.cancel_rate,
                config.server.cancel_burst,
            ),
            config: Arc::new(config),
        })
    }
}

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

/// State shared by every task of one running sluice.
pub struct Sluice {
    generations: watch::Sender<Arc<Generation>>,
    pub nodes: NodeSet,
    pub cancels: Arc<CancelRegistry>,
    /// The client listener's address, as bound.
    pub listen_addr: SocketAddr,
    /// Client sessions now open.
    pub clients: AtomicUsize,
    /// Client sessions now open, by user (for `server.max_client_connections_per_user`).
    pub clients_by_user: DashMap<String, usize>,
    /// Open sessions by id, for the admin console.
    pub registry: Arc<SessionRegistry>,
    pub metrics: Arc<Metrics>,
    /// Query statistics by fingerprint (`SHOW QUERIES`, `/queries`); sized
    /// at start (`stats.max_fingerprints` takes effect on restart).
    pub stats: Arc<QueryStats>,
    pub alerts: Arc<Alerts>,
    /// The catalog copy's freshness and the managed copy.
    pub catalog_copy: CatalogCopy,
    /// Session tasks, waited for when draining.
    pub sessions: TaskTracker,
    /// Set when draining starts: new sessions are refused.
    draining: CancellationToken,
    /// Ends every session and the accept loop.
    pub kill: CancellationToken,
    /// Ends background tasks (health checks, HTTP).
    stop: CancellationToken,
    config_path: Option<PathBuf>,
    /// The managed copy's supervisor, awaited at stop (it stops the copy).
    copy_supervisor: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The refresher's view of the configuration in effect.
struct Generations(watch::Receiver<Arc<Generation>>);

impl crate::catalog::refresh::Current for Generations {
    fn config(&self) -> Arc<Config> {
        self.0.borrow().config.clone()
    }
    fn pool(&self) -> Option<Arc<CatalogPool>> {
        self.0.borrow().catalog.clone()
    }
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

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Why sluice should not get new clients now, if it should not.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.is_draining() {
            return Some("draining for shutdown".into());
        }
        if self.nodes.healthy_count() == 0 {
            return Some(format!(
                "none of the {} warehouse nodes is healthy",
                self.nodes.all().len()
            ));
        }
        None
    }

    fn start_health_checks(&self, nodes: Vec<Arc<Node>>) {
        for node in nodes {
            tokio::spawn(health::run(
                node,
                self.generations.subscribe(),
                self.alerts.clone(),
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
        let joined = self.nodes.replace(&generation.config.warehouse.nodes);
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
    let sluice = Arc::new(Sluice {
        generations,
        nodes: NodeSet::with_metrics(metrics.clone()),
        cancels: Arc::new(CancelRegistry::new(generation.config.cluster.instance_id)),
        listen_addr,
        clients: AtomicUsize::new(0),
        clients_by_user: DashMap::new(),
        registry: Arc::default(),
        metrics,
        stats: Arc::new(QueryStats::new(generation.config.stats.max_fingerprints)),
        alerts,
        catalog_copy,
        sessions: TaskTracker::new(),
        draining: CancellationToken::new(),
        kill: CancellationToken::new(),
        stop: CancellationToken::new(),
        config_path,
        copy_supervisor: std::sync::Mutex::new(None),
    });
    let joined = sluice.nodes.replace(&generation.config.warehouse.nodes);
    sluice.start_health_checks(joined);
    if generation.config.catalog.is_some() {
        let ctx = crate::catalog::refresh::Context {
            freshness: sluice.catalog_copy.freshness.clone(),
            metrics: sluice.metrics.clone(),
            alerts: sluice.alerts.clone(),
        };
        tokio::spawn(crate::catalog::refresh::Refresher::new().run(
            ctx,
            Generations(sluice.generations.subscribe()),
            sluice.stop.clone(),
        ));
    }
    if let Some(managed) = &sluice.catalog_copy.managed {
        let supervised = tokio::spawn(crate::catalog::managed::supervise(
            managed.clone(),
            sluice.catalog_copy.freshness.clone(),
            sluice.alerts.clone(),
            sluice.stop.clone(),
        ));
        sluice
            .copy_supervisor
            .lock()
            .expect("supervisor lock")
            .replace(supervised);
    }
    tokio::spawn(crate::alerts::run(
        sluice.clone(),
        sluice.generations.subscribe(),
        sluice.stop.clone(),
    ));
    tokio::spawn(metrics_upkeep(sluice.metrics.clone(), sluice.stop.clone()));
    if let Some(path) = sluice.config_path.clone() {
        tokio::spawn(watch_config(sluice.clone(), path, sluice.stop.clone()));
    }

    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    tokio::spawn(crate::frontend::listener::accept_loop(
        sluice.clone(),
        listener,
    ));
    if let Some(l) = metrics_listener {
        tokio::spawn(crate::http::serve(sluice.clone(), l, sluice.stop.clone()));
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
        let s = &self.sluice;
        s.draining.cancel();
        s.sessions.close();
        let timeout = s.generation().config.server.drain_timeout;
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
        s.draining.cancel();
        s.kill.cancel();
        s.sessions.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.sessions.wait()).await;
        s.stop.cancel();
        let supervisor = s.copy_supervisor.lock().expect("supervisor lock").take();
        if let Some(supervisor) = supervisor {
            // It stops the managed catalog copy on its way out.
            let _ = tokio::time::timeout(Duration::from_secs(70), supervisor).await;
        }
        tracing::info!("sluice stopped");
    }
}
