//! Per-speaker jitter buffer: reorders frames by sequence number and paces them out one per tick.
//!
//! Frames arrive with network jitter, out of order, duplicated or not at all. The mixer asks for
//! exactly one frame per 20 ms tick; the buffer answers with the next frame in sequence, a request
//! to conceal a missing one (the decoder's packet-loss concealment), or "idle" when the speaker is
//! not sending. Latency is bounded: the buffer never holds more than `max_depth` frames.

use std::collections::BTreeMap;

use crate::wire::SpeakerFrame;

/// Sizing of a jitter buffer, in frames (20 ms each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Frames to gather before playout starts (latency traded for smoothness).
    pub target_depth: usize,
    /// The most frames held; older ones are dropped beyond it.
    pub max_depth: usize,
    /// Consecutive missing frames concealed before the speaker is treated as silent.
    pub max_conceal: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig { target_depth: 3, max_depth: 12, max_conceal: 5 }
    }
}

/// What the mixer should play from this speaker for one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The next frame in sequence.
    Frame(SpeakerFrame),
    /// A frame is missing: conceal it.
    Conceal,
    /// The speaker is not sending: contribute nothing.
    Idle,
}

/// What happened to frames, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames accepted into the buffer.
    pub accepted: u64,
    /// Frames played out.
    pub played: u64,
    /// Frames that arrived after their turn had passed.
    pub late: u64,
    /// Frames whose sequence number was already buffered.
    pub duplicate: u64,
    /// Frames dropped because the buffer was full.
    pub overflow: u64,
    /// Ticks concealed because the next frame was missing.
    pub concealed: u64,
}

/// Sequence numbers this far behind the playout point mean the speaker restarted its counter.
const RESTART_GAP: u32 = 3_000;

/// A jitter buffer for one speaker.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    frames: BTreeMap<u32, SpeakerFrame>,
    /// The sequence number to play next; `None` while (re)buffering.
    next: Option<u32>,
    /// Frames below this were already played, concealed or skipped.
    floor: Option<u32>,
    /// Frames below this were already played or dropped (concealed ones excluded).
    played_floor: Option<u32>,
    missing_run: usize,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(cfg: JitterConfig) -> JitterBuffer {
        let cfg = JitterConfig {
            target_depth: cfg.target_depth.max(1),
            max_depth: cfg.max_depth.max(cfg.target_depth.max(1)),
            max_conceal: cfg.max_conceal,
        };
        JitterBuffer {
            cfg,
            frames: BTreeMap::new(),
            next: None,
            floor: None,
            played_floor: None,
            missing_run: 0,
            stats: JitterStats::default(),
        }
    }

    /// Adds a frame from the network.
    pub fn push(&mut self, frame: SpeakerFrame) {
        if let Some(floor) = self.floor
            && frame.seq < floor
        {
            if floor - frame.seq > RESTART_GAP {
                self.restart();
            } else {
                self.stats.late += 1;
                return;
            }
        }
        if self.frames.contains_key(&frame.seq) {
            self.stats.duplicate += 1;
            return;
        }
        self.frames.insert(frame.seq, frame);
        self.stats.accepted += 1;
        while self.frames.len() > self.cfg.max_depth {
            if let Some((seq, _)) = self.frames.pop_first() {
                self.stats.overflow += 1;
                self.skip_past(seq);
            }
        }
    }

    /// Takes what to play for the next tick.
    pub fn pop(&mut self) -> Playout {
        let next = match self.next {
            Some(next) => next,
            None if self.frames.len() >= self.cfg.target_depth => match self.frames.keys().next() {
                Some(&first) => first,
                None => return Playout::Idle,
            },
            None => return Playout::Idle,
        };
        if let Some(frame) = self.frames.remove(&next) {
            self.advance_to(next.wrapping_add(1));
            self.played_floor = self.floor;
            self.missing_run = 0;
            self.stats.played += 1;
            return Playout::Frame(frame);
        }
        self.missing_run += 1;
        if self.missing_run > self.cfg.max_conceal {
            // Speaker silent, or a long gap: stop concealing and rebuffer from what is there.
            // Frames we concealed may still arrive (a speaker resuming after a pause): accept them.
            self.next = None;
            self.floor = self.played_floor;
            self.missing_run = 0;
            return Playout::Idle;
        }
        self.advance_to(next.wrapping_add(1));
        self.stats.concealed += 1;
        Playout::Conceal
    }

    /// Forgets everything (a new connection from the same speaker).
    pub fn restart(&mut self) {
        self.frames.clear();
        self.next = None;
        self.floor = None;
        self.played_floor = None;
        self.missing_run = 0;
    }

    /// Frames waiting.
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// Counters since creation.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    fn advance_to(&mut self, next: u32) {
        self.next = Some(next);
        self.floor = Some(next);
    }

    /// After dropping `seq` for overflow, playout must not wait for it.
    fn skip_past(&mut self, seq: u32) {
        let past = seq.wrapping_add(1);
        if self.next.is_some_and(|n| n <= seq) {
            self.next = Some(past);
        }
        if self.floor.is_none_or(|f| f <= seq) {
            self.floor = Some(past);
        }
        if self.played_floor.is_none_or(|f| f <= seq) {
            self.played_floor = Some(past);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn f(seq: u32) -> SpeakerFrame {
        SpeakerFrame { seq, sent_at_us: 0, payload: Bytes::from(seq.to_be_bytes().to_vec()) }
    }

    fn seq_of(p: &Playout) -> Option<u32> {
        match p {
            Playout::Frame(fr) => Some(fr.seq),
            _ => None,
        }
    }

    fn buffer() -> JitterBuffer {
        JitterBuffer::new(JitterConfig { target_depth: 3, max_depth: 8, max_conceal: 2 })
    }

    #[test]
    fn waits_for_target_depth_then_plays_in_order() {
        let mut jb = buffer();
        jb.push(f(11));
        jb.push(f(10));
        assert_eq!(jb.pop(), Playout::Idle, "still buffering");
        jb.push(f(12));
        let got: Vec<_> = (0..3).map(|_| seq_of(&jb.pop())).collect();
        assert_eq!(got, vec![Some(10), Some(11), Some(12)]);
    }

    #[test]
    fn conceals_a_gap_and_drops_the_late_frame() {
        let mut jb = buffer();
        for s in [0, 1, 2, 4] {
            jb.push(f(s));
        }
        let got: Vec<_> = (0..3).map(|_| seq_of(&jb.pop())).collect();
        assert_eq!(got, vec![Some(0), Some(1), Some(2)]);
        assert_eq!(jb.pop(), Playout::Conceal);
        jb.push(f(3));
        assert_eq!(jb.stats().late, 1);
        assert_eq!(seq_of(&jb.pop()), Some(4));
    }

    #[test]
    fn goes_idle_when_the_speaker_stops_and_rebuffers() {
        let mut jb = buffer();
        for s in 0..3 {
            jb.push(f(s));
        }
        for _ in 0..3 {
            assert!(matches!(jb.pop(), Playout::Frame(_)));
        }
        assert_eq!(jb.pop(), Playout::Conceal);
        assert_eq!(jb.pop(), Playout::Conceal);
        assert_eq!(jb.pop(), Playout::Idle);
        assert_eq!(jb.pop(), Playout::Idle);
        for s in 10..13 {
            jb.push(f(s));
        }
        assert_eq!(seq_of(&jb.pop()), Some(10));
    }

    #[test]
    fn a_speaker_resuming_after_a_pause_is_not_dropped_as_late() {
        let mut jb = buffer();
        for s in 0..3 {
            jb.push(f(s));
        }
        for _ in 0..3 {
            jb.pop();
        }
        // Pause: two concealed ticks, then idle.
        assert_eq!(jb.pop(), Playout::Conceal);
        assert_eq!(jb.pop(), Playout::Conceal);
        assert_eq!(jb.pop(), Playout::Idle);
        // Resumes with the very next sequence numbers.
        for s in 3..6 {
            jb.push(f(s));
        }
        assert_eq!(jb.stats().late, 0);
        assert_eq!(seq_of(&jb.pop()), Some(3));
    }

    #[test]
    fn overflow_drops_oldest_and_bounds_latency() {
        let mut jb = buffer();
        for s in 0..20 {
            jb.push(f(s));
        }
        assert_eq!(jb.depth(), 8);
        assert_eq!(jb.stats().overflow, 12);
        assert_eq!(seq_of(&jb.pop()), Some(12));
    }

    #[test]
    fn counter_restart_is_accepted() {
        let mut jb = buffer();
        for s in 10_000..10_003 {
            jb.push(f(s));
        }
        for _ in 0..3 {
            jb.pop();
        }
        for s in 0..3 {
            jb.push(f(s));
        }
        assert_eq!(seq_of(&jb.pop()), Some(0));
    }

    #[test]
    fn duplicates_are_counted_once() {
        let mut jb = buffer();
        jb.push(f(1));
        jb.push(f(1));
        assert_eq!((jb.stats().accepted, jb.stats().duplicate), (1, 1));
    }

    proptest! {
        /// Whatever arrives: bounded depth, strictly increasing playout, every frame accounted for.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(prop_oneof![
            (0u32..60).prop_map(Some),
            Just(None),
        ], 0..400)) {
            let mut jb = buffer();
            let mut last: Option<u32> = None;
            let mut pushed = 0u64;
            for op in ops {
                match op {
                    Some(seq) => { jb.push(f(seq)); pushed += 1; }
                    None => {
                        if let Some(seq) = seq_of(&jb.pop()) {
                            prop_assert!(last.is_none_or(|l| seq > l), "played {} after {:?}", seq, last);
                            last = Some(seq);
                        }
                    }
                }
                prop_assert!(jb.depth() <= 8);
                let s = jb.stats();
                prop_assert_eq!(s.accepted + s.late + s.duplicate, pushed);
                prop_assert_eq!(s.accepted, s.played + s.overflow + jb.depth() as u64);
            }
        }

        /// A clean, in-order stream plays every frame, in order, with nothing concealed.
        #[test]
        fn clean_stream_plays_everything(start in 0u32..1_000_000, n in 3usize..200) {
            let mut jb = buffer();
            let mut played = Vec::new();
            for i in 0..n as u32 {
                jb.push(f(start + i));
                if let Some(seq) = seq_of(&jb.pop()) { played.push(seq); }
            }
            for _ in 0..jb.depth() {
                if let Some(seq) = seq_of(&jb.pop()) { played.push(seq); }
            }
            let expected: Vec<u32> = (start..start + n as u32).collect();
            prop_assert_eq!(played, expected);
            prop_assert_eq!(jb.stats().concealed, 0);
        }
    }
}
