//! The waiting room across a cluster: one FIFO line per space and lane, kept as two counters
//! in a shared store (Redis): numbers **issued** to arrivals and the highest number **called**.
//! Any node's door hands out numbers and admits those already called; the space's origin calls
//! more once a second, as much as the cluster's free capacity and join rate allow, signed-in
//! line first. Sans-IO: these are the decisions; reading and writing the counters is the
//! caller's.

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

/// What the door tells the holder of `number` when the line has called up to `called` and
/// calls about `per_second` a second.
pub fn decide(number: u64, called: u64, per_second: u64) -> Decision {
    if number <= called {
        return Decision::Admit;
    }
    let position = number - called;
    let secs = position.div_ceil(per_second.max(1)).clamp(1, 60);
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

    proptest! {
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
