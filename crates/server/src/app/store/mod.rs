//! Metadata that survives restarts: spaces and schedules, removals and blocks, the moderation
//! log, reports, the recordings index with transcripts and speaker turns, clips, and each
//! space's audience statistics, in SQLite
//! (`rusqlite`, bundled).
//!
//! Nothing here is on the join or listening path: joins are verified from signed tokens alone.
//! Writes happen when spaces are created, started or ended, on moderation actions, reports and
//! recordings. `Store::in_memory` keeps the same schema in memory, for tests and for nodes run
//! without a data directory.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use townhall_core::room::ModAction;
use townhall_core::{Identity, SpaceId, SpaceState, UnixTime};

mod clips;
mod records;
mod search;
mod stats;
mod tables;

pub use records::*;
pub use search::{MAX_QUERY_CHARS, SearchError, SearchQuery};
pub use stats::LISTENER_KEY_SALT;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
/// Append new ones; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: spaces, bans, moderation log, reports, recordings.
    "CREATE TABLE spaces (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        description TEXT,
        host TEXT NOT NULL,
        state TEXT NOT NULL,
        public INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        scheduled_for INTEGER,
        started_at INTEGER,
        ended_at INTEGER
    );
    CREATE TABLE bans (
        space TEXT NOT NULL,
        identity TEXT NOT NULL,
        kind TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (space, identity, kind)
    );
    CREATE TABLE moderation (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        space TEXT NOT NULL,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        reason TEXT
    );
    CREATE INDEX moderation_space ON moderation (space, seq);
    CREATE TABLE reports (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        space TEXT NOT NULL,
        at INTEGER NOT NULL,
        reporter TEXT NOT NULL,
        target TEXT,
        category TEXT NOT NULL,
        details TEXT
    );
    CREATE TABLE recordings (
        id TEXT PRIMARY KEY,
        space TEXT NOT NULL,
        title TEXT NOT NULL,
        file TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        duration_ms INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        state TEXT NOT NULL
    );",
    // 2: who hosted each recorded space (the hosts' podcast feeds). Rows written before it take
    // their space's host where the space is still stored; the others stay NULL and appear in no
    // host's feed (only in the node's).
    "ALTER TABLE recordings ADD COLUMN host TEXT;
    UPDATE recordings SET host = (SELECT host FROM spaces WHERE spaces.id = recordings.space);
    CREATE INDEX recordings_host ON recordings (host, started_at);",
    // 3: later parts of a recording (its space moved to this node from another origin).
    "ALTER TABLE recordings ADD COLUMN part_of TEXT;
    ALTER TABLE recordings ADD COLUMN part_number INTEGER;",
    // 4: each recording's transcript (from the space's captions), as plain text (searched by
    // `GET /api/v1/recordings?q=`) and WebVTT (served beside the recording).
    "CREATE TABLE transcripts (
        recording TEXT PRIMARY KEY,
        text TEXT NOT NULL,
        vtt TEXT NOT NULL
    );",
    // 5: clips (a live space's last minute, or a range of a recording, kept as Ogg/Opus files
    // in the data directory) and each recording's speaker turns (who spoke when, a JSON array
    // on the recording's clock).
    "CREATE TABLE clips (
        id TEXT PRIMARY KEY,
        space TEXT NOT NULL,
        title TEXT NOT NULL,
        recording TEXT,
        from_ms INTEGER NOT NULL,
        to_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT
    );
    CREATE INDEX clips_created ON clips (created_at, id);
    CREATE TABLE turns (
        recording TEXT PRIMARY KEY,
        turns TEXT NOT NULL
    );",
    // 6: each space's audience statistics (`townhall_core::stats::SpaceStats` as JSON, bounded:
    // a 4 KiB sketch and at most 360 buckets), written every few seconds while it is live and
    // when it ends; and the node's own secrets (the salt of listener keys).
    "CREATE TABLE space_stats (
        space TEXT PRIMARY KEY,
        updated_at INTEGER NOT NULL,
        stats TEXT NOT NULL
    );
    CREATE INDEX space_stats_updated ON space_stats (updated_at);
    CREATE TABLE node_secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );",
    // 7: the program clock of each space mixed here (`townhall_media::ProgramClock`: a frame
    // and the Unix ms it was mixed at), so a space brought back after a restart numbers its
    // frames on from where they were, never from 0 again (caches keep objects by those numbers).
    "CREATE TABLE program_clocks (
        space TEXT PRIMARY KEY,
        frame INTEGER NOT NULL,
        at_ms INTEGER NOT NULL
    );",
];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be created.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// A row holds something this version cannot read.
    #[error("database row: {0}")]
    Corrupt(String),
    /// The database was written by a newer Townhall.
    #[error("database schema version {0} is newer than this build's {1}")]
    TooNew(u32, u32),
}

/// The node's metadata database.
pub struct Store {
    conn: Mutex<Connection>,
    persistent: bool,
    retention: std::sync::atomic::AtomicU64,
}

pub use crate::app::config::DEFAULT_RETENTION_ROWS;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("persistent", &self.persistent).finish_non_exhaustive()
    }
}

impl Store {
    /// The file name of the database inside the data directory.
    pub const FILE: &'static str = "townhall.sqlite3";

    /// Opens (creating if needed) the database in `data_dir` and brings its schema up to date.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        crate::app::datadir::ensure_private_dir(data_dir)?;
        let path = data_dir.join(Self::FILE);
        let conn = Connection::open(&path)?;
        // SQLite gives its -wal and -shm files the database file's mode: owner-only for all.
        crate::app::datadir::make_private(&path)?;
        // WAL: readers never wait for the writer; NORMAL: durable at each checkpoint, and a
        // crash loses at most the last transactions, never the file.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Store::ready(conn, true)
    }

    /// A database in memory, gone with the process.
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::ready(Connection::open_in_memory()?, false)
    }

    fn ready(mut conn: Connection, persistent: bool) -> Result<Store, StoreError> {
        migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            persistent,
            retention: std::sync::atomic::AtomicU64::new(DEFAULT_RETENTION_ROWS),
        })
    }

    /// Runs `f` on the database connection (maintenance, and tests that make the disk fail).
    pub fn with_connection<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.conn())
    }

    /// Keeps at most `rows` reports and `rows` moderation log entries (the newest).
    pub fn set_retention(&self, rows: u64) {
        self.retention.store(rows.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Deletes the rows of `table` (an autoincrement `seq` table) older than the newest
    /// `retention`: one indexed delete per insert, so the table never grows past its bound.
    pub(super) fn trim(conn: &Connection, table: &str, retention: u64) -> Result<(), StoreError> {
        let newest = conn.last_insert_rowid();
        let cut = newest.saturating_sub(i64::try_from(retention).unwrap_or(i64::MAX));
        if cut > 0 {
            conn.execute(&format!("DELETE FROM {table} WHERE seq <= ?1"), [cut])?;
        }
        Ok(())
    }

    pub(super) fn retention(&self) -> u64 {
        self.retention.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rows in the reports table (for tests and the operators' view).
    pub fn report_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row("SELECT COUNT(*) FROM reports", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether the data outlives the process.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Runs a query and converts each row with `row`.
    pub(super) fn select<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query(params)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(row(r)?);
        }
        Ok(out)
    }

    /// A page of an append-only log (`columns_from`: its columns and table), newest first: of
    /// one space or all, at most `limit` rows, with `seq` below `before` when paging.
    pub(super) fn page<T>(
        &self,
        columns_from: &str,
        space: Option<&SpaceId>,
        before: Option<i64>,
        limit: usize,
        row: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let sql = format!(
            "SELECT {columns_from} WHERE (?1 IS NULL OR space = ?1) AND (?2 IS NULL OR seq < ?2)
             ORDER BY seq DESC LIMIT ?3"
        );
        self.select(&sql, params![space.map(SpaceId::as_str), before, limit_sql(limit)], row)
    }

    /// The number of spaces stored.
    pub fn space_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row("SELECT COUNT(*) FROM spaces", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether a space is stored.
    pub fn has_space(&self, id: &SpaceId) -> Result<bool, StoreError> {
        let found: Option<i64> = self
            .conn()
            .query_row("SELECT 1 FROM spaces WHERE id = ?1", [id.as_str()], |r| r.get(0))
            .optional()?;
        Ok(found.is_some())
    }
}

/// The columns of a recording row and their table, as [`recording_row`] reads them.
pub(super) const RECORDING_COLUMNS: &str =
    "id, space, title, file, started_at, ended_at, duration_ms, bytes, state, host, part_of,
    part_number FROM recordings";

pub(super) fn recording_row(r: &rusqlite::Row<'_>) -> Result<RecordingRecord, StoreError> {
    Ok(RecordingRecord {
        id: r.get(0)?,
        space: space_id(r.get(1)?)?,
        title: r.get(2)?,
        file: r.get(3)?,
        started_at: unix(r.get(4)?),
        ended_at: r.get::<_, Option<i64>>(5)?.map(unix),
        duration_ms: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
        bytes: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
        state: parse_enum(&r.get::<_, String>(8)?)?,
        host: r.get::<_, Option<String>>(9)?.map(identity).transpose()?,
        part: match (r.get::<_, Option<String>>(10)?, r.get::<_, Option<i64>>(11)?) {
            (Some(of), Some(n)) => {
                Some(RecordingPart { of, number: u32::try_from(n).unwrap_or(u32::MAX) })
            }
            _ => None,
        },
    })
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let latest = u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX);
    if current > latest {
        return Err(StoreError::TooNew(current, latest));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", n + 1)?;
        tx.commit()?;
    }
    Ok(())
}

pub(super) fn secs(t: UnixTime) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

pub(super) fn unix(secs: i64) -> UnixTime {
    UnixTime(u64::try_from(secs).unwrap_or(0))
}

pub(super) fn limit_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(super) fn space_id(raw: String) -> Result<SpaceId, StoreError> {
    SpaceId::new(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn identity(raw: String) -> Result<Identity, StoreError> {
    Identity::new(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn state_name(state: SpaceState) -> &'static str {
    match state {
        SpaceState::Scheduled => "scheduled",
        SpaceState::Live => "live",
        SpaceState::Ended => "ended",
    }
}

pub(super) fn mod_action_name(action: ModAction) -> Result<String, StoreError> {
    match serde_json::to_value(action) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Corrupt(format!("moderation action {action:?}"))),
    }
}

/// Parses a unit enum stored under its serde name.
pub(super) fn parse_enum<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .map_err(|e| StoreError::Corrupt(format!("{raw:?}: {e}")))
}

#[cfg(test)]
mod tests;
