//! A live space at the edge: its feed, its speakers' seats and the channel into its mixer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use townhall_core::{Identity, Role, Seated, Space, SpaceId, Stage, StageError};
use townhall_media::{Mixer, MixerConfig, OggOpusMuxer, SourceId, SpeakerFrame};

use crate::config::Config;
use crate::engine::{Engine, Ingest, SpaceMix};
use crate::fanout::FanoutConfig;
use crate::feed::ProgramFeed;
use crate::hls::HlsStore;
use crate::metrics::SPEAKERS;
use crate::rtc::ProgramPacket;

/// Speaker frames queued towards the mixer before new ones are refused.
const INGEST_CAPACITY: usize = 1_024;
/// Mix-minus batches queued towards one speaker before new ones are dropped.
const RETURN_CAPACITY: usize = 50;

/// Why a live space could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// libopus refused to create the mixer.
    #[error("mixer: {0}")]
    Mixer(#[from] townhall_media::MixerError),
    /// The Ogg muxer could not write its headers.
    #[error("ogg: {0}")]
    Ogg(#[from] townhall_media::ogg::OggError),
    /// The HLS init segment could not be written.
    #[error("hls: {0}")]
    Hls(String),
}

/// The mixer's queue is full: the frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

struct Session {
    source: SourceId,
    kick: Arc<Notify>,
}

struct Seats {
    stage: Stage,
    sessions: HashMap<Identity, Session>,
}

/// A space that is on air.
pub struct LiveSpace {
    id: SpaceId,
    feed: Arc<ProgramFeed>,
    hls: Arc<HlsStore>,
    ingest: mpsc::Sender<Ingest>,
    next_source: AtomicU64,
    seats: Mutex<Seats>,
}

impl std::fmt::Debug for LiveSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSpace").field("id", &self.id).finish_non_exhaustive()
    }
}

impl LiveSpace {
    /// Builds the mixer and muxer for `space` and hands them to the engine.
    pub fn open(
        space: &Space,
        config: &Config,
        engine: &Engine,
        fanout: FanoutConfig,
        rtc: mpsc::Sender<ProgramPacket>,
    ) -> Result<Arc<LiveSpace>, OpenError> {
        let mixer = Mixer::new(MixerConfig { bitrate: config.bitrate, ..MixerConfig::default() })?;
        let serial: u32 = rand::random();
        let ogg =
            OggOpusMuxer::new(serial, mixer.pre_skip(), config.ogg_page_frames(), &space.title)?;
        let feed = Arc::new(ProgramFeed::new(
            space.id.clone(),
            ogg.headers(),
            config.ogg_burst_pages(),
            fanout,
        ));
        let hls = HlsStore::new(mixer.pre_skip(), format!("{serial:08x}"))
            .map_err(|e| OpenError::Hls(e.message))?;
        let (tx, rx) = mpsc::channel(INGEST_CAPACITY);
        engine.add(SpaceMix::new(feed.clone(), mixer, ogg, hls.clone(), rx, rtc));
        Ok(Arc::new(LiveSpace {
            id: space.id.clone(),
            feed,
            hls,
            ingest: tx,
            next_source: AtomicU64::new(1),
            seats: Mutex::new(Seats {
                stage: Stage::new(config.stage_seats),
                sessions: HashMap::new(),
            }),
        }))
    }

    /// The space's id.
    pub fn id(&self) -> &SpaceId {
        &self.id
    }

    /// The space's LL-HLS output.
    pub fn hls(&self) -> &Arc<HlsStore> {
        &self.hls
    }

    /// The program stream's fan-out.
    pub fn feed(&self) -> &Arc<ProgramFeed> {
        &self.feed
    }

    fn seats(&self) -> std::sync::MutexGuard<'_, Seats> {
        self.seats.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Speakers on stage.
    pub fn speakers(&self) -> Vec<(Identity, Role)> {
        self.seats().stage.speakers().map(|(who, role)| (who.clone(), role)).collect()
    }

    /// Seats a speaker and connects them to the mixer. A second session of the same identity
    /// replaces the first, which is told to leave through its `kick`.
    pub async fn seat(
        self: &Arc<Self>,
        who: Identity,
        role: Role,
        wants_return: bool,
    ) -> Result<SpeakerSeat, StageError> {
        let source = self.next_source.fetch_add(1, Ordering::Relaxed);
        let kick = Arc::new(Notify::new());
        let speakers = {
            let mut seats = self.seats();
            if seats.stage.take_seat(who.clone(), role)? == Seated::Replaced
                && let Some(old) = seats.sessions.get(&who)
            {
                old.kick.notify_one();
            }
            seats.sessions.insert(who.clone(), Session { source, kick: kick.clone() });
            seats.stage.len()
        };
        metrics::gauge!(SPEAKERS, "space" => self.id.to_string()).set(speakers as f64);
        let (returns_tx, returns) = if wants_return {
            let (tx, rx) = mpsc::channel(RETURN_CAPACITY);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        // Join must not be lost: wait for room rather than drop it.
        let _ = self.ingest.send(Ingest::Join { source, returns: returns_tx }).await;
        Ok(SpeakerSeat { space: self.clone(), who, source, kick, returns })
    }

    /// Ends the stream (the engine closes the feed after a final page).
    pub fn end(&self, engine: &Engine) {
        engine.remove(self.id.clone());
    }

    fn leave(&self, who: &Identity, source: SourceId) {
        if self.ingest.try_send(Ingest::Leave { source }).is_err() {
            let ingest = self.ingest.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { ingest.send(Ingest::Leave { source }).await });
            }
        }
        let speakers = {
            let mut seats = self.seats();
            // Only the current session of this identity frees the seat; a replaced one does not.
            if seats.sessions.get(who).is_some_and(|s| s.source == source) {
                seats.sessions.remove(who);
                seats.stage.leave(who);
            }
            seats.stage.len()
        };
        metrics::gauge!(SPEAKERS, "space" => self.id.to_string()).set(speakers as f64);
    }
}

/// A speaker's place on stage; leaving the stage when dropped.
pub struct SpeakerSeat {
    space: Arc<LiveSpace>,
    who: Identity,
    source: SourceId,
    /// Notified when another session of the same identity takes over.
    pub kick: Arc<Notify>,
    /// Mix-minus batches for this speaker, if asked for.
    pub returns: Option<mpsc::Receiver<Bytes>>,
}

impl SpeakerSeat {
    /// Sends a frame towards the mixer without waiting.
    pub fn send(&self, frame: SpeakerFrame) -> Result<(), Overloaded> {
        self.space
            .ingest
            .try_send(Ingest::Frame { source: self.source, frame })
            .map_err(|_| Overloaded)
    }
}

impl Drop for SpeakerSeat {
    fn drop(&mut self) {
        self.space.leave(&self.who, self.source);
    }
}
