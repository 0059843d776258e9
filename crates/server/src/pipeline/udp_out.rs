//! Datagrams out of an RTC thread in batches: up to [`BATCH`] datagrams per system call.
//!
//! An RTC thread writes one program frame to every WHEP listener it carries: one datagram per
//! listener per 20 ms, each to a different address. Sent one `sendto` at a time, the system-call
//! overhead is paid per datagram; [`Outbox`] queues the datagrams the hub hands over (taking
//! their buffers as they are, no copy) and sends them with one `sendmmsg(2)` per batch on Linux
//! (one `send_to` each elsewhere). UDP GSO (`UDP_SEGMENT`) does not apply: it splits one buffer
//! into segments for a single destination, and here almost every datagram has its own.
//!
//! Sending never waits: when the socket buffer is full (`EAGAIN`) the rest of the batch is
//! dropped and counted, as a lone `sendto` would have dropped each of them (UDP: a slow listener
//! loses packets, nobody waits for it). A datagram the kernel refuses on its own (a bad address)
//! is skipped and the batch goes on; a partial send is retried from where it stopped.

use std::io;
use std::net::SocketAddr;

/// Datagrams sent in one system call at most (the queue is flushed when it holds this many).
pub(crate) const BATCH: usize = 64;

/// A datagram waiting in the outbox.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub(crate) destination: SocketAddr,
    pub(crate) contents: Vec<u8>,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Datagrams the kernel took.
    pub(crate) sent: usize,
    /// Datagrams dropped (socket buffer full, or refused).
    pub(crate) dropped: usize,
    /// System calls made.
    pub(crate) calls: usize,
}

/// Datagrams queued for one UDP socket, sent in batches.
#[derive(Default)]
pub(crate) struct Outbox {
    queue: Vec<Datagram>,
    scratch: sys::Scratch,
}

impl Outbox {
    pub(crate) fn new() -> Outbox {
        Outbox { queue: Vec::with_capacity(BATCH), scratch: sys::Scratch::default() }
    }

    /// Queues a datagram; true when the queue is full and should be flushed.
    pub(crate) fn push(&mut self, destination: SocketAddr, contents: Vec<u8>) -> bool {
        self.queue.push(Datagram { destination, contents });
        self.queue.len() >= BATCH
    }

    /// Datagrams waiting.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Sends everything queued on `socket` (non-blocking), [`BATCH`] at a time.
    pub(crate) fn flush(&mut self, socket: &tokio::net::UdpSocket) -> Flushed {
        let Outbox { queue, scratch } = self;
        let flushed = flush_with(queue, |batch| {
            socket.try_io(tokio::io::Interest::WRITABLE, || sys::send_batch(socket, batch, scratch))
        });
        queue.clear();
        flushed
    }
}

/// Sends `queue` in batches with `send`, which sends a prefix of the slice it is given and says
/// how long (like `sendmmsg`). A partial send is retried from where it stopped; a full socket
/// buffer drops the rest; any other error skips the one datagram it stopped at.
pub(crate) fn flush_with(
    queue: &[Datagram],
    mut send: impl FnMut(&[Datagram]) -> io::Result<usize>,
) -> Flushed {
    let mut out = Flushed::default();
    let mut start = 0;
    while start < queue.len() {
        let end = (start + BATCH).min(queue.len());
        out.calls += 1;
        match send(&queue[start..end]) {
            Ok(n) if n > 0 => {
                let n = n.min(end - start);
                out.sent += n;
                start += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // Refused (or, against the contract, nothing sent without an error): skip it so
            // the loop always moves on.
            Ok(_) | Err(_) => {
                out.dropped += 1;
                start += 1;
            }
        }
    }
    out.dropped += queue.len() - start;
    out
}

#[cfg(target_os = "linux")]
mod sys {
    //! `sendmmsg(2)`: the only unsafe code of the RTC path, kept to building the C arrays.

    use super::Datagram;
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    /// One destination in the C layout the kernel reads (`sockaddr_in` or `sockaddr_in6`).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) union RawAddr {
        v4: libc::sockaddr_in,
        v6: libc::sockaddr_in6,
    }

    fn raw_addr(addr: &SocketAddr) -> (RawAddr, libc::socklen_t) {
        match addr {
            SocketAddr::V4(a) => {
                let v4 = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                    sin_zero: [0; 8],
                };
                (RawAddr { v4 }, size_of::<libc::sockaddr_in>() as libc::socklen_t)
            }
            SocketAddr::V6(a) => {
                let v6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                    sin6_scope_id: a.scope_id(),
                };
                (RawAddr { v6 }, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
            }
        }
    }

    /// The C arrays of one call, kept between calls so a flush allocates nothing once warm.
    #[derive(Default)]
    pub(super) struct Scratch {
        addrs: Vec<(RawAddr, libc::socklen_t)>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    /// One `sendmmsg` of `batch` (at most `UIO_MAXIOV` long): how many datagrams the kernel
    /// took, from the first.
    pub(super) fn send_batch(
        socket: &impl AsRawFd,
        batch: &[Datagram],
        scratch: &mut Scratch,
    ) -> io::Result<usize> {
        let Scratch { addrs, iovs, hdrs } = scratch;
        addrs.clear();
        iovs.clear();
        hdrs.clear();
        // Filled completely before any pointer into them is taken, so none moves afterwards.
        addrs.extend(batch.iter().map(|d| raw_addr(&d.destination)));
        iovs.extend(batch.iter().map(|d| libc::iovec {
            // The kernel only reads through it (`sendmmsg` takes the iovec as `*mut` by its C
            // signature).
            iov_base: d.contents.as_ptr() as *mut libc::c_void,
            iov_len: d.contents.len(),
        }));
        for (addr, iov) in addrs.iter_mut().zip(iovs.iter_mut()) {
            // SAFETY: `msghdr` and `mmsghdr` are plain C structs for which all-zero bytes are a
            // valid value (null pointers, zero lengths); the fields that matter are set below.
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_name = (&mut addr.0 as *mut RawAddr).cast();
            hdr.msg_hdr.msg_namelen = addr.1;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdrs.push(hdr);
        }
        let len = libc::c_uint::try_from(hdrs.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: every header points at an address and an iovec in `addrs` / `iovs`, and every
        // iovec at a datagram in `batch`; all of them live, unmoved, until the call returns. The
        // kernel writes only `msg_len` of each header, which `hdrs` owns.
        let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), len, 0) };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! One `send_to` per datagram where there is no `sendmmsg`.

    use super::Datagram;
    use std::io;

    #[derive(Default)]
    pub(super) struct Scratch;

    pub(super) fn send_batch(
        socket: &tokio::net::UdpSocket,
        batch: &[Datagram],
        _: &mut Scratch,
    ) -> io::Result<usize> {
        let Some(first) = batch.first() else { return Ok(0) };
        socket.try_send_to(&first.contents, first.destination).map(|_| 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn datagram(to: u16, i: u32) -> Datagram {
        let mut contents = i.to_be_bytes().to_vec();
        contents.extend(std::iter::repeat_n(to as u8, 100 + (i as usize % 50)));
        Datagram { destination: SocketAddr::from(([127, 0, 0, 1], to)), contents }
    }

    #[test]
    fn a_partial_send_is_retried_from_where_it_stopped() {
        let queue: Vec<Datagram> = (0..150).map(|i| datagram(1, i)).collect();
        let mut seen = Vec::new();
        // Takes at most 7 per call, like a kernel that stops early.
        let out = flush_with(&queue, |batch| {
            let n = batch.len().min(7);
            seen.extend(batch[..n].iter().map(|d| d.contents[..4].to_vec()));
            Ok(n)
        });
        assert_eq!(out.sent, 150);
        assert_eq!(out.dropped, 0);
        assert_eq!(out.calls, 150usize.div_ceil(7));
        let expected: Vec<Vec<u8>> = (0..150u32).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(seen, expected, "each datagram once, in order");
    }

    #[test]
    fn a_full_buffer_drops_the_rest_and_a_refused_datagram_is_skipped() {
        let queue: Vec<Datagram> = (0..10).map(|i| datagram(1, i)).collect();
        let mut calls = 0;
        let out = flush_with(&queue, |batch| {
            calls += 1;
            match calls {
                1 => Ok(3),
                2 => Err(io::Error::from(io::ErrorKind::PermissionDenied)),
                3 => Ok(batch.len().min(2)),
                _ => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            }
        });
        assert_eq!(out, Flushed { sent: 5, dropped: 5, calls: 4 });
        let out = flush_with(&[], |_| panic!("nothing to send"));
        assert_eq!(out, Flushed::default());
    }

    /// Many datagrams to several loopback receivers, through the real system call, flushed
    /// on the way as a full queue is: each receiver gets all of its own, intact and in order.
    #[tokio::test]
    async fn datagrams_reach_several_receivers_intact_and_in_order() {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        // Sending goes by the runtime's readiness, as in the RTC loop (which has awaited it).
        socket.writable().await.expect("writable");
        let mut receivers = Vec::new();
        for _ in 0..4 {
            let r = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
            r.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            receivers.push(r);
        }
        let ports: Vec<u16> =
            receivers.iter().map(|r| r.local_addr().expect("addr").port()).collect();
        // 4 × 60 = 240 datagrams: several full batches and a partial one. Fewer per receiver
        // than its default buffer holds, so loopback loses none.
        let per_receiver = 60u32;
        let mut outbox = Outbox::new();
        let mut total = Flushed::default();
        for i in 0..per_receiver {
            for port in &ports {
                if outbox
                    .push(SocketAddr::from(([127, 0, 0, 1], *port)), datagram(*port, i).contents)
                {
                    let f = outbox.flush(&socket);
                    total.sent += f.sent;
                    total.calls += f.calls;
                    assert_eq!(outbox.len(), 0);
                }
            }
        }
        let f = outbox.flush(&socket);
        total.sent += f.sent;
        total.calls += f.calls;
        assert_eq!(total.sent, 4 * per_receiver as usize);
        assert!(total.calls <= (4 * per_receiver as usize).div_ceil(BATCH) + 1, "{total:?}");
        let mut got: HashMap<u16, Vec<Vec<u8>>> = HashMap::new();
        let mut buf = [0u8; 2048];
        for (r, port) in receivers.iter().zip(&ports) {
            for _ in 0..per_receiver {
                let (n, _) = r.recv_from(&mut buf).expect("a datagram");
                got.entry(*port).or_default().push(buf[..n].to_vec());
            }
        }
        for port in &ports {
            let expected: Vec<Vec<u8>> =
                (0..per_receiver).map(|i| datagram(*port, i).contents).collect();
            assert_eq!(got[port], expected, "receiver {port}: all, intact, in order");
        }
    }
}
