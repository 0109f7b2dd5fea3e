//! Cancel keys. Each client gets a BackendKeyData made up by sluice; the
//! registry maps it to the node and the node's real key, which never leaves
//! sluice. A CancelRequest arrives on a new connection, so the map is shared
//! by all sessions (a sharded DashMap: no global lock on connect or cancel).

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::protocol::startup::CancelKey;

/// Where a client's cancel must go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelTarget {
    pub node: String,
    pub key: CancelKey,
}

#[derive(Default)]
pub struct CancelRegistry {
    targets: DashMap<CancelKey, CancelTarget>,
}

impl CancelRegistry {
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
                // Positive, as PostgreSQL's process ids are; some clients print it.
                process_id: rand::random::<i32>() & i32::MAX,
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

    /// The target of a client's key, if it is one sluice handed out.
    pub fn lookup(&self, client_key: &CancelKey) -> Option<CancelTarget> {
        self.targets.get(client_key).map(|t| t.clone())
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
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.targets.remove(&self.client_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_targets_until_the_session_ends() {
        let registry = Arc::new(CancelRegistry::default());
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
}
