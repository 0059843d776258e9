//! A space's program clock: which frame number belongs to which moment of wall-clock time.
//!
//! The program is numbered by its clock, not by whoever mixes it: frame `n` is the tick at
//! `start + n × 20 ms`. The origin that starts a space numbers from 0 at its start; an origin
//! that takes the space over after a failover reads the clock from what the first one left
//! (kept in the cluster's hold) and numbers its first frame by the time it is now. So every node
//! of the cluster reads the same number for the same moment (nodes are NTP-synced), and a 4 s
//! outage is a jump of about 200 frames forward, never back: edges pass the new origin's numbers
//! on as they are, and the LL-HLS parts they make are the same objects under the same names.
//!
//! The clock is kept as one anchor (a frame and the wall-clock time it was mixed at) rather than
//! as the start alone, so that an origin whose mixer fell behind and skipped ticks (it starts
//! its timing afresh after a stall) can move the anchor to where its numbers really are
//! ([`ProgramClock::follow`]): a successor then continues from there, not from a start its
//! numbers no longer match.

use crate::frame::FRAME_MS;

/// How far (in frames) the numbers actually mixed may drift from the clock before the anchor
/// moves to them: 5 frames, 100 ms. Small enough that a successor's first number lands within
/// a fraction of a second of where the stream would have been; large enough that the jitter of
/// a 20 ms tick never moves it (each move is a write of the hold).
pub const DRIFT_FRAMES: u32 = 5;

/// Frame numbers further apart than this (half the `u32` range) are read as the later one being
/// behind the earlier one: numbers wrap (after about 994 days).
const HALF: u32 = 1 << 31;

/// A program clock: frame `frame` was mixed at `at_ms` (Unix ms), and every frame is 20 ms
/// after the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramClock {
    /// The anchor's frame number.
    pub frame: u32,
    /// When that frame was (or would have been) mixed, Unix ms.
    pub at_ms: u64,
}

impl ProgramClock {
    /// The clock of a program whose frame `frame` is mixed at `at_ms`.
    pub fn new(frame: u32, at_ms: u64) -> ProgramClock {
        ProgramClock { frame, at_ms }
    }

    /// The number of the frame due at wall-clock `now_ms`: the anchor's, plus one per 20 ms
    /// since. A time before the anchor (a clock set back) gives the anchor's number.
    pub fn frame_at(&self, now_ms: u64) -> u32 {
        let ticks = now_ms.saturating_sub(self.at_ms) / u64::from(FRAME_MS);
        // Numbers wrap: only the low 32 bits of the tick count matter.
        self.frame.wrapping_add(ticks as u32)
    }

    /// The same clock, anchored at the tick of the frame due at `now_ms` (what a successor
    /// starts from): it gives every time the same number as this one.
    pub fn at(&self, now_ms: u64) -> ProgramClock {
        let ticks = now_ms.saturating_sub(self.at_ms) / u64::from(FRAME_MS);
        ProgramClock {
            frame: self.frame.wrapping_add(ticks as u32),
            // At most `now_ms`: no overflow.
            at_ms: self.at_ms + ticks * u64::from(FRAME_MS),
        }
    }

    /// How many frames `frame`, mixed at `at_ms`, is ahead of this clock (negative: behind).
    pub fn drift(&self, frame: u32, at_ms: u64) -> i64 {
        let due = if at_ms >= self.at_ms {
            self.frame_at(at_ms)
        } else {
            let ticks = (self.at_ms - at_ms).div_ceil(u64::from(FRAME_MS));
            self.frame.wrapping_sub(ticks as u32)
        };
        let ahead = frame.wrapping_sub(due);
        if ahead < HALF { i64::from(ahead) } else { -i64::from(due.wrapping_sub(frame)) }
    }

    /// This clock, or one anchored at `frame` mixed at `at_ms` when the numbers actually mixed
    /// drifted from it by more than [`DRIFT_FRAMES`] (a mixer that skipped ticks after a stall,
    /// a wall clock stepped by NTP).
    pub fn follow(self, frame: u32, at_ms: u64) -> ProgramClock {
        if self.drift(frame, at_ms).unsigned_abs() > u64::from(DRIFT_FRAMES) {
            ProgramClock { frame, at_ms }
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_frame_every_20_ms_from_the_anchor() {
        let clock = ProgramClock::new(0, 1_000_000);
        assert_eq!(clock.frame_at(1_000_000), 0);
        assert_eq!(clock.frame_at(1_000_019), 0);
        assert_eq!(clock.frame_at(1_000_020), 1);
        assert_eq!(clock.frame_at(1_004_000), 200, "a 4 s outage is 200 frames on");
        assert_eq!(clock.frame_at(999_000), 0, "before the anchor: the anchor's number");
    }

    #[test]
    fn a_successor_continues_the_same_clock() {
        let first = ProgramClock::new(0, 10_000);
        let next = first.at(70_011);
        assert_eq!(next, ProgramClock::new(3_000, 70_000), "anchored at the due frame's tick");
        for t in [70_011, 70_019, 70_020, 71_234, 500_000] {
            assert_eq!(next.frame_at(t), first.frame_at(t), "the same number for the same time");
        }
    }

    #[test]
    fn the_anchor_follows_the_mixed_numbers_only_past_the_tolerance() {
        let clock = ProgramClock::new(100, 10_000);
        assert_eq!(clock.drift(150, 11_000), 0);
        assert_eq!(clock.drift(145, 11_000), -5);
        assert_eq!(clock.drift(99, 9_980), 0, "before the anchor");
        assert_eq!(clock.follow(145, 11_000), clock, "jitter of a few ticks moves nothing");
        assert_eq!(clock.follow(155, 11_000), clock);
        // A stall of 300 ms: the mixer started its timing afresh, 15 frames behind the clock.
        assert_eq!(clock.follow(135, 11_000), ProgramClock::new(135, 11_000));
        assert_eq!(clock.follow(200, 11_000), ProgramClock::new(200, 11_000));
    }

    #[test]
    fn numbers_wrap() {
        let clock = ProgramClock::new(u32::MAX, 0);
        assert_eq!(clock.frame_at(20), 0);
        assert_eq!(clock.drift(1, 40), 0);
        assert_eq!(clock.drift(u32::MAX - 1, 0), -1);
    }

    proptest! {
        /// Whatever a hold says (it comes from Redis), reading the clock never panics, a
        /// successor anchored anywhere reads the same numbers, and they go on by one per 20 ms.
        #[test]
        fn any_clock_reads_the_same_numbers_without_panicking(
            frame: u32,
            at_ms: u64,
            now_ms: u64,
            later in 0u64..100_000_000,
        ) {
            let clock = ProgramClock::new(frame, at_ms);
            let then_ms = now_ms.saturating_add(later);
            let successor = clock.at(now_ms);
            prop_assert_eq!(successor.frame_at(then_ms), clock.frame_at(then_ms));
            prop_assert_eq!(successor.frame_at(now_ms), clock.frame_at(now_ms));
            if let Some(t) = at_ms.checked_add(later)
                && let Some(t20) = t.checked_add(20 * 1_000)
            {
                prop_assert_eq!(clock.frame_at(t20).wrapping_sub(clock.frame_at(t)), 1_000);
                prop_assert_eq!(clock.drift(clock.frame_at(t), t), 0);
                prop_assert_eq!(clock.follow(clock.frame_at(t), t), clock);
            }
            let _ = clock.follow(frame.wrapping_add(later as u32), now_ms);
            let _ = clock.drift(frame, now_ms);
        }
    }
}
