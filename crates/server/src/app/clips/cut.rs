//! Cutting: from the live feed's last minute of pages, or from a recording's file found by
//! bisection. Both run on the blocking pool, one of [`CUTS_AT_ONCE`] at a time.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use townhall_core::{Identity, Space, SpaceState};
use townhall_media::clip::{ClipSpec, ClipTags, CutError, Cutter, MAX_PAGE_BYTES, find_page};
use townhall_media::recording::duration_ms;
use townhall_media::{OggOpusReader, clip::Clip};

use super::keep::keep;
use super::*;
use crate::app::store::{RecordingRecord, RecordingState};
use crate::clock::now_unix;

/// Reads of a recording's file, bytes.
const CHUNK: usize = 64 * 1024;

/// Below this many bytes left between the two ends, bisection stops and reading goes on page
/// by page.
const BISECT_DONE: u64 = 4 * CHUNK as u64;

fn cut_error(e: CutError) -> AppError {
    match e {
        CutError::OutOfRange => AppError::new(
            ErrorKind::Unprocessable,
            "out_of_range",
            "there is no audio in that range",
        ),
        CutError::EmptyRange => AppError::new(
            ErrorKind::Unprocessable,
            "invalid_range",
            "the clip's end must be after its start",
        ),
        e => AppError::internal(format!("cannot cut the clip: {e}")),
    }
}

/// Refuses a live clip's length outside [`LIVE_MIN_SECS`] to [`LIVE_MAX_SECS`].
pub fn check_seconds(seconds: u64) -> Result<(), AppError> {
    if (LIVE_MIN_SECS..=LIVE_MAX_SECS).contains(&seconds) {
        return Ok(());
    }
    Err(AppError::new(
        ErrorKind::Unprocessable,
        "invalid_seconds",
        format!("a live clip is the last {LIVE_MIN_SECS} to {LIVE_MAX_SECS} seconds"),
    ))
}

/// Refuses a range that is no clip of `rec`: empty, shorter than [`RANGE_MIN_MS`], longer
/// than [`RANGE_MAX_MS`], starting past its end, or of a recording still being made.
pub fn check_range(rec: &RecordingRecord, from_ms: u64, to_ms: u64) -> Result<(), AppError> {
    if to_ms <= from_ms || !(RANGE_MIN_MS..=RANGE_MAX_MS).contains(&(to_ms - from_ms)) {
        return Err(AppError::new(
            ErrorKind::Unprocessable,
            "invalid_range",
            format!(
                "a recording's clip is from_ms to to_ms, {RANGE_MIN_MS} to {RANGE_MAX_MS} ms long"
            ),
        ));
    }
    if rec.state == RecordingState::Recording {
        return Err(AppError::conflict(
            "recording",
            "this recording is still being made: clip the live space instead",
        ));
    }
    if from_ms >= rec.duration_ms {
        return Err(AppError::new(
            ErrorKind::Unprocessable,
            "out_of_range",
            format!("the recording is {} ms long", rec.duration_ms),
        ));
    }
    Ok(())
}

/// Clips the last `seconds` of live space `space` for `who` (anonymous: `None`), titled
/// `title` (the space's by default).
pub async fn cut_live(
    app: &Arc<AppState>,
    space: &Space,
    seconds: u64,
    title: Option<String>,
    who: Option<Identity>,
) -> Result<ClipRecord, AppError> {
    check_seconds(seconds)?;
    let live = app.live(&space.id).filter(|_| space.state == SpaceState::Live);
    let (headers, pages) = live
        .and_then(|l| l.feed().recent_pages())
        .ok_or_else(|| AppError::conflict("not_live", "only a live space can be clipped live"))?;
    let permit = app.clips.permit()?;
    let title = title.unwrap_or_else(|| space.title.clone());
    let space_id = space.id.clone();
    app.blocking(move |app| {
        let _permit = permit;
        let id = new_id();
        let created_at = now_unix();
        let tags = ClipTags {
            title: title.clone(),
            space: space_id.to_string(),
            clip: id.clone(),
            recording: None,
            created_at: created_at.0,
        };
        let clip = live_clip(&headers, &pages, seconds, tags.comments()).map_err(cut_error)?;
        let record = ClipRecord {
            id,
            space: space_id,
            title,
            recording: None,
            from_ms: clip.start_ms,
            to_ms: clip.end_ms,
            duration_ms: clip.duration_ms(),
            bytes: clip.bytes.len() as u64,
            created_at,
            created_by: who,
        };
        keep(app, clip, record)
    })
    .await
}

/// The clip of the last `seconds` of a live stream: its header pages, then its recent pages.
pub(super) fn live_clip(
    headers: &Bytes,
    pages: &[Bytes],
    seconds: u64,
    comments: Vec<String>,
) -> Result<Clip, CutError> {
    let pre_skip = OggOpusReader::parse(headers)
        .map_err(|_| CutError::NotOpus("the live stream's headers"))?
        .head
        .pre_skip;
    let last = pages.iter().rev().find_map(|p| find_page(p)).ok_or(CutError::OutOfRange)?;
    let end_ms = duration_ms(last.granule, pre_skip);
    let spec = ClipSpec {
        from_ms: end_ms.saturating_sub(seconds.saturating_mul(1_000)),
        to_ms: end_ms,
        serial: rand::random(),
        comments,
        max_bytes: MAX_CLIP_BYTES,
    };
    let mut cutter = Cutter::new(spec)?;
    cutter.push(headers)?;
    // The ring starts wherever the stream is now: page numbers go on from there.
    cutter.jump()?;
    for page in pages {
        cutter.push(page)?;
        if cutter.is_done() {
            break;
        }
    }
    cutter.finish()
}

/// Clips `from_ms` to `to_ms` of recording `rec` for `who`, titled `title` (the recording's
/// by default).
pub async fn cut_recording(
    app: &Arc<AppState>,
    rec: RecordingRecord,
    (from_ms, to_ms): (u64, u64),
    title: Option<String>,
    who: Option<Identity>,
) -> Result<ClipRecord, AppError> {
    check_range(&rec, from_ms, to_ms)?;
    let permit = app.clips.permit()?;
    let title = title.unwrap_or_else(|| rec.title.clone());
    app.blocking(move |app| {
        let _permit = permit;
        let id = new_id();
        let created_at = now_unix();
        let tags = ClipTags {
            title: title.clone(),
            space: rec.space.to_string(),
            clip: id.clone(),
            recording: Some(rec.id.clone()),
            created_at: created_at.0,
        };
        let spec = ClipSpec {
            from_ms,
            to_ms,
            serial: rand::random(),
            comments: tags.comments(),
            max_bytes: MAX_CLIP_BYTES,
        };
        let path = crate::app::recorder::dir(&app.config.data_dir).join(&rec.file);
        let clip = match file_clip(&path, spec) {
            Ok(clip) => clip,
            Err(FileCutError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(AppError::not_found("the recording's file is missing"));
            }
            Err(FileCutError::Io(e)) => {
                return Err(AppError::internal(format!("cannot read the recording: {e}")));
            }
            Err(FileCutError::Cut(e)) => return Err(cut_error(e)),
        };
        let record = ClipRecord {
            id,
            space: rec.space,
            title,
            recording: Some(rec.id),
            from_ms: clip.start_ms,
            to_ms: clip.end_ms,
            duration_ms: clip.duration_ms(),
            bytes: clip.bytes.len() as u64,
            created_at,
            created_by: who,
        };
        keep(app, clip, record)
    })
    .await
}

/// Why a file could not be cut.
#[derive(Debug)]
pub(super) enum FileCutError {
    Io(io::Error),
    Cut(CutError),
}

impl From<io::Error> for FileCutError {
    fn from(e: io::Error) -> Self {
        FileCutError::Io(e)
    }
}

impl From<CutError> for FileCutError {
    fn from(e: CutError) -> Self {
        FileCutError::Cut(e)
    }
}

/// Cuts `spec` out of the Ogg/Opus file at `path`: its headers from the start, then a jump to
/// a page found by bisection that ends before the clip's pre-roll (so a clip near the end of a
/// long recording reads a few chunks, not the file), then pages until the clip is complete.
/// Blocking.
pub(super) fn file_clip(path: &Path, spec: ClipSpec) -> Result<Clip, FileCutError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut cutter = Cutter::new(spec)?;
    let mut buf = vec![0u8; CHUNK];
    let mut fed: u64 = 0;
    while !cutter.has_headers() && !cutter.is_done() {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        cutter.push(&buf[..n])?;
        fed += n as u64;
    }
    if let Some(until) = cutter.skippable_until().filter(|_| !cutter.is_done()) {
        // The furthest page known to end before the pre-roll: everything before it is skipped.
        let (mut low, mut high) = (fed, len);
        let mut best = None;
        let mut window = vec![0u8; 2 * MAX_PAGE_BYTES];
        while high.saturating_sub(low) > BISECT_DONE {
            let mid = low + (high - low) / 2;
            file.seek(SeekFrom::Start(mid))?;
            let n = read_up_to(&mut file, &mut window)?;
            match find_page(&window[..n]) {
                Some(page) if page.granule <= until => {
                    let at = mid + page.offset as u64;
                    best = Some(at);
                    low = at + page.len as u64;
                }
                _ => high = mid,
            }
        }
        match best {
            Some(at) => {
                cutter.jump()?;
                file.seek(SeekFrom::Start(at))?;
            }
            None => {
                file.seek(SeekFrom::Start(fed))?;
            }
        }
    }
    while !cutter.is_done() {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        cutter.push(&buf[..n])?;
    }
    Ok(cutter.finish()?)
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}
