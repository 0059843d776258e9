//! Townhall's shield: the policies that keep a live space on air under crowds and attacks.
//!
//! Sans-IO: every decision takes the current time as an argument, so tests drive time explicitly.
//! - [`gcra`]: one rate limiter (speaker frames, per connection).
//! - [`sketch`]: per-key rate limits and concurrency caps for millions of keys in fixed memory.
//! - [`admission`]: node capacity and the FIFO waiting room.
//! - [`cluster_line`]: the waiting room across a cluster (two counters per line in a shared
//!   store).
//! - [`pressure`]: overload from event-loop lag and egress backlog (adaptive admission).
//! - [`classifier`]: crowd or attack, from live signals, with the evidence.
//! - [`client`]: the keys limits are applied to (address, subnet).
//! - [`client_addr`]: who the client is behind trusted proxies (`X-Forwarded-For`, PROXY
//!   protocol).
//! - [`replay`]: single-use tokens (proof-of-work solutions, tickets) spent once, in fixed memory.
//! - [`backoff`]: how long a client waits before it tries again (full-jitter exponential).
//! - [`two_choices`]: which serving node the door sends a listener to (power of two choices).

pub mod admission;
pub mod backoff;
pub mod classifier;
pub mod client;
pub mod client_addr;
pub mod cluster_door;
pub mod cluster_line;
pub mod gcra;
pub mod pressure;
pub mod replay;
pub mod sketch;
pub mod two_choices;

pub use admission::{Capacity, Decision, Lane, WaitingRoom, jitter};
pub use backoff::Backoff;
pub use classifier::{Classifier, Evidence, Signal, Thresholds, Verdict};
pub use client::{ip_key, subnet_key};
pub use client_addr::{
    MAX_FORWARDED_BYTES, MAX_FORWARDED_ENTRIES, PROXY_V1_MAX_LEN, PROXY_V2_MAX_LEN,
    PROXY_V2_SIGNATURE, ProxyCommand, ProxyError, ProxyHeader, ProxyParse, ProxyTransport,
    ProxyVersion, TrustedProxies, TrustedProxyError, client_from_forwarded_for, parse_proxy_header,
};
pub use gcra::{Gcra, RateLimited};
pub use pressure::{Pressure, PressureLimits};
pub use replay::ReplayFilter;
pub use sketch::{CountSketch, RateSketch, Slot};
pub use two_choices::{Load, two_choices};
