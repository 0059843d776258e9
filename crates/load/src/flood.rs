//! The `flood` scenario: junk at a given rate from many loopback source addresses: unknown paths,
//! bad tokens, oversize headers, bogus WebSocket upgrades, connection churn. Each junk request
//! opens its own connection (as a botnet's do), sends, reads the answer, closes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, timeout};

use crate::histogram::Histogram;
use crate::http::{self, ReadBuf};
use crate::target::Target;

/// Kinds of junk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Junk {
    /// `GET` of a random path (404).
    Paths,
    /// `join` with a forged bearer token (401).
    Tokens,
    /// A request head of 20 KiB (431).
    Headers,
    /// A speaker WebSocket upgrade with a forged token (401).
    Websocket,
    /// Connect and close without a request.
    Churn,
}

/// A flood.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    /// Server.
    pub target: Target,
    /// Space named in the junk.
    pub space: String,
    /// Junk requests per second.
    pub rate: f64,
    /// How long.
    pub duration: Duration,
    /// The mix, taken in turn.
    pub mix: Vec<Junk>,
    /// Most requests in flight at once.
    pub max_in_flight: usize,
    /// Source addresses are 127.66.0.(1 + n mod this).
    pub sources: usize,
}

/// What the flood saw.
#[derive(Debug, Default)]
pub struct FloodStats {
    /// Junk sent.
    pub sent: AtomicU64,
    /// Answers by HTTP status (0: closed without an answer).
    pub statuses: Mutex<BTreeMap<u16, u64>>,
    /// Could not connect or timed out.
    pub errors: AtomicU64,
    /// Time from sending to the answer, µs.
    pub answer: Histogram,
}

/// A summary of a flood.
#[derive(Debug, Clone, Serialize)]
pub struct FloodReport {
    /// Junk sent.
    pub sent: u64,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Connection errors and timeouts.
    pub errors: u64,
    /// Time to the answer, ms.
    pub answer_ms: crate::Quantiles,
}

impl FloodStats {
    /// Summarises the flood.
    pub fn report(&self) -> FloodReport {
        FloodReport {
            sent: self.sent.load(Relaxed),
            statuses: self.statuses.lock().map(|s| s.clone()).unwrap_or_default(),
            errors: self.errors.load(Relaxed),
            answer_ms: crate::Quantiles::of(&self.answer),
        }
    }
}

fn request(kind: Junk, target: &Target, space: &str, n: usize) -> Vec<u8> {
    let host = target.addr;
    match kind {
        Junk::Paths => format!("GET /no-such-{n:x} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
        Junk::Tokens => format!(
            "POST /api/v1/spaces/{space}/join HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer forged.{n:x}.token\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
        Junk::Headers => {
            let filler = "x".repeat(20 * 1024);
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Junk: {filler}\r\n\r\n").into_bytes()
        }
        Junk::Websocket => format!(
            "GET /ws/{space}?mode=speak&token=forged{n:x} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes(),
        Junk::Churn => Vec::new(),
    }
}

async fn one(cfg: &FloodConfig, stats: &FloodStats, n: usize) {
    let kind = cfg.mix[n % cfg.mix.len().max(1)];
    let source = cfg.target.junk_source_ip(n % cfg.sources.max(1));
    stats.sent.fetch_add(1, Relaxed);
    let attempt = timeout(Duration::from_secs(5), async {
        let mut stream = http::connect(&cfg.target, source).await.ok()?;
        let bytes = request(kind, &cfg.target, &cfg.space, n);
        if bytes.is_empty() {
            return Some(0);
        }
        let sent = Instant::now();
        // The server may answer (and close) before reading all of an oversize head.
        let _ = stream.write_all(&bytes).await;
        let mut buf = ReadBuf::new(2_048);
        let status = http::read_head(&mut stream, &mut buf).await.map(|h| h.status).unwrap_or(0);
        stats.answer.record(sent.elapsed().as_micros() as u64);
        Some(status)
    })
    .await;
    match attempt {
        Ok(Some(status)) if kind != Junk::Churn => {
            if let Ok(mut s) = stats.statuses.lock() {
                *s.entry(status).or_default() += 1;
            }
        }
        Ok(Some(_)) => {}
        _ => {
            stats.errors.fetch_add(1, Relaxed);
        }
    }
}

/// Runs the flood until its duration ends and every request is answered.
pub async fn run(cfg: Arc<FloodConfig>, stats: Arc<FloodStats>) {
    let start = Instant::now();
    let total = (cfg.rate * cfg.duration.as_secs_f64()).round() as usize;
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / cfg.rate)).await;
        let Ok(permit) = slots.clone().acquire_owned().await else { break };
        let (cfg, stats) = (cfg.clone(), stats.clone());
        tasks.spawn(async move {
            let _permit = permit;
            one(&cfg, &stats, n).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}
