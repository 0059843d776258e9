//! Townhall's shield: the policies that keep a live space on air under crowds and attacks.
//!
//! Sans-IO: every decision takes the current time as an argument, so tests drive time explicitly.
//! This crate starts with the rate limiter that guards speaker ingest; admission control, the
//! waiting room and the crowd/attack classifier build on it.

pub mod gcra;

pub use gcra::{Gcra, RateLimited};
