//! WebRTC for Townhall, sans-IO over [str0m](https://github.com/algesten/str0m).
//!
//! - [`offer`]: what an SDP offer from outside must satisfy before any state is built for it.
//! - [`peer`]: one session carrying one Opus track, either way (server answers, client offers).
//! - [`hub`]: many peers behind one UDP port: demultiplexing, timers, lifetimes.
//!
//! Sockets and threads are the caller's: the server drives a [`Hub`] from its UDP socket; tests
//! and the load generator drive single [`Peer`]s as clients.

pub mod hub;
pub mod offer;
pub mod peer;

pub use hub::{Hub, HubConfig, Outputs, PeerId};
pub use offer::{Intent, OfferError, check_offer};
pub use peer::{
    AudioIn, OPUS_FRAME_TICKS, OutgoingFrame, Peer, PeerConfig, PeerError, PeerEvent,
    shared_certificate,
};
pub use str0m::change::SdpPendingOffer;
pub use str0m::media::Direction;
pub use str0m::net::Transmit;
