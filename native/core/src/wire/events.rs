//! Packed events, addon → TS (`ts/internal/event-pack.ts`), little-endian:
//!
//! ```text
//! [count u32] then count × ([id u64][commit_seq u64][at_ms u64][kind u8][type_len u16][type][payload_len u32][payload])
//! ```
//!
//! `kind` is the stored event's [`crate::codec::PayloadKind`] as a byte (1: the
//! payload is JSON text, UTF-8; 2: raw bytes); `type` is UTF-8.
//! `Store::read_events` builds it with [`EventPack`].

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
