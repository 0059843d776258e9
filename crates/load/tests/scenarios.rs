//! The shield scenarios against a real server: a quick launch day (incumbents keep every frame,
//! real joiners are admitted or queued, junk is refused, the verdict says attack), a storm of real
//! joiners alone (the verdict says flash crowd, also when they all come from one throttled /24),
//! and Debian's slowhttptest as an independent
//! slowloris (the server keeps admitting joins meanwhile).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_townhall-load");
/// The key pair the test server is configured with (there is no built-in one); townhall-load
/// mints its tokens with it from the environment.
const API_KEY: &str = "load-test";
const API_SECRET: &str = "the load tests' secret, not for any deployment";

fn keys_env() -> [(&'static str, &'static str); 2] {
    [("TOWNHALL_API_KEY", API_KEY), ("TOWNHALL_API_SECRET", API_SECRET)]
}

/// Tests here read the verdict of their own server, but share the machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run_load(args: &[&str]) -> (i32, Value, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN).args(&args).envs(keys_env()).output()
    })
    .await
    .expect("join")
    .expect("townhall-load runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json =
        stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, format!("{stdout}\n{stderr}"))
}

async fn demo_server() -> townhall_server::Server {
    let config = townhall_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_key: Some(API_KEY.into()),
        api_secret: Some(API_SECRET.into()),
        demo: true,
        ..Default::default()
    };
    townhall_server::start(config).await.expect("server")
}

async fn verdict(addr: std::net::SocketAddr, token: &str) -> String {
    let target: townhall_load::target::Target = format!("http://{addr}").parse().expect("target");
    townhall_load::launch_day::verdict(&target, token).await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_launch_day_keeps_the_show_on() {
    let _serial = SERIAL.lock().await;
    let server = demo_server().await;
    let target = format!("http://{}", server.addr());
    // Behaviour, not speed: no incumbent cut, no frame missing from anyone's sequence. Frames
    // the mixer never made while its thread waited for a core (a debug build on a shared
    // machine, this whole storm in one process) show only as a shortfall against wall time:
    // bounded loosely here; the 0.1% target is bench/launch-day's, in release, pinned.
    let expect = "incumbent_lost_percent<2,incumbent_disconnects==0,incumbent_gaps==0,joiners_dropped==0,junk_accepted==0,attack_seen==1";
    let (code, report, output) =
        run_load(&["launch-day", "--quick", "--target", &target, "--json", "--expect", expect])
            .await;
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["incumbents"]["ever_connected"], 200, "{report}");
    assert!(report["joiners"]["admitted"].as_u64().is_some_and(|n| n > 0), "{report}");
    let junk = &report["junk"]["statuses"];
    assert!(
        junk.as_object().is_some_and(|s| !s.is_empty() && s.keys().all(|k| k.starts_with('4'))),
        "{junk}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_joiners_alone_look_like_a_flash_crowd() {
    let _serial = SERIAL.lock().await;
    let server = demo_server().await;
    let addr = server.addr();
    let target = format!("http://{addr}");
    let host = server.host_token().to_owned();
    assert_eq!(verdict(addr, &host).await, "normal");
    let storm = tokio::spawn(async move {
        // Joiners stay past the classifier's bounce time (10 s), as listeners do.
        run_load(&[
            "join-storm",
            "--target",
            &target,
            "--rate",
            "150",
            "--duration",
            "5",
            "--hold-ms",
            "11000",
            "--json",
        ])
        .await
    });
    let mut seen = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        seen.push(verdict(addr, &host).await);
    }
    let (code, report, output) = storm.await.expect("storm");
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(seen.iter().any(|v| v == "flash_crowd"), "verdicts {seen:?}");
    assert!(!seen.iter().any(|v| v == "attack"), "verdicts {seen:?}");
    server.shutdown().await;
}

/// A campus or carrier NAT: everyone from one /24, more requests than the subnet's budget. Its
/// `429`s are throttling, not junk: what gets through joins and listens and stays, so the verdict
/// is a flash crowd (and the budget grows), never an attack (which would squeeze it further).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_crowd_from_one_subnet_is_a_flash_crowd_not_an_attack() {
    let _serial = SERIAL.lock().await;
    let config = townhall_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_key: Some(API_KEY.into()),
        api_secret: Some(API_SECRET.into()),
        demo: true,
        // A small subnet budget, so that a crowd this machine can send overruns it.
        requests_per_subnet: 100,
        request_burst_per_subnet: 200,
        ..Default::default()
    };
    let server = townhall_server::start(config).await.expect("server");
    let addr = server.addr();
    let target = format!("http://{addr}");
    let host = server.host_token().to_owned();
    let storm = tokio::spawn(async move {
        run_load(&[
            "join-storm",
            "--target",
            &target,
            "--subnets",
            "1",
            "--rate",
            "150",
            "--duration",
            "5",
            "--hold-ms",
            "11000",
            "--deadline-ms",
            "15000",
            "--json",
        ])
        .await
    });
    let mut seen = Vec::new();
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        seen.push(verdict(addr, &host).await);
    }
    let (code, report, output) = storm.await.expect("storm");
    assert_eq!(code, 0, "{output}");
    assert!(report["rate_limited_retries"].as_u64() > Some(0), "the crowd was throttled: {report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["rejected"], serde_json::json!({}), "{report}");
    assert!(seen.iter().any(|v| v == "flash_crowd"), "verdicts {seen:?}");
    assert!(!seen.iter().any(|v| v == "attack"), "verdicts {seen:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowhttptest_does_not_stop_joins() {
    let _serial = SERIAL.lock().await;
    let ok = Command::new("slowhttptest")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "slowhttptest not found: install Debian's slowhttptest package (apt-get install slowhttptest)"
    );
    let config = townhall_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_key: Some(API_KEY.into()),
        api_secret: Some(API_SECRET.into()),
        demo: true,
        header_timeout_secs: 5,
        ..Default::default()
    };
    let server = townhall_server::start(config).await.expect("server");
    let addr = server.addr();
    let url = format!("http://{addr}/api/v1/spaces");
    // 200 slow-header connections from one address, 10 s: the per-address cap and the header
    // timeout hold them off.
    let mut slow = Command::new("slowhttptest")
        .args(["-H", "-c", "200", "-r", "100", "-i", "2", "-l", "10", "-u", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("slowhttptest starts");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let client = reqwest_like_join(addr).await;
    let _ = slow.kill();
    let _ = slow.wait();
    assert_eq!(client, 200, "a join during slowhttptest");
    server.shutdown().await;
}

/// POSTs a join from another loopback address on a raw connection; returns the status.
async fn reqwest_like_join(addr: std::net::SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.77:0".parse().expect("addr")).expect("bind");
    let mut stream = socket.connect(addr).await.expect("connect");
    let req = format!(
        "POST /api/v1/spaces/demo/join HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply))
        .await
        .expect("in time")
        .expect("read");
    reply.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_that_never_read_are_cut() {
    let _serial = SERIAL.lock().await;
    let config = townhall_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_key: Some(API_KEY.into()),
        api_secret: Some(API_SECRET.into()),
        demo: true,
        stall_timeout_secs: 1,
        socket_send_buffer: Some(4_096),
        overload_lag_ms: 0,
        ..Default::default()
    };
    let server = townhall_server::start(config).await.expect("server");
    let target = format!("http://{}", server.addr());
    let (code, report, output) = run_load(&[
        "slowread",
        "--target",
        &target,
        "--connections",
        "30",
        "--duration",
        "8",
        "--json",
        "--expect",
        "held==0",
    ])
    .await;
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["opened"], 30, "{report}");
    assert_eq!(report["cut"], 30, "{report}");
    server.shutdown().await;
}
