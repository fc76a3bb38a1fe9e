//! Namespaces in the key encoding: what one namespace writes, no other reads; ids,
//! streams and idempotency keys are each namespace's own; dropping one removes
//! everything it held and fails its queued writes.

use std::sync::Arc;

use athanor_core::store::EventQuery;
use athanor_core::txn::Expected;
use athanor_core::wire::events::unpack;
use athanor_core::{Code, Engine, Outcome, StoreOptions, TxBuilder, Value};
use proptest::prelude::*;
use tempfile::TempDir;

fn open(dir: &std::path::Path) -> Arc<Engine> {
    Engine::open(dir, StoreOptions::default()).expect("open")
}

fn commit_in(e: &Engine, ns: u32, b: TxBuilder) -> athanor_core::Result<athanor_core::CommitInfo> {
    let mut batch = b.build().expect("valid batch");
    batch.namespace = ns;
    e.commit_blocking(batch)
}

fn get_in(e: &Engine, ns: u32, key: &str) -> Option<Value> {
    let store = e.store();
    let txn = store.begin_read().unwrap();
    let _g = store.guard();
    store
        .space(ns)
        .get(&txn, key.as_bytes())
        .unwrap()
        .map(|s| Value::decode(s.value).unwrap())
}

fn event_ids(e: &Engine, ns: u32, event_type: Option<&str>) -> Vec<u64> {
    let store = e.store();
    let txn = store.begin_read().unwrap();
    let _g = store.guard();
    let q = EventQuery {
        from: 1,
        event_type: event_type.map(str::to_owned),
        ..EventQuery::default()
    };
    let pack = store.space(ns).read_events(&txn, &q).unwrap();
    unpack(&pack).unwrap().iter().map(|e| e.id).collect()
}

#[test]
fn a_namespace_sees_only_its_own_state_and_events() {
    let dir = TempDir::new().unwrap();
    let e = open(dir.path());
    let a = e.create_namespace("a", "{}").unwrap();
    let b = e.create_namespace("b", "{}").unwrap();
    assert!(a.id > 0 && b.id > a.id);
    commit_in(
        &e,
        0,
        TxBuilder::new()
            .put("k", &Value::I64(0))
            .event_json("t", "{}"),
    )
    .unwrap();
    commit_in(
        &e,
        a.id,
        TxBuilder::new()
            .put("k", &Value::I64(1))
            .event_json("t", "{}"),
    )
    .unwrap();
    for i in 0..3 {
        commit_in(
            &e,
            b.id,
            TxBuilder::new()
                .put("k", &Value::I64(2))
                .event_json("u", &format!("{{\"i\":{i}}}")),
        )
        .unwrap();
    }
    assert_eq!(get_in(&e, 0, "k"), Some(Value::I64(0)));
    assert_eq!(get_in(&e, a.id, "k"), Some(Value::I64(1)));
    assert_eq!(get_in(&e, b.id, "k"), Some(Value::I64(2)));
    // Event ids are dense per namespace, from 1.
    assert_eq!(event_ids(&e, 0, None), vec![1]);
    assert_eq!(event_ids(&e, a.id, None), vec![1]);
    assert_eq!(event_ids(&e, b.id, None), vec![1, 2, 3]);
    assert_eq!(event_ids(&e, b.id, Some("t")), Vec::<u64>::new());
    assert_eq!(event_ids(&e, b.id, Some("u")), vec![1, 2, 3]);
    // A namespace's keys listed whole carry no trace of its id.
    let store = e.store();
    let txn = store.begin_read().unwrap();
    let listed = store.space(b.id).list_state(&txn, b"", None, 10).unwrap();
    assert_eq!(
        listed.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![b"k".to_vec()]
    );
    assert_eq!(
        store
            .space(0)
            .list_state(&txn, b"", None, 10)
            .unwrap()
            .len(),
        1
    );
    drop(txn);
    let report = athanor_core::verify::report(&e).unwrap();
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(
        report
            .namespaces
            .iter()
            .map(|n| (n.name.as_str(), n.events))
            .collect::<Vec<_>>(),
        vec![("a", 1), ("b", 3)]
    );
}

#[test]
fn streams_and_idempotency_keys_are_per_namespace() {
    let dir = TempDir::new().unwrap();
    let e = open(dir.path());
    let a = e.create_namespace("a", "{}").unwrap().id;
    let s = |ns| {
        commit_in(
            &e,
            ns,
            TxBuilder::new()
                .append_json("order-1", Expected::NoStream, &[("placed", "{}")])
                .idempotency_key("once"),
        )
    };
    assert_eq!(s(0).unwrap().outcome, Outcome::Applied);
    // The same stream and key in another namespace are new there.
    assert_eq!(s(a).unwrap().outcome, Outcome::Applied);
    assert_eq!(s(a).unwrap().outcome, Outcome::Duplicate);
    let txn = e.store().begin_read().unwrap();
    assert_eq!(
        e.store().space(a).stream_version(&txn, b"order-1").unwrap(),
        1
    );
    assert!(e
        .store()
        .space(a)
        .idempotency_record(&txn, b"once")
        .unwrap()
        .is_some());
    let b = e.store().space(12345);
    assert_eq!(b.stream_version(&txn, b"order-1").unwrap(), 0);
}

#[test]
fn dropping_a_namespace_removes_its_rows_and_fails_its_writes() {
    let dir = TempDir::new().unwrap();
    let e = open(dir.path());
    let a = e.create_namespace("a", "{\"label\":\"x\"}").unwrap();
    let keep = e.create_namespace("keep", "{}").unwrap();
    for ns in [a.id, keep.id] {
        commit_in(
            &e,
            ns,
            TxBuilder::new()
                .put("k", &Value::I64(1))
                .event_json("t", "{}")
                .append_json("s", Expected::Any, &[("x", "{}")])
                .idempotency_key("i"),
        )
        .unwrap();
    }
    assert_eq!(e.drop_namespace("a").unwrap().unwrap(), a);
    assert!(e.drop_namespace("a").unwrap().is_none());
    assert_eq!(get_in(&e, a.id, "k"), None);
    assert_eq!(event_ids(&e, a.id, None), Vec::<u64>::new());
    assert_eq!(get_in(&e, keep.id, "k"), Some(Value::I64(1)));
    assert_eq!(event_ids(&e, keep.id, None), vec![1, 2]);
    let err = commit_in(&e, a.id, TxBuilder::new().put("k", &Value::I64(2))).unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    assert_eq!(get_in(&e, a.id, "k"), None);
    // A namespace created again under the name gets a new id: the old handle stays cut off.
    let again = e.create_namespace("a", "{}").unwrap();
    assert_ne!(again.id, a.id);
    let txn = e.store().begin_read().unwrap();
    let names: Vec<String> = e
        .store()
        .list_namespaces(&txn)
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec!["a", "keep"]);
    drop(txn);
    assert!(athanor_core::verify::report(&e).unwrap().ok());
}

#[test]
fn namespaces_survive_reopening_and_bad_names_are_refused() {
    let dir = TempDir::new().unwrap();
    {
        let e = open(dir.path());
        let a = e.create_namespace("acme", "{}").unwrap().id;
        commit_in(
            &e,
            a,
            TxBuilder::new()
                .put("k", &Value::I64(7))
                .event_json("t", "{}"),
        )
        .unwrap();
        assert_eq!(
            e.create_namespace("acme", "{}").unwrap_err().code,
            Code::InvalidArgument
        );
        for bad in ["", "Acme", "a/b", "default"] {
            assert_eq!(
                e.create_namespace(bad, "{}").unwrap_err().code,
                Code::InvalidArgument
            );
        }
        // A vector write names a collection of its own namespace: the default one's
        // collection of the same name is not it.
        let params =
            || athanor_core::vector::CollectionParams::new(1, athanor_core::vector::Metric::L2);
        e.create_collection("c", params()).unwrap();
        let mut batch = TxBuilder::new()
            .vector_upsert("c", "d", &[1.0], "")
            .build()
            .unwrap();
        batch.namespace = a;
        assert_eq!(e.precheck(&batch).unwrap_err().code, Code::NotFound);
        e.create_collection_in(a, "c", params()).unwrap();
        e.commit_blocking(batch).unwrap();
        assert_eq!(e.collection_in(a, "c").unwrap().unwrap().count(), 1);
        assert_eq!(e.collection_in(0, "c").unwrap().unwrap().count(), 0);
        // A name spelling the qualified form is refused, never resolved.
        let crafted = format!("\0{a}\0c");
        assert_eq!(
            e.collection_in(0, &crafted).unwrap_err().code,
            Code::InvalidArgument
        );
        assert_eq!(
            e.create_collection(&crafted, params()).unwrap_err().code,
            Code::InvalidArgument
        );
    }
    let e = open(dir.path());
    let txn = e.store().begin_read().unwrap();
    let acme = e.store().namespace(&txn, "acme").unwrap().unwrap();
    drop(txn);
    assert_eq!(get_in(&e, acme.id, "k"), Some(Value::I64(7)));
    commit_in(&e, acme.id, TxBuilder::new().event_json("t", "{}")).unwrap();
    assert_eq!(event_ids(&e, acme.id, None), vec![1, 2]);
}

#[test]
fn a_chained_database_chains_each_namespace() {
    let dir = TempDir::new().unwrap();
    let o = StoreOptions {
        chain: athanor_core::ChainOptions {
            enable: true,
            hmac_key: None,
        },
        ..StoreOptions::default()
    };
    let e = Engine::open(dir.path(), o).unwrap();
    let a = e.create_namespace("a", "{}").unwrap().id;
    for i in 0..4 {
        commit_in(
            &e,
            a,
            TxBuilder::new().event_json("t", &format!("{{\"i\":{i}}}")),
        )
        .unwrap();
        commit_in(&e, 0, TxBuilder::new().event_json("t", "{}")).unwrap();
    }
    let txn = e.store().begin_read().unwrap();
    let p = e.store().space(a).event_proof(&txn, 3).unwrap().unwrap();
    let prev = e.store().space(a).event_proof(&txn, 2).unwrap().unwrap();
    assert_eq!(p.prev, prev.hash);
    assert_eq!(
        athanor_core::chain_link(p.kind, None, &p.prev, 3, &p.record).unwrap(),
        p.hash
    );
    drop(txn);
    assert!(athanor_core::verify::report(&e).unwrap().ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Whatever keys two namespaces write, each reads back exactly its own.
    #[test]
    fn crafted_keys_never_cross_namespaces(keys in prop::collection::vec("[\\x00-\\x7f\u{80}-\u{10ffff}]{1,12}", 1..12)) {
        let dir = TempDir::new().unwrap();
        let e = open(dir.path());
        let a = e.create_namespace("a", "{}").unwrap().id;
        let b = e.create_namespace("b", "{}").unwrap().id;
        let mut tx_a = TxBuilder::new();
        for k in &keys {
            tx_a = tx_a.put(k, &Value::I64(1));
        }
        let ok = commit_in(&e, a, tx_a);
        prop_assume!(ok.is_ok());
        for k in &keys {
            prop_assert_eq!(get_in(&e, b, k), None);
            prop_assert_eq!(get_in(&e, 0, k), None);
            prop_assert_eq!(get_in(&e, a, k), Some(Value::I64(1)));
        }
        let txn = e.store().begin_read().unwrap();
        prop_assert!(e.store().space(b).list_state(&txn, b"", None, 100).unwrap().is_empty());
        prop_assert!(e.store().space(0).list_state(&txn, b"", None, 100).unwrap().is_empty());
    }
}

#[test]
fn the_content_digest_covers_namespaces_whatever_their_ids() {
    let digest = |order: &[&str], value: i64| {
        let dir = TempDir::new().unwrap();
        let e = open(dir.path());
        for name in order {
            e.create_namespace(name, "{}").unwrap();
        }
        let txn = e.store().begin_read().unwrap();
        let id = |n: &str| e.store().namespace(&txn, n).unwrap().unwrap().id;
        let (a, b) = (id("a"), id("b"));
        drop(txn);
        commit_in(
            &e,
            a,
            TxBuilder::new()
                .put("k", &Value::I64(value))
                .event_json("t", "{}"),
        )
        .unwrap();
        commit_in(
            &e,
            b,
            TxBuilder::new().append_json("s", Expected::Any, &[("u", "{}")]),
        )
        .unwrap();
        // A collection of the same name in each, created in the namespaces' order (so
        // the collection ids differ between the two orders too), a document in each.
        for name in order {
            let (ns, x) = if *name == "a" { (a, 1.0f32) } else { (b, 2.0) };
            let params =
                athanor_core::vector::CollectionParams::new(1, athanor_core::vector::Metric::L2);
            e.create_collection_in(ns, "v", params).unwrap();
            commit_in(&e, ns, TxBuilder::new().vector_upsert("v", "d", &[x], "")).unwrap();
        }
        let live = e.store().content_digest().unwrap();
        let copy = TempDir::new().unwrap();
        e.store().copy_compacted(copy.path()).unwrap();
        assert_eq!(athanor_core::backup::digest_dir(copy.path()).unwrap(), live);
        live
    };
    let first = digest(&["a", "b"], 1);
    // The same namespaces and collections created in the other order (other namespace
    // and collection ids): the same digest.
    assert_eq!(digest(&["b", "a"], 1), first);
    assert_eq!(
        (first.state_keys, first.events, first.vector_documents),
        (1, 2, 2)
    );
    // A different value in a namespace: a different digest.
    assert_ne!(digest(&["a", "b"], 2).sha256, first.sha256);
    // A store without namespaces has no namespace section: an empty store's digest is
    // the hash of the section headers alone, as before namespaces existed.
    use sha2::{Digest, Sha256};
    let dir = TempDir::new().unwrap();
    let plain = open(dir.path()).store().content_digest().unwrap();
    let headers = Sha256::digest(b"athanor content digest v1\nstate\nevents\nvectors\n");
    assert_eq!(plain.sha256, athanor_core::backup::hex(&headers));
}

#[test]
fn a_trail_put_lands_in_the_default_namespace_and_outlives_a_drop() {
    let dir = TempDir::new().unwrap();
    let e = open(dir.path());
    let a = e.create_namespace("a", "{}").unwrap();
    let record = "\0athanor/audit/rec-a";
    commit_in(
        &e,
        a.id,
        TxBuilder::new()
            .put("k", &Value::I64(1))
            .trail_put(record, &Value::String("allowed".into())),
    )
    .unwrap();
    // The namespace's write is in the namespace; the trail record is the database's.
    assert_eq!(get_in(&e, a.id, "k"), Some(Value::I64(1)));
    assert_eq!(get_in(&e, a.id, record), None);
    assert_eq!(get_in(&e, 0, "k"), None);
    assert_eq!(get_in(&e, 0, record), Some(Value::String("allowed".into())));
    // A failed transaction writes its trail put no more than its other writes.
    let failing = commit_in(
        &e,
        a.id,
        TxBuilder::new()
            .read("k", 0)
            .put("k", &Value::I64(2))
            .trail_put("\0athanor/audit/rec-b", &Value::I64(0)),
    );
    assert_eq!(failing.unwrap_err().code, Code::Conflict);
    assert_eq!(get_in(&e, 0, "\0athanor/audit/rec-b"), None);
    assert!(e.drop_namespace("a").unwrap().is_some());
    drop(e);
    let e = open(dir.path());
    assert_eq!(get_in(&e, 0, record), Some(Value::String("allowed".into())));
}
