//! One client session: choose a node, hand it the client's startup packet,
//! then relay bytes both ways until either side leaves.
//!
//! Authentication is the node's business: the client's password exchange is
//! relayed, so the warehouse keeps enforcing its own users. sluice decodes
//! only what it must: BackendKeyData (replaced by a key of sluice's own),
//! ReadyForQuery (where the session stands), ErrorResponse (FATAL ends the
//! session) and the client's Terminate. Everything else streams through in the pieces the
//! socket delivers, so memory does not grow with the size of a result.
//!
//! The two directions run concurrently in one task: neither waits on the
//! other, so a node streaming a result while the client streams COPY data
//! cannot deadlock the relay. Each direction awaits its write before reading
//! again: a slow reader slows its writer, all the way back.
//!
//! The client direction is [`super::upstream`], shared with translated
//! Vertica sessions. With a catalog copy configured, a batch of catalog
//! lookups is answered by the copy (see [`super::catalog_answer`]) once the
//! node has answered everything asked before it, so answers reach the
//! client in the order of the questions.
//! The client's write half is shared by the two directions behind an async
//! mutex; the node direction holds it while a message is half written, so
//! catalog answers never land inside a node message.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::backend::idle::IdleConnection;
use crate::backend::node::Attached;
use crate::cancel::Registration;
use crate::config::Dialect;
use crate::net::{ReadHalf, Stream, WriteHalf};
use crate::protocol::backend::{self, ErrorFields, TransactionStatus};
use crate::protocol::frame::{Frame, Item, Scanner, Treatment};
use crate::protocol::startup::{ClientDialect, StartupMessage};
use crate::protocol::{ProtocolError, frontend, sqlstate};
use crate::server::{Generation, Sluice};

use super::catalog_answer::{Answers, AsIs, NodeProgress, is_fatal};
use super::guard::{QueryGuard, Screening};
use super::negotiate::send_fatal;
use super::observe::{Finished, SessionObserver};
use super::registry::NewSession;
use super::router::{Batch, Plan, Router};
use super::upstream::{ClientReader, ClientSide, Stop, Upstream};
use crate::catalog::CatalogError;

/// Reads start at this size and grow while the peer keeps them full.
const READ_CHUNK: usize = 8 * 1024;
const MAX_READ_CHUNK: usize = 256 * 1024;

const CHANNEL_BINDING_HINT: &str = "sluice relays logins to the warehouse, and SCRAM channel binding cannot cross a proxy when both the client and the node connection use TLS: connect with channel_binding=disable, or set warehouse.tls.mode = \"disable\".";

/// Where the session stands, as the node's messages say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Authentication and parameter exchange, until the first ReadyForQuery.
    Startup,
    /// Ready for a query, or running one; the status is the last ReadyForQuery's.
    Ready(TransactionStatus),
    /// The node sent a FATAL error; it will close.
    Ending,
}

/// Why the relay stopped.
#[derive(Debug)]
enum End {
    ClientLeft,
    NodeClosed,
    Killed,
    ClientProtocol(ProtocolError),
    NodeProtocol(ProtocolError),
    /// The catalog copy failed after part of its answer reached the client.
    CatalogBroken(CatalogError),
    Io(std::io::Error),
}

/// Runs a session to its end.
pub async fn run(
    sluice: Arc<Sluice>,
    generation: Arc<Generation>,
    mut client: Stream,
    startup: StartupMessage,
    peer: SocketAddr,
) {
    // A Vertica driver in front of PostgreSQL nodes: the whole session is
    // translated. In front of Vertica nodes it is relayed byte for byte,
    // like any PostgreSQL session (unknown message types pass through).
    if startup.dialect() == ClientDialect::Vertica
        && generation.config.warehouse.dialect == Dialect::Postgres
    {
        return super::translate::run(sluice, generation, client, startup, peer).await;
    }
    let Some((attached, server, first_answer)) = open_session(
        &sluice,
        &generation,
        &mut client,
        startup.raw(),
        peer,
        startup.user(),
    )
    .await
    else {
        return;
    };
    let node = attached.node().addr().to_string();
    tracing::debug!(%peer, node, user = startup.user(), database = startup.database(),
        application = startup.application(), dialect = %startup.dialect(), "session started");

    // Observability (issue 5): the session registry and what the relay reports.
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
    registered.entry().set_dialect(startup.dialect());
    let observer = SessionObserver::new(
        sluice.metrics.clone(),
        attached.node().clone(),
        registered.entry().clone(),
    );

    let max_message = generation.config.server.max_message_size;
    let mut relay = Relay {
        observer: &observer,
        token: registered.entry().token.clone(),
        sluice: &sluice,
        attached: &attached,
        phase: Phase::Startup,
        registration: None,
        to_node: Scanner::new(
            max_message,
            match startup.dialect() {
                ClientDialect::Vertica => vertica_client_treatment,
                _ => client_treatment,
            },
        ),
        to_client: Scanner::new(usize::MAX, node_treatment),
        client_mid_write: false,
        node_buf: first_answer,
        greeting: Greeting::Recording(BytesMut::new()),
    };
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
        router: Router::new(generation.classifier.clone(), Some(sluice.metrics.clone())),
        catalog: generation.catalog.clone(),
        user: startup.user(),
        database: startup.database(),
        progress: &progress,
        observer: &observer,
        metrics: &sluice.metrics,
        client: Postgres,
    };
    let (mut client_rd, client_wr) = client.into_split();
    let client_wr = tokio::sync::Mutex::new(client_wr);
    let (mut node_rd, mut node_wr) = server.into_split();
    let end = relay
        .run(
            upstream,
            generation.clone(),
            &mut client_rd,
            &client_wr,
            &mut node_rd,
            &mut node_wr,
        )
        .await;
    // The client's cancel key goes first: a cancel that looks it up from now
    // on finds nothing, and one that found it is marked as on its way (or
    // gives up, see `listener::forward_cancel`) before the check below.
    drop(relay.registration.take());
    // The client left cleanly with the node idle: the connection may serve
    // the next client that logs in the same way.
    let warehouse = &generation.config.warehouse;
    let greeting = match (&end, &relay.greeting) {
        (End::ClientLeft, Greeting::Trusted(greeting))
            if warehouse.idle_connections > 0
                // DISCARD ALL is PostgreSQL's: Vertica has no reset to trust.
                && warehouse.dialect == Dialect::Postgres
                && relay.phase == Phase::Ready(TransactionStatus::Idle)
                && progress.settled()
                && relay.node_buf.is_empty()
                && relay.to_node.at_boundary()
                && relay.to_client.at_boundary()
                && attached.node().is_healthy()
                && !guard.cancel_on_its_way()
                && !sluice.kill.is_cancelled() =>
        {
            Some(greeting.clone())
        }
        _ => None,
    };
    relay
        .finish(
            end,
            &mut *client_wr.lock().await,
            &mut node_wr,
            peer,
            greeting.is_some(),
        )
        .await;
    if let Some(greeting) = greeting {
        let kept = IdleConnection::new(
            Bytes::copy_from_slice(startup.raw()),
            greeting,
            node_rd.unsplit(node_wr),
        );
        keep_connection(attached, kept, warehouse).await;
    }
}

/// Resets a node connection whose client left and keeps it for the next
/// client with the same startup packet; a connection that does not reset
/// cleanly within the connect timeout is closed.
async fn keep_connection(
    attached: Attached,
    mut kept: IdleConnection,
    warehouse: &crate::config::Warehouse,
) {
    let node = attached.node().clone();
    // Counted as a session no more: the node has no client on it.
    drop(attached);
    match tokio::time::timeout(warehouse.connect_timeout, reset(&mut kept.stream)).await {
        Ok(Ok(())) => node.keep_idle(kept, warehouse.idle_connections, warehouse.idle_timeout),
        Ok(Err(why)) => {
            tracing::debug!(
                node = node.addr(),
                why,
                "a node connection did not reset; closed"
            )
        }
        Err(_) => tracing::debug!(
            node = node.addr(),
            "a node connection did not reset in time; closed"
        ),
    }
}

/// `DISCARD ALL` (what PgBouncer's `server_reset_query` does): temporary
/// tables, prepared statements, settings, LISTENs, advisory locks and
/// `SET ROLE` of the last client are gone before the next one comes.
async fn reset(stream: &mut Stream) -> Result<(), String> {
    stream
        .write_all(frontend::encode_query("DISCARD ALL").raw())
        .await
        .map_err(|e| e.to_string())?;
    let mut scanner = Scanner::new(64 << 10, |_| Treatment::Inspect);
    let mut buf = BytesMut::new();
    loop {
        while let Some(item) = scanner.next(&mut buf).map_err(|e| e.to_string())? {
            let Item::Inspect(frame) = item else {
                return Err("unexpected relayed bytes".into());
            };
            match frame.tag() {
                backend::COMMAND_COMPLETE
                | backend::PARAMETER_STATUS
                | backend::NOTICE_RESPONSE
                | backend::NOTIFICATION_RESPONSE => {}
                backend::READY_FOR_QUERY if frame.body() == b"I" => return Ok(()),
                backend::ERROR_RESPONSE => {
                    return Err(backend::error_summary(frame.body()).1);
                }
                other => return Err(format!("unexpected message {:?}", char::from(other))),
            }
        }
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the node closed it".into());
        }
    }
}

/// Chooses the node for a new session and opens the session there with
/// `startup`: healthy nodes in round-robin order, the next one on any
/// failure. When none can be had, the client is told why and `None` is
/// returned.
pub(super) async fn open_session(
    sluice: &Sluice,
    generation: &Generation,
    client: &mut Stream,
    startup: &[u8],
    peer: SocketAddr,
    user: &str,
) -> Option<(Attached, Stream, BytesMut)> {
    let candidates = sluice.nodes.candidates();
    if candidates.is_empty() {
        let total = sluice.nodes.all().len();
        let error = ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("no warehouse node is available: all {total} nodes are out of rotation"),
        )
        .with_hint("The nodes failed their health checks; sluice puts them back as soon as they answer again.");
        tracing::warn!(%peer, user = user, "refused a session: no healthy node");
        sluice
            .metrics
            .client_refused(crate::metrics::Refusal::NoNode);
        send_fatal(client, &error).await;
        return None;
    }
    let warehouse = &generation.config.warehouse;
    let mut failures = Vec::new();
    let mut connected = None;
    for node in &candidates {
        // A node connection kept from a client that logged in the same way
        // saves the node a backend start and a login. Only the node round
        // robin chose: kept connections must not draw sessions to their node.
        if warehouse.idle_connections > 0
            && let Some(kept) = node.take_idle(startup, warehouse.idle_timeout)
        {
            tracing::debug!(%peer, node = node.addr(), "session takes a kept node connection");
            connected = Some((
                node.attach(),
                kept.stream,
                BytesMut::from(&kept.greeting[..]),
            ));
            break;
        }
        match open_on_node(&generation.node_connector, node.addr(), startup).await {
            Ok((stream, first_answer)) => {
                connected = Some((node.attach(), stream, first_answer));
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, node = node.addr(), error = %e, "could not open a session on node; trying the next");
                failures.push(e.to_string());
            }
        }
    }
    let Some(opened) = connected else {
        sluice
            .metrics
            .client_refused(crate::metrics::Refusal::NoNode);
        let error = ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!(
                "no warehouse node was reachable (tried {})",
                candidates.len()
            ),
        )
        .with_detail(failures.join("; "));
        send_fatal(client, &error).await;
        return None;
    };
    Some(opened)
}

/// Connects to a node and hands it the client's startup packet. The node's
/// first answer must come within the connect timeout: a node that accepts
/// TCP but never speaks would otherwise hold the session forever, and the
/// next node can still be tried since the client has seen nothing yet.
async fn open_on_node(
    connector: &crate::backend::connect::NodeConnector,
    addr: &str,
    startup: &[u8],
) -> Result<(Stream, BytesMut), String> {
    let mut stream = connector.connect(addr).await.map_err(|e| e.to_string())?;
    let timeout = connector.timeout();
    stream
        .write_all(startup)
        .await
        .map_err(|e| format!("node {addr} closed the connection during startup: {e}"))?;
    let mut first = BytesMut::with_capacity(READ_CHUNK);
    match tokio::time::timeout(timeout, stream.read_buf(&mut first)).await {
        Ok(Ok(0)) => Err(format!(
            "node {addr} closed the connection before answering the startup"
        )),
        Ok(Ok(_)) => Ok((stream, first)),
        Ok(Err(e)) => Err(format!("node {addr} failed during startup: {e}")),
        Err(_) => Err(format!(
            "node {addr} did not answer the startup within {timeout:?}"
        )),
    }
}

/// The client's messages that routing reads whole; COPY data, passwords and
/// the rest stream through.
fn client_treatment(tag: u8) -> Treatment {
    match tag {
        frontend::TERMINATE
        | frontend::QUERY
        | frontend::PARSE
        | frontend::BIND
        | frontend::DESCRIBE
        | frontend::EXECUTE
        | frontend::CLOSE
        | frontend::SYNC
        | frontend::FLUSH
        | frontend::FUNCTION_CALL => Treatment::Inspect,
        _ => Treatment::Relay,
    }
}

/// A Vertica client's `F` is VerifiedFiles (COPY LOCAL), not a
/// FunctionCall: it is part of the COPY, with no ReadyForQuery of its own.
fn vertica_client_treatment(tag: u8) -> Treatment {
    match tag {
        frontend::FUNCTION_CALL => Treatment::Relay,
        tag => client_treatment(tag),
    }
}

fn node_treatment(tag: u8) -> Treatment {
    match tag {
        // Authentication and ParameterStatus: the greeting a kept connection
        // replays (both rare after startup).
        backend::AUTHENTICATION
        | backend::PARAMETER_STATUS
        | backend::BACKEND_KEY_DATA
        | backend::READY_FOR_QUERY
        | backend::ERROR_RESPONSE
        | backend::COMMAND_COMPLETE
        | backend::PARSE_COMPLETE => Treatment::Inspect,
        _ => Treatment::Relay,
    }
}

struct Relay<'a> {
    sluice: &'a Arc<Sluice>,
    observer: &'a SessionObserver,
    /// Cancelled by KILL CLIENT or by shutdown.
    token: tokio_util::sync::CancellationToken,
    attached: &'a Attached,
    phase: Phase,
    registration: Option<Registration>,
    to_node: Scanner,
    to_client: Scanner,
    /// A write to the client was interrupted: its last message may be cut.
    client_mid_write: bool,
    /// Read from the node, not yet relayed; first, what the node had
    /// answered when the session was opened.
    node_buf: BytesMut,
    /// The node's greeting, for keeping the connection after the client leaves.
    greeting: Greeting,
}

/// The node's answer to the startup, as a later client would be given it
/// (see [`crate::backend::idle`]).
#[derive(Debug)]
enum Greeting {
    /// Startup under way: what the node has sent so far.
    Recording(BytesMut),
    /// The node let the client in without asking for anything: this is
    /// what it sent up to its first ReadyForQuery.
    Trusted(Bytes),
    /// The node asked for a password (or sent something not replayable):
    /// the connection is never handed to another client.
    NotReplayable,
}

impl Greeting {
    /// A message the node sent during the startup.
    fn record(&mut self, raw: &[u8]) {
        let Greeting::Recording(so_far) = self else {
            return;
        };
        let replayable = match raw.first() {
            Some(&backend::AUTHENTICATION) => raw.get(5..9) == Some(&[0, 0, 0, 0][..]),
            Some(&backend::PARAMETER_STATUS | &backend::BACKEND_KEY_DATA) => true,
            Some(&backend::READY_FOR_QUERY) => {
                so_far.extend_from_slice(raw);
                *self = Greeting::Trusted(std::mem::take(so_far).freeze());
                return;
            }
            _ => false,
        };
        if replayable {
            so_far.extend_from_slice(raw);
        } else {
            *self = Greeting::NotReplayable;
        }
    }
}

type ClientRd = ReadHalf;
type ClientWr = WriteHalf;

impl Relay<'_> {
    async fn run(
        &mut self,
        upstream: Upstream<'_, Postgres>,
        generation: Arc<Generation>,
        client_rd: &mut ClientRd,
        client_wr: &tokio::sync::Mutex<ClientWr>,
        node_rd: &mut ReadHalf,
        node_wr: &mut WriteHalf,
    ) -> End {
        let kill = super::registry::KillSignal::new(self.token.clone());
        let Relay {
            to_node,
            to_client,
            phase,
            registration,
            client_mid_write,
            sluice,
            attached,
            observer,
            node_buf,
            greeting,
            token: _,
        } = self;
        let observer: &SessionObserver = observer;
        let progress = upstream.progress;
        let guard = upstream.guard;
        let mut from_client = ClientBytes {
            rd: client_rd,
            scanner: to_node,
            buf: BytesMut::new(),
            chunk: READ_CHUNK,
        };
        let up = upstream.run(&mut from_client, node_wr, client_wr);
        let downstream = node_to_client(
            node_buf,
            greeting,
            to_client,
            node_rd,
            client_wr,
            phase,
            registration,
            client_mid_write,
            sluice,
            attached,
            observer,
            progress,
            guard,
        );
        // Biased: polled in this order on every wake-up, without drawing a
        // random start; the relay directions are what wakes the task.
        tokio::select! {
            biased;
            stop = up => stop.into(),
            end = downstream => end,
            _ = guard.watchdog(generation) => unreachable!("the watchdog runs until the session ends"),
            _ = kill => End::Killed,
        }
    }

    /// Tells the peers why the session ends, where the protocol allows it.
    async fn finish(
        self,
        end: End,
        client_wr: &mut ClientWr,
        node_wr: &mut WriteHalf,
        peer: SocketAddr,
        keep_node_connection: bool,
    ) {
        let node = self.attached.node().addr();
        let client_at_boundary = self.to_client.at_boundary() && !self.client_mid_write;
        let error = match &end {
            End::ClientLeft => None,
            End::NodeClosed if self.phase == Phase::Ending => None,
            End::NodeClosed => Some(ErrorFields::fatal(
                sqlstate::CONNECTION_FAILURE,
                format!("warehouse node {node} closed the connection unexpectedly"),
            )),
            End::Killed if !self.sluice.kill.is_cancelled() => Some(ErrorFields::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "an administrator closed this session (KILL CLIENT on the sluice admin console)",
            )),
            End::Killed => Some(ErrorFields::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "sluice is shutting down and closed this session",
            )),
            End::ClientProtocol(e) => Some(ErrorFields::fatal(
                e.sqlstate(),
                format!("invalid message from client: {e}"),
            )),
            End::NodeProtocol(e) => Some(ErrorFields::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("warehouse node {node} sent an invalid message: {e}"),
            )),
            End::CatalogBroken(e) => Some(ErrorFields::fatal(
                sqlstate::CONNECTION_FAILURE,
                format!("the catalog copy failed in the middle of an answer: {e}"),
            )),
            End::Io(_) => None,
        };
        match &end {
            End::ClientLeft | End::NodeClosed if error.is_none() => {
                tracing::debug!(%peer, node, "session ended")
            }
            End::Io(e) => {
                tracing::debug!(%peer, node, error = %e, "session ended by a connection error")
            }
            _ => tracing::info!(%peer, node, reason = ?end, "session ended"),
        }
        if let Some(error) = error.filter(|_| client_at_boundary) {
            let _ = client_wr.write_all(&error.to_bytes()).await;
        }
        let _ = client_wr.shutdown().await;
        if keep_node_connection {
            return;
        }
        // A node left without Terminate logs "unexpected EOF"; say goodbye
        // properly when the stream is between messages.
        if !matches!(end, End::NodeClosed) && self.to_node.at_boundary() {
            let _ = node_wr.write_all(&frontend::TERMINATE_MESSAGE).await;
        }
        let _ = node_wr.shutdown().await;
    }
}

/// Reads into `buf`, growing the read size while reads come back full.
/// Cancel safe: bytes read are in `buf` even if the caller stops waiting.
async fn fill(
    rd: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    chunk: &mut usize,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < *chunk / 2 {
        buf.reserve(*chunk);
    }
    let n = rd.read_buf(buf).await?;
    if n >= *chunk && *chunk < MAX_READ_CHUNK {
        *chunk *= 2;
    }
    Ok(n)
}

/// A PostgreSQL client's bytes, read in growing pieces: what one read
/// brings goes to the node in one write.
struct ClientBytes<'a> {
    rd: &'a mut ClientRd,
    scanner: &'a mut Scanner,
    buf: BytesMut,
    chunk: usize,
}

impl ClientReader for ClientBytes<'_> {
    fn buffered(&mut self) -> Result<Option<Item>, ProtocolError> {
        self.scanner.next(&mut self.buf)
    }

    async fn read(&mut self) -> std::io::Result<usize> {
        fill(self.rd, &mut self.buf, &mut self.chunk).await
    }

    fn flush_now(&self, _: &BytesMut, _: bool) -> bool {
        false
    }
}

/// A PostgreSQL client speaks the node's protocol: nothing to translate.
struct Postgres;

impl ClientSide for Postgres {
    fn translate(&mut self, frame: Frame) -> Result<Frame, ProtocolError> {
        Ok(frame)
    }

    fn answer_here(
        &mut self,
        _: &Batch,
        rejection: Option<&ErrorFields>,
        answer: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        if let Some(rejection) = rejection {
            rejection.encode(answer);
        }
        Ok(())
    }

    fn plan_for_node(
        &mut self,
        router: &mut Router,
        batch: Batch,
        _: &mut BytesMut,
        _: &NodeProgress,
    ) -> Plan {
        router.node_plan(batch)
    }

    fn catalog_answers(&mut self) -> impl Answers + Send + '_ {
        AsIs
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
    buf: &mut BytesMut,
    greeting: &mut Greeting,
    scanner: &mut Scanner,
    rd: &mut ReadHalf,
    client_wr: &tokio::sync::Mutex<ClientWr>,
    phase: &mut Phase,
    registration: &mut Option<Registration>,
    mid_write: &mut bool,
    sluice: &Arc<Sluice>,
    attached: &Attached,
    observer: &SessionObserver,
    progress: &NodeProgress,
    guard: &QueryGuard,
) -> End {
    // The node's first answer was read while the session was opened.
    let mut unread = !buf.is_empty();
    let mut out = BytesMut::new();
    let mut finished = Finished::default();
    let mut chunk = READ_CHUNK;
    // Held while a message is half written, so that no catalog answer is
    // written into the middle of it.
    let mut held: Option<tokio::sync::MutexGuard<'_, ClientWr>> = None;
    loop {
        let filled = if std::mem::take(&mut unread) {
            Ok(buf.len())
        } else {
            fill(rd, buf, &mut chunk).await
        };
        match filled {
            Ok(0) => return End::NodeClosed,
            Ok(_) => {}
            Err(e) => return End::Io(e),
        }
        // Bytes of `out` already counted for a finished batch.
        let mut counted = 0;
        loop {
            let frame = match scanner.next(buf) {
                Ok(Some(Item::Relay(bytes))) => {
                    if *phase == Phase::Startup {
                        greeting.record(&bytes);
                    }
                    out.extend_from_slice(&bytes);
                    continue;
                }
                Ok(Some(Item::Inspect(frame))) => frame,
                Ok(None) => break,
                Err(e) => return End::NodeProtocol(e),
            };
            if *phase == Phase::Startup {
                greeting.record(frame.raw());
            }
            match frame.tag() {
                backend::BACKEND_KEY_DATA => {
                    let key = match backend::backend_key_data(frame.body()) {
                        Ok(k) => k,
                        Err(e) => return End::NodeProtocol(e),
                    };
                    guard.set_target(crate::cancel::CancelTarget {
                        node: attached.node().addr().to_string(),
                        key: key.clone(),
                    });
                    let reg = sluice.cancels.register(attached.node().addr(), key);
                    backend::encode_backend_key_data(&mut out, reg.client_key());
                    *registration = Some(reg);
                }
                backend::READY_FOR_QUERY => {
                    match backend::ready_for_query(frame.body()) {
                        Ok(status) => {
                            *phase = Phase::Ready(status);
                            progress.ready(frame.body()[0]);
                            // What this batch sent the client, then its end.
                            finished.ready(out.len() + frame.raw().len() - counted, status);
                            counted = out.len() + frame.raw().len();
                        }
                        Err(e) => return End::NodeProtocol(e),
                    }
                    out.extend_from_slice(frame.raw());
                }
                backend::PARSE_COMPLETE if progress.hide_parse_complete() => {}
                backend::COMMAND_COMPLETE => {
                    guard.command_complete(frame.body());
                    out.extend_from_slice(frame.raw());
                }
                backend::ERROR_RESPONSE => {
                    observer.error(frame.body());
                    if *phase != Phase::Startup
                        && let Some(notice) = guard.error(&backend::error_summary(frame.body()).0)
                    {
                        // The rule's notice goes just ahead of the node's 57014.
                        out.extend_from_slice(&notice);
                    }
                    if *phase == Phase::Startup {
                        let (code, message) = backend::error_summary(frame.body());
                        tracing::info!(
                            node = attached.node().addr(),
                            code,
                            message,
                            "node refused the session"
                        );
                        // SCRAM channel binding ties the login to one TLS
                        // connection; sluice's two legs are two connections.
                        if message.contains("channel binding") {
                            match backend::error_with_hint(frame.body(), CHANNEL_BINDING_HINT) {
                                Ok(hinted) => out.extend_from_slice(&hinted),
                                Err(_) => out.extend_from_slice(frame.raw()),
                            }
                            *phase = Phase::Ending;
                            continue;
                        }
                    }
                    if is_fatal(frame.body()) {
                        *phase = Phase::Ending;
                    }
                    out.extend_from_slice(frame.raw());
                }
                _ => out.extend_from_slice(frame.raw()),
            }
        }
        if !out.is_empty() {
            let (written, rest) = (out.len(), out.len() - counted);
            let mut wr = match held.take() {
                Some(guard) => guard,
                None => client_wr.lock().await,
            };
            *mid_write = true;
            if let Err(e) = wr.write_all(&out).await {
                return End::Io(e);
            }
            *mid_write = false;
            out.clear();
            if !scanner.at_boundary() {
                held = Some(wr);
            }
            finished.record(observer, guard, written, rest);
        }
    }
}
