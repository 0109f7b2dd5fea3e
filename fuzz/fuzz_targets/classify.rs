//! SQL classification, the entry point sessions use (through the cache):
//! any text, valid SQL or not, gets a route, and a catalog route only for
//! read-only statements.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::classify::{CatalogPolicy, ClassificationCache, Route, StatementKind, classify};

fuzz_target!(|data: &[u8]| {
    // As the router reads Query and Parse texts.
    let sql = String::from_utf8_lossy(data);
    let policy = CatalogPolicy::default();
    let class = classify(&sql, &policy);
    if class.route == Route::Catalog {
        let facts = class.facts.as_ref().expect("a catalog route has facts");
        assert!(facts.kinds.iter().all(|k| *k == StatementKind::Select));
        assert!(!facts.writes_from_select);
    }
    let cache = ClassificationCache::new(8, policy).with_max_parse_size(4096);
    let cached = cache.classify(&sql);
    if sql.len() <= 4096 {
        assert_eq!(*cached, class);
        assert_eq!(*cache.classify(&sql), class, "a hit answers as the miss did");
    } else {
        assert_eq!(cached.route, Route::Node);
    }
});
