//! Clips: anyone who may listen to a space cuts its last 30 to 60 seconds, or up to a minute of
//! one of its recordings, into a link of its own (`/clips/{id}`, the audio at
//! `/clips/{id}.opus`).
//!
//! - **Cutting** is [`townhall_media::clip`]'s: Ogg pages copied, not re-encoded, renumbered
//!   and re-timed, the title in a new `OpusTags`, exact at both ends through the pre-skip and
//!   end trimming. A live clip is cut from the minute of Ogg pages the space's feed keeps in
//!   memory ([`crate::pipeline::feed::ProgramFeed::recent_pages`]), not from its recording:
//!   most live spaces are not recorded, the ring holds the very pages listeners were sent (no
//!   second copy, no muxing; a minute is 240 KB at 32 kbit/s), and a recording's file trails the
//!   stream by up to its sync interval and may be filling gaps with silence. A recording's clip
//!   is cut from its file, reached by bisection over its pages (a 12-hour recording costs a few
//!   reads, not a scan).
//! - **Who may clip** is the room's word now: a live space's clip needs what listening needs
//!   (anyone for a public space, a token for a private one) and nobody the room removed or
//!   blocked; a recording's, the recording's access rule and the same bars (kept in the
//!   database once the room is gone). Per identity, address and /24 (fixed-memory sketches) a
//!   few clips at once, then one every few seconds; at most [`CUTS_AT_ONCE`] cuts run at once
//!   on the node (`503 busy` beyond).
//! - **Keeping**: files under `{data_dir}/clips/`, written whole and renamed into place, indexed
//!   in the database; `clips_max` and `clips_disk_budget` bound them, the oldest going first to
//!   make room. A clip inherits its space's privacy: a private space's clips need a token for it.

mod cut;
mod keep;
mod limits;

pub use cut::{check_range, check_seconds, cut_live, cut_recording};
pub use keep::sweep;
pub use limits::{CUTS_AT_ONCE, Clips};

use std::path::{Path, PathBuf};

use townhall_core::{Claims, Identity, SpaceId};

use crate::app::error::{AppError, ErrorKind};
use crate::app::state::AppState;
use crate::app::store::{BanKind, ClipRecord};

/// The directory of clips inside the data directory.
pub const DIR: &str = "clips";

/// Live clips: the last this many seconds at least ...
pub const LIVE_MIN_SECS: u64 = 30;
/// ... and at most (what the feed keeps, [`crate::pipeline::feed::CLIP_RING_MS`]).
pub const LIVE_MAX_SECS: u64 = 60;
/// A recording's clip: at least this long, ms ...
pub const RANGE_MIN_MS: u64 = 1_000;
/// ... and at most.
pub const RANGE_MAX_MS: u64 = 60_000;
/// The longest title a clip may be given, characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// The largest clip file: a minute at 510 kbit/s (Opus's highest rate) with room to spare.
pub const MAX_CLIP_BYTES: usize = 4 << 20;

/// Whether `id` is a clip id as the node makes them (16 lowercase hex digits): never a path.
pub fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The clips directory of a node.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR)
}

/// The file of clip `id`.
pub fn file_name(id: &str) -> String {
    format!("{id}.opus")
}

/// Where clip `id`'s page is.
pub fn page_url(id: &str) -> String {
    format!("/clips/{id}")
}

/// Where clip `id`'s audio is.
pub fn audio_url(id: &str) -> String {
    format!("/clips/{id}.opus")
}

/// A title given for a clip, checked: 1 to [`MAX_TITLE_CHARS`] characters, none of them
/// control characters (surrounding white space trimmed); `None` for none given.
pub fn checked_title(title: Option<&str>) -> Result<Option<String>, AppError> {
    let Some(title) = title.map(str::trim) else { return Ok(None) };
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
        return Err(AppError::new(
            ErrorKind::Unprocessable,
            "invalid_title",
            format!("a clip's title is 1 to {MAX_TITLE_CHARS} characters, no control characters"),
        ));
    }
    Ok(Some(title.to_owned()))
}

/// Who asks for a clip of (or to hear a clip of) `space`: their verified claims, or `None` for
/// an anonymous caller where the space is public. Refused if the room removed or blocked them
/// (the live room's word, else the bans kept in the database: run this off the async workers).
pub fn caller(
    app: &AppState,
    space: &SpaceId,
    public: bool,
    bearer: Option<&str>,
    url_token: Option<&str>,
) -> Result<Option<Claims>, AppError> {
    let claims = match (bearer, url_token) {
        (Some(token), _) => Some(app.verify(token, space)?),
        (None, Some(token)) => Some(app.verify_url_token(token, space)?),
        (None, None) => None,
    };
    match &claims {
        None if !public => {
            return Err(AppError::unauthorized("this space's clips need a token for the space"));
        }
        None => {}
        Some(c) => barred(app, space, &c.sub)?,
    }
    Ok(claims)
}

/// Refuses whoever the room removed or blocked: the live room if the space is on air here,
/// else the bans the database keeps.
pub fn barred(app: &AppState, space: &SpaceId, who: &Identity) -> Result<(), AppError> {
    if let Some(live) = app.live(space) {
        return live.refusal(who).map_or(Ok(()), Err);
    }
    let bans = app.store.bans(space)?;
    match bans.iter().find(|(banned, _)| banned == who) {
        None => Ok(()),
        Some((_, BanKind::Removed)) => {
            Err(AppError::new(ErrorKind::Forbidden, "removed", "you were removed from this space"))
        }
        Some((_, BanKind::Blocked)) => {
            Err(AppError::new(ErrorKind::Forbidden, "blocked", "you are blocked from this space"))
        }
    }
}

/// The clip `id` (checked to be an id first), or `404`.
pub fn find(app: &AppState, id: &str) -> Result<ClipRecord, AppError> {
    if !valid_id(id) {
        return Err(AppError::not_found("no such clip"));
    }
    app.store.clip(id)?.ok_or_else(|| AppError::not_found("no such clip"))
}

#[cfg(test)]
mod tests;
