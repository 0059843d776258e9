//! What a space has said: its cues, how far its captions are settled, and the transcript of
//! the recording in progress. One board per live space, written by each captions run of the
//! space (an origin's stages) or by its relay (an edge), read by the HTTP side (the summary,
//! the LL-HLS subtitle rendition, transcripts).
//!
//! The board outlives the runs that write it: captions turned off and on again keep their
//! subtitle rendition's past cues, and a recording's transcript collects the finals of every
//! run during the recording, not only the last one's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use townhall_captions::Cue;

use crate::pipeline::events::ListenerEvent;

/// Final cues a board keeps (for subtitle segments and late readers).
const BOARD_FINALS: usize = 500;
/// An interim is shown for this long after its words (frames) when no final replaces it.
const STALE_INTERIM_FRAMES: u64 = 500;
/// Cues a transcript keeps at most (about 14 hours of continuous talk).
const TRANSCRIPT_CUES: usize = 20_000;
/// Runs writing a board at once at most: the node's captions slots bound them already (a run
/// holds its slot until its stage has finished); this bounds a relay's view too.
const MAX_RUNS: usize = 64;
/// A recording's first frame before its tap saw one.
const NOT_YET: u64 = u64::MAX;

/// A cue with its times on the wall clock of the program too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedCue {
    /// The cue (times in program frames).
    pub cue: Cue,
    /// When its first frame was mixed, µs since the epoch.
    pub start_us: u64,
    /// When the frame after it was mixed.
    pub end_us: u64,
}

impl TimedCue {
    /// The cue as listeners receive it.
    pub fn event(&self) -> ListenerEvent<'_> {
        ListenerEvent::Caption {
            id: self.cue.id,
            is_final: self.cue.is_final,
            start_seq: self.cue.start,
            end_seq: self.cue.end,
            start_us: self.start_us,
            end_us: self.end_us,
            text: &self.cue.text,
            speaker: self.cue.speaker.as_deref(),
        }
    }

    /// The cue as the summary shows it.
    pub fn view(&self) -> CueView {
        CueView {
            id: self.cue.id,
            is_final: self.cue.is_final,
            start_us: self.start_us,
            end_us: self.end_us,
            text: self.cue.text.clone(),
            speaker: self.cue.speaker.clone(),
        }
    }
}

/// A cue in the polled summary.
#[derive(Debug, Clone, Serialize)]
pub struct CueView {
    /// The phrase's id.
    pub id: u64,
    /// Whether final.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Program time of its start, µs since the epoch.
    pub start_us: u64,
    /// Program time of its end.
    pub end_us: u64,
    /// The words.
    pub text: String,
    /// Who said them, where known.
    pub speaker: Option<String>,
}

/// The first program frame of a recording, as its tap sees it: the transcript's time zero
/// (the recorder fills gaps with silence, so frame `n` is at `(n - first) × 20 ms` in the file).
#[derive(Debug)]
pub struct FirstFrame(AtomicU64);

impl Default for FirstFrame {
    fn default() -> Self {
        FirstFrame(AtomicU64::new(NOT_YET))
    }
}

impl FirstFrame {
    /// Notes `frame` if it is the first (the tap calls it for every frame; cheap after the first).
    pub fn saw(&self, frame: u64) {
        if self.0.load(Ordering::Relaxed) == NOT_YET {
            let _ = self.0.compare_exchange(NOT_YET, frame, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The first frame, once seen.
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|f| *f != NOT_YET)
    }
}

/// A transcript being collected for a recording.
#[derive(Debug)]
struct Collecting {
    first: Arc<FirstFrame>,
    cues: Vec<Cue>,
    /// Cues it had when last saved while collecting.
    saved: usize,
}

/// A run writing the board, and how far its captions are settled.
#[derive(Debug, Clone, Copy)]
struct Run {
    generation: u64,
    /// Every final of this run that overlaps frames before it is on the board.
    frontier: u64,
}

#[derive(Debug, Default)]
struct BoardInner {
    engine: Option<String>,
    error: Option<String>,
    finals: VecDeque<TimedCue>,
    interim: Option<TimedCue>,
    runs: Vec<Run>,
    latest: u64,
    /// Captions ran at least once: the space has a subtitle rendition.
    captioned: bool,
    transcript: Option<Collecting>,
}

/// What a space has said, shared by its captions runs or relay (writers) and the HTTP side.
#[derive(Debug, Default)]
pub struct CaptionBoard {
    inner: Mutex<BoardInner>,
    /// Held while a transcript is written, so that a save of the transcript so far never
    /// lands after the final one.
    saving: Mutex<()>,
}

impl CaptionBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, BoardInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether captions are on (a run writes the board).
    pub fn on(&self) -> bool {
        !self.lock().runs.is_empty()
    }

    /// Whether captions ever ran for the space (it lists a subtitle rendition from then on).
    pub fn captioned(&self) -> bool {
        self.lock().captioned
    }

    /// The engine's name, once it runs.
    pub fn engine(&self) -> Option<String> {
        self.lock().engine.clone()
    }

    /// Why captions stopped by themselves, if they did.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    /// The latest `n` final cues and the interim of a phrase going on, if any.
    pub fn latest(&self, n: usize) -> Vec<CueView> {
        let inner = self.lock();
        let skip = inner.finals.len().saturating_sub(n);
        let mut out: Vec<CueView> = inner.finals.iter().skip(skip).map(TimedCue::view).collect();
        // An interim whose phrase was given up (no final came) goes stale: 10 s at most.
        let fresh = |i: &&TimedCue| i.cue.end + STALE_INTERIM_FRAMES >= inner.latest;
        out.extend(inner.interim.as_ref().filter(fresh).map(TimedCue::view));
        out
    }

    /// Final cues overlapping program frames `from..to`, in the order they became final.
    pub fn finals_between(&self, from: u64, to: u64) -> Vec<Cue> {
        let inner = self.lock();
        inner
            .finals
            .iter()
            .filter(|c| c.cue.start < to && c.cue.end > from)
            .map(|c| c.cue.clone())
            .collect()
    }

    /// The frame before which captions will not change any more, and the latest frame heard;
    /// without a run, nothing will change (`u64::MAX` for both).
    pub fn settled(&self) -> (u64, u64) {
        let inner = self.lock();
        match inner.runs.iter().map(|r| r.frontier).min() {
            Some(frontier) => (frontier, inner.latest),
            None => (u64::MAX, u64::MAX),
        }
    }

    /// Run `generation` begins: nothing from frame `from` on is settled until it says so. A
    /// run still finishing (captions turned off a moment ago) keeps holding its own frontier.
    pub fn begin_run(&self, generation: u64, from: u64) {
        let mut inner = self.lock();
        inner.captioned = true;
        inner.error = None;
        if inner.runs.iter().any(|r| r.generation == generation) {
            return;
        }
        if inner.runs.len() >= MAX_RUNS {
            inner.runs.remove(0);
        }
        inner.runs.push(Run { generation, frontier: from });
    }

    /// Run `generation` is over (its last finals are on the board), `error` saying why if it
    /// stopped by itself.
    pub fn end_run(&self, generation: u64, error: Option<String>) {
        let mut inner = self.lock();
        inner.runs.retain(|r| r.generation != generation);
        if error.is_some() {
            inner.error = error;
        }
        if inner.runs.is_empty() {
            inner.interim = None;
            inner.engine = None;
        }
    }

    /// Whether run `generation` writes the board.
    pub fn runs(&self, generation: u64) -> bool {
        self.lock().runs.iter().any(|r| r.generation == generation)
    }

    /// The engine of the runs is `engine` (it said it is ready).
    pub fn set_engine(&self, engine: Option<String>) {
        self.lock().engine = engine;
    }

    /// The engine said why it cannot work.
    pub fn set_error(&self, error: String) {
        self.lock().error = Some(error);
    }

    /// Run `generation` has settled its captions before `frontier` and heard up to `latest`.
    /// A frontier never goes back.
    pub fn progress(&self, generation: u64, frontier: u64, latest: u64) {
        let mut inner = self.lock();
        inner.latest = inner.latest.max(latest);
        if let Some(run) = inner.runs.iter_mut().find(|r| r.generation == generation) {
            run.frontier = run.frontier.max(frontier);
        }
    }

    /// Puts a cue up: an interim replaces the one shown, a final is kept (and collected into
    /// the transcript of a recording in progress). `false` for a final already on the board (a
    /// relay that resumed after a broken link hears a few events twice).
    pub fn add(&self, cue: TimedCue) -> bool {
        let mut inner = self.lock();
        if !cue.cue.is_final {
            inner.interim = Some(cue);
            return true;
        }
        if inner.finals.iter().rev().take(64).any(|c| c.cue.id == cue.cue.id) {
            return false;
        }
        if inner.interim.as_ref().is_some_and(|i| i.cue.id == cue.cue.id) {
            inner.interim = None;
        }
        if let Some(t) = &mut inner.transcript
            && t.first.get().is_some_and(|first| cue.cue.end > first)
            && t.cues.len() < TRANSCRIPT_CUES
        {
            t.cues.push(cue.cue.clone());
        }
        inner.finals.push_back(cue);
        while inner.finals.len() > BOARD_FINALS {
            inner.finals.pop_front();
        }
        true
    }

    /// Starts collecting the transcript of a recording whose first frame `first` names (its
    /// tap notes it): every final that ends after it, from whichever run, until
    /// [`take_transcript`](Self::take_transcript).
    pub fn begin_transcript(&self, first: Arc<FirstFrame>) {
        self.lock().transcript = Some(Collecting { first, cues: Vec::new(), saved: 0 });
    }

    /// The transcript collected since [`begin_transcript`](Self::begin_transcript), oldest
    /// first, and the recording's first frame (times are from it); collecting stops.
    pub fn take_transcript(&self) -> Option<(u64, Vec<Cue>)> {
        let Collecting { first, mut cues, .. } = self.lock().transcript.take()?;
        cues.sort_by_key(|c| (c.start, c.id));
        Some((first.get().unwrap_or(0), cues))
    }

    /// Hands the transcript so far to `save` if it gained cues since the last time (a
    /// recording in progress keeps it on disk as it goes: a crash loses only what came since).
    /// Blocks while another save of this board's transcript runs.
    pub fn save_progress(&self, save: impl FnOnce(u64, &[Cue])) {
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let (first, mut cues) = {
            let mut inner = self.lock();
            let Some(t) = inner.transcript.as_mut().filter(|t| t.cues.len() != t.saved) else {
                return;
            };
            t.saved = t.cues.len();
            (t.first.get().unwrap_or(0), t.cues.clone())
        };
        cues.sort_by_key(|c| (c.start, c.id));
        save(first, &cues);
    }

    /// Takes the transcript ([`take_transcript`](Self::take_transcript)) and hands it to
    /// `save`, after any save of it so far: the last word on disk is this one.
    pub fn finish_transcript(&self, save: impl FnOnce(u64, &[Cue])) {
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((first, cues)) = self.take_transcript() {
            save(first, &cues);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(id: u64, is_final: bool, start: u64) -> TimedCue {
        TimedCue {
            cue: Cue {
                id,
                is_final,
                start,
                end: start + 10,
                text: format!("c{id}"),
                speaker: None,
            },
            start_us: start * 20_000,
            end_us: (start + 10) * 20_000,
        }
    }

    #[test]
    fn the_board_keeps_bounded_finals_the_interim_and_a_transcript() {
        let board = CaptionBoard::default();
        let first = Arc::new(FirstFrame::default());
        board.begin_transcript(first.clone());
        board.add(cue(1, true, 50));
        first.saw(100);
        first.saw(101);
        board.add(cue(2, false, 120));
        assert_eq!(board.latest(5).len(), 2, "a final and an interim");
        assert!(board.add(cue(2, true, 120)));
        assert!(!board.add(cue(2, true, 120)), "a final once");
        assert_eq!(board.latest(5).iter().filter(|c| !c.is_final).count(), 0);
        for i in 3..2_000 {
            board.add(cue(i, true, 200 + i));
        }
        assert_eq!(board.lock().finals.len(), BOARD_FINALS);
        assert_eq!(board.finals_between(2_100, 2_101).len(), 10);
        let (from, cues) = board.take_transcript().expect("transcript");
        assert_eq!(
            (from, cues.first().map(|c| c.id)),
            (100, Some(2)),
            "what ended before the recording's first frame is not in it"
        );
        assert_eq!(cues.len(), 1_998);
        assert!(board.take_transcript().is_none());
    }

    #[test]
    fn progress_is_saved_when_it_changed_and_the_final_save_is_the_last() {
        let board = CaptionBoard::default();
        let first = Arc::new(FirstFrame::default());
        first.saw(0);
        board.begin_transcript(first);
        let saves = Mutex::new(Vec::new());
        let save = |_: u64, cues: &[Cue]| saves.lock().expect("saves").push(cues.len());
        board.save_progress(save);
        assert!(saves.lock().expect("saves").is_empty(), "nothing new: nothing saved");
        board.add(cue(1, true, 10));
        board.save_progress(save);
        board.save_progress(save);
        board.add(cue(2, true, 20));
        board.finish_transcript(save);
        board.save_progress(save);
        assert_eq!(*saves.lock().expect("saves"), vec![1, 2], "once per change, then the last");
    }

    #[test]
    fn runs_hold_the_frontier_until_the_last_one_ends() {
        let board = CaptionBoard::default();
        assert_eq!(board.settled(), (u64::MAX, u64::MAX), "never captioned: nothing pending");
        assert!(!board.captioned());
        board.begin_run(1, 1_000);
        assert!(board.captioned() && board.on());
        assert_eq!(board.settled(), (1_000, 0));
        board.progress(1, 1_200, 1_250);
        board.progress(1, 1_100, 1_260);
        assert_eq!(board.settled(), (1_200, 1_260), "a frontier never goes back");
        // Turned off (run 1 finishing its last phrase) and on again (run 2).
        board.begin_run(2, 1_300);
        board.progress(2, 1_500, 1_510);
        assert_eq!(board.settled().0, 1_200, "the finishing run still holds");
        board.end_run(1, None);
        assert_eq!(board.settled().0, 1_500);
        board.end_run(2, Some("gone".into()));
        assert_eq!(board.settled(), (u64::MAX, u64::MAX));
        assert!(!board.on() && board.captioned());
        assert_eq!(board.error().as_deref(), Some("gone"));
        for g in 0..1_000_000 {
            board.begin_run(g, g);
        }
        assert_eq!(board.lock().runs.len(), MAX_RUNS, "runs are bounded");
    }
}
