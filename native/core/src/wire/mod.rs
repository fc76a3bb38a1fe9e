//! The byte formats that cross the N-API boundary between the addon and the
//! TypeScript layer: one file per format, whose doc comment is its spec, holding
//! its Rust encoder (and its decoder, for `commit_many`'s frames, which TypeScript
//! writes). The binding (`native/node`) calls these and keeps no byte layout of its
//! own; `ts/internal/` holds the one TypeScript decoder of each. The transaction
//! batch, the other format TypeScript writes, is `crate::txn`'s.
//!
//! These formats live only in memory, between two builds of the same package, so
//! they carry no version byte; except `commit_record`, which a primary publishes to
//! other machines, and which starts with one. Each is pinned by a golden file,
//! `tests/golden/wire-<format>.json` (the encoded bytes and the values they hold;
//! for each u32 length, one case past 65535 bytes in `wire-<format>-large.bin`),
//! which `tests/golden.rs` re-encodes byte for byte and `test/golden.test.ts`
//! decodes with the TypeScript decoder.
//!
//! Numbers are little-endian, except the entry version of [`entry`], which is
//! big-endian like the version stored in LMDB.
//!
//! These files import nothing of the crate but `error` and `commit`'s outcome
//! types, so every layer may call them; among themselves only `commit_many` uses
//! `completion` (its answer is a completion group).

pub mod commit_many;
pub mod commit_record;
pub mod completion;
pub mod document;
pub mod entry;
pub mod events;
pub mod hits;
pub mod state_list;
pub mod streams;
