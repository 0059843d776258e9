//! Hosts' audience statistics: who counts as the same listener, where the numbers are kept,
//! and what the API reads (`docs/design.md`, "Audience statistics").
//!
//! The numbers themselves are `townhall_core::stats` (sans-IO); each live space's feed holds its
//! accumulator ([`Audience`](crate::pipeline::audience::Audience)). Here they are saved every
//! [`STATS_SYNC`] and when the space ends, so a restart loses at most that much, and read back
//! for ended spaces, for a space that comes back on air after a restart, and for operators.

use std::net::IpAddr;
use std::time::Duration;

use townhall_core::stats::{ListenerKey, StatsReport, StatsTotals, TotalsBuilder};
use townhall_core::{Claims, SpaceId};

use crate::app::error::AppError;
use crate::app::live::LiveSpace;
use crate::app::state::AppState;
use crate::clock::now_unix;

/// How often live spaces' statistics are written to the database.
pub const STATS_SYNC: Duration = Duration::from_secs(15);

/// One space in the operators' view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpaceStatsRow {
    /// The space.
    pub space: SpaceId,
    /// Whether it is on air on this node.
    pub live: bool,
    /// Its statistics (without the time series and retention curve: see the space's own).
    #[serde(flatten)]
    pub report: StatsReport,
}

impl AppState {
    /// Who a listener is, as the statistics know them: a salted hash of their identity when
    /// they signed in, else of their address (anonymous listeners get a fresh identity with
    /// each join, so their identity would count one person many times). Never stored as such.
    pub fn listener_key(&self, claims: Option<&Claims>, client: Option<IpAddr>) -> ListenerKey {
        match (claims, client) {
            (Some(c), _) if !c.anon => {
                ListenerKey::derive(&self.stats_salt, &format!("id:{}", c.sub))
            }
            (_, Some(ip)) => ListenerKey::derive(&self.stats_salt, &format!("ip:{ip}")),
            (Some(c), None) => ListenerKey::derive(&self.stats_salt, &format!("id:{}", c.sub)),
            (None, None) => ListenerKey::derive(&self.stats_salt, "ip:unknown"),
        }
    }

    /// Writes the statistics of every space on air here (blocking: the database).
    pub fn save_stats(&self) {
        for live in self.live_spaces() {
            self.save_space_stats(&live);
        }
    }

    /// Writes one live space's statistics (blocking: the database).
    pub fn save_space_stats(&self, live: &LiveSpace) {
        let stats = live.feed().audience().snapshot();
        self.store_stats(live, &stats);
    }

    /// Writes the last statistics of a space that ends: whoever still listens stops now.
    pub fn save_final_stats(&self, live: &LiveSpace) {
        let stats = live.feed().audience().snapshot().resumed();
        self.store_stats(live, &stats);
    }

    fn store_stats(&self, live: &LiveSpace, stats: &townhall_core::stats::SpaceStats) {
        if let Err(e) = self.store.save_space_stats(live.id(), now_unix(), stats) {
            tracing::warn!(space = %live.id(), "cannot store the space's statistics: {e}");
        }
    }

    /// Carries on from the statistics saved for `live` before a restart, if any (blocking).
    pub fn resume_stats(&self, live: &LiveSpace) {
        match self.store.space_stats(live.id()) {
            Ok(Some(saved)) => live.feed().audience().resume(saved),
            Ok(None) => {}
            Err(e) => tracing::warn!(space = %live.id(), "cannot read the space's statistics: {e}"),
        }
    }

    /// A space's statistics: counted now if it is on air here, else as last saved (blocking).
    pub fn space_stats(&self, id: &SpaceId) -> Result<StatsReport, AppError> {
        if let Some(live) = self.live(id) {
            return Ok(live.feed().audience().report());
        }
        let saved = self.store.space_stats(id)?;
        let mut stats = saved.ok_or_else(|| {
            AppError::not_found(
                "this space has no statistics here (it never went live on this node)",
            )
        })?;
        // An ended space's numbers stop where they were saved.
        Ok(stats.report(stats.updated_at()))
    }

    /// The operators' view: the spaces on air here, then those counted last, `limit` in all
    /// (live ones counted now), and their totals, unique listeners across them included
    /// (blocking).
    pub fn stats_overview(
        &self,
        limit: usize,
    ) -> Result<(StatsTotals, Vec<SpaceStatsRow>), AppError> {
        let mut totals = TotalsBuilder::default();
        let mut rows = Vec::new();
        let mut live = self.live_spaces();
        live.sort_by(|a, b| a.id().cmp(b.id()));
        live.truncate(limit);
        for space in &live {
            let audience = space.feed().audience();
            rows.push((space.id().clone(), audience.report(), audience.sketch(), true));
        }
        let stored = self.store.recent_space_stats(limit)?;
        for (space, mut saved) in stored {
            if rows.len() >= limit {
                break;
            }
            if rows.iter().any(|(id, ..)| *id == space) {
                continue;
            }
            // An ended space's numbers stop where they were saved.
            let at = saved.updated_at();
            rows.push((space, saved.report(at), saved.unique_sketch().clone(), false));
        }
        let rows = rows
            .into_iter()
            .map(|(space, report, sketch, live)| {
                totals.add(&report, &sketch);
                let report = StatsReport { series: Vec::new(), retention: Vec::new(), ..report };
                SpaceStatsRow { space, live, report }
            })
            .collect();
        Ok((totals.finish(), rows))
    }
}
