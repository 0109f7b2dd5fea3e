//! Nodes and the choice among them.
//!
//! A node is named by its address as written in the config. Its health is
//! written only by its health-check task; sessions read it when they choose
//! a node. The node list can be replaced by a reload: nodes that stay keep
//! their health, new ones join as healthy (the first check runs at once),
//! removed ones stop their check and take no new sessions, while sessions
//! already on them run on.
//!
//! An operator may pause a node from the admin console (`PAUSE NODE`): it
//! keeps its health check and its open sessions but takes no new ones, which
//! drains it for maintenance. The pause survives reloads while the node stays.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::idle::{IdleConnection, IdleConnections};
use super::pool::{Full, Slot, Slots};
use crate::metrics::{Metrics, NodeMetrics};

pub struct Node {
    addr: String,
    healthy: AtomicBool,
    /// Set by `PAUSE NODE`: no new sessions.
    paused: AtomicBool,
    /// Sessions currently relayed to this node.
    sessions: AtomicUsize,
    /// Sessions ever assigned, for tests and the admin console.
    assigned: AtomicU64,
    /// Stops this node's health check when the node leaves the config.
    retired: CancellationToken,
    metrics: NodeMetrics,
    /// Node connections between clients (see [`super::idle`]).
    idle: IdleConnections,
    /// The cap on its connections (see [`super::pool`]).
    slots: Slots,
}

impl Node {
    pub fn new(addr: impl Into<String>) -> Node {
        Node::with_metrics(addr, NodeMetrics::noop())
    }

    pub fn with_metrics(addr: impl Into<String>, metrics: NodeMetrics) -> Node {
        Node::sharing_waits(addr, metrics, Arc::default())
    }

    /// A node whose waiting sessions are woken by the other nodes' slots too.
    pub fn sharing_waits(
        addr: impl Into<String>,
        metrics: NodeMetrics,
        waits: Arc<super::pool::Waits>,
    ) -> Node {
        Node {
            addr: addr.into(),
            healthy: AtomicBool::new(true),
            paused: AtomicBool::new(false),
            metrics,
            sessions: AtomicUsize::new(0),
            assigned: AtomicU64::new(0),
            retired: CancellationToken::new(),
            idle: IdleConnections::default(),
            slots: Slots::sharing(waits),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records a health verdict; returns whether it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.metrics.set_healthy(healthy);
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Pauses or resumes the node; returns whether it changed.
    pub fn set_paused(&self, paused: bool) -> bool {
        self.paused.swap(paused, Ordering::Relaxed) != paused
    }

    /// Sessions ever assigned to this node.
    pub fn assigned(&self) -> u64 {
        self.assigned.load(Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    pub fn retired(&self) -> &CancellationToken {
        &self.retired
    }

    /// A kept connection for a client whose startup packet is `startup`.
    pub fn take_idle(
        &self,
        startup: &[u8],
        proven: bool,
        max_idle: Duration,
    ) -> Option<IdleConnection> {
        let taken = self.idle.take(startup, proven, max_idle);
        if taken.is_some() {
            self.metrics.connection_reused();
        }
        self.metrics.set_idle_connections(self.idle.len());
        taken
    }

    /// Keeps a reset connection for the next client that logs in the same way.
    /// Wakes a session waiting for this node's slots: it may take this
    /// connection, or close it for the slot.
    pub fn keep_idle(&self, connection: IdleConnection, capacity: usize, max_idle: Duration) {
        self.idle.put(connection, capacity, max_idle);
        self.slots.freed().notify_one();
        self.metrics.set_idle_connections(self.idle.len());
    }

    /// Closes kept connections: all of them, or those idle longer than `max_idle`.
    pub fn close_idle(&self, max_idle: Option<Duration>) {
        match max_idle {
            Some(max) => self.idle.expire(max),
            None => self.idle.clear(),
        }
        self.metrics.set_idle_connections(self.idle.len());
    }

    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// A place under the node's cap for a new connection: a free one, or
    /// one a kept connection gives up (the oldest, of whatever login).
    pub fn try_slot(&self) -> Result<Option<Slot>, Full> {
        loop {
            match self.slots.try_take() {
                Ok(slot) => return Ok(slot),
                Err(_) if self.idle.close_oldest() => {
                    self.metrics.set_idle_connections(self.idle.len());
                }
                Err(full) => return Err(full),
            }
        }
    }

    /// A session waits for this node's slots (until the guard drops).
    pub fn wait_for_slot(&self) -> WaitingHere<'_> {
        let waiting = self.slots.wait();
        self.metrics.set_pool_waiting(self.slots.waiting());
        WaitingHere {
            node: self,
            _waiting: waiting,
        }
    }

    /// How many connections are kept between clients.
    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// Counts a session on this node until the returned guard drops.
    pub fn attach(self: &Arc<Self>) -> Attached {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.assigned.fetch_add(1, Ordering::Relaxed);
        self.metrics.server_connection_opened();
        Attached(self.clone())
    }
}

/// A session waiting for a node's slots; the metric follows it.
pub struct WaitingHere<'a> {
    node: &'a Node,
    _waiting: super::pool::Waiting<'a>,
}

impl Drop for WaitingHere<'_> {
    fn drop(&mut self) {
        // `_waiting` is dropped after this: this session still counts.
        let left = self.node.slots.waiting().saturating_sub(1);
        self.node.metrics.set_pool_waiting(left);
    }
}

/// A session's hold on its node.
pub struct Attached(Arc<Node>);

impl Attached {
    pub fn node(&self) -> &Arc<Node> {
        &self.0
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.server_connection_closed();
    }
}

/// The configured nodes and the round-robin cursor.
#[derive(Default)]
pub struct NodeSet {
    nodes: RwLock<Arc<Vec<Arc<Node>>>>,
    next: AtomicUsize,
    /// Where joining nodes get their metric handles; none in unit tests.
    metrics: Option<Arc<Metrics>>,
    /// Sessions waiting for a connection, whichever node frees one.
    waits: Arc<super::pool::Waits>,
}

impl NodeSet {
    pub fn with_metrics(metrics: Arc<Metrics>) -> NodeSet {
        NodeSet {
            metrics: Some(metrics),
            ..NodeSet::default()
        }
    }

    /// The node with this address, if it is configured.
    pub fn find(&self, addr: &str) -> Option<Arc<Node>> {
        self.all().iter().find(|n| n.addr == addr).cloned()
    }

    /// The nodes now configured.
    pub fn all(&self) -> Arc<Vec<Arc<Node>>> {
        self.nodes.read().expect("node list lock").clone()
    }

    /// Replaces the node list; returns the nodes that joined (their health
    /// checks must be started). Removed nodes are retired.
    pub fn replace(&self, addrs: &[String]) -> Vec<Arc<Node>> {
        let mut guard = self.nodes.write().expect("node list lock");
        let old = guard.clone();
        let mut joined = Vec::new();
        let nodes: Vec<Arc<Node>> = addrs
            .iter()
            .map(|addr| match old.iter().find(|n| n.addr == *addr) {
                Some(n) => n.clone(),
                None => {
                    let metrics = match &self.metrics {
                        Some(m) => m.node(addr),
                        None => NodeMetrics::noop(),
                    };
                    let n = Arc::new(Node::sharing_waits(
                        addr.clone(),
                        metrics,
                        self.waits.clone(),
                    ));
                    joined.push(n.clone());
                    n
                }
            })
            .collect();
        for n in old.iter().filter(|n| !addrs.contains(&n.addr)) {
            n.retired.cancel();
            n.close_idle(None);
        }
        *guard = Arc::new(nodes);
        joined
    }

    /// Healthy, unpaused nodes in the order a new session should try them:
    /// round robin from a shared cursor, so consecutive sessions start on
    /// different nodes.
    pub fn candidates(&self) -> Vec<Arc<Node>> {
        let nodes = self.all();
        if nodes.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % nodes.len();
        (0..nodes.len())
            .map(|i| &nodes[(start + i) % nodes.len()])
            .filter(|n| n.is_healthy() && !n.is_paused())
            .cloned()
            .collect()
    }

    /// Sets every node's connection cap (`[pooling] max_node_connections`);
    /// called after every [`NodeSet::replace`].
    pub fn set_cap(&self, cap: Option<usize>) {
        for node in self.all().iter() {
            node.slots.set_cap(cap);
        }
    }

    pub fn healthy_count(&self) -> usize {
        self.all().iter().filter(|n| n.is_healthy()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn round_robin_skips_unhealthy_nodes() {
        let set = NodeSet::default();
        set.replace(&addrs(&["a:1", "b:1", "c:1"]));
        let firsts: Vec<String> = (0..6)
            .map(|_| set.candidates()[0].addr().to_string())
            .collect();
        assert_eq!(firsts, ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1"]);
        set.all()[1].set_healthy(false);
        for _ in 0..6 {
            let c = set.candidates();
            assert_eq!(c.len(), 2);
            assert!(c.iter().all(|n| n.addr() != "b:1"));
        }
    }

    #[test]
    fn replace_keeps_health_of_remaining_nodes_and_retires_removed_ones() {
        let set = NodeSet::default();
        let joined = set.replace(&addrs(&["a:1", "b:1"]));
        assert_eq!(joined.len(), 2);
        set.all()[0].set_healthy(false);
        let b = set.all()[1].clone();
        let joined = set.replace(&addrs(&["a:1", "c:1"]));
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].addr(), "c:1");
        assert!(!set.all()[0].is_healthy());
        assert!(b.retired().is_cancelled());
        assert_eq!(set.healthy_count(), 1);
    }

    #[test]
    fn a_paused_node_takes_no_new_sessions_until_resumed() {
        let set = NodeSet::default();
        set.replace(&addrs(&["a:1", "b:1"]));
        let a = set.find("a:1").unwrap();
        assert!(a.set_paused(true));
        assert!(!a.set_paused(true), "pausing twice changes nothing");
        for _ in 0..4 {
            let c = set.candidates();
            assert_eq!(c.len(), 1);
            assert_eq!(c[0].addr(), "b:1");
        }
        set.replace(&addrs(&["a:1", "b:1", "c:1"]));
        assert!(
            set.find("a:1").unwrap().is_paused(),
            "a reload keeps the pause"
        );
        a.set_paused(false);
        assert_eq!(set.candidates().len(), 3);
        assert!(set.find("z:1").is_none());
    }
}
