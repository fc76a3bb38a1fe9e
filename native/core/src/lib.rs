//! athanor-core: the embedded engine behind athanor. Durable key/value state and
//! an append-only event log in one LMDB environment, committed atomically by a
//! single group-committing writer. Knows nothing of N-API: `native/node` binds it.

pub mod announce;
pub mod backup;
pub mod clock;
pub mod codec;
pub mod commit;
pub mod engine;
pub mod error;
mod lmdb_check;
pub mod projection;
pub mod store;
pub mod txn;
pub mod vector;
pub mod verify;

pub use codec::Value;
pub use commit::{CommitInfo, CommitNotice, CommitSink, Completion, Outcome};
pub use engine::Engine;
pub use error::{Code, Error, Result};
pub use store::{CachedReader, Durability, EventQuery, StateEntry, Store, StoreOptions};
pub use txn::{TxBatch, TxBuilder, VectorOp};
