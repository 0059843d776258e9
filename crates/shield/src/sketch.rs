//! Memory-bounded, lock-free per-key limits: GCRA rate limits and concurrency counts kept in
//! fixed-size hashed tables (count-min sketches with conservative update).
//!
//! A flood from millions of distinct addresses cannot grow these tables: memory is fixed at
//! construction. Keys that collide share a cell; with two rows and the minimum taken, a key is
//! only over-limited when *both* of its cells are shared with busy keys, and never
//! under-limited. Hashes are keyed per process (SipHash with random keys), so an attacker cannot
//! aim collisions at a victim.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::gcra::RateLimited;

const ROWS: usize = 2;

/// Where a key lands in each row.
struct Cells {
    hashers: [RandomState; ROWS],
    mask: usize,
}

impl Cells {
    fn new(width_log2: u32) -> Cells {
        Cells {
            hashers: [RandomState::new(), RandomState::new()],
            mask: (1usize << width_log2) - 1,
        }
    }

    fn index<K: Hash>(&self, key: &K) -> [usize; ROWS] {
        std::array::from_fn(|row| self.hashers[row].hash_one(key) as usize & self.mask)
    }
}

/// Per-key GCRA rate limits for any number of keys in fixed memory (`2 × 2^width_log2` cells of
/// 8 bytes). Time is nanoseconds on the caller's monotonic clock.
pub struct RateSketch {
    cells: Cells,
    /// Theoretical arrival times, ns.
    tat: [Box<[AtomicU64]>; ROWS],
    interval_ns: AtomicU64,
    tolerance_ns: AtomicU64,
}

impl std::fmt::Debug for RateSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateSketch")
            .field("width", &(self.cells.mask + 1))
            .field("interval_ns", &self.interval_ns.load(Ordering::Relaxed))
            .finish()
    }
}

impl RateSketch {
    /// `per_second` events per key on average (at least 1), bursts of `burst`.
    pub fn new(per_second: u32, burst: u32, width_log2: u32) -> RateSketch {
        let width = 1usize << width_log2;
        let sketch = RateSketch {
            cells: Cells::new(width_log2),
            tat: std::array::from_fn(|_| (0..width).map(|_| AtomicU64::new(0)).collect()),
            interval_ns: AtomicU64::new(0),
            tolerance_ns: AtomicU64::new(0),
        };
        sketch.set_rate(per_second, burst);
        sketch
    }

    /// One event per `interval` per key on average (slower than one a second, e.g. reports),
    /// bursts of `burst`.
    pub fn every(interval: Duration, burst: u32, width_log2: u32) -> RateSketch {
        let sketch = RateSketch::new(1, burst, width_log2);
        sketch.set_interval(interval, burst);
        sketch
    }

    /// Changes the rate and burst for every key (e.g. tightened under attack); takes effect on
    /// the next check.
    pub fn set_rate(&self, per_second: u32, burst: u32) {
        let interval = Duration::from_nanos(1_000_000_000 / u64::from(per_second.max(1)));
        self.set_interval(interval, burst);
    }

    /// Changes the interval between events and the burst for every key.
    pub fn set_interval(&self, interval: Duration, burst: u32) {
        let interval_ns = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.interval_ns.store(interval_ns, Ordering::Relaxed);
        let tolerance = interval_ns.saturating_mul(u64::from(burst.max(1) - 1));
        self.tolerance_ns.store(tolerance, Ordering::Relaxed);
    }

    /// Bytes of memory the table holds (fixed).
    pub fn memory_bytes(&self) -> usize {
        ROWS * (self.cells.mask + 1) * 8
    }

    /// Records an event for `key` at `now_ns` if it conforms; otherwise says how long to wait.
    pub fn check<K: Hash>(&self, key: &K, now_ns: u64) -> Result<(), RateLimited> {
        let idx = self.cells.index(key);
        let tat = idx
            .iter()
            .zip(&self.tat)
            .map(|(i, row)| row[*i].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
            .max(now_ns);
        let earliest = tat.saturating_sub(self.tolerance_ns.load(Ordering::Relaxed));
        if now_ns < earliest {
            return Err(RateLimited { retry_after: Duration::from_nanos(earliest - now_ns) });
        }
        let next = tat + self.interval_ns.load(Ordering::Relaxed);
        // Conservative update: raise each cell to the key's new arrival time, never lower it.
        for (i, row) in idx.iter().zip(&self.tat) {
            row[*i].fetch_max(next, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Per-key concurrency counts (e.g. open connections per address) in fixed memory.
pub struct CountSketch {
    cells: Cells,
    counts: [Box<[AtomicU32]>; ROWS],
}

impl std::fmt::Debug for CountSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountSketch").field("width", &(self.cells.mask + 1)).finish()
    }
}

/// A slot taken in a [`CountSketch`]; release it with [`CountSketch::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot([usize; ROWS]);

impl CountSketch {
    /// A table of `2 × 2^width_log2` counters.
    pub fn new(width_log2: u32) -> CountSketch {
        let width = 1usize << width_log2;
        CountSketch {
            cells: Cells::new(width_log2),
            counts: std::array::from_fn(|_| (0..width).map(|_| AtomicU32::new(0)).collect()),
        }
    }

    /// The (over-)estimated count for `key`.
    pub fn count<K: Hash>(&self, key: &K) -> u32 {
        let idx = self.cells.index(key);
        idx.iter()
            .zip(&self.counts)
            .map(|(i, row)| row[*i].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Takes a slot for `key` if its count is below `cap`.
    pub fn acquire<K: Hash>(&self, key: &K, cap: u32) -> Option<Slot> {
        let idx = self.cells.index(key);
        let current =
            idx.iter().zip(&self.counts).map(|(i, row)| row[*i].load(Ordering::Relaxed)).min()?;
        if current >= cap {
            return None;
        }
        for (i, row) in idx.iter().zip(&self.counts) {
            row[*i].fetch_add(1, Ordering::Relaxed);
        }
        Some(Slot(idx))
    }

    /// Gives a slot back.
    pub fn release(&self, slot: Slot) {
        for (i, row) in slot.0.iter().zip(&self.counts) {
            let _ =
                row[*i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn each_key_gets_its_own_burst_and_rate() {
        let s = RateSketch::new(10, 3, 12);
        for key in ["a", "b"] {
            for _ in 0..3 {
                assert!(s.check(&key, 0).is_ok(), "{key}");
            }
            let refused = s.check(&key, 0).expect_err("over the burst");
            assert_eq!(refused.retry_after, Duration::from_millis(100));
        }
        assert!(s.check(&"a", 100 * MS).is_ok());
    }

    #[test]
    fn limits_can_be_tightened_at_run_time() {
        let s = RateSketch::new(100, 100, 8);
        assert_eq!((0..50).filter(|_| s.check(&"k", 0).is_ok()).count(), 50);
        s.set_rate(1, 1);
        assert!(s.check(&"fresh", 0).is_ok());
        assert!(s.check(&"fresh", 0).is_err(), "one per second now");
    }

    #[test]
    fn a_million_keys_fit_in_fixed_memory() {
        let s = RateSketch::new(5, 5, 18);
        let before = s.memory_bytes();
        let mut allowed = 0;
        // A million distinct sources over ten seconds, one request each.
        for k in 0..1_000_000u64 {
            allowed += usize::from(s.check(&k, k * 10_000).is_ok());
        }
        assert_eq!(s.memory_bytes(), before, "no growth");
        assert_eq!(before, 2 * 262_144 * 8);
        // Almost all pass despite sharing 262,144 cells per row.
        assert!(allowed > 995_000, "{allowed}");
    }

    #[test]
    fn concurrency_caps_hold_and_release() {
        let s = CountSketch::new(10);
        let slots: Vec<Slot> = (0..3).filter_map(|_| s.acquire(&"ip", 3)).collect();
        assert_eq!(slots.len(), 3);
        assert!(s.acquire(&"ip", 3).is_none());
        assert!(s.acquire(&"other", 3).is_some());
        s.release(slots[0]);
        assert!(s.acquire(&"ip", 3).is_some());
    }

    proptest! {
        /// Never under-limits: a key never gets more than rate × window + burst, collisions or not.
        #[test]
        fn never_more_than_rate_plus_burst(
            rate in 1u32..100,
            burst in 1u32..10,
            events in proptest::collection::vec((0u64..20, 0u64..50 * MS), 1..400),
        ) {
            let s = RateSketch::new(rate, burst, 4); // 16 cells: many collisions
            let mut t = 0u64;
            let mut allowed = std::collections::HashMap::<u64, u64>::new();
            for (key, gap) in events {
                t += gap;
                if s.check(&key, t).is_ok() {
                    *allowed.entry(key).or_default() += 1;
                }
            }
            let window_s = t as f64 / 1e9;
            for (key, n) in allowed {
                let bound = (window_s * f64::from(rate)).floor() as u64 + u64::from(burst);
                prop_assert!(n <= bound, "key {} allowed {} > {}", key, n, bound);
            }
        }
    }
}
