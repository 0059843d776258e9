//! A space's audience statistics, kept by the node itself (no outside tracker): concurrent
//! listeners over time, unique listeners, listen-minutes, joins by protocol, a retention curve,
//! requests to speak and reactions over time.
//!
//! [`SpaceStats`] is driven by events and an injected clock: a listener joined or left, a hand
//! went up, a second's reactions were tallied. Nothing is sampled: the listener count is a step
//! function, integrated exactly between events into listener-seconds, so the average and the
//! listen-minutes do not depend on how often anyone looks.
//!
//! **Memory is fixed per space**, whatever the crowd: unique listeners go into a 4 KiB
//! HyperLogLog ([`UniqueSketch`]); the time series holds at most
//! [`StatsConfig::max_points`] buckets, each twice as wide once it is full (pairs merged, so a
//! long space keeps its whole run at a coarser grain); durations of listening sessions go into
//! a fixed histogram ([`DURATION_EDGES`]). Nothing is keyed by who listens.
//!
//! **Retention** is the share of listening sessions that lasted at least *t*, for each *t* in
//! [`DURATION_EDGES`] (a survival curve): finished sessions are counted from the histogram,
//! sessions still open by the time since they joined (the start of their bucket: an open
//! session may be counted up to one bucket longer than it has lasted). A session is one
//! connection: a listener who reconnects starts a new one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::room::Reaction;
use crate::time::UnixTime;

mod sketch;

pub use sketch::{ListenerKey, REGISTERS, UniqueSketch};

/// The lower edges, in seconds, of the buckets of the listening-duration histogram (the last
/// is open-ended); also the points of the retention curve.
pub const DURATION_EDGES: [u64; 18] = [
    0, 10, 30, 60, 120, 300, 600, 900, 1_200, 1_800, 2_700, 3_600, 5_400, 7_200, 10_800, 14_400,
    21_600, 43_200,
];

/// How listeners reach a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Opus frames over a WebSocket (the page).
    Ws,
    /// Ogg/Opus over HTTP (players, radio apps).
    Ogg,
    /// WHEP (WebRTC).
    Webrtc,
    /// LL-HLS. It has no connection: a start is a player's first (non-blocking) playlist load
    /// seen by this node; HLS listeners count in joins and unique listeners, not in concurrency.
    Hls,
}

impl Protocol {
    /// Whether listeners of this protocol hold a connection (and so count as concurrent).
    pub fn connected(self) -> bool {
        self != Protocol::Hls
    }
}

/// Joins, by protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joins {
    /// Over WebSocket.
    pub ws: u64,
    /// Over Ogg/HTTP.
    pub ogg: u64,
    /// Over WHEP.
    pub webrtc: u64,
    /// LL-HLS starts.
    pub hls: u64,
}

impl Joins {
    fn slot(&mut self, p: Protocol) -> &mut u64 {
        match p {
            Protocol::Ws => &mut self.ws,
            Protocol::Ogg => &mut self.ogg,
            Protocol::Webrtc => &mut self.webrtc,
            Protocol::Hls => &mut self.hls,
        }
    }

    /// Every join, of every protocol.
    pub fn total(&self) -> u64 {
        self.ws + self.ogg + self.webrtc + self.hls
    }

    fn add(&mut self, other: &Joins) {
        self.ws += other.ws;
        self.ogg += other.ogg;
        self.webrtc += other.webrtc;
        self.hls += other.hls;
    }
}

/// The limits of the time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsConfig {
    /// The width of a bucket at first, in seconds (doubled each time the series is full).
    pub bucket_secs: u64,
    /// The most buckets kept.
    pub max_points: usize,
}

impl Default for StatsConfig {
    /// Ten-second buckets, at most 360: an hour at 10 s, six at 80 s, any length in 360 points.
    fn default() -> Self {
        StatsConfig { bucket_secs: 10, max_points: 360 }
    }
}

/// One bucket of the time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// When it starts.
    pub at: UnixTime,
    /// The most listeners connected at once in it.
    pub peak: u32,
    /// Listener-seconds in it (the average is this over its width).
    pub listener_secs: u64,
    /// Listeners who joined in it (every protocol).
    pub joins: u32,
    /// Reactions sent in it.
    pub reactions: u32,
    /// Hands raised (requests to speak) in it.
    pub hands: u32,
    /// Sessions that joined in it and are still connected (for the retention curve).
    pub open: u32,
}

impl Bucket {
    fn starting(at: UnixTime) -> Bucket {
        Bucket { at, peak: 0, listener_secs: 0, joins: 0, reactions: 0, hands: 0, open: 0 }
    }
}

/// A space's audience statistics: fixed memory, driven by events and the caller's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceStats {
    config: StatsConfig,
    started_at: UnixTime,
    /// Everything is accounted up to here.
    until: UnixTime,
    current: u32,
    peak: u32,
    peak_at: Option<UnixTime>,
    listener_secs: u64,
    joins: Joins,
    unique: UniqueSketch,
    hands: u64,
    reactions: BTreeMap<Reaction, u64>,
    /// Finished sessions by duration, bucketed by [`DURATION_EDGES`].
    durations: [u64; DURATION_EDGES.len()],
    bucket_secs: u64,
    series: Vec<Bucket>,
}

impl SpaceStats {
    /// Statistics of a space that starts at `now`.
    pub fn new(config: StatsConfig, now: UnixTime) -> SpaceStats {
        let config = StatsConfig {
            bucket_secs: config.bucket_secs.max(1),
            max_points: config.max_points.max(2),
        };
        SpaceStats {
            config,
            started_at: now,
            until: now,
            current: 0,
            peak: 0,
            peak_at: None,
            listener_secs: 0,
            joins: Joins::default(),
            unique: UniqueSketch::default(),
            hands: 0,
            reactions: BTreeMap::new(),
            durations: [0; DURATION_EDGES.len()],
            bucket_secs: config.bucket_secs,
            series: vec![Bucket::starting(now)],
        }
    }

    /// Statistics read back after a restart: the sessions that were open when they were last
    /// saved ended then (their connections did not survive the restart), and the count starts
    /// again from nobody.
    pub fn resumed(mut self) -> SpaceStats {
        let at = self.until;
        let open: Vec<(UnixTime, u32)> =
            self.series.iter().map(|b| (b.at, b.open)).filter(|(_, n)| *n > 0).collect();
        for (joined, n) in open {
            let d = at.0.saturating_sub(joined.0);
            self.durations[duration_bucket(d)] += u64::from(n);
        }
        self.series.iter_mut().for_each(|b| b.open = 0);
        self.current = 0;
        self
    }

    /// Accounts time up to `now` (earlier times are taken as the latest seen: the clock may
    /// step back, the accounting does not).
    pub fn advance(&mut self, now: UnixTime) {
        let now = now.max(self.until);
        loop {
            let width = self.bucket_secs;
            let current = self.current;
            let Some(last) = self.series.last_mut() else {
                self.series.push(Bucket::starting(self.until));
                continue;
            };
            let end = last.at.plus(width);
            let stop = now.min(end);
            let secs = stop.0.saturating_sub(self.until.0);
            let listened = u64::from(current).saturating_mul(secs);
            last.listener_secs = last.listener_secs.saturating_add(listened);
            self.listener_secs = self.listener_secs.saturating_add(listened);
            self.until = stop;
            if now < end {
                return;
            }
            self.series.push(Bucket { peak: current, ..Bucket::starting(end) });
            if self.series.len() > self.config.max_points {
                self.downsample();
            }
        }
    }

    /// Merges buckets pairwise: half as many, twice as wide.
    fn downsample(&mut self) {
        let merged: Vec<Bucket> = self
            .series
            .chunks(2)
            .map(|pair| {
                pair.iter().skip(1).fold(pair[0], |a, b| Bucket {
                    at: a.at,
                    peak: a.peak.max(b.peak),
                    listener_secs: a.listener_secs.saturating_add(b.listener_secs),
                    joins: a.joins.saturating_add(b.joins),
                    reactions: a.reactions.saturating_add(b.reactions),
                    hands: a.hands.saturating_add(b.hands),
                    open: a.open.saturating_add(b.open),
                })
            })
            .collect();
        self.series = merged;
        self.bucket_secs = self.bucket_secs.saturating_mul(2);
    }

    /// The bucket holding `at` (the first, for times before it).
    fn bucket_of(&mut self, at: UnixTime) -> Option<&mut Bucket> {
        let i = self.series.partition_point(|b| b.at <= at).saturating_sub(1);
        self.series.get_mut(i)
    }

    /// A listener identified by `key` joined over `protocol` at `now`. For connected
    /// protocols the caller reports the session's end with [`SpaceStats::left`], passing `now`
    /// as it joined.
    pub fn joined(&mut self, protocol: Protocol, key: ListenerKey, now: UnixTime) {
        self.advance(now);
        *self.joins.slot(protocol) += 1;
        self.unique.insert(key);
        let connected = protocol.connected();
        if connected {
            self.current = self.current.saturating_add(1);
            if self.current > self.peak {
                self.peak = self.current;
                self.peak_at = Some(self.until);
            }
        }
        let current = self.current;
        if let Some(b) = self.series.last_mut() {
            b.joins = b.joins.saturating_add(1);
            b.peak = b.peak.max(current);
            if connected {
                b.open = b.open.saturating_add(1);
            }
        }
    }

    /// A connected listener who joined at `joined_at` left at `now`.
    pub fn left(&mut self, joined_at: UnixTime, now: UnixTime) {
        self.advance(now);
        self.current = self.current.saturating_sub(1);
        let d = self.until.0.saturating_sub(joined_at.0);
        self.durations[duration_bucket(d)] += 1;
        // A session from before a restart was already closed by `resumed`.
        if joined_at >= self.started_at
            && let Some(b) = self.bucket_of(joined_at)
        {
            b.open = b.open.saturating_sub(1);
        }
    }

    /// Someone raised their hand (asked to speak) at `now`.
    pub fn hand_raised(&mut self, now: UnixTime) {
        self.advance(now);
        self.hands += 1;
        if let Some(b) = self.series.last_mut() {
            b.hands = b.hands.saturating_add(1);
        }
    }

    /// The reactions of the second `second` (tallied by the room), reported at `now`.
    pub fn reacted(&mut self, second: UnixTime, counts: &BTreeMap<Reaction, u32>, now: UnixTime) {
        self.advance(now);
        let n: u32 = counts.values().fold(0u32, |a, c| a.saturating_add(*c));
        for (kind, c) in counts {
            *self.reactions.entry(*kind).or_default() += u64::from(*c);
        }
        if let Some(b) = self.bucket_of(second.min(self.until)) {
            b.reactions = b.reactions.saturating_add(n);
        }
    }

    /// The unique-listener sketch (operators merge them across spaces).
    pub fn unique_sketch(&self) -> &UniqueSketch {
        &self.unique
    }

    /// Until when everything is accounted.
    pub fn updated_at(&self) -> UnixTime {
        self.until
    }

    /// Listeners connected now.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// The statistics as reported, accounted up to `now`.
    pub fn report(&mut self, now: UnixTime) -> StatsReport {
        self.advance(now);
        let elapsed = self.until.0.saturating_sub(self.started_at.0);
        let open: u64 = self.series.iter().map(|b| u64::from(b.open)).sum();
        let finished: u64 = self.durations.iter().sum();
        let sessions = open + finished;
        let retention = DURATION_EDGES
            .iter()
            .enumerate()
            .take_while(|(i, e)| *i == 0 || **e <= elapsed.max(1))
            .map(|(i, &after)| {
                let done: u64 = self.durations[i..].iter().sum();
                let still: u64 = self
                    .series
                    .iter()
                    .filter(|b| self.until.0.saturating_sub(b.at.0) >= after)
                    .map(|b| u64::from(b.open))
                    .sum();
                let share =
                    if sessions == 0 { 0.0 } else { (done + still) as f64 / sessions as f64 };
                RetentionPoint { after_secs: after, share }
            })
            .collect();
        let width = self.bucket_secs;
        let until = self.until;
        let series = self
            .series
            .iter()
            .map(|b| {
                let secs = until.0.saturating_sub(b.at.0).min(width);
                // A bucket begun this very second has no time yet: its level is its peak.
                let average = if secs == 0 {
                    f64::from(b.peak)
                } else {
                    b.listener_secs as f64 / secs as f64
                };
                SeriesPoint {
                    at: b.at,
                    peak: b.peak,
                    average: round2(average),
                    joins: b.joins,
                    reactions: b.reactions,
                    requests_to_speak: b.hands,
                }
            })
            .collect();
        StatsReport {
            started_at: self.started_at,
            updated_at: self.until,
            listeners: ListenerStats {
                now: self.current,
                peak: self.peak,
                peak_at: self.peak_at,
                average: round2(self.listener_secs as f64 / elapsed.max(1) as f64),
                unique: self.unique.estimate(),
            },
            listen_minutes: round2(self.listener_secs as f64 / 60.0),
            sessions,
            joins: self.joins,
            requests_to_speak: self.hands,
            reactions: ReactionStats {
                total: self.reactions.values().sum(),
                by_kind: self.reactions.clone(),
            },
            bucket_secs: width,
            series,
            retention,
        }
    }
}

fn duration_bucket(secs: u64) -> usize {
    DURATION_EDGES.partition_point(|e| *e <= secs).saturating_sub(1)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Listener numbers of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerStats {
    /// Connected now.
    pub now: u32,
    /// The most connected at once.
    pub peak: u32,
    /// When that was first reached.
    pub peak_at: Option<UnixTime>,
    /// Connected on average since the start (listener-seconds over seconds).
    pub average: f64,
    /// Distinct listeners (estimated: within about 2%; exact for small audiences).
    pub unique: u64,
}

/// Reactions of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReactionStats {
    /// Every reaction.
    pub total: u64,
    /// By kind (the emoji).
    pub by_kind: BTreeMap<Reaction, u64>,
}

/// One point of the reported time series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// The bucket's start.
    pub at: UnixTime,
    /// The most listeners connected at once in it.
    pub peak: u32,
    /// Listeners connected on average in it.
    pub average: f64,
    /// Joins in it.
    pub joins: u32,
    /// Reactions in it.
    pub reactions: u32,
    /// Hands raised in it.
    pub requests_to_speak: u32,
}

/// One point of the retention curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionPoint {
    /// Seconds since joining.
    pub after_secs: u64,
    /// The share (0 to 1) of listening sessions that lasted at least that long.
    pub share: f64,
}

/// A space's statistics as the API shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// When counting started (the space went live on this node).
    pub started_at: UnixTime,
    /// Accounted up to here.
    pub updated_at: UnixTime,
    /// Concurrent and unique listeners.
    pub listeners: ListenerStats,
    /// Listener-minutes (every connected listener's time, summed).
    pub listen_minutes: f64,
    /// Listening sessions (connections) counted in the retention curve.
    pub sessions: u64,
    /// Joins by protocol.
    pub joins: Joins,
    /// Hands raised.
    pub requests_to_speak: u64,
    /// Reactions.
    pub reactions: ReactionStats,
    /// The width of each point of `series`, in seconds.
    pub bucket_secs: u64,
    /// Listeners, joins, reactions and requests over time, oldest first.
    pub series: Vec<SeriesPoint>,
    /// Share of sessions still listening after each duration.
    pub retention: Vec<RetentionPoint>,
}

/// Statistics summed across spaces (the operators' view).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatsTotals {
    /// Spaces counted.
    pub spaces: u64,
    /// Listeners connected now, on every space.
    pub listeners_now: u64,
    /// The highest peak of any one space.
    pub largest_peak: u32,
    /// Distinct listeners across every space counted (a listener of two spaces counts once).
    pub unique_listeners: u64,
    /// Listener-minutes, summed.
    pub listen_minutes: f64,
    /// Joins by protocol, summed.
    pub joins: Joins,
    /// Hands raised, summed.
    pub requests_to_speak: u64,
    /// Reactions, summed.
    pub reactions: u64,
}

/// Sums statistics across spaces; unique listeners through the union of their sketches.
#[derive(Debug, Default)]
pub struct TotalsBuilder {
    totals: StatsTotals,
    unique: UniqueSketch,
}

impl TotalsBuilder {
    /// Counts one space, whose report is `report` and sketch `sketch`.
    pub fn add(&mut self, report: &StatsReport, sketch: &UniqueSketch) {
        let t = &mut self.totals;
        t.spaces += 1;
        t.listeners_now += u64::from(report.listeners.now);
        t.largest_peak = t.largest_peak.max(report.listeners.peak);
        t.listen_minutes = round2(t.listen_minutes + report.listen_minutes);
        t.joins.add(&report.joins);
        t.requests_to_speak += report.requests_to_speak;
        t.reactions += report.reactions.total;
        self.unique.merge(sketch);
    }

    /// The totals.
    pub fn finish(mut self) -> StatsTotals {
        self.totals.unique_listeners = self.unique.estimate();
        self.totals
    }
}

#[cfg(test)]
mod tests;
