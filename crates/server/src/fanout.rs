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

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::feed::ListenerGuard;
use crate::metrics::{FRAMES_DROPPED, FRAMES_SENT, STALLED_CONNECTIONS};

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
    /// The raw socket, response head already written or included in `prelude`.
    pub stream: TcpStream,
    /// Bytes to send before live messages (hello, headers, recent audio). Built by the shard's
    /// `prelude` function so it ends exactly where live messages begin.
    pub first: Vec<Bytes>,
    /// Keeps the listener counted.
    pub guard: ListenerGuard,
}

/// Builds the catch-up bytes for a joiner given the last sequence number the shard wrote.
pub type Catchup = Arc<dyn Fn(u64) -> Vec<Bytes> + Send + Sync>;

/// How listener shards are run.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Shards per feed (usually the number of worker threads).
    pub shards: usize,
    /// A socket that accepts nothing for this long is closed.
    pub stall: Duration,
    /// Flips when the node drains.
    pub shutdown: watch::Receiver<bool>,
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
                    last_seq: start_seq,
                    catchup: catchup.clone(),
                    farewell: farewell.clone(),
                    stall,
                    size: size.clone(),
                    sent: metrics::counter!(FRAMES_SENT, "protocol" => protocol),
                    dropped: metrics::counter!(FRAMES_DROPPED, "protocol" => protocol),
                    stalled: metrics::counter!(STALLED_CONNECTIONS),
                };
                tokio::spawn(shard.run(shutdown.clone()));
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

/// A listener inside a shard.
struct Conn {
    stream: TcpStream,
    queue: VecDeque<(Bytes, u64)>,
    /// Bytes of the front message already written.
    offset: usize,
    queued_bytes: usize,
    /// When the socket last refused bytes while some were queued.
    blocked_since: Option<Instant>,
    _guard: ListenerGuard,
}

enum Flush {
    Done,
    Blocked,
    Dead,
}

impl Conn {
    fn enqueue(&mut self, bytes: Bytes, frames: u64, dropped: &metrics::Counter) {
        self.queued_bytes += bytes.len();
        self.queue.push_back((bytes, frames));
        // Skip ahead: drop whole messages after the one being written.
        while self.queued_bytes > MAX_BACKLOG_BYTES && self.queue.len() > 1 {
            if let Some((old, frames)) = self.queue.remove(1) {
                self.queued_bytes -= old.len();
                dropped.increment(frames);
            }
        }
    }

    /// Writes what the socket takes now, without waiting.
    fn flush(&mut self, now: Instant, sent: &metrics::Counter) -> Flush {
        while let Some((front, frames)) = self.queue.front() {
            match self.stream.try_write(&front[self.offset..]) {
                Ok(0) => return Flush::Dead,
                Ok(n) => {
                    self.offset += n;
                    if self.offset == front.len() {
                        sent.increment(*frames);
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
}

struct Shard {
    feed: broadcast::Receiver<WireMessage>,
    joins: mpsc::Receiver<Joiner>,
    conns: Vec<Conn>,
    last_seq: u64,
    catchup: Catchup,
    farewell: Farewell,
    stall: Duration,
    size: Arc<AtomicUsize>,
    sent: metrics::Counter,
    dropped: metrics::Counter,
    stalled: metrics::Counter,
}

impl Shard {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut joins_open = true;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.farewell_all(self.farewell.shutdown.clone()).await;
                    return;
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
                _ = housekeeping.tick() => self.sweep(None),
            }
        }
    }

    fn add(&mut self, joiner: Joiner) {
        let mut conn = Conn {
            stream: joiner.stream,
            queue: VecDeque::new(),
            offset: 0,
            queued_bytes: 0,
            blocked_since: None,
            _guard: joiner.guard,
        };
        for bytes in joiner.first.into_iter().chain((self.catchup)(self.last_seq)) {
            conn.queued_bytes += bytes.len();
            conn.queue.push_back((bytes, 0));
        }
        if !matches!(conn.flush(Instant::now(), &self.sent), Flush::Dead) {
            self.conns.push(conn);
        } else {
            self.size.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn broadcast(&mut self, msg: WireMessage) {
        self.last_seq = msg.seq;
        for conn in &mut self.conns {
            conn.enqueue(msg.bytes.clone(), msg.frames, &self.dropped);
        }
        self.sweep(Some(()));
    }

    /// Flushes every socket (or only blocked ones for housekeeping) and drops dead or stalled ones.
    fn sweep(&mut self, all: Option<()>) {
        let now = Instant::now();
        let before = self.conns.len();
        let (sent, stalled, stall) = (&self.sent, &self.stalled, self.stall);
        self.conns.retain_mut(|conn| {
            if all.is_none() && conn.queue.is_empty() {
                return true;
            }
            match conn.flush(now, sent) {
                Flush::Done => true,
                Flush::Dead => false,
                Flush::Blocked => {
                    let stuck = conn.blocked_since.is_some_and(|t| now.duration_since(t) >= stall);
                    if stuck {
                        stalled.increment(1);
                    }
                    !stuck
                }
            }
        });
        let gone = before - self.conns.len();
        if gone > 0 {
            self.size.fetch_sub(gone, Ordering::Relaxed);
        }
    }

    /// Sends a last message to everyone (best effort, bounded by a second) and closes.
    async fn farewell_all(&mut self, last: Bytes) {
        let deadline = Instant::now() + Duration::from_secs(1);
        for conn in &mut self.conns {
            conn.enqueue(last.clone(), 0, &self.dropped);
        }
        while !self.conns.is_empty() && Instant::now() < deadline {
            let now = Instant::now();
            let sent = &self.sent;
            self.conns.retain_mut(|c| matches!(c.flush(now, sent), Flush::Blocked));
            if !self.conns.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.size.store(0, Ordering::Relaxed);
        self.conns.clear();
    }
}
