//! The tap the media engine offers each program frame to: a bounded queue it never waits on.
//! Who is talking travels in the same queue, so a recorder places each change exactly between
//! the frames it happened between, however far behind its disk is.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

use bytes::Bytes;
use townhall_core::Identity;

/// Counter: program frames a recorder could not take in time (the disk fell behind); the
/// recording has silence there.
pub const RECORDING_FRAMES_DROPPED: &str = "townhall_recording_frames_dropped_total";

/// What goes to a recorder.
#[derive(Debug)]
pub(crate) enum TapItem {
    /// A program frame.
    Frame {
        /// Its program sequence number.
        seq: u32,
        /// The Opus packet (shared with every other egress).
        payload: Bytes,
    },
    /// From the frame before this on, these people are talking (everyone else is not).
    Speaking(Vec<Identity>),
}

/// The engine's end of a recording: program frames are offered, never waited for.
pub struct RecordTap {
    pub(crate) tx: SyncSender<TapItem>,
    pub(crate) id: Arc<str>,
    pub(crate) dropped: u64,
    /// Where the recording's first frame is noted (its transcript is timed from it).
    pub(crate) first: Option<Arc<crate::pipeline::captions::FirstFrame>>,
    /// Who talks, when the queue was too full to say so: sent before the next frame.
    pub(crate) speaking: Option<Vec<Identity>>,
}

impl std::fmt::Debug for RecordTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordTap").field("id", &self.id).field("dropped", &self.dropped).finish()
    }
}

impl RecordTap {
    /// A tap into `tx` for recording `id`, noting its first frame in `first` if given.
    pub(crate) fn new(
        tx: SyncSender<TapItem>,
        id: &str,
        first: Option<Arc<crate::pipeline::captions::FirstFrame>>,
    ) -> RecordTap {
        RecordTap { tx, id: Arc::from(id), dropped: 0, first, speaking: None }
    }

    /// Offers program frame `seq` without waiting. A full queue drops the frame (counted and
    /// logged); returns `false` once the recorder is gone, and the engine then drops the tap.
    pub fn offer(&mut self, seq: u32, payload: &Bytes) -> bool {
        if let Some(first) = &self.first {
            first.saw(u64::from(seq));
        }
        if let Some(who) = self.speaking.take()
            && !self.send_speaking(who)
        {
            return false;
        }
        match self.tx.try_send(TapItem::Frame { seq, payload: payload.clone() }) {
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

    /// Tells the recorder who talks now (after the frame last offered). Never waits: with the
    /// queue full, it is told before the next frame that fits.
    pub fn speaking(&mut self, who: &[Identity]) {
        self.speaking = None;
        let _ = self.send_speaking(who.to_vec());
    }

    /// `false` once the recorder is gone.
    fn send_speaking(&mut self, who: Vec<Identity>) -> bool {
        match self.tx.try_send(TapItem::Speaking(who)) {
            Ok(()) => true,
            Err(TrySendError::Full(TapItem::Speaking(who))) => {
                self.speaking = Some(who);
                true
            }
            Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}
