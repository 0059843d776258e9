//! `townhall-client`: the client side of Townhall's protocols, shared by the load generator
//! (`townhall-load`) and the server's integration tests.
//!
//! - [`target`]: where traffic goes. A [`Target`](target::Target) is loopback only, by
//!   construction: 127.0.0.0/8 or ::1, and every source address it hands out is loopback too.
//! - [`http`]: just enough HTTP/1.1 and WebSocket over raw sockets, with reused buffers.
//! - [`conn`]: a connection, plain or TLS (when the target was given the CA to trust).
//! - [`rtc_client`]: a WHIP/WHEP client on the server's own WebRTC stack (`townhall-webrtc`).
//!
//! Every connection this crate opens starts from a [`Target`](target::Target), so it only ever
//! sends traffic to loopback. It exists as its own crate so that the server's tests can use
//! these clients without depending on `townhall-load`, which itself dev-depends on the server.

pub mod conn;
pub mod http;
pub mod rtc_client;
pub mod target;
