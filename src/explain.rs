//! `sluice explain`: where a query would run and which rule would act on
//! it, condition by condition, from the configuration alone (no I/O).

use std::fmt::Write as _;

use crate::classify::{CatalogPolicy, Route, SessionInfo, classify};
use crate::config::Config;

pub fn explain(config: &Config, session: &SessionInfo<'_>, sql: &str) -> String {
    let policy = match &config.catalog {
        Some(c) => CatalogPolicy {
            schemas: c.schemas.clone(),
            allowed_functions: c.allowed_functions.clone(),
        },
        None => CatalogPolicy::default(),
    };
    let class = classify(sql, &policy);
    let mut out = String::new();
    let route = match (class.route, &config.catalog) {
        (Route::Catalog, Some(_)) => "catalog copy".to_string(),
        (Route::Catalog, None) => {
            "node (a catalog lookup, but no [catalog] section is configured)".to_string()
        }
        (Route::Node, _) => "node".to_string(),
    };
    let _ = writeln!(out, "route: {route}: {}", class.reason);
    if let Some(e) = &class.parse_error {
        let _ = writeln!(out, "parse error: {e}");
        if !class.scanned_relations.is_empty() {
            let relations: Vec<&str> = class.scanned_relations.iter().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "relations (token scan of the unparsed text, for rules' tables conditions): {}",
                relations.join(", ")
            );
        }
    }
    if let Some(facts) = &class.facts {
        let relations: Vec<&str> = facts.relations.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "relations: {}",
            if relations.is_empty() {
                "none".to_string()
            } else {
                relations.join(", ")
            }
        );
    }
    let _ = writeln!(out, "fingerprint: {}", class.fingerprint);
    if let Some(d) = config.limits.max_query_duration {
        let _ = writeln!(
            out,
            "limits.max_query_duration: cancelled after {}",
            humantime::format_duration(d)
        );
    }
    if config.rules.is_empty() {
        let _ = writeln!(out, "rules: none configured");
    } else {
        out.push_str(&config.rules.explain(&class, session, sql));
    }
    out
}
