//! Catching the indexes up with commits made by other processes on the same directory.

use std::sync::atomic::Ordering;

use super::collection::CollectionDef;
use super::docs;
use super::index::Change;
use super::ops::change_of;
use super::registry::Registry;
use crate::error::{Error, Result};
use crate::store::Store;

impl Registry {
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
        // Held past the lock: the last reference to an index drops its graphs on rayon's
        // pool, never under a lock (see index.rs, drop_unlocked).
        let mut removed = Vec::new();
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
                    removed.extend(maps.by_name.remove(&c.def.name));
                    removed.push(c);
                }
            }
            for d in &defs {
                if !maps.by_id.contains_key(&d.id) {
                    let idx = self.shared.new_index(d.clone());
                    if let Some(old) = maps.by_name.insert(d.name.clone(), idx.clone()) {
                        old.dropped.store(true, Ordering::Release);
                        removed.extend(maps.by_id.remove(&old.def.id));
                        removed.push(old);
                    }
                    maps.by_id.insert(d.id, idx);
                }
            }
        }
        drop(removed);
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
}
