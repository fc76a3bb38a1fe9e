//! Namespaces in the key encoding.
//!
//! A namespace's state, events, event-type index, hash chain, streams, idempotency
//! records and counters live in databases of their own (`ns_state`, `ns_events`, ...,
//! see `dbs.rs`) under keys that start with the namespace's id:
//!
//! ```text
//! ns_<db>:              [namespace id u32 BE][the key the default namespace would use]
//! ns_idempotency_by_time: [at_ms u64 BE][namespace id u32 BE][idempotency key]
//! ```
//!
//! The default namespace (id 0) keeps the databases and keys it always had, so a store
//! made before namespaces reads, writes and hashes exactly as before. The id is chosen
//! by the core from the namespace registry (`namespaces.rs`), never taken from a
//! caller's key: every read and write of a [`Space`] goes through a [`Keyed`], which
//! puts the id in front of the key and strips it from what it reads back, so no key,
//! event id or stream id a caller crafts can name a row of another namespace.

use heed::{RoTxn, RwTxn};

use super::dbs::{Dbs, META_LAST_EVENT_ID};
use super::env::Store;
use super::keyed::{Db, Keyed};

/// The id of the default namespace: the database itself.
pub const DEFAULT_NAMESPACE_ID: u32 = 0;

/// A vector collection's name as the core keys it: the default namespace's names as
/// they are; a namespace's as `\0<namespace id>\0<name>`. Collection names hold no NUL
/// (`vector::collection::check_name`), so no name a caller gives reaches another
/// namespace's collection.
pub fn qualified_collection(ns: u32, name: &str) -> std::borrow::Cow<'_, str> {
    if ns == DEFAULT_NAMESPACE_ID {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(format!("\0{ns}\0{name}"))
    }
}

/// The namespace id and the plain name of a collection name as the core keys it (see
/// [`qualified_collection`]).
pub fn split_collection(qualified: &str) -> (u32, &str) {
    if let Some(rest) = qualified.strip_prefix('\0') {
        if let Some((id, name)) = rest.split_once('\0') {
            if let Ok(id) = id.parse::<u32>() {
                return (id, name);
            }
        }
    }
    (DEFAULT_NAMESPACE_ID, qualified)
}

/// One namespace's view of the store: the databases of the concepts a namespace
/// holds, each keyed for it. Get one with [`Store::space`].
#[derive(Clone, Copy)]
pub struct Space<'s> {
    pub(crate) store: &'s Store,
    pub(crate) id: u32,
    pub(crate) meta: Keyed,
    pub(crate) state: Keyed,
    pub(crate) events: Keyed,
    pub(crate) event_types: Keyed,
    pub(crate) event_chain: Keyed,
    pub(crate) stream_events: Keyed,
    pub(crate) stream_heads: Keyed,
    pub(crate) idem: Keyed,
}

impl<'s> Space<'s> {
    pub(crate) fn new(store: &'s Store, dbs: &Dbs, id: u32) -> Space<'s> {
        if id == DEFAULT_NAMESPACE_ID {
            Space {
                store,
                id,
                meta: Keyed::plain(dbs.meta),
                state: Keyed::plain(dbs.state),
                events: Keyed::plain(dbs.events),
                event_types: Keyed::plain(dbs.event_types),
                event_chain: Keyed::plain(dbs.event_chain),
                stream_events: Keyed::plain(dbs.stream_events),
                stream_heads: Keyed::plain(dbs.stream_heads),
                idem: Keyed::plain(dbs.idem),
            }
        } else {
            Space {
                store,
                id,
                meta: Keyed::prefixed(dbs.ns_meta, id),
                state: Keyed::prefixed(dbs.ns_state, id),
                events: Keyed::prefixed(dbs.ns_events, id),
                event_types: Keyed::prefixed(dbs.ns_event_types, id),
                event_chain: Keyed::prefixed(dbs.ns_event_chain, id),
                stream_events: Keyed::prefixed(dbs.ns_stream_events, id),
                stream_heads: Keyed::prefixed(dbs.ns_stream_heads, id),
                idem: Keyed::prefixed(dbs.ns_idem, id),
            }
        }
    }

    /// The namespace's id (0: the default namespace).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The newest event id of the namespace (0 when its log is empty).
    pub fn last_event_id(&self, txn: &RoTxn) -> crate::error::Result<u64> {
        if self.id == DEFAULT_NAMESPACE_ID {
            super::dbs::read_meta_u64(&self.store.dbs, txn, META_LAST_EVENT_ID)
        } else {
            match self.meta.get(txn, META_LAST_EVENT_ID)? {
                None => Ok(0),
                Some(v) => Ok(u64::from_be_bytes(v.try_into().map_err(|_| {
                    crate::error::Error::corrupt("a namespace's last_event_id is not 8 bytes")
                })?)),
            }
        }
    }

    /// Records the namespace's newest event id.
    pub(crate) fn put_last_event_id(&self, wtxn: &mut RwTxn, id: u64) -> heed::Result<()> {
        self.meta.put(wtxn, META_LAST_EVENT_ID, &id.to_be_bytes())
    }

    /// The time index entry of an idempotency key applied at `at_ms`, and the database
    /// it goes in. One index orders every namespace's keys by time, so pruning walks
    /// one database whatever the number of namespaces.
    pub(crate) fn idem_time_entry(&self, at_ms: u64, key: &[u8]) -> (Db, Vec<u8>) {
        let dbs = &self.store.dbs;
        let mut k = Vec::with_capacity(12 + key.len());
        k.extend_from_slice(&at_ms.to_be_bytes());
        if self.id == DEFAULT_NAMESPACE_ID {
            k.extend_from_slice(key);
            (dbs.idem_by_time, k)
        } else {
            k.extend_from_slice(&self.id.to_be_bytes());
            k.extend_from_slice(key);
            (dbs.ns_idem_by_time, k)
        }
    }

    /// Deletes everything the namespace holds in these databases.
    pub(crate) fn clear(&self, wtxn: &mut RwTxn) -> heed::Result<()> {
        for k in [
            self.meta,
            self.state,
            self.events,
            self.event_types,
            self.event_chain,
            self.stream_events,
            self.stream_heads,
            self.idem,
        ] {
            k.clear(wtxn)?;
        }
        Ok(())
    }
}

impl Store {
    /// Namespace `id`'s view of the store (0: the default namespace). Whether the
    /// namespace exists is the registry's business (`namespaces.rs`): a view of an id
    /// never created reads as empty.
    pub fn space(&self, id: u32) -> Space<'_> {
        Space::new(self, &self.dbs, id)
    }
}

/// The default namespace's reads, as [`Store`] methods: what every caller used before
/// namespaces existed, unchanged.
impl Store {
    /// Reads a state entry of the default namespace, see [`Space::get`].
    pub fn get<'t>(
        &self,
        txn: &'t RoTxn,
        key: &[u8],
    ) -> crate::error::Result<Option<super::StateEntry<'t>>> {
        self.space(DEFAULT_NAMESPACE_ID).get(txn, key)
    }

    /// An idempotency record of the default namespace, see [`Space::idempotency_record`].
    pub fn idempotency_record(
        &self,
        txn: &RoTxn,
        key: &[u8],
    ) -> crate::error::Result<Option<(u64, u64, u32, u64)>> {
        self.space(DEFAULT_NAMESPACE_ID)
            .idempotency_record(txn, key)
    }

    /// A stream's version in the default namespace, see [`Space::stream_version`].
    pub fn stream_version(&self, txn: &RoTxn, stream: &[u8]) -> crate::error::Result<u64> {
        self.space(DEFAULT_NAMESPACE_ID).stream_version(txn, stream)
    }

    /// Reads a stream of the default namespace, see [`Space::read_stream`].
    pub fn read_stream(
        &self,
        txn: &RoTxn,
        stream: &[u8],
        q: &super::StreamQuery,
    ) -> crate::error::Result<Vec<u8>> {
        self.space(DEFAULT_NAMESPACE_ID).read_stream(txn, stream, q)
    }
}
