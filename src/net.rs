//! A TCP connection, with or without TLS: one type for client and node
//! sockets so that the relay is written once, and its two halves; and
//! [`MessageStream`], the one framed reader every read loop uses.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsStream;

use crate::protocol::ProtocolError;
use crate::protocol::backend::ErrorFields;
use crate::protocol::frame::{Frame, Item, Scanner};

/// Reads start at this size and grow while the peer keeps them full.
const READ_CHUNK: usize = 8 * 1024;
const MAX_READ_CHUNK: usize = 256 * 1024;

/// Plain or TLS: a whole connection ([`Stream`]) or one of its halves
/// ([`ReadHalf`], [`WriteHalf`]). One enum, so that reading and writing are
/// passed on to the right side in one place for all three.
pub enum Transport<P, T> {
    Plain(P),
    Tls(T),
}

/// A client or node connection.
pub type Stream = Transport<TcpStream, Box<TlsStream<TcpStream>>>;

/// The reading half of a [`Stream`].
pub type ReadHalf = Transport<OwnedReadHalf, tokio::io::ReadHalf<Box<TlsStream<TcpStream>>>>;

/// The writing half of a [`Stream`].
pub type WriteHalf = Transport<OwnedWriteHalf, tokio::io::WriteHalf<Box<TlsStream<TcpStream>>>>;

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// True when the peer has sent nothing and not closed: a connection
    /// that sat idle is still fit to use. Whatever it had sent is consumed,
    /// so a connection that fails this check must be dropped.
    pub fn is_quiet(&self) -> bool {
        let tcp = match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        };
        let mut probe = [0u8; 1];
        matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// The reading and the writing half, for a relay that reads one peer
    /// while writing to it from elsewhere. A plain socket splits without a
    /// lock (`tokio::io::split` takes one on every read and write); TLS
    /// needs one, its state being shared by both directions.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (rd, wr) = s.into_split();
                (ReadHalf::Plain(rd), WriteHalf::Plain(wr))
            }
            Stream::Tls(s) => {
                let (rd, wr) = tokio::io::split(s);
                (ReadHalf::Tls(rd), WriteHalf::Tls(wr))
            }
        }
    }
}

impl ReadHalf {
    /// The stream again, from the halves [`Stream::into_split`] made of it.
    ///
    /// # Panics
    /// If the halves came from two different streams (a bug).
    pub fn unsplit(self, wr: WriteHalf) -> Stream {
        match (self, wr) {
            (ReadHalf::Plain(rd), WriteHalf::Plain(wr)) => {
                Stream::Plain(rd.reunite(wr).expect("halves of one stream"))
            }
            (ReadHalf::Tls(rd), WriteHalf::Tls(wr)) => Stream::Tls(rd.unsplit(wr)),
            _ => panic!("halves of two different streams"),
        }
    }
}

impl<P: AsyncRead + Unpin, T: AsyncRead + Unpin> AsyncRead for Transport<P, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<P: AsyncWrite + Unpin, T: AsyncWrite + Unpin> AsyncWrite for Transport<P, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A stream read message by message: the stream, what was read of it and
/// not yet consumed, and the [`Scanner`] that frames it. Reads grow while
/// the peer keeps them full, so a large result costs few system calls and
/// a small one little memory.
pub struct MessageStream<R> {
    rd: R,
    buf: BytesMut,
    scanner: Scanner,
    chunk: usize,
}

/// Why a [`MessageStream`] could not give the next message.
#[derive(Debug)]
pub enum ReadError {
    Protocol(ProtocolError),
    Io(io::Error),
}

impl<R: AsyncRead + Unpin> MessageStream<R> {
    pub fn new(rd: R, scanner: Scanner) -> MessageStream<R> {
        MessageStream::with_read(rd, scanner, BytesMut::new())
    }

    /// A stream of which `read` was already read (a node's first answer,
    /// read while the session was opened).
    pub fn with_read(rd: R, scanner: Scanner, read: BytesMut) -> MessageStream<R> {
        MessageStream {
            rd,
            buf: read,
            scanner,
            chunk: READ_CHUNK,
        }
    }

    /// The next message or relayed run already read, if any.
    pub fn buffered(&mut self) -> Result<Option<Item>, ProtocolError> {
        self.scanner.next(&mut self.buf)
    }

    /// Whether anything read is still unconsumed.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Reads more; `Ok(0)` when the peer closed. Cancel safe: bytes read
    /// stay buffered even if the caller stops waiting.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < self.chunk / 2 {
            self.buf.reserve(self.chunk);
        }
        let n = self.rd.read_buf(&mut self.buf).await?;
        if n >= self.chunk && self.chunk < MAX_READ_CHUNK {
            self.chunk *= 2;
        }
        Ok(n)
    }

    /// The next message or relayed run, reading as needed; `Ok(None)` when
    /// the peer closed. Cancel safe.
    pub async fn next(&mut self) -> Result<Option<Item>, ReadError> {
        loop {
            if let Some(item) = self.buffered().map_err(ReadError::Protocol)? {
                return Ok(Some(item));
            }
            if self.fill().await.map_err(ReadError::Io)? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next whole message, skipping relayed runs (which a scanner that
    /// inspects everything never makes); `Ok(None)` when the peer closed.
    pub async fn frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            match self.next().await? {
                Some(Item::Inspect(frame)) => return Ok(Some(frame)),
                Some(Item::Relay(_)) => {}
                None => return Ok(None),
            }
        }
    }

    /// True between messages: nothing of a message is half consumed.
    pub fn at_boundary(&self) -> bool {
        self.scanner.at_boundary()
    }

    /// Frames what follows with another treatment (see [`Scanner::new`]).
    pub fn rescan(&mut self, scanner: Scanner) {
        self.scanner = scanner;
    }

    pub fn get_ref(&self) -> &R {
        &self.rd
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.rd
    }

    /// The stream, and what was read of it but not consumed.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.rd, self.buf)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Protocol(e) => e.fmt(f),
            ReadError::Io(e) => e.fmt(f),
        }
    }
}

/// Writes a FATAL error and closes; the peer may already be gone.
pub async fn send_fatal<S: AsyncWrite + Unpin>(stream: &mut S, error: &ErrorFields) {
    use tokio::io::AsyncWriteExt;
    let _ = stream.write_all(&error.to_bytes()).await;
    let _ = stream.shutdown().await;
}
