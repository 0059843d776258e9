//! A live space at the edge: its feed, its speakers' seats and the channel into its mixer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use townhall_core::room::{Action, Room, RoomConfig, RoomEvent, RoomView};
use townhall_core::{
    AbsenceTimer, Identity, Role, Seated, Space, SpaceId, Stage, StageError, UnixTime,
};
use townhall_media::{Mixer, MixerConfig, OggOpusMuxer, ProgramClock, SourceId, SpeakerFrame};

use crate::app::config::Config;
use crate::app::store::{BanKind, Store};
use crate::metrics::SPEAKERS;
use crate::pipeline::captions::CaptionBoard;
use crate::pipeline::engine::{Engine, RelayInput};
use crate::pipeline::fanout::FanoutConfig;
use crate::pipeline::feed::ProgramFeed;
use crate::pipeline::hls_store::HlsStore;
use crate::pipeline::program::ProgramShards;
use crate::pipeline::space_mix::{Ingest, SpaceMix};
use crate::pipeline::talking::Talking;

/// Speaker frames queued towards the mixer before new ones are refused.
const INGEST_CAPACITY: usize = 1_024;
/// Mix-minus batches queued towards one speaker before new ones are dropped.
const RETURN_CAPACITY: usize = 50;
/// Relayed program frames queued towards the engine before new ones are dropped: room for a
/// resumed relay's whole catch-up (what the origin keeps) and a second more.
const RELAY_CAPACITY: usize = crate::pipeline::feed::RESUME_FRAMES + 50;

/// What every live space is carried by, mixed here or relayed.
struct Parts {
    feed: Arc<ProgramFeed>,
    ogg: OggOpusMuxer,
    hls: Arc<HlsStore>,
}

impl Parts {
    /// A mixer for `space` as `config` says, numbering its frames from `first`, and what
    /// carries its program.
    fn new(
        space: &Space,
        config: &Config,
        fanout: FanoutConfig,
        first: u32,
    ) -> Result<(Mixer, Parts), OpenError> {
        let mut mixer =
            Mixer::new(MixerConfig { bitrate: config.bitrate, ..MixerConfig::default() })?;
        mixer.start_at(first);
        let serial: u32 = rand::random();
        let ogg =
            OggOpusMuxer::new(serial, mixer.pre_skip(), config.ogg_page_frames(), &space.title)?;
        // A private space is named in `/metrics` by its stream's random serial, not its id.
        let label =
            if space.public { space.id.to_string() } else { format!("private-{serial:08x}") };
        let feed = Arc::new(
            ProgramFeed::new(space.id.clone(), ogg.headers(), config.ogg_burst_pages(), fanout)
                .with_metric_label(label)
                .starting_at(first),
        );
        feed.audience().configure(config.stats_bucket_secs);
        let hls =
            HlsStore::new(mixer.pre_skip(), format!("{serial:08x}")).map_err(OpenError::Hls)?;
        Ok((mixer, Parts { feed, ogg, hls }))
    }
}

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
    kick: Arc<Kick>,
}

/// Why a speaking session is told to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// A new session of the same identity took over.
    Replaced,
    /// A host or co-host moved them to the audience (they may still listen).
    MovedToAudience,
    /// They were removed or blocked.
    Removed,
    /// The space moved to another node (this one lost it): reconnect to the space's origin.
    Moved,
}

impl KickReason {
    /// The reason as sent to the client (`bye.reason`).
    pub fn code(self) -> &'static str {
        match self {
            KickReason::Replaced => "replaced_by_new_session",
            KickReason::MovedToAudience => "moved_to_audience",
            KickReason::Removed => "removed",
            KickReason::Moved => "space_moved",
        }
    }
}

/// Tells one speaking session to end, and why.
#[derive(Debug)]
pub struct Kick {
    notify: Notify,
    reason: Mutex<KickReason>,
}

impl Kick {
    fn new() -> Kick {
        Kick { notify: Notify::new(), reason: Mutex::new(KickReason::Replaced) }
    }

    fn fire(&self, reason: KickReason) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
        self.notify.notify_one();
    }

    /// Waits until the session is told to end; returns why.
    pub async fn fired(&self) -> KickReason {
        self.notify.notified().await;
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A speaker as the API shows them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpeakerView {
    /// Who.
    pub identity: Identity,
    /// Their role.
    pub role: Role,
}

/// Who a room refuses, as an origin hands it to its edges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Bars {
    /// Removed for the room's life.
    pub removed: Vec<Identity>,
    /// Blocked until unblocked.
    pub blocked: Vec<Identity>,
}

impl Bars {
    /// A digest that changes when the bars do (records carry it; edges fetch on change).
    pub fn digest(&self) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(self)
    }
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
    /// Who is talking (named sources; set by the engine).
    talking: Arc<Talking>,
    seats: Mutex<Seats>,
    /// Who is in the space and what they may do (roles, stage, hands, mutes, removals).
    room: Mutex<Room>,
    /// The last second's reaction tallies, for the polled summary.
    last_reactions: Mutex<Option<RoomEvent>>,
    /// Where moderation is recorded.
    store: Arc<Store>,
    /// How long the host and co-hosts have been away.
    absence: Mutex<AbsenceTimer>,
    /// Where speakers joining and leaving are reported, and how this space is named there.
    webhooks: crate::app::webhooks::Webhooks,
    webhook_space: townhall_core::webhook::SpaceRef,
    /// For a space mixed on another node and relayed here: that node's URL.
    origin: Option<String>,
    /// Its captions stage, if captions were turned on in this run.
    captions: Mutex<Option<CaptionsRun>>,
    /// What its captions said (every run's, or for a relayed space the origin's as relayed).
    caption_board: Arc<CaptionBoard>,
    /// Its program clock (mixed here: what a successor origin goes on with), moved to the
    /// frames actually mixed when they drift from it.
    clock: Mutex<ProgramClock>,
    /// The program clock last written to the database (what a restart goes on with).
    kept_clock: Mutex<Option<ProgramClock>>,
}

/// A run of a space's captions stage.
#[derive(Debug, Clone)]
pub struct CaptionsRun {
    /// Distinguishes this run from earlier ones of the same space (its slot's key).
    pub generation: u64,
    /// Where its cues are kept (the space's board, shared by its runs).
    pub board: Arc<CaptionBoard>,
    /// Whether the stage still runs.
    pub active: bool,
}

impl std::fmt::Debug for LiveSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSpace").field("id", &self.id).finish_non_exhaustive()
    }
}

impl LiveSpace {
    /// Builds the mixer and muxer for `space` and hands them to the engine.
    /// Its first frame is numbered by `clock` (the frame due now: 0 for a space starting, more
    /// for one taken over from another origin).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        space: &Space,
        config: &Config,
        engine: &Engine,
        fanout: FanoutConfig,
        rtc: ProgramShards,
        store: Arc<Store>,
        webhooks: crate::app::webhooks::Webhooks,
        clock: ProgramClock,
    ) -> Result<Arc<LiveSpace>, OpenError> {
        let (mixer, parts) = Parts::new(space, config, fanout, clock.frame)?;
        let (tx, rx) = mpsc::channel(INGEST_CAPACITY);
        let talking = Arc::new(Talking::default());
        engine.add(
            SpaceMix::new(parts.feed.clone(), mixer, parts.ogg, parts.hls.clone(), rx, rtc)
                .with_talking(talking.clone()),
        );
        let live = LiveSpace::assemble(
            space, config, parts.feed, parts.hls, tx, talking, store, webhooks, None,
        );
        *live.clock.lock().unwrap_or_else(|p| p.into_inner()) = clock;
        Ok(live)
    }

    /// A space mixed on `origin` and relayed to this node (an edge): its program arrives on the
    /// returned sender and reaches this node's listeners through the same sinks. Nobody speaks
    /// here (speakers go to the origin).
    #[allow(clippy::too_many_arguments)]
    pub fn open_relay(
        space: &Space,
        origin: String,
        config: &Config,
        engine: &Engine,
        fanout: FanoutConfig,
        rtc: ProgramShards,
        store: Arc<Store>,
        webhooks: crate::app::webhooks::Webhooks,
    ) -> Result<(Arc<LiveSpace>, RelayInput), OpenError> {
        // The origin's encoder has the same settings: its pre-skip is this one's.
        let (_, parts) = Parts::new(space, config, fanout, 0)?;
        let (tx, rx) = mpsc::channel(INGEST_CAPACITY);
        let (frames_tx, frames_rx) = mpsc::channel(RELAY_CAPACITY);
        engine.add(SpaceMix::relayed(
            parts.feed.clone(),
            frames_rx,
            parts.ogg,
            parts.hls.clone(),
            rx,
            rtc,
        ));
        let talking = Arc::new(Talking::default());
        let live = LiveSpace::assemble(
            space,
            config,
            parts.feed,
            parts.hls,
            tx,
            talking,
            store,
            webhooks,
            Some(origin),
        );
        Ok((live, engine.relay_input(space.id.clone(), frames_tx)))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        space: &Space,
        config: &Config,
        feed: Arc<ProgramFeed>,
        hls: Arc<HlsStore>,
        ingest: mpsc::Sender<Ingest>,
        talking: Arc<Talking>,
        store: Arc<Store>,
        webhooks: crate::app::webhooks::Webhooks,
        origin: Option<String>,
    ) -> Arc<LiveSpace> {
        let mut room = Room::with_config(
            space.host.clone(),
            RoomConfig { seats: config.stage_seats, ..RoomConfig::default() },
            crate::clock::now_unix(),
        );
        // Removals and blocks outlive restarts.
        match store.bans(&space.id) {
            Ok(bans) => {
                for (who, kind) in bans {
                    match kind {
                        BanKind::Removed => room.restore_removed(who),
                        BanKind::Blocked => room.restore_blocked(who),
                    }
                }
            }
            Err(e) => tracing::error!(space = %space.id, "cannot read bans: {e}"),
        }
        Arc::new(LiveSpace {
            store,
            webhooks,
            webhook_space: space.into(),
            absence: Mutex::new(AbsenceTimer::new(config.host_absent_end_secs)),
            id: space.id.clone(),
            feed,
            hls,
            ingest,
            next_source: AtomicU64::new(1),
            talking,
            seats: Mutex::new(Seats {
                stage: Stage::new(config.stage_seats),
                sessions: HashMap::new(),
            }),
            room: Mutex::new(room),
            last_reactions: Mutex::new(None),
            origin,
            captions: Mutex::new(None),
            caption_board: Arc::new(CaptionBoard::default()),
            clock: Mutex::new(ProgramClock::new(0, crate::clock::now_us() / 1_000)),
            kept_clock: Mutex::new(None),
        })
    }

    /// The space's program clock as mixed here: which frame number belongs to which moment
    /// (what a successor origin goes on with), following the frames actually mixed when they
    /// drift from it ([`ProgramClock::follow`]).
    pub fn program_clock(&self) -> ProgramClock {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seq, mixed_at_us)) = self.feed.last_frame() {
            *clock = clock.follow(seq, mixed_at_us / 1_000);
        }
        *clock
    }

    /// The program clock to write to the database, when it changed since the last one written
    /// (a new space, or an anchor that moved): `None` for a space relayed here (its origin keeps
    /// the clock) or one whose clock is kept already.
    pub fn clock_to_keep(&self) -> Option<ProgramClock> {
        if self.origin.is_some() {
            return None;
        }
        let clock = self.program_clock();
        let mut kept = self.kept_clock.lock().unwrap_or_else(|p| p.into_inner());
        if *kept == Some(clock) {
            return None;
        }
        *kept = Some(clock);
        Some(clock)
    }

    /// Who talks now, as the origin of a relayed space says.
    pub fn set_talking(&self, who: Vec<Identity>) {
        self.talking.set(who);
    }

    /// The node this space is mixed on, when it is relayed here from there.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
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

    /// Speakers on stage, as the API shows them.
    pub fn speakers_view(&self) -> Vec<SpeakerView> {
        self.speakers().into_iter().map(|(identity, role)| SpeakerView { identity, role }).collect()
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
        let kick = Arc::new(Kick::new());
        let (speakers, replaced) = {
            let mut seats = self.seats();
            let replaced = seats.stage.take_seat(who.clone(), role)? == Seated::Replaced;
            if replaced && let Some(old) = seats.sessions.get(&who) {
                old.kick.fire(KickReason::Replaced);
            }
            seats.sessions.insert(who.clone(), Session { source, kick: kick.clone() });
            self.talking.name(source, who.clone());
            (seats.stage.len(), replaced)
        };
        metrics::gauge!(SPEAKERS, "space" => self.feed.metric_label().to_owned())
            .set(speakers as f64);
        let (returns_tx, returns) = if wants_return {
            let (tx, rx) = mpsc::channel(RETURN_CAPACITY);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        // Join must not be lost: wait for room rather than drop it.
        let _ = self.ingest.send(Ingest::Join { source, returns: returns_tx }).await;
        let muted = self.room().member(&who).is_some_and(|m| m.mute.is_muted());
        if muted {
            let _ = self.ingest.send(Ingest::Mute { source, muted: true }).await;
        }
        if !replaced {
            let speaker = townhall_core::webhook::SpeakerRef { identity: who.clone(), role };
            let space = self.webhook_space.clone();
            self.webhooks.emit(townhall_core::WebhookEvent::SpeakerJoined { space, speaker });
        }
        Ok(SpeakerSeat { space: self.clone(), who, source, kick, returns })
    }

    fn room(&self) -> std::sync::MutexGuard<'_, Room> {
        self.room.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Who is talking now (voice activity), by name.
    pub fn talking(&self) -> Vec<Identity> {
        self.talking.current()
    }

    /// The room as the API shows it.
    pub fn room_view(&self) -> RoomView {
        self.room().view()
    }

    /// The room's lasting state, for another origin to take the space over.
    pub fn room_snapshot(&self) -> townhall_core::room::RoomSnapshot {
        self.room().snapshot()
    }

    /// Brings the room back from `snapshot` (this node took the space over from another
    /// origin); speakers who come back take their seats again.
    pub fn restore_room(&self, snapshot: townhall_core::room::RoomSnapshot, config: &Config) {
        let room_config = RoomConfig { seats: config.stage_seats, ..RoomConfig::default() };
        *self.room() = Room::from_snapshot(snapshot, room_config);
    }

    /// Tells every speaking session to go: the space moved to another node.
    pub fn send_speakers_away(&self) {
        for session in self.seats().sessions.values() {
            session.kick.fire(KickReason::Moved);
        }
    }

    /// Who the room refuses: removed and blocked identities.
    pub fn bars(&self) -> Bars {
        let room = self.room();
        Bars {
            removed: room.removed().cloned().collect(),
            blocked: room.blocked().cloned().collect(),
        }
    }

    /// Takes the origin's bars as this relayed room's (who joins here is refused as there).
    pub fn set_bars(&self, bars: Bars) {
        self.room().replace_bars(bars.removed, bars.blocked);
    }

    /// Why `who` may not be in this space (removed for its lifetime, or blocked), if so.
    pub fn refusal(&self, who: &Identity) -> Option<crate::app::error::AppError> {
        let room = self.room();
        if room.is_removed(who) {
            Some(crate::app::error::AppError::new(
                crate::app::error::ErrorKind::Forbidden,
                "removed",
                "you were removed from this space",
            ))
        } else if room.is_blocked(who) {
            Some(crate::app::error::AppError::new(
                crate::app::error::ErrorKind::Forbidden,
                "blocked",
                "you are blocked from this space",
            ))
        } else {
            None
        }
    }

    /// The role the room gives `who` (holding a token for `token_role`) for management now;
    /// refused if the room removed or blocked them.
    pub fn authority(
        &self,
        who: &Identity,
        token_role: Role,
    ) -> Result<Role, townhall_core::RoomError> {
        self.room().authority(who, token_role)
    }

    /// Applies `action` by `who` (whose token grants `token_role`), joining them to the room
    /// first if they are not in it; carries out and broadcasts what changed.
    pub fn act(
        &self,
        who: &Identity,
        token_role: Role,
        action: Action,
        now: UnixTime,
    ) -> Result<Vec<RoomEvent>, townhall_core::RoomError> {
        let (events, logged) = {
            let mut room = self.room();
            let mut events = Vec::new();
            let logged_before = room.log_total();
            let present = room.member(who).is_some_and(|m| m.is_present());
            if !present && !matches!(action, Action::Join { .. } | Action::Leave) {
                events.extend(room.apply(who, Action::Join { token_role }, now)?);
            }
            events.extend(room.apply(who, action, now)?);
            let new = usize::try_from(room.log_total() - logged_before).unwrap_or(usize::MAX);
            let kept = room.log().len();
            let logged: Vec<_> = room.log().skip(kept.saturating_sub(new)).cloned().collect();
            (events, logged)
        };
        self.carry_out(&events);
        if !logged.is_empty()
            && let Err(e) = self.store.record_moderation(&self.id, &logged)
        {
            tracing::error!(space = %self.id, "cannot record moderation: {e}");
        }
        Ok(events)
    }

    /// Broadcasts the reaction tallies of the seconds before `now` (one message per second per
    /// space, however many listeners react).
    pub fn flush_reactions(&self, now: UnixTime) {
        let events = self.room().take_reactions(now);
        if let Some(last) = events.last() {
            *self.last_reactions.lock().unwrap_or_else(|p| p.into_inner()) = Some(last.clone());
        }
        self.carry_out(&events);
    }

    /// The latest second's reaction tallies, if any were sent.
    pub fn last_reactions(&self) -> Option<RoomEvent> {
        self.last_reactions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether neither the host nor a co-host has been present for the configured grace
    /// period (`host_absent_end_secs`) up to `now`.
    pub fn host_gone(&self, now: UnixTime) -> bool {
        let present = {
            let room = self.room();
            let here = |who: &Identity| room.member(who).is_some_and(|m| m.is_present());
            here(room.host()) || room.cohosts().any(here)
        };
        self.absence.lock().unwrap_or_else(|p| p.into_inner()).observe(present, now)
    }

    /// The moderation log, oldest first.
    pub fn moderation_log(&self) -> Vec<townhall_core::room::ModerationEntry> {
        self.room().log().cloned().collect()
    }

    /// Checks that `who` may publish now: on stage in the room, or allowed by the role the room
    /// gives them to take a free seat. Returns their role on stage and whether they are muted.
    pub fn may_speak(
        &self,
        who: &Identity,
        token_role: Role,
        now: UnixTime,
    ) -> Result<(Role, bool), crate::app::error::AppError> {
        if let Some(origin) = &self.origin {
            return Err(crate::app::error::AppError::conflict(
                "not_origin",
                format!("this node relays the space; speak on its origin, {origin}"),
            ));
        }
        if let Some(refused) = self.refusal(who) {
            return Err(refused);
        }
        if let Some(found) = self.on_stage(who) {
            return Ok(found);
        }
        let present = self.room().member(who).is_some_and(|m| m.is_present());
        if !present {
            self.act(who, token_role, Action::Join { token_role }, now)?;
        }
        if self.on_stage(who).is_none() {
            let role = self.room().member(who).map_or(Role::Listener, |m| m.role);
            if !role.can_speak() {
                return Err(crate::app::error::AppError::forbidden(
                    "you are not on stage: request to speak, and speak once a host accepts",
                ));
            }
            self.act(who, token_role, Action::TakeStage, now)?;
        }
        self.on_stage(who).ok_or_else(|| {
            crate::app::error::AppError::conflict("not_on_stage", "you could not take the stage")
        })
    }

    /// `who`'s role and mute state if they are present and on stage.
    fn on_stage(&self, who: &Identity) -> Option<(Role, bool)> {
        let room = self.room();
        let member = room.member(who).filter(|m| m.is_present() && m.on_stage)?;
        Some((member.role, member.mute.is_muted()))
    }

    /// Makes the media side follow the room, and tells listeners.
    fn carry_out(&self, events: &[RoomEvent]) {
        // Whoever this action removes or blocks is told so, not first that they left the stage
        // (their session could wake between the two and read the wrong reason).
        let removed = |who: &Identity| {
            events.iter().any(|e| {
                matches!(e, RoomEvent::Removed { who: w, .. } | RoomEvent::Blocked { who: w, .. } if w == who)
            })
        };
        for event in events {
            match event {
                RoomEvent::Muted { who, .. } => self.set_muted(who, true),
                RoomEvent::Unmuted { who } => self.set_muted(who, false),
                RoomEvent::SpeakerRemoved { who } if !removed(who) => {
                    self.kick(who, KickReason::MovedToAudience);
                }
                RoomEvent::Removed { who, .. } | RoomEvent::Blocked { who, .. } => {
                    self.kick(who, KickReason::Removed);
                }
                RoomEvent::HandRaised { .. } => self.feed.audience().hand_raised(),
                RoomEvent::Reactions { second, counts } => {
                    self.feed.audience().reacted(*second, counts);
                }
                _ => {}
            }
            self.feed.publish_event(&crate::pipeline::events::ListenerEvent::Room(event).to_json());
        }
    }

    fn set_muted(&self, who: &Identity, muted: bool) {
        let source = self.seats().sessions.get(who).map(|s| s.source);
        if let Some(source) = source
            && self.ingest.try_send(Ingest::Mute { source, muted }).is_err()
        {
            let ingest = self.ingest.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { ingest.send(Ingest::Mute { source, muted }).await });
            }
        }
    }

    /// Ends `who`'s speaking session (they were moved off stage, removed or blocked).
    fn kick(&self, who: &Identity, reason: KickReason) {
        if let Some(session) = self.seats().sessions.get(who) {
            session.kick.fire(reason);
        }
    }

    /// Ends the stream (the engine closes the feed after a final page).
    pub fn end(&self, engine: &Engine) {
        engine.remove(self.id.clone());
    }

    /// The space's captions run (the latest, running or not); for a relayed space, the
    /// origin's captions as relayed here, once it heard of any.
    pub fn captions(&self) -> Option<CaptionsRun> {
        if self.origin.is_some() {
            let board = &self.caption_board;
            return board.captioned().then(|| CaptionsRun {
                generation: 0,
                board: board.clone(),
                active: board.on(),
            });
        }
        self.captions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What the space's captions said (kept across runs: the subtitle rendition's past cues,
    /// the transcript of the recording in progress).
    pub fn caption_board(&self) -> &Arc<CaptionBoard> {
        &self.caption_board
    }

    /// Who is talking, as the engine names them (for the captions stage).
    pub fn talking_source(&self) -> Arc<Talking> {
        self.talking.clone()
    }

    /// Hands the mixer a captions stage's sink as run `run`.
    pub fn start_captions(
        &self,
        run: CaptionsRun,
        sink: Box<dyn crate::pipeline::sinks::ProgramSink>,
    ) {
        *self.captions.lock().unwrap_or_else(|p| p.into_inner()) = Some(run);
        self.send_ingest(Ingest::Sink { name: "captions", sink: Some(sink) });
    }

    /// Takes the captions sink out of the mixer (its stage then ends).
    pub fn stop_captions(&self) {
        if let Some(run) = self.captions.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            run.active = false;
        }
        self.send_ingest(Ingest::Sink { name: "captions", sink: None });
    }

    /// Marks run `generation` as ended (its stage stopped by itself or was stopped).
    pub fn captions_ended(&self, generation: u64) {
        if let Some(run) = self.captions.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
            && run.generation == generation
        {
            run.active = false;
        }
    }

    /// Sends `event` to the mixer without waiting (or, when its queue is full, soon).
    fn send_ingest(&self, event: Ingest) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.ingest.try_send(event) {
            let ingest = self.ingest.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { ingest.send(event).await });
            }
        }
    }

    /// Hands the mixer a recorder's tap (`None` stops recording); `false` if the mixer is gone.
    pub async fn record(&self, tap: Option<crate::pipeline::record_tap::RecordTap>) -> bool {
        let sink = tap.map(|t| Box::new(t) as Box<dyn crate::pipeline::sinks::ProgramSink>);
        self.ingest.send(Ingest::Sink { name: "recorder", sink }).await.is_ok()
    }

    fn leave(&self, who: &Identity, source: SourceId) {
        if self.ingest.try_send(Ingest::Leave { source }).is_err() {
            let ingest = self.ingest.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { ingest.send(Ingest::Leave { source }).await });
            }
        }
        let mut left_role = None;
        let (speakers, was_current) = {
            let mut seats = self.seats();
            // Only the current session of this identity frees the seat; a replaced one does not.
            let current = seats.sessions.get(who).is_some_and(|s| s.source == source);
            self.talking.forget(source);
            if current {
                left_role = seats.stage.speakers().find(|(w, _)| *w == who).map(|(_, r)| r);
                seats.sessions.remove(who);
                seats.stage.leave(who);
            }
            (seats.stage.len(), current)
        };
        metrics::gauge!(SPEAKERS, "space" => self.feed.metric_label().to_owned())
            .set(speakers as f64);
        if let Some(role) = left_role {
            let speaker = townhall_core::webhook::SpeakerRef { identity: who.clone(), role };
            let space = self.webhook_space.clone();
            self.webhooks.emit(townhall_core::WebhookEvent::SpeakerLeft { space, speaker });
        }
        if was_current {
            // Their connection is gone: they leave the room too, which frees their seat there;
            // coming back, they rejoin with the role the room last gave them (and its seat).
            let left = self.act(who, Role::Listener, Action::Leave, crate::clock::now_unix());
            if let Err(e) = left {
                tracing::debug!(space = %self.id, %who, "leaving the room: {e}");
            }
        }
    }
}

/// A speaker's place on stage; leaving the stage when dropped.
pub struct SpeakerSeat {
    space: Arc<LiveSpace>,
    who: Identity,
    source: SourceId,
    /// Notified when another session of the same identity takes over.
    pub kick: Arc<Kick>,
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

impl crate::pipeline::rtc::SpeakerSink for SpeakerSeat {
    fn send_frame(&self, frame: SpeakerFrame) -> bool {
        self.send(frame).is_ok()
    }
}

impl Drop for SpeakerSeat {
    fn drop(&mut self) {
        self.space.leave(&self.who, self.source);
    }
}
