//! The canonical store's own invariants, checked by `verify()`.

use super::env::Store;
use super::files::check_structure;
use super::log::{id_of, type_index_key};
use crate::codec;
use crate::error::{Error, Result};

impl Store {
    /// Verifies the invariants of the canonical store: event ids dense from the oldest
    /// kept (1 until a compaction; gaps allowed below where compaction by type reached)
    /// to `last_event_id`, every record decodable, the type index exactly matching the log.
    /// Returns the number of events checked.
    pub fn verify(&self) -> Result<u64> {
        let _g = self.guard();
        // Every page is checked with file reads before LMDB follows any of them.
        let txn = check_structure(&self.env, &self.env.path().join("data.mdb"), None)?;
        let last = self.last_event_id(&txn)?;
        // Compaction deletes the oldest events; below `compacted_below` it may leave gaps
        // (by type), from there on ids are dense.
        let first = self.first_event_id(&txn)?;
        let dense_from = self.compacted_below(&txn)?.max(first);
        let mut expect = first;
        let mut count = 0u64;
        for item in self.dbs.events.iter(&txn)? {
            let (k, v) = item?;
            let id = id_of(k)?;
            if count == 0 && id != first {
                return Err(Error::corrupt(format!(
                    "the log starts at event {id}, but meta says the oldest kept is {first}"
                )));
            }
            if id <= dense_from && id >= expect {
                expect = id;
            }
            if id != expect {
                return Err(Error::corrupt(format!(
                    "event ids are not dense: expected {expect}, found {id}"
                )));
            }
            let e = codec::decode_event(v)?;
            if self
                .dbs
                .event_types
                .get(&txn, &type_index_key(e.event_type.as_bytes(), id))?
                .is_none()
            {
                return Err(Error::corrupt(format!(
                    "event {id} is missing from the type index"
                )));
            }
            expect += 1;
            count += 1;
        }
        let end = if count == 0 { first - 1 } else { expect - 1 };
        if end != last {
            return Err(Error::corrupt(format!(
                "meta says last_event_id={last} but the log ends at {end}"
            )));
        }
        let types = self.dbs.event_types.len(&txn)?;
        if types != count {
            return Err(Error::corrupt(format!(
                "type index has {types} entries for {count} events"
            )));
        }
        for item in self.dbs.state.iter(&txn)? {
            let (k, v) = item?;
            let (_, value) = codec::split_state_entry(v)?;
            codec::Value::decode(value).map_err(|e| {
                Error::corrupt(format!(
                    "state key {:?}: {}",
                    String::from_utf8_lossy(k),
                    e.message
                ))
            })?;
        }
        self.verify_streams(&txn, last)?;
        Ok(last)
    }
}
