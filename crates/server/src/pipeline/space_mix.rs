//! A space as the engine runs it: where its program comes from (its mixer on the node that owns
//! the space, or a relay of another node's program on an edge), its speakers' input, and the sinks
//! that carry every program frame to listeners. One [`SpaceMix`] lives on one mixer thread of the
//! engine's pool (see [`crate::pipeline::engine`]), which calls it every 20 ms.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use townhall_media::wire::ProgramBatchWriter;
use townhall_media::{
    Mixer, OggOpusMuxer, ProgramFrame, Return, SourceId, SpeakerFrame, VoiceActivity, VoiceConfig,
};

use crate::pipeline::feed::ProgramFeed;
use crate::pipeline::hls_store::HlsStore;
use crate::pipeline::program::ProgramShards;
use crate::pipeline::sinks::{FeedSink, ProgramSink, RtcSink, SinkName, view_of};
use crate::pipeline::talking::Talking;

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
        rtc: ProgramShards,
    ) -> SpaceMix {
        SpaceMix::with_source(feed, Source::Mixer(Box::new(mixer)), ogg, hls, ingest, rtc)
    }

    fn with_source(
        feed: Arc<ProgramFeed>,
        source: Source,
        ogg: OggOpusMuxer,
        hls: Arc<HlsStore>,
        ingest: mpsc::Receiver<Ingest>,
        rtc: ProgramShards,
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
        rtc: ProgramShards,
    ) -> SpaceMix {
        SpaceMix::with_source(feed, Source::Relay(frames), ogg, hls, ingest, rtc)
    }

    /// Reports who is talking to `talking` and, on changes, to listeners as
    /// `{"type":"speaking","speakers":[...]}`.
    pub fn with_talking(mut self, talking: Arc<Talking>) -> SpaceMix {
        self.talking = Some(talking);
        self
    }

    /// Speakers connected (none for a relayed space): what its mixer thread reports as load.
    pub fn speakers(&self) -> usize {
        match &self.source {
            Source::Mixer(mixer) => mixer.source_count(),
            Source::Relay(_) => 0,
        }
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
        for (_, sink) in &mut self.sinks {
            sink.speaking(&speakers);
        }
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
    pub(crate) fn relay_now(&mut self) {
        for _ in 0..RELAY_FRAMES_PER_TICK {
            let Source::Relay(frames) = &mut self.source else { return };
            let Ok(frame) = frames.try_recv() else { return };
            self.publish(&frame, false);
        }
    }

    fn set_sink(&mut self, name: SinkName, sink: Option<Box<dyn ProgramSink>>) {
        self.sinks.retain(|(n, _)| *n != name);
        if let Some(mut sink) = sink {
            // A new sink learns who is talking already (a recording started mid-sentence).
            if let Some(talking) = &self.talking {
                sink.speaking(&talking.current());
            }
            self.sinks.push((name, sink));
        }
    }

    /// Mixes one frame (or takes the relayed ones) and hands it to every egress.
    pub(crate) fn tick(&mut self, now_us: u64) {
        self.drain_ingest();
        match &mut self.source {
            Source::Mixer(mixer) => {
                let tick = mixer.tick(now_us);
                self.publish(&tick.program, false);
                self.detect_voices(now_us);
                // Speakers who were silent hear the program: one message, shared, for all of them.
                let mut program_batch: Option<Bytes> = None;
                for (source, heard) in &tick.returns {
                    let Some(tx) = self.returns.get(source) else { continue };
                    let batch = match heard {
                        Return::Program => {
                            program_batch.get_or_insert_with(|| single_batch(&tick.program)).clone()
                        }
                        Return::MixMinus(frame) => single_batch(frame),
                    };
                    let _ = tx.try_send(batch);
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
    pub(crate) fn finish(mut self, now_us: u64) {
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
