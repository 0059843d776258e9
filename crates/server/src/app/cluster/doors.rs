//! This node's door lines: per space, its share of the cluster's waiting line
//! (`townhall_shield::cluster_door::DoorLine`: blocks of numbers, the mark as last read,
//! admissions not yet reported), behind one async lock each so a space's joiners queue on one
//! read of Redis, and the clock they run on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use townhall_core::SpaceId;
use townhall_shield::cluster_door::DoorLine;

/// Most spaces a door keeps lines for; past it the table starts over (a dropped line loses
/// at most a block of numbers, void, and a quarter second of unreported admissions).
pub const MAX_DOOR_LINES: usize = 10_000;

/// This node's door lines, per space, and the clock they run on.
#[derive(Debug)]
pub struct Doors {
    lines: Mutex<HashMap<SpaceId, Arc<tokio::sync::Mutex<DoorLine>>>>,
    started: Instant,
}

impl Default for Doors {
    fn default() -> Doors {
        Doors { lines: Mutex::new(HashMap::new()), started: Instant::now() }
    }
}

impl Doors {
    /// The door's line of `space` (a new one the first time).
    pub fn line(&self, space: &SpaceId) -> Arc<tokio::sync::Mutex<DoorLine>> {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() >= MAX_DOOR_LINES && !lines.contains_key(space) {
            lines.clear();
        }
        lines.entry(space.clone()).or_default().clone()
    }

    /// Every line, for the round's report.
    pub(super) fn all(&self) -> Vec<(SpaceId, Arc<tokio::sync::Mutex<DoorLine>>)> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Lines kept.
    pub fn len(&self) -> usize {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The doors' clock.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_door_lines_stay_bounded_under_a_million_spaces() {
        let doors = Doors::default();
        for i in 0..1_000_000u32 {
            let space = SpaceId::new(format!("s{i}")).expect("id");
            drop(doors.line(&space));
            assert!(doors.len() <= MAX_DOOR_LINES);
        }
        let kept = SpaceId::new("kept").expect("id");
        let line = doors.line(&kept);
        assert!(Arc::ptr_eq(&line, &doors.line(&kept)), "a space keeps its line");
    }
}
