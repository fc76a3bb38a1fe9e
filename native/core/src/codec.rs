//! Typed values and the byte formats athanor writes.
//!
//! A stored state value is `[format: u8 = 1][tag: u8][payload]`. The TypeScript
//! API encodes and decodes the same format on its hot path (`ts/state/codec.ts`); the
//! engine validates every value it is asked to write, so a malformed value is
//! rejected before anything lands. A cross-language property test keeps the two
//! implementations byte-identical.

use std::collections::BTreeSet;

use crate::error::{Error, Result};

/// Version byte that opens every encoded value. Bumped only with a migration.
pub const VALUE_FORMAT: u8 = 1;

/// Largest state key LMDB accepts with its default build (`mdb_env_get_maxkeysize`).
pub const MAX_KEY_BYTES: usize = 511;
/// Largest event type name, in UTF-8 bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 200;
/// Largest idempotency key, in UTF-8 bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Type tags. Stable on disk.
pub mod tag {
    /// A signed 64-bit integer.
    pub const I64: u8 = 1;
    /// An unsigned 256-bit integer (32 bytes, big-endian).
    pub const U256: u8 = 2;
    /// A 64-bit float.
    pub const F64: u8 = 3;
    /// A boolean.
    pub const BOOL: u8 = 4;
    /// A UTF-8 string.
    pub const STRING: u8 = 5;
    /// Raw bytes.
    pub const BYTES: u8 = 6;
    /// JSON text.
    pub const JSON: u8 = 7;
    /// A sorted set of strings.
    pub const SET: u8 = 8;
    /// An array of values.
    pub const ARRAY: u8 = 9;
}

/// A typed state value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A signed 64-bit integer.
    I64(i64),
    /// Unsigned 256-bit integer, big-endian bytes.
    U256([u8; 32]),
    /// A 64-bit float (any bit pattern, NaN included, round-trips).
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// JSON text (UTF-8). The engine stores it as given.
    Json(String),
    /// A set of strings; always kept sorted and without duplicates.
    Set(BTreeSet<String>),
    /// An ordered list of values (any types, nested).
    Array(Vec<Value>),
}

impl Value {
    /// The name users see in `ERR_TYPE` messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::I64(_) => "i64",
            Value::U256(_) => "u256",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Json(_) => "json",
            Value::Set(_) => "set",
            Value::Array(_) => "array",
        }
    }

    /// Encodes with the leading format byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VALUE_FORMAT];
        self.encode_body(&mut out);
        out
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Value::I64(v) => {
                out.push(tag::I64);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Value::U256(b) => {
                out.push(tag::U256);
                out.extend_from_slice(b);
            }
            Value::F64(v) => {
                out.push(tag::F64);
                out.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            Value::Bool(b) => {
                out.push(tag::BOOL);
                out.push(*b as u8);
            }
            Value::String(s) => {
                out.push(tag::STRING);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                out.push(tag::BYTES);
                out.extend_from_slice(b);
            }
            Value::Json(s) => {
                out.push(tag::JSON);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Set(items) => {
                out.push(tag::SET);
                out.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for s in items {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
            }
            Value::Array(items) => {
                out.push(tag::ARRAY);
                out.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for item in items {
                    let mut body = Vec::new();
                    item.encode_body(&mut body);
                    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
                    out.extend_from_slice(&body);
                }
            }
        }
    }

    /// Decodes a value written by [`Value::encode`] (or by the TypeScript encoder).
    pub fn decode(bytes: &[u8]) -> Result<Value> {
        match bytes.split_first() {
            Some((&VALUE_FORMAT, body)) => decode_body(body),
            Some((v, _)) => Err(Error::new(
                crate::error::Code::Version,
                format!("value format {v} is not supported by this build (expects {VALUE_FORMAT}); upgrade athanor"),
            )),
            None => Err(Error::type_error("empty value bytes: a value has at least a format byte and a tag")),
        }
    }
}

/// Checks that `bytes` is a well-formed encoded value without building it
/// (the writer validates every value it is asked to store; this keeps that cheap).
pub fn validate(bytes: &[u8]) -> Result<()> {
    match bytes.split_first() {
        Some((&VALUE_FORMAT, body)) => validate_body(body),
        Some(_) | None => Value::decode(bytes).map(|_| ()),
    }
}

fn validate_body(body: &[u8]) -> Result<()> {
    let Some((&t, p)) = body.split_first() else {
        return Err(Error::type_error("value has no type tag"));
    };
    let len_ok = match t {
        tag::I64 | tag::F64 => p.len() == 8,
        tag::U256 => p.len() == 32,
        tag::BOOL => p.len() == 1 && p[0] <= 1,
        tag::BYTES => true,
        tag::STRING | tag::JSON => return utf8(p).map(|_| ()),
        // Containers are rare and small: validate them by decoding.
        _ => return decode_body(body).map(|_| ()),
    };
    if len_ok {
        Ok(())
    } else {
        decode_body(body).map(|_| ())
    }
}

/// Deepest nesting of arrays a value may have. Decoding recurses once per level: without
/// a bound, a crafted value (from a batch or from disk) would overflow the thread's stack.
pub const MAX_VALUE_DEPTH: usize = 128;

fn decode_body(body: &[u8]) -> Result<Value> {
    decode_nested(body, 0)
}

fn decode_nested(body: &[u8], depth: usize) -> Result<Value> {
    let (&t, p) = body
        .split_first()
        .ok_or_else(|| Error::type_error("value has no type tag"))?;
    let fixed = |n: usize| -> Result<&[u8]> {
        if p.len() == n {
            Ok(p)
        } else {
            Err(Error::type_error(format!(
                "value with tag {t} must carry {n} bytes, found {}",
                p.len()
            )))
        }
    };
    Ok(match t {
        tag::I64 => Value::I64(i64::from_be_bytes(fixed(8)?.try_into().unwrap())),
        tag::U256 => Value::U256(fixed(32)?.try_into().unwrap()),
        tag::F64 => Value::F64(f64::from_bits(u64::from_be_bytes(
            fixed(8)?.try_into().unwrap(),
        ))),
        tag::BOOL => match fixed(1)?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => {
                return Err(Error::type_error(format!(
                    "bool value byte must be 0 or 1, found {b}"
                )))
            }
        },
        tag::STRING => Value::String(utf8(p)?.to_owned()),
        tag::BYTES => Value::Bytes(p.to_vec()),
        tag::JSON => Value::Json(utf8(p)?.to_owned()),
        tag::SET => {
            let mut r = Reader::new(p);
            let n = r.u32().map_err(malformed)?;
            let mut set = BTreeSet::new();
            for _ in 0..n {
                let len = r.u32().map_err(malformed)? as usize;
                set.insert(utf8(r.take(len).map_err(malformed)?)?.to_owned());
            }
            r.finish().map_err(malformed)?;
            if set.len() != n as usize {
                return Err(Error::type_error("set value holds duplicate members"));
            }
            Value::Set(set)
        }
        tag::ARRAY => {
            if depth >= MAX_VALUE_DEPTH {
                return Err(Error::type_error(format!(
                    "array values nest at most {MAX_VALUE_DEPTH} deep; store deeper structures as json or bytes"
                )));
            }
            let mut r = Reader::new(p);
            let n = r.u32().map_err(malformed)?;
            let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
            for _ in 0..n {
                let len = r.u32().map_err(malformed)? as usize;
                items.push(decode_nested(r.take(len).map_err(malformed)?, depth + 1)?);
            }
            r.finish().map_err(malformed)?;
            Value::Array(items)
        }
        other => return Err(Error::type_error(format!("unknown value tag {other}"))),
    })
}

/// The [`Reader`] speaks of records (`ERR_INVALID_ARGUMENT`, as for a bad batch); a
/// container value that does not frame is a malformed value: `ERR_TYPE`, as the TS decoder says.
fn malformed(e: Error) -> Error {
    Error::type_error(format!("container value does not frame: {}", e.message))
}

fn utf8(b: &[u8]) -> Result<&str> {
    std::str::from_utf8(b).map_err(|_| Error::type_error("text value is not valid UTF-8"))
}

/// Bounds-checked little-endian reader over a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn position(&self) -> usize {
        self.pos
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "record truncated: wanted {n} bytes at offset {}",
                    self.pos
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub(crate) fn finish(&self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "{} trailing bytes after record",
                self.buf.len() - self.pos
            )))
        }
    }
}

/// Checks a state key: non-empty, at most [`MAX_KEY_BYTES`] UTF-8 bytes.
pub fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("state keys must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::invalid(format!(
            "state key is {} bytes; the limit is {MAX_KEY_BYTES} UTF-8 bytes (store long identifiers hashed)",
            key.len()
        )));
    }
    utf8(key)
        .map(|_| ())
        .map_err(|_| Error::invalid("state keys must be valid UTF-8"))
}

/// Checks an event type name: 1..=200 UTF-8 bytes, no NUL (NUL separates the type index key).
pub fn check_event_type(t: &[u8]) -> Result<()> {
    if t.is_empty() || t.len() > MAX_EVENT_TYPE_BYTES {
        return Err(Error::invalid(format!(
            "event type must be 1..={MAX_EVENT_TYPE_BYTES} UTF-8 bytes, got {}",
            t.len()
        )));
    }
    if t.contains(&0) {
        return Err(Error::invalid(
            "event type must not contain the NUL character",
        ));
    }
    utf8(t)
        .map(|_| ())
        .map_err(|_| Error::invalid("event type must be valid UTF-8"))
}

/// How an event payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// JSON text (UTF-8).
    Json = 1,
    /// Opaque bytes.
    Bytes = 2,
    /// JSON text of a schema version: `[schema version u32 BE][JSON text]`.
    VersionedJson = 3,
    /// Bytes of a schema version: `[schema version u32 BE][bytes]`.
    VersionedBytes = 4,
}

impl PayloadKind {
    /// The kind stored as byte `b`; an unknown byte is `ERR_INVALID_ARGUMENT`.
    pub fn from_u8(b: u8) -> Result<Self> {
        match b {
            1 => Ok(PayloadKind::Json),
            2 => Ok(PayloadKind::Bytes),
            3 => Ok(PayloadKind::VersionedJson),
            4 => Ok(PayloadKind::VersionedBytes),
            other => Err(Error::invalid(format!(
                "unknown event payload kind {other}"
            ))),
        }
    }
}

impl PayloadKind {
    /// The payload as its writer meant it: its base kind (JSON or bytes), its schema
    /// version (1 for an unversioned payload) and its body. The schema version rides
    /// in front of the payload so the event record keeps its format; upcasting to the
    /// newest version is the TypeScript reader's (`db.events.upcaster`).
    pub fn split(self, payload: &[u8]) -> Result<(PayloadKind, u32, &[u8])> {
        let base = match self {
            PayloadKind::Json | PayloadKind::Bytes => return Ok((self, 1, payload)),
            PayloadKind::VersionedJson => PayloadKind::Json,
            PayloadKind::VersionedBytes => PayloadKind::Bytes,
        };
        let (v, body) = payload.split_at_checked(4).ok_or_else(|| {
            Error::invalid("a versioned event payload is shorter than its schema version")
        })?;
        let version = u32::from_be_bytes(v.try_into().unwrap());
        if version == 0 {
            return Err(Error::invalid("event schema versions start at 1"));
        }
        Ok((base, version, body))
    }
}

/// Version byte that opens every stored event record.
pub const EVENT_FORMAT: u8 = 1;

/// A decoded event record, borrowing from the stored bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord<'a> {
    /// The commit seq of the transaction that logged it.
    pub commit_seq: u64,
    /// When it was committed (milliseconds since the Unix epoch, by the store's clock).
    pub at_ms: u64,
    /// How the payload is encoded.
    pub kind: PayloadKind,
    /// The event type.
    pub event_type: &'a str,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// Event record on disk: `[format][kind][commit_seq u64 BE][at_ms u64 BE][type_len u16 BE][type][payload]`.
pub fn encode_event(
    out: &mut Vec<u8>,
    commit_seq: u64,
    at_ms: u64,
    kind: PayloadKind,
    event_type: &[u8],
    payload: &[u8],
) {
    out.reserve(20 + event_type.len() + payload.len());
    out.push(EVENT_FORMAT);
    out.push(kind as u8);
    out.extend_from_slice(&commit_seq.to_be_bytes());
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(&(event_type.len() as u16).to_be_bytes());
    out.extend_from_slice(event_type);
    out.extend_from_slice(payload);
}

/// Decodes a stored event record.
pub fn decode_event(bytes: &[u8]) -> Result<EventRecord<'_>> {
    if bytes.len() < 20 {
        return Err(Error::corrupt("event record shorter than its header"));
    }
    if bytes[0] != EVENT_FORMAT {
        return Err(Error::new(
            crate::error::Code::Version,
            format!(
                "event format {} is not supported by this build; upgrade athanor",
                bytes[0]
            ),
        ));
    }
    let kind = PayloadKind::from_u8(bytes[1]).map_err(|e| Error::corrupt(e.message))?;
    let commit_seq = u64::from_be_bytes(bytes[2..10].try_into().unwrap());
    let at_ms = u64::from_be_bytes(bytes[10..18].try_into().unwrap());
    let tlen = u16::from_be_bytes(bytes[18..20].try_into().unwrap()) as usize;
    let t = bytes
        .get(20..20 + tlen)
        .ok_or_else(|| Error::corrupt("event type runs past the record"))?;
    let event_type =
        std::str::from_utf8(t).map_err(|_| Error::corrupt("event type is not UTF-8"))?;
    Ok(EventRecord {
        commit_seq,
        at_ms,
        kind,
        event_type,
        payload: &bytes[20 + tlen..],
    })
}

/// State entry on disk: `[version u64 BE][encoded value]`; the version is the
/// commit sequence number of the transaction that wrote it (optimistic concurrency).
pub fn split_state_entry(bytes: &[u8]) -> Result<(u64, &[u8])> {
    if bytes.len() < 10 {
        return Err(Error::corrupt(
            "state entry shorter than version + value header",
        ));
    }
    Ok((
        u64::from_be_bytes(bytes[..8].try_into().unwrap()),
        &bytes[8..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::I64),
            any::<[u8; 32]>().prop_map(Value::U256),
            any::<f64>().prop_map(Value::F64),
            any::<bool>().prop_map(Value::Bool),
            ".*".prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
            ".*".prop_map(Value::Json),
            proptest::collection::btree_set(".*", 0..8).prop_map(Value::Set),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 32, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Value::Array)
        })
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            // Bit-exact for floats: NaN payloads and -0.0 survive the round trip.
            (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn value_round_trip_is_lossless(v in value()) {
            let bytes = v.encode();
            let back = Value::decode(&bytes).unwrap();
            prop_assert!(same(&v, &back), "{v:?} != {back:?}");
            prop_assert_eq!(back.encode(), bytes);
        }

        #[test]
        fn decode_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Value::decode(&bytes);
        }

        #[test]
        fn validate_agrees_with_decode(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
            prop_assert_eq!(validate(&bytes).is_ok(), Value::decode(&bytes).is_ok());
        }

        #[test]
        fn validate_accepts_every_encoded_value(v in value()) {
            prop_assert!(validate(&v.encode()).is_ok());
        }

        #[test]
        fn event_round_trip(seq in any::<u64>(), at in any::<u64>(), t in "[a-z.]{1,40}", p in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            encode_event(&mut out, seq, at, PayloadKind::Bytes, t.as_bytes(), &p);
            let r = decode_event(&out).unwrap();
            prop_assert_eq!(r.commit_seq, seq);
            prop_assert_eq!(r.at_ms, at);
            prop_assert_eq!(r.event_type, t.as_str());
            prop_assert_eq!(r.payload, &p[..]);
        }
    }

    #[test]
    fn wrong_format_and_tags_are_typed_errors() {
        assert_eq!(Value::decode(&[]).unwrap_err().code, crate::Code::Type);
        assert_eq!(
            Value::decode(&[9, tag::I64]).unwrap_err().code,
            crate::Code::Version
        );
        assert_eq!(Value::decode(&[1, 77]).unwrap_err().code, crate::Code::Type);
        assert_eq!(
            Value::decode(&[1, tag::I64, 1, 2]).unwrap_err().code,
            crate::Code::Type
        );
        assert_eq!(
            Value::decode(&[1, tag::BOOL, 2]).unwrap_err().code,
            crate::Code::Type
        );
    }

    #[test]
    fn key_and_type_limits() {
        assert!(check_key(b"").is_err());
        assert!(check_key(&[b'a'; 511]).is_ok());
        assert!(check_key(&[b'a'; 512]).is_err());
        assert!(check_event_type(b"a\0b").is_err());
        assert!(check_event_type(b"transfer").is_ok());
    }
}
