//! The event log's hash chain as JS sees it: the open options' chain settings and
//! `db.events.proof(id)`.

use athanor_core::{ChainKey, ChainOptions};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::guard::{guard, CoreResult};
use crate::NativeDb;

/// The chain settings of the open options; the key is copied into memory that is
/// zeroed when the database closes.
pub(crate) fn chain_options(
    chain: Option<bool>,
    hmac_key: Option<&Buffer>,
) -> CoreResult<ChainOptions> {
    Ok(ChainOptions {
        enable: chain.unwrap_or(false),
        hmac_key: hmac_key.map(|k| ChainKey::new(k)).transpose()?,
    })
}

/// What an outside party needs to check that an event is in the chain.
#[napi(object)]
pub struct NativeEventProof {
    pub id: BigInt,
    pub record: Buffer,
    pub prev_hash: Buffer,
    pub hash: Buffer,
    pub algorithm: String,
    pub chain_from: BigInt,
}

#[napi]
impl NativeDb {
    /// The chain proof of event `id` (`null` when there is no such event).
    #[napi]
    pub fn event_proof(&self, env: Env, id: BigInt) -> Result<Option<NativeEventProof>> {
        guard(&env, || {
            let (signed, id, lossless) = id.get_u64();
            if signed || !lossless || id == 0 {
                return Err(athanor_core::Error::invalid(
                    "id must be a positive 64-bit event id",
                ));
            }
            self.read_newest(|store, txn| {
                Ok(store
                    .space(self.ctx.ns)
                    .event_proof(txn, id)?
                    .map(|p| NativeEventProof {
                        id: BigInt::from(p.id),
                        record: p.record.into(),
                        prev_hash: p.prev.to_vec().into(),
                        hash: p.hash.to_vec().into(),
                        algorithm: p.kind.name().to_string(),
                        chain_from: BigInt::from(p.chain_from),
                    }))
            })
        })
    }
}
