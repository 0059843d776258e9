//! `GET /live/{space}.opus`: the program stream as Ogg/Opus over plain HTTP, Icecast-style.
//!
//! Playable by `<audio>`, VLC, mpv, ffmpeg and radio apps. Served from the raw socket (see
//! [`serve`](crate::http::serve)): the request is checked like any API request (JSON errors), then the
//! socket joins the feed's fan-out, which sends the header pages, about a second of recent pages
//! (so players start at once), then live pages, to every listener from the same shared bytes.
//! A stream request on a reused keep-alive connection goes through the router instead
//! ([`routed`]): same checks and bytes, written by that connection's task.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use townhall_core::{Space, SpaceId};

use crate::app::live::LiveSpace;
use crate::app::state::{AppState, bearer};
use crate::http::error::ApiError;
use crate::http::raw_http::{streaming_head, write_error};
use crate::metrics::{FRAMES_DROPPED, FRAMES_SENT};
use crate::pipeline::fanout::{Joiner, WireMessage};
use crate::pipeline::feed::{ListenerGuard, Protocol};
use crate::pipeline::secure::ConnStream;

/// Query parameters of the Ogg stream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OggQuery {
    token: Option<String>,
}

/// A stream request that passed its checks.
struct Admitted {
    space: Space,
    live: Arc<LiveSpace>,
    hold: Option<crate::app::shield::IdentityHold>,
    /// Who listens, as the statistics know them.
    key: townhall_core::stats::ListenerKey,
}

/// Checks a stream request: the file name, the token, the space's state, and the room (whoever
/// it removed or blocked does not listen here either).
fn check(
    app: &AppState,
    file: &str,
    query: &str,
    authorization: Option<&str>,
    client: Option<std::net::IpAddr>,
) -> Result<Admitted, ApiError> {
    let raw = file
        .strip_suffix(".opus")
        .or_else(|| file.strip_suffix(".ogg"))
        .ok_or_else(|| ApiError::not_found("streams are at /live/{space}.opus"))?;
    let id =
        SpaceId::new(raw).map_err(|e| ApiError::bad_request("invalid_space_id", e.to_string()))?;
    let q: OggQuery = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request("bad_query", e.to_string()))?;
    let space = app.space(&id)?;
    let claims = match (q.token.as_deref(), authorization) {
        (Some(t), _) => Some(app.verify_url_token(t, &id)?),
        (None, Some(t)) => Some(app.verify(t, &id)?),
        (None, None) => None,
    };
    app.listener_identity(&space, claims.as_ref())?;
    let live = app.on_air(&space)?;
    let hold = app.admit_listener(&live, claims.as_ref())?;
    let key = app.listener_key(claims.as_ref(), client);
    Ok(Admitted { space, live, hold, key })
}

fn icy_name(space: &Space) -> String {
    space.title.chars().map(|c| if c.is_ascii() && !c.is_control() { c } else { ' ' }).collect()
}

/// Serves a `GET /live/...` request from its raw connection (`head` is the request head).
pub async fn serve_raw(
    mut stream: ConnStream,
    head: Bytes,
    app: &AppState,
    hold: Option<Arc<dyn Send + Sync>>,
    client: std::net::IpAddr,
) {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(&head);
    let target = match (parsed, req.path) {
        (Ok(httparse::Status::Complete(_)), Some(path)) => path.to_owned(),
        _ => {
            write_error(
                &mut stream,
                &ApiError::bad_request("malformed_request", "malformed HTTP request"),
            )
            .await;
            return;
        }
    };
    let authorization = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let file = path.strip_prefix("/live/").unwrap_or("");
    let checked = check(app, file, query, authorization.as_deref(), Some(client));
    let Admitted { space, live, hold: identity_hold, key } = match checked {
        Ok(ok) => ok,
        Err(e) => {
            write_error(&mut stream, &e).await;
            return;
        }
    };
    let fanout = match live.feed().ogg_fanout() {
        Ok(f) => f,
        Err(_) => {
            write_error(&mut stream, &ApiError::ended()).await;
            return;
        }
    };
    let guard = live.feed().count_listener(Protocol::Ogg, key).holding(identity_hold);
    let response_head = streaming_head("audio/ogg", &[("icy-name", icy_name(&space))]);
    let first = vec![response_head, live.feed().ogg_headers()];
    // A refused join means the feed just ended: dropping the socket closes it.
    let stream = stream.into_egress();
    let _ = fanout
        .join(Joiner { stream, first, guard: Box::new(guard), hold, resume_from: None })
        .await;
}

/// `GET` or `HEAD /live/{space}.opus` through the router: a stream request that arrived on a
/// reused (keep-alive) connection, whose socket cannot be handed to a shard. Same checks, same
/// bytes; the stream is written by this connection's own task.
pub async fn routed(
    State(app): State<Arc<AppState>>,
    Path(file): Path<String>,
    query: axum::extract::RawQuery,
    headers: HeaderMap,
    client: Option<axum::Extension<crate::pipeline::net::ClientAddr>>,
) -> Result<Response, ApiError> {
    let query = query.0.unwrap_or_default();
    let client = client.map(|c| c.0.0);
    let Admitted { space, live, hold, key } = check(&app, &file, &query, bearer(&headers), client)?;
    let (recent, rx) = live.feed().subscribe_ogg().map_err(|_| ApiError::ended())?;
    let guard = live.feed().count_listener(Protocol::Ogg, key).holding(hold);
    let mut prelude = vec![live.feed().ogg_headers()];
    prelude.extend(recent);
    let body =
        Body::from_stream(pages(prelude, rx, guard, app.shutdown.clone(), app.drain_watch()));
    let name = HeaderValue::from_str(&icy_name(&space))
        .unwrap_or_else(|_| HeaderValue::from_static("Townhall"));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("audio/ogg")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
            (header::HeaderName::from_static("icy-name"), name),
        ],
        body,
    )
        .into_response())
}

struct PageStream {
    prelude: std::vec::IntoIter<Bytes>,
    live: broadcast::Receiver<WireMessage>,
    shutdown: watch::Receiver<bool>,
    /// The node's drain; once it starts, this listener leaves at a random moment of its window
    /// (the shards' listeners leave evenly; these few, on reused connections, at random).
    drain: Option<watch::Receiver<Option<tokio::time::Instant>>>,
    leave_at: Option<tokio::time::Instant>,
    sent: metrics::Counter,
    dropped: metrics::Counter,
    _guard: ListenerGuard,
}

impl PageStream {
    /// Notes a drain that started: picks when to leave.
    fn draining(&mut self, changed: Result<(), watch::error::RecvError>) {
        let Some(drain) = self.drain.as_mut() else { return };
        let until = *drain.borrow_and_update();
        match (changed, until) {
            (Ok(()), Some(until)) => {
                let now = tokio::time::Instant::now();
                let window = until.saturating_duration_since(now);
                self.leave_at = Some(now + window.mul_f64(rand::random::<f64>()));
                self.drain = None;
            }
            (Ok(()), None) => {}
            (Err(_), _) => self.drain = None,
        }
    }
}

/// Waits for the drain watch to change, or forever without one.
async fn drain_changed(
    drain: &mut Option<watch::Receiver<Option<tokio::time::Instant>>>,
) -> Result<(), watch::error::RecvError> {
    match drain {
        Some(d) => d.changed().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever without one.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Headers and burst first, then live pages until the space ends, or this listener's moment of
/// the node's drain comes.
fn pages(
    prelude: Vec<Bytes>,
    live: broadcast::Receiver<WireMessage>,
    guard: ListenerGuard,
    shutdown: watch::Receiver<bool>,
    drain: watch::Receiver<Option<tokio::time::Instant>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let state = PageStream {
        prelude: prelude.into_iter(),
        live,
        shutdown,
        drain: Some(drain),
        leave_at: None,
        sent: metrics::counter!(FRAMES_SENT, "protocol" => "ogg"),
        dropped: metrics::counter!(FRAMES_DROPPED, "protocol" => "ogg"),
        _guard: guard,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if let Some(first) = s.prelude.next() {
            return Some((Ok(first), s));
        }
        loop {
            tokio::select! {
                page = s.live.recv() => match page {
                    Ok(msg) => {
                        s.sent.increment(msg.frames);
                        return Some((Ok(msg.bytes), s));
                    }
                    // Fell behind: skip ahead (whole pages, so the stream stays valid Ogg).
                    Err(broadcast::error::RecvError::Lagged(n)) => s.dropped.increment(n),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = s.shutdown.changed() => return None,
                changed = drain_changed(&mut s.drain) => s.draining(changed),
                _ = until(s.leave_at) => return None,
            }
        }
    })
}

/// Any other method on `/live/...`.
pub async fn other() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET")
}
