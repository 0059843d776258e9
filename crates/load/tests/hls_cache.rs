//! LL-HLS behind a real cache: Debian's nginx, configured from `deploy/nginx/townhall-edge.conf`,
//! in front of a Townhall origin on loopback; a thousand HLS listeners through nginx; the origin
//! serves each part a handful of times, not once per listener.

use std::process::{Child, Command, Stdio};
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
const NGINX: &str = "/usr/sbin/nginx";

/// nginx, stopped when dropped.
struct Nginx {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn start_nginx(origin: std::net::SocketAddr) -> (Nginx, u16) {
    assert!(
        std::path::Path::new(NGINX).exists(),
        "{NGINX} not found: install Debian's nginx package (apt-get install nginx)"
    );
    let dir = std::env::temp_dir().join(format!("townhall-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let template = include_str!("../../../deploy/nginx/townhall-edge.conf");
    let mut conf = template
        .replace("{workers}", "1")
        .replace("{dir}", &dir.display().to_string())
        .replace("{origin}", &origin.to_string())
        .replace("{listen}", &format!("127.0.0.1:{port}"));
    // As root, keep the workers root too: they write the cache into this private directory.
    if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0")) {
        conf = format!("user root;\n{conf}");
    }
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("conf");
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let nginx = Nginx { child, dir };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (nginx, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nginx did not listen; see {}", nginx.dir.join("error.log").display());
}

async fn origin_metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_listeners_behind_nginx_cost_the_origin_a_few_requests_per_part() {
    let config = townhall_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_key: Some(API_KEY.into()),
        api_secret: Some(API_SECRET.into()),
        demo: true,
        overload_lag_ms: 0,
        trusted_proxies: "127.0.0.1".parse().expect("trusted proxies"),
        ..Default::default()
    };
    let server = townhall_server::start(config).await.expect("origin");
    let origin = server.addr();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_nginx, port) = start_nginx(origin);

    let parts = "townhall_hls_requests_total{kind=\"part\"}";
    let blocking = "townhall_hls_requests_total{kind=\"blocking_playlist\"}";
    let (parts_before, blocking_before) =
        (origin_metric(origin, parts).await, origin_metric(origin, blocking).await);
    let target = format!("http://127.0.0.1:{port}");
    let args: Vec<String> = [
        "listen",
        "--target",
        &target,
        "--space",
        "demo",
        "--protocol",
        "hls",
        "--listeners",
        "1000",
        "--ramp",
        "1000",
        "--duration",
        "6",
        "--late-ms",
        "3000",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN).args(&args).envs(keys_env()).output()
    })
    .await
    .expect("join")
    .expect("townhall-load runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: Value =
        stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report["connected"], 1000, "{report}");
    let frames = report["frames"].as_f64().expect("frames");
    let late = report["late_frames"].as_f64().expect("late");
    assert!(frames >= 1000.0 * 50.0 * 5.0 * 0.8, "listeners got {frames} frames through the cache");
    assert!(late / frames < 0.01, "{late} of {frames} frames more than 3 s behind");

    let parts_served = origin_metric(origin, parts).await - parts_before;
    let blocking_served = origin_metric(origin, blocking).await - blocking_before;
    // About 7 s of stream = 35 parts; the listeners fetched ~35,000 parts and as many playlists.
    let fetched = frames / 10.0;
    eprintln!(
        "through nginx: {fetched} parts fetched by 1000 listeners; origin served {parts_served} parts and {blocking_served} blocking playlists; latency {}",
        report["latency_ms"]
    );
    assert!(parts_served <= 3.0 * 40.0, "origin served {parts_served} parts for {fetched} fetched");
    assert!(blocking_served <= 3.0 * 40.0, "origin served {blocking_served} blocking playlists");
    assert!(fetched / parts_served.max(1.0) > 100.0, "the cache answered most requests");
    server.shutdown().await;
}
