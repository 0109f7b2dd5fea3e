//! A Vertica client answered by a PostgreSQL node: the translating relay.
//!
//! When `warehouse.dialect = "postgres"` and a Vertica driver connects, the
//! whole session is translated (vertica-protocol.md §5.2, with
//! [`crate::protocol::vertica`] doing the bytes):
//!
//! * startup: a PostgreSQL 3.0 StartupMessage stands for the client's; after
//!   login the client also gets `protocol_version`, `auto_commit` and
//!   `timezone`; PostgreSQL's NegotiateProtocolVersion never reaches it;
//! * authentication: cleartext and MD5 requests are relayed; a SCRAM request
//!   (codes 10–12 mean other things to Vertica drivers) is answered by sluice
//!   itself with the password it asked the client for in cleartext;
//! * client to node: Parse (`?` numbered), Bind (type OIDs dropped, text
//!   results), `SET SESSION AUTOCOMMIT`, and a hidden `BEGIN` ahead of the
//!   first statement after a transaction when autocommit is off (Vertica's
//!   default; PostgreSQL would commit each statement);
//! * node to client: RowDescription and ParameterDescription in Vertica's
//!   layout, a CommandDescription after each Describe of a statement, errors
//!   without PostgreSQL's `V` field, bytea values octal-escaped, and DML
//!   answered with Vertica's row-count result (`OUTPUT`);
//! * rules, the watchdog and statistics: each batch is screened by the same
//!   [`QueryGuard`] and [`Screening`] as a PostgreSQL session's before it
//!   goes anywhere, in the client direction both share
//!   ([`super::upstream`]; [`Translation`] is what is Vertica's in it).
//!
//! Unlike the plain relay, both directions inspect every message (COPY data
//! from the client excepted): rows must be looked at to be converted.
//!
//! Catalog lookups (`v_catalog`, `pg_catalog`, ...) are classified by the
//! same [`Router`] as PostgreSQL sessions' and answered by the catalog copy
//! through the same exchange ([`super::catalog_answer`]), converted by the
//! same functions as the node's answers. A Vertica driver prepares with
//! Parse, Describe, Flush: such a batch may go to the copy too, closed by a
//! Sync of sluice's own whose ReadyForQuery the client never sees. Lookups
//! switch to the copy only when the node owes nothing; in a transaction that
//! changed the schema, in a failed one, or when the copy is down, the node
//! answers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::backend::node::Attached;
use crate::cancel::Registration;
use crate::net::{ReadHalf, Stream, WriteHalf};
use crate::protocol::backend::{self, ErrorFields, TransactionStatus};
use crate::protocol::frame::{Frame, Item, Scanner, Treatment};
use crate::protocol::startup::{ClientDialect, StartupMessage};
use crate::protocol::vertica::{self, Conversions};
use crate::protocol::{ProtocolError, frontend, sqlstate};
use crate::server::{Generation, Sluice};

use super::catalog_answer::{Answers, NodeProgress, is_fatal};
use super::guard::{QueryGuard, Screening};
use super::observe::{Finished, SessionObserver};
use super::registry::NewSession;
use super::router::{Batch, Plan, Router};
use super::upstream::{ClientReader, ClientSide, Stop, Upstream};
use crate::catalog::CatalogError;

const READ_CHUNK: usize = 16 * 1024;

/// What the two directions share: requests whose answers need context.
#[derive(Default)]
struct Shared {
    /// Describe(statement) sent, oldest first: (statement, command tag).
    describes: VecDeque<(Vec<u8>, String)>,
    /// Bind sent, oldest first: the statement each names.
    binds: VecDeque<Vec<u8>>,
    /// Answers to sluice's own `BEGIN`s still to come: dropped up to and
    /// including their ReadyForQuery.
    hidden_begins: usize,
    /// CloseCompletes answering sluice's own Closes, to drop.
    hidden_closes: usize,
    /// The last ReadyForQuery's status.
    status: Option<TransactionStatus>,
    autocommit: bool,
    /// `auto_commit` changed; announced with the next ReadyForQuery.
    announce_autocommit: bool,
    /// How the current result's values convert.
    conversions: Conversions,
    /// How each described statement's results convert.
    by_statement: HashMap<Vec<u8>, Conversions>,
    /// The Describe(statement) being answered: (name, tag).
    describing: Option<(Vec<u8>, String)>,
    /// The running statement's result has a RowDescription (a SELECT, or
    /// DML with RETURNING): its row count stays in the CommandComplete tag.
    described: bool,
    /// Since the last BindComplete: the extended protocol, where results
    /// are described by Describe, not at execution.
    executing: bool,
    /// The executing statement was described with Vertica's row-count
    /// result ([`vertica::encode_row_count_description`]): its DataRow is owed.
    count_owed: bool,
    /// Statements described with Vertica's row-count result.
    counting: HashSet<Vec<u8>>,
}

impl Shared {
    /// What answering a batch consumes, to put back when the catalog copy
    /// fails before its answer reached the client and the node answers.
    fn answer_state(&self) -> AnswerState {
        (
            self.describes.clone(),
            self.binds.clone(),
            self.describing.clone(),
        )
    }

    fn restore(&mut self, state: AnswerState) {
        (self.describes, self.binds, self.describing) = state;
    }

    /// sluice answered a batch itself (a rule rejected it): the answers its
    /// Describes and Binds were noted for will never come. Its notes are
    /// the last ones, since the node owes nothing else by then.
    fn forget(&mut self, batch: &Batch) {
        for frame in &batch.frames {
            match frame.tag() {
                frontend::BIND => {
                    self.binds.pop_back();
                }
                frontend::DESCRIBE
                    if matches!(frontend::target(frame.body(), "Describe"), Ok((b'S', _))) =>
                {
                    self.describes.pop_back();
                }
                _ => {}
            }
        }
    }

    /// An answer ended with ReadyForQuery: what it asked about is answered.
    fn answered(&mut self) {
        self.describes.clear();
        self.binds.clear();
        self.describing = None;
        self.described = false;
        self.executing = false;
        self.count_owed = false;
    }

    /// Appends the Vertica form of a message answering the client's
    /// requests, from the node or the catalog copy alike.
    fn convert(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), ProtocolError> {
        match frame.tag() {
            backend::ERROR_RESPONSE | backend::NOTICE_RESPONSE => {
                out.extend_from_slice(vertica::error_to_vertica(frame.tag(), frame.body())?.raw());
            }
            vertica::PARAMETER_DESCRIPTION => {
                self.describing = self.describes.pop_front();
                out.extend_from_slice(
                    vertica::parameter_description_to_vertica(frame.body())?.raw(),
                );
            }
            vertica::ROW_DESCRIPTION => {
                let (t, conv) = vertica::row_description_to_vertica(frame.body())?;
                out.extend_from_slice(t.raw());
                self.described = true;
                if let Some((name, tag)) = self.describing.take() {
                    out.extend_from_slice(vertica::encode_command_description(&tag).raw());
                    self.by_statement.insert(name, conv.clone());
                }
                self.conversions = conv;
            }
            vertica::NO_DATA => match self.describing.take() {
                Some((name, tag)) => {
                    // Vertica describes DML by its row-count result.
                    if vertica::counts_rows(&tag) {
                        out.extend_from_slice(vertica::encode_row_count_description().raw());
                        self.counting.insert(name.clone());
                    } else {
                        out.extend_from_slice(frame.raw());
                        self.counting.remove(&name);
                    }
                    out.extend_from_slice(vertica::encode_command_description(&tag).raw());
                    self.by_statement.insert(name, Vec::new());
                }
                None => out.extend_from_slice(frame.raw()),
            },
            b'2' => {
                // BindComplete: the rows that follow are this statement's.
                self.executing = true;
                self.count_owed = false;
                if let Some(name) = self.binds.pop_front() {
                    if let Some(conv) = self.by_statement.get(&name) {
                        self.conversions = conv.clone();
                    }
                    self.count_owed = self.counting.contains(&name);
                }
                out.extend_from_slice(frame.raw());
            }
            vertica::DATA_ROW => {
                match vertica::data_row_to_vertica(frame.body(), &self.conversions)? {
                    Some(row) => out.extend_from_slice(row.raw()),
                    None => out.extend_from_slice(frame.raw()),
                }
            }
            b'3' if self.hidden_closes > 0 => self.hidden_closes -= 1,
            backend::COMMAND_COMPLETE => {
                // vertica-python reads `auto_commit` once the SET's
                // result ends, before ReadyForQuery.
                if self.announce_autocommit {
                    self.announce_autocommit = false;
                    vertica::encode_auto_commit(out, self.autocommit);
                }
                self.row_count(frame.body(), out);
                out.extend_from_slice(frame.raw());
            }
            vertica::NEGOTIATE_PROTOCOL_VERSION => {}
            _ => out.extend_from_slice(frame.raw()),
        }
        Ok(())
    }
}

impl Shared {
    /// Vertica answers DML with a result set holding the row count, where
    /// PostgreSQL only has the CommandComplete tag: a simple query's gets
    /// the RowDescription and the row, a prepared statement's (described
    /// with the RowDescription already) the row, ahead of `command_complete`.
    fn row_count(&mut self, command_complete: &[u8], out: &mut BytesMut) {
        let described = std::mem::take(&mut self.described);
        let Some(rows) = vertica::row_count(command_complete) else {
            return;
        };
        if self.executing {
            if std::mem::take(&mut self.count_owed) {
                out.extend_from_slice(vertica::encode_row_count(rows).raw());
            }
        } else if !described {
            out.extend_from_slice(vertica::encode_row_count_description().raw());
            out.extend_from_slice(vertica::encode_row_count(rows).raw());
        }
    }
}

type AnswerState = (
    VecDeque<(Vec<u8>, String)>,
    VecDeque<Vec<u8>>,
    Option<(Vec<u8>, String)>,
);

/// The catalog copy's answers, converted as the node's are.
struct FromCatalog<'a> {
    shared: &'a SharedState,
    /// What answering consumes, as it was before the copy answered.
    before: AnswerState,
}

impl Answers for FromCatalog<'_> {
    fn whole_rows(&self) -> bool {
        true
    }
    fn message(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), ProtocolError> {
        self.shared
            .lock()
            .expect("session state")
            .convert(frame, out)
    }
    fn ready(&mut self) {
        self.shared.lock().expect("session state").answered();
    }
    fn unanswered(&mut self) {
        let before = std::mem::take(&mut self.before);
        self.shared.lock().expect("session state").restore(before);
    }
}

type SharedState = Mutex<Shared>;

/// Why the relay stopped.
#[derive(Debug)]
enum End {
    ClientLeft,
    NodeClosed,
    Killed,
    Refused,
    ClientProtocol(ProtocolError),
    NodeProtocol(ProtocolError),
    Auth(String),
    /// The catalog copy failed after part of its answer reached the client.
    CatalogBroken(CatalogError),
    Io(#[allow(dead_code)] std::io::Error),
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> End {
        End::Io(e)
    }
}

/// A stream read whole message by whole message.
struct Messages<R> {
    rd: R,
    buf: BytesMut,
    scanner: Scanner,
}

impl<R: AsyncRead + Unpin> Messages<R> {
    fn new(rd: R, max_message: usize, treatment: fn(u8) -> Treatment) -> Messages<R> {
        Messages {
            rd,
            buf: BytesMut::with_capacity(READ_CHUNK),
            scanner: Scanner::new(max_message, treatment),
        }
    }

    /// The next item, or `Ok(None)` at end of stream. Cancel safe: bytes
    /// read stay in the buffer.
    async fn next(&mut self) -> Result<Option<Item>, Result<ProtocolError, std::io::Error>> {
        loop {
            match self.scanner.next(&mut self.buf) {
                Ok(Some(item)) => return Ok(Some(item)),
                Ok(None) => {}
                Err(e) => return Err(Ok(e)),
            }
            match self.fill().await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(Err(e)),
            }
        }
    }

    /// Reads more into the buffer. Cancel safe.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        self.rd.read_buf(&mut self.buf).await
    }

    /// The next whole message; relayed runs cannot occur with an
    /// all-inspecting treatment.
    async fn frame(&mut self) -> Result<Option<Frame>, Result<ProtocolError, std::io::Error>> {
        loop {
            match self.next().await? {
                Some(Item::Inspect(f)) => return Ok(Some(f)),
                Some(Item::Relay(_)) => continue,
                None => return Ok(None),
            }
        }
    }
}

/// A Vertica client's messages are read one by one: each is translated, so
/// what goes to the node is written as soon as the next message is not
/// wholly read yet, or when much has gathered; COPY data at once.
impl<R: AsyncRead + Unpin> ClientReader for Messages<R> {
    fn buffered(&mut self) -> Result<Option<Item>, ProtocolError> {
        self.scanner.next(&mut self.buf)
    }

    async fn read(&mut self) -> std::io::Result<usize> {
        self.fill().await
    }

    fn flush_now(&self, out: &BytesMut, relayed: bool) -> bool {
        relayed || !whole_message_buffered(&self.buf) || out.len() > 64 * 1024
    }
}

fn inspect_all(_: u8) -> Treatment {
    Treatment::Inspect
}

/// COPY data and its end (CopyDone, CopyFail) stream through; everything
/// else is looked at. Held back by routing, a CopyDone would never reach the
/// node, which waits for it before answering.
fn client_treatment(tag: u8) -> Treatment {
    match tag {
        b'd' | b'c' | b'f' => Treatment::Relay,
        _ => Treatment::Inspect,
    }
}

/// Runs a translated session to its end.
pub async fn run(
    sluice: Arc<Sluice>,
    generation: Arc<Generation>,
    mut client: Stream,
    startup: StartupMessage,
    peer: SocketAddr,
) {
    let postgres_startup = vertica::postgres_startup(&startup);
    let Some((attached, server, first_answer)) = super::session::open_session(
        &sluice,
        &generation,
        &mut client,
        &postgres_startup,
        peer,
        startup.user(),
    )
    .await
    else {
        return;
    };
    let node = attached.node().addr().to_string();
    tracing::debug!(%peer, node, user = startup.user(), database = startup.database(),
        application = startup.application(), dialect = %ClientDialect::Vertica,
        translated = true, "session started");
    let registered = sluice.registry.register(
        NewSession {
            user: startup.user(),
            database: startup.database(),
            application: startup.application(),
            peer,
            node: &node,
        },
        &sluice.kill,
    );
    registered.entry().set_dialect(ClientDialect::Vertica);
    let observer = SessionObserver::new(
        sluice.metrics.clone(),
        attached.node().clone(),
        registered.entry().clone(),
    );
    let client_tls = client.is_tls();
    let max_message = generation.config.server.max_message_size;
    let (client_rd, client_wr) = client.into_split();
    let client_wr = tokio::sync::Mutex::new(client_wr);
    let (node_rd, mut node_wr) = server.into_split();
    let mut from_client = Messages::new(client_rd, max_message, client_treatment);
    let mut from_node = Messages::new(node_rd, usize::MAX, inspect_all);
    // The node's first answer was read while the session was opened.
    from_node.buf = first_answer;
    let shared = Mutex::new(Shared {
        autocommit: vertica::requested_autocommit(&startup),
        ..Shared::default()
    });
    let protocol = vertica::negotiated_protocol(startup.vertica_protocol());
    let token = registered.entry().token.clone();
    let mut registration = None;
    let progress = NodeProgress::new(
        generation
            .catalog
            .as_ref()
            .map(|pool| (pool.freshness().clone(), Arc::from(startup.database()))),
    );
    let guard = QueryGuard::for_session(&sluice, &generation, &startup, peer);
    let upstream = Upstream {
        guard: &guard,
        screening: Screening::default(),
        router: Router::new(generation.classifier.clone(), Some(sluice.metrics.clone()))
            .for_vertica(),
        catalog: generation.catalog.clone(),
        user: startup.user(),
        database: startup.database(),
        progress: &progress,
        observer: &observer,
        metrics: &sluice.metrics,
        client: Translation {
            shared: &shared,
            tags: HashMap::new(),
        },
    };

    let end = tokio::select! {
        end = async {
            let login = {
                let mut wr = client_wr.lock().await;
                authenticate(&mut from_node, &mut node_wr, &mut from_client, &mut *wr, startup.user(), client_tls).await
            };
            if let Err(end) = login {
                return end;
            }
            let up = upstream.run(&mut from_client, &mut node_wr, &client_wr);
            let downstream = node_to_client(
                &mut from_node, &client_wr, &shared, &observer, &sluice, &attached,
                &mut registration, protocol, &progress, &guard,
            );
            tokio::select! {
                stop = up => stop.into(),
                end = downstream => end,
                _ = guard.watchdog(generation.clone()) => unreachable!("the watchdog runs until the session ends"),
            }
        } => end,
        _ = super::registry::KillSignal::new(token) => End::Killed,
    };
    let mut client_wr = client_wr.into_inner();
    let error = match &end {
        End::ClientLeft | End::Refused | End::Io(_) => None,
        End::NodeClosed => Some(ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("warehouse node {node} closed the connection"),
        )),
        End::Killed => Some(ErrorFields::fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "sluice closed this session (KILL CLIENT or shutdown)",
        )),
        End::ClientProtocol(e) => Some(ErrorFields::fatal(
            e.sqlstate(),
            format!("invalid message from client: {e}"),
        )),
        End::NodeProtocol(e) => Some(ErrorFields::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("warehouse node {node} sent an invalid message: {e}"),
        )),
        End::Auth(why) => Some(ErrorFields::fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            why.clone(),
        )),
        End::CatalogBroken(e) => Some(ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("the catalog copy failed in the middle of an answer: {e}"),
        )),
    };
    match &end {
        End::ClientLeft | End::Refused => tracing::debug!(%peer, node, "session ended"),
        _ => tracing::info!(%peer, node, reason = ?end, "session ended"),
    }
    if let Some(error) = error {
        let _ = client_wr.write_all(&error.to_bytes()).await;
    }
    let _ = client_wr.shutdown().await;
    if !matches!(end, End::NodeClosed) {
        let _ = node_wr.write_all(&frontend::TERMINATE_MESSAGE).await;
    }
    let _ = node_wr.shutdown().await;
    drop(registration);
}

type ClientRd = Messages<ReadHalf>;
type NodeRd = Messages<ReadHalf>;

fn auth_code(body: &[u8]) -> i32 {
    body.get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(-1)
}

async fn expect_frame<R: AsyncRead + Unpin>(
    from: &mut Messages<R>,
    client: bool,
) -> Result<Frame, End> {
    match from.frame().await {
        Ok(Some(f)) => Ok(f),
        Ok(None) if client => Err(End::ClientLeft),
        Ok(None) => Err(End::NodeClosed),
        Err(Ok(e)) if client => Err(End::ClientProtocol(e)),
        Err(Ok(e)) => Err(End::NodeProtocol(e)),
        Err(Err(e)) => Err(End::Io(e)),
    }
}

/// The login, up to the node's AuthenticationOk (forwarded).
async fn authenticate(
    node: &mut NodeRd,
    node_wr: &mut (impl AsyncWrite + Unpin),
    client: &mut ClientRd,
    client_wr: &mut (impl AsyncWrite + Unpin),
    user: &str,
    client_tls: bool,
) -> Result<(), End> {
    let mut scram: Option<ScramSha256> = None;
    loop {
        let frame = expect_frame(node, false).await?;
        match frame.tag() {
            backend::AUTHENTICATION => {
                let body = frame.body();
                match auth_code(body) {
                    backend::AUTH_OK => {
                        client_wr.write_all(frame.raw()).await?;
                        return Ok(());
                    }
                    3 => {
                        client_wr.write_all(frame.raw()).await?;
                        let p = expect_password(client).await?;
                        node_wr.write_all(p.raw()).await?;
                    }
                    5 => {
                        // Vertica's MD5 request also carries a 16-byte user
                        // salt, which MD5 does not use (§2).
                        let mut out = BytesMut::new();
                        out.put_u8(backend::AUTHENTICATION);
                        out.put_i32(4 + 4 + 4 + 4 + 16);
                        out.put_i32(5);
                        out.put_slice(body.get(4..8).unwrap_or(&[0; 4]));
                        out.put_i32(16);
                        out.put_slice(&[0; 16]);
                        client_wr.write_all(&out).await?;
                        let p = expect_password(client).await?;
                        node_wr.write_all(p.raw()).await?;
                    }
                    backend::AUTH_SASL => {
                        let offered = body[4..]
                            .split(|b| *b == 0)
                            .any(|m| m == SCRAM_SHA_256.as_bytes());
                        if !offered {
                            return Err(End::Auth(
                                "the warehouse node offers no SASL mechanism sluice can use for a Vertica client".into(),
                            ));
                        }
                        if !client_tls {
                            tracing::warn!(
                                user,
                                "asking a Vertica client for its password in cleartext over an unencrypted connection (the node wants SCRAM); enable [server.tls]"
                            );
                        }
                        // Vertica drivers do not know SCRAM: ask for the
                        // password and do the exchange with the node here.
                        let mut out = BytesMut::new();
                        out.put_u8(backend::AUTHENTICATION);
                        out.put_i32(8);
                        out.put_i32(3);
                        client_wr.write_all(&out).await?;
                        let p = expect_password(client).await?;
                        let password = p.body().strip_suffix(&[0]).unwrap_or(p.body());
                        let s = ScramSha256::new(password, ChannelBinding::unsupported());
                        let mut out = BytesMut::new();
                        frontend::encode_sasl_initial_response(
                            &mut out,
                            SCRAM_SHA_256,
                            s.message(),
                        );
                        node_wr.write_all(&out).await?;
                        scram = Some(s);
                    }
                    backend::AUTH_SASL_CONTINUE => {
                        let s = scram.as_mut().ok_or(End::Auth(
                            "the warehouse node continued a SASL exchange that never started"
                                .into(),
                        ))?;
                        s.update(&body[4..]).map_err(|e| {
                            End::Auth(format!(
                                "SCRAM exchange with the warehouse node failed: {e}"
                            ))
                        })?;
                        let mut out = BytesMut::new();
                        frontend::encode_sasl_response(&mut out, s.message());
                        node_wr.write_all(&out).await?;
                    }
                    backend::AUTH_SASL_FINAL => {
                        let mut s = scram.take().ok_or(End::Auth(
                            "the warehouse node finished a SASL exchange that never started".into(),
                        ))?;
                        s.finish(&body[4..]).map_err(|e| {
                            End::Auth(format!(
                                "the warehouse node's SCRAM signature is wrong: {e}"
                            ))
                        })?;
                    }
                    code => {
                        return Err(End::Auth(format!(
                            "the warehouse node asks for authentication method {code}, which sluice cannot offer a Vertica client"
                        )));
                    }
                }
            }
            backend::ERROR_RESPONSE => {
                let e = vertica::error_to_vertica(frame.tag(), frame.body())
                    .map_err(End::NodeProtocol)?;
                client_wr.write_all(e.raw()).await?;
                return Err(End::Refused);
            }
            vertica::NEGOTIATE_PROTOCOL_VERSION => {}
            backend::NOTICE_RESPONSE => {
                let n = vertica::error_to_vertica(frame.tag(), frame.body())
                    .map_err(End::NodeProtocol)?;
                client_wr.write_all(n.raw()).await?;
            }
            _ => client_wr.write_all(frame.raw()).await?,
        }
    }
}

async fn expect_password(client: &mut ClientRd) -> Result<Frame, End> {
    let p = expect_frame(client, true).await?;
    if p.tag() != frontend::PASSWORD {
        return Err(End::ClientProtocol(ProtocolError::Malformed {
            what: "authentication",
            why: "expected a password message",
        }));
    }
    Ok(p)
}

fn begin_query() -> Frame {
    frontend::encode_query("BEGIN")
}

/// Messages that carry a statement: before the first of them after a
/// transaction ended, a session without autocommit opens one.
fn starts_work(tag: u8) -> bool {
    matches!(
        tag,
        frontend::QUERY | frontend::PARSE | frontend::BIND | frontend::EXECUTE
    )
}

/// What a Vertica client needs from the client direction: its messages
/// translated, its answers' context noted in [`Shared`], and a hidden
/// `BEGIN` when autocommit is off.
struct Translation<'a> {
    shared: &'a SharedState,
    /// Statement name → command tag, for CommandDescription.
    tags: HashMap<Vec<u8>, String>,
}

impl ClientSide for Translation<'_> {
    /// Notes what the answers will need (CommandDescription tags,
    /// conversions by statement).
    fn translate(&mut self, frame: Frame) -> Result<Frame, ProtocolError> {
        let tag = frame.tag();
        let mut s = self.shared.lock().expect("session state");
        if tag == frontend::QUERY
            && let Ok(text) = frontend::query_text(frame.body())
            && let Some(on) = super::vertica_sql::set_autocommit(text)
        {
            s.autocommit = on;
            s.announce_autocommit = true;
            // PostgreSQL has no such setting; a custom one answers SET.
            let value = if on { "on" } else { "off" };
            return Ok(frontend::encode_query(&format!(
                "SET sluice.vertica_autocommit = '{value}'"
            )));
        }
        match tag {
            // A statement parsed again under its name replaces the old one,
            // as in Vertica (vertica-python reuses "s0"): the router closes
            // the old one on the node first.
            frontend::PARSE => {
                super::vertica_sql::parse_to_postgres(frame.body()).map(|(f, name, t)| {
                    self.tags.insert(name, t);
                    f
                })
            }
            frontend::BIND => {
                let (_, statement, _) = frontend::bind_names(frame.body())?;
                s.binds.push_back(statement.to_vec());
                vertica::bind_to_postgres(frame.body())
            }
            frontend::DESCRIBE => {
                if let Ok((b'S', name)) = frontend::target(frame.body(), "Describe") {
                    let t = self
                        .tags
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| "SELECT".into());
                    s.describes.push_back((name.to_vec(), t));
                }
                Ok(frame)
            }
            _ => Ok(frame),
        }
    }

    /// The rejection in Vertica's layout; the answers noted for the batch
    /// will never come.
    fn answer_here(
        &mut self,
        batch: &Batch,
        rejection: Option<&ErrorFields>,
        answer: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        self.shared.lock().expect("session state").forget(batch);
        if let Some(error) = rejection {
            let pg = error.to_bytes();
            let converted = vertica::error_to_vertica(backend::ERROR_RESPONSE, &pg[5..])?;
            answer.extend_from_slice(converted.raw());
        }
        Ok(())
    }

    /// A hidden `BEGIN` goes first when autocommit is off and no
    /// transaction is open; the CloseCompletes of the router's own Closes
    /// are noted to be dropped.
    fn plan_for_node(
        &mut self,
        router: &mut Router,
        batch: Batch,
        out: &mut BytesMut,
        progress: &NodeProgress,
    ) -> Plan {
        let works = batch.frames.iter().any(|f| starts_work(f.tag()));
        {
            let mut s = self.shared.lock().expect("session state");
            if works && !s.autocommit && s.status == Some(TransactionStatus::Idle) {
                out.extend_from_slice(begin_query().raw());
                s.hidden_begins += 1;
                s.status = Some(TransactionStatus::InTransaction);
                progress.asked.fetch_add(1, Ordering::AcqRel);
            }
        }
        let plan = router.node_plan(batch);
        self.shared.lock().expect("session state").hidden_closes += plan.hidden_closes;
        plan
    }

    fn catalog_answers(&mut self) -> impl Answers + Send + '_ {
        FromCatalog {
            shared: self.shared,
            before: self.shared.lock().expect("session state").answer_state(),
        }
    }
}

impl From<Stop> for End {
    fn from(stop: Stop) -> End {
        match stop {
            Stop::ClientLeft => End::ClientLeft,
            Stop::ClientProtocol(e) => End::ClientProtocol(e),
            Stop::NodeProtocol(e) => End::NodeProtocol(e),
            Stop::CatalogBroken(e) => End::CatalogBroken(e),
            Stop::Io(e) => End::Io(e),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn node_to_client(
    from: &mut NodeRd,
    wr: &tokio::sync::Mutex<WriteHalf>,
    shared: &SharedState,
    observer: &SessionObserver,
    sluice: &Arc<Sluice>,
    attached: &Attached,
    registration: &mut Option<Registration>,
    protocol: i32,
    progress: &NodeProgress,
    guard: &QueryGuard,
) -> End {
    let mut out = BytesMut::new();
    // Bytes of `out` already counted for a finished batch.
    let mut counted = 0;
    let mut finished = Finished::default();
    let mut fatal = false;
    loop {
        let frame = match from.frame().await {
            Ok(Some(f)) => f,
            Ok(None) if fatal => return End::Refused,
            Ok(None) => return End::NodeClosed,
            Err(Ok(e)) => return End::NodeProtocol(e),
            Err(Err(e)) => return End::Io(e),
        };
        let converted: Result<(), ProtocolError> = (|| {
            if frame.tag() == backend::READY_FOR_QUERY {
                progress.ready(frame.body().first().copied().unwrap_or(b'I'));
            }
            let mut s = shared.lock().expect("session state");
            if s.hidden_begins > 0 {
                if frame.tag() == backend::READY_FOR_QUERY {
                    s.hidden_begins -= 1;
                    // Counted as asked, like the batch that follows it.
                    let _ = guard.ready(Instant::now());
                }
                if frame.tag() != backend::ERROR_RESPONSE {
                    return Ok(());
                }
            }
            match frame.tag() {
                backend::BACKEND_KEY_DATA => {
                    let key = backend::backend_key_data(frame.body())?;
                    guard.set_target(crate::cancel::CancelTarget {
                        node: attached.node().addr().to_string(),
                        key: key.clone(),
                    });
                    vertica::encode_vertica_parameters(&mut out, protocol, s.autocommit, "");
                    let reg = sluice.cancels.register(attached.node().addr(), key);
                    backend::encode_backend_key_data(&mut out, reg.client_key());
                    *registration = Some(reg);
                }
                backend::PARAMETER_STATUS => {
                    out.extend_from_slice(frame.raw());
                    if let Some((b"TimeZone", tz)) = vertica::parameter_status(frame.body()) {
                        let tz = String::from_utf8_lossy(tz).into_owned();
                        backend::encode_parameter_status(&mut out, "timezone", &tz);
                    }
                }
                backend::READY_FOR_QUERY => {
                    let status = backend::ready_for_query(frame.body())?;
                    s.status = Some(status);
                    s.hidden_closes = 0;
                    s.answered();
                    if s.announce_autocommit {
                        s.announce_autocommit = false;
                        vertica::encode_auto_commit(&mut out, s.autocommit);
                    }
                    out.extend_from_slice(frame.raw());
                    // What this batch sent the client, then its end.
                    finished.ready(out.len() - counted, status);
                    counted = out.len();
                }
                // ParseComplete of a Parse sluice sent ahead (a statement
                // first prepared on the catalog copy).
                backend::PARSE_COMPLETE if progress.hide_parse_complete() => {}
                backend::COMMAND_COMPLETE => {
                    guard.command_complete(frame.body());
                    s.convert(&frame, &mut out)?;
                }
                backend::ERROR_RESPONSE => {
                    observer.error(frame.body());
                    fatal |= is_fatal(frame.body());
                    let (code, _) = backend::error_summary(frame.body());
                    if let Some(notice) = guard.error(&code) {
                        // The rule's notice goes just ahead of the node's 57014.
                        out.extend_from_slice(
                            vertica::error_to_vertica(backend::NOTICE_RESPONSE, &notice[5..])?
                                .raw(),
                        );
                    }
                    s.convert(&frame, &mut out)?;
                }
                _ => s.convert(&frame, &mut out)?,
            }
            Ok(())
        })();
        if let Err(e) = converted {
            return End::NodeProtocol(e);
        }
        if (!whole_message_buffered(&from.buf) || out.len() > 64 * 1024) && !out.is_empty() {
            let (written, rest) = (out.len(), out.len() - counted);
            counted = 0;
            if let Err(e) = wr.lock().await.write_all(&out).await {
                return End::Io(e);
            }
            out.clear();
            finished.record(observer, guard, written, rest);
        }
    }
}

/// True when `buf` starts with a whole message: the next one needs no read.
fn whole_message_buffered(buf: &[u8]) -> bool {
    buf.len() >= 5
        && i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]])
            .try_into()
            .is_ok_and(|len: usize| buf.len() > len)
}
