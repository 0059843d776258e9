//! A recording's thread: the queue drained into an Ogg file, synced at least every
//! `recording_sync_ms`, indexed, capped, finished.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use townhall_core::Identity;
use townhall_media::recording::{RecordingTags, RecordingWriter, WriterConfig, WriterOutput};
use townhall_media::turns::Turns;

use crate::app::store::{RecordingRecord, RecordingState, SpeakerTurn, Store};
use crate::app::webhooks::Webhooks;
use crate::clock::now_unix;

use super::recovery::recover_row;
use super::*;
use crate::pipeline::record_tap::TapItem;

/// A recording's thread: drains the tap's queue into the file.
pub(super) struct Recorder {
    pub(super) row: RecordingRecord,
    pub(super) dir: PathBuf,
    pub(super) file: File,
    pub(super) writer: RecordingWriter,
    pub(super) rx: Option<Receiver<TapItem>>,
    pub(super) store: Arc<Store>,
    pub(super) webhooks: Webhooks,
    pub(super) registry: Recordings,
    pub(super) done: watch::Sender<bool>,
    pub(super) clock: Instant,
    pub(super) bytes: u64,
    /// Where it stops by itself: audio length (ms) and file size (bytes).
    pub(super) max_ms: u64,
    pub(super) max_bytes: u64,
    /// Who spoke when, on the recording's clock (its audio so far).
    pub(super) turns: Turns<Identity>,
}

impl Recorder {
    pub(super) fn partial_path(&self) -> PathBuf {
        self.dir.join(format!("{}{PARTIAL}", self.row.file))
    }

    pub(super) fn run(mut self) {
        metrics::gauge!(RECORDINGS_ACTIVE).increment(1.0);
        let mut indexed = Instant::now();
        let failed = loop {
            let now = ms_since(self.clock);
            let wait = self
                .writer
                .deadline()
                .map_or(INDEX_EVERY, |d| Duration::from_millis(d.saturating_sub(now)))
                .min(INDEX_EVERY);
            let Some(rx) = &self.rx else { break None };
            let out = match rx.recv_timeout(wait) {
                Ok(TapItem::Frame { seq, payload }) => {
                    self.writer.push(seq, payload, ms_since(self.clock))
                }
                Ok(TapItem::Speaking(who)) => {
                    self.turns.observe(self.writer.duration_ms(), who);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => self.writer.poll(ms_since(self.clock)),
                Err(RecvTimeoutError::Disconnected) => break None,
            };
            if let Err(e) = out.map_err(io::Error::other).and_then(|o| self.append(&o)) {
                break Some(e);
            }
            if self.writer.duration_ms() >= self.max_ms || self.bytes >= self.max_bytes {
                tracing::warn!(recording = %self.row.id, duration_ms = self.writer.duration_ms(), bytes = self.bytes, "recording reached its cap: finishing it");
                metrics::counter!(RECORDINGS_ENDED, "outcome" => "capped").increment(1);
                break None;
            }
            if indexed.elapsed() >= INDEX_EVERY {
                indexed = Instant::now();
                self.row.duration_ms = self.writer.duration_ms();
                self.row.bytes = self.bytes;
                if let Err(e) = self.store.save_recording(&self.row) {
                    tracing::warn!(recording = %self.row.id, "cannot update the index: {e}");
                }
                self.save_turns();
            }
        };
        // The engine sees the queue closed at its next offer and lets go of the tap.
        self.rx = None;
        self.turns.finish(self.writer.duration_ms());
        self.save_turns();
        let result = match failed {
            None => self.close(),
            Some(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.row.state = RecordingState::Finished;
                self.row.ended_at = Some(now_unix());
                self.row.duration_ms = self.writer.duration_ms();
                self.row.bytes = self.bytes;
                if let Err(e) = self.store.save_recording(&self.row) {
                    tracing::error!(recording = %self.row.id, "cannot update the index: {e}");
                }
                metrics::counter!(RECORDINGS_ENDED, "outcome" => "finished").increment(1);
                tracing::info!(
                    recording = %self.row.id,
                    space = %self.row.space,
                    duration_ms = self.row.duration_ms,
                    bytes = self.row.bytes,
                    filled = self.writer.filled(),
                    "recording finished"
                );
                emit_finished(&self.webhooks, &self.row);
            }
            Err(e) => {
                // What reached the disk is finalised now (or at the next start if even that fails).
                tracing::error!(recording = %self.row.id, "recording failed: {e}");
                metrics::counter!(RECORDINGS_ENDED, "outcome" => "failed").increment(1);
                match recover_row(&self.dir, self.row.clone(), &self.store) {
                    Ok(row) => emit_finished(&self.webhooks, &row),
                    Err(e) => tracing::error!(
                        recording = %self.row.id,
                        "cannot finalise it now either ({e}); it is recovered at the next start"
                    ),
                }
            }
        }
        self.registry.release(&self.row.space, &self.row.id);
        let _ = self.done.send(true);
        metrics::gauge!(RECORDINGS_ACTIVE).decrement(1.0);
    }

    /// Saves the turns so far (open ones up to now) beside the index row: a crash loses at
    /// most the turns of the last [`INDEX_EVERY`].
    fn save_turns(&self) {
        let now = self.writer.duration_ms();
        let turns: Vec<SpeakerTurn> = self
            .turns
            .snapshot(now)
            .into_iter()
            .map(|t| SpeakerTurn { speaker: t.speaker, start_ms: t.start_ms, end_ms: t.end_ms })
            .collect();
        if turns.is_empty() {
            return;
        }
        if let Err(e) = self.store.save_turns(&self.row.id, &turns) {
            tracing::warn!(recording = %self.row.id, "cannot save the speaker turns: {e}");
        }
    }

    /// Appends pages, and syncs when the writer says so.
    pub(super) fn append(&mut self, out: &WriterOutput) -> io::Result<()> {
        if !out.bytes.is_empty() {
            // `File` is unbuffered: the pages are in the kernel once written (a killed process
            // loses nothing written), and on the disk once synced.
            self.file.write_all(&out.bytes)?;
            self.bytes += out.bytes.len() as u64;
            metrics::counter!(RECORDING_BYTES).increment(out.bytes.len() as u64);
        }
        if out.sync {
            let started = Instant::now();
            self.file.flush()?;
            self.file.sync_data()?;
            metrics::histogram!(RECORDING_SYNC_SECONDS).record(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// The end-of-stream page, a sync, the final name, a directory sync.
    pub(super) fn close(&mut self) -> io::Result<()> {
        let last = self.writer.finish().map_err(io::Error::other)?;
        self.append(&WriterOutput { bytes: last, sync: true })?;
        std::fs::rename(self.partial_path(), self.dir.join(&self.row.file))?;
        sync_dir(&self.dir)
    }
}

/// Creates the file (headers written and synced), then the index row. Blocking.
pub(super) fn create(
    dir: &FsPath,
    row: &RecordingRecord,
    pre_skip: u16,
    sync_ms: u64,
    store: &Store,
) -> io::Result<(File, RecordingWriter, u64)> {
    crate::app::datadir::ensure_private_dir(dir)?;
    let path = dir.join(format!("{}{PARTIAL}", row.file));
    let mut file = crate::app::datadir::create_new_private(&path)?;
    let tags = RecordingTags {
        title: row.title.clone(),
        space: row.space.to_string(),
        recording: row.id.clone(),
        started_at: row.started_at.0,
    };
    let config = WriterConfig { sync_interval_ms: sync_ms, page_frames: PAGE_FRAMES };
    let (writer, headers) = RecordingWriter::new(rand::random(), pre_skip, &tags, config, 0)
        .map_err(io::Error::other)?;
    file.write_all(&headers)?;
    file.sync_data()?;
    sync_dir(dir)?;
    store.save_recording(row).map_err(store_err)?;
    Ok((file, writer, headers.len() as u64))
}
