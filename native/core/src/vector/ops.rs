//! Checks of a transaction's vector operations against a collection, and the
//! index change a stored document makes.

use serde_json::Value as Json;

use super::collection::{CollectionDef, Metric};
use super::distance;
use super::docs;
use super::index::Change;
use crate::error::{Code, Error, Result};
use crate::txn::{TxBatch, VectorOp};

/// The error for a collection that does not exist.
pub(super) fn missing(name: &[u8]) -> Error {
    let name = String::from_utf8_lossy(name);
    Error::new(
        Code::NotFound,
        format!(
            "vector collection {:?} does not exist; create it with db.vectors.create()",
            crate::store::split_collection(&name).1
        ),
    )
}

/// The collection a batch's vector op writes, as the core keys it: qualified with the
/// batch's namespace (`store::qualified_collection`).
pub(super) fn collection_of<'b>(b: &'b TxBatch, op: &VectorOp) -> std::borrow::Cow<'b, [u8]> {
    let name = b.bytes(op.collection());
    if b.namespace == crate::store::DEFAULT_NAMESPACE_ID {
        return std::borrow::Cow::Borrowed(name);
    }
    // Names were checked as UTF-8 when the batch was parsed.
    let name = std::str::from_utf8(name).unwrap_or_default();
    std::borrow::Cow::Owned(
        crate::store::qualified_collection(b.namespace, name)
            .into_owned()
            .into_bytes(),
    )
}

/// Checks one vector operation against its collection: dimension, no zero vector under cosine.
pub(super) fn check_op(def: &CollectionDef, b: &TxBatch, op: &VectorOp) -> Result<()> {
    if let VectorOp::Upsert { vector, id, .. } = op {
        let bytes = b.bytes(vector);
        let dim = def.params.dimension as usize;
        if bytes.len() != dim * 4 {
            return Err(Error::new(
                Code::VectorDimension,
                format!(
                    "document {:?} has {} dimensions; collection {:?} has {dim}",
                    String::from_utf8_lossy(b.bytes(id)),
                    bytes.len() / 4,
                    def.name
                ),
            ));
        }
        if def.params.metric == Metric::Cosine
            && bytes
                .chunks_exact(4)
                .all(|c| f32::from_le_bytes(c.try_into().unwrap()) == 0.0)
        {
            return Err(Error::invalid(format!(
                "document {:?} is a zero vector, which has no direction under the cosine metric",
                String::from_utf8_lossy(b.bytes(id))
            )));
        }
    }
    Ok(())
}

/// The index change of a stored document (its vector normalised for cosine).
pub(super) fn change_of(
    def: &CollectionDef,
    id: &str,
    vector_le: &[u8],
    metadata: &[u8],
    hash: u64,
) -> Result<Change> {
    let mut v = docs::f32s(vector_le);
    if def.params.metric == Metric::Cosine {
        distance::normalize(&mut v);
    }
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice::<Json>(metadata)
                .map_err(|e| Error::corrupt(format!("vector metadata is not JSON: {e}")))?,
        )
    };
    Ok(Change {
        id: id.into(),
        hash,
        upsert: Some((v, meta)),
    })
}
