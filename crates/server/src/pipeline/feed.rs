//! One space's program stream, as listeners receive it.
//!
//! The media engine publishes each batch or page once, already framed for the wire (a WebSocket
//! frame, or Ogg pages). Listener sockets are served by [`fanout`](crate::pipeline::fanout) shards that write
//! those shared bytes to every socket; a frame costs the same memory for one listener as for ten
//! thousand.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::broadcast;
use townhall_core::SpaceId;

use townhall_core::stats::ListenerKey;

use crate::metrics::LISTENERS;
use crate::pipeline::audience::Audience;
use crate::pipeline::events::ListenerEvent;
use crate::pipeline::fanout::{Catchup, Fanout, FanoutConfig, Farewell, WireMessage};

/// WebSocket listeners may ask for 1 to this many frames per message (up to 100 ms).
pub const MAX_WS_BATCH: usize = 5;

/// Program frames kept for listeners that resume by frame number (`from=` on a one-frame
/// WebSocket): 5 s, longer than an edge relay's longest reconnect pause.
pub const RESUME_FRAMES: usize = 250;

/// Caption events kept among the frames for resuming listeners, at most (they are a few per
/// phrase; a relay that lost its link gets those it missed with the frames).
const RESUME_EVENTS: usize = 64;

/// Program audio kept in Ogg pages for clips of the live stream: a minute, plus the pre-roll a
/// clip starts with and a page to cut on (see [`ProgramFeed::recent_pages`]).
pub const CLIP_RING_MS: u64 = 60_000;

/// [`CLIP_RING_MS`] in frames, with 100 ms more for the clip's pre-roll (80 ms).
const CLIP_RING_FRAMES: u64 = (CLIP_RING_MS + 100) / 20;

/// A one-frame WebSocket message kept for resuming listeners: a program frame, or a caption
/// event published between two frames.
struct Resumable {
    /// The program frame's number (for an event: the number of the frame after it).
    frame_seq: u64,
    /// Whether this is an event, not a frame.
    event: bool,
    /// Its position in the one-frame channel, if it was sent there (nobody listened otherwise).
    feed_seq: Option<u64>,
    /// The complete WebSocket frame.
    bytes: Bytes,
}

/// Listening protocols, for counts and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Binary Opus frames over WebSocket.
    Ws,
    /// Ogg/Opus over HTTP.
    Ogg,
    /// WHEP (WebRTC): RTP packets of the same Opus frames.
    Webrtc,
}

impl Protocol {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Ws => "ws",
            Protocol::Ogg => "ogg",
            Protocol::Webrtc => "webrtc",
        }
    }

    /// The protocol as the statistics name it.
    pub fn stats(self) -> townhall_core::stats::Protocol {
        match self {
            Protocol::Ws => townhall_core::stats::Protocol::Ws,
            Protocol::Ogg => townhall_core::stats::Protocol::Ogg,
            Protocol::Webrtc => townhall_core::stats::Protocol::Webrtc,
        }
    }
}

/// The space has ended (or is ending): nothing more to subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedEnded;

/// A WebSocket frame opcode, for pre-framed server messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsOpcode {
    /// UTF-8 text.
    Text = 0x1,
    /// Binary.
    Binary = 0x2,
    /// Close.
    Close = 0x8,
}

/// Frames `payload` as one unmasked server-to-client WebSocket frame.
pub fn ws_frame(opcode: WsOpcode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x80 | opcode as u8);
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= 0xFFFF => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

/// A close frame with a status code and reason.
pub fn ws_close(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    ws_frame(WsOpcode::Close, &payload)
}

struct Channel {
    tx: broadcast::Sender<WireMessage>,
    seq: u64,
    fanout: Option<Arc<Fanout>>,
}

impl Channel {
    fn new(capacity: usize) -> Channel {
        Channel { tx: broadcast::channel(capacity).0, seq: 0, fanout: None }
    }

    fn send(&mut self, bytes: Bytes, frames: u64) -> u64 {
        self.seq += 1;
        let _ = self.tx.send(WireMessage { seq: self.seq, bytes, frames });
        self.seq
    }
}

struct Channels {
    /// One channel per batch size (index 0 = 1 frame per message).
    ws: [Channel; MAX_WS_BATCH],
    ogg: Channel,
    ogg_recent: VecDeque<(u64, Bytes)>,
    resume: VecDeque<Resumable>,
    /// Events among `resume`.
    resume_events: usize,
    /// The number of the next program frame (the one after the last published).
    next_frame: u64,
    /// The last program frame published: its number and when it was mixed (µs since the
    /// epoch), where the space's program clock reads its numbers.
    last_frame: Option<(u32, u64)>,
    /// The last minute of Ogg pages, with their frame counts (the same shared bytes the Ogg
    /// listeners get: keeping them costs no copy, only the memory of a minute of audio).
    clip_ring: VecDeque<(u64, Bytes)>,
    clip_ring_frames: u64,
}

impl Channels {
    /// Keeps a one-frame message for resuming listeners: the last [`RESUME_FRAMES`] frames and
    /// the caption events among them (at most [`RESUME_EVENTS`]).
    fn keep(&mut self, kept: Resumable) {
        self.resume_events += usize::from(kept.event);
        self.resume.push_back(kept);
        while self.resume.len() - self.resume_events > RESUME_FRAMES
            || self.resume_events > RESUME_EVENTS
        {
            let Some(old) = self.resume.pop_front() else { break };
            self.resume_events -= usize::from(old.event);
        }
    }
}

/// One space's program stream, as listeners see it.
pub struct ProgramFeed {
    space: SpaceId,
    metric_label: String,
    ogg_headers: Bytes,
    ogg_burst_pages: usize,
    fanout: FanoutConfig,
    channels: Mutex<Option<Channels>>,
    ws_listeners: AtomicUsize,
    ogg_listeners: AtomicUsize,
    webrtc_listeners: AtomicUsize,
    /// Who listened, how long, and what they did (the hosts' statistics).
    audience: Arc<Audience>,
}

impl ProgramFeed {
    /// A feed whose Ogg listeners start with `ogg_headers` and up to `ogg_burst_pages` pages.
    pub fn new(
        space: SpaceId,
        ogg_headers: Bytes,
        ogg_burst_pages: usize,
        fanout: FanoutConfig,
    ) -> ProgramFeed {
        // About two seconds of buffer per channel: a shard further behind than that skips.
        let channels = Channels {
            ws: std::array::from_fn(|i| Channel::new(100 / (i + 1) + 16)),
            ogg: Channel::new(64),
            ogg_recent: VecDeque::with_capacity(ogg_burst_pages + 1),
            resume: VecDeque::with_capacity(RESUME_FRAMES),
            resume_events: 0,
            next_frame: 0,
            last_frame: None,
            clip_ring: VecDeque::new(),
            clip_ring_frames: 0,
        };
        ProgramFeed {
            metric_label: space.to_string(),
            space,
            ogg_headers,
            ogg_burst_pages,
            fanout,
            channels: Mutex::new(Some(channels)),
            ws_listeners: AtomicUsize::new(0),
            ogg_listeners: AtomicUsize::new(0),
            webrtc_listeners: AtomicUsize::new(0),
            audience: Arc::new(Audience::new()),
        }
    }

    /// The space's audience statistics.
    pub fn audience(&self) -> &Arc<Audience> {
        &self.audience
    }

    /// Names the space in `/metrics` by `label` instead of its id (private spaces: their ids
    /// are not for everyone who can scrape).
    pub fn with_metric_label(mut self, label: String) -> ProgramFeed {
        self.metric_label = label;
        self
    }

    /// How `/metrics` names this feed's space.
    pub fn metric_label(&self) -> &str {
        &self.metric_label
    }

    /// The space this feed belongs to.
    pub fn space(&self) -> &SpaceId {
        &self.space
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Channels>> {
        // A panic while holding this lock cannot leave the channels inconsistent.
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The shards serving WebSocket listeners of `batch` frames per message. One-frame
    /// listeners that name a frame to resume from get the kept frames from there on (see
    /// [`RESUME_FRAMES`]), ending exactly where their live messages begin.
    pub fn ws_fanout(self: &Arc<Self>, batch: usize) -> Result<Arc<Fanout>, FeedEnded> {
        let idx = batch.clamp(1, MAX_WS_BATCH) - 1;
        let weak: Weak<ProgramFeed> = Arc::downgrade(self);
        let mut guard = self.lock();
        let channels = guard.as_mut().ok_or(FeedEnded)?;
        let channel = &mut channels.ws[idx];
        let start_seq = channel.seq;
        let cfg = &self.fanout;
        let fanout = channel.fanout.get_or_insert_with(|| {
            let ended = ListenerEvent::State { state: townhall_core::SpaceState::Ended };
            let shutdown = ListenerEvent::Bye {
                reason: "server_shutdown",
                reconnect_after_ms: ListenerEvent::DRAIN_RECONNECT_AFTER_MS,
            };
            let farewell = Farewell {
                ended: concat(&[
                    ws_frame(WsOpcode::Text, ended.to_json().as_bytes()),
                    ws_close(1000, "space ended"),
                ]),
                shutdown: concat(&[
                    ws_frame(WsOpcode::Text, shutdown.to_json().as_bytes()),
                    ws_close(1001, "server shutting down"),
                ]),
            };
            let catchup: Catchup = if idx == 0 {
                Arc::new(move |last_seq, from| match (from, weak.upgrade()) {
                    (Some(from), Some(feed)) => feed.resume_from(from, last_seq),
                    _ => Vec::new(),
                })
            } else {
                Arc::new(|_, _| Vec::new())
            };
            Arc::new(Fanout::start(&channel.tx, start_seq, catchup, farewell, "ws", cfg))
        });
        Ok(fanout.clone())
    }

    /// The shards serving Ogg listeners. New listeners get the recent pages the shard has not
    /// yet passed, so their stream continues without a gap or a repeat.
    pub fn ogg_fanout(self: &Arc<Self>) -> Result<Arc<Fanout>, FeedEnded> {
        let weak: Weak<ProgramFeed> = Arc::downgrade(self);
        let mut guard = self.lock();
        let channels = guard.as_mut().ok_or(FeedEnded)?;
        let start_seq = channels.ogg.seq;
        let cfg = &self.fanout;
        let tx = channels.ogg.tx.clone();
        let fanout = channels.ogg.fanout.get_or_insert_with(|| {
            let catchup: Catchup = Arc::new(move |last_seq, _| {
                weak.upgrade().map_or_else(Vec::new, |f| f.ogg_recent(last_seq))
            });
            let farewell = Farewell { ended: Bytes::new(), shutdown: Bytes::new() };
            Arc::new(Fanout::start(&tx, start_seq, catchup, farewell, "ogg", cfg))
        });
        Ok(fanout.clone())
    }

    /// Subscribes one listener directly to the Ogg pages (for a request that arrived on a reused
    /// HTTP connection and so cannot join a shard): the recent pages, then live ones.
    pub fn subscribe_ogg(
        &self,
    ) -> Result<(Vec<Bytes>, broadcast::Receiver<WireMessage>), FeedEnded> {
        let guard = self.lock();
        let c = guard.as_ref().ok_or(FeedEnded)?;
        let recent = c.ogg_recent.iter().map(|(_, page)| page.clone()).collect();
        Ok((recent, c.ogg.tx.subscribe()))
    }

    /// ID and comment header pages of the Ogg stream.
    pub fn ogg_headers(&self) -> Bytes {
        self.ogg_headers.clone()
    }

    /// The recent Ogg pages up to and including feed position `last_seq`.
    fn ogg_recent(&self, last_seq: u64) -> Vec<Bytes> {
        let guard = self.lock();
        let Some(c) = guard.as_ref() else { return Vec::new() };
        c.ogg_recent
            .iter()
            .filter(|(seq, _)| *seq <= last_seq)
            .map(|(_, page)| page.clone())
            .collect()
    }

    /// The kept one-frame messages from program frame `from` on that the one-frame channel
    /// sent at or before its position `last_seq` (or never sent: nobody listened then).
    fn resume_from(&self, from: u64, last_seq: u64) -> Vec<Bytes> {
        let guard = self.lock();
        let Some(c) = guard.as_ref() else { return Vec::new() };
        c.resume
            .iter()
            .filter(|r| r.frame_seq >= from && r.feed_seq.is_none_or(|s| s <= last_seq))
            .map(|r| r.bytes.clone())
            .collect()
    }

    /// Which WebSocket batch sizes have listeners (index 0 = batch of 1).
    pub fn ws_batches_in_use(&self) -> [bool; MAX_WS_BATCH] {
        let guard = self.lock();
        match guard.as_ref() {
            Some(c) => std::array::from_fn(|i| c.ws[i].tx.receiver_count() > 0),
            None => [false; MAX_WS_BATCH],
        }
    }

    /// Publishes a program batch (the payload of one binary message) of `frames` frames.
    pub fn publish_ws(&self, batch: usize, payload: &[u8], frames: u64) {
        let frame = ws_frame(WsOpcode::Binary, payload);
        if let Some(c) = self.lock().as_mut() {
            c.ws[batch.clamp(1, MAX_WS_BATCH) - 1].send(frame, frames);
        }
    }

    /// Publishes program frame `frame_seq`, mixed at `mixed_at_us`, as a one-frame message
    /// (`payload`): sent to one-frame listeners if there are any, and kept for those who resume
    /// (every frame is kept, listened to or not, so a relay that lost its link finds what it
    /// missed).
    pub fn publish_single(&self, frame_seq: u32, mixed_at_us: u64, payload: &[u8], in_use: bool) {
        let bytes = ws_frame(WsOpcode::Binary, payload);
        if let Some(c) = self.lock().as_mut() {
            let feed_seq = in_use.then(|| c.ws[0].send(bytes.clone(), 1));
            c.last_frame = Some((frame_seq, mixed_at_us));
            let frame_seq = u64::from(frame_seq);
            c.next_frame = frame_seq + 1;
            c.keep(Resumable { frame_seq, event: false, feed_seq, bytes });
        }
    }

    /// The number of the next program frame (before the first: the number it will have, as
    /// [`ProgramFeed::starting_at`] set it, or 0).
    pub fn next_frame(&self) -> u64 {
        self.lock().as_ref().map_or(0, |c| c.next_frame)
    }

    /// The feed of a program whose first frame is numbered `first` (a space taken over from
    /// another origin goes on with its program clock).
    pub fn starting_at(self, first: u32) -> ProgramFeed {
        if let Some(c) = self.lock().as_mut() {
            c.next_frame = u64::from(first);
        }
        self
    }

    /// The last program frame published: its number and when it was mixed (µs since the
    /// epoch); `None` before the first.
    pub fn last_frame(&self) -> Option<(u32, u64)> {
        self.lock().as_ref().and_then(|c| c.last_frame)
    }

    /// Publishes a caption event to every WebSocket listener, and keeps it among the frames for
    /// one-frame listeners that resume (an edge's relay whose link broke gets the cues it
    /// missed, in order with the frames).
    pub fn publish_caption_event(&self, json: &str) {
        let frame = ws_frame(WsOpcode::Text, json.as_bytes());
        if let Some(c) = self.lock().as_mut() {
            let mut feed_seq = None;
            for (i, channel) in c.ws.iter_mut().enumerate() {
                if channel.tx.receiver_count() > 0 {
                    let seq = channel.send(frame.clone(), 0);
                    if i == 0 {
                        feed_seq = Some(seq);
                    }
                }
            }
            let frame_seq = c.next_frame;
            c.keep(Resumable { frame_seq, event: true, feed_seq, bytes: frame });
        }
    }

    /// Publishes an event for one-frame listeners only (edges' relays listen there; players
    /// batch frames), kept for those that resume like [`publish_caption_event`]'s.
    ///
    /// [`publish_caption_event`]: Self::publish_caption_event
    pub fn publish_relay_event(&self, json: &str) {
        let frame = ws_frame(WsOpcode::Text, json.as_bytes());
        if let Some(c) = self.lock().as_mut() {
            let channel = &mut c.ws[0];
            let feed_seq =
                (channel.tx.receiver_count() > 0).then(|| channel.send(frame.clone(), 0));
            let frame_seq = c.next_frame;
            c.keep(Resumable { frame_seq, event: true, feed_seq, bytes: frame });
        }
    }

    /// Publishes a JSON event to every WebSocket listener.
    pub fn publish_event(&self, json: &str) {
        let frame = ws_frame(WsOpcode::Text, json.as_bytes());
        if let Some(c) = self.lock().as_mut() {
            for channel in c.ws.iter_mut().filter(|ch| ch.tx.receiver_count() > 0) {
                channel.send(frame.clone(), 0);
            }
        }
    }

    /// Publishes an Ogg page of `frames` frames and remembers it for new listeners' burst.
    pub fn publish_ogg(&self, page: Bytes, frames: u64) {
        if let Some(c) = self.lock().as_mut() {
            let seq = c.ogg.send(page.clone(), frames);
            c.clip_ring.push_back((frames, page.clone()));
            c.clip_ring_frames += frames;
            // Drop the oldest page while the others still hold the whole minute.
            while let Some((oldest, _)) = c.clip_ring.front()
                && c.clip_ring_frames - oldest >= CLIP_RING_FRAMES
            {
                c.clip_ring_frames -= oldest;
                c.clip_ring.pop_front();
            }
            if self.ogg_burst_pages > 0 {
                if c.ogg_recent.len() >= self.ogg_burst_pages {
                    c.ogg_recent.pop_front();
                }
                c.ogg_recent.push_back((seq, page));
            }
        }
    }

    /// The Ogg stream's header pages and its pages of (at least) the last [`CLIP_RING_MS`],
    /// oldest first, for cutting a clip of the live stream; `None` once the feed is closed.
    pub fn recent_pages(&self) -> Option<(Bytes, Vec<Bytes>)> {
        let guard = self.lock();
        let c = guard.as_ref()?;
        Some((self.ogg_headers.clone(), c.clip_ring.iter().map(|(_, p)| p.clone()).collect()))
    }

    /// Closes every channel: shards send their farewell and close their sockets.
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
            Protocol::Webrtc => &self.webrtc_listeners,
        }
    }

    /// Listeners connected over every protocol.
    pub fn total_listeners(&self) -> usize {
        [Protocol::Ws, Protocol::Ogg, Protocol::Webrtc].iter().map(|p| self.listeners(*p)).sum()
    }

    /// Listeners connected over `protocol`.
    pub fn listeners(&self, protocol: Protocol) -> usize {
        self.counter(protocol).load(Ordering::Relaxed)
    }

    /// Counts a listener (`key`: who, as the statistics know them) in until the returned guard
    /// drops.
    pub fn count_listener(self: &Arc<Self>, protocol: Protocol, key: ListenerKey) -> ListenerGuard {
        let joined_at = self.audience.joined(protocol.stats(), key);
        let n = self.counter(protocol).fetch_add(1, Ordering::Relaxed) + 1;
        self.report(protocol, n);
        metrics::counter!(crate::metrics::JOINS, "protocol" => protocol.label()).increment(1);
        if let Some(watch) = &self.fanout.shield {
            watch.listener_joined();
        }
        ListenerGuard {
            feed: self.clone(),
            protocol,
            since: std::time::Instant::now(),
            joined_at,
            hold: None,
        }
    }

    fn report(&self, protocol: Protocol, n: usize) {
        metrics::gauge!(LISTENERS, "space" => self.metric_label.clone(), "protocol" => protocol.label())
            .set(n as f64);
    }
}

fn concat(parts: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    parts.iter().for_each(|p| out.put_slice(p));
    out.freeze()
}

/// Keeps a listener counted while it lives.
pub struct ListenerGuard {
    feed: Arc<ProgramFeed>,
    protocol: Protocol,
    since: std::time::Instant,
    /// When they joined, for the statistics.
    joined_at: townhall_core::UnixTime,
    /// The listener's place in its identity's connection count, if it came with a token.
    hold: Option<Box<dyn Send + Sync>>,
}

impl ListenerGuard {
    /// Keeps `hold` (the identity's connection count) for as long as this listener stays.
    pub fn holding<H: Send + Sync + 'static>(mut self, hold: Option<H>) -> ListenerGuard {
        self.hold = hold.map(|h| Box::new(h) as Box<dyn Send + Sync>);
        self
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        let n = self.feed.counter(self.protocol).fetch_sub(1, Ordering::Relaxed) - 1;
        self.feed.report(self.protocol, n);
        self.feed.audience.left(self.joined_at);
        if let Some(watch) = &self.feed.fanout.shield {
            watch.listener_left(self.since.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resuming_listener_gets_the_caption_events_among_its_frames() {
        let feed = ProgramFeed::new(
            SpaceId::new("r").expect("id"),
            Bytes::new(),
            0,
            FanoutConfig {
                shards: 1,
                stall: std::time::Duration::from_secs(60),
                shutdown: tokio::sync::watch::channel(false).1,
                drain: tokio::sync::watch::channel(None).1,
                shield: None,
            },
        );
        assert_eq!(feed.next_frame(), 0);
        for seq in 0..1_000u32 {
            feed.publish_single(seq, u64::from(seq) * 20_000, &[seq as u8], false);
            if seq % 100 == 50 {
                feed.publish_caption_event(&format!("{{\"n\":{seq}}}"));
            }
        }
        feed.publish_relay_event("{\"n\":\"settled\"}");
        assert_eq!(feed.next_frame(), 1_000);
        assert_eq!(feed.last_frame(), Some((999, 999 * 20_000)));
        let kept = feed.resume_from(850, u64::MAX);
        let texts: Vec<usize> = kept
            .iter()
            .enumerate()
            .filter(|(_, b)| b[0] == 0x80 | WsOpcode::Text as u8)
            .map(|(i, _)| i)
            .collect();
        // Frames 850..1000 (150), the events after frames 850 and 950, the settled one last.
        assert_eq!(kept.len(), 153);
        assert_eq!(texts, vec![1, 102, 152], "in order with the frames");
        // Frames kept are bounded as before, events too.
        {
            let c = feed.lock();
            let c = c.as_ref().expect("open");
            assert_eq!(c.resume.len() - c.resume_events, RESUME_FRAMES);
        }
        for _ in 0..1_000 {
            feed.publish_relay_event("{}");
        }
        let c = feed.lock();
        assert!(c.as_ref().expect("open").resume_events <= RESUME_EVENTS);
    }

    #[test]
    fn the_clip_ring_keeps_a_minute_of_pages_and_no_more() {
        let feed = ProgramFeed::new(
            SpaceId::new("ring").expect("id"),
            Bytes::from_static(b"headers"),
            5,
            FanoutConfig {
                shards: 1,
                stall: std::time::Duration::from_secs(60),
                shutdown: tokio::sync::watch::channel(false).1,
                drain: tokio::sync::watch::channel(None).1,
                shield: None,
            },
        );
        // Pages of 10 frames (200 ms) for five minutes.
        for n in 0..1_500u32 {
            feed.publish_ogg(Bytes::from(n.to_be_bytes().to_vec()), 10);
        }
        let (headers, pages) = feed.recent_pages().expect("open");
        assert_eq!(&headers[..], b"headers");
        let frames = pages.len() as u64 * 10;
        assert!((CLIP_RING_FRAMES..CLIP_RING_FRAMES + 10).contains(&frames), "{frames}");
        assert_eq!(&pages.last().expect("a page")[..], &1_499u32.to_be_bytes());
        feed.close();
        assert!(feed.recent_pages().is_none());
    }

    #[test]
    fn frames_use_the_right_length_encoding() {
        for (len, header) in [(0usize, 2usize), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let f = ws_frame(WsOpcode::Binary, &vec![0u8; len]);
            assert_eq!(f.len(), len + header, "payload {len}");
            assert_eq!(f[0], 0x82);
        }
        let close = ws_close(1000, "bye");
        assert_eq!(&close[..], &[0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']);
    }
}
