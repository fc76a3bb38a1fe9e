//! Idempotency records: what the writer keeps per applied key, and reading one.

use heed::RoTxn;

use super::space::Space;
use crate::error::{Error, Result};

impl Space<'_> {
    /// The record of an applied idempotency key while it is inside the idempotency
    /// window: `(commit_seq, first_event_id, event_count, committed_at_ms)`. A record
    /// older than the window is `None` even before pruning removes it, as the writer
    /// treats it.
    pub fn idempotency_record(
        &self,
        txn: &RoTxn,
        key: &[u8],
    ) -> Result<Option<(u64, u64, u32, u64)>> {
        Ok(match self.idem.get(txn, key)? {
            None => None,
            Some(rec) => {
                let r = IdemRecord::decode(rec)?;
                if r.expired(
                    self.store.now_ms(),
                    self.store.options.idempotency_window_ms,
                ) {
                    None
                } else {
                    Some((r.commit_seq, r.first_event_id, r.event_count, r.at_ms))
                }
            }
        })
    }
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
