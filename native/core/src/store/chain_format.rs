//! The hash chain's format and meta: the link function (SHA-256 or HMAC-SHA-256 over
//! `prev || id u64 BE || record`, see `chain.rs` for the whole spec), the meta keys that
//! say where the chain starts and how it is linked, and turning it on. Reads only the
//! named databases, so `env` can start a chain at open; `chain.rs` stores the links and
//! builds the writer, proofs, checks and checkpoints on top.

use heed::{RoTxn, RwTxn};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::dbs::{read_meta_u64, Dbs, META_LAST_EVENT_ID};
use super::keyed::Keyed;
use super::options::{ChainKey, ChainOptions};
use crate::error::{Error, Result};

pub(crate) const META_CHAIN_FROM: &[u8] = b"chain_from";
pub(crate) const META_CHAIN_KIND: &[u8] = b"chain_kind";
pub(crate) const META_CHAIN_ANCHOR: &[u8] = b"chain_anchor";

/// A link or an anchor.
pub type Hash = [u8; 32];

/// Which function links the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// SHA-256: anyone holding the log can recompute (and so rewrite) it; detects
    /// accidents and edits by whoever does not also rewrite every later link.
    Sha256 = 1,
    /// HMAC-SHA-256 under a key the application keeps: only a key holder can forge links.
    HmacSha256 = 2,
}

impl ChainKind {
    /// The name `proof()` reports.
    pub fn name(self) -> &'static str {
        match self {
            ChainKind::Sha256 => "sha256",
            ChainKind::HmacSha256 => "hmac-sha256",
        }
    }
    fn from_byte(b: u8) -> Result<ChainKind> {
        match b {
            1 => Ok(ChainKind::Sha256),
            2 => Ok(ChainKind::HmacSha256),
            other => Err(Error::corrupt(format!(
                "meta chain_kind is {other}, which this athanor does not know; upgrade athanor or restore from a backup"
            ))),
        }
    }
}

/// HMAC-SHA-256 (RFC 2104) over the concatenation of `parts`. Written here over the
/// `sha2` crate already in the tree: the registry holds no `hmac` crate for offline builds.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Hash {
    const BLOCK: usize = 64;
    let mut k = Zeroizing::new([0u8; BLOCK]);
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut pad = Zeroizing::new([0u8; BLOCK]);
    for (p, b) in pad.iter_mut().zip(k.iter()) {
        *p = b ^ 0x36;
    }
    let mut inner = Sha256::new();
    inner.update(&pad[..]);
    for p in parts {
        inner.update(p);
    }
    let mut inner_hash: Hash = inner.finalize().into();
    for (p, b) in pad.iter_mut().zip(k.iter()) {
        *p = b ^ 0x5c;
    }
    let mut outer = Sha256::new();
    outer.update(&pad[..]);
    outer.update(inner_hash);
    inner_hash.zeroize();
    outer.finalize().into()
}

/// The link of event `id` (see the module doc). `key` is required for HMAC chains.
pub fn link(
    kind: ChainKind,
    key: Option<&ChainKey>,
    prev: &Hash,
    id: u64,
    record: &[u8],
) -> Result<Hash> {
    let idb = id.to_be_bytes();
    match kind {
        ChainKind::Sha256 => {
            let mut h = Sha256::new();
            h.update(prev);
            h.update(idb);
            h.update(record);
            Ok(h.finalize().into())
        }
        ChainKind::HmacSha256 => {
            let key = key.ok_or_else(|| {
                Error::invalid(
                    "this database's event chain is keyed (HMAC): open it with the hmacKey it was created with",
                )
            })?;
            Ok(hmac_sha256(key.bytes(), &[prev, &idb, record]))
        }
    }
}

/// The chain's settings as meta records them.
#[derive(Debug, Clone, Copy)]
pub struct ChainMeta {
    /// The first chained event id.
    pub from: u64,
    /// The link function.
    pub kind: ChainKind,
    /// `prev` of the first chained event.
    pub anchor: Hash,
}

/// Reads the chain's meta; `None` when the chain is off.
pub(crate) fn chain_meta(meta: &Keyed, txn: &RoTxn) -> Result<Option<ChainMeta>> {
    let Some(from) = meta.get(txn, META_CHAIN_FROM)? else {
        return Ok(None);
    };
    let from = u64::from_be_bytes(
        from.try_into()
            .map_err(|_| Error::corrupt("meta chain_from is not 8 bytes"))?,
    );
    let kind = match meta.get(txn, META_CHAIN_KIND)? {
        Some([b]) => ChainKind::from_byte(*b)?,
        _ => return Err(Error::corrupt("meta chain_kind is missing or not 1 byte")),
    };
    let anchor = match meta.get(txn, META_CHAIN_ANCHOR)? {
        None => [0u8; 32],
        Some(a) => a
            .try_into()
            .map_err(|_| Error::corrupt("meta chain_anchor is not 32 bytes"))?,
    };
    Ok(Some(ChainMeta { from, kind, anchor }))
}

/// Turns the default namespace's chain on at its next event id when it is off; checks
/// the key against the kind when it is on. Runs at open, before the store exists.
pub(crate) fn ensure(dbs: &Dbs, wtxn: &mut RwTxn, opts: &ChainOptions) -> Result<()> {
    let meta = Keyed::plain(dbs.meta);
    match chain_meta(&meta, wtxn)? {
        Some(m) => {
            if m.kind == ChainKind::Sha256 && opts.hmac_key.is_some() {
                return Err(Error::invalid(
                    "this database's event chain is plain SHA-256, not keyed: open it without hmacKey",
                ));
            }
            Ok(())
        }
        None if !opts.enable => Ok(()),
        None => {
            let next = read_meta_u64(dbs, wtxn, META_LAST_EVENT_ID)? + 1;
            let kind = if opts.hmac_key.is_some() {
                ChainKind::HmacSha256
            } else {
                ChainKind::Sha256
            };
            start(&meta, wtxn, next, kind)
        }
    }
}

/// Starts a chain of `kind` at event `from` in a namespace's `meta`.
pub(crate) fn start(meta: &Keyed, wtxn: &mut RwTxn, from: u64, kind: ChainKind) -> Result<()> {
    meta.put(wtxn, META_CHAIN_FROM, &from.to_be_bytes())?;
    meta.put(wtxn, META_CHAIN_KIND, &[kind as u8])?;
    Ok(())
}
