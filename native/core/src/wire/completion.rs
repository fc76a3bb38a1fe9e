//! Commit completions, addon → TS (`ts/internal/completion.ts`), little-endian.
//!
//! A *record* is one transaction's outcome (and, alone, `commitSync`'s answer):
//!
//! ```text
//! [status u8][commit_seq u64][first_event_id u64][event_count u32][code_len u16][code][msg_len u32][msg]
//! ```
//!
//! `status` is [`APPLIED`], [`DUPLICATE`] or [`FAILED`]. A success carries the
//! commit's numbers and an empty code and message (`first_event_id` is 0 when it
//! logged no event); a failure carries zeros and the error's code (`ERR_*`, UTF-8)
//! and message (UTF-8).
//!
//! A *group* is what a commit sink hands to the JS thread after each group commit:
//!
//! ```text
//! [commit_seq u64][last_event_id u64][n u32] then n × ([token u64][record])
//! ```
//!
//! The header is the group's notice; every completion is its token and its record.

use crate::commit::{CommitInfo, CommitNotice, Completion, Outcome};
use crate::error::Result;

/// The transaction was applied by this commit.
pub const APPLIED: u8 = 0;
/// Its idempotency key had been applied before; nothing was written.
pub const DUPLICATE: u8 = 1;
/// It failed and wrote nothing; the record carries the error.
pub const FAILED: u8 = 2;

/// Bytes of a group's header: `[commit_seq u64][last_event_id u64][n u32]`.
pub const GROUP_HEADER_LEN: usize = 20;

/// Packs a group: the notice, then each completion's token and record.
pub fn pack_group(notice: CommitNotice, completions: &[Completion]) -> Vec<u8> {
    // A success's record is 27 bytes; with its token, 35.
    let mut out = Vec::with_capacity(GROUP_HEADER_LEN + completions.len() * 40);
    out.extend_from_slice(&notice.commit_seq.to_le_bytes());
    out.extend_from_slice(&notice.last_event_id.to_le_bytes());
    out.extend_from_slice(&(completions.len() as u32).to_le_bytes());
    for c in completions {
        out.extend_from_slice(&c.token.to_le_bytes());
        put_record(&mut out, &c.result);
    }
    out
}

/// One record alone (`commitSync`'s answer).
pub fn pack_record(r: &Result<CommitInfo>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    put_record(&mut out, r);
    out
}

/// Appends one transaction's record to `out`.
pub fn put_record(out: &mut Vec<u8>, r: &Result<CommitInfo>) {
    match r {
        Ok(info) => {
            out.push(match info.outcome {
                Outcome::Applied => APPLIED,
                Outcome::Duplicate => DUPLICATE,
            });
            out.extend_from_slice(&info.commit_seq.to_le_bytes());
            out.extend_from_slice(&info.first_event_id.to_le_bytes());
            out.extend_from_slice(&info.event_count.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        Err(e) => {
            out.push(FAILED);
            out.extend_from_slice(&[0u8; 20]);
            let code = e.code.as_str().as_bytes();
            out.extend_from_slice(&(code.len() as u16).to_le_bytes());
            out.extend_from_slice(code);
            out.extend_from_slice(&(e.message.len() as u32).to_le_bytes());
            out.extend_from_slice(e.message.as_bytes());
        }
    }
}
