//! The delivery queue: receivers go down, time out and come back, and a node must neither lose
//! what it owes them nor grow without bound while they are away.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use super::WebhookEnvelope;

/// How the [`Outbox`] queues and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Most events queued (undelivered to at least one endpoint); when full, the oldest is
    /// dropped to make room.
    pub capacity: usize,
    /// Attempts per endpoint (the first included) before an event is dropped for it.
    pub max_attempts: u32,
    /// Delay after the first failed attempt, ms; it doubles with each failure...
    pub retry_base_ms: u64,
    /// ...up to this, ms.
    pub retry_cap_ms: u64,
    /// Requests in flight to one endpoint at once.
    pub max_in_flight: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            capacity: 1_000,
            max_attempts: 8,
            retry_base_ms: 1_000,
            retry_cap_ms: 60_000,
            max_in_flight: 8,
        }
    }
}

/// The delay before the next attempt after `attempt` (1 for the first) failed, ms:
/// `base · 2^(attempt-1)`, plus up to a quarter of that as jitter (`jitter` / 1024 of it),
/// capped at `cap`. Non-decreasing in `attempt` whatever the jitter, and never above `cap`.
pub fn backoff_ms(base_ms: u64, cap_ms: u64, attempt: u32, jitter: u8) -> u64 {
    let shift = attempt.saturating_sub(1).min(63);
    let delay = base_ms.checked_shl(shift).filter(|d| d >> shift == base_ms).unwrap_or(u64::MAX);
    let delay = delay.min(cap_ms);
    let jitter_ms = (u128::from(delay) * u128::from(jitter) / 1024) as u64;
    delay.saturating_add(jitter_ms).min(cap_ms)
}

/// Names one attempt to deliver one event to one endpoint, for reporting its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryId {
    seq: u64,
    endpoint: usize,
    attempt: u32,
}

impl DeliveryId {
    /// The endpoint's index (in the order the outbox was given them).
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }
}

/// One request to make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Report the outcome with this.
    pub id: DeliveryId,
    /// The endpoint's index.
    pub endpoint: usize,
    /// The event's id.
    pub event_id: Arc<str>,
    /// The JSON body, the same bytes on every attempt.
    pub body: Arc<[u8]>,
    /// Which attempt this is for this endpoint (1 for the first).
    pub attempt: u32,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It will be tried again at this time (ms).
    Retry {
        /// When.
        at_ms: u64,
    },
    /// That was the last attempt: dropped for this endpoint.
    Dropped,
    /// The delivery was not in flight (its event was dropped meanwhile, or it was reported).
    Unknown,
}

/// An event dropped to make room for a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// Its id.
    pub event_id: Arc<str>,
    /// Endpoints it had not been delivered to (some may have been in flight and arrive yet).
    pub undelivered: usize,
}

/// What an outbox has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Events queued.
    pub pushed: u64,
    /// Deliveries (event × endpoint) that succeeded.
    pub delivered: u64,
    /// Failed attempts that will be retried.
    pub retried: u64,
    /// Deliveries given up after the last attempt failed.
    pub dropped_attempts: u64,
    /// Deliveries lost because their event was dropped from a full queue.
    pub dropped_full: u64,
    /// Events dropped from a full queue.
    pub evicted: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetState {
    Waiting,
    InFlight,
    Done,
}

#[derive(Debug, Clone)]
struct Target {
    attempts: u32,
    next_at_ms: u64,
    state: TargetState,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    event_id: Arc<str>,
    body: Arc<[u8]>,
    targets: Vec<Target>,
}

impl Entry {
    fn undelivered(&self) -> usize {
        self.targets.iter().filter(|t| t.state != TargetState::Done).count()
    }
}

/// The delivery queue: every event goes to every endpoint, each endpoint on its own schedule
/// (an endpoint that is down does not hold back the others). Bounded; failed attempts are
/// retried with capped exponential backoff and jitter, up to a number of attempts.
///
/// Drive it with [`push`](Outbox::push) when something happens, [`due`](Outbox::due) when
/// [`next_wake`](Outbox::next_wake) comes (or after a push or a result), and report each
/// delivery's outcome with [`succeeded`](Outbox::succeeded) or [`failed`](Outbox::failed).
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    endpoints: usize,
    queue: VecDeque<Entry>,
    in_flight: Vec<usize>,
    /// In-flight deliveries of events dropped from a full queue (their slot is freed when they
    /// report).
    orphans: HashSet<DeliveryId>,
    next_seq: u64,
    rng: u64,
    stats: OutboxStats,
}

impl Outbox {
    /// An empty outbox for `endpoints` receivers; `jitter_seed` makes the jitter (any value,
    /// e.g. random in production, fixed in tests).
    pub fn new(config: OutboxConfig, endpoints: usize, jitter_seed: u64) -> Outbox {
        Outbox {
            config: OutboxConfig {
                capacity: config.capacity.max(1),
                max_attempts: config.max_attempts.max(1),
                max_in_flight: config.max_in_flight.max(1),
                ..config
            },
            endpoints,
            queue: VecDeque::new(),
            in_flight: vec![0; endpoints],
            orphans: HashSet::new(),
            next_seq: 0,
            // xorshift must not start at zero.
            rng: jitter_seed | 1,
            stats: OutboxStats::default(),
        }
    }

    /// Queues an event for every endpoint, due at once. When the queue is full the oldest event
    /// is dropped first and returned.
    pub fn push(&mut self, envelope: &WebhookEnvelope, now_ms: u64) -> Option<Evicted> {
        self.push_body(Arc::from(envelope.id.as_str()), Arc::from(envelope.to_json()), now_ms)
    }

    /// [`push`](Outbox::push) of an already serialised body.
    pub fn push_body(
        &mut self,
        event_id: Arc<str>,
        body: Arc<[u8]>,
        now_ms: u64,
    ) -> Option<Evicted> {
        if self.endpoints == 0 {
            return None;
        }
        let evicted = if self.queue.len() >= self.config.capacity {
            self.queue.pop_front().map(|old| self.evict(old))
        } else {
            None
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let target = Target { attempts: 0, next_at_ms: now_ms, state: TargetState::Waiting };
        self.queue.push_back(Entry { seq, event_id, body, targets: vec![target; self.endpoints] });
        self.stats.pushed += 1;
        evicted
    }

    fn evict(&mut self, old: Entry) -> Evicted {
        for (endpoint, t) in old.targets.iter().enumerate() {
            if t.state == TargetState::InFlight {
                self.orphans.insert(DeliveryId { seq: old.seq, endpoint, attempt: t.attempts });
            }
        }
        let undelivered = old.undelivered();
        self.stats.evicted += 1;
        self.stats.dropped_full += undelivered as u64;
        Evicted { event_id: old.event_id, undelivered }
    }

    /// The attempts to make now, oldest events first, at most `max_in_flight` per endpoint
    /// counting those already out. Each is in flight until reported.
    pub fn due(&mut self, now_ms: u64) -> Vec<Delivery> {
        let mut out = Vec::new();
        let max = self.config.max_in_flight;
        for entry in &mut self.queue {
            if self.in_flight.iter().all(|&n| n >= max) {
                break;
            }
            for (endpoint, t) in entry.targets.iter_mut().enumerate() {
                if t.state == TargetState::Waiting
                    && t.next_at_ms <= now_ms
                    && self.in_flight[endpoint] < max
                {
                    t.state = TargetState::InFlight;
                    t.attempts += 1;
                    self.in_flight[endpoint] += 1;
                    out.push(Delivery {
                        id: DeliveryId { seq: entry.seq, endpoint, attempt: t.attempts },
                        endpoint,
                        event_id: entry.event_id.clone(),
                        body: entry.body.clone(),
                        attempt: t.attempts,
                    });
                }
            }
        }
        out
    }

    /// When [`due`](Outbox::due) will next have something (ms; possibly already past), or
    /// `None` if nothing waits that could be sent (empty, or every waiting delivery's endpoint
    /// has its in-flight limit out: a report frees it).
    pub fn next_wake(&self) -> Option<u64> {
        let max = self.config.max_in_flight;
        self.queue
            .iter()
            .flat_map(|e| e.targets.iter().enumerate())
            .filter(|(endpoint, t)| {
                t.state == TargetState::Waiting && self.in_flight[*endpoint] < max
            })
            .map(|(_, t)| t.next_at_ms)
            .min()
    }

    fn target(&mut self, id: DeliveryId) -> Option<(usize, &mut Target)> {
        let index = self.queue.binary_search_by_key(&id.seq, |e| e.seq).ok()?;
        let target = self.queue.get_mut(index)?.targets.get_mut(id.endpoint)?;
        (target.state == TargetState::InFlight && target.attempts == id.attempt)
            .then_some((index, target))
    }

    /// Frees the in-flight slot of a delivery that is no longer tracked (its event was
    /// evicted); whether it was one.
    fn release_orphan(&mut self, id: DeliveryId) -> bool {
        let orphan = self.orphans.remove(&id);
        if orphan && let Some(n) = self.in_flight.get_mut(id.endpoint) {
            *n = n.saturating_sub(1);
        }
        orphan
    }

    fn finish(&mut self, index: usize, endpoint: usize) {
        if let Some(n) = self.in_flight.get_mut(endpoint) {
            *n = n.saturating_sub(1);
        }
        if self.queue.get(index).is_some_and(|e| e.undelivered() == 0) {
            self.queue.remove(index);
        }
    }

    /// The receiver took the delivery (a 2xx): it is done for that endpoint. `false` if it was
    /// not in flight (reported already, or its event was dropped meanwhile).
    pub fn succeeded(&mut self, id: DeliveryId) -> bool {
        let Some((index, target)) = self.target(id) else {
            self.release_orphan(id);
            return false;
        };
        target.state = TargetState::Done;
        self.stats.delivered += 1;
        self.finish(index, id.endpoint);
        true
    }

    /// The delivery failed (not a 2xx, a timeout, no connection): it is retried after a backoff
    /// unless that was its last attempt.
    pub fn failed(&mut self, id: DeliveryId, now_ms: u64) -> Failure {
        let jitter = self.jitter();
        let config = self.config;
        let Some((index, target)) = self.target(id) else {
            self.release_orphan(id);
            return Failure::Unknown;
        };
        let outcome = if target.attempts >= config.max_attempts {
            target.state = TargetState::Done;
            Failure::Dropped
        } else {
            let delay =
                backoff_ms(config.retry_base_ms, config.retry_cap_ms, target.attempts, jitter);
            target.state = TargetState::Waiting;
            target.next_at_ms = now_ms.saturating_add(delay);
            Failure::Retry { at_ms: target.next_at_ms }
        };
        match outcome {
            Failure::Dropped => self.stats.dropped_attempts += 1,
            _ => self.stats.retried += 1,
        }
        self.finish(index, id.endpoint);
        outcome
    }

    fn jitter(&mut self) -> u8 {
        // xorshift64: cheap, deterministic for a seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 56) as u8
    }

    /// Events queued (not yet delivered to, or dropped for, every endpoint).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Deliveries in flight, all endpoints (including those of events dropped meanwhile).
    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().sum()
    }

    /// Counters since the outbox was made.
    pub fn stats(&self) -> OutboxStats {
        self.stats
    }

    /// The configuration in force (zeros raised to one).
    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::webhook::fixtures::started;

    fn config(capacity: usize, max_attempts: u32) -> OutboxConfig {
        OutboxConfig { capacity, max_attempts, ..OutboxConfig::default() }
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff_ms(1_000, 60_000, n, 0)).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
        assert_eq!(backoff_ms(1_000, 60_000, 1, 255), 1_249);
        assert_eq!(backoff_ms(1_000, 60_000, 6, 255), 39_968);
        assert_eq!(backoff_ms(1_000, 60_000, 7, 255), 60_000);
        assert_eq!(backoff_ms(u64::MAX, 60_000, 40, 255), 60_000);
        assert_eq!(backoff_ms(1, u64::MAX, 200, 0), 1 << 63);
    }

    #[test]
    fn a_delivery_is_sent_at_once_and_done_on_success() {
        let mut out = Outbox::new(OutboxConfig::default(), 1, 7);
        assert_eq!(out.next_wake(), None);
        out.push(&started("evt_1"), 100);
        assert_eq!(out.next_wake(), Some(100));
        assert!(out.due(99).is_empty());
        let due = out.due(100);
        assert_eq!(due.len(), 1);
        assert_eq!((&*due[0].event_id, due[0].attempt, due[0].endpoint), ("evt_1", 1, 0));
        assert_eq!(&*due[0].body, &started("evt_1").to_json()[..]);
        assert!(out.due(100).is_empty(), "in flight, not due again");
        assert_eq!(out.next_wake(), None);
        assert!(out.succeeded(due[0].id));
        assert!(!out.succeeded(due[0].id), "a success counts once");
        assert_eq!(out.failed(due[0].id, 200), Failure::Unknown);
        assert!(out.is_empty());
        assert_eq!(out.in_flight(), 0);
        assert_eq!(out.stats().delivered, 1);
    }

    #[test]
    fn failures_back_off_then_drop_after_the_last_attempt() {
        let cfg = OutboxConfig { max_attempts: 4, retry_base_ms: 1_000, ..OutboxConfig::default() };
        let mut out = Outbox::new(cfg, 1, 7);
        out.push(&started("evt_1"), 0);
        let mut now = 0;
        let mut delays = Vec::new();
        for attempt in 1..=4 {
            let due = out.due(now);
            assert_eq!(due.len(), 1);
            assert_eq!(due[0].attempt, attempt);
            assert_eq!(&*due[0].event_id, "evt_1", "the same event id on every retry");
            match out.failed(due[0].id, now) {
                Failure::Retry { at_ms } => {
                    assert_eq!(out.next_wake(), Some(at_ms));
                    assert!(out.due(at_ms - 1).is_empty());
                    delays.push(at_ms - now);
                    now = at_ms;
                }
                Failure::Dropped => assert_eq!(attempt, 4),
                Failure::Unknown => panic!("was in flight"),
            }
        }
        assert_eq!(delays.len(), 3);
        for (n, d) in delays.iter().enumerate() {
            let base = 1_000 << n;
            assert!((base..=base + base / 4).contains(d), "delay {n}: {d}");
        }
        assert!(out.is_empty());
        let s = out.stats();
        assert_eq!((s.retried, s.dropped_attempts, s.delivered), (3, 1, 0));
    }

    #[test]
    fn each_endpoint_has_its_own_schedule() {
        let mut out = Outbox::new(OutboxConfig::default(), 2, 7);
        out.push(&started("evt_1"), 0);
        let due = out.due(0);
        assert_eq!(due.iter().map(|d| d.endpoint).collect::<Vec<_>>(), [0, 1]);
        assert!(out.succeeded(due[0].id));
        let Failure::Retry { at_ms } = out.failed(due[1].id, 0) else { panic!("retry") };
        assert_eq!(out.len(), 1, "still owed to endpoint 1");
        let again = out.due(at_ms);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].endpoint, again[0].attempt), (1, 2));
        assert!(out.succeeded(again[0].id));
        assert!(out.is_empty());
    }

    #[test]
    fn a_full_queue_drops_the_oldest_event() {
        let mut out = Outbox::new(config(3, 8), 1, 7);
        for i in 0..3 {
            assert_eq!(out.push(&started(&format!("evt_{i}")), 0), None);
        }
        let first = out.due(0);
        assert_eq!(first.len(), 3);
        let evicted = out.push(&started("evt_3"), 1).expect("evicts");
        assert_eq!((&*evicted.event_id, evicted.undelivered), ("evt_0", 1));
        assert_eq!(out.len(), 3);
        // The evicted event's in-flight attempt still holds a slot until it reports.
        assert_eq!(out.in_flight(), 3);
        assert!(!out.succeeded(first[0].id));
        assert_eq!(out.in_flight(), 2);
        assert!(!out.succeeded(first[0].id));
        assert_eq!(out.in_flight(), 2, "released once");
        let s = out.stats();
        assert_eq!((s.evicted, s.dropped_full, s.pushed), (1, 1, 4));
        assert_eq!(out.due(1).iter().map(|d| &*d.event_id).collect::<Vec<_>>(), ["evt_3"]);
    }

    #[test]
    fn in_flight_is_limited_per_endpoint_and_waking_does_not_spin() {
        let cfg = OutboxConfig { max_in_flight: 2, ..OutboxConfig::default() };
        let mut out = Outbox::new(cfg, 1, 7);
        for i in 0..5 {
            out.push(&started(&format!("evt_{i}")), 0);
        }
        let due = out.due(0);
        assert_eq!(due.iter().map(|d| &*d.event_id).collect::<Vec<_>>(), ["evt_0", "evt_1"]);
        assert_eq!(out.next_wake(), None, "nothing can go until a slot frees");
        assert!(out.succeeded(due[0].id));
        assert_eq!(out.next_wake(), Some(0));
        assert_eq!(out.due(0).len(), 1);
    }

    #[test]
    fn no_endpoints_means_nothing_is_kept() {
        let mut out = Outbox::new(OutboxConfig::default(), 0, 7);
        assert_eq!(out.push(&started("evt"), 0), None);
        assert!(out.is_empty());
        assert!(out.due(0).is_empty());
        assert_eq!(out.next_wake(), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Advance(u64),
        Due,
        Succeed(usize),
        Fail(usize),
        Stale(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Push),
            2 => (0u64..5_000).prop_map(Op::Advance),
            3 => Just(Op::Due),
            2 => any::<usize>().prop_map(Op::Succeed),
            3 => any::<usize>().prop_map(Op::Fail),
            1 => any::<usize>().prop_map(Op::Stale),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn backoff_is_monotone_and_capped(
            base in 1u64..120_000,
            cap in 1u64..1_000_000,
            attempt in 1u32..80,
            j1 in any::<u8>(),
            j2 in any::<u8>(),
        ) {
            let d = backoff_ms(base, cap, attempt, j1);
            prop_assert!(d <= cap);
            prop_assert!(d >= base.min(cap));
            prop_assert!(backoff_ms(base, cap, attempt + 1, j2) >= d);
        }

        #[test]
        fn the_outbox_keeps_its_bounds_and_its_books(
            capacity in 1usize..6,
            max_attempts in 1u32..5,
            endpoints in 1usize..4,
            max_in_flight in 1usize..4,
            seed in any::<u64>(),
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let cfg = OutboxConfig {
                capacity,
                max_attempts,
                retry_base_ms: 100,
                retry_cap_ms: 1_000,
                max_in_flight,
            };
            let mut out = Outbox::new(cfg, endpoints, seed);
            let mut now = 0u64;
            let mut pushed = 0u64;
            let mut in_flight: Vec<Delivery> = Vec::new();
            let mut reported: Vec<DeliveryId> = Vec::new();
            let mut successes: HashMap<(Arc<str>, usize), u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Push => {
                        out.push(&started(&format!("evt_{pushed}")), now);
                        pushed += 1;
                    }
                    Op::Advance(ms) => now += ms,
                    Op::Due => {
                        for d in out.due(now) {
                            prop_assert!(d.attempt >= 1 && d.attempt <= max_attempts);
                            prop_assert!(!in_flight.iter().any(|f| f.id == d.id), "sent twice at once");
                            let key = (d.event_id.clone(), d.endpoint);
                            prop_assert!(!successes.contains_key(&key), "sent again after a success");
                            in_flight.push(d);
                        }
                    }
                    Op::Succeed(i) if !in_flight.is_empty() => {
                        let d = in_flight.swap_remove(i % in_flight.len());
                        if out.succeeded(d.id) {
                            *successes.entry((d.event_id.clone(), d.endpoint)).or_default() += 1;
                        }
                        reported.push(d.id);
                    }
                    Op::Fail(i) if !in_flight.is_empty() => {
                        let d = in_flight.swap_remove(i % in_flight.len());
                        match out.failed(d.id, now) {
                            Failure::Retry { at_ms } => {
                                prop_assert!(at_ms > now && at_ms <= now + 1_000);
                                prop_assert!(d.attempt < max_attempts);
                            }
                            Failure::Dropped => prop_assert_eq!(d.attempt, max_attempts),
                            Failure::Unknown => {}
                        }
                        reported.push(d.id);
                    }
                    Op::Stale(i) if !reported.is_empty() => {
                        let id = reported[i % reported.len()];
                        let before = out.stats();
                        let in_flight_before = out.in_flight();
                        prop_assert!(!out.succeeded(id));
                        prop_assert_eq!(out.failed(id, now), Failure::Unknown);
                        prop_assert_eq!(out.stats(), before);
                        prop_assert_eq!(out.in_flight(), in_flight_before);
                    }
                    _ => {}
                }
                prop_assert!(out.len() <= capacity);
                prop_assert_eq!(out.in_flight(), in_flight.len());
                for endpoint in 0..endpoints {
                    let n = in_flight.iter().filter(|d| d.endpoint == endpoint).count();
                    prop_assert!(n <= max_in_flight);
                }
                prop_assert!(successes.values().all(|&n| n == 1));
                if let Some(wake) = out.next_wake() {
                    prop_assert!(!out.queue.is_empty());
                    let _ = wake;
                }
                // Every (event, endpoint) is delivered, dropped or still owed: nothing lost.
                let s = out.stats();
                let owed: usize = out.queue.iter().map(Entry::undelivered).sum();
                prop_assert_eq!(s.pushed, pushed);
                prop_assert_eq!(
                    pushed * endpoints as u64,
                    s.delivered + s.dropped_attempts + s.dropped_full + owed as u64
                );
                prop_assert_eq!(s.delivered as usize, successes.len());
            }
            // Draining: with time and successes everything owed goes out.
            for _ in 0..(max_attempts as usize * capacity * endpoints + 10) {
                for d in in_flight.drain(..) {
                    out.succeeded(d.id);
                }
                now += 10_000;
                in_flight.extend(out.due(now));
            }
            for d in in_flight.drain(..) {
                out.succeeded(d.id);
            }
            prop_assert!(out.is_empty());
            prop_assert_eq!(out.in_flight(), 0);
            prop_assert_eq!(out.next_wake(), None);
        }
    }
}
