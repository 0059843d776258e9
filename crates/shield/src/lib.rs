//! Townhall's shield: the policies that keep a live space on air under crowds and attacks.
//!
//! Sans-IO: every decision takes the current time as an argument, so tests drive time explicitly.
//! - [`gcra`]: one rate limiter (speaker frames, per connection).
//! - [`sketch`]: per-key rate limits and concurrency caps for millions of keys in fixed memory.
//! - [`admission`]: node capacity and the FIFO waiting room.
//! - [`pressure`]: overload from event-loop lag and egress backlog (adaptive admission).
//! - [`classifier`]: crowd or attack, from live signals, with the evidence.
//! - [`client`]: the keys limits are applied to (address, subnet).

pub mod admission;
pub mod classifier;
pub mod client;
pub mod gcra;
pub mod pressure;
pub mod sketch;

pub use admission::{Capacity, Decision, Lane, WaitingRoom, jitter};
pub use classifier::{Classifier, Evidence, Signal, Thresholds, Verdict};
pub use client::{ip_key, subnet_key};
pub use gcra::{Gcra, RateLimited};
pub use pressure::{Pressure, PressureLimits};
pub use sketch::{CountSketch, RateSketch, Slot};
