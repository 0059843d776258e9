//! The rows the database keeps, as the rest of the node sees them.

use serde::{Deserialize, Serialize};
use townhall_core::room::ModerationEntry;
use townhall_core::{Identity, SpaceId, UnixTime};

/// Why someone may not come back into a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BanKind {
    /// Removed for the rest of the space's life.
    Removed,
    /// Blocked: refused on any later join until unblocked.
    Blocked,
}

impl BanKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            BanKind::Removed => "removed",
            BanKind::Blocked => "blocked",
        }
    }
}

/// A moderation log entry with its space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredModeration {
    /// Order of recording, across all spaces.
    pub seq: i64,
    /// The space it happened in.
    pub space: SpaceId,
    /// The entry.
    #[serde(flatten)]
    pub entry: ModerationEntry,
}

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportCategory {
    /// Unsolicited bulk or repetitive content.
    Spam,
    /// Harassment or bullying.
    Harassment,
    /// Hateful conduct.
    Hate,
    /// Violence or threats.
    Violence,
    /// Sexual content.
    Sexual,
    /// Illegal content (the DSA's notice of illegal content).
    Illegal,
    /// Impersonation of someone else.
    Impersonation,
    /// Anything else (say what in `details`).
    Other,
}

impl ReportCategory {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ReportCategory::Spam => "spam",
            ReportCategory::Harassment => "harassment",
            ReportCategory::Hate => "hate",
            ReportCategory::Violence => "violence",
            ReportCategory::Sexual => "sexual",
            ReportCategory::Illegal => "illegal",
            ReportCategory::Impersonation => "impersonation",
            ReportCategory::Other => "other",
        }
    }
}

/// A stored report of a space or a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Order of filing.
    pub seq: i64,
    /// The space reported, or where the person was reported.
    pub space: SpaceId,
    /// When.
    pub at: UnixTime,
    /// Who reported (from their verified token).
    pub reporter: Identity,
    /// Who is reported; `None` reports the space itself.
    pub target: Option<Identity>,
    /// Why.
    pub category: ReportCategory,
    /// Free text, if given.
    pub details: Option<String>,
}

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Being written.
    Recording,
    /// Closed normally.
    Finished,
    /// Interrupted (the node stopped or crashed) and finalised at the next start.
    Recovered,
}

impl RecordingState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RecordingState::Recording => "recording",
            RecordingState::Finished => "finished",
            RecordingState::Recovered => "recovered",
        }
    }
}

/// One recording in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingRecord {
    /// Unique id, used in URLs.
    pub id: String,
    /// The recorded space.
    pub space: SpaceId,
    /// The space's title when recording started.
    pub title: String,
    /// File name inside the recordings directory.
    pub file: String,
    /// When recording started.
    pub started_at: UnixTime,
    /// When it stopped, if it has.
    pub ended_at: Option<UnixTime>,
    /// Audio length, in milliseconds (as of the last update).
    pub duration_ms: u64,
    /// File size in bytes (as of the last update).
    pub bytes: u64,
    /// Recording, finished or recovered.
    pub state: RecordingState,
    /// Who hosted the space when recording started (`None` in rows older than the column whose
    /// space was no longer stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Identity>,
    /// For a recording that went on after its space moved to another origin (a failover):
    /// which recording it continues, and its part number there (the first part has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<RecordingPart>,
}

/// A later part of a recording: the space moved to another node, which went on recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RecordingPart {
    /// The id of the recording's first part.
    pub of: String,
    /// This part's number (2 for the first continuation).
    pub number: u32,
}

/// A clip: a live space's last minute, or a range of one of its recordings, kept as a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClipRecord {
    /// Unique id, used in URLs (`/clips/{id}`).
    pub id: String,
    /// The space it comes from.
    pub space: SpaceId,
    /// Its title (the space's, or the recording's).
    pub title: String,
    /// The recording it was cut from; `None` for a clip of the live stream.
    pub recording: Option<String>,
    /// Where it starts on its source's clock, ms (the recording's position, or the live
    /// stream's time since the space went on air on this node).
    pub from_ms: u64,
    /// Where it ends on the same clock, ms.
    pub to_ms: u64,
    /// How long it plays, ms.
    pub duration_ms: u64,
    /// File size, bytes.
    pub bytes: u64,
    /// When it was made.
    pub created_at: UnixTime,
    /// Who made it (`None`: an anonymous listener of a public space).
    pub created_by: Option<Identity>,
}

/// One speaker turn of a recording: who spoke from when to when, ms from its start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerTurn {
    /// Who spoke.
    pub speaker: Identity,
    /// From, ms of the recording.
    pub start_ms: u64,
    /// To, ms of the recording.
    pub end_ms: u64,
}
