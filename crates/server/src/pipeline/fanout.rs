//! Egress fan-out: the bytes of one program feed, written to thousands of listener sockets.
//!
//! Listeners of the high-density paths (WebSocket listeners and Ogg/HTTP listeners) are not
//! served by a task each. After their request is checked, their raw socket joins a **shard**: a
//! task that owns many sockets and, for each message of the feed, writes the same shared `Bytes`
//! to every socket with a non-blocking `try_write`. Per listener per message that is one syscall
//! and a reference-count increment; no task wake-up, no copy, no allocation.
//!
//! A socket that cannot take a message keeps it queued (up to a bound, after which whole older
//! messages are skipped: the listener skips ahead) and is retried on the next message. A socket
//! that has accepted nothing for the stall timeout is closed (slow-read defence). Nobody waits
//! for a slow listener.
//!
//! When the node drains, each shard sends its listeners off one by one, evenly spread until the
//! drain's end ([`Stagger`]): a `bye` on WebSocket, a plain close on Ogg. They come back through
//! the door to another node at a steady trickle rather than all at once.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::metrics::{FRAMES_DROPPED, FRAMES_SENT, STALLED_CONNECTIONS};
use crate::pipeline::secure::{EgressSocket, Sink};

/// Queued bytes per listener beyond which older whole messages are skipped.
const MAX_BACKLOG_BYTES: usize = 32 * 1024;
/// How often shards look for stalled sockets when no message arrives.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// One message of a feed: its sequence number and its exact bytes on the wire.
#[derive(Debug, Clone)]
pub struct WireMessage {
    /// Position in the feed (1, 2, 3, ...).
    pub seq: u64,
    /// Complete wire bytes (a WebSocket frame, or Ogg pages).
    pub bytes: Bytes,
    /// Program frames carried (for metrics; 0 for events).
    pub frames: u64,
}

/// What a shard does when its feed ends or the node drains.
#[derive(Debug, Clone)]
pub struct Farewell {
    /// Sent when the feed ends (e.g. a WebSocket `ended` event and close frame).
    pub ended: Bytes,
    /// Sent when the node drains (e.g. a `bye` event and close frame).
    pub shutdown: Bytes,
}

/// A listener handed to a shard.
pub struct Joiner {
    /// The socket (with its TLS session, if any), response head already written or included
    /// in `first`.
    pub stream: EgressSocket,
    /// Bytes to send before live messages (hello, headers, recent audio). Built by the shard's
    /// `prelude` function so it ends exactly where live messages begin.
    pub first: Vec<Bytes>,
    /// Lives exactly as long as the listener's connection (e.g. its place in the listener
    /// counts): dropped when the connection ends. Opaque here, so the fan-out knows nothing of
    /// what feeds it.
    pub guard: Box<dyn Send + Sync>,
    /// Keeps the connection counted against its address and subnet (opaque here).
    pub hold: Option<Arc<dyn Send + Sync>>,
    /// Where the joiner asks its catch-up to start (a program frame number it has not heard:
    /// a relay or listener resuming after a broken link); `None`: the feed's default.
    pub resume_from: Option<u64>,
}

/// Builds the catch-up bytes for a joiner given the last sequence number the shard wrote and
/// where the joiner asked to resume from.
pub type Catchup = Arc<dyn Fn(u64, Option<u64>) -> Vec<Bytes> + Send + Sync>;

/// How listener shards are run.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Shards per feed (usually the number of worker threads).
    pub shards: usize,
    /// A socket that accepts nothing for this long is closed.
    pub stall: Duration,
    /// Flips when the node stops: whoever is still here gets the farewell at once.
    pub shutdown: watch::Receiver<bool>,
    /// Set when the node starts draining: the instant by which every listener has been sent
    /// off (the shards spread their farewells evenly until then).
    pub drain: watch::Receiver<Option<Instant>>,
    /// Told about listeners arriving and leaving and shards falling behind (the
    /// crowd-or-attack classifier and admission pressure).
    pub shield: Option<Arc<dyn EgressWatch>>,
}

/// What egress tells whoever watches the traffic (the shield), without knowing who that is.
pub trait EgressWatch: Send + Sync + std::fmt::Debug {
    /// A shard fell behind its feed (its listeners lost messages).
    fn fell_behind(&self);
    /// A listener started listening.
    fn listener_joined(&self);
    /// A listener left after `stayed`.
    fn listener_left(&self, stayed: Duration);
}

/// The shards serving one feed.
pub struct Fanout {
    shards: Vec<ShardHandle>,
}

struct ShardHandle {
    joins: mpsc::Sender<Joiner>,
    size: Arc<AtomicUsize>,
}

/// The feed has ended; nothing to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl Fanout {
    /// Starts `shards` shard tasks reading `feed` (each with its own receiver), which has sent
    /// messages up to `start_seq` so far.
    pub fn start(
        feed: &broadcast::Sender<WireMessage>,
        start_seq: u64,
        catchup: Catchup,
        farewell: Farewell,
        protocol: &'static str,
        cfg: &FanoutConfig,
    ) -> Fanout {
        let (stall, shutdown) = (cfg.stall, &cfg.shutdown);
        let shards = (0..cfg.shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(1_024);
                let size = Arc::new(AtomicUsize::new(0));
                let shard = Shard {
                    feed: feed.subscribe(),
                    joins: rx,
                    conns: Vec::new(),
                    leaving: Vec::new(),
                    last_seq: start_seq,
                    catchup: catchup.clone(),
                    farewell: farewell.clone(),
                    shield: cfg.shield.clone(),
                    stall,
                    size: size.clone(),
                    sent: metrics::counter!(FRAMES_SENT, "protocol" => protocol),
                    dropped: metrics::counter!(FRAMES_DROPPED, "protocol" => protocol),
                    stalled: metrics::counter!(STALLED_CONNECTIONS),
                };
                tokio::spawn(shard.run(shutdown.clone(), cfg.drain.clone()));
                ShardHandle { joins: tx, size }
            })
            .collect();
        Fanout { shards }
    }

    /// Hands a listener to the least loaded shard.
    pub async fn join(&self, joiner: Joiner) -> Result<(), Closed> {
        let shard =
            self.shards.iter().min_by_key(|s| s.size.load(Ordering::Relaxed)).ok_or(Closed)?;
        shard.size.fetch_add(1, Ordering::Relaxed);
        shard.joins.send(joiner).await.map_err(|_| Closed)
    }
}

/// A listener inside a shard. Its socket is taken out of the async reactor: the shard never
/// waits on it (it retries on the next message), so the reactor need not track its readiness,
/// which saves an epoll event per write per listener.
struct Conn {
    stream: Sink,
    queue: VecDeque<(Bytes, u64)>,
    /// Bytes of the front message already written.
    offset: usize,
    queued_bytes: usize,
    /// When the socket last refused bytes while some were queued.
    blocked_since: Option<Instant>,
    _guard: Box<dyn Send + Sync>,
    _hold: Option<Arc<dyn Send + Sync>>,
}

/// A listener sent off whose farewell the socket has not taken yet, and until when it may.
struct Leaving {
    conn: Conn,
    until: Instant,
}

/// How long a farewell may take to leave before the socket is simply closed.
const FAREWELL_LIMIT: Duration = Duration::from_secs(1);

/// One shard's share of a drain: its `total` listeners sent off one at a time, the `k`-th
/// (from 0) at `k / total` of the way from `start` to `until`, so departures are even over the
/// window (across shards too, as each spreads its own) and the first goes at once. Plain
/// arithmetic on instants, no I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stagger {
    start: Instant,
    until: Instant,
    total: usize,
    sent: usize,
}

impl Stagger {
    /// A drain starting at `start` for `total` listeners, every one gone by `until`.
    pub fn new(start: Instant, until: Instant, total: usize) -> Stagger {
        Stagger { start, until: until.max(start), total, sent: 0 }
    }

    /// When the next listener is due to leave (`until` once the planned ones have).
    pub fn next_at(&self) -> Instant {
        if self.sent >= self.total {
            return self.until;
        }
        let window = self.until.duration_since(self.start);
        self.start + window.mul_f64(self.sent as f64 / self.total as f64)
    }

    /// How many more listeners to send off at `now` (all that remain once `until` has come,
    /// late joiners included); counts them as sent.
    pub fn take_due(&mut self, now: Instant, remaining: usize) -> usize {
        if now >= self.until {
            self.sent = self.sent.max(self.total);
            return remaining;
        }
        let window = self.until.duration_since(self.start).as_secs_f64();
        let done = now.saturating_duration_since(self.start).as_secs_f64() / window;
        let due = ((done * self.total as f64).floor() as usize + 1).min(self.total);
        let now_due = due.saturating_sub(self.sent).min(remaining);
        self.sent += now_due;
        now_due
    }
}

enum Flush {
    Done,
    Blocked,
    Dead,
}

impl Conn {
    /// Queues a message; returns the frames skipped to keep the backlog bounded.
    fn enqueue(&mut self, bytes: Bytes, frames: u64) -> u64 {
        self.queued_bytes += bytes.len();
        self.queue.push_back((bytes, frames));
        // Skip ahead: drop whole messages after the one being written.
        let mut skipped = 0;
        while self.queued_bytes > MAX_BACKLOG_BYTES && self.queue.len() > 1 {
            if let Some((old, frames)) = self.queue.remove(1) {
                self.queued_bytes -= old.len();
                skipped += frames;
            }
        }
        skipped
    }

    /// Writes what the socket takes now, without waiting; adds the frames fully written to `sent`.
    fn flush(&mut self, now: Instant, sent: &mut u64) -> Flush {
        while let Some((front, frames)) = self.queue.front() {
            match self.stream.write(&front[self.offset..]) {
                Ok(0) => return Flush::Dead,
                Ok(n) => {
                    self.offset += n;
                    if self.offset == front.len() {
                        *sent += *frames;
                        self.queued_bytes -= front.len();
                        self.queue.pop_front();
                        self.offset = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked_since.get_or_insert(now);
                    return Flush::Blocked;
                }
                Err(_) => return Flush::Dead,
            }
        }
        self.blocked_since = None;
        Flush::Done
    }

    /// Whether the connection stays after a write attempt: dead ones go, and so do ones blocked
    /// for `stall` (counted in `stuck`).
    fn survives(&self, outcome: Flush, now: Instant, stall: Duration, stuck: &mut u64) -> bool {
        match outcome {
            Flush::Done => true,
            Flush::Dead => false,
            Flush::Blocked => {
                let gone = self.blocked_since.is_some_and(|t| now.duration_since(t) >= stall);
                *stuck += u64::from(gone);
                !gone
            }
        }
    }

    /// Sends a new message: straight from the shared bytes when nothing is queued (the common
    /// case: no queue traffic, no reference counting), else behind the queue.
    fn deliver(
        &mut self,
        msg: &Bytes,
        frames: u64,
        now: Instant,
        sent: &mut u64,
        dropped: &mut u64,
    ) -> Flush {
        if !self.queue.is_empty() {
            *dropped += self.enqueue(msg.clone(), frames);
            return self.flush(now, sent);
        }
        match self.stream.write(msg) {
            Ok(n) if n == msg.len() => {
                *sent += frames;
                Flush::Done
            }
            Ok(0) => Flush::Dead,
            Ok(n) => {
                self.enqueue(msg.slice(n..), frames);
                self.blocked_since = Some(now);
                Flush::Blocked
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.enqueue(msg.clone(), frames);
                self.blocked_since = Some(now);
                Flush::Blocked
            }
            Err(_) => Flush::Dead,
        }
    }
}

struct Shard {
    feed: broadcast::Receiver<WireMessage>,
    joins: mpsc::Receiver<Joiner>,
    conns: Vec<Conn>,
    /// Listeners sent off whose farewell is still on its way.
    leaving: Vec<Leaving>,
    last_seq: u64,
    catchup: Catchup,
    farewell: Farewell,
    shield: Option<Arc<dyn EgressWatch>>,
    stall: Duration,
    size: Arc<AtomicUsize>,
    sent: metrics::Counter,
    dropped: metrics::Counter,
    stalled: metrics::Counter,
}

impl Shard {
    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut drain: watch::Receiver<Option<Instant>>,
    ) {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut joins_open = true;
        // A shard started during a drain (no one should join, but one may be on its way) sends
        // whoever comes off at the drain's end.
        let mut stagger: Option<Stagger> =
            drain.borrow_and_update().map(|until| Stagger::new(Instant::now(), until, 0));
        let mut drain_open = true;
        loop {
            // Far enough to never fire while there is no drain (or nobody to send off).
            let next_departure =
                stagger.map_or_else(|| Instant::now() + HOUSEKEEPING * 4, |s| s.next_at());
            let departing = stagger.is_some() && !self.conns.is_empty();
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.farewell_all(self.farewell.shutdown.clone()).await;
                    return;
                }
                changed = drain.changed(), if stagger.is_none() && drain_open => match (changed, *drain.borrow_and_update()) {
                    (Ok(()), Some(until)) => {
                        stagger = Some(Stagger::new(Instant::now(), until, self.conns.len()));
                    }
                    (Ok(()), None) => {}
                    // No drain will come (the node is going away without one).
                    (Err(_), _) => drain_open = false,
                },
                _ = tokio::time::sleep_until(next_departure), if departing => {
                    if let Some(s) = stagger.as_mut() {
                        let due = s.take_due(Instant::now(), self.conns.len());
                        self.send_off(due);
                    }
                }
                // The fan-out handle is dropped with the feed's channels; keep serving until the
                // feed itself reports its end, so listeners get their farewell.
                joiner = self.joins.recv(), if joins_open => match joiner {
                    Some(j) => self.add(j),
                    None => joins_open = false,
                },
                msg = self.feed.recv() => match msg {
                    Ok(msg) => self.broadcast(msg),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // This shard fell behind the feed: every listener in it misses n messages.
                        self.dropped.increment(n * self.conns.len() as u64);
                        if let Some(shield) = &self.shield {
                            shield.fell_behind();
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        self.farewell_all(self.farewell.ended.clone()).await;
                        // Late joiners still queued get the farewell too.
                        self.joins.close();
                        while let Some(j) = self.joins.recv().await {
                            self.add(j);
                        }
                        self.farewell_all(self.farewell.ended.clone()).await;
                        return;
                    }
                },
                _ = housekeeping.tick() => self.sweep(),
            }
        }
    }

    fn add(&mut self, joiner: Joiner) {
        // Out of the reactor, still non-blocking.
        let Ok(stream) = joiner.stream.into_sink() else {
            self.size.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        let mut conn = Conn {
            stream,
            queue: VecDeque::new(),
            offset: 0,
            queued_bytes: 0,
            blocked_since: None,
            _guard: joiner.guard,
            _hold: joiner.hold,
        };
        let catchup = (self.catchup)(self.last_seq, joiner.resume_from);
        for bytes in joiner.first.into_iter().chain(catchup) {
            conn.queued_bytes += bytes.len();
            conn.queue.push_back((bytes, 0));
        }
        let mut sent = 0;
        if !matches!(conn.flush(Instant::now(), &mut sent), Flush::Dead) {
            self.conns.push(conn);
        } else {
            self.size.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn broadcast(&mut self, msg: WireMessage) {
        self.last_seq = msg.seq;
        // A private copy per shard keeps each shard's reference counting on its own core.
        let bytes = Bytes::copy_from_slice(&msg.bytes);
        let now = Instant::now();
        let (mut sent, mut dropped) = (0u64, 0u64);
        let mut stuck = 0u64;
        let before = self.conns.len();
        let stall = self.stall;
        self.conns.retain_mut(|conn| {
            let outcome = conn.deliver(&bytes, msg.frames, now, &mut sent, &mut dropped);
            conn.survives(outcome, now, stall, &mut stuck)
        });
        self.account(before, sent, dropped, stuck);
    }

    /// Sends the first `n` listeners off (the drain's farewell, then close); a farewell the
    /// socket cannot take at once gets [`FAREWELL_LIMIT`] to leave, away from the feed.
    fn send_off(&mut self, n: usize) {
        let n = n.min(self.conns.len());
        if n == 0 {
            return;
        }
        let now = Instant::now();
        let mut sent = 0;
        for mut conn in self.conns.drain(..n) {
            if !self.farewell.shutdown.is_empty() {
                conn.enqueue(self.farewell.shutdown.clone(), 0);
            }
            if matches!(conn.flush(now, &mut sent), Flush::Blocked) {
                self.leaving.push(Leaving { conn, until: now + FAREWELL_LIMIT });
            }
        }
        self.size.fetch_sub(n, Ordering::Relaxed);
    }

    /// Retries blocked sockets and drops dead or stalled ones.
    fn sweep(&mut self) {
        let now = Instant::now();
        let mut flushed = 0;
        self.leaving.retain_mut(|l| {
            now < l.until && matches!(l.conn.flush(now, &mut flushed), Flush::Blocked)
        });
        let (mut sent, mut stuck) = (0u64, 0u64);
        let before = self.conns.len();
        let stall = self.stall;
        self.conns.retain_mut(|conn| {
            if conn.queue.is_empty() {
                return true;
            }
            let outcome = conn.flush(now, &mut sent);
            conn.survives(outcome, now, stall, &mut stuck)
        });
        self.account(before, sent, 0, stuck);
    }

    /// Metrics and shard size after a pass (one atomic update each, not one per listener).
    fn account(&mut self, before: usize, sent: u64, dropped: u64, stuck: u64) {
        if sent > 0 {
            self.sent.increment(sent);
        }
        if dropped > 0 {
            self.dropped.increment(dropped);
        }
        if stuck > 0 {
            self.stalled.increment(stuck);
        }
        let gone = before - self.conns.len();
        if gone > 0 {
            self.size.fetch_sub(gone, Ordering::Relaxed);
        }
    }

    /// Sends a last message to everyone (best effort, bounded by a second) and closes.
    async fn farewell_all(&mut self, last: Bytes) {
        let deadline = Instant::now() + Duration::from_secs(1);
        for conn in &mut self.conns {
            conn.enqueue(last.clone(), 0);
        }
        let mut sent = 0;
        while !self.conns.is_empty() && Instant::now() < deadline {
            let now = Instant::now();
            self.conns.retain_mut(|c| matches!(c.flush(now, &mut sent), Flush::Blocked));
            if !self.conns.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.size.store(0, Ordering::Relaxed);
        self.conns.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::feed::{WsOpcode, ws_frame};
    use tokio::io::AsyncReadExt;

    /// A connected pair of loopback sockets with small buffers.
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener =
            crate::pipeline::net::bind("127.0.0.1:0".parse().expect("addr"), Some(4_096))
                .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::net::TcpSocket::new_v4().expect("socket");
        client.set_recv_buffer_size(4_096).expect("rcvbuf");
        let (client, server) = tokio::join!(client.connect(addr), listener.accept());
        (server.expect("accept").0, client.expect("connect"))
    }

    #[test]
    fn a_drain_sends_listeners_off_evenly_and_everyone_by_its_end() {
        let start = Instant::now();
        let until = start + Duration::from_secs(10);
        let mut s = Stagger::new(start, until, 4);
        // Due at 0 s, 2.5 s, 5 s and 7.5 s.
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(s.next_at(), start, "the first goes at once");
        assert_eq!(s.take_due(start, 4), 1);
        assert_eq!(s.next_at(), at(2_500));
        assert_eq!(s.take_due(at(2_000), 3), 0);
        assert_eq!(s.take_due(at(2_500), 3), 1);
        assert_eq!(s.take_due(at(7_000), 2), 1, "a late wake-up catches up");
        assert_eq!(s.next_at(), at(7_500));
        assert_eq!(s.take_due(at(8_000), 1), 1);
        assert_eq!(s.next_at(), until, "the planned ones are gone");
        assert_eq!(s.take_due(at(9_500), 1), 0, "a late joiner waits for the end");
        assert_eq!(s.take_due(until, 2), 2, "at the end, everyone left goes");
        // Listeners who left by themselves: never more sent off than remain.
        let mut s = Stagger::new(start, until, 10);
        assert_eq!(s.take_due(at(9_999), 3), 3);
        // No window: everyone at once.
        let mut s = Stagger::new(start, start, 5);
        assert_eq!(s.take_due(start, 5), 5);
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_skips_whole_messages_and_stays_parseable() {
        let (server, mut client) = pair().await;
        let (_tx, rx) = watch::channel(false);
        let feed = Arc::new(crate::pipeline::feed::ProgramFeed::new(
            townhall_core::SpaceId::new("t").expect("id"),
            Bytes::new(),
            0,
            FanoutConfig {
                shards: 1,
                stall: Duration::from_secs(60),
                shutdown: rx,
                drain: watch::channel(None).1,
                shield: None,
            },
        ));
        let mut conn = Conn {
            stream: EgressSocket::from(server).into_sink().expect("std socket"),
            queue: VecDeque::new(),
            offset: 0,
            queued_bytes: 0,
            blocked_since: None,
            _guard: Box::new(feed.count_listener(
                crate::pipeline::feed::Protocol::Ws,
                townhall_core::stats::ListenerKey(1),
            )),
            _hold: None,
        };
        let now = Instant::now();
        let (mut sent, mut dropped) = (0u64, 0u64);
        let messages = 2_000u32;
        for i in 0..messages {
            let payload = vec![(i % 251) as u8; 400];
            let msg = ws_frame(WsOpcode::Binary, &payload);
            let outcome = conn.deliver(&msg, 1, now, &mut sent, &mut dropped);
            assert!(!matches!(outcome, Flush::Dead));
            assert!(conn.queued_bytes <= MAX_BACKLOG_BYTES + msg.len(), "backlog is bounded");
        }
        assert!(dropped > 0, "the reader never read, so messages were skipped");
        assert_eq!(sent + dropped + conn.queue.len() as u64, u64::from(messages));
        // Drain: everything the reader gets is a sequence of whole, valid frames.
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut all)).await;
            all
        });
        while !conn.queue.is_empty() {
            conn.flush(Instant::now(), &mut sent);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(conn);
        let bytes = reader.await.expect("reader");
        let mut pos = 0;
        let mut frames = 0u64;
        while pos < bytes.len() {
            assert_eq!(bytes[pos], 0x82, "frame boundary at {pos}");
            assert_eq!(bytes[pos + 1], 126);
            let len = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
            let body = &bytes[pos + 4..pos + 4 + len];
            assert!(body.iter().all(|b| *b == body[0]), "a frame is never spliced with another");
            pos += 4 + len;
            frames += 1;
        }
        assert_eq!(frames, sent);
    }
}
