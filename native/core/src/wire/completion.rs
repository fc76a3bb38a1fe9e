//! Commit completions, addon → TS (`ts/internal/completion.ts`), little-endian.
//!
//! A *record* is one transaction's outcome (and, alone, `commitSync`'s answer):
//!
//! ```text
//! [status u8][commit_seq u64][first_event_id u64][event_count u32][code_len u16][code][msg_len u32][msg]
//! [sqlite_code i32][cause_count u16] then cause_count × ([cause_len u32][cause])
//! ```
//!
//! `status` is [`APPLIED`], [`DUPLICATE`] or [`FAILED`]. A success carries the
//! commit's numbers, an empty code and message, a zero SQLite code and no cause
//! (`first_event_id` is 0 when it logged no event); a failure carries zeros and the
//! error's code (`ERR_*`, UTF-8), message (UTF-8), SQLite extended result code (0
//! when SQLite did not raise it: SQLite never fails with 0) and the texts of its
//! causes, outermost first (UTF-8; [`crate::Error::causes`]).
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
    // A success's record is 33 bytes; with its token, 41.
    let mut out = Vec::with_capacity(GROUP_HEADER_LEN + completions.len() * 44);
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
    let mut out = Vec::with_capacity(40);
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
            out.extend_from_slice(&0i32.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
        }
        Err(e) => {
            out.push(FAILED);
            out.extend_from_slice(&[0u8; 20]);
            let code = e.code.as_str().as_bytes();
            out.extend_from_slice(&(code.len() as u16).to_le_bytes());
            out.extend_from_slice(code);
            out.extend_from_slice(&(e.message.len() as u32).to_le_bytes());
            out.extend_from_slice(e.message.as_bytes());
            out.extend_from_slice(&e.sqlite_code.unwrap_or(0).to_le_bytes());
            let causes = e.causes();
            let kept = causes.len().min(u16::MAX as usize);
            out.extend_from_slice(&(kept as u16).to_le_bytes());
            for cause in &causes[..kept] {
                out.extend_from_slice(&(cause.len() as u32).to_le_bytes());
                out.extend_from_slice(cause.as_bytes());
            }
        }
    }
}
