//! Stream reads, addon → TS (`ts/state/streams.ts`), little-endian:
//!
//! ```text
//! page: [first_version u64][event pack (wire/events.rs)]
//! list: [count u32] then count × ([id_len u16][id][version u64])
//! ```
//!
//! A page's events are the stream's versions `first_version`, then one more each
//! (one less each when read newest first), so versions need not travel per event.

/// Packs a page of a stream: the version of its first event, then its events.
pub fn pack_page(first_version: u64, events: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + events.len());
    out.extend_from_slice(&first_version.to_le_bytes());
    out.extend_from_slice(&events);
    out
}

/// Packs a list of streams and their versions.
pub fn pack_list(rows: &[(&[u8], u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for (id, v) in rows {
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}
