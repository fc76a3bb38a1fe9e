//! The bookkeeping rows (dead letters, migrations) as they cross the addon.

use super::*;

/// A dead letter as the addon hands it to `ts/sql/bookkeeping.ts`.
#[napi(object)]
pub struct NativeDeadLetter {
    pub id: i64,
    pub processor: String,
    pub event_id: BigInt,
    pub event_type: String,
    pub error_code: String,
    pub error: String,
    pub attempts: i64,
    pub first_failed_at: i64,
    pub last_failed_at: i64,
}

impl From<DeadLetter> for NativeDeadLetter {
    fn from(d: DeadLetter) -> Self {
        NativeDeadLetter {
            id: d.id,
            processor: d.processor,
            event_id: BigInt::from(d.event_id),
            event_type: d.event_type,
            error_code: d.error_code,
            error: d.error,
            attempts: d.attempts,
            first_failed_at: d.first_failed_at,
            last_failed_at: d.last_failed_at,
        }
    }
}

/// An event a processor gives up on, to keep as a dead letter.
#[napi(object)]
pub struct NativeFailedEvent {
    pub processor: String,
    pub event_id: BigInt,
    pub event_type: String,
    pub attempts: u32,
    pub error_code: String,
    pub error: String,
}

/// An applied migration as it crosses the addon.
#[napi(object)]
pub struct NativeMigration {
    pub version: i64,
    pub name: String,
    pub checksum: String,
    pub applied_at: i64,
}

impl From<AppliedMigration> for NativeMigration {
    fn from(m: AppliedMigration) -> Self {
        NativeMigration {
            version: m.version,
            name: m.name,
            checksum: m.checksum,
            applied_at: m.applied_at,
        }
    }
}

impl From<NativeMigration> for AppliedMigration {
    fn from(m: NativeMigration) -> Self {
        AppliedMigration {
            version: m.version,
            name: m.name,
            checksum: m.checksum,
            applied_at: m.applied_at,
        }
    }
}

pub(super) fn event_id(b: BigInt) -> CoreResult<u64> {
    let (signed, v, lossless) = b.get_u64();
    if signed || !lossless {
        return Err(Error::invalid(
            "an event id must be a non-negative 64-bit integer",
        ));
    }
    Ok(v)
}
