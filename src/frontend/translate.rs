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
//!   without PostgreSQL's `V` field, bytea values octal-escaped.
//!
//! Unlike the plain relay, both directions inspect every message (COPY data
//! from the client excepted): rows must be looked at to be converted.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::backend::node::Attached;
use crate::cancel::Registration;
use crate::net::Stream;
use crate::protocol::backend::{self, ErrorFields, TransactionStatus};
use crate::protocol::frame::{Frame, Item, Scanner, Treatment};
use crate::protocol::startup::{ClientDialect, StartupMessage};
use crate::protocol::vertica::{self, Conversions};
use crate::protocol::{ProtocolError, frontend, sqlstate};
use crate::server::{Generation, Sluice};

use super::observe::SessionObserver;
use super::registry::NewSession;

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
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
                self.buf.reserve(READ_CHUNK);
            }
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(Err(e)),
            }
        }
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

fn inspect_all(_: u8) -> Treatment {
    Treatment::Inspect
}

/// COPY data streams through; everything else is looked at.
fn client_treatment(tag: u8) -> Treatment {
    match tag {
        b'd' => Treatment::Relay,
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
    let (client_rd, mut client_wr) = tokio::io::split(client);
    let (node_rd, mut node_wr) = tokio::io::split(server);
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

    let end = tokio::select! {
        end = async {
            match authenticate(&mut from_node, &mut node_wr, &mut from_client, &mut client_wr, startup.user(), client_tls).await {
                Ok(()) => {}
                Err(end) => return end,
            }
            let upstream = client_to_node(&mut from_client, &mut node_wr, &shared, &observer);
            let downstream = node_to_client(
                &mut from_node, &mut client_wr, &shared, &observer, &sluice, &attached,
                &mut registration, protocol,
            );
            tokio::select! {
                end = upstream => end,
                end = downstream => end,
            }
        } => end,
        _ = token.cancelled() => End::Killed,
    };
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

type ClientRd = Messages<ReadHalf<Stream>>;
type NodeRd = Messages<ReadHalf<Stream>>;

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

async fn client_to_node(
    from: &mut ClientRd,
    wr: &mut WriteHalf<Stream>,
    shared: &SharedState,
    observer: &SessionObserver,
) -> End {
    // Statement name → command tag, for CommandDescription.
    let mut tags: HashMap<Vec<u8>, String> = HashMap::new();
    let mut out = BytesMut::new();
    loop {
        let before = from.buf.len();
        let item = match from.next().await {
            Ok(Some(item)) => item,
            Ok(None) => return End::ClientLeft,
            Err(Ok(e)) => return End::ClientProtocol(e),
            Err(Err(e)) => return End::Io(e),
        };
        observer.client_read(before.saturating_sub(from.buf.len()));
        let frame = match item {
            Item::Relay(bytes) => {
                if let Err(e) = wr.write_all(&bytes).await {
                    return End::Io(e);
                }
                continue;
            }
            Item::Inspect(frame) => frame,
        };
        let tag = frame.tag();
        if tag == frontend::TERMINATE {
            return End::ClientLeft;
        }
        let rewritten = {
            let mut s = shared.lock().expect("session state");
            if tag == frontend::QUERY
                && let Ok(text) = frontend::query_text(frame.body())
                && let Some(on) = vertica::set_autocommit(text)
            {
                s.autocommit = on;
                s.announce_autocommit = true;
                // PostgreSQL has no such setting; a custom one answers SET.
                let value = if on { "on" } else { "off" };
                Ok(frontend::encode_query(&format!(
                    "SET sluice.vertica_autocommit = '{value}'"
                )))
            } else {
                if starts_work(tag) && !s.autocommit && s.status == Some(TransactionStatus::Idle) {
                    out.extend_from_slice(begin_query().raw());
                    s.hidden_begins += 1;
                    s.status = Some(TransactionStatus::InTransaction);
                }
                match tag {
                    frontend::PARSE => {
                        vertica::parse_to_postgres(frame.body()).map(|(f, name, t)| {
                            // Vertica replaces a statement parsed again under
                            // its name (vertica-python reuses "s0"); PostgreSQL
                            // refuses (42P05) unless the old one is closed first.
                            if !name.is_empty() && tags.contains_key(&name) {
                                let close = frontend::encode_target(
                                    frontend::CLOSE,
                                    b'S',
                                    &String::from_utf8_lossy(&name),
                                );
                                out.extend_from_slice(close.raw());
                                s.hidden_closes += 1;
                            }
                            tags.insert(name, t);
                            f
                        })
                    }
                    frontend::BIND => match frontend::bind_names(frame.body()) {
                        Ok((_, statement, _)) => {
                            s.binds.push_back(statement.to_vec());
                            vertica::bind_to_postgres(frame.body())
                        }
                        Err(e) => Err(e),
                    },
                    frontend::DESCRIBE => {
                        if let Ok((b'S', name)) = frontend::target(frame.body(), "Describe") {
                            let t = tags.get(name).cloned().unwrap_or_else(|| "SELECT".into());
                            s.describes.push_back((name.to_vec(), t));
                        }
                        Ok(frame)
                    }
                    _ => Ok(frame),
                }
            }
        };
        let frame = match rewritten {
            Ok(f) => f,
            Err(e) => return End::ClientProtocol(e),
        };
        if matches!(
            tag,
            frontend::QUERY | frontend::SYNC | frontend::FUNCTION_CALL
        ) {
            observer.request();
        }
        out.extend_from_slice(frame.raw());
        if !whole_message_buffered(&from.buf) || out.len() > 64 * 1024 {
            if let Err(e) = wr.write_all(&out).await {
                return End::Io(e);
            }
            out.clear();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn node_to_client(
    from: &mut NodeRd,
    wr: &mut WriteHalf<Stream>,
    shared: &SharedState,
    observer: &SessionObserver,
    sluice: &Arc<Sluice>,
    attached: &Attached,
    registration: &mut Option<Registration>,
    protocol: i32,
) -> End {
    let mut out = BytesMut::new();
    let mut conversions: Conversions = Vec::new();
    let mut by_statement: HashMap<Vec<u8>, Conversions> = HashMap::new();
    // The Describe(statement) being answered: (name, tag).
    let mut describing: Option<(Vec<u8>, String)> = None;
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
            let mut s = shared.lock().expect("session state");
            if s.hidden_begins > 0 {
                if frame.tag() == backend::READY_FOR_QUERY {
                    s.hidden_begins -= 1;
                }
                if frame.tag() != backend::ERROR_RESPONSE {
                    return Ok(());
                }
            }
            match frame.tag() {
                backend::BACKEND_KEY_DATA => {
                    let key = backend::backend_key_data(frame.body())?;
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
                    s.describes.clear();
                    s.binds.clear();
                    describing = None;
                    if s.announce_autocommit {
                        s.announce_autocommit = false;
                        vertica::encode_auto_commit(&mut out, s.autocommit);
                    }
                    observer.ready_for_query(status);
                    out.extend_from_slice(frame.raw());
                }
                backend::ERROR_RESPONSE | backend::NOTICE_RESPONSE => {
                    if frame.tag() == backend::ERROR_RESPONSE {
                        observer.error(frame.body());
                        fatal |= is_fatal(frame.body());
                    }
                    out.extend_from_slice(
                        vertica::error_to_vertica(frame.tag(), frame.body())?.raw(),
                    );
                }
                vertica::PARAMETER_DESCRIPTION => {
                    describing = s.describes.pop_front();
                    out.extend_from_slice(
                        vertica::parameter_description_to_vertica(frame.body())?.raw(),
                    );
                }
                vertica::ROW_DESCRIPTION => {
                    let (t, conv) = vertica::row_description_to_vertica(frame.body())?;
                    out.extend_from_slice(t.raw());
                    if let Some((name, tag)) = describing.take() {
                        out.extend_from_slice(vertica::encode_command_description(&tag).raw());
                        by_statement.insert(name, conv.clone());
                    }
                    conversions = conv;
                }
                vertica::NO_DATA => {
                    out.extend_from_slice(frame.raw());
                    if let Some((name, tag)) = describing.take() {
                        out.extend_from_slice(vertica::encode_command_description(&tag).raw());
                        by_statement.insert(name, Vec::new());
                    }
                }
                b'2' => {
                    // BindComplete: the rows that follow are this statement's.
                    if let Some(name) = s.binds.pop_front()
                        && let Some(conv) = by_statement.get(&name)
                    {
                        conversions = conv.clone();
                    }
                    out.extend_from_slice(frame.raw());
                }
                vertica::DATA_ROW => {
                    match vertica::data_row_to_vertica(frame.body(), &conversions)? {
                        Some(row) => out.extend_from_slice(row.raw()),
                        None => out.extend_from_slice(frame.raw()),
                    }
                }
                b'3' if s.hidden_closes > 0 => s.hidden_closes -= 1,
                backend::COMMAND_COMPLETE => {
                    // vertica-python reads `auto_commit` once the SET's
                    // result ends, before ReadyForQuery.
                    if s.announce_autocommit {
                        s.announce_autocommit = false;
                        vertica::encode_auto_commit(&mut out, s.autocommit);
                    }
                    out.extend_from_slice(frame.raw());
                }
                vertica::NEGOTIATE_PROTOCOL_VERSION => {}
                _ => out.extend_from_slice(frame.raw()),
            }
            Ok(())
        })();
        if let Err(e) = converted {
            return End::NodeProtocol(e);
        }
        if (!whole_message_buffered(&from.buf) || out.len() > 64 * 1024) && !out.is_empty() {
            observer.client_written(out.len());
            if let Err(e) = wr.write_all(&out).await {
                return End::Io(e);
            }
            out.clear();
        }
    }
}

fn is_fatal(body: &[u8]) -> bool {
    backend::error_fields(body)
        .map(|fields| {
            fields
                .iter()
                .any(|(c, v)| *c == b'S' && (v == "FATAL" || v == "PANIC"))
        })
        .unwrap_or(false)
}

/// True when `buf` starts with a whole message: the next one needs no read.
fn whole_message_buffered(buf: &[u8]) -> bool {
    buf.len() >= 5
        && i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]])
            .try_into()
            .is_ok_and(|len: usize| buf.len() > len)
}
