//! Retention: deleting the oldest events of the log with their type index entries,
//! in one administrative write transaction, and recording the oldest id kept
//! (`first_event_id`), so that a read below it says `ERR_COMPACTED` instead of
//! returning nothing. Which ids may go (below every durable cursor) is the caller's
//! decision (`ts/eventsourcing/retention.ts`); this only deletes what it is told.

use heed::RoTxn;

use super::chain::checkpoint;
use super::chain_format::chain_meta;
use super::dbs::{
    put_meta_u64, read_meta_u64, read_meta_u64_or, META_COMPACTED_BELOW, META_FIRST_EVENT_ID,
    META_LAST_EVENT_ID,
};
use super::env::Store;
use super::log::{id_of, type_index_key};
use crate::codec;
use crate::error::{Code, Error, Result};

/// What [`Store::compact_events`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Events deleted.
    pub deleted: u64,
    /// The oldest event id left (the newest id + 1 when the log is now empty).
    pub first_event_id: u64,
}

impl Store {
    /// The oldest event id in the log: 1 until a compaction removed the oldest ones.
    pub fn first_event_id(&self, txn: &RoTxn) -> Result<u64> {
        read_meta_u64_or(&self.dbs, txn, META_FIRST_EVENT_ID, 1)
    }

    /// Ids below this may be missing from the log (compaction by type leaves gaps): 1
    /// until a compaction ran. `verify` checks density from here on.
    pub fn compacted_below(&self, txn: &RoTxn) -> Result<u64> {
        read_meta_u64_or(&self.dbs, txn, META_COMPACTED_BELOW, 1)
    }

    /// Fails with `ERR_COMPACTED` when a read starting at `from` would reach below the
    /// oldest event kept.
    pub(crate) fn check_not_compacted(&self, txn: &RoTxn, from: u64) -> Result<()> {
        let first = self.first_event_id(txn)?;
        if from < first {
            return Err(Error::new(
                Code::Compacted,
                format!(
                    "events before id {first} were compacted (deleted, archived if asked); read from {first} on (events.firstId)"
                ),
            ));
        }
        Ok(())
    }

    /// Deletes the events with ids below `before` (of `types` only, when given) and
    /// their type index entries, in one write transaction; records the oldest id left.
    /// Ids are never reused: the next event still gets `last_event_id + 1`.
    pub fn compact_events(&self, before: u64, types: Option<&[String]>) -> Result<Compacted> {
        self.write_with_growth(|dbs, wtxn| {
            let last = read_meta_u64(dbs, wtxn, META_LAST_EVENT_ID)?;
            let before = before.min(last + 1);
            let first = read_meta_u64_or(dbs, wtxn, META_FIRST_EVENT_ID, 1)?;
            // A chained event removed from the middle of the chain would leave a link
            // that nothing can recompute: a chained range goes only as a whole prefix.
            if types.is_some() {
                if let Some(m) = chain_meta(&self.space(0).meta, wtxn)? {
                    if before > m.from {
                        return Err(Error::invalid(format!(
                            "this log is hash-chained from event {}: compact it by id (without `types`) below that, or by `before` alone",
                            m.from
                        )));
                    }
                }
            }
            let mut doomed: Vec<(u64, Vec<u8>)> = Vec::new();
            if before > first {
                let lo = first.to_be_bytes();
                let hi = before.to_be_bytes();
                let range = (
                    std::ops::Bound::Included(&lo[..]),
                    std::ops::Bound::Excluded(&hi[..]),
                );
                for item in dbs.events.range(wtxn, &range)? {
                    let (k, v) = item?;
                    let id = id_of(k)?;
                    let e = codec::decode_event(v)?;
                    if types.is_none_or(|ts| ts.iter().any(|t| t == e.event_type)) {
                        doomed.push((id, type_index_key(e.event_type.as_bytes(), id)));
                    }
                }
            }
            // The link of the last removed event becomes the chain's anchor, read through
            // its record, so before the records go. Only a compaction by id can reach the
            // chain (one by `types` stays below it, see above); it keeps the events from
            // the first at or past `before`.
            if types.is_none() {
                let lo = before.to_be_bytes();
                let range = (std::ops::Bound::Included(&lo[..]), std::ops::Bound::Unbounded);
                let first_kept = match dbs.events.range(wtxn, &range)?.next() {
                    Some(item) => id_of(item?.0)?,
                    None => last + 1,
                };
                checkpoint(&self.space(0), wtxn, first_kept)?;
            }
            for (id, type_key) in &doomed {
                dbs.events.delete(wtxn, &id.to_be_bytes())?;
                dbs.event_types.delete(wtxn, type_key)?;
            }
            let first_left = match dbs.events.first(wtxn)? {
                Some((k, _)) => id_of(k)?,
                None => last + 1,
            };
            put_meta_u64(dbs, wtxn, META_FIRST_EVENT_ID, first_left)?;
            let below = read_meta_u64_or(dbs, wtxn, META_COMPACTED_BELOW, 1)?;
            put_meta_u64(dbs, wtxn, META_COMPACTED_BELOW, below.max(before))?;
            Ok(Compacted {
                deleted: doomed.len() as u64,
                first_event_id: first_left,
            })
        })
    }
}
