//! The hnsw_rs graph a collection builds (its delta of recent inserts, or a
//! full rebuild before it is frozen) and the few operations on it the index
//! shares.

use hnsw_rs::hnsw::Hnsw;

use super::collection::CollectionDef;
use super::distance::MetricDistance;

/// A graph built in this process.
pub(crate) type BuiltGraph = Hnsw<'static, f32, MetricDistance>;

/// Number of layers a graph has (hnsw_rs's maximum).
pub(crate) const LAYERS: usize = 16;

/// Visits every point of the graph: `(slot, vector)`. Layer by layer, because
/// hnsw_rs's all-points iterator panics on an empty graph and takes its layer
/// lock twice (which can deadlock against a waiting insert).
pub(crate) fn for_each_point(g: &BuiltGraph, mut f: impl FnMut(u32, &[f32])) {
    let pi = g.get_point_indexation();
    for layer in 0..LAYERS {
        for p in pi.get_layer_iterator(layer) {
            f(p.get_origin_id() as u32, p.get_v());
        }
    }
}

/// An empty graph with the collection's parameters, room for `capacity` points to start with.
pub(crate) fn new_graph(def: &CollectionDef, capacity: usize) -> BuiltGraph {
    // `m` is validated (<= 128) before a definition is stored, so hnsw_rs's
    // `process::exit` on more than 256 links can never trigger.
    Hnsw::new(
        def.params.m as usize,
        capacity.max(1024),
        LAYERS,
        def.params.ef_construction as usize,
        MetricDistance(def.params.metric),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::collection::Metric;

    fn unit_vectors(n: usize, dim: usize, mut state: u64) -> Vec<Vec<f32>> {
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    fn graph_of(points: &[Vec<f32>]) -> BuiltGraph {
        let g: BuiltGraph = Hnsw::new(16, points.len(), LAYERS, 64, MetricDistance(Metric::Cosine));
        for (i, p) in points.iter().enumerate() {
            g.insert_slice((p, i));
        }
        g
    }

    /// The layer walk marks visited points by slot with a per-thread epoch that wraps
    /// after 65,535 walks, and the marks are shared by every graph the thread walks
    /// (vendor/hnsw_rs/PATCHES.md, change 6). A walk that comes back to the epoch of
    /// an earlier walk of the same graph, after the wrap, must not take that walk's
    /// marks for its own: it must answer as the earlier one did.
    #[test]
    fn graph_walks_answer_the_same_after_the_visited_epoch_wraps() {
        std::thread::spawn(|| {
            let points = unit_vectors(300, 8, 0x2545_f491_4f6c_dd1d);
            let a = graph_of(&points);
            let tiny = unit_vectors(2, 8, 0x9e37_79b9_7f4a_7c15);
            let b = graph_of(&tiny);
            let answer =
                |p: &[f32]| -> Vec<usize> { a.search(p, 16, 16).iter().map(|n| n.d_id).collect() };
            let before: Vec<Vec<usize>> = points.iter().map(|p| answer(p)).collect();
            assert!(
                before
                    .iter()
                    .enumerate()
                    .all(|(i, ids)| ids.first() == Some(&i)),
                "every point finds itself first"
            );
            // A search walks one layer (layer 0; it descends the upper ones greedily).
            // 65,534 walks of `b` (which mark only its two slots) bring the epoch
            // back to the one of the last search above: that search, made again, must
            // not see the marks it left then.
            for _ in 0..65_534 {
                b.search(&tiny[0], 1, 1);
            }
            let last = points.len() - 1;
            assert_eq!(answer(&points[last]), before[last]);
            let after: Vec<Vec<usize>> = points.iter().map(|p| answer(p)).collect();
            assert_eq!(after, before);
        })
        .join()
        .unwrap();
    }
}
