//! The waiting room across a cluster: one FIFO line per space and lane, kept as two counters
//! in a shared store (Redis): numbers **issued** to arrivals and the highest number **called**.
//! Any node's door hands out numbers and admits those already called; the space's origin calls
//! more once a second, as much as the cluster's free capacity and join rate allow, signed-in
//! line first. Sans-IO: these are the decisions; reading and writing the counters is the
//! caller's.

use std::collections::VecDeque;
use std::time::Duration;

use crate::admission::Decision;

/// One line as the shared store holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineState {
    /// Numbers handed out so far (the last one issued).
    pub issued: u64,
    /// Numbers up to here may enter.
    pub called: u64,
}

impl LineState {
    /// Arrivals holding a number that is not called yet.
    pub fn waiting(&self) -> u64 {
        self.issued.saturating_sub(self.called)
    }
}

/// Joins the cluster may admit in the next second: its free places, at most `per_second`.
pub fn allowance(capacity: u64, listeners: u64, per_second: u64) -> u64 {
    capacity.saturating_sub(listeners).min(per_second)
}

/// Calls numbers in both lines of a space from one second's `allowance`: those waiting in the
/// signed-in line first, then those in the anonymous line; what is left is a lead (split
/// between the lines) so the next arrivals walk straight in. Returns the new `called` of each.
/// A lead is measured from the last number issued and lasts one second: one not used is
/// withdrawn (nobody holds those numbers yet), so a cluster that filled up meanwhile promises
/// nobody. `called` never goes below the last number issued (a number handed out and called
/// stays called), and the two lines together call at most `allowance` new numbers.
pub fn advance_lines(signed_in: LineState, anonymous: LineState, allowance: u64) -> (u64, u64) {
    let take_signed_in = signed_in.waiting().min(allowance);
    let rest = allowance - take_signed_in;
    let take_anonymous = anonymous.waiting().min(rest);
    let spare = rest - take_anonymous;
    let lead_signed_in = spare / 2;
    let lead_anonymous = spare - lead_signed_in;
    (
        call(signed_in, take_signed_in, lead_signed_in),
        call(anonymous, take_anonymous, lead_anonymous),
    )
}

/// `line`'s new mark after calling `take` of those waiting and, if that empties it, leading by
/// `lead` (any older lead withdrawn).
fn call(line: LineState, take: u64, lead: u64) -> u64 {
    if take == line.waiting() {
        line.issued.saturating_add(lead)
    } else {
        line.called.saturating_add(take)
    }
}

/// Places promised but not yet seen. The listener counts a caller has are a few rounds behind
/// (heartbeats); joiners the doors admitted meanwhile are on their way to an edge and not in
/// them yet. Calling from those counts alone would offer their places again.
///
/// With `A` the doors' admissions so far and `L` the listeners counted, both per round, and a
/// count that shows an admission within `lag` rounds: everyone admitted by round `s - lag` is
/// counted or gone by round `s`, so at least `A(s - lag) - L(s)` have left by then. The places
/// still on their way now are at most `A(t) - L(t)` minus the most that have surely left. That
/// bound is what [`Pending::observe`] holds back: never less than the truth (given the lag),
/// and an admitted joiner who never arrives holds a place for `lag` rounds only.
#[derive(Debug, Clone)]
pub struct Pending {
    lag: usize,
    seen: VecDeque<(u64, u64)>,
}

impl Pending {
    /// Holds places for joiners the counts show within `lag` rounds (at least 1): a round
    /// for an edge to write its heartbeat, a round for the caller to read it, a margin.
    pub fn new(lag: usize) -> Pending {
        let lag = lag.max(1);
        Pending { lag, seen: VecDeque::with_capacity(2 * lag + 2) }
    }

    /// Records this round's totals, all doors' admissions so far (a counter that only grows,
    /// unless the store lost it) and the listeners counted now; returns the places to hold
    /// back from this round's free ones.
    pub fn observe(&mut self, admitted_total: u64, listeners: u64) -> u64 {
        if self.seen.back().is_some_and(|&(a, _)| admitted_total < a) {
            // The store restarted empty: start over.
            self.seen.clear();
        }
        self.seen.push_back((admitted_total, listeners));
        if self.seen.len() > 2 * self.lag + 1 {
            self.seen.pop_front();
        }
        let surely_left = (self.lag..self.seen.len())
            .map(|s| i128::from(self.seen[s - self.lag].0) - i128::from(self.seen[s].1))
            .max()
            .unwrap_or(0)
            .max(0);
        let held = i128::from(admitted_total) - i128::from(listeners) - surely_left;
        u64::try_from(held.max(0)).unwrap_or(u64::MAX)
    }
}

/// A waiting joiner's return is timed as if the line moved at least this fast: a full cluster
/// calls nobody for a while, yet the first in line should look again soon.
pub const PACE_FLOOR: u64 = 10;

/// The longest a waiting joiner is told to stay away while the line moves (seconds).
pub const MAX_RETURN_SECS: u64 = 60;

/// The longest a waiting joiner is told to stay away while the line stands still (a pace at
/// [`PACE_FLOOR`] or below: the cluster is full and calls nobody). There is no pace to estimate
/// from, and places can free up all at once (a crowd that came together leaves together), so
/// those waiting look again this often rather than after a minute: about the refresh of the
/// common web waiting rooms (Cloudflare's refreshes every 20 s by default).
pub const STALLED_RETURN_SECS: u64 = 20;

/// What the door tells the holder of `number` when the line has called up to `called` and
/// calls about `per_second` a second: the position is honest; the return is
/// `position / per_second` (at least [`PACE_FLOOR`] a second), 1 to [`MAX_RETURN_SECS`] s (to
/// [`STALLED_RETURN_SECS`] while the line stands still).
pub fn decide(number: u64, called: u64, per_second: u64) -> Decision {
    if number <= called {
        return Decision::Admit;
    }
    let position = number - called;
    let pace = per_second.max(PACE_FLOOR);
    let cap = if pace == PACE_FLOOR { STALLED_RETURN_SECS } else { MAX_RETURN_SECS };
    let secs = position.div_ceil(pace).clamp(1, cap);
    Decision::Wait { number, position, retry_after: Duration::from_secs(secs) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: LineState = LineState { issued: 0, called: 0 };

    #[test]
    fn an_empty_line_lets_the_next_arrivals_walk_in() {
        let line = LineState { issued: 10, called: 10 };
        let (called, _) = advance_lines(line, EMPTY, 10);
        assert_eq!(called, 15, "half the allowance leads each empty line");
        assert_eq!(decide(11, called, 10), Decision::Admit);
        assert_eq!(decide(15, called, 10), Decision::Admit);
        assert!(matches!(decide(16, called, 10), Decision::Wait { position: 1, .. }));
        // An unused lead does not pile up, and a full cluster withdraws it.
        let again = LineState { issued: 10, called };
        assert_eq!(advance_lines(again, EMPTY, 10).0, 15);
        assert_eq!(advance_lines(again, EMPTY, 0).0, 10);
    }

    #[test]
    fn a_line_that_stands_still_is_looked_at_again_within_20_s_and_a_moving_one_within_60() {
        // A full cluster calls nobody: no pace to go by, so even the far end looks again soon.
        let stalled = decide(8_010, 10, PACE_FLOOR);
        assert!(
            matches!(stalled, Decision::Wait { position: 8_000, retry_after, .. }
                if retry_after == Duration::from_secs(STALLED_RETURN_SECS)),
            "{stalled:?}"
        );
        // The front of a standing line comes back sooner than that, by the floor's pace.
        let front = decide(30, 10, 0);
        assert!(
            matches!(front, Decision::Wait { position: 20, retry_after, .. }
            if retry_after == Duration::from_secs(2)),
            "{front:?}"
        );
        // A moving line times returns by its pace, up to a minute.
        let moving = decide(8_010, 10, 50);
        assert!(
            matches!(moving, Decision::Wait { position: 8_000, retry_after, .. }
            if retry_after == Duration::from_secs(MAX_RETURN_SECS)),
            "{moving:?}"
        );
        let soon = decide(1_010, 10, 100);
        assert!(
            matches!(soon, Decision::Wait { retry_after, .. }
            if retry_after == Duration::from_secs(10)),
            "{soon:?}"
        );
    }

    #[test]
    fn a_queue_moves_by_the_allowance_and_positions_are_honest() {
        let line = LineState { issued: 100, called: 10 };
        let (_, called) = advance_lines(EMPTY, line, 20);
        assert_eq!(called, 30);
        match decide(100, called, 20) {
            Decision::Wait { number, position, retry_after } => {
                assert_eq!((number, position), (100, 70));
                assert_eq!(retry_after, Duration::from_secs(4));
            }
            Decision::Admit => panic!("not yet"),
        }
    }

    #[test]
    fn a_full_cluster_calls_nobody() {
        assert_eq!(allowance(1_000, 1_000, 500), 0);
        assert_eq!(allowance(1_000, 1_200, 500), 0);
        assert_eq!(allowance(1_000, 900, 500), 100);
        let line = LineState { issued: 50, called: 20 };
        assert_eq!(advance_lines(line, line, 0), (20, 20));
    }

    #[test]
    fn the_signed_in_line_is_called_first() {
        let signed_in = LineState { issued: 30, called: 0 };
        let anonymous = LineState { issued: 30, called: 0 };
        assert_eq!(advance_lines(signed_in, anonymous, 20), (20, 0));
        assert_eq!(advance_lines(signed_in, anonymous, 50), (30, 20));
    }

    #[test]
    fn admitted_places_are_held_until_the_counts_show_them() {
        let mut pending = Pending::new(2);
        assert_eq!(pending.observe(0, 0), 0);
        // 2,000 admitted; the counts show none of them yet, then half, then all.
        assert_eq!(pending.observe(2_000, 0), 2_000);
        assert_eq!(pending.observe(2_000, 1_000), 1_000);
        assert_eq!(pending.observe(2_000, 2_000), 0);
        // Someone admitted who never comes holds a place for two rounds only.
        assert_eq!(pending.observe(2_001, 2_000), 1);
        assert_eq!(pending.observe(2_001, 2_000), 1);
        assert_eq!(pending.observe(2_001, 2_000), 0);
        // 500 leave: their places are free at once, nothing is held for them.
        assert_eq!(pending.observe(2_001, 1_500), 0);
        // A store that restarted empty starts over.
        assert_eq!(pending.observe(5, 1_500), 0);
    }

    proptest! {
        /// Listeners admitted and arriving within the window are never offered twice: the
        /// places held back plus those counted cover everyone admitted in the window.
        #[test]
        fn what_is_held_back_covers_every_admission_not_yet_counted(
            rounds in proptest::collection::vec((0u64..3_000, 0u64..3_000, 0u64..500), 1..40),
        ) {
            let mut pending = Pending::new(2);
            let (mut admitted, mut counted, mut left) = (0u64, 0u64, 0u64);
            let mut in_flight: VecDeque<u64> = VecDeque::new();
            for (admit, _, leave) in rounds {
                admitted += admit;
                in_flight.push_back(admit);
                // Admissions show in the counts two rounds later; some listeners leave.
                if in_flight.len() > 2 {
                    counted += in_flight.pop_front().unwrap_or(0);
                }
                let leave = leave.min(counted - left);
                left += leave;
                let held = pending.observe(admitted, counted - left);
                let not_counted: u64 = in_flight.iter().sum();
                prop_assert!(held >= not_counted, "held {held} < {not_counted} not yet counted");
            }
        }

        #[test]
        fn both_lines_together_call_at_most_the_allowance(
            si in 0u64..10_000, sc in 0u64..10_000, ai in 0u64..10_000, ac in 0u64..10_000,
            allowance in 0u64..5_000,
        ) {
            let s = LineState { issued: si, called: sc };
            let a = LineState { issued: ai, called: ac };
            let (ns, na) = advance_lines(s, a, allowance);
            let (s0, a0) = (sc.min(si), ac.min(ai));
            prop_assert!(ns >= s0 && na >= a0, "a called number stays called");
            prop_assert!((ns - s0) + (na - a0) <= allowance, "at most the allowance");
            // Nobody waits while allowance is left over.
            if (ns - s0) + (na - a0) < allowance {
                prop_assert!(ns >= si && na >= ai);
            }
        }
    }
}
