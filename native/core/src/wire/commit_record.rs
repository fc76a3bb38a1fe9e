//! A commit record: what one applied transaction did, as a primary publishes it to
//! its commit stream and a read replica applies it (`crate::commit::replicate`).
//! Unlike the other `wire` formats it leaves the process (it is stored in the
//! stream and read by other builds), so it starts with a format byte:
//!
//! ```text
//! [format u8 = 1]
//! [database_id_len u8][database_id: UTF-8]
//! [commit_seq u64][at_ms u64][first_event_id u64]   first_event_id 0: no events
//! [n_collections u16] { [name_len u16][name][def_len u32][def] }
//! [batch: the rest, the transaction batch as crate::txn parses it]
//! ```
//!
//! The collections are the vector collections the batch writes to, each with its
//! stored definition (`crate::vector::collection`'s record), so a replica creates a
//! collection before its first documents arrive.
//!
//! Numbers are little-endian. The batch is the transaction exactly as the primary
//! applied it: its state writes (each put's version is `commit_seq`), its events
//! (ids `first_event_id..`, stamped `at_ms`), its vector writes and its idempotency
//! key. Its reads were validated on the primary and are ignored by a replica.

use crate::error::{Error, Result};

/// The format byte this build writes and reads.
pub const FORMAT: u8 = 1;

/// Bytes before the database id.
const HEAD: usize = 2;

/// A decoded commit record; `batch` borrows the encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord<'a> {
    /// The id of the database that applied the commit.
    pub database_id: &'a str,
    /// Its commit seq on that database.
    pub commit_seq: u64,
    /// When it was applied (the primary's clock, ms since the epoch).
    pub at_ms: u64,
    /// The id of its first event; 0 when it logged none.
    pub first_event_id: u64,
    /// `(name, stored definition)` of each vector collection the batch writes to.
    pub collections: Vec<(&'a [u8], &'a [u8])>,
    /// The transaction batch (`crate::txn` format).
    pub batch: &'a [u8],
}

/// Encodes a record.
pub fn encode(
    database_id: &str,
    commit_seq: u64,
    at_ms: u64,
    first_event_id: u64,
    collections: &[(&[u8], &[u8])],
    batch: &[u8],
) -> Vec<u8> {
    let id = database_id.as_bytes();
    debug_assert!(id.len() <= u8::MAX as usize);
    debug_assert!(collections.len() <= u16::MAX as usize);
    let mut out = Vec::with_capacity(HEAD + id.len() + 26 + batch.len());
    out.push(FORMAT);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(&commit_seq.to_le_bytes());
    out.extend_from_slice(&at_ms.to_le_bytes());
    out.extend_from_slice(&first_event_id.to_le_bytes());
    out.extend_from_slice(&(collections.len() as u16).to_le_bytes());
    for (name, def) in collections {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(def.len() as u32).to_le_bytes());
        out.extend_from_slice(def);
    }
    out.extend_from_slice(batch);
    out
}

/// Decodes a record, checking its format byte and lengths (not the batch: the
/// caller parses it).
pub fn decode(bytes: &[u8]) -> Result<CommitRecord<'_>> {
    let bad = |what: &str| {
        Error::invalid(format!(
            "not an athanor commit record ({what}); is the replica reading the right stream?"
        ))
    };
    if bytes.len() < HEAD {
        return Err(bad("too short"));
    }
    if bytes[0] != FORMAT {
        return Err(Error::new(
            crate::error::Code::Version,
            format!(
                "commit record format {} is not supported (this build reads {FORMAT}); upgrade athanor on the replica",
                bytes[0]
            ),
        ));
    }
    let id_len = bytes[1] as usize;
    let nums = HEAD + id_len;
    if bytes.len() < nums + 26 {
        return Err(bad("truncated"));
    }
    let database_id =
        std::str::from_utf8(&bytes[HEAD..nums]).map_err(|_| bad("database id is not UTF-8"))?;
    let u = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let mut at = nums + 24;
    let mut take = |n: usize| -> Result<&[u8]> {
        let s = bytes.get(at..at + n).ok_or_else(|| bad("truncated"))?;
        at += n;
        Ok(s)
    };
    let n = u16::from_le_bytes(take(2)?.try_into().unwrap());
    let mut collections = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let name_len = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
        let name = take(name_len)?;
        let def_len = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
        collections.push((name, take(def_len)?));
    }
    Ok(CommitRecord {
        database_id,
        commit_seq: u(nums),
        at_ms: u(nums + 8),
        first_event_id: u(nums + 16),
        collections,
        batch: &bytes[at..],
    })
}
