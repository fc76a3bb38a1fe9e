//! Reading the key/value state.

use heed::RoTxn;

use super::space::Space;
use crate::codec;
use crate::error::Result;

/// A state entry as read: the version (commit seq of its last write) and the encoded value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateEntry<'a> {
    /// The commit seq of the transaction that last wrote the key.
    pub version: u64,
    /// The encoded [`crate::Value`].
    pub value: &'a [u8],
}

impl Space<'_> {
    /// Reads a state entry.
    pub fn get<'t>(&self, txn: &'t RoTxn, key: &[u8]) -> Result<Option<StateEntry<'t>>> {
        match self.state.get(txn, key)? {
            None => Ok(None),
            Some(bytes) => {
                let (version, value) = codec::split_state_entry(bytes)?;
                Ok(Some(StateEntry { version, value }))
            }
        }
    }
}
