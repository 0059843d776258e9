//! WebSocket endpoint `GET /ws/{space}`: listen to the program stream, or speak into it.
//!
//! Query: `token` (a join ticket or access token; also accepted as `Authorization: Bearer`),
//! `mode=listen|speak` (default `listen`), `batch=1..5` (frames per message for listeners),
//! `from=N` (one-frame listeners only: start with the kept program frames numbered `N` and on,
//! so a relay or listener whose link broke resumes without a gap where the node still has them).
//! The binary formats are in [`townhall_media::wire`]; text messages are JSON events.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use serde::Deserialize;
use sha1::{Digest, Sha1};
use tokio::sync::watch;
use townhall_core::{Identity, Role, Space};
use townhall_media::{SpeakerFrame, check_opus_frame};
use townhall_shield::Gcra;

use crate::app::live::SpeakerSeat;
use crate::app::state::{AppState, bearer};
use crate::http::api::space_id;
use crate::http::error::ApiError;
use crate::metrics::SPEAKER_FRAMES;
use crate::pipeline::events::{Codec, ListenerEvent};
use crate::pipeline::fanout::Joiner;
use crate::pipeline::feed::{MAX_WS_BATCH, Protocol, WsOpcode, ws_frame};
use crate::pipeline::net::{ClientAddr, ConnContext};
use crate::pipeline::secure::ConnIo;

/// Largest WebSocket message accepted from a client.
const MAX_MESSAGE: usize = 16 * 1024;
/// Read buffer per WebSocket connection.
const READ_BUFFER: usize = 4 * 1024;
/// A speaker session is closed after this many invalid frames.
const MAX_INVALID_FRAMES: u32 = 200;
/// Error messages sent back to a misbehaving speaker per second, at most.
const ERRORS_PER_SECOND: u32 = 5;

/// Query parameters of `/ws/{space}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsQuery {
    token: Option<String>,
    mode: Option<String>,
    batch: Option<usize>,
    from: Option<u64>,
}

enum Mode {
    Listen { batch: usize, from: Option<u64> },
    Speak,
}

/// Checks the request, then upgrades it into a listener or speaker session.
pub async fn handler(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WsQuery>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    let Query(q) = query?;
    let (mut parts, _body) = request.into_parts();
    let space = app.space(&id)?;
    // A token in the URL only listens; a stronger one comes in a header (a browser, which
    // cannot set headers on a WebSocket, offers it as the `bearer.<token>` subprotocol).
    let header_token = bearer(&parts.headers).or_else(|| subprotocol_token(&parts.headers));
    let claims = match (q.token.as_deref(), header_token) {
        (Some(t), _) => Some(app.verify_url_token(t, &id)?),
        (None, Some(t)) => Some(app.verify(t, &id)?),
        (None, None) => None,
    };
    let townhall_protocol = offers_protocol(&parts.headers);
    let mode = match q.mode.as_deref().unwrap_or("listen") {
        "listen" => {
            let batch = q.batch.unwrap_or(app.config.ws_batch_frames.min(MAX_WS_BATCH));
            if !(1..=MAX_WS_BATCH).contains(&batch) {
                return Err(ApiError::bad_request("bad_query", "batch must be 1 to 5 frames"));
            }
            if q.from.is_some() && batch != 1 {
                return Err(ApiError::bad_request("bad_query", "from needs batch=1"));
            }
            Mode::Listen { batch, from: q.from }
        }
        "speak" => Mode::Speak,
        other => {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("unknown mode {other:?}: use listen or speak"),
            ));
        }
    };
    let live = app.on_air(&space)?;
    match mode {
        Mode::Listen { batch, from } => {
            if let Some(refused) = claims.as_ref().and_then(|c| live.refusal(&c.sub)) {
                return Err(refused.into());
            }
            let who = app.listener_identity(&space, claims.as_ref())?;
            let (accept, on_upgrade) = handshake(&mut parts)?;
            let identity_hold = app.admit_listener(&live, claims.as_ref())?;
            let hold = parts.extensions.get::<ConnContext>().and_then(|c| c.hold.clone());
            let fanout = live.feed().ws_fanout(batch).map_err(|_| ApiError::ended())?;
            let client = parts.extensions.get::<ClientAddr>().map(|c| c.0);
            let key = app.listener_key(claims.as_ref(), client);
            let guard = live.feed().count_listener(Protocol::Ws, key).holding(identity_hold);
            // A one-frame listener starts with what is published from this moment on, also
            // while its connection is being upgraded: a relay misses no caption event there.
            let from = from.or_else(|| (batch == 1).then(|| live.feed().next_frame()));
            let mut first = vec![ws_frame(
                WsOpcode::Text,
                hello(&space, &who, Role::Listener, batch).as_bytes(),
            )];
            // A listener arriving mid-sentence learns at once who is talking.
            let talking = live.talking();
            if !talking.is_empty() {
                let event = ListenerEvent::Speaking { speakers: &talking }.to_json();
                first.push(ws_frame(WsOpcode::Text, event.as_bytes()));
            }
            // And whether captions are on; a one-frame listener (an edge's relay) also how
            // far they are settled, so that it lists subtitle segments from the start.
            if let Some(board) = live.captions().map(|run| run.board).filter(|b| b.on()) {
                if batch == 1 {
                    let (seq, latest) = board.settled();
                    let event = ListenerEvent::CaptionsSettled { seq, latest }.to_json();
                    first.push(ws_frame(WsOpcode::Text, event.as_bytes()));
                }
                let engine = board.engine();
                let event = ListenerEvent::Captions { on: true, engine: engine.as_deref() };
                first.push(ws_frame(WsOpcode::Text, event.to_json().as_bytes()));
            }
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else { return };
                match upgraded.downcast::<ConnIo>() {
                    Ok(io) => {
                        let stream = io.io.into_inner().into_inner().into_egress();
                        let _ = fanout
                            .join(Joiner {
                                stream,
                                first,
                                guard: Box::new(guard),
                                hold,
                                resume_from: from,
                            })
                            .await;
                    }
                    Err(_) => tracing::error!("upgraded connection is not a server socket"),
                }
            });
            Ok(switching_protocols(accept, townhall_protocol))
        }
        Mode::Speak => {
            let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &app)
                .await
                .map_err(|r| ApiError::new(r.status(), "websocket_required", r.body_text()))?
                .max_message_size(MAX_MESSAGE)
                .max_frame_size(MAX_MESSAGE)
                // tungstenite's default 128 KiB read buffer per connection is far more than a
                // speaker's 20 ms frames need.
                .read_buffer_size(READ_BUFFER)
                .write_buffer_size(0)
                .protocols([PROTOCOL]);
            let claims =
                claims.ok_or_else(|| ApiError::unauthorized("speaking needs a token (?token=)"))?;
            let (role, _muted) =
                live.may_speak(&claims.sub, claims.role, crate::clock::now_unix())?;
            let seat = live.seat(claims.sub.clone(), role, true).await?;
            let hello = Message::Text(Utf8Bytes::from(hello(&space, &claims.sub, role, 1)));
            let limiter = Gcra::new(app.config.speaker_max_fps, app.config.speaker_burst);
            let shutdown = app.shutdown.clone();
            Ok(upgrade.on_upgrade(move |socket| speak(socket, seat, hello, limiter, shutdown)))
        }
    }
}

/// The GUID RFC 6455 appends to the client's key.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Validates a WebSocket upgrade request (RFC 6455 §4.2.1); returns the accept key and the
/// upgrade future.
fn handshake(parts: &mut Parts) -> Result<(String, OnUpgrade), ApiError> {
    let required = |m: &str| ApiError::bad_request("websocket_required", m.to_owned());
    let header = |name: header::HeaderName| {
        parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
    };
    let has_upgrade =
        header(header::CONNECTION).split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !has_upgrade || !header(header::UPGRADE).eq_ignore_ascii_case("websocket") {
        return Err(required(
            "this endpoint needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
        ));
    }
    if header(header::SEC_WEBSOCKET_VERSION) != "13" {
        return Err(required("Sec-WebSocket-Version must be 13"));
    }
    let key = header(header::SEC_WEBSOCKET_KEY);
    if key.is_empty() {
        return Err(required("Sec-WebSocket-Key is missing"));
    }
    let on_upgrade = parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or_else(|| required("this connection cannot be upgraded"))?;
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    Ok((base64::engine::general_purpose::STANDARD.encode(sha.finalize()), on_upgrade))
}

/// The subprotocol a browser names to carry its token in `Sec-WebSocket-Protocol`: it offers
/// `townhall, bearer.<token>` and the server answers `townhall` (the token never appears in a
/// URL, a log or a history).
pub const PROTOCOL: &str = "townhall";

/// The subprotocols the client offered, in order.
fn offered_protocols(headers: &axum::http::HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The token offered as a `bearer.<token>` subprotocol, if any.
fn subprotocol_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    offered_protocols(headers).find_map(|p| p.strip_prefix("bearer."))
}

/// Whether the client offered the `townhall` subprotocol (then the answer must name it).
fn offers_protocol(headers: &axum::http::HeaderMap) -> bool {
    offered_protocols(headers).any(|p| p == PROTOCOL)
}

fn switching_protocols(accept: String, townhall_protocol: bool) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if townhall_protocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(PROTOCOL));
    }
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

fn hello(space: &Space, who: &Identity, role: Role, batch: usize) -> String {
    let codec = Codec::PROGRAM;
    ListenerEvent::Hello { space: space.into(), identity: who, role, batch, codec }.to_json()
}

fn event(event: ListenerEvent<'_>) -> Message {
    Message::Text(Utf8Bytes::from(event.to_json()))
}

fn bye(reason: &'static str) -> Message {
    event(ListenerEvent::Bye { reason, reconnect_after_ms: ListenerEvent::RECONNECT_AFTER_MS })
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

/// Counts and throttles what a speaker did wrong.
struct Misbehaviour {
    invalid: u32,
    window: Instant,
    reported_in_window: u32,
}

impl Misbehaviour {
    /// Records one problem; returns whether to tell the speaker (at most a few per second).
    fn record(&mut self, now: Instant) -> bool {
        self.invalid += 1;
        if now.duration_since(self.window).as_secs() >= 1 {
            self.window = now;
            self.reported_in_window = 0;
        }
        self.reported_in_window += 1;
        self.reported_in_window <= ERRORS_PER_SECOND
    }
}

/// A speaker session: Opus frames in; their mix-minus and events out.
async fn speak(
    socket: WebSocket,
    mut seat: SpeakerSeat,
    hello: Message,
    mut limiter: Gcra,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut sink, mut stream) = socket.split();
    if sink.send(hello).await.is_err() {
        return;
    }
    let mut returns = seat.returns.take();
    let kick = seat.kick.clone();
    let mut trouble = Misbehaviour { invalid: 0, window: Instant::now(), reported_in_window: 0 };
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let reply = match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Binary(bytes))) => on_frame(&seat, &mut limiter, bytes),
                    Some(Ok(Message::Text(_))) => Err(("unsupported", "text messages are not accepted yet".to_owned())),
                    Some(Ok(_)) => Ok(()),
                };
                if let Err((code, message)) = reply {
                    if trouble.record(Instant::now()) {
                        let msg = event(ListenerEvent::Error { code, message: &message });
                        if sink.send(msg).await.is_err() {
                            break;
                        }
                    }
                    if trouble.invalid >= MAX_INVALID_FRAMES {
                        let _ = sink.send(close(close_code::POLICY, "too many invalid frames")).await;
                        break;
                    }
                }
            }
            batch = recv_opt(&mut returns) => match batch {
                Some(batch) => {
                    if sink.send(Message::Binary(batch)).await.is_err() {
                        break;
                    }
                }
                // The engine dropped this speaker's channel: the space has ended.
                None => {
                    let _ = sink.send(event(ListenerEvent::State { state: townhall_core::SpaceState::Ended })).await;
                    let _ = sink.send(close(close_code::NORMAL, "space ended")).await;
                    break;
                }
            },
            reason = kick.fired() => {
                let _ = sink.send(bye(reason.code())).await;
                let _ = sink.send(close(close_code::NORMAL, reason.code())).await;
                break;
            }
            _ = shutdown.changed() => {
                let _ = sink.send(bye("server_shutdown")).await;
                let _ = sink.send(close(close_code::AWAY, "server shutting down")).await;
                break;
            }
        }
    }
}

async fn recv_opt(rx: &mut Option<tokio::sync::mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Validates a speaker frame and queues it for the mixer.
fn on_frame(
    seat: &SpeakerSeat,
    limiter: &mut Gcra,
    bytes: Bytes,
) -> Result<(), (&'static str, String)> {
    let result = SpeakerFrame::parse(bytes)
        .map_err(|e| ("bad_frame", e.to_string()))
        .and_then(|frame| {
            check_opus_frame(&frame.payload).map_err(|e| ("bad_frame", e.to_string()))?;
            Ok(frame)
        })
        .and_then(|frame| {
            limiter.check(Instant::now()).map_err(|e| {
                ("rate_limited", format!("more than the allowed frames per second; {e}"))
            })?;
            Ok(frame)
        })
        .and_then(|frame| {
            seat.send(frame)
                .map_err(|_| ("overloaded", "the mixer is busy; frame dropped".to_owned()))
        });
    let label = match &result {
        Ok(()) => "accepted",
        Err(("bad_frame", _)) => "invalid",
        Err((code, _)) => code,
    };
    metrics::counter!(SPEAKER_FRAMES, "result" => label).increment(1);
    result
}
