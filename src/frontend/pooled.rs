//! Sessions that give their node connection back while idle
//! (`[pooling] idle_detach`) and take one again, on any healthy node, when
//! their next query needs a node.
//!
//! What the session had set on its node must follow it. Rather than
//! guessing from the statements it relayed (a function can `set_config`,
//! create a temporary table, take an advisory lock), sluice asks the node
//! itself, once, when the session detaches ([`take_inventory`]): the
//! settings whose source is the session (PostgreSQL's `pg_settings`) and
//! `role`, the statements prepared through the protocol
//! (`pg_prepared_statements`), and whatever cannot be carried over. On the
//! next connection it replays them ([`replay`]) before the client's query,
//! hiding every answer, so the client cannot tell.
//!
//! A session stays on its connection (pinned) while it holds what cannot
//! be replayed: temporary objects (Tableau's `#Tableau_...` tables), open
//! cursors (WITH HOLD), session advisory locks, LISTEN (a notification
//! sent while detached would be lost), statements prepared with SQL
//! `PREPARE` (their text is the whole query string that made them), a
//! changed session authorization. It tries again after its next query.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::net::{MessageStream, Stream};
use crate::protocol::backend;
use crate::protocol::frame::{Scanner, Treatment};
use crate::protocol::frontend;

/// What a detached session had set on its node, replayed on the next.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Saved {
    /// `(name, value)` for `set_config`, `role` last.
    settings: Vec<(String, String)>,
    prepared: Vec<Prepared>,
}

#[derive(Debug, PartialEq, Eq)]
struct Prepared {
    name: String,
    text: String,
    types: Vec<u32>,
}

/// What a session holds on its node.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Inventory {
    /// All of it can be replayed elsewhere.
    Saved(Saved),
    /// It must stay on this connection, for this reason.
    Pinned(String),
}

/// One query, one round trip: rows of (kind, name, value, extra).
const INVENTORY: &str = "\
SELECT 'pin', 'temporary objects', NULL, NULL WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
UNION ALL SELECT 'pin', 'open cursor ' || name, NULL, NULL FROM pg_catalog.pg_cursors \
UNION ALL SELECT 'pin', 'advisory lock', NULL, NULL FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() \
UNION ALL SELECT 'pin', 'LISTEN ' || c, NULL, NULL FROM pg_catalog.pg_listening_channels() c \
UNION ALL SELECT 'pin', 'SQL PREPARE ' || name, NULL, NULL FROM pg_catalog.pg_prepared_statements WHERE from_sql \
UNION ALL SELECT 'pin', 'client_encoding ' || pg_catalog.current_setting('client_encoding'), NULL, NULL WHERE pg_catalog.current_setting('client_encoding') <> 'UTF8' \
UNION ALL SELECT 'auth', NULL, pg_catalog.current_setting('session_authorization'), NULL \
UNION ALL SELECT 'set', name, setting, NULL FROM pg_catalog.pg_settings WHERE source = 'session' AND name NOT IN ('role', 'session_authorization') \
UNION ALL SELECT 'role', 'role', pg_catalog.current_setting('role'), NULL WHERE pg_catalog.current_setting('role') <> 'none' \
UNION ALL SELECT 'prepared', name, statement, parameter_types::pg_catalog.oid[]::text FROM pg_catalog.pg_prepared_statements WHERE NOT from_sql";

/// Asks the node what the session holds; `user` is who logged in (a
/// changed session authorization pins). The node must owe nothing.
pub(super) async fn take_inventory(
    stream: &mut Stream,
    user: &str,
    timeout: Duration,
) -> Result<Inventory, String> {
    let rows = query(stream, INVENTORY, timeout).await?;
    read_inventory(rows, user)
}

fn read_inventory(rows: Vec<Vec<Option<String>>>, user: &str) -> Result<Inventory, String> {
    let mut saved = Saved::default();
    let mut role = None;
    for row in rows {
        let [kind, name, value, extra] = <[Option<String>; 4]>::try_from(row)
            .map_err(|_| "the inventory query returned rows of another shape".to_string())?;
        let name = name.unwrap_or_default();
        let value = value.unwrap_or_default();
        match kind.as_deref() {
            Some("pin") => return Ok(Inventory::Pinned(name)),
            Some("auth") if value != user => {
                return Ok(Inventory::Pinned("SET SESSION AUTHORIZATION".into()));
            }
            Some("set") => saved.settings.push((name, value)),
            Some("role") => role = Some((name, value)),
            Some("prepared") => saved.prepared.push(Prepared {
                name,
                text: value,
                types: oid_array(extra.as_deref().unwrap_or("{}"))?,
            }),
            _ => {}
        }
    }
    // After the settings: some may be set only by the user who logged in.
    saved.settings.extend(role);
    Ok(Inventory::Saved(saved))
}

/// `{23,25}` → `[23, 25]`.
fn oid_array(text: &str) -> Result<Vec<u32>, String> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| format!("{text:?} is not an array of type OIDs"))?;
    inner
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse()
                .map_err(|_| format!("{text:?} is not an array of type OIDs"))
        })
        .collect()
}

/// Sets on a new connection what the session had set on its last one;
/// every answer is the node's to sluice, none reaches the client.
pub(super) async fn replay(
    stream: &mut Stream,
    saved: &Saved,
    timeout: Duration,
) -> Result<(), String> {
    if saved.settings.is_empty() && saved.prepared.is_empty() {
        return Ok(());
    }
    let mut out = BytesMut::new();
    for (name, value) in &saved.settings {
        frontend::encode_parse(
            &mut out,
            "",
            "SELECT pg_catalog.set_config($1, $2, false)",
            &[25, 25],
        );
        frontend::encode_bind_text(&mut out, "", &[name, value]);
        frontend::encode_execute(&mut out);
    }
    for p in &saved.prepared {
        frontend::encode_parse(&mut out, &p.name, &p.text, &p.types);
    }
    out.extend_from_slice(&frontend::SYNC_MESSAGE);
    exchange(stream, &out, 1, OnError::Fail, timeout, |_| Ok(())).await
}

/// Runs SQL of sluice's own (`DISCARD ALL`, `RESET ALL`, `DEALLOCATE
/// ALL`) on an idle connection.
pub(super) async fn run_hidden(
    stream: &mut Stream,
    sql: &str,
    timeout: Duration,
) -> Result<(), String> {
    let request = frontend::encode_query(sql);
    exchange(stream, request.raw(), 1, OnError::Fail, timeout, |_| Ok(())).await
}

/// A session pooled per transaction takes a connection: its SETs run
/// again, and the statements the connection lacks are prepared. Each in a
/// batch of its own, whose failure is ignored: a SET or Parse that failed
/// for the client fails here too, and leaves the session as it was.
pub(super) async fn replay_statements(
    stream: &mut Stream,
    sets: &[String],
    missing: &[crate::protocol::frame::Frame],
    timeout: Duration,
) -> Result<(), String> {
    let readies = sets.len() + missing.len();
    if readies == 0 {
        return Ok(());
    }
    let mut out = BytesMut::new();
    for set in sets {
        out.extend_from_slice(frontend::encode_query(set).raw());
    }
    for parse in missing {
        out.extend_from_slice(parse.raw());
        out.extend_from_slice(&frontend::SYNC_MESSAGE);
    }
    exchange(stream, &out, readies, OnError::Ignore, timeout, |_| Ok(())).await
}

/// Runs a simple query sluice reads itself; its rows as text.
async fn query(
    stream: &mut Stream,
    sql: &str,
    timeout: Duration,
) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut rows = Vec::new();
    let request = frontend::encode_query(sql);
    exchange(stream, request.raw(), 1, OnError::Fail, timeout, |body| {
        let values = backend::data_row(body).map_err(|e| e.to_string())?;
        rows.push(
            values
                .into_iter()
                .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                .collect(),
        );
        Ok(())
    })
    .await?;
    Ok(rows)
}

/// What an ErrorResponse to sluice's own request means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnError {
    /// The request failed.
    Fail,
    /// Expected at times, and harmless (a replayed SET the client's own
    /// run of also failed).
    Ignore,
}

/// Writes `request` and reads the node's answers up to its `readies`-th
/// ReadyForQuery, which must find the session idle, all within `timeout`;
/// each DataRow's body goes to `row`. An ErrorResponse is the error (after
/// the node is ready again) unless `on_error` says to ignore it.
async fn exchange(
    stream: &mut Stream,
    request: &[u8],
    readies: usize,
    on_error: OnError,
    timeout: Duration,
    mut row: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let answered = async {
        stream.write_all(request).await.map_err(|e| e.to_string())?;
        let mut answers = MessageStream::new(stream, Scanner::new(1 << 20, |_| Treatment::Inspect));
        let mut failed = None;
        let mut seen = 0;
        loop {
            let Some(frame) = answers.frame().await.map_err(|e| e.to_string())? else {
                return Err("the node closed the connection".into());
            };
            match frame.tag() {
                backend::DATA_ROW if failed.is_none() => {
                    if let Err(e) = row(frame.body()) {
                        failed = Some(e);
                    }
                }
                backend::READY_FOR_QUERY => {
                    seen += 1;
                    if seen < readies {
                        continue;
                    }
                    if answers.has_buffered() {
                        return Err("the node sent more than was asked".into());
                    }
                    return match (failed, frame.body()) {
                        (Some(why), _) => Err(why),
                        (None, b"I") => Ok(()),
                        (None, _) => Err("the node is in a transaction".into()),
                    };
                }
                backend::ERROR_RESPONSE if on_error == OnError::Fail => {
                    failed.get_or_insert_with(|| {
                        let (code, message) = backend::error_summary(frame.body());
                        format!("{message} (SQLSTATE {code})")
                    });
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(timeout, answered)
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()))
}

/// The messages of a greeting (AuthenticationOk up to ReadyForQuery, as
/// kept connections store it), whole; a cut-off tail is left out.
pub(super) fn greeting_messages(greeting: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    let mut at = 0;
    while let Some(header) = greeting.get(at..at + 5) {
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let Some(message) = greeting.get(at..at + 1 + len) else {
            break;
        };
        messages.push(message);
        at += 1 + len;
    }
    messages
}

/// The node's cancel key in a greeting.
pub(super) fn greeting_key(greeting: &[u8]) -> Option<crate::protocol::startup::CancelKey> {
    greeting_messages(greeting)
        .into_iter()
        .find(|m| m.first() == Some(&backend::BACKEND_KEY_DATA))
        .and_then(|m| backend::backend_key_data(m.get(5..)?).ok())
}

/// A short description of what was saved, for the debug log.
pub(super) fn describe(saved: &Saved) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "{} settings, {} prepared statements",
        saved.settings.len(),
        saved.prepared.len()
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn settings_role_and_prepared_statements_are_saved() {
        let rows = vec![
            row(&[Some("auth"), None, Some("alice"), None]),
            row(&[Some("role"), Some("role"), Some("analyst"), None]),
            row(&[Some("set"), Some("search_path"), Some("a, \"B c\""), None]),
            row(&[
                Some("prepared"),
                Some("S_1"),
                Some("SELECT $1"),
                Some("{23}"),
            ]),
        ];
        let Inventory::Saved(saved) = read_inventory(rows, "alice").unwrap() else {
            panic!("saved");
        };
        assert_eq!(
            saved.settings,
            vec![
                ("search_path".into(), "a, \"B c\"".into()),
                ("role".into(), "analyst".into())
            ],
            "role is set last"
        );
        assert_eq!(saved.prepared[0].types, vec![23]);
        assert_eq!(describe(&saved), "2 settings, 1 prepared statements");
    }

    #[test]
    fn what_cannot_be_replayed_pins() {
        let pinned = |rows| match read_inventory(rows, "alice").unwrap() {
            Inventory::Pinned(why) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            pinned(vec![row(&[
                Some("pin"),
                Some("temporary objects"),
                None,
                None
            ])]),
            "temporary objects"
        );
        assert_eq!(
            pinned(vec![row(&[Some("auth"), None, Some("bob"), None])]),
            "SET SESSION AUTHORIZATION"
        );
        assert!(read_inventory(vec![row(&[Some("set")])], "alice").is_err());
    }

    #[test]
    fn oid_arrays_parse() {
        assert_eq!(oid_array("{}").unwrap(), Vec::<u32>::new());
        assert_eq!(oid_array("{23,25}").unwrap(), vec![23, 25]);
        assert!(oid_array("23").is_err());
        assert!(oid_array("{x}").is_err());
    }

    #[test]
    fn a_greeting_gives_its_key() {
        let mut g = BytesMut::new();
        backend::encode_authentication_ok(&mut g);
        backend::encode_parameter_status(&mut g, "a", "b");
        let key = crate::protocol::startup::CancelKey {
            process_id: 7,
            secret: Bytes::from_static(&[1, 2, 3, 4]),
        };
        backend::encode_backend_key_data(&mut g, &key);
        backend::encode_ready_for_query(&mut g, backend::TransactionStatus::Idle);
        let g = g.freeze();
        assert_eq!(greeting_key(&g), Some(key));
        assert_eq!(greeting_messages(&g).len(), 4);
        assert_eq!(greeting_key(b"R\0\0"), None);
        assert_eq!(greeting_messages(&g[..g.len() - 1]).len(), 3);
    }
}
