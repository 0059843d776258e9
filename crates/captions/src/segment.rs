//! Phrases out of the program: voice activity (frame energy with hysteresis) decides where a
//! phrase starts and ends, so the engine hears speech only and every phrase gets its final cue
//! soon after the speaker pauses.
//!
//! A phrase starts at the first loud frame, with [`SegmenterConfig::pre_roll_frames`] of what
//! came before (the soft start of a word); it ends after
//! [`SegmenterConfig::hangover_frames`] below the off level, the quiet tail included; one that
//! runs past [`SegmenterConfig::max_phrase_frames`] is cut there and the next begins at once, so
//! a speaker who never pauses still gets final cues. Frames that never reached the segmenter
//! (the captions stage fell behind and dropped them) count as silence.

use std::collections::VecDeque;

use crate::WORKER_FRAME;

/// Levels and durations of the segmentation, in 20 ms frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmenterConfig {
    /// RMS level (0.0 to 1.0) at which silence becomes speech.
    pub on_rms: f32,
    /// RMS level below which speech counts as a pause.
    pub off_rms: f32,
    /// Pause length that ends a phrase.
    pub hangover_frames: u64,
    /// Sound kept from before the phrase's first loud frame.
    pub pre_roll_frames: usize,
    /// Past this length, any quiet frame (a breath between words) ends the phrase: long
    /// phrases end at a pause rather than in the middle of a word.
    pub soft_max_frames: u64,
    /// Longest phrase before a cut, pause or not.
    pub max_phrase_frames: u64,
    /// Frames per audio message to the worker.
    pub batch_frames: usize,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            on_rms: 0.02,
            off_rms: 0.01,
            hangover_frames: 20,
            pre_roll_frames: 10,
            soft_max_frames: 300,
            max_phrase_frames: 500,
            batch_frames: 5,
        }
    }
}

/// What the segmenter asks of the worker and the captioner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEvent {
    /// A phrase began at frame `start` (its pre-roll included).
    Start {
        /// The phrase's id, sent to the worker.
        utt: u32,
        /// Program frame of its first sample.
        start: u64,
    },
    /// Sound of the phrase, 16 kHz.
    Audio {
        /// The phrase.
        utt: u32,
        /// Samples.
        pcm: Vec<i16>,
    },
    /// The phrase ended.
    End {
        /// The phrase.
        utt: u32,
        /// Program frame just after its last loud frame.
        end: u64,
    },
}

#[derive(Debug)]
struct Open {
    utt: u32,
    start: u64,
    /// Frame after the last loud one.
    voiced_until: u64,
    batch: Vec<i16>,
    batched: usize,
}

/// Cuts the program into phrases. Feed it every frame, in order, with [`Segmenter::push`].
#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    pre_roll: VecDeque<(u64, Vec<i16>)>,
    open: Option<Open>,
    next_utt: u32,
    /// The next frame expected.
    next_frame: Option<u64>,
}

impl Segmenter {
    /// A segmenter with these levels.
    pub fn new(config: SegmenterConfig) -> Segmenter {
        Segmenter { config, pre_roll: VecDeque::new(), open: None, next_utt: 1, next_frame: None }
    }

    /// Whether a phrase is open, and since which frame.
    pub fn open_since(&self) -> Option<u64> {
        self.open.as_ref().map(|o| o.start)
    }

    /// The earliest program frame a phrase not yet begun could still start at: the oldest
    /// frame of the pre-roll (a phrase takes the sound before its first loud frame with it),
    /// else the next frame expected; `None` before the first frame. Captions before it (and
    /// before the open phrase's start) can only change through phrases already begun.
    pub fn earliest_new_start(&self) -> Option<u64> {
        if self.open.is_some() {
            return self.next_frame;
        }
        self.pre_roll.front().map(|(f, _)| *f).or(self.next_frame)
    }

    /// Takes program frame `frame` (20 ms at 16 kHz: [`WORKER_FRAME`] samples; shorter ones are
    /// padded with silence) and appends what follows from it to `out`.
    pub fn push(&mut self, frame: u64, pcm: &[i16], out: &mut Vec<SegmentEvent>) {
        if let Some(expected) = self.next_frame {
            if frame < expected {
                return; // an old frame again: ignored
            }
            if frame > expected {
                self.gap(frame, out);
            }
        }
        self.next_frame = Some(frame + 1);
        let mut samples = pcm[..pcm.len().min(WORKER_FRAME)].to_vec();
        samples.resize(WORKER_FRAME, 0);
        let level = rms(&samples);
        let cfg = self.config;
        match &mut self.open {
            None if level >= cfg.on_rms => {
                let utt = self.next_utt;
                self.next_utt = self.next_utt.wrapping_add(1).max(1);
                let start = self.pre_roll.front().map_or(frame, |(f, _)| *f);
                out.push(SegmentEvent::Start { utt, start });
                let mut open =
                    Open { utt, start, voiced_until: frame + 1, batch: Vec::new(), batched: 0 };
                for (_, pcm) in self.pre_roll.drain(..) {
                    open.batch.extend_from_slice(&pcm);
                    open.batched += 1;
                }
                self.open = Some(open);
                self.add(samples, out);
            }
            None => {
                self.pre_roll.push_back((frame, samples));
                while self.pre_roll.len() > cfg.pre_roll_frames {
                    self.pre_roll.pop_front();
                }
            }
            Some(open) => {
                let loud = level >= cfg.off_rms;
                if loud {
                    open.voiced_until = frame + 1;
                }
                let quiet = frame + 1 - open.voiced_until;
                let length = frame + 1 - open.start;
                let long = length >= cfg.max_phrase_frames;
                let breath = !loud && length >= cfg.soft_max_frames;
                self.add(samples, out);
                if quiet >= cfg.hangover_frames || breath {
                    self.close(out);
                } else if long {
                    // Cut; if the speaker goes on, the next loud frame opens the next phrase.
                    self.close(out);
                }
            }
        }
    }

    /// Ends the open phrase now (the stream ends, or captions stop).
    pub fn flush(&mut self, out: &mut Vec<SegmentEvent>) {
        self.close(out);
    }

    /// Frames before `to` never came: silence.
    fn gap(&mut self, to: u64, out: &mut Vec<SegmentEvent>) {
        self.pre_roll.clear();
        if let Some(open) = &self.open {
            let quiet = to - open.voiced_until;
            if quiet >= self.config.hangover_frames
                || to - open.start >= self.config.max_phrase_frames
            {
                self.close(out);
            }
        }
    }

    fn add(&mut self, samples: Vec<i16>, out: &mut Vec<SegmentEvent>) {
        let Some(open) = &mut self.open else { return };
        open.batch.extend_from_slice(&samples);
        open.batched += 1;
        if open.batched >= self.config.batch_frames {
            out.push(SegmentEvent::Audio { utt: open.utt, pcm: std::mem::take(&mut open.batch) });
            open.batched = 0;
        }
    }

    fn close(&mut self, out: &mut Vec<SegmentEvent>) {
        let Some(open) = self.open.take() else { return };
        if !open.batch.is_empty() {
            out.push(SegmentEvent::Audio { utt: open.utt, pcm: open.batch });
        }
        out.push(SegmentEvent::End { utt: open.utt, end: open.voiced_until });
    }
}

fn rms(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return 0.0;
    }
    let sum: f64 = pcm.iter().map(|&s| (s as f64 / 32768.0).powi(2)).sum();
    (sum / pcm.len() as f64).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOUD: i16 = 6_000;

    fn frame(level: i16) -> Vec<i16> {
        (0..WORKER_FRAME).map(|i| if i % 2 == 0 { level } else { -level }).collect()
    }

    /// Runs frames from `first`, loud where `loud(frame)`; returns every event.
    fn run(frames: std::ops::Range<u64>, loud: impl Fn(u64) -> bool) -> Vec<SegmentEvent> {
        let mut s = Segmenter::new(SegmenterConfig::default());
        let mut out = Vec::new();
        for f in frames {
            s.push(f, &frame(if loud(f) { LOUD } else { 0 }), &mut out);
        }
        out
    }

    fn phrases(events: &[SegmentEvent]) -> Vec<(u64, u64)> {
        let mut starts = std::collections::HashMap::new();
        let mut out = Vec::new();
        for e in events {
            match e {
                SegmentEvent::Start { utt, start } => {
                    starts.insert(*utt, *start);
                }
                SegmentEvent::End { utt, end } => out.push((starts[utt], *end)),
                SegmentEvent::Audio { .. } => {}
            }
        }
        out
    }

    #[test]
    fn a_phrase_with_its_pre_roll_ends_after_the_pause() {
        // Speech on frames 100..200 (2 s), then silence.
        let events = run(0..300, |f| (100..200).contains(&f));
        assert_eq!(phrases(&events), vec![(90, 200)], "10 frames of pre-roll, ends at 200");
        let samples: usize = events
            .iter()
            .map(|e| if let SegmentEvent::Audio { pcm, .. } = e { pcm.len() } else { 0 })
            .sum();
        // Pre-roll 10 + speech 100 + hangover 20 frames of audio reach the worker.
        assert_eq!(samples, 130 * WORKER_FRAME);
        let end_at = events.iter().position(|e| matches!(e, SegmentEvent::End { .. }));
        assert!(end_at.is_some());
    }

    #[test]
    fn short_pauses_stay_in_the_phrase_and_long_ones_split_it() {
        // Two words 200 ms apart, then 1 s of silence, then another word.
        let events = run(0..400, |f| {
            (100..130).contains(&f) || (140..170).contains(&f) || (220..250).contains(&f)
        });
        assert_eq!(phrases(&events), vec![(90, 170), (210, 250)]);
    }

    #[test]
    fn a_speaker_who_never_pauses_gets_cut_into_phrases() {
        let events = run(0..1_200, |_| true);
        let p = phrases(&events);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0], (0, 500));
        assert_eq!(p[1].0, 500, "the next phrase starts right where the cut was");
    }

    #[test]
    fn a_long_phrase_ends_at_its_next_breath() {
        // Talk with a 40 ms breath every second: the hangover never runs out.
        let events = run(0..1_000, |f| f % 50 < 48);
        let p = phrases(&events);
        assert_eq!(p[0], (0, 298), "past 6 s, the first breath ends it: {p:?}");
        assert_eq!(p[1], (300, 598), "the next starts with the next word");
    }

    #[test]
    fn dropped_frames_count_as_silence() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        let mut out = Vec::new();
        for f in 0..50 {
            s.push(f, &frame(LOUD), &mut out);
        }
        assert!(s.open_since().is_some());
        // One second went missing: the phrase is over.
        s.push(100, &frame(0), &mut out);
        assert_eq!(phrases(&out), vec![(0, 50)]);
        assert!(s.open_since().is_none());
        // Old frames are ignored, not a panic or a rewind.
        s.push(10, &frame(LOUD), &mut out);
        assert!(s.open_since().is_none());
    }

    #[test]
    fn no_phrase_can_start_before_the_pre_roll() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        let mut out = Vec::new();
        assert_eq!(s.earliest_new_start(), None);
        for f in 0..100 {
            s.push(f, &frame(0), &mut out);
            // Whatever comes next, a phrase starts at most 10 frames back.
            assert_eq!(s.earliest_new_start(), Some(f.saturating_sub(9)));
        }
        s.push(100, &frame(LOUD), &mut out);
        let Some(SegmentEvent::Start { start, .. }) = out.first() else { panic!("{out:?}") };
        assert_eq!(*start, 90, "it did start at the pre-roll's oldest frame");
        assert_eq!(s.earliest_new_start(), Some(101), "with one open: after it");
    }

    #[test]
    fn silence_sends_nothing() {
        assert!(run(0..10_000, |_| false).is_empty());
    }
}
