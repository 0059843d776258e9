//! Who spoke when: speaker turns from voice activity, on a recording's clock.
//!
//! [`Turns`] is told, whenever it changes, who is talking (the mixer's voice activity, see
//! [`crate::voice`]) and when, in milliseconds of whatever clock the caller keeps (a recording
//! uses its own position, so turns line up with its audio). It opens a turn when someone starts
//! and closes it when they stop; the end is moved back by the voice activity's hangover (it
//! reports a stop that long after the last loud tick). A speaker who starts again within
//! [`TurnConfig::merge_ms`] of their last turn's end continues it, so a timeline shows a turn per
//! stretch of speech, not one per breath.
//!
//! Everything is bounded whatever the speakers are called or do: at most
//! [`TurnConfig::max_open`] turns open at once and [`TurnConfig::max_turns`] kept; beyond, turns
//! are counted in [`Turns::dropped`] and not kept.

use std::collections::BTreeMap;

/// One turn: `speaker` talked from `start_ms` to `end_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn<K> {
    /// Who talked.
    pub speaker: K,
    /// When they started, ms.
    pub start_ms: u64,
    /// When they stopped, ms (at least `start_ms`).
    pub end_ms: u64,
}

/// How turns are made and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnConfig {
    /// How late the voice activity reports a stop (its hangover): subtracted from turn ends.
    pub hangover_ms: u64,
    /// A pause shorter than this between two turns of one speaker joins them.
    pub merge_ms: u64,
    /// Turns kept at most; later ones are dropped (counted).
    pub max_turns: usize,
    /// Turns open at once at most (people talking together).
    pub max_open: usize,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig { hangover_ms: 600, merge_ms: 1_500, max_turns: 20_000, max_open: 64 }
    }
}

/// How far back a restarting speaker's last turn is looked for, among the turns kept.
const MERGE_LOOKBACK: usize = 32;

/// Speaker turns being recorded. See the [module](self) docs.
#[derive(Debug, Clone)]
pub struct Turns<K> {
    config: TurnConfig,
    open: BTreeMap<K, u64>,
    done: Vec<Turn<K>>,
    dropped: u64,
}

impl<K: Ord + Clone> Turns<K> {
    /// No turns yet.
    pub fn new(config: TurnConfig) -> Turns<K> {
        Turns { config, open: BTreeMap::new(), done: Vec::new(), dropped: 0 }
    }

    /// At `now_ms`, the people in `talking` are talking (everyone else is not).
    pub fn observe(&mut self, now_ms: u64, talking: impl IntoIterator<Item = K>) {
        let now: Vec<K> = talking.into_iter().collect();
        let stopped: Vec<K> = self.open.keys().filter(|k| !now.contains(k)).cloned().collect();
        for speaker in stopped {
            if let Some(start) = self.open.remove(&speaker) {
                let end = now_ms.saturating_sub(self.config.hangover_ms).max(start);
                self.keep(Turn { speaker, start_ms: start, end_ms: end });
            }
        }
        for speaker in now {
            if self.open.contains_key(&speaker) {
                continue;
            }
            if self.open.len() >= self.config.max_open {
                self.dropped += 1;
                continue;
            }
            let start = self.resume(&speaker, now_ms).unwrap_or(now_ms);
            self.open.insert(speaker, start);
        }
    }

    /// The start of `speaker`'s recent turn that ended less than `merge_ms` before `now_ms`,
    /// taken back out of the kept turns to go on.
    fn resume(&mut self, speaker: &K, now_ms: u64) -> Option<u64> {
        let from = self.done.len().saturating_sub(MERGE_LOOKBACK);
        let at = self.done[from..].iter().rposition(|t| t.speaker == *speaker)? + from;
        let last = &self.done[at];
        if now_ms.saturating_sub(last.end_ms) >= self.config.merge_ms {
            return None;
        }
        Some(self.done.remove(at).start_ms)
    }

    fn keep(&mut self, turn: Turn<K>) {
        if self.done.len() >= self.config.max_turns {
            self.dropped += 1;
        } else {
            self.done.push(turn);
        }
    }

    /// Closes every open turn at `now_ms` (the recording ends while they talk).
    pub fn finish(&mut self, now_ms: u64) {
        let open = std::mem::take(&mut self.open);
        for (speaker, start) in open {
            self.keep(Turn { speaker, start_ms: start, end_ms: now_ms.max(start) });
        }
    }

    /// Every turn so far, by start (then speaker); open ones end at `now_ms`.
    pub fn snapshot(&self, now_ms: u64) -> Vec<Turn<K>> {
        let mut all = self.done.clone();
        let room = self.config.max_turns.saturating_sub(all.len());
        all.extend(self.open.iter().take(room).map(|(speaker, &start)| Turn {
            speaker: speaker.clone(),
            start_ms: start,
            end_ms: now_ms.max(start),
        }));
        all.sort_by(|a, b| (a.start_ms, &a.speaker).cmp(&(b.start_ms, &b.speaker)));
        all
    }

    /// Turns not kept (beyond the bounds).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Turns kept and open now (what the tracker holds).
    pub fn len(&self) -> usize {
        self.done.len() + self.open.len()
    }

    /// Whether it holds no turn.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn turn(speaker: &'static str, start_ms: u64, end_ms: u64) -> Turn<&'static str> {
        Turn { speaker, start_ms, end_ms }
    }

    #[test]
    fn turns_open_close_and_lose_the_hangover() {
        let mut t = Turns::new(TurnConfig::default());
        t.observe(1_000, ["ann"]);
        t.observe(3_000, ["ann", "bob"]);
        t.observe(5_600, ["bob"]);
        t.observe(9_000, []);
        assert_eq!(t.snapshot(9_000), vec![turn("ann", 1_000, 5_000), turn("bob", 3_000, 8_400)]);
    }

    #[test]
    fn a_short_pause_continues_the_turn_and_a_long_one_does_not() {
        let mut t = Turns::new(TurnConfig::default());
        t.observe(0, ["ann"]);
        t.observe(2_600, []); // ended at 2 000
        t.observe(3_000, ["ann"]); // 1 s later: the same turn
        t.observe(5_600, []); // ended at 5 000
        t.observe(8_000, ["ann"]); // 3 s later: a new one
        t.finish(9_000);
        assert_eq!(t.snapshot(9_000), vec![turn("ann", 0, 5_000), turn("ann", 8_000, 9_000)]);
    }

    #[test]
    fn open_turns_show_up_to_now() {
        let mut t = Turns::new(TurnConfig::default());
        t.observe(100, ["ann"]);
        assert_eq!(t.snapshot(700), vec![turn("ann", 100, 700)]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_million_speakers_leave_the_tracker_bounded() {
        let config = TurnConfig { max_turns: 1_000, max_open: 2, ..TurnConfig::default() };
        let mut t = Turns::new(config);
        for n in 0..1_000_000u64 {
            // A new name every tick, talking over two others.
            t.observe(n * 20, [n, n + 1, n + 2]);
        }
        t.finish(20_000_000);
        assert!(t.len() <= 1_000 + 2, "{}", t.len());
        assert!(t.dropped() > 900_000, "{}", t.dropped());
        assert!(t.snapshot(20_000_000).len() <= 1_000);
    }

    proptest! {
        /// Whatever happens: turns by start, each at least zero long, each speaker's turns
        /// apart, never more than the bound.
        #[test]
        fn turns_are_ordered_and_bounded(
            steps in proptest::collection::vec((0u64..3_000, proptest::collection::vec(0u8..6, 0..4)), 0..200),
        ) {
            let config = TurnConfig { max_turns: 50, max_open: 3, ..TurnConfig::default() };
            let mut t = Turns::new(config);
            let mut now = 0;
            for (dt, who) in steps {
                now += dt;
                t.observe(now, who);
            }
            t.finish(now);
            let turns = t.snapshot(now);
            prop_assert!(turns.len() <= 50);
            prop_assert!(turns.windows(2).all(|w| w[0].start_ms <= w[1].start_ms));
            prop_assert!(turns.iter().all(|t| t.start_ms <= t.end_ms && t.end_ms <= now));
            for s in 0u8..6 {
                let mine: Vec<&Turn<u8>> = turns.iter().filter(|t| t.speaker == s).collect();
                prop_assert!(mine.windows(2).all(|w| w[0].end_ms <= w[1].start_ms));
            }
        }
    }
}
