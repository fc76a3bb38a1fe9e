//! Entity streams: a stream's events, its version, the list of streams, on the
//! newest state or on a snapshot (packed as `athanor_core::wire::streams` says).

use athanor_core::{Store, StreamQuery};
use heed::RoTxn;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::guard::{guard, CoreResult};
use crate::{NativeDb, NativeSnapshot};

fn stream_query(from_version: Option<i64>, limit: u32, reverse: bool) -> CoreResult<StreamQuery> {
    let from_version = match from_version {
        None => None,
        Some(v) if v >= 0 => Some(v as u64),
        Some(v) => {
            return Err(athanor_core::Error::invalid(format!(
                "fromVersion must be a non-negative integer, got {v}"
            )))
        }
    };
    Ok(StreamQuery {
        from_version,
        limit,
        reverse,
    })
}

fn list(
    store: &Store,
    ns: u32,
    txn: &RoTxn,
    prefix: &str,
    after: Option<&str>,
    limit: u32,
) -> CoreResult<Vec<u8>> {
    store.space(ns).list_streams(
        txn,
        prefix.as_bytes(),
        after.map(str::as_bytes),
        limit.clamp(1, athanor_core::store::MAX_LIST as u32) as usize,
    )
}

#[napi]
impl NativeDb {
    /// A page of a stream's events on the newest state.
    #[napi]
    pub fn read_stream(
        &self,
        env: Env,
        stream: String,
        from_version: Option<i64>,
        limit: u32,
        reverse: bool,
    ) -> Result<Buffer> {
        let out = guard(&env, || {
            let q = stream_query(from_version, limit, reverse)?;
            self.read_newest(|store, txn| {
                store
                    .space(self.ctx.ns)
                    .read_stream(txn, stream.as_bytes(), &q)
            })
        })?;
        Ok(out.into())
    }

    /// A stream's version (0: no events) on the newest state.
    #[napi]
    pub fn stream_version(&self, env: Env, stream: String) -> Result<BigInt> {
        let v = guard(&env, || {
            athanor_core::txn::check_stream_id(stream.as_bytes())?;
            self.read_newest(|store, txn| {
                store
                    .space(self.ctx.ns)
                    .stream_version(txn, stream.as_bytes())
            })
        })?;
        Ok(BigInt::from(v))
    }

    /// Streams whose ids start with `prefix`, after `after`, with their versions.
    #[napi]
    pub fn list_streams(
        &self,
        env: Env,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Buffer> {
        let out = guard(&env, || {
            self.read_newest(|store, txn| {
                list(store, self.ctx.ns, txn, &prefix, after.as_deref(), limit)
            })
        })?;
        Ok(out.into())
    }
}

#[napi]
impl NativeSnapshot {
    /// A page of a stream's events as of this snapshot.
    #[napi]
    pub fn read_stream(
        &self,
        env: Env,
        stream: String,
        from_version: Option<i64>,
        limit: u32,
        reverse: bool,
    ) -> Result<Buffer> {
        let out = guard(&env, || {
            let (engine, txn) = self.parts()?;
            let q = stream_query(from_version, limit, reverse)?;
            let store = engine.store();
            let _g = store.guard();
            store.space(self.ns).read_stream(txn, stream.as_bytes(), &q)
        })?;
        Ok(out.into())
    }

    /// A stream's version (0: no events) as of this snapshot.
    #[napi]
    pub fn stream_version(&self, env: Env, stream: String) -> Result<BigInt> {
        let v = guard(&env, || {
            athanor_core::txn::check_stream_id(stream.as_bytes())?;
            let (engine, txn) = self.parts()?;
            let store = engine.store();
            let _g = store.guard();
            store.space(self.ns).stream_version(txn, stream.as_bytes())
        })?;
        Ok(BigInt::from(v))
    }

    /// Streams whose ids start with `prefix`, after `after`, as of this snapshot.
    #[napi]
    pub fn list_streams(
        &self,
        env: Env,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Buffer> {
        let out = guard(&env, || {
            let (engine, txn) = self.parts()?;
            let store = engine.store();
            let _g = store.guard();
            list(store, self.ns, txn, &prefix, after.as_deref(), limit)
        })?;
        Ok(out.into())
    }
}
