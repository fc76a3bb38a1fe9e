//! The named LMDB databases of the canonical store and the meta database's keys:
//! the layout `golden/store-v1` pins.

use heed::types::Bytes;
use heed::{Database, Env, RoTxn, RwTxn, WithoutTls};

use crate::error::{Error, Result};

/// On-disk format version of the canonical store, recorded in meta and checked at open.
pub const STORE_FORMAT: u32 = 1;

pub(crate) const META_FORMAT: &[u8] = b"format_version";
pub(crate) const META_LAST_EVENT_ID: &[u8] = b"last_event_id";
pub(crate) const META_COMMIT_SEQ: &[u8] = b"commit_seq";
pub(crate) const META_CREATED_AT: &[u8] = b"created_at_ms";

/// The named databases, opened once at [`super::Store::open`].
#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    pub meta: Database<Bytes, Bytes>,
    pub state: Database<Bytes, Bytes>,
    pub events: Database<Bytes, Bytes>,
    pub event_types: Database<Bytes, Bytes>,
    pub idem: Database<Bytes, Bytes>,
    pub idem_by_time: Database<Bytes, Bytes>,
    /// Vector collection definitions, keyed by name.
    pub vector_collections: Database<Bytes, Bytes>,
    /// Vector documents, keyed by `[collection id u32 BE][document id]`.
    pub vectors: Database<Bytes, Bytes>,
    /// The event log's hash chain: event id (u64 BE) -> 32-byte link (`chain.rs`).
    /// Empty until the chain is turned on (meta `chain_from`).
    pub event_chain: Database<Bytes, Bytes>,
}

impl Dbs {
    /// Opens (creating when missing) every named database in `wtxn`.
    pub(crate) fn create(env: &Env<WithoutTls>, wtxn: &mut RwTxn) -> heed::Result<Dbs> {
        Ok(Dbs {
            meta: env.create_database(wtxn, Some("meta"))?,
            state: env.create_database(wtxn, Some("state"))?,
            events: env.create_database(wtxn, Some("events"))?,
            event_types: env.create_database(wtxn, Some("event_types"))?,
            idem: env.create_database(wtxn, Some("idempotency"))?,
            idem_by_time: env.create_database(wtxn, Some("idempotency_by_time"))?,
            vector_collections: env.create_database(wtxn, Some("vector_collections"))?,
            vectors: env.create_database(wtxn, Some("vectors"))?,
            event_chain: env.create_database(wtxn, Some("event_chain"))?,
        })
    }

    /// Writes the meta of a new, empty store: format version, counters at zero, and
    /// when it was created.
    pub(crate) fn init_meta(&self, wtxn: &mut RwTxn, created_at_ms: u64) -> heed::Result<()> {
        self.meta
            .put(wtxn, META_FORMAT, &STORE_FORMAT.to_be_bytes())?;
        self.meta
            .put(wtxn, META_LAST_EVENT_ID, &0u64.to_be_bytes())?;
        self.meta.put(wtxn, META_COMMIT_SEQ, &0u64.to_be_bytes())?;
        self.meta
            .put(wtxn, META_CREATED_AT, &created_at_ms.to_be_bytes())
    }
}

pub(crate) fn read_meta_u64(dbs: &Dbs, txn: &RoTxn, key: &[u8]) -> Result<u64> {
    let v = dbs.meta.get(txn, key)?.ok_or_else(|| {
        Error::corrupt(format!(
            "meta key {:?} is missing",
            String::from_utf8_lossy(key)
        ))
    })?;
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| {
        Error::corrupt("meta counter is not 8 bytes")
    })?))
}

pub(crate) fn put_meta_u64(dbs: &Dbs, txn: &mut RwTxn, key: &[u8], v: u64) -> Result<()> {
    Ok(dbs.meta.put(txn, key, &v.to_be_bytes())?)
}
