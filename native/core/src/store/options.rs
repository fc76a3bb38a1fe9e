//! How a store is opened: durability, sizes, the clock.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// How a commit reaches the disk. `Full` is the default and the only mode in
/// which a resolved commit is guaranteed to survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before a commit is acknowledged (LMDB's synchronous commit).
    Full,
    /// Data pages are fsynced with each group but the commit record (LMDB meta page) is
    /// flushed at most every `interval_ms`: power loss can undo the commits of that window,
    /// never corrupt the store. A process crash (`kill -9`) loses nothing.
    Batched {
        /// The longest a commit record waits for its flush (milliseconds).
        interval_ms: u64,
    },
    /// No fsync at all: the OS writes back when it likes. A process crash loses nothing;
    /// power loss can lose recent commits and may damage the store. For tests and scratch data.
    None,
}

/// Options for [`crate::Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How commits reach the disk (default [`Durability::Full`]).
    pub durability: Durability,
    /// Initial LMDB map size in bytes; it grows automatically when full.
    pub initial_map_size: usize,
    /// Idempotency records older than this are pruned (milliseconds). `0` keeps them forever.
    pub idempotency_window_ms: u64,
    /// Maximum concurrent read transactions (LMDB reader slots).
    pub max_readers: u32,
    /// Create the database when the directory holds none. `false` is for tools that
    /// inspect a database: a missing one is `ERR_NOT_FOUND`, and nothing is created.
    pub create: bool,
    /// The time commits, idempotency records and projection rows are stamped with,
    /// and the idempotency window is measured by: the system clock unless a test
    /// moves a [`crate::clock::ManualClock`].
    pub clock: Arc<dyn Clock>,
    /// The event log's hash chain: whether to start one, and its HMAC key.
    pub chain: ChainOptions,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Full,
            initial_map_size: 256 << 20,
            idempotency_window_ms: 7 * 24 * 3600 * 1000,
            max_readers: 510,
            create: true,
            clock: Arc::new(SystemClock),
            chain: ChainOptions::default(),
        }
    }
}

/// An HMAC key: zeroed when dropped, never printed.
#[derive(Clone)]
pub struct ChainKey(Zeroizing<Vec<u8>>);

impl ChainKey {
    /// Takes a copy of `bytes` (the caller's copy is theirs to clear).
    pub fn new(bytes: &[u8]) -> Result<ChainKey> {
        if bytes.is_empty() {
            return Err(Error::invalid(
                "hmacKey must not be empty; pass at least 32 random bytes",
            ));
        }
        Ok(ChainKey(Zeroizing::new(bytes.to_vec())))
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for ChainKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

/// What [`crate::StoreOptions`] says about the chain.
#[derive(Debug, Clone, Default)]
pub struct ChainOptions {
    /// Turn the chain on (at the next event id) when the store has none yet. A chain
    /// once on stays on, whatever later opens say.
    pub enable: bool,
    /// The HMAC key: with it a new chain is HMAC-SHA-256, and a keyed chain can be
    /// extended and verified.
    pub hmac_key: Option<ChainKey>,
}
