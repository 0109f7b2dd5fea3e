//! Fingerprints: one identity for every query of the same shape.
//!
//! Tableau and other BI tools send the same statement over and over with
//! different literals; statistics and rules must see them as one. A
//! statement's fingerprint is its parsed form with every literal and
//! parameter replaced by `?` and every IN-list and VALUES list collapsed to
//! one item, printed by sqlparser (so case, whitespace, comments and
//! formatting vanish), with unquoted identifiers folded to lower case, and
//! hashed with 64-bit FNV-1a. FNV has no key and no seed: the same shape has
//! the same fingerprint in every process and every build, which is what lets
//! an operator paste one from `SHOW QUERIES` into a rule. It changes only if
//! sqlparser prints a shape differently, so a sluice release notes it when it
//! upgrades sqlparser across a major version.
//!
//! Text that does not parse still gets a fingerprint, from the SQL lexer of
//! [`crate::lex`]: comments dropped, literals masked, case folded (see
//! [`text_fingerprint`]). The same lexer masks the sample texts that
//! statistics and alerts show.

use std::borrow::Cow;
use std::fmt;
use std::ops::ControlFlow;

use crate::lex::{Kind, pieces};
use sqlparser::ast::{Expr, Query, SetExpr, Statement, Value, ValueWithSpan, VisitMut, VisitorMut};

/// The identity of a query shape: 16 hex digits when printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Fingerprint, String> {
        if s.len() != 16 {
            return Err(format!(
                "{s:?} is not a fingerprint: it has 16 hex digits, as SHOW QUERIES prints it"
            ));
        }
        u64::from_str_radix(s, 16)
            .map(Fingerprint)
            .map_err(|_| format!("{s:?} is not a fingerprint: it has 16 hex digits"))
    }
}

impl Fingerprint {
    /// The fingerprint of several statements sent as one text.
    pub fn combine(parts: &[Fingerprint]) -> Fingerprint {
        match parts {
            [one] => *one,
            _ => {
                let mut h = Fnv::new();
                for p in parts {
                    h.write(&p.0.to_le_bytes());
                }
                Fingerprint(h.finish())
            }
        }
    }
}

/// 64-bit FNV-1a: tiny, unkeyed and stable, which is the point here
/// (collision resistance against an adversary does not matter for statistics).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn hash(text: &str) -> Fingerprint {
    let mut h = Fnv::new();
    h.write(text.as_bytes());
    Fingerprint(h.finish())
}

/// A statement's fingerprint and the normalized text it hashes.
pub fn fingerprint(statement: &Statement) -> (Fingerprint, String) {
    let mut normalized = statement.clone();
    let _ = normalized.visit(&mut Normalizer);
    let text = fold_case(&normalized.to_string());
    (hash(&text), text)
}

/// Replaces literals and parameters by `?`, collapses lists.
struct Normalizer;

fn placeholder() -> Expr {
    Expr::Value(ValueWithSpan {
        value: Value::Placeholder("?".into()),
        span: sqlparser::tokenizer::Span::empty(),
    })
}

impl VisitorMut for Normalizer {
    type Break = ();

    fn post_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
        // NULL and booleans are part of the shape (`IS NULL` is not `= ?`).
        if !matches!(value.value, Value::Null | Value::Boolean(_)) {
            value.value = Value::Placeholder("?".into());
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::InList { list, .. } if list.len() > 1 => {
                *list = vec![placeholder()];
            }
            // ARRAY[1, 2, 3] and = ANY('{...}') lists: one item too.
            Expr::Array(array) if array.elem.len() > 1 => array.elem.truncate(1),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        // INSERT ... VALUES (..), (..), ...: the number of rows is not the shape.
        if let SetExpr::Values(values) = query.body.as_mut()
            && values.rows.len() > 1
        {
            values.rows.truncate(1);
        }
        ControlFlow::Continue(())
    }
}

/// Lower-cases everything outside double-quoted identifiers (literals are
/// already gone, and sqlparser prints keywords in upper case).
fn fold_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if quoted {
            out.push(c);
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The text with each comment replaced by a space; literals kept. Rules'
/// `pattern` matches this, so a comment can neither hide nor fake a match.
pub fn strip_comments(text: &str) -> Cow<'_, str> {
    if !text.contains("--") && !text.contains("/*") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for (kind, range) in pieces(text) {
        match kind {
            Kind::Comment => out.push(' '),
            _ => out.push_str(&text[range]),
        }
    }
    Cow::Owned(out)
}

/// The text with comments dropped, literals and parameters replaced by `?`
/// and whitespace collapsed: safe to show and to log.
pub fn mask(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (kind, range) in pieces(text) {
        match kind {
            Kind::Text | Kind::Quoted => out.push_str(&text[range]),
            Kind::Literal => out.push('?'),
            Kind::Comment | Kind::Whitespace => {
                if !out.is_empty() && !out.ends_with(' ') {
                    out.push(' ');
                }
            }
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

/// The text's shape: comments and whitespace runs become one space, literals
/// and parameters `?`, unquoted words lower case (ASCII letters). Texts of one shape differ
/// only in literal values, so they parse to the same relations, functions
/// and statement kinds: the classification cache keys on it, and pgbench's
/// `... WHERE aid = 4711` is parsed once, not once per value.
pub fn shape(text: &str) -> Vec<u8> {
    // Every query the cache does not know verbatim passes here (pgbench's
    // `WHERE aid = 4711`): no vector of pieces, and words are folded as
    // they are copied, a byte at a time without branches.
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    crate::lex::each_piece(text, |kind, range| match kind {
        // ASCII only, as PostgreSQL folds unquoted names in a UTF-8
        // database: `Ä` and `ä` name different tables.
        Kind::Text => out.extend(bytes[range].iter().map(|&b| fold_ascii(b))),
        Kind::Quoted => out.extend_from_slice(&bytes[range]),
        Kind::Literal => out.push(b'?'),
        Kind::Comment | Kind::Whitespace => {
            if out.last().is_some_and(|&b| b != b' ') {
                out.push(b' ');
            }
        }
    });
    out
}

/// `A`-`Z` to lower case, every other byte as it is.
fn fold_ascii(b: u8) -> u8 {
    b | (u8::from(b.wrapping_sub(b'A') < 26) << 5)
}

/// The fingerprint of text that does not parse: its masked form, lower-cased
/// outside quoted identifiers.
pub fn text_fingerprint(text: &str) -> Fingerprint {
    hash(&fold_case(&mask(text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn fp(sql: &str) -> Fingerprint {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        fingerprint(&statements[0]).0
    }

    #[test]
    fn literals_case_comments_and_in_lists_fold_together() {
        let a = fp("SELECT name FROM users WHERE id = 42 AND region IN ('eu', 'us')");
        for same in [
            "select name from USERS where id = 7 and region in ('ap')",
            "SELECT name /* dashboard 3 */ FROM users\n WHERE id = $1 AND region IN ('a','b','c','d')",
            "SELECT name FROM users WHERE id = 42.5 AND region IN (E'x\\'y')",
        ] {
            assert_eq!(fp(same), a, "{same}");
        }
        assert_eq!(
            fp("INSERT INTO t VALUES (1, 'a'), (2, 'b')"),
            fp("INSERT INTO t VALUES (3, 'c')")
        );
    }

    #[test]
    fn different_shapes_differ() {
        let a = fp("SELECT name FROM users WHERE id = 42");
        for other in [
            "SELECT name FROM users WHERE id > 42",
            "SELECT name FROM orders WHERE id = 42",
            "SELECT name, id FROM users WHERE id = 42",
            "SELECT name FROM users WHERE id IS NULL",
            "SELECT name FROM \"Users\" WHERE id = 42",
        ] {
            assert_ne!(fp(other), a, "{other}");
        }
    }

    #[test]
    fn fingerprints_are_stable_across_runs_and_builds() {
        // A fixed value: if this changes, fingerprints in users' rules break.
        assert_eq!(
            fp("SELECT name FROM users WHERE id = 42").to_string(),
            format!("{}", hash("select name from users where id = ?"))
        );
        assert_eq!(hash("").to_string(), "cbf29ce484222325");
        assert_eq!(
            "cbf29ce484222325".parse::<Fingerprint>(),
            Ok(Fingerprint(0xcbf29ce484222325))
        );
        assert!("xyz".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn masking_hides_literals_and_comments() {
        assert_eq!(
            mask(
                "SELECT * FROM t -- secret 1\nWHERE a = 'pw''d' AND b = 3.5 AND c = $2 AND d = $$x$$ AND e2 = E'\\''"
            ),
            "SELECT * FROM t WHERE a = ? AND b = ? AND c = ? AND d = ? AND e2 = ?"
        );
        assert_eq!(
            mask("SELECT \"col 1\" /* x */ FROM t1"),
            "SELECT \"col 1\" FROM t1"
        );
        assert_eq!(
            text_fingerprint("SELEC 1 FROM  T"),
            text_fingerprint("selec 2 from t -- x")
        );
    }

    fn shape_text(text: &str) -> String {
        String::from_utf8(shape(text)).unwrap()
    }

    #[test]
    fn shapes_differ_only_where_the_statement_does() {
        let a = shape_text("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;");
        assert_eq!(a, "select abalance from pgbench_accounts where aid = ?;");
        assert_eq!(
            a,
            shape_text("select  abalance /* x */ FROM Pgbench_Accounts\nWHERE aid = 12;")
        );
        assert_eq!(shape_text("SELECT $1, E'a\\'b', $$x$$"), "select ?, ?, ?");
        assert_ne!(
            shape_text(r#"SELECT * FROM "T""#),
            shape_text("SELECT * FROM t")
        );
        assert_ne!(
            shape_text("SELECT * FROM t1"),
            shape_text("SELECT * FROM t2")
        );
        // ASCII letters fold, as PostgreSQL folds names in a UTF-8 database.
        assert_eq!(shape_text("SELECT * FROM ÄB"), "select * from Äb");
        assert_ne!(shape_text("SELECT * FROM Ä"), shape_text("SELECT * FROM ä"));
    }

    #[test]
    fn comment_stripping_keeps_literals() {
        assert_eq!(
            strip_comments("SELECT pg_/*x*/sleep('--no') -- pg_sleep\n, 1"),
            "SELECT pg_ sleep('--no')  \n, 1"
        );
        assert_eq!(strip_comments("SELECT 1"), "SELECT 1");
        assert_eq!(strip_comments("SELECT '/* kept */'"), "SELECT '/* kept */'");
    }
}
