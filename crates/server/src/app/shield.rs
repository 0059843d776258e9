//! The shield at the edge: per-address and per-subnet connection caps and request rate limits,
//! checked before any handler runs, and the node's waiting room. The policies themselves are the
//! sans-IO types of `townhall-shield`; this module holds them, reads the clock and counts.
//!
//! (About 600 lines with its tests, over the crate's usual size: one type whose methods are each
//! a thin, clock-reading wrapper around a sans-IO policy; splitting it would scatter the one
//! place that says what the node's shield holds.)

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use townhall_shield::{
    Capacity, Classifier, CountSketch, Decision, Evidence, Lane, Pressure, PressureLimits,
    RateSketch, ReplayFilter, Signal, Slot, Thresholds, Verdict, WaitingRoom, ip_key, subnet_key,
};

use crate::app::config::Config;
use crate::app::error::AppError;
use crate::metrics::{ADMISSIONS, SHIELD_REJECTIONS, WAITING};

/// Table width (log2) of the per-key sketches: 2 × 2^16 cells each, a few MiB in all.
const WIDTH_LOG2: u32 = 16;

/// Limits and the waiting room of one node.
pub struct Shield {
    epoch: Instant,
    ip_rate: RateSketch,
    subnet_rate: RateSketch,
    join_ip: RateSketch,
    join_identity: RateSketch,
    ip_conns: CountSketch,
    subnet_conns: CountSketch,
    /// Configured connection caps per address and per subnet (the `normal` verdict's).
    base_caps: ConnCaps,
    /// Caps in force, following the verdict: tighter under attack, looser for a flash crowd.
    caps: Mutex<ConnCaps>,
    /// Configured requests per second and burst per subnet (the `normal` verdict's).
    base_subnet_rate: (u32, u32),
    /// Configured joins per second and burst per address (the `normal` verdict's).
    base_join_ip_rate: (u32, u32),
    room: Mutex<WaitingRoom>,
    classifier: Mutex<Classifier>,
    require_token: AtomicBool,
    require_pow: AtomicBool,
    prefer_hls: AtomicBool,
    pressure: Mutex<Pressure>,
    /// A fan-out shard fell behind its feed since the last lag check.
    egress_behind: AtomicBool,
    /// Whether measured pressure gates admission.
    adaptive: bool,
    /// Caches and proxies exempt from per-client limits.
    trusted: townhall_shield::TrustedProxies,
    /// The per-address request limit in force (rate, burst).
    ip_limits: Mutex<(u32, u32)>,
    /// Proof-of-work solutions already admitted (each admits once).
    pow_used: Mutex<ReplayFilter>,
    /// Waiting-room tickets already admitted (each admits one joiner).
    tickets_used: Mutex<ReplayFilter>,
    /// Listening connections open per token identity.
    identity_listens: CountSketch,
    max_listens_per_identity: u32,
}

/// Single-use things the shield remembers having admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneUse {
    /// A proof-of-work solution (by its challenge's nonce).
    Pow,
    /// A called waiting-room ticket (by space, line and number).
    WaitTicket,
}

/// Bits (log2) of each generation of the replay filters: 2 × 2 MiB each, good for about a
/// million admissions per TTL with a false-positive rate under 1e-4 (a false positive makes
/// one honest joiner solve or queue again; it never admits anyone).
const REPLAY_BITS_LOG2: u32 = 24;

impl crate::pipeline::fanout::EgressWatch for Shield {
    fn fell_behind(&self) {
        self.egress_fell_behind();
    }

    fn listener_joined(&self) {
        self.observe(Signal::Listen);
    }

    fn listener_left(&self, stayed: std::time::Duration) {
        if stayed < BOUNCE {
            self.observe(Signal::Bounce);
        }
    }
}

/// Open connections allowed per address and per /24 (IPv6 /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConnCaps {
    /// Per address.
    pub per_ip: u32,
    /// Per subnet.
    pub per_subnet: u32,
}

impl ConnCaps {
    /// How far caps move with the verdict.
    const FACTOR: u32 = 4;

    /// The caps for `verdict`, from the configured (normal) ones: a flash crowd behind one
    /// campus or carrier NAT is let in (four times the caps: they come to listen, and the
    /// waiting room still paces them), an attack is squeezed (a quarter, at least 8 per address
    /// and 64 per subnet, so a household still gets in).
    pub fn for_verdict(self, verdict: Verdict) -> ConnCaps {
        match verdict {
            Verdict::Normal => self,
            Verdict::FlashCrowd => ConnCaps {
                per_ip: self.per_ip.saturating_mul(Self::FACTOR),
                per_subnet: self.per_subnet.saturating_mul(Self::FACTOR),
            },
            Verdict::Attack => ConnCaps {
                per_ip: (self.per_ip / Self::FACTOR).max(8.min(self.per_ip)),
                per_subnet: (self.per_subnet / Self::FACTOR).max(64.min(self.per_subnet)),
            },
        }
    }
}

/// A listening connection counted against its token's identity; released on drop.
pub struct IdentityHold {
    shield: Arc<Shield>,
    slot: Slot,
}

impl Drop for IdentityHold {
    fn drop(&mut self) {
        self.shield.identity_listens.release(self.slot);
    }
}

/// Error codes of requests refused only for their rate or number: a crowd behind one NAT gets
/// these too, so the classifier counts them apart from junk.
const THROTTLED: &[&str] = &["rate_limited", "too_many_connections"];

/// Error codes that mark a request as junk for the classifier.
const JUNK: &[&str] = &[
    "invalid_token",
    "unauthorized",
    "not_found",
    "malformed_json",
    "malformed_request",
    "bad_path",
    "bad_query",
    "bad_ticket",
    "bad_pow",
    "headers_too_large",
    "websocket_required",
    "method_not_allowed",
    "invalid_space_id",
];

/// How long a proof of work is remembered: its challenge's lifetime and more.
const POW_REPLAY_TTL: std::time::Duration = std::time::Duration::from_secs(150);
/// How long a used waiting-room ticket is remembered: its lifetime.
const TICKET_REPLAY_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// A listener who leaves sooner than this after connecting counts as a bounce.
pub const BOUNCE: std::time::Duration = std::time::Duration::from_secs(10);

/// What `GET /api/v1/admin/shield` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ShieldStatus {
    /// `normal`, `flash_crowd` or `attack`.
    pub verdict: Verdict,
    /// The figures behind it.
    pub evidence: Evidence,
    /// Listeners admitted at once.
    pub max_listeners: usize,
    /// Joins admitted per second.
    pub joins_per_second: u32,
    /// Joiners waiting.
    pub queued: u64,
    /// Attack mode: joins and direct listeners need a token.
    pub require_token: bool,
    /// Attack mode: anonymous joiners must show a proof of work.
    pub require_pow: bool,
    /// New listeners are sent to LL-HLS (operator choice or overload).
    pub scale_mode: bool,
    /// The node measured itself overloaded: it admits nobody new.
    pub overloaded: bool,
    /// Smoothed event-loop lag, ms.
    pub event_loop_lag_ms: f64,
    /// Requests per second allowed per address.
    pub requests_per_ip: u32,
    /// Burst allowed per address.
    pub request_burst_per_ip: u32,
    /// Connection caps in force (they follow the verdict).
    pub connection_caps: ConnCaps,
    /// In a cluster: whether Redis answers and which waiting line the door uses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterAdmission>,
}

/// How a clustered node's door admits now.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterAdmission {
    /// This node's id.
    pub node: String,
    /// Whether its last round reached Redis.
    pub redis_up: bool,
    /// `cluster` (one line across every door, in Redis) or `local` (Redis away for several
    /// rounds: this node admits against its own capacity, with its own line, until it returns).
    pub admission: &'static str,
}

impl std::fmt::Debug for Shield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shield").finish_non_exhaustive()
    }
}

/// An open connection counted against its address and subnet; released when the last clone
/// drops (a listener's socket may outlive the task that accepted it).
pub struct ConnGuard {
    shield: Arc<Shield>,
    ip: Slot,
    subnet: Slot,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shield.ip_conns.release(self.ip);
        self.shield.subnet_conns.release(self.subnet);
    }
}

impl Shield {
    /// The shield for a node with this configuration.
    pub fn new(config: &Config) -> Shield {
        let capacity = Capacity {
            max_listeners: config.max_listeners,
            joins_per_second: config.joins_per_second,
            join_burst: config.join_burst,
        };
        Shield {
            epoch: Instant::now(),
            ip_rate: RateSketch::new(
                config.requests_per_ip,
                config.request_burst_per_ip,
                WIDTH_LOG2,
            ),
            subnet_rate: RateSketch::new(
                config.requests_per_subnet,
                config.request_burst_per_subnet,
                WIDTH_LOG2,
            ),
            join_ip: RateSketch::new(config.joins_per_ip, config.join_burst_per_ip, WIDTH_LOG2),
            join_identity: RateSketch::new(
                config.joins_per_identity,
                config.join_burst_per_identity,
                WIDTH_LOG2,
            ),
            ip_conns: CountSketch::new(WIDTH_LOG2),
            subnet_conns: CountSketch::new(WIDTH_LOG2),
            base_caps: ConnCaps {
                per_ip: config.max_connections_per_ip,
                per_subnet: config.max_connections_per_subnet,
            },
            base_subnet_rate: (config.requests_per_subnet, config.request_burst_per_subnet),
            base_join_ip_rate: (config.joins_per_ip, config.join_burst_per_ip),
            caps: Mutex::new(ConnCaps {
                per_ip: config.max_connections_per_ip,
                per_subnet: config.max_connections_per_subnet,
            }),
            room: Mutex::new(WaitingRoom::new(capacity)),
            classifier: Mutex::new(Classifier::new(Thresholds::default(), 10)),
            require_token: AtomicBool::new(false),
            require_pow: AtomicBool::new(false),
            prefer_hls: AtomicBool::new(false),
            pressure: Mutex::new(Pressure::new(PressureLimits {
                lag_high: std::time::Duration::from_millis(config.overload_lag_ms),
                lag_low: std::time::Duration::from_millis(config.overload_lag_ms / 3),
                ..PressureLimits::default()
            })),
            adaptive: config.overload_lag_ms > 0,
            trusted: config.trusted_proxies.clone(),
            ip_limits: Mutex::new((config.requests_per_ip, config.request_burst_per_ip)),
            egress_behind: AtomicBool::new(false),
            pow_used: Mutex::new(ReplayFilter::new(REPLAY_BITS_LOG2, POW_REPLAY_TTL)),
            tickets_used: Mutex::new(ReplayFilter::new(REPLAY_BITS_LOG2, TICKET_REPLAY_TTL)),
            identity_listens: CountSketch::new(WIDTH_LOG2),
            max_listens_per_identity: config.listens_per_identity,
        }
    }

    /// Whether `key` of `kind` is used for the first time (and now remembered as used).
    pub fn first_use(&self, kind: OneUse, key: &[u8]) -> bool {
        let filter = match kind {
            OneUse::Pow => &self.pow_used,
            OneUse::WaitTicket => &self.tickets_used,
        };
        let first =
            filter.lock().unwrap_or_else(|p| p.into_inner()).check_and_insert(key, Instant::now());
        if !first {
            let reason = match kind {
                OneUse::Pow => "pow_replayed",
                OneUse::WaitTicket => "ticket_replayed",
            };
            metrics::counter!(SHIELD_REJECTIONS, "reason" => reason).increment(1);
        }
        first
    }

    /// Counts a listening connection against `who`, or refuses it (429) when they hold
    /// `listens_per_identity` already: a token is one person, not a fleet of players.
    pub fn hold_identity(self: &Arc<Self>, who: &str) -> Result<IdentityHold, AppError> {
        let slot = self.identity_listens.acquire(&who, self.max_listens_per_identity).ok_or_else(
            || {
                metrics::counter!(SHIELD_REJECTIONS, "reason" => "identity_connections")
                    .increment(1);
                AppError {
                    retry_after: Some(std::time::Duration::from_secs(5)),
                    ..AppError::new(
                        crate::app::error::ErrorKind::TooManyRequests,
                        "too_many_connections",
                        format!(
                            "this token already holds {} listening connections",
                            self.max_listens_per_identity
                        ),
                    )
                }
            },
        )?;
        Ok(IdentityHold { shield: self.clone(), slot })
    }

    /// A fan-out shard fell behind its feed (its listeners lost messages).
    pub fn egress_fell_behind(&self) {
        self.egress_behind.store(true, Ordering::Relaxed);
    }

    /// Records a measured event-loop lag; marks the waiting room overloaded (admitting nobody
    /// new) or recovered.
    pub fn observe_lag(&self, lag: std::time::Duration) {
        let behind = self.egress_behind.swap(false, Ordering::Relaxed);
        let (overloaded, smoothed) = {
            let mut p = self.pressure.lock().unwrap_or_else(|p| p.into_inner());
            let overloaded = p.observe(Instant::now(), lag, behind);
            (overloaded && self.adaptive, p.lag())
        };
        let mut room = self.room.lock().unwrap_or_else(|p| p.into_inner());
        if room.overloaded() != overloaded {
            tracing::warn!(
                overloaded,
                lag_ms = smoothed.as_secs_f64() * 1e3,
                "admission pressure changed"
            );
            room.set_overloaded(overloaded);
        }
        metrics::gauge!(crate::metrics::LAG).set(smoothed.as_secs_f64());
        metrics::gauge!(crate::metrics::OVERLOADED).set(if overloaded { 1.0 } else { 0.0 });
    }

    /// Feeds the crowd-or-attack classifier.
    pub fn observe(&self, signal: Signal) {
        self.classifier.lock().unwrap_or_else(|p| p.into_inner()).observe(Instant::now(), signal);
    }

    /// Counts a connection that sent no acceptable request (churn, oversize or slow head) as a
    /// junk request from its subnet.
    pub fn observe_junk_connection(&self, ip: IpAddr) {
        let mut c = self.classifier.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        c.observe(now, Signal::Request(subnet_key(ip)));
        c.observe(now, Signal::Junk);
    }

    /// Counts a refused request as junk or as throttled when its error says so.
    pub fn observe_error(&self, code: &str) {
        if JUNK.contains(&code) {
            self.observe(Signal::Junk);
        } else if THROTTLED.contains(&code) {
            self.observe(Signal::Throttled);
        }
    }

    /// The current verdict and evidence; logs and reports a change.
    pub fn evaluate(&self) -> (Verdict, Evidence) {
        let (verdict, evidence, changed) =
            self.classifier.lock().unwrap_or_else(|p| p.into_inner()).verdict(Instant::now());
        if changed {
            tracing::warn!(verdict = verdict.as_str(), ?evidence, "traffic verdict changed");
        }
        let caps = self.base_caps.for_verdict(verdict);
        let previous =
            std::mem::replace(&mut *self.caps.lock().unwrap_or_else(|p| p.into_inner()), caps);
        if previous != caps {
            // A subnet's request budget moves with its connection cap: a campus crowd joins and
            // connects, two requests each. Behind one NAT address, many people join: a flash
            // crowd's address may join four times as often (the waiting room still paces them).
            let (rate, burst) = self.base_subnet_rate;
            let scale = |n: u32| match verdict {
                Verdict::Normal => n,
                Verdict::FlashCrowd => n.saturating_mul(ConnCaps::FACTOR),
                Verdict::Attack => (n / ConnCaps::FACTOR).max(50.min(n)),
            };
            self.subnet_rate.set_rate(scale(rate), scale(burst));
            let (rate, burst) = self.base_join_ip_rate;
            let scale = |n: u32| match verdict {
                Verdict::FlashCrowd => n.saturating_mul(ConnCaps::FACTOR),
                Verdict::Normal | Verdict::Attack => n,
            };
            self.join_ip.set_rate(scale(rate), scale(burst));
            tracing::warn!(
                verdict = verdict.as_str(),
                per_ip = caps.per_ip,
                per_subnet = caps.per_subnet,
                "connection caps follow the verdict"
            );
        }
        for v in [Verdict::Normal, Verdict::FlashCrowd, Verdict::Attack] {
            metrics::gauge!(crate::metrics::VERDICT, "verdict" => v.as_str())
                .set(if v == verdict { 1.0 } else { 0.0 });
        }
        metrics::gauge!(crate::metrics::EVIDENCE, "signal" => "requests_per_s")
            .set(evidence.requests_per_s);
        metrics::gauge!(crate::metrics::EVIDENCE, "signal" => "junk_share")
            .set(evidence.junk_share);
        metrics::gauge!(crate::metrics::EVIDENCE, "signal" => "joins_per_s")
            .set(evidence.joins_per_s);
        metrics::gauge!(crate::metrics::EVIDENCE, "signal" => "stay_share")
            .set(evidence.stay_share);
        metrics::gauge!(crate::metrics::EVIDENCE, "signal" => "top_subnet_share")
            .set(evidence.top_subnet_share);
        metrics::gauge!(crate::metrics::EVIDENCE, "signal" => "throttled_share")
            .set(evidence.throttled_share);
        metrics::gauge!(crate::metrics::EVIDENCE, "signal" => "progress_share")
            .set(evidence.progress_share);
        (verdict, evidence)
    }

    /// The status the admin endpoint shows.
    pub fn status(&self) -> ShieldStatus {
        let (verdict, evidence) = self.evaluate();
        let ip_limits = *self.ip_limits.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.room.lock().unwrap_or_else(|p| p.into_inner());
        let cap = room.capacity();
        ShieldStatus {
            verdict,
            evidence,
            max_listeners: cap.max_listeners,
            joins_per_second: cap.joins_per_second,
            queued: room.queued(),
            require_token: self.require_token(),
            require_pow: self.require_pow(),
            scale_mode: self.prefer_hls.load(Ordering::Relaxed) || room.overloaded(),
            overloaded: room.overloaded(),
            event_loop_lag_ms: self
                .pressure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .lag()
                .as_secs_f64()
                * 1e3,
            requests_per_ip: ip_limits.0,
            request_burst_per_ip: ip_limits.1,
            connection_caps: *self.caps.lock().unwrap_or_else(|p| p.into_inner()),
            cluster: None,
        }
    }

    /// Changes capacity at run time.
    pub fn set_capacity(&self, max_listeners: Option<usize>, joins_per_second: Option<u32>) {
        let mut room = self.room.lock().unwrap_or_else(|p| p.into_inner());
        let mut cap = room.capacity();
        if let Some(n) = max_listeners {
            cap.max_listeners = n;
        }
        if let Some(j) = joins_per_second {
            cap.joins_per_second = j.max(1);
            cap.join_burst = cap.join_burst.max(cap.joins_per_second);
        }
        room.set_capacity(cap);
    }

    /// Attack mode: joins and direct listeners need a valid token.
    pub fn require_token(&self) -> bool {
        self.require_token.load(Ordering::Relaxed)
    }

    /// Switches attack mode.
    pub fn set_require_token(&self, on: bool) {
        self.require_token.store(on, Ordering::Relaxed);
    }

    /// Whether new listeners should use LL-HLS (through caches) rather than direct streams:
    /// when operators say so, or while the node is overloaded.
    pub fn scale_mode(&self) -> bool {
        self.prefer_hls.load(Ordering::Relaxed)
            || self.room.lock().unwrap_or_else(|p| p.into_inner()).overloaded()
    }

    /// Operators send new listeners to LL-HLS (or back).
    pub fn set_prefer_hls(&self, on: bool) {
        self.prefer_hls.store(on, Ordering::Relaxed);
    }

    /// Attack mode: anonymous joiners must show a proof of work.
    pub fn require_pow(&self) -> bool {
        self.require_pow.load(Ordering::Relaxed)
    }

    /// Switches the proof-of-work requirement.
    pub fn set_require_pow(&self, on: bool) {
        self.require_pow.store(on, Ordering::Relaxed);
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Counts a new connection from `ip`, or refuses it (429) when its address or subnet holds
    /// too many.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Result<Option<Arc<ConnGuard>>, AppError> {
        if self.trusted.contains(ip) {
            return Ok(None);
        }
        let refuse = |scope: &'static str| {
            metrics::counter!(SHIELD_REJECTIONS, "reason" => scope).increment(1);
            // A refused connection is a request the classifier sees (the caller counts it as
            // throttled by its error code).
            self.observe(Signal::Request(subnet_key(ip)));
            // Told when to come back, spread so a refused crowd does not return at once.
            let retry =
                townhall_shield::jitter(std::time::Duration::from_secs(5), 0.5, rand::random());
            AppError {
                retry_after: Some(retry),
                ..AppError::new(
                    crate::app::error::ErrorKind::TooManyRequests,
                    "too_many_connections",
                    format!("too many open connections from this {scope}"),
                )
            }
        };
        let caps = *self.caps.lock().unwrap_or_else(|p| p.into_inner());
        let ip_slot =
            self.ip_conns.acquire(&ip_key(ip), caps.per_ip).ok_or_else(|| refuse("address"))?;
        let Some(subnet_slot) = self.subnet_conns.acquire(&subnet_key(ip), caps.per_subnet) else {
            self.ip_conns.release(ip_slot);
            return Err(refuse("subnet"));
        };
        Ok(Some(Arc::new(ConnGuard { shield: self.clone(), ip: ip_slot, subnet: subnet_slot })))
    }

    /// Checks a request from `ip` against the address and subnet rate limits (429 when over).
    pub fn request(&self, ip: IpAddr) -> Result<(), AppError> {
        if self.trusted.contains(ip) {
            return Ok(());
        }
        let now = self.now_ns();
        let limited = |scope: &'static str, e: townhall_shield::RateLimited| {
            metrics::counter!(SHIELD_REJECTIONS, "reason" => scope).increment(1);
            AppError::rate_limited(scope, e.retry_after)
        };
        self.observe(Signal::Request(subnet_key(ip)));
        self.ip_rate.check(&ip_key(ip), now).map_err(|e| limited("address", e))?;
        self.subnet_rate.check(&subnet_key(ip), now).map_err(|e| limited("subnet", e))
    }

    /// Checks the join route's own limits: per address, and per identity for token holders.
    pub fn check_join(&self, ip: Option<IpAddr>, identity: Option<&str>) -> Result<(), AppError> {
        let now = self.now_ns();
        let limited = |scope: &'static str, e: townhall_shield::RateLimited| {
            metrics::counter!(SHIELD_REJECTIONS, "reason" => scope).increment(1);
            AppError::rate_limited(scope, e.retry_after)
        };
        if let Some(ip) = ip {
            self.join_ip.check(&ip_key(ip), now).map_err(|e| limited("address", e))?;
        }
        if let Some(who) = identity {
            self.join_identity.check(&who, now).map_err(|e| limited("identity", e))?;
        }
        Ok(())
    }

    /// The client behind `peer`: `peer` itself, or, when `peer` is a trusted proxy, the address
    /// its X-Forwarded-For names (rightmost untrusted hop). Nobody else may speak for a client.
    pub fn client<'a, I>(&self, peer: IpAddr, forwarded_for: I) -> IpAddr
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: DoubleEndedIterator,
    {
        if !self.trusted.contains(peer) {
            return peer;
        }
        townhall_shield::client_from_forwarded_for(peer, forwarded_for, &self.trusted)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.contains(ip)
    }

    /// Changes the per-address request limit at run time (tightened under attack).
    pub fn set_ip_rate(&self, per_second: u32, burst: u32) {
        self.ip_rate.set_rate(per_second, burst);
        *self.ip_limits.lock().unwrap_or_else(|p| p.into_inner()) = (per_second, burst);
    }

    /// Asks the waiting room about a joiner in `lane` (holding a ticket number, or not) while
    /// `listeners` are connected.
    pub fn arrive(&self, listeners: usize, lane: Lane, ticket: Option<u64>) -> Decision {
        let decision = self.room.lock().unwrap_or_else(|p| p.into_inner()).arrive(
            Instant::now(),
            listeners,
            lane,
            ticket,
        );
        let result = match decision {
            Decision::Admit => "admitted",
            Decision::Wait { .. } => "queued",
        };
        metrics::counter!(ADMISSIONS, "result" => result).increment(1);
        metrics::gauge!(WAITING).set(self.queued() as f64);
        decision
    }

    /// Admits a direct listener without a ticket, or says when to retry.
    pub fn admit_direct(&self, listeners: usize, lane: Lane) -> Result<(), std::time::Duration> {
        let result = self.room.lock().unwrap_or_else(|p| p.into_inner()).admit_without_ticket(
            Instant::now(),
            listeners,
            lane,
        );
        let label = if result.is_ok() { "admitted" } else { "refused_direct" };
        metrics::counter!(ADMISSIONS, "result" => label).increment(1);
        result
    }

    /// Whether one more listener fits (for listeners already admitted through the room).
    pub fn has_room(&self, listeners: usize) -> bool {
        listeners < self.max_listeners()
    }

    /// Listeners admitted at once (as configured, or as operators set it since).
    pub fn max_listeners(&self) -> usize {
        self.room.lock().unwrap_or_else(|p| p.into_inner()).capacity().max_listeners
    }

    /// Joins this node admits per second now (its capacity, as configured or set by an
    /// operator).
    pub fn joins_per_second(&self) -> u32 {
        self.room.lock().unwrap_or_else(|p| p.into_inner()).capacity().joins_per_second
    }

    /// Tickets waiting.
    pub fn queued(&self) -> u64 {
        self.room.lock().unwrap_or_else(|p| p.into_inner()).queued()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_loosen_for_a_crowd_and_tighten_under_attack() {
        let base = ConnCaps { per_ip: 256, per_subnet: 4_096 };
        assert_eq!(base.for_verdict(Verdict::Normal), base);
        let crowd = base.for_verdict(Verdict::FlashCrowd);
        assert!(crowd.per_subnet >= 5_000, "a campus of 5,000 listeners fits: {crowd:?}");
        let attack = base.for_verdict(Verdict::Attack);
        assert_eq!(attack, ConnCaps { per_ip: 64, per_subnet: 1_024 });
        let small = ConnCaps { per_ip: 4, per_subnet: 16 }.for_verdict(Verdict::Attack);
        assert_eq!(small, ConnCaps { per_ip: 4, per_subnet: 16 }, "never below a household");
    }

    #[test]
    fn caps_in_force_follow_the_verdict_at_each_evaluation() {
        let shield = Arc::new(Shield::new(&Config {
            max_connections_per_ip: 2,
            max_connections_per_subnet: 1_000,
            ..Config::default()
        }));
        let ip: IpAddr = "198.51.100.9".parse().expect("ip");
        let held: Vec<_> = (0..2).map(|_| shield.connect(ip).expect("under the cap")).collect();
        let refused = shield.connect(ip).err().expect("third refused");
        assert_eq!(refused.kind, crate::app::error::ErrorKind::TooManyRequests);
        assert!(refused.retry_after.is_some(), "told when to come back");
        assert_eq!(shield.status().connection_caps.per_ip, 2, "normal traffic: configured caps");
        drop(held);
    }
}
