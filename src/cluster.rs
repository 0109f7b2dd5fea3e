//! Several sluice instances acting as one proxy: forwarding a CancelRequest
//! to the peers when another instance holds the session.
//!
//! Which requests are forwarded is [`crate::cancel::CancelRegistry::route`]'s
//! decision; this module does the sending. Every entry of `[cluster] peers`
//! is resolved on each forward (a headless Service name resolves to every
//! pod), our own addresses are skipped, and the same 16-byte request (with
//! the forwarded bit set) goes to every address at once: the instance that
//! made the key cancels, the others drop it. A token bucket bounds how many
//! requests are forwarded, so a flood of made-up keys cannot turn into a
//! flood of connections between instances.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::config::Cluster;
use crate::protocol::startup::CancelKey;

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

struct BucketState {
    tokens: f64,
    at: Instant,
    refusing: bool,
}

/// The answer of [`TokenBucket::take`].
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    Granted,
    /// No token; `first` is true for the first refusal after a grant, so
    /// that a flood is logged once, not once per request.
    Refused {
        first: bool,
    },
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            state: Mutex::new(BucketState {
                tokens: f64::from(burst),
                at: Instant::now(),
                refusing: false,
            }),
        }
    }

    pub fn take(&self) -> Take {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Take {
        // A std Mutex: a few arithmetic operations, never held across an await.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.rate).min(self.burst);
        s.at = now.max(s.at);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            s.refusing = false;
            Take::Granted
        } else {
            let first = !s.refusing;
            s.refusing = true;
            Take::Refused { first }
        }
    }
}

/// The addresses a forward goes to: every peer entry resolved, without the
/// addresses in `own` (this instance's listener and the address the request
/// came in on), each once. Entries that do not resolve are logged and skipped.
pub async fn peer_addresses(cluster: &Cluster, own: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut addrs = BTreeSet::new();
    for peer in &cluster.peers {
        let resolved = tokio::time::timeout(
            cluster.cancel_forward_timeout,
            tokio::net::lookup_host(peer.as_str()),
        )
        .await;
        match resolved {
            Ok(Ok(found)) => addrs.extend(found.filter(|a| !is_own(a, own))),
            Ok(Err(e)) => tracing::warn!(peer, error = %e, "cannot resolve a cluster peer"),
            Err(_) => tracing::warn!(peer, "resolving a cluster peer timed out"),
        }
    }
    addrs.into_iter().collect()
}

fn is_own(addr: &SocketAddr, own: &[SocketAddr]) -> bool {
    own.iter().any(|o| {
        o == addr
            // Listening on 0.0.0.0:5433 makes 127.0.0.1:5433 ours too.
            || (o.ip().is_unspecified() && o.port() == addr.port() && addr.ip().is_loopback())
    })
}

/// Sends the (already marked) CancelRequest to every peer address at once and
/// waits until each has closed the connection or the timeout passed. Returns
/// how many peers took it.
pub async fn forward_cancel(cluster: &Cluster, own: &[SocketAddr], key: &CancelKey) -> usize {
    let addrs = peer_addresses(cluster, own).await;
    if addrs.is_empty() {
        tracing::warn!(
            peers = ?cluster.peers,
            "no cluster peer address to forward a cancel request to"
        );
        return 0;
    }
    let packet = key.cancel_request();
    let timeout = cluster.cancel_forward_timeout;
    let mut sends = JoinSet::new();
    for addr in addrs {
        let packet = packet.clone();
        sends.spawn(async move {
            let sent = tokio::time::timeout(timeout, async {
                let mut tcp = TcpStream::connect(addr).await?;
                tcp.write_all(&packet).await?;
                // The peer closes once it has passed the cancel on to its
                // node; waiting for that keeps the cancel ahead of the client.
                let mut sink = [0u8; 16];
                let _ = tcp.read(&mut sink).await;
                Ok::<_, std::io::Error>(())
            })
            .await;
            match sent {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(%addr, error = %e, "could not forward a cancel request to a peer");
                    false
                }
                Err(_) => {
                    tracing::warn!(%addr, ?timeout, "forwarding a cancel request to a peer timed out");
                    false
                }
            }
        });
    }
    let mut reached = 0;
    while let Some(done) = sends.join_next().await {
        reached += usize::from(done.unwrap_or(false));
    }
    reached
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let bucket = TokenBucket::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(bucket.take_at(t0), Take::Granted);
        }
        assert_eq!(bucket.take_at(t0), Take::Refused { first: true });
        assert_eq!(bucket.take_at(t0), Take::Refused { first: false });
        // 10 a second: one token per 100 ms.
        assert_eq!(
            bucket.take_at(t0 + Duration::from_millis(50)),
            Take::Refused { first: false }
        );
        assert_eq!(
            bucket.take_at(t0 + Duration::from_millis(110)),
            Take::Granted
        );
        assert_eq!(
            bucket.take_at(t0 + Duration::from_millis(120)),
            Take::Refused { first: true }
        );
        // A long quiet spell refills to the burst, no more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take_at(later), Take::Granted);
        }
        assert!(matches!(bucket.take_at(later), Take::Refused { .. }));
    }

    fn cluster(peers: &[&str]) -> Cluster {
        Cluster {
            instance_id: 1,
            peers: peers.iter().map(|p| p.to_string()).collect(),
            cancel_forward_rate: 100,
            cancel_forward_burst: 100,
            cancel_forward_timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn peers_resolve_to_every_address_but_our_own() {
        let own: SocketAddr = "127.0.0.1:6001".parse().unwrap();
        let c = cluster(&["127.0.0.1:6001", "127.0.0.1:6002", "localhost:6003"]);
        let addrs = peer_addresses(&c, &[own]).await;
        assert!(!addrs.contains(&own), "{addrs:?}");
        assert!(addrs.contains(&"127.0.0.1:6002".parse().unwrap()));
        assert!(addrs.iter().any(|a| a.port() == 6003), "{addrs:?}");

        let any: SocketAddr = "0.0.0.0:6002".parse().unwrap();
        let addrs = peer_addresses(&c, &[any]).await;
        assert!(addrs.iter().all(|a| a.port() != 6002), "{addrs:?}");
    }
}
