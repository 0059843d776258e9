//! Origins die on launch day. A cluster on loopback (Redis, an origin in a process of its own,
//! a standby origin and an edge in this one): the origin is killed (SIGKILL) or frozen
//! (SIGSTOP) past its lease; the standby takes the space over with its room, the edge's
//! listener stays connected and hears the speaker again from the new origin; a frozen origin
//! that wakes up is fenced off.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::nodes::{NodeProcess, RedisServer};
use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use townhall_core::Role;
use townhall_media::analysis::tone_amplitude;
use townhall_server::Config;
use townhall_server::config::NodeRole;

async fn node(role: NodeRole, redis: &RedisServer) -> townhall_server::Server {
    // A data directory of its own (the standby writes recordings), never the crate's.
    let data_dir = std::env::temp_dir().join(format!(
        "townhall-failover-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    server_with(Config { role, redis: Some(redis.url()), data_dir, ..Config::default() }).await
}

/// Polls `path` on `addr` until it answers `status` (within `secs`).
async fn until_status(addr: SocketAddr, path: &str, status: u16, secs: u64) -> bool {
    for _ in 0..secs * 10 {
        if let Ok(res) = http().get(format!("http://{addr}{path}")).send().await
            && res.status() == status
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn act(addr: SocketAddr, token: &str, body: serde_json::Value) -> u16 {
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/fo/actions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("act");
    res.status().as_u16()
}

async fn join_status(addr: SocketAddr, token: &str) -> u16 {
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/fo/join"))
        .bearer_auth(token)
        .send()
        .await
        .expect("join");
    res.status().as_u16()
}

/// What an edge's listener got over the whole failover.
struct Kept {
    heard: Heard,
    /// The connection closed (or said the space ended) before the end of the listening.
    ended_early: bool,
}

/// Listens on `addr` for `duration`, noting whether the stream ended before.
fn spawn_listener(addr: SocketAddr, duration: Duration) -> tokio::task::JoinHandle<Kept> {
    spawn_listener_on(addr, "/ws/fo", duration)
}

/// [`spawn_listener`] on `path`.
fn spawn_listener_on(
    addr: SocketAddr,
    path: &'static str,
    duration: Duration,
) -> tokio::task::JoinHandle<Kept> {
    tokio::spawn(async move {
        let socket = ws(addr, path).await;
        let mut stream = socket.split().1;
        let mut heard = Heard::default();
        let mut decoder = ProgramDecoder::default();
        let deadline = tokio::time::Instant::now() + duration;
        let mut ended_early = false;
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Binary(b)))) => decoder.decode_batch(&b, &mut heard),
                Ok(Some(Ok(Message::Text(t)))) => {
                    let event: serde_json::Value = serde_json::from_str(&t).expect("json");
                    ended_early |= event["type"] == "state" || event["type"] == "bye";
                    heard.events.push(event);
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => {
                    ended_early = true;
                    break;
                }
            }
        }
        Kept { heard, ended_early }
    })
}

/// The origin in a process of its own, a standby origin and an edge here; a live space on the
/// origin with a speaker, a raised hand and a removal; a listener on the edge.
struct Scene {
    redis: RedisServer,
    origin: NodeProcess,
    standby: townhall_server::Server,
    edge: townhall_server::Server,
}

async fn scene() -> Scene {
    let redis = RedisServer::start().await;
    let origin = NodeProcess::start("origin", &redis.url(), "origin-a");
    let standby = node(NodeRole::Origin, &redis).await;
    let edge = node(NodeRole::Edge, &redis).await;
    live_space(origin.addr, "fo").await;
    assert!(
        until_status(edge.addr(), "/api/v1/spaces/fo/room", 200, 10).await,
        "the edge carries it"
    );
    // The room: carol's hand is up, bob was removed.
    let carol = token("carol", Role::Listener, "fo");
    assert_eq!(
        act(origin.addr, &carol, serde_json::json!({"action": "request_to_speak"})).await,
        200
    );
    let bob = token("bob", Role::Listener, "fo");
    assert_eq!(
        act(origin.addr, &bob, serde_json::json!({"action": "request_to_speak"})).await,
        200
    );
    let remove = serde_json::json!({"action": "remove", "target": "bob"});
    assert_eq!(act(origin.addr, &host(), remove).await, 200);
    Scene { redis, origin, standby, edge }
}

/// The space's directory record as Redis has it: (origin URL, epoch).
fn record(redis: &RedisServer) -> (String, u64) {
    record_now(redis).expect("a directory record")
}

/// The space's directory record, if Redis has one now.
fn record_now(redis: &RedisServer) -> Option<(String, u64)> {
    let json = redis.get("th:space:fo")?;
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    Some((v["origin"].as_str().unwrap_or("").to_owned(), v["epoch"].as_u64().unwrap_or(0)))
}

/// After the origin is gone: the standby holds the space, with its room; the speaker comes back
/// there; the edge's listener, connected all along, hears them again.
async fn standby_carries_on(scene: &Scene, listener: tokio::task::JoinHandle<Kept>) {
    let standby = scene.standby.addr();
    assert!(
        until_status(standby, "/api/v1/spaces/fo/room", 200, 15).await,
        "the standby took the space over"
    );
    // The standby answers for the room as soon as the space is live there; its directory
    // record follows within its next lease round.
    let mut named = record_now(&scene.redis);
    for _ in 0..50 {
        if named.as_ref().is_some_and(|(o, _)| *o == format!("http://{standby}")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        named = record_now(&scene.redis);
    }
    let (origin, epoch) = named.expect("a directory record");
    assert_eq!(origin, format!("http://{standby}"), "the directory names the standby");
    assert_eq!(epoch, 2, "taking the lease raised the epoch");
    // The room came back: carol's hand is still up, bob is still out (here and on the edge).
    let room: serde_json::Value = http()
        .get(format!("http://{standby}/api/v1/spaces/fo/room"))
        .send()
        .await
        .expect("room")
        .json()
        .await
        .expect("json");
    assert!(room["room"]["hands"].to_string().contains("carol"), "room: {room}");
    let bob = token("bob", Role::Listener, "fo");
    assert_eq!(join_status(standby, &bob).await, 403, "bob stays removed on the new origin");
    let mut refused = false;
    for _ in 0..50 {
        refused = join_status(scene.edge.addr(), &bob).await == 403;
        if refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "bob stays removed on the edge");
    // The speaker reconnects to the new origin (as the page does).
    let speaker = spawn_speaker(standby, "fo", "alice", 440.0, Duration::from_secs(5));
    let kept = listener.await.expect("listener");
    speaker.await.expect("speaker");
    assert!(!kept.ended_early, "the edge's listener stayed connected: {:?}", kept.heard.events);
    // The loudest second of the last eight (the first speaker spoke at the very start, and
    // the second has stopped by the end).
    let second = 48_000;
    let at_440 = kept
        .heard
        .tail(8.0)
        .chunks(second)
        .filter(|c| c.len() == second)
        .map(|c| tone_amplitude(c, 440.0))
        .fold(0.0f32, f32::max);
    assert!(
        at_440 > 0.25,
        "the tone from the new origin reached the edge's listener ({at_440}); {} frames, last numbers {:?}, events {:?}",
        kept.heard.seqs.len(),
        &kept.heard.seqs[kept.heard.seqs.len().saturating_sub(5)..],
        kept.heard.events.iter().map(|e| e["type"].to_string()).collect::<Vec<_>>()
    );
    // Its frame numbers went on, never back.
    let backwards = kept.heard.seqs.windows(2).filter(|w| w[1] <= w[0]).count();
    assert_eq!(backwards, 0, "frame numbers went back {backwards} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_origins_space_goes_on_at_the_standby() {
    let scene = scene().await;
    // Recorded on the origin: the recording goes on at the standby, as its second part.
    let res = http()
        .post(format!("http://{}/api/v1/spaces/fo/recording", scene.origin.addr))
        .bearer_auth(host())
        .json(&serde_json::json!({ "recording": true }))
        .send()
        .await
        .expect("record");
    assert_eq!(res.status(), 200);
    let first: serde_json::Value = res.json().await.expect("json");
    let first = first["recording"]["id"].as_str().or(first["id"].as_str()).unwrap_or("").to_owned();
    assert!(!first.is_empty(), "the recording's id");
    let listener = spawn_listener(scene.edge.addr(), Duration::from_secs(16));
    let before = spawn_speaker(scene.origin.addr, "fo", "alice", 440.0, Duration::from_secs(2));
    let _ = before.await;
    scene.origin.signal("KILL");
    standby_carries_on(&scene, listener).await;
    let standby = scene.standby.addr();
    let view: serde_json::Value = http()
        .get(format!("http://{}/api/v1/spaces/fo", scene.edge.addr()))
        .send()
        .await
        .expect("space")
        .json()
        .await
        .expect("json");
    assert_eq!(view["origin"], format!("http://{standby}"), "every node names the new origin");
    assert_eq!(view["recording"], true, "{view}");
    let list: serde_json::Value = http()
        .get(format!("http://{standby}/api/v1/recordings"))
        .bearer_auth(host())
        .send()
        .await
        .expect("recordings")
        .json()
        .await
        .expect("json");
    let parts = list["recordings"].as_array().expect("recordings");
    assert!(
        parts.iter().any(|r| r["part"]["of"] == first.as_str() && r["part"]["number"] == 2),
        "the standby's recording continues {first}: {list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_origin_that_wakes_up_is_fenced_off() {
    let scene = scene().await;
    let listener = spawn_listener(scene.edge.addr(), Duration::from_secs(18));
    let before = spawn_speaker(scene.origin.addr, "fo", "alice", 440.0, Duration::from_secs(2));
    let _ = before.await;
    // Frozen longer than its lease (3 s): the standby takes over.
    scene.origin.signal("STOP");
    assert!(until_status(scene.standby.addr(), "/api/v1/spaces/fo/room", 200, 15).await);
    scene.origin.signal("CONT");
    // Awake, the old origin finds another holding the lease: it stops mixing the space and
    // publishes nothing; the directory still names the standby.
    assert!(
        until_status(scene.origin.addr, "/api/v1/spaces/fo/room", 410, 10).await
            || until_status(scene.origin.addr, "/api/v1/spaces/fo/room", 404, 1).await,
        "the old origin stopped mixing the space"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (origin, epoch) = record(&scene.redis);
    assert_eq!(origin, format!("http://{}", scene.standby.addr()), "the old origin wrote nothing");
    assert_eq!(epoch, 2);
    standby_carries_on(&scene, listener).await;
}

/// A captioned space recorded on an origin that dies: the standby captions it too (the hold
/// says it was captioned), and the recording's next part there has its own transcript, timed
/// on that part's clock (its first frame at 00:00), with the words said there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_captioned_recording_goes_on_with_its_transcript_at_the_standby() {
    let engine = format!("python3 {}/tests/fake_captions_worker.py", env!("CARGO_MANIFEST_DIR"));
    let config = std::env::temp_dir().join(format!(
        "townhall-failover-captions-{}-{:08x}.toml",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::write(&config, format!("captions_engine = {engine:?}\n")).expect("config");
    let redis = RedisServer::start().await;
    let origin = NodeProcess::start_with(
        "origin",
        &redis.url(),
        "origin-c",
        &["--config", config.to_str().expect("path")],
    );
    let data_dir = std::env::temp_dir().join(format!(
        "townhall-failover-standby-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let standby = server_with(Config {
        role: NodeRole::Origin,
        redis: Some(redis.url()),
        data_dir: data_dir.clone(),
        captions_engine: engine,
        ..Config::default()
    })
    .await;
    live_space(origin.addr, "fc").await;
    let switch = |addr: SocketAddr, path: &'static str, body: serde_json::Value| async move {
        let res = http()
            .post(format!("http://{addr}/api/v1/spaces/fc/{path}"))
            .bearer_auth(host())
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 200, "{path}");
        res.json::<serde_json::Value>().await.expect("json")
    };
    switch(origin.addr, "captions", serde_json::json!({"captions": true})).await;
    let first = switch(origin.addr, "recording", serde_json::json!({"recording": true})).await;
    let first = first["id"].as_str().expect("id").to_owned();
    let phrase = Duration::from_millis(1_000);
    spawn_phrases(origin.addr, "fc", "ann", 2, phrase, phrase).await.expect("speaker");
    // The hold is written every second: let it see the captions and the recording.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    origin.signal("KILL");
    assert!(
        until_status(standby.addr(), "/api/v1/spaces/fc/room", 200, 15).await,
        "the standby took the space over"
    );
    let taken_at = tokio::time::Instant::now();
    let captions: serde_json::Value = http()
        .get(format!("http://{}/api/v1/spaces/fc/captions", standby.addr()))
        .send()
        .await
        .expect("captions")
        .json()
        .await
        .expect("json");
    assert_eq!(captions["captions"], true, "captioned at the standby too: {captions}");
    // The speaker comes back to the new origin and says two more phrases; a listener there
    // notes their captions.
    let listener = spawn_listener_on(standby.addr(), "/ws/fc?batch=5", Duration::from_secs(8));
    spawn_phrases(standby.addr(), "fc", "ann", 2, phrase, phrase).await.expect("speaker");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spoke_for = taken_at.elapsed().as_millis() as u64;
    let part = switch(standby.addr(), "recording", serde_json::json!({"recording": false})).await;
    assert_eq!(part["part"]["of"], first.as_str(), "the next part of {first}: {part}");
    let id = part["id"].as_str().expect("id");
    let vtt = http()
        .get(format!("http://{}/recordings/{id}.vtt", standby.addr()))
        .send()
        .await
        .expect("vtt");
    assert_eq!(vtt.status(), 200, "the part has a transcript");
    let vtt = vtt.text().await.expect("text");
    let starts: Vec<u64> = vtt
        .lines()
        .filter_map(|l| l.split_once(" --> "))
        .map(|(start, _)| {
            let (hms, ms) = start.split_once('.').expect("time");
            let secs = hms.split(':').fold(0, |a, p| a * 60 + p.parse::<u64>().expect("n"));
            secs * 1_000 + ms.parse::<u64>().expect("ms")
        })
        .collect();
    assert_eq!(starts.len(), 2, "the two phrases said at the standby: {vtt}");
    assert!(vtt.contains("hello from phrase"), "{vtt}");
    // On the part's clock: said after it began, within the time since, one phrase apart.
    assert!(starts[1] <= spoke_for + 1_000, "{starts:?} within {spoke_for} ms: {vtt}");
    // The same distance apart as the words were in the program (frames of 20 ms).
    let heard = listener.await.expect("listener").heard.events;
    let finals: Vec<u64> = heard
        .iter()
        .filter(|e| e["type"] == "caption" && e["final"] == true)
        .filter_map(|e| e["start_seq"].as_u64())
        .collect();
    assert_eq!(finals.len(), 2, "{heard:?}");
    assert_eq!(starts[1] - starts[0], (finals[1] - finals[0]) * 20, "{starts:?} {finals:?}");
    let duration = part["duration_ms"].as_u64().unwrap_or(0);
    assert!(starts[1] < duration, "within the part ({duration} ms): {vtt}");
    drop(standby);
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// One program frame as a WebSocket listener got it.
struct Got {
    seq: u32,
    mixed_at_us: u64,
    payload: Vec<u8>,
}

/// Listens on `addr` to space `fn` until `stop`, keeping every frame as it came.
fn spawn_frames(
    addr: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<Got>> {
    tokio::spawn(async move {
        let mut stream = ws(addr, "/ws/fn").await.split().1;
        let mut got = Vec::new();
        loop {
            let msg = tokio::select! {
                _ = stop.changed() => break,
                msg = stream.next() => msg,
            };
            match msg {
                Some(Ok(Message::Binary(b))) => {
                    townhall_media::wire::parse_program_batch(&b, |f| {
                        got.push(Got {
                            seq: f.seq,
                            mixed_at_us: f.mixed_at_us,
                            payload: f.payload.to_vec(),
                        });
                    })
                    .expect("a valid batch");
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        got
    })
}

/// The LL-HLS parts `addr`'s playlist of space `fn` names.
async fn parts_named(addr: SocketAddr) -> Vec<String> {
    let res = http().get(format!("http://{addr}/hls/fn/index.m3u8")).send().await.expect("get");
    assert_eq!(res.status(), 200, "{addr}'s playlist");
    let playlist = res.text().await.expect("text");
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|l| Some(l.split("URI=\"").nth(1)?.split('"').next()?.to_owned()))
        .collect()
}

/// The bytes of `addr`'s LL-HLS object `name` of space `fn`.
async fn hls_object(addr: SocketAddr, name: &str) -> Vec<u8> {
    let res = http().get(format!("http://{addr}/hls/fn/{name}")).send().await.expect("get");
    assert_eq!(res.status(), 200, "{name} at {addr}");
    res.bytes().await.expect("body").to_vec()
}

/// Microseconds since the epoch on this machine's wall clock (the nodes' clock on loopback).
fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// An origin killed under two edges: the standby numbers the program by the clock the origin
/// left in its hold, so its frame numbers jump forward over the outage, and both edges pass
/// them on as they are. Every node then serves the same audio under the same numbers: the same
/// `seq` for the same frame on both edges' WebSocket streams and on the new origin's own, and
/// the same LL-HLS parts, byte for byte, under the same names (what a cache in front of the
/// edges needs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_edges_number_the_new_origins_frames_alike() {
    let redis = RedisServer::start().await;
    let origin = NodeProcess::start("origin", &redis.url(), "origin-n");
    let standby = node(NodeRole::Origin, &redis).await;
    let edges = [node(NodeRole::Edge, &redis).await, node(NodeRole::Edge, &redis).await];
    live_space(origin.addr, "fn").await;
    for edge in &edges {
        assert!(
            until_status(edge.addr(), "/api/v1/spaces/fn/room", 200, 10).await,
            "the edge carries it"
        );
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let listeners = edges.each_ref().map(|e| spawn_frames(e.addr(), stopped.clone()));
    let before = spawn_speaker(origin.addr, "fn", "alice", 440.0, Duration::from_secs(2));
    let _ = before.await;
    // The hold is written every second: the last one has the clock as mixed lately.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let killed_us = wall_us();
    origin.signal("KILL");
    assert!(
        until_status(standby.addr(), "/api/v1/spaces/fn/room", 200, 15).await,
        "the standby took the space over"
    );
    let at_origin = spawn_frames(standby.addr(), stopped.clone());
    let speaker = spawn_speaker(standby.addr(), "fn", "alice", 660.0, Duration::from_secs(8));
    tokio::time::sleep(Duration::from_secs(6)).await;

    // LL-HLS: the parts both edges (and the new origin) name now are the same objects.
    let [a, b] = edges.each_ref().map(|e| e.addr());
    let named = [parts_named(a).await, parts_named(b).await, parts_named(standby.addr()).await];
    let common: Vec<&String> =
        named[0].iter().filter(|p| named[1].contains(p) && named[2].contains(p)).collect();
    assert!(common.len() >= 3, "the same parts named everywhere: {named:?}");
    for name in common {
        let bytes = hls_object(a, name).await;
        assert_eq!(bytes, hls_object(b, name).await, "both edges made the same {name}");
        assert_eq!(bytes, hls_object(standby.addr(), name).await, "as the origin made {name}");
    }
    speaker.await.expect("speaker");
    stop.send_replace(true);
    let [got_a, got_b] = {
        let mut got = Vec::new();
        for l in listeners {
            got.push(l.await.expect("listener"));
        }
        <[Vec<Got>; 2]>::try_from(got).ok().expect("two")
    };
    let got_origin = at_origin.await.expect("listener at the new origin");

    for got in [&got_a, &got_b] {
        // Numbers never went back, and the new origin's first number continues the clock:
        // as far past the old origin's last as the time between them (within a second).
        assert!(got.windows(2).all(|w| w[1].seq > w[0].seq), "frame numbers went back");
        let old = got.iter().rev().find(|f| f.mixed_at_us <= killed_us).expect("old frames");
        let new = got.iter().find(|f| f.mixed_at_us > killed_us).expect("the new origin's");
        let by_numbers = i64::from(new.seq - old.seq) * 20_000;
        let by_clock = (new.mixed_at_us - old.mixed_at_us) as i64;
        assert!(
            (by_numbers - by_clock).abs() < 1_000_000,
            "frames {} then {} ({} ms of numbers) mixed {} ms apart",
            old.seq,
            new.seq,
            by_numbers / 1_000,
            by_clock / 1_000
        );
    }
    // The same audio under the same number, at both edges and at the new origin itself.
    let new_frames = |got: &[Got]| -> std::collections::HashMap<u32, Vec<u8>> {
        got.iter()
            .filter(|f| f.mixed_at_us > killed_us)
            .map(|f| (f.seq, f.payload.clone()))
            .collect()
    };
    let at_a = new_frames(&got_a);
    for (other, what) in [(&got_b, "the other edge"), (&got_origin, "the new origin")] {
        let theirs = new_frames(other);
        let same_number: Vec<u32> =
            theirs.keys().filter(|s| at_a.contains_key(s)).copied().collect();
        assert!(same_number.len() >= 250, "{what}: {} frames numbered alike", same_number.len());
        let differ = same_number.iter().filter(|s| at_a[*s] != theirs[*s]).count();
        assert_eq!(differ, 0, "{what}: {differ} frames with the same number differ");
        // And each frame of the tone (those alike to no other) under the same number everywhere.
        let mut by_payload: std::collections::HashMap<&[u8], Option<u32>> = Default::default();
        for (s, p) in at_a.iter().filter(|(_, p)| p.len() > 20) {
            by_payload.entry(p.as_slice()).and_modify(|seen| *seen = None).or_insert(Some(*s));
        }
        let tone: Vec<(u32, u32)> = theirs
            .iter()
            .filter_map(|(s, p)| by_payload.get(p.as_slice()).copied().flatten().map(|m| (m, *s)))
            .collect();
        assert!(tone.len() >= 200, "{what}: {} frames of the tone heard on both", tone.len());
        assert!(tone.iter().all(|(mine, theirs)| mine == theirs), "{what}: renumbered");
    }
}
