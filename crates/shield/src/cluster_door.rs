//! One door's share of the cluster's waiting line ([`crate::cluster_line`]): what lets a crowd
//! at internet scale cost the shared store (Redis) a few operations per door and second
//! instead of one or two per arrival.
//!
//! - **Numbers in blocks.** A door takes a run of numbers in one step (`INCRBY`) and hands them
//!   out here, in order, to its arrivals. A block is a quarter of the door's arrivals in the
//!   last [`BLOCK_LIFE`] (at least 1, at most [`MAX_BLOCK`]) and kept at most that long: the
//!   line stays first come, first served across doors to within [`BLOCK_LIFE`], and exactly so
//!   at a door seeing fewer than 80 arrivals a second (blocks of one). Numbers of a block
//!   that expires unused are void: nobody holds them; they are stepped over when called (the
//!   origin calls from the free places it counts, so a void number costs a call, not a place).
//! - **The mark read once for many.** A door decides arrivals and returns from the line's
//!   called mark as it last read it, at most [`MARK_FRESH`] old. The mark only rises while
//!   people wait; it falls only when the origin withdraws an unused lead from a cluster that
//!   filled up, and then an edge's own capacity check still refuses the surplus.
//! - **Admissions counted in batches.** Numbers admitted on arrival hold no ticket, so they need
//!   no single-use mark; the door adds them to the space's admission count (what the origin
//!   holds places for) with its next read of the mark.
//!
//! Sans-IO: `now` is any monotonic clock as a [`Duration`]; the store is the caller's.

use std::time::Duration;

use crate::admission::{Decision, Lane};
use crate::cluster_line;

/// How long a door keeps a block of numbers, and the window its block size is measured over.
pub const BLOCK_LIFE: Duration = Duration::from_millis(100);
/// The most numbers in one block.
pub const MAX_BLOCK: u64 = 1_000;
/// A block holds the arrivals of a window divided by this.
const BLOCK_SHARE: u64 = 4;
/// How old a read of the line's mark may be when a door decides from it.
pub const MARK_FRESH: Duration = Duration::from_millis(250);

/// What [`Numbers::take`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The arrival's number, from the block in hand.
    Number(u64),
    /// The block is used up or expired: take this many more from the store, then
    /// [`Numbers::refilled`].
    Refill(u64),
}

/// A door's block of numbers of one lane.
#[derive(Debug, Clone)]
pub struct Numbers {
    /// Next number to hand out.
    next: u64,
    /// Last number of the block (`next > last`: none left).
    last: u64,
    /// When the block stops being handed out.
    expires: Duration,
    /// Arrivals in the current window, and when it began.
    window: (Duration, u64),
    /// Arrivals in the window before.
    previous: u64,
    /// Numbers of expired blocks never handed out, not yet reported.
    void: u64,
}

impl Default for Numbers {
    fn default() -> Numbers {
        Numbers {
            next: 1,
            last: 0,
            expires: Duration::ZERO,
            window: (Duration::ZERO, 0),
            previous: 0,
            void: 0,
        }
    }
}

impl Numbers {
    /// A door with no block yet.
    pub fn new() -> Numbers {
        Numbers::default()
    }

    /// An arrival at `now`: its number, or how many to take from the store first.
    pub fn take(&mut self, now: Duration) -> Take {
        self.count(now);
        if self.next <= self.last && now < self.expires {
            let n = self.next;
            self.next += 1;
            return Take::Number(n);
        }
        Take::Refill(self.block_len())
    }

    /// The store issued `len` numbers ending at `last` (what `INCRBY len` answered): the rest
    /// of the old block is void, the new one starts now. Returns the waiting arrival's number.
    pub fn refilled(&mut self, last: u64, len: u64, now: Duration) -> u64 {
        self.void = self.void.saturating_add(self.left());
        let first = last.saturating_sub(len.max(1)).saturating_add(1);
        self.next = first.saturating_add(1);
        self.last = last;
        self.expires = now.saturating_add(BLOCK_LIFE);
        first
    }

    /// Numbers never handed out since the last call (expired blocks' rests), for the report.
    pub fn take_void(&mut self, now: Duration) -> u64 {
        if now >= self.expires {
            self.void = self.void.saturating_add(self.left());
            self.next = self.last.saturating_add(1);
        }
        std::mem::take(&mut self.void)
    }

    fn left(&self) -> u64 {
        (self.last + 1).saturating_sub(self.next)
    }

    /// The next block's size: a quarter of the arrivals of the last full window (or of this
    /// one, if more), so a block is used up in about a quarter of its life at the present rate
    /// and little of it is left void when the rate falls. A door seeing fewer than 8 arrivals
    /// per window takes one number at a time: sequential joiners at different doors get
    /// consecutive numbers.
    fn block_len(&self) -> u64 {
        (self.previous.max(self.window.1) / BLOCK_SHARE).clamp(1, MAX_BLOCK)
    }

    fn count(&mut self, now: Duration) {
        let (start, n) = self.window;
        if now >= start.saturating_add(BLOCK_LIFE) {
            let quiet = now >= start.saturating_add(BLOCK_LIFE * 2);
            self.previous = if quiet { 0 } else { n };
            self.window = (now, 0);
        }
        self.window.1 += 1;
    }
}

/// The line's marks as a door last read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    /// Called marks, signed-in then anonymous.
    pub called: [u64; 2],
    /// How many the origin called in its last second (-1: unknown).
    pub pace: i64,
    /// When they were read (`None`: never).
    pub read_at: Option<Duration>,
}

impl Mark {
    /// Whether a door may still decide from this read at `now`.
    pub fn fresh(&self, now: Duration) -> bool {
        self.read_at.is_some_and(|at| now.saturating_sub(at) < MARK_FRESH)
    }
}

/// One space's line as one door keeps it: a block per lane, the mark, and admissions not
/// yet counted in the store.
#[derive(Debug, Clone, Default)]
pub struct DoorLine {
    /// Blocks, signed-in then anonymous.
    pub numbers: [Numbers; 2],
    /// The line's marks as last read.
    pub mark: Mark,
    /// Arrivals admitted here and not yet added to the space's admission count.
    pub admitted: u64,
}

/// Index of a lane in [`DoorLine`]'s arrays.
pub fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::SignedIn => 0,
        Lane::Anonymous => 1,
    }
}

impl DoorLine {
    /// A door that has seen nothing of the line.
    pub fn new() -> DoorLine {
        DoorLine::default()
    }

    /// The decision for `number` in `lane` from the mark in hand (which the caller keeps
    /// fresh), or from `seen`, the mark the holder's ticket was last told against, when that
    /// is later (another door read the line since this one did: a place told there is never
    /// made later here). Returns are timed by `pace` (the origin's published one, else
    /// `per_second`). A new arrival admitted here is counted for the next report.
    pub fn decide(
        &mut self,
        lane: Lane,
        number: u64,
        seen: u64,
        arriving: bool,
        per_second: u64,
    ) -> Decision {
        let called = self.mark.called[lane_index(lane)].max(seen);
        // The line's floor under the pace is applied by `cluster_line::decide`.
        let pace = u64::try_from(self.mark.pace).unwrap_or(per_second);
        let decision = cluster_line::decide(number, called, pace);
        if arriving && decision == Decision::Admit {
            self.admitted += 1;
        }
        decision
    }

    /// What to report with the next read: admissions not yet counted, and void numbers per
    /// lane (taken: the caller adds them to the store).
    pub fn report(&mut self, now: Duration) -> (u64, [u64; 2]) {
        let void = [self.numbers[0].take_void(now), self.numbers[1].take_void(now)];
        (std::mem::take(&mut self.admitted), void)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A store's issued counter, as `INCRBY` keeps it.
    struct Store {
        issued: u64,
    }

    impl Store {
        fn incrby(&mut self, n: u64) -> u64 {
            self.issued += n;
            self.issued
        }
    }

    fn number(door: &mut Numbers, store: &mut Store, now: Duration) -> u64 {
        match door.take(now) {
            Take::Number(n) => n,
            Take::Refill(len) => {
                let last = store.incrby(len);
                door.refilled(last, len, now)
            }
        }
    }

    #[test]
    fn a_quiet_door_takes_one_number_at_a_time() {
        let (mut door, mut store) = (Numbers::new(), Store { issued: 0 });
        assert_eq!(number(&mut door, &mut store, ms(0)), 1);
        assert_eq!(number(&mut door, &mut store, ms(500)), 2);
        assert_eq!(number(&mut door, &mut store, ms(1_000)), 3);
        assert_eq!(store.issued, 3, "nothing taken ahead, nothing void");
        assert_eq!(door.take_void(ms(2_000)), 0);
    }

    #[test]
    fn a_busy_door_takes_blocks_sized_to_its_rate() {
        let (mut door, mut store) = (Numbers::new(), Store { issued: 0 });
        let mut steps = 0;
        let mut seen = Vec::new();
        // 10,000 arrivals a second (one every 100 µs) for a second.
        for i in 0..10_000u64 {
            let before = store.issued;
            seen.push(number(&mut door, &mut store, Duration::from_micros(i * 100)));
            steps += u32::from(store.issued != before);
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "handed out in order");
        assert!(steps < 100, "{steps} store steps for 10,000 arrivals");
        let void = door.take_void(Duration::from_secs(5));
        assert_eq!(store.issued, 10_000 + void, "every number handed out or void");
        assert!(void <= MAX_BLOCK, "{void} void");
    }

    #[test]
    fn an_expired_block_is_void_and_not_handed_out() {
        let (mut door, mut store) = (Numbers::new(), Store { issued: 0 });
        for i in 0..150 {
            number(&mut door, &mut store, ms(i));
        }
        assert!(store.issued >= 150, "{}", store.issued);
        let ahead = store.issued - 150;
        // Nobody comes for a while: what the block had left is void, and the next arrival
        // gets a fresh number (a block of one: the door has been quiet).
        assert_eq!(number(&mut door, &mut store, ms(1_000)), 150 + ahead + 1);
        assert_eq!(store.issued, 150 + ahead + 1);
        assert_eq!(door.take_void(ms(1_000)), ahead);
        assert_eq!(door.take_void(ms(2_000)), 0, "the block of one was handed out");
    }

    #[test]
    fn the_mark_is_fresh_for_a_while_only() {
        let mut line = DoorLine::new();
        assert!(!line.mark.fresh(ms(0)), "never read");
        line.mark = Mark { called: [10, 0], pace: 100, read_at: Some(ms(1_000)) };
        assert!(line.mark.fresh(ms(1_200)));
        assert!(!line.mark.fresh(ms(1_250)));
        assert_eq!(line.decide(Lane::SignedIn, 10, 0, true, 5), Decision::Admit);
        assert_eq!(line.decide(Lane::SignedIn, 9, 0, false, 5), Decision::Admit);
        assert!(matches!(
            line.decide(Lane::Anonymous, 300, 0, true, 5),
            Decision::Wait { position: 300, retry_after, .. } if retry_after == Duration::from_secs(3)
        ));
        assert_eq!(line.report(ms(1_300)), (1, [0, 0]), "one arrival admitted, counted once");
        assert_eq!(line.report(ms(1_300)).0, 0);
    }

    #[test]
    fn a_door_with_an_older_mark_never_tells_a_later_place_than_the_ticket_was_told() {
        // Door A read the line at called 900 and told number 1,000 it was 100th; door B's read
        // is older (called 700). Deciding from B's mark alone would say 300th.
        let mut a = DoorLine::new();
        a.mark = Mark { called: [0, 900], pace: 100, read_at: Some(ms(1_000)) };
        let Decision::Wait { position, .. } = a.decide(Lane::Anonymous, 1_000, 0, false, 5) else {
            panic!("number 1,000 is not called yet");
        };
        assert_eq!(position, 100);
        let seen = 1_000 - position;
        let mut b = DoorLine::new();
        b.mark = Mark { called: [0, 700], pace: 100, read_at: Some(ms(1_100)) };
        assert!(
            matches!(
                b.decide(Lane::Anonymous, 1_000, 0, false, 5),
                Decision::Wait { position: 300, .. }
            ),
            "without the ticket's mark, the older read tells a later place"
        );
        assert!(matches!(
            b.decide(Lane::Anonymous, 1_000, seen, false, 5),
            Decision::Wait { position: 100, .. }
        ));
        // A mark the ticket saw never admits by itself (its holder was told to wait against it);
        // a later read of the door does.
        b.mark.called[1] = 1_000;
        assert_eq!(b.decide(Lane::Anonymous, 1_000, seen, false, 5), Decision::Admit);
    }

    proptest! {
        /// However old a door's read, a holder is never told a later place than the one its
        /// ticket was told, and a number is admitted only when some read of the line called it.
        #[test]
        fn a_told_place_never_gets_later(
            number in 1u64..1_000_000,
            told_called in 0u64..1_000_000,
            door_called in 0u64..1_000_000,
        ) {
            prop_assume!(told_called < number);
            let mut line = DoorLine::new();
            line.mark = Mark { called: [door_called, 0], pace: 50, read_at: Some(ms(0)) };
            match line.decide(Lane::SignedIn, number, told_called, false, 5) {
                Decision::Admit => prop_assert!(door_called >= number),
                Decision::Wait { position, .. } => {
                    prop_assert!(position <= number - told_called);
                    prop_assert_eq!(position, number - told_called.max(door_called));
                }
            }
        }
    }

    proptest! {
        /// Doors sharing one store never hand out a number twice, each hands out its numbers
        /// in order, and every number the store issued is handed out or reported void.
        #[test]
        fn doors_hand_out_each_number_once(
            visits in proptest::collection::vec((0usize..4, 0u64..30_000), 1..2_000),
        ) {
            let mut store = Store { issued: 0 };
            let mut doors = vec![Numbers::new(); 4];
            let mut now = [Duration::ZERO; 4];
            let mut seen = std::collections::HashSet::new();
            let mut last_of = [0u64; 4];
            for (door, step_us) in visits {
                now[door] += Duration::from_micros(step_us);
                let n = number(&mut doors[door], &mut store, now[door]);
                prop_assert!(seen.insert(n), "number {n} handed out twice");
                prop_assert!(n > last_of[door], "a door hands out in order");
                last_of[door] = n;
            }
            let far = Duration::from_secs(3_600);
            let void: u64 = doors.iter_mut().map(|d| d.take_void(far)).sum();
            prop_assert_eq!(store.issued, seen.len() as u64 + void);
        }
    }
}
