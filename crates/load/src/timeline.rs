//! When each listener heard nothing, for chaos runs (`townhall-load listen --timeline`): an
//! outage is a stretch of 300 ms or more without audio (a frame too small to carry any, a
//! silent connection, or none at all), with its wall-clock start and end, so a run that kills
//! nodes can say, per event, who lost the audio and how long until it came back. Frames
//! missing from the sequence are kept with their times too.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Audio absent this long is an outage.
pub const OUTAGE: Duration = Duration::from_millis(300);
/// An Opus frame this small or smaller carries silence (the mixer's VBR encoder makes 3 to 10
/// byte frames of silence; a voice or tone takes tens of bytes).
pub const SILENT_BYTES: usize = 20;
/// Most outages and losses kept (each), whatever the run.
pub const MAX_ENTRIES: usize = 500_000;

/// A stretch without audio, in Unix milliseconds; `to_ms` is `None` when the audio never came
/// back before the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Outage {
    /// Which listener (its number in the run).
    pub listener: u32,
    /// The last audio before it.
    pub from_ms: u64,
    /// The first audio after it.
    pub to_ms: Option<u64>,
}

/// Frames missing from one listener's sequence, noticed at `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Loss {
    /// Which listener (its number in the run).
    pub listener: u32,
    /// When the gap was seen (Unix ms).
    pub at_ms: u64,
    /// Frames missing.
    pub frames: u64,
}

/// A listener's connection lost (closed or failed, not ended by the run or a `bye`), at
/// `at_ms`: who was on a node that died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Drop {
    /// Which listener (its number in the run).
    pub listener: u32,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// One listener's ear, across its connections (sans-IO: fed the time).
#[derive(Debug, Default, Clone, Copy)]
pub struct Ear {
    listener: u32,
    last_audio_ms: Option<u64>,
}

impl Ear {
    /// The ear of listener number `listener`.
    pub fn new(listener: u32) -> Ear {
        Ear { listener, last_audio_ms: None }
    }

    /// Frames missing, seen at `now_ms`.
    pub fn lost(&self, now_ms: u64, frames: u64) -> Loss {
        Loss { listener: self.listener, at_ms: now_ms, frames }
    }

    /// Audio arrived at `now_ms`: the outage it ends, if the silence was one.
    pub fn heard(&mut self, now_ms: u64) -> Option<Outage> {
        let listener = self.listener;
        let outage = self.silent_since(now_ms).map(|from_ms| Outage {
            listener,
            from_ms,
            to_ms: Some(now_ms),
        });
        self.last_audio_ms = Some(now_ms);
        outage
    }

    /// The run ends at `now_ms`: the outage still going on, if any.
    pub fn end(&self, now_ms: u64) -> Option<Outage> {
        let listener = self.listener;
        self.silent_since(now_ms).map(|from_ms| Outage { listener, from_ms, to_ms: None })
    }

    fn silent_since(&self, now_ms: u64) -> Option<u64> {
        let limit = OUTAGE.as_millis() as u64;
        self.last_audio_ms.filter(|last| now_ms.saturating_sub(*last) >= limit)
    }
}

/// Every listener's outages and losses (bounded).
#[derive(Debug, Default)]
pub struct Timeline {
    outages: Mutex<Vec<Outage>>,
    losses: Mutex<Vec<Loss>>,
    drops: Mutex<Vec<Drop>>,
}

impl Timeline {
    /// Keeps an outage (dropped beyond [`MAX_ENTRIES`]).
    pub fn outage(&self, o: Outage) {
        let mut v = self.outages.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < MAX_ENTRIES {
            v.push(o);
        }
    }

    /// Keeps a loss (dropped beyond [`MAX_ENTRIES`]).
    pub fn loss(&self, l: Loss) {
        let mut v = self.losses.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < MAX_ENTRIES {
            v.push(l);
        }
    }

    /// Keeps a lost connection (dropped beyond [`MAX_ENTRIES`]).
    pub fn drop_of(&self, d: Drop) {
        let mut v = self.drops.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < MAX_ENTRIES {
            v.push(d);
        }
    }

    /// What was kept, for the report.
    pub fn report(&self) -> serde_json::Value {
        let outages = self.outages.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let losses = self.losses.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let drops = self.drops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        serde_json::json!({ "outages": outages, "losses": losses, "drops": drops })
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_of_300_ms_or_more_is_an_outage() {
        let mut ear = Ear::new(3);
        assert_eq!(ear.heard(1_000), None, "the first audio ends nothing");
        assert_eq!(ear.heard(1_100), None);
        assert_eq!(ear.heard(1_399), None, "299 ms: not an outage");
        assert_eq!(
            ear.heard(2_000),
            Some(Outage { listener: 3, from_ms: 1_399, to_ms: Some(2_000) })
        );
        assert_eq!(ear.end(2_100), None);
        assert_eq!(ear.end(2_500), Some(Outage { listener: 3, from_ms: 2_000, to_ms: None }));
        assert_eq!(Ear::default().end(9_999), None, "never heard: nothing to lose");
    }

    #[test]
    fn the_timeline_is_bounded() {
        let t = Timeline::default();
        for n in 0..(MAX_ENTRIES as u64 + 10) {
            t.loss(Loss { listener: 0, at_ms: n, frames: 1 });
        }
        assert_eq!(t.report()["losses"].as_array().map(Vec::len), Some(MAX_ENTRIES));
        t.drop_of(Drop { listener: 4, at_ms: 9 });
        assert_eq!(t.report()["drops"][0]["listener"], 4);
    }
}
