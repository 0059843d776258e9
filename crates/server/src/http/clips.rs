//! Clips over HTTP: making one of a live space or of a recording, its entry, its page and its
//! audio. The rules are in [`crate::app::clips`].
//!
//! - `POST /api/v1/spaces/{id}/clips` `{"seconds": 30..60, "title"?}`: the live space's last
//!   seconds → `201` with the clip's entry and `Location`.
//! - `POST /api/v1/recordings/{id}/clips` `{"from_ms", "to_ms", "title"?}`: up to a minute of a
//!   recording → `201`.
//! - `GET /api/v1/clips/{id}`: the entry. `GET /clips/{id}`: a page that plays it, with its
//!   title. `GET /clips/{id}.opus`: the audio (Ogg/Opus, the title in its `OpusTags`), with
//!   ranges and validators.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use townhall_core::{Claims, SpaceId};
use townhall_media::recording::iso8601;

use crate::app::clips::{self, audio_url, checked_title, page_url};
use crate::app::error::AppError;
use crate::app::state::{AppState, attack_mode, bearer};
use crate::app::store::ClipRecord;
use crate::http::api::space_id;
use crate::http::embed::{escape, fill};
use crate::http::error::ApiError;
use crate::http::files::{StaticFile, content_disposition};
use crate::pipeline::net::ClientAddr;

/// The clip page, with `{{name}}` slots filled per request.
const TEMPLATE: &str = include_str!("../../../../web/clip.html");

/// How long the listening tickets in a private clip's URLs last.
const CLIP_TICKET_SECS: u64 = 3_600;

/// Routes: making clips, their entries, pages and files.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/spaces/{id}/clips", post(clip_live))
        .route("/api/v1/recordings/{id}/clips", post(clip_recording))
        .route("/api/v1/clips/{id}", get(one))
        .route("/clips/{file}", get(serve))
}

fn default_seconds() -> u64 {
    clips::LIVE_MIN_SECS
}

/// A clip of a live space.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveClip {
    /// The last this many seconds (30 to 60; default 30).
    #[serde(default = "default_seconds")]
    pub seconds: u64,
    /// Its title (default: the space's).
    pub title: Option<String>,
}

/// A clip of a recording.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeClip {
    /// From, ms of the recording.
    pub from_ms: u64,
    /// To, ms of the recording (1 to 60 s after `from_ms`).
    pub to_ms: u64,
    /// Its title (default: the recording's).
    pub title: Option<String>,
}

/// A clip as the API shows it.
#[derive(Debug, Serialize)]
pub struct ClipView {
    /// Its entry.
    #[serde(flatten)]
    pub record: ClipRecord,
    /// Its page (the link to share).
    pub url: String,
    /// Its audio (Ogg/Opus).
    pub audio_url: String,
    /// Its audio, to save.
    pub download_url: String,
}

impl ClipView {
    /// The view, with URLs a browser can use: a private space's clip gets a short-lived
    /// listening ticket in its URLs (never the caller's own token).
    fn new(record: ClipRecord, ticket: Option<String>) -> ClipView {
        let suffix = |first: char| ticket.as_ref().map(|t| format!("{first}token={t}"));
        let url = format!("{}{}", page_url(&record.id), suffix('?').unwrap_or_default());
        let audio_url = format!("{}{}", audio_url(&record.id), suffix('?').unwrap_or_default());
        let download_url = match suffix('&') {
            Some(s) => format!("{}?download=1{s}", clips::audio_url(&record.id)),
            None => format!("{}?download=1", clips::audio_url(&record.id)),
        };
        ClipView { record, url, audio_url, download_url }
    }
}

/// A listening ticket for a private space's clip URLs, minted for `claims`' holder.
fn ticket(
    app: &AppState,
    public: bool,
    claims: Option<&Claims>,
    space: &SpaceId,
) -> Option<String> {
    if public {
        return None;
    }
    claims.and_then(|c| app.listen_ticket(c, space, CLIP_TICKET_SECS).ok())
}

/// An anonymous caller may clip only where anonymous listening is allowed now.
fn anonymous_allowed(app: &AppState, claims: Option<&Claims>) -> Result<(), ApiError> {
    if claims.is_some() {
        return Ok(());
    }
    if !app.config.anonymous_listeners {
        return Err(ApiError::unauthorized("clipping needs a token on this node"));
    }
    if app.shield.require_token() {
        return Err(attack_mode().into());
    }
    Ok(())
}

fn created(view: ClipView) -> Response {
    let location = format!("/api/v1/clips/{}", view.record.id);
    (StatusCode::CREATED, [(header::LOCATION, location)], Json(view)).into_response()
}

/// `POST /api/v1/spaces/{id}/clips`.
async fn clip_live(
    State(app): State<Arc<AppState>>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<LiveClip>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    let space = app.visible_space(&id, &headers)?;
    let Json(req) = body?;
    let title = checked_title(req.title.as_deref())?;
    // What is wrong with the request is said before it counts against the caller's clips.
    clips::check_seconds(req.seconds)?;
    let claims = {
        let (headers, space) = (headers.clone(), space.clone());
        app.blocking(move |app| clips::caller(app, &space.id, space.public, bearer(&headers), None))
            .await?
    };
    anonymous_allowed(&app, claims.as_ref())?;
    app.clips.check(claims.as_ref().map(|c| &c.sub), client.map(|c| c.0.0))?;
    let who = claims.as_ref().map(|c| c.sub.clone());
    let record = clips::cut_live(&app, &space, req.seconds, title, who).await?;
    let ticket = ticket(&app, space.public, claims.as_ref(), &space.id);
    Ok(created(ClipView::new(record, ticket)))
}

/// `POST /api/v1/recordings/{id}/clips`.
async fn clip_recording(
    State(app): State<Arc<AppState>>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<RangeClip>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(rec_id) = path?;
    let Json(req) = body?;
    let title = checked_title(req.title.as_deref())?;
    let (rec, public, claims) = {
        let headers = headers.clone();
        app.blocking(move |app| {
            let rec = crate::http::recordings::find(app, &headers, &rec_id, None)?;
            let public = app.space(&rec.space).is_ok_and(|s| s.public);
            let claims = clips::caller(app, &rec.space, public, bearer(&headers), None)?;
            clips::check_range(&rec, req.from_ms, req.to_ms)?;
            Ok::<_, ApiError>((rec, public, claims))
        })
        .await?
    };
    anonymous_allowed(&app, claims.as_ref())?;
    app.clips.check(claims.as_ref().map(|c| &c.sub), client.map(|c| c.0.0))?;
    let who = claims.as_ref().map(|c| c.sub.clone());
    let space = rec.space.clone();
    let record = clips::cut_recording(&app, rec, (req.from_ms, req.to_ms), title, who).await?;
    let ticket = ticket(&app, public, claims.as_ref(), &space);
    Ok(created(ClipView::new(record, ticket)))
}

/// Query of a clip's entry, page or file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipQuery {
    /// A listening ticket (or one-space listener token), for clips of private spaces.
    token: Option<String>,
    /// `1`: `Content-Disposition: attachment` (save rather than play).
    download: Option<String>,
    /// The page's language (`en`, `ar`): read by the page's script, not by the server.
    #[allow(dead_code)]
    lang: Option<String>,
}

/// A clip the caller may hear: anyone a public space's, a token for the space (not removed or
/// blocked by its room) a private one's. With whether it is public and the caller's claims.
async fn readable(
    app: &Arc<AppState>,
    headers: &HeaderMap,
    id: String,
    token: Option<String>,
) -> Result<(ClipRecord, bool, Option<Claims>), ApiError> {
    let headers = headers.clone();
    app.blocking(move |app| {
        let clip = clips::find(app, &id)?;
        let public = app.space(&clip.space).is_ok_and(|s| s.public);
        let claims = if public {
            None
        } else {
            clips::caller(app, &clip.space, false, bearer(&headers), token.as_deref())?
        };
        Ok::<_, AppError>((clip, public, claims))
    })
    .await
    .map_err(ApiError::from)
}

fn cache(public: bool) -> [(header::HeaderName, &'static str); 1] {
    // A clip never changes once made.
    [(header::CACHE_CONTROL, if public { "public, max-age=300" } else { "private, no-store" })]
}

/// `GET /api/v1/clips/{id}`.
async fn one(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ClipQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let Query(q) = query?;
    let (clip, public, claims) = readable(&app, &headers, id, q.token).await?;
    let ticket = ticket(&app, public, claims.as_ref(), &clip.space);
    Ok((cache(public), Json(ClipView::new(clip, ticket))).into_response())
}

/// `GET /clips/{id}` (the page) and `GET /clips/{id}.opus` (the audio).
async fn serve(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ClipQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(file) = path?;
    let Query(q) = query?;
    let (id, audio) = match file.strip_suffix(".opus") {
        Some(id) => (id.to_owned(), true),
        None => (file, false),
    };
    let (clip, public, claims) = readable(&app, &headers, id, q.token.clone()).await?;
    if audio {
        let path = clips::dir(&app.config.data_dir).join(clips::file_name(&clip.id));
        let attachment = q.download.as_deref().is_some_and(|d| d == "1" || d == "true");
        let file = StaticFile {
            path: &path,
            what: "clip",
            content_type: "audio/ogg",
            public,
            disposition: content_disposition(&clip.title, clip.created_at.0, &clip.id, attachment),
        };
        return file.serve(&headers).await;
    }
    let ticket = ticket(&app, public, claims.as_ref(), &clip.space);
    Ok(page(&app, clip, ticket, public))
}

/// `m:ss` (or `h:mm:ss`) of `ms`.
fn clock(ms: u64) -> String {
    let s = ms / 1_000;
    let (h, m, s) = (s / 3_600, s / 60 % 60, s % 60);
    if h > 0 { format!("{h}:{m:02}:{s:02}") } else { format!("{m}:{s:02}") }
}

/// The clip's page: its title, where it comes from, a player and a download link.
fn page(app: &AppState, clip: ClipRecord, ticket: Option<String>, public: bool) -> Response {
    let view = ClipView::new(clip, ticket);
    let clip = &view.record;
    let space_title = app.space(&clip.space).map_or_else(|_| clip.title.clone(), |s| s.title);
    // In English; the page's script says it in the reader's language (`web/clip.js`).
    let (source, source_at) = match &clip.recording {
        Some(_) => (format!("recording, at {}", clock(clip.from_ms)), clock(clip.from_ms)),
        None => ("live".to_owned(), String::new()),
    };
    let date = iso8601(clip.created_at.0);
    let values = [
        ("title", escape(&clip.title)),
        ("space_title", escape(&space_title)),
        ("space_page", escape(&format!("/#/space/{}", clip.space))),
        ("source", escape(&source)),
        ("source_at", source_at),
        ("duration", clock(clip.duration_ms)),
        ("date", escape(date.get(..10).unwrap_or(&date))),
        ("audio", escape(&view.audio_url)),
        ("download", escape(&view.download_url)),
    ];
    let html =
        fill(TEMPLATE, |slot| values.iter().find(|(k, _)| *k == slot).map(|(_, v)| v.as_str()));
    let cache = if public { "public, max-age=300" } else { "private, no-store" };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        html,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_has_every_slot() {
        for slot in [
            "title",
            "space_title",
            "space_page",
            "source",
            "source_at",
            "duration",
            "date",
            "audio",
            "download",
        ] {
            assert!(TEMPLATE.contains(&format!("{{{{{slot}}}}}")), "{slot}");
        }
    }

    #[test]
    fn clocks_read_like_players() {
        assert_eq!(clock(0), "0:00");
        assert_eq!(clock(45_999), "0:45");
        assert_eq!(clock(3_725_000), "1:02:05");
    }
}
