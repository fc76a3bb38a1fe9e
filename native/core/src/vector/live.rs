//! One collection's live documents: slots (id, metadata, whether in the graph),
//! the pending list, tombstones, and the per-filter answer caches that make a
//! repeated filter cost a byte per slot; the filter selectivity estimate.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering as AtomicOrdering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value as Json;

use super::columns::{Columns, CompiledFilter};
use super::filter::Filter;

/// Filters whose per-slot answers are kept (the most recently used ones): one
/// byte per slot each.
pub(super) const MATCH_CACHES: usize = 8;

/// One document version: a live document, or a dead one still in the graph.
pub(super) struct Slot {
    /// The document id while this slot is its live version; `None` once deleted or replaced.
    pub(super) id: Option<Arc<str>>,
    pub(super) meta: Option<Arc<Json>>,
    pub(super) in_graph: bool,
    /// Hash of the stored record this slot was made from.
    pub(super) hash: u64,
}

#[derive(Default)]
pub(super) struct Live {
    pub(super) ids: HashMap<Arc<str>, u32>,
    pub(super) slots: Vec<Slot>,
    pub(super) pending: VecDeque<(u32, Arc<[f32]>)>,
    /// Dead slots still in the graph.
    pub(super) tombstones: usize,
    /// Slots (live or dead) in the graph.
    pub(super) in_graph: usize,
    /// Per-slot answers of the filters searched with most recently, most recent first.
    pub(super) match_caches: Mutex<MatchCaches>,
    /// Typed per-field metadata columns, one cell per slot.
    pub(super) columns: Mutex<Columns>,
}

#[derive(Default)]
pub(super) struct MatchCaches {
    pub(super) caches: Vec<Arc<MatchCache>>,
    /// Filter texts searched with once, most recent first: a cache is made for a
    /// filter's second search, so one-off filters never pay for one.
    pub(super) seen_once: VecDeque<String>,
}

/// A slot's answer not known yet.
pub(super) const UNKNOWN: u8 = 0;
/// The slot is dead or its metadata fails the filter.
pub(super) const REJECTED: u8 = 1;
/// The slot is live and its metadata passes the filter.
pub(super) const ACCEPTED: u8 = 2;

/// What one filter answered for each slot, filled in as searches check slots.
/// Checking a filter against stored metadata chases pointers through the JSON
/// and costs more than a distance; reading the answer back costs one byte.
/// Filters read from columns get one too (see [`Live::matcher`]): a byte per
/// slot stays in cache where a column's cells and the slots do not.
/// A slot's metadata never changes while it is live (an upsert makes a new
/// slot), so an answer stays right until the slot dies, and [`Live::kill`]
/// rejects the slot in every cache then. Answers are written under the read
/// lock of [`Live`] and cleared under its write lock, so they never race a kill.
pub(super) struct MatchCache {
    pub(super) key: String,
    /// Per slot (up to the slot count when the cache was made): UNKNOWN, REJECTED or ACCEPTED.
    pub(super) answers: Vec<AtomicU8>,
    /// `(slots, live documents, selectivity)` of the last estimate: slots only
    /// grow and every delete lowers the live count, so equal counts mean an
    /// unchanged index.
    pub(super) estimate: Mutex<Option<(usize, usize, f64)>>,
}

/// A filter (or none) bound to its columns or its answer cache, for checks during one search.
pub(super) struct Matcher<'a> {
    pub(super) live: &'a Live,
    pub(super) filter: Option<&'a Filter>,
    pub(super) cache: Option<Arc<MatchCache>>,
    /// The filter read from metadata columns, when every field it names has one.
    pub(super) columns: Option<CompiledFilter<'a>>,
}

impl Matcher<'_> {
    /// Whether the slot is live and its metadata passes the filter.
    #[inline]
    pub(super) fn allows(&self, slot: u32) -> bool {
        if let Some(answer) = self
            .cache
            .as_ref()
            .and_then(|c| c.answers.get(slot as usize))
        {
            match answer.load(AtomicOrdering::Relaxed) {
                ACCEPTED => return true,
                REJECTED => return false,
                _ => {
                    let ok = self.check(slot);
                    answer.store(
                        if ok { ACCEPTED } else { REJECTED },
                        AtomicOrdering::Relaxed,
                    );
                    return ok;
                }
            }
        }
        self.check(slot)
    }

    /// Whether the slot is live and passes the filter, without the answer cache.
    #[inline]
    fn check(&self, slot: u32) -> bool {
        match &self.columns {
            Some(c) => match self.live.slots.get(slot as usize) {
                Some(s) if s.id.is_some() => c.matches(slot, s.meta.as_deref()),
                _ => false,
            },
            None => self.live.allows(slot, self.filter),
        }
    }

    /// Whether the filter reads metadata columns (a check costs a cell read).
    pub(super) fn uses_columns(&self) -> bool {
        self.columns.is_some()
    }
}

impl Live {
    pub(super) fn is_live(&self, slot: u32) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.id.is_some())
    }

    pub(super) fn kill(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.id = None;
        s.meta = None;
        if s.in_graph {
            self.tombstones += 1;
        }
        for c in self.match_caches.get_mut().caches.iter() {
            if let Some(a) = c.answers.get(slot as usize) {
                a.store(REJECTED, AtomicOrdering::Relaxed);
            }
        }
    }

    /// A checker for `filter` during one search, with the filter's answer cache
    /// when there is one, and whether there was one. `planning` (once per
    /// search) counts the search as a use of the filter: it makes the cache on
    /// the filter's second search, and grows it to the current slots as needed.
    pub(super) fn matcher<'a>(
        &'a self,
        filter: Option<&'a Filter>,
        planning: bool,
    ) -> (Matcher<'a>, bool) {
        let Some(f) = filter else {
            return (
                Matcher {
                    live: self,
                    filter,
                    cache: None,
                    columns: None,
                },
                false,
            );
        };
        // Columns answer any filter on their fields with no first search to pay
        // for it, but a cell (and the slot's liveness) is a read at a random
        // place in two arrays of the collection's size: a walk that checks a few
        // hundred points misses the cache on most of them (at 90 % selectivity
        // the checks made a walk a quarter slower than the same walk without a
        // filter). A filter searched again also gets the answer cache below,
        // one byte per slot that stays in cache, filled from the columns.
        let columns = self
            .columns
            .lock()
            .compile(f, || self.slots.iter().map(|s| s.meta.as_deref()));
        let n = self.slots.len();
        let mut all = self.match_caches.lock();
        let found = all.caches.iter().position(|c| c.key == f.key());
        if !planning {
            let cache = found.map(|i| all.caches[i].clone());
            let existed = cache.is_some();
            return (
                Matcher {
                    live: self,
                    filter,
                    cache,
                    columns,
                },
                existed,
            );
        }
        if found.is_none() {
            match all.seen_once.iter().position(|k| k == f.key()) {
                Some(i) => {
                    all.seen_once.remove(i);
                }
                None => {
                    all.seen_once.push_front(f.key().to_owned());
                    all.seen_once.truncate(4 * MATCH_CACHES);
                    let checker = Matcher {
                        live: self,
                        filter,
                        cache: None,
                        columns,
                    };
                    return (checker, false);
                }
            }
        }
        let caches = &mut all.caches;
        let existed = found.is_some();
        let mut cache = match found {
            Some(i) => caches.remove(i),
            None => Arc::new(MatchCache {
                key: f.key().to_owned(),
                answers: Vec::new(),
                estimate: Mutex::new(None),
            }),
        };
        // New slots since the cache was made: grow it (keeping what it knows)
        // once they are more than a few, so they do not all take the slow check.
        if n > cache.answers.len() + cache.answers.len() / 16 + 16 {
            let answers = (0..n)
                .map(|i| {
                    AtomicU8::new(
                        cache
                            .answers
                            .get(i)
                            .map_or(UNKNOWN, |a| a.load(AtomicOrdering::Relaxed)),
                    )
                })
                .collect();
            let estimate = *cache.estimate.lock();
            cache = Arc::new(MatchCache {
                key: cache.key.clone(),
                answers,
                estimate: Mutex::new(estimate),
            });
        }
        caches.insert(0, cache.clone());
        caches.truncate(MATCH_CACHES);
        (
            Matcher {
                live: self,
                filter,
                cache: Some(cache),
                columns,
            },
            existed,
        )
    }

    /// Adds a slot for a new document version (its metadata to every column too).
    pub(super) fn push_slot(&mut self, slot: Slot) -> u32 {
        let at = self.slots.len() as u32;
        self.columns.get_mut().push(slot.meta.as_deref());
        self.slots.push(slot);
        at
    }

    pub(super) fn allows(&self, slot: u32, filter: Option<&Filter>) -> bool {
        match self.slots.get(slot as usize) {
            Some(s) if s.id.is_some() => filter.is_none_or(|f| f.matches(s.meta.as_deref())),
            _ => false,
        }
    }
}

/// Documents [`estimate`] samples.
pub(super) const ESTIMATE_SAMPLES: usize = 512;

/// Fraction of live documents a filter matches, from a sample. The sample
/// strides by a large prime (modulo the slot count) rather than a fixed step, so
/// metadata that repeats with the insertion order (every 10th, every 1000th
/// document) does not alias with it.
/// The filter's answer cache keeps the last estimate while the index is unchanged.
pub(super) fn estimate(allows: &Matcher<'_>) -> f64 {
    const STRIDE: u64 = 2_654_435_761;
    let live = allows.live;
    let n = live.slots.len();
    if n == 0 {
        return 1.0;
    }
    let counts = (n, live.ids.len());
    if let Some(c) = &allows.cache {
        if let Some((slots, docs, e)) = *c.estimate.lock() {
            if (slots, docs) == counts {
                return e;
            }
        }
    }
    let (mut seen, mut hit) = (0usize, 0usize);
    for j in 0..ESTIMATE_SAMPLES.min(n) as u64 {
        let slot = (j * STRIDE % n as u64) as u32;
        if live.is_live(slot) {
            seen += 1;
            if allows.allows(slot) {
                hit += 1;
            }
        }
    }
    let e = if seen == 0 {
        1.0
    } else {
        hit as f64 / seen as f64
    };
    if let Some(c) = &allows.cache {
        *c.estimate.lock() = Some((counts.0, counts.1, e));
    }
    e
}
