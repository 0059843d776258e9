//! The node's clip limits: per identity, address and /24 in fixed-memory sketches, a few cuts
//! at once, one writer. Apart from the rest of clips so the application state can hold it
//! without importing what uses the state.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use townhall_core::Identity;

use crate::app::error::{AppError, ErrorKind};
use crate::app::identity_limit::{Allowance, IdentityLimiter};

/// Cuts running at once on the node (each reads up to a few MB and writes a file).
pub const CUTS_AT_ONCE: usize = 2;

/// Clips per identity at once, then one per this long.
const PER_IDENTITY: Allowance = Allowance::every(Duration::from_secs(10), 5);
/// Per client address.
const PER_ADDRESS: Allowance = Allowance::every(Duration::from_secs(5), 10);
/// Per /24 (IPv6 /64).
const PER_SUBNET: Allowance = Allowance::every(Duration::from_millis(500), 50);

/// The node's clip limits: who may make how many, how many cuts run at once, one writer.
#[derive(Debug)]
pub struct Clips {
    limiter: IdentityLimiter,
    cutting: Arc<tokio::sync::Semaphore>,
    /// Room is made and files written one clip at a time, so the budget holds.
    pub(super) writing: std::sync::Mutex<()>,
}

impl Default for Clips {
    fn default() -> Self {
        Clips {
            limiter: IdentityLimiter::new(PER_IDENTITY, PER_ADDRESS, PER_SUBNET),
            cutting: Arc::new(tokio::sync::Semaphore::new(CUTS_AT_ONCE)),
            writing: std::sync::Mutex::new(()),
        }
    }
}

impl Clips {
    /// Counts one clip by `who` (anonymous: `None`) from `ip` against the limits.
    pub fn check(&self, who: Option<&Identity>, ip: Option<IpAddr>) -> Result<(), AppError> {
        self.limiter
            .check_client(who, ip, Instant::now())
            .map_err(|l| AppError::rate_limited(&format!("{} (clips)", l.scope), l.retry_after))
    }

    /// A place among the cuts running, or `503 busy`.
    pub fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AppError> {
        self.cutting.clone().try_acquire_owned().map_err(|_| {
            AppError::new(ErrorKind::Unavailable, "busy", "clips are being cut; retry in a second")
                .retry_after(Duration::from_secs(1))
        })
    }

    /// Bytes the limits hold (fixed at creation, whoever asks).
    pub fn memory_bytes(&self) -> usize {
        self.limiter.memory_bytes()
    }
}
