//! The instrument is checked too: it counts what a real server sends, sees an injected gap and an
//! injected late frame, and refuses targets outside loopback.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use townhall_media::wire::{ProgramBatchWriter, ProgramFrameView};

const BIN: &str = env!("CARGO_BIN_EXE_townhall-load");
/// The key pair the test server is configured with (there is no built-in one); townhall-load
/// mints its tokens with it from the environment.
const API_KEY: &str = "load-test";
const API_SECRET: &str = "the load tests' secret, not for any deployment";

fn keys_env() -> [(&'static str, &'static str); 2] {
    [("TOWNHALL_API_KEY", API_KEY), ("TOWNHALL_API_SECRET", API_SECRET)]
}

/// Tests here read process-wide server metrics: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn run_load(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(BIN).args(args).envs(keys_env()).output().expect("townhall-load runs");
    parse_output(out)
}

/// Runs the binary off the async runtime (the server under test lives on it).
async fn run_load_async(args: &[&str]) -> (i32, Value, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN).args(&args).envs(keys_env()).output()
    })
    .await
    .expect("join")
    .expect("townhall-load runs");
    parse_output(out)
}

fn parse_output(out: std::process::Output) -> (i32, Value, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json =
        stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_listen_counts_what_the_server_sent() {
    let _serial = SERIAL.lock().await;
    let config = townhall_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_key: Some(API_KEY.into()),
        api_secret: Some(API_SECRET.into()),
        demo: true,
        overload_lag_ms: 0,
        ..Default::default()
    };
    let server = townhall_server::start(config).await.expect("server");
    let target = format!("http://{}", server.addr());
    let args = [
        "listen",
        "--quick",
        "--target",
        &target,
        "--space",
        "demo",
        "--listeners",
        "40",
        "--protocol",
        "ws",
        "--batch",
        "5",
        "--json",
        "--expect",
        "gaps==0,disconnects==0",
    ];
    let (code, report, stderr) = run_load_async(&args).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["connected"], 40);
    let received = report["frames"].as_f64().expect("frames");
    assert!(received >= 40.0 * 100.0, "about 3 s of frames each: {received}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = reqwest_get(server.addr(), "/metrics").await;
    let sent = metric(&metrics, "townhall_frames_sent_total{protocol=\"ws\"}");
    // The server counts a batch once written; frames still in flight when the client stopped
    // reading (at most a few batches per listener) are the only difference.
    assert!(received <= sent, "received {received} > sent {sent}");
    assert!(sent - received <= 40.0 * 15.0, "sent {sent}, received {received}");
    server.shutdown().await;
}

async fn reqwest_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect("read");
    body
}

/// A fake server that sends 100 program frames with seq 50 missing and seq 70 stamped 2 s old.
async fn doctored_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let _ = ws.send(Message::Text(r#"{"type":"hello"}"#.into())).await;
                let mut writer = ProgramBatchWriter::new(1);
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                for seq in 0..100u32 {
                    tick.tick().await;
                    if seq == 50 {
                        continue;
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros() as u64);
                    let mixed_at_us = if seq == 70 { now - 2_000_000 } else { now };
                    let frame = ProgramFrameView {
                        seq,
                        mixed_at_us,
                        capture_age_us: u32::MAX,
                        payload: &[0xF8, 0xFF, 0xFE],
                    };
                    if let Some(batch) = writer.push(&frame)
                        && ws.send(Message::Binary(batch)).await.is_err()
                    {
                        return;
                    }
                }
                let _ = ws.close(None).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_injected_gap_and_late_frame_are_detected() {
    let addr = doctored_server().await;
    let target = format!("http://{addr}");
    let args = [
        "listen",
        "--target",
        &target,
        "--listeners",
        "1",
        "--duration",
        "3",
        "--protocol",
        "ws",
        "--json",
        "--late-ms",
        "500",
    ];
    let (code, report, stderr) = run_load_async(&args).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["frames"], 99, "{report}");
    assert_eq!(report["gaps"], 1, "{report}");
    assert_eq!(report["late_frames"], 1, "{report}");
    assert_eq!(report["disconnects"], 1, "the fake server closes before the end: {report}");
    // And --expect turns that into a failing exit code.
    let args = [
        "listen",
        "--target",
        &target,
        "--listeners",
        "1",
        "--duration",
        "3",
        "--json",
        "--expect",
        "gaps==0",
    ];
    let (code, _, stderr) = run_load_async(&args).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("expected gaps == 0"), "{stderr}");
}

#[test]
fn targets_outside_loopback_are_refused() {
    for target in ["http://192.0.2.1:80", "http://10.1.2.3:8080", "http://[2001:db8::1]:80"] {
        for scenario in ["listen", "speak", "join-storm"] {
            let (code, _, stderr) = run_load(&[scenario, "--target", target, "--quick"]);
            assert_ne!(code, 0, "{scenario} {target}");
            assert!(
                stderr.contains("only sends traffic to loopback"),
                "{scenario} {target}: {stderr}"
            );
        }
    }
}

/// A fake node for speakers: each connection reads a few frames; the first is then sent off
/// with a draining node's `bye` and closed. Counts the connections.
async fn sending_off_server(
    connections: std::sync::Arc<std::sync::atomic::AtomicU32>,
) -> SocketAddr {
    use futures_util::StreamExt;
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let mut frames = 0;
                while let Some(Ok(msg)) = ws.next().await {
                    frames += u32::from(msg.is_binary());
                    if n == 0 && frames == 10 {
                        let bye =
                            r#"{"type":"bye","reason":"server_shutdown","reconnect_after_ms":0}"#;
                        let _ = ws.send(Message::Text(bye.into())).await;
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A WebSocket speaker sent off (or cut off) connects again after the clients' backoff and
/// goes on speaking until its duration is up.
#[tokio::test]
async fn a_speaker_sent_off_connects_again_and_keeps_speaking() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use townhall_load::speak::{self, SpeakConfig, SpeakProtocol, Voice};
    let connections = Arc::new(AtomicU32::new(0));
    let addr = sending_off_server(connections.clone()).await;
    let cfg = SpeakConfig {
        target: townhall_load::target::Target::new(addr).expect("loopback"),
        space: "s".into(),
        token: "t".into(),
        duration: Duration::from_secs(3),
        voice: Voice::Tone(440.0),
        protocol: SpeakProtocol::Ws,
        follow: None,
    };
    let report = speak::run(&cfg).await.expect("speaks");
    assert!(report.reconnects >= 1, "{report:?}");
    assert!(connections.load(Ordering::Relaxed) >= 2, "it came back");
    assert!(report.frames_sent > 10, "and went on speaking: {report:?}");
}

/// `speak --speakers N` puts N speakers on stage from one process, each heard by the mixer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_speak_process_sends_several_speakers() {
    let _serial = SERIAL.lock().await;
    let config = townhall_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_key: Some(API_KEY.into()),
        api_secret: Some(API_SECRET.into()),
        demo: true,
        overload_lag_ms: 0,
        ..Default::default()
    };
    let server = townhall_server::start(config).await.expect("server");
    let speakers = |s: &townhall_server::Server| -> usize {
        s.state().mixer_loads().iter().map(|l| l.speakers).sum()
    };
    // The demo's own bot may be on stage already.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = speakers(&server);
    let target = format!("http://{}", server.addr());
    let args = [
        "speak",
        "--target",
        &target,
        "--space",
        "demo",
        "--speakers",
        "3",
        "--duration",
        "3",
        "--json",
    ];
    let args = args.map(str::to_owned);
    let load = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_load_async(&args).await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while speakers(&server) < before + 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(speakers(&server), before + 3, "three more speakers on the mixers");
    let (code, report, stderr) = load.await.expect("load");
    assert_eq!(code, 0, "{stderr}");
    let sent = report["frames_sent"].as_u64().expect("frames_sent");
    assert!(sent >= 3 * 120, "about 3 s of frames from each of three: {sent}");
    server.shutdown().await;
}
