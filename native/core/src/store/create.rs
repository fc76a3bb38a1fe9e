//! Creating a new canonical store atomically: the LMDB environment is built whole in a
//! temporary sibling of `canonical/`, flushed, and renamed into place, so a power loss
//! during the first open leaves either no store (the next open starts again) or a
//! whole one, never a torn pair of meta pages.

use std::fs::{self, File};
use std::path::Path;

use heed::{EnvFlags, EnvOpenOptions};

use super::dbs::Dbs;
use super::files::{write_marker, CREATED_MARKER};
use crate::clock::Clock;
use crate::error::{Code, Error, Result};

/// Prefix of the folders new stores are built in: `canonical.tmp-<pid>-<nonce>`.
pub(crate) const TEMP_PREFIX: &str = "canonical.tmp-";

/// Whether `canonical` holds no store yet: missing, or an empty folder (which a rename
/// replaces).
pub(super) fn absent(canonical: &Path) -> bool {
    match fs::read_dir(canonical) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Creates the store at `<dir>/canonical` unless another process (or an earlier
/// attempt) already did. Only ever renames a complete store into place; an existing
/// store is never touched.
pub(super) fn create_store(dir: &Path, clock: &dyn Clock) -> Result<()> {
    // Creators on one directory take turns, so a leftover temporary folder is known to
    // be a crashed creator's. Without the lock (a file system that refuses it) the
    // rename still decides between racing creators.
    let turn = lock_dir(dir);
    create_unless_present(dir, clock, turn.is_some())
}

fn create_unless_present(dir: &Path, clock: &dyn Clock, locked: bool) -> Result<()> {
    let canonical = dir.join("canonical");
    if !absent(&canonical) {
        return Ok(());
    }
    if locked {
        remove_leftovers(dir)?;
    }
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}-{:016x}",
        std::process::id(),
        nonce()
    ));
    let built = build(&temp, clock).and_then(|()| {
        sync_path(&temp)?;
        match fs::rename(&temp, &canonical) {
            Ok(()) => Ok(true),
            // Another creator's store is in place (the rename lost): open that one.
            Err(_) if !absent(&canonical) => Ok(false),
            Err(e) => Err(io(&canonical, "create", e)),
        }
    });
    let renamed = match built {
        Ok(renamed) => renamed,
        Err(e) => {
            let _ = fs::remove_dir_all(&temp);
            return Err(e);
        }
    };
    if !renamed {
        return remove(&temp);
    }
    // The rename, and the directory itself when `Engine::open` just made it, must be
    // on disk before the first commit is acknowledged.
    sync_path(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        // A parent this user may pass through but not read (mode --x) cannot be opened
        // to flush; the directory was then made by someone else, long before.
        match sync_path(parent) {
            Err(_) if File::open(parent).is_err() => {}
            other => other?,
        }
    }
    Ok(())
}

/// Builds a complete new store in `temp`: named databases, meta, the created marker,
/// every file flushed.
fn build(temp: &Path, clock: &dyn Clock) -> Result<()> {
    fs::create_dir(temp).map_err(|e| io(temp, "create", e))?;
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(1 << 20)
        .max_dbs(crate::store::MAX_DBS)
        .max_readers(1);
    // SAFETY: default flags (synchronous commits); this environment is private to
    // this function and closed before it returns.
    unsafe { opts.flags(EnvFlags::empty()) };
    let env = unsafe { opts.open(temp) }?;
    let made = (|| -> Result<()> {
        let mut wtxn = env.write_txn()?;
        let dbs = Dbs::create(&env, &mut wtxn)?;
        dbs.init_meta(&mut wtxn, clock.now_ms())?;
        wtxn.commit()?;
        Ok(())
    })();
    env.prepare_for_closing().wait();
    made?;
    write_marker(temp)?;
    for name in ["data.mdb", CREATED_MARKER] {
        let path = temp.join(name);
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&path, "flush", e))?;
    }
    Ok(())
}

/// Removes the temporary folders of creators that crashed. Call it while no creator
/// can be building: holding the directory's lock, or once `canonical/` exists (no
/// creator starts then, and one that lost the rename tolerates its folder vanishing).
pub(super) fn remove_leftovers(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| io(dir, "read", e))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            remove(&entry.path())?;
        }
    }
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, "remove", e)),
        _ => Ok(()),
    }
}

/// Holds an exclusive lock on `dir` until dropped; `None` where the platform or file
/// system has no such lock.
fn lock_dir(dir: &Path) -> Option<File> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let file = File::open(dir).ok()?;
        // SAFETY: flock on a descriptor this function owns; released when it closes.
        // (std's File::lock needs Rust 1.89, above this crate's MSRV.)
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0;
        locked.then_some(file)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// fsync of a file or folder (a folder's entries: created, renamed). Windows cannot
/// open a folder for it and orders its metadata itself.
fn sync_path(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(path, "flush", e))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Distinguishes the temporary folders of threads of one process.
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn io(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::new(
        Code::Io,
        format!(
            "cannot {what} {}: {e}; check the directory's permissions and free space",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::clock::SystemClock;
    use crate::store::{Store, StoreOptions};

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Creators racing on one new directory, each opening the store once it returns:
    /// one store results, every creator opens it, and no temporary folder is left.
    fn race(locked: bool) {
        const CREATORS: usize = 6;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        fs::create_dir(&dir).unwrap();
        let start = Arc::new(Barrier::new(CREATORS));
        std::thread::scope(|s| {
            for _ in 0..CREATORS {
                let (dir, start) = (&dir, start.clone());
                s.spawn(move || {
                    start.wait();
                    if locked {
                        create_store(dir, &SystemClock).unwrap();
                    } else {
                        create_unless_present(dir, &SystemClock, false).unwrap();
                    }
                    // Whoever won, a whole store is in place when a creator returns.
                    let data = dir.join("canonical").join("data.mdb");
                    let meta = crate::lmdb_check::read_meta(&data).unwrap();
                    assert!(meta.is_some(), "no whole store after a creator returned");
                    fs::read(dir.join("canonical").join(CREATED_MARKER)).unwrap();
                });
            }
        });
        assert_eq!(entries(&dir), ["canonical"]);
        let store = Store::open(&dir, StoreOptions::default()).unwrap();
        let txn = store.env.read_txn().unwrap();
        for key in [
            crate::store::META_LAST_EVENT_ID,
            crate::store::META_COMMIT_SEQ,
        ] {
            assert_eq!(
                crate::store::read_meta_u64(&store.dbs, &txn, key).unwrap(),
                0
            );
        }
    }

    #[test]
    fn racing_creators_end_with_one_store_they_all_open() {
        race(true);
    }

    #[test]
    fn a_creator_that_loses_the_rename_opens_the_winners_store() {
        // Without the directory's lock every creator builds its own store and all but
        // one rename fails: those remove their folder and use the winner's.
        race(false);
    }

    #[test]
    fn a_crashed_creators_folder_is_removed_and_an_existing_store_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let leftover = dir.join(format!("{TEMP_PREFIX}1-00"));
        fs::create_dir(&leftover).unwrap();
        fs::write(leftover.join("data.mdb"), b"torn").unwrap();
        create_store(dir, &SystemClock).unwrap();
        assert_eq!(entries(dir), ["canonical"]);
        let before = fs::read(dir.join("canonical").join("data.mdb")).unwrap();
        fs::create_dir(&leftover).unwrap();
        create_store(dir, &SystemClock).unwrap();
        assert_eq!(
            fs::read(dir.join("canonical").join("data.mdb")).unwrap(),
            before
        );
        drop(Store::open(dir, StoreOptions::default()).unwrap());
        assert_eq!(entries(dir), ["canonical"]);
    }
}
