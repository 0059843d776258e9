//! Keeping clips: room made within the budget (the oldest go), the file written whole and
//! renamed into place, then indexed; and the sweep that clears what a crash or a smaller budget
//! left.

use std::io::{self, Write};
use std::path::Path;

use townhall_media::clip::Clip;

use super::*;
use crate::app::store::Store;

/// Suffix of a clip file being written.
const PARTIAL: &str = ".partial";

/// Clips deleted per database read while making room.
const EVICT_BATCH: usize = 32;

/// Stores `clip` as `record` (its file, then its row), making room first. Blocking.
pub(super) fn keep(app: &AppState, clip: Clip, record: ClipRecord) -> Result<ClipRecord, AppError> {
    let config = &app.config;
    if config.clips_max == 0 {
        return Err(AppError::new(ErrorKind::Unavailable, "clips_off", "this node keeps no clips"));
    }
    let _writing = app.clips.writing.lock().unwrap_or_else(|p| p.into_inner());
    let dir = dir(&config.data_dir);
    let size = clip.bytes.len() as u64;
    make_room(
        &dir,
        &app.store,
        config.clips_max - 1,
        config.clips_disk_budget.saturating_sub(size),
    )?;
    let write = |e: io::Error| AppError::internal(format!("cannot write the clip: {e}"));
    crate::app::datadir::ensure_private_dir(&dir).map_err(write)?;
    let name = file_name(&record.id);
    let partial = dir.join(format!("{name}{PARTIAL}"));
    let written = (|| {
        let mut file = crate::app::datadir::create_new_private(&partial)?;
        file.write_all(&clip.bytes)?;
        file.sync_data()?;
        std::fs::rename(&partial, dir.join(&name))?;
        crate::app::recorder::sync_dir(&dir)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(write(e));
    }
    if let Err(e) = app.store.save_clip(&record) {
        let _ = std::fs::remove_file(dir.join(&name));
        return Err(e.into());
    }
    tracing::info!(
        clip = %record.id,
        space = %record.space,
        recording = record.recording.as_deref().unwrap_or("-"),
        duration_ms = record.duration_ms,
        bytes = record.bytes,
        "clip made"
    );
    Ok(record)
}

/// Deletes the oldest clips until at most `count` are left, `bytes` together. Fails with
/// `503 clips_full` when even none would not do (a clip larger than the whole budget).
fn make_room(dir: &Path, store: &Store, count: u64, bytes: u64) -> Result<(), AppError> {
    loop {
        let (n, total) = store.clip_totals()?;
        if n <= count && total <= bytes {
            return Ok(());
        }
        let oldest = store.oldest_clips(EVICT_BATCH)?;
        if oldest.is_empty() {
            return Err(AppError::new(
                ErrorKind::Unavailable,
                "clips_full",
                "the node's clip budget cannot hold this clip",
            ));
        }
        let (mut n, mut total) = (n, total);
        for clip in oldest {
            if n <= count && total <= bytes {
                break;
            }
            delete(dir, store, &clip)?;
            n -= 1;
            total = total.saturating_sub(clip.bytes);
        }
    }
}

fn delete(dir: &Path, store: &Store, clip: &ClipRecord) -> Result<(), AppError> {
    match std::fs::remove_file(dir.join(file_name(&clip.id))) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(AppError::internal(format!("cannot delete an old clip: {e}"))),
    }
    store.delete_clip(&clip.id)?;
    tracing::info!(clip = %clip.id, bytes = clip.bytes, "clip deleted to make room");
    Ok(())
}

/// At start and every ten minutes: deletes files a crash left half written or unindexed, and
/// the oldest clips beyond `max` or `budget` (the configuration may have shrunk). Returns how
/// many files went. Blocking.
pub fn sweep(data_dir: &Path, store: &Store, max: u64, budget: u64) -> usize {
    let dir = dir(data_dir);
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let id = name.strip_suffix(".opus").filter(|id| valid_id(id));
            let keep = match id {
                Some(id) => store.has_clip(id).unwrap_or(true),
                None => false,
            };
            if !keep && std::fs::remove_file(entry.path()).is_ok() {
                tracing::info!(file = %name, "clips sweep: removed a file without a clip");
                removed += 1;
            }
        }
    }
    if let Err(e) = make_room(&dir, store, max, budget) {
        tracing::error!("clips sweep: {e}");
    }
    removed
}
