//! The canonical store: one LMDB environment (heed) holding meta, state, the
//! event log, the event-type index and idempotency records. Reads live here;
//! all writes go through the single writer in [`crate::commit`].

mod hook;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};
use parking_lot::{RwLock, RwLockReadGuard};

use crate::codec;
use crate::error::{Code, Error, Result};

pub(crate) use hook::{GroupWrites, WriteHook};

/// On-disk format version of the canonical store, recorded in meta and checked at open.
pub const STORE_FORMAT: u32 = 1;

pub(crate) const META_FORMAT: &[u8] = b"format_version";
pub(crate) const META_LAST_EVENT_ID: &[u8] = b"last_event_id";
pub(crate) const META_COMMIT_SEQ: &[u8] = b"commit_seq";
pub(crate) const META_CREATED_AT: &[u8] = b"created_at_ms";

/// Written next to `data.mdb` once the store exists: with it (or projection.db or
/// index dumps beside the store), an empty or missing `data.mdb` is damage, not a
/// new database.
pub(crate) const CREATED_MARKER: &str = "athanor-store";

/// `crate::projection::FILE_NAME`, named here so that the store does not depend on
/// the projections (a test in `crate::verify` keeps the two equal).
pub(crate) const PROJECTION_FILE: &str = "projection.db";

/// How a commit reaches the disk. `Full` is the default and the only mode in
/// which a resolved commit is guaranteed to survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before a commit is acknowledged (LMDB's synchronous commit).
    Full,
    /// Data pages are fsynced with each group but the commit record (LMDB meta page) is
    /// flushed at most every `interval_ms`: power loss can undo the commits of that window,
    /// never corrupt the store. A process crash (`kill -9`) loses nothing.
    Batched { interval_ms: u64 },
    /// No fsync at all: the OS writes back when it likes. A process crash loses nothing;
    /// power loss can lose recent commits and may damage the store. For tests and scratch data.
    None,
}

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Full,
            initial_map_size: 256 << 20,
            idempotency_window_ms: 7 * 24 * 3600 * 1000,
            max_readers: 510,
            create: true,
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    pub meta: Database<Bytes, Bytes>,
    pub state: Database<Bytes, Bytes>,
    pub events: Database<Bytes, Bytes>,
    pub event_types: Database<Bytes, Bytes>,
    pub idem: Database<Bytes, Bytes>,
    pub idem_by_time: Database<Bytes, Bytes>,
    /// Vector collection definitions, keyed by name.
    pub vector_collections: Database<Bytes, Bytes>,
    /// Vector documents, keyed by `[collection id u32 BE][document id]`.
    pub vectors: Database<Bytes, Bytes>,
}

/// An open canonical store.
pub struct Store {
    pub(crate) env: Env<WithoutTls>,
    pub(crate) dbs: Dbs,
    /// Held shared by every operation that touches the memory map, exclusively by a
    /// map resize: LMDB may only remap while no pointer into the old map is in use.
    pub(crate) map_guard: RwLock<()>,
    pub(crate) options: StoreOptions,
    /// Derived state that follows this process's commits (the vector indexes).
    hooks: RwLock<Vec<Arc<dyn WriteHook>>>,
    /// Wakes other processes after commits (see `announce`).
    pub(crate) announcer: crate::announce::Announcer,
}

/// A state entry as read: the version (commit seq of its last write) and the encoded value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateEntry<'a> {
    pub version: u64,
    pub value: &'a [u8],
}

/// Which events to read, see [`Store::read_events`].
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// First id (inclusive). Ids start at 1.
    pub from: u64,
    /// Last id (inclusive); `None` = up to the newest.
    pub to: Option<u64>,
    /// Only events of this type (uses the type index).
    pub event_type: Option<String>,
    /// At most this many events.
    pub limit: u32,
    /// Newest first.
    pub reverse: bool,
}

impl Store {
    /// Opens (creating if needed) the canonical store under `<dir>/canonical`.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store> {
        let canonical = dir.join("canonical");
        let data = canonical.join("data.mdb");
        check_data_file(dir, &data, options.create)?;
        fs::create_dir_all(&canonical).map_err(|e| {
            Error::new(
                Code::Io,
                format!(
                    "cannot create {}: {e}; check the path and its permissions",
                    canonical.display()
                ),
            )
        })?;
        let page = page_size();
        let map_size = options.initial_map_size.max(1 << 20).div_ceil(page) * page;
        let mut flags = EnvFlags::NO_READ_AHEAD;
        match options.durability {
            Durability::Full => {}
            Durability::Batched { .. } => flags |= EnvFlags::NO_META_SYNC,
            Durability::None => flags |= EnvFlags::NO_SYNC,
        }
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        opts.map_size(map_size)
            .max_dbs(16)
            .max_readers(options.max_readers);
        // SAFETY: flags are valid LMDB env flags; the memory-map caveats are upheld by
        // routing every map access through `map_guard` and by never handing out
        // references that outlive a call.
        unsafe { opts.flags(flags) };
        let env = unsafe { opts.open(&canonical) }.map_err(|e| match e {
            heed::Error::EnvAlreadyOpened => Error::invalid(format!(
                "{} is already open in this process with different options",
                canonical.display()
            )),
            other => Error::from(other),
        })?;
        // Reader slots of processes that died (kill -9) would pin old pages forever.
        env.clear_stale_readers()?;
        // Opening reads these databases through the map (meta; every vector document,
        // to build the indexes), so their pages are checked first; the rest is read on
        // use and checked by `verify`.
        check_structure(
            &env,
            &data,
            Some(&["meta", "vector_collections", "vectors"]),
        )?;
        // If another process grew the map, adopt its size before the first transaction.
        let info_size = env.info().map_size;
        if info_size < map_size {
            unsafe { env.resize(map_size)? };
        }

        let mut wtxn = env.write_txn()?;
        let dbs = Dbs {
            meta: env.create_database(&mut wtxn, Some("meta"))?,
            state: env.create_database(&mut wtxn, Some("state"))?,
            events: env.create_database(&mut wtxn, Some("events"))?,
            event_types: env.create_database(&mut wtxn, Some("event_types"))?,
            idem: env.create_database(&mut wtxn, Some("idempotency"))?,
            idem_by_time: env.create_database(&mut wtxn, Some("idempotency_by_time"))?,
            vector_collections: env.create_database(&mut wtxn, Some("vector_collections"))?,
            vectors: env.create_database(&mut wtxn, Some("vectors"))?,
        };
        match dbs.meta.get(&wtxn, META_FORMAT)? {
            None => {
                dbs.meta
                    .put(&mut wtxn, META_FORMAT, &STORE_FORMAT.to_be_bytes())?;
                dbs.meta
                    .put(&mut wtxn, META_LAST_EVENT_ID, &0u64.to_be_bytes())?;
                dbs.meta
                    .put(&mut wtxn, META_COMMIT_SEQ, &0u64.to_be_bytes())?;
                dbs.meta
                    .put(&mut wtxn, META_CREATED_AT, &now_ms().to_be_bytes())?;
                wtxn.commit()?;
                write_marker(&canonical)?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.try_into()
                        .map_err(|_| Error::corrupt("meta format_version is not 4 bytes"))?,
                );
                if found > STORE_FORMAT {
                    return Err(Error::new(
                        Code::Version,
                        format!("{} was written by a newer athanor (format {found}, this build reads {STORE_FORMAT}); upgrade athanor", canonical.display()),
                    ));
                }
                // Commit, not abort: DBI handles opened in an aborted txn are invalid afterwards.
                wtxn.commit()?;
                // Stores created before the marker existed get it on their next open.
                if !canonical.join(CREATED_MARKER).exists() {
                    write_marker(&canonical)?;
                }
            }
        }
        Ok(Store {
            env,
            dbs,
            map_guard: RwLock::new(()),
            options,
            hooks: RwLock::new(Vec::new()),
            announcer: crate::announce::Announcer::open(&canonical)?,
        })
    }

    /// Registers derived state that must follow every commit of this process.
    /// Register before the first commit: commits made earlier are not replayed.
    pub(crate) fn add_write_hook(&self, hook: Arc<dyn WriteHook>) {
        self.hooks.write().push(hook);
    }

    /// The registered write hooks, for the writer.
    pub(crate) fn write_hooks(&self) -> RwLockReadGuard<'_, Vec<Arc<dyn WriteHook>>> {
        self.hooks.read()
    }

    /// Milliseconds since the Unix epoch, as the store's clock reads them.
    pub(crate) fn now_ms(&self) -> u64 {
        now_ms()
    }

    /// Runs `f` in a write transaction of its own and commits it, growing the map
    /// and retrying when it is full. For rare administrative writes (creating or
    /// dropping a collection); LMDB serialises it with the commit writer.
    pub(crate) fn write_with_growth<T>(
        &self,
        mut f: impl FnMut(&Dbs, &mut RwTxn) -> Result<T>,
    ) -> Result<T> {
        for _ in 0..32 {
            let r = {
                let _g = self.map_guard.read();
                let mut wtxn = self.env.write_txn()?;
                match f(&self.dbs, &mut wtxn) {
                    Ok(v) => {
                        let id = wtxn.id() as u64;
                        let hooks = self.hooks.read();
                        for h in hooks.iter() {
                            h.commit_begin();
                        }
                        let r = wtxn.commit();
                        if r.is_ok() {
                            for h in hooks.iter() {
                                h.admin_committed(id);
                            }
                        }
                        for h in hooks.iter() {
                            h.commit_end();
                        }
                        r.map(|_| v).map_err(Error::from)
                    }
                    Err(e) => Err(e),
                }
            };
            match r {
                Err(e) if e.code == Code::MapFull => {
                    self.grow_map(1 << 20)?;
                }
                other => return other,
            }
        }
        Err(Error::new(
            Code::MapFull,
            "the LMDB map could not grow enough; free disk space or raise mapSize",
        ))
    }

    /// Takes the shared map guard; hold it while using any read transaction.
    pub fn guard(&self) -> RwLockReadGuard<'_, ()> {
        self.map_guard.read()
    }

    /// Begins a read transaction that may be kept across calls (not across a map
    /// resize *while borrowed*: take [`Store::guard`] around each use).
    ///
    /// When another process has grown the map past this process's mapping, LMDB
    /// refuses new transactions (`MDB_MAP_RESIZED`) until the map is remapped to
    /// the new size; that happens here, so do not call this holding the guard.
    pub fn begin_read(&self) -> Result<RoTxn<'static, WithoutTls>> {
        for _ in 0..8 {
            let r = {
                let _g = self.map_guard.read_recursive(); // mdb_txn_begin reads the meta pages in the map
                self.env.clone().static_read_txn()
            };
            match r {
                Err(heed::Error::Mdb(heed::MdbError::MapResized)) => self.adopt_map_size()?,
                other => return Ok(other?),
            }
        }
        Err(Error::new(
            Code::Io,
            "the map kept being resized by another process; try again",
        ))
    }

    /// Remaps to the map size another process has grown the environment to.
    pub(crate) fn adopt_map_size(&self) -> Result<()> {
        let _exclusive = self.map_guard.write();
        // SAFETY: the exclusive guard proves no transaction of this process is using the
        // map. Size 0 means "the size recorded in the environment" (LMDB).
        unsafe { self.env.resize(0)? };
        Ok(())
    }

    /// LMDB's id of the newest committed write transaction: a read transaction whose
    /// id differs is stale.
    pub fn last_txn_id(&self) -> usize {
        let _g = self.map_guard.read_recursive(); // mdb_env_info reads the meta pages in the map
        self.env.info().last_txn_id
    }

    /// Reads a state entry.
    pub fn get<'t>(&self, txn: &'t RoTxn, key: &[u8]) -> Result<Option<StateEntry<'t>>> {
        match self.dbs.state.get(txn, key)? {
            None => Ok(None),
            Some(bytes) => {
                let (version, value) = codec::split_state_entry(bytes)?;
                Ok(Some(StateEntry { version, value }))
            }
        }
    }

    /// The newest event id (0 when the log is empty).
    pub fn last_event_id(&self, txn: &RoTxn) -> Result<u64> {
        read_meta_u64(&self.dbs, txn, META_LAST_EVENT_ID)
    }

    /// The number of transactions ever applied; each applied transaction gets the next one.
    pub fn commit_seq(&self, txn: &RoTxn) -> Result<u64> {
        read_meta_u64(&self.dbs, txn, META_COMMIT_SEQ)
    }

    /// Reads one event's stored record.
    pub fn get_event<'t>(&self, txn: &'t RoTxn, id: u64) -> Result<Option<&'t [u8]>> {
        Ok(self.dbs.events.get(txn, &id.to_be_bytes())?)
    }

    /// Reads events and packs them for the bindings:
    /// `[count u32 LE]` then per event `[id u64][commit_seq u64][at_ms u64][kind u8][type_len u16][type][payload_len u32][payload]` (LE).
    pub fn read_events(&self, txn: &RoTxn, q: &EventQuery) -> Result<Vec<u8>> {
        let mut out = vec![0u8; 4];
        let mut count = 0u32;
        let limit = if q.limit == 0 { u32::MAX } else { q.limit };
        let to = q.to.unwrap_or(u64::MAX);
        if q.from > to {
            return Ok(out);
        }
        let mut push = |id: u64, rec: &[u8]| -> Result<bool> {
            let e = codec::decode_event(rec)?;
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&e.commit_seq.to_le_bytes());
            out.extend_from_slice(&e.at_ms.to_le_bytes());
            out.push(e.kind as u8);
            out.extend_from_slice(&(e.event_type.len() as u16).to_le_bytes());
            out.extend_from_slice(e.event_type.as_bytes());
            out.extend_from_slice(&(e.payload.len() as u32).to_le_bytes());
            out.extend_from_slice(e.payload);
            count += 1;
            Ok(count < limit)
        };
        let lo = q.from.to_be_bytes();
        let hi = to.to_be_bytes();
        match &q.event_type {
            None => {
                let range = (
                    std::ops::Bound::Included(&lo[..]),
                    std::ops::Bound::Included(&hi[..]),
                );
                if q.reverse {
                    for item in self.dbs.events.rev_range(txn, &range)? {
                        let (k, v) = item?;
                        if !push(id_of(k)?, v)? {
                            break;
                        }
                    }
                } else {
                    for item in self.dbs.events.range(txn, &range)? {
                        let (k, v) = item?;
                        if !push(id_of(k)?, v)? {
                            break;
                        }
                    }
                }
            }
            Some(t) => {
                let klo = type_index_key(t.as_bytes(), q.from);
                let khi = type_index_key(t.as_bytes(), to);
                let range = (
                    std::ops::Bound::Included(&klo[..]),
                    std::ops::Bound::Included(&khi[..]),
                );
                let mut visit = |k: &[u8]| -> Result<bool> {
                    let id = id_of(&k[k.len() - 8..])?;
                    let rec = self.get_event(txn, id)?.ok_or_else(|| {
                        Error::corrupt(format!("type index names event {id}, which is missing"))
                    })?;
                    push(id, rec)
                };
                if q.reverse {
                    for item in self.dbs.event_types.rev_range(txn, &range)? {
                        if !visit(item?.0)? {
                            break;
                        }
                    }
                } else {
                    for item in self.dbs.event_types.range(txn, &range)? {
                        if !visit(item?.0)? {
                            break;
                        }
                    }
                }
            }
        }
        out[..4].copy_from_slice(&count.to_le_bytes());
        Ok(out)
    }

    /// The record of an applied idempotency key while it is inside the idempotency
    /// window: `(commit_seq, first_event_id, event_count, committed_at_ms)`. A record
    /// older than the window is `None` even before pruning removes it, as the writer
    /// treats it.
    pub fn idempotency_record(
        &self,
        txn: &RoTxn,
        key: &[u8],
    ) -> Result<Option<(u64, u64, u32, u64)>> {
        Ok(match self.dbs.idem.get(txn, key)? {
            None => None,
            Some(rec) => {
                let r = IdemRecord::decode(rec)?;
                if r.expired(now_ms(), self.options.idempotency_window_ms) {
                    None
                } else {
                    Some((r.commit_seq, r.first_event_id, r.event_count, r.at_ms))
                }
            }
        })
    }

    /// Flushes everything to disk now (used by `Batched`/`None` durability and at close).
    pub fn sync(&self) -> Result<()> {
        Ok(self.env.force_sync()?)
    }

    /// Current LMDB map size in bytes.
    pub fn map_size(&self) -> usize {
        let _g = self.map_guard.read_recursive(); // mdb_env_info reads the meta pages in the map
        self.env.info().map_size
    }

    /// Grows the memory map. Waits until no read or write is touching the map.
    pub(crate) fn grow_map(&self, at_least: usize) -> Result<usize> {
        let _exclusive = self.map_guard.write();
        let current = self.env.info().map_size;
        let page = page_size();
        // Double, but by at most 4 GiB a step, and always enough for the failed write.
        let step = current.clamp(1 << 20, 4 << 30);
        let target = (current + step).max(current + at_least).div_ceil(page) * page;
        // SAFETY: the exclusive guard proves no transaction of this process is using the
        // map: every access holds the shared guard, and the writer dropped its txn.
        unsafe { self.env.resize(target)? };
        Ok(target)
    }

    /// Verifies the invariants of the canonical store: event ids dense from 1 to
    /// `last_event_id`, every record decodable, the type index exactly matching the log.
    /// Returns the number of events checked.
    pub fn verify(&self) -> Result<u64> {
        let _g = self.guard();
        // Every page is checked with file reads before LMDB follows any of them.
        let txn = check_structure(&self.env, &self.env.path().join("data.mdb"), None)?;
        let last = self.last_event_id(&txn)?;
        let mut expect = 1u64;
        for item in self.dbs.events.iter(&txn)? {
            let (k, v) = item?;
            let id = id_of(k)?;
            if id != expect {
                return Err(Error::corrupt(format!(
                    "event ids are not dense: expected {expect}, found {id}"
                )));
            }
            let e = codec::decode_event(v)?;
            if self
                .dbs
                .event_types
                .get(&txn, &type_index_key(e.event_type.as_bytes(), id))?
                .is_none()
            {
                return Err(Error::corrupt(format!(
                    "event {id} is missing from the type index"
                )));
            }
            expect += 1;
        }
        if expect - 1 != last {
            return Err(Error::corrupt(format!(
                "meta says last_event_id={last} but the log ends at {}",
                expect - 1
            )));
        }
        let types = self.dbs.event_types.len(&txn)?;
        if types != last {
            return Err(Error::corrupt(format!(
                "type index has {types} entries for {last} events"
            )));
        }
        for item in self.dbs.state.iter(&txn)? {
            let (k, v) = item?;
            let (_, value) = codec::split_state_entry(v)?;
            codec::Value::decode(value).map_err(|e| {
                Error::corrupt(format!(
                    "state key {:?}: {}",
                    String::from_utf8_lossy(k),
                    e.message
                ))
            })?;
        }
        Ok(last)
    }
}

/// Checks what can be checked before LMDB maps `data`: a dangling link, a file
/// shorter than its last committed page, a missing or empty file where the
/// directory shows a database existed, and (with `create` off) no database at all.
fn check_data_file(dir: &Path, data: &Path, create: bool) -> Result<()> {
    let link = fs::symlink_metadata(data);
    let exists = match &link {
        Ok(m) if m.file_type().is_symlink() => match fs::metadata(data) {
            Ok(_) => true,
            Err(e) => {
                return Err(Error::corrupt(format!(
                    "{} is a link to a file that cannot be opened ({e}); put the store back or restore the database from a backup",
                    data.display()
                )))
            }
        },
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(Error::new(
                Code::Io,
                format!("cannot read {}: {e}; check its permissions", data.display()),
            ))
        }
    };
    let meta = if exists {
        crate::lmdb_check::read_meta(data)?
    } else {
        None
    };
    if meta.is_none() {
        if let Some(evidence) = existed_before(dir) {
            return Err(Error::corrupt(format!(
                "{} is {} although {evidence}: the store was lost or replaced; restore the database from a backup (athanor will not start an empty log under existing projections)",
                data.display(),
                if exists { "empty (or too short for its header)" } else { "missing" },
            )));
        }
        if !create {
            return Err(Error::new(
                Code::NotFound,
                format!(
                    "{} holds no athanor database; check the path (nothing was created)",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Why `dir` must have held a store, if anything says so.
fn existed_before(dir: &Path) -> Option<String> {
    let marker = dir.join("canonical").join(CREATED_MARKER);
    if marker.exists() {
        return Some(format!("{} says one was created", marker.display()));
    }
    let projection = dir.join(PROJECTION_FILE);
    if fs::metadata(&projection).is_ok_and(|m| m.len() > 0) {
        return Some(format!("{} exists", projection.display()));
    }
    let index = dir.join("index");
    if fs::read_dir(&index).is_ok_and(|mut d| d.next().is_some()) {
        return Some(format!("{} holds index dumps", index.display()));
    }
    None
}

fn write_marker(canonical: &Path) -> Result<()> {
    let path = canonical.join(CREATED_MARKER);
    fs::write(&path, format!("athanor store format {STORE_FORMAT}\n")).map_err(|e| {
        Error::new(
            Code::Io,
            format!(
                "cannot write {}: {e}; check the directory's permissions",
                path.display()
            ),
        )
    })
}

/// Checks the page structure of `data` (see [`crate::lmdb_check::walk`]) as of a
/// read transaction, which it returns still open so the caller reads the snapshot
/// that was checked. `named`: the named databases to cover (`None`: all).
fn check_structure(
    env: &Env<WithoutTls>,
    data: &Path,
    named: Option<&[&str]>,
) -> Result<RoTxn<'static, WithoutTls>> {
    // A writer in another process may move past the transaction's meta page between
    // the two reads; a fresh transaction then matches again.
    for _ in 0..16 {
        let txn = env.clone().static_read_txn()?;
        if crate::lmdb_check::walk(data, Some(txn.id() as u64), named)?.is_some() {
            return Ok(txn);
        }
    }
    Err(Error::new(
        Code::Io,
        format!(
            "{} kept changing while it was checked; try again when writes are quieter",
            data.display()
        ),
    ))
}

pub(crate) fn read_meta_u64(dbs: &Dbs, txn: &RoTxn, key: &[u8]) -> Result<u64> {
    let v = dbs.meta.get(txn, key)?.ok_or_else(|| {
        Error::corrupt(format!(
            "meta key {:?} is missing",
            String::from_utf8_lossy(key)
        ))
    })?;
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| {
        Error::corrupt("meta counter is not 8 bytes")
    })?))
}

pub(crate) fn put_meta_u64(dbs: &Dbs, txn: &mut RwTxn, key: &[u8], v: u64) -> Result<()> {
    Ok(dbs.meta.put(txn, key, &v.to_be_bytes())?)
}

/// Type index key: `type ++ 0x00 ++ id (u64 BE)`, so one type's ids sort together, in order.
pub(crate) fn type_index_key(event_type: &[u8], id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(event_type.len() + 9);
    k.extend_from_slice(event_type);
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn id_of(k: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(
        k.try_into()
            .map_err(|_| Error::corrupt("event key is not 8 bytes"))?,
    ))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn page_size() -> usize {
    // LMDB requires map sizes to be a multiple of the OS page size; 64 KiB is a
    // multiple of every page size we run on (4 KiB Linux x64, 16 KiB Apple silicon).
    64 * 1024
}

/// What the idempotency database stores per key (28 bytes, big-endian).
pub(crate) struct IdemRecord {
    pub commit_seq: u64,
    pub first_event_id: u64,
    pub event_count: u32,
    pub at_ms: u64,
}

impl IdemRecord {
    pub(crate) fn encode(&self) -> [u8; 28] {
        let mut out = [0u8; 28];
        out[..8].copy_from_slice(&self.commit_seq.to_be_bytes());
        out[8..16].copy_from_slice(&self.first_event_id.to_be_bytes());
        out[16..20].copy_from_slice(&self.event_count.to_be_bytes());
        out[20..].copy_from_slice(&self.at_ms.to_be_bytes());
        out
    }

    /// Whether the record has left the idempotency window (`0` keeps records forever).
    pub(crate) fn expired(&self, now_ms: u64, window_ms: u64) -> bool {
        window_ms > 0 && self.at_ms < now_ms.saturating_sub(window_ms)
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != 28 {
            return Err(Error::corrupt("idempotency record is not 28 bytes"));
        }
        Ok(IdemRecord {
            commit_seq: u64::from_be_bytes(b[..8].try_into().unwrap()),
            first_event_id: u64::from_be_bytes(b[8..16].try_into().unwrap()),
            event_count: u32::from_be_bytes(b[16..20].try_into().unwrap()),
            at_ms: u64::from_be_bytes(b[20..].try_into().unwrap()),
        })
    }
}
