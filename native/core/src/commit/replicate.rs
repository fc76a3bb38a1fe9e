//! Applying commits replicated from a primary (a read replica): each record's
//! writes exactly as the primary applied them (its commit seq as the state
//! versions, its time and event ids), several records in one LMDB write
//! transaction together with the replica's stream position, so a replica stopped
//! at any moment resumes where its store says, with no commit applied twice or
//! skipped. The write hooks (vector indexes) take their share as for a local commit.

use heed::PutFlags;

use super::apply::{Derived, GroupError, TrailCounts};
use super::outcome::CommitNotice;
use super::sink::{deliver, Shared};
use crate::codec;
use crate::error::{Code, Error, Result};
use crate::store::{self, GroupWrites, IdemRecord, Store, META_COMMIT_SEQ, META_LAST_EVENT_ID};
use crate::txn::{TxBatch, WriteOp};
use crate::wire::commit_record;

/// What [`crate::Engine::apply_replicated`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaApplied {
    /// Records applied now.
    pub applied: u32,
    /// Records the replica had applied before (a redelivery), skipped.
    pub skipped: u32,
    /// The replica's commit seq afterwards.
    pub commit_seq: u64,
}

/// Applies `records` (encoded [`commit_record`]s, in stream order) in one LMDB
/// write transaction and records `stream_seq` (the stream position of the last
/// one) with them. A record at or below the replica's commit seq is skipped; one
/// past the next is refused (`ERR_NOT_FOUND`: commits are missing from the
/// stream), as is a record of another database; then nothing is written.
pub(crate) fn apply_replicated(
    store: &Store,
    shared: &Shared,
    records: &[Vec<u8>],
    stream_seq: u64,
) -> Result<ReplicaApplied> {
    // Parsed up front: a malformed record fails before any write transaction.
    let mut parsed = Vec::with_capacity(records.len());
    for r in records {
        let rec = commit_record::decode(r)?;
        let batch = TxBatch::parse(rec.batch.to_vec())?;
        parsed.push((rec, batch));
    }
    let mut result = Err(Error::new(Code::MapFull, "the LMDB map could not grow enough for a replicated commit; free disk space or raise mapSize"));
    for _ in 0..32 {
        match try_apply(store, &parsed, stream_seq) {
            Ok(r) => {
                result = Ok(r);
                break;
            }
            Err(GroupError::MapFull) => {
                store.grow_map(records.iter().map(|r| r.len() * 2).sum())?;
            }
            Err(GroupError::MapResized) => store.adopt_map_size()?,
            Err(GroupError::Other(e)) => return Err(e),
        }
    }
    let (done, notice) = result?;
    if done.applied > 0 {
        store.announcer.announce(notice.commit_seq);
        deliver(shared, Vec::new(), Vec::new(), notice, true);
    }
    Ok(done)
}

type Parsed<'a> = (commit_record::CommitRecord<'a>, TxBatch);

fn try_apply(
    store: &Store,
    parsed: &[Parsed<'_>],
    stream_seq: u64,
) -> std::result::Result<(ReplicaApplied, CommitNotice), GroupError> {
    let _shared = store.map_guard.read();
    let dbs = &store.dbs;
    let mut wtxn = store.env.write_txn()?;
    let origin = store::replica_of(dbs, &wtxn)?.ok_or_else(|| {
        Error::internal("replicated commits applied to a store that is not a replica")
    })?;
    let start_seq = store::read_meta_u64(dbs, &wtxn, META_COMMIT_SEQ)?;
    let mut seq = start_seq;
    let mut last_id = store::read_meta_u64(dbs, &wtxn, META_LAST_EVENT_ID)?;
    let hooks = store.write_hooks();
    let mut groups: Vec<Box<dyn GroupWrites + '_>> = hooks.iter().map(|h| h.group()).collect();
    let mut done = ReplicaApplied::default();
    let mut scratch = Vec::new();
    for (rec, b) in parsed {
        if rec.database_id != origin {
            return Err(GroupError::Other(Error::invalid(format!(
                "the stream carries commits of database {}, but this replica follows {origin}; use a stream (or subject) of its primary alone",
                rec.database_id
            ))));
        }
        if rec.commit_seq <= seq {
            done.skipped += 1;
            continue;
        }
        if rec.commit_seq != seq + 1 {
            return Err(GroupError::Other(Error::new(
                Code::NotFound,
                format!(
                    "the replica is at commit {seq} but the stream's next commit is {}: commits {}..{} are not in the stream (published before it, or removed by its retention); start the replica from a backup of the primary taken after commit {}",
                    rec.commit_seq,
                    seq + 1,
                    rec.commit_seq - 1,
                    rec.commit_seq - 1
                ),
            )));
        }
        if !b.events.is_empty() && rec.first_event_id != last_id + 1 {
            return Err(GroupError::Other(Error::corrupt(format!(
                "commit {} logged events from id {}, but the replica's last event id is {last_id}; the replica does not match its primary: rebuild it",
                rec.commit_seq, rec.first_event_id
            ))));
        }
        for g in groups.iter_mut() {
            g.validate(dbs, &wtxn, b)??;
        }
        // The primary decided these against the same state: a different answer here
        // means the replica has drifted from it.
        let derived = Derived::decide(&store.space(0), &wtxn, b)?.map_err(|e| {
            Error::corrupt(format!(
                "commit {} does not apply on this replica as it did on its primary ({}); the replica does not match its primary: rebuild it",
                rec.commit_seq, e.message
            ))
        })?;
        let first_event_id = last_id + 1;
        for w in &b.writes {
            match w {
                // A replica holds the default namespace only: a trail put is a put there.
                WriteOp::Put { key, value } | WriteOp::TrailPut { key, value } => {
                    scratch.clear();
                    scratch.extend_from_slice(&rec.commit_seq.to_be_bytes());
                    scratch.extend_from_slice(b.bytes(value));
                    store
                        .space(0)
                        .state
                        .append(&mut wtxn, b.bytes(key), &scratch)?;
                }
                WriteOp::Delete { key } => {
                    dbs.state.delete(&mut wtxn, b.bytes(key))?;
                }
                // The primary, which publishes, wrote it alone: so does the replica.
                WriteOp::TrailCount { key, at_ms, value } => {
                    TrailCounts::new(false).add(
                        dbs,
                        &mut wtxn,
                        b.bytes(key),
                        *at_ms,
                        b.bytes(value),
                        rec.commit_seq,
                        &mut scratch,
                    )?;
                }
            }
        }
        for e in &b.events {
            last_id += 1;
            scratch.clear();
            let t = b.bytes(&e.event_type);
            codec::encode_event(
                &mut scratch,
                rec.commit_seq,
                rec.at_ms,
                e.kind,
                t,
                b.bytes(&e.payload),
            );
            dbs.events.put_with_flags(
                &mut wtxn,
                PutFlags::APPEND,
                &last_id.to_be_bytes(),
                &scratch,
            )?;
            dbs.event_types
                .put(&mut wtxn, &store::type_index_key(t, last_id), &[])?;
        }
        derived.write(
            &store.space(0),
            &mut wtxn,
            b,
            rec.commit_seq,
            first_event_id,
            &mut scratch,
        )?;
        for g in groups.iter_mut() {
            g.write(dbs, &mut wtxn, b, &mut scratch)?;
        }
        if let Some(k) = &b.idempotency_key {
            // Kept as the primary keeps it, so a lookup on the replica answers alike.
            let idem = IdemRecord {
                commit_seq: rec.commit_seq,
                first_event_id: if b.events.is_empty() {
                    0
                } else {
                    rec.first_event_id
                },
                event_count: b.events.len() as u32,
                at_ms: rec.at_ms,
            };
            dbs.idem.put(&mut wtxn, b.bytes(k), &idem.encode())?;
            let mut tk = rec.at_ms.to_be_bytes().to_vec();
            tk.extend_from_slice(b.bytes(k));
            dbs.idem_by_time.put(&mut wtxn, &tk, &[])?;
        }
        seq = rec.commit_seq;
        done.applied += 1;
    }
    if seq != start_seq {
        store::put_meta_u64(dbs, &mut wtxn, META_COMMIT_SEQ, seq)?;
        store::put_meta_u64(dbs, &mut wtxn, META_LAST_EVENT_ID, last_id)?;
    }
    store::put_replica_position(dbs, &mut wtxn, stream_seq)?;
    let txn_id = wtxn.id() as u64;
    for h in hooks.iter() {
        h.commit_begin();
    }
    let committed = wtxn.commit();
    if committed.is_ok() {
        for g in groups {
            g.committed(seq, txn_id);
        }
    }
    for h in hooks.iter() {
        h.commit_end();
    }
    committed?;
    done.commit_seq = seq;
    Ok((
        done,
        CommitNotice {
            commit_seq: seq,
            last_event_id: last_id,
        },
    ))
}
