//! The processes of a cluster on loopback: a `redis-server` of the test's own, and Townhall
//! nodes run as the real binary (so they can be killed, stopped and signalled like the real
//! thing).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TEST_API_KEY, TEST_API_SECRET};

/// A free loopback port (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `redis-server` on a free loopback port; killed on drop.
pub struct RedisServer {
    /// The process.
    pub child: Child,
    /// Its port.
    pub port: u16,
}

impl RedisServer {
    /// Starts one (Debian's `redis-server` must be installed).
    pub async fn start() -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs: apt-get install redis-server");
        let redis = RedisServer { child, port };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        let mut c = redis::Client::open(self.url()).and_then(|c| c.get_connection()).ok()?;
        redis::cmd("GET").arg(key).query(&mut c).ok()?
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Townhall node in a process of its own (the binary under test); killed on drop.
pub struct NodeProcess {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl NodeProcess {
    /// Starts `townhall serve --role ROLE --redis URL --node-id NAME` with the test keys and a
    /// data directory of its own, and waits for it to listen.
    pub fn start(role: &str, redis: &str, name: &str) -> NodeProcess {
        NodeProcess::start_with(role, redis, name, &[])
    }

    /// [`NodeProcess::start`] with `extra` arguments (e.g. `--drain-secs 3`).
    pub fn start_with(role: &str, redis: &str, name: &str, extra: &[&str]) -> NodeProcess {
        use std::io::{BufRead, BufReader};
        let dir = std::env::temp_dir().join(format!(
            "townhall-{name}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_townhall"))
            .args(["serve", "--listen", "127.0.0.1:0", "--no-demo", "--role", role, "--redis"])
            .arg(redis)
            .args(["--node-id", name, "--data-dir"])
            .arg(&dir)
            .args(extra)
            .env("TOWNHALL_LOG", "warn")
            .env("TOWNHALL_API_KEY", TEST_API_KEY)
            .env("TOWNHALL_API_SECRET", TEST_API_SECRET)
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
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("the node prints its address");
            if let Some(url) = line.strip_prefix("Townhall is listening on http://") {
                break url.trim().trim_end_matches('/').parse::<SocketAddr>().expect("address");
            }
        };
        NodeProcess { child, addr, dir }
    }

    /// Sends `signal` (e.g. "KILL", "STOP", "CONT", "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's nginx as a cache in front of Townhall nodes, configured from
/// `deploy/nginx/townhall-edge.conf` with one `server` line per node; stopped on drop.
pub struct NginxCache {
    child: Child,
    dir: std::path::PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl NginxCache {
    /// Starts one in front of `upstreams` (each named on its own `server` line).
    pub fn start(upstreams: &[SocketAddr]) -> NginxCache {
        const NGINX: &str = "/usr/sbin/nginx";
        assert!(
            std::path::Path::new(NGINX).exists(),
            "{NGINX} not found: install Debian's nginx package (apt-get install nginx)"
        );
        let dir = std::env::temp_dir().join(format!(
            "townhall-nginx-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("nginx dir");
        let port = free_port();
        let template = include_str!("../../../../deploy/nginx/townhall-edge.conf");
        let line = "        server {origin} max_fails=1 fail_timeout=5s;\n";
        assert!(template.contains(line), "the template names one upstream server per line");
        let servers: String =
            upstreams.iter().map(|a| line.replace("{origin}", &a.to_string())).collect();
        let mut conf = template
            .replace(line, &servers)
            .replace("{workers}", "1")
            .replace("{dir}", &dir.display().to_string())
            .replace("{listen}", &format!("127.0.0.1:{port}"));
        // As root, keep the workers root too: they write the cache into this private directory.
        if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0")) {
            conf = format!("user root;\n{conf}");
        }
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("nginx conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let cache = NginxCache { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen: {:?}", cache.dir);
            std::thread::sleep(Duration::from_millis(50));
        }
        cache
    }
}

impl Drop for NginxCache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
