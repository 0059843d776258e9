//! Recordings over HTTP: the toggle, the index, and the files with ranges and conditional
//! requests.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use townhall_core::SpaceId;

use crate::app::error::AppError;
use crate::app::state::{AppState, bearer};
use crate::app::store::{RecordingRecord, RecordingState, SpeakerTurn};
use crate::http::api::space_id;
use crate::http::error::ApiError;

use crate::app::recorder::{dir, file_name, start, stop, url, valid_id};
use crate::http::files::StaticFile;

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
    /// Its transcript, where it has one: `{vtt, txt}` URLs beside the file.
    pub transcript: Option<TranscriptUrls>,
    /// The listening ticket in the URLs (a private space's), not shown on its own.
    #[serde(skip)]
    ticket: Option<String>,
}

/// Where a recording's transcript is served.
#[derive(Debug, Clone, Serialize)]
pub struct TranscriptUrls {
    /// WebVTT, times from the recording's start, `<v speaker>` where known.
    pub vtt: String,
    /// Plain text, a line per cue: `[mm:ss] speaker: words`.
    pub txt: String,
}

impl From<RecordingRecord> for RecordingView {
    fn from(record: RecordingRecord) -> RecordingView {
        let ready = record.state != RecordingState::Recording;
        let url = ready.then(|| url(&record.id));
        let download_url = url.as_ref().map(|u| format!("{u}?download=1"));
        RecordingView { record, url, download_url, transcript: None, ticket: None }
    }
}

/// How long the listening tickets in a private recording's URLs last (a player seeks with the
/// same URL while it plays).
pub(crate) const RECORDING_TICKET_SECS: u64 = 3_600;

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
            view.ticket = Some(ticket);
        }
        view
    }

    /// Adds the transcript's URLs (with the same ticket as the file's, for a private space).
    fn with_transcript(mut self, has: bool) -> RecordingView {
        if has {
            let base = format!("/recordings/{}", self.record.id);
            let suffix = self.ticket.as_ref().map(|t| format!("?token={t}")).unwrap_or_default();
            self.transcript = Some(TranscriptUrls {
                vtt: format!("{base}.vtt{suffix}"),
                txt: format!("{base}.txt{suffix}"),
            });
        }
        self
    }
}

/// `{"recording": true}` starts recording, `false` stops it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingToggle {
    /// Record or not.
    pub recording: bool,
}

/// `POST /api/v1/spaces/{id}/recording` (host or co-host): starts or stops recording. On an
/// edge the switch goes to the space's origin, which records what it mixes.
pub(crate) async fn set_recording(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<RecordingToggle>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    if let Some(origin) = app.live(&id).and_then(|live| live.origin().map(str::to_owned)) {
        // Relayed here. The token is checked here (forged switches stay on the edge); the
        // origin's room decides.
        let token = bearer(&headers)
            .ok_or_else(|| ApiError::unauthorized("switching recording needs a bearer token"))?;
        app.verify(token, &id)?;
        let Json(toggle) = body?;
        let raw = serde_json::to_vec(&serde_json::json!({ "recording": toggle.recording }))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let path = format!("/api/v1/spaces/{id}/recording");
        return crate::http::api::pass_on(&app, &origin, &path, &headers, None, raw.into()).await;
    }
    app.authorize_space(&headers, &id, crate::app::auth::Manage::Record)?;
    let Json(toggle) = body?;
    let space = app.space(&id)?;
    let record =
        if toggle.recording { start(&app, &space).await? } else { stop(&app, &id).await? };
    Ok(Json(RecordingView::from(record)).into_response())
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
    /// Only recordings whose title or transcript contains this (1 to 200 characters).
    q: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RecordingList {
    recordings: Vec<RecordingView>,
}

/// Who may see a recording: anyone for a public space; a token for its space otherwise.
pub(crate) fn check_access(
    app: &AppState,
    headers: &HeaderMap,
    token: Option<&str>,
    rec: &RecordingRecord,
) -> Result<(), ApiError> {
    if app.space(&rec.space).is_ok_and(|s| s.public) {
        return Ok(());
    }
    match (bearer(headers), token) {
        (Some(token), _) => app.verify(token, &rec.space).map(|_| ()).map_err(ApiError::from),
        (None, Some(token)) => {
            app.verify_url_token(token, &rec.space).map(|_| ()).map_err(ApiError::from)
        }
        (None, None) => Err(ApiError::unauthorized("this recording needs a token for its space")),
    }
}

/// `Cache-Control` of index answers: the same for every anonymous caller, so caches (and the
/// page's many viewers) may share them briefly; private with a token.
pub(crate) fn index_cache(
    headers: &HeaderMap,
    token: Option<&str>,
) -> [(header::HeaderName, &'static str); 1] {
    let anonymous = bearer(headers).is_none() && token.is_none();
    [(header::CACHE_CONTROL, if anonymous { "public, max-age=2" } else { "private, no-store" })]
}

/// `GET /api/v1/recordings`: newest first; `?space=` for one space's.
pub(crate) async fn list(
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
    let search =
        q.q.as_deref()
            .map(crate::app::store::SearchQuery::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request("bad_query", e.to_string()))?;
    let rows = app
        .blocking(move |app| {
            Ok::<_, AppError>(match &search {
                Some(search) => app.store.search_recordings(search)?,
                None => app.store.recordings()?,
            })
        })
        .await?;
    let rows: Vec<RecordingRecord> = rows
        .into_iter()
        .filter(|r| space.as_ref().is_none_or(|s| *s == r.space))
        .filter(|r| check_access(&app, &headers, q.token.as_deref(), r).is_ok())
        .take(limit)
        .collect();
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let with = app
        .blocking(move |app| {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            Ok::<_, AppError>(app.store.with_transcripts(&ids)?)
        })
        .await?;
    let recordings = rows
        .into_iter()
        .map(|r| {
            let has = with.contains(&r.id);
            RecordingView::for_caller(r, &app, &headers).with_transcript(has)
        })
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

pub(crate) fn find(
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

/// [`find`] on the blocking pool (the index is in the database).
pub(crate) async fn find_blocking(
    app: &Arc<AppState>,
    headers: &HeaderMap,
    id: &str,
    token: Option<&str>,
) -> Result<RecordingRecord, ApiError> {
    let (headers, id, token) = (headers.clone(), id.to_owned(), token.map(str::to_owned));
    app.blocking(move |app| find(app, &headers, &id, token.as_deref())).await
}

/// `GET /api/v1/recordings/{id}`.
pub(crate) async fn one(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FileQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let Query(q) = query?;
    let rec = find_blocking(&app, &headers, &id, q.token.as_deref()).await?;
    let rec_id = rec.id.clone();
    let (has, turns) = app
        .blocking(move |app| {
            let has = !app.store.with_transcripts(&[&rec_id])?.is_empty();
            Ok::<_, AppError>((has, app.store.turns(&rec_id)?))
        })
        .await?;
    let view = RecordingView::for_caller(rec, &app, &headers).with_transcript(has);
    let detail = RecordingDetail::new(view, turns);
    Ok((index_cache(&headers, q.token.as_deref()), Json(detail)).into_response())
}

/// One recording as `GET /api/v1/recordings/{id}` shows it: its entry, with who spoke when.
#[derive(Debug, Serialize)]
pub struct RecordingDetail {
    /// The entry, as the list shows it.
    #[serde(flatten)]
    pub view: RecordingView,
    /// Who spoke, in the order they first did.
    pub speakers: Vec<townhall_core::Identity>,
    /// Speaker turns by start, ms of the recording (from the mixer's voice activity; a turn
    /// running when the recording ended ends with it).
    pub turns: Vec<SpeakerTurn>,
}

impl RecordingDetail {
    fn new(view: RecordingView, turns: Vec<SpeakerTurn>) -> RecordingDetail {
        let mut seen = std::collections::HashSet::new();
        let speakers =
            turns.iter().filter(|t| seen.insert(&t.speaker)).map(|t| t.speaker.clone()).collect();
        RecordingDetail { view, speakers, turns }
    }
}

/// `Content-Disposition` for a recording: a readable ASCII name and the UTF-8 title (RFC 6266).
pub fn content_disposition(rec: &RecordingRecord, attachment: bool) -> String {
    crate::http::files::content_disposition(&rec.title, rec.started_at.0, &rec.id, attachment)
}

/// `GET /recordings/{id}.vtt` and `.txt`: the recording's transcript, with the recording's
/// access rule.
async fn serve_transcript(
    app: &Arc<AppState>,
    headers: &HeaderMap,
    id: &str,
    token: Option<&str>,
    vtt: bool,
) -> Result<Response, ApiError> {
    let rec = find_blocking(app, headers, id, token).await?;
    let rec_id = rec.id.clone();
    let found = app.blocking(move |app| Ok::<_, AppError>(app.store.transcript(&rec_id)?)).await?;
    let (text, webvtt) =
        found.ok_or_else(|| ApiError::not_found("this recording has no transcript"))?;
    let public = app.space(&rec.space).is_ok_and(|s| s.public);
    let cache = if public { "public, max-age=60" } else { "private, max-age=60" };
    let ctype = if vtt { "text/vtt; charset=utf-8" } else { "text/plain; charset=utf-8" };
    let body = if vtt { webvtt } else { text };
    Ok(([(header::CONTENT_TYPE, ctype), (header::CACHE_CONTROL, cache)], body).into_response())
}

/// `GET /recordings/{id}.opus`: the file, with ranges and validators.
pub(crate) async fn serve_file(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FileQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(file) = path?;
    let Query(q) = query?;
    for (suffix, vtt) in [(".vtt", true), (".txt", false)] {
        if let Some(id) = file.strip_suffix(suffix) {
            return serve_transcript(&app, &headers, id, q.token.as_deref(), vtt).await;
        }
    }
    let id = file.strip_suffix(".opus").unwrap_or("");
    let rec = find_blocking(&app, &headers, id, q.token.as_deref()).await?;
    if rec.state == RecordingState::Recording {
        return Err(ApiError::conflict("recording", "this recording is still being made"));
    }
    let path = dir(&app.config.data_dir).join(file_name(&rec.id));
    let public = app.space(&rec.space).is_ok_and(|s| s.public);
    let attachment = q.download.as_deref().is_some_and(|d| d == "1" || d == "true");
    let file = StaticFile {
        path: &path,
        what: "recording",
        content_type: "audio/ogg",
        public,
        disposition: content_disposition(&rec, attachment),
    };
    file.serve(&headers).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use townhall_core::{SpaceId, UnixTime};

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
            host: None,
            part: None,
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
}
