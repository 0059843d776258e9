//! The room on a real server: a listener asks to speak, the host accepts, their tone reaches
//! another listener; the host mutes them and the tone stops; the host removes them and they
//! cannot come back.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use townhall_core::Role;
use townhall_media::analysis::tone_amplitude;

async fn act(addr: SocketAddr, space: &str, token: &str, body: Value) -> reqwest::Response {
    http()
        .post(format!("http://{addr}/api/v1/spaces/{space}/actions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("action")
}

async fn ok(res: reqwest::Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.expect("json");
    assert_eq!(status, 200, "{body}");
    body
}

/// Speaks a tone over the WebSocket until the server closes the session or `limit` passes;
/// returns the text events the speaker received.
async fn speak(addr: SocketAddr, path: String, freq: f32, limit: Duration) -> Vec<Value> {
    let mut ws = ws(addr, &path).await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let (mut sink, mut stream) = ws.split();
    let mut bot = ToneSpeaker::new(freq, 0.4);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if tokio::time::Instant::now() > deadline
                    || sink.send(Message::Binary(bot.next_message())).await.is_err()
                {
                    break;
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => events.push(serde_json::from_str(&t).expect("json")),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            },
        }
    }
    events
}

async fn hear(addr: SocketAddr, space: &str, secs: u64) -> Heard {
    listen_ws(ws(addr, &format!("/ws/{space}")).await, Duration::from_secs(secs)).await
}

#[tokio::test]
async fn request_accept_speak_mute_remove() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "town").await;
    let host = host();
    let lee = token("lee", Role::Listener, "town");

    // A listener token cannot speak before being brought on stage.
    let res = http()
        .get(format!("http://{addr}/ws/town?mode=speak&token={lee}"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("upgrade");
    assert_error(res, 403, "forbidden").await;

    // Lee asks; a listener cannot accept their own request; the host accepts.
    let body = ok(act(addr, "town", &lee, json!({ "action": "request_to_speak" })).await).await;
    assert_eq!(body["room"]["hands"][0]["who"], "lee", "{body}");
    let res = act(addr, "town", &lee, json!({ "action": "accept_request", "target": "lee" })).await;
    assert_eq!(res.status(), 403);
    let body =
        ok(act(addr, "town", &host, json!({ "action": "accept_request", "target": "lee" })).await)
            .await;
    let speakers: Vec<&str> = body["room"]["speakers"]
        .as_array()
        .expect("speakers")
        .iter()
        .filter_map(|m| m["identity"].as_str())
        .collect();
    assert!(speakers.contains(&"lee"), "{body}");

    // Lee speaks with the same listener token; another listener hears the tone.
    let path = format!("/ws/town?mode=speak&token={lee}");
    let speaker = tokio::spawn(speak(addr, path, 660.0, Duration::from_secs(20)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = hear(addr, "town", 2).await;
    let amp = tone_amplitude(before.tail(1.0), 660.0);
    assert!(amp > 0.25, "lee's tone reaches a listener: {amp}");

    // The host mutes lee: the tone stops; lee cannot lift a moderator's mute.
    ok(act(addr, "town", &host, json!({ "action": "mute", "target": "lee", "reason": "noise" }))
        .await)
    .await;
    let res = act(addr, "town", &lee, json!({ "action": "unmute", "target": "lee" })).await;
    assert_error(res, 403, "muted_by_moderator").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let muted = hear(addr, "town", 2).await;
    let amp = tone_amplitude(muted.tail(1.0), 660.0);
    assert!(amp < 0.02, "silence after the mute: {amp}");
    assert!(muted.seqs.len() > 80, "the program stream goes on: {}", muted.seqs.len());

    // The host removes lee: listeners are told, the speaking session ends, and lee cannot
    // come back.
    let watcher = tokio::spawn(hear(addr, "town", 2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(act(addr, "town", &host, json!({ "action": "remove", "target": "lee", "reason": "spam" }))
        .await)
    .await;
    let events = tokio::time::timeout(Duration::from_secs(5), speaker)
        .await
        .expect("lee's session ends at once")
        .expect("speaker task");
    assert!(
        events.iter().any(|e| e["type"] == "bye" && e["reason"] == "removed"),
        "lee is told: {events:?}"
    );
    let res = act(addr, "town", &lee, json!({ "action": "request_to_speak" })).await;
    assert_error(res, 403, "removed").await;
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/town/join"))
        .bearer_auth(&lee)
        .send()
        .await
        .expect("join");
    assert_error(res, 403, "removed").await;
    let res = http()
        .post(format!("http://{addr}/whep/town"))
        .bearer_auth(&lee)
        .header("content-type", "application/sdp")
        .body("v=0")
        .send()
        .await
        .expect("whep");
    assert_error(res, 403, "removed").await;

    // The moderation log (hosts only) has the mute and the removal, with reasons.
    let res = http()
        .get(format!("http://{addr}/api/v1/spaces/town/moderation"))
        .bearer_auth(&lee)
        .send()
        .await
        .expect("log");
    assert_eq!(res.status(), 403);
    let log: Value = http()
        .get(format!("http://{addr}/api/v1/spaces/town/moderation"))
        .bearer_auth(&host)
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    let entries = log["entries"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "mute" && e["target"] == "lee" && e["reason"] == "noise"),
        "{log}"
    );
    assert!(entries.iter().any(|e| e["action"] == "remove" && e["reason"] == "spam"), "{log}");

    // The room view no longer has lee on stage; the moderation actions were broadcast.
    let room: Value = http()
        .get(format!("http://{addr}/api/v1/spaces/town/room"))
        .send()
        .await
        .expect("room")
        .json()
        .await
        .expect("json");
    assert!(!room["room"]["speakers"].to_string().contains("\"lee\""), "lee is off stage: {room}");
    let watched = watcher.await.expect("watcher");
    assert!(
        watched.events.iter().any(|e| e["type"] == "removed" && e["who"] == "lee"),
        "listeners are told: {:?}",
        watched.events
    );
    server.shutdown().await;
}

#[tokio::test]
async fn room_errors_are_json_with_statuses() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "errs").await;
    let ann = token("ann", Role::Listener, "errs");
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/errs/actions"))
        .json(&json!({ "action": "request_to_speak" }))
        .send()
        .await
        .expect("post");
    assert_error(res, 401, "unauthorized").await;
    assert_error(act(addr, "errs", &ann, json!({ "action": "fly" })).await, 422, "invalid").await;
    assert_error(act(addr, "errs", &ann, json!({ "action": "mute" })).await, 422, "invalid").await;
    let res = act(addr, "errs", &ann, json!({ "action": "mute", "target": "host" })).await;
    assert_eq!(res.status(), 403);
    let res = act(addr, "errs", &host(), json!({ "action": "mute", "target": "nobody" })).await;
    assert_eq!(res.status(), 404);
    let res = act(addr, "errs", &ann, json!({ "action": "cancel_request" })).await;
    assert_eq!(res.status(), 409);
    let res = act(addr, "errs", &ann, json!({ "action": "react", "reaction": "🦄" })).await;
    assert_error(res, 422, "invalid").await;
    let res = act(addr, "nowhere", &host(), json!({ "action": "end" })).await;
    assert_eq!(res.status(), 404, "no such space");
    // The host ends the space through the room.
    ok(act(addr, "errs", &host(), json!({ "action": "end" })).await).await;
    let space: Value = http()
        .get(format!("http://{addr}/api/v1/spaces/errs"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(space["state"], "ended");
    server.shutdown().await;
}

async fn on_stage(addr: SocketAddr, space: &str) -> Vec<String> {
    let room: Value = http()
        .get(format!("http://{addr}/api/v1/spaces/{space}/room"))
        .send()
        .await
        .expect("room")
        .json()
        .await
        .expect("json");
    room["room"]["speakers"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["identity"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_speaker_who_disconnects_leaves_the_stage_and_comes_back_to_it() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "door").await;
    let first = spawn_speaker(addr, "door", "sam", 440.0, Duration::from_millis(800));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(on_stage(addr, "door").await.contains(&"sam".to_owned()), "sam on stage");
    first.await.expect("speaker");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!on_stage(addr, "door").await.contains(&"sam".to_owned()), "the seat is freed");
    let again = spawn_speaker(addr, "door", "sam", 440.0, Duration::from_millis(800));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(on_stage(addr, "door").await.contains(&"sam".to_owned()), "sam is back on stage");
    again.await.expect("speaker");
    server.shutdown().await;
}

#[tokio::test]
async fn reactions_are_tallied_per_second_and_rate_limited() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "claps").await;
    let listener = tokio::spawn(hear(addr, "claps", 4));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ann = token("ann", Role::Listener, "claps");
    let bob = token("bob", Role::Listener, "claps");
    // 16 at once per identity: more than the limit (5 a second) could let through in the
    // three seconds the burst could touch.
    let mut sent = Vec::new();
    for who in [&ann, &bob] {
        for _ in 0..16 {
            sent.push(act(addr, "claps", who, json!({ "action": "react", "reaction": "👏" })));
        }
    }
    let (mut accepted, mut limited) = (0u64, 0u64);
    for res in futures_util::future::join_all(sent).await {
        match res.status().as_u16() {
            200 => accepted += 1,
            429 => limited += 1,
            other => panic!("react answered {other}"),
        }
    }
    assert!(limited > 0, "each identity is rate-limited");
    let heard = listener.await.expect("listener");
    let tallied: u64 = heard
        .events
        .iter()
        .filter(|e| e["type"] == "reactions")
        .filter_map(|e| e["counts"].as_object())
        .flat_map(|c| c.values().filter_map(Value::as_u64))
        .sum();
    assert_eq!(tallied, accepted, "every accepted reaction is tallied once: {:?}", heard.events);
    let messages = heard.events.iter().filter(|e| e["type"] == "reactions").count();
    assert!(messages <= 3, "one message per second, not per reaction: {messages}");
    // HLS listeners poll a cacheable summary instead.
    let res = http()
        .get(format!("http://{addr}/api/v1/spaces/claps/summary"))
        .send()
        .await
        .expect("summary");
    assert_eq!(res.headers()["cache-control"], "public, max-age=1");
    let summary: Value = res.json().await.expect("json");
    assert_eq!(summary["reactions"]["type"], "reactions", "{summary}");
    assert!(summary["listeners"].is_u64(), "{summary}");
    server.shutdown().await;
}

#[tokio::test]
async fn listeners_see_who_is_talking_and_when_they_stop() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "town").await;
    let listener = ws(addr, "/ws/town").await;
    let hearing = tokio::spawn(listen_ws(listener, Duration::from_secs(6)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A silent speaker and a talking one, for two seconds.
    let quiet = spawn_speaker_at(addr, "town", "quinn", 440.0, 0.0, Duration::from_secs(2));
    let loud = spawn_speaker(addr, "town", "sam", 440.0, Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let summary: Value = http()
        .get(format!("http://{addr}/api/v1/spaces/town/summary"))
        .send()
        .await
        .expect("summary")
        .json()
        .await
        .expect("json");
    assert_eq!(summary["talking"], json!(["sam"]), "{summary}");
    quiet.await.expect("quiet");
    loud.await.expect("loud");
    let heard = hearing.await.expect("listener");
    let talking: Vec<&Value> =
        heard.events.iter().filter(|e| e["type"] == "speaking").map(|e| &e["speakers"]).collect();
    assert!(talking.first().is_some_and(|s| **s == json!(["sam"])), "{talking:?}");
    assert_eq!(talking.last(), Some(&&json!([])), "silence after they stop: {talking:?}");
    assert!(talking.len() <= 6, "changes, not a stream: {talking:?}");
    server.shutdown().await;
}
