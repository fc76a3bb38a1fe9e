//! An open database: the store, its writer thread, and the process-wide registry
//! that makes opening the same directory twice share one engine (LMDB forbids
//! two environments on one file in one process).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use heed::{RoTxn, WithoutTls};
use parking_lot::{Mutex, RwLock};

use crate::commit::{self, CommitInfo, CommitSink, Msg, Reply, Request, Shared};
use crate::error::{Code, Error, Result};
use crate::store::{Store, StoreOptions};
use crate::txn::TxBatch;
use crate::vector::Registry;

/// How long `open` waits for a closing engine on the same directory to release it.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

static OPEN_ENGINES: LazyLock<Mutex<HashMap<PathBuf, Weak<Engine>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// An open database directory. Cheap to share (`Arc`); the last drop stops the
/// writer after it has committed everything already queued.
pub struct Engine {
    store: Arc<Store>,
    /// After `store`: at close the store's environment is released first, then the
    /// registry stops its indexer and writes its last dumps.
    vectors: Registry,
    shared: Arc<Shared>,
    sender: Sender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
    next_sink: AtomicU64,
    closed: AtomicBool,
    /// A read replica: only its primary's commits change it (`apply_replicated`).
    read_only: AtomicBool,
    key: PathBuf,
}

impl Engine {
    /// Opens `dir`, or returns the engine already open on it in this process.
    /// A second open must ask for the same durability; other options of the first open win.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use athanor_core::{Code, Durability, Engine, StoreOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let a = Engine::open(dir.path(), StoreOptions::default())?;
    /// let b = Engine::open(dir.path(), StoreOptions::default())?;
    /// assert!(Arc::ptr_eq(&a, &b)); // one engine per directory per process
    /// let weaker = StoreOptions { durability: Durability::None, ..StoreOptions::default() };
    /// let err = Engine::open(dir.path(), weaker).err().expect("refused");
    /// assert_eq!(err.code, Code::InvalidArgument);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Arc<Engine>> {
        if !options.create && !dir.is_dir() {
            return Err(Error::new(
                Code::NotFound,
                format!(
                    "{} is not a directory holding an athanor database; check the path (nothing was created)",
                    dir.display()
                ),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::new(
                Code::Io,
                format!(
                    "cannot create {}: {e}; check the path and its permissions",
                    dir.display()
                ),
            )
        })?;
        let key = dir.canonicalize()?;
        let mut open = OPEN_ENGINES.lock();
        loop {
            if let Some(existing) = open.get(&key).and_then(Weak::upgrade) {
                if existing.store.options.durability != options.durability {
                    return Err(Error::invalid(format!(
                        "{} is already open in this process with durability {:?}; open it with the same durability or close it first",
                        dir.display(),
                        existing.store.options.durability
                    )));
                }
                if existing.store.options.chain.hmac_key != options.chain.hmac_key {
                    return Err(Error::invalid(format!(
                        "{} is already open in this process with another hmacKey (or none); open it with the same key or close it first",
                        dir.display()
                    )));
                }
                if options.chain.enable {
                    existing.store.write_with_growth(|dbs, wtxn| {
                        crate::store::ensure_chain(dbs, wtxn, &options.chain)
                    })?;
                }
                return Ok(existing);
            }
            // A previous engine on this directory may still be closing (its writer
            // draining, its LMDB environment not yet released): wait for it rather
            // than fail, without holding the registry lock.
            let canonical = key.join("canonical").canonicalize().ok();
            match canonical.and_then(heed::env_closing_event) {
                None => break,
                Some(closing) => {
                    drop(open);
                    if !closing.wait_timeout(CLOSE_WAIT) {
                        return Err(Error::invalid(format!(
                            "{} is still open in this process: a snapshot or reader of a closed handle is alive; close it before reopening",
                            dir.display()
                        )));
                    }
                    open = OPEN_ENGINES.lock();
                }
            }
        }
        let store = Arc::new(Store::open(&key, options)?);
        let vectors = Registry::new();
        store.add_write_hook(vectors.write_hook());
        vectors.load(&store, &key)?;
        let (sender, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            sinks: RwLock::new(Vec::new()),
        });
        let writer = {
            let (store, shared) = (store.clone(), shared.clone());
            std::thread::Builder::new()
                .name("athanor-writer".into())
                .spawn(move || commit::run_writer(store, shared, rx))?
        };
        let read_only = crate::store::is_replica(&store)?;
        let engine = Arc::new(Engine {
            store,
            vectors,
            shared,
            sender,
            writer: Mutex::new(Some(writer)),
            next_sink: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            read_only: AtomicBool::new(read_only),
            key: key.clone(),
        });
        open.insert(key, Arc::downgrade(&engine));
        Ok(engine)
    }

    /// Checks a batch's vector writes against the collections (caught up with
    /// other processes first), before it is queued.
    pub fn precheck(&self, batch: &TxBatch) -> Result<()> {
        if batch.vectors.is_empty() {
            return Ok(());
        }
        self.vectors.refresh(&self.store)?;
        self.vectors.precheck(batch)
    }

    /// The database directory (canonical path).
    pub fn dir(&self) -> &Path {
        &self.key
    }

    /// The vector collections of this database.
    pub fn vectors(&self) -> &Registry {
        &self.vectors
    }

    /// The store, for reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates vector collection `name`, or returns the existing one when its
    /// parameters match. On a read replica only an existing collection is returned
    /// (a new one comes with its primary's first commit writing to it): creating one
    /// is refused with `ERR_READ_ONLY`.
    pub fn create_collection(
        &self,
        name: &str,
        params: crate::vector::CollectionParams,
    ) -> Result<Arc<crate::vector::CollectionIndex>> {
        self.create_collection_in(crate::store::DEFAULT_NAMESPACE_ID, name, params)
    }

    /// [`Engine::create_collection`] in namespace `ns`, which must exist.
    pub fn create_collection_in(
        &self,
        ns: u32,
        name: &str,
        params: crate::vector::CollectionParams,
    ) -> Result<Arc<crate::vector::CollectionIndex>> {
        // The plain name is checked before it is qualified: it holds no NUL, so it
        // cannot spell another namespace's qualified name.
        crate::vector::collection::check_name(name)?;
        let qualified = crate::store::qualified_collection(ns, name);
        if self.vectors.get(&qualified).is_none() {
            self.check_writable()?;
            let txn = self.begin_read()?;
            let _g = self.store.guard();
            if !self.store.namespace_exists(&txn, ns)? {
                return Err(Error::new(
                    Code::NotFound,
                    "this namespace was dropped: create it again with db.namespaces.create() to use it",
                ));
            }
        }
        self.vectors.create(&self.store, &qualified, params)
    }

    /// The open vector collection `name` of namespace `ns` (caught up with other
    /// processes' commits), or `None`.
    pub fn collection_in(
        &self,
        ns: u32,
        name: &str,
    ) -> Result<Option<Arc<crate::vector::CollectionIndex>>> {
        crate::vector::collection::check_name(name)?;
        self.vectors.refresh(&self.store)?;
        Ok(self
            .vectors
            .get(&crate::store::qualified_collection(ns, name)))
    }

    /// The definitions of namespace `ns`'s vector collections, sorted by name, with the
    /// names as the namespace sees them.
    pub fn collections_in(&self, ns: u32) -> Result<Vec<crate::vector::collection::CollectionDef>> {
        self.vectors.refresh(&self.store)?;
        Ok(self
            .vectors
            .list()
            .into_iter()
            .filter_map(|mut d| {
                let (in_ns, plain) = crate::store::split_collection(&d.name);
                if in_ns != ns {
                    return None;
                }
                d.name = plain.to_owned();
                Some(d)
            })
            .collect())
    }

    /// Drops vector collection `name` and its documents; returns whether it existed.
    /// Refused before anything is changed on a read replica (`ERR_READ_ONLY`) and
    /// while the commit log is on (`ERR_INVALID_ARGUMENT`): a drop is an
    /// administrative write outside the commit stream, so replicas would keep the
    /// collection and diverge from the primary.
    pub fn drop_collection(&self, name: &str) -> Result<bool> {
        self.drop_collection_in(crate::store::DEFAULT_NAMESPACE_ID, name)
    }

    /// [`Engine::drop_collection`] in namespace `ns`.
    pub fn drop_collection_in(&self, ns: u32, name: &str) -> Result<bool> {
        crate::vector::collection::check_name(name)?;
        self.check_writable()?;
        if self.store.replication_info()?.logging {
            return Err(Error::invalid(format!(
                "collection {name:?} cannot be dropped while this database publishes its commits: replicas would keep it (a drop is not replicated yet); delete its documents in a transaction instead, or drop it on a database that does not publish"
            )));
        }
        self.vectors
            .drop_collection(&self.store, &crate::store::qualified_collection(ns, name))
    }

    /// Creates namespace `name` (`options`: JSON text the caller checked). Refused on
    /// a read replica (`ERR_READ_ONLY`) and while the commit log is on: namespaces do
    /// not take part in replication yet.
    pub fn create_namespace(
        &self,
        name: &str,
        options: &str,
    ) -> Result<crate::store::NamespaceInfo> {
        self.check_writable()?;
        if self.store.replication_info()?.logging {
            return Err(Error::invalid(format!(
                "namespace {name:?} cannot be created while this database publishes its commits: namespaces are not replicated yet"
            )));
        }
        self.store.create_namespace(name, options)
    }

    /// Drops namespace `name` and everything in it, in one write transaction; returns
    /// the namespace dropped, or `None` when there was none. Transactions of the
    /// namespace still queued fail with `ERR_NOT_FOUND`.
    pub fn drop_namespace(&self, name: &str) -> Result<Option<crate::store::NamespaceInfo>> {
        crate::store::check_namespace_name(name)?;
        self.check_writable()?;
        // Its vector collections first (each its own write): a crash in between leaves
        // the namespace with fewer collections, never collections without a namespace.
        let info = {
            let txn = self.begin_read()?;
            let _g = self.store.guard();
            self.store.namespace(&txn, name)?
        };
        if let Some(info) = &info {
            for def in self.vectors.list() {
                if crate::store::split_collection(&def.name).0 == info.id {
                    self.vectors.drop_collection(&self.store, &def.name)?;
                }
            }
        }
        self.store
            .write_with_growth(|_, wtxn| self.store.drop_namespace_rows(wtxn, name))
    }

    /// Registers a sink for completions and commit notices; returns its id.
    pub fn register_sink(&self, sink: Arc<dyn CommitSink>) -> u64 {
        let id = self.next_sink.fetch_add(1, Ordering::Relaxed);
        self.shared.sinks.write().push((id, sink));
        id
    }

    /// Removes a sink. Completions still queued for it are dropped.
    pub fn unregister_sink(&self, id: u64) {
        self.shared.sinks.write().retain(|(i, _)| *i != id);
    }

    /// Queues a transaction; its outcome goes to sink `sink` tagged with `token`.
    /// Vector writes are checked against the collections first (see
    /// [`crate::vector::Registry::precheck`]); a bad one is refused here, before queueing.
    pub fn submit(&self, batch: TxBatch, sink: u64, token: u64) -> Result<()> {
        self.check_writable()?;
        self.precheck(&batch)?;
        self.send(Msg::Commit(Request {
            batch,
            reply: Reply::Sink { sink, token },
        }))
    }

    /// Queues several transactions at once (they are applied in this order, in
    /// one group unless the group limits are reached). `(batch, token)` pairs.
    /// Callers check vector writes first with [`crate::vector::Registry::precheck`].
    pub fn submit_many(&self, batches: Vec<(TxBatch, u64)>, sink: u64) -> Result<()> {
        self.check_writable()?;
        let requests = batches
            .into_iter()
            .map(|(batch, token)| Request {
                batch,
                reply: Reply::Sink { sink, token },
            })
            .collect();
        self.send(Msg::CommitMany(requests))
    }

    /// Commits a transaction and waits for its outcome (blocks the calling thread).
    ///
    /// ```
    /// use athanor_core::{Code, Engine, Outcome, StoreOptions, TxBuilder, Value};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let engine = Engine::open(dir.path(), StoreOptions::default())?;
    /// let pay = || TxBuilder::new().event_json("paid", "{}").idempotency_key("pay-1").build();
    /// assert_eq!(engine.commit_blocking(pay()?)?.outcome, Outcome::Applied);
    /// // The same key again inside the window: nothing is written twice.
    /// assert_eq!(engine.commit_blocking(pay()?)?.outcome, Outcome::Duplicate);
    /// // A read that went stale fails with ERR_CONFLICT, and writes nothing.
    /// engine.commit_blocking(TxBuilder::new().put("n", &Value::I64(1)).build()?)?;
    /// let stale = TxBuilder::new().read("n", 0).put("n", &Value::I64(2)).build()?;
    /// assert_eq!(engine.commit_blocking(stale).unwrap_err().code, Code::Conflict);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_blocking(&self, batch: TxBatch) -> Result<CommitInfo> {
        self.check_writable()?;
        self.precheck(&batch)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Msg::Commit(Request {
            batch,
            reply: Reply::Channel(tx),
        }))?;
        rx.recv().map_err(|_| Error::closed())?
    }

    /// Refuses writes on a read replica (`ERR_READ_ONLY`), before anything is queued.
    pub fn check_writable(&self) -> Result<()> {
        if self.read_only.load(Ordering::Acquire) {
            return Err(Error::new(
                Code::ReadOnly,
                "this database is a read replica: it changes only by applying its primary's commits; write on the primary, then replica.waitFor(commitSeq) to read your write here",
            ));
        }
        Ok(())
    }

    /// Makes this database a read replica of `primary_id` (see
    /// [`Store::init_replica`]); from then on local writes are refused.
    pub fn init_replica(&self, primary_id: &str) -> Result<()> {
        self.store.init_replica(primary_id)?;
        self.read_only.store(true, Ordering::Release);
        Ok(())
    }

    /// Applies commit records of this replica's primary, in stream order, in one
    /// LMDB transaction with `stream_seq`, the stream position of the last one (see
    /// [`commit::ReplicaApplied`]). Commit notices go to the sinks as for local commits.
    pub fn apply_replicated(
        &self,
        records: &[Vec<u8>],
        stream_seq: u64,
    ) -> Result<commit::ReplicaApplied> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        // Collections first, each in an administrative write of its own: creating one
        // again with the same parameters is a no-op, so a crash in between is harmless.
        for r in records {
            for (name, def) in crate::wire::commit_record::decode(r)?.collections {
                let def = crate::vector::collection::CollectionDef::decode(name, def)?;
                if self.vectors.get(&def.name).is_none() {
                    self.vectors.create(&self.store, &def.name, def.params)?;
                }
            }
        }
        commit::apply_replicated(&self.store, &self.shared, records, stream_seq)
    }

    /// Flushes everything committed so far to disk, whatever the durability mode.
    pub fn sync(&self) -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Msg::Sync(tx))?;
        rx.recv().map_err(|_| Error::closed())?
    }

    fn send(&self, msg: Msg) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        self.sender.send(msg).map_err(|_| Error::closed())
    }

    /// Begins a read transaction on the current committed state.
    pub fn begin_read(&self) -> Result<RoTxn<'static, WithoutTls>> {
        self.store.begin_read()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.sender.send(Msg::Shutdown);
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
        // Not taking the registry lock here: an `open` may hold it while it waits for
        // this engine's environment to close. A dead entry is replaced on the next open;
        // drop it now only if nobody is holding the lock.
        if let Some(mut open) = OPEN_ENGINES.try_lock() {
            if open.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
                open.remove(&self.key);
            }
        }
    }
}
