//! Verifying a whole database directory: the canonical store, projection.db and
//! the index dumps. A module of its own because it reads all three, which do not
//! depend on one another this way round.

use crate::engine::Engine;
use crate::error::Result;

/// Verifies the directory of `engine`: the canonical store's page structure and
/// invariants ([`crate::Store::verify`]), projection.db (SQLite's integrity check,
/// every processor cursor within the log) and the index dumps (manifests and
/// checksums). Returns the number of events checked.
pub fn verify(engine: &Engine) -> Result<u64> {
    let last = engine.store().verify()?;
    crate::projection::verify_file(&engine.dir().join(crate::projection::FILE_NAME), last)?;
    crate::vector::dump::verify_all(&engine.dir().join("index"))?;
    Ok(last)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_store_names_projection_db_as_the_projections_do() {
        assert_eq!(crate::store::PROJECTION_FILE, crate::projection::FILE_NAME);
    }
}
