//! Audience statistics end to end: real listeners over WebSocket, Ogg/HTTP, WHEP and LL-HLS on
//! a loopback server, reactions and a raised hand through the API; the numbers the host reads,
//! who may read them, the operators' totals, and what survives a restart.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use townhall_client::rtc_client::{self, Mode};
use townhall_client::target::Target;
use townhall_core::Role;
use townhall_server::Config;

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> reqwest::Response {
    let req = http().get(format!("http://{addr}{path}"));
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    req.send().await.expect("get")
}

async fn stats(addr: SocketAddr, space: &str, token: &str) -> Value {
    let res = get(addr, &format!("/api/v1/spaces/{space}/stats"), Some(token)).await;
    let status = res.status();
    let body: Value = res.json().await.expect("json");
    assert_eq!(status, 200, "{body}");
    body
}

/// Reads the space's statistics until `done` holds (at most 15 s; what is asserted is the
/// numbers, not how soon they came).
async fn stats_when(
    addr: SocketAddr,
    space: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let body = stats(addr, space, token).await;
        if done(&body) || tokio::time::Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn act(addr: SocketAddr, space: &str, token: &str, body: Value) {
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/{space}/actions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("action");
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
}

async fn create(addr: SocketAddr, host_token: &str, id: &str) {
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces"))
        .bearer_auth(host_token)
        .json(&json!({ "id": id, "title": format!("Stats {id}"), "live": true }))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
}

/// Opens an Ogg/HTTP stream and reads its first bytes (the listener is counted once the stream
/// answers); the response is kept open while it lives.
async fn ogg(addr: SocketAddr, path: &str) -> reqwest::Response {
    let mut res = http().get(format!("http://{addr}{path}")).send().await.expect("ogg");
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.expect("body").expect("some bytes");
    assert!(first.starts_with(b"OggS"), "an Ogg stream");
    res
}

#[tokio::test]
async fn hosts_see_listeners_by_protocol_unique_reactions_and_hands() {
    let server = server().await;
    let addr = server.addr();
    let hana = token("hana", Role::Host, "aud");
    create(addr, &hana, "aud").await;
    let ticket = |who: &str| token(who, Role::Listener, "aud");

    // ann twice and bob over WebSocket, cy over Ogg (signed in: one key each); one anonymous
    // WebSocket listener, one anonymous WHEP listener and an HLS player, all from 127.0.0.1:
    // one anonymous key between them.
    let mut sockets = Vec::new();
    for who in ["ann", "bob", "ann"] {
        sockets.push(ws(addr, &format!("/ws/aud?token={}", ticket(who))).await);
    }
    sockets.push(ws(addr, "/ws/aud").await);
    let cy = ogg(addr, &format!("/live/aud.opus?token={}", ticket("cy"))).await;
    let whep = rtc_client::connect(
        &Target::new(addr).expect("target"),
        "127.0.0.1".parse().expect("ip"),
        "/whep/aud",
        None,
        Mode::Subscribe,
        None,
    )
    .await
    .expect("WHEP subscribe");
    let hls = get(addr, "/hls/aud/index.m3u8", None).await;
    assert_eq!(hls.status(), 200, "{:?}", hls.text().await);

    // Reactions (tallied each second) and a raised hand.
    act(addr, "aud", &ticket("ann"), json!({"action": "react", "reaction": "👏"})).await;
    act(addr, "aud", &ticket("bob"), json!({"action": "react", "reaction": "👏"})).await;
    act(addr, "aud", &ticket("bob"), json!({"action": "react", "reaction": "❤️"})).await;
    act(addr, "aud", &ticket("bob"), json!({"action": "request_to_speak"})).await;

    let body = stats_when(addr, "aud", &hana, |b| {
        b["reactions"]["total"] == 3 && b["listeners"]["now"] == 6
    })
    .await;
    assert_eq!(body["space"], "aud", "{body}");
    assert_eq!(body["live"], true);
    assert_eq!(body["listeners"]["now"], 6, "{body}");
    assert_eq!(body["listeners"]["peak"], 6);
    assert_eq!(body["listeners"]["unique"], 4, "ann, bob, cy and 127.0.0.1: {body}");
    assert_eq!(body["joins"], json!({"ws": 4, "ogg": 1, "webrtc": 1, "hls": 1}), "{body}");
    assert_eq!(body["requests_to_speak"], 1);
    assert_eq!(body["reactions"]["total"], 3);
    assert_eq!(body["reactions"]["by_kind"]["👏"], 2);
    assert_eq!(body["reactions"]["by_kind"]["❤️"], 1);
    let series = body["series"].as_array().expect("series");
    assert!(!series.is_empty());
    let sum = |field: &str| series.iter().map(|p| p[field].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(sum("reactions"), 3, "{body}");
    assert_eq!(sum("joins"), 7);
    assert_eq!(sum("requests_to_speak"), 1);
    assert_eq!(body["retention"][0], json!({"after_secs": 0, "share": 1.0}), "{body}");

    // Three leave: the count follows; the peak stays.
    drop(cy);
    let _ = tokio::time::timeout(Duration::from_secs(5), whep.stop()).await;
    drop(sockets.pop());
    let body = stats_when(addr, "aud", &hana, |b| b["listeners"]["now"] == 3).await;
    assert_eq!(body["listeners"]["now"], 3, "{body}");
    assert_eq!(body["listeners"]["peak"], 6);
    assert_eq!(body["sessions"], 6, "connected sessions only: {body}");

    // Who may read them: the host (as the room says), operators; not listeners or strangers.
    let res = get(addr, "/api/v1/spaces/aud/stats", Some(&ticket("bob"))).await;
    assert_error(res, 403, "forbidden").await;
    let res = get(addr, "/api/v1/spaces/aud/stats", None).await;
    assert_error(res, 401, "unauthorized").await;
    let body = stats(addr, "aud", &host()).await;
    assert_eq!(body["listeners"]["peak"], 6);
    let res = get(addr, "/api/v1/spaces/nowhere/stats", Some(&host())).await;
    assert_error(res, 404, "not_found").await;
    let res = get(addr, "/api/v1/spaces/no%20such/stats", Some(&host())).await;
    assert_error(res, 400, "invalid_space_id").await;
    // Authority is the room's now: bob, made a co-host, reads them with his listener token;
    // demoted, he does not.
    act(addr, "aud", &hana, json!({"action": "promote_cohost", "target": "bob"})).await;
    let res = get(addr, "/api/v1/spaces/aud/stats", Some(&ticket("bob"))).await;
    assert_eq!(res.status(), 200, "a co-host reads them: {:?}", res.text().await);
    act(addr, "aud", &hana, json!({"action": "demote_cohost", "target": "bob"})).await;
    let res = get(addr, "/api/v1/spaces/aud/stats", Some(&ticket("bob"))).await;
    assert_error(res, 403, "forbidden").await;

    // Operators: the same across spaces; unique listeners of two spaces counted once.
    create(addr, &host(), "two").await;
    let dee = ws(addr, &format!("/ws/two?token={}", token("dee", Role::Listener, "two"))).await;
    let ann2 = ws(addr, &format!("/ws/two?token={}", token("ann", Role::Listener, "two"))).await;
    let res = get(addr, "/api/v1/admin/stats", Some(&hana)).await;
    assert_error(res, 403, "forbidden").await;
    let res = get(addr, "/api/v1/admin/stats?limit=0", Some(&host())).await;
    assert_error(res, 422, "invalid").await;
    let res = get(addr, "/api/v1/admin/stats?limit=x", Some(&host())).await;
    assert_eq!(res.status(), 400);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let all = loop {
        let res = get(addr, "/api/v1/admin/stats", Some(&host())).await;
        assert_eq!(res.status(), 200);
        let all: Value = res.json().await.expect("json");
        if all["totals"]["listeners_now"] == 5 || tokio::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(all["totals"]["spaces"], 2, "{all}");
    assert_eq!(all["totals"]["unique_listeners"], 5, "ann counted once: {all}");
    assert_eq!(all["totals"]["largest_peak"], 6);
    assert_eq!(all["totals"]["joins"]["ws"], 6);
    assert_eq!(all["totals"]["reactions"], 3);
    assert_eq!(all["spaces"].as_array().map(Vec::len), Some(2));
    drop((dee, ann2));

    // Ended: the numbers stay, nobody listens any more.
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/aud/end"))
        .bearer_auth(host())
        .send()
        .await
        .expect("end");
    assert_eq!(res.status(), 200);
    let body = stats(addr, "aud", &host()).await;
    assert_eq!(body["live"], false, "{body}");
    assert_eq!(body["listeners"]["now"], 0);
    assert_eq!(body["listeners"]["peak"], 6);
    assert_eq!(body["listeners"]["unique"], 4);
    drop(sockets);
    server.shutdown().await;
}

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("townhall-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn statistics_survive_a_restart_and_count_a_returning_listener_once() {
    let dir = data_dir("stats");
    let config = || Config { database: true, data_dir: dir.clone(), ..Config::default() };
    let server = server_with(config()).await;
    let addr = server.addr();
    let hana = token("hana", Role::Host, "kept");
    create(addr, &hana, "kept").await;
    let ticket = |who: &str| token(who, Role::Listener, "kept");
    let a = ws(addr, &format!("/ws/kept?token={}", ticket("ann"))).await;
    let b = ws(addr, &format!("/ws/kept?token={}", ticket("bob"))).await;
    act(addr, "kept", &ticket("ann"), json!({"action": "react", "reaction": "🔥"})).await;
    stats_when(addr, "kept", &hana, |b| b["reactions"]["total"] == 1).await;
    // A drain saves the statistics of live spaces.
    server.shutdown().await;
    drop((a, b));

    let server = server_with(config()).await;
    let addr = server.addr();
    let body = stats(addr, "kept", &hana).await;
    assert_eq!(body["live"], true, "{body}");
    assert_eq!(body["listeners"]["peak"], 2, "{body}");
    assert_eq!(body["listeners"]["now"], 0);
    assert_eq!(body["reactions"]["total"], 1);
    assert_eq!(body["sessions"], 2, "the sessions cut by the restart ended then");
    // ann comes back: a new join, the same unique listener (the node's salt is kept).
    let _a = ws(addr, &format!("/ws/kept?token={}", ticket("ann"))).await;
    let body = stats_when(addr, "kept", &hana, |b| b["listeners"]["now"] == 1).await;
    assert_eq!(body["joins"]["ws"], 3, "{body}");
    assert_eq!(body["listeners"]["unique"], 2);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
