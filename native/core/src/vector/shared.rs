//! The state the registry, its indexer thread and its write hook share: the
//! open collections and what the indexes are known to reflect.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex, RwLock};

use super::collection::{CollectionDef, Metric};
use super::index::{CollectionIndex, VectorSource};
use super::{distance, docs};
use crate::store::Store;

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
    /// The store the collections' documents live in (set at load), for the
    /// exact vectors a quantized graph rescores with.
    pub(super) store: Mutex<Weak<Store>>,
}

/// A collection's exact vectors, read from its stored documents.
struct StoredVectors {
    store: Weak<Store>,
    def: CollectionDef,
}

impl VectorSource for StoredVectors {
    fn vectors(&self, ids: &[&str]) -> Vec<Option<Vec<f32>>> {
        let none = || ids.iter().map(|_| None).collect();
        let Some(store) = self.store.upgrade() else {
            return none();
        };
        let _g = store.guard();
        let Ok(txn) = store.env.read_txn() else {
            return none();
        };
        let dim = self.def.params.dimension as usize;
        ids.iter()
            .map(|id| {
                let key = docs::doc_key(self.def.id, id.as_bytes());
                let rec = store.dbs.vectors.get(&txn, &key).ok()??;
                let mut v = docs::f32s(docs::decode_doc(rec, dim).ok()?.vector_le);
                if self.def.params.metric == Metric::Cosine {
                    distance::normalize(&mut v);
                }
                Some(v)
            })
            .collect()
    }
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
            store: Mutex::new(Weak::new()),
        }
    }

    /// A new, empty index for `def`, reading exact vectors from the store.
    pub(super) fn new_index(&self, def: CollectionDef) -> Arc<CollectionIndex> {
        let idx = Arc::new(CollectionIndex::new(def.clone()));
        idx.set_source(Arc::new(StoredVectors {
            store: self.store.lock().clone(),
            def,
        }));
        idx
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
