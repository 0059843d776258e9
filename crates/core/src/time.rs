//! Wall-clock time as plain data, injected by the caller.

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch. The core never reads a clock; callers pass `UnixTime` in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// The time `secs` seconds later (saturating).
    pub fn plus(self, secs: u64) -> UnixTime {
        UnixTime(self.0.saturating_add(secs))
    }
}
