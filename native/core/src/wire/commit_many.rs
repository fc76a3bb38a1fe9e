//! The `commitMany` hand-over, TS → addon (`ts/internal/commit-frames.ts` writes it),
//! little-endian: one frame per token, in the order of the tokens,
//!
//! ```text
//! { [token u32][len u32][batch: len bytes, a transaction batch of crate::txn] }*
//! ```
//!
//! Its answer names the tokens that were not queued, each with its error, as a
//! completion group ([`super::completion`]) whose notice is zero: every record in it
//! has status [`super::completion::FAILED`]. The tokens queued answer later, through
//! the commit callback.
//!
//! The addon only reads frames; [`put_frame`] is the reference encoder the golden
//! file pins the TypeScript one against.

use crate::commit::{CommitNotice, Completion};

/// Bytes before a frame's batch: `[token u32][len u32]`.
pub const FRAME_HEADER_LEN: usize = 8;

/// The batch of the frame at `off` if it is whole and carries `token`, and the
/// offset of the next frame; `None` when the framing is broken.
pub fn read_frame(packed: &[u8], off: usize, token: u32) -> Option<(&[u8], usize)> {
    let header = packed.get(off..off.checked_add(FRAME_HEADER_LEN)?)?;
    if u32::from_le_bytes(header[..4].try_into().ok()?) != token {
        return None;
    }
    let len = u32::from_le_bytes(header[4..].try_into().ok()?) as usize;
    let start = off + FRAME_HEADER_LEN;
    let end = start.checked_add(len)?;
    Some((packed.get(start..end)?, end))
}

/// Appends one frame to `out`.
pub fn put_frame(out: &mut Vec<u8>, token: u32, batch: &[u8]) {
    out.extend_from_slice(&token.to_le_bytes());
    out.extend_from_slice(&(batch.len() as u32).to_le_bytes());
    out.extend_from_slice(batch);
}

/// The answer: the tokens not queued, with their errors.
pub fn pack_answer(failed: &[Completion]) -> Vec<u8> {
    super::completion::pack_group(CommitNotice::default(), failed)
}
