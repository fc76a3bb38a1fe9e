//! Typed engine errors. Every error carries a stable [`Code`] that the bindings
//! expose to JavaScript as the error's `code` property, the foreign error that
//! caused it (heed, rusqlite, io) as its [`std::error::Error::source`], and for
//! SQLite failures the extended result code.

use std::fmt;
use std::sync::Arc;

/// Stable error codes. The string forms are part of the public API: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// A preflight check (`require*`) failed on the snapshot.
    Preflight,
    /// Optimistic validation failed: something the transaction read changed before it committed.
    Conflict,
    /// A key or event that must exist does not.
    NotFound,
    /// A value was read as the wrong type, or a value is malformed for its type.
    Type,
    /// The caller passed something unusable (empty key, oversized key, bad option...).
    InvalidArgument,
    /// The memory map could not grow enough to hold the write.
    MapFull,
    /// Data on disk is not what athanor wrote (bad tag, truncated record...).
    Corrupt,
    /// The database (or handle) was closed.
    Closed,
    /// The on-disk format is newer than this build understands.
    Version,
    /// An operating-system or LMDB level failure.
    Io,
    /// SQLite refused a statement (projection.db) for a reason other than those below.
    Sql,
    /// A SQLite constraint (UNIQUE, NOT NULL, CHECK, FOREIGN KEY...) was violated.
    SqlConstraint,
    /// SQLite stayed locked by another connection past the busy timeout.
    SqlBusy,
    /// The SQL text does not parse.
    SqlSyntax,
    /// A projection handler (TypeScript or declarative) failed on an event.
    Handler,
    /// A vector's dimension differs from its collection's.
    VectorDimension,
    /// A model directory is unusable (missing/malformed model, tokenizer or config).
    Model,
    /// The ONNX Runtime shared library could not be found or loaded.
    Runtime,
    /// A requested execution provider is unavailable and fallback was not allowed.
    Provider,
    /// A model download failed.
    Download,
    /// A file does not match its expected size or SHA-256.
    Integrity,
    /// A bug in athanor (a panic caught at the binding boundary); never bad input.
    Internal,
    /// A numeric bound would be crossed (a value leaving its range, an exposure beyond what is available).
    Bounds,
    /// A lease's fencing token is no longer current: it expired and was taken again.
    StaleLease,
    /// A read asked for events that compaction removed from the log.
    Compacted,
    /// A write on a read replica: replicas change only by applying their primary's commits.
    ReadOnly,
    /// A write named the version it expected to replace, and the stored version differs.
    WrongExpectedVersion,
    /// An event's schema version has no upcaster registered to bring it up to date.
    Upcast,
    /// The caller's roles do not grant the permission the operation needs.
    Forbidden,
    /// A vector collection's index is still loading and the caller asked not to wait.
    NotReady,
}

impl Code {
    /// The stable string form, e.g. `ERR_CONFLICT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Preflight => "ERR_PREFLIGHT",
            Code::Conflict => "ERR_CONFLICT",
            Code::NotFound => "ERR_NOT_FOUND",
            Code::Type => "ERR_TYPE",
            Code::InvalidArgument => "ERR_INVALID_ARGUMENT",
            Code::MapFull => "ERR_MAP_FULL",
            Code::Corrupt => "ERR_CORRUPT",
            Code::Closed => "ERR_CLOSED",
            Code::Version => "ERR_VERSION",
            Code::Io => "ERR_IO",
            Code::Sql => "ERR_SQL",
            Code::SqlConstraint => "ERR_SQL_CONSTRAINT",
            Code::SqlBusy => "ERR_SQL_BUSY",
            Code::SqlSyntax => "ERR_SQL_SYNTAX",
            Code::Handler => "ERR_HANDLER",
            Code::VectorDimension => "ERR_VECTOR_DIMENSION",
            Code::Model => "ERR_MODEL",
            Code::Runtime => "ERR_RUNTIME",
            Code::Provider => "ERR_PROVIDER",
            Code::Download => "ERR_DOWNLOAD",
            Code::Integrity => "ERR_INTEGRITY",
            Code::Internal => "ERR_INTERNAL",
            Code::Bounds => "ERR_BOUNDS",
            Code::StaleLease => "ERR_STALE_LEASE",
            Code::Compacted => "ERR_COMPACTED",
            Code::ReadOnly => "ERR_READ_ONLY",
            Code::WrongExpectedVersion => "ERR_WRONG_EXPECTED_VERSION",
            Code::Upcast => "ERR_UPCAST",
            Code::Forbidden => "ERR_FORBIDDEN",
            Code::NotReady => "ERR_NOT_READY",
        }
    }
}

/// The foreign error behind an [`Error`], shared so `Error` stays `Clone`.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// An engine error: a stable code plus a message that says what was wrong and what to do.
#[derive(Debug, Clone)]
pub struct Error {
    /// The stable code callers branch on.
    pub code: Code,
    /// What was wrong and what to do about it.
    pub message: String,
    /// SQLite's extended result code when SQLite raised the error (e.g. 2067 for
    /// `SQLITE_CONSTRAINT_UNIQUE`), so callers can tell reasons apart without parsing text.
    pub sqlite_code: Option<i32>,
    /// The foreign error this one was made from, kept for diagnosis.
    pub source: Option<Cause>,
}

// Equality is the contract callers match on (code, message, SQLite code); the cause is
// diagnostic detail and foreign error types are not comparable.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
            && self.message == other.message
            && self.sqlite_code == other.sqlite_code
    }
}

impl Eq for Error {}

impl Error {
    /// An error with `code` and `message`, no SQLite code and no cause.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            sqlite_code: None,
            source: None,
        }
    }
    /// `ERR_INVALID_ARGUMENT`: the caller passed something unusable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(Code::InvalidArgument, message)
    }
    /// `ERR_CORRUPT`: data on disk is not what athanor wrote.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(Code::Corrupt, message)
    }
    /// `ERR_TYPE`: a value read as the wrong type, or malformed for its type.
    pub fn type_error(message: impl Into<String>) -> Self {
        Error::new(Code::Type, message)
    }
    /// `ERR_CLOSED`, saying how to reopen.
    pub fn closed() -> Self {
        Error::new(
            Code::Closed,
            "the database is closed; open it again with Athanor.open()",
        )
    }
    /// An athanor bug (`ERR_INTERNAL`), e.g. a caught panic.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(Code::Internal, message)
    }

    /// Keeps `cause` as this error's source.
    pub fn with_source(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(cause));
        self
    }

    /// Records SQLite's extended result code.
    pub fn with_sqlite_code(mut self, code: i32) -> Self {
        self.sqlite_code = Some(code);
        self
    }

    /// The text of each cause, outermost first (this error's own message excluded).
    pub fn causes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            out.push(e.to_string());
            next = e.source();
        }
        out
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `ENOSPC` and `EDQUOT`: the OS refused a write for want of space or quota.
fn disk_full_errno(errno: i32) -> bool {
    // EDQUOT is 122 on Linux, 69 on the BSDs and macOS; ENOSPC is 28 everywhere.
    const EDQUOT: i32 = if cfg!(target_os = "linux") { 122 } else { 69 };
    errno == 28 || errno == EDQUOT
}

/// The message for a write refused for want of disk space (or quota).
pub(crate) const DISK_FULL: &str =
    "the disk is full (or the user's disk quota is used up); free space and retry; nothing of the failed write was kept";

impl From<heed::Error> for Error {
    fn from(e: heed::Error) -> Self {
        let mapped = match &e {
            heed::Error::Io(io) => return Error::from_io(io).with_source(e),
            heed::Error::Mdb(heed::MdbError::MapFull) => {
                Error::new(Code::MapFull, "the LMDB map is full and could not grow")
            }
            heed::Error::Mdb(heed::MdbError::Corrupted)
            | heed::Error::Mdb(heed::MdbError::PageNotFound)
            | heed::Error::Mdb(heed::MdbError::Invalid)
            | heed::Error::Mdb(heed::MdbError::VersionMismatch) => Error::corrupt(format!(
                "LMDB reports the canonical store is damaged ({e}); restore from a backup"
            )),
            heed::Error::Mdb(heed::MdbError::Other(errno)) if disk_full_errno(*errno) => {
                Error::new(Code::Io, format!("storage error: {DISK_FULL}"))
            }
            other => Error::new(Code::Io, format!("storage error: {other}")),
        };
        mapped.with_source(e)
    }
}

impl Error {
    fn from_io(e: &std::io::Error) -> Self {
        let full = matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ) || e.raw_os_error().is_some_and(disk_full_errno);
        if full {
            Error::new(Code::Io, format!("I/O error: {DISK_FULL} ({e})"))
        } else {
            Error::new(Code::Io, format!("I/O error: {e}"))
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::from_io(&e).with_source(e)
    }
}

/// Result alias used throughout the engine.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn sqlite_error(conn: &rusqlite::Connection, sql: &str) -> Error {
        Error::from(conn.execute_batch(sql).unwrap_err())
    }

    #[test]
    fn io_errors_keep_their_cause_and_a_full_disk_says_so() {
        let e = Error::from(std::io::Error::from_raw_os_error(28));
        assert_eq!(e.code, Code::Io);
        assert!(e.message.contains("disk is full"), "{}", e.message);
        let cause = e.source().expect("the io error is kept");
        assert_eq!(
            cause
                .downcast_ref::<std::io::Error>()
                .unwrap()
                .raw_os_error(),
            Some(28)
        );
        assert_eq!(e.causes().len(), 1);

        let denied = Error::from(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(denied.code, Code::Io);
        assert!(!denied.message.contains("disk is full"));
        assert!(denied.source().is_some());
    }

    #[test]
    fn heed_errors_keep_their_cause() {
        let e = Error::from(heed::Error::Mdb(heed::MdbError::Corrupted));
        assert_eq!(e.code, Code::Corrupt);
        assert!(e.source().unwrap().downcast_ref::<heed::Error>().is_some());
        let full = Error::from(heed::Error::Mdb(heed::MdbError::Other(28)));
        assert_eq!(full.code, Code::Io);
        assert!(full.message.contains("disk is full"), "{}", full.message);
        let io = Error::from(heed::Error::Io(std::io::Error::from_raw_os_error(28)));
        assert_eq!(io.code, Code::Io);
        assert!(io.message.contains("disk is full"), "{}", io.message);
    }

    #[test]
    fn sqlite_errors_keep_the_extended_code_and_the_rusqlite_error() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x UNIQUE); INSERT INTO t VALUES (1)")
            .unwrap();
        let e = sqlite_error(&conn, "INSERT INTO t VALUES (1)");
        assert_eq!(e.code, Code::SqlConstraint);
        assert_eq!(e.sqlite_code, Some(2067)); // SQLITE_CONSTRAINT_UNIQUE
        assert!(e
            .source()
            .unwrap()
            .downcast_ref::<rusqlite::Error>()
            .is_some());

        let e = sqlite_error(&conn, "SELEC 1");
        assert_eq!(e.code, Code::SqlSyntax);
        assert_eq!(e.sqlite_code, Some(1)); // SQLITE_ERROR
    }

    #[test]
    fn sqlite_full_is_err_io_saying_the_disk_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("p.db")).unwrap();
        conn.execute_batch("CREATE TABLE big (v BLOB)").unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.execute_batch(&format!("PRAGMA max_page_count = {}", pages + 2))
            .unwrap();
        let e = sqlite_error(&conn, "INSERT INTO big VALUES (zeroblob(1000000))");
        assert_eq!(e.code, Code::Io);
        assert_eq!(e.sqlite_code, Some(13)); // SQLITE_FULL
        assert!(e.message.contains("disk is full"), "{}", e.message);
    }

    #[test]
    fn a_damaged_sqlite_file_is_err_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..100].fill(0x5a);
        std::fs::write(&path, bytes).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let e = sqlite_error(&conn, "SELECT * FROM t");
        assert_eq!(e.code, Code::Corrupt);
        assert_eq!(e.sqlite_code, Some(26)); // SQLITE_NOTADB
        assert!(e.causes()[0].contains("not a database"), "{:?}", e.causes());
    }

    #[test]
    fn equality_ignores_the_cause() {
        let a = Error::invalid("x").with_source(std::io::Error::other("one"));
        let b = Error::invalid("x").with_source(std::io::Error::other("two"));
        assert_eq!(a, b);
        assert_ne!(a, Error::invalid("x").with_sqlite_code(1));
    }
}
