//! Cost of classifying a query, uncached and cached, on a DBeaver-style
//! metadata query and a 2 KB Tableau-style query.
//!
//! Run: `cargo run --release --example classify_cost` (figures go to
//! docs/benchmarks.md). Timings are printed, never asserted.

use std::hint::black_box;
use std::time::Instant;

use sluice::classify::{CatalogPolicy, ClassificationCache, classify};

const DBEAVER: &str = "SELECT c.oid,c.*,t.relname as tabrelname,rt.relnamespace as refnamespace,d.description, case when c.contype='c' then \"substring\"(pg_get_constraintdef(c.oid), 7) else null end consrc_copy FROM pg_catalog.pg_constraint c INNER JOIN pg_catalog.pg_class t ON t.oid=c.conrelid LEFT OUTER JOIN pg_catalog.pg_class rt ON rt.oid=c.confrelid LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_constraint'::regclass WHERE c.conrelid=$1 ORDER BY c.oid";

fn tableau() -> String {
    let mut q = String::from(
        "SELECT \"orders\".\"region\" AS \"region\", \"customers\".\"segment\" AS \"segment\", \
         SUM(\"orders\".\"sales\") AS \"sum:sales:ok\", SUM(\"orders\".\"profit\") AS \"sum:profit:ok\", \
         COUNT(DISTINCT \"orders\".\"order_id\") AS \"ctd:order_id:ok\", \
         CAST(EXTRACT(YEAR FROM \"orders\".\"order_date\") AS BIGINT) AS \"yr:order_date:ok\" \
         FROM \"public\".\"orders\" \"orders\" \
         INNER JOIN \"public\".\"customers\" \"customers\" ON (\"orders\".\"customer_id\" = \"customers\".\"customer_id\") \
         LEFT JOIN \"public\".\"products\" \"products\" ON (\"orders\".\"product_id\" = \"products\".\"product_id\") \
         WHERE ((\"orders\".\"order_date\" >= TIMESTAMP '2024-01-01 00:00:00') AND (\"orders\".\"order_date\" < TIMESTAMP '2025-01-01 00:00:00')) \
         AND (\"customers\".\"segment\" IN (",
    );
    let mut i = 0;
    while q.len() < 1900 {
        q.push_str(&format!("'segment number {i}', "));
        i += 1;
    }
    q.push_str("'last')) GROUP BY 1, 2, 6 HAVING (SUM(\"orders\".\"sales\") > 1000) ORDER BY 3 DESC LIMIT 500");
    q
}

fn time(label: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let per = started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
    println!("{label:<44} {per:>9.2} µs/query");
}

fn main() {
    let policy = CatalogPolicy::default();
    let tableau = tableau();
    println!(
        "Tableau-style query: {} bytes; DBeaver metadata query: {} bytes",
        tableau.len(),
        DBEAVER.len()
    );
    time("DBeaver metadata query, uncached (parse)", 20_000, || {
        black_box(classify(black_box(DBEAVER), &policy));
    });
    time("Tableau 2 KB query, uncached (parse)", 5_000, || {
        black_box(classify(black_box(&tableau), &policy));
    });
    let cache = ClassificationCache::new(10_000, policy.clone());
    time("DBeaver metadata query, cached", 1_000_000, || {
        black_box(cache.classify(black_box(DBEAVER)));
    });
    time("Tableau 2 KB query, cached", 1_000_000, || {
        black_box(cache.classify(black_box(&tableau)));
    });
}
