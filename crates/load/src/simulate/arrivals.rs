//! When joiners arrive: a push notification's crowd, as an explicit profile. The rate rises
//! linearly for `rise_secs` (the push fanning out, phones waking), then decays exponentially
//! with time constant `decay_secs` (the tail of those who look later), cut at `window_secs` and
//! scaled so exactly `joiners` arrive. Deterministic: arrivals are spread evenly within each
//! millisecond, so a profile gives the same instants on every run.

/// Resolution of the profile.
const BIN_US: u64 = 1_000;

/// The shape of a crowd's arrivals.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Profile {
    /// Everyone arrives within this many seconds.
    pub window_secs: f64,
    /// Seconds from the push to the peak rate (0: the peak is at once).
    pub rise_secs: f64,
    /// Time constant of the decay after the peak (0 or less: a flat rate after the rise).
    pub decay_secs: f64,
}

impl Profile {
    /// The relative rate at `t` seconds (1.0 at the peak).
    fn shape(&self, t: f64) -> f64 {
        if t < self.rise_secs {
            return (t / self.rise_secs).max(1e-3);
        }
        if self.decay_secs <= 0.0 {
            return 1.0;
        }
        (-(t - self.rise_secs) / self.decay_secs).exp()
    }
}

/// The arrival instants of `joiners` under a profile, in order (µs from the push).
#[derive(Debug, Clone)]
pub struct Arrivals {
    /// Arrivals per millisecond bin.
    counts: Vec<u64>,
    bin: usize,
    /// Arrivals already emitted from the current bin.
    done: u64,
}

impl Arrivals {
    /// The arrivals of `joiners` under `profile`.
    pub fn new(profile: &Profile, joiners: u64) -> Arrivals {
        let bins = ((profile.window_secs.max(0.001) * 1e6) as u64).div_ceil(BIN_US).max(1);
        let weights: Vec<f64> =
            (0..bins).map(|b| profile.shape((b as f64 + 0.5) * BIN_US as f64 / 1e6)).collect();
        let total: f64 = weights.iter().sum();
        let mut counts = Vec::with_capacity(weights.len());
        let (mut cumulative, mut emitted) = (0.0, 0u64);
        for (i, w) in weights.iter().enumerate() {
            cumulative += w;
            // Rounded cumulative targets: exactly `joiners` in all, whatever the float error.
            let target = if i + 1 == weights.len() {
                joiners
            } else {
                ((cumulative / total) * joiners as f64).floor() as u64
            };
            let target = target.clamp(emitted, joiners);
            counts.push(target - emitted);
            emitted = target;
        }
        Arrivals { counts, bin: 0, done: 0 }
    }

    /// The highest arrival rate of the profile, per second (over its busiest 100 ms).
    pub fn peak_per_second(&self) -> f64 {
        let window = 100;
        let mut sum: u64 = self.counts.iter().take(window).sum();
        let mut best = sum;
        for i in window..self.counts.len() {
            sum = sum + self.counts[i] - self.counts[i - window];
            best = best.max(sum);
        }
        best as f64 * 1e6 / (window as u64 * BIN_US) as f64
    }
}

impl Iterator for Arrivals {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        loop {
            let count = *self.counts.get(self.bin)?;
            if self.done < count {
                let at = self.bin as u64 * BIN_US + (2 * self.done + 1) * BIN_US / (2 * count);
                self.done += 1;
                return Some(at);
            }
            self.bin += 1;
            self.done = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_joiners_arrive_in_order_within_the_window() {
        let p = Profile { window_secs: 10.0, rise_secs: 1.0, decay_secs: 2.0 };
        let times: Vec<u64> = Arrivals::new(&p, 12_345).collect();
        assert_eq!(times.len(), 12_345);
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(times.last().is_some_and(|&t| t < 10_000_000));
    }

    #[test]
    fn the_peak_follows_the_rise_and_the_tail_decays() {
        let p = Profile { window_secs: 60.0, rise_secs: 2.0, decay_secs: 10.0 };
        let times: Vec<u64> = Arrivals::new(&p, 1_000_000).collect();
        let in_second = |s: u64| times.iter().filter(|&&t| t / 1_000_000 == s).count();
        assert!(in_second(0) < in_second(2), "rising");
        assert!(in_second(2) > in_second(12) && in_second(12) > in_second(40), "decaying");
        // A flat profile spreads evenly: its peak is the mean.
        let flat = Profile { window_secs: 10.0, rise_secs: 0.0, decay_secs: 0.0 };
        let peak = Arrivals::new(&flat, 10_000).peak_per_second();
        assert!((peak - 1_000.0).abs() <= 20.0, "peak {peak}");
    }
}
