//! The `[cluster]` section: several sluice instances behind one load
//! balancer, and this instance's id.

use std::time::Duration;

use toml::Spanned;

use super::warehouse::node_address_problem;
use super::{Validator, raw};

/// Several sluice instances behind one load balancer, acting as one proxy.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// This instance's id (1..=[`crate::cancel::MAX_INSTANCE_ID`]), encoded
    /// in every cancel key it hands out.
    pub instance_id: u8,
    /// The other instances, `host:port`; a name may resolve to several addresses.
    pub peers: Vec<String>,
    /// Cancel requests forwarded to peers per second, on average.
    pub cancel_forward_rate: u32,
    /// How many may be forwarded at once after a quiet spell.
    pub cancel_forward_burst: u32,
    pub cancel_forward_timeout: Duration,
}

impl Validator<'_> {
    pub(super) fn cluster(&mut self, raw: raw::RawCluster) -> Option<Cluster> {
        let max_id = crate::cancel::MAX_INSTANCE_ID as i64;
        let key = "cluster.instance_id";
        let span = raw.instance_id.span();
        let number = match raw.instance_id.get_ref() {
            raw::RawInstanceId::Number(n) => Some(*n),
            raw::RawInstanceId::Text(t) if t == "hostname" => {
                let host = hostname();
                match ordinal_instance_id(&host) {
                    Some(n) => Some(n),
                    None => {
                        self.problem(
                            span.clone(),
                            key,
                            format!(
                                "\"hostname\" takes the number after the last '-' of the host name \
                                 (StatefulSet pod \"sluice-0\" is instance 1), but the host name is {host:?}"
                            ),
                        );
                        None
                    }
                }
            }
            raw::RawInstanceId::Text(t) => {
                self.problem(
                    span.clone(),
                    key,
                    format!("{t:?} is neither a number (1-{max_id}) nor \"hostname\""),
                );
                None
            }
        };
        let instance_id =
            number.and_then(|n| self.count(key, &Spanned::new(span.clone(), n), 1, max_id));
        let mut peers: Vec<String> = Vec::new();
        let mut peers_ok = true;
        for (i, peer) in raw.peers.iter().enumerate() {
            let key = format!("cluster.peers[{i}]");
            match node_address_problem(peer.get_ref()) {
                Some(why) => {
                    self.problem(peer.span(), &key, why);
                    peers_ok = false;
                }
                None if peers.contains(peer.get_ref()) => {
                    self.problem(
                        peer.span(),
                        &key,
                        format!("{:?} is listed twice", peer.get_ref()),
                    );
                    peers_ok = false;
                }
                None => peers.push(peer.get_ref().clone()),
            }
        }
        let rate = self.count(
            "cluster.cancel_forward_rate",
            &raw.cancel_forward_rate,
            1,
            1_000_000,
        );
        let burst = self.count(
            "cluster.cancel_forward_burst",
            &raw.cancel_forward_burst,
            1,
            1_000_000,
        );
        let timeout = self.duration(
            "cluster.cancel_forward_timeout",
            &raw.cancel_forward_timeout,
        );
        if !peers_ok {
            return None;
        }
        Some(Cluster {
            instance_id: instance_id? as u8,
            peers,
            cancel_forward_rate: rate? as u32,
            cancel_forward_burst: burst? as u32,
            cancel_forward_timeout: timeout?,
        })
    }
}

/// This machine's host name (a pod's name in Kubernetes).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it or truncates, and we stop at the first NUL either way.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The instance id of a StatefulSet pod: its ordinal plus one.
fn ordinal_instance_id(host: &str) -> Option<i64> {
    let (_, ordinal) = host.rsplit_once('-')?;
    ordinal.parse::<i64>().ok().map(|n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

    #[test]
    fn cluster_keys_are_checked() {
        let c = parse("[warehouse]\nnodes = [\"a:1\"]\n").unwrap();
        assert_eq!(c.cluster.instance_id, 1);
        assert!(c.cluster.peers.is_empty());
        assert!(c.server.watch_config);
        let c = parse(
            "[warehouse]\nnodes = [\"a:1\"]\n[cluster]\ninstance_id = 2\npeers = [\"sluice.ns.svc:5433\", \"10.0.0.1:5433\"]\n",
        )
        .unwrap();
        assert_eq!(c.cluster.instance_id, 2);
        assert_eq!(c.cluster.peers.len(), 2);
        let err = parse(
            "[warehouse]\nnodes = [\"a:1\"]\n[cluster]\ninstance_id = 0\npeers = [\"b\"]\ncancel_forward_rate = 0\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(":4: cluster.instance_id: must be between 1 and 255, not 0"),
            "{text}"
        );
        assert!(
            text.contains(":5: cluster.peers[0]: \"b\" has no port"),
            "{text}"
        );
        assert!(text.contains(":6: cluster.cancel_forward_rate:"), "{text}");
    }

    #[test]
    fn instance_ids_can_come_from_a_statefulset_pod_name() {
        assert_eq!(ordinal_instance_id("sluice-0"), Some(1));
        assert_eq!(ordinal_instance_id("my-sluice-12"), Some(13));
        assert_eq!(ordinal_instance_id("sluice-7d9f8-abcde"), None);
        assert_eq!(ordinal_instance_id("sluice"), None);
        let err = parse("[warehouse]\nnodes = [\"a:1\"]\n[cluster]\ninstance_id = \"two\"\n")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains(":4: cluster.instance_id: \"two\" is neither"),
            "{err}"
        );
    }
}
