//! Frames of a space's program stream as the engine hands them to the WebRTC loop: the shared
//! Opus payload and the timing each egress needs. Below the engine and the WebRTC loop both, so
//! neither imports the other.

use bytes::Bytes;
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
