//! Which spaces are being recorded, and how to wait for a recording to finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use townhall_core::SpaceId;

/// Which spaces are being recorded, and how to learn that a recording's file is finished.
#[derive(Debug, Clone, Default)]
pub struct Recordings {
    active: Arc<Mutex<HashMap<SpaceId, Active>>>,
}

#[derive(Debug)]
pub(super) struct Active {
    pub(super) id: String,
    /// Which recording this continues, for a later part.
    pub(super) part: Option<crate::app::store::RecordingPart>,
    pub(super) done: watch::Receiver<bool>,
}

impl Recordings {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SpaceId, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `space` is being recorded.
    pub fn is_recording(&self, space: &SpaceId) -> bool {
        self.lock().contains_key(space)
    }

    /// Every recording in progress: its space and its id.
    pub fn active(&self) -> Vec<(SpaceId, String)> {
        self.lock().iter().map(|(space, a)| (space.clone(), a.id.clone())).collect()
    }

    /// The id of the recording of `space` in progress, if any.
    pub fn current(&self, space: &SpaceId) -> Option<String> {
        self.lock().get(space).map(|a| a.id.clone())
    }

    /// The part that would continue the recording of `space` in progress on another node (the
    /// space taken over): the same first part, the next number.
    pub fn next_part(&self, space: &SpaceId) -> Option<crate::app::store::RecordingPart> {
        self.lock().get(space).map(|a| match &a.part {
            Some(p) => crate::app::store::RecordingPart {
                of: p.of.clone(),
                number: p.number.saturating_add(1),
            },
            None => crate::app::store::RecordingPart { of: a.id.clone(), number: 2 },
        })
    }

    /// Forgets the active recording of `space` if it is `id`.
    pub(super) fn release(&self, space: &SpaceId, id: &str) {
        let mut active = self.lock();
        if active.get(space).is_some_and(|a| a.id == id) {
            active.remove(space);
        }
    }
}
