//! Golden files pin athanor's on-disk and cross-language byte formats
//! (`native/core/tests/golden/`):
//!
//! - `formats.json`: every format version constant. Changing one without adding the
//!   goldens of the new version fails here.
//! - `values.json`: the encoding of each value type, byte for byte. `test/golden.test.ts`
//!   checks the TypeScript codec against the same file, so both languages agree.
//! - `store-v<N>/canonical/data.mdb` + `store-v<N>.json`: an LMDB store written by format N
//!   and everything it holds, read through the public API. Every build must open each
//!   older store and read back identical content (migrating it), or refuse it with
//!   `ERR_VERSION`; the store of the current format must open.
//! - `projection-schema-v<N>.json`: `sqlite_master` of athanor's own tables in projection.db.
//! - `txn-batch-v<N>.json`: a transaction batch of each kind of operation, as `TxBuilder`
//!   encodes it; `test/golden.test.ts` encodes the same transaction through the TypeScript
//!   transaction and compares the bytes.
//! - `wire-<format>.json`: each format the addon and TypeScript exchange
//!   (`athanor_core::wire`): fixed inputs, their encoding, and what it decodes to.
//!   `test/golden.test.ts` decodes the same bytes with the TypeScript decoders.
//!
//! `ATHANOR_WRITE_GOLDEN=1 cargo test -p athanor-core --test golden` writes the goldens
//! of the current formats that do not exist yet; it never rewrites an existing one.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use athanor_core::codec::{self, Value};
use athanor_core::numeric::{Int, NumericArgs, NumericKind, NumericType};
use athanor_core::projection::{self, PROJECTION_FORMAT};
use athanor_core::store::STORE_FORMAT;
use athanor_core::txn::Expected;
use athanor_core::vector::{collection, docs, CollectionParams, Metric};
use athanor_core::{
    wire, Code, CommitInfo, CommitNotice, Completion, Durability, Engine, Outcome, StoreOptions,
    TxBatch, TxBuilder,
};
use serde_json::{json, Value as Json};
use tempfile::TempDir;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn writing() -> bool {
    std::env::var_os("ATHANOR_WRITE_GOLDEN").is_some()
}

/// Reads a golden JSON file, first writing `make()` to it when asked to and it is absent.
fn golden_json(name: &str, make: impl FnOnce() -> Json) -> Json {
    let path = golden_dir().join(name);
    if writing() && !path.exists() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, serde_json::to_string_pretty(&make()).unwrap() + "\n").unwrap();
    }
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run ATHANOR_WRITE_GOLDEN=1 cargo test -p athanor-core --test golden",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// Format versions

fn formats() -> Json {
    json!({
        "store": STORE_FORMAT,
        "value": codec::VALUE_FORMAT,
        "event": codec::EVENT_FORMAT,
        "wire": athanor_core::txn::WIRE_VERSION,
        "vector_collection": collection::COLLECTION_FORMAT,
        "vector_doc": docs::DOC_FORMAT,
        "projection": PROJECTION_FORMAT,
    })
}

#[test]
fn format_versions_match_the_goldens() {
    let pinned = golden_json("formats.json", formats);
    assert_eq!(
        pinned,
        formats(),
        "a format version changed: add the goldens of the new version (ATHANOR_WRITE_GOLDEN=1), keep the old ones, \
         make the old ones migrate or be refused with ERR_VERSION, then update formats.json"
    );
}

// ---------------------------------------------------------------------------
// Value codec

/// A value in the language-neutral form of values.json (also read by test/golden.test.ts).
fn describe(v: &Value) -> Json {
    match v {
        Value::I64(x) => json!({ "i64": x.to_string() }),
        Value::U256(b) => json!({ "u256": hex(b) }),
        Value::F64(x) => json!({ "f64": format!("{:016x}", x.to_bits()) }),
        Value::Bool(b) => json!({ "bool": b }),
        Value::String(s) => json!({ "string": s }),
        Value::Bytes(b) => json!({ "bytes": hex(b) }),
        Value::Json(s) => json!({ "json": s }),
        Value::Set(s) => json!({ "set": s }),
        Value::Array(items) => json!({ "array": items.iter().map(describe).collect::<Vec<_>>() }),
    }
}

fn from_description(d: &Json) -> Value {
    let (k, v) = d.as_object().unwrap().iter().next().unwrap();
    match k.as_str() {
        "i64" => Value::I64(v.as_str().unwrap().parse().unwrap()),
        "u256" => Value::U256(unhex(v.as_str().unwrap()).try_into().unwrap()),
        "f64" => Value::F64(f64::from_bits(
            u64::from_str_radix(v.as_str().unwrap(), 16).unwrap(),
        )),
        "bool" => Value::Bool(v.as_bool().unwrap()),
        "string" => Value::String(v.as_str().unwrap().to_owned()),
        "bytes" => Value::Bytes(unhex(v.as_str().unwrap())),
        "json" => Value::Json(v.as_str().unwrap().to_owned()),
        "set" => Value::Set(
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect(),
        ),
        "array" => Value::Array(v.as_array().unwrap().iter().map(from_description).collect()),
        other => panic!("unknown value type {other} in values.json"),
    }
}

fn value_cases() -> Vec<(&'static str, Value)> {
    let max = [0xffu8; 32];
    let mut one = [0u8; 32];
    one[31] = 1;
    let mut pattern = [0u8; 32];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = i as u8;
    }
    vec![
        ("i64 zero", Value::I64(0)),
        ("i64 one", Value::I64(1)),
        ("i64 minus one", Value::I64(-1)),
        ("i64 min", Value::I64(i64::MIN)),
        ("i64 max", Value::I64(i64::MAX)),
        ("u256 zero", Value::U256([0; 32])),
        ("u256 one", Value::U256(one)),
        ("u256 pattern", Value::U256(pattern)),
        ("u256 max", Value::U256(max)),
        ("f64 zero", Value::F64(0.0)),
        ("f64 negative zero", Value::F64(-0.0)),
        ("f64 one and a half", Value::F64(1.5)),
        ("f64 large negative", Value::F64(-1e300)),
        ("f64 smallest subnormal", Value::F64(f64::from_bits(1))),
        ("f64 infinity", Value::F64(f64::INFINITY)),
        ("f64 negative infinity", Value::F64(f64::NEG_INFINITY)),
        ("f64 NaN", Value::F64(f64::from_bits(0x7ff8_0000_0000_0000))),
        ("bool false", Value::Bool(false)),
        ("bool true", Value::Bool(true)),
        ("string empty", Value::String(String::new())),
        ("string ascii", Value::String("hello".into())),
        ("string non-ascii", Value::String("héllo, 世界 🦀".into())),
        ("bytes empty", Value::Bytes(vec![])),
        ("bytes", Value::Bytes(vec![0, 1, 0x7f, 0x80, 0xff])),
        (
            "json object",
            Value::Json("{\"a\":[1,2,{\"b\":null}]}".into()),
        ),
        ("json null", Value::Json("null".into())),
        ("set empty", Value::Set(Default::default())),
        (
            "set",
            Value::Set(
                ["b", "a", "é", "", "ab"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
        ),
        ("array empty", Value::Array(vec![])),
        (
            "array mixed",
            Value::Array(vec![
                Value::I64(1),
                Value::String("x".into()),
                Value::Bool(true),
            ]),
        ),
        (
            "array nested",
            Value::Array(vec![
                Value::Array(vec![Value::Array(vec![])]),
                Value::Set(["z".to_string()].into_iter().collect()),
                Value::F64(-0.0),
            ]),
        ),
    ]
}

fn values_golden() -> Json {
    json!({
        "format": codec::VALUE_FORMAT,
        "values": value_cases()
            .iter()
            .map(|(name, v)| json!({ "name": name, "value": describe(v), "hex": hex(&v.encode()) }))
            .collect::<Vec<_>>(),
    })
}

#[test]
fn value_encodings_match_the_goldens() {
    let golden = golden_json("values.json", values_golden);
    assert_eq!(golden["format"], json!(codec::VALUE_FORMAT));
    let cases = golden["values"].as_array().unwrap();
    let mut types = std::collections::BTreeSet::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let value = from_description(&case["value"]);
        types.insert(value.type_name());
        let bytes = unhex(case["hex"].as_str().unwrap());
        assert_eq!(hex(&value.encode()), hex(&bytes), "encoding of {name}");
        let back = Value::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {}", e.message));
        assert_eq!(describe(&back), case["value"], "decoding of {name}");
        codec::validate(&bytes).unwrap();
    }
    assert_eq!(types.len(), 9, "values.json covers every value type");
}

// ---------------------------------------------------------------------------
// LMDB store

const STATE_KEYS: &[&str] = &[
    "v:i64", "v:string", "v:array", "v:gone", "v:u256", "counter",
];
const IDEMPOTENCY_KEY: &str = "order-42";

fn open(dir: &Path) -> athanor_core::Result<Arc<Engine>> {
    Engine::open(
        dir,
        StoreOptions {
            durability: Durability::Full,
            ..StoreOptions::default()
        },
    )
}

/// Writes the golden store's content: state of several types, puts, a delete, events,
/// an idempotency record, a vector collection with an upsert and a delete.
fn write_store(e: &Engine) {
    let docs = e
        .vectors()
        .create(e.store(), "docs", CollectionParams::new(3, Metric::Cosine))
        .unwrap();
    drop(docs);
    let commit = |b: TxBuilder| e.commit_blocking(b.build().unwrap()).unwrap();
    commit(
        TxBuilder::new()
            .put("v:i64", &Value::I64(-7))
            .put("v:string", &Value::String("héllo".into()))
            .put("v:gone", &Value::Bool(true))
            .put("counter", &Value::I64(1))
            .event_json("account.opened", "{\"id\":1,\"name\":\"Ada\"}")
            .event_json("account.credited", "{\"id\":1,\"amount\":250}"),
    );
    commit(
        TxBuilder::new()
            .put(
                "v:array",
                &Value::Array(vec![Value::I64(1), Value::Json("[true]".into())]),
            )
            .put("v:u256", &Value::U256([0xab; 32]))
            .put("counter", &Value::I64(2))
            .delete("v:gone")
            .vector_upsert("docs", "a", &[1.0, 0.0, 0.0], "{\"lang\":\"en\"}")
            .vector_upsert("docs", "b", &[0.0, 1.0, 0.5], "")
            .event_json("account.debited", "{\"id\":1,\"amount\":-5}")
            .idempotency_key(IDEMPOTENCY_KEY),
    );
    commit(
        TxBuilder::new()
            .vector_delete("docs", "b")
            .vector_upsert("docs", "c", &[0.25, -0.5, 2.0], "{\"n\":3}")
            .event_json("account.closed", "{\"id\":1}"),
    );
}

/// Everything the golden store holds, read through the public API.
fn dump_store(e: &Engine) -> Json {
    let store = e.store();
    let _g = store.guard();
    let txn = store.begin_read().unwrap();
    let mut state = serde_json::Map::new();
    for k in STATE_KEYS {
        state.insert(
            k.to_string(),
            match store.get(&txn, k.as_bytes()).unwrap() {
                None => Json::Null,
                Some(entry) => json!({ "version": entry.version, "value": hex(entry.value) }),
            },
        );
    }
    let last = store.last_event_id(&txn).unwrap();
    let events: Vec<Json> = (1..=last)
        .map(|id| {
            let raw = store.get_event(&txn, id).unwrap().unwrap();
            let rec = codec::decode_event(raw).unwrap();
            json!({ "id": id, "commit_seq": rec.commit_seq, "type": rec.event_type, "record": hex(raw) })
        })
        .collect();
    let collections: Vec<Json> = e
        .vectors()
        .list()
        .iter()
        .map(|c| {
            let index = e.vectors().get(&c.name).unwrap();
            let docs: serde_json::Map<String, Json> = ["a", "b", "c"]
                .iter()
                .map(|id| {
                    let doc = e
                        .vectors()
                        .get_doc(store, &txn, &index, id.as_bytes())
                        .unwrap();
                    (id.to_string(), doc.map_or(Json::Null, |d| json!(hex(&d))))
                })
                .collect();
            json!({ "name": c.name, "definition": hex(&c.encode()), "docs": docs })
        })
        .collect();
    let idem = store
        .idempotency_record(&txn, IDEMPOTENCY_KEY.as_bytes())
        .unwrap();
    json!({
        "format": STORE_FORMAT,
        "commit_seq": store.commit_seq(&txn).unwrap(),
        "last_event_id": last,
        "state": state,
        "events": events,
        "idempotency": idem.map(|(seq, first, n, _committed_at)| json!([seq, first, n])),
        "collections": collections,
    })
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Writes `store-v<STORE_FORMAT>` (data.mdb only: LMDB rebuilds its lock file).
fn write_store_golden(dir: &Path) {
    let work = TempDir::new().unwrap();
    let e = open(work.path()).unwrap();
    write_store(&e);
    e.sync().unwrap();
    drop(e);
    fs::create_dir_all(dir.join("canonical")).unwrap();
    fs::copy(
        work.path().join("canonical/data.mdb"),
        dir.join("canonical/data.mdb"),
    )
    .unwrap();
}

#[test]
fn stores_of_every_format_open_and_read_back_identically() {
    let current = golden_dir().join(format!("store-v{STORE_FORMAT}"));
    if writing() && !current.exists() {
        write_store_golden(&current);
        let copy = TempDir::new().unwrap();
        copy_dir(&current, copy.path());
        let e = open(copy.path()).unwrap();
        golden_json(&format!("store-v{STORE_FORMAT}.json"), || dump_store(&e));
    }
    assert!(
        current.exists(),
        "no golden store of the current format {STORE_FORMAT}: run ATHANOR_WRITE_GOLDEN=1 cargo test -p athanor-core --test golden"
    );
    let mut checked = 0;
    for entry in fs::read_dir(golden_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(version) = name
            .strip_prefix("store-v")
            .filter(|v| !v.ends_with(".json"))
        else {
            continue;
        };
        let version: u32 = version.parse().unwrap();
        let expected = golden_json(&format!("{name}.json"), || unreachable!());
        assert_eq!(expected["format"], json!(version));
        // Opening writes (LMDB's lock file, athanor's open transaction): never touch the golden.
        let copy = TempDir::new().unwrap();
        copy_dir(&golden_dir().join(&name), copy.path());
        match open(copy.path()) {
            Ok(e) => {
                assert_eq!(dump_store(&e), expected, "{name} reads back differently");
                assert_eq!(e.store().verify().unwrap(), 4, "{name} verifies");
                for c in e.vectors().list() {
                    e.vectors().verify(e.store(), &c.name).unwrap();
                }
                // Stores made before entity streams get their stream databases at open.
                let b = TxBuilder::new()
                    .append_json("s", Expected::NoStream, &[("a", "{}")])
                    .build()
                    .unwrap();
                e.commit_blocking(b).unwrap();
                let txn = e.begin_read().unwrap();
                assert_eq!(e.store().stream_version(&txn, b"s").unwrap(), 1, "{name} takes stream appends");
            }
            Err(err) => assert!(
                err.code == Code::Version && version < STORE_FORMAT,
                "{name} (format {version}) must open, or be refused with ERR_VERSION by a newer format: {:?} {}",
                err.code,
                err.message
            ),
        }
        checked += 1;
    }
    assert!(checked >= 1);
}

// ---------------------------------------------------------------------------
// projection.db

fn projection_schema(dir: &Path) -> Json {
    let conn = projection::open_main(dir).unwrap();
    let mut stmt = conn
        .conn()
        .prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_master \
             WHERE tbl_name LIKE '\\_athanor\\_%' ESCAPE '\\' OR name = 'sqlite_sequence' ORDER BY type, name",
        )
        .unwrap();
    let rows: Vec<Json> = stmt
        .query_map([], |r| {
            Ok(json!({
                "type": r.get::<_, String>(0)?,
                "name": r.get::<_, String>(1)?,
                "tbl_name": r.get::<_, String>(2)?,
                "sql": r.get::<_, Option<String>>(3)?,
            }))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let format: i64 = conn
        .conn()
        .query_row(
            "SELECT value FROM _athanor_meta WHERE key = 'format_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    json!({ "format": format, "sqlite_master": rows })
}

#[test]
fn projection_schema_matches_the_golden() {
    let dir = TempDir::new().unwrap();
    let schema = projection_schema(dir.path());
    let golden = golden_json(
        &format!("projection-schema-v{PROJECTION_FORMAT}.json"),
        || schema.clone(),
    );
    assert_eq!(
        schema, golden,
        "athanor's tables in projection.db changed: bump PROJECTION_FORMAT with a migration and add its golden"
    );
}

// ---------------------------------------------------------------------------
// The transaction batch (txn.rs), the one format TypeScript writes and Rust reads.
// test/golden.test.ts builds the same transaction through the TypeScript transaction
// and compares its encoding with `hex`.

fn txn_batch_golden() -> Json {
    let value = Value::I64(-2);
    let vector = [1.0f32, -0.5, f32::from_bits(0x3f81_8283)];
    let builder = TxBuilder::new()
        .read("seen", 0x0102_0304_0506_0708)
        .read("absent", 0)
        .put("a", &value)
        .delete("gone")
        .trail_put("\0athanor/audit/x", &Value::String("r".into()))
        .trail_count("\0athanor/audit/y", 0x0001_93a4_b5c6_d7e8, &[0x01, 0xfe])
        .event_json("t.json", "{\"n\":1,\"s\":\"é\"}")
        .event_bytes("t.bytes", &[0, 1, 0x7f, 0xff])
        .vector_upsert("docs", "x", &vector, "{\"k\":1}")
        .vector_delete("docs", "y")
        .idempotency_key("idem-é")
        .append_json(
            "order-é",
            Expected::Exact(0x0010_2030_4050_6070),
            &[("placed", "{\"n\":2}"), ("paid", "{}")],
        )
        .append_json("cart", Expected::NoStream, &[("opened", "[]")])
        .numeric(
            "n",
            NumericArgs {
                kind: NumericKind::Sub,
                ty: NumericType::Follow,
                operand: Int::from_i64(-3),
                min: Some(Int::from_i64(i64::MIN)),
                max: None,
            },
        )
        .numeric(
            "big",
            NumericArgs {
                kind: NumericKind::Max,
                ty: NumericType::U256,
                operand: Int::new(false, [0xa5; 32]),
                min: None,
                max: Some(Int::new(false, [0xff; 32])),
            },
        );
    let bytes = builder.encode();
    // The reader takes back what the reference encoder wrote.
    let batch = TxBatch::parse(bytes.clone()).unwrap();
    let text = |r: &std::ops::Range<usize>| String::from_utf8(batch.bytes(r).to_vec()).unwrap();
    let reads: Vec<(String, u64)> = batch.reads.iter().map(|(k, v)| (text(k), *v)).collect();
    assert_eq!(
        reads,
        [("seen".into(), 0x0102_0304_0506_0708), ("absent".into(), 0)]
    );
    let types: Vec<String> = batch.events.iter().map(|e| text(&e.event_type)).collect();
    assert_eq!(types, ["t.json", "t.bytes", "placed", "paid", "opened"]);
    assert_eq!((batch.writes.len(), batch.vectors.len()), (4, 2));
    assert!(matches!(
        batch.writes[2],
        athanor_core::txn::WriteOp::TrailPut { .. }
    ));
    assert!(matches!(
        batch.writes[3],
        athanor_core::txn::WriteOp::TrailCount {
            at_ms: 0x0001_93a4_b5c6_d7e8,
            ..
        }
    ));
    assert_eq!((batch.appends.len(), batch.numeric.len()), (2, 2));
    assert_eq!(batch.appends[0].events, 2..4);
    assert_eq!(
        batch.idempotency_key.as_ref().map(text).as_deref(),
        Some("idem-é")
    );
    json!({
        "format": athanor_core::txn::WIRE_VERSION,
        "spec": "native/core/src/txn.rs",
        "reads": [["seen", "72623859790382856"], ["absent", "0"]],
        "writes": [
            { "key": "a", "value": hex(&value.encode()) },
            { "key": "gone", "delete": true },
            { "key": "\0athanor/audit/x", "trail": hex(&Value::String("r".into()).encode()) },
            { "key": "\0athanor/audit/y", "trail_count": hex(&Value::Bytes(vec![0x01, 0xfe]).encode()),
              "at": 0x0001_93a4_b5c6_d7e8u64.to_string() },
        ],
        "events": [
            { "type": "t.json", "json": "{\"n\":1,\"s\":\"é\"}" },
            { "type": "t.bytes", "bytes": "00017fff" },
        ],
        "vectors": [
            {
                "collection": "docs",
                "upsert": "x",
                "vector_bits": vector.iter().map(|x| format!("{:08x}", x.to_bits())).collect::<Vec<_>>(),
                "metadata": "{\"k\":1}",
            },
            { "collection": "docs", "delete": "y" },
        ],
        "idempotency_key": "idem-é",
        "appends": [
            { "stream": "order-é", "expected": "4538991236898928", "events": [
                { "type": "placed", "json": "{\"n\":2}" }, { "type": "paid", "json": "{}" } ] },
            { "stream": "cart", "expected": "none", "events": [{ "type": "opened", "json": "[]" }] },
        ],
        "numeric": [
            { "op": "sub", "key": "n", "operand": "-3", "min": i64::MIN.to_string() },
            { "op": "max", "key": "big", "type": "u256", "operand": Int::new(false, [0xa5; 32]).to_string(),
              "max": Int::new(false, [0xff; 32]).to_string() },
        ],
        "hex": hex(&bytes),
    })
}

#[test]
fn txn_batch_matches_the_golden() {
    let name = format!("txn-batch-v{}.json", athanor_core::txn::WIRE_VERSION);
    let golden = golden_json(&name, txn_batch_golden);
    assert_eq!(
        golden,
        txn_batch_golden(),
        "{name}: the transaction batch changed; bump WIRE_VERSION, change ts/state/transaction.ts with it and add its golden"
    );
}

#[test]
fn older_txn_batch_versions_still_parse() {
    for v in 2..athanor_core::txn::WIRE_VERSION {
        let golden = golden_json(&format!("txn-batch-v{v}.json"), || unreachable!());
        let batch = TxBatch::parse(unhex(golden["hex"].as_str().unwrap())).unwrap();
        assert_eq!(batch.writes.len(), if v >= 4 { 3 } else { 2 }, "v{v}");
        assert_eq!(batch.events.len(), if v == 2 { 2 } else { 5 }, "v{v}");
    }
    // A trail put is refused in a batch of an older version, and for a key outside the trail.
    let mut v3 = TxBuilder::new()
        .trail_put("\0athanor/audit/x", &Value::I64(1))
        .encode();
    v3[0] = 3;
    assert!(TxBatch::parse(v3).is_err());
    let outside = TxBuilder::new()
        .trail_put("\0athanor/roles/x", &Value::I64(1))
        .encode();
    assert!(TxBatch::parse(outside).is_err());
    // So is a trail count: in a batch of version 4, outside the trail, or of a value other than bytes.
    let mut v4 = TxBuilder::new()
        .trail_count("\0athanor/audit/x", 1, &[1])
        .encode();
    v4[0] = 4;
    assert!(TxBatch::parse(v4).is_err());
    let outside = TxBuilder::new()
        .trail_count("\0athanor/x", 1, &[1])
        .encode();
    assert!(TxBatch::parse(outside).is_err());
    let mut not_bytes = TxBuilder::new()
        .trail_count("\0athanor/audit/x", 1, &[1])
        .encode();
    // The value's tag: before its one byte of body and the 18 bytes of empty sections after the writes.
    let tag_at = not_bytes.len() - 18 - 2;
    assert_eq!(
        not_bytes[tag_at], 6,
        "the bytes tag where the test expects it"
    );
    not_bytes[tag_at] = 5;
    assert!(TxBatch::parse(not_bytes).is_err());
    assert!(TxBatch::parse(
        TxBuilder::new()
            .trail_put("\0athanor/audit-profile/p", &Value::I64(1))
            .encode()
    )
    .is_ok());
}

// ---------------------------------------------------------------------------
// Wire formats between the addon and TypeScript (athanor_core::wire)
//
// Each `wire-<format>.json` holds fixed inputs, what they decode to and their encoding
// (`hex`). Here the inputs are encoded again and must give the same file; test/golden.test.ts
// decodes every `hex` with the TypeScript decoder and compares with the decoded values.
// Numbers chosen so that each byte of a field differs: a field read at the wrong width
// or offset, or in the wrong order, reads differently. Lengths are small, which a u32
// read as a u16 would not notice, so each format with a u32 length also pins one case
// past 65535 bytes, in `wire-<format>-large.bin` (its bytes are [`filler`]).

/// Checks the golden `wire-<format>.json` against `make()`, writing it first when asked to.
fn wire_golden(format: &str, make: impl Fn() -> Json) {
    let name = format!("wire-{format}.json");
    let golden = golden_json(&name, &make);
    assert_eq!(
        golden,
        make(),
        "{name}: the {format} wire format changed; change the TypeScript decoder in ts/internal/ with it, \
         then delete the file and rewrite it (ATHANOR_WRITE_GOLDEN=1)"
    );
}

/// Checks `wire-<format>-large.bin` against `bytes`, writing it first when asked to;
/// returns its name, for the JSON.
fn large_golden(format: &str, bytes: &[u8]) -> String {
    let name = format!("wire-{format}-large.bin");
    let path = golden_dir().join(&name);
    if writing() && !path.exists() {
        fs::write(&path, bytes).unwrap();
    }
    let pinned = fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run ATHANOR_WRITE_GOLDEN=1 cargo test -p athanor-core --test golden",
            path.display()
        )
    });
    assert!(
        pinned == bytes,
        "{name}: the {format} wire format changed; change the TypeScript decoder with it, then delete the file and rewrite it"
    );
    name
}

/// The length of each large field: its u32 length has a nonzero third byte.
const LARGE: usize = 70_000;

/// `len` bytes counting up modulo 251 (test/golden.test.ts makes the same).
fn filler(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn completion_case(name: &str, result: athanor_core::Result<CommitInfo>) -> Json {
    let decoded = match &result {
        Ok(info) => json!({
            "status": if info.outcome == Outcome::Applied { "applied" } else { "duplicate" },
            "commit_seq": info.commit_seq.to_string(),
            "first_event_id": info.first_event_id.to_string(),
            "event_count": info.event_count,
        }),
        Err(e) => json!({
            "status": "failed",
            "code": e.code.as_str(),
            "message": e.message,
            "sqlite_code": e.sqlite_code,
            "causes": e.causes(),
        }),
    };
    json!({ "name": name, "decoded": decoded, "hex": hex(&wire::completion::pack_record(&result)) })
}

fn completions_golden() -> Json {
    let info = |outcome, commit_seq, first_event_id, event_count| {
        Ok(CommitInfo {
            outcome,
            commit_seq,
            first_event_id,
            event_count,
        })
    };
    let applied = info(
        Outcome::Applied,
        0x0102_0304_0506_0708,
        0x1112_1314_1516_1718,
        0x2122_2324,
    );
    let failed = Err(athanor_core::Error::new(
        Code::Conflict,
        "key \"é\" changed since it was read; retry",
    ));
    // A cause with a cause of its own: the record keeps both texts, outermost first.
    let failed_with_causes = Err(athanor_core::Error::new(
        Code::SqlConstraint,
        "SQLite: UNIQUE constraint failed: t.x; the statement was not applied",
    )
    .with_sqlite_code(2067)
    .with_source(
        athanor_core::Error::new(Code::Io, "outer cause é")
            .with_source(std::io::Error::other("inner cause")),
    ));
    let notice = CommitNotice {
        commit_seq: 0x3132_3334_3536_3738,
        last_event_id: 0x4142_4344_4546_4748,
    };
    let group = [
        Completion {
            token: 0x7fff_fffe,
            result: applied.clone(),
        },
        Completion {
            token: 1,
            result: failed.clone(),
        },
        Completion {
            token: 2,
            result: failed_with_causes.clone(),
        },
    ];
    json!({
        "spec": "native/core/src/wire/completion.rs",
        "records": [
            completion_case("applied", applied),
            completion_case("duplicate", info(Outcome::Duplicate, 7, 3, 2)),
            completion_case("applied without events", info(Outcome::Applied, 9, 0, 0)),
            completion_case("failed", failed),
            completion_case("failed with a SQLite code and causes", failed_with_causes),
        ],
        "group": {
            "commit_seq": notice.commit_seq.to_string(),
            "last_event_id": notice.last_event_id.to_string(),
            "tokens": group.iter().map(|c| c.token).collect::<Vec<_>>(),
            "records": group.iter().map(|c| completion_case("", c.result.clone())["decoded"].clone()).collect::<Vec<_>>(),
            "hex": hex(&wire::completion::pack_group(notice, &group)),
        },
        "large": {
            "code": "ERR_CONFLICT",
            "message_x_times": LARGE,
            "cause_y_times": LARGE,
            "bin": large_golden("completion", &wire::completion::pack_record(&Err(
                athanor_core::Error::new(Code::Conflict, "x".repeat(LARGE))
                    .with_source(std::io::Error::other("y".repeat(LARGE))),
            ))),
        },
    })
}

#[test]
fn wire_completion_matches_the_golden() {
    wire_golden("completion", completions_golden);
}

fn commit_many_golden() -> Json {
    let frames: [(u32, Vec<u8>); 3] = [
        (1, vec![0xde, 0xad, 0xbe, 0xef]),
        (0x0102_0304, vec![]),
        (0x7fff_ffff, (0u8..=255).collect()),
    ];
    let mut packed = Vec::new();
    for (token, batch) in &frames {
        wire::commit_many::put_frame(&mut packed, *token, batch);
    }
    // The reader takes back what the writer wrote, frame by frame.
    let mut off = 0;
    for (token, batch) in &frames {
        let (body, next) = wire::commit_many::read_frame(&packed, off, *token).unwrap();
        assert_eq!(body, &batch[..]);
        off = next;
    }
    assert_eq!(off, packed.len());
    assert!(
        wire::commit_many::read_frame(&packed, 0, 2).is_none(),
        "a frame of another token is refused"
    );
    assert!(
        wire::commit_many::read_frame(&packed[..10], 0, 1).is_none(),
        "a cut frame is refused"
    );
    let mut large = Vec::new();
    wire::commit_many::put_frame(&mut large, 5, &filler(LARGE));
    json!({
        "spec": "native/core/src/wire/commit_many.rs",
        "large": { "token": 5, "batch_filler": LARGE, "bin": large_golden("commit-many", &large) },
        "frames": frames.iter().map(|(t, b)| json!({ "token": t, "batch": hex(b) })).collect::<Vec<_>>(),
        "hex": hex(&packed),
        "answer": {
            "tokens": [0x0102_0304u32, 7],
            "codes": ["ERR_INVALID_ARGUMENT", "ERR_INTERNAL"],
            "messages": ["key must not be empty", "é: b"],
            "hex": hex(&wire::commit_many::pack_answer(&[
                Completion {
                    token: 0x0102_0304,
                    result: Err(athanor_core::Error::new(Code::InvalidArgument, "key must not be empty")),
                },
                Completion {
                    token: 7,
                    result: Err(athanor_core::Error::new(Code::Internal, "é: b")),
                },
            ])),
        },
    })
}

#[test]
fn wire_commit_many_matches_the_golden() {
    wire_golden("commit-many", commit_many_golden);
}

/// `(id, commit_seq, at_ms, kind, type, payload)`, as `EventPack::push` takes them.
type PackedEvent<'a> = (u64, u64, u64, u8, &'a str, &'a [u8]);

fn events_golden() -> Json {
    let events: [PackedEvent; 4] = [
        (
            1,
            0x0102_0304_0506_0708,
            1_700_000_000_123,
            1,
            "account.opened",
            b"{\"id\":1,\"big\":12345678901234567890}",
        ),
        (
            0x0011_1213_1415_1617,
            0x0102_0304_0506_0708,
            0x001f_2f3f_4f5f_6f7f,
            2,
            "é",
            &[0, 1, 0x7f, 0xff],
        ),
        // Same commit and type as the one before: the decoder reuses them.
        (0x0011_1213_1415_1618, 0x0102_0304_0506_0708, 0, 2, "é", &[]),
        (3, 9, 2, 1, "x", b"[\"\xc3\xa9\"]"),
    ];
    let mut pack = wire::events::EventPack::new();
    for (id, seq, at, kind, t, payload) in events {
        pack.push(id, seq, at, kind, t, payload);
    }
    let pack = pack.finish();
    let back: Vec<PackedEvent> = wire::events::unpack(&pack)
        .unwrap()
        .iter()
        .map(|e| (e.id, e.commit_seq, e.at_ms, e.kind, e.event_type, e.payload))
        .collect();
    assert_eq!(back, events, "unpack reads back what EventPack wrote");
    let mut large = wire::events::EventPack::new();
    large.push(4, 5, 6, 2, "big", &filler(LARGE));
    json!({
        "spec": "native/core/src/wire/events.rs",
        "large": {
            "event": { "id": "4", "commit_seq": "5", "at_ms": 6, "kind": 2, "type": "big", "payload_filler": LARGE },
            "bin": large_golden("events", &large.finish()),
        },
        "events": events.iter().map(|(id, seq, at, kind, t, payload)| json!({
            "id": id.to_string(),
            "commit_seq": seq.to_string(),
            "at_ms": at,
            "kind": kind,
            "type": t,
            "payload": hex(payload),
        })).collect::<Vec<_>>(),
        "hex": hex(&pack),
        "empty": hex(&wire::events::EventPack::new().finish()),
    })
}

#[test]
fn wire_events_match_the_golden() {
    wire_golden("events", events_golden);
}

fn state_list_golden() -> Json {
    let rows = [
        ("a".to_string(), Value::I64(-2).encode()),
        (
            "user/é/κλειδί".to_string(),
            Value::String("x".into()).encode(),
        ),
        (
            "z".to_string(),
            Value::Bytes((0u8..=255).cycle().take(300).collect()).encode(),
        ),
    ];
    let large = Value::Bytes(filler(LARGE)).encode();
    json!({
        "spec": "native/core/src/wire/state_list.rs",
        "large": {
            "key_k_times": LARGE,
            "value_bytes_filler": LARGE,
            "bin": large_golden("state-list", &wire::state_list::pack(&[("k".repeat(LARGE), &large)])),
        },
        "entries": rows.iter().map(|(k, v)| json!({ "key": k, "value": hex(v) })).collect::<Vec<_>>(),
        "hex": hex(&wire::state_list::pack(&rows)),
    })
}

#[test]
fn wire_state_list_matches_the_golden() {
    wire_golden("state-list", state_list_golden);
}

fn hits_golden() -> Json {
    let meta = json!({ "lang": "en", "n": [1, 2.5, null], "big": 12345678901234567890u64 });
    let hits: [(f32, &str, Option<&Json>); 3] = [
        (0.75, "a", Some(&meta)),
        (-1.25, "é-κ", None),
        (f32::from_bits(0x3f81_8283), "", Some(&Json::Null)),
    ];
    let mut one = Vec::new();
    wire::hits::put_hits(&mut one, hits.iter().copied());
    let mut none = Vec::new();
    wire::hits::put_hits(&mut none, std::iter::empty());
    let describe = |hits: &[(f32, &str, Option<&Json>)]| -> Vec<Json> {
        hits.iter()
            .map(|(score, id, m)| json!({ "score_bits": format!("{:08x}", score.to_bits()), "id": id, "metadata": m.map_or(json!("none"), |m| json!({ "json": m.to_string() })) }))
            .collect()
    };
    let long = Json::String("x".repeat(LARGE));
    let mut large = Vec::new();
    wire::hits::put_hits(&mut large, [(1.0f32, "big", Some(&long))].into_iter());
    json!({
        "spec": "native/core/src/wire/hits.rs",
        "large": { "id": "big", "score_bits": "3f800000", "metadata_string_x_times": LARGE, "bin": large_golden("hits", &large) },
        "hits": describe(&hits),
        "hex": hex(&one),
        "batch": {
            "queries": [describe(&hits), describe(&[])],
            "hex": hex(&wire::hits::pack_batch(&[one.clone(), none])),
        },
    })
}

#[test]
fn wire_hits_match_the_golden() {
    wire_golden("hits", hits_golden);
}

fn document_golden() -> Json {
    let vector: [f32; 3] = [1.0, -0.5, f32::from_bits(0x3f81_8283)];
    let vector_le: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    let case = |metadata: &str| {
        json!({
            "vector_bits": vector.iter().map(|x| format!("{:08x}", x.to_bits())).collect::<Vec<_>>(),
            "metadata": metadata,
            "hex": hex(&wire::document::pack(&vector_le, metadata.as_bytes())),
        })
    };
    json!({
        "spec": "native/core/src/wire/document.rs",
        "dimension": vector.len(),
        "documents": [case("{\"a\":[1,\"é\"]}"), case("")],
    })
}

#[test]
fn wire_document_matches_the_golden() {
    wire_golden("document", document_golden);
}

fn entry_golden() -> Json {
    let value = Value::String("v".into()).encode();
    let version = 0x0102_0304_0506_0708u64;
    let mut scratch = wire::entry::header(version).to_vec();
    scratch.extend_from_slice(&value);
    assert_eq!(scratch, wire::entry::pack(version, &value));
    json!({
        "spec": "native/core/src/wire/entry.rs",
        "version": version.to_string(),
        "value": hex(&value),
        "hex": hex(&scratch),
    })
}

#[test]
fn wire_entry_matches_the_golden() {
    wire_golden("entry", entry_golden);
}

fn commit_record_golden() -> Json {
    let batch = TxBuilder::new()
        .put("k", &Value::I64(7))
        .event_json("made", "{}")
        .build()
        .unwrap();
    let id = "0123456789abcdef01234567";
    let (seq, at, first) = (0x0102_0304_0506_0708u64, 1_700_000_000_123u64, 42u64);
    let def = collection::CollectionDef {
        id: 3,
        name: "docs".into(),
        params: CollectionParams::new(2, Metric::Cosine),
    }
    .encode();
    let collections: [(&[u8], &[u8]); 1] = [(b"docs", &def)];
    let bytes = wire::commit_record::encode(id, seq, at, first, &collections, batch.raw());
    let back = wire::commit_record::decode(&bytes).unwrap();
    assert_eq!(back.collections, collections);
    assert_eq!(
        (
            back.database_id,
            back.commit_seq,
            back.at_ms,
            back.first_event_id,
            back.batch
        ),
        (id, seq, at, first, batch.raw())
    );
    json!({
        "spec": "native/core/src/wire/commit_record.rs",
        "format": wire::commit_record::FORMAT,
        "database_id": id,
        "commit_seq": seq.to_string(),
        "at_ms": at.to_string(),
        "first_event_id": first.to_string(),
        "collections": [{ "name": "docs", "def": hex(&def) }],
        "batch": hex(batch.raw()),
        "hex": hex(&bytes),
    })
}

fn streams_golden() -> Json {
    // Versions below 2^53: TypeScript reads them as numbers.
    let first = 0x0010_2030_4050_6070u64;
    let mut events = wire::events::EventPack::new();
    events.push(
        0x0102_0304_0506_0708,
        0x1112_1314_1516_1718,
        0x0000_0193_0405_0607,
        1,
        "placed",
        b"{\"n\":1}",
    );
    let page = wire::streams::pack_page(first, events.finish());
    let rows: [(&[u8], u64); 2] = [("order-é".as_bytes(), first), (b"b", 1)];
    let list = wire::streams::pack_list(&rows);
    json!({
        "spec": "native/core/src/wire/streams.rs",
        "page": {
            "first_version": first.to_string(),
            "event": { "id": "72623859790382856", "commit_seq": "1230066625199609624",
                       "at_ms": 0x0000_0193_0405_0607u64, "type": "placed", "json": "{\"n\":1}" },
            "hex": hex(&page),
        },
        "list": {
            "rows": [["order-é", first.to_string()], ["b", "1"]],
            "hex": hex(&list),
        },
    })
}

#[test]
fn wire_commit_record_matches_the_golden() {
    wire_golden("commit-record", commit_record_golden);
}

#[test]
fn wire_streams_matches_the_golden() {
    wire_golden("streams", streams_golden);
}

// ---------------------------------------------------------------------------
// Vector collection records

/// Collection records of both formats: 1 (no quantization: what older builds
/// wrote, still written for unquantized collections) and 2 (with the
/// quantization byte). Each golden decodes to its definition and re-encodes to
/// the same bytes.
#[test]
fn vector_collection_records_match_the_goldens() {
    let defs: Vec<collection::CollectionDef> = [
        collection::Quantization::None,
        collection::Quantization::Int8,
        collection::Quantization::Binary,
    ]
    .into_iter()
    .map(|q| collection::CollectionDef {
        id: 7,
        name: format!("c-{}", q.as_str()),
        params: CollectionParams {
            quantization: q,
            ..CollectionParams::new(384, Metric::L2)
        },
    })
    .collect();
    let make = || {
        Json::Object(
            defs.iter()
                .map(|d| (d.name.clone(), json!(hex(&d.encode()))))
                .collect(),
        )
    };
    let pinned = golden_json("vector-collection-v2.json", make);
    for d in &defs {
        let bytes = unhex(pinned[&d.name].as_str().unwrap());
        assert_eq!(
            collection::CollectionDef::decode(d.name.as_bytes(), &bytes).unwrap(),
            *d
        );
        assert_eq!(bytes, d.encode(), "{}", d.name);
    }
    assert_eq!(unhex(pinned["c-none"].as_str().unwrap())[0], 1);
    assert_eq!(unhex(pinned["c-int8"].as_str().unwrap())[0], 2);
}
