//! Each live space's LL-HLS output, as the engine writes it and the HTTP handlers read it: the
//! CMAF init segment, the segmenter's parts and segments, and a watch that wakes blocked
//! playlist requests when a part completes. Knows nothing of HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use townhall_core::SpaceId;
use townhall_media::hls::{HlsConfig, HlsSegmenter, Position};

/// One space's HLS output, shared by the engine (writer) and the HTTP handlers (readers).
pub struct HlsStore {
    pub(crate) init: Bytes,
    /// Distinguishes this run of the space in ETags.
    pub(crate) tag: String,
    segmenter: Mutex<HlsSegmenter>,
    progress: watch::Sender<Position>,
    /// When a player last asked for this stream (µs on the server clock; 0: never). An edge
    /// relays a space while someone reads it.
    last_read_us: AtomicU64,
}

impl std::fmt::Debug for HlsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsStore").field("tag", &self.tag).finish_non_exhaustive()
    }
}

impl HlsStore {
    /// A store for a stream with this Opus pre-skip.
    pub fn new(pre_skip: u16, tag: String) -> Result<Arc<HlsStore>, String> {
        let init =
            townhall_media::cmaf::init_segment(pre_skip).map_err(|e| format!("hls init: {e}"))?;
        let segmenter = HlsSegmenter::new(HlsConfig::default());
        let (progress, _) = watch::channel(segmenter.next());
        Ok(Arc::new(HlsStore {
            init,
            tag,
            segmenter: Mutex::new(segmenter),
            progress,
            last_read_us: AtomicU64::new(0),
        }))
    }

    /// Whether a player asked for this stream within `window`.
    pub fn read_within(&self, window: Duration) -> bool {
        let last = self.last_read_us.load(Ordering::Relaxed);
        last != 0 && crate::clock::now_us().saturating_sub(last) <= window.as_micros() as u64
    }

    pub(crate) fn segmenter(&self) -> std::sync::MutexGuard<'_, HlsSegmenter> {
        self.segmenter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds program frame `seq` (engine thread); wakes blocked requests when a part completes.
    pub fn push(&self, seq: u64, packet: Bytes, mixed_at_us: u64) {
        let next = {
            let mut s = self.segmenter();
            let before = (s.next(), s.begins_at());
            if let Err(e) = s.push(seq, packet, mixed_at_us) {
                tracing::error!("hls packaging failed: {e}");
            }
            // A part done, or the first frame seen (requests waiting for it learn where the
            // stream begins here).
            (before != (s.next(), s.begins_at())).then(|| s.next())
        };
        if let Some(next) = next {
            self.progress.send_replace(next);
        }
    }

    /// Ends the stream (playlist gets `EXT-X-ENDLIST`).
    pub fn finish(&self) {
        let next = {
            let mut s = self.segmenter();
            if let Err(e) = s.finish() {
                tracing::error!("hls packaging failed: {e}");
            }
            s.next()
        };
        // A change wakes every waiter; an ended stream satisfies them all.
        self.progress.send_modify(|p| *p = Position { msn: next.msn + 1, part: 0 });
    }

    /// Waits (at most `limit`) until `done` holds for the segmenter.
    pub(crate) async fn wait_until(
        &self,
        limit: Duration,
        done: impl Fn(&HlsSegmenter) -> bool,
    ) -> bool {
        let mut rx = self.progress.subscribe();
        let wait = async {
            loop {
                if done(&self.segmenter()) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return done(&self.segmenter());
                }
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }
}

/// The HLS stores of all spaces that are or were recently live.
#[derive(Debug, Default)]
pub struct HlsStores {
    map: RwLock<HashMap<SpaceId, Arc<HlsStore>>>,
}

impl HlsStores {
    /// Registers a space's store (replacing an older run's).
    pub fn insert(&self, id: SpaceId, store: Arc<HlsStore>) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).insert(id, store);
    }

    /// Forgets stores of spaces for which `keep` is false.
    pub fn retain(&self, keep: impl Fn(&SpaceId) -> bool) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).retain(|id, _| keep(id));
    }

    /// A space's store, for a player's request (which counts as reading it).
    pub(crate) fn get(&self, id: &SpaceId) -> Option<Arc<HlsStore>> {
        let store = self.map.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()?;
        store.last_read_us.store(crate::clock::now_us(), Ordering::Relaxed);
        Some(store)
    }
}
