//! Entity streams: which events belong to which stream, at which version. The
//! writer fills the index (`commit/apply.rs`); this file owns its keys and reads it.

use heed::RoTxn;

use super::env::Store;
use super::log::id_of;
use super::space::Space;
use crate::error::{Error, Result};
use crate::wire::events::EventPack;
use crate::wire::streams::{pack_list, pack_page};

/// Stream membership key: `[stream id][0x00][version u64 BE]` (ids hold no NUL, so one
/// stream's versions sort together, in order).
pub(crate) fn stream_event_key(stream: &[u8], version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 9);
    k.extend_from_slice(stream);
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

pub(crate) fn decode_version(bytes: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(bytes.try_into().map_err(|_| {
        Error::corrupt("a stream version is not 8 bytes; restore from a backup")
    })?))
}

/// Which events of a stream [`Store::read_stream`] returns.
#[derive(Debug, Clone, Copy)]
pub struct StreamQuery {
    /// The first version to read (forward: default 1; reverse: default the newest).
    pub from_version: Option<u64>,
    /// At most this many events (0: no limit).
    pub limit: u32,
    /// Newest first.
    pub reverse: bool,
}

impl Space<'_> {
    /// A stream's current version: its number of events, 0 when it has none.
    pub fn stream_version(&self, txn: &RoTxn, stream: &[u8]) -> Result<u64> {
        match self.stream_heads.get(txn, stream)? {
            None => Ok(0),
            Some(v) => decode_version(v),
        }
    }

    /// Reads a stream's events, packed as [`crate::wire::streams`] says.
    pub fn read_stream(&self, txn: &RoTxn, stream: &[u8], q: &StreamQuery) -> Result<Vec<u8>> {
        crate::txn::check_stream_id(stream)?;
        let head = self.stream_version(txn, stream)?;
        let limit = if q.limit == 0 {
            u64::MAX
        } else {
            q.limit as u64
        };
        let (first, last) = if q.reverse {
            let start = q.from_version.unwrap_or(head).min(head);
            (start, start.saturating_sub(limit - 1).max(1))
        } else {
            let start = q.from_version.unwrap_or(1).max(1);
            (start, start.saturating_add(limit - 1).min(head))
        };
        let mut pack = EventPack::new();
        let in_range = if q.reverse {
            first >= last && first >= 1
        } else {
            first <= last
        };
        if in_range {
            let (lo, hi) = if q.reverse {
                (last, first)
            } else {
                (first, last)
            };
            let klo = stream_event_key(stream, lo);
            let khi = stream_event_key(stream, hi);
            let range = (
                std::ops::Bound::Included(&klo[..]),
                std::ops::Bound::Included(&khi[..]),
            );
            let mut push = |v: &[u8]| -> Result<()> {
                let id = id_of(v)?;
                let rec = self.get_event(txn, id)?.ok_or_else(|| {
                    Error::corrupt(format!("stream index names event {id}, which is missing"))
                })?;
                let e = crate::codec::decode_event(rec)?;
                pack.push(
                    id,
                    e.commit_seq,
                    e.at_ms,
                    e.kind as u8,
                    e.event_type,
                    e.payload,
                );
                Ok(())
            };
            if q.reverse {
                for item in self.stream_events.rev_range(txn, &range)? {
                    push(item?.1)?;
                }
            } else {
                for item in self.stream_events.range(txn, &range)? {
                    push(item?.1)?;
                }
            }
        }
        Ok(pack_page(first, pack.finish()))
    }

    /// Up to `limit` streams whose ids start with `prefix`, after `after` when given,
    /// in id order, with their versions, packed as [`crate::wire::streams`] says.
    pub fn list_streams(
        &self,
        txn: &RoTxn,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<u8>> {
        let mut rows: Vec<(&[u8], u64)> = Vec::new();
        // LMDB refuses an empty key as a cursor position: no prefix starts at the first stream.
        let start = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a),
            _ if prefix.is_empty() => std::ops::Bound::Unbounded,
            _ => std::ops::Bound::Included(prefix),
        };
        let range = (start, std::ops::Bound::Unbounded);
        for item in self.stream_heads.range(txn, &range)? {
            let (k, v) = item?;
            if rows.len() >= limit || !k.starts_with(prefix) {
                break;
            }
            rows.push((k, decode_version(v)?));
        }
        Ok(pack_list(&rows))
    }
}

impl Store {
    /// Checks the stream index: each stream's versions dense from 1 to its head, each
    /// naming an existing event, in ascending id order, and no entry outside a stream.
    pub(crate) fn verify_streams(&self, txn: &RoTxn, last_event_id: u64) -> Result<()> {
        let mut indexed = 0u64;
        for item in self.dbs.stream_heads.iter(txn)? {
            let (stream, head) = item?;
            let head = decode_version(head)?;
            let name = String::from_utf8_lossy(stream);
            let mut prefix = stream.to_vec();
            prefix.push(0);
            let (mut expect, mut prev_id) = (1u64, 0u64);
            for entry in self.dbs.stream_events.prefix_iter(txn, &prefix)? {
                let (k, v) = entry?;
                let version = k
                    .get(prefix.len()..)
                    .filter(|t| t.len() == 8)
                    .map(|t| u64::from_be_bytes(t.try_into().unwrap()));
                let id = id_of(v)?;
                if version != Some(expect) || id <= prev_id || id > last_event_id {
                    return Err(Error::corrupt(format!(
                        "stream {name:?}: its index entry {expect} is not version {expect} of a logged event in order; restore from a backup"
                    )));
                }
                (expect, prev_id) = (expect + 1, id);
            }
            if expect - 1 != head {
                return Err(Error::corrupt(format!(
                    "stream {name:?} is at version {head} but indexes {} events; restore from a backup",
                    expect - 1
                )));
            }
            indexed += head;
        }
        let entries = self.dbs.stream_events.len(txn)?;
        if entries != indexed {
            return Err(Error::corrupt(format!(
                "the stream index holds {entries} entries for {indexed} stream versions; restore from a backup"
            )));
        }
        Ok(())
    }
}
