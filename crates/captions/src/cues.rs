//! From the worker's words to cues on the program clock.
//!
//! The segmenter tells the captioner where each phrase starts and ends (program frames); the
//! worker tells it the words. A cue takes its times from the phrase (narrowed to the words when
//! the engine gives word times), its speaker from who was talking during most of it, and its id
//! from the phrase, so an interim cue is replaced by the next interim and then by the final of
//! the same id. Time in milliseconds is injected (`now_ms`) only to give up on phrases whose
//! final never comes.

use std::collections::VecDeque;

use crate::protocol::{Word, WorkerLine};

/// Bounds and deadlines of the captioner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptionerConfig {
    /// A phrase whose final has not come this long after its end is given up.
    pub final_timeout_ms: u64,
    /// Phrases waiting for words at most; beyond, the oldest is given up.
    pub max_pending: usize,
    /// Final cues kept (for the subtitle window, the summary and late readers).
    pub keep_finals: usize,
    /// Distinct speakers counted per phrase.
    pub max_speakers: usize,
}

impl Default for CaptionerConfig {
    fn default() -> Self {
        CaptionerConfig {
            final_timeout_ms: 10_000,
            max_pending: 16,
            keep_finals: 500,
            max_speakers: 16,
        }
    }
}

/// A caption: words and when they were said, on the program clock (frames of 20 ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cue {
    /// The phrase's id: interims and the final of one phrase share it.
    pub id: u64,
    /// Whether these are the phrase's last words (else an interim, to be replaced).
    pub is_final: bool,
    /// Program frame where the words start.
    pub start: u64,
    /// Program frame where they end (for an interim of a phrase still going on: the latest).
    pub end: u64,
    /// The words.
    pub text: String,
    /// Who said them, where known (who was talking for most of the phrase).
    pub speaker: Option<String>,
}

#[derive(Debug)]
struct Phrase {
    utt: u32,
    id: u64,
    start: u64,
    end: Option<u64>,
    ended_at_ms: Option<u64>,
    votes: Vec<(String, u32)>,
    last_interim: String,
}

impl Phrase {
    fn speaker(&self) -> Option<String> {
        self.votes.iter().max_by_key(|(_, n)| *n).map(|(who, _)| who.clone())
    }
}

/// Turns phrases and the worker's lines into cues.
#[derive(Debug)]
pub struct Captioner {
    config: CaptionerConfig,
    phrases: VecDeque<Phrase>,
    finals: VecDeque<Cue>,
    next_id: u64,
    latest: u64,
    given_up: u64,
}

impl Captioner {
    /// A captioner whose cue ids start at `first_id` (distinct runs of a space do not reuse ids).
    pub fn new(config: CaptionerConfig, first_id: u64) -> Captioner {
        Captioner {
            config,
            phrases: VecDeque::new(),
            finals: VecDeque::new(),
            next_id: first_id,
            latest: 0,
            given_up: 0,
        }
    }

    /// Frame `frame` was heard, while `speakers` were talking.
    pub fn heard(&mut self, frame: u64, speakers: &[String]) {
        self.latest = self.latest.max(frame);
        let max = self.config.max_speakers;
        let Some(open) = self.phrases.iter_mut().rev().find(|p| p.end.is_none()) else { return };
        for who in speakers {
            if let Some((_, n)) = open.votes.iter_mut().find(|(w, _)| w == who) {
                *n += 1;
            } else if open.votes.len() < max {
                open.votes.push((who.clone(), 1));
            }
        }
    }

    /// A phrase began (the segmenter's `Start`).
    pub fn started(&mut self, utt: u32, start: u64) {
        while self.phrases.len() >= self.config.max_pending {
            self.phrases.pop_front();
            self.given_up += 1;
        }
        self.phrases.push_back(Phrase {
            utt,
            id: self.next_id,
            start,
            end: None,
            ended_at_ms: None,
            votes: Vec::new(),
            last_interim: String::new(),
        });
        self.next_id += 1;
    }

    /// A phrase ended at frame `end` (the segmenter's `End`), at `now_ms`.
    pub fn ended(&mut self, utt: u32, end: u64, now_ms: u64) {
        if let Some(p) = self.phrases.iter_mut().find(|p| p.utt == utt && p.end.is_none()) {
            p.end = Some(end.max(p.start));
            p.ended_at_ms = Some(now_ms);
        }
    }

    /// Takes a line from the worker; the cue it makes, if any.
    pub fn line(&mut self, line: WorkerLine) -> Option<Cue> {
        match line {
            WorkerLine::Interim { utt, text } => {
                let latest = self.latest;
                let p = self.phrases.iter_mut().find(|p| p.utt == utt)?;
                if text.is_empty() || text == p.last_interim {
                    return None;
                }
                p.last_interim.clone_from(&text);
                let end = p.end.unwrap_or(latest.max(p.start));
                Some(Cue {
                    id: p.id,
                    is_final: false,
                    start: p.start,
                    end,
                    text,
                    speaker: p.speaker(),
                })
            }
            WorkerLine::Final { utt, text, words } => {
                let at = self.phrases.iter().position(|p| p.utt == utt)?;
                let p = self.phrases.remove(at)?;
                if text.is_empty() {
                    return None;
                }
                let end = p.end.unwrap_or(self.latest.max(p.start));
                let (start, end) = narrow(p.start, end, &words);
                let cue = Cue { id: p.id, is_final: true, start, end, text, speaker: p.speaker() };
                self.finals.push_back(cue.clone());
                while self.finals.len() > self.config.keep_finals {
                    self.finals.pop_front();
                }
                Some(cue)
            }
            WorkerLine::Ready { .. } | WorkerLine::Error { .. } => None,
        }
    }

    /// Gives up on phrases whose final is overdue at `now_ms`; how many.
    pub fn poll(&mut self, now_ms: u64) -> usize {
        let timeout = self.config.final_timeout_ms;
        let before = self.phrases.len();
        self.phrases.retain(|p| p.ended_at_ms.is_none_or(|t| now_ms.saturating_sub(t) < timeout));
        let gone = before - self.phrases.len();
        self.given_up += gone as u64;
        gone
    }

    /// Forgets every phrase waiting for words (the worker was restarted: it will not answer).
    pub fn abandon(&mut self) -> usize {
        let n = self.phrases.len();
        self.phrases.clear();
        self.given_up += n as u64;
        n
    }

    /// Phrases given up so far.
    pub fn given_up(&self) -> u64 {
        self.given_up
    }

    /// The program frame before which every cue is final: nothing said before it will change.
    pub fn settled_until(&self) -> u64 {
        self.phrases.iter().map(|p| p.start).min().unwrap_or(self.latest + 1)
    }

    /// The latest frame heard.
    pub fn latest(&self) -> u64 {
        self.latest
    }

    /// Final cues kept, oldest first.
    pub fn finals(&self) -> impl DoubleEndedIterator<Item = &Cue> {
        self.finals.iter()
    }

    /// Final cues that overlap frames `from..to`.
    pub fn finals_between(&self, from: u64, to: u64) -> Vec<Cue> {
        self.finals.iter().filter(|c| c.start < to && c.end > from).cloned().collect()
    }
}

/// The phrase's bounds narrowed to its words, when the engine timed them.
fn narrow(start: u64, end: u64, words: &[Word]) -> (u64, u64) {
    let (Some(first), Some(last)) = (words.first(), words.last()) else { return (start, end) };
    let frames = |secs: f64| (secs * 1_000.0 / crate::FRAME_MS as f64) as u64;
    let s = (start + frames(first.start)).clamp(start, end);
    let e = (start + frames(last.end) + 1).clamp(s, end);
    if e > s { (s, e) } else { (start, end) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fin(utt: u32, text: &str, words: Vec<Word>) -> WorkerLine {
        WorkerLine::Final { utt, text: text.into(), words }
    }

    #[test]
    fn interims_then_a_final_of_the_same_id_timed_by_the_phrase() {
        let mut c = Captioner::new(CaptionerConfig::default(), 1);
        c.started(5, 100);
        for f in 100..150 {
            c.heard(f, &["ann".into()]);
        }
        let i = c.line(WorkerLine::Interim { utt: 5, text: "the birch".into() }).expect("cue");
        assert_eq!((i.id, i.is_final, i.start, i.end), (1, false, 100, 149));
        assert_eq!(i.speaker.as_deref(), Some("ann"));
        assert!(c.line(WorkerLine::Interim { utt: 5, text: "the birch".into() }).is_none());
        c.ended(5, 180, 0);
        assert_eq!(c.settled_until(), 100, "nothing after the phrase's start is settled");
        let f = c.line(fin(5, "the birch canoe", vec![])).expect("final");
        assert_eq!((f.id, f.is_final, f.start, f.end), (1, true, 100, 180));
        assert_eq!(c.settled_until(), 150, "settled up to what was heard");
        assert!(c.line(fin(5, "again", vec![])).is_none(), "a phrase has one final");
        assert_eq!(c.finals_between(170, 200).len(), 1);
        assert!(c.finals_between(180, 200).is_empty());
    }

    #[test]
    fn word_times_narrow_the_cue() {
        let mut c = Captioner::new(CaptionerConfig::default(), 1);
        c.started(1, 1_000);
        c.ended(1, 1_200, 0);
        let words = vec![
            Word { w: "a".into(), start: 0.5, end: 0.8 },
            Word { w: "b".into(), start: 1.0, end: 2.0 },
        ];
        let f = c.line(fin(1, "a b", words)).expect("final");
        assert_eq!((f.start, f.end), (1_025, 1_101));
    }

    #[test]
    fn the_speaker_is_who_talked_most_and_unknown_is_none() {
        let mut c = Captioner::new(CaptionerConfig::default(), 1);
        c.started(1, 0);
        for f in 0..10 {
            c.heard(f, &["bob".into()]);
        }
        for f in 10..40 {
            c.heard(f, &["ann".into()]);
        }
        c.ended(1, 40, 0);
        assert_eq!(c.line(fin(1, "hi", vec![])).expect("cue").speaker.as_deref(), Some("ann"));
        c.started(2, 50);
        c.ended(2, 60, 0);
        assert_eq!(c.line(fin(2, "hi", vec![])).expect("cue").speaker, None);
    }

    #[test]
    fn overdue_and_excess_phrases_are_given_up() {
        let mut c = Captioner::new(CaptionerConfig::default(), 1);
        c.started(1, 0);
        c.ended(1, 10, 1_000);
        assert_eq!(c.poll(10_999), 0);
        assert_eq!(c.poll(11_000), 1, "10 s after its end");
        assert!(c.line(fin(1, "late", vec![])).is_none(), "a late final is ignored");
        for utt in 0..1_000_000u32 {
            c.started(utt, u64::from(utt));
        }
        assert_eq!(c.phrases.len(), 16, "pending phrases are bounded");
        assert_eq!(c.given_up(), 1 + 1_000_000 - 16);
        assert_eq!(c.abandon(), 16);
    }

    #[test]
    fn finals_kept_are_bounded_and_unknown_phrases_ignored() {
        let mut c = Captioner::new(CaptionerConfig { keep_finals: 3, ..Default::default() }, 1);
        assert!(c.line(fin(42, "who?", vec![])).is_none());
        assert!(c.line(WorkerLine::Interim { utt: 42, text: "who".into() }).is_none());
        for utt in 0..10 {
            c.started(utt, u64::from(utt) * 10);
            c.ended(utt, u64::from(utt) * 10 + 5, 0);
            c.line(fin(utt, "x", vec![]));
        }
        assert_eq!(c.finals().count(), 3);
        assert_eq!(c.finals().next().map(|c| c.start), Some(70));
    }
}
