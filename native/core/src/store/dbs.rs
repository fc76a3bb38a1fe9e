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
/// The oldest event id left after compaction (`store/compact.rs`); absent until the
/// first compaction, when it is 1. A store without it needs no migration.
pub(crate) const META_FIRST_EVENT_ID: &[u8] = b"first_event_id";
/// Ids below this one may be missing (compaction by type leaves gaps); absent: 1.
pub(crate) const META_COMPACTED_BELOW: &[u8] = b"compacted_below";
/// The database's id (UTF-8), made when replication first needs one; present on a
/// primary whose commits are logged for publishing.
pub(crate) const META_DATABASE_ID: &[u8] = b"database_id";
/// Present while commits are logged into `commit_log` for publishing.
pub(crate) const META_COMMIT_LOG: &[u8] = b"commit_log";
/// The newest commit seq the publisher has handed to the stream and had acknowledged.
pub(crate) const META_PUBLISHED_SEQ: &[u8] = b"published_seq";
/// On a read replica: the id of the primary whose commits it applies (writes are refused).
pub(crate) const META_REPLICA_OF: &[u8] = b"replica_of";
/// On a read replica: the stream sequence of the newest commit it applied.
pub(crate) const META_REPLICA_STREAM_SEQ: &[u8] = b"replica_stream_seq";

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
    /// Commit records not yet published, keyed by commit seq (u64 BE); see
    /// [`crate::wire::commit_record`]. Empty unless replication is on.
    pub commit_log: Database<Bytes, Bytes>,
    /// Stream membership: `[stream id][0x00][version u64 BE]` -> `[event id u64 BE]`
    /// (created at open when missing: stores of format 1 made before streams have none).
    pub stream_events: Database<Bytes, Bytes>,
    /// Each stream's current version: `[stream id]` -> `[version u64 BE]`.
    pub stream_heads: Database<Bytes, Bytes>,
    /// The event log's hash chain: event id (u64 BE) -> 32-byte link (`chain.rs`).
    /// Empty until the chain is turned on (meta `chain_from`).
    pub event_chain: Database<Bytes, Bytes>,
    /// The namespace registry: name (UTF-8) -> record (`namespaces.rs`).
    pub namespaces: Database<Bytes, Bytes>,
    /// The namespaced twins of `meta`, `state`, `events`, `event_types`, `event_chain`,
    /// `stream_events`, `stream_heads` and `idempotency`: each key is
    /// `[namespace id u32 BE][the default namespace's key]` (`space.rs`).
    pub ns_meta: Database<Bytes, Bytes>,
    pub ns_state: Database<Bytes, Bytes>,
    pub ns_events: Database<Bytes, Bytes>,
    pub ns_event_types: Database<Bytes, Bytes>,
    pub ns_event_chain: Database<Bytes, Bytes>,
    pub ns_stream_events: Database<Bytes, Bytes>,
    pub ns_stream_heads: Database<Bytes, Bytes>,
    pub ns_idem: Database<Bytes, Bytes>,
    /// Namespaced idempotency keys by time: `[at_ms u64 BE][namespace id u32 BE][key]`.
    pub ns_idem_by_time: Database<Bytes, Bytes>,
}

/// How many named databases a store has (LMDB's `max_dbs`).
pub(crate) const MAX_DBS: u32 = 32;

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
            // Created at open when missing: a format-1 store made before replication
            // opens unchanged and gets an empty log.
            commit_log: env.create_database(wtxn, Some("commit_log"))?,
            stream_events: env.create_database(wtxn, Some("stream_events"))?,
            stream_heads: env.create_database(wtxn, Some("stream_heads"))?,
            event_chain: env.create_database(wtxn, Some("event_chain"))?,
            // Created at open when missing, like the ones above: a store made before
            // namespaces opens unchanged, with none.
            namespaces: env.create_database(wtxn, Some("namespaces"))?,
            ns_meta: env.create_database(wtxn, Some("ns_meta"))?,
            ns_state: env.create_database(wtxn, Some("ns_state"))?,
            ns_events: env.create_database(wtxn, Some("ns_events"))?,
            ns_event_types: env.create_database(wtxn, Some("ns_event_types"))?,
            ns_event_chain: env.create_database(wtxn, Some("ns_event_chain"))?,
            ns_stream_events: env.create_database(wtxn, Some("ns_stream_events"))?,
            ns_stream_heads: env.create_database(wtxn, Some("ns_stream_heads"))?,
            ns_idem: env.create_database(wtxn, Some("ns_idempotency"))?,
            ns_idem_by_time: env.create_database(wtxn, Some("ns_idempotency_by_time"))?,
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

/// A meta counter that older stores may lack, read as `default` when absent.
pub(crate) fn read_meta_u64_or(dbs: &Dbs, txn: &RoTxn, key: &[u8], default: u64) -> Result<u64> {
    match dbs.meta.get(txn, key)? {
        None => Ok(default),
        Some(_) => read_meta_u64(dbs, txn, key),
    }
}
