//! Live captions for Townhall, without I/O: everything that decides what a caption is and when
//! it is shown, driven by explicit inputs (program frames numbered by the mixer's clock, worker
//! lines, the time now), so its tests run without a process, a socket or a sleep.
//!
//! The server decodes a captioned space's program off the mixer thread and drives these types:
//!
//! ```text
//! program frame (48 kHz) ─► Downsampler ─► Segmenter ─► worker (speech to text, a process)
//!   (seq = program clock)    (16 kHz s16)   (phrases,     │ framed PCM in, JSON lines out
//!                                            voice        ▼ (protocol)
//!                                            activity) Captioner ─► cues (interim, final)
//!                                                        │             on the program clock
//!                                                        └─► webvtt: HLS subtitle segments,
//!                                                                    transcripts
//! ```
//!
//! - [`resample`]: 48 kHz float to 16 kHz 16-bit, what speech engines take.
//! - [`segment`]: voice activity cuts the program into phrases (with a little sound before and
//!   after), so the engine hears speech only and each phrase ends with a final cue.
//! - [`protocol`]: the captions worker protocol (framing of PCM, parsing of its JSON lines,
//!   bounded, never trusting them).
//! - [`cues`]: turns the worker's words into cues timed on the program clock, attributes them to
//!   who was talking, gives up on phrases the worker never finishes, and says up to where
//!   captions are settled.
//! - [`webvtt`]: cues as WebVTT (HLS subtitle segments with `X-TIMESTAMP-MAP`, transcripts) and
//!   as plain text.
//! - [`Slots`]: how many spaces a node captions at once.

pub mod cues;
pub mod protocol;
pub mod resample;
pub mod segment;
pub mod webvtt;

mod slots;

pub use cues::{Captioner, CaptionerConfig, Cue};
pub use protocol::{ProtocolError, WorkerLine};
pub use resample::Downsampler;
pub use segment::{SegmentEvent, Segmenter, SegmenterConfig};
pub use slots::{Slots, SlotsFull};

/// Duration of one program frame: the program clock counts frames of 20 ms.
pub const FRAME_MS: u64 = 20;
/// Sample rate the worker receives.
pub const WORKER_RATE: u32 = 16_000;
/// Samples of one program frame at [`WORKER_RATE`].
pub const WORKER_FRAME: usize = (WORKER_RATE as u64 * FRAME_MS / 1_000) as usize;
