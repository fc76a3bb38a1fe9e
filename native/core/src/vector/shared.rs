//! The state the registry, its indexer thread and its write hook share: the
//! open collections and what the indexes are known to reflect.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use super::index::CollectionIndex;

/// The open collections, by name and by id.
#[derive(Default)]
pub(super) struct Maps {
    pub(super) by_name: HashMap<String, Arc<CollectionIndex>>,
    pub(super) by_id: HashMap<u32, Arc<CollectionIndex>>,
}

pub(super) struct Shared {
    pub(super) maps: RwLock<Maps>,
    pub(super) wake: Mutex<bool>,
    pub(super) cv: Condvar,
    pub(super) stop: AtomicBool,
    /// Where dumps live (`<dir>/index`); set at load.
    pub(super) index_dir: Mutex<Option<PathBuf>>,
    /// Commit seq of the newest group the indexes reflect.
    pub(super) applied_seq: AtomicU64,
    /// LMDB id of the newest write transaction the indexes reflect.
    pub(super) txn_seen: AtomicU64,
    /// Set when a commit of another process was noticed (a gap in transaction ids).
    pub(super) stale: AtomicBool,
    /// Commits of this process between their LMDB commit and their `committed` call.
    pub(super) inflight: AtomicU64,
    /// Bumped at the start and the end of each such window (a sequence lock for readers).
    pub(super) gen: AtomicU64,
    /// Serialises resyncs with the writer handing over its changes.
    pub(super) resync: Mutex<()>,
    /// Idle passes the indexer completed (indexing done, due dumps written), and
    /// the condition variable it notifies after each.
    pub(super) idle_passes: Mutex<u64>,
    pub(super) idle_cv: Condvar,
}

impl Shared {
    /// Nothing loaded yet, nothing seen.
    pub(super) fn new() -> Shared {
        Shared {
            maps: RwLock::new(Maps::default()),
            wake: Mutex::new(false),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
            index_dir: Mutex::new(None),
            applied_seq: AtomicU64::new(0),
            txn_seen: AtomicU64::new(0),
            stale: AtomicBool::new(false),
            inflight: AtomicU64::new(0),
            gen: AtomicU64::new(0),
            resync: Mutex::new(()),
            idle_passes: Mutex::new(0),
            idle_cv: Condvar::new(),
        }
    }

    /// Records that this process committed LMDB write transaction `txn_id`; a gap
    /// since the last one means another process committed in between.
    pub(super) fn note_txn(&self, txn_id: u64) {
        let prev = self.txn_seen.fetch_max(txn_id, Ordering::AcqRel);
        if txn_id != prev + 1 {
            self.stale.store(true, Ordering::Release);
        }
    }

    /// Wakes the indexer.
    pub(super) fn signal(&self) {
        *self.wake.lock() = true;
        self.cv.notify_one();
    }
}
