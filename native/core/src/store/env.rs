//! The LMDB environment: opening it (with its checks and format version), the
//! write hooks, administrative writes, map growth and sync.

use std::path::Path;
use std::sync::Arc;

use heed::{Env, EnvFlags, EnvOpenOptions, RwTxn, WithoutTls};
use parking_lot::{RwLock, RwLockReadGuard};

use super::create;
use super::dbs::{Dbs, META_FORMAT, STORE_FORMAT};
use super::files::{check_data_file, check_structure, write_marker, CREATED_MARKER};
use super::hook::WriteHook;
use super::options::{Durability, StoreOptions};
use super::sync_stats::SyncStats;
use crate::error::{Code, Error, Result};

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
    /// How long this process's syncs of the store took.
    /// Shared with a backup's disk writer, which yields to commits (see `backup.rs`).
    pub(crate) sync_stats: std::sync::Arc<SyncStats>,
    /// Commits made by this process's commit writer that wrote something (see
    /// [`Store::commit_counts`]).
    pub(crate) writer_commits: std::sync::atomic::AtomicU64,
    /// Odd while the writer is committing (a seqlock over `writer_commits` and LMDB's
    /// transaction id, see [`Store::commit_counts`]).
    pub(crate) writer_committing: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (creating if needed) the canonical store under `<dir>/canonical`.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store> {
        let canonical = dir.join("canonical");
        let data = canonical.join("data.mdb");
        check_data_file(dir, &data, options.create)?;
        if create::absent(&canonical) {
            // Built whole beside `canonical/` and renamed into place: a power loss
            // leaves no store or a complete one.
            create::create_store(dir, options.clock.as_ref())?;
        } else {
            // Leftovers are harmless; a directory that refuses their removal still opens.
            let _ = create::remove_leftovers(dir);
        }
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
            .max_dbs(crate::store::MAX_DBS)
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
        let dbs = Dbs::create(&env, &mut wtxn)?;
        match dbs.meta.get(&wtxn, META_FORMAT)? {
            None => {
                // A store made in place by an older athanor (or a user's empty
                // data.mdb): finish it as it always was.
                dbs.init_meta(&mut wtxn, options.clock.now_ms())?;
                super::chain_format::ensure(&dbs, &mut wtxn, &options.chain)?;
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
                let chained = super::chain_format::ensure(&dbs, &mut wtxn, &options.chain);
                // Commit, not abort: DBI handles opened in an aborted txn are invalid afterwards.
                wtxn.commit()?;
                chained?;
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
            sync_stats: std::sync::Arc::default(),
            writer_commits: std::sync::atomic::AtomicU64::new(0),
            writer_committing: std::sync::atomic::AtomicU64::new(0),
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

    /// Milliseconds since the Unix epoch, as the store's clock
    /// ([`StoreOptions::clock`]) reads them.
    pub fn now_ms(&self) -> u64 {
        self.options.clock.now_ms()
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

    /// Flushes everything to disk now (used by `Batched`/`None` durability and at close).
    pub fn sync(&self) -> Result<()> {
        let started = std::time::Instant::now();
        self.env.force_sync()?;
        self.sync_stats.record(started.elapsed());
        Ok(())
    }

    /// How long this process's syncs of the store have taken since it was opened:
    /// durable commits (LMDB's commit flushes before returning unless durability is
    /// `None`) and explicit flushes.
    pub fn sync_stats(&self) -> crate::store::SyncSnapshot {
        self.sync_stats.snapshot()
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
}

fn page_size() -> usize {
    // LMDB requires map sizes to be a multiple of the OS page size; 64 KiB is a
    // multiple of every page size we run on (4 KiB Linux x64, 16 KiB Apple silicon).
    64 * 1024
}
