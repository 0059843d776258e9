//! Audience statistics of spaces, and the node's secrets.

use rusqlite::{OptionalExtension, params};
use townhall_core::SpaceId;
use townhall_core::stats::SpaceStats;

use super::*;

/// The name of the salt of listener keys among the node's secrets.
pub const LISTENER_KEY_SALT: &str = "listener_key_salt";

impl Store {
    /// Saves `space`'s statistics (replacing what was saved before).
    pub fn save_space_stats(
        &self,
        space: &SpaceId,
        updated_at: UnixTime,
        stats: &SpaceStats,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(stats).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn().execute(
            "INSERT OR REPLACE INTO space_stats (space, updated_at, stats) VALUES (?1, ?2, ?3)",
            params![space.as_str(), secs(updated_at), json],
        )?;
        Ok(())
    }

    /// `space`'s saved statistics, if any.
    pub fn space_stats(&self, space: &SpaceId) -> Result<Option<SpaceStats>, StoreError> {
        let json: Option<String> = self
            .conn()
            .query_row("SELECT stats FROM space_stats WHERE space = ?1", [space.as_str()], |r| {
                r.get(0)
            })
            .optional()?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    /// The statistics of the `limit` spaces updated last, newest first.
    pub fn recent_space_stats(
        &self,
        limit: usize,
    ) -> Result<Vec<(SpaceId, SpaceStats)>, StoreError> {
        self.select(
            "SELECT space, stats FROM space_stats ORDER BY updated_at DESC, space LIMIT ?1",
            [limit_sql(limit)],
            |r| {
                let stats = serde_json::from_str(&r.get::<_, String>(1)?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((space_id(r.get(0)?)?, stats))
            },
        )
    }

    /// The node's secret `name` (`len` random bytes, made and kept the first time it is asked).
    pub fn node_secret(&self, name: &str, len: usize) -> Result<Vec<u8>, StoreError> {
        let conn = self.conn();
        let found: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM node_secrets WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        if let Some(value) = found.filter(|v| v.len() == len) {
            return Ok(value);
        }
        let value: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        conn.execute(
            "INSERT OR REPLACE INTO node_secrets (name, value) VALUES (?1, ?2)",
            params![name, value],
        )?;
        Ok(value)
    }
}
