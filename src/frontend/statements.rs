//! What a session pooled per transaction (`[[pooling.transaction]]`)
//! keeps of its own while it moves from node connection to node connection
//! between transactions: its prepared statements and its `SET`s.
//!
//! Prepared statements are renamed on the way to the node: the client's
//! `S_1` becomes `sluice_<session>_<n>`, a name no other session uses, so
//! that statements of many sessions can live on one connection without
//! colliding, and a connection that already has a session's statement is
//! not asked to prepare it again. Bind, Describe and Close follow the
//! rename. A connection the session takes that lacks some of its
//! statements gets them prepared first, hidden from the client (like
//! PgBouncer's `max_prepared_statements` and pgDog's statement cache).
//!
//! `SET`s are kept as written and run again on each connection the session
//! takes; a connection given back after them is `RESET ALL`. What cannot
//! follow a session from transaction to transaction — SQL `PREPARE`,
//! `LISTEN`, `WITH HOLD` cursors, temporary tables, `SET ROLE`, `SET`
//! inside a multi-statement query — pins it ([`Statements::pinned`]): it
//! is pooled per session from then on.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use crate::protocol::frame::Frame;
use crate::protocol::{ProtocolError, frontend};

/// Beyond this many statements a connection is closed rather than kept:
/// statements of sessions long gone would pile up on it.
pub(super) const MAX_PER_CONNECTION: usize = 2_000;

/// One session's statements and settings.
pub(super) struct Statements {
    prefix: String,
    next: u64,
    /// Client name → the statement as the node knows it.
    by_name: HashMap<Bytes, Prepared>,
    sets: Vec<String>,
    pinned: Option<&'static str>,
    /// Statements keep their names (a Vertica node, whose sessions move
    /// only when they prepared none).
    watching: bool,
}

struct Prepared {
    server: String,
    /// The client's Parse, under the server name: what prepares it again.
    parse: Frame,
    /// The client's own Parse went to a node: other connections may need
    /// it prepared. Until then it is on its way, in the client's batch.
    sent: bool,
}

impl Statements {
    /// `session`: a number no other open session of this process has.
    pub(super) fn new(session: u64) -> Statements {
        Statements {
            prefix: format!("sluice_{session}_"),
            next: 0,
            by_name: HashMap::new(),
            sets: Vec::new(),
            pinned: None,
            watching: false,
        }
    }

    /// For a session on Vertica nodes: names stay as they are; a named
    /// prepared statement pins the session, SETs are kept to run again.
    pub(super) fn watching() -> Statements {
        Statements {
            watching: true,
            ..Statements::new(0)
        }
    }

    /// A client message in the names the node knows, noting what the
    /// session sets.
    pub(super) fn rename(&mut self, frame: Frame) -> Result<Frame, ProtocolError> {
        match frame.tag() {
            frontend::QUERY => {
                let text = frontend::query_text(frame.body())?;
                self.note(&String::from_utf8_lossy(text));
                Ok(frame)
            }
            frontend::PARSE => {
                let parts = frontend::parse_parts(frame.body())?;
                self.note(&String::from_utf8_lossy(parts.text));
                if parts.name.is_empty() {
                    return Ok(frame);
                }
                if self.watching {
                    self.pinned.get_or_insert("prepared statement");
                    return Ok(frame);
                }
                // A name in use stays: the node then refuses it, as it would.
                let server = match self.by_name.get(parts.name) {
                    Some(p) => p.server.clone(),
                    None => {
                        self.next += 1;
                        format!("{}{}", self.prefix, self.next)
                    }
                };
                let renamed = frontend::parse_renamed(&parts, &server);
                self.by_name.insert(
                    Bytes::copy_from_slice(parts.name),
                    Prepared {
                        server,
                        parse: renamed.clone(),
                        sent: false,
                    },
                );
                Ok(renamed)
            }
            _ if self.watching => Ok(frame),
            frontend::BIND => {
                let (_, statement, _) = frontend::bind_names(frame.body())?;
                match self.by_name.get(statement) {
                    Some(p) => frontend::bind_renamed(frame.body(), &p.server),
                    None => Ok(frame),
                }
            }
            tag @ (frontend::DESCRIBE | frontend::CLOSE) => {
                let what = if tag == frontend::CLOSE {
                    "Close"
                } else {
                    "Describe"
                };
                let (kind, name) = frontend::target(frame.body(), what)?;
                if kind != b'S' {
                    return Ok(frame);
                }
                let server = match self.by_name.get(name) {
                    Some(p) => p.server.clone(),
                    None => return Ok(frame),
                };
                if tag == frontend::CLOSE {
                    self.by_name.remove(name);
                }
                Ok(frontend::encode_target(tag, b'S', &server))
            }
            _ => Ok(frame),
        }
    }

    /// Notes a statement's text: a `SET` to run again, or what pins.
    fn note(&mut self, text: &str) {
        let text = without_leading_comments(text);
        let words: Vec<String> = text
            .split_whitespace()
            .take(3)
            .map(|w| w.trim_end_matches(';').to_ascii_uppercase())
            .collect();
        let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
        let several = text.trim().trim_end_matches(';').contains(';');
        let pin = match (word(0), word(1), word(2)) {
            ("SET" | "RESET", _, _) if several => Some("SET in a multi-statement query"),
            ("SET", "LOCAL" | "TRANSACTION", _) => None,
            ("SET", "ROLE", _) | ("SET", "SESSION", "AUTHORIZATION" | "ROLE") => Some("SET ROLE"),
            ("RESET", "ALL", _) => {
                self.sets.clear();
                None
            }
            ("SET" | "RESET", _, _) => {
                self.sets
                    .push(text.trim().trim_end_matches(';').to_string());
                None
            }
            ("PREPARE", _, _) | ("DEALLOCATE", _, _) => Some("SQL PREPARE"),
            // Drops what sluice counts on finding on the connection.
            ("DISCARD", _, _) => Some("DISCARD"),
            // Vertica's session parameters: not SETs sluice runs again.
            ("ALTER", "SESSION", _) => Some("ALTER SESSION"),
            ("LISTEN", _, _) => Some("LISTEN"),
            ("DECLARE", _, _) if text.to_ascii_uppercase().contains("WITH HOLD") => {
                Some("open cursor")
            }
            ("CREATE", "TEMP" | "TEMPORARY", _)
            | ("CREATE", "LOCAL" | "GLOBAL", "TEMP" | "TEMPORARY") => Some("temporary objects"),
            _ => None,
        };
        if let Some(why) = pin {
            self.pinned.get_or_insert(why);
        }
    }

    /// Why the session can no longer move between transactions, if so.
    pub(super) fn pinned(&self) -> Option<&'static str> {
        self.pinned
    }

    /// The `SET`s to run on each connection the session takes.
    pub(super) fn sets(&self) -> &[String] {
        &self.sets
    }

    /// Parse messages for the session's statements a connection lacks
    /// (not those whose Parse the client's next batch carries).
    pub(super) fn missing_on(&self, prepared: &HashSet<String>) -> Vec<Frame> {
        self.by_name
            .values()
            .filter(|p| p.sent && !prepared.contains(&p.server))
            .map(|p| p.parse.clone())
            .collect()
    }

    /// The session gives its connection back: every Parse it had went out.
    pub(super) fn all_sent(&mut self) {
        for p in self.by_name.values_mut() {
            p.sent = true;
        }
    }

    /// Every statement of the session, as the node knows it.
    pub(super) fn server_names(&self) -> impl Iterator<Item = &String> {
        self.by_name.values().map(|p| &p.server)
    }
}

/// The text after any leading whitespace and comments (`--` to the end of
/// the line, `/* */`, nested as PostgreSQL allows).
fn without_leading_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix("--") {
            text = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if text.starts_with("/*") {
            let mut depth = 0;
            let mut at = 0;
            let bytes = text.as_bytes();
            while at + 1 < bytes.len() {
                match &bytes[at..at + 2] {
                    b"/*" => {
                        depth += 1;
                        at += 2;
                    }
                    b"*/" => {
                        depth -= 1;
                        at += 2;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => at += 1,
                }
            }
            if depth != 0 {
                return "";
            }
            text = &text[at..];
        } else {
            return text;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn parse(name: &str, text: &str) -> Frame {
        let mut b = BytesMut::new();
        frontend::encode_parse(&mut b, name, text, &[]);
        Frame::from_raw(b.freeze())
    }

    fn bind(statement: &str) -> Frame {
        let mut b = BytesMut::new();
        frontend::encode_bind_text(&mut b, statement, &[]);
        Frame::from_raw(b.freeze())
    }

    fn query(text: &str) -> Frame {
        frontend::encode_query(text)
    }

    #[test]
    fn statements_get_names_no_other_session_uses_and_follow_them() {
        let mut s = Statements::new(7);
        let p = s.rename(parse("S_1", "SELECT $1")).unwrap();
        assert_eq!(frontend::parse_parts(p.body()).unwrap().name, b"sluice_7_1");
        let b = s.rename(bind("S_1")).unwrap();
        assert_eq!(frontend::bind_names(b.body()).unwrap().1, b"sluice_7_1");
        let d = s
            .rename(frontend::encode_target(frontend::DESCRIBE, b'S', "S_1"))
            .unwrap();
        assert_eq!(
            frontend::target(d.body(), "Describe").unwrap().1,
            b"sluice_7_1"
        );
        // Unnamed statements and portals pass as they are.
        let u = s.rename(parse("", "SELECT 1")).unwrap();
        assert_eq!(frontend::parse_parts(u.body()).unwrap().name, b"");
        let portal = s
            .rename(frontend::encode_target(frontend::DESCRIBE, b'P', "S_1"))
            .unwrap();
        assert_eq!(
            frontend::target(portal.body(), "Describe").unwrap().1,
            b"S_1"
        );

        let mut on_connection = HashSet::new();
        assert!(
            s.missing_on(&on_connection).is_empty(),
            "its Parse is on its way"
        );
        s.all_sent();
        assert_eq!(s.missing_on(&on_connection).len(), 1);
        on_connection.extend(s.server_names().cloned());
        assert!(s.missing_on(&on_connection).is_empty());

        let c = s
            .rename(frontend::encode_target(frontend::CLOSE, b'S', "S_1"))
            .unwrap();
        assert_eq!(
            frontend::target(c.body(), "Close").unwrap().1,
            b"sluice_7_1"
        );
        let again = s.rename(parse("S_1", "SELECT 2")).unwrap();
        assert_eq!(
            frontend::parse_parts(again.body()).unwrap().name,
            b"sluice_7_2",
            "a closed name is never reused"
        );
    }

    #[test]
    fn sets_are_kept_and_session_state_pins() {
        let mut s = Statements::new(1);
        s.rename(query("SET search_path = a")).unwrap();
        s.rename(query("set application_name to 'x';")).unwrap();
        s.rename(query("SET LOCAL work_mem = '1MB'")).unwrap();
        s.rename(query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"))
            .unwrap();
        assert_eq!(
            s.sets(),
            ["SET search_path = a", "set application_name to 'x'"]
        );
        assert_eq!(s.pinned(), None);
        s.rename(query("/* app /* nested */ */ SET search_path = b"))
            .unwrap();
        assert_eq!(
            s.sets().last().map(String::as_str),
            Some("SET search_path = b")
        );
        s.rename(query("RESET ALL")).unwrap();
        assert!(s.sets().is_empty());
        for (text, why) in [
            ("PREPARE p AS SELECT 1", "SQL PREPARE"),
            ("LISTEN x", "LISTEN"),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "open cursor"),
            ("CREATE TEMP TABLE t (a int)", "temporary objects"),
            ("SET ROLE analyst", "SET ROLE"),
            ("SET x = 1; SELECT 1", "SET in a multi-statement query"),
            ("DISCARD ALL", "DISCARD"),
            ("ALTER SESSION SET PARAMETER x = 1", "ALTER SESSION"),
            (
                "/* Tableau */ -- extract\n CREATE TEMP TABLE t (a int)",
                "temporary objects",
            ),
        ] {
            let mut s = Statements::new(1);
            s.rename(query(text)).unwrap();
            assert_eq!(s.pinned(), Some(why), "{text}");
        }
        let mut bad = BytesMut::new();
        bad.put_u8(frontend::BIND);
        bad.put_i32(5);
        bad.put_u8(1);
        assert!(
            Statements::new(1)
                .rename(Frame::from_raw(bad.freeze()))
                .is_err()
        );
    }
}
