//! The SQL text of a Vertica client's statements, as the translating
//! session ([`super::translate`]) reads it: `SET SESSION AUTOCOMMIT`,
//! command tags and `?` placeholders, found with [`crate::lex`]. The bytes
//! of the messages are [`crate::protocol::vertica`]'s.

use crate::lex::Kind;
use crate::protocol::frame::Frame;
use crate::protocol::{ProtocolError, frontend, vertica};

/// `SET SESSION AUTOCOMMIT TO on|off`, which vertica-python sends when its
/// `autocommit` property is set: Some(new value).
pub fn set_autocommit(sql: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(sql).ok()?;
    let words: Vec<String> = text
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["set", "session", "autocommit", "to" | "=", v] => match v {
            "on" | "true" => Some(true),
            "off" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The command tag Vertica would give a statement: its first keyword in
/// upper case ("" for an empty statement), after comments and opening
/// parentheses.
pub fn command_tag(sql: &str) -> String {
    for (kind, range) in crate::lex::pieces(sql) {
        match kind {
            Kind::Comment | Kind::Whitespace => continue,
            Kind::Text => {
                let text = sql[range].trim_start_matches(['(', ';']);
                if text.is_empty() {
                    continue;
                }
                return text
                    .split(|c: char| !c.is_ascii_alphabetic())
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
            }
            Kind::Literal | Kind::Quoted => return String::new(),
        }
    }
    String::new()
}

/// Numbers `?` placeholders `$1`, `$2`, ... outside string literals, quoted
/// identifiers, dollar quotes and comments (as [`crate::lex`] finds them).
/// Returns the text and the count.
pub fn number_placeholders(sql: &str) -> (String, usize) {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for (kind, range) in crate::lex::pieces(sql) {
        let piece = &sql[range];
        if kind != Kind::Text {
            out.push_str(piece);
            continue;
        }
        for c in piece.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
    }
    (out, n)
}

/// A Vertica Parse for PostgreSQL: placeholders numbered; Vertica ignores
/// parameter types, so none are sent. Also returns the statement's name and
/// command tag for the CommandDescription that will answer its Describe.
pub fn parse_to_postgres(body: &[u8]) -> Result<(Frame, Vec<u8>, String), ProtocolError> {
    let parts = frontend::parse_parts(body)?;
    let sql = String::from_utf8_lossy(parts.text);
    let (text, _) = number_placeholders(&sql);
    let frame = vertica::encode_parse(parts.name, &text);
    Ok((frame, parts.name.to_vec(), command_tag(&sql)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_session_autocommit() {
        assert_eq!(set_autocommit(b"SET SESSION AUTOCOMMIT TO ON"), Some(true));
        assert_eq!(
            set_autocommit(b"set session autocommit to off;"),
            Some(false)
        );
        assert_eq!(set_autocommit(b"SET search_path TO x"), None);
    }

    #[test]
    fn command_tags() {
        assert_eq!(command_tag("  select 1"), "SELECT");
        assert_eq!(command_tag("-- c\n/* x */ insert into t"), "INSERT");
        assert_eq!(command_tag("  SAVEPOINT mine"), "SAVEPOINT");
        assert_eq!(command_tag("/* x */ -- y\n rollback;"), "ROLLBACK");
        assert_eq!(command_tag("(SELECT 1)"), "SELECT");
        assert_eq!(command_tag(""), "");
    }

    #[test]
    fn placeholders_are_numbered_outside_literals_and_comments() {
        assert_eq!(
            number_placeholders("select ?, '?', \"a?\", x from t where a = ? -- ?\n and b = ?"),
            (
                "select $1, '?', \"a?\", x from t where a = $2 -- ?\n and b = $3".into(),
                3
            )
        );
        assert_eq!(
            number_placeholders("select 'it''s ?' /* ? /* ? */ */ , ?"),
            ("select 'it''s ?' /* ? /* ? */ */ , $1".into(), 1)
        );
        assert_eq!(
            number_placeholders("select $q$ ? $q$, ?, $1"),
            ("select $q$ ? $q$, $1, $1".into(), 1)
        );
        assert_eq!(number_placeholders("select '?"), ("select '?".into(), 0));
        let body = b"s1\0insert into t values (?, ?)\0\0\0";
        let (frame, name, tag) = parse_to_postgres(body).unwrap();
        assert_eq!(frame.body(), b"s1\0insert into t values ($1, $2)\0\0\0");
        assert_eq!((name.as_slice(), tag.as_str()), (&b"s1"[..], "INSERT"));
    }
}
