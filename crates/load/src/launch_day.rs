//! The `launch-day` scenario: incumbent listeners on air, then, at once, a storm of real joiners
//! (who wait in line when told and stay to listen), a junk flood and slowloris connections. It
//! reports each group separately and the server's crowd-or-attack verdict second by second.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::flood::{self, FloodConfig, FloodReport, FloodStats};
use crate::http::{self, ReadBuf};
use crate::join_storm::{self, StormConfig, StormReport, StormStats};
use crate::listen::{self, ListenConfig};
use crate::slowloris::{self, SlowlorisConfig, SlowlorisReport, SlowlorisStats};
use crate::stats::{Snapshot, Stats};
use crate::target::Target;

/// A launch day.
#[derive(Debug, Clone)]
pub struct LaunchDayConfig {
    /// Server.
    pub target: Target,
    /// The space on air.
    pub space: String,
    /// Listeners on air before the storm.
    pub incumbents: usize,
    /// Incumbents connected per second.
    pub incumbent_ramp: f64,
    /// Real joiners per second during the storm.
    pub join_rate: f64,
    /// Junk requests per second during the storm.
    pub flood_rate: f64,
    /// Slowloris connections during the storm.
    pub slowloris: usize,
    /// How long the storm lasts.
    pub storm: Duration,
    /// Operator token to read the verdict (`GET /api/v1/admin/shield`), if any.
    pub admin_token: Option<String>,
    /// Most sockets this process may use.
    pub max_sockets: usize,
}

/// The verdict at one second.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictSample {
    /// Seconds since the storm began (negative: before).
    pub t: f64,
    /// `normal`, `flash_crowd` or `attack`.
    pub verdict: String,
}

/// The report of a launch day.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchDayReport {
    /// The incumbent listeners.
    pub incumbents: IncumbentReport,
    /// The real joiners.
    pub joiners: StormReport,
    /// The junk.
    pub junk: FloodReport,
    /// The slow connections.
    pub slowloris: SlowlorisReport,
    /// The server's verdict over time.
    pub verdicts: Vec<VerdictSample>,
}

/// What the incumbents heard.
#[derive(Debug, Clone, Serialize)]
pub struct IncumbentReport {
    /// Counters.
    #[serde(flatten)]
    pub counts: Snapshot,
    /// Late frames as a share of frames, percent.
    pub late_percent: f64,
    /// Frames lost to the listener, percent: missing from the sequence or arriving late.
    pub lost_percent: f64,
}

/// Reads the server's current verdict.
pub async fn verdict(target: &Target, token: &str) -> Option<String> {
    let mut stream = http::connect(target, target.source_ip(253)).await.ok()?;
    let extra = format!("Authorization: Bearer {token}\r\nConnection: close\r\n");
    http::get(&mut stream, target, "/api/v1/admin/shield", &extra).await.ok()?;
    let mut buf = ReadBuf::new(4_096);
    let head = http::read_head(&mut stream, &mut buf).await.ok()?;
    let body = http::read_body(&mut stream, &mut buf, head).await.ok()?;
    let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
    json["verdict"].as_str().map(str::to_owned)
}

/// Runs the whole day.
pub async fn run(cfg: LaunchDayConfig) -> LaunchDayReport {
    let ramp_secs = cfg.incumbents as f64 / cfg.incumbent_ramp.max(1.0);
    let warmup = Duration::from_secs_f64(ramp_secs + 2.0);
    let cooldown = Duration::from_secs(2);
    let incumbent_stats = Arc::new(Stats::default());
    let listen_cfg = Arc::new(ListenConfig {
        target: cfg.target,
        path: listen::townhall_path(listen::Protocol::Ws, &cfg.space, 5, None),
        listeners: cfg.incumbents,
        ramp: Some(cfg.incumbent_ramp),
        duration: Duration::from_secs(2) + cfg.storm + cooldown,
        protocol: listen::Protocol::Ws,
        late_budget: Duration::from_millis(500),
        read_buffer: 4_096,
        token: None,
        // Incumbents measure what current listeners lose: none goes anywhere else.
        door: None,
        timeline: false,
        join_first: false,
    });
    let started = Instant::now();
    let incumbents = tokio::spawn(listen::run(listen_cfg, incumbent_stats.clone()));

    let storm_start = started + warmup;
    let verdicts = tokio::spawn(poll_verdicts(
        cfg.clone(),
        started,
        storm_start,
        warmup + cfg.storm + cooldown,
    ));
    tokio::time::sleep_until(storm_start).await;

    let budget = cfg.max_sockets.saturating_sub(cfg.incumbents + cfg.slowloris).max(64);
    let storm_stats = Arc::new(StormStats::default());
    let storm = tokio::spawn(join_storm::run(
        Arc::new(StormConfig {
            target: cfg.target,
            space: cfg.space.clone(),
            rate: cfg.join_rate,
            duration: cfg.storm,
            deadline: cfg.storm + Duration::from_secs(5),
            hold: cooldown,
            token: None,
            max_in_flight: budget / 2,
            subnets: 0,
            batch: 1,
        }),
        storm_stats.clone(),
    ));
    let flood_stats = Arc::new(FloodStats::default());
    let flood = tokio::spawn(flood::run(
        Arc::new(FloodConfig {
            target: cfg.target,
            space: cfg.space.clone(),
            rate: cfg.flood_rate,
            duration: cfg.storm,
            mix: vec![
                flood::Junk::Paths,
                flood::Junk::Tokens,
                flood::Junk::Headers,
                flood::Junk::Websocket,
                flood::Junk::Churn,
            ],
            max_in_flight: budget / 2,
            // Junk comes from a few addresses of its own, apart from the audience's.
            sources: 16,
        }),
        flood_stats.clone(),
    ));
    let slow_stats = Arc::new(SlowlorisStats::default());
    let slow = tokio::spawn(slowloris::run(
        Arc::new(SlowlorisConfig {
            target: cfg.target,
            connections: cfg.slowloris,
            duration: cfg.storm,
            interval: Duration::from_secs(5),
            ramp: (cfg.slowloris as f64 / 2.0).max(1.0),
        }),
        slow_stats.clone(),
    ));
    let _ = tokio::join!(storm, flood, slow);
    let _ = incumbents.await;
    let verdicts = verdicts.await.unwrap_or_default();
    let counts = incumbent_stats.snapshot();
    let connected_secs =
        incumbent_stats.connected_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
    let expected = connected_secs * 50.0;
    let percent = |n: f64, of: f64| if of > 0.0 { n * 100.0 / of } else { 0.0 };
    LaunchDayReport {
        incumbents: IncumbentReport {
            counts,
            late_percent: percent(counts.late_frames as f64, counts.frames as f64),
            lost_percent: percent(
                (expected - counts.frames as f64).max(0.0) + counts.late_frames as f64,
                expected,
            ),
        },
        joiners: storm_stats.report(cfg.storm),
        junk: flood_stats.report(),
        slowloris: slow_stats.report(),
        verdicts,
    }
}

async fn poll_verdicts(
    cfg: LaunchDayConfig,
    started: Instant,
    storm: Instant,
    total: Duration,
) -> Vec<VerdictSample> {
    let Some(token) = cfg.admin_token.clone() else { return Vec::new() };
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < total {
        tick.tick().await;
        if let Some(v) = verdict(&cfg.target, &token).await {
            let t = Instant::now().duration_since(storm).as_secs_f64()
                - storm.saturating_duration_since(Instant::now()).as_secs_f64();
            samples.push(VerdictSample { t: (t * 10.0).round() / 10.0, verdict: v });
        }
    }
    samples
}
