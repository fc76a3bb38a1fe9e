//! The namespace registry: which namespaces exist, by name, and their ids.
//!
//! `namespaces` maps a name (UTF-8) to a record, big-endian:
//!
//! ```text
//! [format u8 = 1][id u32][created_at_ms u64][options_len u32][options: JSON text]
//! ```
//!
//! and each namespace's meta (`ns_meta`, `space.rs`) holds its name under
//! `namespace`, which is how the writer knows the namespace of a queued transaction
//! still exists. Ids come from meta `next_namespace_id`, start at 1 (0 is the default
//! namespace) and are never reused, so a handle on a dropped namespace can never reach
//! the rows of one created after it under the same name.

use heed::{RoTxn, RwTxn};

use super::chain_format::{chain_meta, start};
use super::dbs::{read_meta_u64_or, Dbs};
use super::env::Store;
use super::space::DEFAULT_NAMESPACE_ID;
use crate::error::{Code, Error, Result};

/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE_NAME_BYTES: usize = 64;
/// The registry record's format.
const RECORD_FORMAT: u8 = 1;
/// Meta key of the next namespace id.
const META_NEXT_NAMESPACE_ID: &[u8] = b"next_namespace_id";
/// A namespace's meta key holding its name: present while the namespace exists.
pub(crate) const NS_META_NAME: &[u8] = b"namespace";
/// Ids stay below this, so the key range after an id's always exists (`space.rs`).
const MAX_NAMESPACE_ID: u64 = u32::MAX as u64 - 1;

/// A namespace as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Its name.
    pub name: String,
    /// Its id in the key encoding (never 0, never reused).
    pub id: u32,
    /// When it was created, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The options it was created with, as JSON text (`{}` when none).
    pub options: String,
}

impl NamespaceInfo {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(17 + self.options.len());
        v.push(RECORD_FORMAT);
        v.extend_from_slice(&self.id.to_be_bytes());
        v.extend_from_slice(&self.created_at_ms.to_be_bytes());
        v.extend_from_slice(&(self.options.len() as u32).to_be_bytes());
        v.extend_from_slice(self.options.as_bytes());
        v
    }

    /// Reads a registry record stored under `name`.
    pub(crate) fn decode(name: &[u8], v: &[u8]) -> Result<NamespaceInfo> {
        let bad = || Error::corrupt("a namespace record is damaged; restore from a backup");
        if v.len() < 17 || v[0] != RECORD_FORMAT {
            return Err(bad());
        }
        let id = u32::from_be_bytes(v[1..5].try_into().unwrap());
        let created_at_ms = u64::from_be_bytes(v[5..13].try_into().unwrap());
        let n = u32::from_be_bytes(v[13..17].try_into().unwrap()) as usize;
        let options = v.get(17..17 + n).ok_or_else(bad)?;
        Ok(NamespaceInfo {
            name: String::from_utf8(name.to_vec()).map_err(|_| bad())?,
            id,
            created_at_ms,
            options: String::from_utf8(options.to_vec()).map_err(|_| bad())?,
        })
    }
}

/// Checks a namespace name: 1 to 64 bytes of `a-z`, `0-9`, `_`, `-` and `.`, starting
/// with a letter or digit; `default` is the database itself.
pub fn check_namespace_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c);
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty()
        || name.len() > MAX_NAMESPACE_NAME_BYTES
        || !first_ok
        || !name.chars().all(ok_char)
    {
        return Err(Error::invalid(format!(
            "namespace name {name:?} is not valid: use 1 to {MAX_NAMESPACE_NAME_BYTES} characters a-z, 0-9, '_', '-', '.', starting with a letter or digit"
        )));
    }
    if name == "default" {
        return Err(Error::invalid(
            "'default' is the database itself: use the database handle, not db.namespace('default')",
        ));
    }
    Ok(())
}

fn lookup(dbs: &Dbs, txn: &RoTxn, name: &str) -> Result<Option<NamespaceInfo>> {
    match dbs.namespaces.get(txn, name.as_bytes())? {
        None => Ok(None),
        Some(v) => Ok(Some(NamespaceInfo::decode(name.as_bytes(), v)?)),
    }
}

impl Store {
    /// The namespace named `name`, if it exists.
    pub fn namespace(&self, txn: &RoTxn, name: &str) -> Result<Option<NamespaceInfo>> {
        check_namespace_name(name)?;
        lookup(&self.dbs, txn, name)
    }

    /// Every namespace, by name.
    pub fn list_namespaces(&self, txn: &RoTxn) -> Result<Vec<NamespaceInfo>> {
        let mut out = Vec::new();
        for item in self.dbs.namespaces.iter(txn)? {
            let (k, v) = item?;
            out.push(NamespaceInfo::decode(k, v)?);
        }
        Ok(out)
    }

    /// Whether namespace `id` exists (the default namespace always does).
    pub(crate) fn namespace_exists(&self, txn: &RoTxn, id: u32) -> Result<bool> {
        Ok(id == DEFAULT_NAMESPACE_ID || self.space(id).meta.get(txn, NS_META_NAME)?.is_some())
    }

    /// Creates namespace `name` with `options` (JSON text, checked by the caller).
    /// When the database's event log is chained, the namespace's log is chained from
    /// its first event with the same link function. Refused when it exists.
    pub fn create_namespace(&self, name: &str, options: &str) -> Result<NamespaceInfo> {
        check_namespace_name(name)?;
        self.write_with_growth(|dbs, wtxn| {
            if lookup(dbs, wtxn, name)?.is_some() {
                return Err(Error::invalid(format!(
                    "namespace {name:?} exists: open it with db.namespace({name:?}), or drop it first"
                )));
            }
            let id = read_meta_u64_or(dbs, wtxn, META_NEXT_NAMESPACE_ID, 1)?;
            if id > MAX_NAMESPACE_ID {
                return Err(Error::new(
                    Code::InvalidArgument,
                    "this database has used every namespace id; copy its data into a new database",
                ));
            }
            let info = NamespaceInfo {
                name: name.to_string(),
                id: id as u32,
                created_at_ms: self.now_ms(),
                options: options.to_string(),
            };
            dbs.namespaces.put(wtxn, name.as_bytes(), &info.encode())?;
            dbs.meta
                .put(wtxn, META_NEXT_NAMESPACE_ID, &(id + 1).to_be_bytes())?;
            let sp = self.space(info.id);
            sp.meta.put(wtxn, NS_META_NAME, name.as_bytes())?;
            if let Some(m) = chain_meta(&self.space(DEFAULT_NAMESPACE_ID).meta, wtxn)? {
                start(&sp.meta, wtxn, 1, m.kind)?;
            }
            Ok(info)
        })
    }

    /// Drops namespace `name` with everything it holds in the store (state, events,
    /// indexes, chain, streams, idempotency records), in one write transaction.
    /// Returns the dropped namespace, or `None` when there was none.
    pub(crate) fn drop_namespace_rows(
        &self,
        wtxn: &mut RwTxn,
        name: &str,
    ) -> Result<Option<NamespaceInfo>> {
        let Some(info) = lookup(&self.dbs, wtxn, name)? else {
            return Ok(None);
        };
        self.dbs.namespaces.delete(wtxn, name.as_bytes())?;
        self.space(info.id).clear(wtxn)?;
        // Its keys in `ns_idempotency_by_time` go with pruning, which drops an entry
        // whose record is gone.
        Ok(Some(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["a", "tenant-1", "acme.eu_2", "0x"] {
            check_namespace_name(ok).unwrap();
        }
        for bad in [
            "",
            "A",
            "-x",
            ".x",
            "a/b",
            "a b",
            "default",
            &"x".repeat(65),
            "é",
        ] {
            assert_eq!(
                check_namespace_name(bad).unwrap_err().code,
                Code::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_record_decodes_as_encoded() {
        let info = NamespaceInfo {
            name: "acme".into(),
            id: 7,
            created_at_ms: 1_700_000_000_000,
            options: "{\"label\":\"x\"}".into(),
        };
        assert_eq!(
            NamespaceInfo::decode(b"acme", &info.encode()).unwrap(),
            info
        );
        assert!(NamespaceInfo::decode(b"acme", &info.encode()[..16]).is_err());
    }
}
