//! Frames of a space's program stream as the engine hands them to the WebRTC loops: the shared
//! Opus payload and the timing each egress needs, and the queues of the RTC threads. Below the engine and the WebRTC loop both, so
//! neither imports the other.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use townhall_core::SpaceId;

/// One frame of a space's program stream, for WHEP listeners.
#[derive(Debug, Clone)]
pub struct ProgramPacket {
    /// The space.
    pub space: SpaceId,
    /// The program frame's sequence number (its RTP time is `seq × 960`).
    pub seq: u32,
    /// The Opus packet (shared with every other egress).
    pub payload: Bytes,
    /// When the oldest speaker audio in it was captured, µs since the epoch (none: silence).
    pub capture_us: Option<u64>,
    /// When it was mixed, µs since the epoch (for the loop's lag).
    pub mixed_at_us: u64,
}

/// Where the engine sends program frames for WHEP listeners: one queue per RTC thread, and for
/// each thread the spaces it has listeners of (kept by that thread), so a frame goes only to
/// the threads that need it. Cheap to clone (the engine keeps one per space).
#[derive(Debug, Clone)]
pub struct ProgramShards {
    shards: Arc<[ProgramShard]>,
}

/// One RTC thread's program queue and the spaces it has WHEP listeners of.
#[derive(Debug)]
pub struct ProgramShard {
    tx: mpsc::Sender<ProgramPacket>,
    spaces: Arc<RwLock<HashSet<SpaceId>>>,
}

impl ProgramShard {
    /// The thread's queue and its set of spaces with listeners (which the thread keeps).
    pub fn new(tx: mpsc::Sender<ProgramPacket>, spaces: Arc<RwLock<HashSet<SpaceId>>>) -> Self {
        ProgramShard { tx, spaces }
    }

    fn wants(&self, space: &SpaceId) -> bool {
        self.spaces.read().unwrap_or_else(|p| p.into_inner()).contains(space)
    }
}

impl ProgramShards {
    /// The queues of every RTC thread.
    pub fn new(shards: Vec<ProgramShard>) -> ProgramShards {
        ProgramShards { shards: shards.into() }
    }

    /// Offers a frame to every thread with listeners of its space, never waiting (the payload
    /// is shared, not copied); returns how many threads were too far behind to take it.
    pub fn offer(&self, packet: &ProgramPacket) -> usize {
        let mut refused = 0;
        for shard in self.shards.iter().filter(|s| s.wants(&packet.space)) {
            if shard.tx.try_send(packet.clone()).is_err() {
                refused += 1;
            }
        }
        refused
    }
}
