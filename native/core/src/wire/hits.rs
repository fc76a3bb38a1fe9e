//! Vector search hits, addon → TS (`ts/internal/vector-pack.ts`), little-endian.
//!
//! One search's hits, best first:
//!
//! ```text
//! [n u32] then n × ([score f32][id_len u16][id: UTF-8][meta_len u32][metadata: JSON text])
//! ```
//!
//! `meta_len` 0 means the document has no metadata. A batch of searches
//! (`searchBatch`) is `[nq u32]` then nq hit lists as above, in query order.

use serde_json::Value as Json;

/// Appends one search's hits, given as `(score, id, metadata)`.
pub fn put_hits<'a, I>(out: &mut Vec<u8>, hits: I)
where
    I: ExactSizeIterator<Item = (f32, &'a str, Option<&'a Json>)>,
{
    out.extend_from_slice(&(hits.len() as u32).to_le_bytes());
    for (score, id, metadata) in hits {
        out.extend_from_slice(&score.to_le_bytes());
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        let at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        if let Some(m) = metadata {
            // Serialising a serde_json::Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, m);
            let n = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&n.to_le_bytes());
        }
    }
}

/// Packs a batch from each query's packed hits ([`put_hits`]), in query order.
pub fn pack_batch(lists: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + lists.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&(lists.len() as u32).to_le_bytes());
    for l in lists {
        out.extend_from_slice(l);
    }
    out
}
