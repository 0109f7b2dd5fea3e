//! A configuration generation: one configuration and the objects built from
//! it (TLS acceptor, node connector, classifier, catalog pool). Reload
//! builds a new generation beside the old one and publishes it; each
//! session keeps the generation it started with, so a reload never
//! disturbs an open session. Long-running tasks read the latest through
//! [`Generations`].

use std::sync::Arc;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::backend::connect::NodeConnector;
use crate::catalog::managed::ManagedCopy;
use crate::catalog::{CatalogPool, Freshness};
use crate::classify::{CatalogPolicy, ClassificationCache};
use crate::cluster::TokenBucket;
use crate::config::{ClientTlsMode, Config};
use crate::tls::{self, TlsError};

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
#[derive(Clone, Debug, Default)]
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

/// The generation in effect, as long-running tasks (health checks, alerts,
/// the catalog refresher, the admin console) read it after each reload.
#[derive(Clone)]
pub struct Generations(watch::Receiver<Arc<Generation>>);

impl Generations {
    pub fn new(receiver: watch::Receiver<Arc<Generation>>) -> Generations {
        Generations(receiver)
    }

    /// The generation new sessions start with.
    pub fn current(&self) -> Arc<Generation> {
        self.0.borrow().clone()
    }
}

impl crate::config::Current for Generations {
    fn config(&self) -> Arc<Config> {
        self.0.borrow().config.clone()
    }
}

impl crate::catalog::refresh::Current for Generations {
    fn pool(&self) -> Option<Arc<CatalogPool>> {
        self.0.borrow().catalog.clone()
    }
}
