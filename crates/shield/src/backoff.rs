//! How a client waits before it tries again: full-jitter exponential backoff, with the server's
//! `Retry-After` as a floor. The rule every Townhall client follows (the page, `townhall-load`,
//! an edge's relay), written down in `docs/protocol.md` ("Reconnecting").
//!
//! Sans-IO: the caller supplies the random draw (a number in `[0, 1)`), so tests choose it and
//! a simulation replays it.
//!
//! Attempt `n` (0 for the first retry after a failure) waits
//! `retry_after + random(0, min(cap, base * 2^n))`: never sooner than the server asked, and
//! spread over the whole window rather than bunched at its end ("full jitter": a crowd that
//! failed at the same moment comes back at a steady trickle instead of in waves).

use std::time::Duration;

/// Doublings after which the window stops growing (it has reached any sane cap by then).
const MAX_DOUBLINGS: u32 = 20;

/// One client's backoff state: how many attempts in a row have failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// The page's and `townhall-load`'s listeners and speakers: 0.5 s doubling to 30 s.
    pub const CLIENT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    /// An edge's relay to its origin: 0.1 s doubling to 5 s (an edge is one connection, and
    /// every listener on it hears the gap).
    pub const RELAY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

    /// A backoff whose window starts at `base` and doubles up to `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap, failures: 0 }
    }

    /// This backoff after `failures` failures in a row (for a caller that keeps only the count,
    /// e.g. a simulation of millions of clients).
    pub const fn after_failures(self, failures: u32) -> Backoff {
        Backoff { failures, ..self }
    }

    /// The window the next wait is drawn from: `min(cap, base * 2^failures)`.
    pub fn window(&self) -> Duration {
        self.base.saturating_mul(1 << self.failures.min(MAX_DOUBLINGS)).min(self.cap)
    }

    /// The wait before the next attempt, given a uniform draw `unit` in `[0, 1)` and the
    /// server's `Retry-After` (or a `bye`'s `reconnect_after_ms`) if it gave one; counts the
    /// failure, so the next window is twice as wide (up to the cap).
    pub fn next_delay(&mut self, unit: f64, retry_after: Option<Duration>) -> Duration {
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
        let drawn = self.window().mul_f64(unit);
        self.failures = self.failures.saturating_add(1);
        retry_after.unwrap_or(Duration::ZERO).saturating_add(drawn)
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure starts from the first window again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_window_doubles_from_base_up_to_the_cap() {
        let mut b = Backoff::new(MS(500), Duration::from_secs(30));
        let windows: Vec<u64> = (0..10)
            .map(|_| {
                let w = b.window().as_millis() as u64;
                b.next_delay(0.5, None);
                w
            })
            .collect();
        assert_eq!(
            windows,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(b.failures(), 10);
        assert_eq!(Backoff::CLIENT.after_failures(3).window(), MS(4_000));
        b.reset();
        assert_eq!(b.window(), MS(500), "a success starts over");
    }

    #[test]
    fn full_jitter_spans_the_whole_window() {
        let mut low = Backoff::CLIENT;
        let mut high = Backoff::CLIENT;
        for _ in 0..3 {
            low.next_delay(0.0, None);
            high.next_delay(0.0, None);
        }
        // Fourth attempt: window 4 s; the draw goes from nothing to (almost) all of it.
        assert_eq!(low.next_delay(0.0, None), Duration::ZERO);
        assert_eq!(high.next_delay(0.999_999, None).as_millis(), 3_999);
        // Out-of-range draws are clamped, never panicking or exceeding the window.
        let mut b = Backoff::CLIENT;
        assert_eq!(b.next_delay(f64::NAN, None), Duration::ZERO);
        assert_eq!(b.next_delay(7.0, None), MS(1_000));
        assert_eq!(b.next_delay(-1.0, None), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_a_floor_and_the_jitter_comes_on_top() {
        let mut b = Backoff::CLIENT;
        assert_eq!(b.next_delay(0.0, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(b.next_delay(0.5, Some(Duration::from_secs(2))), MS(2_500));
        // A bye's `reconnect_after_ms: 0` leaves the draw alone.
        assert_eq!(b.next_delay(0.5, Some(Duration::ZERO)), MS(1_000));
    }

    proptest! {
        #[test]
        fn every_wait_is_within_retry_after_and_retry_after_plus_the_window(
            base_ms in 1u64..5_000,
            cap_ms in 1u64..120_000,
            retry_ms in proptest::option::of(0u64..60_000),
            draws in proptest::collection::vec(0.0f64..1.0, 1..40),
        ) {
            let mut b = Backoff::new(MS(base_ms), MS(cap_ms));
            let floor = MS(retry_ms.unwrap_or(0));
            for (n, unit) in draws.into_iter().enumerate() {
                let window = b.window();
                prop_assert!(window <= MS(cap_ms));
                prop_assert!(window >= MS(base_ms).min(MS(cap_ms)));
                let expected = MS(base_ms).saturating_mul(1 << (n as u32).min(MAX_DOUBLINGS)).min(MS(cap_ms));
                prop_assert_eq!(window, expected);
                let wait = b.next_delay(unit, retry_ms.map(MS));
                prop_assert!(wait >= floor);
                prop_assert!(wait <= floor + window);
            }
        }
    }
}
