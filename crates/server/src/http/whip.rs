//! WHIP (RFC 9725) and WHEP signalling: `POST /whip/{space}` publishes a speaker,
//! `POST /whep/{space}` subscribes a listener; each answers `201 Created` with the SDP answer
//! and the session's `Location`, which `DELETE` ends.
//!
//! ICE-lite, host candidates only, no trickle: the answer carries every candidate the node has,
//! so `PATCH` (trickle ICE and ICE restarts) is answered `405` as the RFC asks of servers
//! without them. Media runs in [`crate::pipeline::rtc`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use tokio::sync::mpsc;
use townhall_core::SpaceId;
use townhall_media::wire::parse_program_batch;
use townhall_shield::Gcra;
use townhall_webrtc::offer::wants_audio_back;
use townhall_webrtc::{Intent, OfferError, Peer, PeerError, check_offer};

use crate::app::live::Kick;
use crate::app::state::{AppState, bearer};
use crate::http::api::space_id;
use crate::http::error::ApiError;
use crate::pipeline::feed::Protocol;
use crate::pipeline::rtc::{Reserved, SessionKind, SessionRole};

/// The WHIP and WHEP routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/whip/{id}", post(whip).options(preflight))
        .route("/whep/{id}", post(whep).options(preflight))
        .route(
            "/whip/{id}/{session}",
            axum::routing::delete(delete_whip).patch(no_trickle).options(preflight),
        )
        .route(
            "/whep/{id}/{session}",
            axum::routing::delete(delete_whep).patch(no_trickle).options(preflight),
        )
}

const SDP: &str = "application/sdp";

/// Requires `Content-Type: application/sdp` (415 otherwise).
fn require_sdp(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(SDP) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the offer must be sent as Content-Type: {SDP}"),
        ))
    }
}

fn body_error(r: BytesRejection) -> ApiError {
    let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "bad_body" };
    ApiError::new(r.status(), code, r.body_text())
}

fn offer_error(e: OfferError) -> ApiError {
    let code = match &e {
        OfferError::TooLarge(_) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string());
        }
        OfferError::Empty | OfferError::NotText | OfferError::Malformed(_) => "malformed_sdp",
        OfferError::NoAudio => "no_audio",
        OfferError::NoOpus => "no_opus",
        OfferError::Direction { .. } => "wrong_direction",
    };
    ApiError::bad_request(code, e.to_string())
}

fn peer_error(e: PeerError) -> ApiError {
    match e {
        PeerError::NoOpus => ApiError::bad_request("no_opus", e.to_string()),
        PeerError::Rtc(_) | PeerError::BadAnswer(_) => {
            ApiError::bad_request("unacceptable_offer", e.to_string())
        }
    }
}

/// CORS for browser clients on other origins (the page itself is same-origin).
fn cors(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch"),
    );
}

fn created(location: String, answer: String) -> Response {
    let mut res = Response::new(Body::from(answer));
    *res.status_mut() = StatusCode::CREATED;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    cors(&mut res);
    res
}

/// `OPTIONS`: CORS preflight; says what may be posted.
async fn preflight() -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    h.insert("accept-post", HeaderValue::from_static(SDP));
    cors(&mut res);
    res
}

/// `PATCH` on a session: no trickle ICE or ICE restarts here (RFC 9725 §4.3.1).
async fn no_trickle() -> Response {
    let mut res = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "no_trickle",
        "this server does not support trickle ICE or ICE restarts: the answer holds every \
         candidate; to restart, DELETE the session and POST a new offer",
    )
    .into_response();
    res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    cors(&mut res);
    res
}

/// `POST /whip/{space}`: a speaker publishes (speaker, co-host or host token).
async fn whip(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    let space = app.space(&id)?;
    require_sdp(&headers)?;
    let token = bearer(&headers).ok_or_else(|| {
        ApiError::unauthorized("publishing needs Authorization: Bearer <speaker token>")
    })?;
    let claims = app.verify(token, &id)?;
    let live = app.on_air(&space)?;
    let (role, _muted) = live.may_speak(&claims.sub, claims.role, crate::clock::now_unix())?;
    let body = body.map_err(body_error)?;
    let offer = check_offer(&body, Intent::Publish).map_err(offer_error)?;
    let wants_return = std::str::from_utf8(&body).is_ok_and(wants_audio_back);
    let rtc = &app.rtc;
    let Reserved { key, shard } =
        rtc.reserve(format!("id:{}", claims.sub), &id, SessionKind::Whip)?;
    let (peer, answer) = match Peer::answer(offer, rtc.peer_config(shard), Instant::now()) {
        Ok(built) => built,
        Err(e) => {
            rtc.release(&key);
            return Err(peer_error(e));
        }
    };
    let mut seat = match live.seat(claims.sub.clone(), role, wants_return).await {
        Ok(seat) => seat,
        Err(e) => {
            rtc.release(&key);
            return Err(e.into());
        }
    };
    tokio::spawn(watch_speaker(app.clone(), key.clone(), seat.returns.take(), seat.kick.clone()));
    let limiter = Gcra::new(app.config.speaker_max_fps, app.config.speaker_burst);
    rtc.add(key.clone(), id.clone(), peer, SessionRole::Speaker { seat: Box::new(seat), limiter });
    tracing::info!(space = %id, speaker = %claims.sub, "WHIP speaker");
    Ok(created(format!("/whip/{id}/{key}"), answer))
}

/// Carries a WHIP speaker's mix-minus to its track, and ends the session when the space ends,
/// a new session of the same speaker replaces it, or it is gone.
async fn watch_speaker(
    app: Arc<AppState>,
    key: String,
    mut returns: Option<mpsc::Receiver<Bytes>>,
    kick: Arc<Kick>,
) {
    let mut alive = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            batch = recv_opt(&mut returns) => match batch {
                Some(batch) => {
                    let _ = parse_program_batch(&batch, |f| {
                        let payload = batch.slice_ref(f.payload);
                        app.rtc.send_return(&key, f.seq, payload, f.captured_at_us());
                    });
                }
                None => break,
            },
            _ = kick.fired() => break,
            _ = alive.tick() => {
                if !app.rtc.has_session(&key) {
                    return;
                }
            }
        }
    }
    app.rtc.remove(&key);
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// `POST /whep/{space}`: a listener subscribes to the program stream (anonymous on public
/// spaces, like the other listening protocols; through the same admission).
async fn whep(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    client_addr: Option<Extension<crate::pipeline::net::ClientAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    let space = app.space(&id)?;
    require_sdp(&headers)?;
    let claims = bearer(&headers).map(|t| app.verify(t, &id)).transpose()?;
    let has_token = claims.is_some();
    let who = app.listener_identity(&space, claims.as_ref())?;
    let live = app.on_air(&space)?;
    // WebRTC sessions have their own per-client cap (`reserve` below): the identity's
    // listening-connection hold is for WebSocket and Ogg.
    drop(app.admit_listener(&live, claims.as_ref())?);
    let body = body.map_err(body_error)?;
    let offer = check_offer(&body, Intent::Subscribe).map_err(offer_error)?;
    let ip = client_addr.map(|Extension(crate::pipeline::net::ClientAddr(ip))| ip);
    let client = match (has_token, ip) {
        (true, _) => format!("id:{who}"),
        (false, Some(ip)) => format!("ip:{ip}"),
        (false, None) => "ip:unknown".to_owned(),
    };
    let listener = app.listener_key(claims.as_ref(), ip);
    let rtc = &app.rtc;
    // On the RTC thread with the fewest sessions; the answer gives that thread's port.
    let Reserved { key, shard } = rtc.reserve(client, &id, SessionKind::Whep)?;
    let (peer, answer) = match Peer::answer(offer, rtc.peer_config(shard), Instant::now()) {
        Ok(built) => built,
        Err(e) => {
            rtc.release(&key);
            return Err(peer_error(e));
        }
    };
    let guard = live.feed().count_listener(Protocol::Webrtc, listener);
    rtc.add(key.clone(), id.clone(), peer, SessionRole::Listener { guard });
    Ok(created(format!("/whep/{id}/{key}"), answer))
}

async fn delete_session(
    app: &AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    kind: SessionKind,
) -> Result<Response, ApiError> {
    let Path((raw, key)) = path?;
    let id =
        SpaceId::new(raw).map_err(|e| ApiError::bad_request("invalid_space_id", e.to_string()))?;
    if !app.rtc.end_session(&id, kind, &key) {
        return Err(ApiError::not_found("no such session (it ended, or never was)"));
    }
    let mut res = Response::new(Body::empty());
    cors(&mut res);
    Ok(res)
}

/// `DELETE /whip/{space}/{session}`.
async fn delete_whip(
    State(app): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    delete_session(&app, path, SessionKind::Whip).await
}

/// `DELETE /whep/{space}/{session}`.
async fn delete_whep(
    State(app): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    delete_session(&app, path, SessionKind::Whep).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sdp_is_accepted() {
        let mut h = HeaderMap::new();
        assert_eq!(require_sdp(&h).err().map(|e| e.status.as_u16()), Some(415));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(require_sdp(&h).err().map(|e| e.status.as_u16()), Some(415));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("Application/SDP; charset=utf-8"));
        assert!(require_sdp(&h).is_ok());
    }

    #[test]
    fn offer_errors_map_to_statuses() {
        assert_eq!(offer_error(OfferError::TooLarge(1)).status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(offer_error(OfferError::NoOpus).code, "no_opus");
        assert_eq!(offer_error(OfferError::Empty).status, StatusCode::BAD_REQUEST);
    }
}
