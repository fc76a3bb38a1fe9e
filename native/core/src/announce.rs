//! Cross-process commit announcements. After each group commit that applied something,
//! the writer overwrites the first 8 bytes of `<dir>/canonical/commits.notify` with the
//! commit seq (no fsync: it is a wake-up, not data). Other processes watch that file
//! (inotify, kqueue, ReadDirectoryChangesW through Node's `fs.watch`) and read the new
//! heads when it changes, so they learn of commits without polling, and an idle
//! database costs no CPU.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Code, Error, Result};

/// The file's name inside `canonical/`.
pub const NOTIFY_FILE: &str = "commits.notify";

/// Writes commit announcements to the notify file.
pub struct Announcer {
    file: File,
}

impl Announcer {
    /// Opens (creating if needed) `<canonical>/commits.notify`.
    pub fn open(canonical: &Path) -> Result<Announcer> {
        let path: PathBuf = canonical.join(NOTIFY_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::new(Code::Io, format!("cannot open {}: {e}", path.display())))?;
        Ok(Announcer { file })
    }

    /// Announces `commit_seq`. Failures are ignored: a missed wake-up delays other
    /// processes until their next check; it never affects the commit.
    pub fn announce(&self, commit_seq: u64) {
        let bytes = commit_seq.to_le_bytes();
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            let _ = self.file.write_at(&bytes, 0);
        }
        #[cfg(windows)]
        {
            use std::os::windows::fs::FileExt;
            let _ = self.file.seek_write(&bytes, 0);
        }
    }
}
