//! A bounded cache of classifications by query text.
//!
//! DBeaver and DataGrip send the same metadata queries verbatim, over and
//! over; parsing a 2 KB query costs ~100 µs, a lookup well under one. The map
//! is sharded (DashMap), so sessions do not contend on one lock. When full,
//! an arbitrary entry makes room: with verbatim repetition, whatever is hot
//! comes back at once.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use super::classifier::{CatalogPolicy, Classification, classify};

pub struct ClassificationCache {
    entries: DashMap<u64, (Box<str>, Arc<Classification>)>,
    capacity: usize,
    hasher: RandomState,
    policy: CatalogPolicy,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ClassificationCache {
    pub fn new(capacity: usize, policy: CatalogPolicy) -> ClassificationCache {
        ClassificationCache {
            entries: DashMap::new(),
            capacity,
            hasher: RandomState::new(),
            policy,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The classification of `sql`, parsing it only on a miss.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        self.lookup(sql).0
    }

    /// The classification of `sql`, and whether it came from the cache.
    pub fn lookup(&self, sql: &str) -> (Arc<Classification>, bool) {
        let key = self.hasher.hash_one(sql);
        if let Some(entry) = self.entries.get(&key)
            && &*entry.0 == sql
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return (entry.1.clone(), true);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let classification = Arc::new(classify(sql, &self.policy));
        if self.entries.len() >= self.capacity {
            // A separate statement: the iterator holds a shard lock until it drops.
            let victim = self.entries.iter().next().map(|e| *e.key());
            if let Some(victim) = victim {
                self.entries.remove(&victim);
            }
        }
        self.entries
            .insert(key, (sql.into(), classification.clone()));
        (classification, false)
    }

    /// (hits, misses) since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Route;

    #[test]
    fn repeats_are_served_from_the_cache_and_it_stays_bounded() {
        let cache = ClassificationCache::new(4, CatalogPolicy::default());
        assert_eq!(
            cache.classify("SELECT * FROM pg_class").route,
            Route::Catalog
        );
        assert_eq!(
            cache.classify("SELECT * FROM pg_class").route,
            Route::Catalog
        );
        assert_eq!(cache.counts(), (1, 1));
        for i in 0..20 {
            cache.classify(&format!("SELECT {i}"));
        }
        assert!(cache.len() <= 4);
    }
}
