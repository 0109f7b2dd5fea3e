//! Per-session routing of client messages between the node and the catalog copy.
//!
//! Messages are held until their batch is complete: a Query is a batch by
//! itself; extended-protocol messages form a batch up to their Sync (or
//! Flush). A batch goes to the catalog copy only if every statement in it is
//! a catalog lookup and every statement or portal it names is one the copy
//! can have; anything else, including a batch that mixes catalog and data
//! statements, goes to the node, which can answer everything.
//!
//! Prepared statements must exist where they are used. A statement parsed
//! into a catalog batch and later used in a node batch is prepared on the node
//! first (its original Parse is sent ahead of the batch, and the extra
//! ParseComplete is dropped). On the copy, connections are shared between
//! sessions, so statements get server-side names derived from their text:
//! the same text is the same statement for every session, and two sessions'
//! `S_1` never collide.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use crate::classify::{Classification, ClassificationCache, Route};
pub use crate::frontend::guard::Checked;
use crate::metrics::Metrics;
use crate::protocol::ProtocolError;
use crate::protocol::frame::Frame;
use crate::protocol::frontend::{self, ParseParts};

/// Statement and portal names are the client's: a seeded hash (foldhash)
/// resists crafted collisions at a fraction of SipHash's cost per lookup.
type Names = foldhash::fast::RandomState;

/// A closing name no statement has: Close of it is answered by CloseComplete
/// and changes nothing.
const ABSENT: &str = "sluice_absent";

struct Statement {
    parse: Frame,
    class: Arc<Classification>,
    text: Arc<str>,
    /// The node has this version of the statement.
    on_node: bool,
    /// The node holds an older statement under this name (Vertica clients
    /// parse a name again without closing it): close it there first.
    stale_on_node: bool,
    /// Its name on catalog copy connections ("" stays "").
    catalog_name: String,
}

/// A complete batch of client messages, and what routing needs to know of it.
#[derive(Debug)]
pub struct Batch {
    pub frames: Vec<Frame>,
    /// Every statement in it may be answered by the catalog copy.
    pub catalog_ok: bool,
    /// It changes the schema (DDL): until the transaction ends, lookups see the node.
    pub ddl: bool,
    /// ReadyForQuery answers it will produce (a Query or a Sync: 1; a Flush: 0).
    pub syncs: u64,
    /// The query texts it parses or runs (a Query's, a Parse's, a bound
    /// statement's), for rules and statistics.
    pub checked: Vec<Checked>,
}

/// The batches one client message completes: none, one, or two (a Query
/// after messages still waiting for their Sync). Held inline: a vector
/// would cost an allocation per query.
#[derive(Default)]
pub struct Batches([Option<Batch>; 2]);

impl Batches {
    fn push(&mut self, batch: Batch) {
        let free = if self.0[0].is_none() { 0 } else { 1 };
        debug_assert!(
            self.0[free].is_none(),
            "a message completes two batches at most"
        );
        self.0[free] = Some(batch);
    }
}

impl IntoIterator for Batches {
    type Item = Batch;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<Batch>, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().flatten()
    }
}

/// Messages to write for a batch, and how many leading answers to drop.
pub struct Plan {
    pub frames: Vec<Frame>,
    /// Answers to messages sluice added, which the client must not see:
    /// ParseCompletes of the Parses sent ahead.
    pub hidden_answers: u32,
    /// CloseCompletes of Closes sluice added (Vertica naming only).
    pub hidden_closes: u32,
    /// It runs under a savepoint of sluice's: when it fails, the
    /// transaction goes on (a Vertica client's; see [`super::translate`]).
    pub statement_level: bool,
}

pub struct Router {
    statements: HashMap<Vec<u8>, Statement, Names>,
    pending: Vec<Frame>,
    catalog_ok: bool,
    ddl: bool,
    portals: HashSet<Vec<u8>, Names>,
    /// A Flush sent part of this Sync's batch to the node: the rest follows it.
    pinned_to_node: bool,
    cache: Option<Arc<ClassificationCache>>,
    metrics: Option<Arc<Metrics>>,
    /// The session's last `SET search_path` (or `RESET`), replayed on the
    /// copy: lookups such as `pg_table_is_visible` depend on it.
    search_path: Option<String>,
    /// The pending batch's query texts.
    checked: Vec<Checked>,
    /// The last text this session had classified, and its classification.
    last_classified: Option<(Arc<str>, Arc<Classification>)>,
    /// Vertica clients: a Parse replaces a statement of the same name, and
    /// a batch up to Flush may go to the catalog copy (vertica-python
    /// prepares with Parse, Describe, Flush).
    vertica: bool,
}

impl Router {
    /// `cache` is `None` when no catalog copy is configured: every batch goes to the node.
    pub fn new(cache: Option<Arc<ClassificationCache>>, metrics: Option<Arc<Metrics>>) -> Router {
        Router {
            statements: HashMap::default(),
            pending: Vec::new(),
            catalog_ok: true,
            ddl: false,
            portals: HashSet::default(),
            pinned_to_node: false,
            cache,
            metrics,
            search_path: None,
            checked: Vec::new(),
            last_classified: None,
            vertica: false,
        }
    }

    /// A router for a Vertica client (see the `vertica` field).
    pub fn for_vertica(mut self) -> Router {
        self.vertica = true;
        self
    }

    /// The batch up to a Flush was answered by the catalog copy (which sluice
    /// closed with a Sync of its own): nothing of it is on the node, so the
    /// rest of the client's batch need not follow it there.
    pub fn flush_answered_by_catalog(&mut self) {
        self.pinned_to_node = false;
    }

    /// The statement that sets the session's search path, if it changed it.
    pub fn search_path(&self) -> Option<&str> {
        self.search_path.as_deref()
    }

    fn note_search_path(&mut self, text: &[u8]) {
        // Every query passes here: most are not SET or RESET, and cost one look.
        let start = text.trim_ascii_start();
        let starts_with = |word: &[u8]| {
            start.len() > word.len() && start[..word.len()].eq_ignore_ascii_case(word)
        };
        if !starts_with(b"set") && !starts_with(b"reset") {
            return;
        }
        let text = String::from_utf8_lossy(text);
        let normalized = text.trim().trim_end_matches(';').to_ascii_lowercase();
        let words: Vec<&str> = normalized.split_whitespace().take(3).collect();
        let sets_path = matches!(
            words.as_slice(),
            ["set", "search_path", ..]
                | ["set", "session", "search_path"]
                | ["reset", "search_path", ..]
        );
        if sets_path && !normalized.contains(';') {
            self.search_path = Some(text.trim().trim_end_matches(';').to_string());
        }
    }

    /// A message's query text, made valid UTF-8 and shared (rules and
    /// statistics keep it), and its classification; `None` when no catalog
    /// copy is configured.
    ///
    /// Drivers send the same text for every execution (a Parse of
    /// `... WHERE aid = $1`, PgJDBC's and pgbench's way), so the session
    /// remembers its last one: a repeat costs a comparison instead of the
    /// shared cache's lexing, hashing and lookup. Only short texts are
    /// remembered, so that 1000 sessions cannot pin much memory.
    fn classify(&mut self, bytes: &[u8]) -> Option<(Arc<str>, Arc<Classification>)> {
        const REMEMBERED: usize = 4096;
        let cache = self.cache.as_ref()?;
        if let Some((text, class)) = &self.last_classified
            && text.as_bytes() == bytes
        {
            if let Some(m) = &self.metrics {
                m.classification_cache(true);
            }
            return Some((text.clone(), class.clone()));
        }
        let text: Arc<str> = as_text(bytes).into();
        let (class, hit) = cache.lookup(&text);
        if let Some(m) = &self.metrics {
            m.classification_cache(hit);
            if !hit && class.parse_error.is_some() {
                m.parse_failure();
            }
        }
        self.last_classified = (text.len() <= REMEMBERED).then(|| (text.clone(), class.clone()));
        Some((text, class))
    }

    /// Whether the node holds a statement under `name`, this one or an older one.
    fn on_node(&self, name: &[u8]) -> bool {
        self.statements
            .get(name)
            .is_some_and(|s| s.on_node || s.stale_on_node)
    }

    fn statement_allows_catalog(&self, name: &[u8]) -> bool {
        self.statements
            .get(name)
            .is_some_and(|s| s.class.route == Route::Catalog)
    }

    /// Takes one client message; returns the batches it completes.
    pub fn push(&mut self, frame: Frame) -> Result<Batches, ProtocolError> {
        let mut done = Batches::default();
        match frame.tag() {
            frontend::QUERY => {
                if let Some(pending) = self.take_pending() {
                    done.push(pending);
                }
                let text = frontend::query_text(frame.body())?;
                self.note_search_path(text);
                let class = self.classify(text);
                let catalog_ok = class
                    .as_ref()
                    .is_some_and(|(_, c)| c.route == Route::Catalog);
                let ddl = class.as_ref().is_some_and(|(_, c)| c.is_ddl());
                let checked = class
                    .map(|(text, class)| Checked {
                        class,
                        text,
                        executed: true,
                    })
                    .into_iter()
                    .collect();
                done.push(Batch {
                    frames: vec![frame],
                    catalog_ok,
                    ddl,
                    syncs: 1,
                    checked,
                });
                return Ok(done);
            }
            frontend::PARSE => {
                let parts = frontend::parse_parts(frame.body())?;
                self.note_search_path(parts.text);
                let class = self.classify(parts.text);
                if let Some((text, class)) = &class {
                    self.checked.push(Checked {
                        class: class.clone(),
                        text: text.clone(),
                        executed: false,
                    });
                }
                let name = parts.name.to_vec();
                let catalog_name = catalog_name(&parts);
                let stale_on_node = self.vertica && !name.is_empty() && self.on_node(&name);
                match class {
                    Some((text, class)) => {
                        self.catalog_ok &= class.route == Route::Catalog;
                        self.ddl |= class.is_ddl();
                        self.statements.insert(
                            name,
                            Statement {
                                parse: frame.clone(),
                                class,
                                text,
                                on_node: false,
                                stale_on_node,
                                catalog_name,
                            },
                        );
                    }
                    None => self.catalog_ok = false,
                }
            }
            frontend::BIND => {
                let (portal, statement, _) = frontend::bind_names(frame.body())?;
                match self.statements.get(statement) {
                    Some(s) => {
                        self.catalog_ok &= s.class.route == Route::Catalog;
                        match self
                            .checked
                            .iter_mut()
                            .find(|c| Arc::ptr_eq(&c.class, &s.class))
                        {
                            Some(c) => c.executed = true,
                            None => self.checked.push(Checked {
                                class: s.class.clone(),
                                text: s.text.clone(),
                                executed: true,
                            }),
                        }
                    }
                    // Not classified (no catalog copy), or unknown: the node
                    // answers, and says so if it does not exist.
                    None => self.catalog_ok = false,
                }
                self.portals.insert(portal.to_vec());
            }
            frontend::DESCRIBE => match frontend::target(frame.body(), "Describe")? {
                (b'S', name) => self.catalog_ok &= self.statement_allows_catalog(name),
                (_, name) => self.catalog_ok &= self.portals.contains(name),
            },
            frontend::EXECUTE => {
                let portal = frontend::execute_portal(frame.body())?;
                self.catalog_ok &= self.portals.contains(portal);
            }
            frontend::CLOSE => match frontend::target(frame.body(), "Close")? {
                (b'S', name) => self.catalog_ok &= !self.on_node(name),
                (_, name) => self.catalog_ok &= self.portals.contains(name),
            },
            frontend::SYNC | frontend::FLUSH => {
                let is_sync = frame.tag() == frontend::SYNC;
                let alone = self.pending.is_empty();
                self.pending.push(frame);
                // Partial batches (Flush) go to the node: the copy's connection
                // is not held between a Flush and its Sync. A Vertica client's
                // may go to the copy if it only prepares (no portal: the copy
                // is released at once, with a Sync sluice adds).
                let flush_ok = self.vertica
                    && !self.pending.iter().any(|f| {
                        matches!(f.tag(), frontend::BIND | frontend::EXECUTE)
                            || (f.tag() == frontend::DESCRIBE
                                && !matches!(frontend::target(f.body(), "Describe"), Ok((b'S', _))))
                    });
                let catalog_ok = self.catalog_ok && (is_sync || flush_ok) && !self.pinned_to_node;
                // The next batch is likely the same size (a driver's
                // Parse/Bind/Describe/Execute/Sync): one allocation, not a
                // vector grown message by message.
                let next = Vec::with_capacity(self.pending.len());
                let batch = Batch {
                    frames: std::mem::replace(&mut self.pending, next),
                    catalog_ok: catalog_ok && self.cache.is_some(),
                    ddl: self.ddl,
                    syncs: u64::from(is_sync),
                    checked: std::mem::take(&mut self.checked),
                };
                // A lone Flush sends nothing the rest of the batch depends on.
                self.pinned_to_node = !is_sync && (self.pinned_to_node || !alone);
                self.reset_batch();
                done.push(batch);
                return Ok(done);
            }
            _ => self.catalog_ok = false,
        }
        self.pending.push(frame);
        Ok(done)
    }

    fn reset_batch(&mut self) {
        self.checked.clear();
        self.catalog_ok = true;
        self.ddl = false;
        self.portals.clear();
    }

    /// Messages still waiting for their Sync, as a node batch: needed before
    /// bytes sluice relays without looking (COPY data, function calls).
    pub fn take_pending(&mut self) -> Option<Batch> {
        if self.pending.is_empty() {
            return None;
        }
        let batch = Batch {
            frames: std::mem::take(&mut self.pending),
            catalog_ok: false,
            ddl: self.ddl,
            syncs: 0,
            checked: std::mem::take(&mut self.checked),
        };
        self.pinned_to_node = true;
        self.reset_batch();
        Some(batch)
    }

    /// The messages to send the node for `batch`: statements the node lacks
    /// are prepared first.
    pub fn node_plan(&mut self, batch: Batch) -> Plan {
        // Usually nothing changes: the batch's own vector goes as it is.
        let mut frames = batch.frames;
        let mut ahead = Vec::new();
        let mut hidden_answers = 0;
        let mut hidden_closes = 0;
        let mut i = 0;
        while i < frames.len() {
            let frame = &frames[i];
            match frame.tag() {
                frontend::PARSE => {
                    if let Ok(p) = frontend::parse_parts(frame.body())
                        && let Some(s) = self.statements.get_mut(p.name)
                    {
                        s.on_node = true;
                        if std::mem::take(&mut s.stale_on_node) {
                            let close = frontend::encode_target(
                                frontend::CLOSE,
                                b'S',
                                &String::from_utf8_lossy(p.name),
                            );
                            frames.insert(i, close);
                            hidden_closes += 1;
                            i += 1;
                        }
                    }
                }
                frontend::BIND | frontend::DESCRIBE => {
                    if let Some(name) = statement_named(frame)
                        && let Some(s) = self.statements.get_mut(name)
                        && !s.on_node
                    {
                        if std::mem::take(&mut s.stale_on_node) {
                            ahead.push(frontend::encode_target(
                                frontend::CLOSE,
                                b'S',
                                &String::from_utf8_lossy(name),
                            ));
                            hidden_closes += 1;
                        }
                        ahead.push(s.parse.clone());
                        hidden_answers += 1;
                        s.on_node = true;
                    }
                }
                frontend::CLOSE => {
                    if let Ok((b'S', name)) = frontend::target(frame.body(), "Close")
                        && let Some(s) = self.statements.remove(name)
                        && !s.on_node
                        && !s.stale_on_node
                    {
                        frames[i] = frontend::encode_target(frontend::CLOSE, b'S', ABSENT);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        let frames = if ahead.is_empty() {
            frames
        } else {
            ahead.extend(frames);
            ahead
        };
        Plan {
            frames,
            hidden_answers,
            hidden_closes,
            statement_level: false,
        }
    }

    /// The messages to send a catalog connection for `batch`, with statement
    /// names rewritten to the copy's; `prepared` is that connection's set.
    pub fn catalog_plan(&mut self, batch: &Batch, prepared: &mut HashSet<String>) -> Plan {
        let mut ahead = Vec::new();
        let mut frames = Vec::with_capacity(batch.frames.len());
        let mut unnamed_parsed = false;
        for frame in &batch.frames {
            match frame.tag() {
                frontend::PARSE => {
                    let Ok(p) = frontend::parse_parts(frame.body()) else {
                        continue;
                    };
                    if p.name.is_empty() {
                        unnamed_parsed = true;
                        frames.push(frame.clone());
                        continue;
                    }
                    let server = catalog_name(&p);
                    if prepared.contains(&server) {
                        // Same text prepared by an earlier lookup: close it so the Parse succeeds.
                        ahead.push(frontend::encode_target(frontend::CLOSE, b'S', &server));
                    }
                    prepared.insert(server.clone());
                    frames.push(frontend::parse_renamed(&p, &server));
                }
                frontend::BIND | frontend::DESCRIBE => {
                    let Some(name) = statement_named(frame) else {
                        frames.push(frame.clone());
                        continue;
                    };
                    let Some(s) = self.statements.get(name) else {
                        frames.push(frame.clone());
                        continue;
                    };
                    if name.is_empty() {
                        if !unnamed_parsed {
                            ahead.push(s.parse.clone());
                            unnamed_parsed = true;
                        }
                        frames.push(frame.clone());
                        continue;
                    }
                    if !prepared.contains(&s.catalog_name) {
                        if let Ok(p) = frontend::parse_parts(s.parse.body()) {
                            ahead.push(frontend::parse_renamed(&p, &s.catalog_name));
                        }
                        prepared.insert(s.catalog_name.clone());
                    }
                    let renamed = if frame.tag() == frontend::BIND {
                        frontend::bind_renamed(frame.body(), &s.catalog_name).ok()
                    } else {
                        Some(frontend::encode_target(
                            frontend::DESCRIBE,
                            b'S',
                            &s.catalog_name,
                        ))
                    };
                    frames.push(renamed.unwrap_or_else(|| frame.clone()));
                }
                frontend::CLOSE => match frontend::target(frame.body(), "Close") {
                    Ok((b'S', name)) => {
                        self.statements.remove(name);
                        frames.push(frontend::encode_target(frontend::CLOSE, b'S', ABSENT));
                    }
                    _ => frames.push(frame.clone()),
                },
                _ => frames.push(frame.clone()),
            }
        }
        let hidden_answers = u32::try_from(ahead.len()).unwrap_or(u32::MAX);
        ahead.extend(frames);
        Plan {
            frames: ahead,
            hidden_answers,
            hidden_closes: 0,
            statement_level: false,
        }
    }
}

/// The statement a Bind or Describe('S') names.
fn statement_named(frame: &Frame) -> Option<&[u8]> {
    match frame.tag() {
        frontend::BIND => frontend::bind_names(frame.body()).ok().map(|(_, s, _)| s),
        frontend::DESCRIBE => match frontend::target(frame.body(), "Describe") {
            Ok((b'S', name)) => Some(name),
            _ => None,
        },
        _ => None,
    }
}

/// The copy's name for a statement: derived from its text and parameter
/// types, so equal statements share one name across sessions.
fn catalog_name(parts: &ParseParts<'_>) -> String {
    if parts.name.is_empty() {
        return String::new();
    }
    let mut h = DefaultHasher::new();
    parts.text.hash(&mut h);
    parts.param_types.hash(&mut h);
    format!("sluice_{:016x}", h.finish())
}

/// A message's query text as UTF-8; invalid bytes become U+FFFD (the
/// node judges them). Valid text, nearly all of it, is checked by
/// `from_utf8`'s fast path and borrowed.
fn as_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::CatalogPolicy;

    fn router() -> Router {
        Router::new(
            Some(Arc::new(ClassificationCache::new(
                100,
                CatalogPolicy::default(),
            ))),
            None,
        )
    }

    fn msg(tag: u8, body: &[u8]) -> Frame {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        Frame::from_raw(bytes::Bytes::from(v))
    }

    fn parse(name: &str, sql: &str) -> Frame {
        msg(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
    }
    fn bind(portal: &str, stmt: &str) -> Frame {
        msg(b'B', format!("{portal}\0{stmt}\0\0\0\0\0\0\0").as_bytes())
    }
    fn execute(portal: &str) -> Frame {
        msg(b'E', format!("{portal}\0\0\0\0\0").as_bytes())
    }
    fn sync() -> Frame {
        msg(b'S', b"")
    }

    fn run(r: &mut Router, frames: Vec<Frame>) -> Vec<Batch> {
        frames
            .into_iter()
            .flat_map(|f| r.push(f).unwrap())
            .collect()
    }

    #[test]
    fn a_repeated_text_reuses_the_sessions_last_classification() {
        let cache = Arc::new(ClassificationCache::new(100, CatalogPolicy::default()));
        let mut r = Router::new(Some(cache.clone()), None);
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        let mut classes = Vec::new();
        for _ in 0..3 {
            let b = run(
                &mut r,
                vec![parse("", sql), bind("", ""), execute(""), sync()],
            );
            classes.push(b[0].checked[0].class.clone());
        }
        assert!(Arc::ptr_eq(&classes[0], &classes[2]));
        assert_eq!(cache.counts(), (0, 1), "the shared cache was asked once");
        // Another text is looked up, and becomes the one remembered.
        let b = run(&mut r, vec![parse("", "SELECT oid FROM pg_type"), sync()]);
        assert!(b[0].catalog_ok);
        assert_eq!(cache.counts(), (0, 2));
    }

    #[test]
    fn a_catalog_batch_goes_to_the_copy_and_a_mixed_one_to_the_node() {
        let mut r = router();
        let b = run(
            &mut r,
            vec![
                parse("", "SELECT oid FROM pg_type"),
                bind("", ""),
                execute(""),
                sync(),
            ],
        );
        assert_eq!(b.len(), 1);
        assert!(b[0].catalog_ok);
        assert_eq!(b[0].syncs, 1);
        let b = run(
            &mut r,
            vec![
                parse("a", "SELECT relname FROM pg_class"),
                bind("", "a"),
                execute(""),
                parse("b", "SELECT * FROM orders"),
                bind("", "b"),
                execute(""),
                sync(),
            ],
        );
        assert!(!b[0].catalog_ok);
        let q = run(&mut r, vec![msg(b'Q', b"SELECT * FROM pg_namespace\0")]);
        assert!(q[0].catalog_ok);
        let q = run(&mut r, vec![msg(b'Q', b"CREATE TABLE x (a int)\0")]);
        assert!(!q[0].catalog_ok && q[0].ddl);
    }

    #[test]
    fn a_statement_parsed_on_the_copy_is_prepared_on_the_node_before_use() {
        let mut r = router();
        let b = run(
            &mut r,
            vec![
                parse("s1", "SELECT typname FROM pg_type WHERE oid = $1"),
                sync(),
            ],
        );
        assert!(b[0].catalog_ok);
        let mut prepared = HashSet::new();
        let plan = r.catalog_plan(&b[0], &mut prepared);
        assert_eq!(plan.hidden_answers, 0);
        assert_eq!(prepared.len(), 1);
        // Used next in a batch with a data statement: the node needs it.
        let b = run(
            &mut r,
            vec![
                bind("", "s1"),
                execute(""),
                parse("", "SELECT * FROM t"),
                bind("", ""),
                execute(""),
                sync(),
            ],
        );
        assert!(!b[0].catalog_ok);
        let plan = r.node_plan(b.into_iter().next().unwrap());
        assert_eq!(plan.hidden_answers, 1);
        assert_eq!(plan.frames[0].tag(), b'P');
        assert_eq!(
            frontend::parse_text(plan.frames[0].body()).unwrap().0,
            b"s1"
        );
        // Once there, it is not prepared twice.
        let b = run(&mut r, vec![bind("", "s1"), execute(""), msg(b'H', b"")]);
        let plan = r.node_plan(b.into_iter().next().unwrap());
        assert_eq!(plan.hidden_answers, 0);
    }

    #[test]
    fn catalog_names_are_shared_and_reparses_close_first() {
        let mut r = router();
        let mut prepared = HashSet::new();
        let b = run(
            &mut r,
            vec![
                parse("S_1", "SELECT 1 FROM pg_class"),
                bind("", "S_1"),
                execute(""),
                sync(),
            ],
        );
        let plan = r.catalog_plan(&b[0], &mut prepared);
        let (name, _) = frontend::parse_text(plan.frames[0].body()).unwrap();
        assert!(name.starts_with(b"sluice_"));
        let (_, stmt, _) = frontend::bind_names(plan.frames[1].body()).unwrap();
        assert_eq!(stmt, name);
        // Another session's S_1 with the same text on the same connection.
        let mut other = router();
        let b = run(
            &mut other,
            vec![parse("S_1", "SELECT 1 FROM pg_class"), sync()],
        );
        let plan = other.catalog_plan(&b[0], &mut prepared);
        assert_eq!(plan.hidden_answers, 1);
        assert_eq!(plan.frames[0].tag(), b'C');
        // A Bind on a connection that lacks the statement prepares it first.
        let b = run(&mut r, vec![bind("", "S_1"), execute(""), sync()]);
        assert!(b[0].catalog_ok);
        let plan = r.catalog_plan(&b[0], &mut HashSet::new());
        assert_eq!(plan.hidden_answers, 1);
        assert_eq!(plan.frames[0].tag(), b'P');
    }

    #[test]
    fn portals_from_earlier_batches_and_flushes_keep_batches_on_the_node() {
        let mut r = router();
        let b = run(
            &mut r,
            vec![
                parse("", "SELECT * FROM pg_class"),
                bind("p", ""),
                execute("p"),
                msg(b'H', b""),
            ],
        );
        assert!(!b[0].catalog_ok);
        assert_eq!(b[0].syncs, 0);
        let b = run(&mut r, vec![execute("p"), sync()]);
        assert!(
            !b[0].catalog_ok,
            "the rest of a flushed batch follows it to the node"
        );
        let b = run(&mut r, vec![execute("p"), sync()]);
        assert!(
            !b[0].catalog_ok,
            "a portal bound in another batch lives on the node"
        );
    }

    #[test]
    fn the_search_path_is_remembered_for_the_copy() {
        let mut r = router();
        assert_eq!(r.search_path(), None);
        run(&mut r, vec![msg(b'Q', b"SET search_path = shop, public\0")]);
        assert_eq!(r.search_path(), Some("SET search_path = shop, public"));
        run(
            &mut r,
            vec![msg(b'Q', b"SET search_path = a; DROP TABLE x\0")],
        );
        assert_eq!(
            r.search_path(),
            Some("SET search_path = shop, public"),
            "multi-statement text is not replayed"
        );
        run(&mut r, vec![msg(b'Q', b"reset search_path;\0")]);
        assert_eq!(r.search_path(), Some("reset search_path"));
    }

    #[test]
    fn without_a_catalog_copy_everything_goes_to_the_node() {
        let mut r = Router::new(None, None);
        let b = run(
            &mut r,
            vec![
                parse("", "SELECT * FROM pg_class"),
                bind("", ""),
                execute(""),
                sync(),
            ],
        );
        assert!(!b[0].catalog_ok);
        let q = run(&mut r, vec![msg(b'Q', b"SELECT * FROM pg_class\0")]);
        assert!(!q[0].catalog_ok);
    }
}
