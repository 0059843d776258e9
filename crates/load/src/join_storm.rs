//! The `join-storm` scenario: M joins per second, each token → join (waiting in line when told
//! to) → WebSocket → first audio frame, then optionally staying to listen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::Conn;
use serde::Serialize;
use tokio::time::{Instant, timeout_at};

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
    /// A joiner gives up when it has no audio this long after starting (waiting included).
    pub deadline: Duration,
    /// After the first audio frame, keep listening this long (0: leave at once).
    pub hold: Duration,
    /// Optional bearer token for `join` (anonymous otherwise).
    pub token: Option<String>,
    /// Most joiners in flight at once (bounded by this process's open files).
    pub max_in_flight: usize,
    /// Joiners come from this many /24s (0: spread over 250, as a crowd from everywhere).
    pub subnets: usize,
    /// Frames per WebSocket message once listening (1: the lowest latency to first audio; 5:
    /// what the page asks for, the cheapest to serve).
    pub batch: usize,
}

/// Outcomes of a storm.
#[derive(Debug, Default)]
pub struct StormStats {
    /// Joins started.
    pub started: AtomicU64,
    /// Joiners that received audio.
    pub admitted: AtomicU64,
    /// Of those, how many waited in the waiting room first.
    pub admitted_after_waiting: AtomicU64,
    /// Joiners still holding a waiting-room ticket at their deadline (queued, not dropped).
    pub queued: AtomicU64,
    /// Joiners with neither audio nor a ticket at their deadline.
    pub timed_out: AtomicU64,
    /// Joiners that failed on the network or got a malformed answer.
    pub errors: AtomicU64,
    /// Joiners whose listening connection was lost during the hold.
    pub dropped_while_listening: AtomicU64,
    /// `429` (and a busy door's `503`) answers that were retried after `Retry-After`.
    pub rate_limited_retries: AtomicU64,
    /// Final refusals by HTTP status.
    pub rejected: Mutex<BTreeMap<u16, u64>>,
    /// Time to first audio, µs (waiting included).
    pub first_audio: Histogram,
    /// Joiners that had to wait for a free socket in the generator (it was the bottleneck).
    pub generator_waits: AtomicU64,
    /// Joiners the door sent to another node (a cluster's edge).
    pub redirected: AtomicU64,
    /// Times a waiting joiner was told a later position than before (an honest, fair line
    /// never does this).
    pub position_rises: AtomicU64,
    /// The largest position anyone was told.
    pub max_position: AtomicU64,
    /// Joiners who went back through the door: their ticket was refused (already used) or the
    /// node it named was full when they got there.
    pub rejoined: AtomicU64,
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
    /// Admitted after waiting in line.
    pub admitted_after_waiting: u64,
    /// Holding a ticket at the deadline.
    pub queued: u64,
    /// Neither audio nor ticket at the deadline.
    pub timed_out: u64,
    /// Network failures or malformed answers.
    pub errors: u64,
    /// Lost while listening.
    pub dropped_while_listening: u64,
    /// Rate-limit answers retried.
    pub rate_limited_retries: u64,
    /// Final refusals by status.
    pub rejected: BTreeMap<u16, u64>,
    /// Time to first audio, ms.
    pub first_audio_ms: crate::Quantiles,
    /// Joiners delayed by the generator's own socket limit (non-zero: the figures understate
    /// the offered rate).
    pub generator_waits: u64,
    /// Joiners the door sent to another node (a cluster's edge).
    pub redirected: u64,
    /// Times a waiting joiner was told a later position than before.
    pub position_rises: u64,
    /// The largest position anyone was told.
    pub max_position: u64,
    /// Joiners who went back through the door.
    pub rejoined: u64,
}

impl StormStats {
    /// Summarises the storm after `elapsed`.
    pub fn report(&self, elapsed: Duration) -> StormReport {
        let admitted = self.admitted.load(Relaxed);
        StormReport {
            started: self.started.load(Relaxed),
            admitted,
            admitted_per_s: admitted as f64 / elapsed.as_secs_f64().max(0.001),
            admitted_after_waiting: self.admitted_after_waiting.load(Relaxed),
            queued: self.queued.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            errors: self.errors.load(Relaxed),
            dropped_while_listening: self.dropped_while_listening.load(Relaxed),
            rate_limited_retries: self.rate_limited_retries.load(Relaxed),
            rejected: self.rejected.lock().map(|r| r.clone()).unwrap_or_default(),
            first_audio_ms: crate::Quantiles::of(&self.first_audio),
            generator_waits: self.generator_waits.load(Relaxed),
            redirected: self.redirected.load(Relaxed),
            position_rises: self.position_rises.load(Relaxed),
            max_position: self.max_position.load(Relaxed),
            rejoined: self.rejoined.load(Relaxed),
        }
    }
}

/// How a joiner's attempt to get audio ended.
enum Outcome {
    /// Listening, on this connection; `waited` if it went through the waiting room.
    Audio { stream: Conn, buf: ReadBuf, waited: bool },
    /// Still holding a waiting-room ticket at the deadline.
    Queued,
    /// Refused for good with this status.
    Rejected(u16),
    /// Network failure or malformed answer.
    Error,
    /// Deadline passed without audio or ticket.
    TimedOut,
    /// The node the door named was full: back through the door.
    Rejoin,
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
            joiner(&cfg, &stats, n).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn joiner(cfg: &StormConfig, stats: &StormStats, n: usize) {
    stats.started.fetch_add(1, Relaxed);
    let began = Instant::now();
    let mut outcome = get_audio(cfg, stats, n, began + cfg.deadline).await;
    // As the page does: a node that turned out full sends the joiner back through the door.
    for _ in 0..MAX_REJOINS {
        if !matches!(outcome, Outcome::Rejoin) {
            break;
        }
        stats.rejoined.fetch_add(1, Relaxed);
        outcome = get_audio(cfg, stats, n, began + cfg.deadline).await;
    }
    match outcome {
        Outcome::Audio { stream, buf, waited } => {
            stats.admitted.fetch_add(1, Relaxed);
            if waited {
                stats.admitted_after_waiting.fetch_add(1, Relaxed);
            }
            stats.first_audio.record(began.elapsed().as_micros() as u64);
            if !cfg.hold.is_zero() && !listen_until(stream, buf, Instant::now() + cfg.hold).await {
                stats.dropped_while_listening.fetch_add(1, Relaxed);
            }
        }
        Outcome::Queued => {
            stats.queued.fetch_add(1, Relaxed);
        }
        Outcome::Rejected(status) => {
            if let Ok(mut r) = stats.rejected.lock() {
                *r.entry(status).or_default() += 1;
            }
        }
        Outcome::Error => {
            stats.errors.fetch_add(1, Relaxed);
        }
        Outcome::TimedOut => {
            stats.timed_out.fetch_add(1, Relaxed);
        }
        Outcome::Rejoin => {
            if let Ok(mut r) = stats.rejected.lock() {
                *r.entry(503).or_default() += 1;
            }
        }
    }
}

/// Times a joiner goes back through the door before giving up.
const MAX_REJOINS: usize = 3;

/// One `POST join` on a fresh connection: the status, the JSON body and `Retry-After`.
async fn post_join(
    cfg: &StormConfig,
    n: usize,
    wait_ticket: Option<&str>,
    pow: Option<&str>,
) -> Option<(u16, serde_json::Value, Option<u64>, Conn, ReadBuf)> {
    let mut stream =
        http::connect(&cfg.target, cfg.target.source_ip_in(n, cfg.subnets)).await.ok()?;
    let mut buf = ReadBuf::new(4_096);
    let mut params = Vec::new();
    if let Some(t) = wait_ticket {
        params.push(format!("ticket={t}"));
    }
    if let Some(p) = pow {
        params.push(format!("pow={p}"));
    }
    let q = if params.is_empty() { String::new() } else { format!("?{}", params.join("&")) };
    let path = format!("/api/v1/spaces/{}/join{q}", cfg.space);
    http::post(&mut stream, &cfg.target, &path, cfg.token.as_deref(), "").await.ok()?;
    let head = http::read_head(&mut stream, &mut buf).await.ok()?;
    let body = http::read_body(&mut stream, &mut buf, head).await.ok()?;
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Some((head.status, json, head.retry_after, stream, buf))
}

/// Joins (waiting in line and backing off as told), then opens the WebSocket and waits for the
/// first audio frame, all before `deadline`.
async fn get_audio(cfg: &StormConfig, stats: &StormStats, n: usize, deadline: Instant) -> Outcome {
    let mut wait_ticket: Option<String> = None;
    let mut position: Option<u64> = None;
    let mut pow: Option<String> = None;
    let (ticket, node, mut stream, mut buf) = loop {
        let attempt = post_join(cfg, n, wait_ticket.as_deref(), pow.as_deref());
        let Ok(answer) = timeout_at(deadline, attempt).await else {
            return if wait_ticket.is_some() { Outcome::Queued } else { Outcome::TimedOut };
        };
        let Some((status, json, retry_after, stream, buf)) = answer else { return Outcome::Error };
        let pause = match status {
            200 => match json["token"].as_str() {
                Some(t) => {
                    break (t.to_owned(), json["node"].as_str().map(str::to_owned), stream, buf);
                }
                None => return Outcome::Error,
            },
            202 => {
                let Some(t) = json["waiting"]["ticket"].as_str() else { return Outcome::Error };
                wait_ticket = Some(t.to_owned());
                if let Some(now) = json["waiting"]["position"].as_u64() {
                    if position.is_some_and(|before| now > before) {
                        stats.position_rises.fetch_add(1, Relaxed);
                    }
                    stats.max_position.fetch_max(now, Relaxed);
                    position = Some(now);
                }
                Duration::from_millis(json["waiting"]["retry_after_ms"].as_u64().unwrap_or(1_000))
            }
            // Rate-limited, or a door too busy to ask the line: come back as told (the ticket,
            // if any, keeps the place).
            429 | 503 => {
                stats.rate_limited_retries.fetch_add(1, Relaxed);
                Duration::from_secs(retry_after.unwrap_or(1))
            }
            // A ticket already used (its admission was made but its answer lost): a new place.
            400 if json["error"]["code"] == "bad_ticket" && wait_ticket.is_some() => {
                stats.rejoined.fetch_add(1, Relaxed);
                wait_ticket = None;
                position = None;
                Duration::ZERO
            }
            401 if json["error"]["code"] == "pow_required" && pow.is_none() => {
                match timeout_at(deadline, prove(cfg, n)).await {
                    Ok(Some(proof)) => {
                        pow = Some(proof);
                        Duration::ZERO
                    }
                    Ok(None) => return Outcome::Error,
                    Err(_) => return Outcome::TimedOut,
                }
            }
            other => return Outcome::Rejected(other),
        };
        drop(stream);
        if Instant::now() + pause >= deadline {
            return if wait_ticket.is_some() { Outcome::Queued } else { Outcome::TimedOut };
        }
        tokio::time::sleep(pause).await;
    };
    let waited = wait_ticket.is_some();
    let ws_path = format!("/ws/{}?token={ticket}&batch={}", cfg.space, cfg.batch.clamp(1, 5));
    // In a cluster the door names the node to listen on (loopback only, as every target here).
    let target = match node.map(|n| n.parse::<Target>()) {
        None => cfg.target,
        Some(Ok(t)) if t == cfg.target => t,
        Some(Ok(t)) => {
            (stream, buf) = match reconnect(&t, cfg, n, deadline).await {
                Ok(fresh) => fresh,
                Err(outcome) => return outcome,
            };
            stats.redirected.fetch_add(1, Relaxed);
            t
        }
        Some(Err(_)) => return Outcome::Error,
    };
    // The page reconnects when its connection is refused for its rate (429): so do we, after
    // `Retry-After`, on a new connection, with the same ticket.
    loop {
        let opened =
            timeout_at(deadline, http::ws_handshake(&mut stream, &target, &ws_path, &mut buf))
                .await;
        let head = match opened {
            Ok(Ok(head)) => head,
            Ok(Err(_)) => return Outcome::Error,
            Err(_) => return Outcome::TimedOut,
        };
        match head.status {
            101 => break,
            503 => return Outcome::Rejoin,
            429 => {
                stats.rate_limited_retries.fetch_add(1, Relaxed);
                let pause = Duration::from_secs(head.retry_after.unwrap_or(1));
                if Instant::now() + pause >= deadline {
                    return Outcome::TimedOut;
                }
                tokio::time::sleep(pause).await;
                (stream, buf) = match reconnect(&target, cfg, n, deadline).await {
                    Ok(fresh) => fresh,
                    Err(outcome) => return outcome,
                };
            }
            other => return Outcome::Rejected(other),
        }
    }
    loop {
        while let Ok(Some((op, _, total))) = http::parse_ws_frame(buf.data()) {
            match op {
                Opcode::Binary => return Outcome::Audio { stream, buf, waited },
                Opcode::Close => return Outcome::Error,
                _ => buf.consume(total),
            }
        }
        match timeout_at(deadline, buf.fill(&mut stream)).await {
            Err(_) => return Outcome::TimedOut,
            Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Error,
            Ok(Ok(_)) => {}
        }
    }
}

/// A new connection of joiner `n` to `target`, before `deadline`.
async fn reconnect(
    target: &Target,
    cfg: &StormConfig,
    n: usize,
    deadline: Instant,
) -> Result<(Conn, ReadBuf), Outcome> {
    let source = target.source_ip_in(n, cfg.subnets);
    match timeout_at(deadline, http::connect(target, source)).await {
        Ok(Ok(stream)) => Ok((stream, ReadBuf::new(4_096))),
        Ok(Err(_)) => Err(Outcome::Error),
        Err(_) => Err(Outcome::TimedOut),
    }
}

/// Gets a proof-of-work challenge and solves it (off the async threads: it is real work).
async fn prove(cfg: &StormConfig, n: usize) -> Option<String> {
    let mut stream =
        http::connect(&cfg.target, cfg.target.source_ip_in(n, cfg.subnets)).await.ok()?;
    let mut buf = ReadBuf::new(4_096);
    let path = format!("/api/v1/pow?space={}", cfg.space);
    http::post(&mut stream, &cfg.target, &path, None, "").await.ok()?;
    let head = http::read_head(&mut stream, &mut buf).await.ok()?;
    let body = http::read_body(&mut stream, &mut buf, head).await.ok()?;
    let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let challenge = json["challenge"].as_str()?.to_owned();
    let difficulty = u8::try_from(json["difficulty"].as_u64()?).ok()?;
    let counter = tokio::task::spawn_blocking({
        let challenge = challenge.clone();
        move || townhall_core::solve_pow(&challenge, difficulty)
    })
    .await
    .ok()?;
    Some(format!("{challenge}:{counter}"))
}

/// Keeps reading until `until`; false if the connection was lost first.
async fn listen_until(mut stream: Conn, mut buf: ReadBuf, until: Instant) -> bool {
    loop {
        let all = buf.data().len();
        buf.consume(all);
        match timeout_at(until, buf.fill(&mut stream)).await {
            Err(_) => return true,
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(_)) => {}
        }
    }
}
