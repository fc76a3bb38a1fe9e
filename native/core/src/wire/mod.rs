//! The byte formats that cross the N-API boundary between the addon and the
//! TypeScript layer: one file per format, whose doc comment is its spec, holding
//! its Rust encoder (or decoder, for the one format TypeScript writes). The binding
//! (`native/node`) calls these and keeps no byte layout of its own; `ts/internal/`
//! holds the one TypeScript decoder of each.
//!
//! These formats live only in memory, between two builds of the same package, so
//! they carry no version byte. Each is pinned by a golden file,
//! `tests/golden/wire-<format>.json` (the encoded bytes and the values they hold),
//! which `tests/golden.rs` re-encodes byte for byte and `test/golden.test.ts`
//! decodes with the TypeScript decoder.
//!
//! Numbers are little-endian, except the entry version of [`entry`], which is
//! big-endian like the version stored in LMDB.
//!
//! None of these files imports another module of the crate but `commit`'s outcome
//! types, so every layer may call them.

pub mod commit_many;
pub mod completion;
pub mod document;
pub mod entry;
pub mod events;
pub mod hits;
pub mod state_list;
