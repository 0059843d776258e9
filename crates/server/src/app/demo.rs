//! The embedded demo: a live public space with a built-in speaker reading speech on a loop.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::MissedTickBehavior;
use townhall_core::room::Action;
use townhall_core::{Identity, NewSpace, Role, SpaceId};
use townhall_media::{OggOpusReader, SpeakerFrame};

use crate::app::error::AppError;
use crate::app::state::AppState;
use crate::clock::{now_unix, now_us};

/// The demo space's id.
pub const DEMO_SPACE: &str = "demo";

/// The speech the demo bot reads (mono Opus, 20 ms frames; see `assets/README.md`).
const SPEECH: &[u8] = include_bytes!("../../assets/demo-speech.opus");

/// Silence between two readings, in frames.
const PAUSE_FRAMES: usize = 75;

/// Creates the demo space and starts its speaker bot.
pub async fn start(app: &Arc<AppState>) -> Result<SpaceId, AppError> {
    let id = SpaceId::new(DEMO_SPACE).map_err(|e| AppError::internal(e.to_string()))?;
    let req = NewSpace {
        id: Some(id.clone()),
        title: "Townhall demo: a live space".into(),
        description: Some("A built-in speaker reads a short text on a loop.".into()),
        live: true,
        public: true,
        scheduled_for: None,
    };
    let host = Identity::new("demo-host").map_err(|e| AppError::internal(e.to_string()))?;
    // The demo starts afresh at every start, whatever the database remembers of it.
    if app.space(&id).is_ok() {
        app.forget(&id);
    }
    app.create(req, host.clone())?;
    let speech = OggOpusReader::parse(SPEECH).map_err(|e| AppError::internal(e.to_string()))?;
    let live = app.live(&id).ok_or_else(|| AppError::internal("demo space did not go live"))?;
    // Its host is always in: the demo never ends for want of one.
    live.act(&host, Role::Host, Action::Join { token_role: Role::Host }, now_unix())
        .map_err(|e| AppError::internal(e.to_string()))?;
    // Whoever is heard is on the stage: the bot joins the room as a speaker (the room seats a
    // speaker who joins while a seat is free), then connects to the mixer.
    let bot = Identity::new("demo-bot").map_err(|e| AppError::internal(e.to_string()))?;
    live.act(&bot, Role::Speaker, Action::Join { token_role: Role::Speaker }, now_unix())
        .map_err(|e| AppError::internal(e.to_string()))?;
    let seat = live.seat(bot, Role::Speaker, false).await?;
    let feed = live.feed().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let script = speech.packets.iter().map(Some).chain(std::iter::repeat_n(None, PAUSE_FRAMES));
        let mut seq: u32 = 0;
        for packet in script.cycle() {
            tick.tick().await;
            if feed.is_closed() {
                break;
            }
            // The counter runs through pauses too, as a real sender's does.
            let this = seq;
            seq = seq.wrapping_add(1);
            let Some(payload) = packet else { continue };
            let frame =
                SpeakerFrame { seq: this, sent_at_us: now_us(), payload: Bytes::clone(payload) };
            let _ = seat.send(frame);
        }
    });
    Ok(id)
}
