//! Who is talking: voice activity per speaker from the mixer's per-tick peak levels.
//!
//! A speaker starts talking when their peak crosses [`VoiceConfig::on_level`] and stops after
//! [`VoiceConfig::hangover_ms`] below [`VoiceConfig::off_level`] (hysteresis, so pauses between
//! words do not flicker). Changes are reported at most every [`VoiceConfig::min_interval_ms`],
//! so a million listeners get a few small messages a second, whatever the speakers do.

use std::collections::{BTreeMap, BTreeSet};

use crate::SourceId;

/// Thresholds and timing of voice activity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceConfig {
    /// Peak level (0.0 to 1.0) at which a silent speaker counts as talking.
    pub on_level: f32,
    /// Peak level below which a talking speaker's hangover runs.
    pub off_level: f32,
    /// How long a speaker stays talking after their level drops.
    pub hangover_ms: u64,
    /// The least time between two reported changes.
    pub min_interval_ms: u64,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig { on_level: 0.03, off_level: 0.015, hangover_ms: 600, min_interval_ms: 200 }
    }
}

/// Tracks who is talking. Drive it with [`VoiceActivity::observe`] once per mixer tick.
#[derive(Debug, Clone)]
pub struct VoiceActivity {
    config: VoiceConfig,
    /// Talking sources and when their level was last above `off_level` (ms).
    talking: BTreeMap<SourceId, u64>,
    reported: BTreeSet<SourceId>,
    last_report_ms: Option<u64>,
}

impl VoiceActivity {
    /// A tracker with these thresholds.
    pub fn new(config: VoiceConfig) -> VoiceActivity {
        VoiceActivity {
            config,
            talking: BTreeMap::new(),
            reported: BTreeSet::new(),
            last_report_ms: None,
        }
    }

    /// Takes one tick's peak level per source at `now_ms`; returns the new set of talking
    /// sources when it differs from the last one reported and the minimum interval has passed.
    /// Sources absent from `levels` have left and stop talking at once.
    pub fn observe(
        &mut self,
        levels: impl IntoIterator<Item = (SourceId, f32)>,
        now_ms: u64,
    ) -> Option<Vec<SourceId>> {
        let mut seen = BTreeSet::new();
        for (source, level) in levels {
            seen.insert(source);
            let talking = self.talking.contains_key(&source);
            if level >= self.config.on_level || (talking && level >= self.config.off_level) {
                self.talking.insert(source, now_ms);
            }
        }
        let hangover = self.config.hangover_ms;
        self.talking.retain(|s, last| seen.contains(s) && now_ms.saturating_sub(*last) < hangover);
        let current: BTreeSet<SourceId> = self.talking.keys().copied().collect();
        let due = self
            .last_report_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= self.config.min_interval_ms);
        if current == self.reported || !due {
            return None;
        }
        self.reported = current;
        self.last_report_ms = Some(now_ms);
        Some(self.reported.iter().copied().collect())
    }

    /// The talking sources as last reported.
    pub fn talking(&self) -> impl Iterator<Item = SourceId> + '_ {
        self.reported.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(
        va: &mut VoiceActivity,
        levels: &[(SourceId, f32)],
        from_ms: u64,
        ticks: u64,
    ) -> Vec<(u64, Vec<SourceId>)> {
        (0..ticks)
            .filter_map(|i| {
                let now = from_ms + i * 20;
                va.observe(levels.iter().copied(), now).map(|set| (now, set))
            })
            .collect()
    }

    #[test]
    fn a_speaker_talks_through_short_pauses_and_stops_after_the_hangover() {
        let mut va = VoiceActivity::new(VoiceConfig::default());
        assert_eq!(run(&mut va, &[(1, 0.0)], 0, 10), vec![], "silence is not talk");
        assert_eq!(run(&mut va, &[(1, 0.2)], 200, 5), vec![(200, vec![1])]);
        // A 300 ms pause: still talking.
        assert_eq!(run(&mut va, &[(1, 0.0)], 300, 15), vec![]);
        assert_eq!(run(&mut va, &[(1, 0.2)], 600, 1), vec![]);
        // Silence past the hangover: stops, reported once.
        let changes = run(&mut va, &[(1, 0.0)], 620, 60);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1, Vec::<SourceId>::new());
        assert!(changes[0].0 >= 600 + 600, "not before the hangover: {changes:?}");
    }

    #[test]
    fn hysteresis_keeps_a_quiet_talker_on_and_ignores_a_quiet_newcomer() {
        let mut va = VoiceActivity::new(VoiceConfig::default());
        run(&mut va, &[(1, 0.2)], 0, 1);
        // Between the thresholds: 1 keeps talking, 2 never starts.
        let changes = run(&mut va, &[(1, 0.02), (2, 0.02)], 20, 100);
        assert_eq!(changes, vec![]);
        assert_eq!(va.talking().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn changes_are_reported_at_most_every_interval_and_leavers_stop_at_once() {
        let mut va = VoiceActivity::new(VoiceConfig::default());
        assert_eq!(va.observe([(1, 0.5)], 0), Some(vec![1]));
        assert_eq!(va.observe([(1, 0.5), (2, 0.5)], 20), None, "too soon");
        assert_eq!(va.observe([(1, 0.5), (2, 0.5)], 200), Some(vec![1, 2]));
        assert_eq!(va.observe([(2, 0.5)], 400), Some(vec![2]), "1 left");
    }

    proptest! {
        #[test]
        fn reports_are_spaced_and_only_name_present_sources(
            ticks in proptest::collection::vec(proptest::collection::vec((0u64..4, 0f32..1.0), 0..4), 1..200),
        ) {
            let config = VoiceConfig::default();
            let mut va = VoiceActivity::new(config);
            let mut last: Option<u64> = None;
            for (i, levels) in ticks.iter().enumerate() {
                let now = i as u64 * 20;
                if let Some(set) = va.observe(levels.iter().copied(), now) {
                    prop_assert!(last.is_none_or(|t| now - t >= config.min_interval_ms));
                    for s in &set {
                        prop_assert!(levels.iter().any(|(id, _)| id == s));
                    }
                    last = Some(now);
                }
            }
        }
    }
}
