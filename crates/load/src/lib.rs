//! `townhall-load`: the instrument behind Townhall's numbers.
//!
//! Scenarios (listeners, speakers, join storms) against one server on loopback, measured from the
//! client side: frames, gaps, late frames, latency, time to first audio, and the CPU of both the
//! load generator and (given its pid) the server. Only loopback targets are accepted.
//! [`simulate`] runs no server: a crowd at internet scale against a fleet, in virtual time.

pub mod door;
pub mod expect;
pub mod flood;
pub mod histogram;
pub mod hls;
pub mod join_storm;
pub mod launch_day;
pub mod listen;
pub mod ogg_scan;
pub mod procstat;
pub mod simulate;
pub mod slowloris;
pub mod slowread;
pub mod speak;
pub mod stats;
pub mod timeline;

/// Moved to `townhall-client` (shared with the server's tests); re-exported under the old paths.
pub use townhall_client::{http, rtc_client, target};

use serde::Serialize;

/// p50/p99/p999 of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl Quantiles {
    /// Reads the quantiles of a histogram of microseconds.
    pub fn of(h: &histogram::Histogram) -> Quantiles {
        let ms = |q| h.quantile(q) as f64 / 1_000.0;
        Quantiles { p50: ms(0.5), p99: ms(0.99), p999: ms(0.999) }
    }
}
