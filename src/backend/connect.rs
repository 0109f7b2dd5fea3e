//! Opening a connection to a node: TCP, then TLS as `warehouse.tls.mode` says.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::BackendError;
use crate::config::{NodeTlsMode, Warehouse};
use crate::net::Stream;
use crate::protocol::backend::{REQUEST_DECLINED, SSL_ACCEPTED};
use crate::protocol::startup::SSL_REQUEST_CODE;
use crate::tls::{self, TlsError};

/// Everything needed to open node connections under one configuration.
#[derive(Clone)]
pub struct NodeConnector {
    mode: NodeTlsMode,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl NodeConnector {
    pub fn new(warehouse: &Warehouse) -> Result<NodeConnector, TlsError> {
        Ok(NodeConnector {
            mode: warehouse.tls.mode,
            tls: match warehouse.tls.mode {
                NodeTlsMode::Disable => None,
                NodeTlsMode::VerifyFull => {
                    Some(tls::node_client_config(tls::NodeVerification::Full {
                        ca: warehouse.tls.ca.as_deref(),
                    })?)
                }
                NodeTlsMode::Prefer | NodeTlsMode::Require => {
                    Some(tls::node_client_config(tls::NodeVerification::None)?)
                }
            },
            timeout: warehouse.connect_timeout,
        })
    }

    /// The rustls config for node connections, shared with the health check.
    pub fn tls_config(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.tls.as_ref()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A connection to `addr` as the service account (health checks,
    /// `auth_query`), TLS as configured; `timeout` bounds the connect.
    pub async fn service_client(
        &self,
        addr: &str,
        warehouse: &Warehouse,
        application: &str,
        timeout: Duration,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "5432"));
        let mut pg = tokio_postgres::Config::new();
        pg.host(host)
            .port(port.parse().unwrap_or(5432))
            .user(&warehouse.service_user)
            .dbname(&warehouse.service_database)
            .application_name(application)
            .connect_timeout(self.timeout.min(timeout));
        if !warehouse.service_password.is_empty() {
            pg.password(warehouse.service_password.expose());
        }
        let client = match &self.tls {
            Some(tls) => {
                pg.ssl_mode(match self.mode {
                    NodeTlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                    _ => tokio_postgres::config::SslMode::Require,
                });
                let (client, conn) = pg
                    .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                        (**tls).clone(),
                    ))
                    .await?;
                tokio::spawn(conn);
                client
            }
            None => {
                let (client, conn) = pg.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                client
            }
        };
        Ok(client)
    }

    /// Connects to `addr`, negotiating TLS first when configured; the whole
    /// of it must finish within the connect timeout.
    pub async fn connect(&self, addr: &str) -> Result<Stream, BackendError> {
        tokio::time::timeout(self.timeout, self.connect_inner(addr))
            .await
            .map_err(|_| BackendError::ConnectTimeout {
                node: addr.to_string(),
                timeout: self.timeout,
            })?
    }

    /// A plain TCP connection, for CancelRequests: PostgreSQL reads them
    /// before any TLS negotiation, so they need none.
    pub async fn connect_plain(&self, addr: &str) -> Result<TcpStream, BackendError> {
        let node = || addr.to_string();
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| BackendError::ConnectTimeout {
                node: node(),
                timeout: self.timeout,
            })?
            .map_err(|source| BackendError::Connect {
                node: node(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// Sends a CancelRequest with a node's real key to that node, and waits
    /// for the node to close the connection, which keeps the cancel ahead of
    /// whatever the client does next. The error is a phrase for the log.
    pub async fn send_cancel(&self, target: &crate::cancel::CancelTarget) -> Result<(), String> {
        let mut tcp = self
            .connect_plain(&target.node)
            .await
            .map_err(|e| e.to_string())?;
        tcp.write_all(&target.key.cancel_request())
            .await
            .map_err(|e| e.to_string())?;
        let mut sink = [0u8; 16];
        let _ = tokio::time::timeout(self.timeout, tcp.read(&mut sink)).await;
        Ok(())
    }

    async fn connect_inner(&self, addr: &str) -> Result<Stream, BackendError> {
        let node = || addr.to_string();
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| BackendError::Connect {
                node: node(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let Some(config) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let io = |source| BackendError::Connect {
            node: node(),
            source,
        };
        let mut request = [0u8; 8];
        request[..4].copy_from_slice(&8i32.to_be_bytes());
        request[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
        tcp.write_all(&request).await.map_err(io)?;
        match tcp.read_u8().await.map_err(io)? {
            SSL_ACCEPTED => {}
            REQUEST_DECLINED if self.mode == NodeTlsMode::Prefer => return Ok(Stream::Plain(tcp)),
            REQUEST_DECLINED => return Err(BackendError::TlsRefused { node: node() }),
            other => {
                return Err(BackendError::TlsAnswer {
                    node: node(),
                    answer: other as char,
                });
            }
        }
        let name =
            tls::server_name(addr).ok_or_else(|| BackendError::TlsServerName { node: node() })?;
        let stream = tls::connector(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| BackendError::TlsHandshake {
                node: node(),
                source,
            })?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }
}
