//! The binary WebSocket wire format between Townhall and its clients.
//!
//! All integers are big-endian. Every binary message starts with a one-byte kind.
//!
//! **Speaker frame** (client → server, kind `0x01`), one 20 ms Opus frame per message:
//!
//! ```text
//! 0      u8   kind = 0x01
//! 1..5   u32  seq         the speaker's frame counter, +1 per 20 ms frame
//! 5..13  u64  sent_at_us  the speaker's wall clock at capture, µs since the Unix epoch (0: unknown)
//! 13..   Opus packet, 1..=1275 bytes
//! ```
//!
//! **Program batch** (server → client, kind `0x02`), 1 to 50 consecutive program frames:
//!
//! ```text
//! 0      u8   kind = 0x02
//! 1      u8   count
//! then `count` times:
//!        u32  seq             program frame number, +1 per 20 ms
//!        u64  mixed_at_us     server wall clock when the frame was mixed, µs since the epoch
//!        u32  capture_age_us  mixed_at_us minus the oldest speaker capture time in the frame
//!                             (0xFFFF_FFFF: no speaker frame in it)
//!        u16  len
//!        len bytes of Opus
//! ```
//!
//! `mixed_at_us - capture_age_us` is when the words in a frame were spoken; a listener's arrival
//! time minus that is the mouth-to-ear latency (on one machine, or with synchronised clocks).

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::MAX_OPUS_PACKET;

/// Kind byte of a speaker frame.
pub const KIND_SPEAKER_FRAME: u8 = 0x01;
/// Kind byte of a program batch.
pub const KIND_PROGRAM_BATCH: u8 = 0x02;
/// Bytes before the Opus payload in a speaker frame.
pub const SPEAKER_HEADER_LEN: usize = 13;
/// Bytes before each frame's payload in a program batch.
pub const PROGRAM_FRAME_HEADER_LEN: usize = 18;
/// The most frames one batch carries (one second).
pub const MAX_BATCH_FRAMES: usize = 50;
/// `capture_age_us` value meaning "no speaker audio in this frame".
pub const NO_CAPTURE: u32 = u32::MAX;

/// Why a binary message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Empty message.
    #[error("empty message")]
    Empty,
    /// The first byte names no known message kind.
    #[error("unknown message kind 0x{0:02x}")]
    UnknownKind(u8),
    /// Shorter than its header says.
    #[error("message truncated")]
    Truncated,
    /// The Opus payload is empty or too large.
    #[error("opus payload must be 1 to {MAX_OPUS_PACKET} bytes, got {0}")]
    PayloadSize(usize),
    /// A batch with zero or too many frames, or trailing bytes.
    #[error("malformed batch: {0}")]
    Batch(&'static str),
}

/// One frame from a speaker, as parsed from the wire. The payload shares the message's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerFrame {
    /// The speaker's frame counter.
    pub seq: u32,
    /// Speaker's capture time, µs since the epoch (0: unknown).
    pub sent_at_us: u64,
    /// The Opus packet.
    pub payload: Bytes,
}

impl SpeakerFrame {
    /// Parses a speaker frame message. Does not check that the payload is valid Opus.
    pub fn parse(msg: Bytes) -> Result<SpeakerFrame, WireError> {
        let kind = *msg.first().ok_or(WireError::Empty)?;
        if kind != KIND_SPEAKER_FRAME {
            return Err(WireError::UnknownKind(kind));
        }
        if msg.len() < SPEAKER_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let seq = u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&msg[5..13]);
        let payload = msg.slice(SPEAKER_HEADER_LEN..);
        if payload.is_empty() || payload.len() > MAX_OPUS_PACKET {
            return Err(WireError::PayloadSize(payload.len()));
        }
        Ok(SpeakerFrame { seq, sent_at_us: u64::from_be_bytes(ts), payload })
    }

    /// Encodes the frame as a message.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(SPEAKER_HEADER_LEN + self.payload.len());
        out.put_u8(KIND_SPEAKER_FRAME);
        out.put_u32(self.seq);
        out.put_u64(self.sent_at_us);
        out.put_slice(&self.payload);
        out.freeze()
    }
}

/// One frame inside a program batch, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramFrameView<'a> {
    /// Program frame number.
    pub seq: u32,
    /// Server wall clock at mixing, µs since the epoch.
    pub mixed_at_us: u64,
    /// Age of the oldest speaker audio in the frame at mixing ([`NO_CAPTURE`]: none).
    pub capture_age_us: u32,
    /// The Opus packet.
    pub payload: &'a [u8],
}

impl ProgramFrameView<'_> {
    /// When the oldest words in this frame were spoken, µs since the epoch, if any were.
    pub fn captured_at_us(&self) -> Option<u64> {
        (self.capture_age_us != NO_CAPTURE)
            .then(|| self.mixed_at_us.saturating_sub(u64::from(self.capture_age_us)))
    }
}

/// Parses a program batch into its frames, calling `each` for every frame in order.
/// Returns the number of frames. Validates the whole message before calling `each`.
pub fn parse_program_batch<'a>(
    msg: &'a [u8],
    mut each: impl FnMut(ProgramFrameView<'a>),
) -> Result<usize, WireError> {
    let kind = *msg.first().ok_or(WireError::Empty)?;
    if kind != KIND_PROGRAM_BATCH {
        return Err(WireError::UnknownKind(kind));
    }
    let count = usize::from(*msg.get(1).ok_or(WireError::Truncated)?);
    if count == 0 || count > MAX_BATCH_FRAMES {
        return Err(WireError::Batch("frame count must be 1 to 50"));
    }
    // First pass validates lengths, so `each` never sees a prefix of a bad message.
    let mut frames: [Option<ProgramFrameView<'a>>; MAX_BATCH_FRAMES] = [None; MAX_BATCH_FRAMES];
    let mut rest = &msg[2..];
    for slot in frames.iter_mut().take(count) {
        let (frame, tail) = split_program_frame(rest)?;
        *slot = Some(frame);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(WireError::Batch("trailing bytes"));
    }
    frames.into_iter().flatten().for_each(&mut each);
    Ok(count)
}

fn split_program_frame(buf: &[u8]) -> Result<(ProgramFrameView<'_>, &[u8]), WireError> {
    if buf.len() < PROGRAM_FRAME_HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let (head, rest) = buf.split_at(PROGRAM_FRAME_HEADER_LEN);
    let seq = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&head[4..12]);
    let capture_age_us = u32::from_be_bytes([head[12], head[13], head[14], head[15]]);
    let len = usize::from(u16::from_be_bytes([head[16], head[17]]));
    if len == 0 || len > MAX_OPUS_PACKET {
        return Err(WireError::PayloadSize(len));
    }
    if rest.len() < len {
        return Err(WireError::Truncated);
    }
    let (payload, tail) = rest.split_at(len);
    let frame =
        ProgramFrameView { seq, mixed_at_us: u64::from_be_bytes(ts), capture_age_us, payload };
    Ok((frame, tail))
}

/// Builds program batches of up to `frames_per_batch` frames; each batch is one shared `Bytes`.
#[derive(Debug)]
pub struct ProgramBatchWriter {
    frames_per_batch: usize,
    count: usize,
    buf: BytesMut,
}

impl ProgramBatchWriter {
    /// A writer emitting a batch every `frames_per_batch` frames (clamped to 1..=50).
    pub fn new(frames_per_batch: usize) -> ProgramBatchWriter {
        let frames_per_batch = frames_per_batch.clamp(1, MAX_BATCH_FRAMES);
        ProgramBatchWriter { frames_per_batch, count: 0, buf: BytesMut::new() }
    }

    /// Frames per batch.
    pub fn frames_per_batch(&self) -> usize {
        self.frames_per_batch
    }

    /// Adds a frame; returns the finished batch when it is full.
    pub fn push(&mut self, frame: &ProgramFrameView<'_>) -> Option<Bytes> {
        if self.count == 0 {
            let cap = 2 + self.frames_per_batch * (PROGRAM_FRAME_HEADER_LEN + 120);
            self.buf.reserve(cap);
            self.buf.put_u8(KIND_PROGRAM_BATCH);
            self.buf.put_u8(0);
        }
        let len = frame.payload.len().min(MAX_OPUS_PACKET);
        self.buf.put_u32(frame.seq);
        self.buf.put_u64(frame.mixed_at_us);
        self.buf.put_u32(frame.capture_age_us);
        self.buf.put_u16(len as u16);
        self.buf.put_slice(&frame.payload[..len]);
        self.count += 1;
        if self.count < self.frames_per_batch {
            return None;
        }
        self.finish()
    }

    /// Emits the frames gathered so far as a (short) batch, if any.
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.count == 0 {
            return None;
        }
        self.buf[1] = self.count as u8;
        self.count = 0;
        Some(self.buf.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn speaker_frames_round_trip() {
        let f = SpeakerFrame { seq: 7, sent_at_us: 1_234, payload: Bytes::from_static(&[9, 8, 7]) };
        assert_eq!(SpeakerFrame::parse(f.encode()), Ok(f));
    }

    #[test]
    fn speaker_frame_errors() {
        assert_eq!(SpeakerFrame::parse(Bytes::new()), Err(WireError::Empty));
        assert_eq!(
            SpeakerFrame::parse(Bytes::from_static(&[3, 0])),
            Err(WireError::UnknownKind(3))
        );
        assert_eq!(SpeakerFrame::parse(Bytes::from_static(&[1, 0, 0])), Err(WireError::Truncated));
        let header_only = Bytes::from(vec![1u8; SPEAKER_HEADER_LEN]);
        assert_eq!(SpeakerFrame::parse(header_only), Err(WireError::PayloadSize(0)));
        let huge = Bytes::from(vec![1u8; SPEAKER_HEADER_LEN + 1276]);
        assert_eq!(SpeakerFrame::parse(huge), Err(WireError::PayloadSize(1276)));
    }

    #[test]
    fn batches_fill_then_emit() {
        let mut w = ProgramBatchWriter::new(3);
        let payload = [1u8, 2, 3];
        let frame =
            |seq| ProgramFrameView { seq, mixed_at_us: 5, capture_age_us: 9, payload: &payload };
        assert!(w.push(&frame(1)).is_none());
        assert!(w.push(&frame(2)).is_none());
        let batch = w.push(&frame(3)).expect("third frame completes the batch");
        let mut seqs = Vec::new();
        assert_eq!(parse_program_batch(&batch, |f| seqs.push(f.seq)), Ok(3));
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(w.finish().is_none());
        w.push(&frame(4));
        let short = w.finish().expect("partial batch");
        assert_eq!(parse_program_batch(&short, |_| ()), Ok(1));
    }

    #[test]
    fn capture_time_is_derived_from_age() {
        let f = ProgramFrameView { seq: 0, mixed_at_us: 1_000, capture_age_us: 250, payload: &[1] };
        assert_eq!(f.captured_at_us(), Some(750));
        let none = ProgramFrameView { capture_age_us: NO_CAPTURE, ..f };
        assert_eq!(none.captured_at_us(), None);
    }

    proptest! {
        #[test]
        fn speaker_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let _ = SpeakerFrame::parse(Bytes::from(bytes));
        }

        #[test]
        fn batch_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut n = 0;
            if let Ok(count) = parse_program_batch(&bytes, |_| n += 1) {
                prop_assert_eq!(count, n);
            }
        }

        #[test]
        fn batches_round_trip(
            frames in proptest::collection::vec((any::<u32>(), any::<u64>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 1..200)), 1..20),
            per_batch in 1usize..8,
        ) {
            let mut w = ProgramBatchWriter::new(per_batch);
            let mut batches = Vec::new();
            for (seq, ts, age, payload) in &frames {
                let view = ProgramFrameView { seq: *seq, mixed_at_us: *ts, capture_age_us: *age, payload };
                batches.extend(w.push(&view));
            }
            batches.extend(w.finish());
            let mut got = Vec::new();
            for b in &batches {
                parse_program_batch(b, |f| got.push((f.seq, f.mixed_at_us, f.capture_age_us, f.payload.to_vec())))
                    .expect("own batches parse");
            }
            prop_assert_eq!(got, frames);
        }
    }
}
