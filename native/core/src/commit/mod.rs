//! The single writer: group commit.
//!
//! One thread owns all writes. It takes every transaction queued since its last
//! commit, applies them in order inside one LMDB write transaction (validating
//! each one's reads against the current state, so the result is serializable),
//! commits once (one fsync under `Durability::Full`), and only then reports each
//! transaction's outcome. A transaction that fails validation or is a duplicate
//! writes nothing; the others in its group are unaffected.
//!
//! - `outcome`: what a commit reports (`CommitInfo`, `Completion`, `CommitNotice`);
//! - `queue`: the messages the engine sends the writer;
//! - `sink`: where outcomes go (`CommitSink`) and their routing;
//! - `apply`: one transaction applied inside the group's LMDB transaction;
//! - `writer`: the thread, grouping, map growth, per-transaction isolation;
//! - `replicate`: a read replica applying its primary's commit records (not
//!   through the writer thread: a replica's writer has nothing else to write).
//!
//! Derived state (the vector indexes) takes part through the store's
//! `WriteHook`s (`crate::store`); the writer never names it.

mod apply;
mod outcome;
mod queue;
mod replicate;
mod sink;
mod writer;

pub use outcome::{CommitInfo, CommitNotice, Completion, Outcome};
pub(crate) use queue::{Msg, Reply, Request};
pub(crate) use replicate::apply_replicated;
pub use replicate::ReplicaApplied;
pub use sink::CommitSink;
pub(crate) use sink::Shared;
pub(crate) use writer::run_writer;
