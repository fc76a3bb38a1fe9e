//! The transaction batch: what a transaction read and what it wants to write,
//! encoded by the TypeScript API into one buffer so it crosses into Rust in a
//! single call.
//!
//! Wire format (little-endian):
//! ```text
//! [wire version u8 = 1]
//! [n_reads u32]  { [key_len u16][key][version_seen u64] }      version 0 = key was absent
//! [n_writes u32] { [op u8: 1 put, 2 delete][key_len u16][key] (put: [value_len u32][value]) }
//! [n_events u32] { [kind u8: 1 json, 2 bytes][type_len u16][type][payload_len u32][payload] }
//! [idempotency_len u16][idempotency key]
//! ```

use std::ops::Range;

use crate::codec::{self, PayloadKind, Reader, Value, MAX_IDEMPOTENCY_KEY_BYTES};
use crate::error::{Error, Result};

/// Wire format version of [`TxBatch`].
pub const WIRE_VERSION: u8 = 1;

/// A state write.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Put {
        key: Range<usize>,
        value: Range<usize>,
    },
    Delete {
        key: Range<usize>,
    },
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct EventOp {
    pub kind: PayloadKind,
    pub event_type: Range<usize>,
    pub payload: Range<usize>,
}

/// A validated transaction batch. Ranges index into `data`, so parsing copies nothing.
#[derive(Debug, Clone)]
pub struct TxBatch {
    data: Vec<u8>,
    /// `(key, version seen)`; version 0 means the key was absent in the snapshot.
    pub reads: Vec<(Range<usize>, u64)>,
    pub writes: Vec<WriteOp>,
    pub events: Vec<EventOp>,
    pub idempotency_key: Option<Range<usize>>,
}

impl TxBatch {
    /// Parses and validates a batch. Every key, value and event type is checked
    /// here, so the writer never starts applying a transaction it must abandon.
    pub fn parse(data: Vec<u8>) -> Result<TxBatch> {
        let mut r = Reader::new(&data);
        let v = r.u8()?;
        if v != WIRE_VERSION {
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
                1 => {
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
                    writes.push(WriteOp::Put { key, value });
                }
                2 => writes.push(WriteOp::Delete { key }),
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
            if kind == PayloadKind::Json && std::str::from_utf8(&data[payload.clone()]).is_err() {
                return Err(Error::invalid("JSON event payload is not valid UTF-8"));
            }
            events.push(EventOp {
                kind,
                event_type,
                payload,
            });
        }
        let idem = range_of(&mut r, |r| Ok(r.u16()? as usize))?;
        if idem.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(Error::invalid(format!(
                "idempotency key is {} bytes; the limit is {MAX_IDEMPOTENCY_KEY_BYTES}",
                idem.len()
            )));
        }
        r.finish()?;
        let idempotency_key = if idem.is_empty() { None } else { Some(idem) };
        Ok(TxBatch {
            data,
            reads,
            writes,
            events,
            idempotency_key,
        })
    }

    /// The bytes a range of this batch points at.
    pub fn bytes(&self, r: &Range<usize>) -> &[u8] {
        &self.data[r.clone()]
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
        !self.writes.is_empty() || !self.events.is_empty() || self.idempotency_key.is_some()
    }
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
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    events: Vec<(PayloadKind, String, Vec<u8>)>,
    idempotency_key: Option<String>,
}

impl TxBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn read(mut self, key: &str, version_seen: u64) -> Self {
        self.reads.push((key.as_bytes().to_vec(), version_seen));
        self
    }
    pub fn put(mut self, key: &str, value: &Value) -> Self {
        self.writes
            .push((key.as_bytes().to_vec(), Some(value.encode())));
        self
    }
    pub fn delete(mut self, key: &str) -> Self {
        self.writes.push((key.as_bytes().to_vec(), None));
        self
    }
    pub fn event_json(mut self, event_type: &str, json: &str) -> Self {
        self.events.push((
            PayloadKind::Json,
            event_type.to_owned(),
            json.as_bytes().to_vec(),
        ));
        self
    }
    pub fn idempotency_key(mut self, key: &str) -> Self {
        self.idempotency_key = Some(key.to_owned());
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
        for (k, v) in &self.writes {
            out.push(if v.is_some() { 1 } else { 2 });
            out.extend_from_slice(&(k.len() as u16).to_le_bytes());
            out.extend_from_slice(k);
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
        let idem = self.idempotency_key.as_deref().unwrap_or("");
        out.extend_from_slice(&(idem.len() as u16).to_le_bytes());
        out.extend_from_slice(idem.as_bytes());
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
        raw.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        assert_eq!(TxBatch::parse(raw).unwrap_err().code, crate::Code::Type);
    }
}
