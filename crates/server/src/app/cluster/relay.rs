//! An edge's relay of one space: pulls the program once from the space's origin (its WebSocket
//! listener stream, `docs/protocol.md`) and hands the frames to this node's engine, where the
//! same sinks as on the origin carry them to every listener here. Room events pass through.
//!
//! It connects only while this node has listeners of the space (or LL-HLS readers), lets go
//! [`LINGER`] after the last one leaves, and reconnects after a broken link with full-jitter
//! exponential backoff ([`Backoff::RELAY`], the clients' rule), following the origin named by the directory. After a broken link it asks
//! the same origin for the frames it missed (`from=`, the next frame number), which the origin
//! keeps for 5 s: a short break is heard as a late burst, not as a gap. Frames keep the
//! origin's numbers (see [`Numbering`]): every edge serves the same frame under the same number.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use townhall_core::{Claims, Identity, Role, SpaceId, SpaceScope};
use townhall_media::ProgramFrame;

use crate::app::cluster::numbering::{Numbering, Start};
use crate::app::live::LiveSpace;
use crate::app::state::AppState;
use crate::metrics::RELAY_FRAMES;
use crate::pipeline::captions::relayed::Relayed;
use crate::pipeline::engine::RelayInput;
use crate::pipeline::events::ListenerEvent;
use townhall_shield::Backoff;

/// How long a relay stays connected after this node's last listener of the space left.
pub const LINGER: Duration = Duration::from_secs(10);
/// How often an idle relay looks for listeners, and a connected one for their absence.
const CHECK: Duration = Duration::from_millis(100);
/// The one run an edge's board has: the origin's captions, as relayed.
const RELAYED_RUN: u64 = 0;
/// The relay's token lives this long; a new one is minted for every connection.
const TOKEN_TTL_SECS: u64 = 3_600;

/// Why a relay session ended.
#[derive(Clone, Copy)]
enum Outcome {
    /// The origin said the space ended.
    SpaceOver,
    /// Nobody here listens any more.
    Idle,
    /// The link broke (or could not be made); `connected`: frames came through it first (the
    /// backoff starts over).
    Broken { connected: bool },
    /// The origin sent this relay off (it is draining): back after its delay (and the jitter).
    SentOff { after: Duration, connected: bool },
    /// The directory names another origin now (the space moved): go there at once.
    Moved,
}

/// Runs the relay of `live` until the space ends here (its engine lets go of `frames`).
pub async fn run(
    app: Arc<AppState>,
    live: Arc<LiveSpace>,
    frames: RelayInput,
    mut origin: watch::Receiver<String>,
    connected: Arc<AtomicBool>,
) {
    let space = live.id().clone();
    let feed = live.feed().clone();
    let hls = live.hls().clone();
    drop(live);
    let wanted = move || feed.total_listeners() > 0 || hls.read_within(LINGER);
    let mut backoff = Backoff::RELAY;
    let mut resume = Resume::default();
    while !frames.is_closed() {
        // The directory let go of the space here (it is being ended).
        if origin.has_changed().is_err() {
            return;
        }
        if !wanted() {
            tokio::time::sleep(CHECK).await;
            continue;
        }
        let url = origin.borrow_and_update().clone();
        let link = Link { space: &space, origin: &url, frames: &frames, connected: &connected };
        let ended = session(&app, link, &wanted, &mut origin, &mut resume).await;
        connected.store(false, Ordering::Relaxed);
        match ended {
            // With the directory at hand, it decides when a space is over here: an origin that
            // stops (fenced off after a failover, say) is not the space ending.
            Outcome::SpaceOver if app.cluster.redis_up() => {
                tracing::info!(%space, origin = %url, "origin stopped the space; the directory decides");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay(rand::random(), None)) => {}
                    _ = origin.changed() => {}
                }
            }
            Outcome::SpaceOver => {
                tracing::info!(%space, "origin ended the space; ending it here");
                let _ = app.end(&space);
                return;
            }
            Outcome::Moved => backoff.reset(),
            Outcome::Idle => {
                backoff.reset();
                // Nobody heard the frames since: nothing to catch up on.
                resume.next = None;
            }
            Outcome::Broken { connected } | Outcome::SentOff { connected, .. } => {
                // A link that was up starts the backoff over; one that keeps failing widens it.
                if connected {
                    backoff.reset();
                }
                let after = match ended {
                    Outcome::SentOff { after, .. } => Some(after),
                    _ => None,
                };
                let pause = backoff.next_delay(rand::random(), after);
                tracing::warn!(%space, origin = %url, ?pause, "relay link broken; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = origin.changed() => {}
                }
            }
        }
    }
}

/// Where a relay picks up after a broken link: the next frame number of the origin it last
/// pulled from, and how this node numbers that origin's frames.
#[derive(Debug, Default)]
struct Resume {
    origin: String,
    next: Option<u64>,
    /// The origin's numbers, passed on as they are (origins number by the program clock, so a
    /// new origin's after a failover are ahead), or renumbered when they would go back.
    numbering: Numbering,
    /// Caption events that came before the first frame of a new origin (their frame numbers
    /// are numbered with its frames, known at the first), at most [`MAX_PENDING`].
    pending: Vec<Relayed>,
}

/// Caption events held until a new origin's first frame, at most (the origin's greeting has
/// two).
const MAX_PENDING: usize = 16;

impl Resume {
    fn next_from(&self, origin: &str) -> Option<u64> {
        self.next.filter(|_| self.origin == origin)
    }

    /// This node's number for the origin's frame `seq`; a connection's first frame decides
    /// how the connection's frames are numbered (said in the log when they follow a jump, or
    /// had to be renumbered).
    fn renumber(&mut self, space: &SpaceId, seq: u32) -> u32 {
        let (out, start) = self.numbering.renumber(seq);
        match start {
            Some(Start::Renumbered { given, after }) => tracing::warn!(
                %space, origin = %self.origin, given, after,
                "the origin's frame numbers would go back (its clock is off, or it numbers afresh): renumbering them here"
            ),
            Some(Start::Followed { jump }) if jump > 1 => tracing::info!(
                %space, origin = %self.origin, first = out, jump,
                "the origin's frame numbers go on after a gap"
            ),
            _ => {}
        }
        out
    }

    /// An origin's caption event in this node's numbering, once it is known (after the first
    /// frame of a new origin); held until then.
    fn caption(&mut self, event: Relayed) -> Option<Relayed> {
        if !self.numbering.settled() {
            if self.pending.len() < MAX_PENDING {
                self.pending.push(event);
            }
            return None;
        }
        let numbering = &self.numbering;
        Some(event.renumbered(|n| numbering.number_of(n)))
    }

    /// The caption events held for the first frame, renumbered (it came).
    fn released(&mut self) -> Vec<Relayed> {
        if !self.numbering.settled() {
            return Vec::new();
        }
        let numbering = &self.numbering;
        self.pending.drain(..).map(|e| e.renumbered(|n| numbering.number_of(n))).collect()
    }
}

/// What one relay session pulls, from where, into what.
#[derive(Clone, Copy)]
struct Link<'a> {
    space: &'a SpaceId,
    origin: &'a str,
    frames: &'a RelayInput,
    connected: &'a AtomicBool,
}

/// One connection to the origin, until the space ends there, nobody here listens, the
/// directory names another origin, or the link breaks.
async fn session(
    app: &AppState,
    link: Link<'_>,
    wanted: &impl Fn() -> bool,
    moved: &mut watch::Receiver<String>,
    resume: &mut Resume,
) -> Outcome {
    let Link { space, origin, frames, connected } = link;
    let from = resume.next_from(origin);
    let Some(request) = request(app, space, origin, from) else {
        return Outcome::Broken { connected: false };
    };
    let new_origin = resume.origin != origin;
    if new_origin {
        resume.origin = origin.to_owned();
        resume.next = None;
    }
    // (A new origin stays new to the numbering until its first frame, whatever links fail.)
    resume.numbering.connected(new_origin);
    let tls = tokio_tungstenite::Connector::Rustls(app.outbound.tls.clone());
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(tls));
    let Ok((mut ws, _)) = connecting.await else {
        return Outcome::Broken { connected: false };
    };
    connected.store(true, Ordering::Relaxed);
    tracing::info!(%space, %origin, ?from, "relay connected");
    let mut check = tokio::time::interval(CHECK);
    let mut last_wanted = Instant::now();
    let mut heard = false;
    // Whether the origin said how far its captions are settled before its first frame (it
    // does when they are on): if not, they are off there now.
    let mut settled_said = false;
    let mut framed = false;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if let Some(last) = forward_frames(space, &data, frames, resume) {
                        resume.next = Some(u64::from(last) + 1);
                        heard = true;
                    }
                    if !std::mem::replace(&mut framed, true) && !settled_said {
                        captions_off_there(app, space);
                    }
                    for event in resume.released() {
                        relay_caption(app, space, event);
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Some(event) = Relayed::parse(text.as_str()) {
                        settled_said |= matches!(event, Relayed::Settled { .. });
                        if let Some(event) = resume.caption(event) {
                            relay_caption(app, space, event);
                        }
                        continue;
                    }
                    if let Some(ended) = pass_event(app, space, text.as_str()) {
                        return match ended {
                            Outcome::SentOff { after, .. } => Outcome::SentOff { after, connected: heard },
                            other => other,
                        };
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Outcome::Broken { connected: heard },
            },
            changed = moved.changed() => {
                // The directory let go of the space here: it is ending.
                if changed.is_err() {
                    let _ = ws.close(None).await;
                    return Outcome::Idle;
                }
                if *moved.borrow() != origin {
                    tracing::info!(%space, from = %origin, to = %*moved.borrow(), "the space moved; following it");
                    let _ = ws.close(None).await;
                    return Outcome::Moved;
                }
            }
            _ = check.tick() => {
                if frames.is_closed() {
                    let _ = ws.close(None).await;
                    return Outcome::Idle;
                }
                if wanted() {
                    last_wanted = Instant::now();
                } else if last_wanted.elapsed() >= LINGER {
                    tracing::info!(%space, "no listeners here; relay lets go");
                    let _ = ws.close(None).await;
                    return Outcome::Idle;
                }
            }
        }
    }
}

/// The WebSocket request to the origin's listener stream, with a listening token of this edge.
fn request(
    app: &AppState,
    space: &SpaceId,
    origin: &str,
    from: Option<u64>,
) -> Option<tokio_tungstenite::tungstenite::handshake::client::Request> {
    let base = origin.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!("ws://{}", base.strip_prefix("http://")?)
    };
    let url = match from {
        Some(from) => format!("{ws}/ws/{space}?batch=1&from={from}"),
        None => format!("{ws}/ws/{space}?batch=1"),
    };
    let who = Identity::new(format!("edge-{}", app.cluster.node_id())).ok()?;
    let claims = Claims::new(
        app.keys.api_key(),
        who,
        Role::Listener,
        SpaceScope::One(space.clone()),
        crate::clock::now_unix(),
        TOKEN_TTL_SECS,
    );
    let token = app.keys.mint_claims(claims).ok()?;
    let mut request = url.into_client_request().ok()?;
    let value = format!("Bearer {token}").parse().ok()?;
    request.headers_mut().insert("authorization", value);
    Some(request)
}

/// Hands each program frame of a batch to the engine; a full queue drops the frame (listeners
/// see a gap in `seq`), never waits. Returns the number of the batch's last frame.
fn forward_frames(
    space: &SpaceId,
    data: &Bytes,
    frames: &RelayInput,
    resume: &mut Resume,
) -> Option<u32> {
    let mut last = None;
    let parsed = townhall_media::wire::parse_program_batch(data, |f| {
        last = Some(f.seq);
        let frame = ProgramFrame {
            seq: resume.renumber(space, f.seq),
            mixed_at_us: f.mixed_at_us,
            capture_age_us: f.capture_age_us,
            payload: data.slice_ref(f.payload),
            peak: 0.0,
        };
        let result = if frames.push(frame) { "relayed" } else { "dropped" };
        metrics::counter!(RELAY_FRAMES, "result" => result).increment(1);
    });
    frames.wake();
    if parsed.is_err() {
        metrics::counter!(RELAY_FRAMES, "result" => "malformed").increment(1);
    }
    last
}

/// Puts an origin's caption event (renumbered) on this node's board and passes it on to its
/// listeners: the same cues, subtitle segments and settled frontier as the origin's.
fn relay_caption(app: &AppState, space: &SpaceId, event: Relayed) {
    let Some(live) = app.live(space) else { return };
    let (board, feed) = (live.caption_board(), live.feed());
    match event {
        Relayed::Cue(timed) => {
            if !board.on() {
                // Cues without a word of the frontier yet: nothing after them is settled.
                board.begin_run(RELAYED_RUN, timed.cue.start);
            }
            let json = timed.event().to_json();
            if board.add(timed) {
                feed.publish_caption_event(&json);
            }
        }
        Relayed::Switched { on, engine } => {
            if on {
                board.set_engine(engine.clone());
            } else {
                board.end_run(RELAYED_RUN, None);
            }
            let event = ListenerEvent::Captions { on, engine: engine.as_deref() };
            feed.publish_caption_event(&event.to_json());
        }
        Relayed::Settled { seq, latest } => {
            board.begin_run(RELAYED_RUN, seq);
            board.progress(RELAYED_RUN, seq, latest);
            feed.publish_relay_event(&ListenerEvent::CaptionsSettled { seq, latest }.to_json());
        }
    }
}

/// The origin's captions are off (it greeted the relay without a word of them): so are this
/// node's copy of them, if they were on when the relay last heard.
fn captions_off_there(app: &AppState, space: &SpaceId) {
    let Some(live) = app.live(space) else { return };
    if live.caption_board().runs(RELAYED_RUN) {
        live.caption_board().end_run(RELAYED_RUN, None);
        let event = ListenerEvent::Captions { on: false, engine: None };
        live.feed().publish_caption_event(&event.to_json());
    }
}

/// Passes a room event on to this node's listeners; returns how the session ends if the
/// event ends it. The origin's greeting and its own listener count are its, not ours.
fn pass_event(app: &AppState, space: &SpaceId, text: &str) -> Option<Outcome> {
    let event = serde_json::from_str::<serde_json::Value>(text).ok()?;
    match event.get("type").and_then(|t| t.as_str())? {
        "hello" | "listeners" => None,
        "state" => Some(Outcome::SpaceOver),
        "bye" => {
            let after = event.get("reconnect_after_ms").and_then(|v| v.as_u64()).unwrap_or(0);
            // Bounded: a stale or hostile value never parks the relay for long.
            let after = Duration::from_millis(after).min(Backoff::RELAY.window() * 50);
            Some(Outcome::SentOff { after, connected: true })
        }
        "speaking" => {
            let live = app.live(space)?;
            let speakers = event.get("speakers").and_then(|s| s.as_array());
            let who = speakers
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().and_then(|s| Identity::new(s).ok()))
                .take(64)
                .collect();
            live.set_talking(who);
            live.feed().publish_event(text);
            None
        }
        kind => {
            // The room changed: what the edge kept of it is stale (reactions are only tallies:
            // they do not change the room).
            if kind != "reactions" {
                app.cluster.rooms().invalidate(space);
            }
            if let Some(live) = app.live(space) {
                live.feed().publish_event(text);
            }
            None
        }
    }
}
