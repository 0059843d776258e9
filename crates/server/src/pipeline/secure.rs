//! TLS on listener connections: the stream every connection is once the accept loop has (or
//! has not) made a TLS handshake, and the socket a listener becomes when a fan-out shard takes
//! it over.
//!
//! The high-density paths (WebSocket and Ogg listeners) are written by shards with non-blocking
//! writes of one shared `Bytes` per message. Over TLS every listener has its own keys, so each
//! message is encrypted once per listener: the shard keeps the listener's rustls connection and
//! hands it the plaintext only when the socket has taken all earlier ciphertext. Until then the
//! plaintext waits in the shard's own queue, where skipping ahead (whole messages) still works:
//! at most one message of ciphertext is ever buffered beyond it.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::pipeline::net::{GuardedStream, Rewind};

/// The stream each connection's I/O is, as hyper sees it.
pub type ConnIo = hyper_util::rt::TokioIo<Rewind<ConnStream>>;

/// A TLS server session over a connection (whose first bytes may have been read already, e.g.
/// past a PROXY protocol header).
pub type TlsConn = tokio_rustls::server::TlsStream<Rewind<GuardedStream>>;

/// A client connection as the HTTP layer reads and writes it: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum ConnStream {
    /// Plain TCP (`--tls off`).
    Plain(GuardedStream),
    /// TLS, after a completed handshake.
    Tls(Box<TlsConn>),
}

impl ConnStream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, ConnStream::Tls(_))
    }

    /// The socket (and its TLS session) for a fan-out shard to write to from now on.
    pub fn into_egress(self) -> EgressSocket {
        match self {
            ConnStream::Plain(s) => EgressSocket::Plain(s.into_inner()),
            ConnStream::Tls(tls) => {
                let (io, session) = (*tls).into_inner();
                EgressSocket::Tls(io.into_inner().into_inner(), Box::new(session))
            }
        }
    }
}

impl AsyncRead for ConnStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ConnStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ConnStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ConnStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ConnStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ConnStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ConnStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ConnStream::Plain(s) => s.is_write_vectored(),
            ConnStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ConnStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ConnStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A listener's socket as a fan-out shard receives it.
pub enum EgressSocket {
    /// Plain TCP.
    Plain(TcpStream),
    /// TCP with the listener's TLS session, whose handshake is complete.
    Tls(TcpStream, Box<rustls::ServerConnection>),
}

impl std::fmt::Debug for EgressSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EgressSocket::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            EgressSocket::Tls(s, _) => f.debug_tuple("Tls").field(s).finish(),
        }
    }
}

impl From<TcpStream> for EgressSocket {
    fn from(stream: TcpStream) -> Self {
        EgressSocket::Plain(stream)
    }
}

impl EgressSocket {
    /// The same socket, out of the async reactor (still non-blocking): a shard never waits on
    /// it, it retries on the next message.
    pub fn into_sink(self) -> io::Result<Sink> {
        Ok(match self {
            EgressSocket::Plain(s) => Sink::Plain(s.into_std()?),
            EgressSocket::Tls(s, session) => Sink::Tls(s.into_std()?, session),
        })
    }
}

/// A non-blocking listener socket a shard writes to: [`Sink::write`] behaves like a
/// non-blocking socket write of plaintext.
pub enum Sink {
    /// Plain TCP.
    Plain(std::net::TcpStream),
    /// TCP with the listener's TLS session.
    Tls(std::net::TcpStream, Box<rustls::ServerConnection>),
}

impl Sink {
    /// Writes what the socket takes now, without waiting: the number of plaintext bytes taken,
    /// `WouldBlock` when none could be, `Ok(0)` when the peer is gone.
    ///
    /// Over TLS, plaintext is taken only once all earlier ciphertext has left, so that what
    /// waits stays in the caller's queue, not in the session's buffer.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(stream) => (&*stream).write(buf),
            Sink::Tls(stream, session) => {
                flush_tls(stream, session)?;
                let taken = session.writer().write(buf)?;
                match flush_tls(stream, session) {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
                    _ => Ok(taken),
                }
            }
        }
    }
}

/// Writes the session's pending ciphertext to the socket until it is all gone (`Ok`) or the
/// socket is full (`WouldBlock`).
fn flush_tls(
    stream: &std::net::TcpStream,
    session: &mut rustls::ServerConnection,
) -> io::Result<()> {
    let mut socket = stream;
    while session.wants_write() {
        if session.write_tls(&mut socket)? == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "peer closed"));
        }
    }
    Ok(())
}
