//! The HTTP and WebSocket surfaces' contracts: statuses, JSON errors, tokens and roles.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use townhall_core::{Identity, Role, SpaceScope, UnixTime};

fn url(addr: std::net::SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

#[tokio::test]
async fn creating_spaces_needs_a_manager_token() {
    let server = server().await;
    let addr = server.addr();
    let c = http();
    let body = json!({ "title": "Morning show" });
    let create = |token: Option<String>| {
        let mut req = c.post(url(addr, "/api/v1/spaces")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_error(create(None).await.expect("send"), 401, "unauthorized").await;
    assert_error(create(Some("not-a-jwt".into())).await.expect("send"), 401, "invalid_token").await;
    let listener = token("bob", Role::Listener, "*");
    assert_error(create(Some(listener)).await.expect("send"), 403, "forbidden").await;
    let speaker = token("bob", Role::Speaker, "*");
    assert_error(create(Some(speaker)).await.expect("send"), 403, "forbidden").await;
    let expired = keys()
        .mint(Identity::new("h").expect("id"), Role::Host, SpaceScope::Any, UnixTime(1_000), 60)
        .expect("mint");
    assert_error(create(Some(expired)).await.expect("send"), 401, "invalid_token").await;
    let other_key = townhall_core::TokenKeys::new("other", b"some other secret, long enough").mint(
        Identity::new("h").expect("id"),
        Role::Host,
        SpaceScope::Any,
        UnixTime(2_000_000_000),
        60,
    );
    let other_key = other_key.expect("mint");
    assert_error(create(Some(other_key)).await.expect("send"), 401, "invalid_token").await;

    let res = create(Some(host())).await.expect("send");
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["location"], "/api/v1/spaces/morning-show");
    let space: Value = res.json().await.expect("json");
    assert_eq!(
        (space["id"].as_str(), space["state"].as_str()),
        (Some("morning-show"), Some("scheduled"))
    );
    assert_eq!(space["host"], "host");
    assert_eq!(space["listeners"], 0);

    let listed: Value =
        c.get(url(addr, "/api/v1/spaces")).send().await.expect("list").json().await.expect("json");
    assert_eq!(listed["spaces"][0]["id"], "morning-show");
    server.shutdown().await;
}

#[tokio::test]
async fn a_token_scoped_to_one_space_manages_only_that_space() {
    let server = server().await;
    let addr = server.addr();
    let c = http();
    let scoped = token("carol", Role::Host, "carols-show");
    let res = c
        .post(url(addr, "/api/v1/spaces"))
        .bearer_auth(&scoped)
        .json(&json!({ "title": "Other" }))
        .send()
        .await
        .expect("send");
    assert_error(res, 403, "forbidden").await;
    let res = c
        .post(url(addr, "/api/v1/spaces"))
        .bearer_auth(&scoped)
        .json(&json!({ "id": "carols-show", "title": "Carol" }))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    live_space(addr, "someone-else").await;
    let res = c
        .post(url(addr, "/api/v1/spaces/someone-else/end"))
        .bearer_auth(&scoped)
        .send()
        .await
        .expect("send");
    assert_error(res, 403, "forbidden").await;
    let res = c
        .post(url(addr, "/api/v1/spaces/carols-show/start"))
        .bearer_auth(&scoped)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_json_errors() {
    let server = server().await;
    let addr = server.addr();
    let c = http();
    let post = |body: String, ctype: &'static str| {
        c.post(url(addr, "/api/v1/spaces"))
            .bearer_auth(host())
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    assert_error(
        post("{not json".into(), "application/json").await.expect("send"),
        400,
        "malformed_json",
    )
    .await;
    assert_error(
        post(r#"{"title":"x"}"#.into(), "text/plain").await.expect("send"),
        415,
        "unsupported_media_type",
    )
    .await;
    let huge = format!(r#"{{"title":"{}"}}"#, "x".repeat(100_000));
    assert_error(post(huge, "application/json").await.expect("send"), 413, "too_large").await;
    assert_error(
        post(r#"{"title":"x","bogus":1}"#.into(), "application/json").await.expect("send"),
        422,
        "invalid",
    )
    .await;
    assert_error(
        post(r#"{"title":"   "}"#.into(), "application/json").await.expect("send"),
        422,
        "invalid",
    )
    .await;
    assert_error(
        post(r#"{"title":"x","id":"Bad Id"}"#.into(), "application/json").await.expect("send"),
        422,
        "invalid",
    )
    .await;

    assert_error(
        c.get(url(addr, "/api/v1/spaces/nope")).send().await.expect("send"),
        404,
        "not_found",
    )
    .await;
    assert_error(
        c.get(url(addr, "/api/v1/spaces/NOPE!")).send().await.expect("send"),
        400,
        "invalid_space_id",
    )
    .await;
    assert_error(c.get(url(addr, "/no/such/route")).send().await.expect("send"), 404, "not_found")
        .await;
    assert_error(
        c.delete(url(addr, "/api/v1/spaces")).send().await.expect("send"),
        405,
        "method_not_allowed",
    )
    .await;
    assert_error(c.get(url(addr, "/live/nope.opus")).send().await.expect("send"), 404, "not_found")
        .await;
    assert_error(c.get(url(addr, "/live/nope.mp3")).send().await.expect("send"), 404, "not_found")
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn space_life_cycle_and_its_conflicts() {
    let server = server().await;
    let addr = server.addr();
    let c = http();
    let res = c
        .post(url(addr, "/api/v1/spaces"))
        .bearer_auth(host())
        .json(&json!({ "id": "later", "title": "Later" }))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    assert_error(
        c.post(url(addr, "/api/v1/spaces/later/join")).send().await.expect("join"),
        409,
        "not_live",
    )
    .await;
    let ws_err = ws_status(addr, "/ws/later").await;
    assert_eq!(ws_err.0, 409, "{}", ws_err.1);
    assert_error(c.get(url(addr, "/live/later.opus")).send().await.expect("ogg"), 409, "not_live")
        .await;

    let started: Value = c
        .post(url(addr, "/api/v1/spaces/later/start"))
        .bearer_auth(host())
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    assert_eq!(started["state"], "live");
    assert!(started["started_at"].as_u64().is_some());
    let again = c
        .post(url(addr, "/api/v1/spaces/later/start"))
        .bearer_auth(host())
        .send()
        .await
        .expect("start");
    assert_error(again, 409, "invalid_state").await;

    let mut listener = ws(addr, "/ws/later").await;
    assert_eq!(next_json(&mut listener).await["type"], "hello");
    let ended = c
        .post(url(addr, "/api/v1/spaces/later/end"))
        .bearer_auth(host())
        .send()
        .await
        .expect("end");
    assert_eq!(ended.status(), 200);
    // The listener is told and the socket closes.
    let heard = listen_ws(listener, Duration::from_secs(3)).await;
    assert!(
        heard.events.iter().any(|e| e["type"] == "state" && e["state"] == "ended"),
        "{:?}",
        heard.events
    );

    let again = c
        .post(url(addr, "/api/v1/spaces/later/end"))
        .bearer_auth(host())
        .send()
        .await
        .expect("end");
    assert_error(again, 409, "invalid_state").await;
    assert_error(
        c.post(url(addr, "/api/v1/spaces/later/join")).send().await.expect("join"),
        410,
        "ended",
    )
    .await;
    assert_error(c.get(url(addr, "/live/later.opus")).send().await.expect("ogg"), 410, "ended")
        .await;
    assert_eq!(ws_status(addr, "/ws/later").await.0, 410);
    server.shutdown().await;
}

/// The HTTP status and body of a refused WebSocket handshake.
async fn ws_status(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (clean, token) = speaking_token(path);
    let mut req = format!("ws://{addr}{clean}").into_client_request().expect("request");
    if let Some(token) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Err(WsError::Http(res)) => {
            let body = res
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (res.status().as_u16(), body)
        }
        Ok(_) => panic!("handshake to {path} unexpectedly succeeded"),
        Err(e) => panic!("unexpected error for {path}: {e}"),
    }
}

#[tokio::test]
async fn websocket_checks_tokens_roles_and_parameters() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "gate").await;
    let cases = [
        ("/ws/missing".to_owned(), 404, "not_found"),
        ("/ws/gate?mode=speak".to_owned(), 401, "unauthorized"),
        (
            format!("/ws/gate?mode=speak&token={}", token("l", Role::Listener, "gate")),
            403,
            "forbidden",
        ),
        (
            format!("/ws/gate?mode=speak&token={}", token("s", Role::Speaker, "elsewhere")),
            403,
            "forbidden",
        ),
        ("/ws/gate?token=garbage".to_owned(), 401, "invalid_token"),
        // A token that can speak does not travel in a URL (the header case is above).
        (format!("/ws/gate?token={}", token("s", Role::Speaker, "gate")), 400, "token_in_url"),
        (format!("/ws/gate?token={}", host()), 400, "token_in_url"),
        ("/ws/gate?mode=shout".to_owned(), 400, "bad_query"),
        ("/ws/gate?batch=9".to_owned(), 400, "bad_query"),
        ("/ws/gate?surprise=1".to_owned(), 400, "bad_query"),
    ];
    for (path, status, code) in cases {
        let (got, body) = ws_status(addr, &path).await;
        assert_eq!(got, status, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).expect("json error body");
        assert_eq!(body["error"]["code"], code, "{path}");
    }
    // A plain GET (no upgrade) is a clear error too.
    assert_error(
        http().get(url(addr, "/ws/gate")).send().await.expect("get"),
        400,
        "websocket_required",
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn private_spaces_need_a_ticket_and_join_hands_one_out() {
    let server = server().await;
    let addr = server.addr();
    let c = http();
    let res = c
        .post(url(addr, "/api/v1/spaces"))
        .bearer_auth(host())
        .json(&json!({ "id": "vip", "title": "VIP", "live": true, "public": false }))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    assert_error(
        c.post(url(addr, "/api/v1/spaces/vip/join")).send().await.expect("join"),
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(ws_status(addr, "/ws/vip").await.0, 401);
    assert_error(
        c.get(url(addr, "/live/vip.opus")).send().await.expect("ogg"),
        401,
        "unauthorized",
    )
    .await;

    let member = token("dana", Role::Listener, "vip");
    let ticket: Value = c
        .post(url(addr, "/api/v1/spaces/vip/join"))
        .bearer_auth(&member)
        .send()
        .await
        .expect("join")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (ticket["identity"].as_str(), ticket["role"].as_str()),
        (Some("dana"), Some("listener"))
    );
    let t = ticket["token"].as_str().expect("ticket token");
    let mut listener = ws(addr, &format!("/ws/vip?token={t}")).await;
    let hello = next_json(&mut listener).await;
    assert_eq!(hello["identity"], "dana");
    let (status, body) =
        capture_http(&url(addr, &format!("/live/vip.opus?token={t}")), Duration::from_millis(500))
            .await;
    assert_eq!(status, 200);
    assert!(body.starts_with(b"OggS"));

    // Public spaces admit anonymous listeners with a fresh identity.
    live_space(addr, "open").await;
    let anon: Value = c
        .post(url(addr, "/api/v1/spaces/open/join"))
        .send()
        .await
        .expect("join")
        .json()
        .await
        .expect("json");
    assert!(anon["identity"].as_str().is_some_and(|i| i.starts_with("anon-")), "{anon}");
    assert_eq!(anon["urls"]["ogg"], "/live/open.opus");
    server.shutdown().await;
}

#[tokio::test]
async fn bad_speaker_frames_are_refused_counted_and_explained() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "noisy").await;
    let mut speaker = ws(
        addr,
        &format!("/ws/noisy?mode=speak&token={}", token("mallory", Role::Speaker, "noisy")),
    )
    .await;
    assert_eq!(next_json(&mut speaker).await["type"], "hello");

    // Not our wire format.
    speaker.send(Message::Binary(vec![0xFF, 1, 2, 3].into())).await.expect("send");
    let err = next_json(&mut speaker).await;
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("bad_frame")),
        "{err}"
    );

    // Our wire format, but not Opus of 20 ms: a 10 ms frame.
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Audio).expect("enc");
    let short = enc.encode_vec_float(&[0.0; 480], 1275).expect("encode");
    let frame = townhall_media::SpeakerFrame { seq: 0, sent_at_us: 0, payload: short.into() };
    speaker.send(Message::Binary(frame.encode())).await.expect("send");
    let err = next_json(&mut speaker).await;
    assert_eq!(err["code"], "bad_frame");
    assert!(err["message"].as_str().is_some_and(|m| m.contains("20 ms")), "{err}");

    // Text is not accepted.
    speaker.send(Message::Text("hello?".into())).await.expect("send");
    assert_eq!(next_json(&mut speaker).await["code"], "unsupported");

    // Far too many frames at once: the burst passes, the rest is rate limited.
    let mut bot = ToneSpeaker::new(440.0, 0.3);
    for _ in 0..100 {
        speaker.send(Message::Binary(bot.next_message())).await.expect("send");
    }
    let mut codes = Vec::new();
    while let Ok(msg) =
        tokio::time::timeout(Duration::from_millis(500), next_json(&mut speaker)).await
    {
        codes.push(msg["code"].as_str().unwrap_or_default().to_owned());
    }
    assert!(codes.iter().any(|c| c == "rate_limited"), "codes {codes:?}");

    // Oversized messages end the session (the protocol cap is 16 KiB).
    let _ = speaker.send(Message::Binary(vec![1u8; 64 * 1024].into())).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        use futures_util::StreamExt;
        loop {
            match speaker.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the session ends after an oversized message");

    let metrics = http()
        .get(url(addr, "/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let count = |result: &str| -> f64 {
        let prefix = format!("townhall_speaker_frames_total{{result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("invalid") >= 2.0, "invalid frames counted:\n{metrics}");
    assert!(count("rate_limited") >= 1.0, "rate-limited frames counted");
    assert!(count("accepted") >= 25.0, "the burst was accepted");
    // The space is still fine: a listener still gets audio.
    let mut listener = ws(addr, "/ws/noisy").await;
    assert_eq!(next_json(&mut listener).await["type"], "hello");
    let heard = listen_ws(listener, Duration::from_millis(600)).await;
    assert!(heard.seqs.len() >= 10, "program still running");
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_session_of_the_same_speaker_replaces_the_first() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "dup").await;
    let path = format!("/ws/dup?mode=speak&token={}", token("erin", Role::Speaker, "dup"));
    let mut first = ws(addr, &path).await;
    assert_eq!(next_json(&mut first).await["type"], "hello");
    let mut second = ws(addr, &path).await;
    assert_eq!(next_json(&mut second).await["type"], "hello");
    let bye = next_json(&mut first).await;
    assert_eq!(
        (bye["type"].as_str(), bye["reason"].as_str()),
        (Some("bye"), Some("replaced_by_new_session"))
    );
    let view: Value = http()
        .get(url(addr, "/api/v1/spaces/dup"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(view["speakers"], json!([{ "identity": "erin", "role": "speaker" }]));
    drop(second);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view: Value = http()
        .get(url(addr, "/api/v1/spaces/dup"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(view["speakers"], json!([]), "the seat is freed when the current session leaves");
    server.shutdown().await;
}

#[tokio::test]
async fn stage_seats_are_limited() {
    let config = townhall_server::Config { stage_seats: 1, ..Default::default() };
    let server = server_with(config).await;
    let addr = server.addr();
    live_space(addr, "small").await;
    let mut first =
        ws(addr, &format!("/ws/small?mode=speak&token={}", token("a", Role::Speaker, "small")))
            .await;
    assert_eq!(next_json(&mut first).await["type"], "hello");
    let (status, body) = ws_status(
        addr,
        &format!("/ws/small?mode=speak&token={}", token("b", Role::Speaker, "small")),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("stage_full"));
    server.shutdown().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_drain() {
    let server = server().await;
    let addr = server.addr();
    let c = http();
    assert_eq!(c.get(url(addr, "/healthz")).send().await.expect("healthz").status(), 200);
    assert_eq!(c.get(url(addr, "/readyz")).send().await.expect("readyz").status(), 200);
    live_space(addr, "drain").await;
    let mut listener = ws(addr, "/ws/drain").await;
    assert_eq!(next_json(&mut listener).await["type"], "hello");
    let metrics =
        c.get(url(addr, "/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("townhall_listeners{space=\"drain\",protocol=\"ws\"} 1"), "{metrics}");
    assert!(metrics.contains("townhall_mixer_ticks_total"));

    let state = server.state().clone();
    let drain = tokio::spawn(server.shutdown());
    let heard = listen_ws(listener, Duration::from_secs(4)).await;
    let bye =
        heard.events.iter().find(|e| e["type"] == "bye").expect("listeners are told to reconnect");
    assert_eq!(bye["reason"], "server_shutdown");
    assert!(bye["reconnect_after_ms"].as_u64().is_some());
    assert!(state.is_draining());
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("drain finishes")
        .expect("drain task");
}

#[tokio::test]
async fn the_openapi_document_is_served_and_names_every_route() {
    let server = server().await;
    let doc: Value = http()
        .get(url(server.addr(), "/api/v1/openapi.json"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/spaces",
        "/api/v1/spaces/{id}/join",
        "/ws/{id}",
        "/live/{file}",
        "/metrics",
        "/feeds/recordings.rss",
        "/embed/{id}",
        "/oembed",
        "/api/v1/spaces/{id}/clips",
        "/api/v1/recordings/{id}/clips",
        "/api/v1/clips/{id}",
        "/clips/{file}",
        "/api/v1/spaces/{id}/stats",
        "/api/v1/admin/stats",
    ] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    server.shutdown().await;
}
