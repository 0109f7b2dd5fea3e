//! What happens on a new client connection before its first typed message.
//!
//! Packets are read with exact-length reads, never through a buffer that
//! could swallow the first bytes of a TLS handshake. Every declared length is
//! checked before its body is read. The caller bounds the whole exchange by
//! `server.startup_timeout`, so a client that dribbles bytes is cut off.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ClientTlsMode;
use crate::generation::Generation;
use crate::net::{Stream, send_fatal};
use crate::protocol::backend::{ErrorFields, REQUEST_DECLINED, SSL_ACCEPTED};
use crate::protocol::startup::{self, CancelKey, StartupMessage, StartupPacket};
use crate::protocol::{ProtocolError, sqlstate};

/// How a connection's opening ended.
pub enum Opening {
    /// A session to start.
    Session {
        stream: Stream,
        startup: StartupMessage,
    },
    /// A CancelRequest; the connection carries nothing else.
    Cancel(CancelKey),
    /// The client left, or was refused with an error already sent.
    Closed,
}

/// Reads pre-startup packets until a StartupMessage or CancelRequest.
pub async fn negotiate(tcp: TcpStream, generation: &Generation) -> std::io::Result<Opening> {
    let server = &generation.config.server;
    let mut stream = Stream::Plain(tcp);
    loop {
        let packet = match read_packet(&mut stream, server.max_startup_packet_size).await? {
            Read::Packet(p) => p,
            Read::Eof => return Ok(Opening::Closed),
            Read::Invalid(e) => return refuse(stream, &e).await,
        };
        let packet = match startup::parse(packet, server.max_startup_parameters) {
            Ok(p) => p,
            Err(e) => return refuse(stream, &e).await,
        };
        match packet {
            StartupPacket::SslRequest => {
                let acceptor = generation.client_tls.as_ref().filter(|_| !stream.is_tls());
                let Stream::Plain(tcp) = stream else {
                    let e = ProtocolError::malformed("SSLRequest", "sent again inside TLS");
                    return refuse(stream, &e).await;
                };
                let mut tcp = tcp;
                match acceptor {
                    Some(acceptor) => {
                        tcp.write_all(&[SSL_ACCEPTED]).await?;
                        let tls = acceptor.accept(tcp).await?;
                        stream = Stream::Tls(Box::new(tls.into()));
                    }
                    None => {
                        tcp.write_all(&[REQUEST_DECLINED]).await?;
                        stream = Stream::Plain(tcp);
                    }
                }
            }
            // sluice neither does GSS encryption nor redirects Vertica
            // clients: a node's own load-balancing answer would send the
            // client around the proxy.
            StartupPacket::GssEncRequest | StartupPacket::LoadBalanceRequest => {
                stream.write_all(&[REQUEST_DECLINED]).await?;
            }
            StartupPacket::CancelRequest(key) => return Ok(Opening::Cancel(key)),
            StartupPacket::Startup(startup) => {
                let tls_required = server
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.mode == ClientTlsMode::Require);
                if tls_required && !stream.is_tls() {
                    let error = ErrorFields::fatal(
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        "sluice accepts only TLS connections (server.tls.mode = \"require\")",
                    )
                    .with_hint("Connect with sslmode=require or stronger.");
                    send_fatal(&mut stream, &error).await;
                    return Ok(Opening::Closed);
                }
                return Ok(Opening::Session { stream, startup });
            }
        }
    }
}

enum Read {
    Packet(Bytes),
    Eof,
    Invalid(ProtocolError),
}

async fn read_packet(stream: &mut (impl AsyncRead + Unpin), limit: usize) -> std::io::Result<Read> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Read::Eof),
        Err(e) => return Err(e),
    }
    let total = match startup::packet_len(i32::from_be_bytes(len), limit) {
        Ok(n) => n,
        Err(e) => return Ok(Read::Invalid(e)),
    };
    let mut packet = BytesMut::zeroed(total);
    packet[..4].copy_from_slice(&len);
    stream.read_exact(&mut packet[4..]).await?;
    Ok(Read::Packet(packet.freeze()))
}

async fn refuse(mut stream: Stream, e: &ProtocolError) -> std::io::Result<Opening> {
    tracing::debug!(error = %e, "refused a connection during startup");
    let error = ErrorFields::fatal(e.sqlstate(), format!("invalid startup packet: {e}"));
    send_fatal(&mut stream, &error).await;
    Ok(Opening::Closed)
}
