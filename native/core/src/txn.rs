//! The transaction batch: what a transaction read and what it wants to write,
//! encoded by the TypeScript API into one buffer so it crosses into Rust in a
//! single call.
//!
//! Wire format (little-endian):
//! ```text
//! [wire version u8 = 5]
//! [n_reads u32]  { [key_len u16][key][version_seen u64] }      version 0 = key was absent
//! [n_writes u32] { [op u8: 1 put, 2 delete, 3 trail put, 4 trail count][key_len u16][key]
//!                  (trail count: [at_ms u64]) (put, trail put, trail count: [value_len u32][value]) }
//! [n_events u32] { [kind u8: 1 json, 2 bytes, 3 versioned json, 4 versioned bytes][type_len u16][type]
//!                  [payload_len u32][payload] }   versioned: payload = [schema version u32 BE ≥ 1][body]
//! [n_vector_ops u32] { vector op }
//! [idempotency_len u16][idempotency key]
//! [n_appends u32] { [stream_len u16][stream][expect u8: 0 any, 1 no stream, 2 exact][version u64]
//!                   [first_event u32][event_count u32] }
//! [n_numeric u32] { [op u8: 1 add, 2 sub, 3 max, 4 min][type u8: 0 as stored, 1 i64, 2 u256]
//!                   [key_len u16][key][operand int][bounds u8: bit 0 min, bit 1 max]
//!                   (min int) (max int) }
//!
//! int: [negative u8 0|1][magnitude, 32 bytes big-endian]
//!
//! An append names a run of the batch's events (`first_event` is an index into the
//! events section; runs are in order and do not overlap): they join the stream, at
//! the versions after its current one, when the writer finds the stream at the
//! expected version (`version` is read only with `exact`; 0 is an empty stream).
//! A trail put writes a record of athanor's audit trail (a key starting with
//! [`TRAIL_KEY_PREFIX`]) into the default namespace's state, whatever namespace the
//! batch reads and writes: a namespace's writes and the database-wide record that
//! allowed them commit together, and the record outlives the namespace.
//!
//! A trail count is a trail put of one decision made at `at_ms` (ms since the epoch),
//! whose value (a `bytes` value) the writer may merge with others: the trail counts of
//! one group commit whose values are byte-equal are written once, under the first one's
//! key, as its value followed by two unsigned LEB128 varints, how many there were and
//! the latest `at_ms` minus the first one's. A database that publishes its commits does
//! not merge (a replica applies each transaction alone and must write what it wrote):
//! there, as for a trail count alone in its group, the varints are 1 and 0. The audit
//! trail's records are built so (`ts/security/audit-format.ts`): one caller's allowed
//! transactions cost one record per group commit instead of one each.
//!
//! Version 4 is version 5 without trail counts; version 3 is version 4 without trail
//! puts; version 2 is version 3 without the two last sections.
//!
//! vector op:
//!   1 upsert: [coll_len u16][coll][id_len u16][id][dim u32][f32 × dim][meta_len u32][meta json]
//!   2 delete: [coll_len u16][coll][id_len u16][id]
//!   3 bulk upsert: [coll_len u16][coll][n u32][dim u32][f32 × n·dim]
//!                  { [id_len u16][id] } × n  { [meta_len u32][meta json] } × n
//! ```
//! An empty metadata field means the document has none.

use std::ops::Range;

use crate::codec::{self, PayloadKind, Reader, Value, MAX_IDEMPOTENCY_KEY_BYTES};
use crate::error::{Error, Result};
use crate::numeric::{Int, NumericArgs, NumericKind, NumericType};

/// Wire format version of [`TxBatch`].
pub const WIRE_VERSION: u8 = 5;

/// What every key of a trail put starts with: athanor's audit trail records and profiles.
pub const TRAIL_KEY_PREFIX: &[u8] = b"\0athanor/audit";

/// Largest stream id, in UTF-8 bytes.
pub const MAX_STREAM_ID_BYTES: usize = 256;

/// What a stream append expects of the stream's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Whatever the version.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must be at exactly this version (0: no events).
    Exact(u64),
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Any => f.write_str("any"),
            Expected::NoStream => f.write_str("none"),
            Expected::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// Events of the batch appended to one stream.
#[derive(Debug, Clone)]
pub struct AppendOp {
    /// The stream id's bytes range.
    pub stream: Range<usize>,
    /// What the stream's version must be at commit.
    pub expected: Expected,
    /// Indexes into [`TxBatch::events`].
    pub events: Range<usize>,
}

/// A numeric operation on a state key, applied by the writer to the current value.
#[derive(Debug, Clone)]
pub struct NumericOp {
    /// The key's bytes range.
    pub key: Range<usize>,
    /// The operation.
    pub args: NumericArgs,
}

/// A state write.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Writes `value` (an encoded [`crate::Value`]) under `key`.
    Put {
        /// The key's bytes range.
        key: Range<usize>,
        /// The encoded value's bytes range.
        value: Range<usize>,
    },
    /// Removes `key` (a no-op when absent).
    Delete {
        /// The key's bytes range.
        key: Range<usize>,
    },
    /// Writes `value` under `key` (which starts with [`TRAIL_KEY_PREFIX`]) in the
    /// default namespace, whatever the batch's namespace.
    TrailPut {
        /// The key's bytes range.
        key: Range<usize>,
        /// The encoded value's bytes range.
        value: Range<usize>,
    },
    /// One decision of the audit trail made at `at_ms`: written like a trail put, but
    /// merged with the group's other trail counts of the same value (see the module docs).
    TrailCount {
        /// The key's bytes range (under [`TRAIL_KEY_PREFIX`]).
        key: Range<usize>,
        /// When the decision was made, ms since the epoch.
        at_ms: u64,
        /// The encoded `bytes` value's range.
        value: Range<usize>,
    },
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct EventOp {
    /// How the payload is encoded.
    pub kind: PayloadKind,
    /// The event type's bytes range.
    pub event_type: Range<usize>,
    /// The payload's bytes range.
    pub payload: Range<usize>,
}

/// A vector document write. Ranges index into the batch; `vector` holds `dim`
/// little-endian f32 values, all finite; `metadata` is JSON text or empty.
#[derive(Debug, Clone)]
pub enum VectorOp {
    /// Inserts or replaces a document.
    Upsert {
        /// The collection name's bytes range.
        collection: Range<usize>,
        /// The document id's bytes range.
        id: Range<usize>,
        /// The vector's bytes range (little-endian f32).
        vector: Range<usize>,
        /// The metadata JSON's bytes range (empty: none).
        metadata: Range<usize>,
    },
    /// Removes a document (a no-op when absent).
    Delete {
        /// The collection name's bytes range.
        collection: Range<usize>,
        /// The document id's bytes range.
        id: Range<usize>,
    },
}

impl VectorOp {
    /// The collection name's bytes range.
    pub fn collection(&self) -> &Range<usize> {
        match self {
            VectorOp::Upsert { collection, .. } | VectorOp::Delete { collection, .. } => collection,
        }
    }
    /// The document id's bytes range.
    pub fn id(&self) -> &Range<usize> {
        match self {
            VectorOp::Upsert { id, .. } | VectorOp::Delete { id, .. } => id,
        }
    }
}

/// A validated transaction batch. Ranges index into `data`, so parsing copies nothing.
#[derive(Debug, Clone)]
pub struct TxBatch {
    data: Vec<u8>,
    /// `(key, version seen)`; version 0 means the key was absent in the snapshot.
    pub reads: Vec<(Range<usize>, u64)>,
    /// State writes, applied in order.
    pub writes: Vec<WriteOp>,
    /// Events to append, in order.
    pub events: Vec<EventOp>,
    /// Vector upserts and deletes, in order (a bulk upsert is expanded into one op per document).
    pub vectors: Vec<VectorOp>,
    /// The idempotency key's bytes range, if any: a key applied inside the window makes the transaction a duplicate.
    pub idempotency_key: Option<Range<usize>>,
    /// Stream appends, each a run of `events`.
    pub appends: Vec<AppendOp>,
    /// Numeric operations, applied in order after the state writes.
    pub numeric: Vec<NumericOp>,
    /// The namespace the batch reads and writes (0: the default namespace). Not part
    /// of the wire format: the handle that submits the batch sets it, so a batch's
    /// bytes can never choose another namespace.
    pub namespace: u32,
}

impl TxBatch {
    /// Parses and validates a batch. Every key, value and event type is checked
    /// here, so the writer never starts applying a transaction it must abandon.
    pub fn parse(data: Vec<u8>) -> Result<TxBatch> {
        let mut r = Reader::new(&data);
        let v = r.u8()?;
        if !(2..=WIRE_VERSION).contains(&v) {
            return Err(Error::invalid(format!(
                "transaction wire version {v} is not supported (expects {WIRE_VERSION})"
            )));
        }
        let n_reads = r.u32()? as usize;
        let mut reads = Vec::with_capacity(n_reads.min(4096));
        for _ in 0..n_reads {
            let key = range_of(&mut r, |r| Ok(r.u16()? as usize))?;
            codec::check_key(&data[key.clone()])?;
            let version = r.u64()?;
            reads.push((key, version));
        }
        let n_writes = r.u32()? as usize;
        let mut writes = Vec::with_capacity(n_writes.min(4096));
        for _ in 0..n_writes {
            let op = r.u8()?;
            let key = range_of(&mut r, |r| Ok(r.u16()? as usize))?;
            codec::check_key(&data[key.clone()])?;
            match op {
                1 | 3 => {
                    if op == 3 && (v < 4 || !data[key.clone()].starts_with(TRAIL_KEY_PREFIX)) {
                        return Err(Error::invalid(
                            "a trail put writes only athanor's audit trail (wire version 4)",
                        ));
                    }
                    let value = range_of(&mut r, |r| Ok(r.u32()? as usize))?;
                    codec::validate(&data[value.clone()]).map_err(|e| {
                        Error::new(
                            e.code,
                            format!(
                                "value for key {:?}: {}",
                                String::from_utf8_lossy(&data[key.clone()]),
                                e.message
                            ),
                        )
                    })?;
                    writes.push(if op == 1 {
                        WriteOp::Put { key, value }
                    } else {
                        WriteOp::TrailPut { key, value }
                    });
                }
                2 => writes.push(WriteOp::Delete { key }),
                4 => {
                    if v < 5 || !data[key.clone()].starts_with(TRAIL_KEY_PREFIX) {
                        return Err(Error::invalid(
                            "a trail count writes only athanor's audit trail (wire version 5)",
                        ));
                    }
                    let at_ms = r.u64()?;
                    let value = range_of(&mut r, |r| Ok(r.u32()? as usize))?;
                    let encoded = &data[value.clone()];
                    if encoded.len() < 2
                        || encoded[0] != codec::VALUE_FORMAT
                        || encoded[1] != codec::tag::BYTES
                    {
                        return Err(Error::invalid(format!(
                            "the trail count for key {:?} must carry a bytes value",
                            String::from_utf8_lossy(&data[key.clone()])
                        )));
                    }
                    writes.push(WriteOp::TrailCount { key, at_ms, value });
                }
                other => return Err(Error::invalid(format!("unknown write op {other}"))),
            }
        }
        let n_events = r.u32()? as usize;
        let mut events = Vec::with_capacity(n_events.min(1 << 20));
        for _ in 0..n_events {
            let kind = PayloadKind::from_u8(r.u8()?)?;
            let event_type = range_of(&mut r, |r| Ok(r.u16()? as usize))?;
            codec::check_event_type(&data[event_type.clone()])?;
            let payload = range_of(&mut r, |r| Ok(r.u32()? as usize))?;
            let (base, _, body) = kind.split(&data[payload.clone()])?;
            if base == PayloadKind::Json && std::str::from_utf8(body).is_err() {
                return Err(Error::invalid("JSON event payload is not valid UTF-8"));
            }
            events.push(EventOp {
                kind,
                event_type,
                payload,
            });
        }
        let vectors = parse_vector_ops(&data, &mut r)?;
        let idem = range_of(&mut r, |r| Ok(r.u16()? as usize))?;
        if idem.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(Error::invalid(format!(
                "idempotency key is {} bytes; the limit is {MAX_IDEMPOTENCY_KEY_BYTES}",
                idem.len()
            )));
        }
        let (appends, numeric) = if v >= 3 {
            (
                parse_appends(&data, &mut r, events.len())?,
                parse_numeric(&data, &mut r)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        r.finish()?;
        if !numeric.is_empty() {
            let written: std::collections::HashSet<&[u8]> = writes
                .iter()
                .map(|w| match w {
                    WriteOp::Put { key, .. }
                    | WriteOp::Delete { key }
                    | WriteOp::TrailPut { key, .. }
                    | WriteOp::TrailCount { key, .. } => &data[key.clone()],
                })
                .collect();
            if let Some(op) = numeric
                .iter()
                .find(|op| written.contains(&data[op.key.clone()]))
            {
                return Err(Error::invalid(format!(
                    "key {:?} is both written and changed by a numeric op in one transaction; do one or the other",
                    String::from_utf8_lossy(&data[op.key.clone()])
                )));
            }
        }
        let idempotency_key = if idem.is_empty() { None } else { Some(idem) };
        Ok(TxBatch {
            data,
            reads,
            writes,
            events,
            vectors,
            idempotency_key,
            appends,
            numeric,
            namespace: 0,
        })
    }

    /// The bytes a range of this batch points at.
    pub fn bytes(&self, r: &Range<usize>) -> &[u8] {
        &self.data[r.clone()]
    }

    /// The encoded batch, as parsed (what a commit record carries).
    pub fn raw(&self) -> &[u8] {
        &self.data
    }

    /// Size of the encoded batch in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the encoded batch is empty (never true for a parsed batch).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Whether committing this batch changes anything.
    pub fn is_write(&self) -> bool {
        !self.writes.is_empty()
            || !self.events.is_empty()
            || !self.vectors.is_empty()
            || self.idempotency_key.is_some()
            || !self.numeric.is_empty()
    }
}

/// Checks a stream id: 1..=[`MAX_STREAM_ID_BYTES`] UTF-8 bytes, no NUL (NUL ends the id in the stream index's keys).
pub fn check_stream_id(id: &[u8]) -> Result<()> {
    if id.is_empty() || id.len() > MAX_STREAM_ID_BYTES {
        return Err(Error::invalid(format!(
            "stream id must be 1..={MAX_STREAM_ID_BYTES} UTF-8 bytes, got {}",
            id.len()
        )));
    }
    if id.contains(&0) {
        return Err(Error::invalid(
            "stream id must not contain the NUL character",
        ));
    }
    std::str::from_utf8(id)
        .map(|_| ())
        .map_err(|_| Error::invalid("stream id must be valid UTF-8"))
}

fn parse_appends(data: &[u8], r: &mut Reader<'_>, n_events: usize) -> Result<Vec<AppendOp>> {
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(4096));
    let mut next_free = 0usize;
    for _ in 0..n {
        let stream = range_of(r, |r| Ok(r.u16()? as usize))?;
        check_stream_id(&data[stream.clone()])?;
        let expect = r.u8()?;
        let version = r.u64()?;
        let expected = match expect {
            0 => Expected::Any,
            1 => Expected::NoStream,
            2 => Expected::Exact(version),
            other => {
                return Err(Error::invalid(format!(
                    "unknown stream expectation {other}"
                )))
            }
        };
        let first = r.u32()? as usize;
        let count = r.u32()? as usize;
        let end = first
            .checked_add(count)
            .filter(|&e| count > 0 && first >= next_free && e <= n_events)
            .ok_or_else(|| {
                Error::invalid("a stream append names no events, events out of order, or events past the batch's")
            })?;
        next_free = end;
        out.push(AppendOp {
            stream,
            expected,
            events: first..end,
        });
    }
    Ok(out)
}

fn parse_int(r: &mut Reader<'_>) -> Result<Int> {
    let neg = match r.u8()? {
        0 => false,
        1 => true,
        other => return Err(Error::invalid(format!("integer sign byte {other}"))),
    };
    Ok(Int::new(neg, r.take(32)?.try_into().unwrap()))
}

fn parse_numeric(data: &[u8], r: &mut Reader<'_>) -> Result<Vec<NumericOp>> {
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let kind = NumericKind::from_u8(r.u8()?)?;
        let ty = NumericType::from_u8(r.u8()?)?;
        let key = range_of(r, |r| Ok(r.u16()? as usize))?;
        codec::check_key(&data[key.clone()])?;
        let operand = parse_int(r)?;
        let flags = r.u8()?;
        if flags > 3 {
            return Err(Error::invalid(format!("numeric bounds flags {flags}")));
        }
        let min = if flags & 1 != 0 {
            Some(parse_int(r)?)
        } else {
            None
        };
        let max = if flags & 2 != 0 {
            Some(parse_int(r)?)
        } else {
            None
        };
        out.push(NumericOp {
            key,
            args: NumericArgs {
                kind,
                ty,
                operand,
                min,
                max,
            },
        });
    }
    Ok(out)
}

fn check_collection_name(b: &[u8]) -> Result<()> {
    let name =
        std::str::from_utf8(b).map_err(|_| Error::invalid("collection name is not UTF-8"))?;
    crate::vector::collection::check_name(name)
}

fn check_finite(bytes: &[u8]) -> Result<()> {
    for (i, c) in bytes.chunks_exact(4).enumerate() {
        if !f32::from_le_bytes(c.try_into().unwrap()).is_finite() {
            return Err(Error::invalid(format!(
                "vector component {i} is NaN or infinite; vectors must be finite"
            )));
        }
    }
    Ok(())
}

fn check_metadata(b: &[u8]) -> Result<()> {
    if !b.is_empty() {
        serde_json::from_slice::<serde::de::IgnoredAny>(b)
            .map_err(|e| Error::invalid(format!("vector metadata is not valid JSON: {e}")))?;
    }
    Ok(())
}

fn parse_vector_ops(data: &[u8], r: &mut Reader<'_>) -> Result<Vec<VectorOp>> {
    let n_ops = r.u32()? as usize;
    let mut ops = Vec::with_capacity(n_ops.min(1 << 16));
    for _ in 0..n_ops {
        let op = r.u8()?;
        let collection = range_of(r, |r| Ok(r.u16()? as usize))?;
        check_collection_name(&data[collection.clone()])?;
        match op {
            1 | 2 => {
                let id = range_of(r, |r| Ok(r.u16()? as usize))?;
                crate::vector::collection::check_doc_id(&data[id.clone()])?;
                if op == 2 {
                    ops.push(VectorOp::Delete { collection, id });
                    continue;
                }
                let dim = r.u32()? as usize;
                let vector = range_of(r, |_| {
                    dim.checked_mul(4)
                        .ok_or_else(|| Error::invalid("vector dimension overflows"))
                })?;
                check_finite(&data[vector.clone()])?;
                let metadata = range_of(r, |r| Ok(r.u32()? as usize))?;
                check_metadata(&data[metadata.clone()])?;
                ops.push(VectorOp::Upsert {
                    collection,
                    id,
                    vector,
                    metadata,
                });
            }
            3 => {
                let n = r.u32()? as usize;
                let dim = r.u32()? as usize;
                let all = range_of(r, |_| {
                    n.checked_mul(dim)
                        .and_then(|x| x.checked_mul(4))
                        .ok_or_else(|| Error::invalid("bulk vector size overflows"))
                })?;
                check_finite(&data[all.clone()])?;
                let first = ops.len();
                for i in 0..n {
                    let id = range_of(r, |r| Ok(r.u16()? as usize))?;
                    crate::vector::collection::check_doc_id(&data[id.clone()])?;
                    let start = all.start + i * dim * 4;
                    ops.push(VectorOp::Upsert {
                        collection: collection.clone(),
                        id,
                        vector: start..start + dim * 4,
                        metadata: 0..0,
                    });
                }
                for op in &mut ops[first..] {
                    let m = range_of(r, |r| Ok(r.u32()? as usize))?;
                    check_metadata(&data[m.clone()])?;
                    if let VectorOp::Upsert { metadata, .. } = op {
                        *metadata = m;
                    }
                }
            }
            other => return Err(Error::invalid(format!("unknown vector op {other}"))),
        }
    }
    Ok(ops)
}

fn range_of(
    r: &mut Reader<'_>,
    len: impl FnOnce(&mut Reader<'_>) -> Result<usize>,
) -> Result<Range<usize>> {
    let n = len(r)?;
    let start = r.position();
    r.take(n)?;
    Ok(start..start + n)
}

/// Builds wire batches from Rust (tests, tools). The TypeScript API has its own encoder.
#[derive(Default)]
pub struct TxBuilder {
    reads: Vec<(Vec<u8>, u64)>,
    writes: Vec<BuilderWrite>,
    events: Vec<(PayloadKind, String, Vec<u8>)>,
    vectors: Vec<BuilderVectorOp>,
    idempotency_key: Option<String>,
    appends: Vec<(String, Expected, u32, u32)>,
    numeric: Vec<(String, NumericArgs)>,
}

/// `(op, key, at_ms, value)`: op 1 put, 2 delete (no value), 3 trail put, 4 trail count
/// (the only one with `at_ms`).
type BuilderWrite = (u8, Vec<u8>, Option<u64>, Option<Vec<u8>>);

/// `(collection, id, upsert: (vector, metadata JSON))`; no upsert means delete.
type BuilderVectorOp = (String, String, Option<(Vec<f32>, String)>);

impl TxBuilder {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Records that `key` was read at `version_seen` (0: absent); the commit fails with `ERR_CONFLICT` if it changed since.
    pub fn read(mut self, key: &str, version_seen: u64) -> Self {
        self.reads.push((key.as_bytes().to_vec(), version_seen));
        self
    }
    /// Writes `value` under `key`.
    pub fn put(mut self, key: &str, value: &Value) -> Self {
        self.writes
            .push((1, key.as_bytes().to_vec(), None, Some(value.encode())));
        self
    }
    /// Deletes `key`.
    pub fn delete(mut self, key: &str) -> Self {
        self.writes.push((2, key.as_bytes().to_vec(), None, None));
        self
    }
    /// Writes `value` under the audit trail key `key` in the default namespace.
    pub fn trail_put(mut self, key: &str, value: &Value) -> Self {
        self.writes
            .push((3, key.as_bytes().to_vec(), None, Some(value.encode())));
        self
    }
    /// Counts one decision of the audit trail made at `at_ms`, under `key` with the
    /// bytes `body` (merged with the group's equal ones, see the module docs).
    pub fn trail_count(mut self, key: &str, at_ms: u64, body: &[u8]) -> Self {
        self.writes.push((
            4,
            key.as_bytes().to_vec(),
            Some(at_ms),
            Some(Value::Bytes(body.to_vec()).encode()),
        ));
        self
    }
    /// Appends an event of `event_type` with a JSON payload.
    pub fn event_json(mut self, event_type: &str, json: &str) -> Self {
        self.events.push((
            PayloadKind::Json,
            event_type.to_owned(),
            json.as_bytes().to_vec(),
        ));
        self
    }
    /// Appends an event of `event_type` with a bytes payload.
    pub fn event_bytes(mut self, event_type: &str, payload: &[u8]) -> Self {
        self.events
            .push((PayloadKind::Bytes, event_type.to_owned(), payload.to_vec()));
        self
    }
    /// Upserts a vector document (`metadata` is JSON text, empty for none).
    pub fn vector_upsert(mut self, collection: &str, id: &str, v: &[f32], metadata: &str) -> Self {
        self.vectors.push((
            collection.to_owned(),
            id.to_owned(),
            Some((v.to_vec(), metadata.to_owned())),
        ));
        self
    }
    /// Deletes a vector document.
    pub fn vector_delete(mut self, collection: &str, id: &str) -> Self {
        self.vectors
            .push((collection.to_owned(), id.to_owned(), None));
        self
    }
    /// Makes the transaction apply at most once per `key` inside the idempotency window.
    pub fn idempotency_key(mut self, key: &str) -> Self {
        self.idempotency_key = Some(key.to_owned());
        self
    }
    /// Appends JSON events `(type, payload)` to `stream`, expecting `expected`.
    pub fn append_json(
        mut self,
        stream: &str,
        expected: Expected,
        events: &[(&str, &str)],
    ) -> Self {
        let first = self.events.len() as u32;
        for (t, p) in events {
            self = self.event_json(t, p);
        }
        self.appends
            .push((stream.to_owned(), expected, first, events.len() as u32));
        self
    }
    /// A numeric operation on `key`.
    pub fn numeric(mut self, key: &str, args: NumericArgs) -> Self {
        self.numeric.push((key.to_owned(), args));
        self
    }
    /// Encodes the wire bytes (unvalidated; [`TxBatch::parse`] validates).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        out.extend_from_slice(&(self.reads.len() as u32).to_le_bytes());
        for (k, v) in &self.reads {
            out.extend_from_slice(&(k.len() as u16).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.writes.len() as u32).to_le_bytes());
        for (op, k, at_ms, v) in &self.writes {
            out.push(*op);
            out.extend_from_slice(&(k.len() as u16).to_le_bytes());
            out.extend_from_slice(k);
            if let Some(at_ms) = at_ms {
                out.extend_from_slice(&at_ms.to_le_bytes());
            }
            if let Some(v) = v {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        out.extend_from_slice(&(self.events.len() as u32).to_le_bytes());
        for (kind, t, p) in &self.events {
            out.push(*kind as u8);
            out.extend_from_slice(&(t.len() as u16).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
        }
        out.extend_from_slice(&(self.vectors.len() as u32).to_le_bytes());
        for (c, id, up) in &self.vectors {
            out.push(if up.is_some() { 1 } else { 2 });
            out.extend_from_slice(&(c.len() as u16).to_le_bytes());
            out.extend_from_slice(c.as_bytes());
            out.extend_from_slice(&(id.len() as u16).to_le_bytes());
            out.extend_from_slice(id.as_bytes());
            if let Some((v, m)) = up {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                out.extend_from_slice(&(m.len() as u32).to_le_bytes());
                out.extend_from_slice(m.as_bytes());
            }
        }
        let idem = self.idempotency_key.as_deref().unwrap_or("");
        out.extend_from_slice(&(idem.len() as u16).to_le_bytes());
        out.extend_from_slice(idem.as_bytes());
        out.extend_from_slice(&(self.appends.len() as u32).to_le_bytes());
        for (stream, expected, first, count) in &self.appends {
            out.extend_from_slice(&(stream.len() as u16).to_le_bytes());
            out.extend_from_slice(stream.as_bytes());
            let (tag, v) = match expected {
                Expected::Any => (0u8, 0u64),
                Expected::NoStream => (1, 0),
                Expected::Exact(v) => (2, *v),
            };
            out.push(tag);
            out.extend_from_slice(&v.to_le_bytes());
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        out.extend_from_slice(&(self.numeric.len() as u32).to_le_bytes());
        for (key, a) in &self.numeric {
            out.push(a.kind as u8);
            out.push(a.ty as u8);
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
            let int = |out: &mut Vec<u8>, i: &Int| {
                out.push(i.neg as u8);
                out.extend_from_slice(&i.mag);
            };
            int(&mut out, &a.operand);
            out.push(a.min.is_some() as u8 | (a.max.is_some() as u8) << 1);
            if let Some(m) = &a.min {
                int(&mut out, m);
            }
            if let Some(m) = &a.max {
                int(&mut out, m);
            }
        }
        out
    }
    /// Encodes and parses.
    pub fn build(&self) -> Result<TxBatch> {
        TxBatch::parse(self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_builder_writes() {
        let b = TxBuilder::new()
            .read("a", 3)
            .put("b", &Value::I64(5))
            .delete("c")
            .event_json("t", "{\"x\":1}")
            .idempotency_key("k")
            .build()
            .unwrap();
        assert_eq!(b.reads.len(), 1);
        assert_eq!(b.writes.len(), 2);
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.bytes(b.idempotency_key.as_ref().unwrap()), b"k");
    }

    #[test]
    fn rejects_bad_input_with_codes() {
        let bad_key = TxBuilder::new()
            .put("", &Value::I64(1))
            .build()
            .unwrap_err();
        assert_eq!(bad_key.code, crate::Code::InvalidArgument);
        let long = "k".repeat(600);
        assert!(TxBuilder::new().delete(&long).build().is_err());
        let bad_type = TxBuilder::new().event_json("", "{}").build().unwrap_err();
        assert_eq!(bad_type.code, crate::Code::InvalidArgument);
        let mut bytes = TxBuilder::new().put("k", &Value::I64(1)).encode();
        bytes.push(0);
        assert!(TxBatch::parse(bytes).is_err());
        // A truncated value (i64 with 3 bytes) is a type error.
        let mut raw = vec![
            WIRE_VERSION,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            1,
            1,
            0,
            b'k',
            5,
            0,
            0,
            0,
            1,
            1,
            1,
            2,
            3,
        ];
        raw.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(TxBatch::parse(raw).unwrap_err().code, crate::Code::Type);
    }
}
