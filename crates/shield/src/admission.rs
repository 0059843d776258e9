//! Admission control and the waiting room.
//!
//! A node admits listeners while it has room (a listener cap) and join budget (a joins-per-second
//! GCRA). Beyond that, arrivals get a numbered **ticket**: a place in a FIFO queue. The room
//! lets tickets in, in order, as capacity frees up; a joiner returning with a ticket whose number
//! has been reached is admitted, an earlier number always before a later one. The ticket itself
//! is stateless for the node (the server signs it); the room keeps two counters, nothing per
//! joiner. Sans-IO: time is passed in.

use std::time::{Duration, Instant};

use crate::gcra::Gcra;

/// Capacity of a node (or a space) for listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Listeners that may be connected at once.
    pub max_listeners: usize,
    /// Joins admitted per second.
    pub joins_per_second: u32,
    /// Joins admitted at once above the rate.
    pub join_burst: u32,
}

/// Which line a joiner waits in. Signed-in joiners (a valid token) are called before anonymous
/// ones (docs/design.md §2.4: shed unauthenticated arrivals first); within a line, strictly FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Joiners with a valid token.
    SignedIn,
    /// Anonymous joiners.
    Anonymous,
}

impl Lane {
    fn index(self) -> usize {
        match self {
            Lane::SignedIn => 0,
            Lane::Anonymous => 1,
        }
    }
}

/// What to do with an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let it in now.
    Admit,
    /// Not yet: hold ticket `number`, `position` places from the front, and come back after
    /// `retry_after`.
    Wait {
        /// The ticket number in its lane (keep it; present it when coming back).
        number: u64,
        /// Tickets ahead of this one, plus one (1 = next in line).
        position: u64,
        /// When to come back (an estimate from the admission rate, before jitter).
        retry_after: Duration,
    },
}

/// One FIFO line of tickets.
#[derive(Debug, Clone, Copy)]
struct Line {
    /// The next ticket number to hand out.
    next: u64,
    /// Tickets with a number up to here may enter.
    called: u64,
}

impl Line {
    fn queued(&self) -> u64 {
        self.next - 1 - self.called
    }
}

/// The waiting room of one node: two FIFO lines, signed-in first.
#[derive(Debug, Clone)]
pub struct WaitingRoom {
    capacity: Capacity,
    joins: Gcra,
    lines: [Line; 2],
    /// When the called number was last advanced.
    last_advance: Option<Instant>,
    /// Tickets that may be called (accrues at the join rate, up to the burst).
    call_credit: f64,
    /// The node reports it is overloaded: admit nobody new until it recovers.
    overloaded: bool,
}

/// Shortest and longest wait suggested to a ticket holder.
const MIN_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

impl WaitingRoom {
    /// An empty room for `capacity`.
    pub fn new(capacity: Capacity) -> WaitingRoom {
        WaitingRoom {
            capacity,
            joins: Gcra::new(capacity.joins_per_second, capacity.join_burst),
            lines: [Line { next: 1, called: 0 }; 2],
            last_advance: None,
            call_credit: 0.0,
            overloaded: false,
        }
    }

    /// The configured capacity.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Changes capacity at run time (admin control or adaptive limit).
    pub fn set_capacity(&mut self, capacity: Capacity) {
        self.capacity = capacity;
        self.joins = Gcra::new(capacity.joins_per_second, capacity.join_burst);
    }

    /// Marks the node overloaded (measured, e.g. event-loop lag) or recovered. While
    /// overloaded, the room admits nobody new: current listeners keep their audio.
    pub fn set_overloaded(&mut self, overloaded: bool) {
        self.overloaded = overloaded;
    }

    /// Whether the node is marked overloaded.
    pub fn overloaded(&self) -> bool {
        self.overloaded
    }

    /// Room for one more listener now.
    fn has_room(&self, listeners: usize) -> bool {
        !self.overloaded && listeners < self.capacity.max_listeners
    }

    /// Tickets handed out and not yet called, both lines.
    pub fn queued(&self) -> u64 {
        self.lines.iter().map(Line::queued).sum()
    }

    /// Tickets waiting ahead of a new arrival in `lane` (its own line, and for anonymous
    /// joiners the signed-in line too).
    fn ahead_of(&self, lane: Lane) -> u64 {
        match lane {
            Lane::SignedIn => self.lines[0].queued(),
            Lane::Anonymous => self.queued(),
        }
    }

    /// Decides about an arrival in `lane` at `now`, with `listeners` currently connected and,
    /// for a returning joiner, the number of the ticket it holds in that lane.
    pub fn arrive(
        &mut self,
        now: Instant,
        listeners: usize,
        lane: Lane,
        ticket: Option<u64>,
    ) -> Decision {
        self.advance(now, listeners);
        let has_room = self.has_room(listeners);
        let line = self.lines[lane.index()];
        let signed_in_queued = if lane == Lane::Anonymous { self.lines[0].queued() } else { 0 };
        match ticket {
            // Called: in, if there is room and join budget right now; else keep the place.
            Some(n) if n <= line.called => {
                if has_room && self.joins.check(now).is_ok() {
                    Decision::Admit
                } else {
                    self.wait(n, 1)
                }
            }
            Some(n) if n < line.next => self.wait(n, n - line.called + signed_in_queued),
            // A number this room never issued (another node's, or after a restart): join the end.
            Some(_) | None => {
                if self.ahead_of(lane) == 0 && has_room && self.joins.check(now).is_ok() {
                    Decision::Admit
                } else {
                    let l = &mut self.lines[lane.index()];
                    let n = l.next;
                    l.next += 1;
                    let position = n - l.called + signed_in_queued;
                    self.wait(n, position)
                }
            }
        }
    }

    /// Admits an arrival in `lane` that will not wait in line (a direct connection without a
    /// ticket): only when nobody is queued ahead of it and there is room and join budget.
    /// Issues no ticket.
    pub fn admit_without_ticket(
        &mut self,
        now: Instant,
        listeners: usize,
        lane: Lane,
    ) -> Result<(), Duration> {
        self.advance(now, listeners);
        let has_room = self.has_room(listeners);
        if self.ahead_of(lane) == 0 && has_room && self.joins.check(now).is_ok() {
            Ok(())
        } else {
            match self.wait(0, self.ahead_of(lane) + 1) {
                Decision::Wait { retry_after, .. } => Err(retry_after),
                Decision::Admit => Ok(()),
            }
        }
    }

    /// Calls as many tickets as there is room for, at most the join rate since the last call.
    fn advance(&mut self, now: Instant, listeners: usize) {
        let since = self.last_advance.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_advance = Some(now);
        let rate = f64::from(self.capacity.joins_per_second);
        let burst = f64::from(self.capacity.join_burst.max(1));
        self.call_credit = (self.call_credit + since.as_secs_f64() * rate).min(burst);
        let room = if self.overloaded {
            0
        } else {
            self.capacity.max_listeners.saturating_sub(listeners) as u64
        };
        let mut call = room.min(self.call_credit.floor() as u64).min(self.queued());
        self.call_credit -= call as f64;
        // Signed-in line first, then anonymous.
        for line in &mut self.lines {
            let n = call.min(line.queued());
            line.called += n;
            call -= n;
        }
    }

    fn wait(&self, number: u64, position: u64) -> Decision {
        let rate = f64::from(self.capacity.joins_per_second.max(1));
        let estimate = Duration::from_secs_f64(position as f64 / rate);
        Decision::Wait {
            number,
            position: position.max(1),
            retry_after: estimate.clamp(MIN_RETRY, MAX_RETRY),
        }
    }
}

/// Spreads a retry time by ±`spread` (0.0 to 1.0) using `unit` (a random number in 0..1), so
/// that a crowd told to come back does not come back all at once.
pub fn jitter(retry_after: Duration, spread: f64, unit: f64) -> Duration {
    let factor = 1.0 + spread.clamp(0.0, 1.0) * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    retry_after.mul_f64(factor.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ANON: Lane = Lane::Anonymous;
    const SIGNED: Lane = Lane::SignedIn;

    fn room(max_listeners: usize, jps: u32) -> WaitingRoom {
        WaitingRoom::new(Capacity { max_listeners, joins_per_second: jps, join_burst: jps })
    }

    #[test]
    fn admits_while_there_is_room_then_queues() {
        let t0 = Instant::now();
        let mut r = room(2, 100);
        assert_eq!(r.arrive(t0, 0, ANON, None), Decision::Admit);
        assert_eq!(r.arrive(t0, 1, ANON, None), Decision::Admit);
        let Decision::Wait { number, position, retry_after } = r.arrive(t0, 2, ANON, None) else {
            panic!("full room must queue")
        };
        assert_eq!((number, position), (1, 1));
        assert!(retry_after >= MIN_RETRY);
        // Someone leaves: the first ticket is called and admitted.
        assert_eq!(r.arrive(t0 + Duration::from_secs(1), 1, ANON, Some(number)), Decision::Admit);
    }

    #[test]
    fn the_join_rate_queues_a_burst_even_with_room() {
        let t0 = Instant::now();
        let mut r = WaitingRoom::new(Capacity {
            max_listeners: 1_000,
            joins_per_second: 10,
            join_burst: 5,
        });
        let admitted = (0..20).filter(|_| r.arrive(t0, 0, ANON, None) == Decision::Admit).count();
        assert_eq!(admitted, 5);
        assert_eq!(r.queued(), 15);
    }

    #[test]
    fn nobody_jumps_the_queue() {
        let t0 = Instant::now();
        let mut r = room(0, 100);
        let tickets: Vec<u64> = (0..5)
            .map(|_| match r.arrive(t0, 0, ANON, None) {
                Decision::Wait { number, .. } => number,
                Decision::Admit => panic!("no room"),
            })
            .collect();
        r.set_capacity(Capacity { max_listeners: 1, joins_per_second: 100, join_burst: 100 });
        // Ticket 3 comes back first but only ticket 1 has been called.
        let t1 = t0 + Duration::from_millis(10);
        assert!(matches!(
            r.arrive(t1, 0, ANON, Some(tickets[2])),
            Decision::Wait { position: 2, .. }
        ));
        assert_eq!(r.arrive(t1, 0, ANON, Some(tickets[0])), Decision::Admit);
        // A newcomer goes to the end of the line, not in front of the tickets.
        assert!(matches!(r.arrive(t1, 1, ANON, None), Decision::Wait { number: 6, .. }));
    }

    #[test]
    fn signed_in_joiners_are_called_before_anonymous_ones() {
        let t0 = Instant::now();
        let mut r = room(0, 100);
        let Decision::Wait { number: a, .. } = r.arrive(t0, 0, ANON, None) else {
            panic!("queued")
        };
        let Decision::Wait { number: s, position, .. } = r.arrive(t0, 0, SIGNED, None) else {
            panic!("queued")
        };
        assert_eq!(position, 1, "the signed-in line is empty");
        // The anonymous ticket's honest position now counts the signed-in joiner ahead.
        assert!(matches!(r.arrive(t0, 0, ANON, Some(a)), Decision::Wait { position: 2, .. }));
        r.set_capacity(Capacity { max_listeners: 1, joins_per_second: 100, join_burst: 100 });
        let t1 = t0 + Duration::from_millis(20);
        assert!(matches!(r.arrive(t1, 0, ANON, Some(a)), Decision::Wait { .. }), "anonymous waits");
        assert_eq!(r.arrive(t1, 0, SIGNED, Some(s)), Decision::Admit);
        // A direct signed-in arrival passes the anonymous line, an anonymous one does not.
        let mut r = room(10, 100);
        r.set_capacity(Capacity { max_listeners: 0, joins_per_second: 100, join_burst: 100 });
        assert!(matches!(r.arrive(t0, 0, ANON, None), Decision::Wait { .. }));
        r.set_capacity(Capacity { max_listeners: 10, joins_per_second: 100, join_burst: 100 });
        assert!(r.admit_without_ticket(t0, 0, ANON).is_err(), "someone anonymous is queued");
        assert_eq!(r.admit_without_ticket(t0, 0, SIGNED), Ok(()));
    }

    #[test]
    fn direct_arrivals_never_pass_a_queue_nor_take_a_ticket() {
        let t0 = Instant::now();
        let mut r = room(1, 100);
        assert_eq!(r.admit_without_ticket(t0, 0, ANON), Ok(()));
        assert!(r.admit_without_ticket(t0, 1, ANON).is_err(), "full");
        assert!(matches!(r.arrive(t0, 1, ANON, None), Decision::Wait { number: 1, .. }));
        assert!(r.admit_without_ticket(t0, 0, ANON).is_err(), "someone is queued");
        assert_eq!(r.lines[1].next, 2, "no ticket issued");
    }

    #[test]
    fn an_overloaded_node_queues_everyone_until_it_recovers() {
        let t0 = Instant::now();
        let mut r = room(100, 100);
        r.set_overloaded(true);
        let Decision::Wait { number, .. } = r.arrive(t0, 10, ANON, None) else {
            panic!("must queue")
        };
        assert!(r.admit_without_ticket(t0, 10, SIGNED).is_err());
        let t1 = t0 + Duration::from_secs(1);
        assert!(
            matches!(r.arrive(t1, 10, ANON, Some(number)), Decision::Wait { .. }),
            "not called while overloaded"
        );
        r.set_overloaded(false);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(r.arrive(t2, 10, ANON, Some(number)), Decision::Admit);
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let d = Duration::from_secs(10);
        assert_eq!(jitter(d, 0.2, 0.0), Duration::from_secs(8));
        assert_eq!(jitter(d, 0.2, 1.0), Duration::from_secs(12));
        assert_eq!(jitter(d, 0.2, 0.5), d);
    }

    proptest! {
        /// Whatever the arrivals, each line is called in order and never past its issued
        /// tickets; nobody is admitted into a full room; a line's called tickets only ever grow.
        #[test]
        fn fifo_and_bounded(ops in proptest::collection::vec((0u64..200, any::<bool>(), any::<bool>(), 0usize..12), 1..300)) {
            let t0 = Instant::now();
            let mut r = room(10, 50);
            let mut t = t0;
            let mut listeners = 0usize;
            let mut held: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
            let mut last_called = [0u64; 2];
            for (gap_ms, returning, signed, leave) in ops {
                t += Duration::from_millis(gap_ms);
                listeners = listeners.saturating_sub(leave);
                let lane = if signed { SIGNED } else { ANON };
                let mine = &mut held[lane.index()];
                let ticket = if returning && !mine.is_empty() { Some(mine.remove(0)) } else { None };
                let was_full = listeners >= 10;
                match r.arrive(t, listeners, lane, ticket) {
                    Decision::Admit => {
                        prop_assert!(!was_full, "admitted into a full room");
                        listeners += 1;
                    }
                    Decision::Wait { number, position, .. } => {
                        prop_assert!(position >= 1);
                        let mine = &mut held[lane.index()];
                        mine.push(number);
                        mine.sort_unstable();
                    }
                }
                for (i, line) in r.lines.iter().enumerate() {
                    prop_assert!(line.called >= last_called[i], "called number went back");
                    prop_assert!(line.called < line.next, "called a ticket never issued");
                    last_called[i] = line.called;
                }
            }
        }
    }
}
