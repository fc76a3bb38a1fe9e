//! A compact, read-only copy of an hnsw_rs graph's links for fast searching.
//!
//! hnsw_rs walks its graph through reference-counted points, a hash map of
//! visited points and heaps of allocated entries: per visited node that costs
//! more than the distance itself. Once the indexer is idle it takes this
//! snapshot of the same graph (same nodes, same links, same distances) as flat
//! arrays, and unfiltered searches walk it with an epoch-stamped visited array
//! and plain heaps. Any later insert makes the snapshot stale (searches go back
//! to hnsw_rs) until the indexer takes a new one.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use super::distance::MetricDistance;
use super::graph::{Graph, LAYERS};

#[derive(Clone, Copy, PartialEq)]
struct Item(f32, u32);
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// The snapshot. Node `i` is the `i`-th point met; `slots[i]` is its data id.
pub(crate) struct Frozen {
    /// Keeps the points (and so the vectors `vecs` points into) alive.
    graph: Arc<Graph>,
    /// Points in the graph when the snapshot was taken.
    pub(crate) points: usize,
    dim: usize,
    slots: Vec<u32>,
    /// Start of each node's vector, inside the point data hnsw_rs owns.
    vecs: Vec<*const f32>,
    l0_start: Vec<u32>,
    l0: Vec<u32>,
    /// Links of upper layers, per layer (index 0 unused), only for nodes on that layer.
    upper: Vec<HashMap<u32, Box<[u32]>>>,
    entry: u32,
    top: usize,
}

// SAFETY: `vecs` points into vectors owned by points of `graph`, which this value
// keeps alive; hnsw_rs never moves, changes or frees a point's vector while its
// graph lives, so reading them from any thread is sound.
unsafe impl Send for Frozen {}
unsafe impl Sync for Frozen {}

/// Neighbours of one node a walk takes at a time (layer 0 holds at most `2 * m`, m <= 128).
const NEIGHBOUR_BATCH: usize = 256;

thread_local! {
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

impl Frozen {
    /// Takes a snapshot of `graph`; `None` when it is empty.
    pub(crate) fn take(graph: &Arc<Graph>, dim: usize) -> Option<Frozen> {
        graph.with(|g| {
            let points = g.get_nb_point();
            if points == 0 {
                return None;
            }
            let pi = g.get_point_indexation();
            let mut slots = Vec::with_capacity(points);
            let mut vecs = Vec::with_capacity(points);
            let mut links = Vec::with_capacity(points);
            let mut top = 0usize;
            for layer in 0..LAYERS {
                for p in pi.get_layer_iterator(layer) {
                    let v = p.get_v();
                    if v.len() != dim {
                        return None;
                    }
                    slots.push(p.get_origin_id() as u32);
                    vecs.push(v.as_ptr());
                    links.push((layer, p.get_neighborhood_id()));
                    top = top.max(layer);
                }
            }
            let max_slot = slots.iter().copied().max().unwrap_or(0) as usize;
            let mut node_of = vec![u32::MAX; max_slot + 1];
            for (i, s) in slots.iter().enumerate() {
                node_of[*s as usize] = i as u32;
            }
            let node = |slot: usize| node_of.get(slot).copied().filter(|n| *n != u32::MAX);
            let mut l0_start = Vec::with_capacity(slots.len() + 1);
            let mut l0 = Vec::new();
            let mut upper: Vec<HashMap<u32, Box<[u32]>>> =
                (0..=top).map(|_| HashMap::new()).collect();
            for (i, (level, nbs)) in links.iter().enumerate() {
                l0_start.push(l0.len() as u32);
                if let Some(layer0) = nbs.first() {
                    l0.extend(layer0.iter().filter_map(|n| node(n.d_id)));
                }
                for (l, links) in upper.iter_mut().enumerate().take(*level + 1).skip(1) {
                    let list: Box<[u32]> = nbs
                        .get(l)
                        .map(|ns| ns.iter().filter_map(|n| node(n.d_id)).collect())
                        .unwrap_or_default();
                    links.insert(i as u32, list);
                }
            }
            l0_start.push(l0.len() as u32);
            // Any node of the top layer is a valid entry for the greedy descent.
            let entry = links.iter().position(|(l, _)| *l == top)? as u32;
            Some(Frozen {
                graph: graph.clone(),
                points: slots.len(),
                dim,
                slots,
                vecs,
                l0_start,
                l0,
                upper,
                entry,
                top,
            })
        })
    }

    /// Whether this snapshot still describes `graph` exactly.
    pub(crate) fn is_current(&self, graph: &Arc<Graph>) -> bool {
        Arc::ptr_eq(&self.graph, graph) && graph.with(|g| g.get_nb_point()) == self.points
    }

    #[inline]
    fn vec(&self, i: u32) -> &[f32] {
        // SAFETY: see the `Send`/`Sync` impls: the vector lives as long as `self.graph`.
        unsafe { std::slice::from_raw_parts(self.vecs[i as usize], self.dim) }
    }

    #[inline]
    fn prefetch(&self, i: u32) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint; the address is a valid vector start.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch(self.vecs[i as usize] as *const i8, _MM_HINT_T0);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// Every cache line of node `i`'s vector (a 384-dimension vector spans 24).
    #[inline]
    fn prefetch_vector(&self, i: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let start = self.vecs[i as usize] as *const i8;
            let bytes = self.dim * std::mem::size_of::<f32>();
            let mut at = 64;
            while at < bytes {
                // SAFETY: prefetching is a hint; the address lies inside the vector.
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch(start.add(at), _MM_HINT_T0);
                }
                at += 64;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// The `ef` nearest points found by the standard HNSW walk, as `(distance, slot)`,
    /// nearest first, and the number of distances the walk computed.
    pub(crate) fn search(
        &self,
        dist: &MetricDistance,
        q: &[f32],
        ef: usize,
    ) -> (Vec<(f32, u32)>, usize) {
        self.search_filtered(dist, q, ef, None)
    }

    /// Like [`Self::search`], keeping only points whose slot `allow` accepts: the
    /// walk goes through every node, but only accepted ones enter the results
    /// (and decide when the walk stops).
    pub(crate) fn search_filtered(
        &self,
        dist: &MetricDistance,
        q: &[f32],
        ef: usize,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> (Vec<(f32, u32)>, usize) {
        let ok = |n: u32| allow.is_none_or(|f| f(self.slots[n as usize]));
        let mut cur = self.entry;
        let mut cur_d = dist.distance(q, self.vec(cur));
        let mut visits = 1usize;
        for l in (1..=self.top).rev() {
            loop {
                let mut changed = false;
                if let Some(ns) = self.upper[l].get(&cur) {
                    visits += ns.len();
                    for &n in ns.iter() {
                        let d = dist.distance(q, self.vec(n));
                        if d < cur_d {
                            cur = n;
                            cur_d = d;
                            changed = true;
                        }
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        VISITED.with(|cell| {
            let mut cell = cell.borrow_mut();
            let (visited, epoch) = &mut *cell;
            if visited.len() < self.points {
                visited.clear();
                visited.resize(self.points, 0);
                *epoch = 0;
            }
            *epoch = epoch.wrapping_add(1);
            if *epoch == 0 {
                visited.iter_mut().for_each(|v| *v = 0);
                *epoch = 1;
            }
            let stamp = *epoch;
            let mut cand: BinaryHeap<Reverse<Item>> = BinaryHeap::with_capacity(ef * 2);
            let mut best: BinaryHeap<Item> = BinaryHeap::with_capacity(ef + 1);
            visited[cur as usize] = stamp;
            cand.push(Reverse(Item(cur_d, cur)));
            if ok(cur) {
                best.push(Item(cur_d, cur));
            }
            while let Some(Reverse(Item(d, c))) = cand.pop() {
                if best.len() >= ef && d > best.peek().unwrap().0 {
                    break;
                }
                let (s, e) = (
                    self.l0_start[c as usize] as usize,
                    self.l0_start[c as usize + 1] as usize,
                );
                // The unvisited neighbours first, so each distance can overlap
                // fetching the next one's whole vector from memory.
                let mut todo = [0u32; NEIGHBOUR_BATCH];
                for chunk in self.l0[s..e].chunks(NEIGHBOUR_BATCH) {
                    let mut t = 0;
                    for &n in chunk {
                        if visited[n as usize] != stamp {
                            visited[n as usize] = stamp;
                            self.prefetch(n);
                            todo[t] = n;
                            t += 1;
                        }
                    }
                    visits += t;
                    for j in 0..t {
                        let n = todo[j];
                        if j + 1 < t {
                            self.prefetch_vector(todo[j + 1]);
                        }
                        let dn = dist.distance(q, self.vec(n));
                        if best.len() < ef || dn < best.peek().unwrap().0 {
                            cand.push(Reverse(Item(dn, n)));
                            if ok(n) {
                                best.push(Item(dn, n));
                                if best.len() > ef {
                                    best.pop();
                                }
                            }
                        }
                    }
                }
            }
            let found = best
                .into_sorted_vec()
                .into_iter()
                .map(|Item(d, n)| (d, self.slots[n as usize]))
                .collect();
            (found, visits)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::collection::{CollectionDef, CollectionParams, Metric};
    use crate::vector::graph::new_graph;

    /// With ef at least the number of points the walk reaches every node, so it
    /// must return the exact nearest neighbours, in order.
    #[test]
    fn full_width_walk_is_exact() {
        let dim = 10;
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let def = CollectionDef {
                id: 1,
                name: "t".into(),
                params: CollectionParams::new(dim as u32, metric),
            };
            let g = new_graph(&def, 400);
            let mut seed = 12345u64;
            let mut r = || {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            };
            let mut vecs = Vec::new();
            for i in 0..400 {
                let mut v: Vec<f32> = (0..dim).map(|_| r()).collect();
                if metric == Metric::Cosine {
                    crate::vector::distance::normalize(&mut v);
                }
                g.insert_slice((&v, i * 3));
                vecs.push(v);
            }
            let graph = Arc::new(Graph::Built(g));
            let f = Frozen::take(&graph, dim).unwrap();
            assert!(f.is_current(&graph));
            let dist = MetricDistance(metric);
            let q: Vec<f32> = (0..dim).map(|_| r()).collect();
            let got: Vec<u32> = f
                .search(&dist, &q, 400)
                .0
                .iter()
                .take(10)
                .map(|x| x.1)
                .collect();
            let mut all: Vec<(f32, u32)> = vecs
                .iter()
                .enumerate()
                .map(|(i, v)| (dist.distance(&q, v), (i * 3) as u32))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let want: Vec<u32> = all.iter().take(10).map(|x| x.1).collect();
            assert_eq!(got, want, "{metric:?}");
            // Filtered: only accepted points, still exact at full width.
            let even = |s: u32| s.is_multiple_of(2);
            let got: Vec<u32> = f
                .search_filtered(&dist, &q, 400, Some(&even))
                .0
                .iter()
                .take(10)
                .map(|x| x.1)
                .collect();
            let want: Vec<u32> = all
                .iter()
                .filter(|x| even(x.1))
                .take(10)
                .map(|x| x.1)
                .collect();
            assert_eq!(got, want, "{metric:?} filtered");
        }
    }
}
