//! Requests an edge passes on to a space's origin: the room lives where the space is mixed, so
//! an action made on an edge (a raised hand, a reaction, a host's mute, start and end) is
//! forwarded there, and the origin's answer comes back as it was. Reads of the room are kept
//! for a second per space ([`RoomCache`]), so a crowd opening the page on an edge costs the
//! origin one request a second, not one per listener.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::outbound::HttpClient;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use townhall_core::SpaceId;

use crate::app::error::{AppError, ErrorKind};

/// How long the origin has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer passed back.
const MAX_ANSWER: usize = 1 << 20;
/// How long a read of the room is served from the cache.
const FRESH: Duration = Duration::from_secs(1);
/// Most spaces with cached reads (more are dropped wholesale: it is only a cache).
const MAX_CACHED: usize = 10_000;

/// The origin's answer: status, content type and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its `Content-Type`, if any.
    pub content_type: Option<HeaderValue>,
    /// Its body.
    pub body: Bytes,
}

/// Sends `method path` to `origin` with the caller's bearer token and content type, and names
/// the caller in `X-Forwarded-For` (an origin that lists its edges in `trusted_proxies` limits
/// the person, not the edge). `502`/`504` when the origin cannot be reached or does not answer.
pub async fn to_origin(
    client: &HttpClient,
    origin: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    client_addr: Option<IpAddr>,
    body: Bytes,
) -> Result<Answer, AppError> {
    let uri: Uri = format!("{}{path}", origin.trim_end_matches('/'))
        .parse()
        .map_err(|e| AppError::internal(format!("origin URL: {e}")))?;
    let mut req = Request::builder().method(method).uri(uri);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = headers.get(&name) {
            req = req.header(name, v);
        }
    }
    if let Some(ip) = client_addr {
        req = req.header("x-forwarded-for", ip.to_string());
    }
    let req = req.body(Full::new(body)).map_err(|e| AppError::internal(format!("request: {e}")))?;
    let res = match tokio::time::timeout(TIMEOUT, client.request(req)).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => return Err(unreachable_origin(format!("the space's origin: {e}"))),
        Err(_) => {
            return Err(AppError::new(
                ErrorKind::UpstreamTimeout,
                "origin_timeout",
                "the space's origin did not answer in time",
            ));
        }
    };
    let status = res.status();
    let content_type = res.headers().get(header::CONTENT_TYPE).cloned();
    let body = tokio::time::timeout(TIMEOUT, Limited::new(res.into_body(), MAX_ANSWER).collect())
        .await
        .map_err(|_| unreachable_origin("the space's origin stopped answering".into()))?
        .map_err(|e| unreachable_origin(format!("the space's origin: {e}")))?
        .to_bytes();
    Ok(Answer { status, content_type, body })
}

fn unreachable_origin(message: String) -> AppError {
    AppError::new(ErrorKind::Upstream, "origin_unreachable", message)
}

/// What an edge keeps of its origins' room reads: per space and path, the last answer and when
/// it came, invalidated when a room event passes through. One request per space and path is
/// in flight at a time; the others wait for its answer.
#[derive(Debug, Default)]
pub struct RoomCache {
    spaces: Mutex<HashMap<(SpaceId, &'static str), SharedSlot>>,
}

/// One space and path's kept answer; requests for it queue on its lock.
type SharedSlot = Arc<tokio::sync::Mutex<Slot>>;

#[derive(Debug, Default)]
struct Slot {
    answer: Option<(Instant, Answer)>,
}

impl RoomCache {
    /// The answer to `GET path` from `origin`, at most [`FRESH`] old.
    pub async fn get(
        &self,
        client: &HttpClient,
        origin: &str,
        space: &SpaceId,
        path: &'static str,
        headers: &HeaderMap,
    ) -> Result<Answer, AppError> {
        let slot = self.slot(space, path);
        let mut slot = slot.lock().await;
        if let Some((at, answer)) = &slot.answer
            && at.elapsed() < FRESH
        {
            return Ok(answer.clone());
        }
        let full = format!("/api/v1/spaces/{space}/{path}");
        let answer =
            to_origin(client, origin, Method::GET, &full, headers, None, Bytes::new()).await?;
        // Only what every caller may see is kept: a refusal is the caller's own.
        if answer.status.is_success() {
            slot.answer = Some((Instant::now(), answer.clone()));
        }
        Ok(answer)
    }

    /// Forgets what is kept of `space` (its room changed).
    pub fn invalidate(&self, space: &SpaceId) {
        let spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        for ((id, _), slot) in spaces.iter() {
            if id == space
                && let Ok(mut slot) = slot.try_lock()
            {
                slot.answer = None;
            }
        }
    }

    fn slot(&self, space: &SpaceId, path: &'static str) -> SharedSlot {
        let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        if spaces.len() >= MAX_CACHED && !spaces.contains_key(&(space.clone(), path)) {
            spaces.clear();
        }
        spaces.entry((space.clone(), path)).or_default().clone()
    }

    /// Spaces and paths with a kept answer slot.
    pub fn len(&self) -> usize {
        self.spaces.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded_by_spaces() {
        let cache = RoomCache::default();
        for n in 0..1_000_000u32 {
            let id = SpaceId::new(format!("s{n}")).expect("id");
            let _ = cache.slot(&id, "room");
        }
        assert!(cache.len() <= MAX_CACHED, "{} slots", cache.len());
    }

    #[tokio::test]
    async fn an_unreachable_origin_is_a_502_not_a_hang() {
        // A port nobody listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let origin = format!("http://127.0.0.1:{port}");
        let client =
            crate::app::outbound::Outbound::new(&crate::Config::default()).expect("client").http;
        let err =
            to_origin(&client, &origin, Method::GET, "/x", &HeaderMap::new(), None, Bytes::new())
                .await
                .expect_err("nobody there");
        assert_eq!(err.kind, ErrorKind::Upstream);
        assert_eq!(err.code, "origin_unreachable");
    }
}
