//! One collection's in-memory state: the HNSW graph derived from the stored
//! documents, the live id map, tombstones, and the pending list of committed
//! documents the indexer has not put in the graph yet.
//!
//! The graph is two parts: the base, a built graph frozen into its compact form
//! (see `frozen`), and the delta, an hnsw_rs graph of what was inserted since.
//! A first build freezes as soon as the indexer is idle; once the delta reaches
//! `DELTA_MERGE_RATIO` of the base, a rebuild merges both into a new base. A
//! collection so holds one copy of each vector and compact links, and a walk
//! covers both parts.
//!
//! The writer records each committed change here before it acknowledges the
//! commit; the indexer thread moves pending documents into the graph. A search
//! is the graph's answer plus an exact scan of pending, minus tombstones, so it
//! sees every acknowledged commit and never returns a deleted document.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use rayon::prelude::*;
use serde_json::Value as Json;

use super::collection::{CollectionDef, Metric};
use super::distance::{normalize, MetricDistance};
use super::filter::Filter;
pub(crate) use super::frozen::Frozen;
use super::graph::{for_each_point, new_graph, BuiltGraph};
use super::live::{estimate, Live, Matcher, Slot};
use super::search::{merge, Cand, TopK};
pub use super::search::{Hit, IndexStats, PlanKind, PlanReason, SearchOptions, SearchPlan};
use crate::error::{Code, Error, Result};

/// Collections with at most this many live documents are always searched exactly.
pub const EXACT_THRESHOLD: usize = 1000;
/// A rebuild starts when tombstones are at least this fraction of the graph...
const REBUILD_RATIO: f64 = 0.2;
/// ...and at least this many.
const REBUILD_MIN_TOMBSTONES: usize = 32;
/// Pending documents the indexer takes per round (parallel insert below that).
const INDEX_BATCH: usize = 65_536;
/// Below this many, a round inserts on the indexer thread alone.
const PARALLEL_MIN: usize = 256;
/// Cost of checking a filter against one document's metadata, in nanoseconds,
/// measured on x86-64 (13k documents, 384 dimensions): mostly cache misses on
/// the way to the metadata (its allocation, the map's node, the key), plus a
/// little per condition.
const FILTER_DOC_NS: f64 = 150.0;
const FILTER_CLAUSE_NS: f64 = 30.0;
/// Cost of a filter check the filter's [`MatchCache`] answers: one byte per slot,
/// usually in cache.
const FILTER_CACHED_NS: f64 = 3.0;
/// Cost of checking one condition on a metadata column: a 16-byte cell per slot.
const FILTER_COLUMN_NS: f64 = 3.0;
/// Fixed and per-component cost of one distance computation, in nanoseconds:
/// memory-bound (a vector is read from RAM at a few GB/s), not compute-bound.
const DISTANCE_BASE_NS: f64 = 10.0;
const DISTANCE_PER_DIM_NS: f64 = 0.6;
/// Per point a graph walk visits, beyond its distance: the visited mark and the heaps.
const VISIT_NS: f64 = 50.0;
/// Before any walk was measured: distance computations of an unfiltered walk per
/// unit of `ef`, per link of a level-0 node (`2 * m`). Walks refine it as they run.
const PRIOR_VISITS_PER_EF_LINK: f64 = 0.6;
/// A background dump is written once the changes since the last one reach the
/// number of points that dump held (and at least [`DUMP_MIN_CHANGES`]): a growing
/// graph is then dumped at sizes that at least double, so the bytes written by
/// background dumps stay under twice the final graph's, however the load is
/// chunked, and a crash costs re-indexing at most what changed since the last dump.
const DUMP_MIN_CHANGES: u64 = 256;
/// The delta is merged into the base (by a rebuild) once it holds this fraction
/// of the base's points: a collection grown by small commits rebuilds at sizes
/// that grow geometrically (about 3x the insert work of one build in all), and a
/// walk never spends more than a third of its time in the slower delta.
const DELTA_MERGE_RATIO: f64 = 0.5;
/// Room a fresh delta graph starts with.
const DELTA_CAPACITY: usize = 1024;

/// A collection's graph: the frozen base and the hnsw_rs delta, swapped
/// together (under the live documents' write lock) so a walk sees each point
/// in exactly one of them.
#[derive(Clone)]
pub(crate) struct Graphs {
    pub base: Option<Arc<Frozen>>,
    pub delta: Arc<BuiltGraph>,
}

/// Reads documents' exact vectors (in graph space) from the store, for a
/// quantized graph: rescoring its candidates, exact scans, rebuilds.
pub(crate) trait VectorSource: Send + Sync {
    /// The vectors of `ids`, in order; `None` for one not stored (any more).
    fn vectors(&self, ids: &[&str]) -> Vec<Option<Vec<f32>>>;
}

/// A committed change to one document, as the writer hands it over.
pub struct Change {
    /// The document id.
    pub id: Arc<str>,
    /// Hash of the stored record (see [`super::docs::record_hash`]); 0 for a delete.
    pub hash: u64,
    /// The new vector (unit-normalised for cosine) and metadata; `None` deletes.
    pub upsert: Option<(Vec<f32>, Option<Json>)>,
}

/// A stored document as loaded: id, vector in graph space (empty when the dump
/// holds it), metadata, record hash.
pub(crate) type LoadedDoc = (Arc<str>, Vec<f32>, Option<Json>, u64);

/// What a dump captures.
pub(crate) struct DumpState {
    pub base: Arc<Frozen>,
    /// `(slot, id)` of every live document in the base (those of the delta are
    /// indexed again from their stored vectors when the dump is loaded).
    pub slots: Vec<(u32, Arc<str>)>,
    /// The commit seq the captured state reflects.
    pub seq: u64,
    /// Changes counted since the previous capture (handed back to [`CollectionIndex::dump_done`]).
    pub changes: u64,
    /// Points in the captured graph, live or not.
    pub points: u64,
}

/// Background loading of an index after open: how far it got, and the commits
/// that arrived meanwhile (applied, in order, once the stored documents are in).
#[derive(Default)]
struct Loading {
    active: bool,
    loaded: u64,
    total: u64,
    held: Vec<Change>,
    /// Why loading failed (a damaged stored document): searches report it.
    failed: Option<Error>,
}

/// One collection's index.
pub struct CollectionIndex {
    /// The stored definition.
    pub def: CollectionDef,
    dist: MetricDistance,
    live: RwLock<Live>,
    graphs: RwLock<Graphs>,
    idle: (Mutex<()>, Condvar),
    rebuilds: AtomicU64,
    rebuild_requested: AtomicBool,
    rebuilding: AtomicBool,
    /// Changed since it was loaded or last dumped.
    dirty: AtomicBool,
    /// Document changes recorded since the state last captured for a dump (or
    /// since load); drives background dumps.
    changes_since_dump: AtomicU64,
    dumps: AtomicU64,
    dumped_bytes: AtomicU64,
    /// Points in the graph of the last dump written or loaded (see [`DUMP_MIN_CHANGES`]).
    dumped_points: AtomicU64,
    loaded_from_dump: AtomicBool,
    /// Measured distance computations of a graph walk per unit of `ef`, as f64
    /// bits (a moving average; 0 until a walk was measured).
    visits_per_ef: AtomicU64,
    pub(crate) dropped: AtomicBool,
    /// Where exact vectors come from when the base is quantized.
    source: std::sync::OnceLock<Arc<dyn VectorSource>>,
    loading: Mutex<Loading>,
    ready: Condvar,
}

impl std::fmt::Debug for CollectionIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionIndex")
            .field("def", &self.def)
            .field("stats", &self.stats())
            .finish()
    }
}

impl CollectionIndex {
    pub(crate) fn new(def: CollectionDef) -> Self {
        let dist = MetricDistance(def.params.metric);
        let graphs = Graphs {
            base: None,
            delta: Arc::new(new_graph(&def, DELTA_CAPACITY)),
        };
        CollectionIndex {
            def,
            dist,
            live: RwLock::new(Live::default()),
            graphs: RwLock::new(graphs),
            idle: (Mutex::new(()), Condvar::new()),
            rebuilds: AtomicU64::new(0),
            rebuild_requested: AtomicBool::new(false),
            rebuilding: AtomicBool::new(false),
            dirty: AtomicBool::new(true),
            changes_since_dump: AtomicU64::new(0),
            dumps: AtomicU64::new(0),
            dumped_bytes: AtomicU64::new(0),
            dumped_points: AtomicU64::new(0),
            loaded_from_dump: AtomicBool::new(false),
            visits_per_ef: AtomicU64::new(0),
            dropped: AtomicBool::new(false),
            source: std::sync::OnceLock::new(),
            loading: Mutex::new(Loading::default()),
            ready: Condvar::new(),
        }
    }

    /// Sets where exact vectors are read from (once, before the index is shared).
    pub(crate) fn set_source(&self, source: Arc<dyn VectorSource>) {
        let _ = self.source.set(source);
    }

    /// The exact vectors of live slots `slots` (those the store still holds),
    /// as `(slot, vector)`. `live` is the caller's read lock.
    fn fetch(&self, live: &Live, slots: impl Iterator<Item = u32>) -> Vec<(u32, Vec<f32>)> {
        let Some(source) = self.source.get() else {
            return Vec::new();
        };
        let wanted: Vec<(u32, Arc<str>)> = slots
            .filter_map(|s| {
                live.slots
                    .get(s as usize)
                    .and_then(|x| x.id.clone())
                    .map(|id| (s, id))
            })
            .collect();
        let ids: Vec<&str> = wanted.iter().map(|(_, id)| &**id).collect();
        wanted
            .iter()
            .zip(source.vectors(&ids))
            .filter_map(|((s, _), v)| v.map(|v| (*s, v)))
            .collect()
    }

    /// Candidates of a quantized walk with their exact distances, nearest first
    /// (dead slots dropped). `live` is the caller's read lock.
    fn rescore(&self, live: &Live, query: &[f32], cands: &[(f32, u32)]) -> Vec<(f32, u32)> {
        let mut out: Vec<(f32, u32)> = self
            .fetch(live, cands.iter().map(|c| c.1))
            .into_iter()
            .map(|(s, v)| (self.dist.distance(query, &v), s))
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        out
    }

    /// Marks the index as loading in the background: commits recorded meanwhile
    /// are held until [`Self::finish_loading`].
    pub(crate) fn start_loading(&self) {
        self.loading.lock().active = true;
    }

    /// Reports loading progress: `loaded` of `total` stored documents read.
    pub(crate) fn loading_progress(&self, loaded: u64, total: u64) {
        let mut l = self.loading.lock();
        l.loaded = loaded;
        l.total = total;
    }

    /// Ends loading: applies the commits held meanwhile (a commit the loader
    /// already read is applied again, to the same effect) and wakes waiters.
    pub(crate) fn finish_loading(&self) {
        let mut l = self.loading.lock();
        if !l.active {
            return;
        }
        let held = std::mem::take(&mut l.held);
        if !held.is_empty() {
            self.apply_now(held);
        }
        l.active = false;
        l.loaded = l.total;
        self.ready.notify_all();
    }

    /// Ends loading with an error (the stored documents could not be read):
    /// searches and waits return it from then on.
    pub(crate) fn fail_loading(&self, e: Error) {
        self.loading.lock().failed = Some(e);
        self.finish_loading();
    }

    /// `(loaded, total)` stored documents while the index loads in the background.
    pub fn loading(&self) -> Option<(u64, u64)> {
        let l = self.loading.lock();
        l.active.then_some((l.loaded, l.total))
    }

    /// Returns once the index has loaded (at once when it has); with `wait`
    /// false, fails with `ERR_NOT_READY` instead of waiting.
    pub fn ready(&self, wait: bool) -> Result<()> {
        let mut l = self.loading.lock();
        while l.active {
            if !wait {
                return Err(Error::new(
                    Code::NotReady,
                    format!(
                        "vector collection {:?} is still loading ({} of {} documents); search again once stats().state is 'ready', or without {{ wait: false }} to wait for it",
                        self.def.name, l.loaded, l.total
                    ),
                ));
            }
            if self.dropped.load(AtomicOrdering::Acquire) {
                break;
            }
            self.ready.wait_for(&mut l, Duration::from_millis(50));
        }
        match &l.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Records committed changes (called by the writer after the LMDB commit,
    /// before acknowledging); held while the index loads.
    pub(crate) fn apply(&self, changes: Vec<Change>) {
        {
            let mut l = self.loading.lock();
            if l.active {
                l.held.extend(changes);
                return;
            }
        }
        self.apply_now(changes);
    }

    /// Records committed changes in the live documents and pending list.
    pub(crate) fn apply_now(&self, changes: Vec<Change>) {
        self.dirty.store(true, AtomicOrdering::Release);
        let mut live = self.live.write();
        // Counted under the lock, so a dump capturing the state resets exactly what it holds.
        self.changes_since_dump
            .fetch_add(changes.len() as u64, AtomicOrdering::Relaxed);
        for c in changes {
            if let Some(old) = live.ids.remove(&c.id) {
                live.kill(old);
            }
            if let Some((v, meta)) = c.upsert {
                let slot = live.push_slot(Slot {
                    id: Some(c.id.clone()),
                    meta: meta.map(Arc::new),
                    in_graph: false,
                    hash: c.hash,
                });
                live.ids.insert(c.id, slot);
                live.pending.push_back((slot, v.into()));
            }
        }
    }

    /// What a dump needs, if the index is worth dumping now (changed since the
    /// last dump, everything indexed): the graph and the live documents' slots.
    /// `seq` is read under the same lock, so it never runs ahead of the captured state.
    pub(crate) fn dump_state(&self, seq: impl FnOnce() -> u64) -> Option<DumpState> {
        if !self.dirty.load(AtomicOrdering::Acquire) || self.loading().is_some() {
            return None;
        }
        let live = self.live.read();
        if !live.pending.is_empty() {
            return None;
        }
        let base = self.graphs.read().base.clone()?;
        let slots = base
            .slots()
            .iter()
            .filter_map(|&s| live.slots[s as usize].id.clone().map(|id| (s, id)))
            .collect();
        let seq = seq();
        self.dirty.store(false, AtomicOrdering::Release);
        let changes = self.changes_since_dump.swap(0, AtomicOrdering::Relaxed);
        Some(DumpState {
            points: base.points as u64,
            base,
            slots,
            seq,
            changes,
        })
    }

    /// Records the outcome of writing a dump captured by [`Self::dump_state`]
    /// (`bytes` it wrote when it succeeded): a failed one leaves the index dirty
    /// with its changes counted again, so a later attempt (or close) retries.
    pub(crate) fn dump_done(&self, state: &DumpState, bytes: Option<u64>) {
        if let Some(bytes) = bytes {
            self.dumps.fetch_add(1, AtomicOrdering::Relaxed);
            self.dumped_bytes.fetch_add(bytes, AtomicOrdering::Relaxed);
            self.dumped_points
                .store(state.points, AtomicOrdering::Relaxed);
        } else {
            self.changes_since_dump
                .fetch_add(state.changes, AtomicOrdering::Relaxed);
            self.dirty.store(true, AtomicOrdering::Release);
        }
    }

    /// Whether a background dump is worth writing now: the indexer has nothing
    /// left to do here (so the graph holds every recorded document and no rebuild
    /// is about to replace it) and enough changed since the last dump.
    pub(crate) fn dump_due(&self) -> bool {
        if self.dropped.load(AtomicOrdering::Acquire)
            || self.loading().is_some()
            || !self.dirty.load(AtomicOrdering::Acquire)
            || self.rebuilding.load(AtomicOrdering::Acquire)
        {
            return false;
        }
        let live = self.live.read();
        if !live.pending.is_empty()
            || self.graphs.read().base.is_none()
            || self.rebuild_due(&live)
            || self.compact_due()
        {
            return false;
        }
        let threshold = self
            .dumped_points
            .load(AtomicOrdering::Relaxed)
            .max(DUMP_MIN_CHANGES);
        self.changes_since_dump.load(AtomicOrdering::Relaxed) >= threshold
    }

    /// Installs a graph loaded from a dump and reconciles it with the stored
    /// documents `docs` (`(id, vector in graph space, metadata)`): a document
    /// keeps its dumped slot when the dump is `current` or the graph holds the
    /// same vector for it; any other document goes to pending; graph points no
    /// document claims become tombstones. Returns false, installing nothing,
    /// when a document that needs indexing came without its vector.
    pub(crate) fn install_loaded(
        &self,
        base: Frozen,
        dumped: &HashMap<String, u32>,
        current: bool,
        docs: Vec<LoadedDoc>,
    ) -> bool {
        let mut claim: HashMap<u32, usize> = HashMap::with_capacity(docs.len());
        for (i, (id, _, _, _)) in docs.iter().enumerate() {
            if let Some(&s) = dumped.get(&**id) {
                claim.insert(s, i);
            }
        }
        let mut in_graph: Vec<u32> = Vec::new();
        let mut mismatched = Vec::new();
        for (node, &s) in base.slots().iter().enumerate() {
            in_graph.push(s);
            if !current {
                if let Some(&i) = claim.get(&s) {
                    if !base.holds(node, &docs[i].1) {
                        mismatched.push(s);
                    }
                }
            }
        }
        for s in mismatched {
            claim.remove(&s);
        }
        let in_graph_set: std::collections::HashSet<u32> = in_graph.iter().copied().collect();
        claim.retain(|s, _| in_graph_set.contains(s));
        let top = in_graph.iter().copied().max().map_or(0, |m| m as usize + 1);
        let mut live = Live {
            slots: (0..top)
                .map(|_| Slot {
                    id: None,
                    meta: None,
                    in_graph: false,
                    hash: 0,
                })
                .collect(),
            ..Live::default()
        };
        for s in &in_graph {
            live.slots[*s as usize].in_graph = true;
        }
        live.in_graph = in_graph.len();
        let mut slot_of_doc: Vec<Option<u32>> = vec![None; docs.len()];
        for (s, i) in &claim {
            slot_of_doc[*i] = Some(*s);
        }
        // A document left out of the graph must be indexed from its vector; the
        // caller skipped reading vectors the dump claimed to hold.
        if docs
            .iter()
            .zip(&slot_of_doc)
            .any(|((_, v, _, _), s)| s.is_none() && v.len() != self.def.params.dimension as usize)
        {
            return false;
        }
        for ((id, v, meta, hash), claimed) in docs.into_iter().zip(slot_of_doc) {
            let meta = meta.map(Arc::new);
            match claimed {
                Some(s) => {
                    let slot = &mut live.slots[s as usize];
                    slot.id = Some(id.clone());
                    slot.meta = meta;
                    slot.hash = hash;
                    live.ids.insert(id, s);
                }
                None => {
                    let s = live.push_slot(Slot {
                        id: Some(id.clone()),
                        meta,
                        in_graph: false,
                        hash,
                    });
                    live.ids.insert(id, s);
                    live.pending.push_back((s, v.into()));
                }
            }
        }
        live.tombstones = live.in_graph - claim.len();
        let changed = !live.pending.is_empty() || live.tombstones > 0;
        // What a crash would make the next open redo, so a background dump follows
        // once that is enough.
        self.changes_since_dump.store(
            (live.pending.len() + live.tombstones) as u64,
            AtomicOrdering::Relaxed,
        );
        self.loaded_from_dump.store(true, AtomicOrdering::Release);
        self.dumped_points
            .store(live.in_graph as u64, AtomicOrdering::Relaxed);
        let mut live_now = self.live.write();
        *live_now = live;
        let replaced = self.graphs.write().base.replace(Arc::new(base));
        drop(live_now);
        drop_unlocked(replaced);
        self.dirty.store(changed, AtomicOrdering::Release);
        true
    }

    /// Whether the indexer has work here (pending documents, a rebuild or a
    /// freeze or merge of the delta due).
    pub(crate) fn needs_work(&self) -> bool {
        if self.loading().is_some() {
            return false;
        }
        let live = self.live.read();
        !live.pending.is_empty() || self.rebuild_due(&live) || self.compact_due()
    }

    /// Whether the delta should be frozen (no base yet) or merged into the base.
    fn compact_due(&self) -> bool {
        let g = self.graphs.read();
        let delta = g.delta.get_nb_point();
        delta > 0
            && g.base
                .as_ref()
                .is_none_or(|b| delta as f64 >= DELTA_MERGE_RATIO * b.points as f64)
    }

    fn rebuild_due(&self, live: &Live) -> bool {
        self.rebuild_requested.load(AtomicOrdering::Acquire)
            || (live.tombstones >= REBUILD_MIN_TOMBSTONES
                && live.tombstones as f64 >= REBUILD_RATIO * live.in_graph as f64)
    }

    /// Indexer: moves up to one batch of pending documents into the delta, then
    /// (once nothing is pending) rebuilds if tombstones passed the threshold or
    /// the delta outgrew the base, or freezes the delta into the first base.
    /// Only the indexer thread calls this.
    pub(crate) fn index_round(&self) {
        let taken: Vec<(u32, Arc<[f32]>, bool)> = {
            let live = self.live.read();
            live.pending
                .iter()
                .take(INDEX_BATCH)
                .map(|(s, v)| (*s, v.clone(), live.is_live(*s)))
                .collect()
        };
        if !taken.is_empty() {
            let delta = self.graphs.read().delta.clone();
            let insert = |(s, v, ok): &(u32, Arc<[f32]>, bool)| {
                if *ok {
                    delta.insert_slice((v, *s as usize));
                }
            };
            if taken.len() >= PARALLEL_MIN {
                taken.par_iter().for_each(insert);
            } else {
                taken.iter().for_each(insert);
            }
            let mut live = self.live.write();
            for (s, _, inserted) in &taken {
                live.pending.pop_front();
                if *inserted {
                    live.in_graph += 1;
                    let slot = &mut live.slots[*s as usize];
                    slot.in_graph = true;
                    if slot.id.is_none() {
                        live.tombstones += 1;
                    }
                }
            }
        }
        let (rebuild, compact) = {
            let live = self.live.read();
            let idle = live.pending.is_empty();
            (idle && self.rebuild_due(&live), idle && self.compact_due())
        };
        let has_base = self.graphs.read().base.is_some();
        if rebuild || (compact && has_base) {
            self.rebuild_now();
        } else if compact {
            let delta = self.graphs.read().delta.clone();
            if let Some(base) = Frozen::take(
                &delta,
                self.def.params.dimension as usize,
                self.def.params.quantization,
            ) {
                let live = self.live.write();
                let replaced = std::mem::replace(
                    &mut *self.graphs.write(),
                    Graphs {
                        base: Some(Arc::new(base)),
                        delta: Arc::new(new_graph(&self.def, DELTA_CAPACITY)),
                    },
                );
                self.dirty.store(true, AtomicOrdering::Release);
                drop(live);
                drop(delta);
                drop_unlocked(replaced);
            }
        }
        let _g = self.idle.0.lock();
        self.idle.1.notify_all();
    }

    /// Asks the indexer for a rebuild (compaction of tombstones).
    pub(crate) fn request_rebuild(&self) {
        self.rebuild_requested.store(true, AtomicOrdering::Release);
    }

    /// Builds a new graph from the live documents of the base and the delta,
    /// freezes it and swaps it in as the base (with an empty delta). Searches
    /// keep using the old graphs meanwhile; commits keep landing in pending.
    fn rebuild_now(&self) {
        self.rebuilding.store(true, AtomicOrdering::Release);
        let old = self.graphs.read().clone();
        let points: Vec<(u32, Vec<f32>)> = {
            let live = self.live.read();
            let mut points = Vec::with_capacity(live.in_graph);
            let mut keep = |s: u32, v: &[f32]| {
                if live.is_live(s) {
                    points.push((s, v.to_vec()));
                }
            };
            if let Some(b) = &old.base {
                if !b.for_each_point(&mut keep) {
                    // Quantized: the exact vectors come from the store.
                    for (s, v) in self.fetch(&live, b.slots().iter().copied()) {
                        keep(s, &v);
                    }
                }
            }
            for_each_point(&old.delta, &mut keep);
            points
        };
        drop(old);
        let fresh = new_graph(&self.def, points.len());
        points
            .par_iter()
            .for_each(|(s, v)| fresh.insert_slice((v, *s as usize)));
        let slots: Vec<u32> = points.into_iter().map(|(s, _)| s).collect();
        let base = Frozen::take(
            &fresh,
            self.def.params.dimension as usize,
            self.def.params.quantization,
        )
        .map(Arc::new);
        drop(fresh);
        let mut live = self.live.write();
        let replaced = std::mem::replace(
            &mut *self.graphs.write(),
            Graphs {
                base,
                delta: Arc::new(new_graph(&self.def, DELTA_CAPACITY)),
            },
        );
        self.dirty.store(true, AtomicOrdering::Release);
        for s in live.slots.iter_mut() {
            s.in_graph = false;
        }
        let mut tombstones = 0;
        for s in &slots {
            let slot = &mut live.slots[*s as usize];
            slot.in_graph = true;
            if slot.id.is_none() {
                tombstones += 1;
            }
        }
        live.in_graph = slots.len();
        live.tombstones = tombstones;
        self.rebuilds.fetch_add(1, AtomicOrdering::Relaxed);
        // Cleared only now, so `wait_indexed` waits for the rebuild it asked for.
        self.rebuild_requested.store(false, AtomicOrdering::Release);
        self.rebuilding.store(false, AtomicOrdering::Release);
        drop(live);
        drop_unlocked(replaced);
    }

    /// Blocks until every document committed so far is in the graph, no rebuild
    /// is due or running and the delta needs no freeze or merge (or `timeout` passes, or the collection is dropped).
    /// Returns whether that state was reached.
    pub fn wait_indexed(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        {
            let mut l = self.loading.lock();
            while l.active {
                if self.dropped.load(AtomicOrdering::Acquire)
                    || self.ready.wait_until(&mut l, deadline).timed_out()
                {
                    return false;
                }
            }
        }
        loop {
            if self.dropped.load(AtomicOrdering::Acquire) {
                return false;
            }
            {
                let live = self.live.read();
                if live.pending.is_empty()
                    && !self.rebuilding.load(AtomicOrdering::Acquire)
                    && !self.rebuild_due(&live)
                    && !self.compact_due()
                {
                    return true;
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let mut g = self.idle.0.lock();
            let step = (deadline - now).min(Duration::from_millis(20));
            self.idle.1.wait_for(&mut g, step);
        }
    }

    /// Whether the collection was dropped (this handle is then unusable).
    pub fn is_dropped(&self) -> bool {
        self.dropped.load(AtomicOrdering::Acquire)
    }

    /// Counters.
    pub fn stats(&self) -> IndexStats {
        let loading = self.loading();
        let live = self.live.read();
        IndexStats {
            count: live.ids.len(),
            pending: live.pending.len(),
            tombstones: live.tombstones,
            graph_points: live.in_graph,
            rebuilds: self.rebuilds.load(AtomicOrdering::Relaxed),
            loaded_from_dump: self.loaded_from_dump.load(AtomicOrdering::Acquire),
            dumps: self.dumps.load(AtomicOrdering::Relaxed),
            dumped_bytes: self.dumped_bytes.load(AtomicOrdering::Relaxed),
            graph_bytes: self.graph_bytes() as u64,
            loading: loading.is_some(),
            loaded: loading.map_or(live.ids.len() as u64, |l| l.0),
            total: loading.map_or(live.ids.len() as u64, |l| l.1),
        }
    }

    /// Bytes the graph holds: the base exactly; the delta estimated from
    /// hnsw_rs's layout (a vector, `2 * m` neighbour records of 24 bytes at
    /// layer 0, the point's own allocations).
    fn graph_bytes(&self) -> usize {
        let g = self.graphs.read();
        let per_delta_point =
            4 * self.def.params.dimension as usize + 2 * self.def.params.m as usize * 24 + 128;
        g.base.as_ref().map_or(0, |b| b.heap_bytes()) + g.delta.get_nb_point() * per_delta_point
    }

    /// Live document count.
    pub fn count(&self) -> usize {
        let _ = self.ready(true);
        self.live.read().ids.len()
    }

    /// Whether `id` is a live document of the index.
    pub fn contains(&self, id: &str) -> bool {
        let _ = self.ready(true);
        self.live.read().ids.contains_key(id)
    }

    /// `(id, record hash)` of every live document, unordered.
    pub(crate) fn id_hashes(&self) -> HashMap<Arc<str>, u64> {
        let _ = self.ready(true);
        let live = self.live.read();
        live.ids
            .iter()
            .map(|(id, s)| (id.clone(), live.slots[*s as usize].hash))
            .collect()
    }

    /// Every live document id, unordered (for verification).
    pub fn ids(&self) -> Vec<Arc<str>> {
        let _ = self.ready(true);
        self.live.read().ids.keys().cloned().collect()
    }

    /// Validates a query and puts it in the graph's space (unit length for cosine).
    pub fn prepare_query(&self, q: &[f32]) -> Result<Vec<f32>> {
        let dim = self.def.params.dimension as usize;
        if q.len() != dim {
            return Err(Error::new(
                Code::VectorDimension,
                format!(
                    "query has {} dimensions; collection {:?} has {dim}",
                    q.len(),
                    self.def.name
                ),
            ));
        }
        if q.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid(
                "query vector has NaN or infinite components",
            ));
        }
        let mut v = q.to_vec();
        if self.def.params.metric == Metric::Cosine && !normalize(&mut v) {
            return Err(Error::invalid(
                "query vector is all zeros, which has no direction under the cosine metric",
            ));
        }
        Ok(v)
    }

    /// How a search with options `o` would run now, and the estimates behind
    /// the choice: the exact scan checks every point and computes the distance
    /// of the matching ones; the graph walk computes distances as it goes and,
    /// with a filter, goes on until it has found `ef` matching points, so it
    /// visits about `1 / selectivity` times as many as an unfiltered walk.
    pub fn plan(&self, o: &SearchOptions) -> SearchPlan {
        let _ = self.ready(true);
        let filter = o.filter.as_ref().filter(|f| !f.is_empty());
        let live = self.live.read();
        let (matcher, cached) = live.matcher(filter, true);
        let selectivity = filter.map_or(1.0, |_| estimate(&matcher));
        let points = (live.in_graph + live.pending.len()) as f64;
        let matching = selectivity * live.ids.len() as f64;
        let dist_ns = DISTANCE_BASE_NS + DISTANCE_PER_DIM_NS * self.def.params.dimension as f64;
        // Liveness check per point, plus the filter: read back from its answer
        // cache when an earlier search made one (most points a search checks
        // were checked before), else evaluated on the metadata.
        let check_ns = 5.0
            + filter.map_or(0.0, |f| {
                if matcher.uses_columns() {
                    FILTER_COLUMN_NS * f.clause_count() as f64
                } else if cached {
                    FILTER_CACHED_NS
                } else {
                    FILTER_DOC_NS + FILTER_CLAUSE_NS * f.clause_count() as f64
                }
            });
        let exact_cost = points * check_ns + matching * dist_ns;
        let ef = o.ef.unwrap_or(self.def.params.ef_search as usize).max(o.k) as f64;
        let graph_visits = (self.visits_per_ef() * ef / selectivity.max(1e-9))
            .min(live.in_graph as f64)
            + live.pending.len() as f64 * selectivity;
        let graph_cost = graph_visits * (dist_ns + VISIT_NS + check_ns);
        let (kind, reason) = if o.exact {
            (PlanKind::Exact, PlanReason::Requested)
        } else if live.ids.len() <= EXACT_THRESHOLD {
            (PlanKind::Exact, PlanReason::Small)
        } else if live.in_graph == 0 {
            (PlanKind::Exact, PlanReason::NotIndexed)
        } else if exact_cost <= graph_cost {
            (PlanKind::Exact, PlanReason::Cost)
        } else {
            (PlanKind::Graph, PlanReason::Cost)
        };
        SearchPlan {
            kind,
            reason,
            selectivity,
            exact_cost,
            graph_cost,
            graph_visits,
        }
    }

    /// Expected distance computations of an unfiltered graph walk per unit of `ef`.
    fn visits_per_ef(&self) -> f64 {
        match f64::from_bits(self.visits_per_ef.load(AtomicOrdering::Relaxed)) {
            v if v > 0.0 => v,
            _ => PRIOR_VISITS_PER_EF_LINK * 2.0 * self.def.params.m as f64,
        }
    }

    /// Folds a measured walk into [`Self::visits_per_ef`]. A walk that reached
    /// (nearly) every point says nothing about the per-`ef` rate, only that the
    /// graph is small for this filter.
    fn record_walk(&self, visits: usize, ef: usize, selectivity: f64, points: usize) {
        if ef == 0 || visits * 10 >= points * 9 {
            return;
        }
        let sample = visits as f64 * selectivity.clamp(1e-9, 1.0) / ef as f64;
        let old = f64::from_bits(self.visits_per_ef.load(AtomicOrdering::Relaxed));
        let new = if old > 0.0 {
            old * 0.9 + sample * 0.1
        } else {
            sample
        };
        // Concurrent searches may overwrite each other's update: any of them is a fair sample.
        self.visits_per_ef
            .store(new.to_bits(), AtomicOrdering::Relaxed);
    }

    /// Top-k search, best first. `query` must come from [`Self::prepare_query`].
    /// Waits for the index to load first (see [`Self::ready`]).
    pub fn search(&self, query: &[f32], o: &SearchOptions) -> Vec<Hit> {
        let _ = self.ready(true);
        if o.k == 0 {
            return Vec::new();
        }
        let filter = o.filter.as_ref().filter(|f| !f.is_empty());
        let ef = o.ef.unwrap_or(self.def.params.ef_search as usize).max(o.k);
        let plan = self.plan(o);
        let cands = match plan.kind {
            PlanKind::Exact => self.exact(query, o.k, filter),
            PlanKind::Graph => match self.graph_search(query, o.k, ef, filter, plan.selectivity) {
                Some(c) => c,
                None => self.exact(query, o.k, filter),
            },
        };
        self.materialise(cands, o.k, filter)
    }

    fn scan_pending(&self, live: &Live, query: &[f32], top: &mut TopK, allows: &Matcher<'_>) {
        for (s, v) in &live.pending {
            if allows.allows(*s) {
                let d = self.dist.distance(query, v);
                if d < top.worst() {
                    top.push(Cand { dist: d, slot: *s });
                }
            }
        }
    }

    /// Brute force over the graph's points and pending.
    fn exact(&self, query: &[f32], k: usize, filter: Option<&Filter>) -> Vec<Cand> {
        let live = self.live.read();
        // Read under the live lock: every slot marked in_graph is in these graphs.
        let graphs = self.graphs.read().clone();
        let (allows, _) = live.matcher(filter, false);
        let mut top = TopK::new(k);
        self.scan_pending(&live, query, &mut top, &allows);
        let mut visit = |s: u32, v: &[f32]| {
            // A point whose slot is not marked in_graph is still in pending (scanned above).
            if live.slots.get(s as usize).is_some_and(|x| x.in_graph) && allows.allows(s) {
                let d = self.dist.distance(query, v);
                if d < top.worst() {
                    top.push(Cand { dist: d, slot: s });
                }
            }
        };
        if let Some(b) = &graphs.base {
            if !b.for_each_point(&mut visit) {
                // Quantized: the matching points' exact vectors come from the store.
                let matching = b.slots().iter().copied().filter(|&s| {
                    live.slots.get(s as usize).is_some_and(|x| x.in_graph) && allows.allows(s)
                });
                for (s, v) in self.fetch(&live, matching) {
                    visit(s, &v);
                }
            }
        }
        for_each_point(&graphs.delta, &mut visit);
        top.into_sorted()
    }

    /// The nearest `want` points of the delta graph (hnsw_rs's walk), keeping
    /// only those `allow` accepts when given.
    fn walk_delta(
        delta: &BuiltGraph,
        query: &[f32],
        want: usize,
        ef: usize,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<(f32, u32)> {
        if delta.get_nb_point() == 0 {
            return Vec::new();
        }
        let found = match allow {
            Some(f) => {
                let allow = |id: &usize| f(*id as u32);
                delta.search_filter(query, want, ef, Some(&allow))
            }
            None => delta.search(query, want, ef),
        };
        found
            .into_iter()
            .map(|nb| (nb.distance, nb.d_id as u32))
            .collect()
    }

    /// HNSW walk of the base and the delta, plus pending. `None` when the graph
    /// could not supply k live matches (the caller falls back to exact search).
    fn graph_search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&Filter>,
        selectivity: f64,
    ) -> Option<Vec<Cand>> {
        // Pending first, and the graphs read under the same lock: anything
        // acknowledged before this search is either in pending now or already
        // in these graphs.
        let (top, in_graph_live, tomb_ratio, graphs) = {
            let live = self.live.read();
            let graphs = self.graphs.read().clone();
            let (allows, _) = live.matcher(filter, false);
            let mut top = TopK::new(k);
            self.scan_pending(&live, query, &mut top, &allows);
            let in_graph_live = live.in_graph - live.tombstones;
            let ratio = if live.in_graph == 0 {
                0.0
            } else {
                live.tombstones as f64 / live.in_graph as f64
            };
            (top, in_graph_live, ratio, graphs)
        };
        if filter.is_some() {
            let live = self.live.read();
            let (allows, _) = live.matcher(filter, false);
            let allow = |s: u32| allows.allows(s);
            let mut found: Vec<(f32, u32)> = Vec::new();
            if let Some(base) = &graphs.base {
                let (mut r, visits) =
                    base.search_filtered(&self.dist, query, base.walk_width(ef), Some(&allow));
                self.record_walk(visits, ef, selectivity, base.points);
                if base.quantized() {
                    r = self.rescore(&live, query, &r);
                }
                r.truncate(k);
                found = r;
            }
            found.extend(Self::walk_delta(&graphs.delta, query, k, ef, Some(&allow)));
            let mut got: Vec<Cand> = top.heap.iter().copied().collect();
            let mut n = 0;
            for (d, s) in found {
                if allows.allows(s) {
                    n += 1;
                    got.push(Cand { dist: d, slot: s });
                }
            }
            return (n >= k.min(in_graph_live)).then(|| merge(got, k));
        }
        // Ask for enough extra neighbours that the tombstones among them still leave k.
        let mut want = ((k as f64 / (1.0 - tomb_ratio.min(0.9))).ceil() as usize)
            + if tomb_ratio > 0.0 { 8 } else { 0 };
        loop {
            let mut found: Vec<(f32, u32)> = Vec::new();
            if let Some(base) = &graphs.base {
                let (mut r, visits) = base.search(&self.dist, query, base.walk_width(ef.max(want)));
                self.record_walk(visits, ef.max(want), 1.0, base.points);
                if base.quantized() {
                    r = self.rescore(&self.live.read(), query, &r);
                }
                r.truncate(want);
                found = r;
            }
            found.extend(Self::walk_delta(
                &graphs.delta,
                query,
                want,
                ef.max(want),
                None,
            ));
            if graphs.base.is_some() && graphs.delta.get_nb_point() > 0 {
                found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                found.truncate(want);
            }
            let live = self.live.read();
            let mut got: Vec<Cand> = top.heap.iter().copied().collect();
            let mut n = 0;
            for &(d, s) in &found {
                if live.is_live(s) {
                    n += 1;
                    got.push(Cand { dist: d, slot: s });
                }
            }
            if n >= k.min(in_graph_live) || found.len() < want {
                return Some(merge(got, k));
            }
            if want >= 4 * k + 256 {
                return None;
            }
            want *= 2;
        }
    }

    fn materialise(&self, cands: Vec<Cand>, k: usize, filter: Option<&Filter>) -> Vec<Hit> {
        let live = self.live.read();
        let mut seen = std::collections::HashSet::with_capacity(cands.len());
        let mut out = Vec::with_capacity(k.min(cands.len()));
        for c in cands {
            if out.len() >= k {
                break;
            }
            if !seen.insert(c.slot) || !live.allows(c.slot, filter) {
                continue;
            }
            let s = &live.slots[c.slot as usize];
            out.push(Hit {
                id: s.id.clone().unwrap(),
                score: self.dist.score(c.dist),
                metadata: s.meta.clone(),
            });
        }
        out
    }
}

/// Drops the graphs a swap replaced, once the caller has released `live` and `graphs`:
/// an HNSW graph's drop runs on rayon's global pool (hnsw_rs clears its neighbourhoods in
/// parallel), whose workers may be in a search waiting for those very locks, so dropping
/// it under them deadlocks (`searchBatch` against a rebuild did).
fn drop_unlocked<T>(replaced: T) {
    drop(replaced);
}
