//! SQL projections: `<dir>/projection.db` (SQLite via rusqlite, WAL), the
//! bookkeeping tables athanor keeps there (`bookkeeping`: format version, processor
//! cursors, dead letters, migration history; their sole writer), the async read pool,
//! and declarative projections executed entirely in Rust on a background connection
//! (`background`).
//!
//! Invariant 4 (DESIGN.md) lives here and in `ts/processing/`: a processor's
//! cursor row is written in the same SQLite transaction as the effects of the
//! events it covers, and read inside that transaction (after `BEGIN IMMEDIATE`
//! took the write lock), so two processes running one processor never both
//! apply an event.

pub mod background;
pub mod bookkeeping;
pub mod declarative;
pub mod sql;

pub use bookkeeping::{read_cursor, write_cursor, PROJECTION_FORMAT};

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::codec::{self, PayloadKind};
use crate::engine::Engine;
use crate::error::{Code, Error, Result};
use sql::{Role, SqlConn, SqlValue};

/// File name of the projection database inside the database directory.
pub const FILE_NAME: &str = "projection.db";

/// Path of projection.db for a database directory.
pub fn file_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Opens `path` (an existing projection.db) read-only, to check or copy it. After a power
/// loss a hot rollback journal (left by the file's creation) must be rolled back, or the
/// WAL recovered, before it can be read, which a read-only connection may not do
/// (SQLITE_READONLY_ROLLBACK, _RECOVERY): a read-write connection (never creating the
/// file) does it first, as any opening for use would.
pub(crate) fn open_for_reading(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::{Connection, ErrorCode, OpenFlags};
    let read_only = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let probe = |c: &Connection| c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()));
    sql::configure_sqlite();
    let conn = Connection::open_with_flags(path, read_only)?;
    match probe(&conn) {
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ReadOnly => {
            drop(conn);
            let writer = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            probe(&writer)?;
            drop(writer);
            Connection::open_with_flags(path, read_only)
        }
        other => other.map(|()| conn),
    }
}

/// Opens the read-write connection of `<dir>/projection.db`, creating the file and
/// athanor's tables if needed and refusing a file written by a newer format.
pub fn open_main(dir: &Path) -> Result<SqlConn> {
    // Two processes opening the file at once can meet SQLITE_BUSY that SQLite returns
    // without waiting (the switch to WAL, a WAL index being rebuilt): the open is tried
    // again, as a whole, until the busy timeout has passed.
    let deadline = std::time::Instant::now() + sql::BUSY_TIMEOUT;
    loop {
        match open_main_once(dir) {
            Err(e) if e.code == Code::SqlBusy && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Page cache of the main connection (`db.sql`, which serves full-text search), in KiB:
/// larger than the other connections' 16 MB because searches of a large index read pages
/// all over it (doclists, and a row size per match for BM25), and each page it keeps is
/// one the next query does not copy from the OS again. At 1,000,000 events (a 232 MiB
/// projection.db) 64 MiB made the bench's searches 6-9 % faster than 16 MB (CPU and wall
/// time, interleaved in one process); `mmap_size` did not measurably help. SQLite
/// allocates the cache as pages are read, so a small database uses little of it.
const MAIN_CACHE_KIB: i64 = 65_536;

fn open_main_once(dir: &Path) -> Result<SqlConn> {
    let conn = SqlConn::open(&file_path(dir), Role::ReadWrite)?;
    conn.conn()
        .execute_batch(&format!("PRAGMA cache_size = -{MAIN_CACHE_KIB}"))?;
    conn.exec("BEGIN IMMEDIATE")?;
    let r = bookkeeping::init_schema(&conn);
    match r {
        Ok(()) => conn.exec("COMMIT")?,
        Err(e) => {
            let _ = conn.exec("ROLLBACK");
            return Err(e);
        }
    }
    Ok(conn)
}

/// An event copied out of the log for a projection batch.
#[derive(Debug, Clone)]
pub struct LogEvent {
    /// The event id.
    pub id: u64,
    /// The commit seq of the transaction that logged it.
    pub commit_seq: u64,
    /// When it was committed (milliseconds since the Unix epoch).
    pub at_ms: u64,
    /// How the payload is encoded.
    pub kind: PayloadKind,
    /// The event type.
    pub event_type: String,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

/// Reads up to `limit` events of namespace `ns` with ids greater than `after`, oldest
/// first, from the newest committed state. Copies them so no LMDB reader is held while
/// SQL runs.
pub fn read_events_after(
    engine: &Engine,
    ns: u32,
    after: u64,
    limit: usize,
) -> Result<Vec<LogEvent>> {
    let store = engine.store();
    let txn = engine.begin_read()?;
    let _g = store.guard();
    let lo = after.saturating_add(1).to_be_bytes();
    let mut out = Vec::with_capacity(limit.min(4096));
    if after == u64::MAX {
        return Ok(out);
    }
    let range = (
        std::ops::Bound::Included(&lo[..]),
        std::ops::Bound::<&[u8]>::Unbounded,
    );
    for item in store.space(ns).events.range(&txn, &range)? {
        if out.len() >= limit {
            break;
        }
        let (k, v) = item?;
        let id = u64::from_be_bytes(
            k.try_into()
                .map_err(|_| Error::corrupt("event key is not 8 bytes"))?,
        );
        let e = codec::decode_event(v)?;
        // Declarative projections read payloads as stored, whatever their schema
        // version (TS refuses one over a type that has upcasters).
        let (kind, _, payload) = e
            .kind
            .split(e.payload)
            .map_err(|x| Error::corrupt(x.message))?;
        out.push(LogEvent {
            id,
            commit_seq: e.commit_seq,
            at_ms: e.at_ms,
            kind,
            event_type: e.event_type.to_string(),
            payload: payload.to_vec(),
        });
    }
    Ok(out)
}

/// The newest event id in the log.
pub fn last_event_id(engine: &Engine) -> Result<u64> {
    let store = engine.store();
    let txn = engine.begin_read()?;
    let _g = store.guard();
    store.last_event_id(&txn)
}

/// Query parameters: positional (`?`, `?NNN`) or named (`:a`, `@a`, `$a`, given without prefix).
#[derive(Debug, Clone, Default)]
pub enum Params {
    #[default]
    /// No parameters.
    None,
    /// `?`/`?NNN` parameters, in order.
    Positional(Vec<SqlValue>),
    /// `:a`/`@a`/`$a` parameters by name (given without the prefix).
    Named(Vec<(String, SqlValue)>),
}

/// Result rows of a query: column names and values in column order.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Each row's values, in column order.
    pub rows: Vec<Vec<SqlValue>>,
}

/// Binds `params` to `stmt`, checking that they cover its parameters exactly.
pub fn bind_params(stmt: &sql::RawStmt, params: &Params) -> Result<()> {
    let n = stmt.param_count();
    match params {
        Params::None if n == 0 => Ok(()),
        Params::None => Err(Error::invalid(format!(
            "the statement has {n} parameter(s) but none were given"
        ))),
        Params::Positional(vals) => {
            if vals.len() != n {
                return Err(Error::invalid(format!(
                    "the statement has {n} parameter(s) but {} were given",
                    vals.len()
                )));
            }
            for (i, v) in vals.iter().enumerate() {
                stmt.bind_value(i + 1, v)?;
            }
            Ok(())
        }
        Params::Named(pairs) => {
            for i in 1..=n {
                let Some(name) = stmt.param_name(i) else {
                    return Err(Error::invalid(
                        "the statement uses positional parameters (?) but named parameters were given",
                    ));
                };
                let bare = &name[1..];
                let v = pairs
                    .iter()
                    .find(|(k, _)| k == bare)
                    .ok_or_else(|| Error::invalid(format!("missing named parameter {bare:?}")))?;
                stmt.bind_value(i, &v.1)?;
            }
            Ok(())
        }
    }
}

/// A small pool of read-only connections for queries run off the JS thread.
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<SqlConn>>,
}

/// Connections kept idle by the pool (more may be open while many queries run).
const POOL_IDLE_MAX: usize = 4;

impl ReadPool {
    /// A pool over `<dir>/projection.db` (which must exist: open the main connection first).
    pub fn new(dir: &Path) -> ReadPool {
        ReadPool {
            path: file_path(dir),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs one read-only statement and returns all its rows. Safe to call from any thread.
    pub fn query(&self, sql: &str, params: &Params) -> Result<Rows> {
        let conn = self.idle.lock().pop();
        let conn = match conn {
            Some(c) => c,
            None => SqlConn::open(&self.path, Role::ReadOnly)?,
        };
        let r = query_on(&conn, sql, params);
        let mut idle = self.idle.lock();
        if idle.len() < POOL_IDLE_MAX {
            idle.push(conn);
        }
        r
    }
}

fn query_on(conn: &SqlConn, sql: &str, params: &Params) -> Result<Rows> {
    let mut stmt = conn.prepare_raw(sql)?;
    if stmt.txn_control() {
        return Err(Error::invalid(
            "db.query() runs one read-only statement on the read pool and cannot control transactions (each query reads its own snapshot); use db.sql for transactions",
        ));
    }
    if !stmt.readonly() {
        return Err(Error::invalid(
            "db.query() runs read-only statements on the read pool; use db.sql.run() for writes",
        ));
    }
    bind_params(&stmt, params)?;
    let ncol = stmt.column_count();
    let columns = (0..ncol).map(|i| stmt.column_name(i).to_string()).collect();
    let mut rows = Vec::new();
    while stmt.step()? {
        rows.push((0..ncol).map(|i| stmt.column(i).to_owned_value()).collect());
    }
    Ok(Rows { columns, rows })
}

#[cfg(test)]
mod tests;

/// Checks projection.db at `path` for [`crate::verify::verify`]: SQLite's own
/// integrity check, and no processor cursor past `last_event_id` (a cursor ahead of
/// the log means the log was lost or replaced). A missing file is fine (no
/// projection ran yet); one SQLite cannot read is `ERR_CORRUPT`.
pub fn verify_file(path: &Path, last_event_id: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let damaged = |what: String| {
        Error::corrupt(format!(
            "{} is damaged: {what}; rebuild the projections (delete the file and run them again) or restore it from a backup",
            path.display()
        ))
    };
    // Ok(Err(problems)) for what integrity_check reports, Ok(Ok(cursors ahead)) otherwise.
    type Found = std::result::Result<Vec<(String, i64)>, String>;
    let check = || -> std::result::Result<Found, rusqlite::Error> {
        let conn = open_for_reading(path)?;
        let problems: Vec<String> = conn
            .prepare("PRAGMA integrity_check(20)")?
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<std::result::Result<_, _>>()?;
        if problems != ["ok"] {
            return Ok(Err(problems.join("; ")));
        }
        let has_cursors: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = '_athanor_cursors'",
            [],
            |r| r.get(0),
        )?;
        if !has_cursors {
            return Ok(Ok(Vec::new()));
        }
        let ahead = conn
            .prepare("SELECT name, last_event_id FROM _athanor_cursors WHERE last_event_id > ?1 ORDER BY name")?
            .query_map([last_event_id as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(Ok(ahead))
    };
    match check() {
        Ok(Ok(ahead)) => match ahead.first() {
            None => Ok(()),
            Some((name, at)) => Err(Error::corrupt(format!(
                "processor {name:?} in {} is at event {at} but the log ends at {last_event_id}: the event log was lost or replaced; restore the database from a backup",
                path.display()
            ))),
        },
        Ok(Err(problems)) => Err(damaged(problems)),
        Err(rusqlite::Error::SqliteFailure(f, msg))
            if matches!(
                f.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            ) =>
        {
            Err(damaged(msg.unwrap_or_else(|| f.to_string())))
        }
        Err(e) => Err(Error::from(e)),
    }
}
