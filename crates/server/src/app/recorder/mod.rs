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

mod control;
mod recovery;
mod registry;
mod writer;

pub use crate::pipeline::record_tap::RecordTap;
pub use control::{finish_all, start, start_part, stop};
pub use recovery::{recover, sweep};
pub use registry::Recordings;

use std::fs::File;
use std::io;
use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, Instant};

use townhall_core::{SpaceId, UnixTime, WebhookEvent};

use crate::app::store::RecordingRecord;
use crate::app::webhooks::Webhooks;

/// Gauge: recordings being written.
pub const RECORDINGS_ACTIVE: &str = "townhall_recordings_active";

pub use crate::pipeline::record_tap::RECORDING_FRAMES_DROPPED;

/// Counter: bytes appended to recording files.
pub const RECORDING_BYTES: &str = "townhall_recording_bytes_total";

/// Histogram (summary): seconds one `fsync` of a recording file took.
pub const RECORDING_SYNC_SECONDS: &str = "townhall_recording_sync_seconds";

/// Counter: recordings ended, by `outcome` (`finished`, `recovered`, `failed`).
pub const RECORDINGS_ENDED: &str = "townhall_recordings_ended_total";

/// The directory of recordings inside the data directory.
pub const DIR: &str = "recordings";

/// Suffix of a file still being written.
pub(crate) const PARTIAL: &str = ".partial";

/// Suffix of a file being rewritten by recovery.
pub(crate) const RECOVERING: &str = ".recovering";

/// Frames queued towards a recorder (10 s of program) before new ones are dropped.
pub(crate) const QUEUE_FRAMES: usize = 500;

/// How often the index row of a recording in progress is updated.
pub(crate) const INDEX_EVERY: Duration = Duration::from_secs(10);

/// How long stopping waits for the file to be finished.
pub(crate) const STOP_WAIT: Duration = Duration::from_secs(10);

/// Frames per page (500 ms) when no sync closes one first: what a killed process can lose
/// (pages written are in the kernel; syncs make them survive a power cut too).
pub(crate) const PAGE_FRAMES: usize = 25;

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

pub(crate) fn new_id(space: &SpaceId, now: UnixTime) -> String {
    format!("{space}-{}-{:08x}", now.0, rand::random::<u32>())
}

/// The file of recording `id`.
pub(crate) fn file_name(id: &str) -> String {
    format!("{id}.opus")
}

/// Where recording `id` is served.
pub fn url(id: &str) -> String {
    format!("/recordings/{id}.opus")
}

/// Milliseconds since `start`, the recorder's clock.
pub(crate) fn ms_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Makes the directory entry of a new or renamed file durable.
pub(crate) fn sync_dir(dir: &FsPath) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

pub(crate) fn store_err(e: crate::app::store::StoreError) -> io::Error {
    io::Error::other(e.to_string())
}

pub(crate) fn emit_finished(webhooks: &Webhooks, row: &RecordingRecord) {
    webhooks.emit(WebhookEvent::RecordingFinished {
        id: row.id.clone(),
        space: row.space.clone(),
        duration_ms: row.duration_ms,
        bytes: row.bytes,
        url: url(&row.id),
    });
}

#[cfg(test)]
mod tests;
