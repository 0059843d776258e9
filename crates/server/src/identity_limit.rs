//! Per-identity rate limits for actions whose effect reaches many people (raised hands are
//! broadcast to every listener) or the operators (reports): a GCRA per token identity, in a
//! bounded table.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use townhall_core::Identity;
use townhall_shield::Gcra;

/// Identities tracked before the table starts afresh. Identities come from signed tokens whose
/// minting is itself rate-limited, so a table this full holds mostly old news.
const MAX_TRACKED: usize = 100_000;

/// One limit (a burst, then one per interval) for each identity.
#[derive(Debug)]
pub struct IdentityLimiter {
    interval: Duration,
    burst: u32,
    seen: Mutex<HashMap<Identity, Gcra>>,
}

impl IdentityLimiter {
    /// `burst` at once, then one per `interval`, per identity.
    pub fn new(interval: Duration, burst: u32) -> IdentityLimiter {
        IdentityLimiter { interval, burst, seen: Mutex::new(HashMap::new()) }
    }

    /// Counts one event by `who` at `now` if within their allowance; otherwise how long until
    /// one would be.
    pub fn check(&self, who: &Identity, now: Instant) -> Result<(), Duration> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_TRACKED && !seen.contains_key(who) {
            seen.clear();
        }
        let (interval, burst) = (self.interval, self.burst);
        let limiter = seen.entry(who.clone()).or_insert_with(|| Gcra::every(interval, burst));
        limiter.check(now).map_err(|limited| limited.retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_has_its_own_allowance() {
        let limiter = IdentityLimiter::new(Duration::from_secs(60), 5);
        let (a, b) = (Identity::new("a").expect("a"), Identity::new("b").expect("b"));
        let now = Instant::now();
        for _ in 0..5 {
            assert!(limiter.check(&a, now).is_ok());
        }
        assert_eq!(limiter.check(&a, now), Err(Duration::from_secs(60)));
        assert!(limiter.check(&b, now).is_ok(), "others are not affected");
        assert!(limiter.check(&a, now + Duration::from_secs(60)).is_ok());
    }
}
