//! The media engine: one dedicated thread that runs every live space's mixer on a 20 ms clock.
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
    Mixer, OggOpusMuxer, ProgramFrame, ProgramFrameView, SourceId, SpeakerFrame, VoiceActivity,
    VoiceConfig,
};

use crate::clock;
use crate::metrics::{FRAMES_DROPPED, MIXER_LATE_TICKS, MIXER_TICKS};
use crate::pipeline::feed::{MAX_WS_BATCH, ProgramFeed, Protocol};
use crate::pipeline::hls_store::HlsStore;
use crate::pipeline::program::ProgramPacket;
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
    /// Start (a recorder's tap) or stop (`None`) recording the program.
    Record(Option<crate::pipeline::record_tap::RecordTap>),
}

/// A space as the engine runs it.
pub struct SpaceMix {
    /// Where listeners subscribe.
    pub feed: Arc<ProgramFeed>,
    /// The space's mixer.
    pub mixer: Mixer,
    /// The Ogg muxer of the HTTP stream.
    pub ogg: OggOpusMuxer,
    /// The LL-HLS packager.
    pub hls: Arc<HlsStore>,
    /// Speaker input.
    pub ingest: mpsc::Receiver<Ingest>,
    /// Program frames for WHEP listeners (sent only while the space has some).
    rtc: mpsc::Sender<ProgramPacket>,
    ws: [ProgramBatchWriter; MAX_WS_BATCH],
    returns: HashMap<SourceId, mpsc::Sender<Bytes>>,
    ticks: u64,
    last_count: Option<usize>,
    /// Frames muxed into the Ogg page being built.
    ogg_pending: u64,
    /// The recorder of the program, while recording.
    recorder: Option<crate::pipeline::record_tap::RecordTap>,
    /// Who is talking (from the mixer's levels), and their names.
    voice: VoiceActivity,
    talking: Option<Arc<Talking>>,
}

impl SpaceMix {
    /// Bundles what the engine needs to run a space.
    pub fn new(
        feed: Arc<ProgramFeed>,
        mixer: Mixer,
        ogg: OggOpusMuxer,
        hls: Arc<HlsStore>,
        ingest: mpsc::Receiver<Ingest>,
        rtc: mpsc::Sender<ProgramPacket>,
    ) -> SpaceMix {
        SpaceMix {
            feed,
            mixer,
            ogg,
            hls,
            ingest,
            rtc,
            ws: std::array::from_fn(|i| ProgramBatchWriter::new(i + 1)),
            returns: HashMap::new(),
            ticks: 0,
            last_count: None,
            ogg_pending: 0,
            recorder: None,
            voice: VoiceActivity::new(VoiceConfig::default()),
            talking: None,
        }
    }

    /// Reports who is talking to `talking` and, on changes, to listeners as
    /// `{"type":"speaking","speakers":[...]}`.
    pub fn with_talking(mut self, talking: Arc<Talking>) -> SpaceMix {
        self.talking = Some(talking);
        self
    }

    fn detect_voices(&mut self, now_us: u64) {
        let Some(talking) = &self.talking else { return };
        let Some(sources) = self.voice.observe(self.mixer.levels(), now_us / 1_000) else {
            return;
        };
        let speakers = talking.update(&sources);
        let event = crate::pipeline::events::ListenerEvent::Speaking { speakers: &speakers };
        self.feed.publish_event(&event.to_json());
    }

    fn drain_ingest(&mut self) {
        while let Ok(event) = self.ingest.try_recv() {
            match event {
                Ingest::Join { source, returns } => {
                    if let Err(e) = self.mixer.add_source(source, returns.is_some()) {
                        tracing::warn!(space = %self.feed.space(), source, "cannot add speaker: {e}");
                        continue;
                    }
                    if let Some(tx) = returns {
                        self.returns.insert(source, tx);
                    }
                }
                Ingest::Frame { source, frame } => {
                    self.mixer.push(source, frame);
                }
                Ingest::Mute { source, muted } => {
                    self.mixer.set_muted(source, muted);
                }
                Ingest::Leave { source } => {
                    self.mixer.remove_source(source);
                    self.returns.remove(&source);
                }
                Ingest::Record(tap) => self.recorder = tap,
            }
        }
    }

    /// Mixes one frame and hands it to every egress.
    fn tick(&mut self, now_us: u64) {
        self.drain_ingest();
        let tick = self.mixer.tick(now_us);
        self.publish(&tick.program, false);
        self.detect_voices(now_us);
        for (source, frame) in &tick.returns {
            if let Some(tx) = self.returns.get(source) {
                let _ = tx.try_send(single_batch(frame));
            }
        }
        self.ticks += 1;
        if self.ticks % COUNT_EVERY_TICKS == 1 {
            self.push_listener_count();
        }
    }

    fn publish(&mut self, frame: &ProgramFrame, end_of_stream: bool) {
        let view = view_of(frame);
        let in_use = self.feed.ws_batches_in_use();
        for (i, writer) in self.ws.iter_mut().enumerate() {
            if in_use[i] {
                if let Some(batch) = writer.push(&view) {
                    self.feed.publish_ws(i + 1, &batch, u64::from(batch[1]));
                }
            } else {
                writer.finish();
            }
        }
        self.hls.push(frame.payload.clone(), frame.mixed_at_us);
        if self.feed.listeners(Protocol::Webrtc) > 0 {
            // Never waits: a WebRTC loop that is behind loses frames, the mixer does not.
            let sent = self.rtc.try_send(ProgramPacket {
                space: self.feed.space().clone(),
                seq: frame.seq,
                payload: frame.payload.clone(),
                capture_us: view.captured_at_us(),
                mixed_at_us: frame.mixed_at_us,
            });
            if sent.is_err() {
                metrics::counter!(FRAMES_DROPPED, "protocol" => "webrtc").increment(1);
            }
        }
        // Never waits: a recorder whose disk is behind loses frames, the mixer does not.
        if let Some(tap) = &mut self.recorder
            && !tap.offer(frame.seq, &frame.payload)
        {
            self.recorder = None;
        }
        self.ogg_pending += 1;
        match self.ogg.push(&frame.payload, end_of_stream) {
            Ok(Some(page)) => {
                self.feed.publish_ogg(page, self.ogg_pending);
                self.ogg_pending = 0;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(space = %self.feed.space(), "ogg muxing failed: {e}"),
        }
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
        let tick = self.mixer.tick(now_us);
        self.publish(&tick.program, true);
        for (i, writer) in self.ws.iter_mut().enumerate() {
            if let Some(batch) = writer.finish() {
                self.feed.publish_ws(i + 1, &batch, u64::from(batch[1]));
            }
        }
        self.hls.finish();
        // Closing the feed makes its shards send listeners the `ended` event and a close frame.
        self.feed.close();
    }
}

fn view_of(frame: &ProgramFrame) -> ProgramFrameView<'_> {
    ProgramFrameView {
        seq: frame.seq,
        mixed_at_us: frame.mixed_at_us,
        capture_age_us: frame.capture_age_us,
        payload: &frame.payload,
    }
}

fn single_batch(frame: &ProgramFrame) -> Bytes {
    let mut writer = ProgramBatchWriter::new(1);
    writer.push(&view_of(frame)).unwrap_or_default()
}

enum Command {
    Add(Box<SpaceMix>),
    Remove(SpaceId),
    Stop,
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
        loop {
            match rx.try_recv() {
                Ok(Command::Add(space)) => {
                    let id = space.feed.space().clone();
                    spaces.insert(id, *space);
                }
                Ok(Command::Remove(id)) => {
                    if let Some(space) = spaces.remove(&id) {
                        space.finish(clock::now_us());
                    }
                }
                Ok(Command::Stop) | Err(std_mpsc::TryRecvError::Disconnected) => {
                    let now = clock::now_us();
                    spaces.into_values().for_each(|s| s.finish(now));
                    return;
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
            }
        }
        let now_us = clock::now_us();
        for space in spaces.values_mut() {
            space.tick(now_us);
        }
        ticks_counter.increment(1);
        ticks += 1;
        let deadline = epoch + TICK * ticks;
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        } else if now - deadline > MAX_CATCH_UP {
            late_counter.increment(1);
            epoch = now;
            ticks = 0;
        } else if now - deadline > TICK {
            late_counter.increment(1);
        }
    }
}
