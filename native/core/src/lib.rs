//! athanor-core: the embedded engine behind athanor. Durable key/value state and
//! an append-only event log in one LMDB environment, committed atomically by a
//! single group-committing writer. Knows nothing of N-API: `native/node` binds it.
//!
//! Open a directory, commit a transaction, read it back:
//!
//! ```
//! use athanor_core::{Engine, EventQuery, Outcome, StoreOptions, TxBuilder, Value};
//!
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::open(dir.path(), StoreOptions::default())?;
//! let batch = TxBuilder::new()
//!     .put("greeting", &Value::String("hello".into()))
//!     .event_json("greeted", r#"{"who":"world"}"#)
//!     .build()?;
//! let info = engine.commit_blocking(batch)?;
//! assert_eq!((info.outcome, info.commit_seq, info.first_event_id), (Outcome::Applied, 1, 1));
//!
//! let store = engine.store();
//! let txn = engine.begin_read()?;
//! let _map = store.guard(); // held while the transaction's bytes are in use
//! let entry = store.get(&txn, b"greeting")?.expect("committed");
//! assert_eq!(entry.version, 1);
//! assert_eq!(Value::decode(entry.value)?, Value::String("hello".into()));
//! assert_eq!(store.last_event_id(&txn)?, 1);
//! let packed = store.read_events(&txn, &EventQuery { from: 1, ..EventQuery::default() })?;
//! let events = athanor_core::wire::events::unpack(&packed)?;
//! assert_eq!((events.len(), events[0].event_type), (1, "greeted"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod announce;
pub mod backup;
pub mod clock;
pub mod codec;
pub mod commit;
pub mod engine;
pub mod error;
mod lmdb_check;
pub mod numeric;
pub mod projection;

pub mod store;
pub mod txn;
pub mod vector;
pub mod verify;
pub mod wire;

pub use codec::Value;
pub use commit::{CommitInfo, CommitNotice, CommitSink, Completion, Outcome, ReplicaApplied};
pub use engine::Engine;
pub use error::{Code, Error, Result};
pub use store::{chain_link, ChainKey, ChainKind, ChainMeta, ChainOptions, Proof};
pub use store::{
    CachedReader, Durability, EventQuery, ReplicationInfo, StateEntry, Store, StoreOptions,
    StreamQuery,
};
pub use txn::{TxBatch, TxBuilder, VectorOp};
