//! Relations of a statement sqlparser cannot parse, found by scanning its
//! tokens: the fallback for Vertica-only syntax (`LIMIT n OVER (...)`,
//! `TIMESERIES`, `MATCH`, `EXPORT TO ...`, hints), so that bad-query rules
//! with a `tables` condition still apply to it.
//!
//! The scan is deliberately simple: after FROM, JOIN, INTO, UPDATE, TABLE,
//! USING and COPY it reads a (possibly qualified) name, and after FROM a
//! comma-separated list of them. Comments, literals and quoted identifiers
//! are told apart by [`crate::lex`]. A FROM inside parentheses counts only
//! when the parenthesis opens a subquery, so `EXTRACT(YEAR FROM ts)` names
//! no relation, and names a WITH clause defines are not relations.
//!
//! It only ever *adds* what rules can see: a scanned statement still runs
//! on the node (routing needs a real parse to send anything to the catalog
//! copy), and shape conditions other than `tables` still cannot hold.

use std::collections::{BTreeSet, HashSet};

use crate::lex::{Kind, pieces};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// An unquoted word, lower-cased.
    Word(String),
    /// A double-quoted identifier, unquoted, case kept.
    Quoted(String),
    Punct(char),
    /// A literal or number: never part of a name.
    Value,
}

fn tokens(sql: &str) -> Vec<Token> {
    let mut out = Vec::new();
    for (kind, range) in pieces(sql) {
        let piece = &sql[range];
        match kind {
            Kind::Comment | Kind::Whitespace => {}
            Kind::Literal => out.push(Token::Value),
            Kind::Quoted => {
                let inner = piece
                    .strip_prefix('"')
                    .map(|p| p.strip_suffix('"').unwrap_or(p))
                    .unwrap_or(piece);
                out.push(Token::Quoted(inner.replace("\"\"", "\"")));
            }
            Kind::Text => {
                let mut word = String::new();
                for c in piece.chars() {
                    if c.is_alphanumeric() || c == '_' || c == '$' {
                        word.push(c);
                        continue;
                    }
                    if !word.is_empty() {
                        out.push(Token::Word(std::mem::take(&mut word).to_lowercase()));
                    }
                    if !c.is_whitespace() {
                        out.push(Token::Punct(c));
                    }
                }
                if !word.is_empty() {
                    out.push(Token::Word(word.to_lowercase()));
                }
            }
        }
    }
    out
}

/// Words after which a relation name follows.
fn introduces_relation(word: &str) -> bool {
    matches!(
        word,
        "from" | "join" | "into" | "update" | "table" | "using" | "copy"
    )
}

/// Words that end a name's alias position (they are never an alias).
fn is_clause_word(word: &str) -> bool {
    matches!(
        word,
        "where"
            | "join"
            | "inner"
            | "left"
            | "right"
            | "full"
            | "outer"
            | "cross"
            | "natural"
            | "on"
            | "using"
            | "group"
            | "order"
            | "limit"
            | "offset"
            | "union"
            | "except"
            | "intersect"
            | "minus"
            | "having"
            | "window"
            | "set"
            | "values"
            | "select"
            | "timeseries"
            | "over"
            | "match"
            | "returning"
            | "partition"
            | "as"
            | "lateral"
            | "tablesample"
            | "from"
            | "into"
            | "with"
            | "for"
            | "default"
            | "local"
            | "delimiter"
            | "direct"
            | "if"
            | "only"
            | "isolated"
            | "at"
    )
}

/// The name parts starting at `toks[i]`, and the index after the name.
fn name_at(toks: &[Token], mut i: usize) -> Option<(Vec<String>, usize)> {
    let mut parts = Vec::new();
    loop {
        match toks.get(i)? {
            Token::Word(w) if parts.is_empty() && is_clause_word(w) => return None,
            Token::Word(w) => parts.push(w.clone()),
            Token::Quoted(q) => parts.push(q.clone()),
            _ => return None,
        }
        i += 1;
        if toks.get(i) == Some(&Token::Punct('.'))
            && matches!(toks.get(i + 1), Some(Token::Word(_) | Token::Quoted(_)))
        {
            i += 1;
            continue;
        }
        return Some((parts, i));
    }
}

/// The relations `sql` names, as name parts (`["v_catalog", "tables"]`),
/// CTE names left out.
pub fn scan_relations(sql: &str) -> Vec<Vec<String>> {
    let toks = tokens(sql);
    // Per open parenthesis: whether it opens a subquery.
    let mut parens: Vec<bool> = Vec::new();
    let mut found: Vec<Vec<String>> = Vec::new();
    let mut ctes: HashSet<String> = HashSet::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Token::Punct('(') => parens.push(matches!(
                toks.get(i + 1),
                Some(Token::Word(w)) if w == "select" || w == "with" || w == "values"
            )),
            Token::Punct(')') => {
                parens.pop();
            }
            Token::Word(w) | Token::Quoted(w)
                if matches!(toks.get(i + 1), Some(Token::Word(a)) if a == "as")
                    && toks.get(i + 2) == Some(&Token::Punct('(')) =>
            {
                // `name AS (`: a WITH clause's query name.
                ctes.insert(w.clone());
            }
            Token::Word(w) if introduces_relation(w) && parens.last().is_none_or(|sub| *sub) => {
                let previous = i.checked_sub(1).and_then(|p| toks.get(p));
                // `IS DISTINCT FROM x` compares; `FOR UPDATE` locks.
                let skip = match previous {
                    Some(Token::Word(p)) => {
                        (w == "from" && p == "distinct") || (w == "update" && p == "for")
                    }
                    _ => false,
                };
                if !skip {
                    let list = w == "from";
                    let mut j = i + 1;
                    while let Some((parts, after)) = name_at(&toks, j) {
                        j = after;
                        // A function in FROM (`generate_series(...)`) is no relation.
                        if toks.get(j) == Some(&Token::Punct('(')) {
                            break;
                        }
                        found.push(parts);
                        // Skip an alias: `AS x`, or a bare word that starts no clause.
                        match toks.get(j) {
                            Some(Token::Word(a)) if a == "as" => j += 2,
                            Some(Token::Word(a)) if !is_clause_word(a) => j += 1,
                            Some(Token::Quoted(_)) => j += 1,
                            _ => {}
                        }
                        if list && toks.get(j) == Some(&Token::Punct(',')) {
                            j += 1;
                            continue;
                        }
                        break;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
        .into_iter()
        .filter(|parts| parts.len() != 1 || !ctes.contains(&parts[0]))
        .collect()
}

/// [`scan_relations`] resolved as the classifier resolves parsed names.
pub fn scanned_relations(sql: &str) -> BTreeSet<String> {
    scan_relations(sql)
        .iter()
        .map(|parts| super::classifier::resolve(parts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(sql: &str) -> Vec<String> {
        scanned_relations(sql).into_iter().collect()
    }

    #[test]
    fn vertica_only_queries_still_name_their_relations() {
        assert_eq!(
            rel("SELECT a, b FROM sales.orders o LIMIT 1 OVER (PARTITION BY a ORDER BY b)"),
            ["sales.orders"]
        );
        assert_eq!(
            rel("SELECT slice_time, TS_FIRST_VALUE(price) FROM ticks t \
                 TIMESERIES slice_time AS '1 minute' OVER (PARTITION BY sym ORDER BY ts)"),
            ["ticks"]
        );
        assert_eq!(
            rel(
                "SELECT /*+ LABEL(x) */ * FROM \"Sales\".\"Big Table\" a, public.dim d, other \
                 WHERE a.id = d.id"
            ),
            ["Sales.Big Table", "other", "public.dim"]
        );
        assert_eq!(
            rel("INSERT /*+ DIRECT */ INTO store.facts SELECT * FROM staging.facts"),
            ["staging.facts", "store.facts"]
        );
        assert_eq!(
            rel("COPY store.facts FROM LOCAL '/tmp/x.csv' DELIMITER '|' DIRECT"),
            ["store.facts"]
        );
        assert_eq!(
            rel("EXPORT TO PARQUET(directory = '/data') AS SELECT * FROM sales.orders"),
            ["sales.orders"]
        );
        assert_eq!(
            rel(
                "SELECT uid, sid, event_name(), pattern_id() FROM clickstream \
                 MATCH (PARTITION BY uid ORDER BY ts DEFINE a AS page = 'x' PATTERN p AS (a+))"
            ),
            ["clickstream"]
        );
    }

    #[test]
    fn functions_comments_literals_and_ctes_are_not_relations() {
        assert_eq!(
            rel(
                "SELECT EXTRACT(YEAR FROM ts), SUBSTRING(s FROM 2) FROM t1 -- FROM secret\n \
                 WHERE note <> 'FROM fake' /* JOIN hidden /* nested */ x */ AND a IS DISTINCT FROM b \
                 LIMIT 1 OVER (ORDER BY ts)"
            ),
            ["t1"]
        );
        assert_eq!(
            rel(
                "WITH recent AS (SELECT * FROM shop.orders) SELECT * FROM recent JOIN shop.customers c ON true TIMESERIES x AS '1 day' OVER (ORDER BY y)"
            ),
            ["shop.customers", "shop.orders"]
        );
        assert_eq!(
            rel("SELECT * FROM generate_series(1, 3) LIMIT 1 OVER ()"),
            Vec::<String>::new()
        );
        assert_eq!(
            rel("SELECT * FROM pg_class LIMIT 2 OVER ()"),
            ["pg_catalog.pg_class"]
        );
        assert_eq!(rel("UPDATE t SET a = 1 FROM (SELECT 1) s"), ["t"]);
        assert_eq!(rel(""), Vec::<String>::new());
        assert_eq!(rel("SELECT 'unterminated FROM x"), Vec::<String>::new());
    }
}
