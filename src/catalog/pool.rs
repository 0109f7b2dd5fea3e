//! Catalog copy connections, pooled by database and leased per lookup.
//!
//! At most `pool_size` connections exist; a lookup that cannot get one within
//! `acquire_timeout` is answered by the node instead. When connecting fails,
//! the pool rests for `retry_after`: lookups go straight to the nodes rather
//! than each waiting on a dead copy. A sync's swap takes every permit, so no
//! lookup runs while databases are renamed under it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{CatalogConn, CatalogError, Freshness};
use crate::config::Catalog;

pub struct CatalogPool {
    settings: Catalog,
    /// Whether each database of the copy may answer (shared by every
    /// generation of one running sluice).
    freshness: Arc<Freshness>,
    idle: Mutex<HashMap<String, Vec<CatalogConn>>>,
    permits: Arc<Semaphore>,
    resting_until: Mutex<Option<Instant>>,
}

/// A connection leased for one lookup; give it back with [`CatalogPool::give_back`].
pub struct Lease {
    pub conn: CatalogConn,
    _permit: OwnedSemaphorePermit,
}

impl CatalogPool {
    pub fn new(settings: Catalog, freshness: Arc<Freshness>) -> CatalogPool {
        CatalogPool {
            freshness,
            permits: Arc::new(Semaphore::new(settings.pool_size)),
            settings,
            idle: Mutex::new(HashMap::new()),
            resting_until: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &Catalog {
        &self.settings
    }

    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.freshness
    }

    /// False while the pool rests after a failure.
    pub fn is_available(&self) -> bool {
        let mut resting = self.resting_until.lock().expect("pool lock");
        match *resting {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                *resting = None;
                true
            }
            None => true,
        }
    }

    /// Takes the pool out of use for `retry_after`.
    pub fn rest(&self, why: &CatalogError) {
        let mut resting = self.resting_until.lock().expect("pool lock");
        if resting.is_none() {
            tracing::warn!(error = %why, retry_after = ?self.settings.retry_after,
                "catalog copy failed; catalog lookups go to the nodes for now");
        }
        *resting = Some(Instant::now() + self.settings.retry_after);
        self.idle.lock().expect("pool lock").clear();
    }

    /// A connection to `database`, idle or new.
    pub async fn lease(&self, database: &str) -> Result<Lease, CatalogError> {
        if !self.is_available() {
            return Err(CatalogError::Resting(self.settings.retry_after));
        }
        let wait = self.settings.acquire_timeout;
        let permit = tokio::time::timeout(wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| CatalogError::Busy(wait))?
            .expect("the pool semaphore is never closed");
        loop {
            let idle = self
                .idle
                .lock()
                .expect("pool lock")
                .get_mut(database)
                .and_then(Vec::pop);
            match idle {
                Some(conn) if conn.is_alive() => {
                    return Ok(Lease {
                        conn,
                        _permit: permit,
                    });
                }
                Some(_) => continue,
                None => break,
            }
        }
        let timeout = self.settings.connect_timeout;
        let addr = format!("{}:{}", self.settings.host, self.settings.port);
        let conn = match tokio::time::timeout(
            timeout,
            CatalogConn::connect(&self.settings, database),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                // A missing database, or one closed for a sync's swap, is
                // that database's moment, not the copy failing.
                if !matches!(&e, CatalogError::Refused { code, .. } if code == "3D000" || code == "55000")
                {
                    self.rest(&e);
                }
                return Err(e);
            }
            Err(_) => {
                let e = CatalogError::Timeout { addr, timeout };
                self.rest(&e);
                return Err(e);
            }
        };
        Ok(Lease {
            conn,
            _permit: permit,
        })
    }

    /// Returns a connection after a lookup; a connection that is not between
    /// answers is closed instead.
    pub fn give_back(&self, lease: Lease, healthy: bool) {
        if healthy && lease.conn.is_clean() {
            let mut idle = self.idle.lock().expect("pool lock");
            idle.entry(lease.conn.database.clone())
                .or_default()
                .push(lease.conn);
        }
    }

    /// Waits until no lookup runs, closes every idle connection, and holds
    /// lookups off until the guard drops (they fall back to the nodes if it
    /// takes longer than `acquire_timeout`).
    pub async fn exclusive(&self) -> ExclusiveGuard {
        let n = self.settings.pool_size as u32;
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the pool semaphore is never closed");
        self.idle.lock().expect("pool lock").clear();
        ExclusiveGuard { _permit: permit }
    }

    /// Idle connections, for the admin console and tests.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .expect("pool lock")
            .values()
            .map(Vec::len)
            .sum()
    }
}

pub struct ExclusiveGuard {
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for CatalogPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogPool")
            .field("host", &self.settings.host)
            .field("port", &self.settings.port)
            .finish()
    }
}
