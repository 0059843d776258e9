//! What listeners observed, shared by every listener task (atomics, no locks).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::histogram::Histogram;

/// Counters of a listen run.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections attempted.
    pub attempted: AtomicU64,
    /// Connections that failed (refused, error status, timeout).
    pub failed: AtomicU64,
    /// Listeners connected now.
    pub connected: AtomicU64,
    /// Listeners that ever connected.
    pub ever_connected: AtomicU64,
    /// Connections lost before the end of the run.
    pub disconnects: AtomicU64,
    /// Listeners a draining node sent off (a `bye`; not counted as disconnects).
    pub sent_off: AtomicU64,
    /// Times listeners went back through the door (sent off or cut off).
    pub rejoins: AtomicU64,
    /// Audio frames received.
    pub frames: AtomicU64,
    /// Frames that arrived later than the budget.
    pub late: AtomicU64,
    /// Frames missing from the sequence.
    pub gaps: AtomicU64,
    /// Bytes received, all framing included.
    pub bytes: AtomicU64,
    /// Microseconds listeners spent connected (for the frames expected).
    pub connected_us: AtomicU64,
    /// Receive latency (WebSocket: from mixing; Ogg: lateness against the stream's own clock).
    pub latency: Histogram,
    /// Mouth-to-ear latency (WebSocket only): arrival minus the speaker's capture time.
    pub mouth_to_ear: Histogram,
    /// Outages and losses with their times (kept only when asked for).
    pub timeline: crate::timeline::Timeline,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Connections attempted.
    pub attempted: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Listeners connected now.
    pub connected: u64,
    /// Listeners that ever connected.
    pub ever_connected: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Listeners sent off by a draining node.
    pub sent_off: u64,
    /// Visits back through the door.
    pub rejoins: u64,
    /// Frames received.
    pub frames: u64,
    /// Late frames.
    pub late_frames: u64,
    /// Missing frames.
    pub gaps: u64,
    /// Bytes received.
    pub bytes: u64,
}

impl Stats {
    /// Copies the counters.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            attempted: self.attempted.load(Relaxed),
            failed: self.failed.load(Relaxed),
            connected: self.connected.load(Relaxed),
            ever_connected: self.ever_connected.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            sent_off: self.sent_off.load(Relaxed),
            rejoins: self.rejoins.load(Relaxed),
            frames: self.frames.load(Relaxed),
            late_frames: self.late.load(Relaxed),
            gaps: self.gaps.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// Tracks one listener's sequence numbers: counts what is missing.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqTracker {
    last: Option<u32>,
}

impl SeqTracker {
    /// Records `seq`; returns how many numbers were skipped since the last one.
    pub fn observe(&mut self, seq: u32) -> u64 {
        let gap = match self.last {
            Some(last) if seq > last => u64::from(seq - last - 1),
            _ => 0,
        };
        if self.last.is_none_or(|l| seq > l) {
            self.last = Some(seq);
        }
        gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_gaps_are_counted_once() {
        let mut t = SeqTracker::default();
        let gaps: Vec<u64> = [5, 6, 9, 9, 8, 10, 20].iter().map(|s| t.observe(*s)).collect();
        assert_eq!(gaps, vec![0, 0, 2, 0, 0, 0, 9]);
    }
}
