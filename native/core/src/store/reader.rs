//! Read transactions and the map guard that every read holds.

use heed::{RoTxn, WithoutTls};
use parking_lot::RwLockReadGuard;

use super::env::Store;
use crate::error::{Code, Error, Result};

impl Store {
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

    /// `(LMDB's id of the newest committed write transaction, commits this process's
    /// commit writer made)`, read without a transaction, or `None` while the writer is
    /// committing (then the first may already count its commit and the second not yet:
    /// ask again after it). Between two readings, the first grows by one for every
    /// commit to the file, whoever made it, and the second by one for each of this
    /// writer's: equal growth means nothing else committed in between (another process,
    /// a replica's apply, an administrative write of this process).
    pub fn commit_counts(&self) -> Option<(u64, u64)> {
        use std::sync::atomic::{fence, Ordering};
        let before = self.writer_committing.load(Ordering::SeqCst);
        if before % 2 == 1 {
            return None;
        }
        let writer = self.writer_commits.load(Ordering::SeqCst);
        let all = self.last_txn_id() as u64;
        // The meta page is read through the map, not an atomic: keep it before the re-check.
        fence(Ordering::SeqCst);
        let after = self.writer_committing.load(Ordering::SeqCst);
        (after == before).then_some((all, writer))
    }

    /// Marks the writer's commit in flight (see [`Store::commit_counts`]) until the
    /// returned guard is dropped, after the commit is counted.
    pub(crate) fn writer_commit_in_flight(&self) -> impl Drop + '_ {
        struct InFlight<'s>(&'s std::sync::atomic::AtomicU64);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        self.writer_committing
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(&self.writer_committing)
    }
}

/// A read transaction kept open across calls and renewed only when a newer
/// commit exists, so a run of point reads pays for one `mdb_txn_begin`.
#[derive(Default)]
pub struct CachedReader {
    txn: Option<RoTxn<'static, WithoutTls>>,
}

impl CachedReader {
    /// Returns a read transaction on the newest committed state. Call it *before*
    /// taking `store.guard()` (it may have to remap the map), and hold the guard
    /// while using the transaction.
    pub fn fresh(&mut self, store: &Store) -> Result<&RoTxn<'static, WithoutTls>> {
        let stale = match &self.txn {
            Some(t) => t.id() != store.last_txn_id(),
            None => true,
        };
        if stale {
            self.txn = None;
            self.txn = Some(store.begin_read()?);
        }
        Ok(self.txn.as_ref().unwrap())
    }

    /// Returns the current transaction without renewing it (for a transaction
    /// callback that must see one snapshot), opening one if there is none.
    pub fn pinned(&mut self, store: &Store) -> Result<&RoTxn<'static, WithoutTls>> {
        if self.txn.is_none() {
            self.txn = Some(store.begin_read()?);
        }
        Ok(self.txn.as_ref().unwrap())
    }

    /// Drops the transaction if a newer commit exists, so it stops pinning old pages.
    pub fn release_if_stale(&mut self, store: &Store) {
        if self
            .txn
            .as_ref()
            .is_some_and(|t| t.id() != store.last_txn_id())
        {
            self.txn = None;
        }
    }

    /// Drops the transaction.
    pub fn release(&mut self) {
        self.txn = None;
    }
}
