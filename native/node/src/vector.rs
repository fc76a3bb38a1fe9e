//! Bindings of the vector collections. Thin: argument conversion, result
//! packing and error mapping; the engine logic is in `athanor_core::vector`.
//! Every call that runs engine code catches panics, so a bug surfaces as an
//! `ERR_INTERNAL` error instead of taking Node down.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use athanor_core::vector::{
    CollectionDef, CollectionIndex, CollectionParams, Filter, Hit, IdleWaiter, Metric, PlanKind,
    PlanReason, Quantization, SearchOptions,
};
use athanor_core::{Code, Engine, Error};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use rayon::prelude::*;

use crate::fast::ReadCtx;
use crate::guard::{self, guard, CoreResult, Guarded, Work};
use crate::NativeDb;

/// Parameters of a new collection (defaults are applied in TS).
#[napi(object)]
pub struct NativeCollectionParams {
    pub dimension: u32,
    pub metric: String,
    pub m: u32,
    pub ef_construction: u32,
    pub ef_search: u32,
    /// `none` (the default), `int8` or `binary`.
    pub quantization: Option<String>,
}

/// A collection's stored definition.
#[napi(object)]
pub struct NativeCollectionInfo {
    pub name: String,
    pub dimension: u32,
    pub metric: String,
    pub m: u32,
    pub ef_construction: u32,
    pub ef_search: u32,
    pub quantization: String,
}

fn info_of(d: &CollectionDef) -> NativeCollectionInfo {
    NativeCollectionInfo {
        // A namespace's collection is shown by the name the namespace gave it.
        name: athanor_core::store::split_collection(&d.name).1.to_owned(),
        dimension: d.params.dimension,
        metric: d.params.metric.as_str().to_owned(),
        m: d.params.m,
        ef_construction: d.params.ef_construction,
        ef_search: d.params.ef_search,
        quantization: d.params.quantization.as_str().to_owned(),
    }
}

/// Counters of a collection's index.
#[napi(object)]
pub struct NativeIndexStats {
    pub count: u32,
    pub pending: u32,
    pub tombstones: u32,
    pub graph_points: u32,
    pub rebuilds: u32,
    pub loaded_from_dump: bool,
    pub dumps: u32,
    pub dumped_bytes: f64,
    pub graph_bytes: f64,
    /// `loading` while the index loads in the background after open, then `ready`.
    pub state: String,
    pub loaded: f64,
    pub total: f64,
}

/// How a search would run (see `CollectionIndex::plan`).
#[napi(object)]
pub struct NativeSearchPlan {
    /// `exact` or `graph`.
    pub plan: String,
    /// `requested`, `small`, `not-indexed` or `cost`.
    pub reason: String,
    pub selectivity: f64,
    pub exact_cost: f64,
    pub graph_cost: f64,
    pub graph_visits: f64,
}

#[napi]
impl NativeDb {
    /// Creates a collection (or returns the existing one when its parameters match).
    #[napi]
    pub fn vector_create(
        &self,
        env: Env,
        name: String,
        p: NativeCollectionParams,
    ) -> Result<NativeCollection> {
        guard(&env, || {
            let engine = self.engine()?;
            let params = CollectionParams {
                dimension: p.dimension,
                metric: Metric::parse(&p.metric)?,
                m: p.m,
                ef_construction: p.ef_construction,
                ef_search: p.ef_search,
                quantization: match &p.quantization {
                    Some(q) => Quantization::parse(q)?,
                    None => Quantization::None,
                },
            };
            let idx = engine.create_collection_in(self.ctx.ns, &name, params)?;
            Ok(NativeCollection::new(self.ctx.clone(), idx))
        })
    }

    /// Opens a collection, or `null` when there is none of that name.
    #[napi]
    pub fn vector_open(&self, env: Env, name: String) -> Result<Option<NativeCollection>> {
        guard(&env, || {
            let engine = self.engine()?;
            Ok(engine
                .collection_in(self.ctx.ns, &name)?
                .map(|idx| NativeCollection::new(self.ctx.clone(), idx)))
        })
    }

    /// The definition of a collection, or `null`.
    #[napi]
    pub fn vector_info(&self, env: Env, name: String) -> Result<Option<NativeCollectionInfo>> {
        guard(&env, || {
            let engine = self.engine()?;
            Ok(engine
                .collection_in(self.ctx.ns, &name)?
                .map(|c| info_of(&c.def)))
        })
    }

    /// Every collection, sorted by name.
    #[napi]
    pub fn vector_list(&self, env: Env) -> Result<Vec<NativeCollectionInfo>> {
        guard(&env, || {
            let engine = self.engine()?;
            Ok(engine
                .collections_in(self.ctx.ns)?
                .iter()
                .map(info_of)
                .collect())
        })
    }

    /// Drops a collection and its documents; returns whether it existed.
    #[napi]
    pub fn vector_drop(&self, env: Env, name: String) -> Result<bool> {
        guard(&env, || {
            let engine = self.engine()?;
            engine.drop_collection_in(self.ctx.ns, &name)
        })
    }
}

/// One open collection (internal: wrapped by `ts/vectors/collection.ts`).
#[napi]
pub struct NativeCollection {
    ctx: Rc<ReadCtx>,
    idx: Arc<CollectionIndex>,
}

/// Appends `hits` as [`athanor_core::wire::hits`] packs them.
fn pack_hits(out: &mut Vec<u8>, hits: &[Hit]) {
    athanor_core::wire::hits::put_hits(
        out,
        hits.iter()
            .map(|h| (h.score, &*h.id, h.metadata.as_deref())),
    );
}

fn options(k: u32, ef: u32, exact: bool, filter: Option<String>) -> CoreResult<SearchOptions> {
    if k == 0 || k > 10_000 {
        return Err(Error::invalid(format!(
            "k must be between 1 and 10000, got {k}"
        )));
    }
    if ef > 10_000 {
        return Err(Error::invalid(format!(
            "efSearch must be between 1 and 10000, got {ef}"
        )));
    }
    let filter = match filter {
        None => None,
        Some(f) => Some(Filter::parse(&f)?),
    };
    Ok(SearchOptions {
        k: k as usize,
        ef: (ef > 0).then_some(ef as usize),
        exact,
        filter,
    })
}

impl NativeCollection {
    fn new(ctx: Rc<ReadCtx>, idx: Arc<CollectionIndex>) -> Self {
        NativeCollection { ctx, idx }
    }

    fn live(&self) -> CoreResult<Arc<Engine>> {
        let engine = self.ctx.engine()?;
        // Other processes may have written this collection (or dropped it).
        engine.vectors().refresh(engine.store())?;
        if self.idx.is_dropped() {
            return Err(Error::new(
                Code::NotFound,
                format!(
                    "vector collection {:?} was dropped; create it again and reopen it",
                    athanor_core::store::split_collection(&self.idx.def.name).1
                ),
            ));
        }
        Ok(engine)
    }
}

#[napi]
impl NativeCollection {
    /// The stored definition.
    #[napi]
    pub fn info(&self, env: Env) -> Result<NativeCollectionInfo> {
        guard(&env, || Ok(info_of(&self.idx.def)))
    }

    /// Top-k search; returns packed hits (see `pack_hits`). `ef` 0 = the collection's default.
    // Positional arguments, as the TS wrapper passes them (no options object to decode per call).
    #[allow(clippy::too_many_arguments)]
    #[napi]
    pub fn search(
        &self,
        env: Env,
        query: &[f32],
        k: u32,
        ef: u32,
        exact: bool,
        filter: Option<String>,
        wait: Option<bool>,
    ) -> Result<Buffer> {
        let idx = &self.idx;
        guard(&env, || {
            self.live()?;
            idx.ready(wait != Some(false))?;
            let o = options(k, ef, exact, filter)?;
            let q = idx.prepare_query(query)?;
            let hits = idx.search(&q, &o);
            let mut out = Vec::with_capacity(4 + hits.len() * 32);
            pack_hits(&mut out, &hits);
            Ok(out)
        })
        .map(Buffer::from)
    }

    /// Searches many queries (`n * dimension` values, one after another) on all
    /// cores, off the JS thread. Resolves to `[nq u32]` then each query's packed hits.
    // Positional arguments, as the TS wrapper passes them (no options object to decode per call).
    #[allow(clippy::too_many_arguments)]
    #[napi(ts_return_type = "Promise<Buffer>")]
    pub fn search_batch(
        &self,
        env: Env,
        queries: &[f32],
        k: u32,
        ef: u32,
        exact: bool,
        filter: Option<String>,
        wait: Option<bool>,
    ) -> Result<AsyncTask<Guarded<SearchBatch>>> {
        let batch = guard(&env, || {
            self.live()?;
            if wait == Some(false) {
                self.idx.ready(false)?;
            }
            let o = options(k, ef, exact, filter)?;
            let dim = self.idx.def.params.dimension as usize;
            if !queries.len().is_multiple_of(dim) {
                return Err(Error::new(
                    Code::VectorDimension,
                    format!(
                        "queries hold {} values, not a multiple of the dimension {dim}",
                        queries.len()
                    ),
                ));
            }
            // Validated now, so a bad query fails the call rather than the promise.
            let prepared = queries
                .chunks_exact(dim)
                .map(|q| self.idx.prepare_query(q))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(SearchBatch {
                idx: self.idx.clone(),
                queries: prepared,
                options: o,
            })
        })?;
        Ok(guard::task(batch))
    }

    /// A document as stored: `[f32 LE × dimension][metadata json]`, or `null`.
    #[napi]
    pub fn get(&self, env: Env, id: String) -> Result<Option<Buffer>> {
        let doc = guard(&env, || {
            let engine = self.live()?;
            let store = engine.store();
            let mut reader = self.ctx.reader.borrow_mut();
            let txn = reader.fresh(store)?;
            let _g = store.guard();
            engine
                .vectors()
                .get_doc(store, txn, &self.idx, id.as_bytes())
        })?;
        Ok(doc.map(Buffer::from))
    }

    /// Live documents.
    #[napi]
    pub fn count(&self, env: Env) -> Result<u32> {
        guard(&env, || {
            self.live()?;
            Ok(self.idx.count() as u32)
        })
    }

    /// Index counters.
    #[napi]
    pub fn stats(&self, env: Env) -> Result<NativeIndexStats> {
        let s = guard(&env, || {
            self.live()?;
            Ok(self.idx.stats())
        })?;
        Ok(NativeIndexStats {
            count: s.count as u32,
            pending: s.pending as u32,
            tombstones: s.tombstones as u32,
            graph_points: s.graph_points as u32,
            rebuilds: s.rebuilds as u32,
            loaded_from_dump: s.loaded_from_dump,
            dumps: s.dumps as u32,
            dumped_bytes: s.dumped_bytes as f64,
            graph_bytes: s.graph_bytes as f64,
            state: if s.loading { "loading" } else { "ready" }.to_owned(),
            loaded: s.loaded as f64,
            total: s.total as f64,
        })
    }

    /// How a search with these options would run now (`k` 0 is taken as 1).
    #[napi]
    pub fn explain(
        &self,
        env: Env,
        k: u32,
        ef: u32,
        exact: bool,
        filter: Option<String>,
    ) -> Result<NativeSearchPlan> {
        let p = guard(&env, || {
            self.live()?;
            let o = options(k.max(1), ef, exact, filter)?;
            Ok(self.idx.plan(&o))
        })?;
        Ok(NativeSearchPlan {
            plan: match p.kind {
                PlanKind::Exact => "exact",
                PlanKind::Graph => "graph",
            }
            .to_owned(),
            reason: match p.reason {
                PlanReason::Requested => "requested",
                PlanReason::Small => "small",
                PlanReason::NotIndexed => "not-indexed",
                PlanReason::Cost => "cost",
            }
            .to_owned(),
            selectivity: p.selectivity,
            exact_cost: p.exact_cost,
            graph_cost: p.graph_cost,
            graph_visits: p.graph_visits,
        })
    }

    /// Resolves `true` once the indexer is idle for this collection: everything
    /// indexed and any background dump that was due written (`false` on timeout).
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn wait_idle(&self, env: Env, timeout_ms: u32) -> Result<AsyncTask<Guarded<WaitIdle>>> {
        let engine = guard(&env, || self.live())?;
        Ok(guard::task(WaitIdle(
            engine.vectors().idle_waiter(),
            self.idx.clone(),
            Duration::from_millis(timeout_ms as u64),
        )))
    }

    /// Starts a background rebuild of the graph.
    #[napi]
    pub fn rebuild(&self, env: Env) -> Result<()> {
        guard(&env, || {
            let engine = self.live()?;
            engine.vectors().request_rebuild(&self.idx);
            Ok(())
        })
    }

    /// Resolves `true` once every committed document is in the graph (`false` on timeout).
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn wait_indexed(
        &self,
        env: Env,
        timeout_ms: u32,
    ) -> Result<AsyncTask<Guarded<WaitIndexed>>> {
        guard(&env, || self.live())?;
        Ok(guard::task(WaitIndexed(
            self.idx.clone(),
            Duration::from_millis(timeout_ms as u64),
        )))
    }

    /// Checks that index and stored documents agree; returns the document count.
    #[napi]
    pub fn verify(&self, env: Env) -> Result<u32> {
        guard(&env, || {
            let engine = self.live()?;
            Ok(engine
                .vectors()
                .verify(engine.store(), &self.idx.def.name)? as u32)
        })
    }
}

/// Background batch search.
pub struct SearchBatch {
    idx: Arc<CollectionIndex>,
    queries: Vec<Vec<f32>>,
    options: SearchOptions,
}

impl Work for SearchBatch {
    type Output = Vec<u8>;
    type JsValue = Buffer;
    fn compute(&mut self) -> CoreResult<Vec<u8>> {
        let (idx, o) = (&self.idx, &self.options);
        // Waits for a loading index; fails as its loading did, if it did.
        idx.ready(true)?;
        let parts: Vec<Vec<u8>> = self
            .queries
            .par_iter()
            .map(|q| {
                let mut out = Vec::new();
                pack_hits(&mut out, &idx.search(q, o));
                out
            })
            .collect();
        Ok(athanor_core::wire::hits::pack_batch(&parts))
    }
    fn resolve(&mut self, _env: Env, output: Vec<u8>) -> Result<Buffer> {
        Ok(output.into())
    }
}

/// Background wait for the indexer.
pub struct WaitIndexed(Arc<CollectionIndex>, Duration);

impl Work for WaitIndexed {
    type Output = bool;
    type JsValue = bool;
    fn compute(&mut self) -> CoreResult<bool> {
        Ok(self.0.wait_indexed(self.1))
    }
    fn resolve(&mut self, _env: Env, output: bool) -> Result<bool> {
        Ok(output)
    }
}

/// Background wait for the indexer's idle pass.
pub struct WaitIdle(IdleWaiter, Arc<CollectionIndex>, Duration);

impl Work for WaitIdle {
    type Output = bool;
    type JsValue = bool;
    fn compute(&mut self) -> CoreResult<bool> {
        Ok(self.0.wait(&self.1, self.2))
    }
    fn resolve(&mut self, _env: Env, output: bool) -> Result<bool> {
        Ok(output)
    }
}
