//! How many spaces one node captions at once: each costs an engine (a process and most of a
//! core's time while people talk), so the node refuses the next one instead of falling behind
//! on all of them.

use std::collections::BTreeSet;

/// The node's captioning slots, keyed by space.
#[derive(Debug, Clone)]
pub struct Slots<K: Ord> {
    max: usize,
    taken: BTreeSet<K>,
}

/// Every slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this node captions {max} spaces at most, and all its slots are taken")]
pub struct SlotsFull {
    /// The node's limit.
    pub max: usize,
}

impl<K: Ord> Slots<K> {
    /// At most `max` keys at once.
    pub fn new(max: usize) -> Slots<K> {
        Slots { max, taken: BTreeSet::new() }
    }

    /// Takes a slot for `key`; taking one already held is not an error (and takes nothing).
    pub fn take(&mut self, key: K) -> Result<(), SlotsFull> {
        if self.taken.contains(&key) {
            return Ok(());
        }
        if self.taken.len() >= self.max {
            return Err(SlotsFull { max: self.max });
        }
        self.taken.insert(key);
        Ok(())
    }

    /// Gives `key`'s slot back; whether it held one.
    pub fn release(&mut self, key: &K) -> bool {
        self.taken.remove(key)
    }

    /// Whether `key` holds a slot.
    pub fn holds(&self, key: &K) -> bool {
        self.taken.contains(key)
    }

    /// Slots taken.
    pub fn used(&self) -> usize {
        self.taken.len()
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_max_even_with_a_million_keys() {
        let mut slots = Slots::new(3);
        let mut taken = 0;
        for k in 0..1_000_000u32 {
            if slots.take(k).is_ok() {
                taken += 1;
            }
        }
        assert_eq!(taken, 3);
        assert_eq!(slots.take(9_999_999), Err(SlotsFull { max: 3 }));
        assert!(slots.take(1).is_ok(), "a holder taking again is fine");
        assert!(slots.release(&1) && !slots.release(&1));
        assert!(slots.take(9).is_ok() && slots.holds(&9) && slots.used() == 3);
    }
}
