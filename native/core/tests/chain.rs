//! The event log's hash chain: the link's input pinned by `golden/chain.json`
//! (computed with Python's hashlib/hmac, independently of athanor), links written by
//! the commit writer, proofs an outside party recomputes, and damage found by verify.

use std::path::Path;
use std::sync::Arc;

use athanor_core::{
    chain_link, ChainKey, ChainKind, ChainOptions, Code, Engine, Outcome, StoreOptions, TxBuilder,
    Value,
};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn h32(s: &str) -> [u8; 32] {
    unhex(s).try_into().unwrap()
}

#[test]
fn links_match_the_golden() {
    let g: Json = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/chain.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let key = ChainKey::new(&unhex(g["hmac_key"].as_str().unwrap())).unwrap();
    for c in g["links"].as_array().unwrap() {
        let id = c["id"].as_u64().unwrap();
        let rec = unhex(c["record"].as_str().unwrap());
        let sha = chain_link(
            ChainKind::Sha256,
            None,
            &h32(c["prev"].as_str().unwrap()),
            id,
            &rec,
        );
        assert_eq!(
            sha.unwrap(),
            h32(c["sha256"].as_str().unwrap()),
            "sha256 link {id}"
        );
        let mac = chain_link(
            ChainKind::HmacSha256,
            Some(&key),
            &h32(c["hmac_prev"].as_str().unwrap()),
            id,
            &rec,
        );
        assert_eq!(
            mac.unwrap(),
            h32(c["hmac_sha256"].as_str().unwrap()),
            "hmac link {id}"
        );
    }
    let l = &g["long_key"];
    let long = ChainKey::new(&unhex(l["key"].as_str().unwrap())).unwrap();
    let mac = chain_link(
        ChainKind::HmacSha256,
        Some(&long),
        &h32(l["prev"].as_str().unwrap()),
        l["id"].as_u64().unwrap(),
        &unhex(l["record"].as_str().unwrap()),
    );
    assert_eq!(mac.unwrap(), h32(l["hmac_sha256"].as_str().unwrap()));
}

fn chained(key: Option<&[u8]>) -> StoreOptions {
    StoreOptions {
        chain: ChainOptions {
            enable: true,
            hmac_key: key.map(|k| ChainKey::new(k).unwrap()),
        },
        ..StoreOptions::default()
    }
}

fn commit_events(e: &Engine, payloads: &[&str]) {
    for p in payloads {
        let b = TxBuilder::new().event_json("t", p).build().unwrap();
        assert_eq!(e.commit_blocking(b).unwrap().outcome, Outcome::Applied);
    }
}

fn open(dir: &Path, o: StoreOptions) -> Arc<Engine> {
    Engine::open(dir, o).expect("open")
}

#[test]
fn a_proof_recomputes_with_plain_sha256() {
    let dir = TempDir::new().unwrap();
    let e = open(dir.path(), chained(None));
    commit_events(&e, &["{\"a\":1}", "{\"a\":2}", "{\"a\":3}"]);
    assert_eq!(athanor_core::verify::verify(&e).unwrap(), 3);
    let store = e.store();
    let _g = store.guard();
    let txn = store.begin_read().unwrap();
    let mut prev = [0u8; 32];
    for id in 1..=3u64 {
        let p = store.event_proof(&txn, id).unwrap().unwrap();
        assert_eq!(p.prev, prev, "event {id} links to the one before");
        let mut h = Sha256::new();
        h.update(p.prev);
        h.update(id.to_be_bytes());
        h.update(&p.record);
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(p.hash, want);
        prev = p.hash;
    }
    assert!(store.event_proof(&txn, 4).unwrap().is_none());
}

#[test]
fn a_chain_turned_on_later_starts_at_the_next_event() {
    let dir = TempDir::new().unwrap();
    {
        let e = open(dir.path(), StoreOptions::default());
        commit_events(&e, &["{}", "{}"]);
    }
    let e = open(dir.path(), chained(None));
    commit_events(&e, &["{}"]);
    let store = e.store();
    let _g = store.guard();
    let txn = store.begin_read().unwrap();
    assert_eq!(store.chain_meta(&txn).unwrap().unwrap().from, 3);
    assert_eq!(
        store.event_proof(&txn, 1).unwrap_err().code,
        Code::InvalidArgument
    );
    assert!(store.event_proof(&txn, 3).unwrap().is_some());
}

fn damage_event(dir: &Path, id: u64) {
    use heed::types::Bytes;
    // SAFETY: no engine holds this directory open while the test writes through it.
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .max_dbs(16)
            .map_size(64 << 20)
            .open(dir.join("canonical"))
    }
    .unwrap();
    let mut w = env.write_txn().unwrap();
    let events: heed::Database<Bytes, Bytes> =
        env.open_database(&w, Some("events")).unwrap().unwrap();
    let mut rec = events.get(&w, &id.to_be_bytes()).unwrap().unwrap().to_vec();
    let last = rec.len() - 2;
    rec[last] ^= 0x01;
    events.put(&mut w, &id.to_be_bytes(), &rec).unwrap();
    w.commit().unwrap();
}

#[test]
fn a_keyed_chain_needs_its_key_and_finds_the_damaged_event() {
    let dir = TempDir::new().unwrap();
    let key = [7u8; 32];
    {
        let e = open(dir.path(), chained(Some(&key)));
        commit_events(&e, &["{\"n\":1}", "{\"n\":2}", "{\"n\":3}", "{\"n\":4}"]);
        assert_eq!(athanor_core::verify::verify(&e).unwrap(), 4);
    }
    {
        // Without the key: appending events is refused, nothing written.
        let e = open(dir.path(), StoreOptions::default());
        let b = TxBuilder::new()
            .put("k", &Value::I64(1))
            .event_json("t", "{}")
            .build()
            .unwrap();
        let err = e.commit_blocking(b).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument, "{err}");
        assert!(!err.message.contains("0707"), "no key bytes in messages");
        assert_eq!(
            athanor_core::verify::verify(&e).unwrap_err().code,
            Code::InvalidArgument
        );
    }
    {
        // The wrong key breaks the first link.
        let e = open(dir.path(), chained(Some(&[8u8; 32])));
        let err = athanor_core::verify::verify(&e).unwrap_err();
        assert_eq!(err.code, Code::Corrupt);
        assert!(err.message.contains("event 1 "), "{}", err.message);
    }
    damage_event(dir.path(), 3);
    let e = open(dir.path(), chained(Some(&key)));
    let err = athanor_core::verify::verify(&e).unwrap_err();
    assert_eq!(err.code, Code::Corrupt);
    assert!(
        err.message.contains("event 3 breaks the hash chain"),
        "{}",
        err.message
    );
    let report = athanor_core::verify::report(&e).unwrap();
    let chain: Vec<_> = report
        .violations
        .iter()
        .filter(|v| v.kind == "event_chain")
        .collect();
    assert_eq!(
        chain.len(),
        1,
        "only the damaged event's link breaks: {chain:?}"
    );
}

#[test]
fn a_plain_chain_refuses_a_key() {
    let dir = TempDir::new().unwrap();
    drop(open(dir.path(), chained(None)));
    let err = Engine::open(dir.path(), chained(Some(b"secret-key-bytes")))
        .err()
        .unwrap();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(!err.message.contains("secret"));
}

#[test]
fn the_key_never_prints() {
    let o = chained(Some(b"do-not-print-this-key"));
    let shown = format!("{o:?}");
    assert!(shown.contains("ChainKey(..)"), "{shown}");
    assert!(!shown.contains("do-not-print"), "{shown}");
    assert_eq!(ChainKey::new(b"").unwrap_err().code, Code::InvalidArgument);
}
