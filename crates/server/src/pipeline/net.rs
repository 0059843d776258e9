//! Sockets: binding with a large backlog, and the wrappers every connection goes through.
//!
//! - A listen backlog sized for join storms (4096, capped by `net.core.somaxconn`).
//! - [`Rewind`] replays the request head the accept loop already read.
//! - Slow-read defence: a connection whose socket accepts no bytes for the stall timeout is
//!   failed, which ends its session and frees its resources. One timer per connection, armed
//!   only while a write is pending, so healthy listeners pay nothing per frame.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::metrics::STALLED_CONNECTIONS;

/// Listen backlog requested from the kernel.
pub const BACKLOG: u32 = 4096;

/// Binds a TCP listener with a large backlog. Accepted sockets inherit `send_buffer`, if set.
pub fn bind(addr: SocketAddr, send_buffer: Option<u32>) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The connection a request arrived on: its place in the per-client counts, and how many
/// requests came before it on the same connection (the first was checked by the accept loop).
#[derive(Clone)]
pub struct ConnContext {
    /// Keeps the connection counted against its address and subnet (none for trusted proxies).
    pub hold: Option<std::sync::Arc<dyn Send + Sync>>,
    /// 0 for the connection's first request.
    pub ordinal: u64,
}

/// The peer address of a connection, for handlers that need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The client a request is from: the peer, or, behind a trusted proxy, the address the proxy
/// says it serves (X-Forwarded-For or PROXY protocol). Per-client limits key on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// A TCP stream that fails writes which make no progress for too long.
#[derive(Debug)]
pub struct GuardedStream {
    inner: TcpStream,
    stall: Duration,
    /// Armed while a write is pending.
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl GuardedStream {
    /// Wraps a stream; writes that make no progress for `stall` fail.
    pub fn new(inner: TcpStream, stall: Duration) -> GuardedStream {
        GuardedStream { inner, stall, timer: Box::pin(tokio::time::sleep(stall)), armed: false }
    }

    /// The raw socket.
    pub fn into_inner(self) -> TcpStream {
        self.inner
    }

    /// Called when the inner write is pending: arm the timer, or fail if it has run out.
    fn pending_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.stall);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                metrics::counter!(STALLED_CONNECTIONS).increment(1);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => this.pending_write(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => this.pending_write(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A stream that first yields bytes already read from it, then reads on.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: bytes::Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    /// Replays `prefix` before reading from `inner`.
    pub fn new(prefix: bytes::Bytes, inner: T) -> Rewind<T> {
        Rewind { prefix, inner }
    }

    /// The inner stream (unreplayed prefix bytes are dropped).
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn rewind_replays_its_prefix_first() {
        let inner: &[u8] = b" world";
        let mut r = Rewind::new(bytes::Bytes::from_static(b"hello"), inner);
        let mut out = String::new();
        r.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "hello world");
    }
}
