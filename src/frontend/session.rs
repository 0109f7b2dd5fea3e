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

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Frontend;
use super::pooled::{
    Inventory, Saved, describe, greeting_key, greeting_messages, replay, replay_statements,
    run_hidden, take_inventory,
};
use super::statements::{MAX_PER_CONNECTION, Statements};
use crate::auth::{self, ClientLogin, Credential, NodeLoginError};
use crate::backend::idle::IdleConnection;
use crate::backend::node::{Attached, Node};
use crate::backend::pool::Slot;
use crate::config::{AuthMode, Dialect};
use crate::generation::Generation;
use crate::net::{MessageStream, ReadHalf, Stream, WriteHalf, send_fatal};
use crate::protocol::backend::{self, ErrorFields, TransactionStatus};
use crate::protocol::frame::{Frame, Scanner, Treatment};
use crate::protocol::startup::{ClientDialect, StartupMessage};
use crate::protocol::vertica;
use crate::protocol::{ProtocolError, frontend, sqlstate};

use super::catalog_answer::{Answers, AsIs};
use super::downstream::{ClientWriter, Downstream, End, Ending, Greeting, NodeSide, Phase, finish};
use super::guard::{QueryGuard, Screening};
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
    let config = &generation.config;
    let translated = startup.dialect() == ClientDialect::Vertica
        && config.warehouse.dialect == Dialect::Postgres;
    let packet = if translated {
        vertica::postgres_startup(&startup)
    } else {
        Bytes::copy_from_slice(startup.raw())
    };
    // sluice checks the password itself when configured to (PostgreSQL
    // clients; cleartext only over TLS), so it can log in again later.
    let checks_password = !translated
        && match config.auth.mode {
            AuthMode::Passthrough => false,
            AuthMode::AuthQuery => true,
            AuthMode::Cleartext => client.is_tls(),
        };
    let credential = if checks_password {
        match auth::authenticate(
            &mut client,
            startup.user(),
            &generation,
            &frontend.nodes,
            &frontend.secrets,
        )
        .await
        {
            ClientLogin::Proved(credential) => Some(credential),
            ClientLogin::Refused => return,
        }
    } else {
        None
    };
    let pooling = if config.warehouse.dialect == Dialect::Vertica {
        // Vertica has no reset and no inventory sluice trusts: a session
        // detaches only if it set nothing but SETs (see `detach`).
        match config.pooling.idle_detach {
            Some(after) => Pooling::MayDetach(after),
            None => Pooling::Pinned("pinned (no idle_detach)"),
        }
    } else if !translated
        && config
            .pooling
            .per_transaction(startup.user(), startup.application(), startup.database())
    {
        Pooling::PerTransaction
    } else {
        match config.pooling.idle_detach {
            Some(after) => Pooling::MayDetach(after),
            None => Pooling::Pinned("pinned (no idle_detach)"),
        }
    };
    // A session sluice can log in again for starts without a node when a
    // node greeted the same startup packet lately: its first query that
    // needs a node takes one (a catalog-only session never does).
    let greeted = match pooling {
        // A translated session's login is carried through by sluice with
        // the client (see `translate::authenticate`): it starts on a node.
        _ if translated => None,
        Pooling::MayDetach(_) | Pooling::PerTransaction => frontend
            .greetings
            .recall(
                &packet,
                credential.as_ref().is_some_and(Credential::proves_identity),
                config.auth.cache,
            )
            .zip(frontend.nodes.candidates().into_iter().next()),
        Pooling::Pinned(_) => None,
    };
    let start = match greeted {
        Some((greeting, node)) => Start::Detached { node, greeting },
        None => match open_session(
            &frontend,
            &generation,
            &mut client,
            peer,
            Login {
                packet: &packet,
                user: startup.user(),
                credential: credential.as_ref(),
                per_transaction: matches!(pooling, Pooling::PerTransaction),
                stop: &frontend.kill,
            },
        )
        .await
        {
            Some(opened) => Start::Attached(opened),
            None => return,
        },
    };
    let node = match &start {
        Start::Attached(opened) => opened.node().clone(),
        Start::Detached { node, .. } => node.clone(),
    };
    tracing::debug!(%peer, node = node.addr(), user = startup.user(), database = startup.database(),
        application = startup.application(), dialect = %startup.dialect(), translated,
        "session started");

    // Observability (issue 5): the session registry and what the relay reports.
    let registered = frontend.registry.register(
        NewSession {
            user: startup.user(),
            database: startup.database(),
            application: startup.application(),
            peer,
            node: node.addr(),
        },
        &frontend.kill,
    );
    registered.entry().set_dialect(startup.dialect());
    let observer = SessionObserver::new(frontend.metrics.clone(), registered.entry().clone());
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
        packet: &packet,
        peer,
        observer: &observer,
        progress: &progress,
        guard: &guard,
        kill: KillSignal::new(registered.entry().token.clone()),
        credential,
        pooling,
        saved: Saved::default(),
        detached: false,
    };
    let ends = if translated {
        let state = translate::Shared::for_session(&startup);
        let sides = (
            translate::Translation::new(&state),
            translate::Conversion::new(&state, &startup),
        );
        session.relay(sides, client, start).await
    } else {
        session.relay((Postgres, Postgres), client, start).await
    };
    if let Some((attached, kept)) = ends {
        keep_connection(attached, kept, &generation.config.warehouse, true).await;
    }
}

/// Whether a session may give its node connection back while idle.
#[derive(Clone, Copy)]
enum Pooling {
    /// After this long idle outside a transaction, if it can log in again.
    MayDetach(Duration),
    /// After every transaction (`[[pooling.transaction]]`), if it can log
    /// in again.
    PerTransaction,
    /// Never; why, for `SHOW CLIENTS`.
    Pinned(&'static str),
}

/// How a session starts.
enum Start {
    /// On a node connection.
    Attached(Opened),
    /// Without one: sluice greets the client as `node` did for the same
    /// startup packet.
    Detached { node: Arc<Node>, greeting: Bytes },
}

/// A node connection a session was opened on or took again.
struct Opened {
    held: Held,
    stream: Stream,
    /// What the node sent first: its greeting (all of it, from a kept
    /// connection or a login sluice made), or the start of its answer to
    /// the client's startup.
    first_answer: BytesMut,
}

/// What a session holds with a node connection, besides the socket.
struct Held {
    attached: Attached,
    slot: Option<Slot>,
    /// Opened by a password login: only a client sluice authenticated may
    /// have it after this one.
    proven: bool,
    /// Statements sessions pooled per transaction prepared on it, by the
    /// names sluice gave them (see [`super::statements`]).
    prepared: HashSet<String>,
}

impl Opened {
    fn node(&self) -> &Arc<Node> {
        self.held.attached.node()
    }

    /// The connection as kept between sessions, with the greeting a later
    /// session is given.
    fn into_kept(self, packet: &Bytes, greeting: Bytes) -> (Attached, IdleConnection) {
        let mut kept = IdleConnection::new(packet.clone(), greeting, self.stream);
        kept.proven = self.held.proven;
        kept.slot = self.held.slot;
        kept.prepared = self.held.prepared;
        (self.held.attached, kept)
    }
}

/// A session's connection to its node, while attached.
struct Link {
    from: MessageStream<ReadHalf>,
    wr: WriteHalf,
    held: Held,
}

impl Link {
    fn new(opened: Opened, treatment: fn(u8) -> Treatment) -> Link {
        let (rd, wr) = opened.stream.into_split();
        Link {
            from: MessageStream::with_read(
                rd,
                Scanner::new(usize::MAX, treatment),
                opened.first_answer,
            ),
            wr,
            held: opened.held,
        }
    }

    fn node(&self) -> &Arc<Node> {
        self.held.attached.node()
    }

    /// The connection whole again, for a reset or a query of sluice's own.
    fn into_opened(self) -> Opened {
        let (rd, _) = self.from.into_parts();
        Opened {
            held: self.held,
            stream: rd.unsplit(self.wr),
            first_answer: BytesMut::new(),
        }
    }
}

/// One session's parts, for the relay.
struct Session<'a> {
    frontend: &'a Arc<Frontend>,
    generation: &'a Arc<Generation>,
    startup: &'a StartupMessage,
    /// The startup packet nodes get (a Vertica client's, translated).
    packet: &'a Bytes,
    peer: SocketAddr,
    observer: &'a SessionObserver,
    progress: &'a NodeProgress,
    guard: &'a QueryGuard,
    /// Fires on KILL CLIENT and at shutdown.
    kill: KillSignal,
    /// How sluice logs in again for this client; `None`: the login was
    /// the node's (relayed), and only a trusted one can be made again.
    credential: Option<Credential>,
    pooling: Pooling,
    /// What the session had set on its node when it last detached.
    saved: Saved,
    /// Counted in `sluice_detached_sessions` now.
    detached: bool,
}

impl Session<'_> {
    /// Relays the session both ways until it ends, then finishes it;
    /// detaches and re-attaches on the way when pooling says so. Returns
    /// the node connection when it may serve another client.
    async fn relay<C: ClientSide + Send, N: NodeSide + Send>(
        mut self,
        (client_side, node_side): (C, N),
        client: Stream,
        start: Start,
    ) -> Option<(Attached, IdleConnection)> {
        let translated = C::TRANSLATED;
        let generation = self.generation;
        let client_tls = client.is_tls();
        let (client_rd, client_wr) = client.into_split();
        let client_wr = tokio::sync::Mutex::new(ClientWriter::new(client_wr));
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
        let (mut link, node, greeted) = match start {
            Start::Attached(opened) => {
                let node = opened.node().clone();
                (Some(Link::new(opened, node_treatment)), node, None)
            }
            Start::Detached { node, greeting } => (None, node, Some(greeting)),
        };
        let mut router = Router::new(
            generation.classifier.clone(),
            Some(self.frontend.metrics.clone()),
        );
        if translated {
            router = router.for_vertica();
        }
        let mut upstream = Upstream {
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
            out: BytesMut::new(),
            batches: VecDeque::new(),
            detach: match self.pooling {
                Pooling::MayDetach(after) => Some(after),
                Pooling::PerTransaction => Some(Duration::ZERO),
                Pooling::Pinned(_) => None,
            },
            statements: match self.pooling {
                Pooling::PerTransaction => Some(Statements::new(self.observer.entry().id)),
                Pooling::MayDetach(_)
                    if generation.config.warehouse.dialect == Dialect::Vertica =>
                {
                    Some(Statements::watching())
                }
                _ => None,
            },
            detach_armed: true,
            idle_since: None,
        };
        let mut downstream = Downstream {
            side: node_side,
            progress: self.progress,
            guard: self.guard,
            observer: self.observer,
            cancels: &self.frontend.cancels,
            node,
            phase: Phase::Startup,
            greeting: Greeting::Recording(BytesMut::new()),
            registration: None,
            unsent: BytesMut::new(),
            tracks_delivery: upstream.detach.is_some(),
        };
        if let Some(greeting) = greeted
            && let Err(e) = self.greet(greeting, &mut downstream, &client_wr).await
        {
            tracing::debug!(peer = %self.peer, error = %e, "the client left during the greeting");
            self.frontend.metrics.session_detached(false);
            return None;
        }
        if let Pooling::Pinned(why) = self.pooling {
            self.observer
                .entry()
                .set_attachment(downstream.node.addr(), why);
        } else if self.credential.is_some() {
            self.observer
                .entry()
                .set_attachment(downstream.node.addr(), "attached");
        }
        let login = match link.as_mut() {
            // A Vertica driver's login is carried through by sluice.
            Some(l) if translated => {
                let mut wr = client_wr.lock().await;
                tokio::select! {
                    login = translate::authenticate(&mut l.from, &mut l.wr, &mut from_client,
                        &mut wr, self.startup.user(), client_tls) => login,
                    _ = &mut self.kill => Err(End::Killed),
                }
            }
            _ => Ok(None),
        };
        if let Ok(Some(credential)) = &login {
            // How a translated session's login can be made again.
            self.credential = Some(credential.clone());
            if matches!(self.pooling, Pooling::MayDetach(_)) {
                self.observer
                    .entry()
                    .set_attachment(downstream.node.addr(), "attached");
            }
        }
        let end = match login {
            Err(end) => end,
            Ok(_) => loop {
                let end = match link.as_mut() {
                    Some(l) => {
                        let up = upstream.run(&mut from_client, Some(&mut l.wr), &client_wr);
                        let down = downstream.run(&mut l.from, &client_wr);
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
                    None => tokio::select! {
                        biased;
                        stop = upstream.run(&mut from_client, None, &client_wr) => stop.into(),
                        _ = &mut self.kill => End::Killed,
                    },
                };
                match end {
                    End::Detach => {
                        let l = link.take().expect("only an attached session detaches");
                        match self
                            .detach(l, &mut upstream, &mut downstream, node_treatment)
                            .await
                        {
                            Ok(stays) => link = stays,
                            Err(end) => break end,
                        }
                    }
                    End::NeedNode => match self
                        .attach(&mut upstream, &mut downstream, node_treatment)
                        .await
                    {
                        Ok(l) => link = Some(l),
                        Err(error) => break End::NoConnection(error),
                    },
                    end => break end,
                }
            },
        };
        if self.detached {
            // It ends detached.
            self.frontend.metrics.session_detached(false);
        }
        // The client's cancel key goes first: a cancel that looks it up from
        // now on finds nothing, and one that found it is marked as on its way
        // (or gives up, see `listener::forward_cancel`) before the check below.
        drop(downstream.registration.take());
        // The client left cleanly with the node idle: the connection may
        // serve the next client that logs in the same way.
        let warehouse = &generation.config.warehouse;
        let greeting = match (&end, &downstream.greeting, &link) {
            (End::ClientLeft, Greeting::Trusted(greeting), Some(l))
                if warehouse.idle_connections > 0
                    && !translated
                    // DISCARD ALL is PostgreSQL's: Vertica has no reset to trust.
                    && warehouse.dialect == Dialect::Postgres
                    && downstream.phase == Phase::Ready
                    && self.progress.owed().idle_in_no_transaction()
                    && !l.from.has_buffered()
                    && from_client.at_boundary()
                    && l.from.at_boundary()
                    && l.node().is_healthy()
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
            client_between_messages: link.as_ref().is_none_or(|l| l.from.at_boundary()),
            node_between_messages: from_client.at_boundary(),
            node: downstream.node.addr(),
            peer: self.peer,
            keep_node: greeting.is_some(),
        };
        finish(
            ending,
            &downstream.side,
            &mut client_wr,
            link.as_mut().map(|l| &mut l.wr),
        )
        .await;
        let greeting = greeting?;
        Some(link?.into_opened().into_kept(self.packet, greeting))
    }

    /// Greets a client that starts detached as the node greeted the same
    /// startup packet, with a cancel key of sluice's that stands for
    /// nothing until the session attaches.
    async fn greet<N: NodeSide>(
        &mut self,
        greeting: Bytes,
        downstream: &mut Downstream<'_, N>,
        client_wr: &tokio::sync::Mutex<ClientWriter>,
    ) -> std::io::Result<()> {
        let registration = self.frontend.cancels.register_detached();
        let mut out = BytesMut::new();
        for message in greeting_messages(&greeting) {
            if message[0] == backend::BACKEND_KEY_DATA {
                downstream
                    .side
                    .backend_key(registration.client_key(), &mut out);
            } else {
                out.extend_from_slice(message);
            }
        }
        downstream.registration = Some(registration);
        // What the node owes for the login is answered here.
        self.progress
            .owed()
            .ready(TransactionStatus::Idle, 0, &mut Vec::new());
        downstream.phase = Phase::Ready;
        downstream.greeting = Greeting::Trusted(greeting);
        self.observer.entry().set_attachment("", "detached");
        self.observer.settled(TransactionStatus::Idle);
        self.frontend.metrics.session_detached(true);
        self.detached = true;
        client_wr.lock().await.write_all(&out).await
    }

    /// The session has been idle long enough (pooled per transaction: its
    /// transaction ended): gives the connection back unless what it holds
    /// pins it. `Ok(Some)`: the session stays attached.
    async fn detach<C: ClientSide, N: NodeSide>(
        &mut self,
        link: Link,
        upstream: &mut Upstream<'_, C>,
        downstream: &mut Downstream<'_, N>,
        node_treatment: fn(u8) -> Treatment,
    ) -> Result<Option<Link>, End> {
        // A relayed login is made again only if the node asked for nothing.
        let can_log_in = self.credential.is_some()
            || matches!(downstream.greeting, Greeting::Trusted(ref g) if g.first() == Some(&backend::AUTHENTICATION));
        if !can_log_in {
            upstream.detach = None;
            return Ok(Some(link));
        }
        if let (Pooling::PerTransaction, Some(why)) = (
            self.pooling,
            upstream.statements.as_ref().and_then(|s| s.pinned()),
        ) {
            // From now on pooled per session, like any other.
            let idle_detach = self.generation.config.pooling.idle_detach;
            self.pooling = match idle_detach {
                Some(after) => Pooling::MayDetach(after),
                None => Pooling::Pinned("pinned (no idle_detach)"),
            };
            upstream.detach = idle_detach;
            upstream.idle_since = None;
            self.observer.entry().set_attachment(
                link.node().addr(),
                &format!("pinned ({why}); session pooling"),
            );
            return Ok(Some(link));
        }
        let quiet = downstream.phase == Phase::Ready
            && self.progress.owed().idle_in_no_transaction()
            && upstream.out.is_empty()
            && link.from.at_boundary()
            && !link.from.has_buffered();
        if !quiet {
            // Tried again after the session's next query, not at once (a
            // zero timer would spin).
            upstream.idle_since = None;
            upstream.detach_armed = false;
            return Ok(Some(link));
        }
        // The client's cancel key stands for nothing from here on; a
        // cancel that found it before is seen on its way below, and then
        // the connection stays: its second signal could hit the next
        // session's query.
        let target = self.guard.target();
        if let Some(r) = &downstream.registration {
            r.suspend();
        }
        self.guard.set_target(None);
        let stay =
            |link: Link, registration: &Option<crate::cancel::Registration>, guard: &QueryGuard| {
                if let (Some(r), Some(t)) = (registration, &target) {
                    r.resume(&t.node, t.key.clone());
                }
                guard.set_target(target.clone());
                link
            };
        if target
            .as_ref()
            .is_some_and(|t| self.frontend.cancels.is_sending(t))
        {
            upstream.idle_since = None;
            upstream.detach_armed = false;
            return Ok(Some(stay(link, &downstream.registration, self.guard)));
        }
        let timeout = self.generation.config.warehouse.connect_timeout;
        let node = link.node().clone();
        let vertica = self.generation.config.warehouse.dialect == Dialect::Vertica;
        if vertica && let Some(why) = upstream.statements.as_ref().and_then(|s| s.pinned()) {
            self.observer
                .entry()
                .set_attachment(node.addr(), &format!("pinned ({why})"));
            upstream.detach = None;
            return Ok(Some(stay(link, &downstream.registration, self.guard)));
        }
        let mut opened = link.into_opened();
        let reset = match (&self.pooling, &mut upstream.statements) {
            // A Vertica node is not reset and asked nothing: the session
            // set nothing but the SETs it runs again, and the connection
            // is closed.
            _ if vertica => false,
            (Pooling::PerTransaction, Some(statements)) => {
                statements.all_sent();
                // No inventory, no DISCARD ALL per transaction: the
                // session's statements stay (under names only it uses),
                // and its SETs are undone.
                if !statements.sets().is_empty()
                    && let Err(why) = run_hidden(&mut opened.stream, "RESET ALL", timeout).await
                {
                    tracing::info!(peer = %self.peer, node = node.addr(), why, "the node failed while the session detached");
                    return Err(End::NodeClosed);
                }
                opened
                    .held
                    .prepared
                    .extend(statements.server_names().cloned());
                false
            }
            _ => {
                let user = self.startup.user();
                let inventory = take_inventory(&mut opened.stream, user, timeout).await;
                match inventory {
                    Ok(Inventory::Saved(saved)) => {
                        tracing::debug!(peer = %self.peer, node = node.addr(), saved = describe(&saved), "session detached");
                        self.saved = saved;
                    }
                    Ok(Inventory::Pinned(why)) => {
                        tracing::debug!(peer = %self.peer, node = node.addr(), why, "session stays pinned");
                        self.observer
                            .entry()
                            .set_attachment(node.addr(), &format!("pinned ({why})"));
                        upstream.detach_armed = false;
                        let link = Link::new(opened, node_treatment);
                        return Ok(Some(stay(link, &downstream.registration, self.guard)));
                    }
                    Err(why) => {
                        tracing::info!(peer = %self.peer, node = node.addr(), why, "the node failed while the session detached");
                        return Err(End::NodeClosed);
                    }
                }
                true
            }
        };
        self.observer.entry().set_attachment("", "detached");
        self.frontend.metrics.session_detached(true);
        self.detached = true;
        let greeting = match &downstream.greeting {
            Greeting::Trusted(g) => Some(g.clone()),
            _ => None,
        };
        if let Some(g) = &greeting
            && self.credential.is_none()
        {
            // The node let this startup packet in without a password.
            self.frontend
                .greetings
                .remember(self.packet, g.clone(), false);
        }
        // Vertica has no reset; a translated session's greeting is not the
        // one a relayed client expects: neither connection is kept.
        let Some(greeting) = greeting.filter(|_| !vertica && !C::TRANSLATED) else {
            let _ = opened
                .stream
                .write_all(&crate::protocol::frontend::TERMINATE_MESSAGE)
                .await;
            return Ok(None);
        };
        let (attached, kept) = opened.into_kept(self.packet, greeting);
        keep_connection(attached, kept, &self.generation.config.warehouse, reset).await;
        Ok(None)
    }

    /// A detached session needs a node again: takes a connection (a kept
    /// one, or a new login), sets there what the session had set, and
    /// points the client's cancel key at it. The error is what the client
    /// is told.
    async fn attach<C: ClientSide, N: NodeSide>(
        &mut self,
        upstream: &mut Upstream<'_, C>,
        downstream: &mut Downstream<'_, N>,
        node_treatment: fn(u8) -> Treatment,
    ) -> Result<Link, ErrorFields> {
        let credential = self.credential.clone().unwrap_or(Credential::Trusted);
        let started = std::time::Instant::now();
        let per_transaction = matches!(self.pooling, Pooling::PerTransaction);
        let login = Login {
            packet: self.packet,
            user: self.startup.user(),
            credential: Some(&credential),
            per_transaction,
            stop: &self.observer.entry().token,
        };
        let mut opened = take_connection(self.frontend, self.generation, login).await?;
        self.frontend.metrics.pool_waited(started.elapsed());
        let addr = opened.node().addr().to_string();
        let timeout = self.generation.config.warehouse.connect_timeout;
        let vertica = self.generation.config.warehouse.dialect == Dialect::Vertica;
        let replayed = match (per_transaction || vertica, &upstream.statements) {
            (true, Some(statements)) => {
                let missing = statements.missing_on(&opened.held.prepared);
                let done =
                    replay_statements(&mut opened.stream, statements.sets(), &missing, timeout)
                        .await;
                opened
                    .held
                    .prepared
                    .extend(statements.server_names().cloned());
                done
            }
            _ => replay(&mut opened.stream, &self.saved, timeout).await,
        };
        if let Err(why) = replayed {
            tracing::warn!(peer = %self.peer, node = addr, why, "could not restore a session's settings on a node");
            return Err(ErrorFields::fatal(
                sqlstate::CONNECTION_FAILURE,
                format!(
                    "sluice could not restore this session's settings on warehouse node {addr}: {why}"
                ),
            ));
        }
        let greeting = opened.first_answer.split().freeze();
        let key = greeting_key(&greeting);
        if let (Some(r), Some(key)) = (&downstream.registration, key.clone()) {
            r.resume(&addr, key);
        }
        self.guard
            .set_target(key.map(|key| crate::cancel::CancelTarget {
                node: addr.clone(),
                key,
            }));
        downstream.node = opened.node().clone();
        downstream.greeting = Greeting::Trusted(greeting);
        upstream.detach_armed = true;
        upstream.idle_since = None;
        self.observer.entry().set_attachment(&addr, "attached");
        self.frontend.metrics.session_detached(false);
        self.detached = false;
        self.frontend.metrics.session_reattached();
        if !per_transaction {
            tracing::debug!(peer = %self.peer, node = addr, "session attached again");
        }
        Ok(Link::new(opened, node_treatment))
    }
}

/// Resets a node connection whose client left (or detached) and keeps it
/// for the next client with the same startup packet; a connection that
/// does not reset cleanly within the connect timeout is closed.
///
/// `reset: false`: a session pooled per transaction gives it back as it is
/// (its statements stay, under names only it uses; its SETs were undone).
async fn keep_connection(
    attached: Attached,
    mut kept: IdleConnection,
    warehouse: &crate::config::Warehouse,
    reset_first: bool,
) {
    let node = attached.node().clone();
    // Counted as a session no more: the node has no client on it.
    drop(attached);
    if warehouse.idle_connections == 0 || kept.prepared.len() > MAX_PER_CONNECTION {
        return;
    }
    if !reset_first {
        node.keep_idle(kept, warehouse.idle_connections, warehouse.idle_timeout);
        return;
    }
    match run_hidden(&mut kept.stream, "DISCARD ALL", warehouse.connect_timeout).await {
        Ok(()) => {
            kept.prepared.clear();
            node.keep_idle(kept, warehouse.idle_connections, warehouse.idle_timeout)
        }
        Err(why) => tracing::debug!(
            node = node.addr(),
            why,
            "a node connection did not reset; closed"
        ),
    }
}

/// How a session logs in to a node.
#[derive(Clone, Copy)]
struct Login<'a> {
    /// The startup packet nodes get.
    packet: &'a [u8],
    user: &'a str,
    /// sluice logs in with it; `None`: the client's own login is relayed.
    credential: Option<&'a Credential>,
    /// The session is pooled per transaction (keeps other sessions'
    /// statements on a connection it takes).
    per_transaction: bool,
    /// Ends a wait for a connection: `KILL CLIENT`, shutdown.
    stop: &'a tokio_util::sync::CancellationToken,
}

/// A node connection for a session: a kept one logged in the same way, or
/// a new one, on the healthy nodes in round-robin order under each node's
/// cap: first wherever a slot is free now, then waiting in turn at the
/// first node for `[pooling] wait_timeout`. Without a credential the
/// client's startup is handed to the node and its first answer returned,
/// for the client to go on with (the login is relayed). The error is what
/// the client is told.
async fn take_connection(
    frontend: &Frontend,
    generation: &Generation,
    login: Login<'_>,
) -> Result<Opened, ErrorFields> {
    let Login {
        packet,
        user,
        credential,
        per_transaction,
        stop,
    } = login;
    let candidates = frontend.nodes.candidates();
    if candidates.is_empty() {
        let total = frontend.nodes.all().len();
        return Err(ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("no warehouse node is available: all {total} nodes are out of rotation"),
        )
        .with_hint("The nodes failed their health checks; sluice puts them back as soon as they answer again."));
    }
    let warehouse = &generation.config.warehouse;
    // Connections opened by a password login go only to clients sluice
    // authenticated itself.
    let proven = credential.is_some_and(|c| !matches!(c, Credential::Trusted));
    // A cleartext password is proved only by this session's own login: such
    // a client takes no connection another login opened.
    let may_take_proven = credential.is_some_and(Credential::proves_identity);
    let wait = generation.config.pooling.wait_timeout;
    let deadline = tokio::time::Instant::now() + wait;
    let mut failures = Vec::new();
    let first = &candidates[0];
    // The node whose cap was met, and the cap, for the error if the wait
    // ends with none free.
    let mut full = first
        .slots()
        .cap()
        .map(|cap| (first.addr().to_string(), cap));
    // Sessions already waiting go first: one that just gave a connection
    // back must not take it again ahead of them.
    let mut my_turn = !first.slots().anyone_waiting();
    loop {
        // Enabled before looking, so that a connection given back while
        // this session looks is not missed.
        let freed = first.slots().freed().notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        let looked_at = if my_turn { &candidates[..] } else { &[] };
        if my_turn {
            full = None;
        }
        for node in looked_at {
            // A node connection kept from a client that logged in the same
            // way saves the node a backend start and a login. Only the node
            // round robin chose: kept connections must not draw sessions to
            // their node.
            if let Some(mut kept) = node.take_idle(packet, may_take_proven, warehouse.idle_timeout)
            {
                tracing::debug!(node = node.addr(), "session takes a kept node connection");
                // Statements of sessions pooled per transaction are theirs:
                // a session pooled per session starts with none.
                if !per_transaction
                    && !kept.prepared.is_empty()
                    && run_hidden(
                        &mut kept.stream,
                        "DEALLOCATE ALL",
                        warehouse.connect_timeout,
                    )
                    .await
                    .is_err()
                {
                    continue;
                }
                if !per_transaction {
                    kept.prepared.clear();
                }
                return Ok(Opened {
                    held: Held {
                        attached: node.attach(),
                        slot: kept.slot,
                        proven: kept.proven,
                        prepared: kept.prepared,
                    },
                    first_answer: BytesMut::from(&kept.greeting[..]),
                    stream: kept.stream,
                });
            }
            let slot = match node.try_slot() {
                Ok(slot) => slot,
                Err(f) => {
                    full = Some((node.addr().to_string(), f.cap));
                    continue;
                }
            };
            let opened = match credential {
                Some(credential) => {
                    auth::log_in(
                        &generation.node_connector,
                        node.addr(),
                        packet,
                        user,
                        credential,
                        generation.config.warehouse.dialect == Dialect::Vertica,
                    )
                    .await
                    .map_err(|e| match e {
                        // The node's answer to the client's password.
                        NodeLoginError::Refused(raw) => {
                            let (code, message) =
                                backend::error_summary(raw.get(5..).unwrap_or_default());
                            Some(ErrorFields::fatal(&code, message))
                        }
                        NodeLoginError::Failed(why) => {
                            failures.push(why);
                            None
                        }
                    })
                }
                None => open_on_node(&generation.node_connector, node.addr(), packet)
                    .await
                    .map(|(stream, first)| (stream, first.freeze()))
                    .map_err(|why| {
                        failures.push(why);
                        None
                    }),
            };
            match opened {
                Ok((stream, first_answer)) => {
                    if credential.is_some() {
                        frontend
                            .greetings
                            .remember(packet, first_answer.clone(), proven);
                    }
                    return Ok(Opened {
                        held: Held {
                            attached: node.attach(),
                            slot,
                            proven,
                            prepared: HashSet::new(),
                        },
                        stream,
                        first_answer: BytesMut::from(&first_answer[..]),
                    });
                }
                Err(Some(refused)) => return Err(refused),
                Err(None) => tracing::warn!(
                    node = node.addr(),
                    error = failures.last().map(String::as_str).unwrap_or_default(),
                    "could not open a session on node; trying the next"
                ),
            }
        }
        if my_turn && full.is_none() {
            break;
        }
        // Every node is at its cap (or others wait): wait, in turn, for a
        // slot at any.
        let _waiting = first.wait_for_slot();
        tokio::select! {
            woken = tokio::time::timeout_at(deadline, freed) => {
                if woken.is_err() {
                    break;
                }
            }
            () = stop.cancelled() => {
                return Err(ErrorFields::fatal(
                    sqlstate::ADMIN_SHUTDOWN,
                    "this session was closed while it waited for a warehouse connection (KILL CLIENT, or sluice is shutting down)",
                ));
            }
        }
        my_turn = true;
    }
    Err(match full {
        Some((node, cap)) if failures.is_empty() => node_full(&node, cap, wait),
        _ => ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!(
                "no warehouse node was reachable (tried {})",
                candidates.len()
            ),
        )
        .with_detail(failures.join("; ")),
    })
}

/// 53300 naming sluice's cap, not the node's own limit.
fn node_full(node: &str, cap: usize, wait: Duration) -> ErrorFields {
    ErrorFields::fatal(
        sqlstate::TOO_MANY_CONNECTIONS,
        format!(
            "warehouse node {node} has all {cap} of the connections sluice may open to it in use ([pooling] max_node_connections), and none came free within {}",
            humantime::format_duration(wait)
        ),
    )
    .with_hint("Raise [pooling] max_node_connections if the node admits more, or set [pooling] idle_detach so that idle sessions give theirs back.")
}

/// Opens a new session on a node (see [`take_connection`]); when none can
/// be had, the client is told why and `None` is returned.
async fn open_session(
    frontend: &Frontend,
    generation: &Generation,
    client: &mut Stream,
    peer: SocketAddr,
    login: Login<'_>,
) -> Option<Opened> {
    let user = login.user;
    match take_connection(frontend, generation, login).await {
        Ok(opened) => Some(opened),
        Err(error) => {
            tracing::warn!(%peer, user, error = error.message, "refused a session");
            if error.code != sqlstate::INVALID_PASSWORD {
                frontend
                    .metrics
                    .client_refused(crate::metrics::Refusal::NoNode);
            }
            send_fatal(client, &error).await;
            None
        }
    }
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
