//! The messages the engine queues for the writer thread.

use crossbeam_channel::Sender;

use super::outcome::CommitInfo;
use crate::error::Result;
use crate::txn::TxBatch;

/// Where a transaction's outcome goes.
pub(crate) enum Reply {
    /// To a registered sink, tagged with the caller's token.
    Sink { sink: u64, token: u64 },
    /// To a caller blocked on the channel.
    Channel(Sender<Result<CommitInfo>>),
}

/// One queued transaction.
pub(crate) struct Request {
    pub batch: TxBatch,
    pub reply: Reply,
}

pub(crate) enum Msg {
    Commit(Request),
    /// Several transactions queued together, so they land in one group.
    CommitMany(Vec<Request>),
    Sync(Sender<Result<()>>),
    Shutdown,
}
