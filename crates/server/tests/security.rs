//! The door opens only for the right people: no public default secret, authority from the room,
//! single-use proofs and tickets, tickets that never outlive their token, private spaces kept
//! private, removed people refused on every path. A real server on loopback, real HTTP.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use townhall_core::{Claims, Identity, Role, SpaceScope, TokenKeys, UnixTime};
use townhall_server::Config;

const BIN: &str = env!("CARGO_BIN_EXE_townhall");

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("townhall-sec-{name}-{}", rand_suffix()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn rand_suffix() -> String {
    format!(
        "{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

async fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = http().post(url(addr, path)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("post");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = http().get(url(addr, path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("get");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn act(addr: SocketAddr, space: &str, token: &str, body: Value) -> (u16, Value) {
    post(addr, &format!("/api/v1/spaces/{space}/actions"), Some(token), body).await
}

/// A token with `role` for `space` that expires in `ttl` seconds.
fn token_ttl(who: &str, role: Role, space: &str, ttl: u64) -> String {
    let scope = SpaceScope::try_from(space.to_owned()).expect("scope");
    let now = townhall_server::clock::now_unix();
    keys().mint(Identity::new(who).expect("id"), role, scope, now, ttl).expect("mint")
}

// ----- 1. no public default secret -----

#[test]
fn a_node_beyond_loopback_without_a_secret_refuses_to_start() {
    let dir = temp_dir("public");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--no-demo", "--in-memory", "--data-dir"])
        .arg(&dir)
        .env_remove("TOWNHALL_API_KEY")
        .env_remove("TOWNHALL_API_SECRET")
        .env_remove("TOWNHALL_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!out.status.success(), "it must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TOWNHALL_API_SECRET") && stderr.contains("loopback"), "{stderr}");
    assert!(!dir.exists(), "nothing written for a node that does not start");
}

#[test]
fn key_and_secret_are_resolved_each_on_its_own() {
    // A key in the config file and the secret in the environment: both are used (no silent
    // fallback to any built-in pair).
    let dir = temp_dir("halves");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("townhall.toml");
    std::fs::write(&file, "api_key = \"from-the-file\"\n").expect("config");
    let secret = "the secret from the environment";
    let out = Command::new(BIN)
        .args(["token", "--space", "*", "--identity", "ops", "--role", "host", "--operator"])
        .arg("--config")
        .arg(&file)
        .env_remove("TOWNHALL_API_KEY")
        .env("TOWNHALL_API_SECRET", secret)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let claims = TokenKeys::new("from-the-file", secret.as_bytes())
        .verify(&token, townhall_server::clock::now_unix())
        .expect("signed with the file's key and the environment's secret");
    assert!(claims.is_operator());
    // Only a secret, no key anywhere: refused.
    let out = Command::new(BIN)
        .args(["token", "--space", "*", "--identity", "ops", "--role", "host"])
        .env_remove("TOWNHALL_API_KEY")
        .env("TOWNHALL_API_SECRET", secret)
        .env("TOWNHALL_DATA_DIR", &dir)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("API key"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_loopback_node_generates_its_own_pair_and_the_old_development_pair_is_dead() {
    let dir = temp_dir("generated");
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        demo: false,
        data_dir: dir.clone(),
        ..Config::default()
    };
    let server = townhall_server::start(config.clone()).await.expect("starts on loopback");
    let addr = server.addr();
    let file = dir.join(townhall_server::credentials::FILE);
    assert!(file.exists(), "the pair is kept in the data directory");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "owner-only");
    // The pair every copy of Townhall used to share mints nothing here.
    let old = TokenKeys::new("devkey", b"townhall-development-secret-change-me");
    let forged = old
        .mint(
            Identity::new("host").expect("id"),
            Role::Host,
            SpaceScope::Any,
            townhall_server::clock::now_unix(),
            60,
        )
        .expect("mint");
    let (status, body) =
        post(addr, "/api/v1/spaces", Some(&forged), json!({"title": "x", "live": true})).await;
    assert_eq!(status, 401, "{body}");
    // The printed operator token works.
    let (status, _) = get(addr, "/api/v1/admin/shield", Some(server.host_token())).await;
    assert_eq!(status, 200);
    let first = server.host_token().to_owned();
    server.shutdown().await;
    // Restarted on the same data directory: the same pair, so earlier tokens still verify.
    let server = townhall_server::start(config).await.expect("restarts");
    let (status, _) = get(server.addr(), "/api/v1/admin/shield", Some(&first)).await;
    assert_eq!(status, 200, "the install keeps its pair");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- 2. authority from the room -----

#[tokio::test]
async fn management_follows_the_room_not_the_token() {
    let server = server().await;
    let addr = server.addr();
    // Hana hosts (her token is for this space only: no operator powers).
    let hana = token("hana", Role::Host, "town");
    let (status, body) = post(
        addr,
        "/api/v1/spaces",
        Some(&hana),
        json!({"id": "town", "title": "Town", "live": true}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) =
        act(addr, "town", &hana, json!({"action": "react", "reaction": "clap"})).await;
    assert_eq!(status, 200);
    // Cole has a co-host token and joins as co-host; he may record.
    let cole = token("cole", Role::Cohost, "town");
    let (status, body) =
        act(addr, "town", &cole, json!({"action": "react", "reaction": "clap"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        post(addr, "/api/v1/spaces/town/recording", Some(&cole), json!({"recording": false})).await;
    assert_ne!(status, 403, "a co-host may manage recording: {body}");
    // A co-host may not end the space: the room's host does.
    let (status, body) = post(addr, "/api/v1/spaces/town/end", Some(&cole), json!({})).await;
    assert_eq!(status, 403, "{body}");
    // The host demotes him: his token still says co-host, the room says speaker.
    let (status, body) =
        act(addr, "town", &hana, json!({"action": "demote_cohost", "target": "cole"})).await;
    assert_eq!(status, 200, "{body}");
    for (path, body) in [
        ("/api/v1/spaces/town/recording", json!({"recording": true})),
        ("/api/v1/spaces/town/end", json!({})),
    ] {
        let (status, answer) = post(addr, path, Some(&cole), body).await;
        assert_eq!(status, 403, "{path}: {answer}");
    }
    let (status, _) = get(addr, "/api/v1/spaces/town/moderation", Some(&cole)).await;
    assert_eq!(status, 403, "a demoted co-host reads no moderation log");
    // Removed: refused everywhere.
    let (status, _) = act(addr, "town", &hana, json!({"action": "remove", "target": "cole"})).await;
    assert_eq!(status, 200);
    let (status, _) = post(addr, "/api/v1/spaces/town/end", Some(&cole), json!({})).await;
    assert_eq!(status, 403);
    // A `*` host token without the operator claim is not an operator.
    let wide = token("wanda", Role::Host, "*");
    let (status, _) = get(addr, "/api/v1/admin/shield", Some(&wide)).await;
    assert_eq!(status, 403, "admin needs an operator token");
    let (status, _) = get(addr, "/api/v1/admin/reports", Some(&wide)).await;
    assert_eq!(status, 403);
    let (status, _) = post(addr, "/api/v1/spaces/town/end", Some(&wide), json!({})).await;
    assert_eq!(status, 403, "a stranger's host token joins as co-host at most: no end");
    // The host ends it.
    let (status, body) = post(addr, "/api/v1/spaces/town/end", Some(&hana), json!({})).await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await;
}

// ----- 4. reuse does not beat the shield -----

#[tokio::test]
async fn join_tickets_listen_only_and_never_outlive_their_token() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "tix").await;
    let short = token_ttl("cora", Role::Cohost, "tix", 120);
    let (status, body) = post(addr, "/api/v1/spaces/tix/join", Some(&short), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let ticket = body["token"].as_str().expect("ticket");
    let claims = keys().verify(ticket, townhall_server::clock::now_unix()).expect("valid");
    assert_eq!(claims.role, Role::Listener, "a join ticket only listens");
    assert_eq!(body["role"], "listener");
    assert!(claims.ticket && !claims.anon);
    let original = keys().verify(&short, townhall_server::clock::now_unix()).expect("valid");
    assert!(claims.exp <= original.exp, "a 120 s token does not become an hour's");
    assert_eq!(claims.space, SpaceScope::try_from("tix".to_owned()).expect("scope"));
    // Re-joining with the ticket does not extend it either, nor raise its role.
    let (status, again) = post(addr, "/api/v1/spaces/tix/join", Some(ticket), json!({})).await;
    assert_eq!(status, 200, "{again}");
    let renewed = keys()
        .verify(again["token"].as_str().expect("ticket"), townhall_server::clock::now_unix())
        .expect("valid");
    assert!(renewed.exp <= original.exp && renewed.role == Role::Listener);
    // A ticket manages nothing.
    let (status, _) = post(addr, "/api/v1/spaces/tix/end", Some(ticket), json!({})).await;
    assert_eq!(status, 403);
    server.shutdown().await;
}

#[tokio::test]
async fn an_anonymous_ticket_stays_anonymous_and_a_called_ticket_admits_once() {
    let server = server_with(Config { max_listeners: 1, ..Config::default() }).await;
    let addr = server.addr();
    live_space(addr, "line").await;
    let (status, first) = post(addr, "/api/v1/spaces/line/join", None, json!({})).await;
    assert_eq!(status, 200, "{first}");
    let anon_ticket = first["token"].as_str().expect("ticket").to_owned();
    let claims = keys().verify(&anon_ticket, townhall_server::clock::now_unix()).expect("valid");
    assert!(claims.anon, "minted for an anonymous joiner");
    let mut holder = ws(addr, &format!("/ws/line?token={anon_ticket}")).await;
    assert_eq!(next_json(&mut holder).await["type"], "hello");
    // Presenting the anonymous ticket does not make its holder signed in: the anonymous line.
    let (status, waiting) =
        post(addr, "/api/v1/spaces/line/join", Some(&anon_ticket), json!({})).await;
    assert_eq!(status, 202, "{waiting}");
    let place = waiting["waiting"]["ticket"].as_str().expect("place").to_owned();
    let t = keys()
        .verify_wait(
            &place,
            &townhall_core::SpaceId::new("line").expect("id"),
            townhall_server::clock::now_unix(),
        )
        .expect("wait ticket");
    assert_eq!(t.lane, 1, "the anonymous line");
    // Someone else takes a place too; then room frees up and the first place is called.
    let (status, _) = post(addr, "/api/v1/spaces/line/join", None, json!({})).await;
    assert_eq!(status, 202);
    drop(holder);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = format!("/api/v1/spaces/line/join?ticket={place}");
    let (status, admitted) = post(addr, &path, Some(&anon_ticket), json!({})).await;
    assert_eq!(status, 200, "the called ticket admits: {admitted}");
    // The same called ticket, copied: nobody else gets in with it.
    for _ in 0..3 {
        let (status, body) = post(addr, &path, Some(&anon_ticket), json!({})).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "bad_ticket");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn one_token_holds_a_few_listening_connections_not_a_fleet() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "fleet").await;
    let t = token("fred", Role::Listener, "fleet");
    let mut held = Vec::new();
    for _ in 0..Config::default().listens_per_identity {
        let mut w = ws(addr, &format!("/ws/fleet?token={t}")).await;
        assert_eq!(next_json(&mut w).await["type"], "hello");
        held.push(w);
    }
    let res =
        http().get(url(addr, &format!("/live/fleet.opus?token={t}"))).send().await.expect("get");
    assert_eq!(res.status(), 429, "one more with the same token is refused");
    assert!(res.headers().contains_key("retry-after"));
    let other = token("gina", Role::Listener, "fleet");
    let mut w = ws(addr, &format!("/ws/fleet?token={other}")).await;
    assert_eq!(next_json(&mut w).await["type"], "hello", "others are not affected");
    // Leaving frees a place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = ws(addr, &format!("/ws/fleet?token={t}")).await;
    assert_eq!(next_json(&mut again).await["type"], "hello");
    server.shutdown().await;
}

// ----- 5. removed people stop listening on every path -----

#[tokio::test]
async fn removed_and_blocked_people_are_refused_on_every_listening_path() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "quiet").await;
    for (who, action) in [("rita", "remove"), ("bert", "block")] {
        let t = token(who, Role::Listener, "quiet");
        let (status, _) =
            act(addr, "quiet", &t, json!({"action": "react", "reaction": "clap"})).await;
        assert_eq!(status, 200);
        let (status, body) =
            act(addr, "quiet", &host(), json!({"action": action, "target": who})).await;
        assert_eq!(status, 200, "{body}");
        // Ogg (fresh connection: served from the raw socket) and through the router.
        let res = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client")
            .get(url(addr, &format!("/live/quiet.opus?token={t}")))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 403, "{who} over Ogg");
        let res =
            http().get(url(addr, "/live/quiet.opus")).bearer_auth(&t).send().await.expect("get");
        assert_eq!(res.status(), 403, "{who} over Ogg with a bearer");
        let res = http().get(url(addr, &format!("/ws/quiet?token={t}"))).send().await.expect("ws");
        assert_eq!(res.status(), 403, "{who} over WebSocket");
        let (status, _) = post(addr, "/api/v1/spaces/quiet/join", Some(&t), json!({})).await;
        assert_eq!(status, 403, "{who} joining");
    }
    server.shutdown().await;
}

// ----- 7. ids are never reused -----

#[tokio::test]
async fn an_ended_private_spaces_id_is_never_given_to_a_new_space() {
    let server = server_with(Config {
        max_spaces: 2,
        requests_per_ip: 10_000,
        request_burst_per_ip: 10_000,
        ..Config::default()
    })
    .await;
    let addr = server.addr();
    let (status, _) = post(
        addr,
        "/api/v1/spaces",
        Some(&host()),
        json!({"id": "board", "title": "Board meeting", "live": true, "public": false}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) =
        act(addr, "board", &host(), json!({"action": "block", "target": "mallory"})).await;
    assert_eq!(status, 200);
    let (status, _) = post(addr, "/api/v1/spaces/board/end", Some(&host()), json!({})).await;
    assert_eq!(status, 200);
    // Enough other spaces come and go for the directory to forget the first.
    for n in 0..101 {
        let id = format!("filler-{n}");
        let (status, body) = post(
            addr,
            "/api/v1/spaces",
            Some(&host()),
            json!({"id": id, "title": "F", "live": true}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let (status, _) =
            post(addr, &format!("/api/v1/spaces/{id}/end"), Some(&host()), json!({})).await;
        assert_eq!(status, 200);
    }
    let (status, _) = get(addr, "/api/v1/spaces/board", Some(&host())).await;
    assert_eq!(status, 404, "the directory forgot it");
    let (status, body) = post(
        addr,
        "/api/v1/spaces",
        Some(&host()),
        json!({"id": "board", "title": "Open house", "live": true, "public": true}),
    )
    .await;
    assert_eq!(status, 409, "its id stays taken: {body}");
    let (status, body) =
        post(addr, "/api/v1/spaces", Some(&host()), json!({"title": "Board", "live": true})).await;
    assert_eq!(status, 201, "{body}");
    assert_ne!(body["id"], "board", "a derived id skips it too");
    server.shutdown().await;
}

// ----- 8. private means private; headers -----

#[tokio::test]
async fn private_spaces_are_invisible_without_a_token_and_pages_carry_security_headers() {
    let server = server().await;
    let addr = server.addr();
    let (status, _) = post(
        addr,
        "/api/v1/spaces",
        Some(&host()),
        json!({"id": "hidden", "title": "Hidden board", "live": true, "public": false}),
    )
    .await;
    assert_eq!(status, 201);
    live_space(addr, "open").await;
    let (_, list) = get(addr, "/api/v1/spaces", None).await;
    let ids: Vec<&str> =
        list["spaces"].as_array().expect("list").iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, vec!["open"], "anonymous visitors see public spaces only");
    let member = token("mo", Role::Listener, "hidden");
    let (_, list) = get(addr, "/api/v1/spaces", Some(&member)).await;
    assert!(list.to_string().contains("Hidden board"), "a token for it shows it");
    for path in
        ["/api/v1/spaces/hidden", "/api/v1/spaces/hidden/room", "/api/v1/spaces/hidden/summary"]
    {
        let (status, body) = get(addr, path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        let (status, body) = get(addr, path, Some(&member)).await;
        assert_eq!(status, 200, "{path} with a token: {body}");
    }
    // Let a listener in so the per-space gauges exist, then read /metrics.
    let mut w = ws(addr, &format!("/ws/hidden?token={member}")).await;
    assert_eq!(next_json(&mut w).await["type"], "hello");
    let metrics = http()
        .get(url(addr, "/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("space=\"open\"") || metrics.contains("space=\"private-"),
        "{metrics}"
    );
    assert!(!metrics.contains("hidden"), "a private space's id is not in /metrics");

    let res = http().get(url(addr, "/")).send().await.expect("page");
    let h = res.headers();
    let csp = h.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(h.get("referrer-policy").map(|v| v.as_bytes()), Some(&b"no-referrer"[..]));
    assert_eq!(h.get("x-content-type-options").map(|v| v.as_bytes()), Some(&b"nosniff"[..]));
    let res = http().get(url(addr, "/api/v1/spaces")).send().await.expect("api");
    assert!(res.headers().contains_key("content-security-policy"));
    server.shutdown().await;
}

#[test]
fn operator_claims_need_every_space() {
    let now = UnixTime(1);
    let c = Claims {
        op: true,
        ..Claims::new("k", Identity::new("o").expect("id"), Role::Host, SpaceScope::Any, now, 60)
    };
    assert!(c.is_operator());
}

// ----- 6. the client behind a trusted proxy -----

async fn join_from(addr: SocketAddr, forwarded_for: &str) -> u16 {
    let res = http()
        .post(url(addr, "/api/v1/spaces/edge/join"))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .expect("join");
    res.status().as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_join_budget() {
    let relaxed = Config {
        trusted_proxies: "127.0.0.1".parse().expect("proxies"),
        join_burst_per_ip: 3,
        requests_per_ip: 1_000,
        request_burst_per_ip: 1_000,
        ..Config::default()
    };
    let server = server_with(relaxed.clone()).await;
    let addr = server.addr();
    live_space(addr, "edge").await;
    // Client A spends its burst; A is refused, B (another listener behind the same edge) is not.
    for _ in 0..3 {
        assert_eq!(join_from(addr, "198.51.100.1").await, 200);
    }
    assert_eq!(join_from(addr, "198.51.100.1").await, 429, "A's own budget is spent");
    assert_eq!(join_from(addr, "198.51.100.2").await, 200, "B is someone else");
    // The rightmost untrusted hop counts: a client cannot pick its address by prepending one.
    assert_eq!(join_from(addr, "203.0.113.50, 198.51.100.1").await, 429);
    server.shutdown().await;

    // Without trusting the proxy, the header is ignored: everyone is the proxy's address.
    let server = server_with(Config { trusted_proxies: Default::default(), ..relaxed }).await;
    let addr = server.addr();
    live_space(addr, "edge").await;
    let statuses: Vec<u16> = futures_util::future::join_all(
        (0..5).map(|n| join_from(addr, if n % 2 == 0 { "198.51.100.1" } else { "198.51.100.2" })),
    )
    .await;
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2, "{statuses:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_proxy_protocol_header_names_the_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server_with(Config {
        trusted_proxies: "127.0.0.1".parse().expect("proxies"),
        proxy_protocol: true,
        join_burst_per_ip: 1,
        ..Config::default()
    })
    .await;
    let addr = server.addr();
    async fn send(addr: SocketAddr, prefix: &str, path: &str, extra: &str, body: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "{prefix}POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
        out
    }
    async fn raw(addr: SocketAddr, prefix: &str, path: &str) -> String {
        send(addr, prefix, path, "", "").await
    }
    let v1 = |ip: &str| format!("PROXY TCP4 {ip} 127.0.0.1 40000 80\r\n");
    // Even the operator comes through the proxy (here a v2 LOCAL header: the proxy itself).
    let local = "\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let auth = format!("Authorization: Bearer {}\r\nContent-Type: application/json\r\n", host());
    let created =
        send(addr, local, "/api/v1/spaces", &auth, r#"{"id":"edge","title":"Edge","live":true}"#)
            .await;
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let first = raw(addr, &v1("192.0.2.10"), "/api/v1/spaces/edge/join").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let again = raw(addr, &v1("192.0.2.10"), "/api/v1/spaces/edge/join").await;
    assert!(again.starts_with("HTTP/1.1 429"), "the same client: {again}");
    let other = raw(addr, &v1("192.0.2.11"), "/api/v1/spaces/edge/join").await;
    assert!(other.starts_with("HTTP/1.1 200"), "another client: {other}");
    // A trusted peer that does not speak the protocol is cut off.
    let bare = raw(addr, "", "/api/v1/spaces/edge/join").await;
    assert!(bare.is_empty(), "{bare}");
    server.shutdown().await;
}

// ----- 4. attack mode covers HLS -----

#[tokio::test]
async fn attack_mode_asks_direct_hls_players_for_a_token_and_serves_trusted_caches() {
    for trusted in [false, true] {
        let config = if trusted {
            Config { trusted_proxies: "127.0.0.1".parse().expect("proxies"), ..Config::default() }
        } else {
            Config::default()
        };
        let server = server_with(config).await;
        let addr = server.addr();
        live_space(addr, "wave").await;
        let on = json!({"require_token": true});
        let res = http()
            .put(url(addr, "/api/v1/admin/shield"))
            .bearer_auth(host())
            .json(&on)
            .send()
            .await
            .expect("put");
        assert_eq!(res.status(), 200);
        let anonymous = http().get(url(addr, "/hls/wave/master.m3u8")).send().await.expect("get");
        let listener = http()
            .get(url(addr, "/hls/wave/master.m3u8"))
            .bearer_auth(token("lou", Role::Listener, "wave"))
            .send()
            .await
            .expect("get");
        assert_eq!(listener.status(), 200, "a token holder plays");
        if trusted {
            assert_eq!(anonymous.status(), 200, "a trusted cache is served as always");
        } else {
            assert_eq!(anonymous.status(), 401, "a direct anonymous player is asked for a token");
        }
        server.shutdown().await;
    }
}

// ----- 8. a failed write is not forgotten -----

#[tokio::test]
async fn an_end_the_disk_refused_is_retried_and_readiness_says_so() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "flaky").await;
    let store = server.state().store.clone();
    // The disk refuses every write of a space's state (as a full disk would).
    store
        .with_connection(|c| {
            c.execute_batch(
                "CREATE TRIGGER refuse BEFORE UPDATE ON spaces BEGIN SELECT RAISE(FAIL, 'disk full'); END;
                 CREATE TRIGGER refuse_new BEFORE INSERT ON spaces BEGIN SELECT RAISE(FAIL, 'disk full'); END;",
            )
        })
        .expect("trigger");
    let (status, _) = post(addr, "/api/v1/spaces/flaky/end", Some(&host()), json!({})).await;
    assert_eq!(status, 200, "the space ends for its listeners at once");
    let (status, body) = get(addr, "/readyz", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("store_behind")), "{body}");
    let stored = |store: &townhall_server::store::Store| {
        store
            .spaces()
            .expect("spaces")
            .into_iter()
            .find(|s| s.id.as_str() == "flaky")
            .map(|s| s.state)
    };
    assert_eq!(stored(&store), Some(townhall_core::SpaceState::Live), "not stored yet");
    // The disk recovers: the retry stores it, and the node is ready again.
    store
        .with_connection(|c| c.execute_batch("DROP TRIGGER refuse; DROP TRIGGER refuse_new;"))
        .expect("drop");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get(addr, "/readyz", None).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored(&store), Some(townhall_core::SpaceState::Ended));
    server.shutdown().await;
}

// ----- 8. recordings are capped -----

#[tokio::test]
async fn a_recording_stops_by_itself_at_its_duration_cap() {
    let dir = temp_dir("cap");
    let server =
        server_with(Config { data_dir: dir.clone(), recording_max_secs: 1, ..Config::default() })
            .await;
    let addr = server.addr();
    live_space(addr, "capped").await;
    let (status, body) =
        post(addr, "/api/v1/spaces/capped/recording", Some(&host()), json!({"recording": true}))
            .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let rec = loop {
        let (_, rec) = get(addr, &format!("/api/v1/recordings/{id}"), None).await;
        if rec["state"] == "finished" {
            break rec;
        }
        assert!(tokio::time::Instant::now() < deadline, "never finished: {rec}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ms = rec["duration_ms"].as_u64().unwrap_or(0);
    assert!((1_000..3_000).contains(&ms), "stopped near its 1 s cap: {ms} ms");
    let (_, space) = get(addr, "/api/v1/spaces/capped", None).await;
    assert_eq!(space["recording"], false);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
