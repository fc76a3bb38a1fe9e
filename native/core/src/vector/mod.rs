//! Vector collections: definitions and documents stored in LMDB next to state
//! and events (written by the commit writer, in the same LMDB transaction), and
//! an in-memory HNSW index per collection derived from them.
//!
//! - [`collection`]: definitions, parameter validation, on-disk records;
//! - [`docs`]: document keys and records;
//! - [`index`]: live documents, tombstones, pending list, search plans, rebuild;
//! - `graph`: the hnsw_rs graph (built or loaded) and its shared helpers;
//! - `frozen`: a flat read-only snapshot of the graph for fast walks;
//! - [`distance`]: SIMD kernels and the metric distances;
//! - [`filter`]: metadata filters.

pub mod collection;
pub mod distance;
pub mod docs;
pub(crate) mod dump;
pub mod filter;
mod frozen;
mod graph;
mod hook;
pub mod index;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use serde_json::Value as Json;

pub use collection::{CollectionDef, CollectionParams, Metric};
pub use filter::Filter;
pub use index::{
    Change, CollectionIndex, Hit, IndexStats, PlanKind, PlanReason, SearchOptions, SearchPlan,
};

use crate::error::{Code, Error, Result};
use crate::store::{Store, WriteHook};
use crate::txn::{TxBatch, VectorOp};

/// Meta key of the next collection id (u32 BE).
const META_NEXT_COLLECTION: &[u8] = b"vector_next_collection_id";

#[derive(Default)]
struct Maps {
    by_name: HashMap<String, Arc<CollectionIndex>>,
    by_id: HashMap<u32, Arc<CollectionIndex>>,
}

struct Shared {
    maps: RwLock<Maps>,
    wake: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
    /// Where dumps live (`<dir>/index`); set at load.
    index_dir: Mutex<Option<PathBuf>>,
    /// Commit seq of the newest group the indexes reflect.
    applied_seq: AtomicU64,
    /// LMDB id of the newest write transaction the indexes reflect.
    txn_seen: AtomicU64,
    /// Set when a commit of another process was noticed (a gap in transaction ids).
    stale: AtomicBool,
    /// Commits of this process between their LMDB commit and their `committed` call.
    inflight: AtomicU64,
    /// Bumped at the start and the end of each such window (a sequence lock for readers).
    gen: AtomicU64,
    /// Serialises resyncs with the writer handing over its changes.
    resync: Mutex<()>,
    /// Idle passes the indexer completed (indexing done, due dumps written), and
    /// the condition variable it notifies after each.
    idle_passes: Mutex<u64>,
    idle_cv: Condvar,
}

impl Shared {
    /// Records that this process committed LMDB write transaction `txn_id`; a gap
    /// since the last one means another process committed in between.
    fn note_txn(&self, txn_id: u64) {
        let prev = self.txn_seen.fetch_max(txn_id, Ordering::AcqRel);
        if txn_id != prev + 1 {
            self.stale.store(true, Ordering::Release);
        }
    }

    fn signal(&self) {
        *self.wake.lock() = true;
        self.cv.notify_one();
    }

    /// Captures what a dump of `c` needs (see [`CollectionIndex::dump_state`]), with
    /// a seq the captured state is known to reflect. Under the resync lock no
    /// commit hand-over or resync is half done, so the applied seq matches the
    /// documents; when a commit of another process was noticed but not resynced
    /// yet, the index lacks it although the applied seq is past it, so the dump
    /// records seq 0 instead: the next open then compares every vector rather
    /// than trusting the dump as current.
    fn capture(&self, c: &CollectionIndex) -> Option<index::DumpState> {
        let _l = self.resync.lock();
        c.dump_state(|| {
            if self.stale.load(Ordering::Acquire) {
                0
            } else {
                self.applied_seq.load(Ordering::Acquire)
            }
        })
    }

    /// Writes a captured dump of `c` and records the outcome. Failures only cost
    /// re-indexing at the next open.
    fn write_dump(&self, dir: &Path, c: &CollectionIndex, state: index::DumpState) {
        let ok = dump::write(dir, &c.def, &state.graph, &state.slots, state.seq).is_ok();
        let bytes = ok.then(|| folder_bytes(&dump::folder(dir, &c.def.name)));
        if ok && c.dropped.load(Ordering::Acquire) {
            // Dropped while the dump was written (after the drop removed the old one).
            dump::remove(dir, &c.def.name);
        }
        c.dump_done(&state, bytes);
    }

    /// Indexer, once idle: dumps the collections that changed enough since their
    /// last dump, so a crash costs re-indexing only what changed since. Stops as
    /// soon as indexing work arrives (the next idle moment resumes).
    fn background_dumps(&self) {
        let Some(dir) = self.index_dir.lock().clone() else {
            return;
        };
        let due: Vec<Arc<CollectionIndex>> = self
            .maps
            .read()
            .by_id
            .values()
            .filter(|c| c.dump_due())
            .cloned()
            .collect();
        for c in due {
            if self.stop.load(Ordering::Acquire)
                || self.maps.read().by_id.values().any(|c| c.needs_work())
            {
                return;
            }
            if let Some(state) = self.capture(&c) {
                self.write_dump(&dir, &c, state);
            }
        }
    }
}

/// The collections of one store and the indexer thread that keeps their graphs current.
pub struct Registry {
    shared: Arc<Shared>,
    indexer: Mutex<Option<JoinHandle<()>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry with its indexer thread started.
    pub fn new() -> Self {
        let shared = Arc::new(Shared {
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
        });
        let s = shared.clone();
        let indexer = std::thread::Builder::new()
            .name("athanor-indexer".into())
            .spawn(move || run_indexer(s))
            .ok();
        Registry {
            shared,
            indexer: Mutex::new(indexer),
        }
    }

    /// Loads every collection and its documents from the store. A collection's
    /// graph comes from its dump under `<dir>/index/` when that is valid (documents
    /// changed since are reconciled); otherwise it is built in the background
    /// (searches are exact over what is not indexed yet).
    pub(crate) fn load(&self, store: &Store, dir: &Path) -> Result<()> {
        let index_dir = dir.join("index");
        *self.shared.index_dir.lock() = Some(index_dir.clone());
        let _g = store.guard();
        let txn = store.env.read_txn()?;
        let seq = store.commit_seq(&txn)?;
        self.shared.applied_seq.store(seq, Ordering::Release);
        self.shared
            .txn_seen
            .store(txn.id() as u64, Ordering::Release);
        let mut maps = Maps::default();
        for item in store.dbs.vector_collections.iter(&txn)? {
            let (name, rec) = item?;
            let def = CollectionDef::decode(name, rec)?;
            let idx = Arc::new(CollectionIndex::new(def.clone()));
            let dim = def.params.dimension as usize;
            let prefix = def.id.to_be_bytes();
            let loaded = dump::load(&index_dir, &def, seq);
            // A current dump already holds the vectors of the documents it lists.
            let skip = |id: &str| {
                loaded
                    .as_ref()
                    .is_some_and(|l| l.current && l.slots.contains_key(id))
            };
            let read = |skip: &dyn Fn(&str) -> bool| -> Result<Vec<Change>> {
                let mut changes = Vec::new();
                for item in store.dbs.vectors.prefix_iter(&txn, &prefix)? {
                    let (k, v) = item?;
                    let doc = docs::decode_doc(v, dim)?;
                    let id = std::str::from_utf8(&k[4..])
                        .map_err(|_| Error::corrupt("a vector document id is not UTF-8"))?;
                    let vector_le = if skip(id) { &[][..] } else { doc.vector_le };
                    let hash = docs::record_hash(v);
                    changes.push(change_of(&def, id, vector_le, doc.metadata, hash)?);
                }
                Ok(changes)
            };
            let changes = read(&skip)?;
            let installed = match loaded {
                Some(loaded) => {
                    let docs = changes
                        .into_iter()
                        .filter_map(|c| c.upsert.map(|(v, m)| (c.id, v, m, c.hash)))
                        .collect();
                    idx.install_loaded(loaded.graph, &loaded.slots, loaded.current, docs)
                }
                None => {
                    idx.apply(changes);
                    true
                }
            };
            if !installed {
                idx.apply(read(&|_| false)?);
            }
            maps.by_id.insert(def.id, idx.clone());
            maps.by_name.insert(def.name.clone(), idx);
        }
        *self.shared.maps.write() = maps;
        dump::sweep(&index_dir);
        release_free_memory();
        self.shared.signal();
        Ok(())
    }

    /// The hook through which the indexes follow this process's commits; the
    /// engine registers it with the store before the first commit.
    pub(crate) fn write_hook(&self) -> Arc<dyn WriteHook> {
        Arc::new(hook::VectorHook(self.shared.clone()))
    }

    /// The open collection named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<CollectionIndex>> {
        self.shared.maps.read().by_name.get(name).cloned()
    }

    /// Every collection's definition, sorted by name.
    pub fn list(&self) -> Vec<CollectionDef> {
        let mut v: Vec<CollectionDef> = self
            .shared
            .maps
            .read()
            .by_name
            .values()
            .map(|c| c.def.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates a collection, or returns the existing one when its parameters are the same.
    pub fn create(
        &self,
        store: &Store,
        name: &str,
        params: CollectionParams,
    ) -> Result<Arc<CollectionIndex>> {
        collection::check_name(name)?;
        params.validate()?;
        let def = store.write_with_growth(|dbs, wtxn| {
            if let Some(rec) = dbs.vector_collections.get(wtxn, name.as_bytes())? {
                let existing = CollectionDef::decode(name.as_bytes(), rec)?;
                if existing.params != params {
                    return Err(Error::invalid(format!(
                        "collection {name:?} already exists with different parameters ({:?}); open it, or drop it first",
                        existing.params
                    )));
                }
                return Ok(existing);
            }
            let id = match dbs.meta.get(wtxn, META_NEXT_COLLECTION)? {
                Some(v) => u32::from_be_bytes(
                    v.try_into()
                        .map_err(|_| Error::corrupt("next collection id is not 4 bytes"))?,
                ),
                None => 1,
            };
            let def = CollectionDef {
                id,
                name: name.to_owned(),
                params,
            };
            dbs.vector_collections
                .put(wtxn, name.as_bytes(), &def.encode())?;
            dbs.meta
                .put(wtxn, META_NEXT_COLLECTION, &(id + 1).to_be_bytes())?;
            Ok(def)
        })?;
        let mut maps = self.shared.maps.write();
        if let Some(c) = maps.by_id.get(&def.id) {
            return Ok(c.clone());
        }
        let idx = Arc::new(CollectionIndex::new(def.clone()));
        maps.by_id.insert(def.id, idx.clone());
        maps.by_name.insert(def.name.clone(), idx.clone());
        Ok(idx)
    }

    /// Drops a collection and all its documents. Returns whether it existed.
    pub fn drop_collection(&self, store: &Store, name: &str) -> Result<bool> {
        collection::check_name(name)?;
        let dropped = store.write_with_growth(|dbs, wtxn| {
            let Some(rec) = dbs.vector_collections.get(wtxn, name.as_bytes())? else {
                return Ok(None);
            };
            let def = CollectionDef::decode(name.as_bytes(), rec)?;
            dbs.vector_collections.delete(wtxn, name.as_bytes())?;
            let prefix = def.id.to_be_bytes();
            let mut it = dbs.vectors.prefix_iter_mut(wtxn, &prefix)?;
            while let Some(item) = it.next() {
                item?;
                // SAFETY: no reference into the database outlives this deletion.
                unsafe { it.del_current()? };
            }
            Ok(Some(def.id))
        })?;
        let Some(id) = dropped else { return Ok(false) };
        {
            let mut maps = self.shared.maps.write();
            if let Some(c) = maps.by_id.remove(&id) {
                c.dropped.store(true, Ordering::Release);
                maps.by_name.remove(&c.def.name);
            }
        }
        // After marking it dropped: a background dump finishing later sees the
        // mark and removes what it wrote.
        if let Some(d) = self.shared.index_dir.lock().as_ref() {
            dump::remove(d, name);
        }
        Ok(true)
    }

    /// Checks a batch's vector writes against the open collections before it is
    /// queued: the collection exists, dimensions match, no zero vector under cosine.
    pub fn precheck(&self, b: &TxBatch) -> Result<()> {
        if b.vectors.is_empty() {
            return Ok(());
        }
        let maps = self.shared.maps.read();
        let mut last: Option<(&[u8], &Arc<CollectionIndex>)> = None;
        for op in &b.vectors {
            let name = b.bytes(op.collection());
            let c = match last {
                Some((n, c)) if n == name => c,
                _ => {
                    let c = std::str::from_utf8(name)
                        .ok()
                        .and_then(|n| maps.by_name.get(n))
                        .ok_or_else(|| missing(name))?;
                    last = Some((name, c));
                    c
                }
            };
            check_op(&c.def, b, op)?;
        }
        Ok(())
    }

    /// Brings the indexes up to date with commits made by other processes on the
    /// same directory, if there were any: compares every stored document's record
    /// hash with the index's and applies the differences (collections created or
    /// dropped elsewhere included). Cheap when nothing changed elsewhere.
    pub fn refresh(&self, store: &Store) -> Result<()> {
        let sh = &self.shared;
        if !sh.stale.load(Ordering::Acquire) {
            let g1 = sh.gen.load(Ordering::Acquire);
            if sh.inflight.load(Ordering::Acquire) > 0 {
                return Ok(());
            }
            let seen = sh.txn_seen.load(Ordering::Acquire);
            let now = store.last_txn_id() as u64;
            if g1 != sh.gen.load(Ordering::Acquire) || now <= seen {
                return Ok(());
            }
        }
        self.resync(store)
    }

    fn resync(&self, store: &Store) -> Result<()> {
        // Before the lock: beginning a read may have to remap, which waits for the writer.
        let txn = store.begin_read()?;
        let _l = self.shared.resync.lock();
        let _g = store.map_guard.read_recursive();
        let txn_id = txn.id() as u64;
        if txn_id <= self.shared.txn_seen.load(Ordering::Acquire)
            && !self.shared.stale.load(Ordering::Acquire)
        {
            return Ok(());
        }
        self.shared.stale.store(false, Ordering::Release);
        let mut defs = Vec::new();
        for item in store.dbs.vector_collections.iter(&txn)? {
            let (name, rec) = item?;
            defs.push(CollectionDef::decode(name, rec)?);
        }
        {
            let mut maps = self.shared.maps.write();
            let gone: Vec<u32> = maps
                .by_id
                .keys()
                .copied()
                .filter(|id| !defs.iter().any(|d| d.id == *id))
                .collect();
            for id in gone {
                if let Some(c) = maps.by_id.remove(&id) {
                    c.dropped.store(true, Ordering::Release);
                    maps.by_name.remove(&c.def.name);
                }
            }
            for d in &defs {
                if !maps.by_id.contains_key(&d.id) {
                    let idx = Arc::new(CollectionIndex::new(d.clone()));
                    if let Some(old) = maps.by_name.insert(d.name.clone(), idx.clone()) {
                        old.dropped.store(true, Ordering::Release);
                        maps.by_id.remove(&old.def.id);
                    }
                    maps.by_id.insert(d.id, idx);
                }
            }
        }
        for def in &defs {
            let Some(idx) = self.shared.maps.read().by_id.get(&def.id).cloned() else {
                continue;
            };
            let known = idx.id_hashes();
            let mut seen = std::collections::HashSet::with_capacity(known.len());
            let mut changes = Vec::new();
            let dim = def.params.dimension as usize;
            for item in store.dbs.vectors.prefix_iter(&txn, &def.id.to_be_bytes())? {
                let (k, v) = item?;
                let id = std::str::from_utf8(&k[4..])
                    .map_err(|_| Error::corrupt("a vector document id is not UTF-8"))?;
                let hash = docs::record_hash(v);
                if known.get(id) != Some(&hash) {
                    let doc = docs::decode_doc(v, dim)?;
                    changes.push(change_of(def, id, doc.vector_le, doc.metadata, hash)?);
                }
                seen.insert(id.to_owned());
            }
            for id in known.keys() {
                if !seen.contains(&**id) {
                    changes.push(Change {
                        id: id.clone(),
                        hash: 0,
                        upsert: None,
                    });
                }
            }
            if !changes.is_empty() {
                idx.apply(changes);
            }
        }
        self.shared.txn_seen.fetch_max(txn_id, Ordering::AcqRel);
        self.shared.signal();
        Ok(())
    }

    /// Reads a stored document: `[f32 LE × dimension][metadata JSON]`, or `None`.
    /// Hold the store's guard while `txn` is in use.
    pub fn get_doc(
        &self,
        store: &Store,
        txn: &heed::RoTxn<'_, heed::WithoutTls>,
        c: &CollectionIndex,
        id: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        collection::check_doc_id(id)?;
        let key = docs::doc_key(c.def.id, id);
        match store.dbs.vectors.get(txn, &key)? {
            None => Ok(None),
            Some(rec) => {
                let d = docs::decode_doc(rec, c.def.params.dimension as usize)?;
                Ok(Some([d.vector_le, d.metadata].concat()))
            }
        }
    }

    /// Blocks until the indexer is idle for `c`: see [`IdleWaiter::wait`].
    pub fn wait_idle(&self, c: &CollectionIndex, timeout: Duration) -> bool {
        self.idle_waiter().wait(c, timeout)
    }

    /// A handle for [`IdleWaiter::wait`] that does not keep the registry open.
    pub fn idle_waiter(&self) -> IdleWaiter {
        IdleWaiter(self.shared.clone())
    }

    /// Asks the indexer to rebuild a collection's graph in the background.
    pub fn request_rebuild(&self, c: &CollectionIndex) {
        c.request_rebuild();
        self.shared.signal();
    }

    /// Checks that the index and the stored documents agree: same ids, and every
    /// stored record decodes. Call it with no commit in flight. Returns the document count.
    pub fn verify(&self, store: &Store, name: &str) -> Result<usize> {
        let c = self.get(name).ok_or_else(|| missing(name.as_bytes()))?;
        let _g = store.guard();
        let txn = store.env.read_txn()?;
        let dim = c.def.params.dimension as usize;
        let mut n = 0usize;
        for item in store
            .dbs
            .vectors
            .prefix_iter(&txn, &c.def.id.to_be_bytes())?
        {
            let (k, v) = item?;
            docs::decode_doc(v, dim)?;
            let id = std::str::from_utf8(&k[4..])
                .map_err(|_| Error::corrupt("a vector document id is not UTF-8"))?;
            if !c.contains(id) {
                return Err(Error::corrupt(format!(
                    "document {id:?} of collection {name:?} is stored but missing from the index"
                )));
            }
            n += 1;
        }
        let indexed = c.count();
        if indexed != n {
            return Err(Error::corrupt(format!(
                "collection {name:?}: the index has {indexed} documents, the store {n}"
            )));
        }
        Ok(n)
    }
}

/// Waits for the indexer's idle passes (see [`Registry::idle_waiter`]).
pub struct IdleWaiter(Arc<Shared>);

impl IdleWaiter {
    /// Blocks until the indexer is idle for `c`: every committed document is in
    /// the graph (see [`CollectionIndex::wait_indexed`]) and an idle pass of the
    /// indexer that began after that has written the background dump due, if
    /// one was. Returns false on timeout, when the collection was dropped, or
    /// when the database closes.
    pub fn wait(&self, c: &CollectionIndex, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !c.wait_indexed(left) {
                return false;
            }
            let sh = &self.0;
            let mut passes = sh.idle_passes.lock();
            // The pass running now may have started before the state we just saw.
            let target = *passes + 2;
            sh.signal();
            while *passes < target {
                if sh.stop.load(Ordering::Acquire)
                    || sh.idle_cv.wait_until(&mut passes, deadline).timed_out()
                {
                    return false;
                }
            }
            drop(passes);
            if !c.needs_work() && !c.dump_due() {
                return true;
            }
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.signal();
        {
            let _passes = self.shared.idle_passes.lock();
            self.shared.idle_cv.notify_all();
        }
        if let Some(h) = self.indexer.lock().take() {
            let _ = h.join();
        }
        self.dump_all();
    }
}

impl Registry {
    /// Dumps every collection that changed since its last dump and is fully
    /// indexed (at close, after the writer stopped). Failures only cost a
    /// rebuild at the next open.
    fn dump_all(&self) {
        let Some(dir) = self.shared.index_dir.lock().clone() else {
            return;
        };
        let colls: Vec<Arc<CollectionIndex>> =
            self.shared.maps.read().by_id.values().cloned().collect();
        for c in colls {
            if let Some(state) = self.shared.capture(&c) {
                self.shared.write_dump(&dir, &c, state);
            }
        }
    }
}

pub(crate) fn missing(name: &[u8]) -> Error {
    Error::new(
        Code::NotFound,
        format!(
            "vector collection {:?} does not exist; create it with db.vectors.create()",
            String::from_utf8_lossy(name)
        ),
    )
}

pub(crate) fn check_op(def: &CollectionDef, b: &TxBatch, op: &VectorOp) -> Result<()> {
    if let VectorOp::Upsert { vector, id, .. } = op {
        let bytes = b.bytes(vector);
        let dim = def.params.dimension as usize;
        if bytes.len() != dim * 4 {
            return Err(Error::new(
                Code::VectorDimension,
                format!(
                    "document {:?} has {} dimensions; collection {:?} has {dim}",
                    String::from_utf8_lossy(b.bytes(id)),
                    bytes.len() / 4,
                    def.name
                ),
            ));
        }
        if def.params.metric == Metric::Cosine
            && bytes
                .chunks_exact(4)
                .all(|c| f32::from_le_bytes(c.try_into().unwrap()) == 0.0)
        {
            return Err(Error::invalid(format!(
                "document {:?} is a zero vector, which has no direction under the cosine metric",
                String::from_utf8_lossy(b.bytes(id))
            )));
        }
    }
    Ok(())
}

pub(crate) fn change_of(
    def: &CollectionDef,
    id: &str,
    vector_le: &[u8],
    metadata: &[u8],
    hash: u64,
) -> Result<Change> {
    let mut v = docs::f32s(vector_le);
    if def.params.metric == Metric::Cosine {
        distance::normalize(&mut v);
    }
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice::<Json>(metadata)
                .map_err(|e| Error::corrupt(format!("vector metadata is not JSON: {e}")))?,
        )
    };
    Ok(Change {
        id: id.into(),
        hash,
        upsert: Some((v, meta)),
    })
}

/// Total size of the files directly in `dir` (a dump's folder).
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Hands freed heap memory back to the OS. Loading and bulk indexing free many
/// vector-sized blocks that glibc would otherwise keep in the process (resident).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn run_indexer(shared: Arc<Shared>) {
    loop {
        {
            let mut wake = shared.wake.lock();
            if !*wake && !shared.stop.load(Ordering::Acquire) {
                shared.cv.wait_for(&mut wake, Duration::from_millis(200));
            }
            *wake = false;
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let mut did_work = false;
        loop {
            let work: Vec<Arc<CollectionIndex>> = shared
                .maps
                .read()
                .by_id
                .values()
                .filter(|c| c.needs_work())
                .cloned()
                .collect();
            if work.is_empty() || shared.stop.load(Ordering::Acquire) {
                if did_work {
                    release_free_memory();
                }
                if !shared.stop.load(Ordering::Acquire) {
                    // Idle: the graphs hold every recorded document. Dumping here,
                    // on the indexer thread, keeps it off the commit path, and no
                    // insert or rebuild can change a graph while it is written.
                    shared.background_dumps();
                }
                *shared.idle_passes.lock() += 1;
                shared.idle_cv.notify_all();
                break;
            }
            did_work = true;
            for c in work {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.index_round()))
                    .is_err()
                {
                    // A bug in the graph code must not kill indexing of other collections;
                    // searches stay correct through the exact scan of pending.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}
