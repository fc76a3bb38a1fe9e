//! Vector collections through the public engine API: real LMDB files, the real
//! writer and indexer threads.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use athanor_core::vector::{
    CollectionIndex, CollectionParams, Filter, Metric, PlanKind, PlanReason, SearchOptions,
};
use athanor_core::{Code, Durability, Engine, StoreOptions, TxBuilder, Value};
use proptest::prelude::*;
use tempfile::TempDir;

fn open(dir: &Path) -> Arc<Engine> {
    Engine::open(
        dir,
        StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        },
    )
    .expect("open")
}

fn params(dim: u32, metric: Metric) -> CollectionParams {
    CollectionParams::new(dim, metric)
}

fn opts(k: usize) -> SearchOptions {
    SearchOptions {
        k,
        ..SearchOptions::default()
    }
}

fn rng(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

#[test]
fn collections_are_created_listed_and_dropped() {
    let dir = TempDir::new().unwrap();
    let e = open(dir.path());
    let v = e.vectors();
    let c = v
        .create(e.store(), "docs", params(3, Metric::Cosine))
        .unwrap();
    assert_eq!(c.def.params.dimension, 3);
    // Same parameters: the same collection; different ones: refused.
    assert_eq!(
        v.create(e.store(), "docs", params(3, Metric::Cosine))
            .unwrap()
            .def
            .id,
        c.def.id
    );
    let err = v
        .create(e.store(), "docs", params(4, Metric::Cosine))
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    for bad in [
        params(0, Metric::L2),
        CollectionParams {
            m: 257,
            ..params(2, Metric::L2)
        },
    ] {
        assert_eq!(
            v.create(e.store(), "bad", bad).unwrap_err().code,
            Code::InvalidArgument
        );
    }
    assert!(v.get("bad").is_none());
    v.create(e.store(), "other", params(2, Metric::L2)).unwrap();
    let names: Vec<String> = v.list().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["docs", "other"]);
    e.commit_blocking(
        TxBuilder::new()
            .vector_upsert("docs", "a", &[1.0, 0.0, 0.0], "")
            .build()
            .unwrap(),
    )
    .unwrap();
    assert!(v.drop_collection(e.store(), "docs").unwrap());
    assert!(!v.drop_collection(e.store(), "docs").unwrap());
    drop(e);
    let e = open(dir.path());
    let names: Vec<String> = e.vectors().list().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["other"]);
    // A re-created collection starts empty.
    let c = e
        .vectors()
        .create(e.store(), "docs", params(3, Metric::Cosine))
        .unwrap();
    assert_eq!(c.count(), 0);
}

#[test]
fn vector_writes_commit_atomically_with_state_and_events() {
    let dir = TempDir::new().unwrap();
    let e = open(dir.path());
    let c = e
        .vectors()
        .create(e.store(), "docs", params(2, Metric::L2))
        .unwrap();
    e.commit_blocking(
        TxBuilder::new()
            .put("k", &Value::I64(1))
            .event_json("added", "{}")
            .vector_upsert("docs", "a", &[1.0, 2.0], r#"{"lang":"en"}"#)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(c.count(), 1);
    let q = c.prepare_query(&[1.0, 2.0]).unwrap();
    let hits = c.search(&q, &opts(5));
    assert_eq!(hits.len(), 1);
    assert_eq!(&*hits[0].id, "a");
    assert_eq!(hits[0].score, 0.0);
    assert_eq!(hits[0].metadata.as_deref().unwrap()["lang"], "en");

    // Refused before queueing: wrong dimension, missing collection. Nothing is written.
    let seq_before = {
        let t = e.begin_read().unwrap();
        e.store().commit_seq(&t).unwrap()
    };
    let wrong = TxBuilder::new()
        .put("k", &Value::I64(2))
        .vector_upsert("docs", "b", &[1.0, 2.0, 3.0], "")
        .build()
        .unwrap();
    assert_eq!(
        e.commit_blocking(wrong).unwrap_err().code,
        Code::VectorDimension
    );
    let missing = TxBuilder::new()
        .put("k", &Value::I64(2))
        .vector_delete("nope", "b")
        .build()
        .unwrap();
    assert_eq!(e.commit_blocking(missing).unwrap_err().code, Code::NotFound);
    // NaN is refused when the batch is parsed.
    let nan = TxBuilder::new()
        .vector_upsert("docs", "b", &[f32::NAN, 2.0], "")
        .build()
        .unwrap_err();
    assert_eq!(nan.code, Code::InvalidArgument);
    let t = e.begin_read().unwrap();
    assert_eq!(e.store().commit_seq(&t).unwrap(), seq_before);
    let _g = e.store().guard();
    let v = e.store().get(&t, b"k").unwrap().unwrap();
    assert_eq!(Value::decode(v.value).unwrap(), Value::I64(1));
    drop(_g);
    assert_eq!(c.count(), 1);
    assert_eq!(e.vectors().verify(e.store(), "docs").unwrap(), 1);
}

#[test]
fn zero_vectors_are_refused_under_cosine() {
    let dir = TempDir::new().unwrap();
    let e = open(dir.path());
    let c = e
        .vectors()
        .create(e.store(), "docs", params(2, Metric::Cosine))
        .unwrap();
    let b = TxBuilder::new()
        .vector_upsert("docs", "z", &[0.0, 0.0], "")
        .build()
        .unwrap();
    assert_eq!(
        e.commit_blocking(b).unwrap_err().code,
        Code::InvalidArgument
    );
    assert_eq!(
        c.prepare_query(&[0.0, 0.0]).unwrap_err().code,
        Code::InvalidArgument
    );
    assert_eq!(
        c.prepare_query(&[1.0]).unwrap_err().code,
        Code::VectorDimension
    );
    assert_eq!(c.count(), 0);
}

/// Brute-force reference: ids sorted by distance (ties by id), best first.
fn reference(docs: &HashMap<String, Vec<f32>>, q: &[f32], k: usize) -> Vec<(String, f32)> {
    let mut all: Vec<(String, f32)> = docs
        .iter()
        .map(|(id, v)| {
            let d: f32 = v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum();
            (id.clone(), d)
        })
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Documents loaded before the random writes: well past the 1000 live documents
/// under which every search is exact (`EXACT_THRESHOLD`), so the graph is walked.
const BASE_DOCS: u16 = 1500;
/// Dimension of the property test's vectors: enough that a walk beats a scan of [`BASE_DOCS`].
const DIM: usize = 32;

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// On an indexed collection past the exact-search threshold, after random
    /// upserts and deletes, exact search equals a brute-force reference, and the
    /// planned search walks the graph and returns live documents only, each scored
    /// on its current vector.
    #[test]
    fn search_matches_reference_after_random_writes(
        ops in proptest::collection::vec((0u8..3, 0u16..BASE_DOCS + 200, any::<u64>()), 1..400),
    ) {
        let dir = TempDir::new().unwrap();
        let e = open(dir.path());
        let c = e.vectors().create(e.store(), "p", params(DIM as u32, Metric::L2)).unwrap();
        let mut model: HashMap<String, Vec<f32>> = HashMap::new();
        let mut r = rng(1);
        let mut b = TxBuilder::new();
        for id in 0..BASE_DOCS {
            let v: Vec<f32> = (0..DIM).map(|_| r()).collect();
            b = b.vector_upsert("p", &format!("d{id}"), &v, "");
            model.insert(format!("d{id}"), v);
        }
        e.commit_blocking(b.build().unwrap()).unwrap();
        prop_assert!(c.wait_indexed(Duration::from_secs(60)));
        for chunk in ops.chunks(37) {
            let mut b = TxBuilder::new();
            for (op, id, seed) in chunk {
                let id = format!("d{id}");
                if *op == 0 {
                    b = b.vector_delete("p", &id);
                    model.remove(&id);
                } else {
                    let mut r = rng(*seed);
                    let v: Vec<f32> = (0..DIM).map(|_| r()).collect();
                    b = b.vector_upsert("p", &id, &v, "");
                    model.insert(id, v);
                }
            }
            e.commit_blocking(b.build().unwrap()).unwrap();
        }
        prop_assert_eq!(c.count(), model.len());
        let walk = SearchOptions { k: 10, ef: Some(16), ..SearchOptions::default() };
        let mut r = rng(7);
        for round in 0..4 {
            if round == 2 {
                prop_assert!(c.wait_indexed(Duration::from_secs(30)));
            }
            let q: Vec<f32> = (0..DIM).map(|_| r()).collect();
            let q = c.prepare_query(&q).unwrap();
            let exact = c.search(&q, &SearchOptions { k: 10, exact: true, ..SearchOptions::default() });
            let want = reference(&model, &q, 10);
            prop_assert_eq!(exact.len(), want.len());
            for (h, (id, d)) in exact.iter().zip(&want) {
                prop_assert!((-h.score * -h.score - d).abs() <= 1e-3 * (1.0 + d), "{} {} vs {} {}", h.id, h.score, id, d);
            }
            // Before indexing has caught up the pending documents may make a scan cheaper;
            // once it has, the walk is taken. Never the small-collection shortcut.
            let plan = c.plan(&walk);
            prop_assert_ne!(plan.reason, PlanReason::Small);
            if round >= 2 {
                prop_assert_eq!((plan.kind, plan.reason), (PlanKind::Graph, PlanReason::Cost));
            }
            let approx = c.search(&q, &walk);
            prop_assert_eq!(approx.len(), 10);
            for h in &approx {
                let v = model.get(&*h.id);
                prop_assert!(v.is_some(), "deleted id {} returned", h.id);
                let d: f32 = v.unwrap().iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum();
                prop_assert!((h.score * h.score - d).abs() <= 1e-3 * (1.0 + d), "{} scored {} but is at {}", h.id, h.score, d);
            }
        }
        prop_assert_eq!(e.vectors().verify(e.store(), "p").unwrap(), model.len());
    }
}

#[test]
fn graph_search_reads_its_writes_and_never_returns_deleted_ids() {
    let dir = TempDir::new().unwrap();
    let e = open(dir.path());
    let c = e
        .vectors()
        .create(e.store(), "g", params(16, Metric::Cosine))
        .unwrap();
    let mut r = rng(1);
    let n = 3000;
    let mut vecs = Vec::new();
    let mut b = TxBuilder::new();
    for i in 0..n {
        let v: Vec<f32> = (0..16).map(|_| r()).collect();
        b = b.vector_upsert(
            "g",
            &format!("v{i}"),
            &v,
            &format!(r#"{{"i":{i},"even":{}}}"#, i % 2 == 0),
        );
        vecs.push(v);
    }
    e.commit_blocking(b.build().unwrap()).unwrap();
    assert!(c.wait_indexed(Duration::from_secs(60)));
    // Delete a third; search for each deleted vector right away (no waiting).
    let mut b = TxBuilder::new();
    for i in (0..n).step_by(3) {
        b = b.vector_delete("g", &format!("v{i}"));
    }
    e.commit_blocking(b.build().unwrap()).unwrap();
    for i in (0..n).step_by(3).take(100) {
        let q = c.prepare_query(&vecs[i]).unwrap();
        for h in c.search(&q, &opts(10)) {
            let j: usize = h.id[1..].parse().unwrap();
            assert!(!j.is_multiple_of(3), "deleted {} returned", h.id);
        }
    }
    // An upsert is found by its own vector at once.
    let fresh: Vec<f32> = (0..16).map(|_| r()).collect();
    e.commit_blocking(
        TxBuilder::new()
            .vector_upsert("g", "new", &fresh, "")
            .build()
            .unwrap(),
    )
    .unwrap();
    let q = c.prepare_query(&fresh).unwrap();
    assert_eq!(&*c.search(&q, &opts(1))[0].id, "new");
    // Tombstones past the threshold trigger a background rebuild.
    assert!(c.wait_indexed(Duration::from_secs(60)));
    let s = c.stats();
    assert!(s.rebuilds >= 1, "{s:?}");
    assert_eq!(s.tombstones, 0);
    assert_eq!(s.count, n - n.div_ceil(3) + 1);
    // Filters: equality inside the walk, and a selective range answered exactly.
    let f = Filter::parse(r#"{"even":true}"#).unwrap();
    let hits = c.search(
        &q,
        &SearchOptions {
            k: 10,
            filter: Some(f),
            ..SearchOptions::default()
        },
    );
    assert_eq!(hits.len(), 10);
    for h in &hits {
        assert_eq!(h.metadata.as_deref().unwrap()["even"], true);
    }
    let f = Filter::parse(r#"{"i":{"gte":10,"lt":14}}"#).unwrap();
    let mut ids: Vec<String> = c
        .search(
            &q,
            &SearchOptions {
                k: 10,
                filter: Some(f),
                ..SearchOptions::default()
            },
        )
        .into_iter()
        .map(|h| h.id.to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["v10", "v11", "v13"]);
    drop(c);
    drop(e);
    // Reopen: the index is rebuilt from the stored documents and agrees with them.
    let e = open(dir.path());
    let c = e.vectors().get("g").unwrap();
    c.ready(true).unwrap();
    assert_eq!(
        e.vectors().verify(e.store(), "g").unwrap(),
        n - n.div_ceil(3) + 1
    );
    let q = c.prepare_query(&fresh).unwrap();
    assert_eq!(&*c.search(&q, &opts(1))[0].id, "new");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn dumps_are_loaded_when_valid_and_reconciled_or_ignored_otherwise() {
    let dir = TempDir::new().unwrap();
    let n = 1500;
    let mut r = rng(5);
    let vecs: Vec<Vec<f32>> = (0..n).map(|_| (0..12).map(|_| r()).collect()).collect();
    {
        let e = open(dir.path());
        let c = e
            .vectors()
            .create(e.store(), "d", params(12, Metric::L2))
            .unwrap();
        let mut b = TxBuilder::new();
        for (i, v) in vecs.iter().enumerate() {
            b = b.vector_upsert("d", &format!("v{i}"), v, &format!(r#"{{"i":{i}}}"#));
        }
        e.commit_blocking(b.build().unwrap()).unwrap();
        assert!(c.wait_indexed(Duration::from_secs(60)));
    }
    let dump = dir.path().join("index").join("d");
    assert!(dump.join("manifest.json").exists());
    // Current dump: loaded as is, nothing to index.
    let saved = dir.path().join("saved");
    {
        let e = open(dir.path());
        let c = e.vectors().get("d").unwrap();
        c.ready(true).unwrap();
        let s = c.stats();
        assert_eq!(
            (s.count, s.pending, s.graph_points, s.tombstones),
            (n, 0, n, 0)
        );
        let q = c.prepare_query(&vecs[7]).unwrap();
        let h = &c.search(&q, &opts(1))[0];
        assert_eq!(&*h.id, "v7");
        assert_eq!(h.metadata.as_deref().unwrap()["i"], 7);
        copy_dir(&dump, &saved);
        // Change documents after the saved dump: replace v1, delete v2, add w.
        e.commit_blocking(
            TxBuilder::new()
                .vector_upsert("d", "v1", &vecs[9], "")
                .vector_delete("d", "v2")
                .vector_upsert("d", "w", &vecs[3], "")
                .build()
                .unwrap(),
        )
        .unwrap();
    }
    // An older dump is reconciled against the store: changed documents are re-indexed,
    // deleted ones become tombstones.
    std::fs::remove_dir_all(&dump).unwrap();
    copy_dir(&saved, &dump);
    {
        let e = open(dir.path());
        let c = e.vectors().get("d").unwrap();
        c.ready(true).unwrap();
        let s = c.stats();
        assert_eq!(s.count, n);
        assert_eq!(s.tombstones, 2, "{s:?}");
        assert!(s.pending <= 2, "{s:?}");
        assert_eq!(e.vectors().verify(e.store(), "d").unwrap(), n);
        let q = c.prepare_query(&vecs[2]).unwrap();
        assert!(c.search(&q, &opts(5)).iter().all(|h| &*h.id != "v2"));
        let q = c.prepare_query(&vecs[9]).unwrap();
        let mut ids: Vec<String> = c
            .search(&q, &opts(2))
            .iter()
            .map(|h| h.id.to_string())
            .collect();
        ids.sort();
        assert_eq!(ids, ["v1", "v9"]);
    }
    // A damaged dump is ignored: the index is rebuilt from the documents.
    let data = dump.join("graph.bin");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    {
        let e = open(dir.path());
        let c = e.vectors().get("d").unwrap();
        c.ready(true).unwrap();
        assert!(c.wait_indexed(Duration::from_secs(60)));
        let q = c.prepare_query(&vecs[3]).unwrap();
        let mut ids: Vec<String> = c
            .search(&q, &opts(2))
            .iter()
            .map(|h| h.id.to_string())
            .collect();
        ids.sort();
        assert_eq!(ids, ["v3", "w"]);
    }
    // Dropping a collection removes its dump.
    let e = open(dir.path());
    assert!(e.vectors().drop_collection(e.store(), "d").unwrap());
    assert!(!dump.exists());
}

/// Copies a database directory as a crash would leave it: the engine still
/// open, so no close-time dump; LMDB's lock file is left behind.
fn copy_as_crashed(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() == "lock.mdb" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_as_crashed(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn commit_seq(e: &Engine) -> u64 {
    let t = e.begin_read().unwrap();
    e.store().commit_seq(&t).unwrap()
}

#[test]
fn background_dumps_survive_a_crash() {
    let dir = TempDir::new().unwrap();
    let (n, dim) = (3000, 16);
    let mut r = rng(17);
    let mut docs: HashMap<String, Vec<f32>> = (0..n)
        .map(|i| (format!("v{i}"), (0..dim).map(|_| r()).collect()))
        .collect();
    let e = open(dir.path());
    let c = e
        .vectors()
        .create(e.store(), "d", params(dim as u32, Metric::L2))
        .unwrap();
    let mut b = TxBuilder::new();
    for i in 0..n {
        let id = format!("v{i}");
        b = b.vector_upsert("d", &id, &docs[&id], "");
    }
    e.commit_blocking(b.build().unwrap()).unwrap();
    // The bulk load is dumped in the background, with the database still open.
    assert!(e.vectors().wait_idle(&c, Duration::from_secs(120)));
    assert_eq!(c.stats().dumps, 1, "{:?}", c.stats());
    let manifest = dir.path().join("index").join("d").join("manifest.json");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    // Nothing was committed since the bulk load: the dump reflects the last commit.
    assert_eq!(m["seq"].as_u64(), Some(commit_seq(&e)));
    let current = TempDir::new().unwrap();
    copy_as_crashed(dir.path(), current.path());
    // As if the crash came in the middle of replacing this dump by a newer one:
    // the old one moved aside, the new one still a temporary folder.
    let index = current.path().join("index");
    std::fs::rename(index.join("d"), index.join(format!(".old-{}-7", c.def.id))).unwrap();
    let tmp = index.join(format!(".tmp-{}-1-8", c.def.id));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("graph.bin"), b"partial").unwrap();
    let docs_at_dump = docs.clone();

    // A few changes after the dump (too few for another one): replace, delete, add.
    let mut b = TxBuilder::new();
    for i in 0..5 {
        let id = format!("v{i}");
        let v: Vec<f32> = (0..dim).map(|_| r()).collect();
        b = b.vector_upsert("d", &id, &v, "");
        docs.insert(id, v);
    }
    for i in 5..8 {
        let id = format!("v{i}");
        b = b.vector_delete("d", &id);
        docs.remove(&id);
    }
    for i in 0..2 {
        let id = format!("w{i}");
        let v: Vec<f32> = (0..dim).map(|_| r()).collect();
        b = b.vector_upsert("d", &id, &v, "");
        docs.insert(id, v);
    }
    e.commit_blocking(b.build().unwrap()).unwrap();
    assert!(e.vectors().wait_idle(&c, Duration::from_secs(60)));
    assert_eq!(c.stats().dumps, 1, "{:?}", c.stats());
    let lagging = TempDir::new().unwrap();
    copy_as_crashed(dir.path(), lagging.path());

    let check = |crashed: &Path, docs: &HashMap<String, Vec<f32>>, reconciled: bool| {
        let e = open(crashed);
        let c = e.vectors().get("d").unwrap();
        c.ready(true).unwrap();
        let s = c.stats();
        assert!(s.loaded_from_dump, "{s:?}");
        assert_eq!(s.count, docs.len());
        if reconciled {
            // Only the changes since the dump are indexed again.
            assert!(s.pending <= 7 && s.tombstones == 8, "{s:?}");
        } else {
            assert_eq!(
                (s.pending, s.tombstones, s.graph_points),
                (0, 0, n),
                "{s:?}"
            );
        }
        assert_eq!(e.vectors().verify(e.store(), "d").unwrap(), docs.len());
        assert!(c.wait_indexed(Duration::from_secs(60)));
        let mut r = rng(99);
        for _ in 0..20 {
            let q: Vec<f32> = (0..dim).map(|_| r()).collect();
            let exact = c.search(
                &c.prepare_query(&q).unwrap(),
                &SearchOptions {
                    k: 10,
                    exact: true,
                    ..SearchOptions::default()
                },
            );
            let got: Vec<String> = exact.iter().map(|h| h.id.to_string()).collect();
            let want: Vec<String> = reference(docs, &q, 10).into_iter().map(|x| x.0).collect();
            assert_eq!(got, want);
        }
        // The graph finds the stored documents at their stored vectors (HNSW is
        // approximate: allow a rare miss) and never returns a deleted one.
        let mut found = 0;
        for (id, v) in docs {
            let hits = c.search(&c.prepare_query(v).unwrap(), &opts(3));
            assert!(hits.iter().all(|h| docs.contains_key(&*h.id)));
            found += usize::from(&*hits[0].id == id);
        }
        assert!(found * 100 >= docs.len() * 99, "{found} of {}", docs.len());
    };
    check(current.path(), &docs_at_dump, false);
    // The old dump was put back and the leftovers removed.
    let mut left: Vec<String> = std::fs::read_dir(&index)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["d"]);
    check(lagging.path(), &docs, true);
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn background_dumps_of_a_chunked_bulk_load_write_less_than_twice_the_final_index() {
    let dir = TempDir::new().unwrap();
    let (n, dim, chunk) = (5000, 16, 100);
    let mut r = rng(23);
    let background = {
        let e = open(dir.path());
        let c = e
            .vectors()
            .create(e.store(), "d", params(dim as u32, Metric::L2))
            .unwrap();
        for start in (0..n).step_by(chunk) {
            let mut b = TxBuilder::new();
            for i in start..start + chunk {
                let v: Vec<f32> = (0..dim).map(|_| r()).collect();
                b = b.vector_upsert("d", &format!("v{i}"), &v, "");
            }
            e.commit_blocking(b.build().unwrap()).unwrap();
            // Every chunk is followed by an idle indexer: the most chances to dump.
            assert!(e.vectors().wait_idle(&c, Duration::from_secs(120)));
        }
        c.stats()
    };
    assert!(background.dumps >= 2, "{background:?}");
    // Closed: the dump in place holds the final index.
    let last = folder_bytes(&dir.path().join("index").join("d"));
    assert!(
        background.dumped_bytes <= 2 * last,
        "background dumps wrote {} bytes for a final index of {last}: {background:?}",
        background.dumped_bytes
    );
}

#[test]
fn filtered_searches_scan_exactly_when_cheaper_and_walk_the_graph_otherwise() {
    let dir = TempDir::new().unwrap();
    let (n, dim) = (6000, 64);
    let e = open(dir.path());
    let c = e
        .vectors()
        .create(e.store(), "d", params(dim as u32, Metric::Cosine))
        .unwrap();
    let mut r = rng(31);
    let mut b = TxBuilder::new();
    let mut docs = HashMap::new();
    for i in 0..n {
        let v: Vec<f32> = (0..dim).map(|_| r()).collect();
        b = b.vector_upsert(
            "d",
            &format!("v{i}"),
            &v,
            &format!(r#"{{"b":{}}}"#, i % 100),
        );
        docs.insert(format!("v{i}"), v);
    }
    e.commit_blocking(b.build().unwrap()).unwrap();
    assert!(c.wait_indexed(Duration::from_secs(120)));
    let with = |f: &str| SearchOptions {
        k: 10,
        filter: Some(Filter::parse(f).unwrap()),
        ..SearchOptions::default()
    };
    let narrow = c.plan(&with(r#"{"b":{"lt":6}}"#));
    assert_eq!(
        (narrow.kind, narrow.reason),
        (PlanKind::Exact, PlanReason::Cost),
        "{narrow:?}"
    );
    let broad = c.plan(&with(r#"{"b":{"lt":90}}"#));
    assert_eq!(
        (broad.kind, broad.reason),
        (PlanKind::Graph, PlanReason::Cost),
        "{broad:?}"
    );
    assert_eq!(c.plan(&opts(10)).kind, PlanKind::Graph);
    // Searches measure their walks; the choice holds once they have.
    let mut q = rng(32);
    for _ in 0..50 {
        let v: Vec<f32> = (0..dim).map(|_| q()).collect();
        let v = c.prepare_query(&v).unwrap();
        c.search(&v, &opts(10));
        let hits = c.search(&v, &with(r#"{"b":{"lt":90}}"#));
        assert_eq!(hits.len(), 10);
    }
    assert_eq!(c.plan(&with(r#"{"b":{"lt":6}}"#)).kind, PlanKind::Exact);
    assert_eq!(c.plan(&with(r#"{"b":{"lt":90}}"#)).kind, PlanKind::Graph);
}

/// Searches with the same filter text reuse what the filter answered for each
/// document; a document whose metadata is replaced, or that is deleted, must
/// still drop out of (or join) the results at once, in the graph walk and the
/// exact scan alike.
#[test]
fn repeated_filters_follow_metadata_changes_and_deletes() {
    let dir = TempDir::new().unwrap();
    let (n, dim) = (3000, 16);
    let e = open(dir.path());
    let c = e
        .vectors()
        .create(e.store(), "m", params(dim as u32, Metric::Cosine))
        .unwrap();
    let mut r = rng(41);
    let mut vecs = Vec::new();
    let mut b = TxBuilder::new();
    for i in 0..n {
        let v: Vec<f32> = (0..dim).map(|_| r()).collect();
        b = b.vector_upsert("m", &format!("v{i}"), &v, &format!(r#"{{"b":{}}}"#, i % 2));
        vecs.push(v);
    }
    e.commit_blocking(b.build().unwrap()).unwrap();
    assert!(c.wait_indexed(Duration::from_secs(60)));
    let filter = r#"{"b":0}"#;
    let ids = |exact: bool| -> Vec<String> {
        let q = c.prepare_query(&vecs[0]).unwrap();
        let hits = c.search(
            &q,
            &SearchOptions {
                k: 10,
                exact,
                filter: Some(Filter::parse(filter).unwrap()),
                ..SearchOptions::default()
            },
        );
        assert_eq!(hits.len(), 10);
        for h in &hits {
            assert_eq!(h.metadata.as_deref().unwrap()["b"], 0, "{}", h.id);
        }
        hits.into_iter().map(|h| h.id.to_string()).collect()
    };
    let both = |want_first: Option<&str>, absent: &[&str]| {
        for exact in [false, true] {
            // Twice: the second search reads the answers the first one cached.
            for _ in 0..2 {
                let got = ids(exact);
                if let Some(w) = want_first {
                    assert_eq!(got[0], w, "exact={exact}: {got:?}");
                }
                for a in absent {
                    assert!(!got.iter().any(|g| g == a), "exact={exact}: {a} in {got:?}");
                }
            }
        }
    };
    both(Some("v0"), &[]);
    // v0 no longer matches: its new version must not be returned.
    e.commit_blocking(
        TxBuilder::new()
            .vector_upsert("m", "v0", &vecs[0], r#"{"b":1}"#)
            .build()
            .unwrap(),
    )
    .unwrap();
    both(None, &["v0"]);
    assert!(c.wait_indexed(Duration::from_secs(60)));
    both(None, &["v0"]);
    // v1 now matches, with v0's vector: it comes first.
    e.commit_blocking(
        TxBuilder::new()
            .vector_upsert("m", "v1", &vecs[0], r#"{"b":0}"#)
            .build()
            .unwrap(),
    )
    .unwrap();
    both(Some("v1"), &["v0"]);
    assert!(c.wait_indexed(Duration::from_secs(60)));
    both(Some("v1"), &["v0"]);
    // Deleted: gone from the results, though its answer was cached.
    e.commit_blocking(TxBuilder::new().vector_delete("m", "v1").build().unwrap())
        .unwrap();
    both(None, &["v0", "v1"]);
}

/// A built graph is held once, in its compact form (vectors and links in flat
/// arrays): after a bulk load, after small commits are merged in, and after its
/// dump is loaded, the graph's memory per point is the vector plus little more
/// than its links. Small commits after the build are searchable at once.
#[test]
fn built_graph_is_held_once_in_compact_form() {
    let dir = TempDir::new().unwrap();
    let (n, dim) = (3000usize, 64usize);
    let mut r = rng(23);
    let mut vecs: Vec<Vec<f32>> = Vec::new();
    // The vector, layer-0 links (at most 2 * m = 32) and a few words of offsets and upper layers.
    let bound = (dim * 4 + 32 * 4 + 32) as f64;
    let per_point = |c: &CollectionIndex| {
        let s = c.stats();
        s.graph_bytes as f64 / s.graph_points as f64
    };
    {
        let e = open(dir.path());
        let c = e
            .vectors()
            .create(e.store(), "d", params(dim as u32, Metric::L2))
            .unwrap();
        let mut b = TxBuilder::new();
        for i in 0..n {
            let v: Vec<f32> = (0..dim).map(|_| r()).collect();
            b = b.vector_upsert("d", &format!("v{i}"), &v, "");
            vecs.push(v);
        }
        e.commit_blocking(b.build().unwrap()).unwrap();
        assert!(c.wait_indexed(Duration::from_secs(120)));
        assert_eq!(c.stats().graph_points, n);
        assert!(per_point(&c) <= bound, "{} > {bound}", per_point(&c));
        assert_eq!(c.stats().rebuilds, 0);
        // Small commits: each is found at once; half the base's size in all merges them in.
        for chunk in 0..(n / 2 / 100) {
            let mut b = TxBuilder::new();
            for i in 0..100 {
                let v: Vec<f32> = (0..dim).map(|_| r()).collect();
                b = b.vector_upsert("d", &format!("w{}", chunk * 100 + i), &v, "");
                vecs.push(v);
            }
            e.commit_blocking(b.build().unwrap()).unwrap();
            let j = vecs.len() - 7;
            let q = c.prepare_query(&vecs[j]).unwrap();
            assert_eq!(&*c.search(&q, &opts(1))[0].id, format!("w{}", j - n));
        }
        assert!(c.wait_indexed(Duration::from_secs(120)));
        let s = c.stats();
        assert_eq!(
            (s.graph_points, s.pending, s.rebuilds),
            (vecs.len(), 0, 1),
            "{s:?}"
        );
        assert!(per_point(&c) <= bound, "{} > {bound}", per_point(&c));
    }
    let e = open(dir.path());
    let c = e.vectors().get("d").unwrap();
    c.ready(true).unwrap();
    let s = c.stats();
    assert!(s.loaded_from_dump, "{s:?}");
    assert_eq!((s.graph_points, s.pending), (vecs.len(), 0), "{s:?}");
    assert!(per_point(&c) <= bound, "{} > {bound}", per_point(&c));
    for j in [0, 1234, n + 5, vecs.len() - 1] {
        let q = c.prepare_query(&vecs[j]).unwrap();
        let want = if j < n {
            format!("v{j}")
        } else {
            format!("w{}", j - n)
        };
        assert_eq!(&*c.search(&q, &opts(1))[0].id, want);
    }
}

/// Searches running on rayon's pool (as a batch search runs them) while the indexer
/// rebuilds and swaps the graphs: the graph a swap replaces is dropped after the
/// indexer lets go of its locks, since an HNSW graph's drop runs on that same pool,
/// whose workers may be waiting for those locks. Before, this deadlocked (in most runs
/// of this test); a watchdog turns a deadlock into a failure.
#[test]
fn searches_on_the_rayon_pool_never_deadlock_against_rebuilds() {
    let (done, finished) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        searches_during_rebuilds();
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(120))
        .expect("searches and rebuilds finished within 120 s (a deadlock otherwise)");
}

fn searches_during_rebuilds() {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = TempDir::new().unwrap();
    let e = open(dir.path());
    let c = e
        .vectors()
        .create(e.store(), "r", params(8, Metric::L2))
        .unwrap();
    let mut r = rng(7);
    let mut vec_of = move || -> Vec<f32> { (0..8).map(|_| r()).collect() };
    let mut b = TxBuilder::new();
    for i in 0..600 {
        b = b.vector_upsert("r", &format!("v{i}"), &vec_of(), "");
    }
    e.commit_blocking(b.build().unwrap()).unwrap();
    assert!(c.wait_indexed(Duration::from_secs(60)));
    let queries: Vec<_> = (0..64)
        .map(|_| c.prepare_query(&vec_of()).unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let searched = Arc::new(AtomicUsize::new(0));
    let searcher = {
        let (c, stop, searched) = (c.clone(), stop.clone(), searched.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let hits: Vec<usize> = queries
                    .par_iter()
                    .map(|q| c.search(q, &opts(5)).len())
                    .collect();
                assert!(hits.iter().all(|&n| n > 0));
                searched.fetch_add(hits.len(), Ordering::Relaxed);
            }
        })
    };
    // Each round deletes a third of the documents and adds as many: past the tombstone
    // threshold, so the indexer rebuilds and swaps the graphs while searches run.
    let before = c.stats().rebuilds;
    let mut next = 600;
    for round in 0..12 {
        let mut b = TxBuilder::new();
        for i in (round * 200)..(round * 200 + 200) {
            b = b.vector_delete("r", &format!("v{i}"));
            b = b.vector_upsert("r", &format!("v{next}"), &vec_of(), "");
            next += 1;
        }
        e.commit_blocking(b.build().unwrap()).unwrap();
        assert!(c.wait_indexed(Duration::from_secs(60)), "round {round}");
    }
    stop.store(true, Ordering::Relaxed);
    searcher.join().unwrap();
    assert!(c.stats().rebuilds >= before + 6, "{:?}", c.stats());
    assert!(searched.load(Ordering::Relaxed) > 0);
}
