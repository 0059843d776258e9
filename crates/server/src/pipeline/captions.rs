//! A captioned space's speech-to-text stage, at the edge of the process: the program reaches it
//! through a [`ProgramSink`] like any egress (a `try_send` into a bounded queue: the mixer never
//! waits, a stage that falls behind loses audio), and an async task decodes it, cuts it into
//! phrases, drives the engine's worker process and publishes the cues. The rules (phrases, cue
//! timing, bounds, WebVTT) are `townhall_captions`'; this file owns the process, the pipes and
//! the clock.
//!
//! The worker speaks the captions worker protocol (`docs/protocol.md`); it is started again with
//! backoff when it exits, and the stage gives up after a few starts that never got ready.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use townhall_captions::protocol::{self, MAX_LINE};
use townhall_captions::{
    Captioner, CaptionerConfig, Cue, Downsampler, SegmentEvent, Segmenter, SegmenterConfig,
    WORKER_FRAME, WorkerLine,
};
use townhall_core::SpaceId;
use townhall_media::{FRAME_SAMPLES, ProgramFrame, SAMPLE_RATE};

use crate::metrics::{CAPTION_CUES, CAPTION_FRAMES_DROPPED, CAPTION_PHRASES_LOST, CAPTION_WORKERS};
use crate::pipeline::events::ListenerEvent;
use crate::pipeline::feed::ProgramFeed;
use crate::pipeline::sinks::ProgramSink;
use crate::pipeline::talking::Talking;

/// Program frames queued towards the stage: one second. Beyond, frames are dropped.
const QUEUE_FRAMES: usize = 50;
/// Messages queued towards the worker's stdin (100 ms of audio each): five seconds.
const WORKER_QUEUE: usize = 50;
/// How long a worker may take to say it is ready (loading a model).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts in a row that never got ready before the stage gives up.
const MAX_FAILED_STARTS: u32 = 3;
/// Final cues a board keeps (for subtitle segments and late readers).
const BOARD_FINALS: usize = 500;
/// An interim is shown for this long after its words (frames) when no final replaces it.
const STALE_INTERIM_FRAMES: u64 = 500;
/// Cues a transcript keeps at most (about 14 hours of continuous talk).
const TRANSCRIPT_CUES: usize = 20_000;

/// The Whisper worker, embedded so that one binary carries it.
const WHISPER_WORKER: &str = include_str!("../../../../captions/whisper_worker.py");
/// The PocketSphinx worker.
const POCKETSPHINX_WORKER: &str = include_str!("../../../../captions/pocketsphinx_worker.py");

/// The command line of `captions_engine`: a built-in worker run by `python3`, or the operator's
/// command split on white space.
pub fn engine_command(engine: &str) -> Vec<String> {
    let builtin = |script: &str| vec!["python3".to_owned(), "-c".to_owned(), script.to_owned()];
    match engine.trim() {
        "builtin:whisper" => builtin(WHISPER_WORKER),
        "builtin:pocketsphinx" => builtin(POCKETSPHINX_WORKER),
        other => other.split_whitespace().map(str::to_owned).collect(),
    }
}

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

#[derive(Debug, Default)]
struct BoardInner {
    on: bool,
    engine: Option<String>,
    error: Option<String>,
    finals: VecDeque<TimedCue>,
    interim: Option<TimedCue>,
    settled_until: u64,
    latest: u64,
    /// Final cues since a recording began (its first frame, or `None` until the first frame
    /// heard when captions started during the recording), while one is made.
    transcript: Option<(Option<u64>, Vec<Cue>)>,
}

/// What a captioned space has said, shared by its stage (writer) and the HTTP side (readers:
/// the summary, the HLS subtitle rendition, transcripts). Outlives the stage, so a space whose
/// captions were turned off keeps its subtitle rendition's past cues.
#[derive(Debug, Default)]
pub struct CaptionBoard {
    inner: Mutex<BoardInner>,
}

impl CaptionBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, BoardInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether captions are on.
    pub fn on(&self) -> bool {
        self.lock().on
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

    /// Final cues overlapping program frames `from..to`.
    pub fn finals_between(&self, from: u64, to: u64) -> Vec<Cue> {
        let inner = self.lock();
        inner
            .finals
            .iter()
            .filter(|c| c.cue.start < to && c.cue.end > from)
            .map(|c| c.cue.clone())
            .collect()
    }

    /// The frame before which captions will not change any more, and the latest frame heard.
    pub fn settled(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.settled_until, inner.latest)
    }

    /// Starts collecting a transcript from program frame `from` (a recording began; `None`:
    /// from the next frame heard, for captions turned on during a recording).
    pub fn begin_transcript(&self, from: Option<u64>) {
        self.lock().transcript = Some((from, Vec::new()));
    }

    /// The next program frame (the one after the latest heard).
    pub fn next_frame(&self) -> Option<u64> {
        let inner = self.lock();
        (inner.latest > 0).then_some(inner.latest + 1)
    }

    /// The transcript collected since [`begin_transcript`](Self::begin_transcript), and its
    /// first frame; collecting stops.
    pub fn take_transcript(&self) -> Option<(u64, Vec<Cue>)> {
        let (from, cues) = self.lock().transcript.take()?;
        Some((from.unwrap_or(0), cues))
    }

    fn set_on(&self, on: bool, engine: Option<String>, error: Option<String>) {
        let mut inner = self.lock();
        inner.on = on;
        inner.engine = engine;
        inner.error = error;
        if !on {
            inner.interim = None;
        }
    }

    fn add(&self, cue: TimedCue) {
        let mut inner = self.lock();
        if !cue.cue.is_final {
            inner.interim = Some(cue);
            return;
        }
        if inner.interim.as_ref().is_some_and(|i| i.cue.id == cue.cue.id) {
            inner.interim = None;
        }
        if let Some((from, cues)) = &mut inner.transcript
            && from.is_none_or(|from| cue.cue.end > from)
            && cues.len() < TRANSCRIPT_CUES
        {
            cues.push(cue.cue.clone());
        }
        inner.finals.push_back(cue);
        while inner.finals.len() > BOARD_FINALS {
            inner.finals.pop_front();
        }
    }

    fn progress(&self, settled_until: u64, latest: u64) {
        let mut inner = self.lock();
        if let Some((from @ None, _)) = &mut inner.transcript {
            *from = Some(latest);
        }
        inner.settled_until = settled_until;
        inner.latest = latest;
    }
}

/// The stage's end of the program: frames go into a bounded queue, never waiting.
pub struct CaptionSink {
    tx: mpsc::Sender<ProgramFrame>,
    label: String,
}

impl ProgramSink for CaptionSink {
    fn offer(&mut self, frame: &ProgramFrame, _last: bool) -> bool {
        match self.tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!(CAPTION_FRAMES_DROPPED, "reason" => "behind", "space" => self.label.clone())
                    .increment(1);
                true
            }
            // The stage is gone (it gave up): let go of the sink.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// What the stage needs to run.
pub struct StageParts {
    /// The space.
    pub space: SpaceId,
    /// Where caption events go to WebSocket listeners.
    pub feed: Arc<ProgramFeed>,
    /// Who is talking (to attribute words).
    pub talking: Arc<Talking>,
    /// Where cues are kept for the other readers.
    pub board: Arc<CaptionBoard>,
    /// The worker's command line.
    pub command: Vec<String>,
    /// Called once when the stage ends, for whatever reason (the space ended, captions were
    /// turned off, the engine could not start).
    pub on_exit: Box<dyn FnOnce() + Send>,
}

/// Starts a space's captions stage on the current runtime; returns the sink to hand the
/// space's mixer. Dropping the sink (captions off, the space ended) ends the stage and its
/// worker.
pub fn start(parts: StageParts) -> Box<dyn ProgramSink> {
    let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
    let label = parts.feed.metric_label().to_owned();
    parts.board.set_on(true, None, None);
    tokio::spawn(run(parts, rx));
    Box::new(CaptionSink { tx, label })
}

/// A running worker process and its pipes.
struct Worker {
    _child: Child,
    stdin: mpsc::Sender<Vec<u8>>,
    lines: mpsc::Receiver<WorkerLine>,
    ready: bool,
}

fn spawn_worker(command: &[String], space: &SpaceId) -> std::io::Result<Worker> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("worker pipes missing"));
    };
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Vec<u8>>(WORKER_QUEUE);
    tokio::spawn(async move {
        while let Some(message) = stdin_rx.recv().await {
            if stdin.write_all(&message).await.is_err() {
                return;
            }
        }
    });
    let (lines_tx, lines) = mpsc::channel(64);
    let space = space.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            // At most one line's worth: a worker that never sends a newline cannot make the
            // server hold more than MAX_LINE bytes for it.
            let n = match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await
            {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if line.last() != Some(&b'\n') && n > MAX_LINE {
                tracing::warn!(%space, "captions worker line over {MAX_LINE} bytes: skipped");
                // Skip the rest of that line.
                let mut rest = Vec::new();
                loop {
                    rest.clear();
                    match (&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut rest).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if rest.last() == Some(&b'\n') => break,
                        Ok(_) => {}
                    }
                }
                continue;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            match WorkerLine::parse(text) {
                Ok(parsed) => {
                    if lines_tx.send(parsed).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!(%space, "captions worker: {e}"),
            }
        }
    });
    Ok(Worker { _child: child, stdin: stdin_tx, lines, ready: false })
}

/// The stage's state between events.
struct Stage {
    parts: StageParts,
    decoder: Option<opus::Decoder>,
    down: Downsampler,
    pcm48: Vec<f32>,
    pcm16: Vec<i16>,
    segmenter: Segmenter,
    captioner: Captioner,
    /// The last frame heard and when it was mixed.
    last: Option<(u64, u64)>,
    events: Vec<SegmentEvent>,
    started: tokio::time::Instant,
}

impl Stage {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Program time (µs) of frame `seq`, from the latest frame's.
    fn us_of(&self, seq: u64) -> u64 {
        let Some((last_seq, last_us)) = self.last else { return 0 };
        let frame_us = townhall_media::FRAME_MS as u64 * 1_000;
        if seq >= last_seq {
            last_us + (seq - last_seq) * frame_us
        } else {
            last_us.saturating_sub((last_seq - seq) * frame_us)
        }
    }

    fn publish(&self, cue: Cue) {
        let timed = TimedCue { start_us: self.us_of(cue.start), end_us: self.us_of(cue.end), cue };
        let kind = if timed.cue.is_final { "final" } else { "interim" };
        metrics::counter!(CAPTION_CUES, "kind" => kind).increment(1);
        self.parts.feed.publish_event(&timed.event().to_json());
        self.parts.board.add(timed);
    }

    /// One program frame: decoded, downsampled, segmented; phrases go to the worker.
    fn frame(&mut self, frame: &ProgramFrame, worker: Option<&Worker>) {
        let seq = u64::from(frame.seq);
        self.last = Some((seq, frame.mixed_at_us));
        let label = self.parts.feed.metric_label();
        let Some(worker) = worker.filter(|w| w.ready) else {
            // No engine yet: nothing is segmented, so the frame counts as silence.
            metrics::counter!(CAPTION_FRAMES_DROPPED, "reason" => "no_worker", "space" => label.to_owned())
                .increment(1);
            self.captioner.heard(seq, &[]);
            return;
        };
        let samples = self
            .decoder
            .as_mut()
            .and_then(|d| d.decode_float(&frame.payload, &mut self.pcm48, false).ok())
            .unwrap_or(0)
            .min(FRAME_SAMPLES);
        self.pcm48[samples..].fill(0.0);
        self.down.push(&self.pcm48, &mut self.pcm16);
        let take = self.pcm16.len().min(WORKER_FRAME);
        let chunk: Vec<i16> = self.pcm16.drain(..take).collect();
        let mut events = std::mem::take(&mut self.events);
        self.segmenter.push(seq, &chunk, &mut events);
        let now_ms = self.now_ms();
        for event in events.drain(..) {
            let message = match event {
                SegmentEvent::Start { utt, start } => {
                    self.captioner.started(utt, start);
                    continue;
                }
                SegmentEvent::Audio { utt, pcm } => protocol::audio(utt, &pcm),
                SegmentEvent::End { utt, end } => {
                    self.captioner.ended(utt, end, now_ms);
                    protocol::end(utt)
                }
            };
            if worker.stdin.try_send(message).is_err() {
                metrics::counter!(CAPTION_FRAMES_DROPPED, "reason" => "worker_behind", "space" => label.to_owned())
                    .increment(1);
            }
        }
        self.events = events;
        let talking: Vec<String> =
            self.parts.talking.current().iter().map(|who| who.to_string()).collect();
        self.captioner.heard(seq, &talking);
        self.parts.board.progress(self.captioner.settled_until(), self.captioner.latest());
    }

    fn line(&mut self, line: WorkerLine, worker: &mut Worker) {
        match line {
            WorkerLine::Ready { engine } => {
                worker.ready = true;
                metrics::counter!(CAPTION_WORKERS, "result" => "ready").increment(1);
                tracing::info!(space = %self.parts.space, %engine, "captions engine ready");
                let event = ListenerEvent::Captions { on: true, engine: Some(&engine) };
                self.parts.feed.publish_event(&event.to_json());
                self.parts.board.set_on(true, Some(engine), None);
            }
            WorkerLine::Error { message } => {
                tracing::warn!(space = %self.parts.space, "captions engine: {message}");
                self.parts.board.set_on(true, None, Some(message));
            }
            other => {
                if let Some(cue) = self.captioner.line(other) {
                    self.publish(cue);
                }
                self.parts.board.progress(self.captioner.settled_until(), self.captioner.latest());
            }
        }
    }

    /// The worker is gone: its phrases will never be finished.
    fn lost_worker(&mut self) {
        let lost = self.captioner.abandon();
        metrics::counter!(CAPTION_PHRASES_LOST).increment(lost as u64);
        self.segmenter = Segmenter::new(SegmenterConfig::default());
    }
}

async fn run(parts: StageParts, mut frames: mpsc::Receiver<ProgramFrame>) {
    let first_id = crate::clock::now_us() / 1_000;
    let mut stage = Stage {
        decoder: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).ok(),
        down: Downsampler::new(),
        pcm48: vec![0.0; FRAME_SAMPLES],
        pcm16: Vec::with_capacity(WORKER_FRAME * 2),
        segmenter: Segmenter::new(SegmenterConfig::default()),
        captioner: Captioner::new(CaptionerConfig::default(), first_id),
        last: None,
        events: Vec::new(),
        started: tokio::time::Instant::now(),
        parts,
    };
    let space = stage.parts.space.clone();
    let mut worker: Option<Worker> = None;
    let mut failed_starts = 0u32;
    let mut backoff = Duration::from_secs(1);
    let mut restart_at = tokio::time::Instant::now();
    let mut spawned_at = tokio::time::Instant::now();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut error: Option<String> = None;
    loop {
        if worker.is_none() && tokio::time::Instant::now() >= restart_at {
            match spawn_worker(&stage.parts.command, &space) {
                Ok(w) => {
                    worker = Some(w);
                    spawned_at = tokio::time::Instant::now();
                }
                Err(e) => {
                    metrics::counter!(CAPTION_WORKERS, "result" => "failed").increment(1);
                    failed_starts += 1;
                    let message = format!("cannot start the captions engine: {e}");
                    tracing::warn!(%space, "{message}");
                    if failed_starts >= MAX_FAILED_STARTS {
                        error = Some(message);
                        break;
                    }
                    restart_at = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { break };
                stage.frame(&frame, worker.as_ref());
            }
            line = async {
                match worker.as_mut() {
                    Some(w) => w.lines.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(w) = worker.as_mut() else { continue };
                match line {
                    Some(line) => {
                        if w.ready {
                            backoff = Duration::from_secs(1);
                            failed_starts = 0;
                        }
                        stage.line(line, w);
                    }
                    None => {
                        // The worker exited (or closed its output).
                        let was_ready = w.ready;
                        worker = None;
                        stage.lost_worker();
                        if !was_ready {
                            metrics::counter!(CAPTION_WORKERS, "result" => "failed").increment(1);
                            failed_starts += 1;
                        }
                        let why = stage.parts.board.error();
                        tracing::warn!(%space, ready = was_ready, "captions engine exited{}",
                            why.as_deref().map(|w| format!(": {w}")).unwrap_or_default());
                        if failed_starts >= MAX_FAILED_STARTS {
                            error = Some(why.unwrap_or_else(|| "the captions engine keeps exiting before it is ready".to_owned()));
                            break;
                        }
                        restart_at = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            _ = poll.tick() => {
                let lost = stage.captioner.poll(stage.now_ms());
                metrics::counter!(CAPTION_PHRASES_LOST).increment(lost as u64);
                if worker.as_ref().is_some_and(|w| !w.ready) && spawned_at.elapsed() > READY_TIMEOUT {
                    tracing::warn!(%space, "captions engine not ready after {READY_TIMEOUT:?}: restarting");
                    worker = None;
                    failed_starts += 1;
                    if failed_starts >= MAX_FAILED_STARTS {
                        error = Some("the captions engine never got ready".to_owned());
                        break;
                    }
                    restart_at = tokio::time::Instant::now() + backoff;
                }
            }
        }
    }
    // The end of the stream, or captions off: the last phrase gets its chance at a final.
    if let Some(w) = worker.as_mut().filter(|w| w.ready) {
        let mut events = Vec::new();
        stage.segmenter.flush(&mut events);
        for event in events {
            let message = match event {
                SegmentEvent::Audio { utt, pcm } => protocol::audio(utt, &pcm),
                SegmentEvent::End { utt, end } => {
                    stage.captioner.ended(utt, end, stage.now_ms());
                    protocol::end(utt)
                }
                SegmentEvent::Start { .. } => continue,
            };
            let _ = w.stdin.try_send(message);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while stage.captioner.settled_until() <= stage.captioner.latest() {
            match tokio::time::timeout_at(deadline, w.lines.recv()).await {
                Ok(Some(line)) => stage.line(line, w),
                _ => break,
            }
        }
    }
    if let Some(e) = &error {
        tracing::warn!(%space, "captions off: {e}");
    }
    stage.parts.board.set_on(false, None, error);
    let event = ListenerEvent::Captions { on: false, engine: None };
    stage.parts.feed.publish_event(&event.to_json());
    (stage.parts.on_exit)();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_engines_are_embedded_and_others_split() {
        let w = engine_command("builtin:whisper");
        assert_eq!(&w[..2], ["python3", "-c"]);
        assert!(w[2].contains("faster_whisper"));
        assert!(engine_command(" builtin:pocketsphinx ")[2].contains("pocketsphinx"));
        assert_eq!(engine_command("/opt/stt --model x"), ["/opt/stt", "--model", "x"]);
    }

    #[test]
    fn the_board_keeps_bounded_finals_the_interim_and_a_transcript() {
        let board = CaptionBoard::default();
        let cue = |id: u64, is_final: bool, start: u64| TimedCue {
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
        };
        board.begin_transcript(Some(100));
        board.add(cue(1, true, 50));
        board.add(cue(2, false, 120));
        assert_eq!(board.latest(5).len(), 2, "a final and an interim");
        board.add(cue(2, true, 120));
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
            "what ended before it is not in it"
        );
        assert_eq!(cues.len(), 1_998);
        assert!(board.take_transcript().is_none());
    }
}
