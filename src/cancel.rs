//! Cancel keys. Each client gets a BackendKeyData made up by sluice; the
//! registry maps it to the node and the node's real key, which never leaves
//! sluice. A CancelRequest arrives on a new connection, so the map is shared
//! by all sessions (a sharded DashMap: no global lock on connect or cancel).
//!
//! Behind a load balancer the CancelRequest may reach another sluice
//! instance than the one holding the session, so the process id of every key
//! says which instance made it:
//!
//! ```text
//! bit 31      30          29..22        21..0
//!     0       forwarded   instance id   random
//! ```
//!
//! Bit 31 stays clear (PostgreSQL's process ids are positive and some clients
//! print them). An instance that gets a key it does not hold and that another
//! instance made sets the *forwarded* bit and sends the request to its peers
//! ([`crate::cluster`]); a key with that bit set is never forwarded again, so
//! requests cannot loop however many instances there are. [`CancelRegistry::route`]
//! makes that decision without I/O.
//!
//! The registry also knows which cancels are still on their way to a node
//! ([`CancelRegistry::sending`]). PostgreSQL signals the backend twice for
//! one CancelRequest (its process, then its process group), from a child
//! process that a busy machine may pause between the two: the second signal
//! can cancel the *next* query on that connection. A node connection with a
//! cancel on its way is therefore not kept for another client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::protocol::startup::CancelKey;

/// The highest `[cluster] instance_id`: the id takes 8 bits of the process id.
pub const MAX_INSTANCE_ID: u8 = 255;
const INSTANCE_SHIFT: u32 = 22;
const RANDOM_BITS: i32 = (1 << INSTANCE_SHIFT) - 1;
const FORWARDED_BIT: i32 = 1 << 30;

/// The id of the instance that made `key`; 0 names no instance (a key
/// sluice did not make, e.g. a node's own).
pub fn instance_of(key: &CancelKey) -> u8 {
    ((key.process_id & !FORWARDED_BIT) >> INSTANCE_SHIFT) as u8
}

/// Whether a peer already forwarded this request.
pub fn is_forwarded(key: &CancelKey) -> bool {
    key.process_id & FORWARDED_BIT != 0
}

/// The key as an instance forwards it: the same, with the forwarded bit set.
pub fn forwarded(key: &CancelKey) -> CancelKey {
    CancelKey {
        process_id: key.process_id | FORWARDED_BIT,
        secret: key.secret.clone(),
    }
}

/// What to do with a CancelRequest.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelRoute {
    /// This instance holds the session: cancel on its node.
    Node(CancelTarget),
    /// Another instance made the key: send it to the peers, marked forwarded.
    Peers(CancelKey),
    /// Nobody to tell; the reason is for the debug log.
    Drop(&'static str),
}

/// Where a client's cancel must go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CancelTarget {
    pub node: String,
    pub key: CancelKey,
}

pub struct CancelRegistry {
    instance_id: u8,
    targets: DashMap<CancelKey, CancelTarget>,
    /// Cancels being sent, by target: few and short-lived, so one lock.
    sending: Mutex<HashMap<CancelTarget, usize>>,
}

impl CancelRegistry {
    /// A registry whose keys carry `instance_id` (1..=[`MAX_INSTANCE_ID`]).
    pub fn new(instance_id: u8) -> CancelRegistry {
        assert!(instance_id > 0, "instance ids start at 1");
        CancelRegistry {
            instance_id,
            targets: DashMap::new(),
            sending: Mutex::new(HashMap::new()),
        }
    }

    pub fn instance_id(&self) -> u8 {
        self.instance_id
    }

    /// Makes up a client key standing for `node_key` on `node`. The mapping
    /// lives as long as the returned registration.
    pub fn register(self: &Arc<Self>, node: &str, node_key: CancelKey) -> Registration {
        let target = CancelTarget {
            node: node.to_string(),
            key: node_key,
        };
        loop {
            let mut secret = vec![0u8; target.key.secret.len()];
            rand::fill(&mut secret[..]);
            let client_key = CancelKey {
                process_id: (i32::from(self.instance_id) << INSTANCE_SHIFT)
                    | (rand::random::<i32>() & RANDOM_BITS),
                secret: Bytes::from(secret),
            };
            if let Entry::Vacant(slot) = self.targets.entry(client_key.clone()) {
                slot.insert(target);
                return Registration {
                    registry: self.clone(),
                    client_key,
                };
            }
        }
    }

    /// A client key for a session that starts without a node: it stands
    /// for nothing until [`Registration::resume`].
    pub fn register_detached(self: &Arc<Self>) -> Registration {
        let placeholder = CancelKey {
            process_id: 0,
            secret: Bytes::from_static(&[0; 4]),
        };
        let registration = self.register("", placeholder);
        registration.suspend();
        registration
    }

    /// The target of a client's key, if this instance handed it out and
    /// its session is open. The forwarded bit does not matter here.
    pub fn lookup(&self, client_key: &CancelKey) -> Option<CancelTarget> {
        if is_forwarded(client_key) {
            let own = CancelKey {
                process_id: client_key.process_id & !FORWARDED_BIT,
                secret: client_key.secret.clone(),
            };
            return self.targets.get(&own).map(|t| t.clone());
        }
        self.targets.get(client_key).map(|t| t.clone())
    }

    /// Decides where a CancelRequest goes; `has_peers` says whether any
    /// peer is configured.
    pub fn route(&self, key: &CancelKey, has_peers: bool) -> CancelRoute {
        if let Some(target) = self.lookup(key) {
            return CancelRoute::Node(target);
        }
        let owner = instance_of(key);
        if owner == self.instance_id {
            return CancelRoute::Drop("this instance made the key, but no open session has it");
        }
        if owner == 0 {
            return CancelRoute::Drop("the key was not made by any sluice instance");
        }
        if is_forwarded(key) {
            return CancelRoute::Drop("a peer forwarded it and this instance does not hold it");
        }
        if !has_peers {
            return CancelRoute::Drop("another instance made the key and no peers are configured");
        }
        CancelRoute::Peers(forwarded(key))
    }

    /// Marks a cancel to `target` as on its way until the returned guard
    /// drops: hold it until the node has closed the cancel connection (its
    /// signals are sent by then).
    pub fn sending(self: &Arc<Self>, target: &CancelTarget) -> Sending {
        *self
            .sending
            .lock()
            .expect("cancel lock")
            .entry(target.clone())
            .or_default() += 1;
        Sending {
            registry: self.clone(),
            target: target.clone(),
        }
    }

    /// Whether a cancel to `target` is on its way (see the module's notes).
    pub fn is_sending(&self, target: &CancelTarget) -> bool {
        self.sending
            .lock()
            .expect("cancel lock")
            .contains_key(target)
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// A session's entry in the registry; dropping it forgets the key.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    client_key: CancelKey,
}

impl Registration {
    pub fn client_key(&self) -> &CancelKey {
        &self.client_key
    }

    /// The session detached from its node: a cancel with this key finds
    /// nothing to cancel (and is not forwarded: this instance made it).
    pub fn suspend(&self) {
        self.registry.targets.remove(&self.client_key);
    }

    /// The session has a node connection again: the same client key now
    /// stands for this one.
    pub fn resume(&self, node: &str, node_key: CancelKey) {
        self.registry.targets.insert(
            self.client_key.clone(),
            CancelTarget {
                node: node.to_string(),
                key: node_key,
            },
        );
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.targets.remove(&self.client_key);
    }
}

/// A cancel on its way to a node; dropping it says it arrived (or failed).
pub struct Sending {
    registry: Arc<CancelRegistry>,
    target: CancelTarget,
}

impl Drop for Sending {
    fn drop(&mut self) {
        let mut sending = self.registry.sending.lock().expect("cancel lock");
        if let Some(n) = sending.get_mut(&self.target) {
            *n -= 1;
            if *n == 0 {
                sending.remove(&self.target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_targets_until_the_session_ends() {
        let registry = Arc::new(CancelRegistry::new(1));
        let node_key = CancelKey {
            process_id: 1234,
            secret: Bytes::from_static(b"abcd"),
        };
        let reg = registry.register("127.0.0.1:5441", node_key.clone());
        let client_key = reg.client_key().clone();
        assert_ne!(client_key, node_key);
        assert_eq!(client_key.secret.len(), 4);
        assert_eq!(registry.lookup(&client_key).unwrap().key, node_key);
        let forged = CancelKey {
            process_id: client_key.process_id,
            secret: Bytes::from_static(b"zzzz"),
        };
        assert_eq!(registry.lookup(&forged), None);
        drop(reg);
        assert!(registry.lookup(&client_key).is_none());
        assert!(registry.is_empty());
    }

    #[test]
    fn a_cancel_is_on_its_way_until_its_guard_drops() {
        let registry = Arc::new(CancelRegistry::new(1));
        let target = CancelTarget {
            node: "n:1".into(),
            key: node_key(),
        };
        assert!(!registry.is_sending(&target));
        let first = registry.sending(&target);
        let second = registry.sending(&target);
        assert!(registry.is_sending(&target));
        drop(first);
        assert!(registry.is_sending(&target), "one is still on its way");
        drop(second);
        assert!(!registry.is_sending(&target));
    }

    fn node_key() -> CancelKey {
        CancelKey {
            process_id: 4321,
            secret: Bytes::from_static(b"wxyz"),
        }
    }

    #[test]
    fn keys_carry_the_instance_id_and_stay_positive() {
        for id in [1, 2, 77, MAX_INSTANCE_ID] {
            let registry = Arc::new(CancelRegistry::new(id));
            for _ in 0..200 {
                let reg = registry.register("n:1", node_key());
                let key = reg.client_key();
                assert!(key.process_id > 0, "{key:?}");
                assert_eq!(instance_of(key), id);
                assert!(!is_forwarded(key));
                let fwd = forwarded(key);
                assert!(fwd.process_id > 0);
                assert_eq!(instance_of(&fwd), id);
                assert!(is_forwarded(&fwd));
            }
        }
    }

    #[test]
    fn routing_cancels_own_keys_forwards_others_once_and_drops_the_rest() {
        let a = Arc::new(CancelRegistry::new(1));
        let b = Arc::new(CancelRegistry::new(2));
        let reg = a.register("node:5432", node_key());
        let key = reg.client_key().clone();

        // On the instance that holds it, plain or forwarded: cancel on the node.
        let CancelRoute::Node(target) = a.route(&key, true) else {
            panic!("own key is cancelled locally");
        };
        assert_eq!(target.key, node_key());
        assert!(matches!(
            a.route(&forwarded(&key), true),
            CancelRoute::Node(_)
        ));

        // On another instance: forwarded once, marked, and never again.
        assert_eq!(b.route(&key, true), CancelRoute::Peers(forwarded(&key)));
        assert!(matches!(b.route(&key, false), CancelRoute::Drop(_)));
        assert!(matches!(
            b.route(&forwarded(&key), true),
            CancelRoute::Drop(_)
        ));

        // A forged secret with A's id: B forwards it, A drops it.
        let forged = CancelKey {
            process_id: key.process_id,
            secret: Bytes::from_static(b"0000"),
        };
        let CancelRoute::Peers(sent) = b.route(&forged, true) else {
            panic!("B cannot tell a forged key from a real one");
        };
        assert!(matches!(a.route(&sent, true), CancelRoute::Drop(_)));
        assert!(matches!(a.route(&forged, true), CancelRoute::Drop(_)));

        // Keys no instance made, and keys of a session that ended.
        assert!(matches!(a.route(&node_key(), true), CancelRoute::Drop(_)));
        drop(reg);
        assert!(matches!(a.route(&key, true), CancelRoute::Drop(_)));
    }
}
