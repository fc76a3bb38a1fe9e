//! The writer thread: takes queued transactions in groups, applies each group in
//! one LMDB write transaction (growing the map when full, isolating a failing
//! transaction), commits once, tells the write hooks, then reports outcomes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::apply::{apply_one, prune_idempotency, GroupError, TrailCounts};
use super::outcome::{CommitInfo, CommitNotice};
use super::queue::{Msg, Request};
use super::sink::{deliver, Shared};
use crate::error::{Code, Error, Result};
use crate::store::{self, Durability, GroupWrites, Store, META_COMMIT_SEQ, META_LAST_EVENT_ID};
use crate::txn::TxBatch;

/// Most transactions applied in one LMDB write transaction.
const MAX_GROUP_TXS: usize = 4096;
/// Most payload bytes applied in one LMDB write transaction (keeps latency bounded).
const MAX_GROUP_BYTES: usize = 64 << 20;
/// Idempotency records are pruned at most this often (milliseconds).
const PRUNE_EVERY_MS: u64 = 1000;

pub(crate) fn run_writer(store: Arc<Store>, shared: Arc<Shared>, rx: Receiver<Msg>) {
    let sync_interval = match store.options.durability {
        Durability::Batched { interval_ms } => Some(Duration::from_millis(interval_ms.max(1))),
        _ => None,
    };
    let mut unsynced_since: Option<Instant> = None;
    // By the store's clock, so a test that moves a manual clock sees pruning run.
    let mut last_prune: Option<u64> = None;
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
            let now = store.now_ms();
            // At most once a second; a clock that went backwards counts as moved.
            let prune = store.options.idempotency_window_ms > 0
                && last_prune.is_none_or(|t| now.abs_diff(t) >= PRUNE_EVERY_MS);
            if prune {
                last_prune = Some(now);
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
    // Each namespace's (id, newest event id at the start, newest event id now); the
    // default namespace's first.
    let mut last_ids: Vec<(u32, u64, u64)> = vec![(0, start_last_id, start_last_id)];
    let at = store.now_ms();
    let mut scratch = Vec::new();
    let mut results = Vec::with_capacity(batches.len());
    let hooks = store.write_hooks();
    let mut groups: Vec<Box<dyn GroupWrites + '_>> = hooks.iter().map(|h| h.group()).collect();
    let log_as = store::commit_log_id(dbs, &wtxn)?;
    let mut chains = Vec::new();
    // A database that publishes its commits writes each trail count as its replicas will.
    let mut trail_counts = TrailCounts::new(log_as.is_none());
    for b in batches {
        if log_as.is_some() && b.namespace != 0 {
            results.push(Err(Error::invalid(
                "this database publishes its commits for replication, which namespaces do not take part in yet: write to namespaces on a database without replication",
            )));
            continue;
        }
        let slot = match last_ids.iter().position(|(ns, _, _)| *ns == b.namespace) {
            Some(i) => i,
            None => {
                let last = store.space(b.namespace).last_event_id(&wtxn)?;
                last_ids.push((b.namespace, last, last));
                last_ids.len() - 1
            }
        };
        let before = seq;
        let result = apply_one(
            store,
            &mut wtxn,
            b,
            &mut seq,
            &mut last_ids[slot].2,
            at,
            &mut scratch,
            &mut groups,
            &mut chains,
            &mut trail_counts,
        )?;
        if let (Some(id), Ok(info)) = (&log_as, &result) {
            if seq != before {
                store::log_commit(dbs, &mut wtxn, id, seq, at, info.first_event_id, b)?;
            }
        }
        results.push(result);
    }
    trail_counts.write(dbs, &mut wtxn, &mut scratch)?;
    let applied_any = seq != start_seq;
    if applied_any {
        store::put_meta_u64(dbs, &mut wtxn, META_COMMIT_SEQ, seq)?;
        for &(ns, start, now) in &last_ids {
            if now != start {
                store.space(ns).put_last_event_id(&mut wtxn, now)?;
            }
        }
    }
    if prune {
        prune_idempotency(store, &mut wtxn, at)?;
    }
    let txn_id = wtxn.id() as u64;
    for h in hooks.iter() {
        h.commit_begin();
    }
    let commit_started = Instant::now();
    let in_flight = store.writer_commit_in_flight();
    let committed = wtxn.commit();
    // LMDB's commit flushes to disk before it returns, except with NO_SYNC.
    if committed.is_ok() && store.options.durability != Durability::None {
        store.sync_stats.record(commit_started.elapsed());
    }
    if committed.is_ok() && applied_any {
        // The commit wrote META_COMMIT_SEQ, so it advanced LMDB's transaction id: counted
        // as this writer's (see Store::commit_counts).
        store
            .writer_commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    drop(in_flight);
    if committed.is_ok() {
        // Before anything is acknowledged, so a search after a resolved commit sees it.
        for g in groups {
            g.committed(seq, txn_id);
        }
    }
    for h in hooks.iter() {
        h.commit_end();
    }
    committed?;
    Ok((
        CommitNotice {
            commit_seq: seq,
            last_event_id: last_ids[0].2,
        },
        applied_any,
        results,
    ))
}
