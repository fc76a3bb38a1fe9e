//! The indexer thread: moves committed documents into the graphs, and writes the
//! background dumps when idle.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::dump;
use super::index::{CollectionIndex, DumpState};
use super::shared::Shared;

impl Shared {
    /// Captures what a dump of `c` needs (see [`CollectionIndex::dump_state`]), with
    /// a seq the captured state is known to reflect. Under the resync lock no
    /// commit hand-over or resync is half done, so the applied seq matches the
    /// documents; when a commit of another process was noticed but not resynced
    /// yet, the index lacks it although the applied seq is past it, so the dump
    /// records seq 0 instead: the next open then compares every vector rather
    /// than trusting the dump as current.
    pub(super) fn capture(&self, c: &CollectionIndex) -> Option<DumpState> {
        let _l = self.resync.lock();
        c.dump_state(|| {
            if self.stale.load(Ordering::Acquire) {
                0
            } else {
                self.applied_seq.load(Ordering::Acquire)
            }
        })
    }

    /// Writes a captured dump of `c` and records the outcome. Failures only cost
    /// re-indexing at the next open.
    pub(super) fn write_dump(&self, dir: &Path, c: &CollectionIndex, state: DumpState) {
        let ok = dump::write(dir, &c.def, &state.base, &state.slots, state.seq).is_ok();
        let bytes = ok.then(|| folder_bytes(&dump::folder(dir, &c.def.name)));
        if ok && c.dropped.load(Ordering::Acquire) {
            // Dropped while the dump was written (after the drop removed the old one).
            dump::remove(dir, &c.def.name);
        }
        c.dump_done(&state, bytes);
    }

    /// Indexer, once idle: dumps the collections that changed enough since their
    /// last dump, so a crash costs re-indexing only what changed since. Stops as
    /// soon as indexing work arrives (the next idle moment resumes).
    fn background_dumps(&self) {
        let Some(dir) = self.index_dir.lock().clone() else {
            return;
        };
        let due: Vec<Arc<CollectionIndex>> = self
            .maps
            .read()
            .by_id
            .values()
            .filter(|c| c.dump_due())
            .cloned()
            .collect();
        for c in due {
            if self.stop.load(Ordering::Acquire)
                || self.maps.read().by_id.values().any(|c| c.needs_work())
            {
                return;
            }
            if let Some(state) = self.capture(&c) {
                self.write_dump(&dir, &c, state);
            }
        }
    }
}
/// Total size of the files directly in `dir` (a dump's folder).
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Hands freed heap memory back to the OS. Loading and bulk indexing free many
/// vector-sized blocks that glibc would otherwise keep in the process (resident).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub(super) fn run_indexer(shared: Arc<Shared>) {
    loop {
        {
            let mut wake = shared.wake.lock();
            if !*wake && !shared.stop.load(Ordering::Acquire) {
                shared.cv.wait_for(&mut wake, Duration::from_millis(200));
            }
            *wake = false;
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let mut did_work = false;
        loop {
            let work: Vec<Arc<CollectionIndex>> = shared
                .maps
                .read()
                .by_id
                .values()
                .filter(|c| c.needs_work())
                .cloned()
                .collect();
            if work.is_empty() || shared.stop.load(Ordering::Acquire) {
                if did_work {
                    release_free_memory();
                }
                if !shared.stop.load(Ordering::Acquire) {
                    // Idle: the graphs hold every recorded document. Dumping here,
                    // on the indexer thread, keeps it off the commit path, and no
                    // insert or rebuild can change a graph while it is written.
                    shared.background_dumps();
                }
                *shared.idle_passes.lock() += 1;
                shared.idle_cv.notify_all();
                break;
            }
            did_work = true;
            for c in work {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.index_round()))
                    .is_err()
                {
                    // A bug in the graph code must not kill indexing of other collections;
                    // searches stay correct through the exact scan of pending.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}
