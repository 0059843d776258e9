//! Starting and stopping recordings (the HTTP toggle, a space ending, the node draining).

use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use tokio::sync::watch;
use townhall_core::{Space, SpaceId, SpaceState};
use townhall_media::OggOpusReader;

use crate::app::error::AppError;
use crate::app::live::LiveSpace;
use crate::app::state::AppState;
use crate::app::store::{RecordingPart, RecordingRecord, RecordingState};
use crate::clock::now_unix;

use super::registry::Active;
use super::writer::{Recorder, create};
use super::*;

/// Starts recording a live space: the file and its index row, the recorder's thread, the tap
/// in the engine; tells the room. Returns the index entry.
pub async fn start(app: &Arc<AppState>, space: &Space) -> Result<RecordingRecord, AppError> {
    start_part(app, space, None).await
}

/// Like [`start`], for a later `part` of a recording begun on another origin (this node took
/// the space over while it was being recorded).
pub async fn start_part(
    app: &Arc<AppState>,
    space: &Space,
    part: Option<RecordingPart>,
) -> Result<RecordingRecord, AppError> {
    if app.is_draining() {
        return Err(AppError::draining());
    }
    let live = match (space.state, app.live(&space.id)) {
        (SpaceState::Live, Some(live)) => live,
        _ => return Err(AppError::conflict("not_live", "only a live space can be recorded")),
    };
    let now = now_unix();
    let id = new_id(&space.id, now);
    let (done_tx, done_rx) = watch::channel(false);
    {
        let mut active = app.recordings.lock();
        if active.contains_key(&space.id) {
            return Err(AppError::conflict("already_recording", "this space is being recorded"));
        }
        let active_part = part.clone();
        active
            .insert(space.id.clone(), Active { id: id.clone(), part: active_part, done: done_rx });
    }
    let row = RecordingRecord {
        id: id.clone(),
        space: space.id.clone(),
        title: space.title.clone(),
        file: file_name(&id),
        started_at: now,
        ended_at: None,
        duration_ms: 0,
        bytes: 0,
        state: RecordingState::Recording,
        host: Some(space.host.clone()),
        part,
    };
    let pre_skip =
        OggOpusReader::parse(&live.feed().ogg_headers()).map_or(312, |r| r.head.pre_skip);
    let dir = dir(&app.config.data_dir);
    let (store, sync_ms) = (app.store.clone(), app.config.recording_sync_ms);
    let created = {
        let (dir, row) = (dir.clone(), row.clone());
        tokio::task::spawn_blocking(move || create(&dir, &row, pre_skip, sync_ms, &store)).await
    };
    let (file, writer, bytes) = match created {
        Ok(Ok(created)) => created,
        Ok(Err(e)) => {
            app.recordings.release(&space.id, &id);
            tracing::error!(recording = %id, "cannot create the recording: {e}");
            return Err(AppError::internal(format!("cannot create the recording: {e}")));
        }
        Err(e) => {
            app.recordings.release(&space.id, &id);
            return Err(AppError::internal(format!("cannot create the recording: {e}")));
        }
    };
    let (tx, rx) = sync_channel(QUEUE_FRAMES);
    let recorder = Recorder {
        row: row.clone(),
        dir,
        file,
        writer,
        rx: Some(rx),
        store: app.store.clone(),
        webhooks: app.webhooks.clone(),
        registry: app.recordings.clone(),
        done: done_tx,
        clock: Instant::now(),
        bytes,
        max_ms: app.config.recording_max_secs.saturating_mul(1_000),
        max_bytes: app.config.recording_max_bytes,
        // Turn ends lose the voice activity's hangover (the engine's, the default).
        turns: townhall_media::turns::Turns::new(townhall_media::turns::TurnConfig {
            hangover_ms: townhall_media::VoiceConfig::default().hangover_ms,
            ..Default::default()
        }),
    };
    let spawned =
        std::thread::Builder::new().name("townhall-recorder".into()).spawn(move || recorder.run());
    if let Err(e) = spawned {
        app.recordings.release(&space.id, &id);
        return Err(AppError::internal(format!("cannot start the recorder: {e}")));
    }
    // The tap notes the recording's first frame: its transcript's time zero.
    let first = Arc::new(crate::pipeline::captions::FirstFrame::default());
    app.begin_transcript(&live, first.clone());
    let tap = RecordTap::new(tx, &id, Some(first));
    if !live.record(Some(tap)).await {
        // The space's mixer is gone (it ended meanwhile): the recorder finishes at once.
        return Err(AppError::conflict("not_live", "the space ended"));
    }
    tracing::info!(recording = %id, space = %space.id, "recording started");
    announce(&live, &id, true);
    Ok(row)
}

/// Stops the recording of `space` and waits (up to 10 s) for its file to be finished.
pub async fn stop(app: &Arc<AppState>, space: &SpaceId) -> Result<RecordingRecord, AppError> {
    let active = app.recordings.lock().remove(space);
    let Some(Active { id, mut done, .. }) = active else {
        return Err(AppError::conflict("not_recording", "this space is not being recorded"));
    };
    if let Some(live) = app.live(space) {
        // Without a live mixer there is no tap left: the recorder is finishing by itself.
        live.record(None).await;
        announce(&live, &id, false);
        // The words said just before the stop are still being transcribed: wait a little
        // (3 s at most) for their final, so the transcript ends where the recording does.
        let board = live.caption_board().clone();
        app.keep_transcript_settled(board, id.clone(), std::time::Duration::from_secs(3)).await;
    }
    if tokio::time::timeout(STOP_WAIT, done.wait_for(|d| *d)).await.is_err() {
        tracing::warn!(recording = %id, "the recording is taking long to finish");
    }
    app.store
        .recording(&id)?
        .ok_or_else(|| AppError::internal("the recording could not be created"))
}

/// Finishes every recording (the node is draining), waiting up to 10 s for their files.
pub async fn finish_all(app: &AppState) {
    let active: Vec<(SpaceId, Active)> = app.recordings.lock().drain().collect();
    for (space, a) in &active {
        if let Some(live) = app.live(space) {
            live.record(None).await;
            app.keep_transcript(live.caption_board(), &a.id);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    for (_, mut a) in active {
        if tokio::time::timeout_at(deadline, a.done.wait_for(|d| *d)).await.is_err() {
            tracing::warn!(recording = %a.id, "drain: the recording did not finish in time");
        }
    }
}

/// Tells the room (WebSocket listeners) that recording started or stopped.
pub(super) fn announce(live: &LiveSpace, id: &str, recording: bool) {
    let event = crate::pipeline::events::ListenerEvent::Recording { recording, id };
    live.feed().publish_event(&event.to_json());
}
