//! Metadata that survives restarts: spaces and schedules, removals and blocks, the moderation
//! log, reports and the recordings index, in SQLite (`rusqlite`, bundled).
//!
//! Nothing here is on the join or listening path: joins are verified from signed tokens alone.
//! Writes happen when spaces are created, started or ended, on moderation actions, reports and
//! recordings. `Store::in_memory` keeps the same schema in memory, for tests and for nodes run
//! without a data directory.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use townhall_core::room::{ModAction, ModerationEntry};
use townhall_core::{Identity, Space, SpaceId, SpaceState, UnixTime};

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

/// Why someone may not come back into a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BanKind {
    /// Removed for the rest of the space's life.
    Removed,
    /// Blocked: refused on any later join until unblocked.
    Blocked,
}

impl BanKind {
    fn as_str(self) -> &'static str {
        match self {
            BanKind::Removed => "removed",
            BanKind::Blocked => "blocked",
        }
    }
}

/// A moderation log entry with its space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredModeration {
    /// Order of recording, across all spaces.
    pub seq: i64,
    /// The space it happened in.
    pub space: SpaceId,
    /// The entry.
    #[serde(flatten)]
    pub entry: ModerationEntry,
}

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportCategory {
    /// Unsolicited bulk or repetitive content.
    Spam,
    /// Harassment or bullying.
    Harassment,
    /// Hateful conduct.
    Hate,
    /// Violence or threats.
    Violence,
    /// Sexual content.
    Sexual,
    /// Illegal content (the DSA's notice of illegal content).
    Illegal,
    /// Impersonation of someone else.
    Impersonation,
    /// Anything else (say what in `details`).
    Other,
}

impl ReportCategory {
    fn as_str(self) -> &'static str {
        match self {
            ReportCategory::Spam => "spam",
            ReportCategory::Harassment => "harassment",
            ReportCategory::Hate => "hate",
            ReportCategory::Violence => "violence",
            ReportCategory::Sexual => "sexual",
            ReportCategory::Illegal => "illegal",
            ReportCategory::Impersonation => "impersonation",
            ReportCategory::Other => "other",
        }
    }
}

/// A stored report of a space or a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Order of filing.
    pub seq: i64,
    /// The space reported, or where the person was reported.
    pub space: SpaceId,
    /// When.
    pub at: UnixTime,
    /// Who reported (from their verified token).
    pub reporter: Identity,
    /// Who is reported; `None` reports the space itself.
    pub target: Option<Identity>,
    /// Why.
    pub category: ReportCategory,
    /// Free text, if given.
    pub details: Option<String>,
}

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Being written.
    Recording,
    /// Closed normally.
    Finished,
    /// Interrupted (the node stopped or crashed) and finalised at the next start.
    Recovered,
}

impl RecordingState {
    fn as_str(self) -> &'static str {
        match self {
            RecordingState::Recording => "recording",
            RecordingState::Finished => "finished",
            RecordingState::Recovered => "recovered",
        }
    }
}

/// One recording in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingRecord {
    /// Unique id, used in URLs.
    pub id: String,
    /// The recorded space.
    pub space: SpaceId,
    /// The space's title when recording started.
    pub title: String,
    /// File name inside the recordings directory.
    pub file: String,
    /// When recording started.
    pub started_at: UnixTime,
    /// When it stopped, if it has.
    pub ended_at: Option<UnixTime>,
    /// Audio length, in milliseconds (as of the last update).
    pub duration_ms: u64,
    /// File size in bytes (as of the last update).
    pub bytes: u64,
    /// Recording, finished or recovered.
    pub state: RecordingState,
}

/// The node's metadata database.
pub struct Store {
    conn: Mutex<Connection>,
    persistent: bool,
    retention: std::sync::atomic::AtomicU64,
}

pub use crate::config::DEFAULT_RETENTION_ROWS;

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
        crate::datadir::ensure_private_dir(data_dir)?;
        let path = data_dir.join(Self::FILE);
        let conn = Connection::open(&path)?;
        // SQLite gives its -wal and -shm files the database file's mode: owner-only for all.
        crate::datadir::make_private(&path)?;
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
    fn trim(conn: &Connection, table: &str, retention: u64) -> Result<(), StoreError> {
        let newest = conn.last_insert_rowid();
        let cut = newest.saturating_sub(i64::try_from(retention).unwrap_or(i64::MAX));
        if cut > 0 {
            conn.execute(&format!("DELETE FROM {table} WHERE seq <= ?1"), [cut])?;
        }
        Ok(())
    }

    fn retention(&self) -> u64 {
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

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves a space (inserted or replaced).
    pub fn save_space(&self, space: &Space) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO spaces (id, title, description, host, state, public,
                created_at, scheduled_for, started_at, ended_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                space.id.as_str(),
                space.title,
                space.description,
                space.host.as_str(),
                state_name(space.state),
                space.public,
                secs(space.created_at),
                space.scheduled_for.map(secs),
                space.started_at.map(secs),
                space.ended_at.map(secs),
            ],
        )?;
        Ok(())
    }

    /// Forgets a space (and its bans).
    pub fn delete_space(&self, id: &SpaceId) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute("DELETE FROM spaces WHERE id = ?1", [id.as_str()])?;
        conn.execute("DELETE FROM bans WHERE space = ?1", [id.as_str()])?;
        Ok(())
    }

    /// Every stored space.
    pub fn spaces(&self) -> Result<Vec<Space>, StoreError> {
        self.select(
            "SELECT id, title, description, host, state, public, created_at, scheduled_for,
                started_at, ended_at FROM spaces ORDER BY created_at, id",
            [],
            |r| {
                Ok(Space {
                    id: space_id(r.get(0)?)?,
                    title: r.get(1)?,
                    description: r.get(2)?,
                    host: identity(r.get(3)?)?,
                    state: parse_enum(&r.get::<_, String>(4)?)?,
                    public: r.get(5)?,
                    created_at: unix(r.get(6)?),
                    scheduled_for: r.get::<_, Option<i64>>(7)?.map(unix),
                    started_at: r.get::<_, Option<i64>>(8)?.map(unix),
                    ended_at: r.get::<_, Option<i64>>(9)?.map(unix),
                })
            },
        )
    }

    /// Records moderation entries of `space`, and keeps the bans they imply (removals and
    /// blocks; unblocks lift a block).
    pub fn record_moderation(
        &self,
        space: &SpaceId,
        entries: &[ModerationEntry],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for e in entries {
            tx.execute(
                "INSERT INTO moderation (space, at, actor, action, target, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    space.as_str(),
                    secs(e.at),
                    e.actor.as_str(),
                    mod_action_name(e.action)?,
                    e.target.as_ref().map(Identity::as_str),
                    e.reason,
                ],
            )?;
            Store::trim(&tx, "moderation", self.retention())?;
            let Some(target) = &e.target else { continue };
            let ban = match e.action {
                ModAction::Remove => Some(BanKind::Removed),
                ModAction::Block => Some(BanKind::Blocked),
                _ => None,
            };
            if let Some(kind) = ban {
                tx.execute(
                    "INSERT OR REPLACE INTO bans (space, identity, kind, at) VALUES (?1, ?2, ?3, ?4)",
                    params![space.as_str(), target.as_str(), kind.as_str(), secs(e.at)],
                )?;
            } else if e.action == ModAction::Unblock {
                tx.execute(
                    "DELETE FROM bans WHERE space = ?1 AND identity = ?2 AND kind = 'blocked'",
                    params![space.as_str(), target.as_str()],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The moderation log, newest first: of one space or all, at most `limit` entries, older
    /// than `before` (a `seq`) when paging.
    pub fn moderation(
        &self,
        space: Option<&SpaceId>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredModeration>, StoreError> {
        self.page(
            "seq, space, at, actor, action, target, reason FROM moderation",
            space,
            before,
            limit,
            |r| {
                Ok(StoredModeration {
                    seq: r.get(0)?,
                    space: space_id(r.get(1)?)?,
                    entry: ModerationEntry {
                        at: unix(r.get(2)?),
                        actor: identity(r.get(3)?)?,
                        action: parse_enum(&r.get::<_, String>(4)?)?,
                        target: r.get::<_, Option<String>>(5)?.map(identity).transpose()?,
                        reason: r.get(6)?,
                    },
                })
            },
        )
    }

    /// Who may not come back into `space`, and why.
    pub fn bans(&self, space: &SpaceId) -> Result<Vec<(Identity, BanKind)>, StoreError> {
        self.select(
            "SELECT identity, kind FROM bans WHERE space = ?1 ORDER BY at, identity",
            [space.as_str()],
            |r| Ok((identity(r.get(0)?)?, parse_enum(&r.get::<_, String>(1)?)?)),
        )
    }

    /// Files a report; returns it with its sequence number.
    pub fn add_report(
        &self,
        space: &SpaceId,
        at: UnixTime,
        reporter: &Identity,
        target: Option<&Identity>,
        category: ReportCategory,
        details: Option<&str>,
    ) -> Result<Report, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO reports (space, at, reporter, target, category, details)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                space.as_str(),
                secs(at),
                reporter.as_str(),
                target.map(Identity::as_str),
                category.as_str(),
                details,
            ],
        )?;
        let seq = conn.last_insert_rowid();
        Store::trim(&conn, "reports", self.retention())?;
        Ok(Report {
            seq,
            space: space.clone(),
            at,
            reporter: reporter.clone(),
            target: target.cloned(),
            category,
            details: details.map(str::to_owned),
        })
    }

    /// Reports, newest first, optionally of one space, older than `before` when paging.
    pub fn reports(
        &self,
        space: Option<&SpaceId>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Report>, StoreError> {
        self.page(
            "seq, space, at, reporter, target, category, details FROM reports",
            space,
            before,
            limit,
            |r| {
                Ok(Report {
                    seq: r.get(0)?,
                    space: space_id(r.get(1)?)?,
                    at: unix(r.get(2)?),
                    reporter: identity(r.get(3)?)?,
                    target: r.get::<_, Option<String>>(4)?.map(identity).transpose()?,
                    category: parse_enum(&r.get::<_, String>(5)?)?,
                    details: r.get(6)?,
                })
            },
        )
    }

    /// Saves a recording's index entry (inserted or replaced).
    pub fn save_recording(&self, rec: &RecordingRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO recordings (id, space, title, file, started_at, ended_at,
                duration_ms, bytes, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                rec.id,
                rec.space.as_str(),
                rec.title,
                rec.file,
                secs(rec.started_at),
                rec.ended_at.map(secs),
                i64::try_from(rec.duration_ms).unwrap_or(i64::MAX),
                i64::try_from(rec.bytes).unwrap_or(i64::MAX),
                rec.state.as_str(),
            ],
        )?;
        Ok(())
    }

    /// Every recording, newest first.
    pub fn recordings(&self) -> Result<Vec<RecordingRecord>, StoreError> {
        let sql = format!("SELECT {RECORDING_COLUMNS} ORDER BY started_at DESC, id DESC");
        self.select(&sql, [], recording_row)
    }

    /// Forgets a recording's index entry (its file is deleted by the caller).
    pub fn delete_recording(&self, id: &str) -> Result<(), StoreError> {
        self.conn().execute("DELETE FROM recordings WHERE id = ?1", [id])?;
        Ok(())
    }

    /// One recording.
    pub fn recording(&self, id: &str) -> Result<Option<RecordingRecord>, StoreError> {
        let sql = format!("SELECT {RECORDING_COLUMNS} WHERE id = ?1");
        Ok(self.select(&sql, [id], recording_row)?.pop())
    }

    /// Runs a query and converts each row with `row`.
    fn select<T>(
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
    fn page<T>(
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
const RECORDING_COLUMNS: &str =
    "id, space, title, file, started_at, ended_at, duration_ms, bytes, state FROM recordings";

fn recording_row(r: &rusqlite::Row<'_>) -> Result<RecordingRecord, StoreError> {
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
    })
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
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

fn secs(t: UnixTime) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

fn unix(secs: i64) -> UnixTime {
    UnixTime(u64::try_from(secs).unwrap_or(0))
}

fn limit_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn space_id(raw: String) -> Result<SpaceId, StoreError> {
    SpaceId::new(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn identity(raw: String) -> Result<Identity, StoreError> {
    Identity::new(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn state_name(state: SpaceState) -> &'static str {
    match state {
        SpaceState::Scheduled => "scheduled",
        SpaceState::Live => "live",
        SpaceState::Ended => "ended",
    }
}

fn mod_action_name(action: ModAction) -> Result<String, StoreError> {
    match serde_json::to_value(action) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Corrupt(format!("moderation action {action:?}"))),
    }
}

/// Parses a unit enum stored under its serde name.
fn parse_enum<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .map_err(|e| StoreError::Corrupt(format!("{raw:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use townhall_core::NewSpace;

    fn id(s: &str) -> Identity {
        Identity::new(s).expect("identity")
    }

    fn space(name: &str) -> Space {
        let req = NewSpace { title: format!("Space {name}"), ..NewSpace::default() };
        let sid = SpaceId::new(name).expect("id");
        Space::create(sid, req, id("host"), UnixTime(100)).expect("space")
    }

    #[test]
    fn spaces_survive_reopening_the_file_with_every_field() {
        let dir = std::env::temp_dir().join(format!("townhall-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = space("a");
        s.description = Some("about".into());
        s.scheduled_for = Some(UnixTime(500));
        {
            let store = Store::open(&dir).expect("open");
            store.save_space(&s).expect("save");
            s.start(UnixTime(400)).expect("start");
            store.save_space(&s).expect("save again");
        }
        let store = Store::open(&dir).expect("reopen");
        assert!(store.is_persistent());
        assert_eq!(store.spaces().expect("spaces"), vec![s.clone()]);
        store.delete_space(&s.id).expect("delete");
        assert_eq!(store.space_count().expect("count"), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().expect("conn");
        migrate(&mut conn).expect("first");
        migrate(&mut conn).expect("second is a no-op");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        assert!(matches!(migrate(&mut conn), Err(StoreError::TooNew(99, _))));
    }

    #[test]
    fn moderation_keeps_bans_and_unblock_lifts_only_the_block() {
        let store = Store::in_memory().expect("store");
        let sid = SpaceId::new("s").expect("id");
        let entry = |action, target: &str, at| ModerationEntry {
            at: UnixTime(at),
            actor: id("host"),
            action,
            target: Some(id(target)),
            reason: Some("why".into()),
        };
        store
            .record_moderation(
                &sid,
                &[
                    entry(ModAction::Mute, "m", 1),
                    entry(ModAction::Remove, "r", 2),
                    entry(ModAction::Block, "b", 3),
                    entry(ModAction::Block, "r", 4),
                ],
            )
            .expect("record");
        let bans = store.bans(&sid).expect("bans");
        assert_eq!(
            bans,
            vec![
                (id("r"), BanKind::Removed),
                (id("b"), BanKind::Blocked),
                (id("r"), BanKind::Blocked)
            ]
        );
        store.record_moderation(&sid, &[entry(ModAction::Unblock, "r", 5)]).expect("unblock");
        let bans = store.bans(&sid).expect("bans");
        assert_eq!(bans, vec![(id("r"), BanKind::Removed), (id("b"), BanKind::Blocked)]);
        let log = store.moderation(Some(&sid), None, 10).expect("log");
        assert_eq!(log.len(), 5);
        assert_eq!(log[0].entry.action, ModAction::Unblock, "newest first");
        let page = store.moderation(None, Some(log[1].seq), 2).expect("page");
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![log[2].seq, log[3].seq]);
    }

    #[test]
    fn reports_and_recordings_round_trip() {
        let store = Store::in_memory().expect("store");
        let sid = SpaceId::new("s").expect("id");
        let r = store
            .add_report(&sid, UnixTime(7), &id("me"), Some(&id("them")), ReportCategory::Hate, None)
            .expect("report");
        assert_eq!(store.reports(Some(&sid), None, 10).expect("reports"), vec![r]);
        assert!(
            store.reports(Some(&SpaceId::new("t").expect("id")), None, 10).expect("r").is_empty()
        );
        let mut rec = RecordingRecord {
            id: "s-7".into(),
            space: sid,
            title: "T".into(),
            file: "s-7.opus".into(),
            started_at: UnixTime(7),
            ended_at: None,
            duration_ms: 0,
            bytes: 0,
            state: RecordingState::Recording,
        };
        store.save_recording(&rec).expect("save");
        rec.state = RecordingState::Finished;
        rec.ended_at = Some(UnixTime(9));
        rec.duration_ms = 2_000;
        store.save_recording(&rec).expect("update");
        assert_eq!(store.recordings().expect("list"), vec![rec.clone()]);
        assert_eq!(store.recording("s-7").expect("one"), Some(rec));
        assert_eq!(store.recording("nope").expect("none"), None);
    }

    #[test]
    fn corrupt_rows_are_errors_not_panics() {
        let store = Store::in_memory().expect("store");
        store
            .conn()
            .execute(
                "INSERT INTO spaces (id, title, host, state, public, created_at)
                 VALUES ('ok', 't', 'h', 'sideways', 1, 0)",
                [],
            )
            .expect("insert");
        assert!(matches!(store.spaces(), Err(StoreError::Corrupt(_))));
    }
}
