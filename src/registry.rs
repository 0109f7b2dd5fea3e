//! The sessions now open, for the admin console: who is connected where, in
//! what state, and a token that ends one session (`KILL CLIENT id`).
//!
//! A sharded DashMap, like the cancel registry: sessions register and leave
//! without a global lock. An entry lives as long as its [`SessionGuard`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::SystemTime;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::protocol::backend::TransactionStatus;
use crate::protocol::startup::ClientDialect;

/// What a session is doing, as `SHOW CLIENTS` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Logging in to its node.
    Startup = 0,
    Idle = 1,
    /// A query is running.
    Active = 2,
    IdleInTransaction = 3,
    /// In a transaction that failed; waiting for ROLLBACK.
    IdleInFailedTransaction = 4,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Startup => "startup",
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::IdleInTransaction => "idle in transaction",
            ClientState::IdleInFailedTransaction => "idle in transaction (aborted)",
        }
    }

    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Idle,
            2 => ClientState::Active,
            3 => ClientState::IdleInTransaction,
            4 => ClientState::IdleInFailedTransaction,
            _ => ClientState::Startup,
        }
    }

    pub fn after_ready_for_query(status: TransactionStatus) -> ClientState {
        match status {
            TransactionStatus::Idle => ClientState::Idle,
            TransactionStatus::InTransaction => ClientState::IdleInTransaction,
            TransactionStatus::Failed => ClientState::IdleInFailedTransaction,
        }
    }
}

/// One open session.
pub struct SessionEntry {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub application: String,
    pub peer: SocketAddr,
    /// The node it is attached to, and how it holds it (see
    /// [`crate::frontend::pooled`]): changes when the session detaches.
    attachment: std::sync::Mutex<(String, String)>,
    pub connected_at: SystemTime,
    state: AtomicU8,
    /// The client's protocol dialect: 0 PostgreSQL, 1 Vertica.
    dialect: AtomicU8,
    /// Cancelled by `KILL CLIENT`; a child of sluice's kill token, so
    /// shutdown ends the session through the same path.
    pub token: CancellationToken,
}

/// Resolves when a session is killed (`KILL CLIENT`, shutdown).
///
/// A relay polls it on every wake-up, beside its two directions. Polling a
/// `CancellationToken`'s future takes two locks each time; this one is a
/// oneshot receiver, fed by a small task that waits on the token.
pub struct KillSignal {
    killed: tokio::sync::oneshot::Receiver<()>,
    forwarder: tokio::task::AbortHandle,
}

impl KillSignal {
    pub fn new(token: CancellationToken) -> KillSignal {
        let (tx, killed) = tokio::sync::oneshot::channel();
        let forwarder = tokio::spawn(async move {
            token.cancelled().await;
            let _ = tx.send(());
        })
        .abort_handle();
        KillSignal { killed, forwarder }
    }
}

impl std::future::Future for KillSignal {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.killed).poll(cx).map(|_| ())
    }
}

impl Drop for KillSignal {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

impl SessionEntry {
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Records the client's dialect (PostgreSQL unless told otherwise).
    pub fn set_dialect(&self, dialect: ClientDialect) {
        let v = match dialect {
            ClientDialect::Postgres => 0,
            ClientDialect::Vertica => 1,
        };
        self.dialect.store(v, Ordering::Relaxed);
    }

    /// The node, empty while detached.
    pub fn node(&self) -> String {
        self.attachment.lock().expect("attachment lock").0.clone()
    }

    /// How the session holds its node connection: `pinned (...)`,
    /// `attached`, `detached`.
    pub fn pooling(&self) -> String {
        self.attachment.lock().expect("attachment lock").1.clone()
    }

    pub fn set_attachment(&self, node: &str, pooling: &str) {
        let mut a = self.attachment.lock().expect("attachment lock");
        a.0.clear();
        a.0.push_str(node);
        a.1.clear();
        a.1.push_str(pooling);
    }

    pub fn dialect(&self) -> ClientDialect {
        match self.dialect.load(Ordering::Relaxed) {
            1 => ClientDialect::Vertica,
            _ => ClientDialect::Postgres,
        }
    }
}

/// What a session tells the registry about itself.
pub struct NewSession<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub application: &'a str,
    pub peer: SocketAddr,
    pub node: &'a str,
}

#[derive(Default)]
pub struct SessionRegistry {
    sessions: DashMap<u64, Arc<SessionEntry>>,
    next_id: AtomicU64,
}

impl SessionRegistry {
    /// Registers a session; it leaves the registry when the guard drops.
    pub fn register(
        self: &Arc<Self>,
        s: NewSession<'_>,
        parent: &CancellationToken,
    ) -> SessionGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(SessionEntry {
            id,
            user: s.user.to_string(),
            database: s.database.to_string(),
            application: s.application.to_string(),
            peer: s.peer,
            attachment: std::sync::Mutex::new((
                s.node.to_string(),
                "pinned (passthrough login)".into(),
            )),
            connected_at: SystemTime::now(),
            state: AtomicU8::new(ClientState::Startup as u8),
            dialect: AtomicU8::new(0),
            token: parent.child_token(),
        });
        self.sessions.insert(id, entry.clone());
        SessionGuard {
            registry: self.clone(),
            entry,
        }
    }

    /// Open sessions, by id.
    pub fn list(&self) -> Vec<Arc<SessionEntry>> {
        let mut v: Vec<_> = self.sessions.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|e| e.id);
        v
    }

    /// Ends a session; false when no session has this id.
    pub fn kill(&self, id: u64) -> bool {
        match self.sessions.get(&id) {
            Some(e) => {
                e.token.cancel();
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// A session's place in the registry.
pub struct SessionGuard {
    registry: Arc<SessionRegistry>,
    entry: Arc<SessionEntry>,
}

impl SessionGuard {
    pub fn entry(&self) -> &Arc<SessionEntry> {
        &self.entry
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_register_list_and_leave() {
        let registry = Arc::new(SessionRegistry::default());
        let kill = CancellationToken::new();
        let new = |user| NewSession {
            user,
            database: "db",
            application: "psql",
            peer: "127.0.0.1:1".parse().unwrap(),
            node: "n:1",
        };
        let a = registry.register(new("alice"), &kill);
        let b = registry.register(new("bob"), &kill);
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.list()[0].user, "alice");
        b.entry().set_state(ClientState::Active);
        assert_eq!(registry.list()[1].state(), ClientState::Active);
        assert!(registry.kill(a.entry().id));
        assert!(a.entry().token.is_cancelled());
        assert!(!b.entry().token.is_cancelled());
        assert!(!registry.kill(999));
        drop(a);
        assert_eq!(registry.len(), 1);
        kill.cancel();
        assert!(
            b.entry().token.is_cancelled(),
            "shutdown reaches every session"
        );
    }
}
