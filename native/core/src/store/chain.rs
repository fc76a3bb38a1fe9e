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

use super::chain_format::{
    chain_meta, checkpoint, link, prev_link, stored_link, ChainKind, ChainMeta, Hash,
};
use super::env::Store;
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

    /// Writes the link of event `id` whose stored bytes are `record`.
    pub(crate) fn append(
        &mut self,
        sp: &Space,
        wtxn: &mut RwTxn,
        id: u64,
        record: &[u8],
    ) -> Result<()> {
        let Some(m) = &self.meta else { return Ok(()) };
        if id < m.from {
            return Ok(());
        }
        let prev = match self.last {
            Some((last, h)) if last + 1 == id => h,
            _ => prev_link(&sp.event_chain, wtxn, m, id)?,
        };
        let h = link(m.kind, self.key, &prev, id, record)?;
        // Ids only grow, in every process (LMDB serialises writers): links append.
        sp.event_chain.append(wtxn, &id.to_be_bytes(), &h)?;
        self.last = Some((id, h));
        Ok(())
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
        let prev = prev_link(&self.event_chain, txn, &m, id)?;
        let hash = stored_link(&self.event_chain, txn, id)?
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
    /// `chain_from` to `first_kept`, and removes the links of the removed events. Call
    /// it in the write transaction that removes them. Nothing to do when the chain is
    /// off or starts at or after `first_kept`.
    pub fn checkpoint_chain(&self, wtxn: &mut RwTxn, first_kept: u64) -> Result<()> {
        let sp = self.space(DEFAULT_NAMESPACE_ID);
        checkpoint(&sp.meta, &sp.event_chain, wtxn, first_kept)
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
        let here = stored_link(&sp.event_chain, txn, id);
        let record = sp.get_event(txn, id)?;
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
    let links = sp.event_chain.len(txn)?;
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
    use crate::store::ChainOptions;
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
            stored_link(&store.space(0).event_chain, &txn, 3)
                .unwrap()
                .unwrap()
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
        let m = chain_meta(&store.space(0).meta, &txn).unwrap().unwrap();
        assert_eq!((m.from, m.anchor), (4, link3));
        assert!(check(&store.space(0), &txn, 5).unwrap().is_empty());
        assert_eq!(store.dbs.event_chain.len(&txn).unwrap(), 2);
        assert_eq!(store.event_proof(&txn, 4).unwrap().unwrap().prev, link3);
    }
}
