//! A captioned space's speech-to-text stage, at the edge of the process: the program reaches it
//! through a [`ProgramSink`] like any egress (a `try_send` into a bounded queue: the mixer never
//! waits, a stage that falls behind loses audio), and an async task decodes it, cuts it into
//! phrases, drives the engine's worker process and publishes the cues. The rules (phrases, cue
//! timing, bounds, WebVTT) are `townhall_captions`'; this file owns the process, the pipes and
//! the clock.
//!
//! The worker speaks the captions worker protocol (`docs/protocol.md`); it is started again with
//! backoff when it exits, and the stage gives up after a few starts that never got ready.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

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

pub mod board;
pub mod relayed;

pub use board::{CaptionBoard, CueView, FirstFrame, TimedCue};

/// Program frames queued towards the stage: one second. Beyond, frames are dropped.
const QUEUE_FRAMES: usize = 50;
/// Messages queued towards the worker's stdin (100 ms of audio each): five seconds.
const WORKER_QUEUE: usize = 50;
/// How long a worker may take to say it is ready (loading a model).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts in a row that never got ready before the stage gives up.
const MAX_FAILED_STARTS: u32 = 3;
/// Captions settle in steps of an LL-HLS segment (program frames): the stage tells relays how
/// far they are settled when the frontier crosses a segment boundary, no more often.
const SETTLED_STEP: u64 = 100;
/// And how far it heard, every few segments (for subtitle segments listed on a deadline).
const LATEST_STEP: u64 = 500;

/// The Whisper worker, embedded so that one binary carries it.
const WHISPER_WORKER: &str = include_str!("../../../../../captions/whisper_worker.py");
/// The PocketSphinx worker.
const POCKETSPHINX_WORKER: &str = include_str!("../../../../../captions/pocketsphinx_worker.py");

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
    /// Where cues are kept for the other readers (the space's, shared by its runs).
    pub board: Arc<CaptionBoard>,
    /// This run's number (distinct from the space's other runs).
    pub generation: u64,
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
    // Nothing the mixer sends from here on is settled until the stage says so.
    parts.board.begin_run(parts.generation, parts.feed.next_frame());
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
    /// The segment steps of the last `captions_settled` sent (frontier, latest).
    told: Option<(u64, u64)>,
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
        self.parts.feed.publish_caption_event(&timed.event().to_json());
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
            self.progress(false);
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
        self.progress(true);
    }

    /// Tells the board (and, on a segment boundary, relays) how far captions are settled:
    /// before the oldest phrase still waiting for its final, and before the earliest frame a
    /// phrase not yet begun could start at (its pre-roll reaches back), so that a subtitle
    /// segment listed never gains a cue afterwards.
    fn progress(&mut self, segmenting: bool) {
        let latest = self.captioner.latest();
        let mut frontier = self.captioner.settled_until();
        if segmenting && let Some(earliest) = self.segmenter.earliest_new_start() {
            frontier = frontier.min(earliest);
        }
        self.parts.board.progress(self.parts.generation, frontier, latest);
        let step = (frontier / SETTLED_STEP, latest / LATEST_STEP);
        if self.told != Some(step) {
            self.told = Some(step);
            let event = ListenerEvent::CaptionsSettled { seq: frontier, latest };
            self.parts.feed.publish_relay_event(&event.to_json());
        }
    }

    fn line(&mut self, line: WorkerLine, worker: &mut Worker) {
        match line {
            WorkerLine::Ready { engine } => {
                worker.ready = true;
                metrics::counter!(CAPTION_WORKERS, "result" => "ready").increment(1);
                tracing::info!(space = %self.parts.space, %engine, "captions engine ready");
                let event = ListenerEvent::Captions { on: true, engine: Some(&engine) };
                self.parts.feed.publish_caption_event(&event.to_json());
                self.parts.board.set_engine(Some(engine));
            }
            WorkerLine::Error { message } => {
                tracing::warn!(space = %self.parts.space, "captions engine: {message}");
                self.parts.board.set_error(message);
            }
            other => {
                if let Some(cue) = self.captioner.line(other) {
                    self.publish(cue);
                }
                self.progress(worker.ready);
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
        told: None,
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
    stage.parts.board.end_run(stage.parts.generation, error);
    let event = ListenerEvent::Captions { on: false, engine: None };
    stage.parts.feed.publish_caption_event(&event.to_json());
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
}
