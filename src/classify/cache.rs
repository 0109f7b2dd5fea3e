//! A bounded cache of classifications by query text and by query shape.
//!
//! DBeaver and DataGrip send the same metadata queries verbatim, over and
//! over; parsing a 2 KB query costs ~100 µs, a lookup well under one. OLTP
//! and BI traffic repeats statements with other literals instead
//! (`WHERE aid = 4711`): those are found by their shape (see
//! [`super::fingerprint::shape`]: literals masked, case and whitespace
//! folded), which costs one pass of a small lexer instead of a parse. A
//! classification that depends on a literal (which `pg_settings` row a
//! query reads) is only ever found by its exact text.
//!
//! The maps are sharded (DashMap), so sessions do not contend on one lock.
//! When full, an arbitrary entry makes room: with repetition, whatever is hot
//! comes back at once.
//!
//! Texts longer than the parse limit (`catalog.max_parse_size`) are neither
//! parsed nor cached: they go to the node unparsed, and are counted. A
//! multi-megabyte INSERT is never a catalog lookup, and parsing it would
//! cost the session milliseconds and the cache megabytes.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use super::classifier::{CatalogPolicy, Classification, Route, classify};

/// The parse limit when none is configured: `catalog.max_parse_size`'s default.
pub const DEFAULT_MAX_PARSE_SIZE: usize = 64 << 10;

/// Keys are already hashes by `ClassificationCache::hasher` (seeded at
/// random): hashing them again for the map cost as much as the lookup.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Texts (and shapes) kept as bytes: a shape needs no UTF-8 check, which
/// cost every query whose exact text the cache did not know.
type TextMap = DashMap<u64, (Box<[u8]>, Arc<Classification>), BuildHasherDefault<PreHashed>>;

pub struct ClassificationCache {
    /// By exact text.
    entries: TextMap,
    /// By shape, for classifications that no literal decides.
    shapes: TextMap,
    capacity: usize,
    /// foldhash, seeded per process: texts are the client's, so the seed
    /// keeps crafted collisions out, and it costs a fraction of SipHash.
    hasher: foldhash::fast::RandomState,
    policy: CatalogPolicy,
    /// Longest text, in bytes, that is parsed.
    max_parse_size: usize,
    /// The one answer for every text over the limit, and for those that
    /// start like DDL.
    oversized: [Arc<Classification>; 2],
    hits: AtomicU64,
    misses: AtomicU64,
    oversized_count: AtomicU64,
}

impl ClassificationCache {
    pub fn new(capacity: usize, policy: CatalogPolicy) -> ClassificationCache {
        ClassificationCache {
            entries: DashMap::default(),
            shapes: DashMap::default(),
            capacity,
            hasher: foldhash::fast::RandomState::default(),
            policy,
            max_parse_size: DEFAULT_MAX_PARSE_SIZE,
            oversized: [false, true].map(|ddl| Arc::new(oversized(DEFAULT_MAX_PARSE_SIZE, ddl))),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            oversized_count: AtomicU64::new(0),
        }
    }

    /// Sets the longest text, in bytes, that is parsed; longer ones go to the node.
    pub fn with_max_parse_size(mut self, bytes: usize) -> ClassificationCache {
        self.max_parse_size = bytes;
        self.oversized = [false, true].map(|ddl| Arc::new(oversized(bytes, ddl)));
        self
    }

    /// The classification of `sql`, parsing it only on a miss. A text over
    /// the parse limit is routed to the node unparsed, and counted.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        self.lookup(sql).0
    }

    /// The classification of `sql`, and whether it came from the cache.
    pub fn lookup(&self, sql: &str) -> (Arc<Classification>, bool) {
        if sql.len() > self.max_parse_size {
            self.oversized_count.fetch_add(1, Ordering::Relaxed);
            let ddl = super::classifier::starts_like_ddl(sql);
            return (self.oversized[usize::from(ddl)].clone(), false);
        }
        let key = self.hasher.hash_one(sql);
        if let Some(entry) = self.entries.get(&key)
            && &*entry.0 == sql.as_bytes()
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return (entry.1.clone(), true);
        }
        let shape = super::fingerprint::shape(sql);
        let shape_key = self.hasher.hash_one(&shape);
        if let Some(entry) = self.shapes.get(&shape_key)
            && *entry.0 == *shape
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return (entry.1.clone(), true);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let classification = Arc::new(classify(sql, &self.policy));
        let literal_free = classification
            .facts
            .as_ref()
            .is_none_or(|f| f.names_compared.is_empty());
        if literal_free {
            insert_bounded(
                &self.shapes,
                self.capacity,
                shape_key,
                shape.into(),
                &classification,
            );
        } else {
            insert_bounded(
                &self.entries,
                self.capacity,
                key,
                sql.as_bytes().into(),
                &classification,
            );
        }
        (classification, false)
    }

    /// (hits, misses) since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Texts over the parse limit, sent to the node unparsed, since start.
    pub fn oversized_count(&self) -> u64 {
        self.oversized_count.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.entries.len() + self.shapes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.shapes.is_empty()
    }
}

fn insert_bounded(
    map: &TextMap,
    capacity: usize,
    key: u64,
    text: Box<[u8]>,
    classification: &Arc<Classification>,
) {
    if map.len() >= capacity {
        // A separate statement: the iterator holds a shard lock until it drops.
        let victim = map.iter().next().map(|e| *e.key());
        if let Some(victim) = victim {
            map.remove(&victim);
        }
    }
    map.insert(key, (text, classification.clone()));
}

fn oversized(limit: usize, unparsed_ddl: bool) -> Classification {
    Classification {
        route: Route::Node,
        reason: format!(
            "the text is longer than {limit} bytes (catalog.max_parse_size); \
             the node answers it unparsed"
        ),
        facts: None,
        parse_error: None,
        rule_memo: Default::default(),
        scanned_relations: Default::default(),
        // Texts too long to parse are too long to fingerprint cheaply:
        // statistics keep them together under one fingerprint.
        fingerprint: super::fingerprint::text_fingerprint("(text over the parse limit)"),
        unparsed_ddl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            cache.classify(&format!("SELECT {i} FROM t{i}"));
        }
        assert!(cache.len() <= 8);
    }

    #[test]
    fn other_literals_are_found_by_shape_unless_a_literal_decides() {
        let cache = ClassificationCache::new(16, CatalogPolicy::default());
        for aid in 1..100 {
            let class = cache.classify(&format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {aid}"
            ));
            assert_eq!(class.route, Route::Node);
        }
        assert_eq!(cache.counts(), (98, 1), "parsed once");
        assert_eq!(cache.len(), 1);
        // Which pg_settings row is read decides the route: exact text only.
        let constant = "SELECT setting FROM pg_settings WHERE name = 'server_version'";
        let live = "SELECT setting FROM pg_settings WHERE name = 'work_mem'";
        assert_ne!(cache.classify(constant).route, cache.classify(live).route);
        assert_eq!(cache.classify(constant).route, Route::Catalog);
    }

    #[test]
    fn texts_over_the_parse_limit_go_to_the_node_unparsed_and_uncached() {
        let cache = ClassificationCache::new(4, CatalogPolicy::default()).with_max_parse_size(64);
        let short = "SELECT * FROM pg_class";
        assert_eq!(cache.classify(short).route, Route::Catalog);
        let long = format!(
            "SELECT * FROM pg_class WHERE relname = '{}'",
            "x".repeat(64)
        );
        let class = cache.classify(&long);
        assert_eq!(class.route, Route::Node);
        assert!(
            class.reason.contains("catalog.max_parse_size"),
            "{}",
            class.reason
        );
        assert!(class.facts.is_none());
        assert_eq!(cache.oversized_count(), 1);
        assert_eq!(cache.len(), 1, "the long text is not cached");
        assert_eq!(cache.counts(), (0, 1));
    }
}
