//! Is the node overloaded? From measured event-loop lag (how late a timer fires) and egress
//! backlog (a fan-out shard falling behind its feed): the adaptive part of admission control.
//! Hysteresis keeps it from flapping: quick to declare overload, slower to clear it.

use std::time::{Duration, Instant};

/// When to declare and clear overload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressureLimits {
    /// Smoothed lag above this: overloaded.
    pub lag_high: Duration,
    /// Smoothed lag below this (for `recover`): recovered.
    pub lag_low: Duration,
    /// How long things must be fine before overload clears.
    pub recover: Duration,
}

impl Default for PressureLimits {
    fn default() -> Self {
        PressureLimits {
            lag_high: Duration::from_millis(25),
            lag_low: Duration::from_millis(8),
            recover: Duration::from_secs(3),
        }
    }
}

/// Tracks pressure on one node.
#[derive(Debug, Clone)]
pub struct Pressure {
    limits: PressureLimits,
    /// Exponentially smoothed lag, µs.
    lag_us: f64,
    overloaded: bool,
    fine_since: Option<Instant>,
}

impl Pressure {
    /// A node under no pressure.
    pub fn new(limits: PressureLimits) -> Pressure {
        Pressure { limits, lag_us: 0.0, overloaded: false, fine_since: None }
    }

    /// Records a lag measurement and whether egress fell behind since the last one; returns
    /// whether the node is overloaded now.
    pub fn observe(&mut self, now: Instant, lag: Duration, egress_behind: bool) -> bool {
        self.lag_us = 0.7 * self.lag_us + 0.3 * lag.as_micros() as f64;
        let smoothed = Duration::from_micros(self.lag_us as u64);
        if egress_behind || smoothed > self.limits.lag_high {
            self.overloaded = true;
            self.fine_since = None;
        } else if self.overloaded && smoothed < self.limits.lag_low {
            let since = *self.fine_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.limits.recover {
                self.overloaded = false;
                self.fine_since = None;
            }
        } else if self.overloaded {
            self.fine_since = None;
        }
        self.overloaded
    }

    /// The smoothed lag.
    pub fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us as u64)
    }

    /// Whether the node is overloaded.
    pub fn overloaded(&self) -> bool {
        self.overloaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    #[test]
    fn sustained_lag_overloads_and_calm_clears_after_a_while() {
        let t0 = Instant::now();
        let mut p = Pressure::new(PressureLimits::default());
        let mut t = t0;
        assert!(!p.observe(t, Duration::from_millis(1), false));
        // One late tick is smoothed away; a sustained lag is not.
        assert!(!p.observe(t, Duration::from_millis(40), false));
        for _ in 0..5 {
            t += TICK;
            p.observe(t, Duration::from_millis(60), false);
        }
        assert!(p.overloaded());
        // Calm returns: still overloaded until it has held for `recover`.
        let mut cleared_at = None;
        for i in 0..60 {
            t += TICK;
            if !p.observe(t, Duration::from_millis(1), false) {
                cleared_at = Some(i);
                break;
            }
        }
        let i = cleared_at.expect("recovers");
        assert!(i >= 30, "cleared after {i} ticks, before the 3 s recovery");
    }

    #[test]
    fn egress_falling_behind_overloads_at_once() {
        let mut p = Pressure::new(PressureLimits::default());
        assert!(p.observe(Instant::now(), Duration::ZERO, true));
    }
}
