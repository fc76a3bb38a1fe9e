//! What is checked before LMDB maps `data.mdb`, and the marker that says a store
//! was created in a directory.

use std::fs;
use std::path::Path;

use heed::{Env, RoTxn, WithoutTls};

use super::dbs::STORE_FORMAT;
use crate::error::{Code, Error, Result};

/// Written next to `data.mdb` once the store exists: with it (or projection.db or
/// index dumps beside the store), an empty or missing `data.mdb` is damage, not a
/// new database.
pub(crate) const CREATED_MARKER: &str = "athanor-store";

/// `crate::projection::FILE_NAME`, named here so that the store does not depend on
/// the projections (a test in `crate::verify` keeps the two equal).
pub(crate) const PROJECTION_FILE: &str = "projection.db";

/// Checks what can be checked before LMDB maps `data`: a dangling link, a file
/// shorter than its last committed page, a missing or empty file where the
/// directory shows a database existed, and (with `create` off) no database at all.
pub(super) fn check_data_file(dir: &Path, data: &Path, create: bool) -> Result<()> {
    let link = fs::symlink_metadata(data);
    let exists = match &link {
        Ok(m) if m.file_type().is_symlink() => match fs::metadata(data) {
            Ok(_) => true,
            Err(e) => {
                return Err(Error::corrupt(format!(
                    "{} is a link to a file that cannot be opened ({e}); put the store back or restore the database from a backup",
                    data.display()
                )))
            }
        },
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(Error::new(
                Code::Io,
                format!("cannot read {}: {e}; check its permissions", data.display()),
            ))
        }
    };
    let meta = if exists {
        crate::lmdb_check::read_meta(data)?
    } else {
        None
    };
    if meta.is_none() {
        if let Some(evidence) = existed_before(dir) {
            return Err(Error::corrupt(format!(
                "{} is {} although {evidence}: the store was lost or replaced; restore the database from a backup (athanor will not start an empty log under existing projections)",
                data.display(),
                if exists { "empty (or too short for its header)" } else { "missing" },
            )));
        }
        if !create {
            return Err(Error::new(
                Code::NotFound,
                format!(
                    "{} holds no athanor database; check the path (nothing was created)",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Why `dir` must have held a store, if anything says so.
pub(super) fn existed_before(dir: &Path) -> Option<String> {
    let marker = dir.join("canonical").join(CREATED_MARKER);
    if marker.exists() {
        return Some(format!("{} says one was created", marker.display()));
    }
    let projection = dir.join(PROJECTION_FILE);
    if fs::metadata(&projection).is_ok_and(|m| m.len() > 0) {
        return Some(format!("{} exists", projection.display()));
    }
    let index = dir.join("index");
    if fs::read_dir(&index).is_ok_and(|mut d| d.next().is_some()) {
        return Some(format!("{} holds index dumps", index.display()));
    }
    None
}

pub(super) fn write_marker(canonical: &Path) -> Result<()> {
    let path = canonical.join(CREATED_MARKER);
    fs::write(&path, format!("athanor store format {STORE_FORMAT}\n")).map_err(|e| {
        Error::new(
            Code::Io,
            format!(
                "cannot write {}: {e}; check the directory's permissions",
                path.display()
            ),
        )
    })
}

/// Checks the page structure of `data` (see [`crate::lmdb_check::walk`]) as of a
/// read transaction, which it returns still open so the caller reads the snapshot
/// that was checked. `named`: the named databases to cover (`None`: all).
pub(super) fn check_structure(
    env: &Env<WithoutTls>,
    data: &Path,
    named: Option<&[&str]>,
) -> Result<RoTxn<'static, WithoutTls>> {
    // A writer in another process may move past the transaction's meta page between
    // the two reads; a fresh transaction then matches again.
    for _ in 0..16 {
        let txn = env.clone().static_read_txn()?;
        if crate::lmdb_check::walk(data, Some(txn.id() as u64), named)?.is_some() {
            return Ok(txn);
        }
    }
    Err(Error::new(
        Code::Io,
        format!(
            "{} kept changing while it was checked; try again when writes are quieter",
            data.display()
        ),
    ))
}
