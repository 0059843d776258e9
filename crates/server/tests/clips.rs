//! Clips on a real server: a live space's last seconds and a range of a recording, cut without
//! re-encoding, decoded by ffmpeg to the expected length (within one page) and the 440 Hz tone
//! spoken, the title in the file's tags; the page, the entry, ranges; who may clip (private
//! spaces, removed and blocked people, anonymous callers under attack) and how often; errors as
//! JSON with the right status. And the recording's speaker turns.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use townhall_core::Role;
use townhall_media::analysis::tone_amplitude;
use townhall_server::Config;

const SECOND: Duration = Duration::from_secs(1);

/// One Ogg page of the program stream by default (`ogg_page_ms`), ms.
const PAGE_MS: f64 = 200.0;

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("townhall-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
    let req = http().post(format!("http://{addr}{path}")).json(&body);
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    req.send().await.expect("post")
}

async fn get(addr: SocketAddr, path: &str) -> reqwest::Response {
    http().get(format!("http://{addr}{path}")).send().await.expect("get")
}

async fn created(res: reqwest::Response) -> Value {
    let status = res.status();
    let location = res.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = res.json().await.expect("json");
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("an id");
    assert_eq!(location.as_deref(), Some(format!("/api/v1/clips/{id}").as_str()));
    body
}

fn tools_available() {
    for tool in ["ffprobe", "ffmpeg"] {
        let ok = Command::new(tool).arg("-version").output().is_ok_and(|o| o.status.success());
        assert!(ok, "{tool} not found: install Debian's ffmpeg package");
    }
}

/// What ffprobe says of a file (its duration in seconds and its title tag) and the audio
/// ffmpeg decodes from it (48 kHz mono samples).
fn ffmpeg(bytes: &[u8], name: &str) -> (f64, String, Vec<f32>) {
    let dir = data_dir(&format!("ffclip-{name}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("clip.opus");
    std::fs::write(&path, bytes).expect("write");
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration:stream_tags=title", "-of", "json"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    assert!(probe.status.success(), "ffprobe: {}", String::from_utf8_lossy(&probe.stderr));
    let info: Value = serde_json::from_slice(&probe.stdout).expect("ffprobe json");
    let duration: f64 =
        info["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("a duration");
    let tags = &info["streams"][0]["tags"];
    let title = tags["title"].as_str().or(tags["TITLE"].as_str()).unwrap_or("").to_owned();
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "f32le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let pcm =
        out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let _ = std::fs::remove_dir_all(&dir);
    (duration, title, pcm)
}

/// Asserts `secs` is `want_ms` within one page.
fn within_a_page(what: &str, secs: f64, want_ms: u64) {
    let want = want_ms as f64 / 1_000.0;
    assert!((secs - want).abs() <= PAGE_MS / 1_000.0, "{what}: {secs} s, expected {want} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_clip_and_a_recordings_clip_decode_to_the_tone_with_their_titles() {
    tools_available();
    let dir = data_dir("clips");
    let server = server_with(Config { data_dir: dir.clone(), ..Config::default() }).await;
    let addr = server.addr();
    live_space(addr, "cl").await;
    let on_air = Instant::now();
    let speaker = spawn_speaker(addr, "cl", "alice", 440.0, 9 * SECOND);
    tokio::time::sleep(SECOND).await;
    let res =
        post(addr, "/api/v1/spaces/cl/recording", Some(&host()), json!({"recording": true})).await;
    assert_eq!(res.status(), 200);
    let rec_id = res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(5 * SECOND).await;

    // Live: the last 30 s asked for; the space has been on air ~6 s, so all of it.
    let clip = created(
        post(addr, "/api/v1/spaces/cl/clips", None, json!({"seconds": 30, "title": "Best bit"}))
            .await,
    )
    .await;
    let aired = on_air.elapsed().as_millis() as u64;
    assert_eq!(clip["title"], "Best bit");
    assert_eq!(clip["space"], "cl");
    assert!(clip["recording"].is_null());
    assert!(clip["created_by"].is_null(), "anonymous");
    let duration = clip["duration_ms"].as_u64().expect("duration");
    assert!(duration + 1_500 >= aired && duration <= aired, "{duration} ms of {aired} ms on air");
    let id = clip["id"].as_str().expect("id").to_owned();
    assert_eq!(clip["url"], format!("/clips/{id}"));
    assert_eq!(clip["audio_url"], format!("/clips/{id}.opus"));
    let res = get(addr, &format!("/clips/{id}.opus")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "audio/ogg");
    let bytes = res.bytes().await.expect("body");
    assert_eq!(bytes.len() as u64, clip["bytes"].as_u64().expect("bytes"));
    let (secs, title, pcm) = ffmpeg(&bytes, "live");
    within_a_page("ffprobe's duration of the live clip", secs, duration);
    within_a_page("ffmpeg's decoding of the live clip", pcm.len() as f64 / 48_000.0, duration);
    assert_eq!(title, "Best bit");
    let tail = &pcm[pcm.len() - 96_000..];
    assert!(tone_amplitude(tail, 440.0) > 0.2, "440 Hz in the clip's last 2 s");

    // The entry, the page.
    let entry: Value = get(addr, &format!("/api/v1/clips/{id}")).await.json().await.expect("json");
    assert_eq!(entry["id"], id.as_str());
    let page = get(addr, &format!("/clips/{id}")).await;
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().expect("type").starts_with("text/html"));
    let html = page.text().await.expect("html");
    assert!(html.contains("<h1 id=\"clip-title\">Best bit</h1>"), "{html}");
    assert!(html.contains(&format!("src=\"/clips/{id}.opus\"")), "{html}");
    // Ranges, as players seek.
    let res = http()
        .get(format!("http://{addr}/clips/{id}.opus"))
        .header("range", "bytes=0-99")
        .send()
        .await
        .expect("range");
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.expect("body").len(), 100);

    // The recording: stopped, then clipped from 1 s to 3.5 s.
    let res =
        post(addr, "/api/v1/spaces/cl/recording", Some(&host()), json!({"recording": false})).await;
    assert_eq!(res.status(), 200);
    let rec_path = format!("/api/v1/recordings/{rec_id}/clips");
    let alice = token("alice", Role::Listener, "cl");
    let clip = created(
        post(addr, &rec_path, Some(&alice), json!({"from_ms": 1_000, "to_ms": 3_500})).await,
    )
    .await;
    assert_eq!(clip["recording"], rec_id.as_str());
    assert_eq!(clip["created_by"], "alice");
    assert_eq!((clip["from_ms"].as_u64(), clip["to_ms"].as_u64()), (Some(1_000), Some(3_500)));
    assert_eq!(clip["duration_ms"], 2_500);
    assert_eq!(clip["title"], "Test cl", "the recording's title by default");
    let audio = get(addr, clip["audio_url"].as_str().expect("url")).await;
    let disposition = audio.headers()["content-disposition"].to_str().expect("ascii").to_owned();
    assert!(disposition.starts_with("inline; filename=\"Test-cl-"), "{disposition}");
    let (secs, title, pcm) = ffmpeg(&audio.bytes().await.expect("body"), "rec");
    within_a_page("ffprobe's duration of the recording's clip", secs, 2_500);
    within_a_page("ffmpeg's decoding of the recording's clip", pcm.len() as f64 / 48_000.0, 2_500);
    assert_eq!(title, "Test cl");
    assert!(tone_amplitude(&pcm, 440.0) > 0.2, "440 Hz throughout");

    // The recording knows who spoke when.
    let rec: Value =
        get(addr, &format!("/api/v1/recordings/{rec_id}")).await.json().await.expect("json");
    assert_eq!(rec["speakers"], json!(["alice"]), "{rec}");
    let turn = &rec["turns"][0];
    assert_eq!(turn["speaker"], "alice");
    assert!(turn["start_ms"].as_u64().expect("start") < 500, "{turn}");
    assert!(
        turn["end_ms"].as_u64().expect("end") + 1_000 >= rec["duration_ms"].as_u64().expect("d")
    );

    // Errors, as JSON with the right status.
    let bad = |body: Value| post(addr, &rec_path, None, body);
    assert_error(bad(json!({"from_ms": 3_000, "to_ms": 2_000})).await, 422, "invalid_range").await;
    assert_error(bad(json!({"from_ms": 0, "to_ms": 61_000})).await, 422, "invalid_range").await;
    assert_error(bad(json!({"from_ms": 0, "to_ms": 500})).await, 422, "invalid_range").await;
    assert_error(bad(json!({"from_ms": 60_000, "to_ms": 70_000})).await, 422, "out_of_range").await;
    assert_error(
        bad(json!({"from_ms": 0, "to_ms": 2_000, "title": ""})).await,
        422,
        "invalid_title",
    )
    .await;
    let res = bad(json!({"from": 0})).await;
    assert!(matches!(res.status().as_u16(), 400 | 422), "{}", res.status());
    let res =
        post(addr, "/api/v1/recordings/nope/clips", None, json!({"from_ms": 0, "to_ms": 2_000}))
            .await;
    assert_error(res, 404, "not_found").await;
    let live = |body: Value| post(addr, "/api/v1/spaces/cl/clips", None, body);
    assert_error(live(json!({"seconds": 10})).await, 422, "invalid_seconds").await;
    assert_error(live(json!({"seconds": 61})).await, 422, "invalid_seconds").await;
    assert_error(get(addr, "/api/v1/clips/0123456789abcdef").await, 404, "not_found").await;
    assert_error(get(addr, "/clips/..%2F..%2Fetc%2Fpasswd").await, 404, "not_found").await;
    assert_error(get(addr, "/clips/nope.opus").await, 404, "not_found").await;
    speaker.abort();
    let res = post(addr, "/api/v1/spaces/cl/end", Some(&host()), json!({})).await;
    assert_eq!(res.status(), 200);
    assert_error(live(json!({"seconds": 30})).await, 409, "not_live").await;
    // Clips outlive their space's end.
    assert_eq!(get(addr, &format!("/clips/{id}.opus")).await.status(), 200);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_clip_follows_the_room_and_clips_are_rate_limited() {
    let dir = data_dir("clip-rules");
    let server = server_with(Config { data_dir: dir.clone(), ..Config::default() }).await;
    let addr = server.addr();
    let res = post(
        addr,
        "/api/v1/spaces",
        Some(&host()),
        json!({"id": "priv", "title": "Private", "live": true, "public": false}),
    )
    .await;
    assert_eq!(res.status(), 201);
    tokio::time::sleep(SECOND).await;
    let path = "/api/v1/spaces/priv/clips";
    // A private space: nobody without a token (it does not even exist for them).
    assert_error(post(addr, path, None, json!({})).await, 404, "not_found").await;
    let other = token("lee", Role::Listener, "elsewhere");
    assert_error(post(addr, path, Some(&other), json!({})).await, 404, "not_found").await;
    // A listener with a token for it may; the clip's URLs carry a ticket, not the token.
    let lee = token("lee", Role::Listener, "priv");
    let clip = created(post(addr, path, Some(&lee), json!({})).await).await;
    let id = clip["id"].as_str().expect("id").to_owned();
    assert_eq!(clip["created_by"], "lee");
    let url = clip["audio_url"].as_str().expect("url").to_owned();
    assert!(url.starts_with(&format!("/clips/{id}.opus?token=")), "{url}");
    assert!(!url.contains(&lee), "the caller's own token stays out of URLs");
    assert_eq!(get(addr, &url).await.status(), 200);
    assert_error(get(addr, &format!("/clips/{id}.opus")).await, 401, "unauthorized").await;
    assert_error(get(addr, &format!("/api/v1/clips/{id}")).await, 401, "unauthorized").await;
    let page = clip["url"].as_str().expect("page").to_owned();
    let html = get(addr, &page).await.text().await.expect("html");
    assert!(html.contains("token="), "the page's player carries the ticket: {html}");

    // Removed or blocked by the room: no clips, whatever the token says.
    let rex = token("rex", Role::Listener, "priv");
    let res = post(
        addr,
        "/api/v1/spaces/priv/actions",
        Some(&rex),
        json!({"action": "react", "reaction": "clap"}),
    )
    .await;
    assert_eq!(res.status(), 200, "rex is in");
    for (action, target) in [("remove", "rex"), ("block", "bea")] {
        let body = json!({"action": action, "target": target});
        let res = post(addr, "/api/v1/spaces/priv/actions", Some(&host()), body).await;
        assert_eq!(res.status(), 200, "{action}");
    }
    assert_error(post(addr, path, Some(&rex), json!({})).await, 403, "removed").await;
    let bea = token("bea", Role::Listener, "priv");
    assert_error(post(addr, path, Some(&bea), json!({})).await, 403, "blocked").await;
    let bea_url = format!("/api/v1/clips/{id}?token={bea}");
    assert_error(get(addr, &bea_url).await, 403, "blocked").await;

    // How often: five at once per identity, then one every 10 s.
    for _ in 0..4 {
        created(post(addr, path, Some(&lee), json!({"seconds": 45})).await).await;
    }
    let res = post(addr, path, Some(&lee), json!({})).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 429, "rate_limited").await;

    // A public space under attack: anonymous callers may not clip, token holders may.
    live_space(addr, "pub").await;
    tokio::time::sleep(SECOND).await;
    let res = http()
        .put(format!("http://{addr}/api/v1/admin/shield"))
        .bearer_auth(host())
        .json(&json!({"require_token": true}))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    let res = post(addr, "/api/v1/spaces/pub/clips", None, json!({})).await;
    assert_eq!(res.status(), 401);
    let ann = token("ann", Role::Listener, "pub");
    created(post(addr, "/api/v1/spaces/pub/clips", Some(&ann), json!({})).await).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clip_budget_keeps_the_newest() {
    let dir = data_dir("clip-budget");
    let config = Config { data_dir: dir.clone(), clips_max: 2, ..Config::default() };
    let server = server_with(config).await;
    let addr = server.addr();
    live_space(addr, "b").await;
    tokio::time::sleep(SECOND).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let who = token(&format!("p{n}"), Role::Listener, "b");
        let clip = created(post(addr, "/api/v1/spaces/b/clips", Some(&who), json!({})).await).await;
        ids.push(clip["id"].as_str().expect("id").to_owned());
    }
    assert_error(get(addr, &format!("/api/v1/clips/{}", ids[0])).await, 404, "not_found").await;
    for id in &ids[1..] {
        assert_eq!(get(addr, &format!("/clips/{id}.opus")).await.status(), 200);
    }
    let files = std::fs::read_dir(dir.join("clips")).expect("dir").count();
    assert_eq!(files, 2);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
