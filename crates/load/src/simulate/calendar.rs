//! The simulation's event queue: a calendar of 1 ms slots, the current one a small heap. A
//! plain binary heap over millions of waiting joiners spends its time in cache misses; here an
//! event goes into its slot's list and is only ordered when its millisecond comes. Order is
//! exact: earliest first, ties in the order scheduled.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

const SLOT_US: u64 = 1_000;

/// An event at `at` (µs), with the sequence number that orders ties.
#[derive(Debug)]
struct Entry<T> {
    at: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    /// Earliest first (the heap is a max-heap).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Events in time order.
#[derive(Debug)]
pub struct Calendar<T> {
    /// Events of every slot up to `current`, ordered.
    near: BinaryHeap<Entry<T>>,
    /// Events of later slots, by slot, unordered.
    slots: Vec<Vec<Entry<T>>>,
    current: usize,
    seq: u64,
}

impl<T> Default for Calendar<T> {
    fn default() -> Self {
        Calendar { near: BinaryHeap::new(), slots: Vec::new(), current: 0, seq: 0 }
    }
}

impl<T> Calendar<T> {
    /// Adds `item` at `at` µs.
    pub fn push(&mut self, at: u64, item: T) {
        self.seq += 1;
        let entry = Entry { at, seq: self.seq, item };
        let slot = usize::try_from(at / SLOT_US).unwrap_or(usize::MAX);
        if slot <= self.current {
            self.near.push(entry);
            return;
        }
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, Vec::new);
        }
        self.slots[slot].push(entry);
    }

    /// When the earliest event is due.
    pub fn next_at(&mut self) -> Option<u64> {
        while self.near.is_empty() && self.current + 1 < self.slots.len() {
            self.current += 1;
            let slot = std::mem::take(&mut self.slots[self.current]);
            self.near.extend(slot);
        }
        self.near.peek().map(|e| e.at)
    }

    /// Takes the earliest event.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        self.next_at()?;
        self.near.pop().map(|e| (e.at, e.item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ties_keep_their_order_and_late_pushes_into_the_present_still_sort() {
        let mut c = Calendar::default();
        c.push(5_000, 'b');
        c.push(5_000, 'c');
        c.push(2_500, 'a');
        assert_eq!(c.pop(), Some((2_500, 'a')));
        // The calendar has moved on to 5 ms; an event in the past of that slot comes first.
        assert_eq!(c.next_at(), Some(5_000));
        c.push(3_000, 'z');
        assert_eq!(c.pop(), Some((3_000, 'z')));
        assert_eq!(c.pop(), Some((5_000, 'b')));
        assert_eq!(c.pop(), Some((5_000, 'c')));
        assert_eq!(c.pop(), None);
    }

    proptest! {
        #[test]
        fn events_come_out_in_time_order(times in proptest::collection::vec(0u64..50_000, 1..200)) {
            let mut c = Calendar::default();
            for (i, &t) in times.iter().enumerate() {
                c.push(t, i);
            }
            let mut expected: Vec<(u64, usize)> = times.iter().copied().zip(0..).collect();
            expected.sort();
            let got: Vec<(u64, usize)> = std::iter::from_fn(|| c.pop()).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
