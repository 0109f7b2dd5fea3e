//! One client session, from its node's choice to its last words: choose a
//! node, hand it the client's startup packet, relay both ways until either
//! side leaves, then tell each peer why, where the protocol allows it.
//!
//! Both kinds of session go through here: a PostgreSQL client relayed as it
//! is, and a Vertica driver in front of PostgreSQL nodes, translated
//! ([`super::translate`]). The client direction is [`super::upstream`], the
//! node direction [`super::downstream`], what the node owes between them
//! [`super::owed`]; what differs between the two kinds is behind their two
//! small traits, [`ClientSide`] and [`NodeSide`].
//!
//! Authentication is the node's business: the client's password exchange is
//! relayed, so the warehouse keeps enforcing its own users (a Vertica
//! driver's is carried through by [`super::translate::authenticate`]).
//!
//! The two directions run concurrently in one task: neither waits on the
//! other, so a node streaming a result while the client streams COPY data
//! cannot deadlock the relay. Each direction awaits its write before reading
//! again: a slow reader slows its writer, all the way back. The client's
//! write half is shared by the two directions behind an async mutex
//! ([`ClientWriter`]); the node direction holds it while a message is half
//! written, so catalog answers never land inside a node message.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Frontend;
use crate::backend::idle::IdleConnection;
use crate::backend::node::Attached;
use crate::config::Dialect;
use crate::generation::Generation;
use crate::net::{MessageStream, Stream};
use crate::protocol::backend::{self, ErrorFields};
use crate::protocol::frame::{Frame, Scanner, Treatment};
use crate::protocol::startup::{ClientDialect, StartupMessage};
use crate::protocol::vertica;
use crate::protocol::{ProtocolError, frontend, sqlstate};

use super::catalog_answer::{Answers, AsIs};
use super::downstream::{ClientWriter, Downstream, End, Ending, Greeting, NodeSide, Phase, finish};
use super::guard::{QueryGuard, Screening};
use super::negotiate::send_fatal;
use super::observe::SessionObserver;
use super::owed::NodeProgress;
use super::router::{Batch, Plan, Router};
use super::translate;
use super::upstream::{ClientSide, Upstream};
use crate::registry::{KillSignal, NewSession};

/// The node's first answer is read in one piece of up to this size.
const FIRST_READ: usize = 8 * 1024;

/// Runs a session to its end.
pub async fn run(
    frontend: Arc<Frontend>,
    generation: Arc<Generation>,
    mut client: Stream,
    startup: StartupMessage,
    peer: SocketAddr,
) {
    // A Vertica driver in front of PostgreSQL nodes: the whole session is
    // translated. In front of Vertica nodes it is relayed byte for byte,
    // like any PostgreSQL session (unknown message types pass through).
    let translated = startup.dialect() == ClientDialect::Vertica
        && generation.config.warehouse.dialect == Dialect::Postgres;
    let translated_startup;
    let packet = if translated {
        translated_startup = vertica::postgres_startup(&startup);
        &translated_startup[..]
    } else {
        startup.raw()
    };
    let Some((attached, server, first_answer)) = open_session(
        &frontend,
        &generation,
        &mut client,
        packet,
        peer,
        startup.user(),
    )
    .await
    else {
        return;
    };
    let node = attached.node().addr().to_string();
    tracing::debug!(%peer, node, user = startup.user(), database = startup.database(),
        application = startup.application(), dialect = %startup.dialect(), translated,
        "session started");

    // Observability (issue 5): the session registry and what the relay reports.
    let registered = frontend.registry.register(
        NewSession {
            user: startup.user(),
            database: startup.database(),
            application: startup.application(),
            peer,
            node: &node,
        },
        &frontend.kill,
    );
    registered.entry().set_dialect(startup.dialect());
    let observer = SessionObserver::new(
        frontend.metrics.clone(),
        attached.node().clone(),
        registered.entry().clone(),
    );
    let progress = NodeProgress::new(
        generation
            .catalog
            .as_ref()
            .map(|pool| (pool.freshness().clone(), Arc::from(startup.database()))),
    );
    let guard = QueryGuard::for_session(&frontend, &generation, &startup, peer);
    let session = Session {
        frontend: &frontend,
        generation: &generation,
        startup: &startup,
        peer,
        attached: &attached,
        node: &node,
        observer: &observer,
        progress: &progress,
        guard: &guard,
        kill: KillSignal::new(registered.entry().token.clone()),
    };
    let ends = if translated {
        let state = translate::Shared::for_session(&startup);
        let sides = (
            translate::Translation::new(&state),
            translate::Conversion::new(&state, &startup),
        );
        session.relay(sides, client, server, first_answer).await
    } else {
        session
            .relay((Postgres, Postgres), client, server, first_answer)
            .await
    };
    if let Some(kept) = ends {
        keep_connection(attached, kept, &generation.config.warehouse).await;
    }
}

/// One session's parts, for the relay.
struct Session<'a> {
    frontend: &'a Arc<Frontend>,
    generation: &'a Arc<Generation>,
    startup: &'a StartupMessage,
    peer: SocketAddr,
    attached: &'a Attached,
    node: &'a str,
    observer: &'a SessionObserver,
    progress: &'a NodeProgress,
    guard: &'a QueryGuard,
    /// Fires on KILL CLIENT and at shutdown.
    kill: KillSignal,
}

impl Session<'_> {
    /// Relays the session both ways until it ends, then finishes it.
    /// Returns the node connection when it may serve another client.
    async fn relay<C: ClientSide + Send, N: NodeSide + Send>(
        mut self,
        (client_side, node_side): (C, N),
        client: Stream,
        server: Stream,
        first_answer: BytesMut,
    ) -> Option<IdleConnection> {
        let translated = C::TRANSLATED;
        let generation = self.generation;
        let client_tls = client.is_tls();
        let (client_rd, client_wr) = client.into_split();
        let client_wr = tokio::sync::Mutex::new(ClientWriter::new(client_wr));
        let (node_rd, mut node_wr) = server.into_split();
        let client_treatment = match self.startup.dialect() {
            _ if translated => translate::client_treatment,
            ClientDialect::Vertica => vertica_client_treatment,
            _ => client_treatment,
        };
        let mut from_client = MessageStream::new(
            client_rd,
            Scanner::new(generation.config.server.max_message_size, client_treatment),
        );
        let node_treatment = if translated {
            translate::node_treatment
        } else {
            node_treatment
        };
        let mut from_node = MessageStream::with_read(
            node_rd,
            Scanner::new(usize::MAX, node_treatment),
            first_answer,
        );
        let mut router = Router::new(
            generation.classifier.clone(),
            Some(self.frontend.metrics.clone()),
        );
        if translated {
            router = router.for_vertica();
        }
        let upstream = Upstream {
            guard: self.guard,
            screening: Screening::default(),
            router,
            catalog: generation.catalog.clone(),
            user: self.startup.user(),
            database: self.startup.database(),
            progress: self.progress,
            observer: self.observer,
            metrics: &self.frontend.metrics,
            client: client_side,
        };
        let mut downstream = Downstream {
            side: node_side,
            progress: self.progress,
            guard: self.guard,
            observer: self.observer,
            cancels: &self.frontend.cancels,
            node: self.node,
            phase: Phase::Startup,
            greeting: Greeting::Recording(BytesMut::new()),
            registration: None,
            unsent: BytesMut::new(),
        };
        let login = if translated {
            // A Vertica driver's login is carried through by sluice.
            let mut wr = client_wr.lock().await;
            tokio::select! {
                login = translate::authenticate(&mut from_node, &mut node_wr, &mut from_client,
                    &mut wr, self.startup.user(), client_tls) => login,
                _ = &mut self.kill => Err(End::Killed),
            }
        } else {
            Ok(())
        };
        let end = match login {
            Err(end) => end,
            Ok(()) => {
                let up = upstream.run(&mut from_client, &mut node_wr, &client_wr);
                let down = downstream.run(&mut from_node, &client_wr);
                // Biased: polled in this order on every wake-up, without
                // drawing a random start; the relay directions are what
                // wakes the task.
                tokio::select! {
                    biased;
                    stop = up => stop.into(),
                    end = down => end,
                    _ = self.guard.watchdog(self.progress, generation.clone()) => unreachable!("the watchdog runs until the session ends"),
                    _ = &mut self.kill => End::Killed,
                }
            }
        };
        // The client's cancel key goes first: a cancel that looks it up from
        // now on finds nothing, and one that found it is marked as on its way
        // (or gives up, see `listener::forward_cancel`) before the check below.
        drop(downstream.registration.take());
        // The client left cleanly with the node idle: the connection may
        // serve the next client that logs in the same way.
        let warehouse = &generation.config.warehouse;
        let greeting = match (&end, &downstream.greeting) {
            (End::ClientLeft, Greeting::Trusted(greeting))
                if warehouse.idle_connections > 0
                    && !translated
                    // DISCARD ALL is PostgreSQL's: Vertica has no reset to trust.
                    && warehouse.dialect == Dialect::Postgres
                    && downstream.phase == Phase::Ready
                    && self.progress.owed().idle_in_no_transaction()
                    && !from_node.has_buffered()
                    && from_client.at_boundary()
                    && from_node.at_boundary()
                    && self.attached.node().is_healthy()
                    && !self.guard.cancel_on_its_way()
                    && !self.frontend.kill.is_cancelled() =>
            {
                Some(greeting.clone())
            }
            _ => None,
        };
        let mut client_wr = client_wr.into_inner();
        let ending = Ending {
            end,
            phase: downstream.phase,
            shutting_down: self.frontend.kill.is_cancelled(),
            unsent: &downstream.unsent,
            client_between_messages: from_node.at_boundary(),
            node_between_messages: from_client.at_boundary(),
            node: self.node,
            peer: self.peer,
            keep_node: greeting.is_some(),
        };
        finish(ending, &downstream.side, &mut client_wr, &mut node_wr).await;
        let greeting = greeting?;
        let (node_rd, _) = from_node.into_parts();
        Some(IdleConnection::new(
            Bytes::copy_from_slice(self.startup.raw()),
            greeting,
            node_rd.unsplit(node_wr),
        ))
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
    let mut answers = MessageStream::new(stream, Scanner::new(64 << 10, |_| Treatment::Inspect));
    loop {
        let Some(frame) = answers.frame().await.map_err(|e| e.to_string())? else {
            return Err("the node closed it".into());
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
}

/// Chooses the node for a new session and opens the session there with
/// `startup`: healthy nodes in round-robin order, the next one on any
/// failure. When none can be had, the client is told why and `None` is
/// returned.
async fn open_session(
    frontend: &Frontend,
    generation: &Generation,
    client: &mut Stream,
    startup: &[u8],
    peer: SocketAddr,
    user: &str,
) -> Option<(Attached, Stream, BytesMut)> {
    let candidates = frontend.nodes.candidates();
    if candidates.is_empty() {
        let total = frontend.nodes.all().len();
        let error = ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("no warehouse node is available: all {total} nodes are out of rotation"),
        )
        .with_hint("The nodes failed their health checks; sluice puts them back as soon as they answer again.");
        tracing::warn!(%peer, user = user, "refused a session: no healthy node");
        frontend
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
        frontend
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
    let mut first = BytesMut::with_capacity(FIRST_READ);
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

/// A PostgreSQL client speaks the node's protocol: nothing to translate,
/// either way.
struct Postgres;

impl NodeSide for Postgres {
    fn message(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), ProtocolError> {
        out.extend_from_slice(frame.raw());
        Ok(())
    }

    fn error(&self, error: &ErrorFields, notice: bool, out: &mut BytesMut) {
        if notice {
            error.encode_notice(out);
        } else {
            error.encode(out);
        }
    }
}

impl ClientSide for Postgres {
    const TRANSLATED: bool = false;

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
