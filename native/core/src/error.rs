//! Typed engine errors. Every error carries a stable [`Code`] that the bindings
//! expose to JavaScript as the error's `code` property.

use std::fmt;

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
        }
    }
}

/// An engine error: a stable code plus a message that says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub message: String,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(Code::InvalidArgument, message)
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(Code::Corrupt, message)
    }
    pub fn type_error(message: impl Into<String>) -> Self {
        Error::new(Code::Type, message)
    }
    pub fn closed() -> Self {
        Error::new(
            Code::Closed,
            "the database is closed; open it again with Athanor.open()",
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<heed::Error> for Error {
    fn from(e: heed::Error) -> Self {
        match e {
            heed::Error::Mdb(heed::MdbError::MapFull) => {
                Error::new(Code::MapFull, "the LMDB map is full and could not grow")
            }
            heed::Error::Mdb(heed::MdbError::Corrupted)
            | heed::Error::Mdb(heed::MdbError::PageNotFound)
            | heed::Error::Mdb(heed::MdbError::Invalid)
            | heed::Error::Mdb(heed::MdbError::VersionMismatch) => Error::corrupt(format!(
                "LMDB reports the canonical store is damaged ({e}); restore from a backup"
            )),
            other => Error::new(Code::Io, format!("storage error: {other}")),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(Code::Io, format!("I/O error: {e}"))
    }
}

/// Result alias used throughout the engine.
pub type Result<T> = std::result::Result<T, Error>;
