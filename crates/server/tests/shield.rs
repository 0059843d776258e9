//! The shield on a real server: the waiting room is FIFO and honest, junk is refused with 429 and
//! Retry-After, per-address connection caps hold, slow headers are cut.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use townhall_server::Config;

fn url(addr: std::net::SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// POSTs `join` on a fresh connection; returns status, Retry-After and body.
async fn join(
    addr: std::net::SocketAddr,
    space: &str,
    ticket: Option<&str>,
) -> (u16, Option<String>, Value) {
    let q = ticket.map(|t| format!("?ticket={t}")).unwrap_or_default();
    let res = http()
        .post(url(addr, &format!("/api/v1/spaces/{space}/join{q}")))
        .send()
        .await
        .expect("join");
    let status = res.status().as_u16();
    let retry = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, retry, res.json().await.expect("json"))
}

#[tokio::test]
async fn the_waiting_room_is_first_in_first_out() {
    let server = server_with(Config { max_listeners: 1, ..Config::default() }).await;
    let addr = server.addr();
    live_space(addr, "full").await;
    let (status, _, first) = join(addr, "full", None).await;
    assert_eq!(status, 200, "{first}");
    let token = first["token"].as_str().expect("token").to_owned();
    let mut a = ws(addr, &format!("/ws/full?token={token}")).await;
    assert_eq!(next_json(&mut a).await["type"], "hello");

    // Full: the next two get places 1 and 2, signed, with Retry-After.
    let (status, retry, b) = join(addr, "full", None).await;
    assert_eq!(status, 202, "{b}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| (1..=60).contains(&s))));
    assert_eq!(b["waiting"]["position"], 1);
    let b_ticket = b["waiting"]["ticket"].as_str().expect("ticket").to_owned();
    let (_, _, c) = join(addr, "full", None).await;
    assert_eq!(c["waiting"]["position"], 2);
    let c_ticket = c["waiting"]["ticket"].as_str().expect("ticket").to_owned();

    // Nobody gets around the queue: not a direct connection, not the second in line.
    let (status, body) = ws_refusal(addr, "/ws/full").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("waiting_room"), "{body}");
    let (status, _, c_again) = join(addr, "full", Some(&c_ticket)).await;
    assert_eq!(status, 202);
    assert_eq!(c_again["waiting"]["position"], 2, "still behind b");

    // A leaves; b comes back first in line and is admitted, then c is still queued (b holds the room).
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, b_in) = join(addr, "full", Some(&b_ticket)).await;
    assert_eq!(status, 200, "{b_in}");
    let b_token = b_in["token"].as_str().expect("token").to_owned();
    let mut b_ws = ws(addr, &format!("/ws/full?token={b_token}")).await;
    assert_eq!(next_json(&mut b_ws).await["type"], "hello");
    let (status, _, c_wait) = join(addr, "full", Some(&c_ticket)).await;
    assert_eq!(status, 202);
    assert_eq!(c_wait["waiting"]["position"], 1, "c is next now");

    // Forged tickets are refused clearly.
    let (status, _, forged) = join(addr, "full", Some("eyJhbGciOiJIUzI1NiJ9.e30.x")).await;
    assert_eq!(status, 400);
    assert_eq!(forged["error"]["code"], "bad_ticket");
    server.shutdown().await;
}

async fn ws_refusal(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(format!("ws://{addr}{path}")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (res.status().as_u16(), body)
        }
        other => panic!("expected a refusal for {path}, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn request_floods_from_one_address_get_429_with_retry_after() {
    let config = Config { requests_per_ip: 5, request_burst_per_ip: 5, ..Config::default() };
    let server = server_with(config).await;
    let addr = server.addr();
    // Keep-alive requests (checked by the router) and fresh connections (checked at accept).
    let keep_alive = http();
    let mut statuses = Vec::new();
    for i in 0..10 {
        let client = if i % 2 == 0 { keep_alive.clone() } else { http() };
        let res = client.get(url(addr, "/api/v1/spaces")).send().await.expect("get");
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            let retry =
                res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            assert!(retry.is_some(), "429 without Retry-After");
            let body: Value = res.json().await.expect("json");
            assert_eq!(body["error"]["code"], "rate_limited");
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 5, "{statuses:?}");
    let metrics_text = {
        // Metrics from another address would also be limited; wait for the bucket to refill.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        http().get(url(addr, "/metrics")).send().await.expect("metrics").text().await.expect("text")
    };
    assert!(
        metrics_text.contains("townhall_shield_rejections_total{reason=\"address\"}"),
        "{metrics_text}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn connections_per_address_are_capped() {
    let server = server_with(Config { max_connections_per_ip: 3, ..Config::default() }).await;
    let addr = server.addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = TcpStream::connect(addr).await.expect("connect");
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), fourth.read_to_string(&mut reply))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
    assert!(reply.contains("too_many_connections"), "{reply}");
    assert!(reply.contains("Retry-After:"), "{reply}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = http().get(url(addr, "/healthz")).send().await.expect("get");
    assert_eq!(ok.status(), 200, "slots are released when connections close");
    server.shutdown().await;
}

#[tokio::test]
async fn slow_headers_are_cut_and_the_server_stays_responsive() {
    let server = server_with(Config { header_timeout_secs: 1, ..Config::default() }).await;
    let addr = server.addr();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /api/v1/spaces HTTP/1.1\r\nHost: x\r\n").await.expect("partial head");
        slow.push(s);
    }
    // A normal request is served meanwhile.
    let res = http().get(url(addr, "/healthz")).send().await.expect("healthz");
    assert_eq!(res.status(), 200);
    // The trickling ones are closed by the header timeout.
    for mut s in slow {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "connection left open");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn operators_see_the_verdict_change_capacity_and_switch_attack_mode() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "ops").await;
    let c = http();
    let admin = url(addr, "/api/v1/admin/shield");
    assert_eq!(c.get(&admin).send().await.expect("get").status(), 401);
    let scoped = token("carol", townhall_core::Role::Host, "ops");
    assert_eq!(c.get(&admin).bearer_auth(&scoped).send().await.expect("get").status(), 403);
    let status: Value =
        c.get(&admin).bearer_auth(host()).send().await.expect("get").json().await.expect("json");
    assert_eq!(status["verdict"], "normal");
    assert!(status["evidence"]["requests_per_s"].as_f64().is_some(), "{status}");

    let update =
        serde_json::json!({ "max_listeners": 7, "joins_per_second": 3, "require_token": true });
    let res = c.put(&admin).bearer_auth(host()).json(&update).send().await.expect("put");
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.expect("json");
    assert_eq!(
        (status["max_listeners"].as_u64(), status["require_token"].as_bool()),
        (Some(7), Some(true))
    );

    // Attack mode: anonymous joins and direct listeners are refused; signed-in ones are not.
    let (status_code, _, body) = join(addr, "ops", None).await;
    assert_eq!(status_code, 401, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("attack mode")));
    assert_eq!(ws_refusal(addr, "/ws/ops").await.0, 401);
    let member = token("dana", townhall_core::Role::Listener, "ops");
    let res = c
        .post(url(addr, "/api/v1/spaces/ops/join"))
        .bearer_auth(&member)
        .send()
        .await
        .expect("join");
    assert_eq!(res.status(), 200);

    let bad = c
        .put(&admin)
        .bearer_auth(host())
        .json(&serde_json::json!({ "bogus": 1 }))
        .send()
        .await
        .expect("put");
    assert_eq!(bad.status(), 422);
    server.shutdown().await;
}

#[tokio::test]
async fn an_overloaded_node_queues_new_joiners_and_recovers() {
    // Adaptive admission on (a non-default threshold, so the test helper keeps it).
    let server = server_with(Config { overload_lag_ms: 30, ..Config::default() }).await;
    let addr = server.addr();
    live_space(addr, "busy").await;
    let (status, _, _) = join(addr, "busy", None).await;
    assert_eq!(status, 200, "calm node admits");
    // Stall the event loop (this test's runtime runs the server): its timers fire late.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(150));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _, body) = join(addr, "busy", None).await;
    assert_eq!(status, 202, "an overloaded node queues: {body}");
    let admin: Value = http()
        .get(url(addr, "/api/v1/admin/shield"))
        .bearer_auth(host())
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(admin["overloaded"], true, "{admin}");
    // Calm again: after the recovery time the queue is called and new joiners get in.
    let ticket = body["waiting"]["ticket"].as_str().expect("ticket").to_owned();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, _, _) = join(addr, "busy", Some(&ticket)).await;
    assert_eq!(status, 200, "recovered");
    server.shutdown().await;
}

#[tokio::test]
async fn joins_are_limited_per_address_and_per_identity_and_limits_tighten_at_run_time() {
    let config = Config { join_burst_per_ip: 4, join_burst_per_identity: 2, ..Config::default() };
    let server = server_with(config).await;
    let addr = server.addr();
    live_space(addr, "limits").await;
    let anonymous: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(join(addr, "limits", None).await.0);
        }
        v
    };
    assert_eq!(anonymous, vec![200, 200, 200, 200, 429, 429], "per-address join burst");

    // Another address, one identity's token used over and over: the identity's limit.
    let other = http_from("127.0.0.9");
    let member = token("erin", townhall_core::Role::Listener, "limits");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let res = other
            .post(url(addr, "/api/v1/spaces/limits/join"))
            .bearer_auth(&member)
            .send()
            .await
            .expect("join");
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 429]);

    // Operators tighten the per-address request limit: a fresh address gets one request now.
    let tighten = serde_json::json!({ "requests_per_ip": 1, "request_burst_per_ip": 1 });
    let res = http_from("127.0.0.10")
        .put(url(addr, "/api/v1/admin/shield"))
        .bearer_auth(host())
        .json(&tighten)
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.expect("json");
    assert_eq!(status["requests_per_ip"], 1);
    let fresh = http_from("127.0.0.11");
    assert_eq!(fresh.get(url(addr, "/healthz")).send().await.expect("get").status(), 200);
    assert_eq!(fresh.get(url(addr, "/healthz")).send().await.expect("get").status(), 429);
    server.shutdown().await;
}

/// An HTTP client whose connections come from this loopback address.
fn http_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().expect("ip"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn anonymous_joiners_show_a_proof_of_work_when_operators_ask() {
    let server = server_with(Config { pow_difficulty: 12, ..Config::default() }).await;
    let addr = server.addr();
    live_space(addr, "pow").await;
    let c = http();
    let on = serde_json::json!({ "require_pow": true });
    let status: Value = c
        .put(url(addr, "/api/v1/admin/shield"))
        .bearer_auth(host())
        .json(&on)
        .send()
        .await
        .expect("put")
        .json()
        .await
        .expect("json");
    assert_eq!(status["require_pow"], true);

    let (code, _, body) = join(addr, "pow", None).await;
    assert_eq!((code, body["error"]["code"].as_str()), (401, Some("pow_required")), "{body}");
    let res = c.post(url(addr, "/api/v1/pow")).send().await.expect("pow");
    assert_eq!(res.status(), 400, "a challenge is for one space: ?space= is required");
    let challenge: Value = c
        .post(url(addr, "/api/v1/pow?space=pow"))
        .send()
        .await
        .expect("pow")
        .json()
        .await
        .expect("json");
    let text = challenge["challenge"].as_str().expect("challenge").to_owned();
    assert_eq!(challenge["difficulty"], 12);
    let counter = townhall_core::solve_pow(&text, 12);
    // Bound to its space: it admits nowhere else.
    live_space(addr, "elsewhere").await;
    let res = c
        .post(url(addr, &format!("/api/v1/spaces/elsewhere/join?pow={text}:{counter}")))
        .send()
        .await
        .expect("join");
    assert_eq!(res.status(), 401, "a challenge for another space");
    let res = c
        .post(url(addr, &format!("/api/v1/spaces/pow/join?pow={text}:{counter}")))
        .send()
        .await
        .expect("join");
    assert_eq!(res.status(), 200, "a solved challenge admits");
    // Once: a replayed solution admits nobody else.
    for _ in 0..3 {
        let res = c
            .post(url(addr, &format!("/api/v1/spaces/pow/join?pow={text}:{counter}")))
            .send()
            .await
            .expect("join");
        assert_eq!(res.status(), 401, "a replayed proof of work");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"]["code"], "bad_pow");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("already used")));
    }
    let wrong = (0..)
        .find(|n| townhall_core::pow::leading_zero_bits(&text, *n) < 12)
        .expect("a wrong counter");
    let res = c
        .post(url(addr, &format!("/api/v1/spaces/pow/join?pow={text}:{wrong}")))
        .send()
        .await
        .expect("join");
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "bad_pow");
    // Token holders are not asked.
    let member = token("fay", townhall_core::Role::Listener, "pow");
    let res = c
        .post(url(addr, "/api/v1/spaces/pow/join"))
        .bearer_auth(&member)
        .send()
        .await
        .expect("join");
    assert_eq!(res.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn signed_in_joiners_wait_in_a_line_called_before_anonymous_ones() {
    let server = server_with(Config { max_listeners: 1, ..Config::default() }).await;
    let addr = server.addr();
    live_space(addr, "lanes").await;
    let (status, _, first) = join(addr, "lanes", None).await;
    assert_eq!(status, 200);
    let mut a =
        ws(addr, &format!("/ws/lanes?token={}", first["token"].as_str().expect("token"))).await;
    assert_eq!(next_json(&mut a).await["type"], "hello");

    let (_, _, anon) = join(addr, "lanes", None).await;
    assert_eq!(anon["waiting"]["position"], 1);
    let anon_ticket = anon["waiting"]["ticket"].as_str().expect("ticket").to_owned();
    let member = token("gus", townhall_core::Role::Listener, "lanes");
    let signed = http()
        .post(url(addr, "/api/v1/spaces/lanes/join"))
        .bearer_auth(&member)
        .send()
        .await
        .expect("join");
    assert_eq!(signed.status(), 202);
    let signed: Value = signed.json().await.expect("json");
    assert_eq!(signed["waiting"]["position"], 1, "first in the signed-in line");
    let signed_ticket = signed["waiting"]["ticket"].as_str().expect("ticket").to_owned();
    let (_, _, anon_again) = join(addr, "lanes", Some(&anon_ticket)).await;
    assert_eq!(anon_again["waiting"]["position"], 2, "honest: the signed-in joiner goes first");

    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = http()
        .post(url(addr, &format!("/api/v1/spaces/lanes/join?ticket={signed_ticket}")))
        .bearer_auth(&member)
        .send()
        .await
        .expect("join");
    assert_eq!(res.status(), 200, "the signed-in joiner is called first");
    let body: Value = res.json().await.expect("json");
    let mut g =
        ws(addr, &format!("/ws/lanes?token={}", body["token"].as_str().expect("token"))).await;
    assert_eq!(next_json(&mut g).await["type"], "hello");
    let (status, _, _) = join(addr, "lanes", Some(&anon_ticket)).await;
    assert_eq!(status, 202, "the anonymous joiner still waits");
    server.shutdown().await;
}
