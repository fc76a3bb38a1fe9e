//! What a search takes and returns (options, hits, plans, stats), and the
//! candidate heaps it keeps the best of.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use serde_json::Value as Json;

use super::filter::Filter;

/// A search result.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The document id.
    pub id: Arc<str>,
    /// Higher is better: cosine similarity, dot product, or negative Euclidean distance.
    pub score: f32,
    /// The document's metadata, if it has any.
    pub metadata: Option<Arc<Json>>,
}

/// How to search.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    /// How many hits to return at most.
    pub k: usize,
    /// Candidate list size; `None` uses the collection's default.
    pub ef: Option<usize>,
    /// Brute force over every live document.
    pub exact: bool,
    /// Only documents whose metadata matches.
    pub filter: Option<Filter>,
}

/// Counters of one collection's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Live documents.
    pub count: usize,
    /// Committed documents not yet in the graph (searched exactly meanwhile).
    pub pending: usize,
    /// Deleted or replaced documents still in the graph (filtered out of results).
    pub tombstones: usize,
    /// Points in the graph, live or not.
    pub graph_points: usize,
    /// Rebuilds done since open.
    pub rebuilds: u64,
    /// Whether the graph at open came from a dump (rather than a rebuild from the documents).
    pub loaded_from_dump: bool,
    /// Dumps written since open (in the background and at close).
    pub dumps: u64,
    /// Bytes of the dumps written since open (their files' sizes, summed).
    pub dumped_bytes: u64,
    /// Bytes the graph holds in memory (vectors and links): the frozen base
    /// exactly, the hnsw_rs delta estimated. Pending documents, ids and
    /// metadata are not counted.
    pub graph_bytes: u64,
    /// Whether the index is still loading in the background after open.
    pub loading: bool,
    /// Stored documents read so far while loading (the live count once loaded).
    pub loaded: u64,
    /// Stored documents to read while loading (the live count once loaded).
    pub total: u64,
}

/// The way a search runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// Brute force over every live (matching) document.
    Exact,
    /// HNSW walk (filtered when there is a filter), plus a scan of pending documents.
    Graph,
}

/// Why a plan was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanReason {
    /// The search asked for `exact`.
    Requested,
    /// The collection has at most [`EXACT_THRESHOLD`](super::index::EXACT_THRESHOLD) live documents.
    Small,
    /// Nothing is in the graph yet.
    NotIndexed,
    /// The estimated costs decided.
    Cost,
}

/// How a search will run and the estimates behind the choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchPlan {
    /// Exact scan or graph walk.
    pub kind: PlanKind,
    /// Why that kind was chosen.
    pub reason: PlanReason,
    /// Estimated fraction of live documents the filter matches (1 without a filter).
    pub selectivity: f64,
    /// Estimated cost of the exact scan, in nanoseconds.
    pub exact_cost: f64,
    /// Estimated cost of the graph walk, in nanoseconds.
    pub graph_cost: f64,
    /// Expected distance computations of the graph walk.
    pub graph_visits: f64,
}

/// A candidate: a slot and its distance to the query (smaller is closer).
#[derive(Clone, Copy)]
pub(super) struct Cand {
    pub(super) dist: f32,
    pub(super) slot: u32,
}
impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.dist.total_cmp(&o.dist).then(self.slot.cmp(&o.slot))
    }
}

/// Keeps the k smallest candidates.
pub(super) struct TopK {
    pub(super) k: usize,
    pub(super) heap: BinaryHeap<Cand>,
}
impl TopK {
    pub(super) fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }
    #[inline]
    pub(super) fn worst(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::INFINITY
        } else {
            self.heap.peek().map_or(f32::INFINITY, |c| c.dist)
        }
    }
    #[inline]
    pub(super) fn push(&mut self, c: Cand) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if c < *self.heap.peek().unwrap() {
            self.heap.pop();
            self.heap.push(c);
        }
    }
    pub(super) fn into_sorted(self) -> Vec<Cand> {
        self.heap.into_sorted_vec()
    }
}

/// Best `k` of `c`, each slot once (a document being indexed can be found both
/// in pending and in the graph).
pub(super) fn merge(mut c: Vec<Cand>, k: usize) -> Vec<Cand> {
    c.sort_unstable();
    c.dedup_by_key(|x| x.slot);
    let mut seen = std::collections::HashSet::with_capacity(c.len());
    c.retain(|x| seen.insert(x.slot));
    c.truncate(k);
    c
}
