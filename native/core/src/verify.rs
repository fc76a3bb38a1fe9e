//! Verifying a whole database directory: the canonical store, projection.db and
//! the index dumps. A module of its own because it reads all three, which do not
//! depend on one another this way round.
//!
//! [`report`] lists what it finds: counts, and each violation of an invariant that
//! can be read safely (a type index entry without its event, an idempotency record
//! pointing past the log, a cursor ahead of the log, ...). Damage that makes a file
//! unreadable (a store page that fails the structure check, a projection.db SQLite
//! cannot read, an index dump that fails its checksum) is an `ERR_CORRUPT` error
//! instead: nothing after it could be trusted.

use std::path::Path;

use heed::{RoTxn, WithoutTls};
use serde_json::{json, Value as Json};

use crate::engine::Engine;
use crate::error::{Code, Error, Result};
use crate::store::{IdemRecord, Store};

/// One broken invariant found by [`report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// A stable name for the kind of problem (`"type_index_orphan"`, ...).
    pub kind: &'static str,
    /// What exactly is wrong, and where.
    pub detail: String,
}

/// A processor's cursor as stored in projection.db.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorCursor {
    /// The processor's name.
    pub name: String,
    /// The last event it applied (0: none yet).
    pub last_event_id: i64,
}

/// A vector collection and its stored documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionCount {
    /// The collection's name.
    pub name: String,
    /// Documents stored in it.
    pub documents: u64,
}

/// A namespace and the events of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceCount {
    /// The namespace's name.
    pub name: String,
    /// Events in its log.
    pub events: u64,
}

/// What [`report`] counted and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events in the log.
    pub events: u64,
    /// The newest event id the store's meta records.
    pub last_event_id: u64,
    /// State keys, athanor's own included.
    pub state_keys: u64,
    /// Entries of the event-type index (one per event when intact).
    pub type_index_entries: u64,
    /// Idempotency records stored, expired ones not yet pruned included.
    pub idempotency_records: u64,
    /// Processors with a cursor (projection.db's and vector projections').
    pub processors: Vec<ProcessorCursor>,
    /// Dead letters in projection.db, all processors.
    pub dead_letters: u64,
    /// Vector collections and their stored documents.
    pub vector_collections: Vec<CollectionCount>,
    /// Index dumps checked (manifests and checksums).
    pub index_dumps: u32,
    /// Each namespace and the events in its log.
    pub namespaces: Vec<NamespaceCount>,
    /// Every violation found; empty when the database is sound.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Whether no violation was found.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The report as JSON for the bindings (numbers as JSON numbers; counts stay far below 2^53).
    pub fn to_json(&self) -> Json {
        json!({
            "ok": self.ok(),
            "events": self.events,
            "lastEventId": self.last_event_id,
            "stateKeys": self.state_keys,
            "typeIndexEntries": self.type_index_entries,
            "idempotencyRecords": self.idempotency_records,
            "processors": self.processors.iter().map(|p| json!({ "name": p.name, "cursor": p.last_event_id })).collect::<Vec<_>>(),
            "deadLetters": self.dead_letters,
            "vectorCollections": self.vector_collections.iter().map(|c| json!({ "name": c.name, "documents": c.documents })).collect::<Vec<_>>(),
            "vectorDocuments": self.vector_collections.iter().map(|c| c.documents).sum::<u64>(),
            "indexDumps": self.index_dumps,
            "namespaces": self.namespaces.iter().map(|n| json!({ "name": n.name, "events": n.events })).collect::<Vec<_>>(),
            "violations": self.violations.iter().map(|v| json!({ "kind": v.kind, "detail": v.detail })).collect::<Vec<_>>(),
        })
    }
}

/// Verifies the directory of `engine` and returns the number of events checked, or
/// `ERR_CORRUPT` naming the first violation (see [`report`] for the whole list).
pub fn verify(engine: &Engine) -> Result<u64> {
    let r = report(engine)?;
    match r.violations.first() {
        None => Ok(r.events),
        Some(v) => Err(Error::corrupt(v.detail.clone())),
    }
}

/// Checks the directory of `engine`: the canonical store's page structure (file
/// reads before LMDB follows a page) and its invariants (dense event ids, the type
/// index matches the log both ways, every value and record decodes, idempotency
/// records within the log, the stream index dense and naming logged events), projection.db (SQLite's integrity check, processor
/// cursors and dead letters within the log), the vector documents against their
/// in-memory index, and the index dumps (manifests and checksums).
pub fn report(engine: &Engine) -> Result<Report> {
    let mut r = Report::default();
    let store = engine.store();
    {
        let _g = store.guard();
        let txn = checked_txn(store)?;
        scan_store(store, &txn, &mut r)?;
        match store.verify_streams(&txn, r.last_event_id) {
            Err(e) if e.code == Code::Corrupt => r.violations.push(Violation {
                kind: "stream_index",
                detail: e.message,
            }),
            other => other?,
        }
        scan_namespaces(store, &txn, &mut r)?;
    }
    let projection = engine.dir().join(crate::projection::FILE_NAME);
    // The integrity check alone: no cursor (an SQLite integer) is past i64::MAX. Cursors are listed below.
    crate::projection::verify_file(&projection, i64::MAX as u64)?;
    scan_projection(&projection, &mut r)?;
    // A namespace's collection is reported as `<namespace>/<name>` (neither holds '/').
    let namespaces = {
        let txn = store.begin_read()?;
        let _g = store.guard();
        store.list_namespaces(&txn)?
    };
    let shown = |stored: &str| -> String {
        let (ns, plain) = crate::store::split_collection(stored);
        match namespaces.iter().find(|n| n.id == ns) {
            Some(n) if ns != crate::store::DEFAULT_NAMESPACE_ID => format!("{}/{plain}", n.name),
            _ => plain.to_owned(),
        }
    };
    for def in engine.vectors().list() {
        match engine.vectors().verify(store, &def.name) {
            Ok(n) => r.vector_collections.push(CollectionCount {
                name: shown(&def.name),
                documents: n as u64,
            }),
            Err(e) if e.code == Code::Corrupt => {
                r.violations.push(Violation {
                    kind: "vector_index",
                    detail: e.message,
                });
                r.vector_collections.push(CollectionCount {
                    documents: stored_documents(store, def.id)?,
                    name: shown(&def.name),
                });
            }
            Err(e) => return Err(e),
        }
    }
    r.index_dumps = crate::vector::dump::verify_all(&engine.dir().join("index"))?;
    // Each namespace's dumps lie beside its projection.db (a dropped namespace's folder,
    // left by a crash before its removal, is never opened again and is not checked).
    for n in namespaces
        .iter()
        .filter(|n| n.id != crate::store::DEFAULT_NAMESPACE_ID)
    {
        let dir = engine
            .dir()
            .join("namespaces")
            .join(n.id.to_string())
            .join("index");
        r.index_dumps += crate::vector::dump::verify_all(&dir)?;
    }
    Ok(r)
}

/// A read transaction on a store whose every page passed the structure check.
fn checked_txn(store: &Store) -> Result<RoTxn<'static, WithoutTls>> {
    let data = store.env.path().join("data.mdb");
    // A writer in another process may move past the transaction's meta page between
    // the two reads; a fresh transaction then matches again.
    for _ in 0..16 {
        let txn = store.env.clone().static_read_txn()?;
        if crate::lmdb_check::walk(&data, Some(txn.id() as u64), None)?.is_some() {
            return Ok(txn);
        }
    }
    Err(Error::new(
        Code::Io,
        format!(
            "{} kept changing while it was checked; try again when writes are quieter",
            data.display()
        ),
    ))
}

/// Each namespace's log: ids dense from 1 to its last event id, every record decodes
/// and is in the type index, and its hash chain holds. Violations name the namespace.
fn scan_namespaces(store: &Store, txn: &RoTxn<'_, WithoutTls>, r: &mut Report) -> Result<()> {
    for ns in store.list_namespaces(txn)? {
        let sp = store.space(ns.id);
        let at = |d: String| format!("namespace {:?}: {d}", ns.name);
        let last = sp.last_event_id(txn)?;
        let mut expect = 1u64;
        let all: (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>) =
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
        for item in sp.events.range(txn, &all)? {
            let (k, v) = item?;
            let Ok(bytes) = <[u8; 8]>::try_from(k) else {
                r.violations.push(Violation {
                    kind: "event_key",
                    detail: at(format!("an event key is {} bytes, not 8", k.len())),
                });
                continue;
            };
            let id = u64::from_be_bytes(bytes);
            if id != expect {
                r.violations.push(Violation {
                    kind: "event_ids",
                    detail: at(format!(
                        "event ids are not dense: expected {expect}, found {id}"
                    )),
                });
            }
            expect = id + 1;
            match crate::codec::decode_event(v) {
                Err(e) => r.violations.push(Violation {
                    kind: "event_record",
                    detail: at(format!("event {id} does not decode: {}", e.message)),
                }),
                Ok(e) => {
                    let key = crate::store::type_index_key(e.event_type.as_bytes(), id);
                    if sp.event_types.get(txn, &key)?.is_none() {
                        r.violations.push(Violation {
                            kind: "type_index_missing",
                            detail: at(format!("event {id} is missing from the type index")),
                        });
                    }
                }
            }
        }
        if expect - 1 != last {
            r.violations.push(Violation {
                kind: "last_event_id",
                detail: at(format!(
                    "its last_event_id is {last} but its log ends at {}",
                    expect - 1
                )),
            });
        }
        for b in crate::store::check_chain(&sp, txn, last)? {
            r.violations.push(Violation {
                kind: "event_chain",
                detail: at(b.detail),
            });
        }
        r.namespaces.push(NamespaceCount {
            name: ns.name,
            events: expect - 1,
        });
    }
    Ok(())
}

fn scan_store(store: &Store, txn: &RoTxn<'_, WithoutTls>, r: &mut Report) -> Result<()> {
    let dbs = &store.dbs;
    let last = store.last_event_id(txn)?;
    r.last_event_id = last;
    // After a compaction the log starts at `first_event_id`; below `compacted_below`
    // (compaction by type) it may have gaps.
    let first = store.first_event_id(txn)?;
    let dense_from = store.compacted_below(txn)?.max(first);
    let mut expect = first;
    for item in dbs.events.iter(txn)? {
        let (k, v) = item?;
        let Ok(bytes) = <[u8; 8]>::try_from(k) else {
            r.violations.push(Violation {
                kind: "event_key",
                detail: format!("an event key is {} bytes, not 8", k.len()),
            });
            continue;
        };
        let id = u64::from_be_bytes(bytes);
        r.events += 1;
        if id != expect && !(id > expect && id <= dense_from) {
            r.violations.push(Violation {
                kind: "event_ids",
                detail: format!("event ids are not dense: expected {expect}, found {id}"),
            });
        }
        expect = id + 1;
        match crate::codec::decode_event(v) {
            Err(e) => r.violations.push(Violation {
                kind: "event_record",
                detail: format!("event {id} does not decode: {}", e.message),
            }),
            Ok(e) => {
                let key = crate::store::type_index_key(e.event_type.as_bytes(), id);
                if dbs.event_types.get(txn, &key)?.is_none() {
                    r.violations.push(Violation {
                        kind: "type_index_missing",
                        detail: format!("event {id} is missing from the type index"),
                    });
                }
            }
        }
    }
    for b in crate::store::check_chain(&store.space(0), txn, last)? {
        r.violations.push(Violation {
            kind: "event_chain",
            detail: b.detail,
        });
    }
    if expect - 1 != last {
        r.violations.push(Violation {
            kind: "last_event_id",
            detail: format!(
                "meta says last_event_id={last} but the log ends at {}",
                expect - 1
            ),
        });
    }
    for item in dbs.event_types.iter(txn)? {
        let (k, _) = item?;
        r.type_index_entries += 1;
        let parsed = (k.len() >= 9 && k[k.len() - 9] == 0).then(|| {
            let id = u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap());
            (&k[..k.len() - 9], id)
        });
        let Some((event_type, id)) = parsed else {
            r.violations.push(Violation {
                kind: "type_index_orphan",
                detail: format!(
                    "a type index key is malformed: {:?}",
                    String::from_utf8_lossy(k)
                ),
            });
            continue;
        };
        let ty = String::from_utf8_lossy(event_type);
        match store.get_event(txn, id)? {
            None => r.violations.push(Violation {
                kind: "type_index_orphan",
                detail: format!(
                    "the type index lists event {id} of type {ty:?}, which is not in the log"
                ),
            }),
            Some(v) => {
                if let Ok(e) = crate::codec::decode_event(v) {
                    if e.event_type.as_bytes() != event_type {
                        r.violations.push(Violation {
                            kind: "type_index_orphan",
                            detail: format!(
                                "the type index lists event {id} as {ty:?}, but it is {:?}",
                                e.event_type
                            ),
                        });
                    }
                }
            }
        }
    }
    for item in dbs.state.iter(txn)? {
        let (k, v) = item?;
        r.state_keys += 1;
        let decoded = crate::codec::split_state_entry(v)
            .and_then(|(_, value)| crate::codec::Value::decode(value));
        match decoded {
            Err(e) => r.violations.push(Violation {
                kind: "state_value",
                detail: format!("state key {:?}: {}", String::from_utf8_lossy(k), e.message),
            }),
            Ok(value) => {
                if let Some(name) = k.strip_prefix(VECTOR_PROJECTION_CURSOR) {
                    vector_projection_cursor(&String::from_utf8_lossy(name), &value, last, r);
                }
            }
        }
    }
    for item in dbs.idem.iter(txn)? {
        let (k, v) = item?;
        r.idempotency_records += 1;
        let key = String::from_utf8_lossy(k);
        match IdemRecord::decode(v) {
            Err(e) => r.violations.push(Violation {
                kind: "idempotency_record",
                detail: format!("idempotency key {key:?}: {}", e.message),
            }),
            Ok(rec) => {
                // A transaction without events records first_event_id 0: nothing to check.
                let end = rec.first_event_id.saturating_add(rec.event_count as u64);
                if rec.event_count > 0 && (rec.first_event_id == 0 || end - 1 > last) {
                    r.violations.push(Violation {
                        kind: "idempotency_past_log",
                        detail: format!(
                            "idempotency key {key:?} names events {}..={} but the log ends at {last}",
                            rec.first_event_id,
                            end - 1
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The state key prefix of vector projections' cursors (kept in LMDB, moved in the
/// same commit as the vectors they cover; see ts/vector-projection.ts).
const VECTOR_PROJECTION_CURSOR: &[u8] = b"\0athanor/vector-projection/";

/// Lists a vector projection's cursor with the processors; flags one past the log.
fn vector_projection_cursor(name: &str, value: &crate::codec::Value, last: u64, r: &mut Report) {
    let crate::codec::Value::I64(at) = *value else {
        r.violations.push(Violation {
            kind: "state_value",
            detail: format!("the cursor of vector projection {name:?} is not an i64"),
        });
        return;
    };
    if at < 0 || at as u64 > last {
        r.violations.push(Violation {
            kind: "cursor_past_log",
            detail: format!(
                "vector projection {name:?} is at event {at} but the log ends at {last}: the event log was lost or replaced; restore the database from a backup"
            ),
        });
    }
    r.processors.push(ProcessorCursor {
        name: name.to_string(),
        last_event_id: at,
    });
}

/// Documents stored for collection `id` (for the report when its index disagrees).
fn stored_documents(store: &Store, id: u32) -> Result<u64> {
    let _g = store.guard();
    let txn = store.env.read_txn()?;
    let mut n = 0;
    for item in store.dbs.vectors.prefix_iter(&txn, &id.to_be_bytes())? {
        item?;
        n += 1;
    }
    Ok(n)
}

/// Lists processor cursors and dead letters of projection.db; flags those that name
/// events the log does not hold.
fn scan_projection(path: &Path, r: &mut Report) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let last = r.last_event_id;
    let read = |r: &mut Report| -> std::result::Result<(), rusqlite::Error> {
        let conn = crate::projection::open_for_reading(path)?;
        let has = |table: &str| -> std::result::Result<bool, rusqlite::Error> {
            conn.query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |row| row.get(0),
            )
        };
        if has("_athanor_cursors")? {
            let mut stmt =
                conn.prepare("SELECT name, last_event_id FROM _athanor_cursors ORDER BY name")?;
            let rows = stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (name, at) = row?;
                if at < 0 || at as u64 > last {
                    r.violations.push(Violation {
                        kind: "cursor_past_log",
                        detail: format!(
                            "processor {name:?} in {} is at event {at} but the log ends at {last}: the event log was lost or replaced; restore the database from a backup",
                            path.display()
                        ),
                    });
                }
                r.processors.push(ProcessorCursor {
                    name,
                    last_event_id: at,
                });
            }
        }
        if has("_athanor_dead_letters")? {
            let mut stmt = conn
                .prepare("SELECT id, processor, event_id FROM _athanor_dead_letters ORDER BY id")?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (id, processor, event_id) = row?;
                r.dead_letters += 1;
                if event_id < 1 || event_id as u64 > last {
                    r.violations.push(Violation {
                        kind: "dead_letter_missing_event",
                        detail: format!(
                            "dead letter {id} of processor {processor:?} names event {event_id}, which is not in the log (it ends at {last})"
                        ),
                    });
                }
            }
        }
        Ok(())
    };
    read(r).map_err(|e| {
        Error::corrupt(format!(
            "{} is damaged: {e}; rebuild the projections (delete the file and run them again) or restore it from a backup",
            path.display()
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::{type_index_key, IdemRecord, StoreOptions};
    use crate::{Engine, TxBuilder, Value};

    #[test]
    fn the_store_names_projection_db_as_the_projections_do() {
        assert_eq!(crate::store::PROJECTION_FILE, crate::projection::FILE_NAME);
    }

    /// A database on disk with 3 events (types a, b, a), 2 state keys and an idempotency record.
    fn populated(dir: &std::path::Path) -> std::sync::Arc<Engine> {
        let e = Engine::open(dir, StoreOptions::default()).unwrap();
        let b = TxBuilder::new()
            .put("x", &Value::I64(1))
            .put("y", &Value::I64(2))
            .event_json("a", "{}")
            .event_json("b", "{}")
            .event_json("a", "{}")
            .idempotency_key("once");
        e.commit_blocking(b.build().unwrap()).unwrap();
        e
    }

    fn kinds(r: &super::Report) -> Vec<&'static str> {
        r.violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn an_intact_database_reports_its_counts_and_no_violation() {
        let dir = tempfile::tempdir().unwrap();
        let e = populated(dir.path());
        let r = super::report(&e).unwrap();
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!(
            (
                r.events,
                r.last_event_id,
                r.state_keys,
                r.type_index_entries,
                r.idempotency_records
            ),
            (3, 3, 2, 3, 1)
        );
        assert_eq!(super::verify(&e).unwrap(), 3);
    }

    #[test]
    fn type_index_damage_both_ways_and_an_idempotency_record_past_the_log_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let e = populated(dir.path());
        {
            // Damage written through LMDB itself, as a buggy writer or a bad copy could.
            let store = e.store();
            let _g = store.guard();
            let mut w = store.env.write_txn().unwrap();
            store
                .dbs
                .event_types
                .delete(&mut w, &type_index_key(b"b", 2))
                .unwrap();
            store
                .dbs
                .event_types
                .put(&mut w, &type_index_key(b"a", 9), b"")
                .unwrap();
            let rec = IdemRecord {
                commit_seq: 1,
                first_event_id: 3,
                event_count: 4,
                at_ms: 1,
            };
            store.dbs.idem.put(&mut w, b"later", &rec.encode()).unwrap();
            w.commit().unwrap();
        }
        let r = super::report(&e).unwrap();
        assert!(!r.ok());
        assert_eq!(
            kinds(&r),
            [
                "type_index_missing",
                "type_index_orphan",
                "idempotency_past_log"
            ]
        );
        assert!(
            r.violations[0].detail.contains("event 2"),
            "{:?}",
            r.violations
        );
        assert!(
            r.violations[1].detail.contains("event 9"),
            "{:?}",
            r.violations
        );
        assert!(
            r.violations[2].detail.contains("\"later\""),
            "{:?}",
            r.violations
        );
        let err = super::verify(&e).unwrap_err();
        assert_eq!(err.code, crate::error::Code::Corrupt);
        assert!(err.message.contains("event 2"), "{}", err.message);
    }

    #[test]
    fn a_vector_projection_cursor_past_the_log_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let e = populated(dir.path());
        let cursor = |at: i64| {
            TxBuilder::new()
                .put("\0athanor/vector-projection/emb", &Value::I64(at))
                .build()
                .unwrap()
        };
        e.commit_blocking(cursor(3)).unwrap();
        let r = super::report(&e).unwrap();
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!(
            r.processors,
            [super::ProcessorCursor {
                name: "emb".into(),
                last_event_id: 3
            }]
        );
        e.commit_blocking(cursor(8)).unwrap();
        let r = super::report(&e).unwrap();
        assert_eq!(kinds(&r), ["cursor_past_log"]);
        assert!(
            r.violations[0].detail.contains("\"emb\" is at event 8"),
            "{:?}",
            r.violations
        );
    }
}
