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

/// What to do with an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let it in now.
    Admit,
    /// Not yet: hold ticket `number`, `position` places from the front, and come back after
    /// `retry_after`.
    Wait {
        /// The ticket number (keep it; present it when coming back).
        number: u64,
        /// Tickets ahead of this one, plus one (1 = next in line).
        position: u64,
        /// When to come back (an estimate from the admission rate, before jitter).
        retry_after: Duration,
    },
}

/// The FIFO waiting room of one node.
#[derive(Debug, Clone)]
pub struct WaitingRoom {
    capacity: Capacity,
    joins: Gcra,
    /// The next ticket number to hand out.
    next_ticket: u64,
    /// Tickets with a number up to here may enter.
    called: u64,
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
            next_ticket: 1,
            called: 0,
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

    /// Tickets handed out and not yet called.
    pub fn queued(&self) -> u64 {
        self.next_ticket - 1 - self.called
    }

    /// Decides about an arrival at `now`, with `listeners` currently connected and, for a
    /// returning joiner, the number of the ticket it holds.
    pub fn arrive(&mut self, now: Instant, listeners: usize, ticket: Option<u64>) -> Decision {
        self.advance(now, listeners);
        let has_room = self.has_room(listeners);
        match ticket {
            // Called: in, if there is room and join budget right now; else keep the place.
            Some(n) if n <= self.called => {
                if has_room && self.joins.check(now).is_ok() {
                    Decision::Admit
                } else {
                    self.wait(n, 1)
                }
            }
            Some(n) if n < self.next_ticket => self.wait(n, n - self.called),
            // A number this room never issued (another node's, or after a restart): join the end.
            Some(_) | None => {
                if self.queued() == 0 && has_room && self.joins.check(now).is_ok() {
                    Decision::Admit
                } else {
                    let n = self.next_ticket;
                    self.next_ticket += 1;
                    self.wait(n, n - self.called)
                }
            }
        }
    }

    /// Admits an arrival that will not wait in line (a direct connection without a ticket):
    /// only when nobody is queued and there is room and join budget. Issues no ticket.
    pub fn admit_without_ticket(&mut self, now: Instant, listeners: usize) -> Result<(), Duration> {
        self.advance(now, listeners);
        let has_room = self.has_room(listeners);
        if self.queued() == 0 && has_room && self.joins.check(now).is_ok() {
            Ok(())
        } else {
            match self.wait(self.next_ticket, self.queued() + 1) {
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
        let call = room.min(self.call_credit.floor() as u64).min(self.queued());
        self.called += call;
        self.call_credit -= call as f64;
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

    fn room(max_listeners: usize, jps: u32) -> WaitingRoom {
        WaitingRoom::new(Capacity { max_listeners, joins_per_second: jps, join_burst: jps })
    }

    #[test]
    fn admits_while_there_is_room_then_queues() {
        let t0 = Instant::now();
        let mut r = room(2, 100);
        assert_eq!(r.arrive(t0, 0, None), Decision::Admit);
        assert_eq!(r.arrive(t0, 1, None), Decision::Admit);
        let Decision::Wait { number, position, retry_after } = r.arrive(t0, 2, None) else {
            panic!("full room must queue")
        };
        assert_eq!((number, position), (1, 1));
        assert!(retry_after >= MIN_RETRY);
        // Someone leaves: the first ticket is called and admitted.
        assert_eq!(r.arrive(t0 + Duration::from_secs(1), 1, Some(number)), Decision::Admit);
    }

    #[test]
    fn the_join_rate_queues_a_burst_even_with_room() {
        let t0 = Instant::now();
        let mut r = WaitingRoom::new(Capacity {
            max_listeners: 1_000,
            joins_per_second: 10,
            join_burst: 5,
        });
        let admitted = (0..20).filter(|_| r.arrive(t0, 0, None) == Decision::Admit).count();
        assert_eq!(admitted, 5);
        assert_eq!(r.queued(), 15);
    }

    #[test]
    fn nobody_jumps_the_queue() {
        let t0 = Instant::now();
        let mut r = room(0, 100);
        let tickets: Vec<u64> = (0..5)
            .map(|_| match r.arrive(t0, 0, None) {
                Decision::Wait { number, .. } => number,
                Decision::Admit => panic!("no room"),
            })
            .collect();
        r.set_capacity(Capacity { max_listeners: 1, joins_per_second: 100, join_burst: 100 });
        // Ticket 3 comes back first but only ticket 1 has been called.
        let t1 = t0 + Duration::from_millis(10);
        assert!(matches!(r.arrive(t1, 0, Some(tickets[2])), Decision::Wait { position: 2, .. }));
        assert_eq!(r.arrive(t1, 0, Some(tickets[0])), Decision::Admit);
        // A newcomer goes to the end of the line, not in front of the tickets.
        assert!(matches!(r.arrive(t1, 1, None), Decision::Wait { number: 6, .. }));
    }

    #[test]
    fn direct_arrivals_never_pass_a_queue_nor_take_a_ticket() {
        let t0 = Instant::now();
        let mut r = room(1, 100);
        assert_eq!(r.admit_without_ticket(t0, 0), Ok(()));
        assert!(r.admit_without_ticket(t0, 1).is_err(), "full");
        assert!(matches!(r.arrive(t0, 1, None), Decision::Wait { number: 1, .. }));
        assert!(r.admit_without_ticket(t0, 0).is_err(), "someone is queued");
        assert_eq!(r.next_ticket, 2, "no ticket issued");
    }

    #[test]
    fn an_overloaded_node_queues_everyone_until_it_recovers() {
        let t0 = Instant::now();
        let mut r = room(100, 100);
        r.set_overloaded(true);
        let Decision::Wait { number, .. } = r.arrive(t0, 10, None) else { panic!("must queue") };
        assert!(r.admit_without_ticket(t0, 10).is_err());
        let t1 = t0 + Duration::from_secs(1);
        assert!(
            matches!(r.arrive(t1, 10, Some(number)), Decision::Wait { .. }),
            "not called while overloaded"
        );
        r.set_overloaded(false);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(r.arrive(t2, 10, Some(number)), Decision::Admit);
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let d = Duration::from_secs(10);
        assert_eq!(jitter(d, 0.2, 0.0), Duration::from_secs(8));
        assert_eq!(jitter(d, 0.2, 1.0), Duration::from_secs(12));
        assert_eq!(jitter(d, 0.2, 0.5), d);
    }

    proptest! {
        /// Whatever the arrivals, tickets are called in order and the called number never passes
        /// the issued ones; admitted joins never exceed room.
        #[test]
        fn fifo_and_bounded(ops in proptest::collection::vec((0u64..200, any::<bool>(), 0usize..12), 1..300)) {
            let t0 = Instant::now();
            let mut r = room(10, 50);
            let mut t = t0;
            let mut listeners = 0usize;
            let mut held: Vec<u64> = Vec::new();
            let mut last_called = 0;
            for (gap_ms, returning, leave) in ops {
                t += Duration::from_millis(gap_ms);
                listeners = listeners.saturating_sub(leave);
                let ticket = if returning && !held.is_empty() { Some(held.remove(0)) } else { None };
                let was_full = listeners >= 10;
                match r.arrive(t, listeners, ticket) {
                    Decision::Admit => {
                        prop_assert!(!was_full, "admitted into a full room");
                        listeners += 1;
                    }
                    Decision::Wait { number, position, .. } => {
                        prop_assert!(position >= 1);
                        held.push(number);
                        held.sort_unstable();
                    }
                }
                prop_assert!(r.called >= last_called, "called number went back");
                prop_assert!(r.called < r.next_ticket, "called a ticket never issued");
                last_called = r.called;
            }
        }
    }
}
