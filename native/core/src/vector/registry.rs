//! The open collections of one store: loading them at open, creating and
//! dropping them, checking a batch before it is queued, reading and verifying
//! documents; and the indexer thread's lifetime.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::collection::{self, CollectionDef, CollectionParams};
use super::docs;
use super::dump;
use super::hook::VectorHook;
use super::index::{Change, CollectionIndex};
use super::indexer::{release_free_memory, run_indexer};
use super::ops::{change_of, check_op, collection_of, missing};
use super::shared::{Maps, Shared};
use crate::error::{Error, Result};
use crate::store::{Store, WriteHook};
use crate::txn::TxBatch;

/// Meta key of the next collection id (u32 BE).
const META_NEXT_COLLECTION: &[u8] = b"vector_next_collection_id";

/// The collections of one store and the indexer thread that keeps their graphs current.
pub struct Registry {
    pub(super) shared: Arc<Shared>,
    indexer: Mutex<Option<JoinHandle<()>>>,
    /// The thread loading the indexes after open (see [`Registry::load`]).
    loader: Mutex<Option<JoinHandle<()>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry with its indexer thread started.
    pub fn new() -> Self {
        let shared = Arc::new(Shared::new());
        let s = shared.clone();
        let indexer = std::thread::Builder::new()
            .name("athanor-indexer".into())
            .spawn(move || run_indexer(s))
            .ok();
        Registry {
            shared,
            indexer: Mutex::new(indexer),
            loader: Mutex::new(None),
        }
    }

    /// Opens every collection of the store and starts loading their indexes in
    /// the background (see [`load_all`]): this returns once the definitions are
    /// read, and each index reports its progress in its stats until it is
    /// ready; commits meanwhile are held by the index and applied after.
    pub(crate) fn load(&self, store: &Arc<Store>, dir: &Path) -> Result<()> {
        *self.shared.store.lock() = Arc::downgrade(store);
        let index_dir = dir.join("index");
        *self.shared.index_dir.lock() = Some(index_dir.clone());
        let mut maps = Maps::default();
        {
            let _g = store.guard();
            let txn = store.env.read_txn()?;
            let seq = store.commit_seq(&txn)?;
            self.shared.applied_seq.store(seq, Ordering::Release);
            self.shared
                .txn_seen
                .store(txn.id() as u64, Ordering::Release);
            for item in store.dbs.vector_collections.iter(&txn)? {
                let (name, rec) = item?;
                let def = CollectionDef::decode(name, rec)?;
                let idx = self.shared.new_index(def.clone());
                idx.start_loading();
                maps.by_id.insert(def.id, idx.clone());
                maps.by_name.insert(def.name.clone(), idx);
            }
        }
        let indexes: Vec<Arc<CollectionIndex>> = maps.by_id.values().cloned().collect();
        *self.shared.maps.write() = maps;
        let (shared, store) = (self.shared.clone(), store.clone());
        let loader = std::thread::Builder::new()
            .name("athanor-vector-load".into())
            .spawn(move || {
                let r = load_all(&shared, &store, &index_dir, &indexes);
                // Whatever happened, nothing stays loading: a collection that
                // failed to load is searched over what it holds (the next open retries).
                for idx in &indexes {
                    idx.finish_loading();
                }
                if r.is_ok() && !shared.stop.load(Ordering::Acquire) {
                    dump::sweep(&index_dir);
                }
                release_free_memory();
                shared.signal();
            })
            .map_err(|e| {
                Error::new(
                    crate::Code::Io,
                    format!("cannot start the vector loader: {e}"),
                )
            })?;
        *self.loader.lock() = Some(loader);
        Ok(())
    }

    /// The hook through which the indexes follow this process's commits; the
    /// engine registers it with the store before the first commit.
    pub(crate) fn write_hook(&self) -> Arc<dyn WriteHook> {
        Arc::new(VectorHook(self.shared.clone()))
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
        // `name` may be qualified with a namespace (`store::qualified_collection`).
        let shown = crate::store::split_collection(name).1;
        collection::check_name(shown)?;
        params.validate()?;
        let def = store.write_with_growth(|dbs, wtxn| {
            if let Some(rec) = dbs.vector_collections.get(wtxn, name.as_bytes())? {
                let existing = CollectionDef::decode(name.as_bytes(), rec)?;
                if existing.params != params {
                    return Err(Error::invalid(format!(
                        "collection {shown:?} already exists with different parameters ({:?}); open it, or drop it first",
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
        let idx = self.shared.new_index(def.clone());
        maps.by_id.insert(def.id, idx.clone());
        maps.by_name.insert(def.name.clone(), idx.clone());
        Ok(idx)
    }

    /// Drops a collection and all its documents. Returns whether it existed.
    pub fn drop_collection(&self, store: &Store, name: &str) -> Result<bool> {
        collection::check_name(crate::store::split_collection(name).1)?;
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
        // Held past the lock: if this was the last reference, the index's graphs are
        // dropped here, on rayon's pool, and never under a lock (see index.rs, drop_unlocked).
        let _removed = {
            let mut maps = self.shared.maps.write();
            let c = maps.by_id.remove(&id);
            if let Some(c) = &c {
                c.dropped.store(true, Ordering::Release);
                maps.by_name.remove(&c.def.name);
            }
            c
        };
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
        let mut last: Option<(std::borrow::Cow<[u8]>, &Arc<CollectionIndex>)> = None;
        for op in &b.vectors {
            let name = collection_of(b, op);
            let c = match &last {
                Some((n, c)) if *n == name => *c,
                _ => {
                    let c = std::str::from_utf8(&name)
                        .ok()
                        .and_then(|n| maps.by_name.get(n))
                        .ok_or_else(|| missing(&name))?;
                    last = Some((name, c));
                    c
                }
            };
            check_op(&c.def, b, op)?;
        }
        Ok(())
    }

    /// Reads a stored document as [`crate::wire::document`] packs it, or `None`.
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
                Ok(Some(crate::wire::document::pack(d.vector_le, d.metadata)))
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
        if let Some(h) = self.loader.lock().take() {
            let _ = h.join();
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

/// Stored documents the loader reads between progress reports (and test holds).
const LOAD_BATCH: u64 = 1024;

/// Test seam: while the file this variable names exists, the loader pauses
/// after each batch, so a test can observe a collection mid-load without timing.
const HOLD_LOADING_ENV: &str = "ATHANOR_TEST_HOLD_LOADING";

/// Loads each index: its graph from its dump under `index_dir` when that is
/// valid (documents changed since are reconciled), else its documents go to
/// the pending list and the indexer builds the graph. Stops early at close.
fn load_all(
    shared: &Shared,
    store: &Store,
    index_dir: &Path,
    indexes: &[Arc<CollectionIndex>],
) -> Result<()> {
    let hold = std::env::var_os(HOLD_LOADING_ENV);
    let stopped = || shared.stop.load(Ordering::Acquire);
    let pause = |idx: &CollectionIndex, loaded: u64, total: u64| {
        idx.loading_progress(loaded, total);
        while let Some(path) = &hold {
            if !Path::new(path).exists() || stopped() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // One collection; `Ok(false)` when the database closes meanwhile.
    let load_one = |idx: &CollectionIndex| -> Result<bool> {
        let def = &idx.def;
        let _g = store.guard();
        let txn = store.env.read_txn()?;
        let seq = store.commit_seq(&txn)?;
        let dim = def.params.dimension as usize;
        let prefix = def.id.to_be_bytes();
        let total = store
            .dbs
            .vectors
            .prefix_iter(&txn, &prefix)?
            .remap_data_type::<heed::types::LazyDecode<heed::types::Bytes>>()
            .count() as u64;
        idx.loading_progress(0, total);
        let loaded = dump::load(index_dir, def, seq);
        // A current dump already holds the vectors of the documents it lists.
        let skip = |id: &str| {
            loaded
                .as_ref()
                .is_some_and(|l| l.current && l.slots.contains_key(id))
        };
        let read = |skip: &dyn Fn(&str) -> bool| -> Result<Option<Vec<Change>>> {
            let mut changes = Vec::with_capacity(total as usize);
            for item in store.dbs.vectors.prefix_iter(&txn, &prefix)? {
                let (k, v) = item?;
                let doc = docs::decode_doc(v, dim)?;
                let id = std::str::from_utf8(&k[4..])
                    .map_err(|_| Error::corrupt("a vector document id is not UTF-8"))?;
                let vector_le = if skip(id) { &[][..] } else { doc.vector_le };
                let hash = docs::record_hash(v);
                changes.push(change_of(def, id, vector_le, doc.metadata, hash)?);
                let n = changes.len() as u64;
                if n.is_multiple_of(LOAD_BATCH) {
                    pause(idx, n, total);
                    if stopped() {
                        return Ok(None);
                    }
                }
            }
            Ok(Some(changes))
        };
        let Some(changes) = read(&skip)? else {
            return Ok(false);
        };
        let installed = match loaded {
            Some(loaded) => {
                let docs = changes
                    .into_iter()
                    .filter_map(|c| c.upsert.map(|(v, m)| (c.id, v, m, c.hash)))
                    .collect();
                idx.install_loaded(loaded.graph, &loaded.slots, loaded.current, docs)
            }
            None => {
                idx.apply_now(changes);
                true
            }
        };
        if !installed {
            let Some(changes) = read(&|_| false)? else {
                return Ok(false);
            };
            idx.apply_now(changes);
        }
        Ok(true)
    };
    for idx in indexes {
        if stopped() {
            return Ok(());
        }
        match load_one(idx) {
            Ok(true) => idx.finish_loading(),
            Ok(false) => return Ok(()),
            // A damaged document: this collection's searches report it; the others load.
            Err(e) => idx.fail_loading(e),
        }
        shared.signal();
    }
    Ok(())
}
