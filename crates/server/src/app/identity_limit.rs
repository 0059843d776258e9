//! Limits for actions whose effect reaches many people (raised hands are broadcast to every
//! listener) or the operators' disk (reports): a GCRA per token identity, per client address
//! and per /24 (IPv6: /64), each in a fixed-memory sketch. Anonymous joiners get a fresh
//! identity each, so identity limits alone would not hold; addresses and subnets do.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use townhall_core::Identity;
use townhall_shield::{RateSketch, ip_key, subnet_key};

/// Table width (log2) of each sketch: 2 × 2^14 cells of 8 bytes, 256 KiB, whatever the number
/// of identities or addresses pushed through it.
const WIDTH_LOG2: u32 = 14;

/// One allowance: `burst` at once, then one per `interval`.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    /// Time between events once the burst is spent.
    pub interval: Duration,
    /// Events at once.
    pub burst: u32,
}

impl Allowance {
    /// `burst` at once, then one per `interval`.
    pub const fn every(interval: Duration, burst: u32) -> Allowance {
        Allowance { interval, burst }
    }
}

/// What refused an action, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// `identity`, `address` or `subnet`.
    pub scope: &'static str,
    /// When one more would be allowed.
    pub retry_after: Duration,
}

/// Limits on one kind of action, per identity, address and subnet.
#[derive(Debug)]
pub struct IdentityLimiter {
    epoch: Instant,
    identity: RateSketch,
    address: RateSketch,
    subnet: RateSketch,
}

impl IdentityLimiter {
    /// Limits of `identity` per token identity, `address` per client address and `subnet` per
    /// /24 or /64.
    pub fn new(identity: Allowance, address: Allowance, subnet: Allowance) -> IdentityLimiter {
        let sketch = |a: Allowance| RateSketch::every(a.interval, a.burst, WIDTH_LOG2);
        IdentityLimiter {
            epoch: Instant::now(),
            identity: sketch(identity),
            address: sketch(address),
            subnet: sketch(subnet),
        }
    }

    /// Counts one action by `who` from `ip` at `now` if within every allowance; otherwise which
    /// one refused it and when to retry.
    pub fn check(&self, who: &Identity, ip: Option<IpAddr>, now: Instant) -> Result<(), Limited> {
        self.check_client(Some(who), ip, now)
    }

    /// [`check`](Self::check) for a caller who may have no identity (an anonymous listener of a
    /// public space): then only their address and subnet count.
    pub fn check_client(
        &self,
        who: Option<&Identity>,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Limited> {
        let now_ns =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let limited = |scope: &'static str| {
            move |e: townhall_shield::RateLimited| Limited { scope, retry_after: e.retry_after }
        };
        if let Some(ip) = ip {
            self.subnet.check(&subnet_key(ip), now_ns).map_err(limited("subnet"))?;
            self.address.check(&ip_key(ip), now_ns).map_err(limited("address"))?;
        }
        match who {
            Some(who) => self.identity.check(&who.as_str(), now_ns).map_err(limited("identity")),
            None => Ok(()),
        }
    }

    /// Bytes the limiter holds (fixed at creation).
    pub fn memory_bytes(&self) -> usize {
        self.identity.memory_bytes() + self.address.memory_bytes() + self.subnet.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> IdentityLimiter {
        IdentityLimiter::new(
            Allowance::every(Duration::from_secs(60), 5),
            Allowance::every(Duration::from_secs(30), 8),
            Allowance::every(Duration::from_secs(1), 20),
        )
    }

    #[test]
    fn each_identity_has_its_own_allowance() {
        let limiter = limiter();
        let (a, b) = (Identity::new("a").expect("a"), Identity::new("b").expect("b"));
        let now = Instant::now();
        for _ in 0..5 {
            assert!(limiter.check(&a, None, now).is_ok());
        }
        let refused = limiter.check(&a, None, now).expect_err("sixth");
        assert_eq!(refused.scope, "identity");
        assert!(refused.retry_after > Duration::from_secs(59));
        assert!(limiter.check(&b, None, now).is_ok(), "others are not affected");
        assert!(limiter.check(&a, None, now + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn fresh_identities_from_one_address_or_subnet_are_limited_together() {
        let limiter = limiter();
        let now = Instant::now();
        let ip: IpAddr = "198.51.100.7".parse().expect("ip");
        let allowed = (0..100)
            .filter(|n| {
                let who = Identity::new(format!("anon-{n}")).expect("id");
                limiter.check(&who, Some(ip), now).is_ok()
            })
            .count();
        assert_eq!(allowed, 8, "the address's burst, however many identities");
        let allowed = (0..100u8)
            .filter(|n| {
                let who = Identity::new(format!("other-{n}")).expect("id");
                let ip = IpAddr::from([203, 0, 113, *n]);
                limiter.check(&who, Some(ip), now).is_ok()
            })
            .count();
        assert_eq!(allowed, 20, "the subnet's burst, however many addresses in it");
    }

    #[test]
    fn a_million_identities_leave_memory_where_it_was() {
        let limiter = limiter();
        let before = limiter.memory_bytes();
        let now = Instant::now();
        for n in 0..1_000_000u32 {
            let who = Identity::new(format!("anon-{n:08x}")).expect("id");
            let ip = IpAddr::from(n.to_be_bytes());
            let _ = limiter.check(&who, Some(ip), now);
        }
        assert_eq!(limiter.memory_bytes(), before);
        assert!(before <= 1024 * 1024, "{before} bytes");
    }
}
