//! The canonical store: one LMDB environment (heed) holding meta, state, the
//! event log, the event-type index and idempotency records. Reads live here;
//! all writes go through the single writer in [`crate::commit`].
//!
//! - `options`: durability, sizes, the hash chain's settings and key;
//! - `dbs`: the named databases and meta keys (the on-disk layout);
//! - `files`: checks before LMDB maps the file, the created marker;
//! - `create`: a new store, built in a temporary folder and renamed into place;
//! - `env`: opening, write hooks, administrative writes, map growth;
//! - `reader`: read transactions, the map guard, cached readers;
//! - `state`, `log`, `idempotency`: reading each concept; `scan`: state keys by prefix, a page at a time;
//! - `compact`: retention, deleting the oldest events (and their type index entries);
//! - `verify`: the store's invariants;
//! - `chain_format`: the hash chain's link function and meta (starting it, checkpoints);
//! - `chain`: the chain's writer, proofs and their check;
//! - `hook`: the seam derived state (vector indexes) follows commits through;
//! - `space`: namespaces in the key encoding (a namespace's view of the databases);
//! - `namespaces`: the namespace registry (create, list, drop);
//! - `sync_stats`: how long fsyncs take;
//! - `commit_log`: replication's marks: the commit log kept for a publisher, the
//!   database id, a replica's origin and stream position.
//!
//! The files depend on each other one way: `options`, `dbs`, `sync_stats` <- `chain_format`, `files`
//! <- `create` <- `env` <- `reader`, `state`, `log`, `idempotency` <- `compact`, `verify`, `chain`
//! (links read records through `log`), `commit_log`; this file only re-exports.

mod chain;
mod chain_format;
mod commit_log;
mod compact;
mod create;
mod dbs;
mod env;
mod files;
mod hook;
mod idempotency;
mod keyed;
mod log;
mod namespaces;
mod options;
mod reader;
mod scan;
mod space;
mod state;
mod streams;
mod sync_stats;
mod verify;

pub use chain::Proof;
pub(crate) use chain::{check as check_chain, ChainWriter};
pub(crate) use chain_format::ensure as ensure_chain;
pub use chain_format::{link as chain_link, ChainKind, ChainMeta, Hash};
pub use commit_log::ReplicationInfo;
pub(crate) use commit_log::{
    commit_log_id, is_replica, log_commit, put_replica_position, replica_of,
};
pub use compact::Compacted;
pub use dbs::STORE_FORMAT;
pub(crate) use dbs::{
    put_meta_u64, read_meta_u64, Dbs, MAX_DBS, META_COMMIT_SEQ, META_LAST_EVENT_ID,
};
pub use env::Store;
#[cfg(test)]
pub(crate) use files::PROJECTION_FILE;
pub(crate) use hook::{GroupWrites, WriteHook};
pub(crate) use idempotency::IdemRecord;
pub(crate) use log::type_index_key;
pub use log::EventQuery;
pub use namespaces::{check_namespace_name, NamespaceInfo, MAX_NAMESPACE_NAME_BYTES};
pub use options::{ChainKey, ChainOptions, Durability, StoreOptions};
pub use reader::CachedReader;
pub use scan::MAX_LIST;
pub use space::{qualified_collection, split_collection, Space, DEFAULT_NAMESPACE_ID};
pub use state::StateEntry;
pub use streams::StreamQuery;
pub(crate) use streams::{decode_version, stream_event_key};
pub use sync_stats::{SyncSnapshot, SyncStats, SYNC_BUCKETS_S};
