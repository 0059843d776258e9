//! The queries of each table: spaces (and their program clocks), bans and the moderation log,
//! reports, recordings.

use rusqlite::{OptionalExtension, params};
use townhall_core::room::{ModAction, ModerationEntry};
use townhall_core::{Identity, Space, SpaceId, UnixTime};
use townhall_media::ProgramClock;

use super::*;

impl Store {
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

    /// Forgets a space (and its bans and statistics).
    pub fn delete_space(&self, id: &SpaceId) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute("DELETE FROM spaces WHERE id = ?1", [id.as_str()])?;
        conn.execute("DELETE FROM bans WHERE space = ?1", [id.as_str()])?;
        conn.execute("DELETE FROM space_stats WHERE space = ?1", [id.as_str()])?;
        conn.execute("DELETE FROM program_clocks WHERE space = ?1", [id.as_str()])?;
        Ok(())
    }

    /// Keeps the program clock of a space mixed here (replacing the one kept before).
    pub fn save_program_clock(&self, id: &SpaceId, clock: ProgramClock) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO program_clocks (space, frame, at_ms) VALUES (?1, ?2, ?3)",
            params![id.as_str(), clock.frame, i64::try_from(clock.at_ms).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }

    /// The program clock last kept for a space, if any.
    pub fn program_clock(&self, id: &SpaceId) -> Result<Option<ProgramClock>, StoreError> {
        let found = self
            .conn()
            .query_row(
                "SELECT frame, at_ms FROM program_clocks WHERE space = ?1",
                [id.as_str()],
                |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        Ok(found.map(|(frame, at_ms)| ProgramClock::new(frame, u64::try_from(at_ms).unwrap_or(0))))
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
                duration_ms, bytes, state, host, part_of, part_number)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
                rec.host.as_ref().map(Identity::as_str),
                rec.part.as_ref().map(|p| p.of.as_str()),
                rec.part.as_ref().map(|p| i64::from(p.number)),
            ],
        )?;
        Ok(())
    }

    /// Every recording, newest first.
    pub fn recordings(&self) -> Result<Vec<RecordingRecord>, StoreError> {
        let sql = format!("SELECT {RECORDING_COLUMNS} ORDER BY started_at DESC, id DESC");
        self.select(&sql, [], recording_row)
    }

    /// The newest `limit` playable recordings (finished or recovered) of spaces stored as
    /// public, newest first; with `host`, only those of spaces that identity hosted (the podcast
    /// feeds). Private spaces are filtered here, before the limit, so they cannot crowd public
    /// recordings out of a feed.
    pub fn public_recordings(
        &self,
        host: Option<&Identity>,
        limit: usize,
    ) -> Result<Vec<RecordingRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} WHERE state != 'recording' AND (?1 IS NULL OR host = ?1)
                AND space IN (SELECT id FROM spaces WHERE public = 1)
             ORDER BY started_at DESC, id DESC LIMIT ?2"
        );
        self.select(&sql, params![host.map(Identity::as_str), limit_sql(limit)], recording_row)
    }

    /// The newest playable recording (finished or recovered) of `space`, if any.
    pub fn newest_recording(&self, space: &SpaceId) -> Result<Option<RecordingRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} WHERE space = ?1 AND state != 'recording'
             ORDER BY started_at DESC, id DESC LIMIT 1"
        );
        Ok(self.select(&sql, [space.as_str()], recording_row)?.pop())
    }

    /// The host of a stored space, if it is stored.
    pub fn space_host(&self, id: &SpaceId) -> Result<Option<Identity>, StoreError> {
        let host: Option<String> = self
            .conn()
            .query_row("SELECT host FROM spaces WHERE id = ?1", [id.as_str()], |r| r.get(0))
            .optional()?;
        host.map(identity).transpose()
    }

    /// Forgets a recording's index entry, transcript and turns (its file is deleted by the
    /// caller).
    pub fn delete_recording(&self, id: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute("DELETE FROM recordings WHERE id = ?1", [id])?;
        conn.execute("DELETE FROM transcripts WHERE recording = ?1", [id])?;
        conn.execute("DELETE FROM turns WHERE recording = ?1", [id])?;
        Ok(())
    }

    /// Saves recording `id`'s transcript (plain text and WebVTT), replacing an earlier one.
    pub fn save_transcript(&self, id: &str, text: &str, vtt: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO transcripts (recording, text, vtt) VALUES (?1, ?2, ?3)",
            params![id, text, vtt],
        )?;
        Ok(())
    }

    /// Which of these recordings have a transcript.
    pub fn with_transcripts(&self, ids: &[&str]) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            let found =
                self.select("SELECT recording FROM transcripts WHERE recording = ?1", [id], |r| {
                    Ok(r.get::<_, String>(0)?)
                })?;
            out.extend(found);
        }
        Ok(out)
    }

    /// Recording `id`'s transcript: (plain text, WebVTT), if it has one.
    pub fn transcript(&self, id: &str) -> Result<Option<(String, String)>, StoreError> {
        let rows =
            self.select("SELECT text, vtt FROM transcripts WHERE recording = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(rows.into_iter().next())
    }

    /// Every recording whose title or transcript contains `query` (a [`SearchQuery`], matched
    /// without regard to ASCII case), newest first.
    pub fn search_recordings(
        &self,
        query: &SearchQuery,
    ) -> Result<Vec<RecordingRecord>, StoreError> {
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} WHERE title LIKE ?1 ESCAPE '\\'
                OR id IN (SELECT recording FROM transcripts WHERE text LIKE ?1 ESCAPE '\\')
             ORDER BY started_at DESC, id DESC"
        );
        self.select(&sql, [query.like_pattern()], recording_row)
    }

    /// One recording.
    pub fn recording(&self, id: &str) -> Result<Option<RecordingRecord>, StoreError> {
        let sql = format!("SELECT {RECORDING_COLUMNS} WHERE id = ?1");
        Ok(self.select(&sql, [id], recording_row)?.pop())
    }
}
