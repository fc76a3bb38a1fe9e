//! SQLite connections of projection.db and the raw prepared statements the
//! bindings drive directly (bind, step, read columns) without going through
//! rusqlite's borrow-scoped `Statement`, so a statement can live in a JS object
//! and be stepped across calls (`iterate`).

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{ffi, Connection, OpenFlags};

use crate::error::{Code, Error, Result};

/// A SQL value as it crosses between SQLite and callers.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// An INTEGER.
    Int(i64),
    /// A REAL.
    Real(f64),
    /// TEXT.
    Text(String),
    /// A BLOB.
    Blob(Vec<u8>),
}

/// A column value borrowed from the current row of a statement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColumnRef<'a> {
    /// SQL NULL.
    Null,
    /// An INTEGER.
    Int(i64),
    /// A REAL.
    Real(f64),
    /// TEXT, as SQLite stores it (UTF-8 bytes).
    Text(&'a [u8]),
    /// A BLOB.
    Blob(&'a [u8]),
}

impl ColumnRef<'_> {
    /// An owned copy (text that is not UTF-8 is replaced lossily; SQLite stores what it was given).
    pub fn to_owned_value(self) -> SqlValue {
        match self {
            ColumnRef::Null => SqlValue::Null,
            ColumnRef::Int(i) => SqlValue::Int(i),
            ColumnRef::Real(f) => SqlValue::Real(f),
            ColumnRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
            ColumnRef::Blob(b) => SqlValue::Blob(b.to_vec()),
        }
    }
}

/// Maps a SQLite (extended) result code and message to athanor's error codes,
/// keeping the extended code on the error.
pub(crate) fn classify(rc: c_int, message: &str) -> Error {
    let primary = rc & 0xff;
    let code = match primary {
        ffi::SQLITE_CONSTRAINT => Code::SqlConstraint,
        ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => Code::SqlBusy,
        ffi::SQLITE_FULL | ffi::SQLITE_IOERR => Code::Io,
        ffi::SQLITE_CORRUPT | ffi::SQLITE_NOTADB => Code::Corrupt,
        ffi::SQLITE_ERROR
            if message.contains("syntax error")
                || message.contains("incomplete input")
                || message.contains("unrecognized token") =>
        {
            Code::SqlSyntax
        }
        ffi::SQLITE_AUTH => {
            if let Some(refusal) = RESERVED_REFUSAL.with(|r| r.borrow_mut().take()) {
                return Error::invalid(refusal).with_sqlite_code(rc);
            }
            Code::Sql
        }
        _ => Code::Sql,
    };
    let hint = match code {
        Code::SqlConstraint => "; the statement was not applied",
        Code::SqlBusy => {
            "; another connection held the write lock past the busy timeout, retry later"
        }
        Code::SqlSyntax => "; fix the SQL text",
        Code::Io if primary == ffi::SQLITE_FULL => {
            // SQLITE_FULL also answers a `max_page_count` limit; the remedy reads the same.
            "; projection.db cannot grow: the disk is full (or a page limit is reached); free space and retry, the statement was not applied"
        }
        Code::Io => "; projection.db could not be read or written (an I/O failure: check the disk and permissions)",
        Code::Corrupt => "; projection.db is damaged: rebuild the projections (delete the file and run them again) or restore it from a backup",
        _ => "",
    };
    Error::new(code, format!("SQLite: {message}{hint}")).with_sqlite_code(rc)
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        let mapped = match &e {
            rusqlite::Error::SqliteFailure(f, msg) => {
                let m = msg.clone().unwrap_or_else(|| f.to_string());
                classify(f.extended_code, &m)
            }
            rusqlite::Error::SqlInputError { error, msg, .. } => classify(error.extended_code, msg),
            other => Error::new(Code::Sql, format!("SQLite: {other}")),
        };
        mapped.with_source(e)
    }
}

/// The error SQLite recorded on `db` for the failed call that returned `rc`.
fn db_error(db: *mut ffi::sqlite3, rc: c_int) -> Error {
    // SAFETY: `db` is an open connection; errmsg returns a string owned by SQLite,
    // valid until the next call on the connection, copied here at once.
    let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
        .to_string_lossy()
        .into_owned();
    // `rc` is the extended code when the connection has extended codes on; otherwise
    // the connection still records the extended one for the same failure.
    let extended = unsafe { ffi::sqlite3_extended_errcode(db) };
    let rc = if extended & 0xff == rc & 0xff {
        extended
    } else {
        rc
    };
    // The same cause the rusqlite path keeps, so an error from a raw statement
    // carries SQLite's own words as its `cause` too.
    let cause = rusqlite::Error::SqliteFailure(ffi::Error::new(rc), Some(msg.clone()));
    classify(rc, &msg).with_source(cause)
}

/// A prepared statement owned outside rusqlite's lifetimes. It must be dropped
/// before its connection: [`SqlConn`] guarantees that for the ones it owns.
pub struct RawStmt {
    ptr: *mut ffi::sqlite3_stmt,
    db: *mut ffi::sqlite3,
    /// Bumped by every reset: an `iterate` cursor from before a reset is stale.
    generation: u32,
    /// BEGIN, COMMIT, END, ROLLBACK, SAVEPOINT or RELEASE (seen by the authorizer at prepare).
    txn_control: bool,
}

// SAFETY: SQLite is built serialized (SQLITE_THREADSAFE=1); a statement is only
// ever used by one thread at a time (its owner holds it behind &mut or a mutex).
unsafe impl Send for RawStmt {}

impl RawStmt {
    /// Whether this is a transaction-control statement (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE).
    pub fn txn_control(&self) -> bool {
        self.txn_control
    }

    /// Number of parameters (`?`, `?NNN`, `:a`, `@a`, `$a`).
    pub fn param_count(&self) -> usize {
        // SAFETY: `ptr` is a live statement (finalized only on drop).
        unsafe { ffi::sqlite3_bind_parameter_count(self.ptr) as usize }
    }

    /// The name of parameter `i` (1-based) including its prefix, or None for `?`.
    pub fn param_name(&self, i: usize) -> Option<&str> {
        // SAFETY: as above; the name lives as long as the statement.
        let p = unsafe { ffi::sqlite3_bind_parameter_name(self.ptr, i as c_int) };
        if p.is_null() {
            None
        } else {
            unsafe { CStr::from_ptr(p) }.to_str().ok()
        }
    }

    /// Like [`RawStmt::param_name`] but the raw NUL-terminated C string (null for `?`),
    /// for callers that hand it on without copying.
    pub fn param_name_ptr(&self, i: usize) -> *const std::ffi::c_char {
        // SAFETY: live statement; SQLite owns the string for the statement's lifetime.
        unsafe { ffi::sqlite3_bind_parameter_name(self.ptr, i as c_int) }
    }

    /// The raw NUL-terminated name of result column `i` (valid until the statement is finalized).
    pub fn column_name_ptr(&self, i: usize) -> *const std::ffi::c_char {
        unsafe { ffi::sqlite3_column_name(self.ptr, i as c_int) }
    }

    /// The 1-based index of a named parameter, trying the `:`, `@` and `$` prefixes; 0 if absent.
    pub fn param_index(&self, name: &str) -> usize {
        for prefix in [":", "@", "$"] {
            let Ok(c) = CString::new(format!("{prefix}{name}")) else {
                return 0;
            };
            // SAFETY: live statement, NUL-terminated name.
            let i = unsafe { ffi::sqlite3_bind_parameter_index(self.ptr, c.as_ptr()) };
            if i > 0 {
                return i as usize;
            }
        }
        0
    }

    fn check(&self, rc: c_int) -> Result<()> {
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(db_error(self.db, rc))
        }
    }

    /// Binds NULL to parameter `i` (1-based).
    pub fn bind_null(&self, i: usize) -> Result<()> {
        self.check(unsafe { ffi::sqlite3_bind_null(self.ptr, i as c_int) })
    }

    /// Binds an integer.
    pub fn bind_i64(&self, i: usize, v: i64) -> Result<()> {
        self.check(unsafe { ffi::sqlite3_bind_int64(self.ptr, i as c_int, v) })
    }

    /// Binds a float.
    pub fn bind_f64(&self, i: usize, v: f64) -> Result<()> {
        self.check(unsafe { ffi::sqlite3_bind_double(self.ptr, i as c_int, v) })
    }

    /// Binds UTF-8 text (copied by SQLite).
    pub fn bind_text(&self, i: usize, v: &[u8]) -> Result<()> {
        // SAFETY: SQLITE_TRANSIENT makes SQLite copy the bytes before returning.
        self.check(unsafe {
            ffi::sqlite3_bind_text64(
                self.ptr,
                i as c_int,
                v.as_ptr().cast(),
                v.len() as u64,
                ffi::SQLITE_TRANSIENT(),
                ffi::SQLITE_UTF8 as u8,
            )
        })
    }

    /// Binds a blob (copied by SQLite).
    pub fn bind_blob(&self, i: usize, v: &[u8]) -> Result<()> {
        // SAFETY: as above. A zero-length blob needs a non-null pointer to stay a blob.
        let p = if v.is_empty() {
            [0u8; 1].as_ptr()
        } else {
            v.as_ptr()
        };
        self.check(unsafe {
            ffi::sqlite3_bind_blob64(
                self.ptr,
                i as c_int,
                p.cast(),
                v.len() as u64,
                ffi::SQLITE_TRANSIENT(),
            )
        })
    }

    /// Binds any value.
    pub fn bind_value(&self, i: usize, v: &SqlValue) -> Result<()> {
        match v {
            SqlValue::Null => self.bind_null(i),
            SqlValue::Int(n) => self.bind_i64(i, *n),
            SqlValue::Real(f) => self.bind_f64(i, *f),
            SqlValue::Text(s) => self.bind_text(i, s.as_bytes()),
            SqlValue::Blob(b) => self.bind_blob(i, b),
        }
    }

    /// Advances: `true` when a row is available, `false` when done. On error the
    /// statement is reset, so it can be run again.
    pub fn step(&mut self) -> Result<bool> {
        // SAFETY: live statement.
        let rc = unsafe { ffi::sqlite3_step(self.ptr) };
        match rc {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            _ => {
                let e = db_error(self.db, rc);
                self.reset();
                Err(e)
            }
        }
    }

    /// Resets for another run (keeps bindings) and invalidates open iterations.
    pub fn reset(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        unsafe { ffi::sqlite3_reset(self.ptr) };
    }

    /// Sets every parameter back to NULL.
    pub fn clear_bindings(&self) {
        unsafe { ffi::sqlite3_clear_bindings(self.ptr) };
    }

    /// Changes when the last reset happened (see `reset`).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Number of result columns (0 for statements that return no rows).
    pub fn column_count(&self) -> usize {
        unsafe { ffi::sqlite3_column_count(self.ptr) as usize }
    }

    /// The name of result column `i` (0-based).
    pub fn column_name(&self, i: usize) -> &str {
        let p = unsafe { ffi::sqlite3_column_name(self.ptr, i as c_int) };
        if p.is_null() {
            ""
        } else {
            unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
        }
    }

    /// The value of column `i` of the current row; valid until the next step/reset.
    pub fn column(&self, i: usize) -> ColumnRef<'_> {
        let c = i as c_int;
        // SAFETY: called while the statement is on a row (after `step` returned true);
        // text/blob pointers are valid until the next step, reset or type conversion.
        unsafe {
            match ffi::sqlite3_column_type(self.ptr, c) {
                ffi::SQLITE_INTEGER => ColumnRef::Int(ffi::sqlite3_column_int64(self.ptr, c)),
                ffi::SQLITE_FLOAT => ColumnRef::Real(ffi::sqlite3_column_double(self.ptr, c)),
                ffi::SQLITE_TEXT => {
                    let p = ffi::sqlite3_column_text(self.ptr, c);
                    let n = ffi::sqlite3_column_bytes(self.ptr, c) as usize;
                    ColumnRef::Text(if p.is_null() {
                        &[]
                    } else {
                        std::slice::from_raw_parts(p, n)
                    })
                }
                ffi::SQLITE_BLOB => {
                    let p = ffi::sqlite3_column_blob(self.ptr, c) as *const u8;
                    let n = ffi::sqlite3_column_bytes(self.ptr, c) as usize;
                    ColumnRef::Blob(if p.is_null() {
                        &[]
                    } else {
                        std::slice::from_raw_parts(p, n)
                    })
                }
                _ => ColumnRef::Null,
            }
        }
    }

    /// Whether the statement leaves the database unchanged (SELECT and friends).
    pub fn readonly(&self) -> bool {
        unsafe { ffi::sqlite3_stmt_readonly(self.ptr) != 0 }
    }

    /// Rows changed by the most recent INSERT/UPDATE/DELETE on this connection.
    pub fn changes(&self) -> i64 {
        unsafe { ffi::sqlite3_changes64(self.db) }
    }

    /// Rowid of the most recent successful INSERT on this connection.
    pub fn last_insert_rowid(&self) -> i64 {
        unsafe { ffi::sqlite3_last_insert_rowid(self.db) }
    }

    /// Runs to completion after binding `params` positionally; returns the rows changed.
    pub fn execute(&mut self, params: &[SqlValue]) -> Result<i64> {
        self.reset();
        for (i, p) in params.iter().enumerate() {
            self.bind_value(i + 1, p)?;
        }
        while self.step()? {}
        let n = self.changes();
        self.reset();
        Ok(n)
    }
}

impl Drop for RawStmt {
    fn drop(&mut self) {
        // SAFETY: finalized exactly once, before the owning connection closes.
        unsafe { ffi::sqlite3_finalize(self.ptr) };
    }
}

/// What a connection is for; decides its open flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads and writes (handlers, migrations, declarative batches).
    ReadWrite,
    /// The async read pool: opened read-only, so a write statement cannot slip through.
    ReadOnly,
}

/// How long a connection waits for another one's write lock before `ERR_SQL_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Refusal for a transaction-control statement run while athanor owns the transaction.
const OWNED_TXN: &str = "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) is not allowed here: \
     athanor owns the open transaction (db.sql.transaction(), a migration step or a processor batch) and commits or \
     rolls it back itself; nest work with db.sql.transaction(fn), which uses a savepoint";

/// Refusal for a transaction-control statement inside a multi-statement script.
const SCRIPT_TXN: &str = "exec() runs a script of several statements atomically inside a savepoint, so the script \
     cannot hold transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE); drop those statements (the script \
     commits or rolls back as a whole) or wrap the work in db.sql.transaction(fn)";

/// Refusal for any statement run after a statement (`INSERT OR ROLLBACK`, `RAISE(ROLLBACK)`)
/// rolled back the transaction athanor owns: it would run in autocommit mode, outside it.
const LOST_TXN: &str = "a statement (ON CONFLICT ROLLBACK or RAISE(ROLLBACK)) rolled back the transaction athanor \
     opened; nothing of it was written, and no further statement runs until it ends (throw or return from the \
     transaction function, migration step or handler)";

/// Prefix of the tables (and of anything else) athanor keeps in projection.db.
pub const RESERVED_PREFIX: &str = "_athanor_";

thread_local! {
    /// Why the authorizer just refused a statement on this thread, read by [`classify`]
    /// when SQLite reports the refusal (`SQLITE_AUTH`): the authorizer runs synchronously
    /// inside the prepare (or re-prepare) that fails.
    static RESERVED_REFUSAL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// While [`SqlConn::table_access`] prepares a statement on this thread: what the
    /// authorizer saw it read and change.
    static ACCESS: std::cell::RefCell<Option<Vec<TableAccess>>> = const { std::cell::RefCell::new(None) };
}

/// One table (or view) a statement reads or changes, as SQLite's authorizer reports it
/// when the statement is compiled (views', triggers' and foreign keys' bodies included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableAccess {
    /// The table, view or virtual table; empty for what is not one table's (a PRAGMA,
    /// ATTACH, DETACH, or ANALYZE/REINDEX of everything).
    pub table: String,
    /// Whether the statement changes it (rows or schema), else only reads it.
    pub write: bool,
}

/// What an authorizer action reads or changes.
fn access_of(action: &AuthAction<'_>) -> Option<TableAccess> {
    use AuthAction as A;
    let (table, write) = match *action {
        A::Read { table_name, .. } => (table_name, false),
        A::Select | A::Function { .. } | A::Transaction { .. } | A::Savepoint { .. } => {
            return None
        }
        A::Recursive => return None,
        A::Analyze { table_name } => (table_name, true),
        ref other => match changed_objects(other) {
            // An index or trigger counts as a change of the table it is on.
            [_, Some(table)] | [Some(table), None] => (table, true),
            // PRAGMA, ATTACH, DETACH, REINDEX, ...: not one table's.
            [None, None] => ("", true),
        },
    };
    // SQLite's own tables (the schema, AUTOINCREMENT counters, statistics) change with
    // the action that names the user's table; a statement that names only them (reading
    // the schema) names no table of the user's, which needs a grant on all of them.
    if table.len() >= 7 && table.as_bytes()[..7].eq_ignore_ascii_case(b"sqlite_") {
        return None;
    }
    Some(TableAccess {
        table: table.to_string(),
        write,
    })
}

fn is_reserved(name: &str) -> bool {
    name.len() >= RESERVED_PREFIX.len()
        && name.as_bytes()[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes())
}

/// The reserved object an action would change, if any: writes to a table, and any
/// schema change that names one (as the object or as the table it is on).
fn reserved_target<'a>(action: &AuthAction<'a>) -> Option<&'a str> {
    changed_objects(action)
        .into_iter()
        .flatten()
        .find(|n| is_reserved(n))
}

/// What an action changes: a table (rows or schema), or an index or trigger and the
/// table it is on, or a view; `[None, None]` when it changes no named object.
fn changed_objects<'a>(action: &AuthAction<'a>) -> [Option<&'a str>; 2] {
    use AuthAction as A;
    match *action {
        A::Insert { table_name }
        | A::Update { table_name, .. }
        | A::Delete { table_name }
        | A::CreateTable { table_name }
        | A::CreateTempTable { table_name }
        | A::DropTable { table_name }
        | A::DropTempTable { table_name }
        | A::AlterTable { table_name, .. }
        | A::CreateVtable { table_name, .. }
        | A::DropVtable { table_name, .. } => [Some(table_name), None],
        A::CreateIndex {
            index_name,
            table_name,
        }
        | A::CreateTempIndex {
            index_name,
            table_name,
        }
        | A::DropIndex {
            index_name,
            table_name,
        }
        | A::DropTempIndex {
            index_name,
            table_name,
        } => [Some(index_name), Some(table_name)],
        A::CreateTrigger {
            trigger_name,
            table_name,
        }
        | A::CreateTempTrigger {
            trigger_name,
            table_name,
        }
        | A::DropTrigger {
            trigger_name,
            table_name,
        }
        | A::DropTempTrigger {
            trigger_name,
            table_name,
        } => [Some(trigger_name), Some(table_name)],
        A::CreateView { view_name }
        | A::CreateTempView { view_name }
        | A::DropView { view_name }
        | A::DropTempView { view_name } => [Some(view_name), None],
        _ => [None, None],
    }
}

fn reserved_refusal(name: &str, accessor: Option<&str>) -> String {
    let via = match accessor {
        Some(t) => format!(
            " (the change is made by trigger or view {t:?}: drop it with DROP TRIGGER/DROP VIEW)"
        ),
        None => String::new(),
    };
    format!(
        "SQL that changes athanor's own tables ({RESERVED_PREFIX}*: cursors, dead letters, migrations, format version) is refused: \
         {name:?}{via}; read them with SELECT, and change them through the API (processor.deadLetters, processor.rebuild(), db.migrations)"
    )
}

/// A transaction level athanor opened on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// `BEGIN` / `BEGIN IMMEDIATE`: the connection was in autocommit mode.
    Top,
    /// `SAVEPOINT _athanor_sp<n>`: a transaction was already open.
    Savepoint(usize),
}

/// One SQLite connection to projection.db plus the raw statements prepared on it.
pub struct SqlConn {
    // Declared before `conn`: statements are finalized before the connection closes.
    stmts: Vec<Option<RawStmt>>,
    free: Vec<u32>,
    /// Levels opened by [`SqlConn::begin_owned`], outermost first. While any is open,
    /// user statements may not end, nest or restart transactions.
    owned: Vec<Level>,
    /// Set when a statement was refused for transaction control while `owned` was not empty
    /// (so a caller that swallowed the error can still be told).
    violated: bool,
    /// Set by the authorizer when the statement being prepared controls transactions.
    saw_txn_control: Arc<AtomicBool>,
    /// Set while athanor's own bookkeeping runs ([`SqlConn::as_athanor`]): only then may a
    /// statement change an `_athanor_*` table.
    athanor: Arc<AtomicBool>,
    conn: Connection,
}

/// Page cache of each connection, in KiB (SQLite's default is 2 MiB): full-text and
/// other index reads find their pages here instead of copying them from the OS on every
/// query. better-sqlite3 builds SQLite with the same default.
const CACHE_KIB: i64 = 16_000;

/// Process-wide SQLite settings, applied once before SQLite initializes (a no-op after:
/// `sqlite3_config` then answers SQLITE_MISUSE, which is ignored). Memory statistics off:
/// with them on, every allocation SQLite makes takes a global mutex (FTS5 allocates per
/// matched row); athanor reads neither `sqlite3_memory_used` nor a soft heap limit.
pub(crate) fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is called with the documented argument of
        // SQLITE_CONFIG_MEMSTATUS (one int), before any connection of this process is
        // opened through athanor; if SQLite is already initialized it changes nothing.
        let off: std::os::raw::c_int = 0;
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, off);
        }
    });
}

/// Whether `path` is a namespace's projection.db (`<dir>/namespaces/<id>/projection.db`).
fn in_namespace(path: &Path) -> bool {
    path.parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .is_some_and(|n| n == "namespaces")
}

impl SqlConn {
    /// Opens `path` with the pragmas every athanor connection uses.
    pub fn open(path: &Path, role: Role) -> Result<SqlConn> {
        configure_sqlite();
        let flags = match role {
            Role::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            Role::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| {
            let e = Error::from(e);
            Error::new(
                Code::Io,
                format!("cannot open {}: {}", path.display(), e.message),
            )
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL lets the read pool read while a processor writes; NORMAL sync is enough
        // for exactly-once (a projection's effects and its cursor commit or roll back
        // together; a power loss can only lose a suffix, which is replayed).
        if role == Role::ReadWrite {
            // query_row, not pragma_update: journal_mode returns a row, and a statement
            // left on a row would keep a read snapshot open on this connection.
            let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        }
        conn.execute_batch(&format!(
            "PRAGMA foreign_keys = ON; PRAGMA cache_size = -{CACHE_KIB}"
        ))?;
        conn.set_prepared_statement_cache_capacity(64);
        // For transaction control the authorizer only records what it sees: the verdict
        // depends on where a statement runs (inside a transaction athanor owns or not),
        // not where it was prepared, so it is checked at run time. Changes to athanor's
        // tables are refused here, at prepare, which also covers what a trigger or a view
        // would do (SQLite compiles their bodies into the statement that fires them).
        let saw_txn_control = Arc::new(AtomicBool::new(false));
        let athanor = Arc::new(AtomicBool::new(false));
        let confined = in_namespace(path);
        let flag = saw_txn_control.clone();
        let own = athanor.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            ACCESS.with(|a| {
                if let Some(seen) = a.borrow_mut().as_mut() {
                    if let Some(t) = access_of(&ctx.action) {
                        if !seen.contains(&t) {
                            seen.push(t);
                        }
                    }
                }
            });
            if matches!(
                ctx.action,
                AuthAction::Transaction { .. } | AuthAction::Savepoint { .. }
            ) {
                flag.store(true, Ordering::Relaxed);
            }
            // A namespace's connection reaches no other file: ATTACH would read another
            // namespace's (or the database's) projection.db.
            if confined && matches!(ctx.action, AuthAction::Attach { .. }) {
                RESERVED_REFUSAL.with(|r| {
                    *r.borrow_mut() = Some("a namespace's SQL connection cannot ATTACH another database: a namespace sees only its own projection.db".to_string())
                });
                return Authorization::Deny;
            }
            if let Some(name) = reserved_target(&ctx.action) {
                if !own.load(Ordering::Relaxed) {
                    let refusal = reserved_refusal(name, ctx.accessor);
                    RESERVED_REFUSAL.with(|r| *r.borrow_mut() = Some(refusal));
                    return Authorization::Deny;
                }
            }
            Authorization::Allow
        }))?;
        Ok(SqlConn {
            stmts: Vec::new(),
            free: Vec::new(),
            owned: Vec::new(),
            violated: false,
            saw_txn_control,
            athanor,
            conn,
        })
    }

    /// Runs athanor's own bookkeeping `f` on this connection: the only code allowed to
    /// change the `_athanor_*` tables. Statements prepared (or re-prepared by SQLite
    /// after a schema change) inside `f` may write them; no user code runs inside `f`.
    pub fn as_athanor<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        struct Reset<'a>(&'a AtomicBool, bool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(self.1, Ordering::Relaxed);
            }
        }
        let was = self.athanor.swap(true, Ordering::Relaxed);
        let _reset = Reset(&self.athanor, was);
        f(&self.conn)
    }

    /// The rusqlite connection, for setup code.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Prepares the first statement of the NUL-terminated text at `*sql` and moves
    /// `*sql` past it. Returns `None` when only whitespace and comments remain. The text
    /// is never copied (SQLite copies a text that is not NUL-terminated, which made
    /// running a long script one statement at a time quadratic).
    ///
    /// # Safety
    /// `*sql` must point into a live NUL-terminated string.
    unsafe fn prepare_next(&self, sql: &mut *const c_char, flags: u32) -> Result<Option<RawStmt>> {
        // SAFETY: `handle` is the live connection.
        let db = unsafe { self.conn.handle() };
        loop {
            // SAFETY: the caller guarantees `*sql` is NUL-terminated.
            if unsafe { **sql } == 0 {
                return Ok(None);
            }
            let mut stmt = ptr::null_mut();
            let mut tail = ptr::null();
            self.saw_txn_control.store(false, Ordering::Relaxed);
            // SAFETY: live connection, NUL-terminated input, valid out-pointers.
            let rc = unsafe { ffi::sqlite3_prepare_v3(db, *sql, -1, flags, &mut stmt, &mut tail) };
            if rc != ffi::SQLITE_OK {
                return Err(db_error(db, rc));
            }
            if !stmt.is_null() {
                *sql = tail;
                return Ok(Some(RawStmt {
                    ptr: stmt,
                    db,
                    generation: 0,
                    txn_control: self.saw_txn_control.load(Ordering::Relaxed),
                }));
            }
            if tail == *sql {
                return Ok(None);
            }
            // An empty statement (a lone `;`): go on after it.
            *sql = tail;
        }
    }

    /// Prepares one statement and returns its handle. Refuses text holding more
    /// than one statement (use `exec` for scripts).
    pub fn prepare_raw(&self, sql: &str) -> Result<RawStmt> {
        let c = CString::new(sql).map_err(|_| Error::invalid("SQL text must not contain NUL"))?;
        let mut p = c.as_ptr();
        // SAFETY: `p` points into `c`, alive for the whole call.
        let raw = unsafe { self.prepare_next(&mut p, ffi::SQLITE_PREPARE_PERSISTENT) }?
            .ok_or_else(|| {
                Error::invalid("the SQL text holds no statement (only whitespace or comments)")
            })?;
        if !only_trivia(&c.as_bytes()[offset(&c, p)..]) {
            return Err(Error::invalid(
                "the SQL text holds more than one statement; prepare them one by one or use exec() for a script",
            ));
        }
        Ok(raw)
    }

    /// The tables one statement reads and changes (see [`TableAccess`]), in the order
    /// SQLite compiles them; the statement is compiled, not run, and not kept.
    pub fn table_access(&self, sql: &str) -> Result<Vec<TableAccess>> {
        ACCESS.with(|a| *a.borrow_mut() = Some(Vec::new()));
        let compiled = self.prepare_raw(sql);
        let mut seen = ACCESS.with(|a| a.borrow_mut().take()).unwrap_or_default();
        let stmt = compiled?;
        // What changes the file without naming a table (VACUUM) is a change of everything.
        if !stmt.readonly() && !seen.iter().any(|t| t.write) {
            seen.push(TableAccess {
                table: String::new(),
                write: true,
            });
        }
        Ok(seen)
    }

    /// Prepares a statement kept by this connection; returns its id.
    pub fn prepare(&mut self, sql: &str) -> Result<u32> {
        let raw = self.prepare_raw(sql)?;
        Ok(match self.free.pop() {
            Some(id) => {
                self.stmts[id as usize] = Some(raw);
                id
            }
            None => {
                self.stmts.push(Some(raw));
                (self.stmts.len() - 1) as u32
            }
        })
    }

    /// A statement prepared by [`SqlConn::prepare`].
    pub fn stmt(&mut self, id: u32) -> Result<&mut RawStmt> {
        self.stmts
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| {
                Error::invalid("this statement was finalized; prepare it again with sql.prepare()")
            })
    }

    /// A statement prepared by [`SqlConn::prepare`], about to run a user's call: refused
    /// when it would end or nest a transaction athanor owns, or run outside one that a
    /// statement rolled back.
    pub fn runnable_stmt(&mut self, id: u32) -> Result<&mut RawStmt> {
        let txn_control = self.stmt(id)?.txn_control;
        self.check_runnable(txn_control)?;
        self.stmt(id)
    }

    fn check_runnable(&mut self, txn_control: bool) -> Result<()> {
        if self.owned.is_empty() {
            return Ok(());
        }
        if txn_control {
            self.violated = true;
            return Err(Error::invalid(OWNED_TXN));
        }
        if !self.in_transaction() {
            return Err(Error::new(Code::Sql, LOST_TXN));
        }
        Ok(())
    }

    /// Finalizes a statement; its id may be reused.
    pub fn finalize(&mut self, id: u32) {
        if let Some(slot) = self.stmts.get_mut(id as usize) {
            if slot.take().is_some() {
                self.free.push(id);
            }
        }
    }

    /// Runs a script of zero or more statements, for athanor's own setup (no checks).
    pub fn exec(&self, sql: &str) -> Result<()> {
        Ok(self.conn.execute_batch(sql)?)
    }

    /// Runs a user's script of zero or more statements, in time linear in its length.
    /// A single statement runs as it is (SQLite applies a statement all or nothing); a
    /// script of several runs inside a savepoint, so a failing script changes nothing,
    /// and may not hold transaction control.
    pub fn exec_script(&mut self, sql: &str) -> Result<()> {
        let c = CString::new(sql).map_err(|_| Error::invalid("SQL text must not contain NUL"))?;
        let mut p = c.as_ptr();
        // SAFETY (all prepare_next calls below): `p` points into `c`, alive until return.
        let Some(mut first) = (unsafe { self.prepare_next(&mut p, 0) })? else {
            return Ok(());
        };
        if only_trivia(&c.as_bytes()[offset(&c, p)..]) {
            self.check_runnable(first.txn_control)?;
            while first.step()? {}
            return Ok(());
        }
        if first.txn_control {
            return Err(Error::invalid(SCRIPT_TXN));
        }
        self.check_runnable(false)?;
        self.begin_owned(false)?;
        let run = || -> Result<()> {
            while first.step()? {}
            drop(first);
            while let Some(mut stmt) = unsafe { self.prepare_next(&mut p, 0) }? {
                if stmt.txn_control {
                    return Err(Error::invalid(SCRIPT_TXN));
                }
                while stmt.step()? {}
            }
            Ok(())
        };
        let r = run();
        let end = self.end_owned(r.is_ok());
        r.and(end)
    }

    /// Whether a transaction is open on this connection.
    pub fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Whether athanor holds a transaction level open on this connection.
    pub fn owns_transaction(&self) -> bool {
        !self.owned.is_empty()
    }

    /// Whether a statement was refused for transaction control since the last call (clears it).
    pub fn take_violation(&mut self) -> bool {
        std::mem::take(&mut self.violated)
    }

    /// Runs one of athanor's own transaction statements (cached plan).
    fn run_internal(&self, sql: &str) -> Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Opens a transaction level athanor owns: `BEGIN` (`BEGIN IMMEDIATE` when
    /// `immediate`) in autocommit mode, otherwise a savepoint nested in the open
    /// transaction. Close it with [`SqlConn::end_owned`].
    pub fn begin_owned(&mut self, immediate: bool) -> Result<()> {
        let level = if self.in_transaction() {
            let n = self.owned.len() + 1;
            self.run_internal(&format!("SAVEPOINT _athanor_sp{n}"))?;
            Level::Savepoint(n)
        } else {
            self.run_internal(if immediate {
                "BEGIN IMMEDIATE"
            } else {
                "BEGIN"
            })?;
            Level::Top
        };
        self.owned.push(level);
        Ok(())
    }

    /// Closes the innermost level opened by [`SqlConn::begin_owned`]: commits (or
    /// releases) it when `commit`, otherwise rolls it back. A commit that fails rolls
    /// the level back, so either way the level is gone when this returns.
    pub fn end_owned(&mut self, commit: bool) -> Result<()> {
        let Some(level) = self.owned.pop() else {
            return Err(Error::invalid(
                "no transaction opened by athanor is open on this connection",
            ));
        };
        if !self.in_transaction() {
            // A statement (ON CONFLICT ROLLBACK, RAISE(ROLLBACK)) already rolled it all back.
            return if commit {
                Err(Error::new(Code::Sql, LOST_TXN))
            } else {
                Ok(())
            };
        }
        match level {
            Level::Top if commit => self.run_internal("COMMIT").inspect_err(|_| {
                let _ = self.run_internal("ROLLBACK");
            }),
            Level::Top => self.run_internal("ROLLBACK"),
            Level::Savepoint(n) => {
                if !commit {
                    self.run_internal(&format!("ROLLBACK TO _athanor_sp{n}"))?;
                }
                self.run_internal(&format!("RELEASE _athanor_sp{n}"))
            }
        }
    }
}

/// Byte offset of `p` inside `c`.
fn offset(c: &CStr, p: *const c_char) -> usize {
    (p as usize) - (c.as_ptr() as usize)
}

impl Drop for SqlConn {
    fn drop(&mut self) {
        self.stmts.clear();
    }
}

/// Whether the rest of a SQL text is only whitespace, `;` and comments.
fn only_trivia(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b';' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                match b[i + 2..].windows(2).position(|w| w == b"*/") {
                    Some(end) => i += end + 4,
                    None => return true,
                }
            }
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivia() {
        assert!(only_trivia(b"  ; -- c\n /* x */ ;"));
        assert!(!only_trivia(b"; select 1"));
    }
}
