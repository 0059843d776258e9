//! Townhall's media core: Opus frames, the wire format, per-speaker jitter buffers, the mixer
//! and Ogg/Opus muxing, clips cut from Ogg/Opus streams and speaker turns.
//!
//! Sans-IO: every type here is driven by explicit inputs (frames, ticks, timestamps). The server
//! crate owns the clock, the threads and the sockets.

pub mod analysis;
pub mod civil_time;
pub mod clip;
pub mod cmaf;
pub mod frame;
pub mod hls;
pub mod jitter;
pub mod mixer;
pub mod ogg;
pub mod program_clock;
pub mod recording;
pub mod turns;
pub mod voice;
pub mod wire;

pub use frame::{CHANNELS, FRAME_MS, FRAME_SAMPLES, FrameError, SAMPLE_RATE, check_opus_frame};
pub use jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};
pub use mixer::{Mixer, MixerConfig, MixerError, MixerWork, ProgramFrame, Return, SourceId, Tick};
pub use ogg::{OggOpusMuxer, OggOpusReader, OpusHead};
pub use program_clock::ProgramClock;
pub use voice::{VoiceActivity, VoiceConfig};
pub use wire::{ProgramBatchWriter, ProgramFrameView, SpeakerFrame, WireError};
