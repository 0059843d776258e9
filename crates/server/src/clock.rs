//! The server's wall clock: the one place the edge reads time for the sans-IO core.

use std::time::{SystemTime, UNIX_EPOCH};

use townhall_core::UnixTime;

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    now_us() / 1_000
}

/// Seconds since the Unix epoch, for the core.
pub fn now_unix() -> UnixTime {
    UnixTime(now_us() / 1_000_000)
}
