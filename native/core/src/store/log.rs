//! Reading the event log and its type index.

use heed::RoTxn;

use super::dbs::{read_meta_u64, META_COMMIT_SEQ};
use super::env::Store;
use super::space::Space;
use crate::codec;
use crate::error::{Error, Result};
use crate::wire::events::EventPack;

/// Which events to read, see [`Space::read_events`].
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
    /// The newest event id of the default namespace (0 when its log is empty).
    pub fn last_event_id(&self, txn: &RoTxn) -> Result<u64> {
        self.space(super::space::DEFAULT_NAMESPACE_ID)
            .last_event_id(txn)
    }

    /// The number of transactions ever applied, in every namespace; each applied
    /// transaction gets the next one.
    pub fn commit_seq(&self, txn: &RoTxn) -> Result<u64> {
        read_meta_u64(&self.dbs, txn, META_COMMIT_SEQ)
    }

    /// Reads one event of the default namespace, see [`Space::get_event`].
    pub fn get_event<'t>(&self, txn: &'t RoTxn, id: u64) -> Result<Option<&'t [u8]>> {
        self.space(super::space::DEFAULT_NAMESPACE_ID)
            .get_event(txn, id)
    }

    /// Reads events of the default namespace, see [`Space::read_events`].
    pub fn read_events(&self, txn: &RoTxn, q: &EventQuery) -> Result<Vec<u8>> {
        self.space(super::space::DEFAULT_NAMESPACE_ID)
            .read_events(txn, q)
    }
}

impl Space<'_> {
    /// Reads one event's stored record.
    pub fn get_event<'t>(&self, txn: &'t RoTxn, id: u64) -> Result<Option<&'t [u8]>> {
        Ok(self.events.get(txn, &id.to_be_bytes())?)
    }

    /// Reads events and packs them for the bindings ([`crate::wire::events`]).
    pub fn read_events(&self, txn: &RoTxn, q: &EventQuery) -> Result<Vec<u8>> {
        if self.id == super::space::DEFAULT_NAMESPACE_ID {
            // Only the default namespace's log is compacted.
            self.store.check_not_compacted(txn, q.from.max(1))?;
        }
        let mut pack = EventPack::new();
        let limit = if q.limit == 0 { u32::MAX } else { q.limit };
        let to = q.to.unwrap_or(u64::MAX);
        if q.from > to {
            return Ok(pack.finish());
        }
        let mut push = |id: u64, rec: &[u8]| -> Result<bool> {
            let e = codec::decode_event(rec)?;
            pack.push(
                id,
                e.commit_seq,
                e.at_ms,
                e.kind as u8,
                e.event_type,
                e.payload,
            );
            Ok(pack.count() < limit)
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
                    for item in self.events.rev_range(txn, &range)? {
                        let (k, v) = item?;
                        if !push(id_of(k)?, v)? {
                            break;
                        }
                    }
                } else {
                    for item in self.events.range(txn, &range)? {
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
                    // A damaged index may hold keys too short to end in an id.
                    let tail = k.len().checked_sub(8).map(|at| &k[at..]);
                    let id = id_of(tail.ok_or_else(|| {
                        Error::corrupt(
                            "a type index key is shorter than an event id; restore from a backup",
                        )
                    })?)?;
                    let rec = self.get_event(txn, id)?.ok_or_else(|| {
                        Error::corrupt(format!("type index names event {id}, which is missing"))
                    })?;
                    push(id, rec)
                };
                if q.reverse {
                    for item in self.event_types.rev_range(txn, &range)? {
                        if !visit(item?.0)? {
                            break;
                        }
                    }
                } else {
                    for item in self.event_types.range(txn, &range)? {
                        if !visit(item?.0)? {
                            break;
                        }
                    }
                }
            }
        }
        Ok(pack.finish())
    }
}

/// Type index key: `type ++ 0x00 ++ id (u64 BE)`, so one type's ids sort together, in order.
pub(crate) fn type_index_key(event_type: &[u8], id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(event_type.len() + 9);
    k.extend_from_slice(event_type);
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(super) fn id_of(k: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(
        k.try_into()
            .map_err(|_| Error::corrupt("event key is not 8 bytes"))?,
    ))
}
