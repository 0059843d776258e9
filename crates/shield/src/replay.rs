//! Single-use tokens (proof-of-work solutions, waiting-room tickets) remembered in fixed memory,
//! so each can be spent once.
//!
//! Two Bloom-filter generations, *current* and *previous*, each `2^bits_log2` bits probed by `k`
//! hashes. Keys go into the current generation; every `ttl` the current one becomes the previous
//! one and the old previous one is wiped. A key recorded at `t` is therefore remembered for at
//! least `ttl` and forgotten before `t + 2 × ttl`, and memory never grows, whatever the flood.
//!
//! The filter never forgets early (no false negatives within `ttl`), but may wrongly take a fresh
//! key for a replay (a false positive). With `n` keys per generation and `m = 2^bits_log2` bits,
//! one generation answers "seen" for a fresh key with probability `p = (1 − e^(−k·n/m))^k`, and a
//! check consults both generations, so a fresh key is refused with probability
//! `1 − (1 − p)^2 ≤ 2p`. A false positive only costs an honest client another proof-of-work or
//! another turn in the queue; it never admits anyone. Size the filter for the expected load:
//! at 10 bits per key (`m = 10 n`) and the default 7 hashes, `p ≈ 0.8 %`; at 16 bits, `≈ 0.05 %`.
//!
//! Tokens must carry their own expiry, no longer than `ttl`, checked before the filter (the
//! filter forgets after `ttl`..`2 × ttl`, so a token still valid after that could be spent again).
//!
//! Hashes are SipHash with keys drawn at random per filter, probed by double hashing
//! (`h1 + i·h2`), so an attacker cannot precompute keys that fill the filter or collide with a
//! victim's token. Sans-IO: time is passed in.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// Hash functions per key unless chosen with [`ReplayFilter::with_hashes`]: the optimum for
/// about 10 bits per key.
pub const DEFAULT_HASHES: u32 = 7;

/// Smallest and largest filter sizes, as `log2` of the bits per generation (64 bits to 512 MiB).
const MIN_BITS_LOG2: u32 = 6;
const MAX_BITS_LOG2: u32 = 32;
/// Most hash functions per key (more only costs time).
const MAX_HASHES: u32 = 32;

/// One Bloom-filter generation.
#[derive(Clone)]
struct Generation {
    words: Box<[u64]>,
    /// Keys inserted (for the false-positive estimate).
    items: u64,
}

impl Generation {
    fn new(bits_log2: u32) -> Generation {
        Generation { words: vec![0; 1 << (bits_log2 - 6)].into_boxed_slice(), items: 0 }
    }

    fn contains(&self, probes: &[u64]) -> bool {
        probes.iter().all(|&bit| self.words[(bit >> 6) as usize] & (1 << (bit & 63)) != 0)
    }

    fn insert(&mut self, probes: &[u64]) {
        for &bit in probes {
            self.words[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        self.items += 1;
    }

    fn clear(&mut self) {
        self.words.fill(0);
        self.items = 0;
    }
}

/// A fixed-memory filter that accepts each key once within a time-to-live: see the
/// [module documentation](self) for the guarantees and the false-positive rate.
///
/// Takes `&mut self`; share it behind a mutex.
#[derive(Clone)]
pub struct ReplayFilter {
    hashers: [RandomState; 2],
    hashes: u32,
    bits_log2: u32,
    ttl: Duration,
    current: Generation,
    previous: Generation,
    /// When the current generation started (set by the first call).
    started: Option<Instant>,
}

impl std::fmt::Debug for ReplayFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayFilter")
            .field("bits_per_generation", &(1u64 << self.bits_log2))
            .field("hashes", &self.hashes)
            .field("ttl", &self.ttl)
            .field("current_items", &self.current.items)
            .field("previous_items", &self.previous.items)
            .finish()
    }
}

impl ReplayFilter {
    /// A filter of two generations of `2^bits_log2` bits each (`bits_log2` clamped to 6..=32),
    /// probed by [`DEFAULT_HASHES`] hashes, remembering keys for `ttl` to `2 × ttl` (`ttl` at
    /// least 1 ns).
    pub fn new(bits_log2: u32, ttl: Duration) -> ReplayFilter {
        ReplayFilter::with_hashes(bits_log2, DEFAULT_HASHES, ttl)
    }

    /// Like [`ReplayFilter::new`] with `hashes` hash functions per key (clamped to 1..=32). The
    /// best choice for `n` keys per generation is `m / n × ln 2` with `m = 2^bits_log2`.
    pub fn with_hashes(bits_log2: u32, hashes: u32, ttl: Duration) -> ReplayFilter {
        let bits_log2 = bits_log2.clamp(MIN_BITS_LOG2, MAX_BITS_LOG2);
        ReplayFilter {
            hashers: [RandomState::new(), RandomState::new()],
            hashes: hashes.clamp(1, MAX_HASHES),
            bits_log2,
            ttl: ttl.max(Duration::from_nanos(1)),
            current: Generation::new(bits_log2),
            previous: Generation::new(bits_log2),
            started: None,
        }
    }

    /// The time-to-live: keys are remembered at least this long and less than twice this long.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Hash functions per key.
    pub fn hashes(&self) -> u32 {
        self.hashes
    }

    /// Bytes of memory the two generations hold (fixed at construction).
    pub fn memory_bytes(&self) -> usize {
        (self.current.words.len() + self.previous.words.len()) * 8
    }

    /// Records `key` as used at `now` and returns `true` if it was not seen within the TTL (first
    /// use); returns `false` for a replay (seen less than `ttl`..`2 × ttl` ago), or for a fresh
    /// key that happens to be a false positive.
    ///
    /// Every `ttl` a call rotates the generations, wiping one (`2^bits_log2 / 8` bytes).
    pub fn check_and_insert(&mut self, key: &[u8], now: Instant) -> bool {
        self.rotate(now);
        let probes = self.probes(key);
        let probes = &probes[..self.hashes as usize];
        if self.current.contains(probes) || self.previous.contains(probes) {
            return false;
        }
        self.current.insert(probes);
        true
    }

    /// Whether `key` would be refused as a replay at `now`, without recording it.
    pub fn contains(&self, key: &[u8], now: Instant) -> bool {
        let probes = self.probes(key);
        let probes = &probes[..self.hashes as usize];
        // The generations still live at `now`, as `rotate` would leave them.
        match self.rotations_due(now) {
            0 => self.current.contains(probes) || self.previous.contains(probes),
            1 => self.current.contains(probes),
            _ => false,
        }
    }

    /// The probability that a fresh key is taken for a replay when each generation holds
    /// `keys_per_generation` keys: `1 − (1 − p)^2` with `p = (1 − e^(−k·n/m))^k`.
    pub fn false_positive_rate(&self, keys_per_generation: u64) -> f64 {
        let p = self.generation_rate(keys_per_generation);
        1.0 - (1.0 - p) * (1.0 - p)
    }

    /// The false-positive rate for a fresh key now, from the keys recorded in each generation
    /// (for monitoring: a filter near saturation refuses honest clients).
    pub fn estimated_false_positive_rate(&self) -> f64 {
        let current = self.generation_rate(self.current.items);
        let previous = self.generation_rate(self.previous.items);
        1.0 - (1.0 - current) * (1.0 - previous)
    }

    /// Keys recorded in the current generation.
    pub fn current_keys(&self) -> u64 {
        self.current.items
    }

    fn generation_rate(&self, n: u64) -> f64 {
        let k = f64::from(self.hashes);
        let m = (1u64 << self.bits_log2) as f64;
        (1.0 - (-k * n as f64 / m).exp()).powf(k)
    }

    /// Whole TTLs elapsed since the current generation started.
    fn rotations_due(&self, now: Instant) -> u128 {
        self.started.map_or(0, |start| {
            now.saturating_duration_since(start).as_nanos() / self.ttl.as_nanos()
        })
    }

    /// Moves the generations on to `now`, on a fixed grid of `ttl` steps from the first call.
    fn rotate(&mut self, now: Instant) {
        let Some(start) = self.started else {
            self.started = Some(now);
            return;
        };
        let due = self.rotations_due(now);
        match due {
            0 => return,
            1 => {
                std::mem::swap(&mut self.current, &mut self.previous);
                self.current.clear();
            }
            _ => {
                self.current.clear();
                self.previous.clear();
            }
        }
        // Advance by whole steps (`due × ttl ≤ now − start`), keeping the grid.
        let step = u64::try_from(self.ttl.as_nanos() * due).map(Duration::from_nanos);
        self.started = Some(step.ok().and_then(|step| start.checked_add(step)).unwrap_or(now));
    }

    /// The bit positions of `key`: `h1 + i·h2` for `i` in `0..k`, with `h2` odd so the probes are
    /// distinct modulo the power-of-two size.
    fn probes(&self, key: &[u8]) -> [u64; MAX_HASHES as usize] {
        let mask = (1u64 << self.bits_log2) - 1;
        let h1 = self.hashers[0].hash_one(key);
        let h2 = self.hashers[1].hash_one(key) | 1;
        let mut probes = [0; MAX_HASHES as usize];
        for (i, probe) in probes.iter_mut().enumerate().take(self.hashes as usize) {
            *probe = h1.wrapping_add((i as u64).wrapping_mul(h2)) & mask;
        }
        probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn first_use_passes_and_a_replay_is_refused() {
        let t0 = Instant::now();
        let mut f = ReplayFilter::new(12, TTL);
        assert!(f.check_and_insert(b"ticket-1", t0));
        assert!(!f.check_and_insert(b"ticket-1", t0), "replay at once");
        assert!(!f.check_and_insert(b"ticket-1", t0 + TTL / 2), "replay within ttl");
        assert!(f.check_and_insert(b"ticket-2", t0 + TTL / 2), "another key");
        assert!(f.contains(b"ticket-2", t0 + TTL / 2));
        assert!(!f.contains(b"ticket-3", t0 + TTL / 2));
    }

    #[test]
    fn keys_are_remembered_for_ttl_and_forgotten_by_twice_ttl() {
        let t0 = Instant::now();
        let mut f = ReplayFilter::new(12, TTL);
        assert!(f.check_and_insert(b"early", t0));
        let late = t0 + TTL - Duration::from_nanos(1);
        assert!(f.check_and_insert(b"late", late));
        // After one rotation both are in the previous generation: still refused.
        assert!(!f.check_and_insert(b"early", t0 + TTL));
        assert!(!f.check_and_insert(b"late", late + TTL - Duration::from_nanos(1)));
        // After two rotations both are gone; `late` was remembered a full ttl.
        assert!(f.contains(b"late", t0 + 2 * TTL - Duration::from_nanos(1)));
        assert!(!f.contains(b"early", t0 + 2 * TTL));
        assert!(f.check_and_insert(b"early", t0 + 2 * TTL), "usable again after 2 × ttl");
        assert!(f.check_and_insert(b"late", t0 + 2 * TTL));
    }

    #[test]
    fn a_long_idle_gap_forgets_everything() {
        let t0 = Instant::now();
        let mut f = ReplayFilter::new(10, TTL);
        assert!(f.check_and_insert(b"k", t0));
        assert!(!f.contains(b"k", t0 + 10 * TTL));
        assert!(f.check_and_insert(b"k", t0 + 10 * TTL));
        assert!(!f.check_and_insert(b"k", t0 + 11 * TTL - Duration::from_nanos(1)));
    }

    #[test]
    fn time_going_backwards_rotates_nothing() {
        let t0 = Instant::now() + TTL;
        let mut f = ReplayFilter::new(10, TTL);
        assert!(f.check_and_insert(b"k", t0));
        assert!(!f.check_and_insert(b"k", t0 - TTL));
        assert!(!f.check_and_insert(b"k", t0 + TTL / 2));
    }

    #[test]
    fn sizes_and_hash_counts_are_clamped() {
        let f = ReplayFilter::with_hashes(0, 0, Duration::ZERO);
        assert_eq!(f.memory_bytes(), 2 * 8);
        assert_eq!(f.hashes(), 1);
        assert_eq!(f.ttl(), Duration::from_nanos(1));
        let f = ReplayFilter::with_hashes(7, 99, TTL);
        assert_eq!(f.hashes(), MAX_HASHES);
    }

    /// A million distinct keys in a 2^24-bit generation (16.8 bits per key): the share of a
    /// million *other* keys taken for replays is near `(1 − e^(−k·n/m))^k`.
    #[test]
    fn false_positive_rate_of_a_million_keys_is_near_theory() {
        const N: u64 = 1_000_000;
        let t0 = Instant::now();
        let mut f = ReplayFilter::new(24, TTL);
        let before = f.memory_bytes();
        assert_eq!(before, 2 * (1 << 24) / 8, "4 MiB");
        let mut refused = 0;
        for i in 0..N {
            refused += u64::from(!f.check_and_insert(&i.to_le_bytes(), t0));
        }
        assert_eq!(f.current_keys() + refused, N);
        assert_eq!(f.memory_bytes(), before, "no growth");
        let measured =
            (N..2 * N).filter(|i| f.contains(&i.to_le_bytes(), t0)).count() as f64 / N as f64;
        // One generation holds the keys (the previous one is empty).
        let theory = f.generation_rate(f.current_keys());
        assert!((4e-4..7e-4).contains(&theory), "{theory}");
        assert!((f.estimated_false_positive_rate() - theory).abs() < 1e-12);
        // ~530 expected hits, standard deviation ~23: a ±25 % band is over five sigmas wide.
        assert!(
            (measured - theory).abs() < 0.25 * theory,
            "measured {measured:.6}, theory {theory:.6}"
        );
        // While inserting, each key met a fuller filter than the final one: fewer refusals.
        assert!((refused as f64) < theory * N as f64, "{refused}");
    }

    #[test]
    fn memory_never_grows_through_rotations() {
        let t0 = Instant::now();
        let mut f = ReplayFilter::new(10, Duration::from_millis(10));
        let before = f.memory_bytes();
        for i in 0..50_000u64 {
            f.check_and_insert(&i.to_be_bytes(), t0 + Duration::from_micros(i * 7));
        }
        assert_eq!(f.memory_bytes(), before);
        assert_eq!(f.current.words.len() + f.previous.words.len(), 2 * 1024 / 64);
    }

    #[test]
    fn an_overfilled_filter_says_so() {
        let t0 = Instant::now();
        let mut f = ReplayFilter::new(10, TTL);
        assert!(f.estimated_false_positive_rate().abs() < f64::EPSILON);
        assert!(f.false_positive_rate(0).abs() < f64::EPSILON);
        let accepted = (0..20_000u64).filter(|i| f.check_and_insert(&i.to_le_bytes(), t0)).count();
        // 1,024 bits cannot tell 20,000 keys apart: most are refused, and the estimate shows it.
        assert!(accepted < 2_000, "{accepted}");
        assert!(f.estimated_false_positive_rate() > 0.5, "{}", f.estimated_false_positive_rate());
    }

    #[test]
    fn two_filters_hash_differently() {
        let (a, b) = (ReplayFilter::new(20, TTL), ReplayFilter::new(20, TTL));
        assert_ne!(a.probes(b"same key"), b.probes(b"same key"));
    }

    proptest! {
        /// Against an exact model: a key accepted less than `ttl` ago is always refused (no false
        /// negatives), and a key the model has never seen or forgot over `2 × ttl` ago is refused
        /// only as a rare false positive (none in a large filter with few keys).
        #[test]
        fn never_accepts_a_replay_within_ttl(
            events in proptest::collection::vec((0u8..24, 0u64..40_000), 1..300),
        ) {
            let ttl = Duration::from_millis(100);
            let t0 = Instant::now();
            let mut f = ReplayFilter::new(20, ttl);
            let mut accepted_at = std::collections::HashMap::<u8, Instant>::new();
            let mut t = t0;
            for (key, gap_us) in events {
                t += Duration::from_micros(gap_us);
                let fresh = f.check_and_insert(&[key], t);
                match accepted_at.get(&key) {
                    Some(&at) if t - at < ttl => prop_assert!(!fresh, "replay of {} accepted", key),
                    Some(&at) if t - at >= 2 * ttl => prop_assert!(fresh, "{} not forgotten", key),
                    None => prop_assert!(fresh, "fresh {} refused", key),
                    Some(_) => {}
                }
                if fresh {
                    accepted_at.insert(key, t);
                }
            }
        }

        /// `contains` answers what `check_and_insert` would, without recording.
        #[test]
        fn contains_predicts_check_and_insert(
            events in proptest::collection::vec((0u8..8, 0u64..300_000), 1..100),
        ) {
            let ttl = Duration::from_millis(100);
            let mut f = ReplayFilter::new(16, ttl);
            let mut t = Instant::now();
            for (key, gap_us) in events {
                t += Duration::from_micros(gap_us);
                let seen = f.contains(&[key], t);
                prop_assert_eq!(f.contains(&[key], t), seen, "contains records nothing");
                prop_assert_eq!(f.check_and_insert(&[key], t), !seen);
            }
        }
    }
}
