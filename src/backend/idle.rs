//! Node connections kept after their client left, for the next client that
//! logs in the same way.
//!
//! A client that connects for every query (scripts, `pgbench -C`, a BI
//! tool's connection test) costs the node a backend start and a login each
//! time, a few milliseconds of a warehouse core. PgBouncer's answer is a
//! server pool; sluice's is narrower, because sluice relays logins rather
//! than checking passwords itself: a node connection is kept only when the
//! node let its client in without asking for anything (AuthenticationOk
//! first), and it is handed only to a client whose startup packet is byte for
//! byte the same (user, database, options, application name). Such a client
//! would have been let in the same way by the node, from the same address
//! (sluice's). A connection the node authenticated by password or
//! certificate is never handed to anyone else.
//!
//! Before it is kept, the connection is reset with `DISCARD ALL` (see
//! `frontend::session`), and the next client gets the node's greeting as the
//! node first sent it: AuthenticationOk, the ParameterStatus messages,
//! BackendKeyData (the node's key, which the session maps to one of
//! sluice's), ReadyForQuery.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::pool::Slot;
use crate::net::Stream;

/// A node connection between clients.
pub struct IdleConnection {
    /// The startup packet it was opened with: who may have it next.
    pub startup: Bytes,
    /// What the node sent between the startup and the first ReadyForQuery.
    pub greeting: Bytes,
    pub stream: Stream,
    /// The node asked for a password when it was opened: only a client
    /// sluice authenticated itself may have it (see [`crate::auth`]).
    pub proven: bool,
    /// Its place under the node's cap.
    pub slot: Option<Slot>,
    /// Statements prepared on it by sessions pooled per transaction, by
    /// the names sluice gave them; empty after a reset.
    pub prepared: std::collections::HashSet<String>,
    since: Instant,
}

impl IdleConnection {
    pub fn new(startup: Bytes, greeting: Bytes, stream: Stream) -> IdleConnection {
        IdleConnection {
            startup,
            greeting,
            stream,
            proven: false,
            slot: None,
            prepared: Default::default(),
            since: Instant::now(),
        }
    }
}

/// One node's kept connections, oldest first.
#[derive(Default)]
pub struct IdleConnections {
    kept: Mutex<VecDeque<IdleConnection>>,
}

impl IdleConnections {
    /// A kept connection opened with `startup`, newest first (the least
    /// likely to have been closed by the node meanwhile). Connections older
    /// than `max_idle` are closed on the way.
    /// `proven`: the client was authenticated by sluice, and may have a
    /// connection the node let in by password.
    pub fn take(&self, startup: &[u8], proven: bool, max_idle: Duration) -> Option<IdleConnection> {
        let mut kept = self.kept.lock().expect("idle connections lock");
        expire(&mut kept, max_idle);
        while let Some(i) = kept
            .iter()
            .rposition(|c| c.startup == startup && (proven || !c.proven))
        {
            let connection = kept.remove(i)?;
            // The node may have closed it meanwhile (restart, idle timeout).
            if connection.stream.is_quiet() {
                return Some(connection);
            }
        }
        None
    }

    /// Keeps a connection, closing the oldest one beyond `capacity`.
    pub fn put(&self, connection: IdleConnection, capacity: usize, max_idle: Duration) {
        if capacity == 0 {
            return;
        }
        let mut kept = self.kept.lock().expect("idle connections lock");
        expire(&mut kept, max_idle);
        while kept.len() >= capacity {
            kept.pop_front();
        }
        kept.push_back(connection);
    }

    /// Closes connections kept longer than `max_idle`.
    pub fn expire(&self, max_idle: Duration) {
        expire(
            &mut self.kept.lock().expect("idle connections lock"),
            max_idle,
        );
    }

    /// Closes the oldest kept connection, giving back its slot; false when
    /// none is kept.
    pub fn close_oldest(&self) -> bool {
        self.kept
            .lock()
            .expect("idle connections lock")
            .pop_front()
            .is_some()
    }

    /// Closes every kept connection (the node went down or left the config).
    pub fn clear(&self) {
        self.kept.lock().expect("idle connections lock").clear();
    }

    pub fn len(&self) -> usize {
        self.kept.lock().expect("idle connections lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn expire(kept: &mut VecDeque<IdleConnection>, max_idle: Duration) {
    while kept.front().is_some_and(|c| c.since.elapsed() >= max_idle) {
        kept.pop_front();
    }
}
