//! Crowd or attack: a live verdict on the traffic, with the evidence behind it.
//!
//! A flash crowd and an attack both look like "a lot of requests". What tells them apart:
//! - **junk share**: of the requests the rate limits let through, those refused as malformed,
//!   unauthorised or unknown. Requests refused only for being over a limit (`429`) are not junk
//!   by themselves: a crowd behind one NAT is throttled too. The limiter is a sampler: what it lets
//!   through shows what the traffic is made of;
//! - **throttling without progress**: mostly throttled traffic whose requests that get through
//!   neither join nor listen (a bot hammering valid pages) is an attack; a throttled crowd still
//!   joins and listens with what gets through;
//! - **completion**: of the listeners who connected, how many stayed (a crowd stays to listen;
//!   bots hit and leave);
//! - **concentration**: how much of the traffic comes from the busiest subnet (a crowd usually
//!   comes from everywhere). Concentration alone is not an attack: a campus, an office or a
//!   carrier NAT sends a whole crowd from one /24, and those listeners join and stay. It tips the
//!   verdict only together with some junk or weak staying.
//!
//! Signals are counted in one-second buckets over a sliding window; the verdict changes only after
//! it has held for a few seconds (hysteresis), so it does not flap. Sans-IO: time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What happened, as the classifier counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A request arrived from this subnet key.
    Request(u128),
    /// A request was refused as junk (malformed, unauthorised, unknown).
    Junk,
    /// A request was refused for being over a rate limit or connection cap (`429`).
    Throttled,
    /// A join was admitted or queued.
    Join,
    /// A listener connected to a stream.
    Listen,
    /// A listener left soon after connecting.
    Bounce,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Ordinary traffic.
    Normal,
    /// Many real listeners at once.
    FlashCrowd,
    /// Traffic that is mostly junk, concentrated, or does not stay to listen.
    Attack,
}

impl Verdict {
    /// The verdict's name as reported.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Normal => "normal",
            Verdict::FlashCrowd => "flash_crowd",
            Verdict::Attack => "attack",
        }
    }
}

/// The figures a verdict rests on (per second, over the window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// Requests per second.
    pub requests_per_s: f64,
    /// Share of the requests let through the limits that were refused as junk (0 to 1).
    pub junk_share: f64,
    /// Share of requests refused for being over a limit (0 to 1).
    pub throttled_share: f64,
    /// Joins and listens per request let through the limits (0 to 1): what a crowd does with
    /// what gets through.
    pub progress_share: f64,
    /// Joins per second.
    pub joins_per_s: f64,
    /// Listeners connecting per second.
    pub listens_per_s: f64,
    /// Share of connecting listeners that stayed (0 to 1; 1 when none connected).
    pub stay_share: f64,
    /// Share of requests from the busiest subnet (0 to 1).
    pub top_subnet_share: f64,
}

/// Thresholds of the classifier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Below this many requests per second, traffic is normal whatever its mix.
    pub busy_requests_per_s: f64,
    /// Above this junk share, a busy node is under attack.
    pub junk_share: f64,
    /// Above this share from one subnet, a busy node is under attack.
    pub top_subnet_share: f64,
    /// Below this share of listeners staying, a busy node is under attack.
    pub min_stay_share: f64,
    /// Above this share of throttled requests, traffic that makes too little progress (below
    /// `min_progress_share`) is an attack.
    pub throttled_share: f64,
    /// Joins and listens per request let through, below which mostly throttled traffic is an
    /// attack.
    pub min_progress_share: f64,
    /// A new verdict must hold this long before it is reported.
    pub hold: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            busy_requests_per_s: 100.0,
            junk_share: 0.3,
            top_subnet_share: 0.3,
            min_stay_share: 0.3,
            throttled_share: 0.5,
            min_progress_share: 0.1,
            hold: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    requests: u64,
    junk: u64,
    throttled: u64,
    joins: u64,
    listens: u64,
    bounces: u64,
}

/// Heavy hitters by the Space-Saving algorithm: `K` counters find every key above 1/K of the
/// traffic, in fixed memory.
#[derive(Debug, Clone, Default)]
struct TopK {
    counters: Vec<(u128, u64)>,
}

const TOP_K: usize = 32;

impl TopK {
    fn add(&mut self, key: u128) {
        if let Some(c) = self.counters.iter_mut().find(|(k, _)| *k == key) {
            c.1 += 1;
        } else if self.counters.len() < TOP_K {
            self.counters.push((key, 1));
        } else if let Some(min) = self.counters.iter_mut().min_by_key(|(_, n)| *n) {
            *min = (key, min.1 + 1);
        }
    }

    /// The busiest key's share of `total`.
    fn share(&self, total: u64) -> f64 {
        let top = self.counters.iter().map(|(_, n)| *n).max().unwrap_or(0);
        if total == 0 { 0.0 } else { (top as f64 / total as f64).min(1.0) }
    }

    fn clear(&mut self) {
        self.counters.clear();
    }
}

/// The classifier of one node.
#[derive(Debug, Clone)]
pub struct Classifier {
    thresholds: Thresholds,
    window: usize,
    buckets: VecDeque<Bucket>,
    /// Start of the newest bucket.
    bucket_start: Option<Instant>,
    top: TopK,
    top_total: u64,
    /// Seconds counted in the current concentration window.
    seconds_in_top: usize,
    /// The busiest subnet's share in the last full window.
    last_top_share: f64,
    reported: Verdict,
    candidate: (Verdict, Option<Instant>),
}

impl Classifier {
    /// A classifier over a `window` of one-second buckets.
    pub fn new(thresholds: Thresholds, window: usize) -> Classifier {
        Classifier {
            thresholds,
            window: window.max(1),
            buckets: VecDeque::from(vec![Bucket::default()]),
            bucket_start: None,
            top: TopK::default(),
            top_total: 0,
            seconds_in_top: 0,
            last_top_share: 0.0,
            reported: Verdict::Normal,
            candidate: (Verdict::Normal, None),
        }
    }

    fn roll(&mut self, now: Instant) {
        let start = *self.bucket_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start).as_secs() as usize;
        if elapsed == 0 {
            return;
        }
        for _ in 0..elapsed.min(self.window) {
            self.buckets.push_back(Bucket::default());
            if self.buckets.len() > self.window {
                self.buckets.pop_front();
            }
        }
        self.bucket_start = Some(start + Duration::from_secs(elapsed as u64));
        // Concentration is counted per window: at each window's end, keep its share and restart.
        self.seconds_in_top += elapsed;
        if self.seconds_in_top >= self.window {
            self.last_top_share = self.top.share(self.top_total);
            self.top.clear();
            self.top_total = 0;
            self.seconds_in_top = 0;
        }
    }

    /// Counts a signal at `now`.
    pub fn observe(&mut self, now: Instant, signal: Signal) {
        self.roll(now);
        let Some(b) = self.buckets.back_mut() else { return };
        match signal {
            Signal::Request(subnet) => {
                b.requests += 1;
                self.top.add(subnet);
                self.top_total += 1;
            }
            Signal::Junk => b.junk += 1,
            Signal::Throttled => b.throttled += 1,
            Signal::Join => b.joins += 1,
            Signal::Listen => b.listens += 1,
            Signal::Bounce => b.bounces += 1,
        }
    }

    /// The figures over the window at `now`.
    pub fn evidence(&mut self, now: Instant) -> Evidence {
        self.roll(now);
        let secs = self.buckets.len() as f64;
        let sum = self.buckets.iter().fold(Bucket::default(), |a, b| Bucket {
            requests: a.requests + b.requests,
            junk: a.junk + b.junk,
            throttled: a.throttled + b.throttled,
            joins: a.joins + b.joins,
            listens: a.listens + b.listens,
            bounces: a.bounces + b.bounces,
        });
        let share = |part: u64, whole: u64| {
            if whole == 0 { 0.0 } else { (part as f64 / whole as f64).min(1.0) }
        };
        let served = sum.requests.saturating_sub(sum.throttled);
        Evidence {
            requests_per_s: sum.requests as f64 / secs,
            junk_share: share(sum.junk, served),
            throttled_share: share(sum.throttled, sum.requests),
            progress_share: if served == 0 { 0.0 } else { share(sum.joins + sum.listens, served) },
            joins_per_s: sum.joins as f64 / secs,
            listens_per_s: sum.listens as f64 / secs,
            stay_share: if sum.listens == 0 { 1.0 } else { 1.0 - share(sum.bounces, sum.listens) },
            // The current window once it has enough requests to say anything, else the last one.
            top_subnet_share: if self.top_total >= 100 {
                self.top.share(self.top_total)
            } else {
                self.last_top_share
            },
        }
    }

    /// What the evidence says right now, before hysteresis.
    pub fn judge(&self, e: &Evidence) -> Verdict {
        let t = &self.thresholds;
        if e.requests_per_s < t.busy_requests_per_s {
            return Verdict::Normal;
        }
        // Concentrated traffic is suspicious, not damning: with little junk and listeners who
        // stay, it is a crowd behind one NAT.
        let concentrated = e.top_subnet_share > t.top_subnet_share
            && (e.junk_share > t.junk_share / 3.0 || e.stay_share < t.min_stay_share * 2.0);
        // Mostly refused for its rate, and what gets through neither joins nor listens.
        let hammering =
            e.throttled_share > t.throttled_share && e.progress_share < t.min_progress_share;
        if e.junk_share > t.junk_share
            || concentrated
            || hammering
            || e.stay_share < t.min_stay_share
        {
            return Verdict::Attack;
        }
        Verdict::FlashCrowd
    }

    /// The reported verdict at `now` (a change is reported once it has held for `hold`), with
    /// the evidence, and whether it just changed.
    pub fn verdict(&mut self, now: Instant) -> (Verdict, Evidence, bool) {
        let evidence = self.evidence(now);
        let judged = self.judge(&evidence);
        if judged == self.reported {
            self.candidate = (judged, None);
            return (self.reported, evidence, false);
        }
        let since = match self.candidate {
            (v, Some(since)) if v == judged => since,
            _ => {
                self.candidate = (judged, Some(now));
                now
            }
        };
        if now.saturating_duration_since(since) >= self.thresholds.hold {
            self.reported = judged;
            self.candidate = (judged, None);
            return (judged, evidence, true);
        }
        (self.reported, evidence, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(
        c: &mut Classifier,
        t0: Instant,
        secs: u64,
        per_sec: impl Fn(u64) -> Vec<Signal>,
    ) -> Vec<Verdict> {
        (0..secs)
            .map(|s| {
                let now = t0 + Duration::from_secs(s);
                for sig in per_sec(s) {
                    c.observe(now, sig);
                }
                c.verdict(now + Duration::from_millis(999)).0
            })
            .collect()
    }

    fn classifier() -> Classifier {
        Classifier::new(Thresholds::default(), 5)
    }

    /// Many subnets, valid joins, listeners stay.
    fn crowd(_: u64) -> Vec<Signal> {
        (0..400u128).flat_map(|i| [Signal::Request(i), Signal::Join, Signal::Listen]).collect()
    }

    /// Junk from few subnets.
    fn flood(_: u64) -> Vec<Signal> {
        (0..1000u128).flat_map(|i| [Signal::Request(i % 3), Signal::Junk]).collect()
    }

    #[test]
    fn quiet_traffic_is_normal() {
        let mut c = classifier();
        let v = drive(&mut c, Instant::now(), 10, |_| vec![Signal::Request(1), Signal::Junk]);
        assert!(v.iter().all(|v| *v == Verdict::Normal));
    }

    #[test]
    fn a_crowd_is_a_crowd_and_a_flood_is_an_attack_after_the_hold() {
        let t0 = Instant::now();
        let mut c = classifier();
        let v = drive(&mut c, t0, 8, crowd);
        assert_eq!(v[0], Verdict::Normal, "not before the hold");
        assert_eq!(*v.last().expect("verdicts"), Verdict::FlashCrowd);
        let mut c = classifier();
        let v = drive(&mut c, t0, 8, flood);
        assert_eq!(*v.last().expect("verdicts"), Verdict::Attack);
        let (_, e, _) = c.verdict(t0 + Duration::from_secs(8));
        assert!(e.junk_share > 0.9 && e.top_subnet_share > 0.3, "{e:?}");
    }

    #[test]
    fn a_campus_crowd_from_one_subnet_is_a_crowd_and_a_concentrated_flood_is_not() {
        // Everyone behind one NAT: clean joins, listeners stay.
        let campus = |_| {
            (0..400u128).flat_map(|_| [Signal::Request(7), Signal::Join, Signal::Listen]).collect()
        };
        let mut c = classifier();
        let v = drive(&mut c, Instant::now(), 8, campus);
        assert_eq!(*v.last().expect("verdicts"), Verdict::FlashCrowd);
        // The same concentration with a fifth of it junk is an attack.
        let dirty = |_| {
            (0..400u128)
                .flat_map(|i| {
                    let mut s = vec![Signal::Request(7), Signal::Join, Signal::Listen];
                    if i % 5 == 0 {
                        s.push(Signal::Junk);
                    }
                    s
                })
                .collect()
        };
        let mut c = classifier();
        let v = drive(&mut c, Instant::now(), 8, dirty);
        assert_eq!(*v.last().expect("verdicts"), Verdict::Attack);
    }

    #[test]
    fn a_throttled_campus_crowd_is_a_crowd_and_throttled_hammering_is_an_attack() {
        // One NAT, over its subnet's budget: half of the requests are refused with 429, the rest
        // join or connect to listen, and stay.
        let campus = |_| {
            (0..400u128)
                .flat_map(|i| match i % 4 {
                    0 => vec![Signal::Request(7), Signal::Join],
                    1 => vec![Signal::Request(7), Signal::Listen],
                    _ => vec![Signal::Request(7), Signal::Throttled],
                })
                .collect()
        };
        let mut c = classifier();
        let v = drive(&mut c, Instant::now(), 8, campus);
        assert_eq!(*v.last().expect("verdicts"), Verdict::FlashCrowd);
        let (_, e, _) = c.verdict(Instant::now() + Duration::from_secs(8));
        assert!(e.throttled_share > 0.4 && e.junk_share == 0.0, "{e:?}");
        // Valid requests hammered from a few addresses: mostly throttled, nobody joins.
        let hammer = |_| {
            (0..1000u128)
                .flat_map(|i| {
                    let mut s = vec![Signal::Request(i % 3)];
                    if i % 10 != 0 {
                        s.push(Signal::Throttled);
                    }
                    s
                })
                .collect()
        };
        let mut c = classifier();
        let v = drive(&mut c, Instant::now(), 8, hammer);
        assert_eq!(*v.last().expect("verdicts"), Verdict::Attack);
        // Junk hidden behind throttling: of what gets through, most is junk.
        let hidden = |_| {
            (0..1000u128)
                .flat_map(|i| {
                    let refusal = if i % 3 == 0 { Signal::Junk } else { Signal::Throttled };
                    [Signal::Request(i), refusal]
                })
                .chain((0..200u128).flat_map(|i| [Signal::Request(i), Signal::Join]))
                .collect()
        };
        let mut c = classifier();
        let v = drive(&mut c, Instant::now(), 8, hidden);
        assert_eq!(*v.last().expect("verdicts"), Verdict::Attack);
    }

    #[test]
    fn listeners_who_do_not_stay_look_like_an_attack() {
        let mut c = classifier();
        let v = drive(&mut c, Instant::now(), 8, |_| {
            (0..400u128)
                .flat_map(|i| [Signal::Request(i), Signal::Join, Signal::Listen, Signal::Bounce])
                .collect()
        });
        assert_eq!(*v.last().expect("verdicts"), Verdict::Attack);
    }

    #[test]
    fn the_verdict_follows_the_traffic_back() {
        let t0 = Instant::now();
        let mut c = classifier();
        let v = drive(&mut c, t0, 20, |s| if s < 8 { flood(s) } else { crowd(s) });
        assert_eq!(v[7], Verdict::Attack);
        assert_eq!(v[19], Verdict::FlashCrowd);
    }
}
