//! One transaction applied inside the group's LMDB write transaction: its
//! idempotency key, its read validation, its state writes, events and type index,
//! the write hooks' share, and its idempotency record; and the pruning of
//! idempotency records past the window.

use heed::{PutFlags, RwTxn};

use super::outcome::{CommitInfo, Outcome};
use crate::codec;
use crate::error::{Code, Error, Result};
use crate::store::{self, GroupWrites, IdemRecord, Store};
use crate::txn::{Expected, TxBatch, WriteOp};

/// Idempotency records pruned per group at most, so pruning never stalls commits.
const PRUNE_PER_GROUP: usize = 1000;

/// Why a group failed as a whole.
pub(super) enum GroupError {
    MapFull,
    /// Another process grew the map: remap, then retry.
    MapResized,
    Other(Error),
}

impl From<heed::Error> for GroupError {
    fn from(e: heed::Error) -> Self {
        match e {
            heed::Error::Mdb(heed::MdbError::MapFull) => GroupError::MapFull,
            heed::Error::Mdb(heed::MdbError::MapResized) => GroupError::MapResized,
            other => GroupError::Other(other.into()),
        }
    }
}

impl From<Error> for GroupError {
    fn from(e: Error) -> Self {
        // A MapFull raised through a crate helper (e.g. `put_meta_u64`) must grow the map too.
        if e.code == Code::MapFull {
            GroupError::MapFull
        } else {
            GroupError::Other(e)
        }
    }
}

/// Applies one transaction. Returns `Ok(Err(..))` for a failure that is the
/// transaction's own (conflict): such a transaction has written nothing yet.
/// `Err(..)` is a storage failure that aborts the whole group. The write hooks'
/// `groups` validate and write their part and keep what they need for after the commit.
/// `chain_slot` is the group's chain writer, begun by the first transaction with events.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply_one<'s>(
    store: &'s Store,
    wtxn: &mut RwTxn,
    b: &TxBatch,
    seq: &mut u64,
    last_id: &mut u64,
    at: u64,
    scratch: &mut Vec<u8>,
    groups: &mut [Box<dyn GroupWrites + '_>],
    chain_slot: &mut Option<Result<store::ChainWriter<'s>>>,
) -> std::result::Result<Result<CommitInfo>, GroupError> {
    let dbs = &store.dbs;
    // The key is checked before the reads: a retry of a transaction that has been
    // applied is a duplicate, never a conflict, whatever it read.
    if let Some(k) = &b.idempotency_key {
        if let Some(rec) = dbs.idem.get(wtxn, b.bytes(k))? {
            let rec = IdemRecord::decode(rec)?;
            // Past the window the key is forgotten even before pruning reaches it:
            // the transaction applies as new and its record replaces this one.
            if !rec.expired(at, store.options.idempotency_window_ms) {
                return Ok(Ok(CommitInfo {
                    outcome: Outcome::Duplicate,
                    commit_seq: rec.commit_seq,
                    first_event_id: rec.first_event_id,
                    event_count: rec.event_count,
                }));
            }
        }
    }
    for (k, seen) in &b.reads {
        let current = match dbs.state.get(wtxn, b.bytes(k))? {
            None => 0,
            Some(bytes) => codec::split_state_entry(bytes)?.0,
        };
        if current != *seen {
            return Ok(Err(Error::new(
                Code::Conflict,
                format!(
                    "key {:?} changed after the transaction read it (read version {seen}, now {current})",
                    String::from_utf8_lossy(b.bytes(k))
                ),
            )));
        }
    }
    if !b.is_write() {
        return Ok(Ok(CommitInfo {
            outcome: Outcome::Applied,
            commit_seq: *seq,
            first_event_id: 0,
            event_count: 0,
        }));
    }
    // Checked before the first write: e.g. a vector collection dropped since the
    // transaction was queued fails this transaction alone, with nothing written.
    for g in groups.iter_mut() {
        if let Err(e) = g.validate(dbs, wtxn, b)? {
            return Ok(Err(e));
        }
    }
    // Stream versions and numeric results are decided here, before the first write,
    // so a wrong expected version or a bound violation fails this transaction alone.
    let derived = match Derived::decide(store, wtxn, b)? {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    let mut chain = if b.events.is_empty() {
        None
    } else {
        // Begun once per group: the chain's meta cannot change under the write
        // transaction, and the group's last link spares each transaction a lookup.
        if chain_slot.is_none() {
            *chain_slot = Some(store::ChainWriter::begin(store, wtxn)?);
        }
        match chain_slot.as_mut() {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => return Ok(Err(e.clone())),
            None => None,
        }
    };
    let my_seq = *seq + 1;
    for w in &b.writes {
        match w {
            WriteOp::Put { key, value } => {
                scratch.clear();
                scratch.extend_from_slice(&my_seq.to_be_bytes());
                scratch.extend_from_slice(b.bytes(value));
                put_state(dbs.state, wtxn, b.bytes(key), scratch)?;
            }
            WriteOp::Delete { key } => {
                dbs.state.delete(wtxn, b.bytes(key))?;
            }
        }
    }
    let first = *last_id + 1;
    let mut id = *last_id;
    for e in &b.events {
        id += 1;
        scratch.clear();
        let t = b.bytes(&e.event_type);
        codec::encode_event(scratch, my_seq, at, e.kind, t, b.bytes(&e.payload));
        dbs.events
            .put_with_flags(wtxn, PutFlags::APPEND, &id.to_be_bytes(), scratch)?;
        if let Some(c) = &mut chain {
            c.append(dbs, wtxn, id, scratch)?;
        }
        dbs.event_types
            .put(wtxn, &store::type_index_key(t, id), &[])?;
    }
    derived.write(store, wtxn, b, my_seq, first, scratch)?;
    for g in groups.iter_mut() {
        g.write(dbs, wtxn, b, scratch)?;
    }
    let event_count = b.events.len() as u32;
    let first_event_id = if event_count > 0 { first } else { 0 };
    if let Some(k) = &b.idempotency_key {
        let rec = IdemRecord {
            commit_seq: my_seq,
            first_event_id,
            event_count,
            at_ms: at,
        };
        dbs.idem.put(wtxn, b.bytes(k), &rec.encode())?;
        let mut tk = at.to_be_bytes().to_vec();
        tk.extend_from_slice(b.bytes(k));
        dbs.idem_by_time.put(wtxn, &tk, &[])?;
    }
    *seq = my_seq;
    *last_id = id;
    Ok(Ok(CommitInfo {
        outcome: Outcome::Applied,
        commit_seq: my_seq,
        first_event_id,
        event_count,
    }))
}

/// What a batch's stream appends and numeric ops come to against the state they meet:
/// decided before the first write, written after its events. The writer and a read
/// replica (`replicate.rs`) both go through it, so a replica's stream index and numeric
/// keys come out as its primary's.
pub(super) struct Derived {
    stream_bases: Vec<u64>,
    numeric: Vec<NumericResult>,
}

impl Derived {
    /// The appends' base versions and the numeric ops' results, or the transaction's own
    /// `ERR_WRONG_EXPECTED_VERSION` / `ERR_BOUNDS`.
    pub(super) fn decide(
        store: &Store,
        wtxn: &RwTxn,
        b: &TxBatch,
    ) -> std::result::Result<Result<Derived>, GroupError> {
        let stream_bases = match check_streams(store, wtxn, b)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let numeric = match numeric_results(store, wtxn, b)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(Derived {
            stream_bases,
            numeric,
        }))
    }

    /// Writes the numeric keys (stamped `seq`) and the stream index (the batch's events
    /// numbered from `first_event_id`).
    pub(super) fn write(
        &self,
        store: &Store,
        wtxn: &mut RwTxn,
        b: &TxBatch,
        seq: u64,
        first_event_id: u64,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        let dbs = &store.dbs;
        for (key, value) in &self.numeric {
            scratch.clear();
            scratch.extend_from_slice(&seq.to_be_bytes());
            scratch.extend_from_slice(&value.encode());
            dbs.state.put(wtxn, key, scratch)?;
        }
        for (a, base) in b.appends.iter().zip(&self.stream_bases) {
            let stream = b.bytes(&a.stream);
            for (i, ev) in a.events.clone().enumerate() {
                let event_id = first_event_id + ev as u64;
                let version = base + 1 + i as u64;
                dbs.stream_events.put(
                    wtxn,
                    &store::stream_event_key(stream, version),
                    &event_id.to_be_bytes(),
                )?;
            }
            let head = base + a.events.len() as u64;
            dbs.stream_heads.put(wtxn, stream, &head.to_be_bytes())?;
        }
        Ok(())
    }
}

/// Each append's base version (the stream's version before it), or the transaction's
/// own `ERR_WRONG_EXPECTED_VERSION` for the first append whose expectation fails.
/// Appends to one stream in one transaction see each other's events.
fn check_streams(
    store: &Store,
    wtxn: &RwTxn,
    b: &TxBatch,
) -> std::result::Result<Result<Vec<u64>>, GroupError> {
    let mut bases: Vec<u64> = Vec::with_capacity(b.appends.len());
    for (i, a) in b.appends.iter().enumerate() {
        let stream = b.bytes(&a.stream);
        let earlier = b.appends[..i]
            .iter()
            .zip(&bases)
            .rev()
            .find(|(p, _)| b.bytes(&p.stream) == stream)
            .map(|(p, base)| base + p.events.len() as u64);
        let current = match earlier {
            Some(v) => v,
            None => match store.dbs.stream_heads.get(wtxn, stream)? {
                None => 0,
                Some(v) => store::decode_version(v)?,
            },
        };
        let ok = match a.expected {
            Expected::Any => true,
            Expected::NoStream => current == 0,
            Expected::Exact(v) => current == v,
        };
        if !ok {
            let id = String::from_utf8_lossy(stream);
            return Ok(Err(Error::new(
                Code::WrongExpectedVersion,
                format!(
                    "stream {} expected version {}, found {current}: re-read the stream and decide again",
                    serde_json::to_string(&id).unwrap_or_default(),
                    a.expected
                ),
            )));
        }
        bases.push(current);
    }
    Ok(Ok(bases))
}

/// A key a transaction's numeric ops change, and its value after them.
type NumericResult = (Vec<u8>, codec::Value);

/// The final value of each key the numeric ops touch, in the order first touched,
/// or the transaction's own `ERR_BOUNDS`.
fn numeric_results(
    store: &Store,
    wtxn: &RwTxn,
    b: &TxBatch,
) -> std::result::Result<Result<Vec<NumericResult>>, GroupError> {
    let mut out: Vec<NumericResult> = Vec::new();
    for op in &b.numeric {
        let key = b.bytes(&op.key);
        let slot = out.iter().position(|(k, _)| k == key);
        let current = match slot {
            Some(i) => Some(out[i].1.clone()),
            None => match store.dbs.state.get(wtxn, key)? {
                None => None,
                Some(bytes) => Some(codec::Value::decode(codec::split_state_entry(bytes)?.1)?),
            },
        };
        let name = String::from_utf8_lossy(key);
        let next = match crate::numeric::apply(&name, current.as_ref(), &op.args) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        match slot {
            Some(i) => out[i].1 = next,
            None => out.push((key.to_vec(), next)),
        }
    }
    Ok(Ok(out))
}

pub(super) fn prune_idempotency(
    store: &Store,
    wtxn: &mut RwTxn,
    now: u64,
) -> std::result::Result<(), GroupError> {
    let cutoff = now.saturating_sub(store.options.idempotency_window_ms);
    let mut expired = Vec::new();
    for item in store.dbs.idem_by_time.iter(wtxn)? {
        let (k, _) = item?;
        if k.len() < 8
            || u64::from_be_bytes(k[..8].try_into().unwrap()) >= cutoff
            || expired.len() >= PRUNE_PER_GROUP
        {
            break;
        }
        expired.push(k.to_vec());
    }
    for tk in expired {
        let key = &tk[8..];
        let at = u64::from_be_bytes(tk[..8].try_into().unwrap());
        // Only drop the record this time-index entry describes.
        let matches = match store.dbs.idem.get(wtxn, key)? {
            Some(rec) => IdemRecord::decode(rec)?.at_ms == at,
            None => false,
        };
        if matches {
            store.dbs.idem.delete(wtxn, key)?;
        }
        store.dbs.idem_by_time.delete(wtxn, &tk)?;
    }
    Ok(())
}

/// Puts a state entry, as an append when `key` sorts after every key in `state`. On an
/// ordinary put LMDB splits a full leaf page in half, so keys written in ascending order
/// (ids, timestamps, counters) leave every leaf about half full; an append starts a new
/// page and leaves the old one full. The store, its backups and what they hash are then
/// up to a third smaller. A key that does not sort last costs one failed append (a walk
/// down the tree's right edge, no write) before the ordinary put.
pub(super) fn put_state(
    state: heed::Database<heed::types::Bytes, heed::types::Bytes>,
    wtxn: &mut RwTxn,
    key: &[u8],
    entry: &[u8],
) -> heed::Result<()> {
    match state.put_with_flags(wtxn, PutFlags::APPEND, key, entry) {
        Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => state.put(wtxn, key, entry),
        done => done,
    }
}
