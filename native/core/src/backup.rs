//! Backups of the canonical store: a compacted, consistent copy of the LMDB
//! environment, taken inside one read transaction so writers never wait for it, and
//! a content digest of the logical contents that is the same for the same logical
//! state whatever the page layout or the history that led to it.
//!
//! The digest covers, in this order, each length-prefixed:
//! - state: every key and its value bytes (not the version, which is a commit seq);
//! - events: every event's id, payload kind, type and payload (not its commit time or
//!   commit seq, which depend on how writes were grouped);
//! - vectors: every collection by name with its parameters, then its documents (id
//!   and stored record), keyed by name rather than by the internal collection id;
//! - streams (only when a stream exists): the stream heads and the stream index;
//! - namespaces (only when one exists): each by name with its options, then its state,
//!   events, stream index and (when it has any) vector collections as above, keyed by
//!   name rather than by its id.
//!
//! Idempotency records are left out: they expire, and they describe requests rather
//! than the data.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use heed::types::Bytes;
use heed::{CompactionOption, Database, EnvFlags, EnvOpenOptions, RoTxn, WithoutTls};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::{Code, Error, Result};
use crate::store::{Store, SyncStats};
use crate::vector::collection::CollectionDef;

/// What [`Store::content_digest`] and [`digest_dir`] report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDigest {
    /// SHA-256 over the logical contents (see the module docs), lower-case hex.
    pub sha256: String,
    /// State keys covered.
    pub state_keys: u64,
    /// Events covered.
    pub events: u64,
    /// Vector documents covered (all collections).
    pub vector_documents: u64,
    /// Id of the newest event (0 when the log is empty).
    pub last_event_id: u64,
    /// Commit seq of the newest commit.
    pub commit_seq: u64,
}

/// The databases a digest reads, opened in the environment being digested.
struct DigestDbs {
    meta: Database<Bytes, Bytes>,
    state: Database<Bytes, Bytes>,
    events: Database<Bytes, Bytes>,
    vector_collections: Database<Bytes, Bytes>,
    vectors: Database<Bytes, Bytes>,
    /// The stream index (`None` in a copy made before streams existed).
    stream_heads: Option<Database<Bytes, Bytes>>,
    stream_events: Option<Database<Bytes, Bytes>>,
    /// The namespace registry and the namespaced databases the digest reads (`None`
    /// in a copy made before namespaces existed).
    namespaces: Option<NamespaceDbs>,
}

/// The namespaced databases a digest reads (`store/space.rs`).
#[derive(Clone, Copy)]
struct NamespaceDbs {
    registry: Database<Bytes, Bytes>,
    state: Database<Bytes, Bytes>,
    events: Database<Bytes, Bytes>,
    stream_heads: Database<Bytes, Bytes>,
    stream_events: Database<Bytes, Bytes>,
}

impl DigestDbs {
    /// The databases the digest reads, from an open store's.
    fn of(d: &crate::store::Dbs) -> Self {
        DigestDbs {
            meta: d.meta,
            state: d.state,
            events: d.events,
            vector_collections: d.vector_collections,
            vectors: d.vectors,
            stream_heads: Some(d.stream_heads),
            stream_events: Some(d.stream_events),
            namespaces: Some(NamespaceDbs {
                registry: d.namespaces,
                state: d.ns_state,
                events: d.ns_events,
                stream_heads: d.ns_stream_heads,
                stream_events: d.ns_stream_events,
            }),
        }
    }
}

fn frame(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn meta_u64(dbs: &DigestDbs, txn: &RoTxn<'_, WithoutTls>, key: &[u8]) -> Result<u64> {
    Ok(match dbs.meta.get(txn, key)? {
        Some(b) if b.len() == 8 => u64::from_be_bytes(b.try_into().unwrap()),
        Some(_) => return Err(Error::corrupt("a meta counter is not 8 bytes")),
        None => 0,
    })
}

fn digest(dbs: &DigestDbs, txn: &RoTxn<'_, WithoutTls>) -> Result<ContentDigest> {
    let mut h = Sha256::new();
    h.update(b"athanor content digest v1\n");
    h.update(b"state\n");
    let mut state_keys = 0u64;
    for item in dbs.state.iter(txn)? {
        let (k, v) = item?;
        let (_version, value) = codec::split_state_entry(v)?;
        frame(&mut h, k);
        frame(&mut h, value);
        state_keys += 1;
    }
    h.update(b"events\n");
    let mut events = 0u64;
    for item in dbs.events.iter(txn)? {
        let (k, v) = item?;
        let e = codec::decode_event(v)?;
        h.update(k);
        h.update([e.kind as u8]);
        frame(&mut h, e.event_type.as_bytes());
        frame(&mut h, e.payload);
        events += 1;
    }
    h.update(b"vectors\n");
    let mut vector_documents = 0u64;
    for item in dbs.vector_collections.iter(txn)? {
        let (name, rec) = item?;
        // A namespace's collections (names `\0<id>\0...`) are hashed in its section.
        if name.first() == Some(&0) {
            continue;
        }
        vector_documents += digest_collection(&mut h, dbs, txn, name, name, rec)?;
    }
    // Only a store with streams has this section, so the digests of stores without any
    // (every store made before streams) are unchanged.
    if let (Some(heads), Some(members)) = (dbs.stream_heads, dbs.stream_events) {
        if !heads.is_empty(txn)? {
            h.update(b"streams\n");
            for db in [heads, members] {
                for item in db.iter(txn)? {
                    let (k, v) = item?;
                    frame(&mut h, k);
                    frame(&mut h, v);
                }
            }
        }
    }
    // Likewise only a store with namespaces has this section.
    if let Some(ns) = dbs.namespaces {
        if !ns.registry.is_empty(txn)? {
            h.update(b"namespaces\n");
            let (s, e, v) = digest_namespaces(&mut h, dbs, &ns, txn)?;
            state_keys += s;
            events += e;
            vector_documents += v;
        }
    }
    Ok(ContentDigest {
        sha256: hex(&h.finalize()),
        state_keys,
        events,
        vector_documents,
        last_event_id: meta_u64(dbs, txn, crate::store::META_LAST_EVENT_ID)?,
        commit_seq: meta_u64(dbs, txn, crate::store::META_COMMIT_SEQ)?,
    })
}

/// Hashes one vector collection: its name as shown (`shown`), its parameters, then its
/// documents (id and stored record). Returns the documents covered.
fn digest_collection(
    h: &mut Sha256,
    dbs: &DigestDbs,
    txn: &RoTxn<'_, WithoutTls>,
    stored_name: &[u8],
    shown: &[u8],
    rec: &[u8],
) -> Result<u64> {
    let def = CollectionDef::decode(stored_name, rec)?;
    frame(h, shown);
    // The parameters without the id (bytes 1..5), which depends on creation order.
    frame(h, &[&rec[..1], &rec[5..]].concat());
    let prefix = def.id.to_be_bytes();
    let mut documents = 0u64;
    for doc in dbs.vectors.prefix_iter(txn, &prefix)? {
        let (k, v) = doc?;
        frame(h, &k[prefix.len()..]);
        frame(h, v);
        documents += 1;
    }
    Ok(documents)
}

/// Hashes every namespace, by name: its name and options, then its state (key and
/// value), events (id, kind, type, payload), stream index and vector collections, each
/// with keys and names as the namespace sees them. Ids are left out: they follow the
/// order namespaces were created in. Returns the state keys, events and vector
/// documents covered.
fn digest_namespaces(
    h: &mut Sha256,
    dbs: &DigestDbs,
    ns: &NamespaceDbs,
    txn: &RoTxn<'_, WithoutTls>,
) -> Result<(u64, u64, u64)> {
    let (mut state_keys, mut events, mut vector_documents) = (0u64, 0u64, 0u64);
    for item in ns.registry.iter(txn)? {
        let (name, rec) = item?;
        let info = crate::store::NamespaceInfo::decode(name, rec)?;
        frame(h, name);
        frame(h, info.options.as_bytes());
        let prefix = info.id.to_be_bytes();
        h.update(b"state\n");
        for item in ns.state.prefix_iter(txn, &prefix)? {
            let (k, v) = item?;
            let (_version, value) = codec::split_state_entry(v)?;
            frame(h, &k[4..]);
            frame(h, value);
            state_keys += 1;
        }
        h.update(b"events\n");
        for item in ns.events.prefix_iter(txn, &prefix)? {
            let (k, v) = item?;
            let e = codec::decode_event(v)?;
            h.update(&k[4..]);
            h.update([e.kind as u8]);
            frame(h, e.event_type.as_bytes());
            frame(h, e.payload);
            events += 1;
        }
        h.update(b"streams\n");
        for db in [ns.stream_heads, ns.stream_events] {
            for item in db.prefix_iter(txn, &prefix)? {
                let (k, v) = item?;
                frame(h, &k[4..]);
                frame(h, v);
            }
        }
        // Only a namespace with collections has this part, as above.
        let qualified = crate::store::qualified_collection(info.id, "");
        let mut collections = dbs
            .vector_collections
            .prefix_iter(txn, qualified.as_bytes())?
            .peekable();
        if collections.peek().is_some() {
            h.update(b"vectors\n");
            for item in collections {
                let (name, rec) = item?;
                let shown = &name[qualified.len()..];
                vector_documents += digest_collection(h, dbs, txn, name, shown, rec)?;
            }
        }
    }
    Ok((state_keys, events, vector_documents))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl Store {
    /// The content digest of the newest committed state.
    pub fn content_digest(&self) -> Result<ContentDigest> {
        let txn = self.begin_read()?;
        let _g = self.guard();
        let dbs = DigestDbs::of(&self.dbs);
        digest(&dbs, &txn)
    }

    /// Writes a compacted copy of the environment to the new file `dst` (zstd-compressed
    /// at `zstd_level` when given) in one pass: LMDB's copy streams through a pipe into a
    /// thread that compresses, hashes and writes it, while this thread computes the content
    /// digest of the very snapshot being copied. Returns the stored file's size and
    /// SHA-256 with the digest; the file is synced.
    ///
    /// Both read transactions must see one snapshot, and the copy begins its own inside
    /// LMDB. So the LMDB write lock (shared by every process on the directory) is held
    /// from before the digest's transaction until the copy has produced its first bytes,
    /// which proves its transaction has begun: writers wait for that moment only (about a
    /// millisecond), never for the copy or the digest. The work runs on threads of its
    /// own at a lower CPU priority: the copy at nice 10, the hashing under `SCHED_IDLE`
    /// watched by a valve (see `IdleThreads::enter`).
    pub fn backup_canonical(&self, dst: &Path, zstd_level: Option<i32>) -> Result<CanonicalBackup> {
        if let Some(level) = zstd_level {
            check_level(level)?;
        }
        let file = create_new(dst)?;
        let (mut pipe_out, pipe_in) = std::io::pipe().map_err(|e| io_error("pipe for", dst, e))?;
        enlarge_pipe(&pipe_in);
        // Map growth waits for this guard; the copy thread runs under it too.
        let _g = self.guard();
        let (writer_lock, snapshot) = self.pinned_snapshot()?;
        let dbs = DigestDbs::of(&self.dbs);
        let (started_tx, started) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel::<()>();
        let stored_bytes = AtomicU64::new(0);
        let stored_bytes = &stored_bytes;
        let idle = IdleThreads::default();
        let idle = &idle;
        let (copied, stored, digest) = std::thread::scope(|s| {
            s.spawn(move || valve(&done, stored_bytes, idle));
            let copy = s.spawn(move || {
                background_priority();
                // SAFETY: the descriptor stays open until the copy returns (`pipe_in` is
                // dropped after it), and only this thread writes to it.
                let r = unsafe {
                    self.env
                        .copy_to_fd(raw_handle(&pipe_in), CompactionOption::Enabled)
                };
                drop(pipe_in);
                r
            });
            let store = s.spawn(move || {
                let _idle = idle.enter();
                let mut buf = vec![0u8; PIPE_CHUNK];
                let mut first = Some(started_tx);
                let mut sink = match zstd_level {
                    Some(level) => Sink::Zstd(
                        zstd::Encoder::new(
                            HashingWriter::new(BufWriter::with_capacity(PIPE_CHUNK, file)),
                            level,
                        )
                        .map_err(|e| io_error("compress", dst, e))?,
                    ),
                    None => match DirectFile::new(file, Some(self.sync_stats.clone())) {
                        Ok(direct) => Sink::Direct(HashingWriter::new(direct)),
                        Err(file) => Sink::Plain(HashingWriter::new(BufWriter::with_capacity(
                            PIPE_CHUNK, file,
                        ))),
                    },
                };
                loop {
                    let n = match sink.fill_from(&mut pipe_out, &mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(io_error("copy", dst, e)),
                    };
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                    if n == 0 {
                        break;
                    }
                    stored_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                sink.finish(dst)
            });
            // The copy's transaction has begun once bytes flow (or the copy ended early).
            let _ = started.recv();
            drop(writer_lock);
            let digest = s.spawn(move || {
                let _idle = idle.enter();
                digest(&dbs, &snapshot)
            });
            let joined = (copy.join(), store.join(), digest.join());
            drop(done_tx); // ends the valve
            joined
        });
        let copied = copied.map_err(|_| Error::internal("the backup copy thread panicked"))?;
        let stored = stored.map_err(|_| Error::internal("the backup writer thread panicked"))?;
        // The writer's error first: a failed write closes the pipe, which fails the copy too.
        let file = stored?;
        copied?;
        let digest = digest.map_err(|_| Error::internal("the backup digest thread panicked"))?;
        Ok(CanonicalBackup {
            file,
            digest: digest?,
        })
    }

    /// A read transaction on the newest commit, with the LMDB write lock held so no
    /// commit can follow it until the lock (the aborted-on-drop write txn) is dropped.
    /// The caller holds the map guard.
    fn pinned_snapshot(&self) -> Result<(heed::RwTxn<'_>, RoTxn<'static, WithoutTls>)> {
        let lock = self.env.write_txn()?;
        // While the write lock is held no process can grow the map, so this does not
        // meet `MDB_MAP_RESIZED` (the write txn would have).
        let snapshot = self.env.clone().static_read_txn()?;
        Ok((lock, snapshot))
    }

    /// Writes a compacted copy of the environment to `dest/data.mdb` (`dest` must exist
    /// and hold no `data.mdb`). The copy reflects one committed state, read in a single
    /// read transaction: commits go on meanwhile and are not in it. The file is synced.
    pub fn copy_compacted(&self, dest: &Path) -> Result<()> {
        let path = dest.join("data.mdb");
        let mut file = create_new(&path)?;
        {
            let _g = self.guard();
            self.env
                .copy_to_file(&mut file, CompactionOption::Enabled)?;
        }
        file.sync_all().map_err(|e| io_error("sync", &path, e))?;
        Ok(())
    }
}

/// The content digest of an environment directory (`<dir>/data.mdb`) that no process
/// has open, read without writing to it: for a backup's copy or a restored store.
pub fn digest_dir(dir: &Path) -> Result<ContentDigest> {
    let data = dir.join("data.mdb");
    let len = fs::metadata(&data)
        .map_err(|e| io_error("read", &data, e))?
        .len();
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    // A compacted copy is exactly as large as its pages; map it whole.
    opts.map_size((len as usize).max(1 << 20).next_multiple_of(1 << 20))
        .max_dbs(crate::store::MAX_DBS);
    // SAFETY: read-only, no lock file; the caller guarantees no writer uses `dir`.
    unsafe { opts.flags(EnvFlags::READ_ONLY | EnvFlags::NO_LOCK) };
    let env = unsafe { opts.open(dir) }?;
    let txn = env.read_txn()?;
    let open = |name: &str| -> Result<Database<Bytes, Bytes>> {
        env.open_database(&txn, Some(name))?.ok_or_else(|| {
            Error::corrupt(format!(
                "{} has no {name} database: not an athanor store",
                data.display()
            ))
        })
    };
    let dbs = DigestDbs {
        meta: open("meta")?,
        state: open("state")?,
        events: open("events")?,
        vector_collections: open("vector_collections")?,
        vectors: open("vectors")?,
        stream_heads: env.open_database(&txn, Some("stream_heads"))?,
        stream_events: env.open_database(&txn, Some("stream_events"))?,
        namespaces: match env.open_database(&txn, Some("namespaces"))? {
            None => None,
            Some(registry) => Some(NamespaceDbs {
                registry,
                state: open("ns_state")?,
                events: open("ns_events")?,
                stream_heads: open("ns_stream_heads")?,
                stream_events: open("ns_stream_events")?,
            }),
        },
    };
    let d = digest(&dbs, &txn)?;
    drop(txn);
    env.prepare_for_closing().wait();
    Ok(d)
}

/// What [`Store::backup_canonical`] reports: the stored file and the digest of the
/// snapshot it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalBackup {
    /// The file as stored (compressed when asked).
    pub file: WrittenFile,
    /// The content digest of the copied snapshot.
    pub digest: ContentDigest,
}

/// A file a backup wrote, summarised from the bytes as they were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its contents, lower-case hex.
    pub sha256: String,
}

/// Bytes read from the copy's pipe at a time (also the pipe's capacity where it can be set).
const PIPE_CHUNK: usize = 1 << 20;

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
    writeback: Writeback,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hash: Sha256::new(),
            bytes: 0,
            writeback: Writeback::default(),
        }
    }
}

impl Write for HashingWriter<BufWriter<File>> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        let written = self.bytes - self.inner.buffer().len() as u64;
        self.writeback.advance(self.inner.get_ref(), written);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Lowers the calling thread's CPU priority to nice 10 (LMDB's own copy thread, started
/// from ours, inherits it): a backup is background work, and on a busy machine the
/// commit writer and the event loop should get the cores first. Only threads the
/// backup spawns call this, never a pool thread that outlives it.
fn background_priority() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a plain syscall about the calling thread (on Linux the nice value is per thread).
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

/// The backup threads that run under `SCHED_IDLE`, by thread id, for `valve` to raise.
#[derive(Default)]
struct IdleThreads(Mutex<Vec<i32>>);

/// A thread's stay in `IdleThreads`: it leaves the list when this drops, before it ends,
/// so the valve never touches a thread id that another thread may have taken since.
struct IdleStay<'a> {
    threads: &'a IdleThreads,
    tid: i32,
}

impl IdleThreads {
    /// Puts the calling thread under `SCHED_IDLE` and on this list: a waking commit thread
    /// or the event loop then takes a core from it at once, where a nice thread would
    /// first finish its time slice (measured: about 60 % more commits of a concurrent
    /// writer during a backup). An idle thread gets almost nothing of a core that other
    /// threads keep busy, so `valve` raises the list to nice 10 when the copy stops
    /// moving. Where this process may not leave `SCHED_IDLE` again (without
    /// `CAP_SYS_NICE`, a thread needs `RLIMIT_NICE` for that), the thread gets nice 10
    /// and stays off the list. The hashing threads use this; the copy thread does not.
    fn enter(&self) -> Option<IdleStay<'_>> {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if idle_can_be_left() {
            let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: plain syscalls about the calling thread (on Linux policies are per thread).
            let tid = unsafe { libc::gettid() };
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as above.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
                list.push(tid);
                return Some(IdleStay { threads: self, tid });
            }
        }
        background_priority();
        None
    }

    /// Moves every listed thread to the normal policy at nice 10; how many it moved.
    fn raise(&self) -> usize {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut raised = 0;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        for &tid in list.iter() {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: plain syscalls about a live thread of this process (listed threads
            // leave the list, under this lock, before they end).
            unsafe {
                if libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) == 0 {
                    libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
                    raised += 1;
                }
            }
        }
        raised
    }
}

impl Drop for IdleStay<'_> {
    fn drop(&mut self) {
        let mut list = self.threads.0.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|&t| t != self.tid);
    }
}

/// Whether a thread of this process can move from `SCHED_IDLE` back to the normal policy
/// (tried once, on a thread of its own that ends right after).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn idle_can_be_left() -> bool {
    static LEAVES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LEAVES.get_or_init(|| {
        std::thread::spawn(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: plain syscalls about this short-lived thread.
            unsafe {
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0
                    && libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) == 0
            }
        })
        .join()
        .unwrap_or(false)
    })
}

/// How long a backup's copy may make no progress before `valve` raises its idle threads.
const STALL: Duration = Duration::from_millis(200);

/// Watches a backup's copy until `done` closes: when `stored` (bytes written) has not
/// moved for `STALL` (the machine's cores are kept busy, so the idle threads get almost
/// nothing), raises `idle` to nice 10, which still yields to commits but has a share of
/// the cores, so the backup finishes and releases its read transaction.
fn valve(done: &mpsc::Receiver<()>, stored: &AtomicU64, idle: &IdleThreads) {
    let mut last = stored.load(Ordering::Relaxed);
    loop {
        match done.recv_timeout(STALL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = stored.load(Ordering::Relaxed);
        if now == last {
            idle.raise();
            return;
        }
        last = now;
    }
}

/// Bytes of a backup file handed to the disk at a time while it is written. Small
/// steps keep the disk queue short: a concurrent commit's fsync then waits behind at
/// most a megabyte of backup pages (with 8 MiB steps the writer's p99 was about twice
/// as high, and the backup no faster).
const WRITEBACK_STEP: u64 = 1 << 20;

/// Starts the disk writes of a large file as it is written, a step at a time, and
/// waits for the step before last: the final sync then has little left to flush.
/// Without this, hundreds of megabytes of dirty pages reach the disk in one burst at
/// the final sync, and a concurrent writer's small commit fsync queues behind all of
/// it (on ext4 it may even have to wait for it).
#[derive(Default)]
struct Writeback {
    /// Start of the range not yet handed to the disk.
    started: u64,
    /// Start of the range handed over but not yet waited for.
    waited: u64,
}

impl Writeback {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn advance(&mut self, file: &File, written: u64) {
        use std::os::fd::AsRawFd;
        if written < self.started + WRITEBACK_STEP {
            return;
        }
        let fd = file.as_raw_fd();
        // SAFETY: plain syscalls on a descriptor borrowed for their duration. They only
        // schedule or await writeback; a failure is caught by the final sync_all.
        unsafe {
            libc::sync_file_range(
                fd,
                self.started as libc::off64_t,
                (written - self.started) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
            if self.started > self.waited {
                libc::sync_file_range(
                    fd,
                    self.waited as libc::off64_t,
                    (self.started - self.waited) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
        self.waited = self.started;
        self.started = written;
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn advance(&mut self, _file: &File, _written: u64) {}
}

impl HashingWriter<BufWriter<File>> {
    /// Flushes and syncs the file; its size and hash.
    fn finish(self, path: &Path) -> Result<WrittenFile> {
        let file = self
            .inner
            .into_inner()
            .map_err(|e| io_error("write", path, e.into_error()))?;
        file.sync_all().map_err(|e| io_error("sync", path, e))?;
        Ok(WrittenFile {
            bytes: self.bytes,
            sha256: hex(&self.hash.finalize()),
        })
    }
}

/// Where the copy's bytes go: straight to the hashed file, or through zstd first.
enum Sink {
    Plain(HashingWriter<BufWriter<File>>),
    /// Uncompressed, past the page cache (see [`DirectFile`]).
    Direct(HashingWriter<DirectFile>),
    Zstd(zstd::Encoder<'static, HashingWriter<BufWriter<File>>>),
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(bytes),
            Sink::Direct(w) => w.write_all(bytes),
            Sink::Zstd(w) => w.write_all(bytes),
        }
    }

    /// Reads the next bytes of `from` and stores them; 0 at its end. A direct file reads
    /// straight into its chunk (no copy in between); the others read through `buf`.
    fn fill_from(&mut self, from: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Sink::Direct(w) = self {
            return w.fill_from(from);
        }
        let n = from.read(buf)?;
        self.write_all(&buf[..n])?;
        Ok(n)
    }

    /// Writes what is buffered and syncs the file; its size and hash.
    fn finish(self, path: &Path) -> Result<WrittenFile> {
        match self {
            Sink::Plain(w) => w.finish(path),
            Sink::Direct(w) => {
                let file = w.inner.finish().map_err(|e| io_error("write", path, e))?;
                file.sync_all().map_err(|e| io_error("sync", path, e))?;
                Ok(WrittenFile {
                    bytes: w.bytes,
                    sha256: hex(&w.hash.finalize()),
                })
            }
            Sink::Zstd(w) => w
                .finish()
                .map_err(|e| io_error("compress", path, e))?
                .finish(path),
        }
    }
}

/// Block alignment of direct I/O buffers, offsets and lengths (the largest logical block
/// size in common use).
const DIRECT_ALIGN: usize = 4096;

/// A file written with `O_DIRECT`, in whole aligned chunks of [`DIRECT_CHUNK`] bytes: the
/// copy goes to the disk without passing through the page cache (as LMDB's own copy
/// does), so it neither spends CPU time on the cache nor leaves a burst of dirty pages
/// that a concurrent commit's fsync would queue behind. The chunks are written by a
/// thread of their own, so hashing the next chunk overlaps the disk write of the last;
/// the last, partial chunk is written with `O_DIRECT` turned off.
struct DirectFile {
    current: AlignedChunk,
    /// Full chunks to the writing thread (`None` once finished).
    to_disk: Option<mpsc::SyncSender<AlignedChunk>>,
    /// Chunks the writing thread is done with, for reuse.
    free: mpsc::Receiver<AlignedChunk>,
    disk: Option<std::thread::JoinHandle<std::io::Result<File>>>,
}

/// Bytes of one chunk, written whole while the store commits nothing.
const DIRECT_CHUNK: usize = 1 << 20;

/// A [`DIRECT_CHUNK`]-byte buffer aligned for direct I/O, and how much of it is filled.
struct AlignedChunk {
    /// `DIRECT_CHUNK + DIRECT_ALIGN` bytes, of which the aligned `DIRECT_CHUNK` are used.
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedChunk {
    fn new() -> AlignedChunk {
        let raw = vec![0u8; DIRECT_CHUNK + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedChunk { raw, start, len: 0 }
    }
    fn filled(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

/// Chunks in flight between the hashing thread and the writing one.
const DIRECT_CHUNKS: usize = 3;

/// Bytes of one direct write while commits are happening: a commit's fsync queued behind
/// one waits for at most this much of the backup (1 MiB writes raised a concurrent
/// writer's p99 by about half as much again as 256 KiB ones, at 1 GiB).
const DIRECT_PIECE: usize = 128 << 10;

/// How long after the store's last commit the backup still writes in pieces.
const COMMITS_QUIET: Duration = Duration::from_millis(50);

impl DirectFile {
    /// Turns on `O_DIRECT`; hands the file back where it cannot be (e.g. tmpfs).
    /// `commits` counts the store's durable commits: while it moves, chunks go to the
    /// disk a [`DIRECT_PIECE`] at a time, so a commit's fsync waits behind less of the
    /// backup; while it stands still, whole chunks (the fastest way through).
    #[cfg(target_os = "linux")]
    fn new(file: File, commits: Option<Arc<SyncStats>>) -> std::result::Result<DirectFile, File> {
        use std::os::fd::AsRawFd;
        if set_direct(file.as_raw_fd(), true).is_err() {
            return Err(file);
        }
        let (to_disk, chunks) = mpsc::sync_channel::<AlignedChunk>(DIRECT_CHUNKS);
        let (done, free) = mpsc::channel::<AlignedChunk>();
        for _ in 1..DIRECT_CHUNKS {
            let _ = done.send(AlignedChunk::new());
        }
        let disk = std::thread::spawn(move || {
            idle_io_priority();
            let mut file = file;
            let mut direct = true;
            let mut seen = commits.as_ref().map_or(0, |c| c.count());
            let mut last_commit: Option<std::time::Instant> = None;
            for mut chunk in chunks {
                if direct && chunk.len % DIRECT_ALIGN != 0 {
                    // Only the last chunk is partial: direct I/O writes whole blocks.
                    set_direct(file.as_raw_fd(), false)?;
                    direct = false;
                }
                let mut rest = chunk.filled();
                while !rest.is_empty() {
                    let now = commits.as_ref().map_or(0, |c| c.count());
                    if now != seen {
                        seen = now;
                        last_commit = Some(std::time::Instant::now());
                    }
                    let step = if last_commit.is_some_and(|t| t.elapsed() < COMMITS_QUIET) {
                        DIRECT_PIECE
                    } else {
                        rest.len()
                    };
                    match file.write(&rest[..step.min(rest.len())]) {
                        Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                        Ok(n) => rest = &rest[n..],
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        // A file system that took O_DIRECT but refuses these writes (or a
                        // short write that left the offset unaligned): the rest goes buffered.
                        Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                            set_direct(file.as_raw_fd(), false)?;
                            direct = false;
                        }
                        Err(e) => return Err(e),
                    }
                }
                chunk.len = 0;
                let _ = done.send(chunk);
            }
            Ok(file)
        });
        Ok(DirectFile {
            current: AlignedChunk::new(),
            to_disk: Some(to_disk),
            free,
            disk: Some(disk),
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn new(file: File, _commits: Option<Arc<SyncStats>>) -> std::result::Result<DirectFile, File> {
        Err(file)
    }

    /// Hands the current chunk to the writing thread and takes an empty one.
    fn hand_over(&mut self) -> std::io::Result<()> {
        let next = match self.free.recv() {
            Ok(c) => c,
            // The writing thread ended: it failed, and `finish` reports why.
            Err(_) => return Err(self.disk_error()),
        };
        let full = std::mem::replace(&mut self.current, next);
        let sent = self.to_disk.as_ref().map(|t| t.send(full));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self.disk_error()),
        }
    }

    fn disk_error(&mut self) -> std::io::Error {
        self.to_disk = None;
        match self.disk.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e,
            _ => std::io::Error::other("the backup's disk writer stopped"),
        }
    }

    /// Writes the partial last chunk, waits for every write, and hands the file back for its sync.
    fn finish(mut self) -> std::io::Result<File> {
        if self.current.len > 0 {
            let last = std::mem::replace(
                &mut self.current,
                AlignedChunk {
                    raw: Vec::new(),
                    start: 0,
                    len: 0,
                },
            );
            if let Some(Err(_)) = self.to_disk.as_ref().map(|t| t.send(last)) {
                return Err(self.disk_error());
            }
        }
        self.to_disk = None;
        match self.disk.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            _ => Err(std::io::Error::other("the backup's disk writer panicked")),
        }
    }
}

/// Puts the calling thread's disk I/O in the idle class: the I/O scheduler (where it
/// has classes, as mq-deadline and BFQ do) serves a commit's writes and fsync before
/// the backup's direct writes, which are this thread's own requests. Best effort.
#[cfg(target_os = "linux")]
fn idle_io_priority() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: a plain syscall about the calling thread (0: the caller).
    unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        );
    }
}

/// Turns `O_DIRECT` on or off for `fd`.
#[cfg(target_os = "linux")]
fn set_direct(fd: std::os::fd::RawFd, on: bool) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns for the duration of the call.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        let want = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, want) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Write for DirectFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let c = &mut self.current;
        let n = buf.len().min(DIRECT_CHUNK - c.len);
        let at = c.start + c.len;
        c.raw[at..at + n].copy_from_slice(&buf[..n]);
        c.len += n;
        if c.len == DIRECT_CHUNK {
            self.hand_over()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl HashingWriter<DirectFile> {
    /// Reads from `from` straight into the current chunk and hashes what came; 0 at its end.
    fn fill_from(&mut self, from: &mut impl Read) -> std::io::Result<usize> {
        let c = &mut self.inner.current;
        let at = c.start + c.len;
        let n = from.read(&mut c.raw[at..c.start + DIRECT_CHUNK])?;
        self.hash.update(&c.raw[at..at + n]);
        c.len += n;
        self.bytes += n as u64;
        if c.len == DIRECT_CHUNK {
            self.inner.hand_over()?;
        }
        Ok(n)
    }
}

impl Write for HashingWriter<DirectFile> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A bigger pipe means fewer wake-ups between LMDB's copy thread and ours; where the
/// platform has no such setting the default capacity only costs a little speed.
fn enlarge_pipe(pipe: &std::io::PipeWriter) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain fcntl on a descriptor this function borrows; failure is harmless.
        unsafe {
            libc::fcntl(
                pipe.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_CHUNK as libc::c_int,
            )
        };
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = pipe;
}

#[cfg(unix)]
fn raw_handle(pipe: &std::io::PipeWriter) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    pipe.as_raw_fd()
}

#[cfg(windows)]
fn raw_handle(pipe: &std::io::PipeWriter) -> std::os::windows::io::RawHandle {
    use std::os::windows::io::AsRawHandle;
    pipe.as_raw_handle()
}

fn check_level(level: i32) -> Result<()> {
    if !(1..=19).contains(&level) {
        return Err(Error::invalid(format!(
            "zstd level must be 1..19, got {level}"
        )));
    }
    Ok(())
}

/// Compresses `src` into `dst` (which must not exist) with zstd at `level` (1..=19),
/// and syncs it. Returns the compressed file's size and SHA-256.
pub fn compress_file(src: &Path, dst: &Path, level: i32) -> Result<WrittenFile> {
    check_level(level)?;
    let input = File::open(src).map_err(|e| io_error("open", src, e))?;
    let out = create_new(dst)?;
    let mut enc = zstd::Encoder::new(HashingWriter::new(BufWriter::new(out)), level)
        .map_err(|e| io_error("compress", src, e))?;
    std::io::copy(&mut BufReader::new(input), &mut enc)
        .map_err(|e| io_error("compress", src, e))?;
    enc.finish()
        .map_err(|e| io_error("compress", src, e))?
        .finish(dst)
}

/// Size and SHA-256 of the file at `path`.
pub fn hash_file(path: &Path) -> Result<WrittenFile> {
    let mut input = File::open(path).map_err(|e| io_error("open", path, e))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; PIPE_CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("read", path, e)),
        };
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(WrittenFile {
        bytes,
        sha256: hex(&hash.finalize()),
    })
}

/// Decompresses zstd `src` into `dst` (which must not exist) and syncs it. A truncated
/// or damaged input fails with `ERR_CORRUPT`.
pub fn decompress_file(src: &Path, dst: &Path) -> Result<()> {
    let input = File::open(src).map_err(|e| io_error("open", src, e))?;
    let out = create_new(dst)?;
    let mut dec =
        zstd::Decoder::new(BufReader::new(input)).map_err(|e| io_error("decompress", src, e))?;
    let mut w = BufWriter::new(out);
    std::io::copy(&mut dec, &mut w).map_err(|e| {
        Error::new(
            Code::Corrupt,
            format!("{} is not a complete zstd stream: {e}", src.display()),
        )
    })?;
    let file = w
        .into_inner()
        .map_err(|e| io_error("write", dst, e.into_error()))?;
    file.sync_all().map_err(|e| io_error("sync", dst, e))?;
    Ok(())
}

/// Writes a consistent, compacted copy of the SQLite database `src` to the new file
/// `dst` (`VACUUM INTO` on a read-only connection of its own: one read transaction,
/// so in WAL mode writers go on meanwhile), and syncs it. Returns its size and SHA-256.
pub fn sqlite_snapshot(src: &Path, dst: &Path) -> Result<WrittenFile> {
    if dst.exists() {
        return Err(Error::invalid(format!("{} already exists", dst.display())));
    }
    let conn = crate::projection::open_for_reading(src)
        .map_err(|e| Error::new(Code::Io, format!("cannot open {}: {e}", src.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| Error::new(Code::Io, format!("{}: {e}", src.display())))?;
    let target = dst
        .to_str()
        .ok_or_else(|| Error::invalid(format!("{} is not valid UTF-8", dst.display())))?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| Error::new(Code::Io, format!("cannot snapshot {}: {e}", src.display())))?;
    drop(conn);
    File::open(dst)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error("sync", dst, e))?;
    // Read back while it is in the page cache: SQLite writes it in no single stream.
    hash_file(dst)
}

/// Creates `path`, which must not exist yet (a backup never overwrites a file).
fn create_new(path: &Path) -> Result<File> {
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error("create", path, e))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    let code = if e.kind() == std::io::ErrorKind::AlreadyExists {
        Code::InvalidArgument
    } else {
        Code::Io
    };
    Error::new(code, format!("cannot {what} {}: {e}", path.display()))
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn a_direct_file_holds_exactly_what_was_written_in_writes_of_any_size() {
        let dir = tempfile::TempDir::new().unwrap();
        // Several chunks and a partial last one, in uneven writes.
        let len = DIRECT_CHUNK * 5 + DIRECT_ALIGN * 3 + 123;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        for (name, step) in [("even", DIRECT_CHUNK), ("uneven", 7_777), ("small", 1_000)] {
            let path = dir.path().join(name);
            let Ok(direct) = DirectFile::new(create_new(&path).unwrap(), None) else {
                return; // a file system without O_DIRECT: the buffered path is used there
            };
            let mut w = HashingWriter::new(direct);
            for piece in data.chunks(step) {
                w.write_all(piece).unwrap();
            }
            let written = Sink::Direct(w).finish(&path).unwrap();
            assert_eq!(fs::read(&path).unwrap(), data, "{name}");
            assert_eq!(written.bytes, len as u64);
            assert_eq!(written.sha256, hash_file(&path).unwrap().sha256);
        }
        // While commits happen, chunks go to the disk in pieces: the same bytes.
        let path = dir.path().join("pieces");
        let commits = Arc::new(SyncStats::default());
        if let Ok(direct) = DirectFile::new(create_new(&path).unwrap(), Some(commits.clone())) {
            let mut w = HashingWriter::new(direct);
            for piece in data.chunks(50_000) {
                commits.record(Duration::from_micros(300));
                w.write_all(piece).unwrap();
            }
            Sink::Direct(w).finish(&path).unwrap();
            assert_eq!(fs::read(&path).unwrap(), data);
        }
        // Read straight from a reader into the chunks.
        let path = dir.path().join("filled");
        if let Ok(direct) = DirectFile::new(create_new(&path).unwrap(), None) {
            let mut sink = Sink::Direct(HashingWriter::new(direct));
            let mut from = std::io::Cursor::new(&data);
            let mut buf = vec![0u8; 1000];
            while sink.fill_from(&mut from, &mut buf).unwrap() > 0 {}
            let written = sink.finish(&path).unwrap();
            assert_eq!(fs::read(&path).unwrap(), data);
            assert_eq!(written.sha256, hash_file(&path).unwrap().sha256);
        }
        // Whole chunks only: no partial write at the end.
        let path = dir.path().join("whole");
        if let Ok(direct) = DirectFile::new(create_new(&path).unwrap(), None) {
            let mut w = HashingWriter::new(direct);
            w.write_all(&data[..DIRECT_CHUNK * 2]).unwrap();
            Sink::Direct(w).finish(&path).unwrap();
            assert_eq!(fs::read(&path).unwrap(), &data[..DIRECT_CHUNK * 2]);
        }
    }

    /// A thread in `idle`, parked until `release` closes; its tid, or None where this
    /// process cannot leave `SCHED_IDLE` (its backups then run at nice 10).
    fn idle_thread<'s>(
        s: &'s std::thread::Scope<'s, '_>,
        idle: &'s IdleThreads,
        release: mpsc::Receiver<()>,
    ) -> Option<libc::pid_t> {
        let (tid_tx, tid_rx) = mpsc::channel();
        s.spawn(move || {
            let stay = idle.enter();
            tid_tx.send(stay.as_ref().map(|s| s.tid)).unwrap();
            let _ = release.recv();
        });
        tid_rx.recv().unwrap()
    }

    fn policy(tid: libc::pid_t) -> libc::c_int {
        // SAFETY: a plain query about a live thread of this process.
        unsafe { libc::sched_getscheduler(tid) }
    }

    #[test]
    fn a_backup_that_stops_moving_is_raised_from_idle_to_nice_10() {
        let idle = IdleThreads::default();
        std::thread::scope(|s| {
            let (release_tx, release) = mpsc::channel();
            let Some(tid) = idle_thread(s, &idle, release) else {
                return;
            };
            assert_eq!(policy(tid), libc::SCHED_IDLE);
            let (_done_tx, done) = mpsc::channel::<()>();
            valve(&done, &AtomicU64::new(0), &idle); // nothing moves: returns after one STALL
            assert_eq!(policy(tid), libc::SCHED_OTHER);
            // SAFETY: a plain query about a live thread of this process.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
            assert_eq!(nice, 10);
            drop(release_tx);
        });
        assert!(
            idle.0.lock().unwrap().is_empty(),
            "a thread left the list when it ended"
        );
    }

    #[test]
    fn a_backup_that_keeps_moving_stays_idle_until_it_ends() {
        let idle = IdleThreads::default();
        let stored = AtomicU64::new(0);
        std::thread::scope(|s| {
            let (release_tx, release) = mpsc::channel();
            let Some(tid) = idle_thread(s, &idle, release) else {
                return;
            };
            let (done_tx, done) = mpsc::channel::<()>();
            let (idle, stored) = (&idle, &stored);
            let watch = s.spawn(move || valve(&done, stored, idle));
            for _ in 0..(3 * STALL.as_millis() / 20) {
                stored.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(policy(tid), libc::SCHED_IDLE, "raised while the copy moved");
            drop(done_tx);
            watch.join().unwrap();
            assert_eq!(
                policy(tid),
                libc::SCHED_IDLE,
                "raised after the backup ended"
            );
            drop(release_tx);
        });
    }
}
