//! The media pipeline: the engine that mixes each space on its clock, the program feeds and
//! their fan-out to listener sockets, the WebRTC loop, the HLS store and the recording tap. It
//! knows nothing of HTTP or of the application's rules: the layers above hand it seats, sinks
//! and watchers through narrow types ([`fanout::EgressWatch`], [`rtc::SpeakerSink`]), and the engine hands
//! each program frame to its egresses through one, [`sinks::ProgramSink`].
//!
//! Arrows run one way: `http` → `app` → `pipeline` → the libraries.

pub mod audience;
pub mod captions;
pub mod engine;
pub mod events;
pub mod fanout;
pub mod feed;
pub mod hls_store;
pub mod net;
pub mod placement;
pub mod program;
pub mod record_tap;
pub mod rtc;
pub mod secure;
pub mod sinks;
pub mod space_mix;
pub mod talking;
pub(crate) mod udp_out;
