//! A stored vector document as `collection.get(id)` returns it, addon → TS
//! (`ts/internal/vector-pack.ts`):
//!
//! ```text
//! [vector: dimension × f32 LE][metadata: JSON text, UTF-8, absent when none]
//! ```
//!
//! The dimension is the collection's, known to the reader; whatever follows the
//! vector is the metadata.

/// Packs a document from its vector's little-endian bytes and its metadata's JSON (or nothing).
pub fn pack(vector_le: &[u8], metadata: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(vector_le.len() + metadata.len());
    out.extend_from_slice(vector_le);
    out.extend_from_slice(metadata);
    out
}
