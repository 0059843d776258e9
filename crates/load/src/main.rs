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
use townhall_load::flood::{self, FloodConfig, FloodStats, Junk};
use townhall_load::join_storm::{self, StormConfig, StormStats};
use townhall_load::launch_day::{self, LaunchDayConfig};
use townhall_load::listen::{self, ListenConfig, Protocol};
use townhall_load::slowloris::{self, SlowlorisConfig, SlowlorisStats};
use townhall_load::slowread::{self, SlowreadConfig, SlowreadStats};
use townhall_load::speak::{self, SpeakConfig, SpeakProtocol, Voice};
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
    /// Junk at a given rate: unknown paths, forged tokens, oversize headers, bogus upgrades, churn.
    Flood(FloodArgs),
    /// Connections that trickle a request head and never finish it.
    Slowloris(SlowlorisArgs),
    /// Listeners that never read their stream (the server should cut them).
    Slowread(SlowreadArgs),
    /// Incumbent listeners, then a storm of real joiners, a junk flood and slowloris at once.
    LaunchDay(LaunchDayArgs),
    /// A crowd at internet scale against a fleet of edges, in virtual time (no server): the
    /// cluster's real waiting line and door, in a discrete-event simulation.
    Simulate(SimulateArgs),
    /// Writes a throwaway CA and a server certificate for loopback (`127.0.0.1`, `::1`,
    /// `localhost`) into a directory: `ca.pem` for `--tls-ca`, `cert.pem` and `key.pem` for
    /// `townhall serve --tls files` (benchmarks of TLS on loopback).
    TlsCert(TlsCertArgs),
}

#[derive(Debug, clap::Args)]
struct TlsCertArgs {
    /// Directory to write `ca.pem`, `cert.pem` and `key.pem` into (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// Defaults: the 8-million crowd of issue #13 against the fleet docs/capacity.md sizes (43
/// sixteen-core edges of 190,000 WebSocket listeners), each setting up 8,000 joins/s (one core's
/// measured rate, bench/join-storm); per-join latencies split from the measured 11 ms p50 first
/// audio at 1,000 joins/s on loopback.
#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// Joiners in the crowd.
    #[arg(long, default_value_t = 8_000_000)]
    joiners: u64,
    /// Everyone arrives within this many seconds.
    #[arg(long, default_value_t = 60.0)]
    window_secs: f64,
    /// Seconds from the push to the peak arrival rate.
    #[arg(long, default_value_t = 2.0)]
    rise_secs: f64,
    /// Time constant of the decay after the peak (0: flat).
    #[arg(long, default_value_t = 10.0)]
    decay_secs: f64,
    /// Share of joiners signed in (their line is called first).
    #[arg(long, default_value_t = 0.5)]
    signed_in_share: f64,
    /// Edges in the fleet.
    #[arg(long, default_value_t = 43)]
    edges: usize,
    /// Listeners one edge holds (its max_listeners).
    #[arg(long, default_value_t = 190_000)]
    edge_capacity: u64,
    /// Joins one edge sets up per second.
    #[arg(long, default_value_t = 8_000.0)]
    join_rate_per_edge: f64,
    /// Numbers the origin calls per second (its joins_per_second; default: edges x join rate).
    #[arg(long)]
    call_rate: Option<u64>,
    /// A joiner gives up after this long without audio.
    #[arg(long, default_value_t = 120.0)]
    patience_secs: f64,
    /// Listeners leaving per listener per second (0: everyone stays).
    #[arg(long, default_value_t = 0.0)]
    leave_per_s: f64,
    /// Spread of Retry-After (0.2: the server's; 1.0: full jitter).
    #[arg(long, default_value_t = townhall_load::simulate::SERVER_RETRY_SPREAD)]
    retry_spread: f64,
    /// A door visit (request, Redis, answer), ms.
    #[arg(long, default_value_t = 5.0)]
    door_ms: f64,
    /// From the door's answer to the edge taking the connection, ms.
    #[arg(long, default_value_t = 3.0)]
    connect_ms: f64,
    /// From the edge taking the listener to the first audio frame, ms.
    #[arg(long, default_value_t = 3.0)]
    first_frame_ms: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also bisect for the largest crowd of this profile absorbed with nobody timing out.
    #[arg(long)]
    search: bool,
    /// How the doors ask Redis: `blocks` (the server's door: numbers in blocks, the line's
    /// mark read at most every 250 ms) or `per-arrival` (the door before blocks, a baseline).
    #[arg(long, default_value = "blocks")]
    door_model: String,
    /// Doors the crowd is spread over (0: one per edge).
    #[arg(long, default_value_t = 0)]
    doors: usize,
    /// Write the report (figures, time series, TTFA CDF) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The same scenario scaled down 100x (crowd, edge capacity and join rate): seconds in a
    /// debug build, for CI.
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, clap::Args)]
struct SlowreadArgs {
    #[command(flatten)]
    common: Common,
    /// Space whose stream they open.
    #[arg(long, default_value = "demo")]
    space: String,
    /// ws or ogg.
    #[arg(long, value_enum, default_value_t = Protocol::Ws)]
    protocol: Protocol,
    /// Listeners that never read.
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// Seconds they sit (longer than the server's stall timeout to see them cut).
    #[arg(long, default_value_t = 30)]
    duration: u64,
}

#[derive(Debug, clap::Args)]
struct FloodArgs {
    #[command(flatten)]
    common: Common,
    /// Space named in the junk.
    #[arg(long, default_value = "demo")]
    space: String,
    /// Junk requests per second.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Seconds.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Kinds of junk, in turn.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Junk::Paths, Junk::Tokens, Junk::Headers, Junk::Websocket, Junk::Churn])]
    mix: Vec<Junk>,
    /// Spread over this many source addresses (127.66.0.1 up).
    #[arg(long, default_value_t = 254)]
    sources: usize,
}

#[derive(Debug, clap::Args)]
struct SlowlorisArgs {
    #[command(flatten)]
    common: Common,
    /// Connections.
    #[arg(long, default_value_t = 1_000)]
    connections: usize,
    /// Seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds between header lines.
    #[arg(long, default_value_t = 5)]
    interval: u64,
}

#[derive(Debug, clap::Args)]
struct LaunchDayArgs {
    #[command(flatten)]
    common: Common,
    /// The space on air.
    #[arg(long, default_value = "demo")]
    space: String,
    /// Listeners on air before the storm.
    #[arg(long, default_value_t = 2_000)]
    incumbents: usize,
    /// Incumbents connected per second.
    #[arg(long, default_value_t = 2_000.0)]
    ramp: f64,
    /// Real joiners per second.
    #[arg(long, default_value_t = 500.0)]
    join_rate: f64,
    /// Junk per second.
    #[arg(long, default_value_t = 2_000.0)]
    flood_rate: f64,
    /// Slowloris connections.
    #[arg(long, default_value_t = 1_000)]
    slowloris: usize,
    /// Seconds of storm.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Operator token for the verdict; minted from TOWNHALL_API_KEY/SECRET when absent.
    #[arg(long)]
    admin_token: Option<String>,
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
    /// Speak TLS to the target (and doors), trusting only the CA certificates in this PEM file;
    /// certificates are checked against the target's IP address.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

impl Common {
    /// Applies `--tls-ca` to the target and to `more` targets.
    fn secure(&mut self, more: &mut [Target]) -> anyhow::Result<()> {
        let Some(ca) = &self.tls_ca else { return Ok(()) };
        let tls = townhall_load::http::TlsClient::trusting(ca)?;
        self.target = self.target.with_tls(tls);
        for t in more {
            *t = t.with_tls(tls);
        }
        Ok(())
    }
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
    /// ws (Townhall WebSocket), ogg (Ogg/Opus over HTTP), hls (LL-HLS) or whep (WebRTC).
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
    /// More doors of the same cluster (repeatable): listeners going back through the door
    /// knock at any of these or the target, at random (as behind one name with several
    /// addresses), so a node that died is not their only way back.
    #[arg(long)]
    door: Vec<townhall_load::target::Target>,
    /// Join through the door first (as the page does) and listen on the node it names; coming
    /// back, show the door the ticket it gave.
    #[arg(long)]
    join: bool,
    /// Report each listener's outages (audio absent for 300 ms or more, or no connection) with
    /// their times, and the frames missing from the sequence with theirs (for chaos runs).
    #[arg(long)]
    timeline: bool,
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
    /// ws (WebSocket speaker frames) or whip (WebRTC).
    #[arg(long, value_enum, default_value_t = SpeakProtocol::Ws)]
    protocol: SpeakProtocol,
    /// After a lost connection, ask this node which origin mixes the space now and speak
    /// there (following an origin's failover).
    #[arg(long)]
    follow: Option<townhall_load::target::Target>,
    /// Speakers sent from this process at once (1 to 100), each on its own connection with its
    /// own minted identity (`IDENTITY-N`) and a tone 20 Hz above the previous one's (with
    /// `--file`, all speak the file); the report sums them.
    #[arg(long, default_value_t = 1)]
    speakers: u32,
    /// How many of the speakers talk (send the tone or file); the others send encoded silence
    /// every 20 ms, as an open microphone between words does. Default: all of them.
    #[arg(long)]
    talking: Option<u32>,
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
    /// A joiner gives up after this many ms without audio (waiting in line included).
    #[arg(long, default_value_t = 5_000)]
    deadline_ms: u64,
    /// After the first audio, keep listening this many ms (0: leave at once).
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Bearer token for join (anonymous otherwise).
    #[arg(long)]
    token: Option<String>,
    /// Joiners come from this many /24s (0: 250, a crowd from everywhere; 1: one campus NAT).
    #[arg(long, default_value_t = 0)]
    subnets: usize,
    /// Frames per WebSocket message once listening (1..5; the page asks for 5).
    #[arg(long, default_value_t = 1)]
    batch: usize,
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    match &mut cli.command {
        Command::Listen(a) => a.common.secure(&mut a.door)?,
        Command::Speak(a) => a.common.secure(a.follow.as_mut_slice())?,
        Command::JoinStorm(a) => a.common.secure(&mut [])?,
        Command::Flood(a) => a.common.secure(&mut [])?,
        Command::Slowloris(a) => a.common.secure(&mut [])?,
        Command::Slowread(a) => a.common.secure(&mut [])?,
        Command::LaunchDay(a) => a.common.secure(&mut [])?,
        Command::Simulate(_) | Command::TlsCert(_) => {}
    }
    let threads = match &cli.command {
        // Virtual time: no runtime, no sockets.
        Command::Simulate(a) => return simulate_cmd(a),
        Command::TlsCert(a) => return tls_cert_cmd(a),
        Command::Listen(a) => a.common.threads,
        Command::Speak(a) => a.common.threads,
        Command::JoinStorm(a) => a.common.threads,
        Command::Flood(a) => a.common.threads,
        Command::Slowloris(a) => a.common.threads,
        Command::Slowread(a) => a.common.threads,
        Command::LaunchDay(a) => a.common.threads,
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
            Command::Flood(a) => flood_cmd(a).await,
            Command::Slowloris(a) => slowloris_cmd(a).await,
            Command::Slowread(a) => slowread_cmd(a).await,
            Command::LaunchDay(a) => launch_day_cmd(a).await,
            Command::Simulate(_) | Command::TlsCert(_) => Ok(Vec::new()),
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

fn tls_cert_cmd(a: &TlsCertArgs) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "townhall-load throwaway CA");
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(names)?.signed_by(&key, &issuer)?;
    for (name, pem) in
        [("ca.pem", issuer.pem()), ("cert.pem", cert.pem()), ("key.pem", key.serialize_pem())]
    {
        let path = a.out.join(name);
        std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("tls-cert: ca.pem, cert.pem, key.pem in {}", a.out.display());
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
        token: a.token.clone(),
        // Listeners sent off or cut off go back through the door (Townhall's paths only).
        door: a.path.is_none().then(|| townhall_load::door::Door {
            target: a.common.target,
            others: a.door.clone(),
            space: a.space.clone(),
            batch: a.batch,
        }),
        timeline: a.timeline,
        join_first: a.join,
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
            "t={:>4}s connected={} frames=+{} late=+{} gaps=+{} disconnects={} failed={} rejoins=+{} rx={:.0} kbit/s",
            started.elapsed().as_secs(),
            now.connected,
            now.frames - last.frames,
            now.late_frames - last.late_frames,
            now.gaps - last.gaps,
            now.disconnects,
            now.failed,
            now.rejoins - last.rejoins,
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
        "sent_off": s.sent_off,
        "rejoins": s.rejoins,
        "bytes": s.bytes,
        "rx_kbit_s": s.bytes as f64 * 8.0 / 1_000.0 / elapsed.as_secs_f64(),
        "expected_kbit_s": a.listeners as f64 * a.bitrate as f64 / 1_000.0,
        "latency_ms": latency,
        "mouth_to_ear_ms": mouth_to_ear,
        "late_budget_ms": a.late_ms,
        "load_cpu_percent": load_cpu,
        "server": server,
        "duration_s": elapsed.as_secs_f64(),
        "timeline": if a.timeline { stats.timeline.report() } else { serde_json::Value::Null },
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
        ("sent_off", s.sent_off as f64),
        ("rejoins", s.rejoins as f64),
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

/// Mints a token with the key pair from TOWNHALL_API_KEY / TOWNHALL_API_SECRET (the server's;
/// there is no built-in pair). Tokens for every space (`*`) are operator tokens.
fn mint(identity: &str, role: Role, space: &str, ttl: u64) -> anyhow::Result<String> {
    let key = std::env::var("TOWNHALL_API_KEY").map_err(|_| {
        anyhow::anyhow!(
            "set TOWNHALL_API_KEY and TOWNHALL_API_SECRET to the server's pair (or pass a token)"
        )
    })?;
    let secret = std::env::var("TOWNHALL_API_SECRET").map_err(|_| {
        anyhow::anyhow!("set TOWNHALL_API_SECRET to the server's secret (or pass a token)")
    })?;
    let keys = TokenKeys::new(key, secret.as_bytes());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let scope = SpaceScope::try_from(space.to_owned())?;
    let who = Identity::new(identity.to_owned())?;
    let op = scope == SpaceScope::Any;
    let claims = townhall_core::Claims {
        op,
        ..townhall_core::Claims::new(
            keys.api_key(),
            who,
            role,
            scope,
            townhall_core::UnixTime(now),
            ttl,
        )
    };
    Ok(keys.mint_claims(claims)?)
}

/// Most speakers one `speak` process sends.
const MAX_SPEAKERS: u32 = 100;

fn speaker_token(a: &SpeakArgs, identity: &str) -> anyhow::Result<String> {
    match &a.token {
        Some(t) => Ok(t.clone()),
        None => mint(identity, Role::Speaker, &a.space, a.duration + 3_600),
    }
}

/// The `n`th speaker of a `speak` run (the only one keeps the identity as given).
fn speaker_config(a: &SpeakArgs, n: u32, duration: Duration) -> anyhow::Result<SpeakConfig> {
    let identity = if a.speakers == 1 { a.identity.clone() } else { format!("{}-{n}", a.identity) };
    let voice = match &a.file {
        _ if n >= a.talking.unwrap_or(a.speakers) => Voice::Silence,
        Some(path) => Voice::File(path.clone()),
        None => Voice::Tone(a.tone + 20.0 * n as f32),
    };
    Ok(SpeakConfig {
        target: a.common.target,
        space: a.space.clone(),
        token: speaker_token(a, &identity)?,
        duration,
        voice,
        protocol: a.protocol,
        follow: a.follow,
    })
}

async fn speak_cmd(mut a: SpeakArgs) -> anyhow::Result<Vec<String>> {
    if a.common.quick {
        a.duration = a.duration.min(3);
    }
    let duration = bounded(a.duration)?;
    if !(1..=MAX_SPEAKERS).contains(&a.speakers) {
        bail!("--speakers must be 1 to {MAX_SPEAKERS}");
    }
    if a.talking.is_some_and(|k| k > a.speakers) {
        bail!("--talking must be at most --speakers");
    }
    if a.speakers > 1 && a.token.is_some() {
        bail!("--speakers above 1 mints a token per speaker: leave out --token");
    }
    let mut speakers = tokio::task::JoinSet::new();
    for n in 0..a.speakers {
        let cfg = speaker_config(&a, n, duration)?;
        speakers.spawn(async move { speak::run(&cfg).await });
    }
    eprintln!(
        "speak: {} speaker(s), {} talking, into {} on {} for {}s",
        a.speakers,
        a.talking.unwrap_or(a.speakers),
        a.space,
        a.common.target,
        a.duration
    );
    let mut report = speak::SpeakReport::default();
    while let Some(done) = speakers.join_next().await {
        let one = done.map_err(|e| anyhow::anyhow!("speaker task: {e}"))??;
        report.frames_sent += one.frames_sent;
        report.frames_received += one.frames_received;
        report.errors.extend(one.errors);
        report.reconnects += one.reconnects;
    }
    println!(
        "speak: sent {} frames, received {} mix-minus frames, {} errors, {} reconnects",
        report.frames_sent,
        report.frames_received,
        report.errors.len(),
        report.reconnects
    );
    if a.common.json {
        println!(
            "{}",
            json!({ "scenario": "speak", "frames_sent": report.frames_sent, "frames_received": report.frames_received, "errors": report.errors, "reconnects": report.reconnects })
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
        hold: Duration::from_millis(a.hold_ms),
        token: a.token.clone(),
        max_in_flight,
        subnets: a.subnets,
        batch: a.batch,
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
        "join-storm: {} started, {} admitted ({:.0}/s; {} after waiting in line), {} still queued, {} timed out, {} errors, rejected {:?}, first audio p50 {:.1} ms p99 {:.1} ms, load CPU {:.0}%",
        report.started,
        report.admitted,
        report.admitted_per_s,
        report.admitted_after_waiting,
        report.queued,
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
        ("queued", report.queued as f64),
        ("dropped", report.dropped_while_listening as f64),
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

fn figures(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn socket_budget() -> usize {
    procstat::open_files_limit().unwrap_or(1_024).saturating_sub(FD_RESERVE) as usize
}

async fn flood_cmd(mut a: FloodArgs) -> anyhow::Result<Vec<String>> {
    if a.common.quick {
        a.rate = a.rate.min(200.0);
        a.duration = a.duration.min(2);
    }
    let duration = bounded(a.duration)?;
    if !(a.rate > 0.0 && a.rate <= 200_000.0) {
        bail!("--rate must be between 0 and 200000 per second");
    }
    let cfg = Arc::new(FloodConfig {
        target: a.common.target,
        space: a.space.clone(),
        rate: a.rate,
        duration,
        mix: a.mix.clone(),
        max_in_flight: socket_budget(),
        sources: a.sources.clamp(1, 254),
    });
    eprintln!("flood: {}/s of {:?} on {} for {}s", a.rate, a.mix, cfg.target, a.duration);
    let stats = Arc::new(FloodStats::default());
    let me = procstat::sample("self");
    flood::run(cfg, stats.clone()).await;
    let report = stats.report();
    let cpu = match (me, procstat::sample("self")) {
        (Some(x), Some(y)) => procstat::cpu_percent(&x, &y),
        _ => 0.0,
    };
    println!(
        "flood: {} sent, answers {:?}, {} errors, answer p50 {:.2} ms p99 {:.2} ms, load CPU {:.0}%",
        report.sent,
        report.statuses,
        report.errors,
        report.answer_ms.p50,
        report.answer_ms.p99,
        cpu
    );
    if a.common.json {
        let mut v = serde_json::to_value(&report)?;
        v["scenario"] = json!("flood");
        v["load_cpu_percent"] = json!(cpu);
        println!("{v}");
    }
    let ok: u64 =
        report.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| *n).sum();
    check(
        a.common.expect.as_deref(),
        &figures(&[
            ("sent", report.sent as f64),
            ("errors", report.errors as f64),
            ("accepted", ok as f64),
            ("p99", report.answer_ms.p99),
        ]),
    )
}

async fn slowloris_cmd(mut a: SlowlorisArgs) -> anyhow::Result<Vec<String>> {
    if a.common.quick {
        a.connections = a.connections.min(100);
        a.duration = a.duration.min(5);
        a.interval = a.interval.min(1);
    }
    let duration = bounded(a.duration)?;
    if a.connections > socket_budget() {
        bail!(
            "{} connections exceed this process's open-files limit; run several processes",
            a.connections
        );
    }
    let cfg = Arc::new(SlowlorisConfig {
        target: a.common.target,
        connections: a.connections,
        duration,
        interval: Duration::from_secs(a.interval.max(1)),
        ramp: 1_000.0,
    });
    eprintln!("slowloris: {} connections on {} for {}s", a.connections, cfg.target, a.duration);
    let stats = Arc::new(SlowlorisStats::default());
    slowloris::run(cfg, stats.clone()).await;
    let r = stats.report();
    println!(
        "slowloris: {} opened, {} refused, {} cut by the server (after p50 {:.0} ms), {} still held at the end",
        r.opened, r.refused, r.cut, r.time_to_cut_ms.p50, r.held
    );
    if a.common.json {
        let mut v = serde_json::to_value(&r)?;
        v["scenario"] = json!("slowloris");
        println!("{v}");
    }
    check(
        a.common.expect.as_deref(),
        &figures(&[("opened", r.opened as f64), ("cut", r.cut as f64), ("held", r.held as f64)]),
    )
}

async fn launch_day_cmd(mut a: LaunchDayArgs) -> anyhow::Result<Vec<String>> {
    if a.common.quick {
        a.incumbents = a.incumbents.min(200);
        a.join_rate = a.join_rate.min(100.0);
        a.flood_rate = a.flood_rate.min(300.0);
        a.slowloris = a.slowloris.min(100);
        a.duration = a.duration.min(6);
    }
    let duration = bounded(a.duration)?;
    let need = a.incumbents + a.slowloris + 256;
    if need > socket_budget() {
        bail!("{need} sockets exceed this process's open-files limit; lower the counts");
    }
    let admin_token = match a.admin_token.clone() {
        Some(t) => Some(t),
        None => Some(mint("townhall-load", Role::Host, "*", 3_600)?),
    };
    let cfg = LaunchDayConfig {
        target: a.common.target,
        space: a.space.clone(),
        incumbents: a.incumbents,
        incumbent_ramp: a.ramp,
        join_rate: a.join_rate,
        flood_rate: a.flood_rate,
        slowloris: a.slowloris,
        storm: duration,
        admin_token,
        max_sockets: socket_budget(),
    };
    eprintln!(
        "launch-day: {} incumbents, then {}s of {}/s joiners + {}/s junk + {} slowloris on {}",
        a.incumbents, a.duration, a.join_rate, a.flood_rate, a.slowloris, cfg.target
    );
    let r = launch_day::run(cfg).await;
    let i = &r.incumbents;
    println!(
        "incumbents: {}/{} connected, {} frames, late {:.3}%, lost {:.3}%, gaps {}, disconnects {}",
        i.counts.ever_connected,
        a.incumbents,
        i.counts.frames,
        i.late_percent,
        i.lost_percent,
        i.counts.gaps,
        i.counts.disconnects
    );
    let j = &r.joiners;
    println!(
        "joiners: {} started, {} admitted ({} after waiting), {} still queued, {} timed out, {} errors, rejected {:?}, first audio p99 {:.0} ms",
        j.started,
        j.admitted,
        j.admitted_after_waiting,
        j.queued,
        j.timed_out,
        j.errors,
        j.rejected,
        j.first_audio_ms.p99
    );
    println!("junk: {} sent, answers {:?}, {} errors", r.junk.sent, r.junk.statuses, r.junk.errors);
    println!(
        "slowloris: {} opened, {} cut, {} held",
        r.slowloris.opened, r.slowloris.cut, r.slowloris.held
    );
    let timeline: Vec<String> =
        r.verdicts.iter().map(|v| format!("{:+.0}s {}", v.t, v.verdict)).collect();
    println!("verdicts: {}", timeline.join(", "));
    if a.common.json {
        let mut v = serde_json::to_value(&r)?;
        v["scenario"] = json!("launch-day");
        println!("{v}");
    }
    let junk_ok: u64 =
        r.junk.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| *n).sum();
    let attack_seen = r.verdicts.iter().any(|v| v.t >= 0.0 && v.verdict == "attack");
    check(
        a.common.expect.as_deref(),
        &figures(&[
            ("incumbent_late_percent", i.late_percent),
            ("incumbent_lost_percent", i.lost_percent),
            ("incumbent_disconnects", i.counts.disconnects as f64),
            ("incumbent_gaps", i.counts.gaps as f64),
            ("joiners_dropped", (j.timed_out + j.errors + j.rejected.values().sum::<u64>()) as f64),
            ("joiners_served", (j.admitted + j.queued) as f64),
            ("junk_accepted", junk_ok as f64),
            ("attack_seen", if attack_seen { 1.0 } else { 0.0 }),
        ]),
    )
}

async fn slowread_cmd(mut a: SlowreadArgs) -> anyhow::Result<Vec<String>> {
    if a.common.quick {
        a.connections = a.connections.min(50);
        a.duration = a.duration.min(5);
    }
    let duration = bounded(a.duration)?;
    if a.connections > socket_budget() {
        bail!("{} connections exceed this process's open-files limit", a.connections);
    }
    let cfg = Arc::new(SlowreadConfig {
        target: a.common.target,
        path: listen::townhall_path(a.protocol, &a.space, 1, None),
        connections: a.connections,
        duration,
    });
    eprintln!(
        "slowread: {} {:?} listeners that never read, on {} for {}s",
        a.connections, a.protocol, cfg.target, a.duration
    );
    let stats = Arc::new(SlowreadStats::default());
    slowread::run(cfg, stats.clone()).await;
    let r = stats.report();
    println!(
        "slowread: {} opened, {} failed, {} cut by the server, {} still held",
        r.opened, r.failed, r.cut, r.held
    );
    if a.common.json {
        let mut v = serde_json::to_value(&r)?;
        v["scenario"] = json!("slowread");
        println!("{v}");
    }
    check(
        a.common.expect.as_deref(),
        &figures(&[("opened", r.opened as f64), ("cut", r.cut as f64), ("held", r.held as f64)]),
    )
}

fn simulate_cmd(a: &SimulateArgs) -> anyhow::Result<()> {
    use townhall_load::simulate::{self, Config, Costs, arrivals::Profile};
    let scale = if a.quick { 100 } else { 1 };
    let ms = |v: f64| (v.max(0.0) * 1_000.0) as u64;
    if a.edges == 0 || a.joiners == 0 || a.window_secs <= 0.0 || a.join_rate_per_edge <= 0.0 {
        bail!("joiners, edges, window and join rate must be positive");
    }
    if a.joiners / scale > u64::from(u32::MAX) {
        bail!("at most {} joiners", u32::MAX);
    }
    let join_rate = a.join_rate_per_edge / scale as f64;
    let door_model = match a.door_model.as_str() {
        "blocks" => simulate::DoorModel::Blocks,
        "per-arrival" => simulate::DoorModel::PerArrival,
        other => bail!("--door-model is blocks or per-arrival, not {other:?}"),
    };
    let config = Config {
        door_model,
        doors: a.doors,
        joiners: a.joiners / scale,
        profile: Profile {
            window_secs: a.window_secs,
            rise_secs: a.rise_secs.max(0.0),
            decay_secs: a.decay_secs,
        },
        signed_in_share: a.signed_in_share.clamp(0.0, 1.0),
        edges: a.edges,
        edge_capacity: a.edge_capacity / scale,
        join_rate_per_edge: join_rate,
        call_rate: a.call_rate.map_or((join_rate * a.edges as f64) as u64, |r| r / scale),
        patience_us: ms(a.patience_secs * 1_000.0),
        leave_per_s: a.leave_per_s.max(0.0),
        retry_spread: a.retry_spread.clamp(0.0, 1.0),
        costs: Costs {
            door_us: ms(a.door_ms),
            connect_us: ms(a.connect_ms),
            first_frame_us: ms(a.first_frame_ms),
        },
        seed: a.seed,
        trace: false,
    };
    let started = std::time::Instant::now();
    let outcome = simulate::run(&config);
    let elapsed = started.elapsed();
    let r = &outcome.report;
    println!("{r}");
    println!("simulated in {:.1} s", elapsed.as_secs_f64());
    let burst = a.search.then(|| simulate::largest_burst(&config, 0.005));
    if let Some(b) = &burst {
        println!(
            "largest crowd of this profile with nobody timing out: {} (peak {:.0}/s; {} timed out at {}: {}; {} runs)",
            b.joiners, b.peak_arrivals_per_s, b.failed_at.1, b.failed_at.0, b.bound, b.runs
        );
    }
    if let Some(path) = &a.json {
        let v = json!({
            "scenario": "simulate",
            "config": config,
            "report": r,
            "largest_burst": burst,
            "simulated_secs": elapsed.as_secs_f64(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !r.violations.none() {
        bail!("an invariant broke: {:?}", r.violations);
    }
    Ok(())
}
