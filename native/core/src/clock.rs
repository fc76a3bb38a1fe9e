//! The time athanor stamps commits, idempotency records and projection rows with,
//! injectable so tests can move it instead of sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch. Carried in
/// [`crate::StoreOptions::clock`]; everything athanor records as a time reads it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch now (0 if the system clock is before 1970).
    fn now_ms(&self) -> u64;
}

/// The operating system's clock: the default.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to, for tests of time windows (idempotency
/// expiry, retention) that must not wait for real time to pass.
///
/// ```
/// use athanor_core::clock::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance(500);
/// assert_eq!(clock.now_ms(), 1_500);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `start_ms` until it is moved.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            ms: AtomicU64::new(start_ms),
        }
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::AcqRel);
    }

    /// Sets the time to `ms` (it may go backwards, as a real clock can).
    pub fn set(&self, ms: u64) {
        self.ms.store(ms, Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::Acquire)
    }
}
