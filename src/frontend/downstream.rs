//! The node direction of a session, for both kinds of session: a
//! PostgreSQL client relayed as it is and a Vertica client translated
//! ([`super::translate`]). The mirror of [`super::upstream`].
//!
//! [`Downstream::run`] reads the node, hands each message it inspects to
//! the queue of what the node owes ([`super::owed`]), which says whether
//! the client sees it, and writes what the client sees, in the client's
//! terms ([`NodeSide`]), one write per read. It decodes BackendKeyData
//! (replaced by a cancel key of sluice's own), ReadyForQuery, ErrorResponse
//! (a FATAL one ends the session) and CommandComplete; the rest streams
//! through in the pieces the socket delivers for a PostgreSQL client, or is
//! converted message by message for a Vertica one.
//!
//! Statistics and metrics of the batches a read ended are recorded after
//! the client has the answer: shared maps, cold after every idle wait, stay
//! off the path of the answer.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::guard::QueryGuard;
use super::observe::SessionObserver;
use super::owed::{Action, Done, NodeProgress, Owed};
use super::upstream::Stop;
use crate::cancel::{CancelRegistry, Registration};
use crate::catalog::CatalogError;
use crate::net::{MessageStream, ReadHalf, WriteHalf};
use crate::protocol::ProtocolError;
use crate::protocol::backend::{self, ErrorFields, TransactionStatus};
use crate::protocol::frame::{Frame, Item};
use crate::protocol::startup::CancelKey;

/// What is gathered for the client goes out once this much has gathered,
/// even if more of the node's messages are already read.
const MAX_GATHERED: usize = 64 * 1024;

/// How long sluice's last words may wait for a slow client.
const FINISH_WRITE: std::time::Duration = std::time::Duration::from_secs(2);

const CHANNEL_BINDING_HINT: &str = "sluice relays logins to the warehouse, and SCRAM channel binding cannot cross a proxy when both the client and the node connection use TLS: connect with channel_binding=disable, or set warehouse.tls.mode = \"disable\".";

/// What a kind of client needs from the node direction beyond the
/// PostgreSQL protocol as it is.
pub(super) trait NodeSide {
    /// Appends the client's form of a message from the node.
    fn message(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), ProtocolError>;

    /// Appends sluice's cancel key, with anything the client expects
    /// alongside it at login.
    fn backend_key(&mut self, key: &CancelKey, out: &mut BytesMut) {
        backend::encode_backend_key_data(out, key);
    }

    /// A ReadyForQuery the client sees is next: anything that goes ahead.
    fn ready(&mut self, _out: &mut BytesMut) {}

    /// Appends an error or notice of sluice's own in the client's layout.
    fn error(&self, error: &ErrorFields, notice: bool, out: &mut BytesMut);
}

/// Where the session stands, as the node's messages say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Authentication and parameter exchange, until the first ReadyForQuery.
    Startup,
    /// Ready for a query, or running one.
    Ready,
    /// The node sent a FATAL error; it will close.
    Ending,
}

/// Why a session ended.
#[derive(Debug)]
pub(super) enum End {
    ClientLeft,
    NodeClosed,
    Killed,
    /// The node refused the login, and the client was told.
    Refused,
    /// The login could not be carried through for the client.
    Auth(String),
    ClientProtocol(ProtocolError),
    NodeProtocol(ProtocolError),
    /// The catalog copy failed after part of its answer reached the client.
    CatalogBroken(CatalogError),
    Io(std::io::Error),
    /// See [`Stop::Detach`].
    Detach,
    /// See [`Stop::NeedNode`].
    NeedNode,
    /// A detached session could not have a node connection again: the
    /// client is told this.
    NoConnection(ErrorFields),
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> End {
        End::Io(e)
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
            Stop::Detach => End::Detach,
            Stop::NeedNode => End::NeedNode,
        }
    }
}

/// The client's write half, shared by the two directions (and the catalog
/// copy's answers) behind an async mutex, which knows whether a write was
/// cut off, so that sluice's last words never land inside a message.
pub(super) struct ClientWriter {
    wr: WriteHalf,
    /// A write was cut off after this many of its bytes.
    cut: Option<usize>,
    /// The last write ended inside a message (a catalog answer streaming).
    mid_message: bool,
}

impl ClientWriter {
    pub(super) fn new(wr: WriteHalf) -> ClientWriter {
        ClientWriter {
            wr,
            cut: None,
            mid_message: false,
        }
    }

    /// Whether the last whole write left the client inside a message.
    pub(super) fn set_mid_message(&mut self, mid: bool) {
        self.mid_message = mid;
    }

    /// Writes all of `bytes`. Cancel safe in the sense that matters here:
    /// if the caller stops waiting, [`ClientWriter::cut`] says how much
    /// went out.
    pub(super) async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut done = 0;
        self.cut = Some(0);
        while done < bytes.len() {
            let n = self.wr.write(&bytes[done..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            done += n;
            self.cut = Some(done);
        }
        self.cut = None;
        Ok(())
    }

    /// How much of an interrupted write went out; `None` when no write
    /// was cut off.
    pub(super) fn cut(&self) -> Option<usize> {
        self.cut
    }

    pub(super) async fn shutdown(&mut self) {
        let _ = self.wr.shutdown().await;
    }
}

/// The node's answer to the startup, as a later client would be given it
/// (see [`crate::backend::idle`]).
#[derive(Debug)]
pub(super) enum Greeting {
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

/// The node direction of one session.
pub(super) struct Downstream<'a, N> {
    pub side: N,
    pub progress: &'a NodeProgress,
    pub guard: &'a QueryGuard,
    pub observer: &'a SessionObserver,
    pub cancels: &'a Arc<CancelRegistry>,
    /// The node it reads, for the cancel registry, metrics and logs;
    /// another after a re-attach.
    pub node: Arc<crate::backend::Node>,
    pub phase: Phase,
    pub greeting: Greeting,
    /// The client's cancel key, once the node's arrived.
    pub registration: Option<Registration>,
    /// What is being written to the client: kept here, not in the loop,
    /// so that a write the session's end interrupts can be completed.
    pub unsent: BytesMut,
    /// The session may detach: what the node answered counts as delivered
    /// only once written to the client ([`NodeProgress::quiet`]).
    pub tracks_delivery: bool,
}

/// What one pass over the node's buffered messages did.
#[derive(Default)]
struct Pass {
    /// It stopped because much had gathered, not because it ran dry.
    more: bool,
    /// ReadyForQuery answers were handled.
    readies: bool,
    catalog_changed: bool,
    rewatch: bool,
    /// The node owes nothing now; the last status.
    settled: Option<TransactionStatus>,
}

impl<N: NodeSide> Downstream<'_, N> {
    /// Runs until the node closes or the session cannot go on. What the
    /// node had sent when the session was opened is already in `from`.
    pub(super) async fn run(
        &mut self,
        from: &mut MessageStream<ReadHalf>,
        client_wr: &tokio::sync::Mutex<ClientWriter>,
    ) -> End {
        let mut unread = from.has_buffered();
        let mut out = BytesMut::new();
        let mut done = Vec::new();
        // Bytes of the current answer written before `out`'s.
        let mut carried = 0;
        // Held while a message is half written, so that no catalog answer
        // is written into the middle of it.
        let mut held: Option<tokio::sync::MutexGuard<'_, ClientWriter>> = None;
        loop {
            if !std::mem::take(&mut unread) {
                match from.fill().await {
                    Ok(0) => return End::NodeClosed,
                    Ok(_) => {}
                    Err(e) => return End::Io(e),
                }
            }
            let pass = {
                let mut owed = self.progress.owed();
                let pass = self.take_in(from, &mut owed, &mut out, &mut done, &mut carried);
                if self.tracks_delivery && !out.is_empty() {
                    owed.unwritten = true;
                }
                match pass {
                    Ok(p) => p,
                    Err(end) => return end,
                }
            };
            unread = pass.more;
            if pass.readies {
                self.progress.answered(pass.catalog_changed, pass.rewatch);
            }
            if !out.is_empty() {
                // Uncontended but for a catalog answer: taking the lock
                // without a future is the cheap path.
                let mut wr = match held.take() {
                    Some(guard) => guard,
                    None => match client_wr.try_lock() {
                        Ok(guard) => guard,
                        Err(_) => client_wr.lock().await,
                    },
                };
                self.unsent = std::mem::take(&mut out);
                if let Err(e) = wr.write_all(&self.unsent).await {
                    return End::Io(e);
                }
                if !from.at_boundary() {
                    held = Some(wr);
                }
                out = std::mem::take(&mut self.unsent);
                self.observer.client_written(out.len());
                out.clear();
                if self.tracks_delivery {
                    self.progress.written();
                }
            }
            if !done.is_empty() {
                let at = Instant::now();
                for d in done.drain(..) {
                    let elapsed = at.saturating_duration_since(d.started);
                    self.guard.record(&d, at, elapsed);
                    self.observer.finished(&d, elapsed, &self.node);
                }
            }
            if let Some(status) = pass.settled {
                self.observer.settled(status);
            }
        }
    }

    /// Handles what is buffered, appending what the client sees to `out`.
    /// `carried`: bytes of the current answer that went out before `out`'s,
    /// brought up to date for the next pass.
    fn take_in(
        &mut self,
        from: &mut MessageStream<ReadHalf>,
        owed: &mut Owed,
        out: &mut BytesMut,
        done: &mut Vec<Done>,
        carried: &mut u64,
    ) -> Result<Pass, End> {
        let mut pass = Pass::default();
        let mut answer_from = 0;
        loop {
            if out.len() > MAX_GATHERED {
                pass.more = true;
                break;
            }
            let frame = match from.buffered() {
                Ok(Some(Item::Relay(bytes))) => {
                    if self.phase == Phase::Startup {
                        self.greeting.record(&bytes);
                    }
                    out.extend_from_slice(&bytes);
                    continue;
                }
                Ok(Some(Item::Inspect(frame))) => frame,
                Ok(None) => break,
                Err(e) => return Err(End::NodeProtocol(e)),
            };
            if self.phase == Phase::Startup {
                self.greeting.record(frame.raw());
            }
            match frame.tag() {
                backend::BACKEND_KEY_DATA => {
                    let key = backend::backend_key_data(frame.body()).map_err(End::NodeProtocol)?;
                    self.guard.set_target(Some(crate::cancel::CancelTarget {
                        node: self.node.addr().to_string(),
                        key: key.clone(),
                    }));
                    let registration = self.cancels.register(self.node.addr(), key);
                    self.side.backend_key(registration.client_key(), out);
                    self.registration = Some(registration);
                }
                backend::READY_FOR_QUERY => {
                    let status =
                        backend::ready_for_query(frame.body()).map_err(End::NodeProtocol)?;
                    if self.phase == Phase::Startup {
                        self.phase = Phase::Ready;
                    }
                    let bytes = *carried + (out.len() - answer_from + frame.raw().len()) as u64;
                    let ready = owed.ready(status, bytes, done);
                    pass.readies = true;
                    pass.catalog_changed |= ready.catalog_changed;
                    pass.rewatch |= ready.rewatch;
                    if !ready.hide {
                        if let Some(answer) = &ready.answer_ahead {
                            out.extend_from_slice(answer);
                        }
                        self.side.ready(out);
                        if ready.shown == status {
                            out.extend_from_slice(frame.raw());
                        } else {
                            backend::encode_ready_for_query(out, ready.shown);
                        }
                        answer_from = out.len();
                        *carried = 0;
                    }
                }
                tag => match owed.message(tag, frame.body()) {
                    Action::Hide => {}
                    Action::Relay => self.relay(&frame, out)?,
                    Action::CancelledBy(rule) => {
                        // The rule's notice goes just ahead of the node's 57014.
                        self.side
                            .error(&QueryGuard::cancel_notice(&rule), true, out);
                        self.relay(&frame, out)?;
                    }
                },
            }
        }
        if pass.readies && owed.is_empty() {
            pass.settled = Some(owed.status());
        }
        *carried += (out.len() - answer_from) as u64;
        Ok(pass)
    }

    /// A message the client sees.
    fn relay(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), End> {
        if frame.tag() == backend::ERROR_RESPONSE {
            self.observer.error(frame.body());
            if self.phase == Phase::Startup {
                let (code, message) = backend::error_summary(frame.body());
                tracing::info!(
                    node = self.node.addr(),
                    code,
                    message,
                    "node refused the session"
                );
                // SCRAM channel binding ties the login to one TLS
                // connection; sluice's two legs are two connections.
                if message.contains("channel binding")
                    && let Ok(hinted) = backend::error_with_hint(frame.body(), CHANNEL_BINDING_HINT)
                {
                    self.phase = Phase::Ending;
                    return self
                        .side
                        .message(&Frame::from_raw(hinted), out)
                        .map_err(End::NodeProtocol);
                }
            }
            if backend::is_fatal(frame.body()) {
                self.phase = Phase::Ending;
            }
        }
        self.side.message(frame, out).map_err(End::NodeProtocol)
    }
}

/// How a session ends, for [`finish`].
pub(super) struct Ending<'a> {
    pub end: End,
    pub phase: Phase,
    /// sluice is shutting down (rather than an administrator's KILL CLIENT).
    pub shutting_down: bool,
    /// What the node direction was writing to the client when it stopped.
    pub unsent: &'a [u8],
    /// Nothing of a message to the client is half relayed, once `unsent`
    /// is written.
    pub client_between_messages: bool,
    /// Nothing of a message to the node is half written.
    pub node_between_messages: bool,
    pub node: &'a str,
    pub peer: std::net::SocketAddr,
    /// The node connection is kept for another client and stays open.
    pub keep_node: bool,
}

/// Tells the peers why the session ends, where the protocol allows it:
/// sluice's FATAL only between messages to the client, Terminate only
/// between messages to the node.
pub(super) async fn finish(
    ending: Ending<'_>,
    side: &impl NodeSide,
    client: &mut ClientWriter,
    node_wr: Option<&mut WriteHalf>,
) {
    let Ending {
        end,
        phase,
        shutting_down,
        unsent,
        client_between_messages,
        node_between_messages,
        node,
        peer,
        keep_node,
    } = ending;
    let end = &end;
    use crate::protocol::sqlstate;
    let error = match end {
        End::ClientLeft | End::Refused | End::Io(_) => None,
        End::Detach | End::NeedNode => None,
        End::NoConnection(error) => Some(error.clone()),
        End::NodeClosed if phase == Phase::Ending => None,
        End::NodeClosed => Some(ErrorFields::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("warehouse node {node} closed the connection unexpectedly"),
        )),
        End::Killed if !shutting_down => Some(ErrorFields::fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "an administrator closed this session (KILL CLIENT on the sluice admin console)",
        )),
        End::Killed => Some(ErrorFields::fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "sluice is shutting down and closed this session",
        )),
        End::Auth(why) => Some(ErrorFields::fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            why.clone(),
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
    };
    match end {
        End::ClientLeft | End::Refused => tracing::debug!(%peer, node, "session ended"),
        End::NodeClosed if error.is_none() => tracing::debug!(%peer, node, "session ended"),
        End::Io(e) => {
            tracing::debug!(%peer, node, error = %e, "session ended by a connection error")
        }
        _ => tracing::info!(%peer, node, reason = ?end, "session ended"),
    }
    // A write cut off by the end (KILL CLIENT, a drain, while the client
    // read slowly) is completed first, briefly, so that the client gets
    // whole messages and then the reason.
    let mut between_messages = client_between_messages && !client.mid_message;
    if let Some(done) = client.cut() {
        let rest = unsent.get(done..).unwrap_or_default();
        between_messages &= !unsent.is_empty()
            && tokio::time::timeout(FINISH_WRITE, client.write_all(rest))
                .await
                .is_ok_and(|r| r.is_ok());
    }
    if let Some(error) = error
        && between_messages
    {
        let mut bytes = BytesMut::new();
        side.error(&error, false, &mut bytes);
        let _ = client.write_all(&bytes).await;
    }
    client.shutdown().await;
    let Some(node_wr) = node_wr.filter(|_| !keep_node) else {
        return;
    };
    // A node left without Terminate logs "unexpected EOF"; say goodbye
    // properly when the stream is between messages.
    if !matches!(end, End::NodeClosed) && node_between_messages {
        let _ = node_wr
            .write_all(&crate::protocol::frontend::TERMINATE_MESSAGE)
            .await;
    }
    let _ = node_wr.shutdown().await;
}
