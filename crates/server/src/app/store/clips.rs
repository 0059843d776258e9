//! The queries of clips and of recordings' speaker turns.

use rusqlite::{OptionalExtension, params};
use townhall_core::Identity;

use super::*;

const CLIP_COLUMNS: &str = "id, space, title, recording, from_ms, to_ms, duration_ms, bytes,
    created_at, created_by FROM clips";

fn clip_row(r: &rusqlite::Row<'_>) -> Result<ClipRecord, StoreError> {
    let ms = |i: usize| -> Result<u64, StoreError> {
        Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
    };
    Ok(ClipRecord {
        id: r.get(0)?,
        space: space_id(r.get(1)?)?,
        title: r.get(2)?,
        recording: r.get(3)?,
        from_ms: ms(4)?,
        to_ms: ms(5)?,
        duration_ms: ms(6)?,
        bytes: ms(7)?,
        created_at: unix(r.get(8)?),
        created_by: r.get::<_, Option<String>>(9)?.map(identity).transpose()?,
    })
}

fn sql_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Saves a clip's row.
    pub fn save_clip(&self, clip: &ClipRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO clips (id, space, title, recording, from_ms, to_ms,
                duration_ms, bytes, created_at, created_by)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                clip.id,
                clip.space.as_str(),
                clip.title,
                clip.recording,
                sql_u64(clip.from_ms),
                sql_u64(clip.to_ms),
                sql_u64(clip.duration_ms),
                sql_u64(clip.bytes),
                secs(clip.created_at),
                clip.created_by.as_ref().map(Identity::as_str),
            ],
        )?;
        Ok(())
    }

    /// One clip.
    pub fn clip(&self, id: &str) -> Result<Option<ClipRecord>, StoreError> {
        let sql = format!("SELECT {CLIP_COLUMNS} WHERE id = ?1");
        Ok(self.select(&sql, [id], clip_row)?.pop())
    }

    /// How many clips there are and their bytes together.
    pub fn clip_totals(&self) -> Result<(u64, u64), StoreError> {
        let (n, bytes): (i64, Option<i64>) =
            self.conn().query_row("SELECT COUNT(*), SUM(bytes) FROM clips", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok((u64::try_from(n).unwrap_or(0), u64::try_from(bytes.unwrap_or(0)).unwrap_or(0)))
    }

    /// The oldest `limit` clips, oldest first (the first to go when the budget is full); clips
    /// of the same second in the order they were saved (not by their random ids).
    pub fn oldest_clips(&self, limit: usize) -> Result<Vec<ClipRecord>, StoreError> {
        let sql = format!("SELECT {CLIP_COLUMNS} ORDER BY created_at, rowid LIMIT ?1");
        self.select(&sql, [limit_sql(limit)], clip_row)
    }

    /// Whether a clip of this id is stored.
    pub fn has_clip(&self, id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = self
            .conn()
            .query_row("SELECT 1 FROM clips WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        Ok(found.is_some())
    }

    /// Forgets a clip's row (its file is deleted by the caller).
    pub fn delete_clip(&self, id: &str) -> Result<(), StoreError> {
        self.conn().execute("DELETE FROM clips WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Saves recording `id`'s speaker turns, replacing earlier ones.
    pub fn save_turns(&self, id: &str, turns: &[SpeakerTurn]) -> Result<(), StoreError> {
        let json = serde_json::to_string(turns).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn().execute(
            "INSERT OR REPLACE INTO turns (recording, turns) VALUES (?1, ?2)",
            params![id, json],
        )?;
        Ok(())
    }

    /// Recording `id`'s speaker turns (none if it has none).
    pub fn turns(&self, id: &str) -> Result<Vec<SpeakerTurn>, StoreError> {
        let json: Option<String> = self
            .conn()
            .query_row("SELECT turns FROM turns WHERE recording = ?1", [id], |r| r.get(0))
            .optional()?;
        match json {
            None => Ok(Vec::new()),
            Some(json) => {
                serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string()))
            }
        }
    }
}
