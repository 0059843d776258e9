//! Audio end to end: real speakers over WebSocket, real listeners over WebSocket and Ogg/HTTP,
//! real Opus through libopus, checked by frequency and level.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use townhall_media::analysis::{rms, tone_amplitude};
use townhall_server::Config;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_tone_reaches_websocket_and_ogg_listeners() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "tone").await;
    let mut listener = ws(addr, "/ws/tone").await;
    let hello = next_json(&mut listener).await;
    assert_eq!(
        (hello["type"].as_str(), hello["codec"]["name"].as_str()),
        (Some("hello"), Some("opus"))
    );
    let ogg = tokio::spawn(async move {
        capture_http(&format!("http://{addr}/live/tone.opus"), 4 * SECOND).await
    });
    let speaker = spawn_speaker(addr, "tone", "alice", 440.0, 4 * SECOND);
    let heard = listen_ws(listener, 4 * SECOND).await;

    assert!(heard.seqs.len() >= 150, "only {} frames in 4 s", heard.seqs.len());
    assert_eq!(heard.gaps(), 0, "sequence numbers are continuous");
    let tail = heard.tail(1.0);
    let at_440 = tone_amplitude(tail, 440.0);
    assert!(at_440 > 0.25, "440 Hz amplitude over WebSocket: {at_440}");
    assert!(tone_amplitude(tail, 1_000.0) < 0.02, "no energy where no tone was sent");

    let (status, body) = ogg.await.expect("ogg task");
    assert_eq!(status, 200);
    let pcm = decode_ogg(&body);
    let ogg_tail = &pcm[pcm.len().saturating_sub(48_000)..];
    let ogg_440 = tone_amplitude(ogg_tail, 440.0);
    assert!(ogg_440 > 0.25, "440 Hz amplitude over Ogg: {ogg_440}");
    speaker.await.expect("speaker");
    server.shutdown().await;
}

#[tokio::test]
async fn two_speakers_are_both_heard_and_neither_hears_itself() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "duet").await;
    let listener = ws(addr, "/ws/duet?batch=5").await;
    let low = spawn_speaker(addr, "duet", "low", 440.0, 4 * SECOND);
    let high = spawn_speaker(addr, "duet", "high", 660.0, 4 * SECOND);
    let heard = listen_ws(listener, 4 * SECOND).await;
    let tail = heard.tail(1.0);
    let (a, b) = (tone_amplitude(tail, 440.0), tone_amplitude(tail, 660.0));
    assert!(a > 0.2 && b > 0.2, "program has 440 Hz at {a} and 660 Hz at {b}");
    assert_eq!(heard.gaps(), 0);

    let low_heard = low.await.expect("low speaker");
    let high_heard = high.await.expect("high speaker");
    let low_tail = low_heard.tail(1.0);
    assert!(tone_amplitude(low_tail, 660.0) > 0.2, "low speaker hears high");
    assert!(tone_amplitude(low_tail, 440.0) < 0.05, "low speaker does not hear itself");
    let high_tail = high_heard.tail(1.0);
    assert!(tone_amplitude(high_tail, 440.0) > 0.2, "high speaker hears low");
    assert!(tone_amplitude(high_tail, 660.0) < 0.05, "high speaker does not hear itself");
    server.shutdown().await;
}

/// A speaker sending silence hears the program itself (no mix-minus is encoded for them), with
/// every other voice in it, while the talkers still never hear themselves.
#[tokio::test]
async fn a_silent_speaker_hears_everyone_and_talkers_still_not_themselves() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "trio").await;
    let low = spawn_speaker(addr, "trio", "low", 440.0, 4 * SECOND);
    let high = spawn_speaker(addr, "trio", "high", 660.0, 4 * SECOND);
    let quiet = spawn_speaker_at(addr, "trio", "quiet", 880.0, 0.0, 4 * SECOND);
    let (low, high, quiet) = (low.await.expect("low"), high.await.expect("high"), quiet.await);
    let quiet_tail = quiet.expect("quiet speaker");
    let quiet_tail = quiet_tail.tail(1.0);
    assert!(tone_amplitude(quiet_tail, 440.0) > 0.2, "the silent speaker hears low");
    assert!(tone_amplitude(quiet_tail, 660.0) > 0.2, "the silent speaker hears high");
    assert!(tone_amplitude(low.tail(1.0), 440.0) < 0.05, "low speaker does not hear itself");
    assert!(tone_amplitude(low.tail(1.0), 660.0) > 0.2, "low speaker hears high");
    assert!(tone_amplitude(high.tail(1.0), 660.0) < 0.05, "high speaker does not hear itself");
    server.shutdown().await;
}

/// ffprobe and ffmpeg are independent Ogg/Opus implementations; `.ci/run` installs them.
fn ffmpeg_tools() {
    for tool in ["ffprobe", "ffmpeg"] {
        let ok = Command::new(tool).arg("-version").output().is_ok_and(|o| o.status.success());
        assert!(ok, "{tool} not found: install Debian's ffmpeg package (apt-get install ffmpeg)");
    }
}

#[tokio::test]
async fn a_late_ogg_joiner_gets_headers_first_and_ffmpeg_decodes_it() {
    ffmpeg_tools();
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "late").await;
    let speaker = spawn_speaker(addr, "late", "alice", 440.0, 6 * SECOND);
    tokio::time::sleep(2 * SECOND).await;
    let (status, body) = capture_http(&format!("http://{addr}/live/late.opus"), 3 * SECOND).await;
    assert_eq!(status, 200);
    assert!(body.starts_with(b"OggS"), "the stream starts with an Ogg page");
    assert_eq!(&body[28..36], b"OpusHead", "the first page holds the Opus ID header");
    let ours = decode_ogg(&body);
    assert!(tone_amplitude(&ours[ours.len().saturating_sub(48_000)..], 440.0) > 0.25);

    let dir = std::env::temp_dir().join(format!("townhall-late-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("late.opus");
    std::fs::write(&file, &body).expect("write capture");
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,channels,sample_rate",
            "-of",
            "json",
        ])
        .arg(&file)
        .output()
        .expect("ffprobe runs");
    let info: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("ffprobe json");
    let stream = &info["streams"][0];
    assert_eq!(stream["codec_name"], "opus", "ffprobe says {info}");
    assert_eq!(stream["channels"], 1);
    let decoded = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "f32le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(decoded.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&decoded.stderr));
    let pcm: Vec<f32> = decoded
        .stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert!(pcm.len() > 48_000, "ffmpeg decoded {} samples", pcm.len());
    let amp = tone_amplitude(&pcm[pcm.len() - 48_000..], 440.0);
    assert!(amp > 0.25, "ffmpeg hears 440 Hz at {amp}");
    let _ = std::fs::remove_dir_all(&dir);
    speaker.await.expect("speaker");
    server.shutdown().await;
}

#[tokio::test]
async fn the_program_keeps_running_through_a_speaker_disconnect_and_reconnect() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "relay").await;
    let listener = ws(addr, "/ws/relay").await;
    let listening = tokio::spawn(listen_ws(listener, 7 * SECOND));
    spawn_speaker(addr, "relay", "alice", 440.0, 2 * SECOND).await.expect("first session");
    tokio::time::sleep(2 * SECOND).await;
    spawn_speaker(addr, "relay", "alice", 440.0, 2 * SECOND).await.expect("second session");
    let heard = listening.await.expect("listener");
    assert_eq!(heard.gaps(), 0, "no program frame lost across the disconnect");
    assert!(heard.seqs.len() >= 300, "{} frames in 7 s", heard.seqs.len());
    // Second by second: tone, silence in the gap, tone again.
    let per_second: Vec<f32> = heard.pcm.chunks(48_000).map(|s| tone_amplitude(s, 440.0)).collect();
    let silent = per_second.iter().filter(|a| **a < 0.01).count();
    let loud = per_second.iter().filter(|a| **a > 0.2).count();
    assert!(silent >= 1, "silence while nobody speaks: {per_second:?}");
    assert!(loud >= 2, "tone in both sessions: {per_second:?}");
    let silent_then_loud = per_second.windows(2).any(|w| w[0] < 0.01 && w[1] > 0.1);
    assert!(silent_then_loud, "the tone comes back after the reconnect: {per_second:?}");
    assert!(rms(heard.tail(0.5)) < 0.05, "silence after the last session");
    server.shutdown().await;
}

#[tokio::test]
async fn the_ogg_stream_also_plays_on_a_reused_keep_alive_connection() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "reuse").await;
    let speaker = spawn_speaker(addr, "reuse", "alice", 440.0, 4 * SECOND);
    // One client: its API request opens the connection, the stream request reuses it, so it is
    // served through the router rather than from the raw socket.
    let client = http();
    let view = client.get(format!("http://{addr}/api/v1/spaces/reuse")).send().await.expect("get");
    assert_eq!(view.status(), 200);
    view.bytes().await.expect("body");
    let mut res =
        client.get(format!("http://{addr}/live/reuse.opus")).send().await.expect("stream");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "audio/ogg");
    let mut body = Vec::new();
    let deadline = tokio::time::Instant::now() + 3 * SECOND;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, res.chunk()).await {
        body.extend_from_slice(&chunk);
    }
    let pcm = decode_ogg(&body);
    let amp = tone_amplitude(&pcm[pcm.len().saturating_sub(48_000)..], 440.0);
    assert!(amp > 0.25, "440 Hz over the routed stream: {amp}");
    speaker.await.expect("speaker");
    server.shutdown().await;
}

/// A one-frame listener that comes back naming the next frame it needs hears every frame it
/// missed (the node keeps 5 s), then live ones, with no gap and no repeat: how an edge's relay
/// resumes after a broken link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_frame_listener_resumes_without_a_gap() {
    let server = demo_server(Config::default()).await;
    let addr = server.addr();
    let before = listen_ws(ws(addr, "/ws/demo?batch=1").await, Duration::from_millis(600)).await;
    let last = *before.seqs.last().expect("heard frames before leaving");
    // About 40 frames are mixed while it is away.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let path = format!("/ws/demo?batch=1&from={}", last + 1);
    let after = listen_ws(ws(addr, &path).await, Duration::from_millis(600)).await;
    assert_eq!(after.seqs.first(), Some(&(last + 1)), "resumes at the frame after the last heard");
    assert_eq!(after.gaps(), 0, "no frame missing: {:?}", after.seqs);
    assert!(after.seqs.len() >= 50, "the missed frames and live ones: {} frames", after.seqs.len());
    assert!(after.seqs.windows(2).all(|w| w[1] == w[0] + 1), "no repeat, in order");

    // Resuming is for one-frame messages only.
    let res =
        http().get(format!("http://{addr}/ws/demo?batch=5&from=1")).send().await.expect("request");
    assert_error(res, 400, "bad_query").await;
}
