//! The tamper-evident chain over the event log.
//!
//! Each event from `chain_from` on has a 32-byte link, written by the commit writer in
//! the same LMDB write transaction as the record:
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
//! A link is stored as the value of the event's entry in the type index (`event_types`,
//! key `type || 0 || id u64 BE`), which every event has and which its commit writes
//! anyway; an unchained event's entry is empty. So chaining costs a commit 32 bytes an
//! event on pages it writes in any case, not a B-tree of its own. The record format
//! (pinned by `golden/store-v1`, read by every reader) stays as it is, and a database
//! can turn the chain on later: `chain_from` in meta says where it starts. A database
//! chained before links moved to the index holds the earlier events' links in the
//! `event_chain` database (key: the event id, u64 BE); they are read from there.
//!
//! A flipped byte in a record, a link, or a removed or reordered event breaks the
//! link of the first event it touches, which `verify()` reports by id (a changed type
//! leaves the event without its link: reported at the event as well).
//!
//! The HMAC key is never stored: it lives in [`ChainKey`], which zeroes its bytes when
//! dropped and prints as `ChainKey(..)`. `golden/chain.json` pins the link's input.

use heed::{RoTxn, RwTxn};

use super::chain_format::{
    chain_meta, link, ChainKind, ChainMeta, Hash, META_CHAIN_ANCHOR, META_CHAIN_FROM,
};
use super::env::Store;
use super::log::type_index_key;
use super::options::ChainKey;
use super::space::{Space, DEFAULT_NAMESPACE_ID};
use crate::error::{Error, Result};

/// The writer's view of the chain for one transaction.
pub(crate) struct ChainWriter<'k> {
    meta: Option<ChainMeta>,
    key: Option<&'k ChainKey>,
    /// The link this writer wrote last, so the next event needs no lookup.
    last: Option<(u64, Hash)>,
}

impl<'k> ChainWriter<'k> {
    /// Reads the chain's meta in the writer's transaction (another process may have
    /// turned it on). Fails, as the transaction's own failure, when the chain is
    /// keyed and this process has no key.
    pub(crate) fn begin(
        sp: &Space<'k>,
        wtxn: &RwTxn,
    ) -> Result<std::result::Result<ChainWriter<'k>, Error>> {
        let meta = chain_meta(&sp.meta, wtxn)?;
        let key = sp.store.options.chain.hmac_key.as_ref();
        if let Some(m) = &meta {
            if m.kind == ChainKind::HmacSha256 && key.is_none() {
                return Ok(Err(Error::invalid(
                    "this database's event chain is keyed (HMAC): open it with the hmacKey it was created with to append events",
                )));
            }
        }
        Ok(Ok(ChainWriter {
            meta,
            key,
            last: None,
        }))
    }

    /// The link of event `id` whose stored bytes are `record`, to store as the value of
    /// its type index entry; `None` when the event is not chained.
    pub(crate) fn link(
        &mut self,
        sp: &Space,
        txn: &RoTxn,
        id: u64,
        record: &[u8],
    ) -> Result<Option<Hash>> {
        let Some(m) = &self.meta else { return Ok(None) };
        if id < m.from {
            return Ok(None);
        }
        let prev = match self.last {
            Some((last, h)) if last + 1 == id => h,
            _ => prev_link(sp, txn, m, id)?,
        };
        let h = link(m.kind, self.key, &prev, id, record)?;
        self.last = Some((id, h));
        Ok(Some(h))
    }
}

/// The stored link of event `id`, whose stored record is `record`: its type index
/// entry's value, or (written before links moved there) its `event_chain` record.
fn stored_link_of(sp: &Space, txn: &RoTxn, id: u64, record: &[u8]) -> Result<Option<Hash>> {
    let e = crate::codec::decode_event(record)?;
    if let Some(v) = sp
        .event_types
        .get(txn, &type_index_key(e.event_type.as_bytes(), id))?
    {
        match v.len() {
            32 => return Ok(Some(v.try_into().expect("32 bytes"))),
            0 => {}
            n => {
                return Err(Error::corrupt(format!(
                    "the chain link of event {id} is {n} bytes, not 32"
                )))
            }
        }
    }
    match sp.event_chain.get(txn, &id.to_be_bytes())? {
        None => Ok(None),
        Some(v) => Ok(Some(v.try_into().map_err(|_| {
            Error::corrupt(format!("the chain link of event {id} is not 32 bytes"))
        })?)),
    }
}

/// The stored link of event `id` (`None` when the event or its link is missing).
pub(crate) fn stored_link(sp: &Space, txn: &RoTxn, id: u64) -> Result<Option<Hash>> {
    match sp.get_event(txn, id)? {
        None => Ok(None),
        Some(record) => stored_link_of(sp, txn, id, record),
    }
}

/// The link before event `id`: the anchor for the chain's first event.
pub(crate) fn prev_link(sp: &Space, txn: &RoTxn, m: &ChainMeta, id: u64) -> Result<Hash> {
    if id == m.from {
        return Ok(m.anchor);
    }
    stored_link(sp, txn, id - 1)?
        .ok_or_else(|| Error::corrupt(format!("the chain link of event {} is missing", id - 1)))
}

/// See [`Store::checkpoint_chain`]: for the namespace `sp`.
pub(crate) fn checkpoint(sp: &Space, wtxn: &mut RwTxn, first_kept: u64) -> Result<()> {
    let Some(m) = chain_meta(&sp.meta, wtxn)? else {
        return Ok(());
    };
    if first_kept <= m.from {
        return Ok(());
    }
    let anchor = stored_link(sp, wtxn, first_kept - 1)?.ok_or_else(|| {
        Error::corrupt(format!(
            "the chain link of event {} is missing; verify the database before compacting it",
            first_kept - 1
        ))
    })?;
    sp.meta.put(wtxn, META_CHAIN_ANCHOR, &anchor)?;
    sp.meta
        .put(wtxn, META_CHAIN_FROM, &first_kept.to_be_bytes())?;
    // Links in the index go with their entries; the older ones in `event_chain` go here.
    let lo = m.from.to_be_bytes();
    let hi = first_kept.to_be_bytes();
    let range = (
        std::ops::Bound::Included(&lo[..]),
        std::ops::Bound::Excluded(&hi[..]),
    );
    sp.event_chain.delete_range(wtxn, &range)?;
    Ok(())
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

impl Space<'_> {
    /// The proof of event `id`: `Ok(None)` when the event does not exist,
    /// `ERR_INVALID_ARGUMENT` when the chain is off or does not cover it.
    pub fn event_proof(&self, txn: &RoTxn, id: u64) -> Result<Option<Proof>> {
        let Some(m) = chain_meta(&self.meta, txn)? else {
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
        let prev = prev_link(self, txn, &m, id)?;
        let hash = stored_link_of(self, txn, id, record)?
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
}

impl Store {
    /// The proof of event `id` of the default namespace, see [`Space::event_proof`].
    pub fn event_proof(&self, txn: &RoTxn, id: u64) -> Result<Option<Proof>> {
        self.space(DEFAULT_NAMESPACE_ID).event_proof(txn, id)
    }

    /// Keeps the chain verifiable when the events before `first_kept` are removed (a
    /// log compaction): records the link of `first_kept - 1` as the anchor, moves
    /// `chain_from` to `first_kept`, and removes the `event_chain` links of the removed
    /// events (those in the type index go with its entries). Call it in the write
    /// transaction that removes them, before removing them: the link of `first_kept - 1`
    /// is read through its record. Nothing to do when the chain is off or starts at or
    /// after `first_kept`.
    pub fn checkpoint_chain(&self, wtxn: &mut RwTxn, first_kept: u64) -> Result<()> {
        checkpoint(&self.space(DEFAULT_NAMESPACE_ID), wtxn, first_kept)
    }

    /// The chain's settings (`None` when off).
    pub fn chain_meta(&self, txn: &RoTxn) -> Result<Option<ChainMeta>> {
        chain_meta(&self.space(DEFAULT_NAMESPACE_ID).meta, txn)
    }
}

/// Checks every link from `chain_from` to `last`, each against the stored link
/// before it, so a damaged record is reported at its own id. Returns the broken
/// links in id order (empty when the chain is off or whole).
pub(crate) fn check(sp: &Space, txn: &RoTxn, last: u64) -> Result<Vec<Broken>> {
    let mut broken = Vec::new();
    let Some(m) = chain_meta(&sp.meta, txn)? else {
        return Ok(broken);
    };
    let key = sp.store.options.chain.hmac_key.as_ref();
    if m.kind == ChainKind::HmacSha256 && key.is_none() {
        return Err(Error::invalid(
            "this database's event chain is keyed (HMAC): open it with the hmacKey it was created with to verify it",
        ));
    }
    let mut prev: Option<Hash> = Some(m.anchor);
    for id in m.from..=last {
        let Some(record) = sp.get_event(txn, id)? else {
            broken.push(Broken {
                detail: format!("event {id} is missing from the chained log"),
            });
            prev = None;
            continue;
        };
        let here = stored_link_of(sp, txn, id, record);
        match (&here, prev) {
            (Err(e), _) => broken.push(Broken {
                detail: format!("event {id}: {}", e.message),
            }),
            (Ok(None), _) => broken.push(Broken {
                detail: format!(
                    "the chain link of event {id} is missing (its record's type or its type index entry was altered, or the link removed)"
                ),
            }),
            (_, None) => {} // the previous link was unreadable: reported there
            (Ok(Some(stored)), Some(p)) => {
                if link(m.kind, key, &p, id, record)? != *stored {
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
    // A link of `event_chain` (written before links moved to the type index) for an
    // event outside the chain is left behind by a removed or renumbered event.
    let lo = m.from.to_be_bytes();
    let hi = last.saturating_add(1).to_be_bytes();
    let outside = (
        std::ops::Bound::Unbounded,
        std::ops::Bound::Excluded(&lo[..]),
    );
    let after = (
        std::ops::Bound::Included(&hi[..]),
        std::ops::Bound::Unbounded,
    );
    let stray = sp.event_chain.range(txn, &outside)?.next().is_some()
        || (last < u64::MAX && sp.event_chain.range(txn, &after)?.next().is_some());
    if stray {
        broken.push(Broken {
            detail: format!(
                "the chain holds links of events outside {}..={last}",
                m.from
            ),
        });
    }
    Ok(broken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ChainOptions;
    use crate::{Engine, StoreOptions, TxBuilder};

    fn chained() -> StoreOptions {
        StoreOptions {
            chain: ChainOptions {
                enable: true,
                hmac_key: None,
            },
            ..StoreOptions::default()
        }
    }

    /// Commits `n` transactions of one event each.
    fn log(e: &Engine, n: usize) {
        for i in 0..n {
            let b = TxBuilder::new().event_json("t", &format!("{{\"i\":{i}}}"));
            e.commit_blocking(b.build().unwrap()).unwrap();
        }
    }

    /// The value of event `id`'s type index entry (every event here is of type `t`).
    fn index_value(store: &Store, id: u64) -> Vec<u8> {
        let txn = store.begin_read().unwrap();
        let sp = store.space(0);
        sp.event_types
            .get(&txn, &type_index_key(b"t", id))
            .unwrap()
            .unwrap()
            .to_vec()
    }

    /// The broken links `check` reports, and each proof recomputed as an outside party would.
    fn check_all(store: &Store, last: u64) -> Vec<String> {
        let txn = store.begin_read().unwrap();
        let broken: Vec<String> = check(&store.space(0), &txn, last)
            .unwrap()
            .into_iter()
            .map(|b| b.detail)
            .collect();
        if broken.is_empty() {
            let from = store.chain_meta(&txn).unwrap().unwrap().from;
            for id in from..=last {
                let p = store.event_proof(&txn, id).unwrap().unwrap();
                assert_eq!(
                    link(p.kind, None, &p.prev, id, &p.record).unwrap(),
                    p.hash,
                    "event {id}"
                );
            }
        }
        broken
    }

    #[test]
    fn links_live_in_the_type_index_entries() {
        let dir = tempfile::TempDir::new().unwrap();
        let e = Engine::open(dir.path(), chained()).unwrap();
        log(&e, 5);
        let store = e.store();
        let txn = store.begin_read().unwrap();
        let all = (
            std::ops::Bound::<&[u8]>::Unbounded,
            std::ops::Bound::<&[u8]>::Unbounded,
        );
        assert!(store
            .space(0)
            .event_chain
            .range(&txn, &all)
            .unwrap()
            .next()
            .is_none());
        for id in 1..=5 {
            let p = store.event_proof(&txn, id).unwrap().unwrap();
            assert_eq!(index_value(store, id), p.hash.to_vec(), "event {id}");
        }
        assert!(check_all(store, 5).is_empty());
    }

    #[test]
    fn a_chain_whose_links_are_in_event_chain_still_verifies_and_goes_on() {
        let dir = tempfile::TempDir::new().unwrap();
        let e = Engine::open(dir.path(), chained()).unwrap();
        log(&e, 5);
        let store = e.store();
        // Move the links where a database chained before links moved to the index keeps them.
        let links: Vec<Vec<u8>> = (1..=5).map(|id| index_value(store, id)).collect();
        store
            .write_with_growth(|dbs, w| {
                for (i, l) in links.iter().enumerate() {
                    let id = i as u64 + 1;
                    dbs.event_types.put(w, &type_index_key(b"t", id), &[])?;
                    dbs.event_chain.put(w, &id.to_be_bytes(), l)?;
                }
                Ok(())
            })
            .unwrap();
        assert!(check_all(store, 5).is_empty());
        log(&e, 3);
        assert_eq!(index_value(store, 6).len(), 32);
        assert!(check_all(store, 8).is_empty());
        // Damage to an old link is found at its event.
        store
            .write_with_growth(|dbs, w| {
                let mut l = dbs
                    .event_chain
                    .get(w, &2u64.to_be_bytes())?
                    .unwrap()
                    .to_vec();
                l[0] ^= 1;
                dbs.event_chain.put(w, &2u64.to_be_bytes(), &l)?;
                Ok(())
            })
            .unwrap();
        let broken = check_all(store, 8);
        assert!(
            broken[0].starts_with("event 2 breaks the hash chain"),
            "{broken:?}"
        );
    }

    #[test]
    fn a_changed_link_in_the_index_is_found_at_its_event() {
        let dir = tempfile::TempDir::new().unwrap();
        let e = Engine::open(dir.path(), chained()).unwrap();
        log(&e, 8);
        let store = e.store();
        let mut l = index_value(store, 4);
        l[7] ^= 1;
        store
            .write_with_growth(|dbs, w| {
                dbs.event_types.put(w, &type_index_key(b"t", 4), &l)?;
                Ok(())
            })
            .unwrap();
        // Event 4's stored link no longer matches its record, and event 5 links to it.
        let broken = check_all(store, 8);
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(
            broken[0].starts_with("event 4 breaks the hash chain"),
            "{broken:?}"
        );
        assert!(
            broken[1].starts_with("event 5 breaks the hash chain"),
            "{broken:?}"
        );
        // A removed link is missing at its event.
        store
            .write_with_growth(|dbs, w| {
                dbs.event_types.put(w, &type_index_key(b"t", 7), &[])?;
                Ok(())
            })
            .unwrap();
        let broken = check_all(store, 8);
        assert!(
            broken
                .iter()
                .any(|b| b.starts_with("the chain link of event 7 is missing")),
            "{broken:?}"
        );
    }

    #[test]
    fn a_checkpoint_keeps_the_rest_of_the_chain_verifiable() {
        let dir = tempfile::TempDir::new().unwrap();
        let e = Engine::open(dir.path(), chained()).unwrap();
        log(&e, 5);
        let store = e.store();
        let link3 = {
            let txn = store.begin_read().unwrap();
            stored_link(&store.space(0), &txn, 3).unwrap().unwrap()
        };
        store
            .write_with_growth(|dbs, w| {
                store.checkpoint_chain(w, 4)?;
                for id in 1..=3u64 {
                    dbs.events.delete(w, &id.to_be_bytes())?;
                    dbs.event_types.delete(w, &type_index_key(b"t", id))?;
                }
                Ok(())
            })
            .unwrap();
        let txn = store.begin_read().unwrap();
        let m = chain_meta(&store.space(0).meta, &txn).unwrap().unwrap();
        assert_eq!((m.from, m.anchor), (4, link3));
        assert!(check_all(store, 5).is_empty());
        assert_eq!(store.event_proof(&txn, 4).unwrap().unwrap().prev, link3);
    }
}
