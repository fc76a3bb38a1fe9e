//! The seam through which derived in-memory state (the vector indexes) follows the
//! store's commits without the store or the writer knowing what that state is.

use heed::RwTxn;

use super::Dbs;
use crate::error::Result;
use crate::txn::TxBatch;

/// Something that keeps state derived from the store and must see every commit of
/// this process: the part of each transaction that is its own (validated and
/// written in the writer's LMDB transaction), and the moment each LMDB commit
/// happens. Registered with [`super::Store::add_write_hook`].
pub(crate) trait WriteHook: Send + Sync {
    /// Starts one commit group; the returned value collects what the group's
    /// transactions wrote for this hook and is dropped unused when the group fails.
    fn group(&self) -> Box<dyn GroupWrites + '_>;

    /// Called right before an LMDB commit of this process (writer group or
    /// administrative write), so the hook can tell this process's commits from
    /// another process's.
    fn commit_begin(&self);

    /// Called after that LMDB commit, whether it succeeded or not.
    fn commit_end(&self);

    /// An administrative write transaction of this process (see
    /// [`super::Store::write_with_growth`]) committed as LMDB transaction `txn_id`.
    fn admin_committed(&self, txn_id: u64);
}

/// One commit group's share of a [`WriteHook`].
pub(crate) trait GroupWrites {
    /// Checks `batch`'s writes for this hook against the store as of `wtxn`,
    /// before anything of the transaction is written. `Ok(Err(e))` fails this
    /// transaction alone; `Err(e)` is a storage failure that aborts the group.
    fn validate(&mut self, dbs: &Dbs, wtxn: &RwTxn, batch: &TxBatch) -> Result<Result<()>>;

    /// Writes `batch`'s part for this hook (validated by [`Self::validate`]) into
    /// `wtxn`. An error aborts the group.
    fn write(
        &mut self,
        dbs: &Dbs,
        wtxn: &mut RwTxn,
        batch: &TxBatch,
        scratch: &mut Vec<u8>,
    ) -> Result<()>;

    /// The group committed as LMDB transaction `txn_id`, its last commit seq being
    /// `seq`; called before any of its transactions is acknowledged.
    fn committed(self: Box<Self>, seq: u64, txn_id: u64);
}
