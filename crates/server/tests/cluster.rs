//! A cluster on loopback: Redis (Debian's `redis-server`, started here on a free port), one
//! origin and two edges. A speaker on the origin; listeners on both edges hear the same tone
//! through each edge's relay, room events reach them, and every node reports the same listener
//! count. Redis stopped mid-stream: the edges keep playing; restarted: the directory heals.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use townhall_media::analysis::tone_amplitude;
use townhall_server::Config;
use townhall_server::config::NodeRole;

/// A `redis-server` of this test's own, on a free loopback port; killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    /// A `redis-server` on `port` with `extra` arguments (e.g. `--replicaof`).
    fn start_with(port: u16, extra: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server runs: install Debian's redis-server (apt-get install redis-server)",
            );
        Redis { child, port }
    }

    fn start() -> Redis {
        Redis::start_on(free_port())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn ready(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn node(role: NodeRole, redis: &Redis) -> townhall_server::Server {
    server_with(Config { role, redis: Some(redis.url()), ..Config::default() }).await
}

/// Polls `GET /api/v1/spaces/{id}` on `addr` until `ok` holds for the answer (within 10 s).
async fn until_space(
    addr: SocketAddr,
    id: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        if let Ok(res) = http().get(format!("http://{addr}/api/v1/spaces/{id}")).send().await
            && res.status() == 200
        {
            last = res.json().await.expect("json");
            if ok(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("space {id} on {addr} never satisfied the condition; last answer {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listeners_on_two_edges_hear_the_origin_and_counts_agree() {
    let redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    let edges = [node(NodeRole::Edge, &redis).await, node(NodeRole::Edge, &redis).await];
    live_space(origin.addr(), "relay").await;
    // Edges learn of the space from the directory within a round or two.
    for edge in &edges {
        until_space(edge.addr(), "relay", |s| s["state"] == "live").await;
    }
    // Spaces are created on origins, speakers speak there.
    let refused = http()
        .post(format!("http://{}/api/v1/spaces", edges[0].addr()))
        .bearer_auth(host())
        .json(&serde_json::json!({ "id": "nope", "title": "Nope", "live": true }))
        .send()
        .await
        .expect("create on an edge");
    assert_error(refused, 409, "not_origin").await;

    let speaker = spawn_speaker(origin.addr(), "relay", "alice", 440.0, Duration::from_secs(7));
    let listeners: Vec<_> = edges
        .iter()
        .map(|e| {
            let addr = e.addr();
            tokio::spawn(async move {
                let ws = ws(addr, "/ws/relay").await;
                listen_ws(ws, Duration::from_secs(5)).await
            })
        })
        .collect();
    // While both listen, every node reports the cluster's count: two listeners.
    for n in [origin.addr(), edges[0].addr(), edges[1].addr()] {
        until_space(n, "relay", |s| s["listeners"] == 2).await;
    }
    for (i, l) in listeners.into_iter().enumerate() {
        let heard = l.await.expect("listener");
        assert!(heard.pcm.len() > 48_000 * 2, "edge {i} heard {} samples", heard.pcm.len());
        let at_440 = tone_amplitude(heard.tail(1.0), 440.0);
        assert!(at_440 > 0.25, "edge {i}: 440 Hz amplitude {at_440}");
        // The origin's room and voice events reach edge listeners.
        assert!(
            heard.events.iter().any(|e| e["type"] == "speaking"
                && e["speakers"].as_array().is_some_and(|s| s.iter().any(|w| w == "alice"))),
            "edge {i} events: {:?}",
            heard.events
        );
    }
    speaker.await.expect("speaker");
    // The origin ends the space; the edges follow.
    let res = http()
        .post(format!("http://{}/api/v1/spaces/relay/end", origin.addr()))
        .bearer_auth(host())
        .send()
        .await
        .expect("end");
    assert_eq!(res.status(), 200);
    for edge in &edges {
        until_space(edge.addr(), "relay", |s| s["state"] == "ended").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edges_keep_playing_while_redis_is_away_and_the_directory_heals() {
    let mut redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    let edge = node(NodeRole::Edge, &redis).await;
    live_space(origin.addr(), "steady").await;
    until_space(edge.addr(), "steady", |s| s["state"] == "live").await;
    let speaker = spawn_speaker(origin.addr(), "steady", "alice", 440.0, Duration::from_secs(22));
    let listener = {
        let addr = edge.addr();
        tokio::spawn(async move {
            listen_ws(ws(addr, "/ws/steady").await, Duration::from_secs(20)).await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(admission(edge.addr()).await, "cluster");
    let epoch_before = record_epoch(&redis, "steady").await.expect("a record before");
    // Redis goes away: longer than a lease, long enough for the doors to give up on it (three
    // failed rounds).
    let port = redis.port;
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let mut local = false;
    for _ in 0..120 {
        local = admission(edge.addr()).await == "local";
        if local {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The door admits on the node's own line meanwhile, and says so.
    assert!(local, "the door says it admits locally while Redis is away");
    let (status, _) = join_at(edge.addr(), "steady", None).await;
    assert_eq!(status, 200, "joins go on while Redis is away");
    redis = Redis::start_on(port);
    redis.ready().await;
    let heard = listener.await.expect("listener");
    speaker.await.expect("speaker");
    assert!(heard.pcm.len() > 48_000 * 5, "the edge kept playing: {} samples", heard.pcm.len());
    assert!(heard.gaps() <= 5, "frames lost while Redis was away: {}", heard.gaps());
    assert!(tone_amplitude(heard.tail(1.0), 440.0) > 0.25, "still the tone after Redis returned");
    // The restarted Redis is empty: the origin writes the directory again.
    let mut healed = false;
    for _ in 0..50 {
        let client = redis::Client::open(redis.url()).expect("client");
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            let spaces: Vec<String> = redis::cmd("SMEMBERS")
                .arg("th:spaces")
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            if spaces.iter().any(|s| s == "steady") {
                healed = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healed, "the directory came back after Redis restarted");
    let epoch_after = record_epoch(&redis, "steady").await.expect("a record after");
    assert!(
        epoch_after > epoch_before,
        "epochs never go back, even in an empty Redis: {epoch_before} then {epoch_after}"
    );
    let mut held = false;
    for _ in 0..50 {
        let client = redis::Client::open(redis.url()).expect("client");
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            let hold: Option<String> =
                redis::cmd("GET").arg("th:hold:steady").query_async(&mut c).await.unwrap_or(None);
            if hold.is_some() {
                held = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held, "the origin wrote the space's hold again (a standby could take it over)");
    let mut back = false;
    for _ in 0..50 {
        back = admission(edge.addr()).await == "cluster";
        if back {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the door went back to the cluster's line");
    drop(edge);
    drop(origin);
}

/// How the door of the node at `addr` admits now (`cluster` or `local`), from the admin API.
async fn admission(addr: SocketAddr) -> String {
    let status: serde_json::Value = http()
        .get(format!("http://{addr}/api/v1/admin/shield"))
        .bearer_auth(host())
        .send()
        .await
        .expect("shield")
        .json()
        .await
        .expect("json");
    status["cluster"]["admission"].as_str().unwrap_or("").to_owned()
}

/// A TCP proxy on loopback whose connections can be cut, refusing new ones for a while.
struct Cutter {
    addr: SocketAddr,
    target: Arc<OnceLock<SocketAddr>>,
    cut: tokio::sync::watch::Sender<u32>,
    down_until: Arc<Mutex<Instant>>,
    accepted: Arc<AtomicU32>,
}

impl Cutter {
    async fn start() -> Cutter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let target = Arc::new(OnceLock::<SocketAddr>::new());
        let (cut, cuts) = tokio::sync::watch::channel(0u32);
        let down_until = Arc::new(Mutex::new(Instant::now()));
        let accepted = Arc::new(AtomicU32::new(0));
        let (to, down, count) = (target.clone(), down_until.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let is_down = *down.lock().expect("lock") > Instant::now();
                let Some(&to) = to.get() else { continue };
                if is_down {
                    continue;
                }
                count.fetch_add(1, Ordering::Relaxed);
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(to).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Cutter { addr, target, cut, down_until, accepted }
    }

    /// Drops every connection and refuses new ones for `down`.
    fn cut_for(&self, down: Duration) {
        *self.down_until.lock().expect("lock") = Instant::now() + down;
        self.cut.send_modify(|n| *n += 1);
    }
}

/// The link between an edge and its origin breaks for half a second mid-stream: the relay
/// comes back asking for the frames it missed, and the edge's listener hears every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_resumes_by_frame_number_after_a_broken_link() {
    let redis = Redis::start();
    redis.ready().await;
    // The origin is known to the cluster by a proxy's address, so the test can break the link.
    let link = Cutter::start().await;
    let origin = server_with(Config {
        role: NodeRole::Origin,
        redis: Some(redis.url()),
        public_url: Some(format!("http://{}", link.addr)),
        ..Config::default()
    })
    .await;
    link.target.set(origin.addr()).expect("target set once");
    let edge = node(NodeRole::Edge, &redis).await;
    live_space(origin.addr(), "resume").await;
    until_space(edge.addr(), "resume", |s| s["state"] == "live").await;
    let speaker = spawn_speaker(origin.addr(), "resume", "alice", 440.0, Duration::from_secs(7));
    let listener = {
        let addr = edge.addr();
        tokio::spawn(async move {
            listen_ws(ws(addr, "/ws/resume?batch=1").await, Duration::from_secs(5)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = link.accepted.load(Ordering::Relaxed);
    link.cut_for(Duration::from_millis(500));
    let heard = listener.await.expect("listener");
    speaker.await.expect("speaker");
    assert!(link.accepted.load(Ordering::Relaxed) > before, "the relay reconnected after the cut");
    // Without resuming, half a second down is 25 frames lost or more.
    assert_eq!(heard.gaps(), 0, "frames lost across the broken link");
    assert!(heard.seqs.len() >= 200, "heard {} frames in 5 s", heard.seqs.len());
    assert!(tone_amplitude(heard.tail(1.0), 440.0) > 0.25, "the tone after the break");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_door_on_any_node_sends_listeners_to_the_edges() {
    let redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    let edges = [node(NodeRole::Edge, &redis).await, node(NodeRole::Edge, &redis).await];
    let edge_urls: Vec<String> = edges.iter().map(|e| format!("http://{}", e.addr())).collect();
    live_space(origin.addr(), "door").await;
    for edge in &edges {
        until_space(edge.addr(), "door", |s| s["state"] == "live").await;
    }
    let join = || async {
        let res = http()
            .post(format!("http://{}/api/v1/spaces/door/join", origin.addr()))
            .send()
            .await
            .expect("join");
        assert_eq!(res.status(), 200);
        res.json::<serde_json::Value>().await.expect("json")
    };
    // Once the origin has heard the edges' heartbeats, its door names one of them.
    let mut first = join().await;
    for _ in 0..30 {
        if first["node"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        first = join().await;
    }
    let mut chosen = std::collections::BTreeSet::new();
    for answer in std::iter::once(first) {
        chosen.insert(answer["node"].as_str().expect("a node").to_owned());
    }
    for _ in 0..10 {
        let answer = join().await;
        chosen.insert(answer["node"].as_str().expect("a node").to_owned());
    }
    assert!(
        chosen.iter().all(|n| edge_urls.contains(n)),
        "only edges: {chosen:?} of {edge_urls:?}"
    );
    assert_eq!(chosen.len(), 2, "both idle edges get listeners: {chosen:?}");
    // A joiner that lost an edge (or could not reach it) names it, and is sent to the other:
    // a new joiner and one coming back with its listening ticket alike.
    let avoid = format!("{}/", edge_urls[0]);
    let held = first_token(&join().await);
    for bearer in [None, Some(held)] {
        // A few each: joins are limited per address (this test's joins all come from one).
        for _ in 0..3 {
            let mut req = http()
                .post(format!("http://{}/api/v1/spaces/door/join?avoid={avoid}", origin.addr()));
            if let Some(token) = &bearer {
                req = req.bearer_auth(token);
            }
            let answer: serde_json::Value =
                req.send().await.expect("join").json().await.expect("json");
            assert_eq!(answer["node"], edge_urls[1].as_str(), "{answer}");
        }
    }
    // The page may connect to the cluster's nodes (CSP), and the ticket works on the edge named.
    let page = http().get(format!("http://{}/", origin.addr())).send().await.expect("page");
    let csp = page.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
    for edge in &edges {
        assert!(csp.contains(&format!("ws://{}", edge.addr())), "{csp}");
    }
    let speaker = spawn_speaker(origin.addr(), "door", "alice", 440.0, Duration::from_secs(5));
    let answer = join().await;
    let node_url = answer["node"].as_str().expect("node");
    let node_addr: SocketAddr = node_url.trim_start_matches("http://").parse().expect("addr");
    let token = answer["token"].as_str().expect("token");
    let heard =
        listen_ws(ws(node_addr, &format!("/ws/door?token={token}")).await, Duration::from_secs(3))
            .await;
    speaker.await.expect("speaker");
    assert!(
        tone_amplitude(heard.tail(1.0), 440.0) > 0.25,
        "the edge named by the door plays the tone"
    );
}

/// The listening ticket of a join's answer.
fn first_token(answer: &serde_json::Value) -> String {
    answer["token"].as_str().expect("token").to_owned()
}

/// Joins at `addr` until admitted (keeping the place it is given), within 10 s; the token.
async fn admitted_token(addr: SocketAddr, space: &str, mut ticket: Option<String>) -> String {
    for _ in 0..50 {
        let (status, answer) = join_at(addr, space, ticket.as_deref()).await;
        match status {
            200 => return answer["token"].as_str().expect("token").to_owned(),
            202 => ticket = answer["waiting"]["ticket"].as_str().map(str::to_owned),
            other => panic!("join answered {other}: {answer}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("never admitted at {addr}");
}

/// Joins `space` at `addr` (anonymous), with `ticket` if given: the status and the answer.
async fn join_at(addr: SocketAddr, space: &str, ticket: Option<&str>) -> (u16, serde_json::Value) {
    let q = ticket.map(|t| format!("?ticket={t}")).unwrap_or_default();
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/{space}/join{q}"))
        .send()
        .await
        .expect("join");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// A listener whose edge went away comes back through the door with its listening ticket: the
/// door tells it where to go at once, while a newcomer who arrived meanwhile still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_returning_listener_with_its_ticket_is_not_queued_behind_newcomers() {
    let redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    let edge = server_with(Config {
        role: NodeRole::Edge,
        redis: Some(redis.url()),
        max_listeners: 1,
        ..Config::default()
    })
    .await;
    live_space(origin.addr(), "back").await;
    until_space(edge.addr(), "back", |s| s["state"] == "live").await;
    let ticket = admitted_token(origin.addr(), "back", None).await;
    let held = ws(edge.addr(), &format!("/ws/back?token={ticket}")).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, newcomer) = join_at(origin.addr(), "back", None).await;
    assert_eq!(status, 202, "the cluster is full: a newcomer waits: {newcomer}");
    drop(held);
    let res = http()
        .post(format!("http://{}/api/v1/spaces/back/join", origin.addr()))
        .bearer_auth(&ticket)
        .send()
        .await
        .expect("join");
    assert_eq!(res.status(), 200, "the returning listener is told where to go at once");
    let again: serde_json::Value = res.json().await.expect("json");
    assert_eq!(again["node"], format!("http://{}", edge.addr()), "{again}");
    let claims = keys().verify(&ticket, townhall_server::clock::now_unix()).expect("valid");
    assert!(again["expires_at"].as_u64() <= Some(claims.exp), "{again}");
    // A forged token is no ticket.
    let res = http()
        .post(format!("http://{}/api/v1/spaces/back/join", origin.addr()))
        .bearer_auth("eyJhbGciOiJIUzI1NiJ9.e30.x")
        .send()
        .await
        .expect("join");
    assert_eq!(res.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_waiting_line_for_every_door_of_the_cluster() {
    let redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    // Two edges with room for one listener each: the cluster holds two.
    let edge = || {
        server_with(Config {
            role: NodeRole::Edge,
            redis: Some(redis.url()),
            max_listeners: 1,
            ..Config::default()
        })
    };
    let edges = [edge().await, edge().await];
    live_space(origin.addr(), "line").await;
    for e in &edges {
        until_space(e.addr(), "line", |s| s["state"] == "live").await;
    }
    // Fill the cluster: one listener on each edge, each admitted by the line (at once or after
    // a short wait; a ticket is good on any node).
    let mut held = Vec::new();
    for e in &edges {
        let token = admitted_token(e.addr(), "line", None).await;
        held.push(ws(e.addr(), &format!("/ws/line?token={token}")).await);
        // The heartbeats carry the new count before the next joiner.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
    }
    // Full: joiners at either door wait in one line, numbered in arrival order.
    let mut waiting = Vec::new();
    for i in 0..4 {
        let (status, answer) = join_at(edges[i % 2].addr(), "line", None).await;
        assert_eq!(status, 202, "the cluster is full: {answer}");
        waiting.push(answer["waiting"].clone());
    }
    let numbers: Vec<u64> =
        waiting.iter().map(|w| w["position"].as_u64().expect("position")).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "one line across doors: positions {numbers:?}"
    );
    // A listener leaves: the first in line is called (at either door), the last still waits.
    drop(held.pop());
    // Every node hears of the free place within a couple of heartbeats.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let first = waiting[0]["ticket"].as_str().expect("ticket").to_owned();
    let token = admitted_token(edges[1].addr(), "line", Some(first.clone())).await;
    // They take the free place (the cluster counts listeners, not promises).
    held.push(ws(edges[1].addr(), &format!("/ws/line?token={token}")).await);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // The same number admits once, whichever door it comes back to.
    let (status, again) = join_at(edges[0].addr(), "line", Some(&first)).await;
    assert_eq!(status, 400, "a called ticket admits once: {again}");
    let last = waiting[3]["ticket"].as_str().expect("ticket");
    let (status, answer) = join_at(edges[0].addr(), "line", Some(last)).await;
    assert_eq!(status, 202, "the last still waits: {answer}");
    assert!(
        answer["waiting"]["position"].as_u64() < waiting[3]["position"].as_u64(),
        "closer: {answer}"
    );
}

/// An edge in a process of its own (the real binary, as `deploy/local-cluster` runs it) joins
/// the cluster through Redis, carries the space of the origin in this process, and its
/// listener hears the origin's speaker; both nodes count that listener. Killed with SIGKILL, it
/// drops out of the cluster's counts once its heartbeat lapses (5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_in_its_own_process_serves_the_origins_space() {
    let redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    live_space(origin.addr(), "apart").await;
    let mut edge = edge_process(&redis, &[]);
    until_space(edge.addr, "apart", |s| s["state"] == "live").await;
    let speaker = spawn_speaker(origin.addr(), "apart", "alice", 440.0, Duration::from_secs(6));
    let listener = {
        let addr = edge.addr;
        tokio::spawn(
            async move { listen_ws(ws(addr, "/ws/apart").await, Duration::from_secs(4)).await },
        )
    };
    for n in [origin.addr(), edge.addr] {
        until_space(n, "apart", |s| s["listeners"] == 1).await;
    }
    let heard = listener.await.expect("listener");
    speaker.await.expect("speaker");
    assert!(heard.pcm.len() > 48_000 * 2, "the edge's listener heard {} samples", heard.pcm.len());
    assert!(tone_amplitude(heard.tail(1.0), 440.0) > 0.25, "the origin's tone, through the edge");

    // A listener on the edge again, then the edge dies without a word.
    let _held = ws(edge.addr, "/ws/apart").await;
    until_space(origin.addr(), "apart", |s| s["listeners"] == 1).await;
    let _ = edge.child.kill();
    let _ = edge.child.wait();
    // Its heartbeat lapses: the origin no longer counts its listener (10 s at most).
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        last = http()
            .get(format!("http://{}/api/v1/spaces/apart", origin.addr()))
            .send()
            .await
            .expect("origin answers")
            .json()
            .await
            .expect("json");
        if last["listeners"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the dead edge's listener is still counted: {last}");
}

/// The ids and states of `GET /api/v1/spaces` on `addr`.
async fn listing(addr: SocketAddr) -> Vec<(String, String)> {
    let res = http().get(format!("http://{addr}/api/v1/spaces")).send().await.expect("list");
    let body: serde_json::Value = res.json().await.expect("json");
    body["spaces"]
        .as_array()
        .expect("spaces")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or("").to_owned(),
                s["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn act_at(
    addr: SocketAddr,
    space: &str,
    token: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    http()
        .post(format!("http://{addr}/api/v1/spaces/{space}/actions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("act")
}

async fn room_at(addr: SocketAddr, space: &str) -> serde_json::Value {
    let res =
        http().get(format!("http://{addr}/api/v1/spaces/{space}/room")).send().await.expect("room");
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_lists_the_clusters_spaces_and_passes_room_actions_to_the_origin() {
    let redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    let edge = node(NodeRole::Edge, &redis).await;
    live_space(origin.addr(), "onair").await;
    let res = http()
        .post(format!("http://{}/api/v1/spaces", origin.addr()))
        .bearer_auth(host())
        .json(&serde_json::json!({ "id": "later", "title": "Later", "scheduled_for": townhall_server::clock::now_unix().0 + 3_600 }))
        .send()
        .await
        .expect("schedule");
    assert_eq!(res.status(), 201);

    // The same list on both nodes, the scheduled space included.
    let mut same = false;
    for _ in 0..100 {
        let (o, e) = (listing(origin.addr()).await, listing(edge.addr()).await);
        if o == e && o.iter().any(|(id, state)| id == "later" && state == "scheduled") {
            same = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        same,
        "origin {:?} edge {:?}",
        listing(origin.addr()).await,
        listing(edge.addr()).await
    );
    until_space(edge.addr(), "later", |s| s["state"] == "scheduled").await;
    until_space(edge.addr(), "onair", |s| s["state"] == "live").await;

    // A hand raised on the edge is raised in the origin's room, and the edge shows it.
    let bob = token("bob", townhall_core::Role::Listener, "onair");
    let res =
        act_at(edge.addr(), "onair", &bob, serde_json::json!({ "action": "request_to_speak" }))
            .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    let hands = |room: &serde_json::Value| room["room"]["hands"].to_string();
    assert!(hands(&room_at(origin.addr(), "onair").await).contains("bob"));
    assert!(
        hands(&room_at(edge.addr(), "onair").await).contains("bob"),
        "the edge's read is fresh"
    );
    // Bad input is refused on the edge as on the origin.
    let res = act_at(edge.addr(), "onair", &bob, serde_json::json!({ "action": "fly" })).await;
    assert_error(res, 422, "invalid").await;

    // The host removes bob, through the edge; from then on the edge refuses him too.
    let res = act_at(
        edge.addr(),
        "onair",
        &host(),
        serde_json::json!({ "action": "remove", "target": "bob" }),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    let mut refused = false;
    for _ in 0..50 {
        let res = http()
            .post(format!("http://{}/api/v1/spaces/onair/join", edge.addr()))
            .bearer_auth(&bob)
            .send()
            .await
            .expect("join");
        if res.status() == 403 {
            assert_error(res, 403, "removed").await;
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refused, "a removed listener joined on the edge");

    // The host starts the scheduled space on the edge: the origin starts it, the edge carries it.
    let res = http()
        .post(format!("http://{}/api/v1/spaces/later/start", edge.addr()))
        .bearer_auth(host())
        .send()
        .await
        .expect("start");
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    until_space(origin.addr(), "later", |s| s["state"] == "live").await;
    until_space(edge.addr(), "later", |s| s["state"] == "live").await;
    let summary: serde_json::Value = http()
        .get(format!("http://{}/api/v1/spaces/later/summary", edge.addr()))
        .send()
        .await
        .expect("summary")
        .json()
        .await
        .expect("json");
    assert_eq!(summary["state"], "live", "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_number_is_used_once_however_many_come_back_with_it_at_once() {
    use townhall_server::app::cluster::used::{BATCH_MAX, UsedMarks};
    let redis = Redis::start();
    redis.ready().await;
    let client = redis::Client::open(redis.url()).expect("client");
    let conn = client.get_connection_manager().await.expect("connection");
    let marks = std::sync::Arc::new(UsedMarks::default());
    // 2,000 distinct numbers of two lines and 300 copies of one ticket, all at once: more than
    // a batch holds, so several batches run.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2_000u64 {
        let (marks, conn) = (marks.clone(), conn.clone());
        let key = format!("th:line:t:{}:used", if i % 2 == 0 { "signed-in" } else { "anonymous" });
        tasks.spawn(async move { ("distinct", marks.first_use(conn, key, i + 1).await) });
    }
    for _ in 0..300 {
        let (marks, conn) = (marks.clone(), conn.clone());
        let key = "th:line:t:anonymous:used".to_owned();
        tasks.spawn(async move { ("copy", marks.first_use(conn, key, 7_777).await) });
    }
    let (mut distinct, mut copies) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.expect("task") {
            ("distinct", first) => distinct += usize::from(first.expect("marked")),
            (_, first) => copies += usize::from(first.expect("marked")),
        }
    }
    assert_eq!(distinct, 2_000, "each distinct number admits");
    assert_eq!(copies, 1, "one of the 300 copies admits");
    const { assert!(2_300 > BATCH_MAX) };
    // Used stays used, on the next batch too; the bitmap expires in its own time.
    let again = marks.first_use(conn.clone(), "th:line:t:signed-in:used".into(), 1).await;
    assert!(!again.expect("marked"), "a used number stays used");
    let mut c = conn.clone();
    let ttl: i64 =
        redis::cmd("TTL").arg("th:line:t:signed-in:used").query_async(&mut c).await.expect("ttl");
    assert!(ttl > 0, "{ttl}");
    // A number past a bitmap's reach is refused, not marked.
    assert!(marks.first_use(conn, "th:line:t:x:used".into(), 1 << 40).await.is_err());
}

/// `method path` on `addr` with `token` and an optional JSON body: status and JSON answer.
async fn call(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = http().request(method, format!("http://{addr}{path}")).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_the_recording_switch_and_the_moderation_log_on_an_edge_are_the_origins() {
    use reqwest::Method;
    let redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    let edge = node(NodeRole::Edge, &redis).await;
    live_space(origin.addr(), "onair").await;
    until_space(edge.addr(), "onair", |s| s["state"] == "live").await;

    // A report filed on the edge is kept by the origin, where the moderators are.
    let kim = token("kim", townhall_core::Role::Listener, "onair");
    let report = serde_json::json!({ "category": "spam", "details": "on the edge" });
    let (status, body) =
        call(edge.addr(), Method::POST, "/api/v1/spaces/onair/reports", &kim, Some(report)).await;
    assert_eq!(status, 201, "{body}");
    let (_, kept) = call(origin.addr(), Method::GET, "/api/v1/admin/reports", &host(), None).await;
    assert_eq!(kept["reports"][0]["details"], "on the edge", "{kept}");
    assert_eq!(kept["reports"][0]["reporter"], "kim", "{kept}");
    // Bad input is refused on the edge, before anything reaches the origin.
    let bad = serde_json::json!({ "category": "rude" });
    let (status, _) =
        call(edge.addr(), Method::POST, "/api/v1/spaces/onair/reports", &kim, Some(bad)).await;
    assert_eq!(status, 422);

    // The host switches recording on through the edge: the origin, which mixes, records.
    let on = serde_json::json!({ "recording": true });
    let (status, body) =
        call(edge.addr(), Method::POST, "/api/v1/spaces/onair/recording", &host(), Some(on)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "recording", "{body}");
    let (_, list) =
        call(origin.addr(), Method::GET, "/api/v1/recordings?space=onair", &host(), None).await;
    assert_eq!(list["recordings"][0]["state"], "recording", "{list}");
    // A listener may not switch it, on the edge as on the origin.
    let off = serde_json::json!({ "recording": false });
    let (status, body) =
        call(edge.addr(), Method::POST, "/api/v1/spaces/onair/recording", &kim, Some(off)).await;
    assert_eq!(status, 403, "{body}");

    // A block made on the edge is in the moderation log read on the edge (the origin's).
    let res = act_at(
        edge.addr(),
        "onair",
        &host(),
        serde_json::json!({ "action": "block", "target": "kim" }),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    let path = "/api/v1/spaces/onair/moderation?limit=10";
    let (status, log) = call(edge.addr(), Method::GET, path, &host(), None).await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["entries"][0]["action"], "block", "{log}");
    let listener = token("lee", townhall_core::Role::Listener, "onair");
    let (status, _) = call(edge.addr(), Method::GET, path, &listener, None).await;
    assert_eq!(status, 403, "a listener reads no moderation log");
}

/// A Redis Sentinel watching `master` as service `th`, on a free port, with its config file
/// (Sentinels rewrite theirs) in a directory of its own; killed on drop.
struct Sentinel {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Sentinel {
    fn start(master: &Redis) -> Sentinel {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("townhall-sentinel-{port}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor th 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds th 1000\nsentinel failover-timeout th 5000\n",
            dir.display(),
            master.port
        );
        std::fs::write(&conf, text).expect("sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel runs");
        Sentinel { child, port, dir }
    }

    fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/th", self.port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `GET /api/v1/spaces` on `addr` lists `id` within 30 s.
async fn lists(addr: SocketAddr, id: &str) -> bool {
    for _ in 0..300 {
        if listing(addr).await.iter().any(|(s, _)| s == id) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_find_redis_through_sentinels_and_follow_a_failover() {
    let mut master = Redis::start();
    master.ready().await;
    let replica_port = free_port();
    let replica_of = master.port.to_string();
    let replica = Redis::start_with(replica_port, &["--replicaof", "127.0.0.1", &replica_of]);
    replica.ready().await;
    let sentinel = Sentinel::start(&master);
    let mut up = false;
    for _ in 0..100 {
        up |= tokio::net::TcpStream::connect(("127.0.0.1", sentinel.port)).await.is_ok();
        if up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the Sentinel did not start");
    let config = |role| Config { role, redis: Some(sentinel.url()), ..Config::default() };
    let origin = server_with(config(NodeRole::Origin)).await;
    let edge = server_with(config(NodeRole::Edge)).await;
    live_space(origin.addr(), "before").await;
    assert!(
        lists(edge.addr(), "before").await,
        "the edge never listed the space (through the Sentinel's master)"
    );

    // The master dies; the Sentinel promotes the replica; both nodes follow it.
    let _ = master.child.kill();
    let _ = master.child.wait();
    live_space(origin.addr(), "after").await;
    assert!(lists(edge.addr(), "after").await, "the cluster did not follow the failover");
    let mut role: String = String::new();
    if let Ok(mut c) = redis::Client::open(format!("redis://127.0.0.1:{replica_port}/"))
        .and_then(|c| c.get_connection())
    {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap_or_default();
        role = info;
    }
    assert!(role.contains("role:master"), "the replica was promoted: {role}");
}

/// Joins `space` through the door at `door` until it names the node at `want` (the door picks
/// one of two edges at random); the listening ticket.
async fn ticket_for(door: SocketAddr, space: &str, want: &str) -> String {
    for _ in 0..200 {
        let (status, answer) = join_at(door, space, None).await;
        if status == 200 && answer["node"] == want {
            return answer["token"].as_str().expect("token").to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the door at {door} never named {want}");
}

/// What a listener sent off by a draining edge went through.
struct Handover {
    /// The events it got on the drained edge (the `bye` among them).
    before: Heard,
    /// Door visits until it was listening again (refusals included).
    attempts: u32,
    /// The node the door named at last.
    node: String,
    /// What it heard there.
    after: Heard,
}

/// A listener as the documented client rules have it (docs/protocol.md, "Reconnecting"):
/// listens on `ws` until the node sends it off, then goes back through the door it first used
/// (`door`), waiting by `Backoff::CLIENT` between failed attempts, and listens for 2 s
/// wherever the door sends it.
async fn handed_over(door: SocketAddr, space: String, ws: Ws) -> Handover {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let before = listen_ws(ws, Duration::from_secs(60)).await;
    let bye = before.events.iter().find(|e| e["type"] == "bye");
    let mut retry_after =
        bye.and_then(|b| b["reconnect_after_ms"].as_u64()).map(Duration::from_millis);
    let mut backoff = townhall_shield::Backoff::CLIENT;
    for attempts in 1..=20 {
        tokio::time::sleep(backoff.next_delay(rand_unit(), retry_after.take())).await;
        let (status, answer) = join_at(door, &space, None).await;
        if status != 200 {
            retry_after = Some(Duration::from_secs(1));
            continue;
        }
        let node = answer["node"].as_str().expect("the door names an edge").to_owned();
        let token = answer["token"].as_str().expect("token");
        let url = format!("{}/ws/{space}?token={token}", node.replacen("http://", "ws://", 1));
        let request = url.into_client_request().expect("request");
        // The door may still name the draining edge for a round: it refuses, we try again.
        let Ok(Ok((ws, _))) =
            tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(request))
                .await
        else {
            continue;
        };
        let after = listen_ws(ws, Duration::from_secs(2)).await;
        return Handover { before, attempts, node, after };
    }
    panic!("never listening again after the drain");
}

/// A uniform draw in [0, 1) from the clock (the tests need no random crate for this).
fn rand_unit() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// Drain (issue #14): SIGTERM to an edge in its own process (the real binary, so the signal
/// path runs) with listeners on it. It stops being offered by the door, sends each listener a
/// `bye` (`server_shutdown`), spread over its `--drain-secs`; each goes back through the door
/// it first used, is sent to the other edge and hears the origin's tone there; the drained edge
/// then exits by itself, cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draining_edge_hands_its_listeners_to_the_other_edge() {
    let redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    live_space(origin.addr(), "handover").await;
    let staying = node(NodeRole::Edge, &redis).await;
    let mut leaving = edge_process(&redis, &["--drain-secs", "3"]);
    let (a_url, b_url) = (format!("http://{}", leaving.addr), format!("http://{}", staying.addr()));
    until_space(leaving.addr, "handover", |s| s["state"] == "live").await;
    until_space(staying.addr(), "handover", |s| s["state"] == "live").await;
    let speaker = spawn_speaker(origin.addr(), "handover", "alice", 440.0, Duration::from_secs(25));
    // Three listeners sent to the edge that will drain, through the origin's door.
    let mut listeners = Vec::new();
    for _ in 0..3 {
        let token = ticket_for(origin.addr(), "handover", &a_url).await;
        let ws = ws(leaving.addr, &format!("/ws/handover?token={token}")).await;
        listeners.push(tokio::spawn(handed_over(origin.addr(), "handover".into(), ws)));
    }
    // And four of townhall-load's, on the same edge, with the origin as their door.
    let load = townhall_load_listeners(leaving.addr, origin.addr(), "handover", 4);
    until_space(origin.addr(), "handover", |s| s["listeners"] == 7).await;

    let pid = leaving.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(killed.success());
    for (i, l) in listeners.into_iter().enumerate() {
        let h = l.await.expect("listener");
        let bye = h.before.events.iter().find(|e| e["type"] == "bye");
        let bye = bye.unwrap_or_else(|| panic!("listener {i} was told: {:?}", h.before.events));
        assert_eq!(bye["reason"], "server_shutdown");
        assert!(bye["reconnect_after_ms"].as_u64().is_some(), "{bye}");
        assert!(!h.before.pcm.is_empty(), "listener {i} heard the drained edge first");
        assert_eq!(
            h.node, b_url,
            "listener {i} went to the other edge ({} door visits)",
            h.attempts
        );
        assert!(
            h.after.pcm.len() > 48_000,
            "listener {i} heard {} samples there",
            h.after.pcm.len()
        );
        let at_440 = tone_amplitude(h.after.tail(1.0), 440.0);
        assert!(at_440 > 0.25, "listener {i}: 440 Hz amplitude {at_440} on the other edge");
    }
    // The drained edge exits by itself once its listeners have gone (3 s window at most).
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = leaving.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the drained edge did not exit by itself");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "a drained edge exits cleanly: {status}");
    // The load tool's listeners are on the other edge now, listening.
    for _ in 0..100 {
        if staying.state().total_listeners() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(staying.state().total_listeners() >= 4, "the load tool's listeners moved over");
    let stats = load.await.expect("load listeners");
    let s = stats.snapshot();
    assert_eq!(s.sent_off, 4, "each load listener was sent off once: {s:?}");
    assert!(s.rejoins >= 4, "{s:?}");
    assert_eq!(s.disconnects, 0, "sent off is not cut off: {s:?}");
    assert!(s.ever_connected >= 8, "connected on both edges: {s:?}");
    speaker.abort();
}

/// `count` townhall-load WebSocket listeners on the node at `on` for 14 s, going back through
/// the door at `door` whenever they are sent off; their counters once done.
fn townhall_load_listeners(
    on: SocketAddr,
    door: SocketAddr,
    space: &str,
    count: usize,
) -> tokio::task::JoinHandle<Arc<townhall_load::stats::Stats>> {
    load_listeners_with(on, door, space, count, false)
}

/// [`townhall_load_listeners`], keeping each listener's timeline when asked.
fn load_listeners_with(
    on: SocketAddr,
    door: SocketAddr,
    space: &str,
    count: usize,
    timeline: bool,
) -> tokio::task::JoinHandle<Arc<townhall_load::stats::Stats>> {
    use townhall_load::listen::{self, ListenConfig, Protocol};
    let target = |a: SocketAddr| townhall_load::target::Target::new(a).expect("loopback");
    let cfg = Arc::new(ListenConfig {
        target: target(on),
        path: listen::townhall_path(Protocol::Ws, space, 5, None),
        listeners: count,
        ramp: None,
        duration: Duration::from_secs(14),
        protocol: Protocol::Ws,
        late_budget: Duration::from_millis(500),
        read_buffer: 4_096,
        token: None,
        door: Some(townhall_load::door::Door {
            target: target(door),
            others: Vec::new(),
            space: space.into(),
            batch: 5,
        }),
        timeline,
        join_first: false,
    });
    let stats = Arc::new(townhall_load::stats::Stats::default());
    tokio::spawn(async move {
        listen::run(cfg, stats.clone()).await;
        stats
    })
}

/// An edge killed without a word (SIGKILL): its listeners (townhall-load's, with the origin as
/// their door) lose the connection, go back through the door and are sent to the other edge,
/// where they hear the tone again; the other edge's own listeners lose nothing meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_edges_listeners_come_back_on_the_other_edge() {
    let redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    live_space(origin.addr(), "struck").await;
    let staying = node(NodeRole::Edge, &redis).await;
    let mut doomed = edge_process(&redis, &[]);
    until_space(doomed.addr, "struck", |s| s["state"] == "live").await;
    until_space(staying.addr(), "struck", |s| s["state"] == "live").await;
    let speaker = spawn_speaker(origin.addr(), "struck", "alice", 440.0, Duration::from_secs(20));
    let struck = load_listeners_with(doomed.addr, origin.addr(), "struck", 4, true);
    let spared = load_listeners_with(staying.addr(), origin.addr(), "struck", 3, true);
    until_space(origin.addr(), "struck", |s| s["listeners"] == 7).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = doomed.child.kill();
    let _ = doomed.child.wait();
    let struck = struck.await.expect("struck listeners");
    let outages = struck.timeline.report()["outages"].clone();
    let outages = outages.as_array().cloned().unwrap_or_default();
    // A listener back within 300 ms (the backoff's full jitter can pick almost nothing) has
    // no outage on record; every outage there is ended, within the 5 s the design promises.
    assert!(
        outages.iter().all(|o| o["to_ms"]
            .as_u64()
            .zip(o["from_ms"].as_u64())
            .is_some_and(|(to, from)| to.saturating_sub(from) < 5_000)),
        "every one of them heard the tone again within 5 s: {outages:?}"
    );
    let struck = struck.snapshot();
    let spared = spared.await.expect("spared listeners");
    assert_eq!(struck.disconnects, 4, "each lost its edge: {struck:?}");
    assert!(struck.rejoins >= 4 && struck.ever_connected >= 8, "and came back: {struck:?}");
    assert_eq!(struck.connected, 0, "the run is over");
    let timeline = spared.timeline.report();
    assert_eq!(
        timeline["losses"],
        serde_json::json!([]),
        "the other edge's listeners lost no frame"
    );
    assert_eq!(timeline["outages"], serde_json::json!([]), "nor any audio");
    let s = spared.snapshot();
    assert_eq!((s.disconnects, s.rejoins), (0, 0), "{s:?}");
    // The struck listeners heard the tone on the other edge: frames there, with sound.
    assert!(struck.frames > 4 * 50 * 8, "frames heard in all: {}", struck.frames);
    speaker.abort();
}

/// Ctrl-C twice, or SIGTERM twice: the first starts the drain (the node says so on `/readyz`),
/// the second ends the process at once, long before its drain would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_signal_ends_the_drain_at_once() {
    let redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    live_space(origin.addr(), "impatient").await;
    let mut edge = edge_process(&redis, &["--drain-secs", "600"]);
    until_space(edge.addr, "impatient", |s| s["state"] == "live").await;
    // Two listeners: the second is sent off only halfway through the 10-minute drain.
    let _held = [ws(edge.addr, "/ws/impatient").await, ws(edge.addr, "/ws/impatient").await];
    until_space(origin.addr(), "impatient", |s| s["listeners"] == 2).await;
    let pid = edge.child.id().to_string();
    let signal = |name: &str| {
        let sent = Command::new("kill").args([name, &pid]).status().expect("kill runs");
        assert!(sent.success());
    };
    signal("-INT");
    let ready = format!("http://{}/readyz", edge.addr);
    let mut draining = false;
    for _ in 0..100 {
        let res = http().get(&ready).send().await.expect("the draining edge still answers");
        if res.status() == 503 {
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(draining, "readyz fails while draining");
    assert!(edge.child.try_wait().expect("wait").is_none(), "still draining");
    signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = edge.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "a second signal ends the drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(130), "{status}");
}

/// An edge in a process of its own (the real binary, as `deploy/local-cluster` runs it).
fn edge_process(redis: &Redis, extra: &[&str]) -> common::nodes::NodeProcess {
    let name = format!("edge-{:08x}", rand::random::<u32>());
    common::nodes::NodeProcess::start_with("edge", &redis.url(), &name, extra)
}

/// `count` townhall-load LL-HLS players reading `space` through the cache at `at` for `secs`.
fn hls_players(
    at: SocketAddr,
    space: &str,
    count: usize,
    secs: u64,
) -> tokio::task::JoinHandle<Arc<townhall_load::stats::Stats>> {
    use townhall_load::listen::{self, ListenConfig, Protocol};
    let cfg = Arc::new(ListenConfig {
        target: townhall_load::target::Target::new(at).expect("loopback"),
        path: listen::townhall_path(Protocol::Hls, space, 1, None),
        listeners: count,
        ramp: None,
        duration: Duration::from_secs(secs),
        protocol: Protocol::Hls,
        late_budget: Duration::from_secs(3),
        read_buffer: 4_096,
        token: None,
        door: None,
        timeline: false,
        join_first: false,
    });
    let stats = Arc::new(townhall_load::stats::Stats::default());
    tokio::spawn(async move {
        listen::run(cfg, stats.clone()).await;
        stats
    })
}

/// The newest part `a` lists, fetched from `a` and from `b` (waiting for `b` to make it).
async fn one_part_from_both(
    a: SocketAddr,
    b: SocketAddr,
    space: &str,
) -> (String, Vec<u8>, Vec<u8>) {
    let get = |addr: SocketAddr, path: String| async move {
        let res =
            http().get(format!("http://{addr}/hls/{space}/{path}")).send().await.expect("get");
        (res.status(), res.bytes().await.expect("body").to_vec())
    };
    let (status, playlist) = get(a, "index.m3u8".into()).await;
    assert_eq!(status, 200);
    let playlist = String::from_utf8_lossy(&playlist).into_owned();
    let name = playlist
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .find_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .expect("a listed part")
        .to_owned();
    let (_, from_a) = get(a, name.clone()).await;
    for _ in 0..50 {
        let (status, from_b) = get(b, name.clone()).await;
        if status == 200 {
            return (name, from_a, from_b);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{b} never made {name}");
}

/// LL-HLS players behind one cache (Debian's nginx with `deploy/nginx/townhall-edge.conf`) in
/// front of two edges: the edges number parts by the program's frames, so they make the same
/// part under the same name and the cache takes each from either; when one edge is killed, the
/// cache asks the other and the players skip nothing, and the stream they were served decodes
/// to the speaker's tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hls_players_behind_a_cache_skip_nothing_when_an_edge_dies() {
    let redis = Redis::start();
    redis.ready().await;
    let origin = node(NodeRole::Origin, &redis).await;
    live_space(origin.addr(), "cached").await;
    let staying = node(NodeRole::Edge, &redis).await;
    let mut doomed = edge_process(&redis, &[]);
    until_space(doomed.addr, "cached", |s| s["state"] == "live").await;
    until_space(staying.addr(), "cached", |s| s["state"] == "live").await;
    let speaker = spawn_speaker(origin.addr(), "cached", "alice", 440.0, Duration::from_secs(30));
    let cache = common::nodes::NginxCache::start(&[doomed.addr, staying.addr()]);
    let players = hls_players(cache.addr, "cached", 3, 20);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (name, a, b) = one_part_from_both(doomed.addr, staying.addr(), "cached").await;
    assert!(!a.is_empty());
    assert_eq!(a, b, "both edges made the same {name}");
    let _ = doomed.child.kill();
    let _ = doomed.child.wait();
    let s = players.await.expect("players").snapshot();
    assert_eq!((s.failed, s.disconnects), (0, 0), "every player stayed: {s:?}");
    assert_eq!(s.gaps, 0, "no part skipped: {s:?}");
    assert!(s.frames >= 3 * 50 * 16, "parts all along: {s:?}");

    // What the cache serves now (segments from both edges, before and after) plays the tone.
    let at = cache.addr;
    let get = |path: String| async move {
        let res = http().get(format!("http://{at}/hls/cached/{path}")).send().await.expect("get");
        assert_eq!(res.status(), 200, "{path}");
        res.bytes().await.expect("body").to_vec()
    };
    // (The cache answers a plain playlist request it holds stale while it fetches a fresh one.)
    let mut playlist = String::new();
    for _ in 0..20 {
        playlist = String::from_utf8(get("index.m3u8".into()).await).expect("text");
        if playlist.lines().filter(|l| l.starts_with('s')).count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut file = get("init.mp4".into()).await;
    let segments: Vec<&str> =
        playlist.lines().filter(|l| l.starts_with('s') && l.ends_with(".mp4")).collect();
    assert!(segments.len() >= 3, "{playlist}");
    for s in &segments {
        file.extend_from_slice(&get(s.to_string()).await);
    }
    let path = std::env::temp_dir().join(format!("townhall-cached-{}.mp4", std::process::id()));
    std::fs::write(&path, &file).expect("write");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "f32le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg (Debian's ffmpeg package) runs");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let pcm: Vec<f32> =
        out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert!(pcm.len() >= segments.len() * 96_000 - 2_000, "{} samples", pcm.len());
    let amp = tone_amplitude(&pcm[pcm.len() - 48_000..], 440.0);
    assert!(amp > 0.25, "440 Hz through the cache after the edge died: {amp}");
    speaker.abort();
}

/// The epoch in `space`'s directory record, if Redis has one.
async fn record_epoch(redis: &Redis, space: &str) -> Option<u64> {
    let client = redis::Client::open(redis.url()).ok()?;
    let mut c = client.get_multiplexed_async_connection().await.ok()?;
    let json: Option<String> =
        redis::cmd("GET").arg(format!("th:space:{space}")).query_async(&mut c).await.ok()?;
    serde_json::from_str::<serde_json::Value>(&json?).ok()?["epoch"].as_u64()
}

/// A host switching captions on through an edge: the edge checks the token and passes the
/// switch to the origin, where captions are made; a listener's switch is refused by the
/// origin's room, and a request without a token never leaves the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn captions_switched_on_an_edge_are_switched_at_the_origin() {
    let redis = Redis::start();
    redis.ready().await;
    let engine = format!("python3 {}/tests/fake_captions_worker.py", env!("CARGO_MANIFEST_DIR"));
    let origin = server_with(Config {
        role: NodeRole::Origin,
        redis: Some(redis.url()),
        captions_engine: engine,
        ..Config::default()
    })
    .await;
    let edge = node(NodeRole::Edge, &redis).await;
    live_space(origin.addr(), "subtitled").await;
    until_space(edge.addr(), "subtitled", |s| s["state"] == "live").await;
    let switch = |token: Option<String>| {
        let url = format!("http://{}/api/v1/spaces/subtitled/captions", edge.addr());
        async move {
            let req = http().post(url).json(&serde_json::json!({"captions": true}));
            let req = match token {
                Some(t) => req.bearer_auth(t),
                None => req,
            };
            req.send().await.expect("post")
        }
    };
    assert_eq!(switch(None).await.status(), 401, "no token: refused at the edge");
    let listener = token("lee", townhall_core::Role::Listener, "subtitled");
    assert_eq!(switch(Some(listener)).await.status(), 403, "the origin's room says no");
    let res = switch(Some(host())).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["captions"], true, "{body}");
    let at_origin: serde_json::Value = http()
        .get(format!("http://{}/api/v1/spaces/subtitled/captions", origin.addr()))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(at_origin["captions"], true, "on at the origin: {at_origin}");
}

/// The text events of a WebSocket until `done` holds for those seen (within `secs`), and the
/// program frame numbers heard meanwhile.
async fn events_until(
    socket: &mut Ws,
    secs: u64,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> (Vec<serde_json::Value>, Vec<u32>) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let (mut events, mut seqs) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !done(&events) {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                events.push(serde_json::from_str(&t).expect("json"));
            }
            Ok(Some(Ok(Message::Binary(b)))) => {
                let _ = townhall_media::wire::parse_program_batch(&b, |f| seqs.push(f.seq));
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    (events, seqs)
}

fn finals(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events.iter().filter(|e| e["type"] == "caption" && e["final"] == true).collect()
}

/// Captions made at the origin reach an edge's listeners on every path: `caption` events on
/// the edge's WebSocket (numbered like the edge's frames), the edge's `/summary` and captions
/// view, and the edge's own LL-HLS subtitle rendition, whose WebVTT segments are the origin's
/// byte for byte (a cache in front of both takes either).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_carries_the_origins_captions_on_every_path() {
    let redis = Redis::start();
    redis.ready().await;
    let engine = format!("python3 {}/tests/fake_captions_worker.py", env!("CARGO_MANIFEST_DIR"));
    let origin = server_with(Config {
        role: NodeRole::Origin,
        redis: Some(redis.url()),
        captions_engine: engine,
        ..Config::default()
    })
    .await;
    let edge = node(NodeRole::Edge, &redis).await;
    live_space(origin.addr(), "subtitled").await;
    until_space(edge.addr(), "subtitled", |s| s["state"] == "live").await;
    // A listener on the edge: its relay pulls the program (and the captions) from the origin.
    let mut listener = ws(edge.addr(), "/ws/subtitled?batch=5").await;
    let res = http()
        .post(format!("http://{}/api/v1/spaces/subtitled/captions", origin.addr()))
        .bearer_auth(host())
        .json(&serde_json::json!({"captions": true}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 200);
    let (events, _) = events_until(&mut listener, 20, |e| {
        e.iter().any(|e| e["type"] == "captions" && e["on"] == true)
    })
    .await;
    assert!(events.iter().any(|e| e["type"] == "captions"), "captions on, at the edge: {events:?}");
    let speaker = spawn_phrases(
        origin.addr(),
        "subtitled",
        "ann",
        3,
        Duration::from_millis(1_200),
        Duration::from_millis(1_000),
    );
    let (events, seqs) = events_until(&mut listener, 30, |e| finals(e).len() >= 2).await;
    speaker.await.expect("speaker");
    let got = finals(&events);
    assert!(got.len() >= 2, "finals at the edge's listener: {events:?}");
    for f in &got {
        assert!(f["text"].as_str().is_some_and(|t| t.starts_with("hello from phrase")), "{f}");
        assert_eq!(f["speaker"], "ann", "attributed: {f}");
        // On the edge's numbering: within the frames its listener heard.
        let (start, end) =
            (f["start_seq"].as_u64().expect("seq"), f["end_seq"].as_u64().expect("seq"));
        let (lo, hi) =
            (seqs.iter().min().copied().unwrap_or(0), seqs.iter().max().copied().unwrap_or(0));
        assert!(u64::from(lo) <= start && end <= u64::from(hi) + 1, "{f} within {lo}..={hi}");
    }

    // The edge's summary and captions view carry the words.
    let summary: serde_json::Value = http()
        .get(format!("http://{}/api/v1/spaces/subtitled/summary", edge.addr()))
        .send()
        .await
        .expect("summary")
        .json()
        .await
        .expect("json");
    assert!(summary["captions"].to_string().contains("hello from phrase"), "{summary}");
    let view: serde_json::Value = http()
        .get(format!("http://{}/api/v1/spaces/subtitled/captions", edge.addr()))
        .send()
        .await
        .expect("captions")
        .json()
        .await
        .expect("json");
    assert_eq!(view["captions"], true, "{view}");
    assert!(view["cues"].to_string().contains("hello from phrase"), "{view}");

    // LL-HLS at the edge: the subtitle rendition, its settled segments carry the words, and
    // each is the origin's own object.
    let hls = |addr: SocketAddr| format!("http://{addr}/hls/subtitled");
    let master = http().get(format!("{}/master.m3u8", hls(edge.addr()))).send().await;
    let master = master.expect("master").text().await.expect("text");
    assert!(master.contains("#EXT-X-MEDIA:TYPE=SUBTITLES"), "{master}");
    let mut compared = 0;
    let mut worded = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while worded.is_empty() && tokio::time::Instant::now() < deadline {
        let subs = http().get(format!("{}/subs.m3u8", hls(edge.addr()))).send().await;
        let subs = subs.expect("subs");
        assert_eq!(subs.status(), 200);
        let subs = subs.text().await.expect("text");
        for name in subs.lines().filter(|l| l.ends_with(".vtt")) {
            let at_edge = http().get(format!("{}/{name}", hls(edge.addr()))).send().await;
            let at_edge = at_edge.expect("vtt").text().await.expect("text");
            let at_origin = http().get(format!("{}/{name}", hls(origin.addr()))).send().await;
            let at_origin = at_origin.expect("vtt");
            if at_origin.status() != 200 {
                continue; // out of the origin's window already
            }
            let at_origin = at_origin.text().await.expect("text");
            assert_eq!(at_edge, at_origin, "{name}: the same object from either node");
            compared += 1;
            if at_edge.contains("hello from phrase") {
                assert!(at_edge.contains("<v ann>"), "{at_edge}");
                worded = at_edge;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!worded.is_empty(), "an edge WebVTT segment with the words ({compared} compared)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_relays_from_an_origin_that_speaks_only_tls_and_checks_its_certificate() {
    let redis = Redis::start();
    redis.ready().await;
    let ca = common::tls::TestCa::new("cluster");
    let ca_file = ca.cert.with_file_name("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).expect("write the CA");
    // The origin speaks TLS only (speakers' pages need HTTPS for the microphone); its
    // public_url, which the door and the relays use, is https.
    let origin = server_with(Config {
        role: NodeRole::Origin,
        redis: Some(redis.url()),
        tls: townhall_server::config::TlsMode::Files,
        tls_cert: Some(ca.cert.clone()),
        tls_key: Some(ca.key.clone()),
        ..Config::default()
    })
    .await;
    let trusting = server_with(Config {
        role: NodeRole::Edge,
        redis: Some(redis.url()),
        tls_client_ca: Some(ca_file.clone()),
        ..Config::default()
    })
    .await;
    let doubting = node(NodeRole::Edge, &redis).await;
    let res = ca
        .http()
        .post(format!("https://127.0.0.1:{}/api/v1/spaces", origin.addr().port()))
        .bearer_auth(host())
        .json(&serde_json::json!({ "id": "secure", "title": "Secure", "live": true }))
        .send()
        .await
        .expect("create over TLS");
    assert_eq!(res.status(), 201);
    for edge in [&trusting, &doubting] {
        until_space(edge.addr(), "secure", |s| s["state"] == "live").await;
    }
    let listener = ws(trusting.addr(), "/ws/secure?batch=5").await;
    let listening = tokio::spawn(listen_ws(listener, Duration::from_secs(6)));
    ca.speak_tone(origin.addr(), "secure", "alice", 440.0, 300).await;
    let heard = listening.await.expect("listener");
    let toned = heard.pcm.chunks(4_800).filter(|w| tone_amplitude(w, 440.0) > 0.1).count();
    assert!(toned >= 10, "the edge relayed the tone in only {toned} 100 ms windows");
    // Room reads go to the origin over HTTPS too; an edge that does not trust the origin's CA
    // refuses its certificate and says the origin cannot be reached.
    let room = http()
        .get(format!("http://{}/api/v1/spaces/secure/room", trusting.addr()))
        .send()
        .await
        .expect("room via the trusting edge");
    assert_eq!(room.status(), 200);
    let room = http()
        .get(format!("http://{}/api/v1/spaces/secure/room", doubting.addr()))
        .send()
        .await
        .expect("room via the doubting edge");
    assert_error(room, 502, "origin_unreachable").await;
    let _ = std::fs::remove_file(&ca_file);
}
