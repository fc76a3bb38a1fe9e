//! The vector registry's [`WriteHook`]: the writer validates and writes a
//! transaction's vector operations through it, and hands each committed group's
//! changes to the in-memory indexes before the commit is acknowledged.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use heed::RwTxn;

use super::collection::CollectionDef;
use super::docs;
use super::index::Change;
use super::ops::{change_of, check_op, collection_of, missing};
use super::shared::Shared;
use crate::error::{Code, Error, Result};
use crate::store::{Dbs, GroupWrites, WriteHook};
use crate::txn::{TxBatch, VectorOp};

/// Shares the registry's state, not the registry: the registry (and its indexer
/// thread) closes with the engine whatever the store still holds.
pub(crate) struct VectorHook(pub(super) Arc<Shared>);

impl WriteHook for VectorHook {
    fn group(&self) -> Box<dyn GroupWrites + '_> {
        Box::new(VectorGroup {
            shared: &self.0,
            defs: Vec::new(),
            changes: Vec::new(),
        })
    }

    /// Opens the window of a commit of this process (before its LMDB commit), so
    /// `Registry::refresh` does not mistake it for another process's.
    fn commit_begin(&self) {
        self.0.inflight.fetch_add(1, Ordering::AcqRel);
        self.0.gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Closes the window opened by `commit_begin`.
    fn commit_end(&self) {
        self.0.gen.fetch_add(1, Ordering::AcqRel);
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }

    fn admin_committed(&self, txn_id: u64) {
        let _l = self.0.resync.lock();
        self.0.note_txn(txn_id);
    }
}

/// One commit group's vector writes.
struct VectorGroup<'a> {
    shared: &'a Shared,
    /// The definitions the last validated transaction writes to, as stored in
    /// the group's write transaction.
    defs: Vec<CollectionDef>,
    /// Index changes of the group, for the indexes once it commits.
    changes: Vec<(u32, Change)>,
}

impl GroupWrites for VectorGroup<'_> {
    /// Validates a transaction's vector writes against the collections as stored
    /// in this write transaction.
    fn validate(&mut self, dbs: &Dbs, wtxn: &RwTxn, b: &TxBatch) -> Result<Result<()>> {
        self.defs.clear();
        for op in &b.vectors {
            let name = collection_of(b, op);
            let name = &name[..];
            if !self.defs.iter().any(|d| d.name.as_bytes() == name) {
                match dbs.vector_collections.get(wtxn, name)? {
                    Some(rec) => self.defs.push(CollectionDef::decode(name, rec)?),
                    None => return Ok(Err(missing(name))),
                }
            }
            let def = self
                .defs
                .iter()
                .find(|d| d.name.as_bytes() == name)
                .unwrap();
            if let Err(e) = check_op(def, b, op) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    /// Applies validated vector writes to LMDB and keeps the changes for the indexes.
    fn write(
        &mut self,
        dbs: &Dbs,
        wtxn: &mut RwTxn,
        b: &TxBatch,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        for op in &b.vectors {
            let name = collection_of(b, op);
            let def = self
                .defs
                .iter()
                .find(|d| d.name.as_bytes() == &name[..])
                .unwrap();
            let id = b.bytes(op.id());
            let key = docs::doc_key(def.id, id);
            let id_str = std::str::from_utf8(id).unwrap_or_default();
            match op {
                VectorOp::Delete { .. } => {
                    dbs.vectors.delete(wtxn, &key)?;
                    self.changes.push((
                        def.id,
                        Change {
                            id: id_str.into(),
                            hash: 0,
                            upsert: None,
                        },
                    ));
                }
                VectorOp::Upsert {
                    vector, metadata, ..
                } => {
                    let (v, m) = (b.bytes(vector), b.bytes(metadata));
                    docs::encode_doc(scratch, v, m);
                    dbs.vectors.put(wtxn, &key, scratch)?;
                    let hash = docs::record_hash(scratch);
                    // Metadata is checked here, as it is written: what serde_json cannot
                    // read (a lone surrogate escape) is the caller's input, not damage.
                    let change = change_of(def, id_str, v, m, hash).map_err(|e| {
                        if e.code == Code::Corrupt {
                            Error::invalid(format!(
                                "the metadata of vector {id_str:?} is not JSON athanor can store \
                                 (strings must not hold lone surrogates): {}",
                                e.message
                            ))
                        } else {
                            e
                        }
                    })?;
                    self.changes.push((def.id, change));
                }
            }
        }
        Ok(())
    }

    /// Hands the group's changes to the indexes (before the commit is acknowledged).
    fn committed(self: Box<Self>, seq: u64, txn_id: u64) {
        let sh = self.shared;
        let _l = sh.resync.lock();
        // A resync that read the store at or after this commit already holds its changes.
        let covered = sh.txn_seen.load(Ordering::Acquire) >= txn_id;
        if !self.changes.is_empty() && !covered {
            let maps = sh.maps.read();
            let mut by_coll: HashMap<u32, Vec<Change>> = HashMap::new();
            for (c, ch) in self.changes {
                by_coll.entry(c).or_default().push(ch);
            }
            for (c, chs) in by_coll {
                if let Some(idx) = maps.by_id.get(&c) {
                    idx.apply(chs);
                }
            }
            drop(maps);
            sh.signal();
        }
        // After the changes, so a dump never records a seq ahead of its state.
        sh.applied_seq.store(seq, Ordering::Release);
        sh.note_txn(txn_id);
    }
}
