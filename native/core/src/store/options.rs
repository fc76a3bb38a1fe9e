//! How a store is opened: durability, sizes, the clock.

use std::sync::Arc;

use super::chain::ChainOptions;
use crate::clock::{Clock, SystemClock};

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
