//! Retention in the core: `Store::compact_events` deletes the oldest events and their
//! type index entries in one write transaction, records the oldest id kept, and reads
//! below it fail with `ERR_COMPACTED`; ids go on from the newest.

use athanor_core::{Code, Engine, EventQuery, StoreOptions, TxBuilder};
use tempfile::TempDir;

fn log(e: &Engine, types: &[&str]) {
    let mut b = TxBuilder::new();
    for t in types {
        b = b.event_json(t, "{}");
    }
    e.commit_blocking(b.build().expect("valid batch"))
        .expect("commit");
}

fn read(e: &Engine, from: u64, event_type: Option<&str>) -> athanor_core::Result<u32> {
    let store = e.store();
    let _g = store.guard();
    let txn = store.begin_read()?;
    let q = EventQuery {
        from,
        event_type: event_type.map(str::to_string),
        ..EventQuery::default()
    };
    let pack = store.read_events(&txn, &q)?;
    Ok(u32::from_le_bytes(pack[..4].try_into().unwrap()))
}

fn first(e: &Engine) -> u64 {
    let store = e.store();
    let _g = store.guard();
    let txn = store.begin_read().unwrap();
    store.first_event_id(&txn).unwrap()
}

#[test]
fn compaction_deletes_a_prefix_and_reads_below_it_fail() {
    let dir = TempDir::new().unwrap();
    let e = Engine::open(dir.path(), StoreOptions::default()).unwrap();
    log(&e, &["a", "b", "a", "b", "a"]);
    assert_eq!(first(&e), 1);
    let done = e.store().compact_events(3, None).unwrap();
    assert_eq!((done.deleted, done.first_event_id), (2, 3));
    assert_eq!(first(&e), 3);
    assert_eq!(read(&e, 3, None).unwrap(), 3);
    assert_eq!(read(&e, 3, Some("a")).unwrap(), 2);
    assert_eq!(read(&e, 2, None).unwrap_err().code, Code::Compacted);
    assert_eq!(read(&e, 1, Some("b")).unwrap_err().code, Code::Compacted);
    log(&e, &["c"]);
    assert_eq!(read(&e, 6, None).unwrap(), 1);
    e.store().verify().unwrap();
    // Past the end: everything goes, and the next event still gets the next id.
    let done = e.store().compact_events(u64::MAX, None).unwrap();
    assert_eq!((done.deleted, done.first_event_id), (4, 7));
    e.store().verify().unwrap();
    log(&e, &["d"]);
    assert_eq!(read(&e, 7, None).unwrap(), 1);
    e.store().verify().unwrap();
}

#[test]
fn compaction_by_type_leaves_gaps_that_verify_accepts() {
    let dir = TempDir::new().unwrap();
    let e = Engine::open(dir.path(), StoreOptions::default()).unwrap();
    log(&e, &["noise", "keep", "noise", "noise", "keep", "noise"]);
    let done = e
        .store()
        .compact_events(5, Some(&["noise".to_string()]))
        .unwrap();
    assert_eq!((done.deleted, done.first_event_id), (3, 2));
    assert_eq!(read(&e, 2, None).unwrap(), 3); // 2, 5, 6
    assert_eq!(read(&e, 2, Some("noise")).unwrap(), 1); // 6, past `before`
    e.store().verify().unwrap();
    drop(e);
    let e = Engine::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(first(&e), 2);
    e.store().verify().unwrap();
}
