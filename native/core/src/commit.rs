//! The single writer: group commit.
//!
//! One thread owns all writes. It takes every transaction queued since its last
//! commit, applies them in order inside one LMDB write transaction (validating
//! each one's reads against the current state, so the result is serializable),
//! commits once (one fsync under `Durability::Full`), and only then reports each
//! transaction's outcome. A transaction that fails validation or is a duplicate
//! writes nothing; the others in its group are unaffected.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use heed::{PutFlags, RwTxn};
use parking_lot::RwLock;

use crate::codec;
use crate::error::{Code, Error, Result};
use crate::store::{
    self, now_ms, Durability, IdemRecord, Store, META_COMMIT_SEQ, META_LAST_EVENT_ID,
};
use crate::txn::{TxBatch, WriteOp};
use crate::vector;

/// Most transactions applied in one LMDB write transaction.
const MAX_GROUP_TXS: usize = 4096;
/// Most payload bytes applied in one LMDB write transaction (keeps latency bounded).
const MAX_GROUP_BYTES: usize = 64 << 20;
/// Idempotency records pruned per group at most, so pruning never stalls commits.
const PRUNE_PER_GROUP: usize = 1000;

/// Whether a transaction was applied now or had been applied before (same idempotency key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
}

/// What a successful commit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    pub outcome: Outcome,
    /// The commit sequence number of the transaction (for a duplicate: of the original).
    pub commit_seq: u64,
    /// Id of its first event; 0 when it logged none.
    pub first_event_id: u64,
    pub event_count: u32,
}

/// The outcome of one queued transaction, routed back to the sink that queued it.
#[derive(Debug, Clone)]
pub struct Completion {
    pub token: u64,
    pub result: Result<CommitInfo>,
}

/// Published after every group that applied something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitNotice {
    pub commit_seq: u64,
    pub last_event_id: u64,
}

/// Receives outcomes and commit notices on the writer thread. Implementations must
/// not block (the bindings hand them to the JS thread through a threadsafe function).
pub trait CommitSink: Send + Sync {
    fn deliver(&self, notice: CommitNotice, completions: Vec<Completion>);
    /// Whether this sink wants notices for groups that carry none of its completions.
    fn wants_notices(&self) -> bool;
}

pub(crate) enum Reply {
    Sink { sink: u64, token: u64 },
    Channel(Sender<Result<CommitInfo>>),
}

pub(crate) struct Request {
    pub batch: TxBatch,
    pub reply: Reply,
}

pub(crate) enum Msg {
    Commit(Request),
    /// Several transactions queued together, so they land in one group.
    CommitMany(Vec<Request>),
    Sync(Sender<Result<()>>),
    Shutdown,
}

enum GroupError {
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

/// What the writer shares with the engine that owns it: the sinks commits are reported to.
pub(crate) struct Shared {
    pub(crate) sinks: RwLock<Vec<(u64, Arc<dyn CommitSink>)>>,
}

pub(crate) fn run_writer(store: Arc<Store>, shared: Arc<Shared>, rx: Receiver<Msg>) {
    let sync_interval = match store.options.durability {
        Durability::Batched { interval_ms } => Some(Duration::from_millis(interval_ms.max(1))),
        _ => None,
    };
    let mut unsynced_since: Option<Instant> = None;
    let mut last_prune = Instant::now() - Duration::from_secs(3600);
    // Whether the last group had company: then the next one is likely on its way.
    let mut busy = false;
    loop {
        let first = match (sync_interval, unsynced_since) {
            (Some(iv), Some(since)) => match rx.recv_timeout(iv.saturating_sub(since.elapsed())) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = store.sync();
                    unsynced_since = None;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            _ => match spin_recv(&rx, if busy { SPIN } else { Duration::ZERO }) {
                Some(m) => m,
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            },
        };
        let mut requests = Vec::new();
        let mut syncs = Vec::new();
        let mut shutdown = false;
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Commit(r) => {
                    bytes += r.batch.len();
                    requests.push(r);
                }
                Msg::CommitMany(rs) => {
                    bytes += rs.iter().map(|r| r.batch.len()).sum::<usize>();
                    requests.extend(rs);
                }
                Msg::Sync(s) => syncs.push(s),
                Msg::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            if requests.len() >= MAX_GROUP_TXS || bytes >= MAX_GROUP_BYTES {
                break;
            }
            next = rx.try_recv().ok();
        }
        busy = requests.len() > 1;
        if !requests.is_empty() {
            let prune = store.options.idempotency_window_ms > 0
                && last_prune.elapsed() > Duration::from_secs(1);
            if prune {
                last_prune = Instant::now();
            }
            let (notice, applied_any, results) = match catch_unwind(AssertUnwindSafe(|| {
                commit_group(&store, &requests, prune)
            })) {
                Ok(r) => r,
                Err(_) => {
                    let e = Error::new(Code::Io, "internal error in the writer (a bug: please report it); nothing was written");
                    (
                        CommitNotice::default(),
                        false,
                        requests.iter().map(|_| Err(e.clone())).collect(),
                    )
                }
            };
            if applied_any && sync_interval.is_some() && unsynced_since.is_none() {
                unsynced_since = Some(Instant::now());
            }
            if applied_any {
                store.announcer.announce(notice.commit_seq);
            }
            deliver(&shared, requests, results, notice, applied_any);
        }
        if !syncs.is_empty() || shutdown {
            let r = store.sync();
            unsynced_since = None;
            for s in syncs {
                let _ = s.send(r.clone());
            }
        }
        if shutdown {
            break;
        }
    }
    // Queue closed: make sure nothing acknowledged under a weaker mode is left unsynced.
    let _ = store.sync();
}

/// How long the writer polls for the next group after a busy one before it parks.
/// Under load the next group arrives within a fraction of a millisecond, and a
/// parked thread takes tens of microseconds to wake; an idle writer never spins.
const SPIN: Duration = Duration::from_micros(250);

fn spin_recv(rx: &Receiver<Msg>, budget: Duration) -> Option<Msg> {
    if budget.is_zero() {
        return None;
    }
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(m) => return Some(m),
            Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
            Err(crossbeam_channel::TryRecvError::Empty) => {}
        }
        if start.elapsed() >= budget {
            return None;
        }
        std::thread::yield_now();
    }
}

fn deliver(
    shared: &Shared,
    requests: Vec<Request>,
    results: Vec<Result<CommitInfo>>,
    notice: CommitNotice,
    applied_any: bool,
) {
    let mut by_sink: HashMap<u64, Vec<Completion>> = HashMap::new();
    for (req, result) in requests.into_iter().zip(results) {
        match req.reply {
            Reply::Channel(tx) => {
                let _ = tx.send(result);
            }
            Reply::Sink { sink, token } => by_sink
                .entry(sink)
                .or_default()
                .push(Completion { token, result }),
        }
    }
    let sinks = shared.sinks.read();
    for (id, sink) in sinks.iter() {
        let completions = by_sink.remove(id).unwrap_or_default();
        if !completions.is_empty() || (applied_any && sink.wants_notices()) {
            sink.deliver(notice, completions);
        }
    }
}

/// Applies a group, growing the map and retrying when it is full; if the group
/// fails for another reason, applies its transactions one by one so only the
/// culprit fails.
fn commit_group(
    store: &Store,
    requests: &[Request],
    prune: bool,
) -> (CommitNotice, bool, Vec<Result<CommitInfo>>) {
    let batches: Vec<&TxBatch> = requests.iter().map(|r| &r.batch).collect();
    match apply_with_growth(store, &batches, prune) {
        Ok(r) => r,
        Err(e) if batches.len() == 1 => (CommitNotice::default(), false, vec![Err(e)]),
        Err(_) => {
            let mut results = Vec::with_capacity(batches.len());
            let mut notice = CommitNotice::default();
            let mut applied_any = false;
            for b in batches {
                match apply_with_growth(store, &[b], false) {
                    Ok((n, a, mut r)) => {
                        if a {
                            notice = n;
                            applied_any = true;
                        }
                        results.push(r.pop().unwrap());
                    }
                    Err(e) => results.push(Err(e)),
                }
            }
            (notice, applied_any, results)
        }
    }
}

fn apply_with_growth(
    store: &Store,
    batches: &[&TxBatch],
    prune: bool,
) -> Result<(CommitNotice, bool, Vec<Result<CommitInfo>>)> {
    let needed: usize = batches.iter().map(|b| b.len() * 2).sum();
    for _ in 0..32 {
        match try_group(store, batches, prune) {
            Ok(r) => return Ok(r),
            Err(GroupError::MapFull) => {
                store.grow_map(needed)?;
            }
            Err(GroupError::MapResized) => store.adopt_map_size()?,
            Err(GroupError::Other(e)) => return Err(e),
        }
    }
    Err(Error::new(
        Code::MapFull,
        "the LMDB map could not grow enough for this commit; free disk space or raise mapSize",
    ))
}

fn try_group(
    store: &Store,
    batches: &[&TxBatch],
    prune: bool,
) -> std::result::Result<(CommitNotice, bool, Vec<Result<CommitInfo>>), GroupError> {
    let _shared = store.map_guard.read();
    let dbs = &store.dbs;
    let mut wtxn = store.env.write_txn()?;
    let start_seq = store::read_meta_u64(dbs, &wtxn, META_COMMIT_SEQ)?;
    let start_last_id = store::read_meta_u64(dbs, &wtxn, META_LAST_EVENT_ID)?;
    let mut seq = start_seq;
    let mut last_id = start_last_id;
    let at = now_ms();
    let mut scratch = Vec::new();
    let mut results = Vec::with_capacity(batches.len());
    let mut vector_changes = Vec::new();
    for b in batches {
        results.push(apply_one(
            store,
            &mut wtxn,
            b,
            &mut seq,
            &mut last_id,
            at,
            &mut scratch,
            &mut vector_changes,
        )?);
    }
    let applied_any = seq != start_seq;
    if applied_any {
        store::put_meta_u64(dbs, &mut wtxn, META_COMMIT_SEQ, seq)?;
        if last_id != start_last_id {
            store::put_meta_u64(dbs, &mut wtxn, META_LAST_EVENT_ID, last_id)?;
        }
    }
    if prune {
        prune_idempotency(store, &mut wtxn, at)?;
    }
    let txn_id = wtxn.id() as u64;
    store.vectors.commit_begin();
    let committed = wtxn.commit();
    if committed.is_ok() {
        // Before anything is acknowledged, so a search after a resolved commit sees it.
        store.vectors.committed(vector_changes, seq, txn_id);
    }
    store.vectors.commit_end();
    committed?;
    Ok((
        CommitNotice {
            commit_seq: seq,
            last_event_id: last_id,
        },
        applied_any,
        results,
    ))
}

/// Applies one transaction. Returns `Ok(Err(..))` for a failure that is the
/// transaction's own (conflict): such a transaction has written nothing yet.
/// `Err(..)` is a storage failure that aborts the whole group. Vector changes
/// are appended to `vector_changes`, for the indexes once the group commits.
#[allow(clippy::too_many_arguments)]
fn apply_one(
    store: &Store,
    wtxn: &mut RwTxn,
    b: &TxBatch,
    seq: &mut u64,
    last_id: &mut u64,
    at: u64,
    scratch: &mut Vec<u8>,
    vector_changes: &mut Vec<(u32, vector::Change)>,
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
    // Checked before the first write: a collection dropped since the transaction
    // was queued fails this transaction alone, with nothing written.
    let vector_defs = if b.vectors.is_empty() {
        Vec::new()
    } else {
        match store.vectors.validate_in_txn(dbs, wtxn, b) {
            Ok(d) => d,
            Err(vector::VecError::Tx(e)) => return Ok(Err(e)),
            Err(vector::VecError::Storage(e)) => return Err(e.into()),
        }
    };
    let my_seq = *seq + 1;
    for w in &b.writes {
        match w {
            WriteOp::Put { key, value } => {
                scratch.clear();
                scratch.extend_from_slice(&my_seq.to_be_bytes());
                scratch.extend_from_slice(b.bytes(value));
                dbs.state.put(wtxn, b.bytes(key), scratch)?;
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
        dbs.event_types
            .put(wtxn, &store::type_index_key(t, id), &[])?;
    }
    if !b.vectors.is_empty() {
        store
            .vectors
            .write_ops(dbs, wtxn, b, &vector_defs, scratch, vector_changes)?;
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

fn prune_idempotency(
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
