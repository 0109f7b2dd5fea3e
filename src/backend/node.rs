//! Nodes and the choice among them.
//!
//! A node is named by its address as written in the config. Its health is
//! written only by its health-check task; sessions read it when they choose
//! a node. The node list can be replaced by a reload: nodes that stay keep
//! their health, new ones join as healthy (the first check runs at once),
//! removed ones stop their check and take no new sessions, while sessions
//! already on them run on.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

pub struct Node {
    addr: String,
    healthy: AtomicBool,
    /// Sessions currently relayed to this node.
    sessions: AtomicUsize,
    /// Sessions ever assigned, for tests and the admin console.
    assigned: AtomicU64,
    /// Stops this node's health check when the node leaves the config.
    retired: CancellationToken,
}

impl Node {
    pub fn new(addr: impl Into<String>) -> Node {
        Node {
            addr: addr.into(),
            healthy: AtomicBool::new(true),
            sessions: AtomicUsize::new(0),
            assigned: AtomicU64::new(0),
            retired: CancellationToken::new(),
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
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    pub fn retired(&self) -> &CancellationToken {
        &self.retired
    }

    /// Counts a session on this node until the returned guard drops.
    pub fn attach(self: &Arc<Self>) -> Attached {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.assigned.fetch_add(1, Ordering::Relaxed);
        Attached(self.clone())
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
    }
}

/// The configured nodes and the round-robin cursor.
#[derive(Default)]
pub struct NodeSet {
    nodes: RwLock<Arc<Vec<Arc<Node>>>>,
    next: AtomicUsize,
}

impl NodeSet {
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
                    let n = Arc::new(Node::new(addr.clone()));
                    joined.push(n.clone());
                    n
                }
            })
            .collect();
        for n in old.iter().filter(|n| !addrs.contains(&n.addr)) {
            n.retired.cancel();
        }
        *guard = Arc::new(nodes);
        joined
    }

    /// Healthy nodes in the order a new session should try them: round robin
    /// from a shared cursor, so consecutive sessions start on different nodes.
    pub fn candidates(&self) -> Vec<Arc<Node>> {
        let nodes = self.all();
        if nodes.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % nodes.len();
        (0..nodes.len())
            .map(|i| &nodes[(start + i) % nodes.len()])
            .filter(|n| n.is_healthy())
            .cloned()
            .collect()
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
}
