//! Which mixer thread runs which space (sans-IO: no threads here, only the bookkeeping the
//! engine's pool consults).
//!
//! A space lives on exactly one thread for its whole life (its 20 ms clock, its encoder state and
//! its sinks never move), so the only decision is where a new space goes: to the thread with the
//! least [`ThreadLoad::cost`], the lowest index among equals.
//!
//! The load is counted (spaces and speakers), not measured (tick time): a new space arrives
//! before its speakers do, so its cost is unknown when it is placed whatever we measure, and a
//! tick time measured on a shared or throttled machine is noisy enough to send two spaces created
//! together to the same thread. Mixing cost grows with speakers (a decode and a mix-minus encode
//! each) and with spaces (the program's encode and its sinks), about equally: `bench/many-spaces`
//! measured ~3.5% of a core per space of 2 speakers, ~7.5% of 5 and ~17.5% of 13, all talking,
//! i.e. ~1% per space and ~1.3% per speaker. So a space and a speaker weigh one each.

use std::collections::HashMap;

use townhall_core::SpaceId;

/// Cost of a space with no speakers (its program encode and sinks, or a relayed space's sends).
pub const SPACE_COST: usize = 1;
/// Cost of one speaker on stage (a decode, its share of the mix and its mix-minus encode).
pub const SPEAKER_COST: usize = 1;

/// What one mixer thread carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadLoad {
    /// Spaces placed on the thread (mixed or relayed).
    pub spaces: usize,
    /// Speakers connected to those spaces, as the thread last reported.
    pub speakers: usize,
}

impl ThreadLoad {
    /// The load's weight for placement (see the module's doc for the weights).
    pub fn cost(&self) -> usize {
        self.spaces * SPACE_COST + self.speakers * SPEAKER_COST
    }
}

/// The spaces of a pool of mixer threads, and each thread's load.
#[derive(Debug, Clone)]
pub struct Placement {
    loads: Vec<ThreadLoad>,
    spaces: HashMap<SpaceId, usize>,
}

impl Placement {
    /// Bookkeeping for `threads` threads (at least one).
    pub fn new(threads: usize) -> Placement {
        Placement { loads: vec![ThreadLoad::default(); threads.max(1)], spaces: HashMap::new() }
    }

    /// How many threads there are.
    pub fn threads(&self) -> usize {
        self.loads.len()
    }

    /// The thread `space` runs on: the one it already has, or else the least loaded (the
    /// lowest index among equals), which from now on counts it.
    pub fn place(&mut self, space: SpaceId) -> usize {
        if let Some(&thread) = self.spaces.get(&space) {
            return thread;
        }
        let thread = self.least_loaded();
        self.loads[thread].spaces += 1;
        self.spaces.insert(space, thread);
        thread
    }

    /// Forgets `space`; returns the thread it ran on (`None`: it was not placed).
    pub fn remove(&mut self, space: &SpaceId) -> Option<usize> {
        let thread = self.spaces.remove(space)?;
        let load = &mut self.loads[thread];
        load.spaces = load.spaces.saturating_sub(1);
        Some(thread)
    }

    /// The thread `space` runs on, if it was placed.
    pub fn thread_of(&self, space: &SpaceId) -> Option<usize> {
        self.spaces.get(space).copied()
    }

    /// Records the speakers `thread` reports (ignored for a thread that does not exist).
    pub fn set_speakers(&mut self, thread: usize, speakers: usize) {
        if let Some(load) = self.loads.get_mut(thread) {
            load.speakers = speakers;
        }
    }

    /// Every thread's load, by index.
    pub fn loads(&self) -> &[ThreadLoad] {
        &self.loads
    }

    fn least_loaded(&self) -> usize {
        // `min_by_key` keeps the first of equals: the lowest index.
        self.loads.iter().enumerate().min_by_key(|(_, load)| load.cost()).map_or(0, |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpaceId {
        SpaceId::new(s).expect("valid id")
    }

    #[test]
    fn new_spaces_spread_round_the_threads() {
        let mut p = Placement::new(3);
        let threads: Vec<usize> = ["a", "b", "c", "d", "e", "f"].map(|s| p.place(id(s))).into();
        assert_eq!(threads, [0, 1, 2, 0, 1, 2]);
        assert!(p.loads().iter().all(|l| l.spaces == 2));
    }

    #[test]
    fn a_space_placed_twice_keeps_its_thread() {
        let mut p = Placement::new(2);
        assert_eq!(p.place(id("a")), 0);
        assert_eq!(p.place(id("a")), 0);
        assert_eq!(p.loads()[0].spaces, 1, "counted once");
        assert_eq!(p.place(id("b")), 1);
    }

    #[test]
    fn a_full_stage_outweighs_empty_spaces() {
        let mut p = Placement::new(2);
        assert_eq!(p.place(id("stage")), 0);
        assert_eq!(p.place(id("quiet")), 1);
        // Thread 0's space fills its stage: the next spaces all go to thread 1 until it weighs
        // as much.
        p.set_speakers(0, 13);
        for n in 0..13 {
            assert_eq!(p.place(id(&format!("e{n}"))), 1, "empty space {n}");
        }
        assert_eq!(p.loads()[0].cost(), SPACE_COST + 13 * SPEAKER_COST);
        assert_eq!(p.loads()[1].cost(), 14 * SPACE_COST);
        assert_eq!(p.place(id("next")), 0, "equal again: the lowest index");
    }

    #[test]
    fn removed_spaces_free_their_thread() {
        let mut p = Placement::new(2);
        for s in ["a", "b", "c", "d"] {
            p.place(id(s));
        }
        assert_eq!(p.remove(&id("b")), Some(1));
        assert_eq!(p.remove(&id("d")), Some(1));
        assert_eq!(p.remove(&id("d")), None, "only once");
        assert_eq!(p.thread_of(&id("b")), None);
        assert_eq!(p.place(id("e")), 1, "the emptied thread takes the next");
        assert_eq!(p.thread_of(&id("e")), Some(1));
    }

    #[test]
    fn one_thread_takes_everything_and_zero_means_one() {
        let mut p = Placement::new(0);
        assert_eq!(p.threads(), 1);
        assert_eq!(p.place(id("a")), 0);
        assert_eq!(p.place(id("b")), 0);
        p.set_speakers(5, 3);
        assert_eq!(p.loads(), &[ThreadLoad { spaces: 2, speakers: 0 }]);
    }

    #[test]
    fn many_spaces_with_speakers_come_out_balanced() {
        // Spaces arrive one by one, each filling with 5 speakers before the next comes.
        let mut p = Placement::new(4);
        let mut speakers = [0usize; 4];
        for n in 0..40 {
            let t = p.place(id(&format!("s{n}")));
            speakers[t] += 5;
            p.set_speakers(t, speakers[t]);
        }
        let costs: Vec<usize> = p.loads().iter().map(ThreadLoad::cost).collect();
        let (min, max) = (costs.iter().min().copied(), costs.iter().max().copied());
        assert_eq!(min, max, "even: {costs:?}");
    }
}
