//! Replication's marks in the store: the commit log a primary keeps for its
//! publisher (records of commits not yet acknowledged by the stream), the
//! database id, and a read replica's origin and stream position.

use heed::{RoTxn, RwTxn};
use sha2::{Digest, Sha256};

use super::dbs::{
    read_meta_u64, Dbs, META_COMMIT_LOG, META_COMMIT_SEQ, META_DATABASE_ID, META_PUBLISHED_SEQ,
    META_REPLICA_OF, META_REPLICA_STREAM_SEQ,
};
use super::env::Store;
use crate::error::{Code, Error, Result};
use crate::txn::TxBatch;
use crate::wire::commit_record;

/// Where a store stands with replication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationInfo {
    /// The database's id, once replication made one.
    pub database_id: Option<String>,
    /// Whether commits are logged for a publisher.
    pub logging: bool,
    /// The newest commit seq.
    pub commit_seq: u64,
    /// The newest commit seq the stream acknowledged (0: none).
    pub published_seq: u64,
    /// On a replica: its primary's id.
    pub replica_of: Option<String>,
    /// On a replica: the stream sequence of the newest commit it applied.
    pub replica_stream_seq: u64,
}

fn meta_str(dbs: &Dbs, txn: &RoTxn, key: &[u8]) -> Result<Option<String>> {
    match dbs.meta.get(txn, key)? {
        None => Ok(None),
        Some(v) => String::from_utf8(v.to_vec())
            .map(Some)
            .map_err(|_| Error::corrupt("a replication id in meta is not UTF-8")),
    }
}

fn meta_u64_or_zero(dbs: &Dbs, txn: &RoTxn, key: &[u8]) -> Result<u64> {
    if dbs.meta.get(txn, key)?.is_none() {
        return Ok(0);
    }
    read_meta_u64(dbs, txn, key)
}

/// The id commits are logged under, when logging is on (read in the writer's transaction).
pub(crate) fn commit_log_id(dbs: &Dbs, txn: &RoTxn) -> Result<Option<String>> {
    meta_str(dbs, txn, META_COMMIT_LOG)
}

/// Logs one applied commit for the publisher, in the transaction that applies it.
pub(crate) fn log_commit(
    dbs: &Dbs,
    wtxn: &mut RwTxn,
    database_id: &str,
    commit_seq: u64,
    at_ms: u64,
    first_event_id: u64,
    batch: &TxBatch,
) -> Result<()> {
    // The definitions of the collections it writes to, as stored: a replica creates them.
    let mut defs: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for op in &batch.vectors {
        let name = batch.bytes(op.collection());
        if !defs.iter().any(|(n, _)| *n == name) {
            if let Some(def) = dbs.vector_collections.get(wtxn, name)? {
                defs.push((name, def.to_vec()));
            }
        }
    }
    let defs: Vec<(&[u8], &[u8])> = defs.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    let rec = commit_record::encode(
        database_id,
        commit_seq,
        at_ms,
        first_event_id,
        &defs,
        batch.raw(),
    );
    Ok(dbs.commit_log.put(wtxn, &commit_seq.to_be_bytes(), &rec)?)
}

/// A new database id: unique without a random source of its own (time, process,
/// directory and an address hashed together).
fn new_database_id(store: &Store) -> String {
    let mut h = Sha256::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(format!("{:p}", store as *const Store).as_bytes());
    h.update(store.env.path().to_string_lossy().as_bytes());
    crate::backup::hex(&h.finalize()[..12])
}

impl Store {
    /// Where this store stands with replication.
    pub fn replication_info(&self) -> Result<ReplicationInfo> {
        let txn = self.begin_read()?;
        let dbs = &self.dbs;
        Ok(ReplicationInfo {
            database_id: meta_str(dbs, &txn, META_DATABASE_ID)?,
            logging: dbs.meta.get(&txn, META_COMMIT_LOG)?.is_some(),
            commit_seq: read_meta_u64(dbs, &txn, META_COMMIT_SEQ)?,
            published_seq: meta_u64_or_zero(dbs, &txn, META_PUBLISHED_SEQ)?,
            replica_of: meta_str(dbs, &txn, META_REPLICA_OF)?,
            replica_stream_seq: meta_u64_or_zero(dbs, &txn, META_REPLICA_STREAM_SEQ)?,
        })
    }

    /// Turns the commit log on (it stays on across restarts), making the database
    /// id when there is none. Commits before this one are not logged: they count as
    /// published, and a replica must start from a backup taken after them.
    pub fn enable_commit_log(&self) -> Result<ReplicationInfo> {
        let fresh_id = new_database_id(self);
        self.write_with_growth(|dbs, wtxn| {
            if dbs.meta.get(wtxn, META_REPLICA_OF)?.is_some() {
                return Err(Error::new(
                    Code::ReadOnly,
                    "a read replica cannot publish its commits; publish from the primary",
                ));
            }
            let id = match meta_str(dbs, wtxn, META_DATABASE_ID)? {
                Some(id) => id,
                None => {
                    dbs.meta.put(wtxn, META_DATABASE_ID, fresh_id.as_bytes())?;
                    fresh_id.clone()
                }
            };
            if dbs.meta.get(wtxn, META_COMMIT_LOG)?.is_none() {
                let seq = read_meta_u64(dbs, wtxn, META_COMMIT_SEQ)?;
                dbs.meta.put(wtxn, META_COMMIT_LOG, id.as_bytes())?;
                dbs.meta.put(wtxn, META_PUBLISHED_SEQ, &seq.to_be_bytes())?;
            }
            Ok(())
        })?;
        self.replication_info()
    }

    /// Up to `limit` logged commit records after commit seq `after`, oldest first.
    pub fn commit_log_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let txn = self.begin_read()?;
        let lo = after.saturating_add(1).to_be_bytes();
        let range = (
            std::ops::Bound::Included(&lo[..]),
            std::ops::Bound::Unbounded,
        );
        let mut out = Vec::new();
        for item in self.dbs.commit_log.range(&txn, &range)? {
            let (k, v) = item?;
            let seq = super::log::id_of(k)?;
            out.push((seq, v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Records that the stream acknowledged every commit up to `seq`, and drops their
    /// records from the log. A position older than the recorded one changes nothing.
    pub fn mark_published(&self, seq: u64) -> Result<()> {
        self.write_with_growth(|dbs, wtxn| {
            if meta_u64_or_zero(dbs, wtxn, META_PUBLISHED_SEQ)? >= seq {
                return Ok(());
            }
            dbs.meta.put(wtxn, META_PUBLISHED_SEQ, &seq.to_be_bytes())?;
            let hi = seq.to_be_bytes();
            dbs.commit_log.delete_range(
                wtxn,
                &(
                    std::ops::Bound::Unbounded,
                    std::ops::Bound::Included(&hi[..]),
                ),
            )?;
            Ok(())
        })
    }

    /// Makes this store a read replica of database `primary_id`. An empty store, a
    /// copy of that primary (a restored backup) or a replica of it already qualify;
    /// anything else is refused before anything is written.
    pub fn init_replica(&self, primary_id: &str) -> Result<()> {
        self.write_with_growth(|dbs, wtxn| {
            if let Some(of) = meta_str(dbs, wtxn, META_REPLICA_OF)? {
                if of == primary_id {
                    return Ok(());
                }
                return Err(Error::invalid(format!(
                    "this directory is a replica of database {of}, not of {primary_id}; open it on the stream it came from or use a new directory"
                )));
            }
            let seq = read_meta_u64(dbs, wtxn, META_COMMIT_SEQ)?;
            let own = meta_str(dbs, wtxn, META_DATABASE_ID)?;
            if seq > 0 && own.as_deref() != Some(primary_id) {
                return Err(Error::invalid(format!(
                    "this directory holds {seq} commits of its own; a replica starts empty or from a backup of its primary ({primary_id})"
                )));
            }
            // A restored backup of the primary must not publish as the primary.
            dbs.meta.delete(wtxn, META_COMMIT_LOG)?;
            dbs.commit_log.clear(wtxn)?;
            dbs.meta.put(wtxn, META_REPLICA_OF, primary_id.as_bytes())?;
            Ok(())
        })
    }
}

/// Whether the store is a read replica (read at open).
pub(crate) fn is_replica(store: &Store) -> Result<bool> {
    let txn = store.begin_read()?;
    Ok(store.dbs.meta.get(&txn, META_REPLICA_OF)?.is_some())
}

/// Sets a replica's stream position, in the transaction applying its commits.
pub(crate) fn put_replica_position(dbs: &Dbs, wtxn: &mut RwTxn, stream_seq: u64) -> Result<()> {
    Ok(dbs
        .meta
        .put(wtxn, META_REPLICA_STREAM_SEQ, &stream_seq.to_be_bytes())?)
}

/// A replica's primary id, read in the transaction applying its commits.
pub(crate) fn replica_of(dbs: &Dbs, txn: &RoTxn) -> Result<Option<String>> {
    meta_str(dbs, txn, META_REPLICA_OF)
}
