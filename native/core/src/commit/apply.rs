//! One transaction applied inside the group's LMDB write transaction: its
//! idempotency key, its read validation, its state writes, events and type index,
//! the write hooks' share, and its idempotency record; and the pruning of
//! idempotency records past the window.

use std::collections::HashMap;

use heed::RwTxn;

use super::outcome::{CommitInfo, Outcome};
use crate::codec;
use crate::error::{Code, Error, Result};
use crate::store::{self, GroupWrites, IdemRecord, Space, Store};
use crate::txn::{Expected, TxBatch, WriteOp};

/// Idempotency records pruned per group at most, so pruning never stalls commits.
const PRUNE_PER_GROUP: usize = 1000;

/// The group's chain writers, one per namespace that logged events, begun by its first
/// transaction with events (or the reason the namespace's chain refuses them).
pub(super) type ChainSlots<'s> = Vec<(u32, Result<store::ChainWriter<'s>>)>;

/// The group's trail counts (see [`WriteOp::TrailCount`]): merged by value when `merge`,
/// each written at once otherwise. Only transactions that apply reach here (their own
/// failures come before the first write), and a group that fails is applied again with
/// fresh counts, so a record counts exactly the committed decisions.
pub(super) struct TrailCounts {
    merge: bool,
    by_value: HashMap<Vec<u8>, usize>,
    counts: Vec<TrailTally>,
}

/// One merged trail count: its first key, its encoded value, the first and latest
/// times, how many, and the commit seq of the last transaction it counts.
struct TrailTally {
    key: Vec<u8>,
    value: Vec<u8>,
    first_at: u64,
    last_at: u64,
    n: u64,
    seq: u64,
}

impl TrailCounts {
    /// Counts that merge (`merge`) or are written one by one.
    pub(super) fn new(merge: bool) -> Self {
        TrailCounts {
            merge,
            by_value: HashMap::new(),
            counts: Vec::new(),
        }
    }

    /// Counts one trail count of a transaction applied as commit `seq`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        dbs: &store::Dbs,
        wtxn: &mut RwTxn,
        key: &[u8],
        at_ms: u64,
        value: &[u8],
        seq: u64,
        scratch: &mut Vec<u8>,
    ) -> heed::Result<()> {
        if !self.merge {
            return write_tally(dbs, wtxn, key, value, 1, 0, seq, scratch);
        }
        match self.by_value.get(value) {
            Some(&i) => {
                let t = &mut self.counts[i];
                t.n += 1;
                t.last_at = t.last_at.max(at_ms);
                t.seq = seq;
            }
            None => {
                self.by_value.insert(value.to_vec(), self.counts.len());
                self.counts.push(TrailTally {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    first_at: at_ms,
                    last_at: at_ms,
                    n: 1,
                    seq,
                });
            }
        }
        Ok(())
    }

    /// Writes the merged counts (before the group commits).
    pub(super) fn write(
        self,
        dbs: &store::Dbs,
        wtxn: &mut RwTxn,
        scratch: &mut Vec<u8>,
    ) -> heed::Result<()> {
        for t in &self.counts {
            let span = t.last_at.saturating_sub(t.first_at);
            write_tally(dbs, wtxn, &t.key, &t.value, t.n, span, t.seq, scratch)?;
        }
        Ok(())
    }
}

/// Writes a trail count's record: `value` (a `bytes` value), then `n` and `span` as LEB128.
#[allow(clippy::too_many_arguments)]
fn write_tally(
    dbs: &store::Dbs,
    wtxn: &mut RwTxn,
    key: &[u8],
    value: &[u8],
    n: u64,
    span: u64,
    seq: u64,
    scratch: &mut Vec<u8>,
) -> heed::Result<()> {
    scratch.clear();
    scratch.extend_from_slice(&seq.to_be_bytes());
    scratch.extend_from_slice(value);
    leb128(scratch, n);
    leb128(scratch, span);
    // Audit keys sort before the application's (NUL first): never the last key, so no append attempt.
    dbs.state.put(wtxn, key, scratch)
}

/// Appends `v` as an unsigned LEB128 varint (7 bits a byte, low first).
fn leb128(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

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
/// `chains` are the group's chain writers, `trail_counts` its trail counts. The transaction reads and writes the
/// namespace `b.namespace` names; `last_id` is that namespace's newest event id.
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
    chains: &mut ChainSlots<'s>,
    trail_counts: &mut TrailCounts,
) -> std::result::Result<Result<CommitInfo>, GroupError> {
    let dbs = &store.dbs;
    let sp = store.space(b.namespace);
    // A namespace dropped while the transaction was queued takes nothing more.
    if !store.namespace_exists(wtxn, b.namespace)? {
        return Ok(Err(Error::new(
            Code::NotFound,
            "this namespace was dropped: create it again with db.namespaces.create() to write to it",
        )));
    }
    // The key is checked before the reads: a retry of a transaction that has been
    // applied is a duplicate, never a conflict, whatever it read.
    if let Some(k) = &b.idempotency_key {
        if let Some(rec) = sp.idem.get(wtxn, b.bytes(k))? {
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
        let current = match sp.state.get(wtxn, b.bytes(k))? {
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
    let derived = match Derived::decide(&sp, wtxn, b)? {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    let mut chain = if b.events.is_empty() {
        None
    } else {
        // Begun once per group and namespace: the chain's meta cannot change under the
        // write transaction, and the group's last link spares each transaction a lookup.
        let at = match chains.iter().position(|(ns, _)| *ns == b.namespace) {
            Some(i) => i,
            None => {
                chains.push((b.namespace, store::ChainWriter::begin(&sp, wtxn)?));
                chains.len() - 1
            }
        };
        match &mut chains[at].1 {
            Ok(c) => Some(c),
            Err(e) => return Ok(Err(e.clone())),
        }
    };
    let my_seq = *seq + 1;
    for w in &b.writes {
        match w {
            WriteOp::Put { key, value } => {
                scratch.clear();
                scratch.extend_from_slice(&my_seq.to_be_bytes());
                scratch.extend_from_slice(b.bytes(value));
                sp.state.append(wtxn, b.bytes(key), scratch)?;
            }
            WriteOp::Delete { key } => {
                sp.state.delete(wtxn, b.bytes(key))?;
            }
            WriteOp::TrailPut { key, value } => {
                scratch.clear();
                scratch.extend_from_slice(&my_seq.to_be_bytes());
                scratch.extend_from_slice(b.bytes(value));
                // Audit keys sort before the application's (NUL first): never the last key, so no append attempt.
                dbs.state.put(wtxn, b.bytes(key), scratch)?;
            }
            WriteOp::TrailCount { key, at_ms, value } => {
                trail_counts.add(
                    dbs,
                    wtxn,
                    b.bytes(key),
                    *at_ms,
                    b.bytes(value),
                    my_seq,
                    scratch,
                )?;
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
        sp.events.append(wtxn, &id.to_be_bytes(), scratch)?;
        // A chained event's link is its type index entry's value (see store/chain.rs).
        let link = match &mut chain {
            Some(c) => c.link(&sp, wtxn, id, scratch)?,
            None => None,
        };
        sp.event_types.put(
            wtxn,
            &store::type_index_key(t, id),
            link.as_ref().map_or(&[][..], |l| &l[..]),
        )?;
    }
    derived.write(&sp, wtxn, b, my_seq, first, scratch)?;
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
        sp.idem.put(wtxn, b.bytes(k), &rec.encode())?;
        let (by_time, tk) = sp.idem_time_entry(at, b.bytes(k));
        by_time.put(wtxn, &tk, &[])?;
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
        sp: &Space,
        wtxn: &RwTxn,
        b: &TxBatch,
    ) -> std::result::Result<Result<Derived>, GroupError> {
        let stream_bases = match check_streams(sp, wtxn, b)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let numeric = match numeric_results(sp, wtxn, b)? {
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
        sp: &Space,
        wtxn: &mut RwTxn,
        b: &TxBatch,
        seq: u64,
        first_event_id: u64,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        for (key, value) in &self.numeric {
            scratch.clear();
            scratch.extend_from_slice(&seq.to_be_bytes());
            scratch.extend_from_slice(&value.encode());
            sp.state.put(wtxn, key, scratch)?;
        }
        for (a, base) in b.appends.iter().zip(&self.stream_bases) {
            let stream = b.bytes(&a.stream);
            for (i, ev) in a.events.clone().enumerate() {
                let event_id = first_event_id + ev as u64;
                let version = base + 1 + i as u64;
                sp.stream_events.put(
                    wtxn,
                    &store::stream_event_key(stream, version),
                    &event_id.to_be_bytes(),
                )?;
            }
            let head = base + a.events.len() as u64;
            sp.stream_heads.put(wtxn, stream, &head.to_be_bytes())?;
        }
        Ok(())
    }
}

/// Each append's base version (the stream's version before it), or the transaction's
/// own `ERR_WRONG_EXPECTED_VERSION` for the first append whose expectation fails.
/// Appends to one stream in one transaction see each other's events.
fn check_streams(
    sp: &Space,
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
            None => match sp.stream_heads.get(wtxn, stream)? {
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
    sp: &Space,
    wtxn: &RwTxn,
    b: &TxBatch,
) -> std::result::Result<Result<Vec<NumericResult>>, GroupError> {
    let mut out: Vec<NumericResult> = Vec::new();
    for op in &b.numeric {
        let key = b.bytes(&op.key);
        let slot = out.iter().position(|(k, _)| k == key);
        let current = match slot {
            Some(i) => Some(out[i].1.clone()),
            None => match sp.state.get(wtxn, key)? {
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
    let dbs = &store.dbs;
    // A namespaced time entry is `[at][namespace id][key]` and its record's key in
    // `ns_idempotency` is `[namespace id][key]`: both end the entry, as the default's do.
    for (by_time, records) in [
        (dbs.idem_by_time, dbs.idem),
        (dbs.ns_idem_by_time, dbs.ns_idem),
    ] {
        prune_index(by_time, records, wtxn, cutoff)?;
    }
    Ok(())
}

/// Drops up to [`PRUNE_PER_GROUP`] time entries older than `cutoff`, and the records
/// they describe (`[at u64 BE][record key]` -> record key in `records`).
fn prune_index(
    by_time: heed::Database<heed::types::Bytes, heed::types::Bytes>,
    records: heed::Database<heed::types::Bytes, heed::types::Bytes>,
    wtxn: &mut RwTxn,
    cutoff: u64,
) -> std::result::Result<(), GroupError> {
    let mut expired = Vec::new();
    for item in by_time.iter(wtxn)? {
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
        let matches = match records.get(wtxn, key)? {
            Some(rec) => IdemRecord::decode(rec)?.at_ms == at,
            None => false,
        };
        if matches {
            records.delete(wtxn, key)?;
        }
        by_time.delete(wtxn, &tk)?;
    }
    Ok(())
}
