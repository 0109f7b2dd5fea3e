//! The `[server]` section: the client listener, its limits and its TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Validator, raw};

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// HTTP listener for /healthz, /readyz and /metrics; `None` when set to "".
    pub metrics_listen: Option<SocketAddr>,
    pub max_client_connections: usize,
    /// Threads relaying sessions (read at start only); see [`Server::threads`].
    pub worker_threads: usize,
    /// Sessions one user may hold at once; `None`: only the total limit applies.
    pub max_client_connections_per_user: Option<usize>,
    pub drain_timeout: Duration,
    pub startup_timeout: Duration,
    pub max_message_size: usize,
    pub max_startup_packet_size: usize,
    pub max_startup_parameters: usize,
    /// Reload when the file (or a file it names) changes, checked every `watch_interval`.
    pub watch_config: bool,
    pub watch_interval: Duration,
    /// CancelRequests forwarded to nodes per second, on average, and at once
    /// after a quiet spell: a flood cannot exhaust connections to the nodes.
    pub cancel_rate: u32,
    pub cancel_burst: u32,
    pub tls: Option<ServerTls>,
}

impl Server {
    /// The relay's thread count: `worker_threads`, or when 0, a quarter of
    /// the cores (at least one). A proxy's work is mostly system calls
    /// waking other processes; on a small machine it shares the cores with
    /// the warehouse and the clients, and one thread spends less CPU per
    /// query than several that hand sessions to each other (measured in
    /// docs/benchmarks.md).
    pub fn threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).max(1)),
            n => n,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTlsMode {
    /// Answer SSLRequest with 'N'.
    Disable,
    /// Offer TLS; plaintext clients are served too.
    Prefer,
    /// Refuse clients that do not ask for TLS.
    Require,
}

#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub mode: ClientTlsMode,
}

impl Validator<'_> {
    pub(super) fn server(&mut self, raw: raw::RawServer) -> Option<Server> {
        let listen = self.socket_addr("server.listen", &raw.listen);
        let metrics_listen = if raw.metrics_listen.get_ref().is_empty() {
            Some(None)
        } else {
            self.socket_addr("server.metrics_listen", &raw.metrics_listen)
                .map(Some)
        };
        let worker_threads = self.count("server.worker_threads", &raw.worker_threads, 0, 1024);
        let max_clients = self.count(
            "server.max_client_connections",
            &raw.max_client_connections,
            1,
            1_000_000,
        );
        let max_per_user = match &raw.max_client_connections_per_user {
            None => Some(None),
            Some(v) => self
                .count("server.max_client_connections_per_user", v, 1, 1_000_000)
                .map(Some),
        };
        let cancel_rate = self.count("server.cancel_rate", &raw.cancel_rate, 1, 1_000_000);
        let cancel_burst = self.count("server.cancel_burst", &raw.cancel_burst, 1, 1_000_000);
        let drain = self.duration("server.drain_timeout", &raw.drain_timeout);
        let startup = self.duration("server.startup_timeout", &raw.startup_timeout);
        let max_message = self.count(
            "server.max_message_size",
            &raw.max_message_size,
            1024,
            1 << 30,
        );
        let max_startup = self.count(
            "server.max_startup_packet_size",
            &raw.max_startup_packet_size,
            64,
            1 << 20,
        );
        let max_params = self.count(
            "server.max_startup_parameters",
            &raw.max_startup_parameters,
            1,
            10_000,
        );
        let watch_interval = self.duration("server.watch_interval", &raw.watch_interval);
        let tls = match raw.tls {
            None => Some(None),
            Some(t) => {
                let cert = self.file("server.tls.cert", &t.cert);
                let key = self.file("server.tls.key", &t.key);
                let mode = self.choice(
                    "server.tls.mode",
                    &t.mode,
                    &[
                        ("disable", ClientTlsMode::Disable),
                        ("prefer", ClientTlsMode::Prefer),
                        ("require", ClientTlsMode::Require),
                    ],
                );
                if let (Some(cert), Some(key)) = (&cert, &key)
                    && let Err(e) = crate::tls::acceptor(cert, key)
                {
                    self.problem(t.cert.span(), "server.tls", e.to_string());
                }
                Some(Some(ServerTls {
                    cert: cert?,
                    key: key?,
                    mode: mode?,
                }))
            }
        };
        Some(Server {
            listen: listen?,
            metrics_listen: metrics_listen?,
            max_client_connections: max_clients?,
            worker_threads: worker_threads?,
            max_client_connections_per_user: max_per_user?,
            drain_timeout: drain?,
            startup_timeout: startup?,
            max_message_size: max_message?,
            max_startup_packet_size: max_startup?,
            max_startup_parameters: max_params?,
            watch_config: raw.watch_config,
            watch_interval: watch_interval?,
            cancel_rate: cancel_rate? as u32,
            cancel_burst: cancel_burst? as u32,
            tls: tls?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;

    #[test]
    fn hardening_limits_are_read_and_checked() {
        let c = parse(
            "[server]\nmax_client_connections_per_user = 20\ncancel_rate = 5\ncancel_burst = 10\n\
             [warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"host=h user=u\"\nmax_parse_size = 4096\n",
        )
        .unwrap();
        assert_eq!(c.server.max_client_connections_per_user, Some(20));
        assert_eq!((c.server.cancel_rate, c.server.cancel_burst), (5, 10));
        assert_eq!(c.catalog.unwrap().max_parse_size, 4096);
        let err = parse(
            "[server]\nmax_client_connections_per_user = 0\ncancel_rate = -1\n\
             [warehouse]\nnodes = [\"a:1\"]\n[catalog]\ndsn = \"host=h user=u\"\nmax_parse_size = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(":2: server.max_client_connections_per_user: must be between 1"),
            "{err}"
        );
        assert!(err.contains(":3: server.cancel_rate:"), "{err}");
        assert!(err.contains(":8: catalog.max_parse_size:"), "{err}");
    }
}
