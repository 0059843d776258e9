//! Recording and replay: a space's program stream to disk, the recordings index, recovery after
//! a crash, and the files over HTTP.
//!
//! - **Writing.** Starting a recording hands the media engine a [`RecordTap`]: on every tick the
//!   engine offers the program frame it already encoded (shared `Bytes`, no copy) with
//!   `try_send` into a bounded queue, and never waits; if the disk falls behind, frames are
//!   dropped and counted (`townhall_recording_frames_dropped_total`), and the recording fills
//!   the gap with silence so it keeps time. A thread per recording drains the queue through
//!   [`townhall_media::recording::RecordingWriter`], appends Ogg pages to
//!   `{data_dir}/recordings/{id}.opus.partial` as they are made and `fsync`s the file at least
//!   every `recording_sync_ms` (≤ 2 s): a crash loses at most that. On stop (or when the space
//!   ends, or the node drains) it writes the end-of-stream page, syncs, renames the file to
//!   `{id}.opus` and syncs the directory.
//! - **Index.** Each recording is a row in the store: saved when it starts, updated every 10 s
//!   and when it ends (`finished`).
//! - **Recovery.** At start-up, before serving, [`recover`] finalises what a crash left (rows
//!   still `recording`, `.partial` files without a row) with
//!   [`townhall_media::recording::finalise`] and marks them `recovered`, with their real
//!   duration and size.
//! - **Replay.** `GET /api/v1/recordings`, `GET /api/v1/recordings/{id}` and the file at
//!   `GET /recordings/{id}.opus` (single byte ranges, `ETag`, `Last-Modified`, conditional
//!   requests, `Content-Disposition`). Recordings of public spaces are public; others need a
//!   token for their space (`Authorization: Bearer` or `?token=`, as `<audio>` cannot send
//!   headers).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use townhall_core::{Space, SpaceId, SpaceState, UnixTime, WebhookEvent};
use townhall_media::OggOpusReader;
use townhall_media::recording::{
    FinaliseError, RecordingTags, RecordingWriter, WriterConfig, WriterOutput, finalise, iso8601,
};

use crate::api::space_id;
use crate::clock::now_unix;
use crate::error::ApiError;
use crate::live::LiveSpace;
use crate::state::{AppState, bearer};
use crate::store::{RecordingRecord, RecordingState, Store};
use crate::webhooks::Webhooks;

/// Gauge: recordings being written.
pub const RECORDINGS_ACTIVE: &str = "townhall_recordings_active";
/// Counter: program frames a recorder could not take in time (the disk fell behind); the
/// recording has silence there.
pub const RECORDING_FRAMES_DROPPED: &str = "townhall_recording_frames_dropped_total";
/// Counter: bytes appended to recording files.
pub const RECORDING_BYTES: &str = "townhall_recording_bytes_total";
/// Histogram (summary): seconds one `fsync` of a recording file took.
pub const RECORDING_SYNC_SECONDS: &str = "townhall_recording_sync_seconds";
/// Counter: recordings ended, by `outcome` (`finished`, `recovered`, `failed`).
pub const RECORDINGS_ENDED: &str = "townhall_recordings_ended_total";

/// The directory of recordings inside the data directory.
pub const DIR: &str = "recordings";
/// Suffix of a file still being written.
const PARTIAL: &str = ".partial";
/// Suffix of a file being rewritten by recovery.
const RECOVERING: &str = ".recovering";
/// Frames queued towards a recorder (10 s of program) before new ones are dropped.
const QUEUE_FRAMES: usize = 500;
/// How often the index row of a recording in progress is updated.
const INDEX_EVERY: Duration = Duration::from_secs(10);
/// How long stopping waits for the file to be finished.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// Frames per page (500 ms) when no sync closes one first: what a killed process can lose
/// (pages written are in the kernel; syncs make them survive a power cut too).
const PAGE_FRAMES: usize = 25;

/// A program frame on its way to a recorder.
struct Frame {
    seq: u32,
    payload: Bytes,
}

/// The engine's end of a recording: program frames are offered, never waited for.
pub struct RecordTap {
    tx: SyncSender<Frame>,
    id: Arc<str>,
    dropped: u64,
}

impl std::fmt::Debug for RecordTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordTap").field("id", &self.id).field("dropped", &self.dropped).finish()
    }
}

impl RecordTap {
    /// Offers program frame `seq` without waiting. A full queue drops the frame (counted and
    /// logged); returns `false` once the recorder is gone, and the engine then drops the tap.
    pub fn offer(&mut self, seq: u32, payload: &Bytes) -> bool {
        match self.tx.try_send(Frame { seq, payload: payload.clone() }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                metrics::counter!(RECORDING_FRAMES_DROPPED).increment(1);
                if self.dropped == 1 || self.dropped.is_multiple_of(250) {
                    tracing::warn!(
                        recording = %self.id,
                        dropped = self.dropped,
                        "the disk is behind: recording frames dropped (silence in the file)"
                    );
                }
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Which spaces are being recorded, and how to learn that a recording's file is finished.
#[derive(Debug, Clone, Default)]
pub struct Recordings {
    active: Arc<Mutex<HashMap<SpaceId, Active>>>,
}

#[derive(Debug)]
struct Active {
    id: String,
    done: watch::Receiver<bool>,
}

impl Recordings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SpaceId, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `space` is being recorded.
    pub fn is_recording(&self, space: &SpaceId) -> bool {
        self.lock().contains_key(space)
    }

    /// The id of the recording of `space` in progress, if any.
    pub fn current(&self, space: &SpaceId) -> Option<String> {
        self.lock().get(space).map(|a| a.id.clone())
    }

    /// Forgets the active recording of `space` if it is `id`.
    fn release(&self, space: &SpaceId, id: &str) {
        let mut active = self.lock();
        if active.get(space).is_some_and(|a| a.id == id) {
            active.remove(space);
        }
    }
}

/// The recordings directory of a node.
pub fn dir(data_dir: &FsPath) -> PathBuf {
    data_dir.join(DIR)
}

/// Whether `id` is a recording id as the server makes them (`{space}-{unix}-{hex}`): 1 to 100
/// of `[a-z0-9-]`, so never a path.
pub fn valid_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn new_id(space: &SpaceId, now: UnixTime) -> String {
    format!("{space}-{}-{:08x}", now.0, rand::random::<u32>())
}

/// The file of recording `id`.
fn file_name(id: &str) -> String {
    format!("{id}.opus")
}

/// Where recording `id` is served.
pub fn url(id: &str) -> String {
    format!("/recordings/{id}.opus")
}

/// Milliseconds since `start`, the recorder's clock.
fn ms_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Makes the directory entry of a new or renamed file durable.
fn sync_dir(dir: &FsPath) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn store_err(e: crate::store::StoreError) -> io::Error {
    io::Error::other(e.to_string())
}

/// A recording's thread: drains the tap's queue into the file.
struct Recorder {
    row: RecordingRecord,
    dir: PathBuf,
    file: File,
    writer: RecordingWriter,
    rx: Option<Receiver<Frame>>,
    store: Arc<Store>,
    webhooks: Webhooks,
    registry: Recordings,
    done: watch::Sender<bool>,
    clock: Instant,
    bytes: u64,
    /// Where it stops by itself: audio length (ms) and file size (bytes).
    max_ms: u64,
    max_bytes: u64,
}

impl Recorder {
    fn partial_path(&self) -> PathBuf {
        self.dir.join(format!("{}{PARTIAL}", self.row.file))
    }

    fn run(mut self) {
        metrics::gauge!(RECORDINGS_ACTIVE).increment(1.0);
        let mut indexed = Instant::now();
        let failed = loop {
            let now = ms_since(self.clock);
            let wait = self
                .writer
                .deadline()
                .map_or(INDEX_EVERY, |d| Duration::from_millis(d.saturating_sub(now)))
                .min(INDEX_EVERY);
            let Some(rx) = &self.rx else { break None };
            let out = match rx.recv_timeout(wait) {
                Ok(frame) => self.writer.push(frame.seq, frame.payload, ms_since(self.clock)),
                Err(RecvTimeoutError::Timeout) => self.writer.poll(ms_since(self.clock)),
                Err(RecvTimeoutError::Disconnected) => break None,
            };
            if let Err(e) = out.map_err(io::Error::other).and_then(|o| self.append(&o)) {
                break Some(e);
            }
            if self.writer.duration_ms() >= self.max_ms || self.bytes >= self.max_bytes {
                tracing::warn!(recording = %self.row.id, duration_ms = self.writer.duration_ms(), bytes = self.bytes, "recording reached its cap: finishing it");
                metrics::counter!(RECORDINGS_ENDED, "outcome" => "capped").increment(1);
                break None;
            }
            if indexed.elapsed() >= INDEX_EVERY {
                indexed = Instant::now();
                self.row.duration_ms = self.writer.duration_ms();
                self.row.bytes = self.bytes;
                if let Err(e) = self.store.save_recording(&self.row) {
                    tracing::warn!(recording = %self.row.id, "cannot update the index: {e}");
                }
            }
        };
        // The engine sees the queue closed at its next offer and lets go of the tap.
        self.rx = None;
        let result = match failed {
            None => self.close(),
            Some(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.row.state = RecordingState::Finished;
                self.row.ended_at = Some(now_unix());
                self.row.duration_ms = self.writer.duration_ms();
                self.row.bytes = self.bytes;
                if let Err(e) = self.store.save_recording(&self.row) {
                    tracing::error!(recording = %self.row.id, "cannot update the index: {e}");
                }
                metrics::counter!(RECORDINGS_ENDED, "outcome" => "finished").increment(1);
                tracing::info!(
                    recording = %self.row.id,
                    space = %self.row.space,
                    duration_ms = self.row.duration_ms,
                    bytes = self.row.bytes,
                    filled = self.writer.filled(),
                    "recording finished"
                );
                emit_finished(&self.webhooks, &self.row);
            }
            Err(e) => {
                // What reached the disk is finalised now (or at the next start if even that fails).
                tracing::error!(recording = %self.row.id, "recording failed: {e}");
                metrics::counter!(RECORDINGS_ENDED, "outcome" => "failed").increment(1);
                match recover_row(&self.dir, self.row.clone(), &self.store) {
                    Ok(row) => emit_finished(&self.webhooks, &row),
                    Err(e) => tracing::error!(
                        recording = %self.row.id,
                        "cannot finalise it now either ({e}); it is recovered at the next start"
                    ),
                }
            }
        }
        self.registry.release(&self.row.space, &self.row.id);
        let _ = self.done.send(true);
        metrics::gauge!(RECORDINGS_ACTIVE).decrement(1.0);
    }

    /// Appends pages, and syncs when the writer says so.
    fn append(&mut self, out: &WriterOutput) -> io::Result<()> {
        if !out.bytes.is_empty() {
            // `File` is unbuffered: the pages are in the kernel once written (a killed process
            // loses nothing written), and on the disk once synced.
            self.file.write_all(&out.bytes)?;
            self.bytes += out.bytes.len() as u64;
            metrics::counter!(RECORDING_BYTES).increment(out.bytes.len() as u64);
        }
        if out.sync {
            let started = Instant::now();
            self.file.flush()?;
            self.file.sync_data()?;
            metrics::histogram!(RECORDING_SYNC_SECONDS).record(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// The end-of-stream page, a sync, the final name, a directory sync.
    fn close(&mut self) -> io::Result<()> {
        let last = self.writer.finish().map_err(io::Error::other)?;
        self.append(&WriterOutput { bytes: last, sync: true })?;
        std::fs::rename(self.partial_path(), self.dir.join(&self.row.file))?;
        sync_dir(&self.dir)
    }
}

fn emit_finished(webhooks: &Webhooks, row: &RecordingRecord) {
    webhooks.emit(WebhookEvent::RecordingFinished {
        id: row.id.clone(),
        space: row.space.clone(),
        duration_ms: row.duration_ms,
        bytes: row.bytes,
        url: url(&row.id),
    });
}

/// Creates the file (headers written and synced), then the index row. Blocking.
fn create(
    dir: &FsPath,
    row: &RecordingRecord,
    pre_skip: u16,
    sync_ms: u64,
    store: &Store,
) -> io::Result<(File, RecordingWriter, u64)> {
    crate::datadir::ensure_private_dir(dir)?;
    let path = dir.join(format!("{}{PARTIAL}", row.file));
    let mut file = crate::datadir::create_new_private(&path)?;
    let tags = RecordingTags {
        title: row.title.clone(),
        space: row.space.to_string(),
        recording: row.id.clone(),
        started_at: row.started_at.0,
    };
    let config = WriterConfig { sync_interval_ms: sync_ms, page_frames: PAGE_FRAMES };
    let (writer, headers) = RecordingWriter::new(rand::random(), pre_skip, &tags, config, 0)
        .map_err(io::Error::other)?;
    file.write_all(&headers)?;
    file.sync_data()?;
    sync_dir(dir)?;
    store.save_recording(row).map_err(store_err)?;
    Ok((file, writer, headers.len() as u64))
}

/// Starts recording a live space: the file and its index row, the recorder's thread, the tap
/// in the engine; tells the room. Returns the index entry.
pub async fn start(app: &Arc<AppState>, space: &Space) -> Result<RecordingRecord, ApiError> {
    if app.is_draining() {
        return Err(ApiError::draining());
    }
    let live = match (space.state, app.live(&space.id)) {
        (SpaceState::Live, Some(live)) => live,
        _ => return Err(ApiError::conflict("not_live", "only a live space can be recorded")),
    };
    let now = now_unix();
    let id = new_id(&space.id, now);
    let (done_tx, done_rx) = watch::channel(false);
    {
        let mut active = app.recordings.lock();
        if active.contains_key(&space.id) {
            return Err(ApiError::conflict("already_recording", "this space is being recorded"));
        }
        active.insert(space.id.clone(), Active { id: id.clone(), done: done_rx });
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
            return Err(ApiError::internal(format!("cannot create the recording: {e}")));
        }
        Err(e) => {
            app.recordings.release(&space.id, &id);
            return Err(ApiError::internal(format!("cannot create the recording: {e}")));
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
    };
    let spawned =
        std::thread::Builder::new().name("townhall-recorder".into()).spawn(move || recorder.run());
    if let Err(e) = spawned {
        app.recordings.release(&space.id, &id);
        return Err(ApiError::internal(format!("cannot start the recorder: {e}")));
    }
    let tap = RecordTap { tx, id: Arc::from(id.as_str()), dropped: 0 };
    if !live.record(Some(tap)).await {
        // The space's mixer is gone (it ended meanwhile): the recorder finishes at once.
        return Err(ApiError::conflict("not_live", "the space ended"));
    }
    tracing::info!(recording = %id, space = %space.id, "recording started");
    announce(&live, &id, true);
    Ok(row)
}

/// Stops the recording of `space` and waits (up to 10 s) for its file to be finished.
pub async fn stop(app: &Arc<AppState>, space: &SpaceId) -> Result<RecordingRecord, ApiError> {
    let active = app.recordings.lock().remove(space);
    let Some(Active { id, mut done }) = active else {
        return Err(ApiError::conflict("not_recording", "this space is not being recorded"));
    };
    if let Some(live) = app.live(space) {
        // Without a live mixer there is no tap left: the recorder is finishing by itself.
        live.record(None).await;
        announce(&live, &id, false);
    }
    if tokio::time::timeout(STOP_WAIT, done.wait_for(|d| *d)).await.is_err() {
        tracing::warn!(recording = %id, "the recording is taking long to finish");
    }
    app.store
        .recording(&id)?
        .ok_or_else(|| ApiError::internal("the recording could not be created"))
}

/// Finishes every recording (the node is draining), waiting up to 10 s for their files.
pub async fn finish_all(app: &AppState) {
    let active: Vec<(SpaceId, Active)> = app.recordings.lock().drain().collect();
    for (space, _) in &active {
        if let Some(live) = app.live(space) {
            live.record(None).await;
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
fn announce(live: &LiveSpace, id: &str, recording: bool) {
    let event = serde_json::json!({ "type": "recording", "recording": recording, "id": id });
    live.feed().publish_event(&event.to_string());
}

// ---- retention -----------------------------------------------------------------------------

/// Deletes finished recordings past their retention, then the oldest while all of them
/// together exceed `budget` bytes; returns how many were deleted. Recordings in progress are
/// never touched. Blocking: run it off the async workers.
pub fn sweep(
    data_dir: &FsPath,
    store: &Store,
    budget: u64,
    retention_days: u64,
    now: UnixTime,
) -> usize {
    let rows = match store.recordings() {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!("recordings sweep: cannot read the index: {e}");
            return 0;
        }
    };
    let expired = |r: &RecordingRecord| {
        let at = r.ended_at.unwrap_or(r.started_at).0;
        retention_days > 0 && now.0.saturating_sub(at) > retention_days.saturating_mul(86_400)
    };
    // Newest first, as the index lists them: the newest are kept within the budget.
    let mut total: u64 = 0;
    let mut doomed = Vec::new();
    for r in rows.into_iter().filter(|r| r.state != RecordingState::Recording) {
        if expired(&r) || total.saturating_add(r.bytes) > budget {
            doomed.push(r);
        } else {
            total += r.bytes;
        }
    }
    let dir = dir(data_dir);
    doomed.into_iter().filter(|r| delete_recording(&dir, store, r)).count()
}

fn delete_recording(dir: &FsPath, store: &Store, r: &RecordingRecord) -> bool {
    match std::fs::remove_file(dir.join(&r.file)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(recording = %r.id, "cannot delete an expired recording: {e}");
            return false;
        }
    }
    if let Err(e) = store.delete_recording(&r.id) {
        tracing::error!(recording = %r.id, "cannot forget an expired recording: {e}");
        return false;
    }
    tracing::info!(recording = %r.id, bytes = r.bytes, "recording deleted (retention or disk budget)");
    true
}

// ---- recovery ------------------------------------------------------------------------------

/// Finalises what the last run left unfinished: rows still `recording`, and `.partial` files
/// without a row (a crash between creating the file and indexing it, or a node without a
/// database). Each becomes `recovered`, with the duration and size of what reached the disk.
/// Blocking; runs at start-up before the node serves. Returns how many were recovered.
pub fn recover(data_dir: &FsPath, store: &Store, webhooks: &Webhooks) -> usize {
    let dir = dir(data_dir);
    let rows = match store.recordings() {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!("recovering recordings: cannot read the index: {e}");
            return 0;
        }
    };
    let mut recovered = 0;
    for row in rows.iter().filter(|r| r.state == RecordingState::Recording) {
        match recover_row(&dir, row.clone(), store) {
            Ok(row) => {
                recovered += 1;
                emit_finished(webhooks, &row);
            }
            Err(e) => tracing::error!(recording = %row.id, "cannot recover the recording: {e}"),
        }
    }
    let Ok(entries) = std::fs::read_dir(&dir) else { return recovered };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".opus.partial")) else {
            continue;
        };
        if !valid_id(id) || rows.iter().any(|r| r.id == id) {
            continue;
        }
        match recover_orphan(&dir, id, store) {
            Ok(Some(row)) => {
                recovered += 1;
                emit_finished(webhooks, &row);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(recording = id, "cannot recover the recording: {e}"),
        }
    }
    if recovered > 0 {
        tracing::info!(recovered, "recordings interrupted by the last stop were recovered");
    }
    recovered
}

/// Finalises one interrupted recording and saves it as `recovered`.
fn recover_row(
    dir: &FsPath,
    mut row: RecordingRecord,
    store: &Store,
) -> io::Result<RecordingRecord> {
    if !valid_id(&row.id) || row.file != file_name(&row.id) {
        return Err(io::Error::other(format!("unexpected file name {:?}", row.file)));
    }
    let partial = dir.join(format!("{}{PARTIAL}", row.file));
    let target = dir.join(&row.file);
    let source = if partial.exists() { &partial } else { &target };
    let (duration_ms, bytes) = match std::fs::read(source) {
        Ok(data) => match finalise(&data) {
            Ok(done) => {
                let unchanged = source == &target && done.bytes == data;
                if !unchanged {
                    replace(dir, &row.file, &done.bytes)?;
                }
                if partial.exists() {
                    std::fs::remove_file(&partial)?;
                    sync_dir(dir)?;
                }
                let tags = done.tags();
                if row.title.is_empty() && !tags.title.is_empty() {
                    row.title = tags.title;
                }
                (done.duration_ms(), done.bytes.len() as u64)
            }
            Err(FinaliseError::NoHeaders(why)) => {
                tracing::warn!(recording = %row.id, "nothing to recover ({why})");
                let _ = std::fs::remove_file(source);
                (0, 0)
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(recording = %row.id, "the recording's file is missing");
            (0, 0)
        }
        Err(e) => return Err(e),
    };
    row.state = RecordingState::Recovered;
    row.duration_ms = duration_ms;
    row.bytes = bytes;
    row.ended_at = Some(UnixTime(row.started_at.0 + duration_ms.div_ceil(1_000)));
    store.save_recording(&row).map_err(store_err)?;
    metrics::counter!(RECORDINGS_ENDED, "outcome" => "recovered").increment(1);
    tracing::info!(recording = %row.id, duration_ms, bytes, "recording recovered");
    Ok(row)
}

/// Indexes and finalises a `.partial` file the index does not know, from its own tags.
fn recover_orphan(dir: &FsPath, id: &str, store: &Store) -> io::Result<Option<RecordingRecord>> {
    let partial = dir.join(format!("{id}.opus{PARTIAL}"));
    let data = std::fs::read(&partial)?;
    let done = match finalise(&data) {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(recording = id, "removing an unrecoverable partial file: {e}");
            std::fs::remove_file(&partial)?;
            return Ok(None);
        }
    };
    let tags = done.tags();
    let Ok(space) = SpaceId::new(tags.space.clone()) else {
        tracing::warn!(recording = id, "a partial file names no valid space; left alone");
        return Ok(None);
    };
    let row = RecordingRecord {
        id: id.to_owned(),
        space,
        title: tags.title,
        file: file_name(id),
        started_at: UnixTime(tags.started_at),
        ended_at: None,
        duration_ms: 0,
        bytes: 0,
        state: RecordingState::Recording,
    };
    recover_row(dir, row, store).map(Some)
}

/// Writes `name` in `dir` atomically: a temporary file, synced, renamed over, directory synced.
fn replace(dir: &FsPath, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}{RECOVERING}"));
    let mut file = crate::datadir::create_private(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

// ---- HTTP ----------------------------------------------------------------------------------

/// Routes: recording on/off, the index, the files.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/spaces/{id}/recording", post(set_recording))
        .route("/api/v1/recordings", get(list))
        .route("/api/v1/recordings/{id}", get(one))
        .route("/recordings/{file}", get(serve_file))
}

/// A recording as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingView {
    /// The index entry.
    #[serde(flatten)]
    pub record: RecordingRecord,
    /// Where to play it (finished and recovered recordings).
    pub url: Option<String>,
    /// Where to download it.
    pub download_url: Option<String>,
}

impl From<RecordingRecord> for RecordingView {
    fn from(record: RecordingRecord) -> RecordingView {
        let ready = record.state != RecordingState::Recording;
        let url = ready.then(|| url(&record.id));
        let download_url = url.as_ref().map(|u| format!("{u}?download=1"));
        RecordingView { record, url, download_url }
    }
}

/// How long the listening tickets in a private recording's URLs last (a player seeks with the
/// same URL while it plays).
const RECORDING_TICKET_SECS: u64 = 3_600;

impl RecordingView {
    /// The view, with URLs an `<audio>` element can use: a private space's recording gets a
    /// short-lived listening ticket in its URLs (minted for the bearer token's holder), never
    /// the caller's own token.
    fn for_caller(record: RecordingRecord, app: &AppState, headers: &HeaderMap) -> RecordingView {
        let public = app.space(&record.space).is_ok_and(|s| s.public);
        let mut view = RecordingView::from(record);
        if public {
            return view;
        }
        let claims = bearer(headers).and_then(|t| app.verify(t, &view.record.space).ok());
        let ticket = claims
            .and_then(|c| app.listen_ticket(&c, &view.record.space, RECORDING_TICKET_SECS).ok());
        if let Some(ticket) = ticket {
            view.url = view.url.map(|u| format!("{u}?token={ticket}"));
            view.download_url = view.download_url.map(|u| format!("{u}&token={ticket}"));
        }
        view
    }
}

/// `{"recording": true}` starts recording, `false` stops it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingToggle {
    /// Record or not.
    pub recording: bool,
}

/// `POST /api/v1/spaces/{id}/recording` (host or co-host): starts or stops recording.
async fn set_recording(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<RecordingToggle>, JsonRejection>,
) -> Result<Json<RecordingView>, ApiError> {
    let id = space_id(path)?;
    app.authorize_space(&headers, &id, crate::state::Manage::Record)?;
    let Json(toggle) = body?;
    let space = app.space(&id)?;
    let record =
        if toggle.recording { start(&app, &space).await? } else { stop(&app, &id).await? };
    Ok(Json(record.into()))
}

/// Query of the recordings list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this space's recordings.
    space: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
    /// A token, for recordings of private spaces.
    token: Option<String>,
}

#[derive(Debug, Serialize)]
struct RecordingList {
    recordings: Vec<RecordingView>,
}

/// Who may see a recording: anyone for a public space; a token for its space otherwise.
fn check_access(
    app: &AppState,
    headers: &HeaderMap,
    token: Option<&str>,
    rec: &RecordingRecord,
) -> Result<(), ApiError> {
    if app.space(&rec.space).is_ok_and(|s| s.public) {
        return Ok(());
    }
    match (bearer(headers), token) {
        (Some(token), _) => app.verify(token, &rec.space).map(|_| ()),
        (None, Some(token)) => app.verify_url_token(token, &rec.space).map(|_| ()),
        (None, None) => Err(ApiError::unauthorized("this recording needs a token for its space")),
    }
}

/// `Cache-Control` of index answers: the same for every anonymous caller, so caches (and the
/// page's many viewers) may share them briefly; private with a token.
fn index_cache(
    headers: &HeaderMap,
    token: Option<&str>,
) -> [(header::HeaderName, &'static str); 1] {
    let anonymous = bearer(headers).is_none() && token.is_none();
    [(header::CACHE_CONTROL, if anonymous { "public, max-age=2" } else { "private, no-store" })]
}

/// `GET /api/v1/recordings`: newest first; `?space=` for one space's.
async fn list(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let space = q
        .space
        .map(SpaceId::new)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_space_id", e.to_string()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
    let rows = app.store.recordings()?;
    let recordings = rows
        .into_iter()
        .filter(|r| space.as_ref().is_none_or(|s| *s == r.space))
        .filter(|r| check_access(&app, &headers, q.token.as_deref(), r).is_ok())
        .take(limit)
        .map(|r| RecordingView::for_caller(r, &app, &headers))
        .collect();
    let cache = index_cache(&headers, q.token.as_deref());
    Ok((cache, Json(RecordingList { recordings })).into_response())
}

/// Query of one recording or its file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    /// A token, for recordings of private spaces.
    token: Option<String>,
    /// `1`: `Content-Disposition: attachment` (save rather than play).
    download: Option<String>,
}

fn find(
    app: &AppState,
    headers: &HeaderMap,
    id: &str,
    token: Option<&str>,
) -> Result<RecordingRecord, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::not_found("no such recording"));
    }
    let rec = app.store.recording(id)?.ok_or_else(|| ApiError::not_found("no such recording"))?;
    check_access(app, headers, token, &rec)?;
    Ok(rec)
}

/// `GET /api/v1/recordings/{id}`.
async fn one(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FileQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let Query(q) = query?;
    let view =
        RecordingView::for_caller(find(&app, &headers, &id, q.token.as_deref())?, &app, &headers);
    Ok((index_cache(&headers, q.token.as_deref()), Json(view)).into_response())
}

/// What a `Range` header asks of a representation of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole representation (no range, or one this server ignores: another unit, bad
    /// syntax, several ranges).
    Full,
    /// Bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// A single byte range that no byte satisfies: `416`.
    Unsatisfiable,
}

/// Parses a `Range` header (RFC 9110 §14) against a length of `len` bytes. Single byte ranges
/// are honoured (`a-b`, `a-`, `-n`); anything else is ignored, as the RFC allows.
pub fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some((unit, set)) = value.split_once('=') else { return RangeRequest::Full };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else { return RangeRequest::Full };
    let number = |s: &str| {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Too long to be a position in any file: clamp (a huge last-pos means "to the end").
        Some(s.parse::<u64>().unwrap_or(u64::MAX))
    };
    if first.trim().is_empty() {
        return match number(last) {
            None => RangeRequest::Full,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial { start: len.saturating_sub(n), end: len - 1 },
        };
    }
    let Some(start) = number(first) else { return RangeRequest::Full };
    let end = if last.trim().is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial { start, end: end.min(len - 1) }
}

/// `Content-Disposition` for a recording: a readable ASCII name and the UTF-8 title (RFC 6266).
pub fn content_disposition(rec: &RecordingRecord, attachment: bool) -> String {
    let date = iso8601(rec.started_at.0);
    let date = date.get(..10).unwrap_or("");
    let mut slug = String::new();
    for c in rec.title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_end_matches('-').chars().take(60).collect();
    let base = if slug.is_empty() { rec.id.clone() } else { format!("{slug}-{date}") };
    let mut encoded = String::new();
    let title: String = rec.title.chars().filter(|c| !c.is_control()).take(100).collect();
    for b in format!("{title} {date}.opus").trim_start().bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let kind = if attachment { "attachment" } else { "inline" };
    format!("{kind}; filename=\"{base}.opus\"; filename*=UTF-8''{encoded}")
}

/// Whether an `If-None-Match` list matches `etag` (weak comparison).
fn none_match(value: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    value.split(',').any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

/// `GET /recordings/{id}.opus`: the file, with ranges and validators.
async fn serve_file(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FileQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(file) = path?;
    let Query(q) = query?;
    let id = file.strip_suffix(".opus").unwrap_or("");
    let rec = find(&app, &headers, id, q.token.as_deref())?;
    if rec.state == RecordingState::Recording {
        return Err(ApiError::conflict("recording", "this recording is still being made"));
    }
    let path = dir(&app.config.data_dir).join(file_name(&rec.id));
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ApiError::not_found("the recording's file is missing"));
        }
        Err(e) => return Err(ApiError::internal(format!("cannot open the recording: {e}"))),
    };
    let meta = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the recording: {e}")))?;
    let len = meta.len();
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let mtime_ns = modified.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let etag = format!("\"{len:x}-{mtime_ns:x}\"");
    let last_modified = httpdate::fmt_http_date(modified);
    let public = app.space(&rec.space).is_ok_and(|s| s.public);
    let mut common = HeaderMap::new();
    let mut set = |name, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            common.insert(name, v);
        }
    };
    set(header::ETAG, &etag);
    set(header::LAST_MODIFIED, &last_modified);
    set(header::ACCEPT_RANGES, "bytes");
    set(
        header::CACHE_CONTROL,
        if public { "public, max-age=3600" } else { "private, max-age=3600" },
    );
    let header_str = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    // Conditional GET: If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    let not_modified = match header_str(header::IF_NONE_MATCH) {
        Some(inm) => none_match(inm, &etag),
        None => header_str(header::IF_MODIFIED_SINCE)
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| {
                modified.duration_since(since).map_or(true, |d| d < Duration::from_secs(1))
            }),
    };
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    // If-Range: ranges only for the representation the client already has part of.
    let range_applies =
        header_str(header::IF_RANGE).is_none_or(|v| v == etag || v == last_modified);
    let range = match header_str(header::RANGE) {
        Some(value) if range_applies => parse_range(value, len),
        _ => RangeRequest::Full,
    };
    let attachment = q.download.as_deref().is_some_and(|d| d == "1" || d == "true");
    let (status, start, count) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial { start, end } => {
            set(header::CONTENT_RANGE, &format!("bytes {start}-{end}/{len}"));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut res = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the recording has {len} bytes"),
            )
            .into_response();
            res.headers_mut().extend(common);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(res);
        }
    };
    set(header::CONTENT_TYPE, "audio/ogg");
    set(header::CONTENT_LENGTH, &count.to_string());
    set(header::CONTENT_DISPOSITION, &content_disposition(&rec, attachment));
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    use tokio::io::AsyncSeekExt;
    file.seek(io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the recording: {e}")))?;
    let body = Body::from_stream(file_chunks(file, count));
    Ok((status, common, body).into_response())
}

/// `count` bytes of `file` from where it stands, in chunks of up to 64 KiB.
fn file_chunks(
    file: tokio::fs::File,
    count: u64,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; usize::try_from(left.min(64 * 1024)).unwrap_or(64 * 1024)];
        match file.read(&mut buf).await {
            Ok(0) => Some((Err(io::ErrorKind::UnexpectedEof.into()), (file, 0))),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_sweep_keeps_the_newest_within_budget_and_retention() {
        let base = temp_dir("sweep");
        let store = Store::in_memory().expect("store");
        let rec_dir = dir(&base);
        std::fs::create_dir_all(&rec_dir).expect("dir");
        let space = SpaceId::new("s").expect("id");
        let row = |id: &str, day: u64, bytes: u64, state: RecordingState| RecordingRecord {
            id: id.into(),
            space: space.clone(),
            title: "t".into(),
            file: file_name(id),
            started_at: UnixTime(day * 86_400),
            ended_at: Some(UnixTime(day * 86_400 + 60)),
            duration_ms: 60_000,
            bytes,
            state,
        };
        for r in [
            row("old", 1, 100, RecordingState::Finished),
            row("mid", 5, 100, RecordingState::Recovered),
            row("new", 9, 100, RecordingState::Finished),
            row("live", 0, 10_000, RecordingState::Recording),
        ] {
            std::fs::write(rec_dir.join(&r.file), vec![0u8; r.bytes as usize]).expect("file");
            store.save_recording(&r).expect("row");
        }
        // A budget for two: the oldest finished one goes; one in progress is never touched.
        assert_eq!(sweep(&base, &store, 250, 0, UnixTime(10 * 86_400)), 1);
        let left: Vec<String> =
            store.recordings().expect("rows").into_iter().map(|r| r.id).collect();
        assert_eq!(left, vec!["new", "mid", "live"]);
        assert!(!rec_dir.join(file_name("old")).exists());
        // Retention of 3 days: "mid" (day 5) is past it on day 10.
        assert_eq!(sweep(&base, &store, u64::MAX, 3, UnixTime(10 * 86_400)), 1);
        let left: Vec<String> =
            store.recordings().expect("rows").into_iter().map(|r| r.id).collect();
        assert_eq!(left, vec!["new", "live"]);
        assert_eq!(sweep(&base, &store, u64::MAX, 3, UnixTime(10 * 86_400)), 0, "idempotent");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        let p = |s| parse_range(s, 1_000);
        assert_eq!(p("bytes=0-99"), Partial { start: 0, end: 99 });
        assert_eq!(p("bytes=900-"), Partial { start: 900, end: 999 });
        assert_eq!(p("bytes=900-5000"), Partial { start: 900, end: 999 });
        assert_eq!(p("bytes=-100"), Partial { start: 900, end: 999 });
        assert_eq!(p("bytes=-5000"), Partial { start: 0, end: 999 });
        assert_eq!(p("Bytes = 5-5"), Partial { start: 5, end: 5 });
        assert_eq!(p("bytes=1000-"), Unsatisfiable);
        assert_eq!(p("bytes=1000-2000"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
        assert_eq!(p("bytes=0-99999999999999999999999"), Partial { start: 0, end: 999 });
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1-+2",
            "0-1",
            "bytes=--1",
            "",
        ] {
            assert_eq!(p(ignored), Full, "{ignored:?}");
        }
    }

    #[test]
    fn ids_are_never_paths() {
        assert!(valid_id("demo-1767225600-0a1b2c3d"));
        for bad in ["", "../x", "a/b", "a.b", "A", "x\0", "a b", &"a".repeat(101)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        let id = new_id(&SpaceId::new("a-space").expect("id"), UnixTime(1));
        assert!(valid_id(&id) && id.starts_with("a-space-1-"));
    }

    #[test]
    fn disposition_names_are_safe_ascii_with_the_title_in_utf8() {
        let rec = RecordingRecord {
            id: "s-1-00".into(),
            space: SpaceId::new("s").expect("id"),
            title: "Café \"live\"/../ 2".into(),
            file: "s-1-00.opus".into(),
            started_at: UnixTime(1_767_225_600),
            ended_at: None,
            duration_ms: 0,
            bytes: 0,
            state: RecordingState::Finished,
        };
        assert_eq!(
            content_disposition(&rec, false),
            "inline; filename=\"Caf-live-2-2026-01-01.opus\"; \
             filename*=UTF-8''Caf%C3%A9%20%22live%22%2F..%2F%202%202026-01-01.opus"
        );
        let empty = RecordingRecord { title: "★".into(), ..rec };
        assert!(
            content_disposition(&empty, true).starts_with("attachment; filename=\"s-1-00.opus\"")
        );
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match("\"a\"", "\"a\""));
        assert!(none_match("W/\"a\", \"b\"", "\"a\""));
        assert!(none_match("*", "\"a\""));
        assert!(!none_match("\"b\"", "\"a\""));
    }

    #[test]
    fn a_full_queue_drops_frames_and_a_gone_recorder_lets_go_of_the_tap() {
        let (tx, rx) = sync_channel(2);
        let mut tap = RecordTap { tx, id: Arc::from("r"), dropped: 0 };
        let frame = Bytes::from_static(b"opus");
        assert!((0..5).all(|seq| tap.offer(seq, &frame)), "never refuses while the recorder runs");
        assert_eq!(tap.dropped, 3);
        assert_eq!(rx.try_iter().map(|f| f.seq).collect::<Vec<_>>(), vec![0, 1]);
        drop(rx);
        assert!(!tap.offer(5, &frame));
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("townhall-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(DIR)).expect("dir");
        dir
    }

    /// A partial recording of `frames` frames as a crash leaves it: the open page lost, and
    /// half a page torn off at the end.
    fn crashed_file(id: &str, space: &str, frames: u32) -> Vec<u8> {
        let tags = RecordingTags {
            title: "Crashed".into(),
            space: space.into(),
            recording: id.into(),
            started_at: 1_000,
        };
        let (mut w, mut file) =
            RecordingWriter::new(1, 312, &tags, WriterConfig::default(), 0).expect("writer");
        for seq in 0..frames {
            file.extend(
                w.push(seq, Bytes::from_static(b"\xf8opus"), u64::from(seq) * 20)
                    .expect("push")
                    .bytes,
            );
        }
        file.extend_from_slice(b"OggS\0\0torn");
        file
    }

    #[test]
    fn recovery_finalises_indexed_and_orphaned_partial_files() {
        let data = temp_dir("recover");
        let dir = data.join(DIR);
        let store = Store::in_memory().expect("store");
        let row = RecordingRecord {
            id: "s-1000-00000001".into(),
            space: SpaceId::new("s").expect("id"),
            title: "Indexed".into(),
            file: "s-1000-00000001.opus".into(),
            started_at: UnixTime(1_000),
            ended_at: None,
            duration_ms: 0,
            bytes: 0,
            state: RecordingState::Recording,
        };
        store.save_recording(&row).expect("save");
        std::fs::write(dir.join("s-1000-00000001.opus.partial"), crashed_file(&row.id, "s", 260))
            .expect("write");
        // A file the index never knew (a node without a database, or a crash before indexing).
        let orphan = "t-1000-00000002";
        std::fs::write(dir.join(format!("{orphan}.opus.partial")), crashed_file(orphan, "t", 120))
            .expect("write");
        // A row whose file is gone, and a partial file with no headers.
        let missing = RecordingRecord {
            id: "s-1000-00000003".into(),
            file: "s-1000-00000003.opus".into(),
            ..row.clone()
        };
        store.save_recording(&missing).expect("save");
        std::fs::write(dir.join("u-1-00000004.opus.partial"), b"Ogg").expect("write");
        std::fs::write(dir.join("not-ours.txt"), b"x").expect("write");

        assert_eq!(recover(&data, &store, &Webhooks::disabled()), 3);
        let got = store.recording(&row.id).expect("index").expect("row");
        assert_eq!(got.state, RecordingState::Recovered);
        // 250 frames in 1 s pages reached the "disk"; the last 10 were in the open page.
        assert_eq!(got.duration_ms, townhall_media::recording::duration_ms(250 * 960, 312));
        let file = std::fs::read(dir.join(&row.file)).expect("finalised file");
        assert_eq!(got.bytes, file.len() as u64);
        assert!(finalise(&file).expect("valid").was_complete);
        let orphaned = store.recording(orphan).expect("index").expect("indexed from its tags");
        assert_eq!((orphaned.space.as_str(), orphaned.title.as_str()), ("t", "Crashed"));
        assert_eq!(orphaned.state, RecordingState::Recovered);
        assert_eq!(orphaned.started_at, UnixTime(1_000));
        let gone = store.recording(&missing.id).expect("index").expect("row");
        assert_eq!((gone.state, gone.bytes), (RecordingState::Recovered, 0));
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["not-ours.txt", "s-1000-00000001.opus", "t-1000-00000002.opus"]);
        // A second start finds nothing left to do.
        assert_eq!(recover(&data, &store, &Webhooks::disabled()), 0);
        let _ = std::fs::remove_dir_all(&data);
    }

    proptest! {
        /// Any header: no panic, and a partial range always lies inside the representation.
        #[test]
        fn any_range_header_is_safe(value in ".{0,40}", len in 0u64..10_000) {
            if let RangeRequest::Partial { start, end } = parse_range(&value, len) {
                prop_assert!(start <= end && end < len);
            }
        }

        /// Well-formed single ranges mean what RFC 9110 says.
        #[test]
        fn byte_ranges_select_the_right_bytes(
            len in 0u64..5_000,
            a in 0u64..6_000,
            b in proptest::option::of(0u64..6_000),
            suffix in any::<bool>(),
        ) {
            let got = if suffix {
                parse_range(&format!("bytes=-{a}"), len)
            } else {
                let b = b.map_or(String::new(), |b| b.to_string());
                parse_range(&format!("bytes={a}-{b}"), len)
            };
            let want = if suffix {
                if a == 0 || len == 0 {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial { start: len - a.min(len), end: len - 1 }
                }
            } else if b.is_some_and(|b| b < a) {
                RangeRequest::Full
            } else if a >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial { start: a, end: b.unwrap_or(u64::MAX).min(len - 1) }
            };
            prop_assert_eq!(got, want);
        }
    }
}
