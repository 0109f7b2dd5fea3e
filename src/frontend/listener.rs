//! The client listener: accepts connections, runs each one's opening, and
//! hands sessions to [`super::session`], cancels to the node that owns them
//! (or, for keys another sluice instance made, to the cluster peers).
//!
//! While sluice drains, the listener keeps accepting so that clients get a
//! clear 57P03 instead of a refused TCP connection, and cancels still work.
//!
//! A startup for the database `sluice` goes to the admin console, before
//! draining and the client limit are checked: operators must get in when
//! sluice is full or shutting down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::Frontend;
use super::negotiate::{Opening, negotiate};
use super::session;
use crate::cancel::CancelRoute;
use crate::cluster::{self, Take};
use crate::generation::Generation;
use crate::metrics::Refusal;
use crate::net::send_fatal;
use crate::protocol::backend::ErrorFields;
use crate::protocol::sqlstate;
use crate::protocol::startup::CancelKey;

/// Accepts clients until sluice stops.
pub async fn accept_loop(frontend: Arc<Frontend>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = frontend.kill.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors, most likely: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let frontend2 = frontend.clone();
        frontend.sessions.spawn(handle(frontend2, tcp, peer));
    }
}

async fn handle(frontend: Arc<Frontend>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().ok();
    let generation = frontend.generation();
    let startup_timeout = generation.config.server.startup_timeout;
    let opening = match tokio::time::timeout(startup_timeout, negotiate(tcp, &generation)).await {
        Ok(Ok(opening)) => opening,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed during startup");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, timeout = ?startup_timeout, "closed a connection that did not finish its startup in time");
            return;
        }
    };
    match opening {
        Opening::Closed => {}
        Opening::Cancel(key) => forward_cancel(&frontend, &generation, key, peer, local).await,
        Opening::Session {
            mut stream,
            startup,
        } => {
            if startup.database() == crate::admin::DATABASE {
                // Outside the session tracker: an idle console must not hold
                // up a drain. The kill token still ends it.
                let admin = generation.config.admin.clone();
                tokio::spawn(crate::admin::serve(
                    frontend.console.clone(),
                    admin,
                    stream,
                    startup,
                    peer,
                ));
                return;
            }
            if frontend.is_draining() {
                frontend.metrics.client_refused(Refusal::Draining);
                let error = ErrorFields::fatal(sqlstate::CANNOT_CONNECT_NOW, "sluice is shutting down and accepts no new sessions")
                    .with_hint("Reconnect in a moment; another sluice instance or this one after its restart will serve you.");
                send_fatal(&mut stream, &error).await;
                return;
            }
            let server = &generation.config.server;
            let user = startup.user();
            let _slot = match ClientSlot::take(
                &frontend,
                user,
                server.max_client_connections,
                server.max_client_connections_per_user,
            ) {
                Ok(slot) => slot,
                Err(over) => {
                    let message = match over {
                        Over::Total(limit) => format!(
                            "too many clients: sluice serves at most {limit} (server.max_client_connections)"
                        ),
                        Over::User(limit) => format!(
                            "too many connections for user {user:?}: sluice serves at most {limit} \
                             per user (server.max_client_connections_per_user)"
                        ),
                    };
                    let (refusal, limit) = match over {
                        Over::Total(limit) => (Refusal::Limit, limit),
                        Over::User(limit) => (Refusal::UserLimit, limit),
                    };
                    tracing::warn!(%peer, user, limit, "refused a client over the connection limit: {message}");
                    frontend.metrics.client_refused(refusal);
                    let error = ErrorFields::fatal(sqlstate::TOO_MANY_CONNECTIONS, message);
                    send_fatal(&mut stream, &error).await;
                    return;
                }
            };
            session::run(frontend.clone(), generation, stream, startup, peer).await;
        }
    }
}

/// Which limit a new session would pass.
enum Over {
    Total(usize),
    User(usize),
}

/// Holds one of the `max_client_connections` places, and one of its user's
/// `max_client_connections_per_user`, until dropped.
struct ClientSlot<'a> {
    frontend: &'a Frontend,
    /// The user whose count this slot holds, when a per-user limit applies.
    user: Option<String>,
}

impl<'a> ClientSlot<'a> {
    fn take(
        frontend: &'a Frontend,
        user: &str,
        limit: usize,
        per_user: Option<usize>,
    ) -> Result<ClientSlot<'a>, Over> {
        let before = frontend.clients.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            frontend.clients.fetch_sub(1, Ordering::AcqRel);
            return Err(Over::Total(limit));
        }
        let mut held_user = None;
        if let Some(per_user) = per_user {
            // The entry's shard lock makes check and increment one step.
            let mut count = frontend
                .clients_by_user
                .entry(user.to_string())
                .or_insert(0);
            if *count >= per_user {
                drop(count);
                frontend.clients.fetch_sub(1, Ordering::AcqRel);
                return Err(Over::User(per_user));
            }
            *count += 1;
            held_user = Some(user.to_string());
        }
        frontend.metrics.client_connected();
        Ok(ClientSlot {
            frontend,
            user: held_user,
        })
    }
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.frontend.clients.fetch_sub(1, Ordering::AcqRel);
        if let Some(user) = &self.user {
            self.frontend
                .clients_by_user
                .remove_if_mut(user, |_, count| {
                    *count -= 1;
                    *count == 0
                });
        }
        self.frontend.metrics.client_disconnected();
    }
}

/// Sends a client's CancelRequest to the node running its query, with the
/// node's real key, or to the cluster peers when another instance made the
/// key. Unknown keys are dropped without a word, as PostgreSQL does; known
/// ones beyond `server.cancel_rate` are dropped too, logged once per flood.
async fn forward_cancel(
    frontend: &Frontend,
    generation: &Generation,
    key: CancelKey,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) {
    let cluster = &generation.config.cluster;
    let target = match frontend.cancels.route(&key, !cluster.peers.is_empty()) {
        CancelRoute::Node(target) => target,
        CancelRoute::Drop(why) => {
            tracing::debug!(%peer, why, "ignored a CancelRequest");
            return;
        }
        CancelRoute::Peers(marked) => {
            match generation.cancel_forwarding.take() {
                Take::Granted => {}
                Take::Refused { first } => {
                    if first {
                        tracing::warn!(
                            %peer,
                            rate = cluster.cancel_forward_rate,
                            burst = cluster.cancel_forward_burst,
                            "cancel requests for other instances arrive faster than \
                             cluster.cancel_forward_rate; dropping them until the rate falls"
                        );
                    }
                    return;
                }
            }
            let own: Vec<SocketAddr> = std::iter::once(frontend.listen_addr).chain(local).collect();
            let reached = cluster::forward_cancel(cluster, &own, &marked).await;
            tracing::info!(
                %peer,
                owner = crate::cancel::instance_of(&key),
                reached,
                "forwarded a cancel request to the cluster peers"
            );
            return;
        }
    };
    // Only keys sluice handed out get here, but a client may replay its own
    // key in a loop: each forward opens a connection to the node.
    if let Take::Refused { first } = generation.cancel_to_nodes.take() {
        if first {
            tracing::warn!(
                %peer,
                node = target.node,
                rate = generation.config.server.cancel_rate,
                burst = generation.config.server.cancel_burst,
                "cancel requests arrive faster than server.cancel_rate; \
                 dropping them until the rate falls"
            );
        }
        return;
    }
    let _sending = frontend.cancels.sending(&target);
    // The session may have ended between the lookup and the mark above; its
    // node connection may then already serve another client, whom this
    // cancel must not reach. (A session forgets its key before it looks at
    // the marks: see `session::run`.)
    if frontend.cancels.lookup(&key).is_none() {
        tracing::debug!(%peer, "dropped a CancelRequest: its session ended meanwhile");
        return;
    }
    match generation.node_connector.send_cancel(&target).await {
        Ok(()) => tracing::info!(%peer, node = target.node, "forwarded a cancel request"),
        Err(e) => {
            tracing::warn!(%peer, node = target.node, error = e, "could not forward a cancel request")
        }
    }
}
