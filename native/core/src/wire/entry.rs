//! A state entry read inside a transaction (`txGet`, written into the value
//! scratch buffer or returned as a copy), addon → TS (`ts/internal/entry.ts`):
//!
//! ```text
//! [version u64 BE][value: an encoded crate::codec::Value]
//! ```
//!
//! The version is big-endian, as LMDB stores it in front of the value. The total
//! length is the read's return value (the scratch buffer is longer).

/// Bytes before the value.
pub const VALUE_OFFSET: usize = 8;

/// The bytes in front of the value: its version.
pub fn header(version: u64) -> [u8; VALUE_OFFSET] {
    version.to_be_bytes()
}

/// The whole entry in one buffer.
pub fn pack(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_OFFSET + value.len());
    out.extend_from_slice(&header(version));
    out.extend_from_slice(value);
    out
}
