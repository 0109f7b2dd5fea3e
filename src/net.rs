//! A TCP connection, with or without TLS: one type for client and node
//! sockets so that the relay is written once, and its two halves.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsStream;

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
