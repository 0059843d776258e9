//! The generic cell rate algorithm (GCRA): a token bucket kept as one timestamp.
//!
//! Hand-written rather than taken from `governor` because the shield needs limiters it can drive
//! with an injected clock and store by the million in bounded tables: one `Instant` per key.

use std::time::{Duration, Instant};

/// A request over the limit, with how long until one would conform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry after {retry_after:?}")]
pub struct RateLimited {
    /// Wait at least this long before trying again.
    pub retry_after: Duration,
}

/// A GCRA limiter: `rate` events per second on average, bursts of up to `burst` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next conforming event.
    tat: Option<Instant>,
}

impl Gcra {
    /// A limiter allowing `per_second` events per second (at least 1) with bursts of `burst`
    /// (at least 1).
    pub fn new(per_second: u32, burst: u32) -> Gcra {
        let interval = Duration::from_secs(1) / per_second.max(1);
        let tolerance = interval * burst.max(1).saturating_sub(1);
        Gcra { interval, tolerance, tat: None }
    }

    /// A limiter allowing one event per `interval` on average (for slow rates such as one a
    /// minute), with bursts of `burst` (at least 1).
    pub fn every(interval: Duration, burst: u32) -> Gcra {
        let tolerance = interval * burst.max(1).saturating_sub(1);
        Gcra { interval, tolerance, tat: None }
    }

    /// Records an event at `now` if it conforms; otherwise says how long to wait.
    pub fn check(&mut self, now: Instant) -> Result<(), RateLimited> {
        let tat = self.tat.map_or(now, |t| t.max(now));
        let earliest = tat.checked_sub(self.tolerance).unwrap_or(now);
        if now < earliest {
            return Err(RateLimited { retry_after: earliest - now });
        }
        self.tat = Some(tat + self.interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slow_rates_allow_their_burst_then_one_per_interval() {
        let start = Instant::now();
        let mut g = Gcra::every(Duration::from_secs(60), 2);
        assert!(g.check(start).is_ok());
        assert!(g.check(start).is_ok());
        let refused = g.check(start).expect_err("third at once");
        assert_eq!(refused.retry_after, Duration::from_secs(60));
        assert!(g.check(start + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut g = Gcra::new(10, 3);
        for _ in 0..3 {
            assert!(g.check(start).is_ok());
        }
        let refused = g.check(start).expect_err("fourth at once is over the burst");
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert!(g.check(start + Duration::from_millis(100)).is_ok());
        assert!(g.check(start + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let mut g = Gcra::new(50, 5);
        let later = start + Duration::from_secs(60);
        let allowed = (0..20).filter(|_| g.check(later).is_ok()).count();
        assert_eq!(allowed, 5);
    }

    proptest! {
        /// Over any window, conforming events never exceed rate × window + burst.
        #[test]
        fn never_exceeds_rate_plus_burst(
            rate in 1u32..200,
            burst in 1u32..20,
            gaps in proptest::collection::vec(0u64..30_000, 1..500),
        ) {
            let start = Instant::now();
            let mut g = Gcra::new(rate, burst);
            let mut t = start;
            let mut allowed = 0u64;
            for gap in gaps {
                t += Duration::from_micros(gap);
                if g.check(t).is_ok() { allowed += 1; }
            }
            let window = (t - start).as_secs_f64();
            let bound = (window * f64::from(rate)).floor() as u64 + u64::from(burst);
            prop_assert!(allowed <= bound, "{} allowed, bound {}", allowed, bound);
        }
    }
}
