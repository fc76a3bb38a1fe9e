//! What a commit reports back.

use crate::error::Result;

/// Whether a transaction was applied now or had been applied before (same idempotency key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied by this commit.
    Applied,
    /// Its idempotency key was applied before, inside the window; nothing was written.
    Duplicate,
}

/// What a successful commit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// Applied now, or a duplicate of an earlier commit.
    pub outcome: Outcome,
    /// The commit sequence number of the transaction (for a duplicate: of the original).
    pub commit_seq: u64,
    /// Id of its first event; 0 when it logged none.
    pub first_event_id: u64,
    /// How many events it logged (ids `first_event_id..first_event_id + event_count`).
    pub event_count: u32,
}

/// The outcome of one queued transaction, routed back to the sink that queued it.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The token the transaction was queued with.
    pub token: u64,
    /// Its outcome; an error means it wrote nothing.
    pub result: Result<CommitInfo>,
}

/// Published after every group that applied something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitNotice {
    /// The newest commit seq once the group is durable (as the durability mode promises).
    pub commit_seq: u64,
    /// The newest event id after the group.
    pub last_event_id: u64,
}
