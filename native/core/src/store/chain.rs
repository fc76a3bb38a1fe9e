//! The tamper-evident chain over the event log.
//!
//! Each event from `chain_from` on has a 32-byte link in the `event_chain` database
//! (key: the event id, u64 BE), written by the commit writer in the same LMDB write
//! transaction as the record:
//!
//! ```text
//! link(id) = H(prev || id as u64 big-endian || record)
//! prev     = link(id - 1), or the 32-byte anchor for id == chain_from (zeros unless
//!            a compaction recorded one in meta `chain_anchor`)
//! record   = the event's stored bytes, exactly as the `events` database holds them
//!            (codec.rs's event record)
//! H        = SHA-256, or HMAC-SHA-256 under the key given at open (`chain_kind` 2)
//! ```
//!
//! The links live beside the records rather than inside them so the record format
//! (pinned by `golden/store-v1` and read by every reader) stays as it is, and so a
//! database can turn the chain on later: `chain_from` in meta says where it starts.
//! A flipped byte in a record, a link, or a removed or reordered event breaks the
//! link of the first event it touches, which `verify()` reports by id.
//!
//! The HMAC key is never stored: it lives in [`ChainKey`], which zeroes its bytes when
//! dropped and prints as `ChainKey(..)`. `golden/chain.json` pins the link's input.

use heed::{RoTxn, RwTxn};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::dbs::{read_meta_u64, Dbs, META_LAST_EVENT_ID};
use super::env::Store;
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

/// An HMAC key: zeroed when dropped, never printed.
#[derive(Clone)]
pub struct ChainKey(Zeroizing<Vec<u8>>);

impl ChainKey {
    /// Takes a copy of `bytes` (the caller's copy is theirs to clear).
    pub fn new(bytes: &[u8]) -> Result<ChainKey> {
        if bytes.is_empty() {
            return Err(Error::invalid(
                "hmacKey must not be empty; pass at least 32 random bytes",
            ));
        }
        Ok(ChainKey(Zeroizing::new(bytes.to_vec())))
    }
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for ChainKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

/// What [`crate::StoreOptions`] says about the chain.
#[derive(Debug, Clone, Default)]
pub struct ChainOptions {
    /// Turn the chain on (at the next event id) when the store has none yet. A chain
    /// once on stays on, whatever later opens say.
    pub enable: bool,
    /// The HMAC key: with it a new chain is HMAC-SHA-256, and a keyed chain can be
    /// extended and verified.
    pub hmac_key: Option<ChainKey>,
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
pub(crate) fn chain_meta(dbs: &Dbs, txn: &RoTxn) -> Result<Option<ChainMeta>> {
    let Some(from) = dbs.meta.get(txn, META_CHAIN_FROM)? else {
        return Ok(None);
    };
    let from = u64::from_be_bytes(
        from.try_into()
            .map_err(|_| Error::corrupt("meta chain_from is not 8 bytes"))?,
    );
    let kind = match dbs.meta.get(txn, META_CHAIN_KIND)? {
        Some([b]) => ChainKind::from_byte(*b)?,
        _ => return Err(Error::corrupt("meta chain_kind is missing or not 1 byte")),
    };
    let anchor = match dbs.meta.get(txn, META_CHAIN_ANCHOR)? {
        None => [0u8; 32],
        Some(a) => a
            .try_into()
            .map_err(|_| Error::corrupt("meta chain_anchor is not 32 bytes"))?,
    };
    Ok(Some(ChainMeta { from, kind, anchor }))
}

/// Turns the chain on at the next event id when it is off; checks the key against
/// the kind when it is on.
pub(crate) fn ensure(dbs: &Dbs, wtxn: &mut RwTxn, opts: &ChainOptions) -> Result<()> {
    match chain_meta(dbs, wtxn)? {
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
            dbs.meta.put(wtxn, META_CHAIN_FROM, &next.to_be_bytes())?;
            dbs.meta.put(wtxn, META_CHAIN_KIND, &[kind as u8])?;
            Ok(())
        }
    }
}

fn checkpoint(dbs: &Dbs, wtxn: &mut RwTxn, first_kept: u64) -> Result<()> {
    let Some(m) = chain_meta(dbs, wtxn)? else {
        return Ok(());
    };
    if first_kept <= m.from {
        return Ok(());
    }
    let anchor = stored_link(dbs, wtxn, first_kept - 1)?.ok_or_else(|| {
        Error::corrupt(format!(
            "the chain link of event {} is missing; verify the database before compacting it",
            first_kept - 1
        ))
    })?;
    dbs.meta.put(wtxn, META_CHAIN_ANCHOR, &anchor)?;
    dbs.meta
        .put(wtxn, META_CHAIN_FROM, &first_kept.to_be_bytes())?;
    let lo = m.from.to_be_bytes();
    let hi = first_kept.to_be_bytes();
    let range = (
        std::ops::Bound::Included(&lo[..]),
        std::ops::Bound::Excluded(&hi[..]),
    );
    dbs.event_chain.delete_range(wtxn, &range)?;
    Ok(())
}

/// The writer's view of the chain for one transaction.
pub(crate) struct ChainWriter<'k> {
    meta: Option<ChainMeta>,
    key: Option<&'k ChainKey>,
}

impl<'k> ChainWriter<'k> {
    /// Reads the chain's meta in the writer's transaction (another process may have
    /// turned it on). Fails, as the transaction's own failure, when the chain is
    /// keyed and this process has no key.
    pub(crate) fn begin(
        store: &'k Store,
        wtxn: &RwTxn,
    ) -> Result<std::result::Result<ChainWriter<'k>, Error>> {
        let meta = chain_meta(&store.dbs, wtxn)?;
        let key = store.options.chain.hmac_key.as_ref();
        if let Some(m) = &meta {
            if m.kind == ChainKind::HmacSha256 && key.is_none() {
                return Ok(Err(Error::invalid(
                    "this database's event chain is keyed (HMAC): open it with the hmacKey it was created with to append events",
                )));
            }
        }
        Ok(Ok(ChainWriter { meta, key }))
    }

    /// Writes the link of event `id` whose stored bytes are `record`.
    pub(crate) fn append(&self, dbs: &Dbs, wtxn: &mut RwTxn, id: u64, record: &[u8]) -> Result<()> {
        let Some(m) = &self.meta else { return Ok(()) };
        if id < m.from {
            return Ok(());
        }
        let prev = prev_link(dbs, wtxn, m, id)?;
        let h = link(m.kind, self.key, &prev, id, record)?;
        dbs.event_chain.put(wtxn, &id.to_be_bytes(), &h)?;
        Ok(())
    }
}

fn prev_link(dbs: &Dbs, txn: &RoTxn, m: &ChainMeta, id: u64) -> Result<Hash> {
    if id == m.from {
        return Ok(m.anchor);
    }
    stored_link(dbs, txn, id - 1)?
        .ok_or_else(|| Error::corrupt(format!("the chain link of event {} is missing", id - 1)))
}

fn stored_link(dbs: &Dbs, txn: &RoTxn, id: u64) -> Result<Option<Hash>> {
    match dbs.event_chain.get(txn, &id.to_be_bytes())? {
        None => Ok(None),
        Some(v) => Ok(Some(v.try_into().map_err(|_| {
            Error::corrupt(format!("the chain link of event {id} is not 32 bytes"))
        })?)),
    }
}

/// What an outside party needs to check that an event is in the chain.
#[derive(Debug, Clone)]
pub struct Proof {
    /// The event id.
    pub id: u64,
    /// The stored record bytes.
    pub record: Vec<u8>,
    /// The link before it (or the anchor).
    pub prev: Hash,
    /// Its link.
    pub hash: Hash,
    /// The link function.
    pub kind: ChainKind,
    /// The first chained id.
    pub chain_from: u64,
}

/// One broken link found by [`check`].
pub(crate) struct Broken {
    /// What is wrong, naming the event id.
    pub detail: String,
}

impl Store {
    /// The proof of event `id`: `Ok(None)` when the event does not exist,
    /// `ERR_INVALID_ARGUMENT` when the chain is off or does not cover it.
    pub fn event_proof(&self, txn: &RoTxn, id: u64) -> Result<Option<Proof>> {
        let Some(m) = chain_meta(&self.dbs, txn)? else {
            return Err(Error::invalid(
                "this database has no event chain; open it with { chain: true } (or secure: true) to start one",
            ));
        };
        let Some(record) = self.get_event(txn, id)? else {
            return Ok(None);
        };
        if id < m.from {
            return Err(Error::invalid(format!(
                "event {id} was written before the chain started (at event {}); it has no proof",
                m.from
            )));
        }
        let prev = prev_link(&self.dbs, txn, &m, id)?;
        let hash = stored_link(&self.dbs, txn, id)?
            .ok_or_else(|| Error::corrupt(format!("the chain link of event {id} is missing")))?;
        Ok(Some(Proof {
            id,
            record: record.to_vec(),
            prev,
            hash,
            kind: m.kind,
            chain_from: m.from,
        }))
    }

    /// Keeps the chain verifiable when the events before `first_kept` are removed (a
    /// log compaction): records the link of `first_kept - 1` as the anchor, moves
    /// `chain_from` to `first_kept`, and removes the links of the removed events. Call
    /// it in the write transaction that removes them. Nothing to do when the chain is
    /// off or starts at or after `first_kept`.
    pub fn checkpoint_chain(&self, wtxn: &mut RwTxn, first_kept: u64) -> Result<()> {
        checkpoint(&self.dbs, wtxn, first_kept)
    }

    /// The chain's settings (`None` when off).
    pub fn chain_meta(&self, txn: &RoTxn) -> Result<Option<ChainMeta>> {
        chain_meta(&self.dbs, txn)
    }
}

/// Checks every link from `chain_from` to `last`, each against the stored link
/// before it, so a damaged record is reported at its own id. Returns the broken
/// links in id order (empty when the chain is off or whole).
pub(crate) fn check(store: &Store, txn: &RoTxn, last: u64) -> Result<Vec<Broken>> {
    let mut broken = Vec::new();
    let Some(m) = chain_meta(&store.dbs, txn)? else {
        return Ok(broken);
    };
    let key = store.options.chain.hmac_key.as_ref();
    if m.kind == ChainKind::HmacSha256 && key.is_none() {
        return Err(Error::invalid(
            "this database's event chain is keyed (HMAC): open it with the hmacKey it was created with to verify it",
        ));
    }
    let mut prev: Option<Hash> = Some(m.anchor);
    for id in m.from..=last {
        let here = stored_link(&store.dbs, txn, id);
        let record = store.get_event(txn, id)?;
        match (record, &here, prev) {
            (None, _, _) => broken.push(Broken {
                detail: format!("event {id} is missing from the chained log"),
            }),
            (_, Err(e), _) => broken.push(Broken {
                detail: e.message.clone(),
            }),
            (_, Ok(None), _) => broken.push(Broken {
                detail: format!("the chain link of event {id} is missing"),
            }),
            (_, _, None) => {} // the previous link was unreadable: reported there
            (Some(rec), Ok(Some(stored)), Some(p)) => {
                if link(m.kind, key, &p, id, rec)? != *stored {
                    broken.push(Broken {
                        detail: format!(
                            "event {id} breaks the hash chain: its record or its link was altered after it was written"
                        ),
                    });
                }
            }
        }
        prev = here.ok().flatten();
    }
    let links = store.dbs.event_chain.len(txn)?;
    let expect = (last + 1).saturating_sub(m.from);
    if links != expect {
        broken.push(Broken {
            detail: format!("the chain has {links} links for events {}..={last}", m.from),
        });
    }
    Ok(broken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, StoreOptions, TxBuilder};

    #[test]
    fn a_checkpoint_keeps_the_rest_of_the_chain_verifiable() {
        let dir = tempfile::TempDir::new().unwrap();
        let opts = StoreOptions {
            chain: ChainOptions {
                enable: true,
                hmac_key: None,
            },
            ..StoreOptions::default()
        };
        let e = Engine::open(dir.path(), opts).unwrap();
        for i in 0..5 {
            let b = TxBuilder::new().event_json("t", &format!("{{\"i\":{i}}}"));
            e.commit_blocking(b.build().unwrap()).unwrap();
        }
        let store = e.store();
        let link3 = {
            let txn = store.begin_read().unwrap();
            stored_link(&store.dbs, &txn, 3).unwrap().unwrap()
        };
        store
            .write_with_growth(|dbs, w| {
                for id in 1..=3u64 {
                    dbs.events.delete(w, &id.to_be_bytes())?;
                }
                store.checkpoint_chain(w, 4)
            })
            .unwrap();
        let txn = store.begin_read().unwrap();
        let m = chain_meta(&store.dbs, &txn).unwrap().unwrap();
        assert_eq!((m.from, m.anchor), (4, link3));
        assert!(check(store, &txn, 5).unwrap().is_empty());
        assert_eq!(store.dbs.event_chain.len(&txn).unwrap(), 2);
        assert_eq!(store.event_proof(&txn, 4).unwrap().unwrap().prev, link3);
    }
}
