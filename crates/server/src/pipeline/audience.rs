//! A space's audience statistics at the edge: the sans-IO accumulator
//! ([`townhall_core::stats::SpaceStats`]) behind a lock, fed by the feed's listener guards (every
//! connected protocol counts through [`ProgramFeed::count_listener`](crate::pipeline::feed::ProgramFeed::count_listener)),
//! by HLS playlist loads, and by the room's hands and reactions, with the wall clock.
//!
//! A join costs one uncontended lock and a few additions (the listener's key is hashed before,
//! by the caller); nothing grows with the audience.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use townhall_core::UnixTime;
use townhall_core::room::Reaction;
use townhall_core::stats::{
    ListenerKey, Protocol, SpaceStats, StatsConfig, StatsReport, UniqueSketch,
};

use crate::clock::now_unix;

/// One space's audience statistics.
#[derive(Debug)]
pub struct Audience {
    stats: Mutex<SpaceStats>,
}

impl Audience {
    /// Counting from now.
    pub fn new() -> Audience {
        Audience { stats: Mutex::new(SpaceStats::new(StatsConfig::default(), now_unix())) }
    }

    /// Starts counting again from now with buckets of `bucket_secs` (before anyone joins).
    pub fn configure(&self, bucket_secs: u64) {
        let config = StatsConfig { bucket_secs, ..StatsConfig::default() };
        *self.lock() = SpaceStats::new(config, now_unix());
    }

    fn lock(&self) -> MutexGuard<'_, SpaceStats> {
        // Every update leaves the statistics whole: a panic elsewhere cannot tear them.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Carries on from statistics saved before a restart (the sessions open then are over).
    pub fn resume(&self, saved: SpaceStats) {
        let mut stats = self.lock();
        let mut resumed = saved.resumed();
        resumed.advance(now_unix());
        *stats = resumed;
    }

    /// A listener joined over `protocol`; returns the time to report their leaving with.
    pub fn joined(&self, protocol: Protocol, key: ListenerKey) -> UnixTime {
        let now = now_unix();
        self.lock().joined(protocol, key, now);
        now
    }

    /// A connected listener who joined at `joined_at` left.
    pub fn left(&self, joined_at: UnixTime) {
        self.lock().left(joined_at, now_unix());
    }

    /// A hand went up.
    pub fn hand_raised(&self) {
        self.lock().hand_raised(now_unix());
    }

    /// The room's reaction tallies of `second`.
    pub fn reacted(&self, second: UnixTime, counts: &BTreeMap<Reaction, u32>) {
        self.lock().reacted(second, counts, now_unix());
    }

    /// The statistics as of now.
    pub fn report(&self) -> StatsReport {
        self.lock().report(now_unix())
    }

    /// A copy to store, accounted up to now.
    pub fn snapshot(&self) -> SpaceStats {
        let mut stats = self.lock();
        stats.advance(now_unix());
        stats.clone()
    }

    /// The unique-listener sketch, for totals across spaces.
    pub fn sketch(&self) -> UniqueSketch {
        self.lock().unique_sketch().clone()
    }
}

impl Default for Audience {
    fn default() -> Self {
        Audience::new()
    }
}
