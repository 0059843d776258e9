//! The `join-storm` scenario: M joins per second, each token → join → first audio frame.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::{Instant, timeout};

use crate::histogram::Histogram;
use crate::http::{self, Opcode, ReadBuf};
use crate::target::Target;

/// A join storm.
#[derive(Debug, Clone)]
pub struct StormConfig {
    /// Server.
    pub target: Target,
    /// Space to join.
    pub space: String,
    /// Joins started per second.
    pub rate: f64,
    /// How long joins keep starting.
    pub duration: Duration,
    /// Each joiner gives up after this long without audio.
    pub deadline: Duration,
    /// Optional bearer token for `join` (anonymous otherwise).
    pub token: Option<String>,
    /// Most joiners in flight at once (bounded by this process's open files).
    pub max_in_flight: usize,
}

/// Outcomes of a storm.
#[derive(Debug, Default)]
pub struct StormStats {
    /// Joins started.
    pub started: AtomicU64,
    /// Joiners that received audio.
    pub admitted: AtomicU64,
    /// Joiners that gave up at the deadline.
    pub timed_out: AtomicU64,
    /// Joiners that failed on the network.
    pub errors: AtomicU64,
    /// Refusals by HTTP status (from join or the WebSocket upgrade).
    pub rejected: Mutex<BTreeMap<u16, u64>>,
    /// Time to first audio, µs.
    pub first_audio: Histogram,
    /// Joiners that had to wait for a free socket in the generator (it was the bottleneck).
    pub generator_waits: AtomicU64,
}

/// A summary of a storm, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// Joins started.
    pub started: u64,
    /// Joiners that received audio.
    pub admitted: u64,
    /// Admitted per second over the run.
    pub admitted_per_s: f64,
    /// Gave up at the deadline.
    pub timed_out: u64,
    /// Network failures.
    pub errors: u64,
    /// Refusals by status.
    pub rejected: BTreeMap<u16, u64>,
    /// Time to first audio, ms.
    pub first_audio_ms: crate::Quantiles,
    /// Joiners delayed by the generator's own socket limit (non-zero: the figures understate
    /// the offered rate).
    pub generator_waits: u64,
}

impl StormStats {
    /// Summarises the storm after `elapsed`.
    pub fn report(&self, elapsed: Duration) -> StormReport {
        let admitted = self.admitted.load(Relaxed);
        StormReport {
            started: self.started.load(Relaxed),
            admitted,
            admitted_per_s: admitted as f64 / elapsed.as_secs_f64().max(0.001),
            timed_out: self.timed_out.load(Relaxed),
            errors: self.errors.load(Relaxed),
            rejected: self.rejected.lock().map(|r| r.clone()).unwrap_or_default(),
            first_audio_ms: crate::Quantiles::of(&self.first_audio),
            generator_waits: self.generator_waits.load(Relaxed),
        }
    }
}

enum Outcome {
    Audio,
    Rejected(u16),
    Error,
}

/// Runs the storm; returns when every joiner has finished.
pub async fn run(cfg: Arc<StormConfig>, stats: Arc<StormStats>) {
    let start = Instant::now();
    let total = (cfg.rate * cfg.duration.as_secs_f64()).round() as usize;
    let mut tasks = tokio::task::JoinSet::new();
    let sockets = Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight.max(1)));
    for n in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / cfg.rate)).await;
        let permit = match sockets.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                stats.generator_waits.fetch_add(1, Relaxed);
                match sockets.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                }
            }
        };
        let (cfg, stats) = (cfg.clone(), stats.clone());
        tasks.spawn(async move {
            let _permit = permit;
            stats.started.fetch_add(1, Relaxed);
            let began = Instant::now();
            match timeout(cfg.deadline, join_once(&cfg, n)).await {
                Ok(Outcome::Audio) => {
                    stats.admitted.fetch_add(1, Relaxed);
                    stats.first_audio.record(began.elapsed().as_micros() as u64);
                }
                Ok(Outcome::Rejected(status)) => {
                    if let Ok(mut r) = stats.rejected.lock() {
                        *r.entry(status).or_default() += 1;
                    }
                }
                Ok(Outcome::Error) => {
                    stats.errors.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    stats.timed_out.fetch_add(1, Relaxed);
                }
            }
        });
        while let Some(done) = tasks.try_join_next() {
            drop(done);
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// One joiner: `POST join`, then the WebSocket with the ticket on the same connection, until the
/// first audio frame.
async fn join_once(cfg: &StormConfig, n: usize) -> Outcome {
    let Ok(mut stream) = http::connect(&cfg.target, cfg.target.source_ip(n)).await else {
        return Outcome::Error;
    };
    let mut buf = ReadBuf::new(4_096);
    let path = format!("/api/v1/spaces/{}/join", cfg.space);
    if http::post(&mut stream, &cfg.target, &path, cfg.token.as_deref(), "").await.is_err() {
        return Outcome::Error;
    }
    let Ok(head) = http::read_head(&mut stream, &mut buf).await else {
        return Outcome::Error;
    };
    let Ok(body) = http::read_body(&mut stream, &mut buf, head).await else {
        return Outcome::Error;
    };
    if head.status != 200 {
        return Outcome::Rejected(head.status);
    }
    let ticket: Option<String> = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_owned));
    let Some(ticket) = ticket else {
        return Outcome::Error;
    };
    let ws_path = format!("/ws/{}?token={ticket}&batch=1", cfg.space);
    let Ok(head) = http::ws_handshake(&mut stream, &cfg.target, &ws_path, &mut buf).await else {
        return Outcome::Error;
    };
    if head.status != 101 {
        return Outcome::Rejected(head.status);
    }
    loop {
        while let Ok(Some((op, _, total))) = http::parse_ws_frame(buf.data()) {
            match op {
                Opcode::Binary => return Outcome::Audio,
                Opcode::Close => return Outcome::Error,
                _ => buf.consume(total),
            }
        }
        match buf.fill(&mut stream).await {
            Ok(0) | Err(_) => return Outcome::Error,
            Ok(_) => {}
        }
    }
}
