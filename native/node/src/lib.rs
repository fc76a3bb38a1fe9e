//! N-API bindings for athanor-core. Thin by design: argument conversion, error
//! mapping and the bridge that carries commit outcomes back to the JS thread.
//! The engine logic lives in `athanor-core`.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod backup;
mod embed;
mod fast;
mod guard;
mod projection;
mod replication;
mod security;
mod streams;
mod vector;
use fast::{ReadCtx, Scratch};
use guard::{guard, CoreResult};

use athanor_core::wire;
use athanor_core::{
    CachedReader, CommitNotice, CommitSink, Completion, Durability, Engine, EventQuery,
    StoreOptions, TxBatch,
};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use crate::guard::Guarded;

/// Hands commit outcomes to the JS thread through a (weak) threadsafe function.
/// The JS callback is ours (`Core.#onCommit` in ts/state/core.ts) and never throws: user callbacks are
/// wrapped there, since an exception here would take the process down.
struct JsSink {
    tsfn: ThreadsafeFunction<Buffer, (), Buffer, Status, false, true>,
    wants_notices: AtomicBool,
}

impl CommitSink for JsSink {
    fn deliver(&self, notice: CommitNotice, completions: Vec<Completion>) {
        let buf = wire::completion::pack_group(notice, &completions);
        self.tsfn
            .call(buf.into(), ThreadsafeFunctionCallMode::NonBlocking);
    }
    fn wants_notices(&self) -> bool {
        self.wants_notices.load(Ordering::Relaxed)
    }
}

fn durability(mode: &str, interval_ms: u32) -> CoreResult<Durability> {
    match mode {
        "full" => Ok(Durability::Full),
        "batched" => Ok(Durability::Batched {
            interval_ms: interval_ms as u64,
        }),
        "none" => Ok(Durability::None),
        other => Err(athanor_core::Error::invalid(format!(
            "durability must be 'full', 'batched' or 'none', got {other:?}"
        ))),
    }
}

/// Options passed from `Athanor.open`.
#[napi(object)]
pub struct NativeOpenOptions {
    pub durability: String,
    pub sync_interval_ms: u32,
    pub map_size: f64,
    pub idempotency_window_ms: f64,
    /// `false`: open only an existing database (`ERR_NOT_FOUND` otherwise). Default true.
    pub create: Option<bool>,
    /// Start the event log's hash chain when the store has none (default false).
    pub chain: Option<bool>,
    /// The chain's HMAC key (never stored; zeroed in native memory at close).
    pub hmac_key: Option<Buffer>,
}

/// A namespace as the registry records it.
#[napi(object)]
pub struct NativeNamespace {
    /// Its name.
    pub name: String,
    /// Its id in the key encoding.
    pub id: u32,
    /// When it was created, milliseconds since the Unix epoch.
    pub created_at_ms: f64,
    /// The options it was created with (JSON text).
    pub options: String,
}

impl From<athanor_core::store::NamespaceInfo> for NativeNamespace {
    fn from(n: athanor_core::store::NamespaceInfo) -> Self {
        NativeNamespace {
            name: n.name,
            id: n.id,
            created_at_ms: n.created_at_ms as f64,
            options: n.options,
        }
    }
}

/// The JS callback that receives packed commit outcomes (weak: it does not keep Node alive).
type CommitCallback = ThreadsafeFunction<Buffer, (), Buffer, Status, false, true>;

fn store_options(options: &NativeOpenOptions) -> CoreResult<StoreOptions> {
    Ok(StoreOptions {
        durability: durability(&options.durability, options.sync_interval_ms)?,
        initial_map_size: options.map_size as usize,
        idempotency_window_ms: options.idempotency_window_ms as u64,
        create: options.create.unwrap_or(true),
        chain: security::chain_options(options.chain, options.hmac_key.as_ref())?,
        ..StoreOptions::default()
    })
}

/// Opens `dir` on the libuv pool (`Athanor.open`): checking the LMDB files and
/// loading every vector collection and index dump can take seconds, which must not
/// stall the event loop. Resolves to the handle; `on_commit` as in the constructor.
/// The store's sync histogram as JS sees it (counts as numbers: far below 2^53).
#[napi(object)]
pub struct NativeSyncStats {
    /// Syncs measured.
    pub count: f64,
    /// Their total duration, seconds.
    pub sum_seconds: f64,
    /// Upper bounds of the buckets, seconds.
    pub bucket_bounds: Vec<f64>,
    /// Syncs per bucket (not cumulative); one more entry than the bounds: above the last.
    pub bucket_counts: Vec<f64>,
    /// Total duration of each bucket's syncs, seconds.
    pub bucket_sum_seconds: Vec<f64>,
}

#[napi(ts_return_type = "Promise<NativeDb>")]
pub fn open_db(
    env: Env,
    dir: String,
    options: NativeOpenOptions,
    on_commit: CommitCallback,
) -> Result<AsyncTask<Guarded<OpenDbTask>>> {
    let options = guard(&env, || store_options(&options))?;
    Ok(guard::task(OpenDbTask {
        dir: PathBuf::from(dir),
        options,
        on_commit: Some(on_commit),
    }))
}

/// The work of [`open_db`].
pub struct OpenDbTask {
    dir: PathBuf,
    options: StoreOptions,
    on_commit: Option<CommitCallback>,
}

impl guard::Work for OpenDbTask {
    type Output = Arc<Engine>;
    type JsValue = NativeDb;
    fn compute(&mut self) -> CoreResult<Arc<Engine>> {
        Engine::open(&self.dir, self.options.clone())
    }
    fn resolve(&mut self, _env: Env, engine: Arc<Engine>) -> Result<NativeDb> {
        let on_commit = self.on_commit.take().ok_or_else(|| {
            napi::Error::new(Status::GenericFailure, "ERR_INTERNAL: open resolved twice")
        })?;
        Ok(NativeDb::attach(engine, on_commit, 0))
    }
}

/// One open handle on a database directory (internal: wrapped by `ts/`).
#[napi]
pub struct NativeDb {
    ctx: Rc<ReadCtx>,
    sink_id: u64,
    sink: Arc<JsSink>,
}

#[napi]
impl NativeDb {
    /// Opens `dir` on the calling thread (`Athanor.openSync`); `openDb` opens off it.
    /// `on_commit` receives packed outcomes/notices on the JS thread.
    #[napi(constructor)]
    pub fn new(
        env: Env,
        dir: String,
        options: NativeOpenOptions,
        on_commit: CommitCallback,
    ) -> Result<Self> {
        let engine = guard(&env, || {
            Engine::open(&PathBuf::from(dir), store_options(&options)?)
        })?;
        Ok(NativeDb::attach(engine, on_commit, 0))
    }

    /// Wraps an open engine in a handle on namespace `ns` whose commit outcomes go to `on_commit`.
    fn attach(engine: Arc<Engine>, on_commit: CommitCallback, ns: u32) -> Self {
        let sink = Arc::new(JsSink {
            tsfn: on_commit,
            wants_notices: AtomicBool::new(false),
        });
        let sink_id = engine.register_sink(sink.clone());
        let ctx = Rc::new(ReadCtx {
            engine: RefCell::new(Some(engine)),
            reader: RefCell::new(CachedReader::default()),
            tx_reader: RefCell::new(CachedReader::default()),
            scratch: Cell::new(Scratch::EMPTY),
            ns,
        });
        NativeDb { ctx, sink_id, sink }
    }

    fn engine(&self) -> CoreResult<Arc<Engine>> {
        self.ctx.engine()
    }

    /// Runs `f` on the newest committed state: the cached read transaction, renewed
    /// when stale, used under the map guard.
    pub(crate) fn read_newest<T>(
        &self,
        f: impl FnOnce(&athanor_core::Store, &heed::RoTxn) -> CoreResult<T>,
    ) -> CoreResult<T> {
        let engine = self.engine()?;
        let store = engine.store();
        let mut reader = self.ctx.reader.borrow_mut();
        let txn = reader.fresh(store)?;
        let _g = store.guard();
        f(store, txn)
    }

    /// Registers the scratch buffers (kept alive by the JS wrapper) and installs the
    /// fast read functions `get(keyLen)` and `txGet(keyLen)` on `target` (see fast.rs):
    /// each returns the value length written to the value scratch (for `txGet`: the
    /// entry, see `athanor_core::wire::entry`), or -1 when the key is absent.
    #[napi]
    pub fn set_scratch(&mut self, env: Env, key: &[u8], val: &[u8], target: Object) -> Result<()> {
        guard(&env, || {
            self.ctx.scratch.set(Scratch::new(key, val));
            // SAFETY: called on the JS thread with a live env and object.
            unsafe { fast::install(env.raw(), target.raw(), &self.ctx) }
        })
    }

    /// Like `get` but returns a fresh buffer (for values larger than the scratch).
    #[napi]
    pub fn get_copy(&self, env: Env, key_len: u32) -> Result<Option<Buffer>> {
        Ok(guard(&env, || self.ctx.get_copy(key_len))?.map(Buffer::from))
    }

    /// `txGet` returning a fresh buffer, for entries larger than the scratch.
    #[napi]
    pub fn tx_get_copy(&self, env: Env, key_len: u32) -> Result<Option<Buffer>> {
        Ok(guard(&env, || self.ctx.tx_get_copy(key_len))?.map(Buffer::from))
    }

    /// Validates a transaction batch and queues it for the writer. Invalid input
    /// throws here, before anything is queued. The outcome arrives via `on_commit`.
    #[napi]
    pub fn commit(&self, env: Env, batch: &[u8], token: u32) -> Result<()> {
        guard(&env, || {
            let engine = self.engine()?;
            let mut parsed = TxBatch::parse(batch.to_vec())?;
            parsed.namespace = self.ctx.ns;
            engine.submit(parsed, self.sink_id, token as u64)
        })
    }

    /// Queues several batches at once so they share one group commit. `packed`
    /// holds one frame per entry of `tokens`, in order ([`wire::commit_many`]).
    /// Every token gets exactly one answer: a batch that fails validation (or a
    /// frame that does not match its token) is not queued and its error comes back
    /// in the returned answer (a completion group of failures); the others go ahead
    /// and report through `on_commit`.
    #[napi]
    pub fn commit_many(&self, env: Env, packed: &[u8], tokens: Vec<u32>) -> Result<Buffer> {
        let answer = guard(&env, || {
            Ok(wire::commit_many::pack_answer(
                &self.commit_many_inner(packed, &tokens),
            ))
        })?;
        Ok(answer.into())
    }
}

impl NativeDb {
    /// The tokens not queued, each with its error.
    fn commit_many_inner(&self, packed: &[u8], tokens: &[u32]) -> Vec<Completion> {
        let fail = |token: u32, e: &athanor_core::Error| Completion {
            token: token as u64,
            result: Err(e.clone()),
        };
        let engine = match self.engine() {
            Ok(e) => e,
            Err(_) => {
                let e = athanor_core::Error::closed();
                return tokens.iter().map(|&t| fail(t, &e)).collect();
            }
        };
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        let mut off = 0usize;
        for (i, &token) in tokens.iter().enumerate() {
            match wire::commit_many::read_frame(packed, off, token) {
                Some((body, next)) => {
                    off = next;
                    match TxBatch::parse(body.to_vec()).and_then(|mut b| {
                        b.namespace = self.ctx.ns;
                        engine.precheck(&b)?;
                        Ok(b)
                    }) {
                        Ok(b) => ok.push((b, token as u64)),
                        Err(e) => errors.push(fail(token, &e)),
                    }
                }
                None => {
                    // The framing is ours: a mismatch is a bug, and nothing after it can be trusted.
                    let e = athanor_core::Error::internal("the commit hand-over was malformed (a bug in athanor: please report it); this transaction was not committed");
                    errors.extend(tokens[i..].iter().map(|&t| fail(t, &e)));
                    break;
                }
            }
        }
        if !ok.is_empty() {
            let queued: Vec<u32> = ok.iter().map(|(_, t)| *t as u32).collect();
            if let Err(e) = engine.submit_many(ok, self.sink_id) {
                errors.extend(queued.into_iter().map(|t| fail(t, &e)));
            }
        }
        errors
    }
}

#[napi]
impl NativeDb {
    /// Commits and waits (blocks the JS thread). Returns one completion record
    /// ([`wire::completion`]).
    #[napi]
    pub fn commit_sync(&self, env: Env, batch: &[u8]) -> Result<Buffer> {
        let out = guard(&env, || {
            let engine = self.engine()?;
            let mut parsed = TxBatch::parse(batch.to_vec())?;
            parsed.namespace = self.ctx.ns;
            Ok(wire::completion::pack_record(
                &engine.commit_blocking(parsed),
            ))
        })?;
        Ok(out.into())
    }

    /// Reads events (packed, see `Store::read_events`) from the newest state.
    #[napi]
    pub fn read_events(
        &self,
        env: Env,
        from: BigInt,
        to: Option<BigInt>,
        event_type: Option<String>,
        limit: u32,
        reverse: bool,
    ) -> Result<Buffer> {
        let out = guard(&env, || {
            let q = query(from, to, event_type, limit, reverse)?;
            self.read_newest(|store, txn| store.space(self.ctx.ns).read_events(txn, &q))
        })?;
        Ok(out.into())
    }

    /// The newest event id, the commit seq and the oldest event id kept (1 until a
    /// compaction), as of the newest committed state.
    #[napi]
    pub fn heads(&self, env: Env) -> Result<Vec<u64>> {
        guard(&env, || {
            self.read_newest(|store, txn| heads(store, self.ctx.ns, txn))
        })
    }

    /// A count of the commits to the file that this process's commit writer did not
    /// make (another process, a replica's apply, an administrative write), offset by a
    /// constant, read without a transaction: it changes exactly when such a commit
    /// happens, so a caller can skip re-reading what only another commit could change.
    /// `NaN` while the writer is committing: ask again after.
    #[napi]
    pub fn other_commits(&self, env: Env) -> Result<f64> {
        guard(&env, || {
            Ok(match self.engine()?.store().commit_counts() {
                Some((all, writer)) => all.wrapping_sub(writer) as i64 as f64,
                None => f64::NAN,
            })
        })
    }

    /// Deletes the events below `before` (of `types` only, when given) with their type
    /// index entries, in one write transaction: `[deleted, firstEventId]`. The caller
    /// (`ts/eventsourcing/retention.ts`) chose `before` below every durable cursor.
    #[napi]
    pub fn compact_events(
        &self,
        env: Env,
        before: BigInt,
        types: Option<Vec<String>>,
    ) -> Result<Vec<u64>> {
        guard(&env, || {
            let (signed, before, lossless) = before.get_u64();
            if signed || !lossless {
                return Err(athanor_core::Error::invalid(
                    "before must be a non-negative 64-bit event id",
                ));
            }
            if self.ctx.ns != 0 {
                return Err(athanor_core::Error::invalid(
                    "a namespace's log is not compacted: compact the database's own log",
                ));
            }
            let engine = self.engine()?;
            let done = engine.store().compact_events(before, types.as_deref())?;
            Ok(vec![done.deleted, done.first_event_id])
        })
    }

    /// Looks an idempotency key up, on the newest state or (`pinned`) on the snapshot
    /// of the transaction attempt in progress: `[commit_seq, first_event_id,
    /// event_count, committed_at_ms]` of the transaction that applied it while the key
    /// is inside the idempotency window, or `null`.
    #[napi]
    pub fn idempotency_record(
        &self,
        env: Env,
        key: String,
        pinned: bool,
    ) -> Result<Option<Vec<u64>>> {
        guard(&env, || {
            let engine = self.engine()?;
            let store = engine.store();
            let mut reader = if pinned {
                self.ctx.tx_reader.borrow_mut()
            } else {
                self.ctx.reader.borrow_mut()
            };
            let txn = if pinned {
                reader.pinned(store)
            } else {
                reader.fresh(store)
            }?;
            let _g = store.guard();
            Ok(store
                .space(self.ctx.ns)
                .idempotency_record(txn, key.as_bytes())?
                .map(|(s, f, n, at)| vec![s, f, n as u64, at]))
        })
    }

    /// Opens a snapshot: a read transaction that stays on one state until closed.
    #[napi]
    pub fn snapshot(&self, env: Env) -> Result<NativeSnapshot> {
        guard(&env, || {
            let engine = self.engine()?;
            let txn = engine.begin_read()?;
            Ok(NativeSnapshot {
                engine: Some(engine),
                txn: Some(txn),
                scratch: self.ctx.scratch.get(),
                ns: self.ctx.ns,
            })
        })
    }

    /// Whether this handle's `on_commit` should receive notices for every commit.
    #[napi]
    pub fn set_wants_notices(&self, env: Env, on: bool) -> Result<()> {
        guard(&env, || {
            self.sink.wants_notices.store(on, Ordering::Relaxed);
            Ok(())
        })
    }

    /// Keeps the event loop alive while commits are pending (`true`) or lets it exit.
    #[napi]
    pub fn keep_alive(&self, env: Env, on: bool) -> Result<()> {
        guard(&env, || {
            let raw = self.sink.tsfn.raw();
            // SAFETY: called on the JS thread with a live threadsafe function.
            let status = unsafe {
                if on {
                    napi::sys::napi_ref_threadsafe_function(env.raw(), raw)
                } else {
                    napi::sys::napi_unref_threadsafe_function(env.raw(), raw)
                }
            };
            if status == napi::sys::Status::napi_ok {
                Ok(())
            } else {
                Err(athanor_core::Error::internal(
                    "could not change the commit callback's ref count",
                ))
            }
        })
    }

    /// Drops cached read transactions that no longer see the newest commit, so
    /// they stop pinning old pages (called after commits).
    #[napi]
    pub fn release_stale_readers(&self, env: Env) -> Result<()> {
        guard(&env, || {
            if let Ok(engine) = self.ctx.engine() {
                let store = engine.store();
                self.ctx.reader.borrow_mut().release_if_stale(store);
                self.ctx.tx_reader.borrow_mut().release_if_stale(store);
            }
            Ok(())
        })
    }

    /// Flushes everything committed so far to disk (async, off the JS thread).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn flush(&self, env: Env) -> Result<AsyncTask<Guarded<FlushTask>>> {
        Ok(guard::task(FlushTask(guard(&env, || self.engine())?)))
    }

    /// Checks the store's structure and invariants, projection.db and the index
    /// dumps; returns the number of events checked.
    #[napi]
    pub fn verify(&self, env: Env) -> Result<f64> {
        guard(&env, || {
            Ok(athanor_core::verify::verify(&*self.engine()?)? as f64)
        })
    }

    /// The full verify report (counts and every violation) as JSON text.
    #[napi]
    pub fn verify_report(&self, env: Env) -> Result<String> {
        guard(&env, || {
            let report = athanor_core::verify::report(&*self.engine()?)?;
            Ok(report.to_json().to_string())
        })
    }

    /// Up to `limit` state entries whose keys start with `prefix`, in key order,
    /// after the key `after` when given, on the newest state, packed as
    /// [`wire::state_list`] says.
    #[napi]
    pub fn state_list(
        &self,
        env: Env,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Buffer> {
        let rows = guard(&env, || {
            self.read_newest(|store, txn| {
                store.space(self.ctx.ns).list_state(
                    txn,
                    prefix.as_bytes(),
                    after.as_deref().map(str::as_bytes),
                    limit as usize,
                )
            })
        })?;
        Ok(wire::state_list::pack(&rows).into())
    }

    /// A handle on namespace `id` of the same engine, whose commit outcomes go to
    /// `on_commit`. The id comes from `find_namespace` or `create_namespace`; every
    /// read and write of the handle is confined to it by the core's key encoding.
    #[napi]
    pub fn namespace_view(&self, env: Env, id: u32, on_commit: CommitCallback) -> Result<NativeDb> {
        let engine = guard(&env, || self.engine())?;
        Ok(NativeDb::attach(engine, on_commit, id))
    }

    /// The namespace named `name`, or `null`.
    #[napi]
    pub fn find_namespace(&self, env: Env, name: String) -> Result<Option<NativeNamespace>> {
        guard(&env, || {
            self.read_newest(|store, txn| {
                Ok(store.namespace(txn, &name)?.map(NativeNamespace::from))
            })
        })
    }

    /// Every namespace, by name.
    #[napi]
    pub fn list_namespaces(&self, env: Env) -> Result<Vec<NativeNamespace>> {
        guard(&env, || {
            self.read_newest(|store, txn| {
                Ok(store
                    .list_namespaces(txn)?
                    .into_iter()
                    .map(NativeNamespace::from)
                    .collect())
            })
        })
    }

    /// Creates namespace `name` with `options` (JSON text); durable when it returns.
    #[napi]
    pub fn create_namespace(
        &self,
        env: Env,
        name: String,
        options: String,
    ) -> Result<NativeNamespace> {
        guard(&env, || {
            let engine = self.engine()?;
            Ok(NativeNamespace::from(
                engine.create_namespace(&name, &options)?,
            ))
        })
    }

    /// Drops namespace `name` with everything in it; the dropped namespace, or `null`.
    #[napi]
    pub fn drop_namespace(&self, env: Env, name: String) -> Result<Option<NativeNamespace>> {
        guard(&env, || {
            let engine = self.engine()?;
            Ok(engine.drop_namespace(&name)?.map(NativeNamespace::from))
        })
    }

    /// The namespace this handle reads and writes (0: the default namespace).
    #[napi(getter)]
    pub fn namespace_id(&self) -> u32 {
        self.ctx.ns
    }

    /// Current LMDB map size in bytes.
    #[napi]
    pub fn map_size(&self, env: Env) -> Result<f64> {
        guard(&env, || Ok(self.engine()?.store().map_size() as f64))
    }

    /// How long this process's syncs of the store took (durable commits, explicit flushes).
    #[napi]
    pub fn sync_stats(&self, env: Env) -> Result<NativeSyncStats> {
        guard(&env, || {
            let s = self.engine()?.store().sync_stats();
            Ok(NativeSyncStats {
                count: s.count as f64,
                sum_seconds: s.sum_seconds,
                bucket_bounds: athanor_core::store::SYNC_BUCKETS_S.to_vec(),
                bucket_counts: s.buckets.iter().map(|&n| n as f64).collect(),
                bucket_sum_seconds: s.bucket_sum_seconds,
            })
        })
    }

    /// Closes this handle. The engine stops (after committing what is queued) when
    /// its last handle and snapshot are closed.
    #[napi]
    pub fn close(&self, env: Env) -> Result<()> {
        guard(&env, || {
            self.ctx.reader.borrow_mut().release();
            self.ctx.tx_reader.borrow_mut().release();
            if let Some(engine) = self.ctx.engine.borrow_mut().take() {
                engine.unregister_sink(self.sink_id);
            }
            Ok(())
        })
    }
}

fn query(
    from: BigInt,
    to: Option<BigInt>,
    event_type: Option<String>,
    limit: u32,
    reverse: bool,
) -> CoreResult<EventQuery> {
    let u = |b: BigInt, what: &str| -> CoreResult<u64> {
        let (signed, v, lossless) = b.get_u64();
        if signed || !lossless {
            return Err(athanor_core::Error::invalid(format!(
                "{what} must be a non-negative 64-bit event id"
            )));
        }
        Ok(v)
    };
    if let Some(t) = &event_type {
        athanor_core::codec::check_event_type(t.as_bytes())?;
    }
    Ok(EventQuery {
        from: u(from, "from")?,
        to: to.map(|t| u(t, "to")).transpose()?,
        event_type,
        limit,
        reverse,
    })
}

/// Background flush for `db.flush()`.
pub struct FlushTask(Arc<Engine>);

impl guard::Work for FlushTask {
    type Output = ();
    type JsValue = ();
    fn compute(&mut self) -> CoreResult<()> {
        self.0.sync()
    }
    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        Ok(())
    }
}

/// A consistent read-only view (internal: wrapped by `ts/`).
#[napi]
pub struct NativeSnapshot {
    engine: Option<Arc<Engine>>,
    txn: Option<heed::RoTxn<'static, heed::WithoutTls>>,
    scratch: Scratch,
    /// The namespace it reads.
    ns: u32,
}

/// `[last_event_id, commit_seq, first_event_id]` of namespace `ns` (a namespace's log
/// is never compacted: it starts at 1).
fn heads(store: &athanor_core::Store, ns: u32, txn: &heed::RoTxn) -> CoreResult<Vec<u64>> {
    let space = store.space(ns);
    let first = if ns == 0 {
        store.first_event_id(txn)?
    } else {
        1
    };
    Ok(vec![
        space.last_event_id(txn)?,
        store.commit_seq(txn)?,
        first,
    ])
}

#[napi]
impl NativeSnapshot {
    fn parts(&self) -> CoreResult<(&Arc<Engine>, &heed::RoTxn<'static, heed::WithoutTls>)> {
        match (&self.engine, &self.txn) {
            (Some(e), Some(t)) => Ok((e, t)),
            _ => Err(athanor_core::Error::new(
                athanor_core::Code::Closed,
                "this snapshot is closed; take a new one with db.snapshot()",
            )),
        }
    }

    /// Point read; same contract as `NativeDb.get`.
    #[napi]
    pub fn get(&self, env: Env, key_len: u32) -> Result<i64> {
        guard(&env, || {
            let (engine, txn) = self.parts()?;
            let key = self.scratch.key(key_len)?;
            let store = engine.store();
            let _g = store.guard();
            Ok(match store.space(self.ns).get(txn, key)? {
                None => -1,
                Some(e) => self.scratch.put(&[e.value]),
            })
        })
    }

    /// Point read returning a fresh buffer.
    #[napi]
    pub fn get_copy(&self, env: Env, key_len: u32) -> Result<Option<Buffer>> {
        let value = guard(&env, || {
            let (engine, txn) = self.parts()?;
            let key = self.scratch.key(key_len)?;
            let store = engine.store();
            let _g = store.guard();
            Ok(store
                .space(self.ns)
                .get(txn, key)?
                .map(|e| e.value.to_vec()))
        })?;
        Ok(value.map(Buffer::from))
    }

    /// Reads events as of this snapshot.
    #[napi]
    pub fn read_events(
        &self,
        env: Env,
        from: BigInt,
        to: Option<BigInt>,
        event_type: Option<String>,
        limit: u32,
        reverse: bool,
    ) -> Result<Buffer> {
        let out = guard(&env, || {
            let (engine, txn) = self.parts()?;
            let q = query(from, to, event_type, limit, reverse)?;
            let store = engine.store();
            let _g = store.guard();
            store.space(self.ns).read_events(txn, &q)
        })?;
        Ok(out.into())
    }

    /// `[last_event_id, commit_seq]` as of this snapshot.
    #[napi]
    pub fn heads(&self, env: Env) -> Result<Vec<u64>> {
        guard(&env, || {
            let (engine, txn) = self.parts()?;
            let store = engine.store();
            let _g = store.guard();
            heads(store, self.ns, txn)
        })
    }

    /// Releases the read transaction.
    #[napi]
    pub fn close(&mut self, env: Env) -> Result<()> {
        guard(&env, || {
            self.txn = None;
            self.engine = None;
            Ok(())
        })
    }
}

/// Decodes a value in Rust and re-encodes it (cross-language codec tests).
/// Returns the Rust type name and canonical bytes.
#[napi]
pub fn codec_round_trip(env: Env, bytes: &[u8]) -> Result<(String, Buffer)> {
    let (name, canonical) = guard(&env, || {
        let v = athanor_core::Value::decode(bytes)?;
        Ok((v.type_name().to_string(), v.encode()))
    })?;
    Ok((name, canonical.into()))
}
