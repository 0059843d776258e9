//! A live space ends itself when nobody is left to run it: [`AbsenceTimer`].

use crate::UnixTime;

/// Watches whether a space's host (or a co-host) is present; reports when they have been gone
/// for the whole grace period. Feed it observations at any rate; time is passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsenceTimer {
    grace_secs: u64,
    absent_since: Option<UnixTime>,
}

impl AbsenceTimer {
    /// A timer that expires after `grace_secs` of absence; 0 never expires.
    pub fn new(grace_secs: u64) -> AbsenceTimer {
        AbsenceTimer { grace_secs, absent_since: None }
    }

    /// Records whether someone who can run the space is present at `now`; true once they have
    /// been absent for the grace period (and at every later absent observation).
    pub fn observe(&mut self, present: bool, now: UnixTime) -> bool {
        if present || self.grace_secs == 0 {
            self.absent_since = None;
            return false;
        }
        let since = *self.absent_since.get_or_insert(now);
        now.0.saturating_sub(since.0) >= self.grace_secs
    }

    /// Since when nobody has been present, if so.
    pub fn absent_since(&self) -> Option<UnixTime> {
        self.absent_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expires_after_the_grace_period_of_continuous_absence() {
        let mut t = AbsenceTimer::new(600);
        assert!(!t.observe(false, UnixTime(1_000)));
        assert!(!t.observe(false, UnixTime(1_599)));
        assert!(t.observe(false, UnixTime(1_600)));
        assert_eq!(t.absent_since(), Some(UnixTime(1_000)));
    }

    #[test]
    fn a_return_resets_the_clock() {
        let mut t = AbsenceTimer::new(600);
        t.observe(false, UnixTime(0));
        assert!(!t.observe(true, UnixTime(599)));
        assert!(!t.observe(false, UnixTime(700)));
        assert!(!t.observe(false, UnixTime(1_299)));
        assert!(t.observe(false, UnixTime(1_300)));
    }

    #[test]
    fn zero_grace_never_expires() {
        let mut t = AbsenceTimer::new(0);
        assert!(!t.observe(false, UnixTime(0)));
        assert!(!t.observe(false, UnixTime(u64::MAX)));
    }

    proptest! {
        #[test]
        fn expiry_means_absent_for_the_whole_grace(
            grace in 1u64..100,
            steps in proptest::collection::vec((any::<bool>(), 0u64..50), 1..60),
        ) {
            let mut t = AbsenceTimer::new(grace);
            let mut now = 0u64;
            let mut last_present: Option<u64> = None;
            let mut first_absent: Option<u64> = None;
            for (present, dt) in steps {
                now += dt;
                let expired = t.observe(present, UnixTime(now));
                if present {
                    last_present = Some(now);
                    first_absent = None;
                } else if first_absent.is_none() {
                    first_absent = Some(now);
                }
                let absent_for = first_absent.map(|f| now - f);
                prop_assert_eq!(expired, !present && absent_for.is_some_and(|a| a >= grace));
                prop_assert!(!expired || last_present.is_none_or(|p| now - p >= grace));
            }
        }
    }
}
