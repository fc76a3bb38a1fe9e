//! Bindings of replication (`athanor_core::store::ReplicationInfo`, the commit log
//! and `Engine::apply_replicated`): the publisher reads logged commit records and
//! marks what the stream acknowledged; a replica applies records it consumed.

use std::sync::Arc;

use athanor_core::{Engine, ReplicaApplied, ReplicationInfo};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::guard::{self, guard, CoreResult, Guarded, Work};
use crate::NativeDb;

/// Where a database stands with replication (seqs as numbers: far below 2^53).
#[napi(object)]
pub struct NativeReplicationInfo {
    pub database_id: Option<String>,
    pub logging: bool,
    pub commit_seq: f64,
    pub published_seq: f64,
    pub replica_of: Option<String>,
    pub replica_stream_seq: f64,
}

fn info_to_js(i: ReplicationInfo) -> NativeReplicationInfo {
    NativeReplicationInfo {
        database_id: i.database_id,
        logging: i.logging,
        commit_seq: i.commit_seq as f64,
        published_seq: i.published_seq as f64,
        replica_of: i.replica_of,
        replica_stream_seq: i.replica_stream_seq as f64,
    }
}

/// One logged commit: its seq and its encoded record.
#[napi(object)]
pub struct NativeLoggedCommit {
    pub commit_seq: f64,
    pub record: Buffer,
}

/// What one `applyReplicated` did.
#[napi(object)]
pub struct NativeReplicaApplied {
    pub applied: u32,
    pub skipped: u32,
    pub commit_seq: f64,
}

/// Work run on the libuv pool: marking a published position, applying records.
pub struct ReplicationJob<T: Send + 'static, J> {
    work: Option<Box<dyn FnOnce() -> CoreResult<T> + Send>>,
    to_js: fn(T) -> J,
}

impl<T: Send + 'static, J: ToNapiValue + TypeName> Work for ReplicationJob<T, J> {
    type Output = T;
    type JsValue = J;
    fn compute(&mut self) -> CoreResult<T> {
        let work = self
            .work
            .take()
            .ok_or_else(|| athanor_core::Error::internal("a replication task ran twice"))?;
        work()
    }
    fn resolve(&mut self, _env: Env, output: T) -> Result<J> {
        Ok((self.to_js)(output))
    }
}

fn job<T: Send + 'static, J: ToNapiValue + TypeName>(
    work: impl FnOnce() -> CoreResult<T> + Send + 'static,
    to_js: fn(T) -> J,
) -> AsyncTask<Guarded<ReplicationJob<T, J>>> {
    guard::task(ReplicationJob {
        work: Some(Box::new(work)),
        to_js,
    })
}

type UnitJob = ReplicationJob<(), ()>;
type ApplyJob = ReplicationJob<ReplicaApplied, NativeReplicaApplied>;

fn seq_arg(v: f64) -> CoreResult<u64> {
    if !(v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0) {
        return Err(athanor_core::Error::invalid(format!(
            "a commit or stream seq must be a non-negative integer, got {v}"
        )));
    }
    Ok(v as u64)
}

#[napi]
impl NativeDb {
    /// Where this database stands with replication.
    #[napi]
    pub fn replication_info(&self, env: Env) -> Result<NativeReplicationInfo> {
        guard(&env, || {
            Ok(info_to_js(self.engine()?.store().replication_info()?))
        })
    }

    /// Turns the commit log on (kept across restarts); returns the new standing.
    #[napi]
    pub fn enable_commit_log(&self, env: Env) -> Result<NativeReplicationInfo> {
        guard(&env, || {
            Ok(info_to_js(self.engine()?.store().enable_commit_log()?))
        })
    }

    /// Up to `limit` logged commits after commit seq `after`, oldest first.
    #[napi]
    pub fn commit_log_after(
        &self,
        env: Env,
        after: f64,
        limit: u32,
    ) -> Result<Vec<NativeLoggedCommit>> {
        guard(&env, || {
            let rows = self
                .engine()?
                .store()
                .commit_log_after(seq_arg(after)?, limit.max(1) as usize)?;
            Ok(rows
                .into_iter()
                .map(|(seq, rec)| NativeLoggedCommit {
                    commit_seq: seq as f64,
                    record: rec.into(),
                })
                .collect())
        })
    }

    /// Records that the stream acknowledged every commit up to `seq` and drops their records.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn mark_published(&self, env: Env, seq: f64) -> Result<AsyncTask<Guarded<UnitJob>>> {
        let (engine, seq): (Arc<Engine>, u64) =
            guard(&env, || Ok((self.engine()?, seq_arg(seq)?)))?;
        Ok(job(move || engine.store().mark_published(seq), |_| ()))
    }

    /// Makes this database a read replica of `primary_id` (writes refused from then on).
    #[napi]
    pub fn init_replica(&self, env: Env, primary_id: String) -> Result<()> {
        guard(&env, || self.engine()?.init_replica(&primary_id))
    }

    /// Applies replicated commit records in one LMDB transaction with `stream_seq`.
    #[napi(ts_return_type = "Promise<NativeReplicaApplied>")]
    pub fn apply_replicated(
        &self,
        env: Env,
        records: Vec<Buffer>,
        stream_seq: f64,
    ) -> Result<AsyncTask<Guarded<ApplyJob>>> {
        let (engine, seq): (Arc<Engine>, u64) =
            guard(&env, || Ok((self.engine()?, seq_arg(stream_seq)?)))?;
        let records: Vec<Vec<u8>> = records.iter().map(|b| b.to_vec()).collect();
        Ok(job(
            move || engine.apply_replicated(&records, seq),
            |r| NativeReplicaApplied {
                applied: r.applied,
                skipped: r.skipped,
                commit_seq: r.commit_seq as f64,
            },
        ))
    }
}
