//! One database as a namespace sees it (see `space.rs` for the key encoding): the
//! default namespace's own database with keys as they are, or a shared namespaced
//! database whose keys all start with the namespace id.

use std::borrow::Cow;
use std::ops::{Bound, RangeBounds};

use heed::types::Bytes;
use heed::{Database, PutFlags, RoTxn, RwTxn};

pub(crate) type Db = Database<Bytes, Bytes>;

/// One database as a namespace sees it: the default namespace's own database with
/// its keys as they are, or a shared namespaced database whose keys all start with
/// the namespace id.
#[derive(Clone, Copy)]
pub(crate) struct Keyed {
    db: Db,
    prefix: Option<[u8; 4]>,
}

/// Iterates a namespaced range, handing out keys without their namespace id.
pub(crate) struct Stripped<I> {
    inner: I,
    strip: usize,
}

impl<'t, I> Iterator for Stripped<I>
where
    I: Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>>,
{
    type Item = heed::Result<(&'t [u8], &'t [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        let strip = self.strip;
        self.inner.next().map(|r| r.map(|(k, v)| (&k[strip..], v)))
    }
}

impl Keyed {
    pub(crate) fn plain(db: Db) -> Keyed {
        Keyed { db, prefix: None }
    }

    pub(crate) fn prefixed(db: Db, ns: u32) -> Keyed {
        Keyed {
            db,
            prefix: Some(ns.to_be_bytes()),
        }
    }

    /// The key as stored.
    fn full<'k>(&self, key: &'k [u8]) -> Cow<'k, [u8]> {
        match &self.prefix {
            None => Cow::Borrowed(key),
            Some(p) => {
                let mut k = Vec::with_capacity(4 + key.len());
                k.extend_from_slice(p);
                k.extend_from_slice(key);
                Cow::Owned(k)
            }
        }
    }

    /// The stored bounds of `range`: an open end stops at the namespace's last key.
    fn bounds<R: RangeBounds<[u8]>>(&self, range: &R) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let map = |b: Bound<&[u8]>| match b {
            Bound::Included(k) => Bound::Included(self.full(k).into_owned()),
            Bound::Excluded(k) => Bound::Excluded(self.full(k).into_owned()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (mut lo, mut hi) = (map(range.start_bound()), map(range.end_bound()));
        if let Some(p) = &self.prefix {
            if matches!(lo, Bound::Unbounded) {
                lo = Bound::Included(p.to_vec());
            }
            if matches!(hi, Bound::Unbounded) {
                // Ids stop below u32::MAX (`namespaces.rs`), so the next id exists.
                let next = u32::from_be_bytes(*p) + 1;
                hi = Bound::Excluded(next.to_be_bytes().to_vec());
            }
        }
        (lo, hi)
    }

    fn strip(&self) -> usize {
        if self.prefix.is_some() {
            4
        } else {
            0
        }
    }

    pub(crate) fn get<'t>(&self, txn: &'t RoTxn, key: &[u8]) -> heed::Result<Option<&'t [u8]>> {
        self.db.get(txn, &self.full(key))
    }

    pub(crate) fn put(&self, wtxn: &mut RwTxn, key: &[u8], value: &[u8]) -> heed::Result<()> {
        self.db.put(wtxn, &self.full(key), value)
    }

    /// Puts as an append when the key sorts last in the whole database, else as an
    /// ordinary put. On an ordinary put LMDB splits a full leaf page in half, so keys
    /// written in ascending order (ids, timestamps, counters) leave every leaf about
    /// half full; an append starts a new page and leaves the old one full, so the
    /// store, its backups and what they hash are up to a third smaller. A key that does
    /// not sort last (another namespace's may) costs one failed append (a walk down the
    /// tree's right edge, no write) before the ordinary put.
    pub(crate) fn append(&self, wtxn: &mut RwTxn, key: &[u8], value: &[u8]) -> heed::Result<()> {
        let k = self.full(key);
        match self.db.put_with_flags(wtxn, PutFlags::APPEND, &k, value) {
            Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => self.db.put(wtxn, &k, value),
            done => done,
        }
    }

    pub(crate) fn delete(&self, wtxn: &mut RwTxn, key: &[u8]) -> heed::Result<bool> {
        self.db.delete(wtxn, &self.full(key))
    }

    pub(crate) fn range<'t, R: RangeBounds<[u8]>>(
        &self,
        txn: &'t RoTxn,
        range: &R,
    ) -> heed::Result<Stripped<heed::RoRange<'t, Bytes, Bytes>>> {
        let (lo, hi) = self.bounds(range);
        let r = (as_ref(&lo), as_ref(&hi));
        Ok(Stripped {
            inner: self.db.range(txn, &r)?,
            strip: self.strip(),
        })
    }

    pub(crate) fn rev_range<'t, R: RangeBounds<[u8]>>(
        &self,
        txn: &'t RoTxn,
        range: &R,
    ) -> heed::Result<Stripped<heed::RoRevRange<'t, Bytes, Bytes>>> {
        let (lo, hi) = self.bounds(range);
        let r = (as_ref(&lo), as_ref(&hi));
        Ok(Stripped {
            inner: self.db.rev_range(txn, &r)?,
            strip: self.strip(),
        })
    }

    pub(crate) fn delete_range<R: RangeBounds<[u8]>>(
        &self,
        wtxn: &mut RwTxn,
        range: &R,
    ) -> heed::Result<usize> {
        let (lo, hi) = self.bounds(range);
        let r = (as_ref(&lo), as_ref(&hi));
        self.db.delete_range(wtxn, &r)
    }

    /// Deletes every entry of this namespace (never called on the default one).
    pub(crate) fn clear(&self, wtxn: &mut RwTxn) -> heed::Result<usize> {
        debug_assert!(self.prefix.is_some());
        let all: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Unbounded, Bound::Unbounded);
        self.delete_range(wtxn, &all)
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(&k[..]),
        Bound::Excluded(k) => Bound::Excluded(&k[..]),
        Bound::Unbounded => Bound::Unbounded,
    }
}
