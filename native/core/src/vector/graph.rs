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
