//! Listing state keys in key order, for operator tools (`athanor state list`) and
//! `db.state.list()`: one bounded page at a time, resumable after a key.

use std::ops::Bound;

use heed::RoTxn;

use super::space::Space;
use crate::codec;
use crate::error::{Error, Result};

/// The most entries one [`Space::list_state`] call returns.
pub const MAX_LIST: usize = 100_000;

impl Space<'_> {
    /// Up to `limit` state entries whose keys start with `prefix`, in key order,
    /// starting after `after` (exclusive) when given: `(key, encoded value)` pairs.
    pub fn list_state(
        &self,
        txn: &RoTxn,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if limit == 0 || limit > MAX_LIST {
            return Err(Error::invalid(format!(
                "limit must be between 1 and {MAX_LIST}"
            )));
        }
        // Start after `after` when it sorts inside or past the prefix, else at the prefix.
        // LMDB refuses an empty key, so an empty prefix starts unbounded.
        let start = match after {
            Some(a) if a >= prefix && !a.is_empty() => Bound::Excluded(a),
            _ if prefix.is_empty() => Bound::Unbounded,
            _ => Bound::Included(prefix),
        };
        let range: (Bound<&[u8]>, Bound<&[u8]>) = (start, Bound::Unbounded);
        let mut out = Vec::new();
        for item in self.state.range(txn, &range)? {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let (_version, value) = codec::split_state_entry(v)?;
            out.push((k.to_vec(), value.to_vec()));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
}
