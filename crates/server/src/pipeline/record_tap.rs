//! The tap the media engine offers each program frame to: a bounded queue it never waits on.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

use bytes::Bytes;

/// Counter: program frames a recorder could not take in time (the disk fell behind); the
/// recording has silence there.
pub const RECORDING_FRAMES_DROPPED: &str = "townhall_recording_frames_dropped_total";

/// A program frame on its way to a recorder.
pub(crate) struct Frame {
    pub(crate) seq: u32,
    pub(crate) payload: Bytes,
}

/// The engine's end of a recording: program frames are offered, never waited for.
pub struct RecordTap {
    pub(crate) tx: SyncSender<Frame>,
    pub(crate) id: Arc<str>,
    pub(crate) dropped: u64,
    /// Where the recording's first frame is noted (its transcript is timed from it).
    pub(crate) first: Option<Arc<crate::pipeline::captions::FirstFrame>>,
}

impl std::fmt::Debug for RecordTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordTap").field("id", &self.id).field("dropped", &self.dropped).finish()
    }
}

impl RecordTap {
    /// Offers program frame `seq` without waiting. A full queue drops the frame (counted and
    /// logged); returns `false` once the recorder is gone, and the engine then drops the tap.
    pub fn offer(&mut self, seq: u32, payload: &Bytes) -> bool {
        if let Some(first) = &self.first {
            first.saw(u64::from(seq));
        }
        match self.tx.try_send(Frame { seq, payload: payload.clone() }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                metrics::counter!(RECORDING_FRAMES_DROPPED).increment(1);
                if self.dropped == 1 || self.dropped.is_multiple_of(250) {
                    tracing::warn!(
                        recording = %self.id,
                        dropped = self.dropped,
                        "the disk is behind: recording frames dropped (silence in the file)"
                    );
                }
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}
