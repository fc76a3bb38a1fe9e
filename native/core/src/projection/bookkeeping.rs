//! athanor's own tables in projection.db, and the only code that writes them: the
//! format version (`_athanor_meta`), processor cursors (`_athanor_cursors`), dead
//! letters (`_athanor_dead_letters`) and the migration history (`_athanor_migrations`).
//!
//! Every function runs on the caller's connection, inside whatever transaction is open
//! there, so a batch's effects, its cursor and its dead letters commit or roll back
//! together (DESIGN.md invariant 4). Each runs under [`SqlConn::as_athanor`]: the
//! connection's authorizer refuses changes to these tables to every other statement.

use rusqlite::{params, OptionalExtension, Row};

use super::sql::SqlConn;
use crate::error::{Code, Error, Result};

/// Format version of athanor's tables in projection.db, recorded in `_athanor_meta`.
pub const PROJECTION_FORMAT: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _athanor_meta(key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _athanor_cursors(
  name TEXT PRIMARY KEY,
  last_event_id INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _athanor_dead_letters(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  processor TEXT NOT NULL,
  event_id INTEGER NOT NULL,
  event_type TEXT NOT NULL,
  error_code TEXT NOT NULL,
  error TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  first_failed_at INTEGER NOT NULL,
  last_failed_at INTEGER NOT NULL,
  UNIQUE(processor, event_id)
);
CREATE TABLE IF NOT EXISTS _athanor_migrations(
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  checksum TEXT NOT NULL,
  applied_at INTEGER NOT NULL
);
";

const CURSOR_GET: &str = "SELECT last_event_id FROM _athanor_cursors WHERE name = ?1";
const CURSOR_ALL: &str = "SELECT name, last_event_id FROM _athanor_cursors ORDER BY name";
const CURSOR_SET: &str = "INSERT INTO _athanor_cursors(name, last_event_id, updated_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT(name) DO UPDATE SET last_event_id = excluded.last_event_id, updated_at = excluded.updated_at";
const DEAD_LETTER_UPSERT: &str = "INSERT INTO _athanor_dead_letters(processor, event_id, event_type, error_code, error, attempts, first_failed_at, last_failed_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) \
     ON CONFLICT(processor, event_id) DO UPDATE SET error_code = excluded.error_code, error = excluded.error, \
     attempts = attempts + excluded.attempts, last_failed_at = excluded.last_failed_at";
const DEAD_LETTER_COLUMNS: &str = "id, processor, event_id, event_type, error_code, error, attempts, first_failed_at, last_failed_at";

/// Creates athanor's tables if needed (inside the caller's transaction) and checks the
/// recorded format version, refusing a file written by a newer athanor.
pub fn init_schema(conn: &SqlConn) -> Result<()> {
    conn.as_athanor(|c| {
        c.execute_batch(SCHEMA)?;
        let found: Option<i64> = c
            .query_row(
                "SELECT value FROM _athanor_meta WHERE key = 'format_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match found {
            None => {
                c.execute(
                    "INSERT INTO _athanor_meta(key, value) VALUES ('format_version', ?1)",
                    [PROJECTION_FORMAT],
                )?;
            }
            Some(v) if v > PROJECTION_FORMAT => {
                return Err(Error::new(
                    Code::Version,
                    format!("projection.db was written by a newer athanor (format {v}, this build reads {PROJECTION_FORMAT}); upgrade athanor"),
                ))
            }
            Some(_) => {}
        }
        Ok(())
    })
}

/// Reads a processor's cursor (0 when it never ran).
pub fn read_cursor(conn: &SqlConn, name: &str) -> Result<u64> {
    conn.as_athanor(|c| {
        let v: Option<i64> = c
            .prepare_cached(CURSOR_GET)?
            .query_row([name], |r| r.get(0))
            .optional()?;
        Ok(v.unwrap_or(0) as u64)
    })
}

/// Every processor's cursor, by name (retention holds the log below the lowest).
pub fn read_cursors(conn: &SqlConn) -> Result<Vec<(String, u64)>> {
    conn.as_athanor(|c| {
        let mut st = c.prepare_cached(CURSOR_ALL)?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// Moves a processor's cursor to `id`, stamped `at_ms` (the store's clock).
pub fn write_cursor(conn: &SqlConn, name: &str, id: u64, at_ms: u64) -> Result<()> {
    conn.as_athanor(|c| {
        c.prepare_cached(CURSOR_SET)?
            .execute(params![name, id as i64, at_ms as i64])?;
        Ok(())
    })
}

/// Drops the cursor and dead letters of one processor (`Some(name)`) or of every
/// processor (`None`): what a rebuild forgets before it replays the log.
pub fn reset_processors(conn: &SqlConn, name: Option<&str>) -> Result<()> {
    conn.as_athanor(|c| {
        match name {
            Some(n) => {
                c.prepare_cached("DELETE FROM _athanor_cursors WHERE name = ?1")?
                    .execute([n])?;
                c.prepare_cached("DELETE FROM _athanor_dead_letters WHERE processor = ?1")?
                    .execute([n])?;
            }
            None => {
                c.execute_batch("DELETE FROM _athanor_cursors; DELETE FROM _athanor_dead_letters")?
            }
        }
        Ok(())
    })
}

/// A failed event kept for a processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id (stable; the key `retry`/`remove` take).
    pub id: i64,
    /// The processor it belongs to.
    pub processor: String,
    /// The event that failed.
    pub event_id: u64,
    /// That event's type.
    pub event_type: String,
    /// The error code of the last failure.
    pub error_code: String,
    /// The message of the last failure.
    pub error: String,
    /// How many times it failed.
    pub attempts: i64,
    /// When it first failed (milliseconds since the Unix epoch).
    pub first_failed_at: i64,
    /// When it last failed.
    pub last_failed_at: i64,
}

fn dead_letter_of(r: &Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        processor: r.get(1)?,
        event_id: r.get::<_, i64>(2)? as u64,
        event_type: r.get(3)?,
        error_code: r.get(4)?,
        error: r.get(5)?,
        attempts: r.get(6)?,
        first_failed_at: r.get(7)?,
        last_failed_at: r.get(8)?,
    })
}

/// How an event failed, as a dead letter records it.
#[derive(Debug, Clone, Copy)]
pub struct Failed<'a> {
    /// The error code.
    pub code: &'a str,
    /// The error message.
    pub message: &'a str,
    /// When (milliseconds since the Unix epoch).
    pub at_ms: u64,
}

/// Records that `processor` gave up on an event after `attempts` failures; a dead
/// letter already kept for that event (a crash between recording it and the commit
/// that moved the cursor) adds the attempts instead.
pub fn record_dead_letter(
    conn: &SqlConn,
    processor: &str,
    event_id: u64,
    event_type: &str,
    attempts: u32,
    failed: Failed<'_>,
) -> Result<()> {
    conn.as_athanor(|c| {
        c.prepare_cached(DEAD_LETTER_UPSERT)?.execute(params![
            processor,
            event_id as i64,
            event_type,
            failed.code,
            failed.message,
            attempts,
            failed.at_ms as i64
        ])?;
        Ok(())
    })
}

/// Counts one more failed retry of dead letter `id`, with its error and time.
pub fn dead_letter_failed_again(conn: &SqlConn, id: i64, failed: Failed<'_>) -> Result<()> {
    conn.as_athanor(|c| {
        c.prepare_cached(
            "UPDATE _athanor_dead_letters SET attempts = attempts + 1, error_code = ?2, error = ?3, last_failed_at = ?4 WHERE id = ?1",
        )?
        .execute(params![id, failed.code, failed.message, failed.at_ms as i64])?;
        Ok(())
    })
}

/// Deletes dead letter `id` of `processor`; returns whether it existed.
pub fn remove_dead_letter(conn: &SqlConn, processor: &str, id: i64) -> Result<bool> {
    conn.as_athanor(|c| {
        let n = c
            .prepare_cached("DELETE FROM _athanor_dead_letters WHERE id = ?1 AND processor = ?2")?
            .execute(params![id, processor])?;
        Ok(n > 0)
    })
}

/// Deletes every dead letter of `processor`; returns how many.
pub fn remove_dead_letters(conn: &SqlConn, processor: &str) -> Result<u64> {
    conn.as_athanor(|c| {
        let n = c
            .prepare_cached("DELETE FROM _athanor_dead_letters WHERE processor = ?1")?
            .execute([processor])?;
        Ok(n as u64)
    })
}

fn select(filter: &str) -> String {
    format!("SELECT {DEAD_LETTER_COLUMNS} FROM _athanor_dead_letters WHERE processor = ?1 {filter}")
}

/// Dead letters of `processor`, oldest event first: at most `limit` (negative: all)
/// after skipping `offset`.
pub fn dead_letters(
    conn: &SqlConn,
    processor: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<DeadLetter>> {
    conn.as_athanor(|c| {
        let sql = select("ORDER BY event_id LIMIT ?2 OFFSET ?3");
        let mut st = c.prepare_cached(&sql)?;
        let rows = st
            .query_map(params![processor, limit, offset], dead_letter_of)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
}

/// Dead letter `id` of `processor`, if it has one.
pub fn dead_letter(conn: &SqlConn, processor: &str, id: i64) -> Result<Option<DeadLetter>> {
    conn.as_athanor(|c| {
        let sql = select("AND id = ?2");
        Ok(c.prepare_cached(&sql)?
            .query_row(params![processor, id], dead_letter_of)
            .optional()?)
    })
}

/// The dead letter `processor` keeps for event `event_id`, if any.
pub fn dead_letter_for_event(
    conn: &SqlConn,
    processor: &str,
    event_id: u64,
) -> Result<Option<DeadLetter>> {
    conn.as_athanor(|c| {
        let sql = select("AND event_id = ?2");
        Ok(c.prepare_cached(&sql)?
            .query_row(params![processor, event_id as i64], dead_letter_of)
            .optional()?)
    })
}

/// How many dead letters `processor` keeps.
pub fn dead_letter_count(conn: &SqlConn, processor: &str) -> Result<u64> {
    conn.as_athanor(|c| {
        let n: i64 = c
            .prepare_cached("SELECT count(*) FROM _athanor_dead_letters WHERE processor = ?1")?
            .query_row([processor], |r| r.get(0))?;
        Ok(n as u64)
    })
}

/// An applied migration, as the history records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// The checksum of its definition when it was applied.
    pub checksum: String,
    /// When it was applied (milliseconds since the Unix epoch).
    pub applied_at: i64,
}

/// Records that migration `m` was applied (inside the migration's transaction).
pub fn record_migration(conn: &SqlConn, m: &AppliedMigration) -> Result<()> {
    conn.as_athanor(|c| {
        c.prepare_cached(
            "INSERT INTO _athanor_migrations(version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![m.version, m.name, m.checksum, m.applied_at])?;
        Ok(())
    })
}

/// Forgets migration `version` (its down step ran in the same transaction).
pub fn unrecord_migration(conn: &SqlConn, version: i64) -> Result<()> {
    conn.as_athanor(|c| {
        c.prepare_cached("DELETE FROM _athanor_migrations WHERE version = ?1")?
            .execute([version])?;
        Ok(())
    })
}

/// The applied migrations, by version.
pub fn migrations(conn: &SqlConn) -> Result<Vec<AppliedMigration>> {
    conn.as_athanor(|c| {
        let mut st = c.prepare_cached(
            "SELECT version, name, checksum, applied_at FROM _athanor_migrations ORDER BY version",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(AppliedMigration {
                    version: r.get(0)?,
                    name: r.get(1)?,
                    checksum: r.get(2)?,
                    applied_at: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
}
