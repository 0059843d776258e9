//! The mixer threads: their tick counters and lag on `/metrics`, and spaces spread over a pool
//! of them, each heard correctly (real server on loopback, tones decoded with libopus).
//!
//! Run alone, `mixer_ticks_and_lag_show_on_metrics` is the first server of its process: it
//! catches mixer (and WebRTC) counters taken before the Prometheus recorder was installed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use townhall_media::analysis::tone_amplitude;
use townhall_server::Config;

const SECOND: Duration = Duration::from_secs(1);

/// The value of the sample `series` (name and labels, exactly as rendered) in `/metrics`.
async fn sample(addr: SocketAddr, series: &str) -> Option<f64> {
    let text = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn mixer_ticks_and_lag_show_on_metrics() {
    let server = server_with(Config { mixer_threads: Some(2), ..Config::default() }).await;
    let addr = server.addr();
    live_space(addr, "ticking").await;
    // The space runs on thread 0 (the first placed); thread 1, with nothing to mix, sleeps (the
    // recorder is the process's: another test's servers may tick both).
    let ticks = r#"townhall_mixer_ticks_total{thread="0"}"#;
    let first = sample(addr, ticks).await.expect("tick counter of thread 0 on /metrics");
    tokio::time::sleep(SECOND / 2).await;
    let later = sample(addr, ticks).await.expect("tick counter");
    // 50 ticks a second: half a second is ~25, whatever the machine's noise.
    assert!(later >= first + 10.0, "ticks rise: {first} then {later}");
    assert!(sample(addr, r#"townhall_mixer_late_ticks_total{thread="0"}"#).await.is_some());
    let lag_count = r#"townhall_mixer_tick_lag_seconds_count{thread="0"}"#;
    let lags = sample(addr, lag_count).await.expect("tick lag summary of thread 0");
    assert!(lags > 0.0, "one lag sample per tick: {lags}");
    let p99 = sample(addr, r#"townhall_mixer_tick_lag_seconds{thread="0",quantile="0.99"}"#)
        .await
        .expect("tick lag quantiles");
    assert!((0.0..1.0).contains(&p99), "lag p99 in seconds: {p99}");
    // The WebRTC thread took its counters as early, with the same bug.
    let received = r#"townhall_webrtc_datagrams_total{result="received"}"#;
    assert!(sample(addr, received).await.is_some(), "WebRTC counters on /metrics");
    server.shutdown().await;
}

#[tokio::test]
async fn two_mixer_threads_carry_two_live_spaces_each_heard() {
    let server = server_with(Config { mixer_threads: Some(2), ..Config::default() }).await;
    let addr = server.addr();
    live_space(addr, "low").await;
    live_space(addr, "high").await;
    let loads = server.state().mixer_loads();
    assert_eq!(loads.len(), 2);
    assert!(loads.iter().all(|l| l.spaces == 1), "one space per thread: {loads:?}");

    let low_listener = ws(addr, "/ws/low").await;
    let high_listener = ws(addr, "/ws/high").await;
    let low = spawn_speaker(addr, "low", "alice", 440.0, 4 * SECOND);
    let high = spawn_speaker(addr, "high", "bob", 660.0, 4 * SECOND);
    let midway = async {
        tokio::time::sleep(2 * SECOND).await;
        server.state().mixer_loads()
    };
    let (low_heard, high_heard, speaking) = tokio::join!(
        listen_ws(low_listener, 4 * SECOND),
        listen_ws(high_listener, 4 * SECOND),
        midway,
    );
    assert!(speaking.iter().all(|l| l.speakers == 1), "one speaker per thread: {speaking:?}");

    for (name, heard, tone, other) in
        [("low", &low_heard, 440.0, 660.0), ("high", &high_heard, 660.0, 440.0)]
    {
        assert!(heard.seqs.len() >= 150, "{name}: only {} frames in 4 s", heard.seqs.len());
        assert_eq!(heard.gaps(), 0, "{name}: sequence numbers are continuous");
        let tail = heard.tail(1.0);
        let (own, others) = (tone_amplitude(tail, tone), tone_amplitude(tail, other));
        assert!(own > 0.25, "{name} carries its {tone} Hz tone: {own}");
        assert!(others < 0.05, "{name} carries nothing of the other space: {others}");
    }
    low.await.expect("low speaker");
    high.await.expect("high speaker");
    server.shutdown().await;
}
