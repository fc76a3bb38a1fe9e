//! Replication in the engine: the commit log a primary keeps for its publisher,
//! and a read replica applying those records (real LMDB files, public API only).

use std::path::Path;
use std::sync::Arc;

use athanor_core::wire::commit_record;
use athanor_core::{Code, Engine, Outcome, StoreOptions, TxBuilder, Value};
use tempfile::TempDir;

fn open(dir: &Path) -> Arc<Engine> {
    Engine::open(dir, StoreOptions::default()).expect("open")
}

fn commit(e: &Engine, b: TxBuilder) -> u64 {
    let info = e.commit_blocking(b.build().unwrap()).expect("commit");
    assert_eq!(info.outcome, Outcome::Applied);
    info.commit_seq
}

fn records(e: &Engine, after: u64) -> Vec<Vec<u8>> {
    e.store()
        .commit_log_after(after, 1000)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// A primary with logging on and four commits of every kind.
fn primary(dir: &Path) -> (Arc<Engine>, String) {
    let p = open(dir);
    let id = p.store().enable_commit_log().unwrap().database_id.unwrap();
    commit(
        &p,
        TxBuilder::new()
            .put("a", &Value::I64(1))
            .event_json("made", r#"{"n":1}"#),
    );
    commit(
        &p,
        TxBuilder::new()
            .put("b", &Value::String("x".into()))
            .event_bytes("raw", b"\x00\x01")
            .event_json("made", "{}"),
    );
    commit(&p, TxBuilder::new().delete("a").idempotency_key("once"));
    // A duplicate and a read-only transaction take no commit seq: no record.
    let dup = p
        .commit_blocking(
            TxBuilder::new()
                .delete("a")
                .idempotency_key("once")
                .build()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(dup.outcome, Outcome::Duplicate);
    commit(
        &p,
        TxBuilder::new()
            .put("c", &Value::F64(2.5))
            .event_json("made", r#"{"n":3}"#),
    );
    (p, id)
}

#[test]
fn each_applied_commit_is_logged_once_in_order_with_its_seq_time_and_event_ids() {
    let dir = TempDir::new().unwrap();
    let (p, id) = primary(dir.path());
    let recs = records(&p, 0);
    assert_eq!(recs.len(), 4);
    let heads: Vec<_> = recs
        .iter()
        .map(|r| commit_record::decode(r).unwrap())
        .collect();
    assert_eq!(
        heads.iter().map(|h| h.commit_seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(
        heads.iter().map(|h| h.first_event_id).collect::<Vec<_>>(),
        [1, 2, 0, 4]
    );
    assert!(heads.iter().all(|h| h.database_id == id && h.at_ms > 0));
    // Published commits leave the log; the position is kept.
    p.store().mark_published(2).unwrap();
    assert_eq!(records(&p, 0).len(), 2);
    let info = p.store().replication_info().unwrap();
    assert_eq!(
        (info.published_seq, info.commit_seq, info.logging),
        (2, 4, true)
    );
}

#[test]
fn logging_survives_a_restart_and_commits_before_it_count_as_published() {
    let dir = TempDir::new().unwrap();
    let p = open(dir.path());
    commit(&p, TxBuilder::new().put("before", &Value::I64(0)));
    let info = p.store().enable_commit_log().unwrap();
    assert_eq!(info.published_seq, 1);
    drop(p);
    let p = open(dir.path());
    commit(&p, TxBuilder::new().put("after", &Value::I64(1)));
    let recs = records(&p, 0);
    assert_eq!(recs.len(), 1);
    assert_eq!(commit_record::decode(&recs[0]).unwrap().commit_seq, 2);
    // The id does not change.
    assert_eq!(
        p.store().enable_commit_log().unwrap().database_id,
        info.database_id
    );
}

#[test]
fn a_replica_applies_records_exactly_once_and_ends_equal_to_its_primary() {
    let dir = TempDir::new().unwrap();
    let (p, id) = primary(&dir.path().join("p"));
    let recs = records(&p, 0);
    let r = open(&dir.path().join("r"));
    r.init_replica(&id).unwrap();
    let done = r.apply_replicated(&recs[..2], 7).unwrap();
    assert_eq!((done.applied, done.skipped, done.commit_seq), (2, 0, 2));
    // A redelivery (a replica killed after applying, before acknowledging) is skipped.
    let done = r.apply_replicated(&recs[1..], 9).unwrap();
    assert_eq!((done.applied, done.skipped, done.commit_seq), (2, 1, 4));
    assert_eq!(r.store().replication_info().unwrap().replica_stream_seq, 9);
    let (a, b) = (
        p.store().content_digest().unwrap(),
        r.store().content_digest().unwrap(),
    );
    assert_eq!(a.sha256, b.sha256);
    assert_eq!((b.commit_seq, b.last_event_id, b.events), (4, 4, 4));
    // Versions and idempotency records match too.
    let rt = r.begin_read().unwrap();
    let pt = p.begin_read().unwrap();
    assert_eq!(
        r.store().idempotency_record(&rt, b"once").unwrap(),
        p.store().idempotency_record(&pt, b"once").unwrap()
    );
}

#[test]
fn a_replica_refuses_writes_gaps_and_another_databases_records_writing_nothing() {
    let dir = TempDir::new().unwrap();
    let (p, id) = primary(&dir.path().join("p"));
    let recs = records(&p, 0);
    let r = open(&dir.path().join("r"));
    r.init_replica(&id).unwrap();
    let e = r
        .commit_blocking(TxBuilder::new().put("x", &Value::I64(1)).build().unwrap())
        .unwrap_err();
    assert_eq!(e.code, Code::ReadOnly);
    let gap = r.apply_replicated(&recs[1..2], 2).unwrap_err();
    assert_eq!(gap.code, Code::NotFound, "{}", gap.message);
    let other = commit_record::encode(
        "someone-else",
        1,
        1,
        0,
        &[],
        commit_record::decode(&recs[0]).unwrap().batch,
    );
    assert_eq!(
        r.apply_replicated(&[other], 1).unwrap_err().code,
        Code::InvalidArgument
    );
    let info = r.store().replication_info().unwrap();
    assert_eq!((info.commit_seq, info.replica_stream_seq), (0, 0));
    // Read-only holds after a reopen; a replica cannot publish.
    drop(r);
    let r = open(&dir.path().join("r"));
    let e = r
        .commit_blocking(TxBuilder::new().put("x", &Value::I64(1)).build().unwrap())
        .unwrap_err();
    assert_eq!(e.code, Code::ReadOnly);
    assert_eq!(
        r.store().enable_commit_log().unwrap_err().code,
        Code::ReadOnly
    );
    // A database with commits of its own cannot become a replica of another.
    assert_eq!(
        p.init_replica("someone-else").unwrap_err().code,
        Code::InvalidArgument
    );
}

#[test]
fn a_replica_creates_the_collections_its_primary_writes_to_and_holds_the_same_documents() {
    use athanor_core::vector::{CollectionParams, Metric};
    let dir = TempDir::new().unwrap();
    let p = open(&dir.path().join("p"));
    let id = p.store().enable_commit_log().unwrap().database_id.unwrap();
    let params = CollectionParams::new(3, Metric::Cosine);
    p.vectors().create(p.store(), "docs", params).unwrap();
    commit(
        &p,
        TxBuilder::new()
            .vector_upsert("docs", "a", &[1.0, 0.0, 0.0], r#"{"k":1}"#)
            .vector_upsert("docs", "b", &[0.0, 1.0, 0.0], "")
            .event_json("indexed", "{}"),
    );
    commit(&p, TxBuilder::new().vector_delete("docs", "a"));
    let recs = records(&p, 0);
    assert_eq!(
        commit_record::decode(&recs[0]).unwrap().collections.len(),
        1
    );
    let r = open(&dir.path().join("r"));
    r.init_replica(&id).unwrap();
    r.apply_replicated(&recs, 2).unwrap();
    assert_eq!(r.vectors().get("docs").unwrap().def.params, params);
    let (a, b) = (
        p.store().content_digest().unwrap(),
        r.store().content_digest().unwrap(),
    );
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(b.vector_documents, 1);
}

#[test]
fn collections_are_not_dropped_where_replicas_would_diverge() {
    use athanor_core::vector::{CollectionParams, Metric};
    let dir = TempDir::new().unwrap();
    let p = open(&dir.path().join("p"));
    let params = CollectionParams::new(3, Metric::Cosine);
    p.vectors().create(p.store(), "kept", params).unwrap();
    p.vectors().create(p.store(), "gone", params).unwrap();
    // Before publishing starts, a drop is an ordinary administrative write.
    assert!(p.drop_collection("gone").unwrap());
    let id = p.store().enable_commit_log().unwrap().database_id.unwrap();
    commit(
        &p,
        TxBuilder::new().vector_upsert("kept", "a", &[1.0, 0.0, 0.0], ""),
    );
    // Publishing: the drop would not reach the replicas, so it is refused.
    let e = p.drop_collection("kept").unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert!(p.vectors().get("kept").is_some());
    let r = open(&dir.path().join("r"));
    r.init_replica(&id).unwrap();
    r.apply_replicated(&records(&p, 0), 1).unwrap();
    // A replica changes only through its primary's commits: no drop, no new
    // collection; opening an existing one through create() still answers.
    assert_eq!(r.drop_collection("kept").unwrap_err().code, Code::ReadOnly);
    assert!(r.vectors().get("kept").is_some());
    assert_eq!(
        r.create_collection("local", params).unwrap_err().code,
        Code::ReadOnly
    );
    assert!(r.vectors().get("local").is_none());
    assert_eq!(
        r.create_collection("kept", params).unwrap().def.params,
        params
    );
    assert_eq!(
        p.store().content_digest().unwrap().sha256,
        r.store().content_digest().unwrap().sha256
    );
}

#[test]
fn a_replica_applies_stream_appends_and_numeric_ops_as_its_primary_did() {
    use athanor_core::numeric::{Int, NumericArgs, NumericKind, NumericType};
    use athanor_core::txn::Expected;
    let add = |d: i64| NumericArgs {
        kind: NumericKind::Add,
        ty: NumericType::Follow,
        operand: Int::from_i64(d),
        min: Some(Int::from_i64(0)),
        max: None,
    };
    let dir = TempDir::new().unwrap();
    let p = open(&dir.path().join("p"));
    let id = p.store().enable_commit_log().unwrap().database_id.unwrap();
    commit(
        &p,
        TxBuilder::new().numeric("hits", add(5)).append_json(
            "order-1",
            Expected::NoStream,
            &[("placed", "{}")],
        ),
    );
    commit(
        &p,
        TxBuilder::new().numeric("hits", add(-2)).append_json(
            "order-1",
            Expected::Exact(1),
            &[("paid", "{}"), ("shipped", "{}")],
        ),
    );
    let r = open(&dir.path().join("r"));
    r.init_replica(&id).unwrap();
    r.apply_replicated(&records(&p, 0), 1).unwrap();
    let (a, b) = (
        p.store().content_digest().unwrap(),
        r.store().content_digest().unwrap(),
    );
    assert_eq!(
        a.sha256, b.sha256,
        "the replica's state, log and stream index equal the primary's"
    );
    let rt = r.begin_read().unwrap();
    assert_eq!(r.store().stream_version(&rt, b"order-1").unwrap(), 3);
    let pt = p.begin_read().unwrap();
    assert_eq!(
        r.store().get(&rt, b"hits").unwrap(),
        p.store().get(&pt, b"hits").unwrap()
    );
    assert!(
        r.store().get(&rt, b"hits").unwrap().is_some(),
        "the numeric key reached the replica"
    );
}
