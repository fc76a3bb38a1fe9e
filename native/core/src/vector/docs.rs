//! How vector documents are stored in LMDB: one `vectors` database keyed by
//! `[collection id u32 BE][document id UTF-8]`, so a collection's documents are
//! one contiguous key range, with value `[format u8][f32 LE × dim][metadata JSON]`.

use crate::error::{Error, Result};

/// Format version of a stored document.
pub const DOC_FORMAT: u8 = 1;

/// The LMDB key of a document.
pub fn doc_key(collection: u32, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + id.len());
    k.extend_from_slice(&collection.to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// Encodes a document from the vector's little-endian bytes and its metadata JSON (empty: none).
pub fn encode_doc(out: &mut Vec<u8>, vector_le: &[u8], metadata: &[u8]) {
    out.clear();
    out.reserve(1 + vector_le.len() + metadata.len());
    out.push(DOC_FORMAT);
    out.extend_from_slice(vector_le);
    out.extend_from_slice(metadata);
}

/// A stored document, borrowed from the record.
pub struct StoredDoc<'a> {
    /// The vector, `dimension` little-endian f32 values.
    pub vector_le: &'a [u8],
    /// JSON text; empty when the document has no metadata.
    pub metadata: &'a [u8],
}

/// Splits a stored record of a collection of dimension `dim`.
pub fn decode_doc(b: &[u8], dim: usize) -> Result<StoredDoc<'_>> {
    match b.first() {
        Some(&DOC_FORMAT) if b.len() > dim * 4 => Ok(StoredDoc {
            vector_le: &b[1..1 + dim * 4],
            metadata: &b[1 + dim * 4..],
        }),
        Some(&f) if f > DOC_FORMAT => Err(Error::new(
            crate::error::Code::Version,
            format!(
                "a vector document was written by a newer athanor (format {f}); upgrade athanor"
            ),
        )),
        _ => Err(Error::corrupt(
            "a vector document record is malformed (wrong format or length)",
        )),
    }
}

/// Reads little-endian f32 values.
pub fn f32s(le: &[u8]) -> Vec<f32> {
    le.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// FNV-1a hash of a stored record, kept per document in memory so the index can
/// tell which documents another process changed without comparing vectors.
pub fn record_hash(record: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    let (words, tail) = record.split_at(record.len() / 8 * 8);
    for w in words.chunks_exact(8) {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x100000001b3);
    }
    for b in tail {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    h
}
