//! `GET /live/{space}.opus`: the program stream as Ogg/Opus over plain HTTP, Icecast-style.
//!
//! Playable by `<audio>`, VLC, mpv, ffmpeg and radio apps. A new listener receives the stream's
//! header pages, about a second of recent pages (so players start at once), then live pages.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use townhall_core::SpaceId;

use crate::error::ApiError;
use crate::feed::{ListenerGuard, OggSubscription, Protocol};
use crate::metrics::{FRAMES_DROPPED, FRAMES_SENT};
use crate::state::{AppState, bearer};
use crate::ws::{listener_identity, live_space};

/// Query parameters of the Ogg stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OggQuery {
    token: Option<String>,
}

/// Serves the Ogg/Opus stream of a live space.
pub async fn handler(
    State(app): State<Arc<AppState>>,
    Path(file): Path<String>,
    query: Result<Query<OggQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let raw = file
        .strip_suffix(".opus")
        .or_else(|| file.strip_suffix(".ogg"))
        .ok_or_else(|| ApiError::not_found("streams are at /live/{space}.opus"))?;
    let id =
        SpaceId::new(raw).map_err(|e| ApiError::bad_request("invalid_space_id", e.to_string()))?;
    let Query(q) = query?;
    let space = app.space(&id)?;
    let token = q.token.as_deref().or_else(|| bearer(&headers));
    let claims = token.map(|t| app.verify(t, &id)).transpose()?;
    listener_identity(&app, &space, claims)?;
    let live = live_space(&app, &space)?;
    let sub = live.feed().subscribe_ogg().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::GONE,
            "ended",
            "this space has ended",
        )
    })?;
    let guard = live.feed().count_listener(Protocol::Ogg);
    let frames_per_page = app.config.ogg_page_frames() as u64;
    let body = Body::from_stream(pages(sub, guard, frames_per_page, app.shutdown.clone()));
    let title = HeaderValue::from_str(
        &space
            .title
            .replace(|c: char| !c.is_ascii() || c.is_control(), " "),
    )
    .unwrap_or_else(|_| HeaderValue::from_static("Townhall"));
    let response_headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("audio/ogg")),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-store"),
        ),
        (header::HeaderName::from_static("icy-name"), title),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
    ];
    Ok((response_headers, body).into_response())
}

struct PageStream {
    prelude: std::vec::IntoIter<Bytes>,
    live: tokio::sync::broadcast::Receiver<Bytes>,
    shutdown: watch::Receiver<bool>,
    frames_per_page: u64,
    sent: metrics::Counter,
    dropped: metrics::Counter,
    _guard: ListenerGuard,
}

/// Headers and burst first, then live pages until the space ends or the node drains.
fn pages(
    sub: OggSubscription,
    guard: ListenerGuard,
    frames_per_page: u64,
    shutdown: watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let mut prelude = Vec::with_capacity(1 + sub.recent.len());
    prelude.push(sub.headers);
    prelude.extend(sub.recent);
    let state = PageStream {
        prelude: prelude.into_iter(),
        live: sub.live,
        shutdown,
        frames_per_page,
        sent: metrics::counter!(FRAMES_SENT, "protocol" => "ogg"),
        dropped: metrics::counter!(FRAMES_DROPPED, "protocol" => "ogg"),
        _guard: guard,
    };
    stream::unfold(state, |mut s| async move {
        if let Some(first) = s.prelude.next() {
            return Some((Ok(first), s));
        }
        loop {
            tokio::select! {
                page = s.live.recv() => match page {
                    Ok(page) => {
                        s.sent.increment(s.frames_per_page);
                        return Some((Ok(page), s));
                    }
                    Err(RecvError::Lagged(n)) => s.dropped.increment(n * s.frames_per_page),
                    Err(RecvError::Closed) => return None,
                },
                _ = s.shutdown.changed() => return None,
            }
        }
    })
}
