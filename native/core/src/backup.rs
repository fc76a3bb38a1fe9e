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
//!   and stored record), keyed by name rather than by the internal collection id.
//!
//! Idempotency records are left out: they expire, and they describe requests rather
//! than the data.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use heed::types::Bytes;
use heed::{
    CompactionOption, Database, DatabaseFlags, Env, EnvFlags, EnvOpenOptions, PutFlags, RoTxn,
    WithoutTls,
};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::{Code, Error, Result};
use crate::store::Store;
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
        let def = CollectionDef::decode(name, rec)?;
        frame(&mut h, name);
        // The parameters without the id (bytes 1..5), which depends on creation order.
        frame(&mut h, &[&rec[..1], &rec[5..]].concat());
        let prefix = def.id.to_be_bytes();
        for doc in dbs.vectors.prefix_iter(txn, &prefix)? {
            let (k, v) = doc?;
            frame(&mut h, &k[prefix.len()..]);
            frame(&mut h, v);
            vector_documents += 1;
        }
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
    Ok(ContentDigest {
        sha256: hex(&h.finalize()),
        state_keys,
        events,
        vector_documents,
        last_event_id: meta_u64(dbs, txn, crate::store::META_LAST_EVENT_ID)?,
        commit_seq: meta_u64(dbs, txn, crate::store::META_COMMIT_SEQ)?,
    })
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

    /// Writes a packed copy of the environment to the new file `dst` (zstd-compressed at
    /// `zstd_level` when given; see [`write_packed_copy`]), while another thread computes
    /// the content digest of the very snapshot being copied. Returns the stored file's size
    /// and SHA-256 with the digest; the file is synced.
    ///
    /// Both read transactions must see one snapshot, so the LMDB write lock (shared by
    /// every process on the directory) is held while the two begin: writers wait for that
    /// moment only (microseconds), never for the copy or the digest. The work runs on
    /// threads of its own at a lower CPU priority (see `background_priority`).
    pub fn backup_canonical(&self, dst: &Path, zstd_level: Option<i32>) -> Result<CanonicalBackup> {
        if let Some(level) = zstd_level {
            check_level(level)?;
            if dst.exists() {
                return Err(Error::invalid(format!("{} already exists", dst.display())));
            }
        }
        // Map growth waits for this guard; both threads run under it.
        let _g = self.guard();
        let (copy_txn, digest_txn) = self.twin_snapshots()?;
        let dbs = DigestDbs::of(&self.dbs);
        let env = &self.env;
        let (stored, digest) = std::thread::scope(|s| {
            let store = s.spawn(move || {
                background_priority();
                match zstd_level {
                    None => write_packed_copy(env, &copy_txn, dst),
                    Some(level) => {
                        // LMDB writes a file it can map; compress that into the backup.
                        let packed = dst.with_extension("packing");
                        let r = pack(env, &copy_txn, &packed)
                            .and_then(|_| compress_file(&packed, dst, level));
                        let _ = fs::remove_file(&packed);
                        r
                    }
                }
            });
            let digest = s.spawn(move || {
                background_priority();
                digest(&dbs, &digest_txn)
            });
            (store.join(), digest.join())
        });
        let file = stored.map_err(|_| Error::internal("the backup writer thread panicked"))??;
        let digest = digest.map_err(|_| Error::internal("the backup digest thread panicked"))??;
        Ok(CanonicalBackup { file, digest })
    }

    /// Two read transactions on the newest commit: the LMDB write lock is held while
    /// they begin, so no commit can come between them.
    /// The caller holds the map guard.
    fn twin_snapshots(&self) -> Result<(RoTxn<'static, WithoutTls>, RoTxn<'static, WithoutTls>)> {
        let lock = self.env.write_txn()?;
        // While the write lock is held no process can grow the map, so these do not
        // meet `MDB_MAP_RESIZED` (the write txn would have).
        let first = self.env.clone().static_read_txn()?;
        let second = self.env.clone().static_read_txn()?;
        drop(lock);
        Ok((first, second))
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

/// Bytes of keys and values appended per write transaction of a packed copy: each commit
/// hands its pages to the file, and the file's writeback follows a step at a time (see
/// [`Writeback`]) instead of all at the end.
const PACK_TXN_BYTES: usize = 8 << 20;

/// Writes a packed copy of the environment `env` as `txn` sees it to the new file `dst`,
/// hashes it and syncs it. Returns its size and SHA-256.
///
/// Unlike LMDB's compacting copy, which keeps each page as full as it was, this reads
/// every named database in key order and appends its entries to a new environment
/// (`MDB_APPEND`, `MDB_APPENDDUP` for sorted duplicates), so every leaf page is filled:
/// a store written by random or sequential puts (pages half full after splits) comes out
/// at about half the size, with fewer bytes to write, hash and sync. Each database is
/// created with the flags it has in `env`; the copy holds exactly the same entries.
pub fn write_packed_copy(
    env: &Env<WithoutTls>,
    txn: &RoTxn<'_, WithoutTls>,
    dst: &Path,
) -> Result<WrittenFile> {
    let file = pack(env, txn, dst)?;
    let written = hash_file(dst)?;
    file.sync_all().map_err(|e| io_error("sync", dst, e))?;
    Ok(written)
}

/// The packing of [`write_packed_copy`]: the new file `dst`, written but not synced.
fn pack(env: &Env<WithoutTls>, txn: &RoTxn<'_, WithoutTls>, dst: &Path) -> Result<File> {
    let file = create_new(dst)?;
    let main: Database<Bytes, Bytes> = env
        .open_database(txn, None)?
        .ok_or_else(|| Error::internal("the environment has no main database"))?;
    let mut named = Vec::new();
    for item in main.iter(txn)? {
        let (name, record) = item?;
        let name = std::str::from_utf8(name).map_err(|_| {
            Error::internal("a named database's name is not UTF-8: cannot copy it by name")
        })?;
        named.push((name.to_owned(), named_db_flags(name, record)?));
    }
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    // The copy is no larger than the pages the source uses, all inside its map.
    opts.map_size(env.info().map_size)
        .max_dbs(named.len() as u32 + 1);
    // SAFETY: a new file only this function writes; no other process knows of it yet,
    // so it needs no lock file. Unsynced commits: the caller syncs the file once.
    unsafe {
        opts.flags(
            EnvFlags::NO_SUB_DIR | EnvFlags::NO_LOCK | EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC,
        )
    };
    let out = unsafe { opts.open(dst) }?;
    let copied = append_all(env, txn, &out, &named, &file);
    out.prepare_for_closing().wait();
    copied?;
    Ok(file)
}

/// Appends every entry of each database in `named` (name, flags) from `txn` to `out`.
fn append_all(
    env: &Env<WithoutTls>,
    txn: &RoTxn<'_, WithoutTls>,
    out: &Env<WithoutTls>,
    named: &[(String, DatabaseFlags)],
    file: &File,
) -> Result<()> {
    let mut wtxn = out.write_txn()?;
    let mut pending = 0usize;
    let mut writeback = Writeback::default();
    for (name, flags) in named {
        let from: Database<Bytes, Bytes> = env
            .database_options()
            .types()
            .name(name)
            .flags(*flags)
            .open(txn)?
            .ok_or_else(|| Error::internal(format!("the database {name} vanished")))?;
        let to: Database<Bytes, Bytes> = out
            .database_options()
            .types()
            .name(name)
            .flags(*flags)
            .create(&mut wtxn)?;
        let dup_sort = flags.contains(DatabaseFlags::DUP_SORT);
        let mut last_key: Option<&[u8]> = None;
        for item in from.iter(txn)? {
            let (key, value) = item?;
            // A further value of the same key goes after that key's others.
            let put = if dup_sort && last_key == Some(key) {
                PutFlags::APPEND_DUP
            } else {
                PutFlags::APPEND
            };
            to.put_with_flags(&mut wtxn, put, key, value)?;
            last_key = Some(key);
            pending += key.len() + value.len();
            if pending >= PACK_TXN_BYTES {
                wtxn.commit()?;
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                writeback.advance(file, len);
                wtxn = out.write_txn()?;
                pending = 0;
            }
        }
    }
    wtxn.commit()?;
    Ok(())
}

/// The persistent flags of a named database, from its record in the main database (an
/// `MDB_db`: a `u32`, then the flags as a native-endian `u16`).
fn named_db_flags(name: &str, record: &[u8]) -> Result<DatabaseFlags> {
    match record.get(4..6) {
        Some(&[a, b]) if record.len() >= 48 => Ok(DatabaseFlags::from_bits_truncate(u32::from(
            u16::from_ne_bytes([a, b]) & 0x7fff,
        ))),
        _ => Err(Error::internal(format!(
            "the main database's entry {name} is not a named database: cannot copy it"
        ))),
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
        .max_dbs(16);
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

/// Bytes read from a file at a time while hashing it.
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

/// Lowers the calling thread's CPU priority (nice 10; LMDB's own copy thread, started
/// from ours, inherits it): a backup is background work, and on a busy machine the
/// commit writer and the event loop should get the cores first. Only threads the
/// backup spawns call this, never a pool thread that outlives it.
fn background_priority() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: plain syscalls about the calling thread (on Linux the nice value is per thread).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// Bytes of a backup file handed to the disk at a time while it is written.
const WRITEBACK_STEP: u64 = 8 << 20;

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

#[cfg(test)]
mod tests {
    use super::*;

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn open_env(path: &Path, flags: EnvFlags) -> Env<WithoutTls> {
        let mut o = EnvOpenOptions::new().read_txn_without_tls();
        o.map_size(256 << 20).max_dbs(8);
        unsafe { o.flags(flags) };
        unsafe { o.open(path) }.unwrap()
    }

    fn dump(env: &Env<WithoutTls>, name: &str) -> (DatabaseFlags, Entries) {
        let txn = env.read_txn().unwrap();
        let main: Database<Bytes, Bytes> = env.open_database(&txn, None).unwrap().unwrap();
        let flags =
            named_db_flags(name, main.get(&txn, name.as_bytes()).unwrap().unwrap()).unwrap();
        let db: Database<Bytes, Bytes> = env
            .database_options()
            .types()
            .name(name)
            .flags(flags)
            .open(&txn)
            .unwrap()
            .unwrap();
        let entries = db
            .iter(&txn)
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        (flags, entries)
    }

    #[test]
    // LMDB's own flags are what a store on disk carries, whatever heed prefers.
    #[allow(deprecated)]
    fn a_packed_copy_keeps_each_databases_flags_entries_and_sorted_duplicates() {
        let dir = tempfile::TempDir::new().unwrap();
        let src_dir = dir.path().join("src");
        fs::create_dir(&src_dir).unwrap();
        let src = open_env(&src_dir, EnvFlags::empty());
        let layouts = [
            ("plain", DatabaseFlags::empty()),
            ("ints", DatabaseFlags::INTEGER_KEY),
            ("dups", DatabaseFlags::DUP_SORT),
            (
                "fixed_dups",
                DatabaseFlags::DUP_SORT | DatabaseFlags::DUP_FIXED | DatabaseFlags::INTEGER_DUP,
            ),
            ("reversed", DatabaseFlags::REVERSE_KEY),
            ("empty", DatabaseFlags::empty()),
        ];
        let mut wtxn = src.write_txn().unwrap();
        let dbs: Vec<Database<Bytes, Bytes>> = layouts
            .iter()
            .map(|(name, flags)| {
                src.database_options()
                    .types()
                    .name(name)
                    .flags(*flags)
                    .create(&mut wtxn)
                    .unwrap()
            })
            .collect();
        // Scattered keys, more than one packing transaction's worth, and values that
        // need overflow pages.
        for i in 0..3_000u64 {
            let k = (i * 7919) % 3_001;
            let big = vec![(k % 251) as u8; if k % 97 == 0 { 9_000 } else { 3_000 }];
            dbs[0]
                .put(&mut wtxn, format!("k{k:08}").as_bytes(), &big)
                .unwrap();
            dbs[1]
                .put(&mut wtxn, &(k as u32).to_ne_bytes(), &k.to_be_bytes())
                .unwrap();
            dbs[2]
                .put(
                    &mut wtxn,
                    format!("d{}", k % 40).as_bytes(),
                    format!("v{k}").as_bytes(),
                )
                .unwrap();
            dbs[3]
                .put(
                    &mut wtxn,
                    format!("f{}", k % 7).as_bytes(),
                    &(k as u32).to_ne_bytes(),
                )
                .unwrap();
            dbs[4]
                .put(&mut wtxn, format!("{k}r").as_bytes(), b"x")
                .unwrap();
        }
        wtxn.commit().unwrap();

        let copy = dir.path().join("copy.mdb");
        let rtxn = src.clone().static_read_txn().unwrap();
        let written = write_packed_copy(&src, &rtxn, &copy).unwrap();
        drop(rtxn);
        assert_eq!(written, hash_file(&copy).unwrap());
        assert!(written.bytes < fs::metadata(src_dir.join("data.mdb")).unwrap().len());
        assert!(!dir.path().join("copy.mdb-lock").exists());

        let out = open_env(&copy, EnvFlags::NO_SUB_DIR | EnvFlags::READ_ONLY);
        for (name, flags) in layouts {
            let (copied_flags, copied) = dump(&out, name);
            let (_, original) = dump(&src, name);
            assert_eq!(copied_flags, flags, "{name}");
            assert_eq!(copied.len(), original.len(), "{name}");
            assert!(copied == original, "{name} differs");
        }
        assert_eq!(dump(&out, "dups").1.len(), 3_000);
        assert!(dump(&out, "empty").1.is_empty());
        // An existing file is never overwritten.
        let rtxn = src.clone().static_read_txn().unwrap();
        let err = write_packed_copy(&src, &rtxn, &copy).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
    }
}
