//! Why sluice could not reach or talk to a node.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to node {node}: {source}")]
    Connect {
        node: String,
        source: std::io::Error,
    },
    #[error("node {node} did not accept the connection within {timeout:?}")]
    ConnectTimeout { node: String, timeout: Duration },
    #[error("node {node} refused TLS, which warehouse.tls.mode requires")]
    TlsRefused { node: String },
    #[error("node {node} answered the SSLRequest with {answer:?} instead of S or N")]
    TlsAnswer { node: String, answer: char },
    #[error("TLS handshake with node {node} failed: {source}")]
    TlsHandshake {
        node: String,
        source: std::io::Error,
    },
    #[error("node {node} has no host name usable for TLS")]
    TlsServerName { node: String },
}
