//! Collection definitions: name, dimension, metric and HNSW parameters, with the
//! validation that rejects bad ones before anything is written, and their
//! on-disk encoding (one record per collection in the `vector_collections` db).

use crate::error::{Code, Error, Result};

/// Format version of a collection record: 1 without quantization (what older
/// builds wrote and read), 2 with a quantization byte at the end (refused by
/// older builds with `ERR_VERSION`, which could not search it).
pub const COLLECTION_FORMAT: u8 = 2;
/// Largest dimension a collection may have.
pub const MAX_DIMENSION: u32 = 4096;
/// Longest collection name, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest document id, in UTF-8 bytes (the LMDB key is `[collection u32][id]`, at most 511 bytes).
pub const MAX_DOC_ID_BYTES: usize = 500;
/// Largest `m`: hnsw_rs cannot hold more than 256 links per layer, and level 0 keeps `2 * m`.
pub const MAX_M: u32 = 128;
/// Largest `efConstruction` / `efSearch`.
pub const MAX_EF: u32 = 10_000;

/// How vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Cosine similarity (vectors are normalised on insert; zero vectors are refused).
    Cosine,
    /// Inner product (maximum inner product search).
    Dot,
    /// Euclidean distance.
    L2,
}

impl Metric {
    /// The metric's name as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// Parses `cosine`, `dot` or `l2`.
    pub fn parse(s: &str) -> Result<Metric> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "dot" => Ok(Metric::Dot),
            "l2" => Ok(Metric::L2),
            other => Err(Error::invalid(format!(
                "metric must be 'cosine', 'dot' or 'l2', got {other:?}"
            ))),
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Metric::Cosine => 1,
            Metric::Dot => 2,
            Metric::L2 => 3,
        }
    }

    fn from_u8(v: u8) -> Result<Metric> {
        match v {
            1 => Ok(Metric::Cosine),
            2 => Ok(Metric::Dot),
            3 => Ok(Metric::L2),
            other => Err(Error::corrupt(format!("unknown metric tag {other}"))),
        }
    }
}

/// How a collection's built graph holds its vectors in memory. The graph walk
/// compares the query with these; with `Int8` or `Binary` the best candidates
/// are then rescored with the exact `f32` vectors read from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Quantization {
    /// Exact `f32` vectors.
    #[default]
    None,
    /// One signed byte per component and a scale per vector (about 1/4 of the memory).
    Int8,
    /// One bit per component, its sign (about 1/32 of the memory); walks
    /// compare Hamming distances and rescore more candidates.
    Binary,
}

impl Quantization {
    /// The name as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::None => "none",
            Quantization::Int8 => "int8",
            Quantization::Binary => "binary",
        }
    }

    /// Parses `none`, `int8` or `binary`.
    pub fn parse(s: &str) -> Result<Quantization> {
        match s {
            "none" => Ok(Quantization::None),
            "int8" => Ok(Quantization::Int8),
            "binary" => Ok(Quantization::Binary),
            other => Err(Error::invalid(format!(
                "quantization must be 'none', 'int8' or 'binary', got {other:?}"
            ))),
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Quantization::None => 0,
            Quantization::Int8 => 1,
            Quantization::Binary => 2,
        }
    }

    fn from_u8(v: u8) -> Result<Quantization> {
        match v {
            0 => Ok(Quantization::None),
            1 => Ok(Quantization::Int8),
            2 => Ok(Quantization::Binary),
            other => Err(Error::corrupt(format!("unknown quantization tag {other}"))),
        }
    }
}

/// What a collection is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectionParams {
    /// Vector length every document must have.
    pub dimension: u32,
    /// How similarity is measured.
    pub metric: Metric,
    /// Links per node per layer (level 0 keeps `2 * m`). Default 16.
    pub m: u32,
    /// Candidate list size while building. Default 200.
    pub ef_construction: u32,
    /// Default candidate list size while searching. Default 64.
    pub ef_search: u32,
    /// How the built graph holds vectors. Default none.
    pub quantization: Quantization,
}

impl CollectionParams {
    /// Parameters with the defaults for everything but dimension and metric.
    pub fn new(dimension: u32, metric: Metric) -> Self {
        CollectionParams {
            dimension,
            metric,
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            quantization: Quantization::None,
        }
    }

    /// Checks every parameter; the error says which one and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if self.dimension == 0 || self.dimension > MAX_DIMENSION {
            return Err(Error::invalid(format!(
                "dimension must be between 1 and {MAX_DIMENSION}, got {}",
                self.dimension
            )));
        }
        if self.m < 2 || self.m > MAX_M {
            return Err(Error::invalid(format!(
                "m must be between 2 and {MAX_M}, got {} (16 suits most data)",
                self.m
            )));
        }
        if self.ef_construction < self.m || self.ef_construction > MAX_EF {
            return Err(Error::invalid(format!(
                "efConstruction must be between m ({}) and {MAX_EF}, got {}",
                self.m, self.ef_construction
            )));
        }
        if self.ef_search == 0 || self.ef_search > MAX_EF {
            return Err(Error::invalid(format!(
                "efSearch must be between 1 and {MAX_EF}, got {}",
                self.ef_search
            )));
        }
        Ok(())
    }
}

/// A stored collection: its id (the key prefix of its documents) and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionDef {
    /// The collection's id: the key prefix of its documents (never reused).
    pub id: u32,
    /// The collection's name.
    pub name: String,
    /// What it was created with.
    pub params: CollectionParams,
}

impl CollectionDef {
    /// `[format u8][id u32][dimension u32][metric u8][m u32][ef_construction u32][ef_search u32]` (BE),
    /// then, in format 2 only (a quantized collection), `[quantization u8]`.
    pub fn encode(&self) -> Vec<u8> {
        let p = &self.params;
        let mut out = Vec::with_capacity(23);
        let quantized = p.quantization != Quantization::None;
        out.push(if quantized { COLLECTION_FORMAT } else { 1 });
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&p.dimension.to_be_bytes());
        out.push(p.metric.to_u8());
        out.extend_from_slice(&p.m.to_be_bytes());
        out.extend_from_slice(&p.ef_construction.to_be_bytes());
        out.extend_from_slice(&p.ef_search.to_be_bytes());
        if quantized {
            out.push(p.quantization.to_u8());
        }
        out
    }

    /// Decodes a record written by [`CollectionDef::encode`].
    pub fn decode(name: &[u8], b: &[u8]) -> Result<CollectionDef> {
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| Error::corrupt("collection name is not UTF-8"))?;
        let quantization = match b.first() {
            Some(&1) if b.len() == 22 => Quantization::None,
            Some(&COLLECTION_FORMAT) if b.len() == 23 => Quantization::from_u8(b[22])?,
            Some(&f) if f > COLLECTION_FORMAT => {
                return Err(Error::new(
                    Code::Version,
                    format!("collection {name:?} was written by a newer athanor (format {f}); upgrade athanor"),
                ))
            }
            _ => return Err(Error::corrupt(format!("collection {name:?}: bad record"))),
        };
        let u = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
        Ok(CollectionDef {
            id: u(1),
            name,
            params: CollectionParams {
                dimension: u(5),
                metric: Metric::from_u8(b[9])?,
                m: u(10),
                ef_construction: u(14),
                ef_search: u(18),
                quantization,
            },
        })
    }
}

/// Checks a collection name: 1..=128 UTF-8 bytes, no NUL or `/` (it names a folder under `index/`).
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(format!(
            "collection name must be 1 to {MAX_NAME_BYTES} UTF-8 bytes, got {}",
            name.len()
        )));
    }
    if name.contains(['\0', '/', '\\']) || name == "." || name == ".." {
        return Err(Error::invalid(format!(
            "collection name {name:?} must not contain NUL, '/' or '\\' nor be '.' or '..'"
        )));
    }
    Ok(())
}

/// Checks a document id: 1..=500 UTF-8 bytes.
pub fn check_doc_id(id: &[u8]) -> Result<()> {
    if id.is_empty() || id.len() > MAX_DOC_ID_BYTES {
        return Err(Error::invalid(format!(
            "document id must be 1 to {MAX_DOC_ID_BYTES} UTF-8 bytes, got {}",
            id.len()
        )));
    }
    if std::str::from_utf8(id).is_err() {
        return Err(Error::invalid("document id is not valid UTF-8"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_validates() {
        let def = CollectionDef {
            id: 7,
            name: "docs".into(),
            params: CollectionParams::new(384, Metric::Cosine),
        };
        assert_eq!(CollectionDef::decode(b"docs", &def.encode()).unwrap(), def);
        // Unquantized records keep format 1, byte for byte what older builds wrote.
        assert_eq!(def.encode()[0], 1);
        for q in [Quantization::Int8, Quantization::Binary] {
            let mut d = def.clone();
            d.params.quantization = q;
            assert_eq!(d.encode()[0], 2);
            assert_eq!(CollectionDef::decode(b"docs", &d.encode()).unwrap(), d);
        }
        assert!(def.params.validate().is_ok());
        for bad in [
            CollectionParams::new(0, Metric::L2),
            CollectionParams::new(4097, Metric::L2),
            CollectionParams {
                m: 300,
                ..CollectionParams::new(3, Metric::L2)
            },
            CollectionParams {
                ef_construction: 4,
                ..CollectionParams::new(3, Metric::L2)
            },
            CollectionParams {
                ef_search: 0,
                ..CollectionParams::new(3, Metric::L2)
            },
        ] {
            assert_eq!(bad.validate().unwrap_err().code, Code::InvalidArgument);
        }
        assert!(check_name("a/b").is_err());
        assert!(check_doc_id(b"").is_err());
    }
}
