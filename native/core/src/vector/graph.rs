//! The HNSW graph of a collection as hnsw_rs holds it: built in this process or
//! loaded from a dump, and the few operations on it that the index, the
//! fast-walk snapshot and the dumps share.

use hnsw_rs::hnsw::Hnsw;

use super::collection::CollectionDef;
use super::distance::MetricDistance;

/// A graph built in this process.
pub(crate) type BuiltGraph = Hnsw<'static, f32, MetricDistance>;
/// hnsw_rs's graph type for any lifetime of borrowed point data.
pub(crate) type HnswOf<'a> = Hnsw<'a, f32, MetricDistance>;

self_cell::self_cell!(
    /// A graph loaded from a dump: hnsw_rs ties the loaded graph's lifetime to its
    /// loader, so both are owned here together.
    pub(crate) struct LoadedGraph {
        owner: Box<hnsw_rs::hnswio::HnswIo>,
        #[not_covariant]
        dependent: HnswOf,
    }
);

/// The current graph: built here, or loaded from a dump.
pub(crate) enum Graph {
    Built(BuiltGraph),
    Loaded(LoadedGraph),
}

impl Graph {
    /// Runs `f` on the hnsw_rs graph.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&HnswOf<'_>) -> R) -> R {
        match self {
            Graph::Built(g) => f(g),
            Graph::Loaded(l) => l.with_dependent(|_, g| f(g)),
        }
    }
}

/// Number of layers a graph has (hnsw_rs's maximum).
pub(crate) const LAYERS: usize = 16;

/// Visits every point of the graph: `(slot, vector)`. Layer by layer, because
/// hnsw_rs's all-points iterator panics on an empty graph and takes its layer
/// lock twice (which can deadlock against a waiting insert).
pub(crate) fn for_each_point(graph: &Graph, mut f: impl FnMut(u32, &[f32])) {
    graph.with(|g| {
        let pi = g.get_point_indexation();
        for layer in 0..LAYERS {
            for p in pi.get_layer_iterator(layer) {
                f(p.get_origin_id() as u32, p.get_v());
            }
        }
    })
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
