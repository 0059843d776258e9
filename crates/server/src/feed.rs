//! Fan-out of one space's program stream to every listener.
//!
//! The media engine publishes each encoded frame once; listeners hold broadcast receivers over
//! shared `Bytes`, so a frame costs the same memory for one listener as for ten thousand. A
//! listener that falls behind finds its receiver lagged and skips ahead; nobody waits for it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use tokio::sync::broadcast;
use townhall_core::SpaceId;

use crate::metrics::LISTENERS;

/// WebSocket listeners may ask for 1 to this many frames per message (up to 100 ms).
pub const MAX_WS_BATCH: usize = 5;

/// Listening protocols, for counts and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Binary Opus frames over WebSocket.
    Ws,
    /// Ogg/Opus over HTTP.
    Ogg,
}

impl Protocol {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Ws => "ws",
            Protocol::Ogg => "ogg",
        }
    }
}

/// The space has ended (or is ending): nothing more to subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedEnded;

/// What a new Ogg listener receives: headers, recent pages, then the live pages.
pub struct OggSubscription {
    /// ID and comment header pages.
    pub headers: Bytes,
    /// The last pages, so a player can start at once.
    pub recent: Vec<Bytes>,
    /// Live pages from now on.
    pub live: broadcast::Receiver<Bytes>,
}

struct Channels {
    /// One channel per batch size (index 0 = 1 frame per message).
    ws: [broadcast::Sender<Message>; MAX_WS_BATCH],
    ogg: broadcast::Sender<Bytes>,
    ogg_recent: VecDeque<Bytes>,
}

/// One space's program stream, as listeners see it.
pub struct ProgramFeed {
    space: SpaceId,
    ogg_headers: Bytes,
    ogg_burst_pages: usize,
    channels: Mutex<Option<Channels>>,
    ws_listeners: AtomicUsize,
    ogg_listeners: AtomicUsize,
}

impl ProgramFeed {
    /// A feed whose Ogg listeners start with `ogg_headers` and up to `ogg_burst_pages` pages.
    pub fn new(space: SpaceId, ogg_headers: Bytes, ogg_burst_pages: usize) -> ProgramFeed {
        // About two seconds of buffer per channel: a listener further behind than that skips.
        let ws = std::array::from_fn(|i| broadcast::channel(100 / (i + 1) + 8).0);
        let channels = Channels {
            ws,
            ogg: broadcast::channel(32).0,
            ogg_recent: VecDeque::with_capacity(ogg_burst_pages + 1),
        };
        ProgramFeed {
            space,
            ogg_headers,
            ogg_burst_pages,
            channels: Mutex::new(Some(channels)),
            ws_listeners: AtomicUsize::new(0),
            ogg_listeners: AtomicUsize::new(0),
        }
    }

    /// The space this feed belongs to.
    pub fn space(&self) -> &SpaceId {
        &self.space
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Channels>> {
        // A panic while holding this lock cannot leave the channels inconsistent.
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Subscribes to WebSocket messages of `batch` frames each (1..=MAX_WS_BATCH).
    pub fn subscribe_ws(&self, batch: usize) -> Result<broadcast::Receiver<Message>, FeedEnded> {
        let idx = batch.clamp(1, MAX_WS_BATCH) - 1;
        self.lock()
            .as_ref()
            .map(|c| c.ws[idx].subscribe())
            .ok_or(FeedEnded)
    }

    /// Subscribes to the Ogg stream.
    pub fn subscribe_ogg(&self) -> Result<OggSubscription, FeedEnded> {
        let guard = self.lock();
        let c = guard.as_ref().ok_or(FeedEnded)?;
        Ok(OggSubscription {
            headers: self.ogg_headers.clone(),
            recent: c.ogg_recent.iter().cloned().collect(),
            live: c.ogg.subscribe(),
        })
    }

    /// Which WebSocket batch sizes have listeners (index 0 = batch of 1).
    pub fn ws_batches_in_use(&self) -> [bool; MAX_WS_BATCH] {
        let guard = self.lock();
        match guard.as_ref() {
            Some(c) => std::array::from_fn(|i| c.ws[i].receiver_count() > 0),
            None => [false; MAX_WS_BATCH],
        }
    }

    /// Publishes a batch to the WebSocket listeners of that batch size.
    pub fn publish_ws(&self, batch: usize, msg: Bytes) {
        if let Some(c) = self.lock().as_ref() {
            let _ = c.ws[batch.clamp(1, MAX_WS_BATCH) - 1].send(Message::Binary(msg));
        }
    }

    /// Publishes a JSON event to every WebSocket listener.
    pub fn publish_event(&self, json: Utf8Bytes) {
        if let Some(c) = self.lock().as_ref() {
            for tx in &c.ws {
                if tx.receiver_count() > 0 {
                    let _ = tx.send(Message::Text(json.clone()));
                }
            }
        }
    }

    /// Publishes an Ogg page and remembers it for the next listeners' burst.
    pub fn publish_ogg(&self, page: Bytes) {
        if let Some(c) = self.lock().as_mut() {
            if self.ogg_burst_pages > 0 {
                if c.ogg_recent.len() >= self.ogg_burst_pages {
                    c.ogg_recent.pop_front();
                }
                c.ogg_recent.push_back(page.clone());
            }
            let _ = c.ogg.send(page);
        }
    }

    /// Closes every channel: listeners drain what they have, then see the end.
    pub fn close(&self) {
        self.lock().take();
    }

    /// Whether the feed was closed.
    pub fn is_closed(&self) -> bool {
        self.lock().is_none()
    }

    fn counter(&self, protocol: Protocol) -> &AtomicUsize {
        match protocol {
            Protocol::Ws => &self.ws_listeners,
            Protocol::Ogg => &self.ogg_listeners,
        }
    }

    /// Listeners connected over `protocol`.
    pub fn listeners(&self, protocol: Protocol) -> usize {
        self.counter(protocol).load(Ordering::Relaxed)
    }

    /// Counts a listener in until the returned guard drops.
    pub fn count_listener(self: &std::sync::Arc<Self>, protocol: Protocol) -> ListenerGuard {
        let n = self.counter(protocol).fetch_add(1, Ordering::Relaxed) + 1;
        self.report(protocol, n);
        metrics::counter!(crate::metrics::JOINS, "protocol" => protocol.label()).increment(1);
        ListenerGuard {
            feed: self.clone(),
            protocol,
        }
    }

    fn report(&self, protocol: Protocol, n: usize) {
        metrics::gauge!(LISTENERS, "space" => self.space.to_string(), "protocol" => protocol.label())
            .set(n as f64);
    }
}

/// Keeps a listener counted while it lives.
pub struct ListenerGuard {
    feed: std::sync::Arc<ProgramFeed>,
    protocol: Protocol,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        let n = self
            .feed
            .counter(self.protocol)
            .fetch_sub(1, Ordering::Relaxed)
            - 1;
        self.feed.report(self.protocol, n);
    }
}
