//! `townhall-load`: listeners, speakers and join storms against a server on loopback.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use townhall_core::{Identity, Role, SpaceScope, TokenKeys};
use townhall_load::expect::{self, Condition};
use townhall_load::join_storm::{self, StormConfig, StormStats};
use townhall_load::listen::{self, ListenConfig, Protocol};
use townhall_load::speak::{self, SpeakConfig, Voice};
use townhall_load::stats::{Snapshot, Stats};
use townhall_load::target::Target;
use townhall_load::{Quantiles, procstat};

/// Hard bounds: every run stops by itself.
const MAX_DURATION_SECS: u64 = 3_600;
/// File descriptors kept free for everything that is not a listener.
const FD_RESERVE: u64 = 64;

/// Load scenarios against a Townhall (or Icecast) server on loopback.
#[derive(Debug, Parser)]
#[command(name = "townhall-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N listeners over WebSocket or Ogg/HTTP, ramped, reporting every second and at the end.
    Listen(ListenArgs),
    /// A speaker bot sending a real Opus stream (a tone or a file) with send timestamps.
    Speak(SpeakArgs),
    /// M joins per second: join → ticket → WebSocket → first audio frame.
    JoinStorm(StormArgs),
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Server to load: http://127.0.0.1:PORT (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: Target,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Conditions that must hold, else exit code 1: e.g. "late<0.1%,gaps==0,p99<150".
    #[arg(long)]
    expect: Option<String>,
    /// A short run (seconds, few connections), for tests and CI.
    #[arg(long)]
    quick: bool,
    /// Worker threads of the load generator (1 leaves the other core to the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Debug, clap::Args)]
struct ListenArgs {
    #[command(flatten)]
    common: Common,
    /// Space to listen to.
    #[arg(long, default_value = "demo")]
    space: String,
    /// Listeners to open (at most the open-files limit of this process).
    #[arg(long, default_value_t = 100)]
    listeners: usize,
    /// Seconds to listen once all are connected.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// ws (Townhall WebSocket) or ogg (Ogg/Opus over HTTP).
    #[arg(long, value_enum, default_value_t = Protocol::Ws)]
    protocol: Protocol,
    /// Listeners opened per second (default: all at once).
    #[arg(long)]
    ramp: Option<f64>,
    /// Frames per WebSocket message (1..5).
    #[arg(long, default_value_t = 5)]
    batch: usize,
    /// Request path instead of Townhall's (e.g. an Icecast mount: /demo.opus).
    #[arg(long)]
    path: Option<String>,
    /// Token or ticket to present (private spaces).
    #[arg(long)]
    token: Option<String>,
    /// A frame later than this (ms) counts as late.
    #[arg(long, default_value_t = 500)]
    late_ms: u64,
    /// Program bitrate (bit/s), for the expected-bytes figure.
    #[arg(long, default_value_t = 32_000)]
    bitrate: u64,
    /// The server's pid: report its CPU and memory over the steady phase.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Debug, clap::Args)]
struct SpeakArgs {
    #[command(flatten)]
    common: Common,
    /// Space to speak in.
    #[arg(long, default_value = "demo")]
    space: String,
    /// Speaker token; without it one is minted from TOWNHALL_API_KEY/TOWNHALL_API_SECRET.
    #[arg(long)]
    token: Option<String>,
    /// Identity for a minted token.
    #[arg(long, default_value = "load-speaker")]
    identity: String,
    /// Seconds to speak.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Tone frequency in Hz (ignored with --file).
    #[arg(long, default_value_t = 440.0)]
    tone: f32,
    /// Ogg/Opus file (mono, 20 ms frames) to speak, looped.
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct StormArgs {
    #[command(flatten)]
    common: Common,
    /// Space to join.
    #[arg(long, default_value = "demo")]
    space: String,
    /// Joins per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of joining.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// A joiner gives up after this many ms without audio.
    #[arg(long, default_value_t = 5_000)]
    deadline_ms: u64,
    /// Bearer token for join (anonymous otherwise).
    #[arg(long)]
    token: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Listen(a) => a.common.threads,
        Command::Speak(a) => a.common.threads,
        Command::JoinStorm(a) => a.common.threads,
    };
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    let failures = runtime.block_on(async {
        match cli.command {
            Command::Listen(a) => listen_cmd(a).await,
            Command::Speak(a) => speak_cmd(a).await,
            Command::JoinStorm(a) => storm_cmd(a).await,
        }
    })?;
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("expectation failed: {f}");
        }
        std::process::exit(1);
    }
    Ok(())
}

fn check(
    expectations: Option<&str>,
    figures: &BTreeMap<String, f64>,
) -> anyhow::Result<Vec<String>> {
    let conditions: Vec<Condition> = match expectations {
        Some(raw) => expect::parse_all(raw)?,
        None => Vec::new(),
    };
    Ok(conditions.iter().filter_map(|c| c.check(figures).err()).collect())
}

fn bounded(duration: u64) -> anyhow::Result<Duration> {
    if duration == 0 || duration > MAX_DURATION_SECS {
        bail!("duration must be 1 to {MAX_DURATION_SECS} seconds");
    }
    Ok(Duration::from_secs(duration))
}

async fn listen_cmd(mut a: ListenArgs) -> anyhow::Result<Vec<String>> {
    if a.common.quick {
        a.listeners = a.listeners.min(50);
        a.duration = a.duration.min(3);
        a.ramp = None;
    }
    let fd_limit = procstat::open_files_limit().unwrap_or(1_024);
    if a.listeners as u64 + FD_RESERVE > fd_limit {
        bail!(
            "{} listeners need more file descriptors than this process may open ({fd_limit}); raise `ulimit -n` or run several townhall-load processes",
            a.listeners
        );
    }
    if !(1..=5).contains(&a.batch) {
        bail!("--batch must be 1 to 5");
    }
    let duration = bounded(a.duration)?;
    let path = a.path.clone().unwrap_or_else(|| {
        listen::townhall_path(a.protocol, &a.space, a.batch, a.token.as_deref())
    });
    let cfg = Arc::new(ListenConfig {
        target: a.common.target,
        path,
        listeners: a.listeners,
        ramp: a.ramp,
        duration,
        protocol: a.protocol,
        late_budget: Duration::from_millis(a.late_ms),
        read_buffer: 4_096,
    });
    let stats = Arc::new(Stats::default());
    let ramp_secs = a.ramp.map_or(0.0, |r| a.listeners as f64 / r);
    eprintln!(
        "listen: {} {:?} listeners on {}{} for {}s (ramp {:.1}s)",
        a.listeners, a.protocol, cfg.target, cfg.path, a.duration, ramp_secs
    );
    let me_start = procstat::sample("self");
    let run = tokio::spawn(listen::run(cfg.clone(), stats.clone()));
    let mut server_start = None;
    let mut server_end = None;
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = Snapshot::default();
    while !run.is_finished() {
        tick.tick().await;
        let now = stats.snapshot();
        // The server is measured over the steady phase: from a second after the ramp to the
        // last tick at which the listeners were still connected.
        if let Some(pid) = a.server_pid {
            if server_start.is_none() && started.elapsed().as_secs_f64() >= ramp_secs + 1.0 {
                server_start = procstat::sample(&pid.to_string());
            } else if server_start.is_some() && now.connected > 0 {
                server_end = procstat::sample(&pid.to_string());
            }
        }
        eprintln!(
            "t={:>4}s connected={} frames=+{} late=+{} gaps=+{} disconnects={} failed={} rx={:.0} kbit/s",
            started.elapsed().as_secs(),
            now.connected,
            now.frames - last.frames,
            now.late_frames - last.late_frames,
            now.gaps - last.gaps,
            now.disconnects,
            now.failed,
            (now.bytes - last.bytes) as f64 * 8.0 / 1_000.0,
        );
        last = now;
    }
    run.await.context("listeners")?;
    let elapsed = started.elapsed();
    let me_end = procstat::sample("self");
    let s = stats.snapshot();
    let connected_secs = stats.connected_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
    let expected_frames = connected_secs * 50.0;
    let latency = Quantiles::of(&stats.latency);
    let mouth_to_ear = Quantiles::of(&stats.mouth_to_ear);
    let late_percent =
        if s.frames > 0 { s.late_frames as f64 * 100.0 / s.frames as f64 } else { 0.0 };
    let delivery_percent =
        if expected_frames > 0.0 { s.frames as f64 * 100.0 / expected_frames } else { 0.0 };
    let load_cpu = match (me_start, me_end) {
        (Some(a), Some(b)) => procstat::cpu_percent(&a, &b),
        _ => 0.0,
    };
    let server = match (server_start, server_end) {
        (Some(a), Some(b)) => {
            json!({ "cpu_percent": procstat::cpu_percent(&a, &b), "rss_kib": b.rss_kib })
        }
        _ => serde_json::Value::Null,
    };
    let report = json!({
        "scenario": "listen",
        "protocol": a.protocol,
        "target": cfg.target.to_string(),
        "path": cfg.path,
        "listeners": a.listeners,
        "connected": s.ever_connected,
        "failed": s.failed,
        "frames": s.frames,
        "expected_frames": expected_frames.round(),
        "delivery_percent": delivery_percent,
        "late_frames": s.late_frames,
        "late_percent": late_percent,
        "gaps": s.gaps,
        "disconnects": s.disconnects,
        "bytes": s.bytes,
        "rx_kbit_s": s.bytes as f64 * 8.0 / 1_000.0 / elapsed.as_secs_f64(),
        "expected_kbit_s": a.listeners as f64 * a.bitrate as f64 / 1_000.0,
        "latency_ms": latency,
        "mouth_to_ear_ms": mouth_to_ear,
        "late_budget_ms": a.late_ms,
        "load_cpu_percent": load_cpu,
        "server": server,
        "duration_s": elapsed.as_secs_f64(),
    });
    println!(
        "listen: {}/{} connected, {} frames ({:.2}% of expected), late {} ({:.3}%), gaps {}, disconnects {}, latency p50 {:.1} ms p99 {:.1} ms p99.9 {:.1} ms, mouth-to-ear p99 {:.1} ms, load CPU {:.0}%{}",
        s.ever_connected,
        a.listeners,
        s.frames,
        delivery_percent,
        s.late_frames,
        late_percent,
        s.gaps,
        s.disconnects,
        latency.p50,
        latency.p99,
        latency.p999,
        mouth_to_ear.p99,
        load_cpu,
        if server.is_null() { String::new() } else { format!(", server {server}") }
    );
    let figures: BTreeMap<String, f64> = [
        ("connected", s.ever_connected as f64),
        ("failed", s.failed as f64),
        ("frames", s.frames as f64),
        ("late", s.late_frames as f64),
        ("late_percent", late_percent),
        ("gaps", s.gaps as f64),
        ("disconnects", s.disconnects as f64),
        ("delivery_percent", delivery_percent),
        ("p50", latency.p50),
        ("p99", latency.p99),
        ("p999", latency.p999),
        ("mouth_to_ear_p99", mouth_to_ear.p99),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if a.common.json {
        println!("{report}");
    }
    check(a.common.expect.as_deref(), &figures)
}

fn speaker_token(a: &SpeakArgs) -> anyhow::Result<String> {
    if let Some(t) = &a.token {
        return Ok(t.clone());
    }
    let key = std::env::var("TOWNHALL_API_KEY").unwrap_or_else(|_| "devkey".into());
    let secret = std::env::var("TOWNHALL_API_SECRET")
        .unwrap_or_else(|_| "townhall-development-secret-change-me".into());
    let keys = TokenKeys::new(key, secret.as_bytes());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let scope = SpaceScope::try_from(a.space.clone())?;
    let who = Identity::new(a.identity.clone())?;
    Ok(keys.mint(who, Role::Speaker, scope, townhall_core::UnixTime(now), a.duration + 3_600)?)
}

async fn speak_cmd(mut a: SpeakArgs) -> anyhow::Result<Vec<String>> {
    if a.common.quick {
        a.duration = a.duration.min(3);
    }
    let duration = bounded(a.duration)?;
    let voice = match &a.file {
        Some(path) => Voice::File(path.clone()),
        None => Voice::Tone(a.tone),
    };
    let cfg = SpeakConfig {
        target: a.common.target,
        space: a.space.clone(),
        token: speaker_token(&a)?,
        duration,
        voice,
    };
    eprintln!("speak: into {} on {} for {}s", cfg.space, cfg.target, a.duration);
    let report = speak::run(&cfg).await?;
    println!(
        "speak: sent {} frames, received {} mix-minus frames, {} errors",
        report.frames_sent,
        report.frames_received,
        report.errors.len()
    );
    if a.common.json {
        println!(
            "{}",
            json!({ "scenario": "speak", "frames_sent": report.frames_sent, "frames_received": report.frames_received, "errors": report.errors })
        );
    }
    let figures: BTreeMap<String, f64> =
        [("frames_sent", report.frames_sent as f64), ("errors", report.errors.len() as f64)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    check(a.common.expect.as_deref(), &figures)
}

async fn storm_cmd(mut a: StormArgs) -> anyhow::Result<Vec<String>> {
    if a.common.quick {
        a.rate = a.rate.min(50.0);
        a.duration = a.duration.min(2);
    }
    let duration = bounded(a.duration)?;
    if !(a.rate > 0.0 && a.rate <= 100_000.0) {
        bail!("--rate must be between 0 and 100000 joins per second");
    }
    let fd_limit = procstat::open_files_limit().unwrap_or(1_024);
    let max_in_flight = fd_limit.saturating_sub(FD_RESERVE).max(1) as usize;
    let cfg = Arc::new(StormConfig {
        target: a.common.target,
        space: a.space.clone(),
        rate: a.rate,
        duration,
        deadline: Duration::from_millis(a.deadline_ms),
        token: a.token.clone(),
        max_in_flight,
    });
    eprintln!("join-storm: {}/s into {} on {} for {}s", a.rate, cfg.space, cfg.target, a.duration);
    let stats = Arc::new(StormStats::default());
    let started = tokio::time::Instant::now();
    let me_start = procstat::sample("self");
    join_storm::run(cfg, stats.clone()).await;
    let report = stats.report(started.elapsed());
    let load_cpu = match (me_start, procstat::sample("self")) {
        (Some(x), Some(y)) => procstat::cpu_percent(&x, &y),
        _ => 0.0,
    };
    if report.generator_waits > 0 {
        eprintln!(
            "note: {} joiners waited for a free socket in townhall-load (open-files limit); the offered rate was lower than asked",
            report.generator_waits
        );
    }
    println!(
        "join-storm: {} started, {} admitted ({:.0}/s), {} timed out, {} errors, rejected {:?}, first audio p50 {:.1} ms p99 {:.1} ms, load CPU {:.0}%",
        report.started,
        report.admitted,
        report.admitted_per_s,
        report.timed_out,
        report.errors,
        report.rejected,
        report.first_audio_ms.p50,
        report.first_audio_ms.p99,
        load_cpu
    );
    if a.common.json {
        let mut value = serde_json::to_value(&report)?;
        value["scenario"] = json!("join-storm");
        value["load_cpu_percent"] = json!(load_cpu);
        println!("{value}");
    }
    let rejected: u64 = report.rejected.values().sum();
    let figures: BTreeMap<String, f64> = [
        ("started", report.started as f64),
        ("admitted", report.admitted as f64),
        ("admitted_percent", report.admitted as f64 * 100.0 / (report.started.max(1)) as f64),
        ("timed_out", report.timed_out as f64),
        ("errors", report.errors as f64),
        ("rejected", rejected as f64),
        ("p50", report.first_audio_ms.p50),
        ("p99", report.first_audio_ms.p99),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    check(a.common.expect.as_deref(), &figures)
}
