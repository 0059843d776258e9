//! The media engine: one dedicated thread that runs every live space's program on a 20 ms clock.
//! A space's program comes from its mixer (on the node that owns the space) or from a relay of
//! another node's program (on an edge): either way the same sinks carry it to listeners.
//!
//! The mixer path is isolated from listener handling (docs/design.md §2.6): it runs on its own OS
//! thread, not on the async workers that serve HTTP and WebSocket, and talks to them only through
//! bounded channels. A flood of listeners can slow their own delivery, never the program stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use townhall_core::SpaceId;
use townhall_media::wire::ProgramBatchWriter;
use townhall_media::{
    Mixer, OggOpusMuxer, ProgramFrame, SourceId, SpeakerFrame, VoiceActivity, VoiceConfig,
};

use crate::clock;
use crate::metrics::{MIXER_LATE_TICKS, MIXER_TICKS};
use crate::pipeline::feed::ProgramFeed;
use crate::pipeline::hls_store::HlsStore;
use crate::pipeline::program::ProgramPacket;
use crate::pipeline::sinks::{FeedSink, ProgramSink, RtcSink, SinkName, view_of};
use crate::pipeline::talking::Talking;

const TICK: Duration = Duration::from_millis(townhall_media::FRAME_MS as u64);
/// Further behind than this, the engine stops catching up and resynchronises its clock.
const MAX_CATCH_UP: Duration = Duration::from_millis(200);
/// Listener counts are pushed to WebSocket listeners at most this often (in ticks).
const COUNT_EVERY_TICKS: u64 = 50;

/// What speaker connections send to a space's mixer.
#[derive(Debug)]
pub enum Ingest {
    /// A speaker joined; `returns` receives its mix-minus batches, if it wants them.
    Join {
        /// The speaker's source id.
        source: SourceId,
        /// Where to send the speaker's mix-minus.
        returns: Option<mpsc::Sender<Bytes>>,
    },
    /// One frame from a speaker.
    Frame {
        /// The speaker's source id.
        source: SourceId,
        /// The frame.
        frame: SpeakerFrame,
    },
    /// A speaker left.
    Leave {
        /// The speaker's source id.
        source: SourceId,
    },
    /// A moderator or the speaker muted or unmuted them: their audio is left out of the mix.
    Mute {
        /// The speaker's source id.
        source: SourceId,
        /// Muted or not.
        muted: bool,
    },
    /// Sets (or, with `None`, removes) the program sink called `name` (e.g. `recorder`).
    Sink {
        /// The sink's name: a space has at most one sink of each.
        name: SinkName,
        /// The sink, or `None` to remove it.
        sink: Option<Box<dyn ProgramSink>>,
    },
}

impl std::fmt::Debug for dyn ProgramSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgramSink")
    }
}

/// Relayed frames taken per tick at most: a relay that fell behind catches up over a few ticks
/// instead of flooding the sinks at once.
const RELAY_FRAMES_PER_TICK: usize = 10;

/// Where a space's program comes from.
enum Source {
    /// Mixed here from the speakers.
    Mixer(Box<Mixer>),
    /// Mixed elsewhere and relayed here (an edge): frames arrive ready to send.
    Relay(mpsc::Receiver<ProgramFrame>),
}

/// A space as the engine runs it.
pub struct SpaceMix {
    /// Where listeners subscribe (and the space's events go).
    pub feed: Arc<ProgramFeed>,
    source: Source,
    /// Speaker input.
    pub ingest: mpsc::Receiver<Ingest>,
    /// Every egress of the program, each offered the same frame (see [`ProgramSink`]).
    sinks: Vec<(SinkName, Box<dyn ProgramSink>)>,
    returns: HashMap<SourceId, mpsc::Sender<Bytes>>,
    ticks: u64,
    last_count: Option<usize>,
    /// Who is talking (from the mixer's levels), and their names.
    voice: VoiceActivity,
    talking: Option<Arc<Talking>>,
}

impl SpaceMix {
    /// Bundles what the engine needs to run a space mixed here.
    pub fn new(
        feed: Arc<ProgramFeed>,
        mixer: Mixer,
        ogg: OggOpusMuxer,
        hls: Arc<HlsStore>,
        ingest: mpsc::Receiver<Ingest>,
        rtc: mpsc::Sender<ProgramPacket>,
    ) -> SpaceMix {
        SpaceMix::with_source(feed, Source::Mixer(Box::new(mixer)), ogg, hls, ingest, rtc)
    }

    fn with_source(
        feed: Arc<ProgramFeed>,
        source: Source,
        ogg: OggOpusMuxer,
        hls: Arc<HlsStore>,
        ingest: mpsc::Receiver<Ingest>,
        rtc: mpsc::Sender<ProgramPacket>,
    ) -> SpaceMix {
        let sinks: Vec<(SinkName, Box<dyn ProgramSink>)> = vec![
            ("feed", Box::new(FeedSink::new(feed.clone(), ogg))),
            ("hls", Box::new(hls)),
            ("webrtc", Box::new(RtcSink { tx: rtc, feed: feed.clone() })),
        ];
        SpaceMix {
            feed,
            source,
            ingest,
            sinks,
            returns: HashMap::new(),
            ticks: 0,
            last_count: None,
            voice: VoiceActivity::new(VoiceConfig::default()),
            talking: None,
        }
    }

    /// A space whose program is mixed on another node and arrives on `frames` (an edge's relay),
    /// carried by the same sinks as a mixed one. Its `ingest` takes only sinks: it has no
    /// speakers.
    pub fn relayed(
        feed: Arc<ProgramFeed>,
        frames: mpsc::Receiver<ProgramFrame>,
        ogg: OggOpusMuxer,
        hls: Arc<HlsStore>,
        ingest: mpsc::Receiver<Ingest>,
        rtc: mpsc::Sender<ProgramPacket>,
    ) -> SpaceMix {
        SpaceMix::with_source(feed, Source::Relay(frames), ogg, hls, ingest, rtc)
    }

    /// Reports who is talking to `talking` and, on changes, to listeners as
    /// `{"type":"speaking","speakers":[...]}`.
    pub fn with_talking(mut self, talking: Arc<Talking>) -> SpaceMix {
        self.talking = Some(talking);
        self
    }

    fn detect_voices(&mut self, now_us: u64) {
        let Some(talking) = &self.talking else { return };
        let Source::Mixer(mixer) = &self.source else { return };
        let Some(sources) = self.voice.observe(mixer.levels(), now_us / 1_000) else {
            return;
        };
        let speakers = talking.update(&sources);
        let event = crate::pipeline::events::ListenerEvent::Speaking { speakers: &speakers };
        self.feed.publish_event(&event.to_json());
    }

    fn drain_ingest(&mut self) {
        while let Ok(event) = self.ingest.try_recv() {
            let Source::Mixer(mixer) = &mut self.source else {
                // A relayed space has no speakers: only its sinks change.
                if let Ingest::Sink { name, sink } = event {
                    self.set_sink(name, sink);
                }
                continue;
            };
            match event {
                Ingest::Join { source, returns } => {
                    if let Err(e) = mixer.add_source(source, returns.is_some()) {
                        tracing::warn!(space = %self.feed.space(), source, "cannot add speaker: {e}");
                        continue;
                    }
                    if let Some(tx) = returns {
                        self.returns.insert(source, tx);
                    }
                }
                Ingest::Frame { source, frame } => {
                    mixer.push(source, frame);
                }
                Ingest::Mute { source, muted } => {
                    mixer.set_muted(source, muted);
                }
                Ingest::Leave { source } => {
                    mixer.remove_source(source);
                    self.returns.remove(&source);
                }
                Ingest::Sink { name, sink } => self.set_sink(name, sink),
            }
        }
    }

    /// Sends the relayed frames waiting (a relayed space, between ticks).
    fn relay_now(&mut self) {
        for _ in 0..RELAY_FRAMES_PER_TICK {
            let Source::Relay(frames) = &mut self.source else { return };
            let Ok(frame) = frames.try_recv() else { return };
            self.publish(&frame, false);
        }
    }

    fn set_sink(&mut self, name: SinkName, sink: Option<Box<dyn ProgramSink>>) {
        self.sinks.retain(|(n, _)| *n != name);
        if let Some(sink) = sink {
            self.sinks.push((name, sink));
        }
    }

    /// Mixes one frame (or takes the relayed ones) and hands it to every egress.
    fn tick(&mut self, now_us: u64) {
        self.drain_ingest();
        match &mut self.source {
            Source::Mixer(mixer) => {
                let tick = mixer.tick(now_us);
                self.publish(&tick.program, false);
                self.detect_voices(now_us);
                for (source, frame) in &tick.returns {
                    if let Some(tx) = self.returns.get(source) {
                        let _ = tx.try_send(single_batch(frame));
                    }
                }
            }
            Source::Relay(_) => self.relay_now(),
        }
        self.ticks += 1;
        if self.ticks % COUNT_EVERY_TICKS == 1 {
            self.push_listener_count();
        }
    }

    /// Offers the frame to every sink; lets go of sinks that are done.
    fn publish(&mut self, frame: &ProgramFrame, last: bool) {
        self.sinks.retain_mut(|(_, sink)| sink.offer(frame, last));
    }

    fn push_listener_count(&mut self) {
        let count = self.feed.total_listeners();
        if self.last_count != Some(count) {
            self.last_count = Some(count);
            let event = crate::pipeline::events::ListenerEvent::Listeners { count };
            self.feed.publish_event(&event.to_json());
        }
    }

    /// Ends the stream: a last Ogg page marked end-of-stream, then the feed closes.
    fn finish(mut self, now_us: u64) {
        self.drain_ingest();
        let last = match &mut self.source {
            Source::Mixer(mixer) => Some(mixer.tick(now_us).program),
            Source::Relay(frames) => frames.try_recv().ok(),
        };
        if let Some(last) = last {
            self.publish(&last, true);
        }
        for (_, sink) in &mut self.sinks {
            sink.finish();
        }
    }
}

fn single_batch(frame: &ProgramFrame) -> Bytes {
    let mut writer = ProgramBatchWriter::new(1);
    writer.push(&view_of(frame)).unwrap_or_default()
}

enum Command {
    Add(Box<SpaceMix>),
    Remove(SpaceId),
    /// A relayed space has frames waiting: send them now, not at the next tick.
    Relayed(SpaceId),
    Stop,
}

/// Where an edge's relay hands a space's program frames: queued for the engine, which is woken
/// to send them at once (a relayed frame waits for no tick: the origin's clock already paced it).
#[derive(Clone)]
pub struct RelayInput {
    space: SpaceId,
    frames: mpsc::Sender<ProgramFrame>,
    wake: std_mpsc::Sender<Command>,
}

impl std::fmt::Debug for RelayInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayInput").field("space", &self.space).finish_non_exhaustive()
    }
}

impl RelayInput {
    /// Queues a frame; `false` when the queue is full (the frame is dropped: listeners see a
    /// gap in `seq`) or the space ended here.
    pub fn push(&self, frame: ProgramFrame) -> bool {
        self.frames.try_send(frame).is_ok()
    }

    /// Wakes the engine to send what was pushed.
    pub fn wake(&self) {
        let _ = self.wake.send(Command::Relayed(self.space.clone()));
    }

    /// Whether the space ended here (the engine let go of it).
    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }
}

/// Handle to the engine thread; dropping it stops the thread.
pub struct Engine {
    tx: std_mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the engine thread.
    pub fn start() -> std::io::Result<Engine> {
        let (tx, rx) = std_mpsc::channel();
        let thread =
            std::thread::Builder::new().name("townhall-mixer".into()).spawn(move || run(rx))?;
        Ok(Engine { tx, thread: Some(thread) })
    }

    /// Starts mixing a space.
    pub fn add(&self, space: SpaceMix) {
        let _ = self.tx.send(Command::Add(Box::new(space)));
    }

    /// Ends a space's stream.
    pub fn remove(&self, space: SpaceId) {
        let _ = self.tx.send(Command::Remove(space));
    }

    /// The input of a relayed space's `frames` (see [`SpaceMix::relayed`]).
    pub fn relay_input(&self, space: SpaceId, frames: mpsc::Sender<ProgramFrame>) -> RelayInput {
        RelayInput { space, frames, wake: self.tx.clone() }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(rx: std_mpsc::Receiver<Command>) {
    let mut spaces: HashMap<SpaceId, SpaceMix> = HashMap::new();
    let mut epoch = Instant::now();
    let mut ticks: u32 = 0;
    let ticks_counter = metrics::counter!(MIXER_TICKS);
    let late_counter = metrics::counter!(MIXER_LATE_TICKS);
    loop {
        let now_us = clock::now_us();
        for space in spaces.values_mut() {
            space.tick(now_us);
        }
        ticks_counter.increment(1);
        ticks += 1;
        let deadline = epoch + TICK * ticks;
        // Until the next tick, carry out commands as they come (relayed frames go out at once).
        loop {
            let now = Instant::now();
            let wait = deadline.saturating_duration_since(now);
            let command = if wait.is_zero() {
                match rx.try_recv() {
                    Ok(c) => c,
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => Command::Stop,
                }
            } else {
                match rx.recv_timeout(wait) {
                    Ok(c) => c,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => Command::Stop,
                }
            };
            match command {
                Command::Add(space) => {
                    let id = space.feed.space().clone();
                    spaces.insert(id, *space);
                }
                Command::Remove(id) => {
                    if let Some(space) = spaces.remove(&id) {
                        space.finish(clock::now_us());
                    }
                }
                Command::Relayed(id) => {
                    if let Some(space) = spaces.get_mut(&id) {
                        space.relay_now();
                    }
                }
                Command::Stop => {
                    let now = clock::now_us();
                    spaces.into_values().for_each(|s| s.finish(now));
                    return;
                }
            }
        }
        let now = Instant::now();
        if now.saturating_duration_since(deadline) > MAX_CATCH_UP {
            late_counter.increment(1);
            epoch = now;
            ticks = 0;
        } else if now.saturating_duration_since(deadline) > TICK {
            late_counter.increment(1);
        }
    }
}
