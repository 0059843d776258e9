//! Who is talking in a space: the engine's voice activity ([`townhall_media::VoiceActivity`])
//! names sources; this maps them to people for the events and the polled summary.

use std::collections::HashMap;
use std::sync::Mutex;

use townhall_core::Identity;
use townhall_media::SourceId;

/// Shared between the edge (which names sources as speakers take seats) and the engine (which
/// reports who talks).
#[derive(Debug, Default)]
pub struct Talking {
    names: Mutex<HashMap<SourceId, Identity>>,
    current: Mutex<Vec<Identity>>,
}

impl Talking {
    /// Records that `source` is `who`'s voice.
    pub fn name(&self, source: SourceId, who: Identity) {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).insert(source, who);
    }

    /// Forgets a source whose speaker left.
    pub fn forget(&self, source: SourceId) {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).remove(&source);
    }

    /// Sets who talks now from the talking sources; returns their names (unnamed sources, such
    /// as ones already gone, are left out).
    pub fn update(&self, sources: &[SourceId]) -> Vec<Identity> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let mut now: Vec<Identity> = sources.iter().filter_map(|s| names.get(s).cloned()).collect();
        now.sort();
        drop(names);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = now.clone();
        now
    }

    /// Sets who talks now by name (an edge, told by the space's origin).
    pub fn set(&self, now: Vec<Identity>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// Who talks now.
    pub fn current(&self) -> Vec<Identity> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_map_to_people_and_unknown_ones_are_left_out() {
        let t = Talking::default();
        let ann = Identity::new("ann").expect("id");
        let bob = Identity::new("bob").expect("id");
        t.name(2, bob.clone());
        t.name(1, ann.clone());
        assert_eq!(t.update(&[2, 1, 9]), vec![ann.clone(), bob.clone()]);
        t.forget(2);
        assert_eq!(t.update(&[2, 1]), vec![ann.clone()]);
        assert_eq!(t.current(), vec![ann]);
    }
}
