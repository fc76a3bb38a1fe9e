//! How long the store's fsyncs take: each durable commit (LMDB's commit, which
//! flushes before it returns unless durability is `None`) and each explicit flush,
//! counted in a fixed-bucket histogram that readers copy without stopping the writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the histogram's buckets; a last, unbounded one follows.
pub const SYNC_BUCKETS_S: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Cumulative counts of the store's syncs since it was opened.
#[derive(Default)]
pub struct SyncStats {
    count: AtomicU64,
    sum_ns: AtomicU64,
    buckets: [AtomicU64; SYNC_BUCKETS_S.len() + 1],
    bucket_sums_ns: [AtomicU64; SYNC_BUCKETS_S.len() + 1],
}

/// A copy of [`SyncStats`] at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSnapshot {
    /// Syncs measured.
    pub count: u64,
    /// Their total duration, seconds.
    pub sum_seconds: f64,
    /// Syncs per bucket of [`SYNC_BUCKETS_S`] (not cumulative), then the ones above its last bound.
    pub buckets: Vec<u64>,
    /// Total duration of each bucket's syncs, seconds (so a reader can place each sync
    /// at its bucket's mean and keep the sum exact).
    pub bucket_sum_seconds: Vec<f64>,
}

impl SyncStats {
    /// Counts one sync that took `took`.
    pub(crate) fn record(&self, took: Duration) {
        let s = took.as_secs_f64();
        let i = SYNC_BUCKETS_S.partition_point(|&le| le < s);
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        // Sums before counts (and read in the other order), so a reader never sees a
        // count whose duration is missing.
        self.bucket_sums_ns[i].fetch_add(ns, Ordering::Release);
        self.sum_ns.fetch_add(ns, Ordering::Release);
        self.buckets[i].fetch_add(1, Ordering::Release);
        self.count.fetch_add(1, Ordering::Release);
    }

    /// Syncs counted so far (a cheap way to tell whether a commit happened since a moment).
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// The counts now (each field read on its own: a sync finishing meanwhile may be in some).
    pub fn snapshot(&self) -> SyncSnapshot {
        let count = self.count.load(Ordering::Acquire);
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Acquire))
            .collect();
        SyncSnapshot {
            count,
            sum_seconds: self.sum_ns.load(Ordering::Acquire) as f64 / 1e9,
            buckets,
            bucket_sum_seconds: self
                .bucket_sums_ns
                .iter()
                .map(|b| b.load(Ordering::Acquire) as f64 / 1e9)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_upper_bound() {
        let st = SyncStats::default();
        st.record(Duration::from_micros(100)); // <= 0.0002
        st.record(Duration::from_micros(200)); // == 0.0002 still in the first bucket
        st.record(Duration::from_millis(3)); // <= 0.005
        st.record(Duration::from_secs(9)); // above the last bound
        let s = st.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[4], 1);
        assert_eq!(s.buckets[SYNC_BUCKETS_S.len()], 1);
        assert!((s.sum_seconds - 9.0033).abs() < 1e-9);
        assert!((s.bucket_sum_seconds[0] - 0.0003).abs() < 1e-12);
        assert!((s.bucket_sum_seconds[SYNC_BUCKETS_S.len()] - 9.0).abs() < 1e-12);
    }
}
