//! Metadata survives a restart: spaces (scheduled, live, ended), removals and blocks, the
//! moderation log and reports come back when a server starts again on the same data directory.
//! Reports are filed and listed with clear errors for bad input; a live space left without its
//! host ends itself; a live space brought back numbers its frames on from its program clock.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use townhall_core::Role;
use townhall_server::Config;

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("townhall-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn persistent(dir: &std::path::Path) -> Config {
    Config { database: true, data_dir: dir.to_path_buf(), ..Config::default() }
}

async fn post(addr: SocketAddr, path: &str, token: &str, body: Value) -> reqwest::Response {
    http()
        .post(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("post")
}

async fn get_json(addr: SocketAddr, path: &str, token: &str) -> Value {
    let res =
        http().get(format!("http://{addr}{path}")).bearer_auth(token).send().await.expect("get");
    let status = res.status();
    let body: Value = res.json().await.expect("json");
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn create(addr: SocketAddr, body: Value) {
    let res = post(addr, "/api/v1/spaces", &host(), body).await;
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
}

fn state_of(list: &Value, id: &str) -> Option<String> {
    list["spaces"]
        .as_array()?
        .iter()
        .find(|s| s["id"] == id)
        .and_then(|s| s["state"].as_str())
        .map(str::to_owned)
}

#[tokio::test]
async fn spaces_bans_moderation_and_reports_survive_a_restart() {
    let dir = data_dir("persist");
    let server = server_with(persistent(&dir)).await;
    let addr = server.addr();
    let tomorrow = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 86_400;
    create(addr, json!({"id": "later", "title": "Later", "scheduled_for": tomorrow})).await;
    create(addr, json!({"id": "sooner", "title": "Sooner", "scheduled_for": tomorrow - 60})).await;
    let past =
        post(addr, "/api/v1/spaces", &host(), json!({"title": "Past", "scheduled_for": 1})).await;
    assert_eq!(past.status(), 422, "a schedule in the past is refused");
    create(addr, json!({"id": "town", "title": "Town", "live": true})).await;
    create(addr, json!({"id": "over", "title": "Over", "live": true})).await;
    let res = post(addr, "/api/v1/spaces/over/end", &host(), json!({})).await;
    assert_eq!(res.status(), 200);

    // The host removes one person and blocks another; someone reports the space and a person.
    let rex = token("rex", Role::Listener, "town");
    let res = post(
        addr,
        "/api/v1/spaces/town/actions",
        &rex,
        json!({"action": "react", "reaction": "clap"}),
    )
    .await;
    assert_eq!(res.status(), 200, "rex is in the space");
    for (action, target) in [("remove", "rex"), ("block", "bea")] {
        let body = json!({"action": action, "target": target, "reason": "test"});
        let res = post(addr, "/api/v1/spaces/town/actions", &host(), body).await;
        assert_eq!(res.status(), 200, "{action}: {:?}", res.text().await);
    }
    let lee = token("lee", Role::Listener, "town");
    let report = json!({"category": "harassment", "target": "bea", "details": "shouting"});
    let res = post(addr, "/api/v1/spaces/town/reports", &lee, report).await;
    assert_eq!(res.status(), 201);
    let filed: Value = res.json().await.expect("json");
    assert_eq!(filed["reporter"], "lee");
    assert_eq!(filed["target"], "bea");
    server.shutdown().await;

    // Same data directory, new process state.
    let server = server_with(persistent(&dir)).await;
    let addr = server.addr();
    let list = get_json(addr, "/api/v1/spaces", &host()).await;
    assert_eq!(state_of(&list, "later").as_deref(), Some("scheduled"), "{list}");
    assert_eq!(state_of(&list, "town").as_deref(), Some("live"));
    assert_eq!(state_of(&list, "over").as_deref(), Some("ended"));
    let upcoming = get_json(addr, "/api/v1/spaces?state=scheduled", &host()).await;
    let ids: Vec<&str> = upcoming["spaces"]
        .as_array()
        .expect("spaces")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["sooner", "later"], "upcoming spaces, soonest first");
    let res = http()
        .get(format!("http://{addr}/api/v1/spaces?state=sideways"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 400);

    // The live space is on air again, and its removals and blocks still hold.
    let heard = listen_ws(ws(addr, "/ws/town").await, Duration::from_millis(500)).await;
    assert!(!heard.seqs.is_empty(), "the restored space streams");
    for who in ["rex", "bea"] {
        let t = token(who, Role::Listener, "town");
        let res = post(
            addr,
            "/api/v1/spaces/town/actions",
            &t,
            json!({"action": "react", "reaction": "clap"}),
        )
        .await;
        assert_error(res, 403, if who == "rex" { "removed" } else { "blocked" }).await;
    }
    let log = get_json(addr, "/api/v1/spaces/town/moderation", &host()).await;
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["block", "remove"], "{log}");
    let ended = get_json(addr, "/api/v1/admin/moderation?space=over", &host()).await;
    assert_eq!(ended["entries"][0]["action"], "end", "{ended}");
    assert_eq!(ended["entries"][0]["actor"], "host");
    let reports = get_json(addr, "/api/v1/admin/reports", &host()).await;
    assert_eq!(reports["reports"][0]["category"], "harassment", "{reports}");
    assert_eq!(reports["reports"][0]["details"], "shouting");

    // A scheduled space starts after the restart like before it.
    let res = post(addr, "/api/v1/spaces/later/start", &host(), json!({})).await;
    assert_eq!(res.status(), 200);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn reports_need_a_token_a_known_category_and_are_rate_limited() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "town").await;
    let url = format!("http://{addr}/api/v1/spaces/town/reports");
    let res = http().post(&url).json(&json!({"category": "spam"})).send().await.expect("post");
    assert_error(res, 401, "unauthorized").await;
    let kim = token("kim", Role::Listener, "town");
    let res = post(addr, "/api/v1/spaces/town/reports", &kim, json!({"category": "rude"})).await;
    assert_eq!(res.status(), 422);
    let long = "x".repeat(2_001);
    let body = json!({"category": "other", "details": long});
    let res = post(addr, "/api/v1/spaces/town/reports", &kim, body).await;
    assert_eq!(res.status(), 422);
    let other = token("kim", Role::Listener, "elsewhere");
    let res = post(addr, "/api/v1/spaces/town/reports", &other, json!({"category": "spam"})).await;
    assert_eq!(res.status(), 403);
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let res =
            post(addr, "/api/v1/spaces/town/reports", &kim, json!({"category": "spam"})).await;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [201, 201, 201, 201, 201, 429, 429]);
    // Listeners cannot read the lists.
    let res = http()
        .get(format!("http://{addr}/api/v1/admin/reports"))
        .bearer_auth(&kim)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 403);
    let res = http()
        .get(format!("http://{addr}/api/v1/admin/moderation?limit=0"))
        .bearer_auth(host())
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 422);
    server.shutdown().await;
}

#[tokio::test]
async fn a_live_space_without_its_host_ends_itself_and_the_demo_does_not() {
    let config = Config { host_absent_end_secs: 2, ..Config::default() };
    let server = demo_server(config).await;
    let addr = server.addr();
    live_space(addr, "town").await;
    let mut state = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let list = get_json(addr, "/api/v1/spaces", &host()).await;
        state = state_of(&list, "town");
        if state.as_deref() == Some("ended") {
            assert_eq!(state_of(&list, "demo").as_deref(), Some("live"), "{list}");
            break;
        }
    }
    assert_eq!(state.as_deref(), Some("ended"), "no host for 2 s: the space ends");
    let log = get_json(addr, "/api/v1/spaces/town/moderation", &host()).await;
    assert_eq!(log["entries"][0]["action"], "end", "{log}");
    assert_eq!(log["entries"][0]["actor"], "townhall");
    server.shutdown().await;
}

#[tokio::test]
async fn the_demo_starts_afresh_on_a_stored_data_directory() {
    let dir = data_dir("demo");
    for _ in 0..2 {
        let server = demo_server(persistent(&dir)).await;
        let heard =
            listen_ws(ws(server.addr(), "/ws/demo").await, Duration::from_millis(500)).await;
        assert!(!heard.seqs.is_empty());
        server.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn hands_going_up_and_down_are_rate_limited_per_identity() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "town").await;
    let path = "/api/v1/spaces/town/actions";
    let (ann, bob) = (token("ann", Role::Listener, "town"), token("bob", Role::Listener, "town"));
    let mut statuses = Vec::new();
    for i in 0..6 {
        let action = if i % 2 == 0 { "request_to_speak" } else { "cancel_request" };
        statuses.push(post(addr, path, &ann, json!({"action": action})).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429], "a burst of 4, then one per 2 s");
    let res = post(addr, path, &bob, json!({"action": "request_to_speak"})).await;
    assert_eq!(res.status(), 200, "others are not affected");
    server.shutdown().await;
}

#[tokio::test]
async fn a_live_space_brought_back_after_a_restart_numbers_its_frames_on_from_its_clock() {
    let dir = data_dir("clock");
    let server = server_with(persistent(&dir)).await;
    let addr = server.addr();
    create(addr, json!({"id": "onward", "title": "Onward", "live": true})).await;
    // On air for a while (the clock is kept within a second of going live).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = listen_ws(ws(addr, "/ws/onward").await, Duration::from_millis(500)).await;
    let last = *before.seqs.last().expect("the space streams before the restart");
    assert!(last >= 50, "on air for over a second: frame {last}");
    server.shutdown().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Same data directory: the numbers go on forward (over the time off air), not from 0, so a
    // cache in front never takes new audio for objects it holds under the same names.
    let server = server_with(persistent(&dir)).await;
    let after = listen_ws(ws(server.addr(), "/ws/onward").await, Duration::from_millis(500)).await;
    let first = *after.seqs.first().expect("the space streams after the restart");
    assert!(first > last, "after the restart frame {first}, before it {last}");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
