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

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::backend::node::Attached;
use crate::cancel::Registration;
use crate::net::Stream;
use crate::protocol::backend::{self, ErrorFields, TransactionStatus};
use crate::protocol::frame::{Item, Scanner, Treatment};
use crate::protocol::startup::StartupMessage;
use crate::protocol::{ProtocolError, frontend, sqlstate};
use crate::server::{Generation, Sluice};

use super::negotiate::send_fatal;
use super::observe::SessionObserver;
use super::registry::NewSession;

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
    let candidates = sluice.nodes.candidates();
    if candidates.is_empty() {
        let total = sluice.nodes.all().len();
        let error = ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("no warehouse node is available: all {total} nodes are out of rotation"),
        )
        .with_hint("The nodes failed their health checks; sluice puts them back as soon as they answer again.");
        tracing::warn!(%peer, user = startup.user(), "refused a session: no healthy node");
        sluice
            .metrics
            .client_refused(crate::metrics::Refusal::NoNode);
        send_fatal(&mut client, &error).await;
        return;
    }
    let mut failures = Vec::new();
    let mut connected = None;
    for node in &candidates {
        match generation.node_connector.connect(node.addr()).await {
            Ok(stream) => {
                connected = Some((node.attach(), stream));
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, node = node.addr(), error = %e, "could not open a session on node; trying the next");
                failures.push(e.to_string());
            }
        }
    }
    let Some((attached, mut server)) = connected else {
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
        send_fatal(&mut client, &error).await;
        return;
    };
    let node = attached.node().addr().to_string();
    tracing::debug!(%peer, node, user = startup.user(), database = startup.database(),
        application = startup.application(), dialect = %startup.dialect(), "session started");
    if let Err(e) = server.write_all(startup.raw()).await {
        let error = ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("node {node} closed the connection during startup: {e}"),
        );
        send_fatal(&mut client, &error).await;
        return;
    }

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
        to_node: Scanner::new(max_message, client_treatment),
        to_client: Scanner::new(usize::MAX, node_treatment),
        client_mid_write: false,
    };
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut node_rd, mut node_wr) = tokio::io::split(server);
    let end = relay
        .run(&mut client_rd, &mut client_wr, &mut node_rd, &mut node_wr)
        .await;
    relay.finish(end, &mut client_wr, &mut node_wr, peer).await;
}

fn client_treatment(tag: u8) -> Treatment {
    match tag {
        // Query, Sync and FunctionCall start the clock of a query (observe.rs).
        frontend::TERMINATE | frontend::QUERY | frontend::SYNC | frontend::FUNCTION_CALL => {
            Treatment::Inspect
        }
        _ => Treatment::Relay,
    }
}

fn node_treatment(tag: u8) -> Treatment {
    match tag {
        backend::BACKEND_KEY_DATA | backend::READY_FOR_QUERY | backend::ERROR_RESPONSE => {
            Treatment::Inspect
        }
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
}

type ClientRd = ReadHalf<Stream>;
type ClientWr = WriteHalf<Stream>;

impl Relay<'_> {
    async fn run(
        &mut self,
        client_rd: &mut ClientRd,
        client_wr: &mut ClientWr,
        node_rd: &mut ReadHalf<Stream>,
        node_wr: &mut WriteHalf<Stream>,
    ) -> End {
        let kill = self.token.clone();
        let Relay {
            to_node,
            to_client,
            phase,
            registration,
            client_mid_write,
            sluice,
            attached,
            observer,
            token: _,
        } = self;
        let observer: &SessionObserver = observer;
        let upstream = client_to_node(to_node, client_rd, node_wr, observer);
        let downstream = node_to_client(
            to_client,
            node_rd,
            client_wr,
            phase,
            registration,
            client_mid_write,
            sluice,
            attached,
            observer,
        );
        tokio::select! {
            end = upstream => end,
            end = downstream => end,
            _ = kill.cancelled() => End::Killed,
        }
    }

    /// Tells the peers why the session ends, where the protocol allows it.
    async fn finish(
        self,
        end: End,
        client_wr: &mut ClientWr,
        node_wr: &mut WriteHalf<Stream>,
        peer: SocketAddr,
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

async fn client_to_node(
    scanner: &mut Scanner,
    rd: &mut ClientRd,
    wr: &mut WriteHalf<Stream>,
    observer: &SessionObserver,
) -> End {
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut chunk = READ_CHUNK;
    loop {
        match fill(rd, &mut buf, &mut chunk).await {
            Ok(0) => return End::ClientLeft,
            Ok(n) => observer.client_read(n),
            Err(e) => return End::Io(e),
        }
        let mut terminated = false;
        loop {
            match scanner.next(&mut buf) {
                Ok(Some(Item::Relay(bytes))) => out.extend_from_slice(&bytes),
                Ok(Some(Item::Inspect(frame))) if frame.tag() == frontend::TERMINATE => {
                    // Terminate: the node learns it from the closing in finish().
                    terminated = true;
                    break;
                }
                Ok(Some(Item::Inspect(frame))) => {
                    observer.request();
                    out.extend_from_slice(frame.raw());
                }
                Ok(None) => break,
                Err(e) => return End::ClientProtocol(e),
            }
        }
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                return End::Io(e);
            }
            out.clear();
        }
        if terminated {
            return End::ClientLeft;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn node_to_client(
    scanner: &mut Scanner,
    rd: &mut ReadHalf<Stream>,
    wr: &mut ClientWr,
    phase: &mut Phase,
    registration: &mut Option<Registration>,
    mid_write: &mut bool,
    sluice: &Arc<Sluice>,
    attached: &Attached,
    observer: &SessionObserver,
) -> End {
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut chunk = READ_CHUNK;
    loop {
        match fill(rd, &mut buf, &mut chunk).await {
            Ok(0) => return End::NodeClosed,
            Ok(_) => {}
            Err(e) => return End::Io(e),
        }
        loop {
            let frame = match scanner.next(&mut buf) {
                Ok(Some(Item::Relay(bytes))) => {
                    out.extend_from_slice(&bytes);
                    continue;
                }
                Ok(Some(Item::Inspect(frame))) => frame,
                Ok(None) => break,
                Err(e) => return End::NodeProtocol(e),
            };
            match frame.tag() {
                backend::BACKEND_KEY_DATA => {
                    let key = match backend::backend_key_data(frame.body()) {
                        Ok(k) => k,
                        Err(e) => return End::NodeProtocol(e),
                    };
                    let reg = sluice.cancels.register(attached.node().addr(), key);
                    backend::encode_backend_key_data(&mut out, reg.client_key());
                    *registration = Some(reg);
                }
                backend::READY_FOR_QUERY => {
                    match backend::ready_for_query(frame.body()) {
                        Ok(status) => {
                            *phase = Phase::Ready(status);
                            observer.ready_for_query(status);
                        }
                        Err(e) => return End::NodeProtocol(e),
                    }
                    out.extend_from_slice(frame.raw());
                }
                backend::ERROR_RESPONSE => {
                    observer.error(frame.body());
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
            observer.client_written(out.len());
            *mid_write = true;
            if let Err(e) = wr.write_all(&out).await {
                return End::Io(e);
            }
            *mid_write = false;
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
