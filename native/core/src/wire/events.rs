//! Packed events, addon → TS (`ts/internal/event-pack.ts`), little-endian:
//!
//! ```text
//! [count u32] then count × ([id u64][commit_seq u64][at_ms u64][kind u8][type_len u16][type][payload_len u32][payload])
//! ```
//!
//! `kind` is the stored event's [`crate::codec::PayloadKind`] as a byte (1: the
//! payload is JSON text, UTF-8; 2: raw bytes); `type` is UTF-8.
//! `Store::read_events` builds it with [`EventPack`]; [`unpack`] reads it back (Rust
//! callers and tests; TypeScript has its own decoder).

use crate::error::{Error, Result};

/// A pack being built: push the events, then [`EventPack::finish`].
pub struct EventPack {
    out: Vec<u8>,
    count: u32,
}

impl Default for EventPack {
    fn default() -> Self {
        Self::new()
    }
}

impl EventPack {
    /// An empty pack (the count is written by [`EventPack::finish`]).
    pub fn new() -> Self {
        EventPack {
            out: vec![0u8; 4],
            count: 0,
        }
    }

    /// Appends one event.
    pub fn push(
        &mut self,
        id: u64,
        commit_seq: u64,
        at_ms: u64,
        kind: u8,
        event_type: &str,
        payload: &[u8],
    ) {
        let out = &mut self.out;
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&commit_seq.to_le_bytes());
        out.extend_from_slice(&at_ms.to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&(event_type.len() as u16).to_le_bytes());
        out.extend_from_slice(event_type.as_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        self.count += 1;
    }

    /// How many events were pushed.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The packed bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out[..4].copy_from_slice(&self.count.to_le_bytes());
        self.out
    }
}

/// One event of a pack, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedEvent<'a> {
    /// The event id.
    pub id: u64,
    /// The commit seq of the transaction that logged it.
    pub commit_seq: u64,
    /// Commit time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The payload kind byte (1: JSON text, 2: bytes).
    pub kind: u8,
    /// The event type.
    pub event_type: &'a str,
    /// The payload.
    pub payload: &'a [u8],
}

/// Reads a pack back; `ERR_CORRUPT` when it is cut short, has bytes left over, or a
/// type is not UTF-8.
pub fn unpack(buf: &[u8]) -> Result<Vec<PackedEvent<'_>>> {
    let bad = || Error::corrupt("the packed events are malformed");
    let mut p = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let s = buf
            .get(p..p.checked_add(n).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        p += n;
        Ok(s)
    };
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| bad())?);
    let mut out = Vec::with_capacity((count as usize).min(buf.len() / 31));
    for _ in 0..count {
        let id = u64_of(take(8)?);
        let commit_seq = u64_of(take(8)?);
        let at_ms = u64_of(take(8)?);
        let kind = take(1)?[0];
        let type_len = u16::from_le_bytes(take(2)?.try_into().map_err(|_| bad())?) as usize;
        let event_type = std::str::from_utf8(take(type_len)?).map_err(|_| bad())?;
        let payload_len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| bad())?) as usize;
        let payload = take(payload_len)?;
        out.push(PackedEvent {
            id,
            commit_seq,
            at_ms,
            kind,
            event_type,
            payload,
        });
    }
    if p != buf.len() {
        return Err(bad());
    }
    Ok(out)
}
