//! What a crash left behind, finalised at start-up; and retention (age and disk budget).

use std::io::{self, Write};
use std::path::Path as FsPath;

use townhall_core::{SpaceId, UnixTime};
use townhall_media::recording::{FinaliseError, finalise};

use crate::app::store::{RecordingRecord, RecordingState, Store};
use crate::app::webhooks::Webhooks;

use super::*;

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

pub(super) fn delete_recording(dir: &FsPath, store: &Store, r: &RecordingRecord) -> bool {
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
pub(super) fn recover_row(
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
pub(super) fn recover_orphan(
    dir: &FsPath,
    id: &str,
    store: &Store,
) -> io::Result<Option<RecordingRecord>> {
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
    // The space's host, if the database still knows the space.
    let host = store.space_host(&space).ok().flatten();
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
        host,
        part: None,
    };
    recover_row(dir, row, store).map(Some)
}

/// Writes `name` in `dir` atomically: a temporary file, synced, renamed over, directory synced.
pub(super) fn replace(dir: &FsPath, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}{RECOVERING}"));
    let mut file = crate::app::datadir::create_private(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}
