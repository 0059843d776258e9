//! Shared server state: configuration, keys, the directory of spaces and the live ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::http::HeaderMap;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::sync::watch;
use townhall_core::{
    Claims, Directory, DirectoryError, Identity, NewSpace, Space, SpaceId, SpaceState, TokenKeys,
};

use crate::app::config::{Config, NodeRole};
use crate::app::error::AppError;
use crate::app::identity_limit::IdentityLimiter;
use crate::app::live::LiveSpace;
use crate::app::shield::Shield;
use crate::app::store::Store;
use crate::clock::now_unix;
use crate::pipeline::engine::{Engine, RelayInput};
use crate::pipeline::fanout::FanoutConfig;
use crate::pipeline::feed::Protocol;
use crate::pipeline::hls_store::HlsStores;
use crate::pipeline::rtc::RtcNode;
use townhall_core::WebhookEvent;
use townhall_media::ProgramClock;

/// Everything request handlers share.
pub struct AppState {
    /// The node's configuration.
    pub config: Config,
    /// Token keys.
    pub keys: TokenKeys,
    directory: Mutex<Directory>,
    live: RwLock<HashMap<SpaceId, Arc<LiveSpace>>>,
    engine: Engine,
    /// Flips to `true` when the node stops (at the end of its drain).
    pub shutdown: watch::Receiver<bool>,
    draining: AtomicBool,
    /// Set when the node starts draining: when every listener will have been sent off.
    drain: watch::Sender<Option<tokio::time::Instant>>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Per-client limits and the waiting room.
    pub shield: Arc<Shield>,
    /// LL-HLS output of live and recently ended spaces.
    pub hls: HlsStores,
    /// WebRTC sessions (WHIP speakers, WHEP listeners).
    pub rtc: RtcNode,
    /// Webhook events out (spaces started and ended, speakers joining and leaving, recordings).
    pub webhooks: crate::app::webhooks::Webhooks,
    /// Per-identity limits on reports and on raising hands.
    pub limits: IdentityLimits,
    /// Metadata that outlives the process (spaces, bans, moderation log, reports, recordings).
    pub store: Arc<Store>,
    /// Recordings in progress.
    pub recordings: crate::app::recorder::Recordings,
    /// Clips: who may make how many, and the cuts running.
    pub clips: crate::app::clips::Clips,
    /// Captioned spaces, the node's slots and its engine.
    pub captions: crate::app::captioning::Captions,
    /// How the node talks to other nodes and webhook receivers (HTTP and HTTPS).
    pub outbound: crate::app::outbound::Outbound,
    /// What this node knows of its cluster (nothing much on a node on its own).
    pub cluster: crate::app::cluster::view::ClusterView,
    /// Space states the database refused, retried every second until stored (bounded: one
    /// entry per space the directory holds).
    unsaved: Mutex<HashMap<SpaceId, Space>>,
    /// The node's secret salt of listener keys (see `listener_key`): kept in the database, so that a
    /// listener counts once across restarts; random per process without one.
    pub(crate) stats_salt: Vec<u8>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("listen", &self.config.listen).finish_non_exhaustive()
    }
}

/// The actor named in the moderation log for what the node does by itself.
pub const NODE_ACTOR: &str = "townhall";

/// Reports one identity may file at once.
pub const REPORT_BURST: u32 = 5;
/// Then one per this long.
pub const REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Per-identity limits of actions that reach many people.
#[derive(Debug)]
pub struct IdentityLimits {
    /// Filing reports.
    pub reports: IdentityLimiter,
    /// Raising or lowering one's hand (each is broadcast to every listener).
    pub hands: IdentityLimiter,
    /// Every other room action except reactions (which the room limits itself).
    pub actions: IdentityLimiter,
}

impl Default for IdentityLimits {
    fn default() -> Self {
        use crate::app::identity_limit::Allowance;
        use std::time::Duration;
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        IdentityLimits {
            reports: IdentityLimiter::new(
                Allowance::every(REPORT_INTERVAL, REPORT_BURST),
                Allowance::every(secs(30), 10),
                Allowance::every(secs(2), 50),
            ),
            hands: IdentityLimiter::new(
                Allowance::every(secs(2), 4),
                Allowance::every(secs(1), 10),
                Allowance::every(ms(100), 100),
            ),
            actions: IdentityLimiter::new(
                Allowance::every(ms(50), 50),
                Allowance::every(ms(50), 100),
                Allowance::every(ms(5), 1_000),
            ),
        }
    }
}

/// Listener counts of a space, by protocol.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ListenerCounts {
    /// WebSocket listeners.
    pub ws: usize,
    /// Ogg/HTTP listeners.
    pub ogg: usize,
    /// WHEP (WebRTC) listeners.
    pub webrtc: usize,
}

pub use crate::app::live::SpeakerView;

/// Where to listen to a space.
#[derive(Debug, Clone, Serialize)]
pub struct SpaceUrls {
    /// WebSocket (listen, or speak with `mode=speak` and a token).
    pub ws: String,
    /// Ogg/Opus over HTTP.
    pub ogg: String,
    /// LL-HLS multivariant playlist (public spaces; made for caches and CDNs).
    pub hls: String,
}

/// A space as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SpaceView {
    /// The space itself.
    #[serde(flatten)]
    pub space: Space,
    /// Listeners right now, all protocols.
    pub listeners: usize,
    /// Listeners by protocol.
    pub listeners_by_protocol: ListenerCounts,
    /// Who is on stage.
    pub speakers: Vec<SpeakerView>,
    /// Where to listen.
    pub urls: SpaceUrls,
    /// `direct` (WebSocket or Ogg from this node) or `scale` (new listeners should use LL-HLS
    /// through caches: the node is busy or its operators say so).
    pub listen_mode: &'static str,
    /// Whether the space is being recorded.
    pub recording: bool,
    /// In a cluster: the URL of the origin that mixes the space (speakers and hosts connect
    /// there; it changes when another origin takes the space over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl AppState {
    /// State for a node with this configuration; fails only when `tls_client_ca` cannot be
    /// read.
    pub fn new(
        config: Config,
        credentials: &crate::app::credentials::Credentials,
        engine: Engine,
        rtc: RtcNode,
        store: Arc<Store>,
        shutdown: watch::Receiver<bool>,
        metrics: PrometheusHandle,
    ) -> Result<AppState, crate::app::tls::TlsError> {
        let outbound = crate::app::outbound::Outbound::new(&config)?;
        let directory = Directory::new(config.max_spaces, config.max_spaces.max(100));
        let shield = Arc::new(Shield::new(&config));
        let stats_salt =
            store.node_secret(crate::app::store::LISTENER_KEY_SALT, 32).unwrap_or_else(|e| {
                tracing::warn!(
                    "cannot keep the listener key salt (statistics restart with it): {e}"
                );
                (0..32).map(|_| rand::random::<u8>()).collect()
            });
        Ok(AppState {
            stats_salt,
            shield,
            hls: HlsStores::default(),
            rtc,
            store,
            limits: IdentityLimits::default(),
            recordings: crate::app::recorder::Recordings::default(),
            clips: crate::app::clips::Clips::default(),
            captions: crate::app::captioning::Captions::new(&config),
            webhooks: crate::app::webhooks::Webhooks::start(
                &config,
                &credentials.webhook_secret,
                outbound.http.clone(),
            ),
            outbound,
            unsaved: Mutex::new(HashMap::new()),
            cluster: crate::app::cluster::view::ClusterView::new(&config),
            config,
            keys: TokenKeys::new(credentials.api_key.clone(), credentials.api_secret.as_bytes()),
            directory: Mutex::new(directory),
            live: RwLock::new(HashMap::new()),
            engine,
            shutdown,
            draining: AtomicBool::new(false),
            drain: watch::Sender::new(None),
            metrics,
        })
    }

    fn directory(&self) -> std::sync::MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live runtime of a space, if it is on air.
    pub fn live(&self, id: &SpaceId) -> Option<Arc<LiveSpace>> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// The live runtime of a space, or the error that says why listeners cannot join it now.
    pub fn on_air(&self, space: &Space) -> Result<Arc<LiveSpace>, AppError> {
        if self.is_draining() {
            return Err(AppError::draining());
        }
        match space.state {
            SpaceState::Scheduled => {
                Err(AppError::conflict("not_live", "this space has not started yet"))
            }
            SpaceState::Ended => Err(AppError::ended()),
            SpaceState::Live => self.live(&space.id).ok_or_else(AppError::ended),
        }
    }

    /// The spaces this node authored and mixes (an origin's, or a node alone's), in listing
    /// order; none on an edge.
    pub fn own_spaces(&self) -> Vec<Space> {
        if self.config.role == NodeRole::Edge {
            return Vec::new();
        }
        self.directory().list().into_iter().cloned().collect()
    }

    /// Every live space.
    pub fn live_spaces(&self) -> Vec<Arc<LiveSpace>> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Whether this node is one of a cluster (an origin or edge with Redis), not a node alone.
    pub fn clustered(&self) -> bool {
        self.config.role != crate::app::config::NodeRole::All && self.config.redis.is_some()
    }

    /// Listeners connected to this node, all spaces and protocols.
    pub fn total_listeners(&self) -> usize {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        live.values().map(|l| l.feed().total_listeners()).sum()
    }

    /// Admits a listener connecting directly (WebSocket or Ogg) to `live`: whoever the room
    /// removed or blocked is refused on every path; with a token (from `join`) they need only
    /// room and a free connection of their identity's few; without one they go through the
    /// waiting room like a join. The returned hold keeps their identity's count while they
    /// listen.
    pub fn admit_listener(
        &self,
        live: &LiveSpace,
        claims: Option<&Claims>,
    ) -> Result<Option<crate::app::shield::IdentityHold>, AppError> {
        let space = live.id();
        if let Some(refused) = claims.and_then(|c| live.refusal(&c.sub)) {
            return Err(refused);
        }
        let Some(claims) = claims else {
            self.admit_anonymous(space)?;
            return Ok(None);
        };
        if !self.shield.has_room(self.total_listeners()) {
            return Err(AppError {
                retry_after: Some(std::time::Duration::from_secs(5)),
                ..AppError::new(
                    crate::app::error::ErrorKind::Unavailable,
                    "full",
                    "this node is at capacity; retry",
                )
            });
        }
        self.shield.hold_identity(claims.sub.as_str()).map(Some)
    }

    fn admit_anonymous(&self, space: &SpaceId) -> Result<(), AppError> {
        if self.shield.require_token() {
            return Err(attack_mode());
        }
        if self.shield.require_pow() {
            return Err(AppError::unauthorized(
                "anonymous listeners join first right now: POST /api/v1/spaces/{id}/join",
            ));
        }
        let listeners = self.total_listeners();
        self.shield.admit_direct(listeners, townhall_shield::Lane::Anonymous).map_err(|retry_after| AppError {
            retry_after: Some(retry_after),
            ..AppError::new(
                crate::app::error::ErrorKind::Unavailable,
                "waiting_room",
                format!(
                    "this node is busy: POST /api/v1/spaces/{space}/join for a place in the queue"
                ),
            )
        })
    }

    /// Who a listener is: the token's identity, or anonymous on a public space.
    pub fn listener_identity(
        &self,
        space: &Space,
        claims: Option<&Claims>,
    ) -> Result<Identity, AppError> {
        match claims {
            Some(c) => Ok(c.sub.clone()),
            None if space.public && self.config.anonymous_listeners => {
                Ok(Identity::new("anonymous").unwrap_or_else(|_| unreachable!("valid identity")))
            }
            None => Err(AppError::unauthorized("this space needs a token to listen (?token=)")),
        }
    }

    /// A copy of a space's record.
    ///
    /// In a cluster, a space mixed elsewhere is known from the cluster's directory: an edge
    /// takes the directory's word over its own copy, an origin its own over the directory's.
    pub fn space(&self, id: &SpaceId) -> Result<Space, AppError> {
        let record = || self.cluster.record(id).map(|r| r.space);
        if self.config.role == NodeRole::Edge
            && let Some(space) = record()
        {
            return Ok(space);
        }
        let local = self.directory().get(id).cloned();
        match local {
            Ok(space) => Ok(space),
            Err(e) => record().ok_or_else(|| e.into()),
        }
    }

    /// Where a space is mixed when that is another node: its origin's URL (from the relay
    /// carrying it here, else from the cluster's directory). `None` for a space mixed here.
    pub fn origin_of(&self, id: &SpaceId) -> Option<String> {
        if let Some(live) = self.live(id) {
            return live.origin().map(str::to_owned);
        }
        let record = self.cluster.record(id)?;
        (record.node != self.cluster.node_id()).then_some(record.origin)
    }

    /// The API view of a space.
    pub fn view(&self, space: Space) -> SpaceView {
        let live = self.live(&space.id);
        let counts = live.as_ref().map_or(ListenerCounts::default(), |l| ListenerCounts {
            ws: l.feed().listeners(Protocol::Ws),
            ogg: l.feed().listeners(Protocol::Ogg),
            webrtc: l.feed().listeners(Protocol::Webrtc),
        });
        let record = self.cluster.record(&space.id);
        let mixed_here = live.as_ref().is_some_and(|l| l.origin().is_none());
        let speakers = match live.as_ref().filter(|_| mixed_here) {
            Some(l) => l.speakers_view(),
            // Mixed elsewhere: its stage as the origin last published it.
            None => record.as_ref().map(|r| r.speakers.clone()).unwrap_or_default(),
        };
        let (recording, origin) = match &record {
            _ if mixed_here => {
                (self.recordings.is_recording(&space.id), self.cluster.url().map(str::to_owned))
            }
            Some(r) => (r.recording, Some(r.origin.clone())),
            None => (false, live.as_ref().and_then(|l| l.origin().map(str::to_owned))),
        };
        let urls = SpaceUrls {
            ws: format!("/ws/{}", space.id),
            ogg: format!("/live/{}.opus", space.id),
            hls: format!("/hls/{}/master.m3u8", space.id),
        };
        let listen_mode = if space.public && self.shield.scale_mode() { "scale" } else { "direct" };
        SpaceView {
            listen_mode,
            recording,
            origin,
            // The cluster's: this node's now, the others' from their last heartbeats.
            listeners: counts.ws + counts.ogg + counts.webrtc + self.cluster.others(&space.id),
            listeners_by_protocol: counts,
            speakers,
            urls,
            space,
        }
    }

    /// Every space the caller may see (public ones, and private ones their bearer token
    /// grants), live first.
    pub fn list(&self, headers: &HeaderMap) -> Vec<SpaceView> {
        let claims = self.visitor(headers);
        self.known_spaces()
            .into_iter()
            .filter(|s| s.public || claims.as_ref().is_some_and(|c| c.space.covers(&s.id)))
            .map(|s| self.view(s))
            .collect()
    }

    /// Every space this node knows, in listing order. A node alone knows its own. In a cluster,
    /// the cluster's directory (every origin's spaces) is the same on every node; an origin
    /// adds its own where they differ (it is their author), an edge adds its copies only while
    /// the directory cannot be read (Redis away).
    fn known_spaces(&self) -> Vec<Space> {
        let cluster = self.cluster.directory();
        let own: Vec<Space> = self.directory().list().into_iter().cloned().collect();
        if cluster.is_empty() {
            return own;
        }
        let mut all: BTreeMap<SpaceId, Space> =
            cluster.values().map(|r| (r.space.id.clone(), r.space.clone())).collect();
        if self.config.role != NodeRole::Edge {
            all.extend(own.into_iter().map(|s| (s.id.clone(), s)));
        }
        let mut all: Vec<Space> = all.into_values().collect();
        all.sort_by_key(townhall_core::directory::listing_order);
        all
    }

    /// A space the caller may see: public, or private with a bearer token for it. A private
    /// space is "not found" to everyone else, so its existence does not leak either.
    pub fn visible_space(&self, id: &SpaceId, headers: &HeaderMap) -> Result<Space, AppError> {
        let space = self.space(id)?;
        if space.public || self.visitor(headers).is_some_and(|c| c.space.covers(id)) {
            Ok(space)
        } else {
            Err(DirectoryError::NotFound(id.clone()).into())
        }
    }

    /// Creates a space; a live one gets its mixer at once. Edges create none (they carry the
    /// spaces of origins).
    pub fn create(&self, req: NewSpace, host: Identity) -> Result<Space, AppError> {
        if self.config.role == crate::app::config::NodeRole::Edge {
            return Err(AppError::conflict(
                "not_origin",
                "this node is an edge: create spaces on an origin",
            ));
        }
        let mut directory = self.directory();
        // Ids are never reused: an ended space the directory forgot still owns its recordings,
        // bans and log in the database, which a new space of the same id must not inherit.
        // (A database that cannot answer counts as "used": refuse rather than risk it.)
        // In a cluster, an id another origin holds is taken too.
        let elsewhere = self.cluster.directory();
        let used_before =
            |id: &SpaceId| elsewhere.contains_key(id) || self.store.has_space(id).unwrap_or(true);
        let space = directory.create_avoiding(req, host, now_unix(), used_before)?.clone();
        if let Err(e) = self.store.save_space(&space) {
            directory.forget(&space.id);
            return Err(AppError::internal(format!("cannot store the space: {e}")));
        }
        if space.state == SpaceState::Live {
            self.open_live(&space, &directory, fresh_clock())?;
            self.webhooks.emit(WebhookEvent::SpaceStarted { space: (&space).into() });
        }
        Ok(space)
    }

    /// Takes a scheduled space live.
    pub fn start(&self, id: &SpaceId) -> Result<Space, AppError> {
        let mut directory = self.directory();
        let space = directory.start(id, now_unix())?.clone();
        self.save(&space);
        self.open_live(&space, &directory, fresh_clock())?;
        self.webhooks.emit(WebhookEvent::SpaceStarted { space: (&space).into() });
        Ok(space)
    }

    /// Ends a space and its stream.
    pub fn end(&self, id: &SpaceId) -> Result<Space, AppError> {
        let mut directory = self.directory();
        let space = directory.end(id, now_unix())?.clone();
        self.save(&space);
        let recording = self.recordings.current(id);
        let live = self.live.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        if let Some(live) = live {
            live.end(&self.engine);
            self.save_final_stats(&live);
            if let Some(recording) = recording {
                self.keep_transcript_after_end(&live, recording);
            }
            // The origin tells the world; an edge only stops carrying it.
            if live.origin().is_none() {
                self.webhooks.emit(WebhookEvent::SpaceEnded { space: (&space).into() });
            }
        }
        self.rtc.end_space(id);
        Ok(space)
    }

    /// Saves a space's new state. The change stands even if the disk refuses, and is retried
    /// every second ([`retry_unsaved`](Self::retry_unsaved)) until stored, so an ended space
    /// does not come back live after a restart; meanwhile `/readyz` says the store is behind.
    fn save(&self, space: &Space) {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        // A newer state replaces an older one still waiting; order per space is kept.
        unsaved.remove(&space.id);
        if let Err(e) = self.store.save_space(space) {
            tracing::error!(space = %space.id, "cannot store the space (will retry): {e}");
            metrics::counter!(crate::metrics::STORE_FAILURES).increment(1);
            unsaved.insert(space.id.clone(), space.clone());
        }
    }

    /// Stores the space states the database refused before; returns how many still wait.
    pub fn retry_unsaved(&self) -> usize {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        unsaved.retain(|id, space| match self.store.save_space(space) {
            Ok(()) => {
                tracing::info!(space = %id, "space state stored after a failed write");
                false
            }
            Err(_) => true,
        });
        unsaved.len()
    }

    /// Space states not yet stored.
    pub fn unsaved(&self) -> usize {
        self.unsaved.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Brings back the spaces stored before the last stop: scheduled ones wait again, live ones
    /// go back on air (speakers reconnect; removals and blocks still hold), ended ones are
    /// listed.
    pub fn restore(&self) -> Result<usize, AppError> {
        let stored =
            self.store.spaces().map_err(|e| AppError::internal(format!("stored spaces: {e}")))?;
        let mut directory = self.directory();
        let mut restored = 0;
        for space in stored {
            let space = match directory.restore(space) {
                Ok(space) => space.clone(),
                Err(e) => {
                    tracing::warn!("not restoring a stored space: {e}");
                    continue;
                }
            };
            if space.state == SpaceState::Live {
                let clock = self.kept_clock(&space.id);
                self.open_live(&space, &directory, clock)?;
            }
            restored += 1;
        }
        if restored > 0 {
            tracing::info!(restored, "spaces restored from the database");
        }
        Ok(restored)
    }

    /// The clock a space brought back after a restart numbers its frames by: the one kept
    /// before the stop, at the frame due now (a jump forward over the time it was off air), or,
    /// with none kept, from 0 as a new space.
    fn kept_clock(&self, id: &SpaceId) -> ProgramClock {
        match self.store.program_clock(id) {
            Ok(Some(clock)) => clock.at(crate::clock::now_ms()),
            Ok(None) => fresh_clock(),
            Err(e) => {
                tracing::warn!(space = %id, "cannot read the program clock, numbering from 0: {e}");
                fresh_clock()
            }
        }
    }

    /// Writes the program clock of every space mixed here whose clock changed since it was last
    /// written (blocking: the database), so a restart numbers its frames on from there.
    pub fn keep_clocks(&self) {
        for live in self.live_spaces() {
            let Some(clock) = live.clock_to_keep() else { continue };
            if let Err(e) = self.store.save_program_clock(live.id(), clock) {
                tracing::warn!(space = %live.id(), "cannot keep the program clock: {e}");
            }
        }
    }

    /// Takes over a live space another origin held (its lease lapsed and this node took it):
    /// on air here from now, its room brought back from `room`, its frames numbered by the
    /// program clock the other origin left (`clock`: the frame due now, so the numbers every
    /// node reads jump forward over the outage, never back; without one, an older origin's
    /// hold, from 0 as a new space). Speakers reconnect here; the edges follow the directory.
    /// Nothing happens if the space is already on air here.
    pub fn adopt(
        &self,
        space: Space,
        room: townhall_core::room::RoomSnapshot,
        clock: Option<ProgramClock>,
    ) -> Result<(), AppError> {
        if self.config.role != NodeRole::Origin || space.state != SpaceState::Live {
            return Err(AppError::conflict("not_origin", "only an origin takes live spaces over"));
        }
        let mut directory = self.directory();
        if self.live(&space.id).is_some() {
            return Ok(());
        }
        directory.forget(&space.id);
        let space = directory.restore(space)?.clone();
        self.save(&space);
        let clock = clock.map_or_else(fresh_clock, |c| c.at(crate::clock::now_ms()));
        self.open_live(&space, &directory, clock)?;
        drop(directory);
        if let Some(live) = self.live(&space.id) {
            live.restore_room(room, &self.config);
        }
        Ok(())
    }

    /// Stops mixing a space another origin now holds (this node lost its lease: it was away
    /// longer than the lease, and the space moved). Its speakers are sent to the space's
    /// origin; nothing is published or stored as ended (the space lives on there).
    pub fn fence(&self, id: &SpaceId) {
        let live = self.live.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        if let Some(live) = live {
            live.send_speakers_away();
            live.end(&self.engine);
        }
        self.directory().forget(id);
        self.rtc.end_space(id);
    }

    /// Forgets a space in the directory and the database (the demo, re-created at each start).
    pub fn forget(&self, id: &SpaceId) {
        let live = self.live.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        if let Some(live) = live {
            live.end(&self.engine);
        }
        self.directory().forget(id);
        if let Err(e) = self.store.delete_space(id) {
            tracing::error!(space = %id, "cannot forget the space: {e}");
        }
    }

    /// Ends live spaces whose host and co-hosts have all been away for the configured grace
    /// period; returns the ids ended.
    pub fn end_abandoned(&self, now: townhall_core::UnixTime) -> Vec<SpaceId> {
        let grace = self.config.host_absent_end_secs;
        let abandoned: Vec<SpaceId> = self
            .live_spaces()
            .iter()
            .filter(|live| live.origin().is_none() && live.host_gone(now))
            .map(|live| live.id().clone())
            .collect();
        abandoned
            .into_iter()
            .filter(|id| {
                tracing::info!(space = %id, grace, "no host for the grace period: ending");
                let ended = self.end(id).is_ok();
                if ended && let Ok(node) = Identity::new(NODE_ACTOR) {
                    let why = format!("no host or co-host for {grace} s");
                    self.log_end(id, &node, Some(why));
                }
                ended
            })
            .collect()
    }

    /// Records in the moderation log that `actor` ended the space (the room's own `end`
    /// action is logged by the room).
    pub fn log_end(&self, id: &SpaceId, actor: &Identity, reason: Option<String>) {
        let entry = townhall_core::room::ModerationEntry {
            at: now_unix(),
            actor: actor.clone(),
            action: townhall_core::room::ModAction::End,
            target: None,
            reason,
        };
        if let Err(e) = self.store.record_moderation(id, &[entry]) {
            tracing::error!(space = %id, "cannot record the end: {e}");
        }
    }

    /// Carries `space`, mixed on `origin`, on this node (an edge): returns the live space and
    /// where its relayed frames go, or `None` when it is carried already.
    pub fn carry(
        &self,
        space: &Space,
        origin: &str,
    ) -> Result<Option<(Arc<LiveSpace>, RelayInput)>, AppError> {
        let mut directory = self.directory();
        if self.live(&space.id).is_some() {
            return Ok(None);
        }
        // A record of an earlier run (ended here) gives way to the origin's.
        directory.forget(&space.id);
        directory.restore(space.clone())?;
        let (live, frames) = LiveSpace::open_relay(
            space,
            origin.to_owned(),
            &self.config,
            &self.engine,
            self.fanout(),
            self.rtc.program_sender(),
            self.store.clone(),
            self.webhooks.clone(),
        )
        .map_err(|e| AppError::internal(format!("cannot open space: {e}")))?;
        self.hls.insert(space.id.clone(), live.hls().clone());
        self.resume_stats(&live);
        self.live.write().unwrap_or_else(|p| p.into_inner()).insert(space.id.clone(), live.clone());
        Ok(Some((live, frames)))
    }

    fn fanout(&self) -> FanoutConfig {
        FanoutConfig {
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            stall: std::time::Duration::from_secs(self.config.stall_timeout_secs.max(1)),
            shutdown: self.shutdown.clone(),
            drain: self.drain.subscribe(),
            shield: Some(self.shield.clone()),
        }
    }

    /// Puts `space` on air here, its first frame numbered by `clock`.
    fn open_live(
        &self,
        space: &Space,
        directory: &Directory,
        clock: ProgramClock,
    ) -> Result<(), AppError> {
        let fanout = self.fanout();
        let live = LiveSpace::open(
            space,
            &self.config,
            &self.engine,
            fanout,
            self.rtc.program_sender(),
            self.store.clone(),
            self.webhooks.clone(),
            clock,
        )
        .map_err(|e| AppError::internal(format!("cannot open space: {e}")))?;
        self.hls.insert(space.id.clone(), live.hls().clone());
        // HLS of spaces the directory has forgotten is dropped.
        self.hls.retain(|id| directory.get(id).is_ok());
        self.resume_stats(&live);
        self.live.write().unwrap_or_else(|p| p.into_inner()).insert(space.id.clone(), live.clone());
        self.caption_by_default(&live);
        Ok(())
    }

    /// Runs `work` on the blocking pool: anything that may touch the database (SQLite waits on
    /// the disk), so a slow disk delays that request, never the async workers every listener and
    /// joiner shares.
    pub async fn blocking<T, E, F>(self: &Arc<Self>, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<AppError> + Send + 'static,
        F: FnOnce(&AppState) -> Result<T, E> + Send + 'static,
    {
        let app = self.clone();
        match tokio::task::spawn_blocking(move || work(&app)).await {
            Ok(result) => result,
            Err(e) => Err(AppError::internal(format!("blocking task: {e}")).into()),
        }
    }

    /// Starts draining: `/readyz` fails, new joins and listeners are refused, the cluster stops
    /// offering this node, and listeners are sent off evenly until `until` (`docs/design.md`,
    /// "Draining").
    pub fn begin_drain(&self, until: tokio::time::Instant) {
        self.draining.store(true, Ordering::Relaxed);
        self.drain.send_if_modified(|d| {
            let first = d.is_none();
            if first {
                *d = Some(until);
            }
            first
        });
    }

    /// Told when the node starts draining (the instant every listener will have been sent off).
    pub fn drain_watch(&self) -> watch::Receiver<Option<tokio::time::Instant>> {
        self.drain.subscribe()
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The load of each mixer thread (spaces placed, speakers as last counted), by index.
    pub fn mixer_loads(&self) -> Vec<crate::pipeline::placement::ThreadLoad> {
        self.engine.loads()
    }
}

/// The refusal of anonymous joiners while attack mode is on.
pub fn attack_mode() -> AppError {
    AppError::unauthorized(
        "this node only admits signed-in listeners right now (attack mode); retry with a token",
    )
}

/// The clock of a program starting now: frame 0 is mixed now.
fn fresh_clock() -> ProgramClock {
    ProgramClock::new(0, crate::clock::now_ms())
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
