//! `townhall-load join-storm` through a cluster's door: Redis (Debian's `redis-server`, started
//! here on a free loopback port), an origin and two edges. Every joiner joins on the origin, is
//! sent to an edge, and hears audio there.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use townhall_server::config::NodeRole;

const BIN: &str = env!("CARGO_BIN_EXE_townhall-load");
const API_KEY: &str = "door-test";
const API_SECRET: &str = "the door test's secret, not for any deployment";

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn redis() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs: install Debian's redis-server");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Redis(child, port)
}

async fn node(role: NodeRole, redis: &Redis, demo: bool) -> townhall_server::Server {
    let config = townhall_server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_key: Some(API_KEY.into()),
        api_secret: Some(API_SECRET.into()),
        demo,
        role,
        redis: Some(format!("redis://127.0.0.1:{}/", redis.1)),
        overload_lag_ms: 0,
        ..Default::default()
    };
    townhall_server::start(config).await.expect("server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_at_the_origins_door_listen_on_the_edges() {
    let redis = redis().await;
    let origin = node(NodeRole::Origin, &redis, true).await;
    let edges =
        [node(NodeRole::Edge, &redis, false).await, node(NodeRole::Edge, &redis, false).await];
    // Wait until the origin's door knows the edges (its join answers name one).
    let client = reqwest_like_join(origin.addr()).await;
    assert!(client, "the origin's door never named an edge");
    let target = format!("http://{}", origin.addr());
    let args: Vec<String> =
        ["join-storm", "--target", &target, "--rate", "40", "--duration", "2", "--json"]
            .map(String::from)
            .to_vec();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(args)
            .envs([("TOWNHALL_API_KEY", API_KEY), ("TOWNHALL_API_SECRET", API_SECRET)])
            .output()
    })
    .await
    .expect("join")
    .expect("townhall-load runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value =
        stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    assert_eq!(report["errors"], 0, "{stdout}");
    assert!(report["started"].as_u64() >= Some(60), "{report}");
    assert_eq!(report["admitted"], report["started"], "{report}");
    assert_eq!(report["redirected"], report["started"], "every joiner went to an edge: {report}");
    drop(edges);
}

/// Joins on `addr` (raw HTTP/1.1) until the answer names a node; `false` after 5 s.
async fn reqwest_like_join(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..50 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let req = "POST /api/v1/spaces/demo/join HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let mut body = Vec::new();
            if s.write_all(req.as_bytes()).await.is_ok()
                && s.read_to_end(&mut body).await.is_ok()
                && String::from_utf8_lossy(&body).contains("\"node\":\"http://127.0.0.1:")
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
