//! Fuzzing the byte formats that cross into the engine: the transaction wire batch
//! (`TxBatch::parse`), the value codec, the stored event and state records and the
//! event pack's reader (`wire::events::unpack`), on arbitrary bytes and on mutated
//! valid inputs. Every input either parses or fails with a typed error (never a
//! panic, never `Io` standing in for a bug).

use athanor_core::codec::{self, Value};
use athanor_core::numeric::{Int, NumericArgs, NumericKind, NumericType};
use athanor_core::txn::Expected;
use athanor_core::{wire, Code, TxBatch, TxBuilder};
use proptest::prelude::*;

/// Codes a malformed input may fail with: all name what is wrong with the input.
fn is_input_error(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::Type | Code::Corrupt | Code::Version
    )
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::I64),
        any::<[u8; 32]>().prop_map(Value::U256),
        any::<f64>().prop_map(Value::F64),
        any::<bool>().prop_map(Value::Bool),
        "\\PC{0,12}".prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
        "\\PC{0,12}".prop_map(Value::Json),
        proptest::collection::btree_set("\\PC{0,6}", 0..4).prop_map(Value::Set),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        proptest::collection::vec(inner, 0..4).prop_map(Value::Array)
    })
}

/// A valid batch of every section: reads, puts, deletes, trail puts and counts, events,
/// vector ops, idempotency key, stream appends, numeric ops.
fn batch() -> impl Strategy<Value = Vec<u8>> {
    let key = "[a-z:]{1,12}";
    (
        proptest::collection::vec((key, any::<u64>()), 0..3),
        proptest::collection::vec((key, proptest::option::of(value())), 0..4),
        proptest::collection::vec(("[a-z.]{1,10}", 0u32..100), 0..3),
        proptest::collection::vec(
            (
                "[a-z]{1,8}",
                "[a-z0-9]{1,8}",
                proptest::option::of(proptest::collection::vec(-1e3f32..1e3, 1..5)),
            ),
            0..3,
        ),
        proptest::option::of("[a-z0-9]{1,16}"),
        proptest::collection::vec(("[a-z-]{1,10}", 0u8..3, 0u64..5, 1usize..3), 0..3),
        proptest::collection::vec(("[A-Z]{1,6}", 1u8..5, any::<i64>(), 0u8..4), 0..3),
        proptest::collection::vec(
            (
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..24),
                any::<bool>(),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(reads, writes, events, vectors, idem, appends, numeric, trail)| {
                let mut b = TxBuilder::new();
                for (k, v) in &reads {
                    b = b.read(k, *v);
                }
                for (k, v) in &writes {
                    b = match v {
                        Some(v) => b.put(k, v),
                        None => b.delete(k),
                    };
                }
                for (i, (at, body, counted)) in trail.iter().enumerate() {
                    let key = format!("\0athanor/audit/r{i}");
                    b = if *counted {
                        b.trail_count(&key, *at, body)
                    } else {
                        b.trail_put(&key, &Value::Bytes(body.clone()))
                    };
                }
                for (t, n) in &events {
                    b = b.event_json(t, &format!("{{\"n\":{n}}}"));
                }
                for (c, id, v) in &vectors {
                    b = match v {
                        Some(v) => b.vector_upsert(c, id, v, "{\"a\":1}"),
                        None => b.vector_delete(c, id),
                    };
                }
                if let Some(k) = &idem {
                    b = b.idempotency_key(k);
                }
                for (stream, tag, v, n) in &appends {
                    let expected = match tag {
                        0 => Expected::Any,
                        1 => Expected::NoStream,
                        _ => Expected::Exact(*v),
                    };
                    let evs = vec![("appended", "{}"); *n];
                    b = b.append_json(stream, expected, &evs);
                }
                // Upper-case keys: never among the writes' keys, which a numeric op may not share.
                for (key, kind, d, flags) in &numeric {
                    let args = NumericArgs {
                        kind: NumericKind::from_u8(*kind).unwrap(),
                        ty: NumericType::Follow,
                        operand: Int::from_i64(*d),
                        min: (flags & 1 != 0).then(|| Int::from_i64(-5)),
                        max: (flags & 2 != 0).then(|| Int::from_i64(d.saturating_abs())),
                    };
                    b = b.numeric(key, args);
                }
                b.encode()
            },
        )
}

/// One way to damage a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Truncate {
        len: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// A length or count field set to something huge.
    Big {
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Remove { at, len }),
        any::<usize>().prop_map(|at| Mutation::Big { at }),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let n = data.len().max(1);
    match m {
        Mutation::Flip { at, bit } => {
            if let Some(b) = data.get_mut(at % n) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Set { at, byte } => {
            if let Some(b) = data.get_mut(at % n) {
                *b = *byte;
            }
        }
        Mutation::Truncate { len } => data.truncate(len % n),
        Mutation::Insert { at, bytes } => {
            let at = at % (data.len() + 1);
            data.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(data.len());
            if at < end {
                data.drain(at..end);
            }
        }
        Mutation::Big { at } => {
            let at = at % n;
            for (i, b) in data.iter_mut().skip(at).take(4).enumerate() {
                *b = if i == 3 { 0x7f } else { 0xff };
            }
        }
    }
}

/// Parses and checks the outcome; returns whether it parsed.
fn parse_checked(data: Vec<u8>) -> Result<bool, TestCaseError> {
    match TxBatch::parse(data) {
        Ok(b) => {
            // Every range a parsed batch hands out is inside the batch.
            for (k, _) in &b.reads {
                b.bytes(k);
            }
            for v in &b.vectors {
                b.bytes(v.collection());
                b.bytes(v.id());
            }
            Ok(true)
        }
        Err(e) => {
            prop_assert!(is_input_error(e.code), "{:?}: {}", e.code, e.message);
            prop_assert!(!e.message.is_empty());
            Ok(false)
        }
    }
}

proptest! {
    // PROPTEST_CASES raises the count for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn parse_survives_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        parse_checked(data)?;
    }

    #[test]
    fn parse_survives_arbitrary_bytes_after_a_valid_header(
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut data = vec![athanor_core::txn::WIRE_VERSION];
        data.extend(tail);
        parse_checked(data)?;
    }

    #[test]
    fn valid_batches_parse(data in batch()) {
        prop_assert!(parse_checked(data)?);
    }

    #[test]
    fn parse_survives_mutated_batches(
        data in batch(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut data = data;
        for m in &mutations {
            apply(&mut data, m);
        }
        parse_checked(data)?;
    }

    #[test]
    fn value_decoders_survive_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        let decoded = Value::decode(&data);
        let validated = codec::validate(&data);
        // The writer's cheap check and the full decoder accept exactly the same bytes.
        prop_assert_eq!(decoded.is_ok(), validated.is_ok(), "{:?} vs {:?}", decoded, validated);
        match decoded {
            // What decodes re-encodes to a value that decodes to the same thing.
            Ok(v) => prop_assert_eq!(Value::decode(&v.encode()).map(|w| w.encode()), Ok(v.encode())),
            Err(e) => prop_assert!(is_input_error(e.code), "{:?}: {}", e.code, e.message),
        }
    }

    #[test]
    fn value_decoders_survive_mutated_values(
        v in value(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut data = v.encode();
        for m in &mutations {
            apply(&mut data, m);
        }
        let decoded = Value::decode(&data);
        prop_assert_eq!(decoded.is_ok(), codec::validate(&data).is_ok());
        if let Err(e) = decoded {
            prop_assert!(is_input_error(e.code), "{:?}: {}", e.code, e.message);
        }
    }

    #[test]
    fn stored_record_decoders_survive_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..96)) {
        if let Err(e) = codec::decode_event(&data) {
            prop_assert!(is_input_error(e.code), "{:?}: {}", e.code, e.message);
        }
        if let Err(e) = codec::split_state_entry(&data) {
            prop_assert!(is_input_error(e.code), "{:?}: {}", e.code, e.message);
        }
    }

    #[test]
    fn the_event_pack_reader_survives_arbitrary_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..128),
        count in 0u32..4,
    ) {
        // Half the cases with a small count in front, so the reader gets past the first event.
        let mut with_count = count.to_le_bytes().to_vec();
        with_count.extend_from_slice(&data);
        for bytes in [&data, &with_count] {
            match wire::events::unpack(bytes) {
                // What it reads, the writer writes back byte for byte.
                Ok(events) => {
                    let mut pack = wire::events::EventPack::new();
                    for e in &events {
                        pack.push(e.id, e.commit_seq, e.at_ms, e.kind, e.event_type, e.payload);
                    }
                    prop_assert_eq!(&pack.finish(), bytes);
                }
                Err(e) => prop_assert_eq!(e.code, Code::Corrupt),
            }
        }
    }
}

/// `[format][ARRAY][1 item][len]` around `inner`, `depth` times.
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut body = vec![codec::tag::BOOL, 1];
    for _ in 0..depth {
        let mut outer = vec![codec::tag::ARRAY];
        outer.extend_from_slice(&1u32.to_le_bytes());
        outer.extend_from_slice(&(body.len() as u32).to_le_bytes());
        outer.extend_from_slice(&body);
        body = outer;
    }
    let mut v = vec![codec::VALUE_FORMAT];
    v.extend(body);
    v
}

/// A value nested deeper than any stack allows must be refused, not overflow the stack:
/// the bytes come from users (through the batch) and from disk.
#[test]
fn deeply_nested_arrays_are_refused_with_a_typed_error() {
    let deep = nested_arrays(200_000);
    let e = Value::decode(&deep).unwrap_err();
    assert_eq!(e.code, Code::Type, "{}", e.message);
    let e = codec::validate(&deep).unwrap_err();
    assert_eq!(e.code, Code::Type, "{}", e.message);
    // Inside a batch, on a thread with the 2 MiB stack Rust gives spawned threads.
    let batch = {
        let mut b = vec![athanor_core::txn::WIRE_VERSION];
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(1);
        b.extend_from_slice(&1u16.to_le_bytes());
        b.push(b'k');
        b.extend_from_slice(&(deep.len() as u32).to_le_bytes());
        b.extend_from_slice(&deep);
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b
    };
    let code = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || TxBatch::parse(batch).map(|_| ()).unwrap_err().code)
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(code, Code::Type);
    // Up to the limit, nesting round-trips; one more level is refused.
    let ok = nested_arrays(codec::MAX_VALUE_DEPTH);
    assert_eq!(Value::decode(&ok).unwrap().encode(), ok);
    let over = nested_arrays(codec::MAX_VALUE_DEPTH + 1);
    assert_eq!(Value::decode(&over).unwrap_err().code, Code::Type);
}
