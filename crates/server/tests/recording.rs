//! Recording and replay on a real server with real files: a tone recorded for ~4 s, stopped,
//! fetched and decoded (libopus and ffmpeg), byte ranges and validators, the errors; ending a
//! space and draining the node finish recordings; and the crash test: the real binary killed
//! with SIGKILL while recording, restarted on the same data directory, recovers the recording
//! with all but at most the last sync interval of its audio.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use townhall_core::Role;
use townhall_media::analysis::{rms, tone_amplitude};
use townhall_media::{OggOpusReader, SAMPLE_RATE};
use townhall_server::Config;

const SECOND: Duration = Duration::from_secs(1);

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("townhall-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn set_recording(addr: SocketAddr, space: &str, token: &str, on: bool) -> reqwest::Response {
    http()
        .post(format!("http://{addr}/api/v1/spaces/{space}/recording"))
        .bearer_auth(token)
        .json(&json!({ "recording": on }))
        .send()
        .await
        .expect("post")
}

async fn get(addr: SocketAddr, path: &str) -> reqwest::Response {
    http().get(format!("http://{addr}{path}")).send().await.expect("get")
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let res = get(addr, path).await;
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.expect("json")
}

/// Audio length of an Ogg/Opus file by its last granule position, seconds.
fn granule_secs(file: &[u8]) -> f64 {
    let read = OggOpusReader::parse(file).expect("valid Ogg/Opus");
    read.last_granule.saturating_sub(u64::from(read.head.pre_skip)) as f64 / f64::from(SAMPLE_RATE)
}

/// Whether the file's last page carries the end-of-stream flag.
fn ends_with_eos(file: &[u8]) -> bool {
    let last = file.windows(4).rposition(|w| w == b"OggS").expect("a page");
    file[last + 5] & 0x04 != 0
}

/// Waits for the room event `{"type": "recording", ...}` on a listener's socket.
async fn recording_event(ws: &mut Ws) -> Value {
    loop {
        let ev = next_json(ws).await;
        if ev["type"] == "recording" {
            return ev;
        }
    }
}

#[tokio::test]
async fn a_recorded_tone_is_replayed_whole_with_ranges_and_validators() {
    let dir = data_dir("recording");
    let (hooks_addr, mut hooks) = hook_receiver().await;
    let webhook_urls = vec![format!("http://{hooks_addr}/hooks")];
    let server =
        server_with(Config { data_dir: dir.clone(), webhook_urls, ..Config::default() }).await;
    let addr = server.addr();
    live_space(addr, "rec").await;
    let mut listener = ws(addr, "/ws/rec").await;
    let speaker = spawn_speaker(addr, "rec", "alice", 440.0, 6 * SECOND);
    tokio::time::sleep(SECOND).await;

    // Who may switch it on, and when.
    let listener_token = token("lee", Role::Listener, "rec");
    assert_error(set_recording(addr, "rec", &listener_token, true).await, 403, "forbidden").await;
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/rec/recording"))
        .json(&json!({ "recording": true }))
        .send()
        .await
        .expect("post");
    assert_error(res, 401, "unauthorized").await;
    assert_error(set_recording(addr, "rec", &host(), false).await, 409, "not_recording").await;
    assert_error(set_recording(addr, "nope", &host(), true).await, 404, "not_found").await;

    let res = set_recording(addr, "rec", &token("co", Role::Cohost, "rec"), true).await;
    assert_eq!(res.status(), 200);
    let started: Value = res.json().await.expect("json");
    let started_at = Instant::now();
    assert_eq!(started["state"], "recording");
    let id = started["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("rec-"), "{id}");
    assert!(started["url"].is_null(), "no file to play yet");
    let ev = recording_event(&mut listener).await;
    assert_eq!((ev["recording"].as_bool(), ev["id"].as_str()), (Some(true), Some(id.as_str())));
    assert_eq!(get_json(addr, "/api/v1/spaces/rec").await["recording"], true);
    assert_error(set_recording(addr, "rec", &host(), true).await, 409, "already_recording").await;
    assert_error(get(addr, &format!("/recordings/{id}.opus")).await, 409, "recording").await;
    let listed = get_json(addr, "/api/v1/recordings?space=rec").await;
    assert_eq!(listed["recordings"][0]["id"], id.as_str());
    assert!(dir.join("recordings").join(format!("{id}.opus.partial")).exists());

    tokio::time::sleep(4 * SECOND).await;
    let res = set_recording(addr, "rec", &host(), false).await;
    let recorded = started_at.elapsed().as_secs_f64();
    assert_eq!(res.status(), 200);
    let done: Value = res.json().await.expect("json");
    assert_eq!(done["state"], "finished", "{done}");
    let duration = done["duration_ms"].as_u64().expect("duration") as f64 / 1_000.0;
    assert!((duration - recorded).abs() < 1.0, "{duration} s recorded in {recorded} s");
    assert_eq!(done["url"], format!("/recordings/{id}.opus"));
    assert_eq!(recording_event(&mut listener).await["recording"], false);
    drop(listener);
    assert_eq!(get_json(addr, "/api/v1/spaces/rec").await["recording"], false);
    assert_error(set_recording(addr, "rec", &host(), false).await, 409, "not_recording").await;
    assert!(!dir.join("recordings").join(format!("{id}.opus.partial")).exists());
    let hook = recording_hook(&mut hooks).await;
    assert_eq!(
        (hook["recording"]["id"].as_str(), hook["space"]["id"].as_str()),
        (Some(id.as_str()), Some("rec"))
    );
    assert_eq!(hook["recording"]["duration_ms"], done["duration_ms"]);
    assert_eq!(hook["recording"]["url"], format!("/recordings/{id}.opus"));

    // The file: whole, decodable, the right length, the tone in it.
    let res = get(addr, &format!("/recordings/{id}.opus")).await;
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(header("content-type"), "audio/ogg");
    assert_eq!(header("accept-ranges"), "bytes");
    assert!(header("content-disposition").starts_with("inline; filename=\"Test-rec-"));
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    assert!(etag.starts_with('"') && !last_modified.is_empty());
    let file = res.bytes().await.expect("body").to_vec();
    assert_eq!(file.len() as u64, done["bytes"].as_u64().expect("bytes"));
    assert!(ends_with_eos(&file), "the last page ends the stream");
    let secs = granule_secs(&file);
    // ~4 s: the 4 s between start and stop, plus however long the stop request took.
    assert!(secs >= 3.0 && (secs - duration).abs() < 0.05, "{secs} s in the file");
    let pcm = decode_ogg(&file);
    assert!((pcm.len() as f64 / 48_000.0 - secs).abs() < 0.05);
    let middle = &pcm[pcm.len() / 4..pcm.len() * 3 / 4];
    let amp = tone_amplitude(middle, 440.0);
    eprintln!("recorded {recorded:.2} s; the file holds {secs:.2} s; 440 Hz at {amp:.2}");
    assert!(amp > 0.25, "the tone is in the recording: {amp}");
    assert!(tone_amplitude(middle, 1_000.0) < 0.02);
    ffmpeg_agrees(&dir, &file, secs);

    // Ranges, validators, download.
    let url = format!("http://{addr}/recordings/{id}.opus");
    let ranged = |range: &str| http().get(&url).header("range", range).send();
    let res = ranged("bytes=100-1099").await.expect("range");
    assert_eq!(res.status(), 206);
    let len = file.len();
    assert_eq!(res.headers()["content-range"], format!("bytes 100-1099/{len}").as_str());
    assert_eq!(res.bytes().await.expect("body"), file[100..1100]);
    let res = ranged("bytes=-50").await.expect("suffix");
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.expect("body"), file[len - 50..]);
    let res = ranged(&format!("bytes={}-", len - 10)).await.expect("open");
    assert_eq!(res.bytes().await.expect("body"), file[len - 10..]);
    let res = ranged(&format!("bytes={len}-")).await.expect("unsatisfiable");
    assert_eq!(res.headers()["content-range"], format!("bytes */{len}").as_str());
    assert_error(res, 416, "range_not_satisfiable").await;
    let res = http()
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .expect("if-range");
    assert_eq!(res.status(), 200, "a stale If-Range gets the whole file");
    let res = http().get(&url).header("if-none-match", &etag).send().await.expect("inm");
    assert_eq!(res.status(), 304);
    let res = http().get(format!("{url}?download=1")).send().await.expect("download");
    assert!(
        res.headers()["content-disposition"].to_str().expect("ascii").starts_with("attachment;")
    );
    let res = http().head(&url).send().await.expect("head");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], len.to_string().as_str());

    // The index, and what is not there.
    let one = get_json(addr, &format!("/api/v1/recordings/{id}")).await;
    assert_eq!((one["state"].as_str(), one["space"].as_str()), (Some("finished"), Some("rec")));
    assert_error(get(addr, "/api/v1/recordings/rec-1-00000000").await, 404, "not_found").await;
    assert_error(get(addr, "/recordings/rec-1-00000000.opus").await, 404, "not_found").await;
    for bad in ["/recordings/..%2F..%2Fetc%2Fpasswd.opus", "/recordings/a.b.opus", "/recordings/x"]
    {
        assert_eq!(get(addr, bad).await.status(), 404, "{bad}");
    }
    assert_error(get(addr, "/api/v1/recordings?space=Bad!").await, 400, "invalid_space_id").await;

    // Ending the space ends its recording, finished.
    speaker.await.expect("speaker");
    let second =
        set_recording(addr, "rec", &host(), true).await.json::<Value>().await.expect("json");
    let second = second["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(SECOND).await;
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/rec/end"))
        .bearer_auth(host())
        .send()
        .await
        .expect("end");
    assert_eq!(res.status(), 200);
    let ended = wait_for_state(addr, &second, "finished").await;
    assert!(ended["duration_ms"].as_u64().is_some_and(|d| d >= 500), "{ended}");
    assert_error(set_recording(addr, "rec", &host(), true).await, 409, "not_live").await;
    let list = get_json(addr, "/api/v1/recordings").await;
    let ids: Vec<&str> = list["recordings"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, vec![second.as_str(), id.as_str()], "newest first");

    // Draining finishes the recordings in progress.
    live_space(addr, "drain").await;
    let third =
        set_recording(addr, "drain", &host(), true).await.json::<Value>().await.expect("json");
    let third = third["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(SECOND).await;
    let app = server.state().clone();
    server.shutdown().await;
    let row = app.store.recording(&third).expect("index").expect("row");
    assert_eq!(row.state, townhall_server::store::RecordingState::Finished);
    let file = std::fs::read(dir.join("recordings").join(format!("{third}.opus"))).expect("file");
    assert!(ends_with_eos(&file) && granule_secs(&file) > 0.5);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A webhook receiver on loopback: every JSON body it gets, in order.
async fn hook_receiver() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
            axum::http::StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

/// The next `recording_finished` webhook (30 s at most).
async fn recording_hook(hooks: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    loop {
        let hook = tokio::time::timeout(30 * SECOND, hooks.recv())
            .await
            .expect("a webhook in time")
            .expect("receiver running");
        if hook["event"] == "recording_finished" {
            return hook;
        }
    }
}

/// Polls the index until recording `id` is in `state` (10 s at most).
async fn wait_for_state(addr: SocketAddr, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let rec = get_json(addr, &format!("/api/v1/recordings/{id}")).await;
        if rec["state"] == state {
            return rec;
        }
        assert!(Instant::now() < deadline, "recording {id} never became {state}: {rec}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ffprobe/ffmpeg, independent Ogg/Opus readers, see the same length (where installed; `.ci/run`
/// installs them).
fn ffmpeg_agrees(dir: &Path, file: &[u8], secs: f64) {
    let ok = Command::new("ffprobe").arg("-version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("ffprobe not installed: skipping the ffmpeg check");
        return;
    }
    let path = dir.join("check.opus");
    std::fs::write(&path, file).expect("write");
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&probe.stdout);
    let probed: f64 = text.trim().parse().unwrap_or(-1.0);
    assert!((probed - secs).abs() < 0.1, "ffprobe says {text:?}, the granules {secs}");
    let decoded = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "f32le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(decoded.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&decoded.stderr));
    let samples = decoded.stdout.len() / 4;
    assert!((samples as f64 / 48_000.0 - secs).abs() < 0.1, "ffmpeg decoded {samples} samples");
}

// ---- the crash test ---------------------------------------------------------------------------

/// The real binary, serving on a free loopback port with `dir` as its data directory.
struct Node {
    child: Child,
    addr: SocketAddr,
    token: String,
}

impl Node {
    fn start(dir: &Path) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_townhall"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("TOWNHALL_LOG", "warn")
            .env_remove("TOWNHALL_API_KEY")
            .env_remove("TOWNHALL_API_SECRET")
            .env_remove("TOWNHALL_CONFIG")
            .env_remove("TOWNHALL_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the townhall binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps reading to the end, so the node never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut token, mut token_next) = (None, None, false);
        let deadline = Instant::now() + 60 * SECOND;
        while addr.is_none() || token.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                rx.recv_timeout(left).expect("the node prints its address and operator token");
            if let Some(url) = line.strip_prefix("Townhall is listening on http://") {
                addr = Some(url.trim().parse::<SocketAddr>().expect("address"));
            } else if token_next {
                token = Some(line.trim().to_owned());
            }
            token_next = line.contains("operator token");
        }
        Node { child, addr: addr.expect("addr"), token: token.expect("token") }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_recording_survives_kill_9_losing_at_most_the_sync_interval() {
    let dir = data_dir("crash");
    let mut node = Node::start(&dir);
    let addr = node.addr;
    // The demo space is live with its built-in speaker reading.
    assert_eq!(get_json(addr, "/api/v1/spaces/demo").await["state"], "live");
    let res = set_recording(addr, "demo", &node.token, true).await;
    assert_eq!(res.status(), 200);
    let started_at = Instant::now();
    let id = res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(5 * SECOND).await;
    node.child.kill().expect("SIGKILL");
    let recorded = started_at.elapsed().as_secs_f64();
    node.child.wait().expect("reaped");
    assert!(dir.join("recordings").join(format!("{id}.opus.partial")).exists());

    let node = Node::start(&dir);
    let addr = node.addr;
    let rec = get_json(addr, &format!("/api/v1/recordings/{id}")).await;
    assert_eq!(rec["state"], "recovered", "{rec}");
    let duration = rec["duration_ms"].as_u64().expect("duration") as f64 / 1_000.0;
    eprintln!("killed after {recorded:.2} s of recording; recovered {duration:.2} s");
    assert!(
        duration >= recorded - 2.0 && duration <= recorded + 1.0,
        "{duration} s recovered of {recorded} s recorded"
    );
    let listed = get_json(addr, "/api/v1/recordings").await;
    assert!(listed["recordings"].as_array().expect("list").iter().any(|r| r["id"] == id.as_str()));
    let res = get(addr, &format!("/recordings/{id}.opus")).await;
    assert_eq!(res.status(), 200);
    let file = res.bytes().await.expect("body").to_vec();
    assert_eq!(file.len() as u64, rec["bytes"].as_u64().expect("bytes"));
    assert!(ends_with_eos(&file), "finalised with an end-of-stream page");
    let secs = granule_secs(&file);
    assert!((secs - duration).abs() < 0.05, "{secs} s in the file, {duration} s in the index");
    let pcm = decode_ogg(&file);
    assert!(pcm.len() as f64 / 48_000.0 >= recorded - 2.0, "{} samples decoded", pcm.len());
    assert!(rms(&pcm) > 0.01, "the demo speech is in the recording (rms {})", rms(&pcm));
    assert!(!dir.join("recordings").join(format!("{id}.opus.partial")).exists());
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
