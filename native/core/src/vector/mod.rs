//! Vector collections: definitions and documents stored in LMDB next to state
//! and events (written by the commit writer, in the same LMDB transaction), and
//! an in-memory HNSW index per collection derived from them.
//!
//! - [`collection`]: definitions, parameter validation, on-disk records;
//! - [`docs`]: document keys and records;
//! - `registry`: the open collections of a store: load, create, drop, precheck, verify;
//! - `hook`: the store's write hook: vector writes in the writer's transaction,
//!   committed changes handed to the indexes;
//! - `sync`: catching up with other processes' commits;
//! - `indexer`: the indexer thread and the background dumps;
//! - `shared`: what the registry, the indexer and the hook share;
//! - `ops`: checks of vector operations, index changes of stored documents;
//! - [`index`]: one collection's index: applying changes, search plans and walks, rebuild;
//! - `live`: its live documents, tombstones, pending list, filter answer caches;
//! - `columns`: typed per-field metadata columns that filters read;
//! - `search`: search options, hits, plans, stats, candidate heaps;
//! - `graph`: the hnsw_rs graph (built or loaded) and its shared helpers;
//! - `frozen`: a flat read-only snapshot of the graph for fast walks;
//! - [`distance`]: SIMD kernels and the metric distances;
//! - [`filter`]: metadata filters.
//!
//! Dependencies point one way: `filter` <- `columns` <- `live`; `live`, `search`, `graph` <- `index`; `shared` <-
//! `indexer`, `ops`, `hook` <- `registry` <- `sync`; this file only re-exports.

pub mod collection;
mod columns;
pub mod distance;
pub mod docs;
pub(crate) mod dump;
pub mod filter;
mod frozen;
mod graph;
mod hook;
pub mod index;
mod indexer;
mod live;
mod ops;
mod registry;
mod search;
mod shared;
mod sync;

pub use collection::{CollectionDef, CollectionParams, Metric, Quantization};
pub use filter::Filter;
pub use index::{
    Change, CollectionIndex, Hit, IndexStats, PlanKind, PlanReason, SearchOptions, SearchPlan,
};
pub use registry::{IdleWaiter, Registry};
