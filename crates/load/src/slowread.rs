//! The `slowread` scenario: listeners that connect and then never read, with a tiny receive
//! buffer, so the server's writes back up. A server that protects itself cuts them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio::time::Instant;

use crate::http::{self, ReadBuf};
use crate::target::Target;

/// A slow-read run.
#[derive(Debug, Clone)]
pub struct SlowreadConfig {
    /// Server.
    pub target: Target,
    /// Path of the stream to open (WebSocket or Ogg).
    pub path: String,
    /// Listeners that will not read.
    pub connections: usize,
    /// How long they sit.
    pub duration: Duration,
}

/// What happened to them.
#[derive(Debug, Default)]
pub struct SlowreadStats {
    /// Connections whose stream opened.
    pub opened: AtomicU64,
    /// Could not open.
    pub failed: AtomicU64,
    /// Found closed by the server at the end.
    pub cut: AtomicU64,
    /// Still open at the end.
    pub held: AtomicU64,
}

/// A summary.
#[derive(Debug, Clone, Serialize)]
pub struct SlowreadReport {
    /// Opened.
    pub opened: u64,
    /// Could not open.
    pub failed: u64,
    /// Cut by the server.
    pub cut: u64,
    /// Still open.
    pub held: u64,
}

impl SlowreadStats {
    /// Summarises the run.
    pub fn report(&self) -> SlowreadReport {
        SlowreadReport {
            opened: self.opened.load(Relaxed),
            failed: self.failed.load(Relaxed),
            cut: self.cut.load(Relaxed),
            held: self.held.load(Relaxed),
        }
    }
}

async fn one(cfg: &SlowreadConfig, stats: &SlowreadStats, n: usize, end: Instant) {
    let opened = async {
        let socket =
            if cfg.target.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_recv_buffer_size(2_048)?;
        socket.bind(std::net::SocketAddr::new(cfg.target.source_ip(n), 0))?;
        let mut stream = socket.connect(cfg.target.addr).await?;
        let mut buf = ReadBuf::new(2_048);
        let head = if cfg.path.starts_with("/ws/") {
            http::ws_handshake(&mut stream, &cfg.target, &cfg.path, &mut buf).await?
        } else {
            http::get(&mut stream, &cfg.target, &cfg.path, "").await?;
            http::read_head(&mut stream, &mut buf).await?
        };
        if matches!(head.status, 101 | 200) {
            Ok(stream)
        } else {
            Err(std::io::Error::other("refused"))
        }
    };
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(10), opened).await else {
        stats.failed.fetch_add(1, Relaxed);
        return;
    };
    stats.opened.fetch_add(1, Relaxed);
    tokio::time::sleep_until(end).await;
    // Now drain what is buffered: a cut connection ends in EOF or a reset.
    let mut sink = vec![0u8; 64 * 1024];
    let cut = loop {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => continue,
            Err(_) => break false,
        }
    };
    if cut {
        stats.cut.fetch_add(1, Relaxed);
    } else {
        stats.held.fetch_add(1, Relaxed);
    }
}

/// Opens the listeners, lets them sit without reading, then checks which were cut.
pub async fn run(cfg: Arc<SlowreadConfig>, stats: Arc<SlowreadStats>) {
    let end = Instant::now() + cfg.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..cfg.connections {
        let (cfg, stats) = (cfg.clone(), stats.clone());
        tasks.spawn(async move { one(&cfg, &stats, n, end).await });
    }
    while tasks.join_next().await.is_some() {}
}
