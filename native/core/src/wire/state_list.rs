//! A page of state entries (`db.list()`, `athanor state list`), addon → TS
//! (`ts/internal/state-list.ts`), little-endian, in key order, with no count:
//!
//! ```text
//! { [key_len u32][key: UTF-8][value_len u32][value: an encoded crate::codec::Value] }*
//! ```

/// Packs `(key, encoded value)` rows.
pub fn pack<K: AsRef<[u8]>, V: AsRef<[u8]>>(rows: &[(K, V)]) -> Vec<u8> {
    let size = rows
        .iter()
        .map(|(k, v)| 8 + k.as_ref().len() + v.as_ref().len())
        .sum();
    let mut out = Vec::with_capacity(size);
    for (k, v) in rows {
        let (k, v) = (k.as_ref(), v.as_ref());
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}
