//! Bindings of `athanor_core::backup`: the compacted copy, content digests and zstd
//! file compression, each run on the libuv pool (`AsyncTask`), never on the JS thread.

use std::path::PathBuf;
use std::sync::Arc;

use athanor_core::backup::{self, CanonicalBackup, ContentDigest, WrittenFile};
use athanor_core::Engine;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::guard::{self, guard, Guarded, Work};
use crate::NativeDb;

/// A content digest as JS sees it (counts as numbers: they stay far below 2^53).
#[napi(object)]
pub struct NativeDigest {
    pub sha256: String,
    pub state_keys: f64,
    pub events: f64,
    pub vector_documents: f64,
    pub last_event_id: BigInt,
    pub commit_seq: BigInt,
}

fn to_js(d: ContentDigest) -> NativeDigest {
    NativeDigest {
        sha256: d.sha256,
        state_keys: d.state_keys as f64,
        events: d.events as f64,
        vector_documents: d.vector_documents as f64,
        last_event_id: BigInt::from(d.last_event_id),
        commit_seq: BigInt::from(d.commit_seq),
    }
}

/// A file a backup wrote: its size and SHA-256 (hex).
#[napi(object)]
pub struct NativeWrittenFile {
    pub bytes: f64,
    pub sha256: String,
}

fn file_to_js(f: WrittenFile) -> NativeWrittenFile {
    NativeWrittenFile {
        bytes: f.bytes as f64,
        sha256: f.sha256,
    }
}

/// The canonical store's backup file and the digest of the snapshot it holds.
#[napi(object)]
pub struct NativeCanonicalBackup {
    pub file: NativeWrittenFile,
    pub digest: NativeDigest,
}

fn canonical_to_js(b: CanonicalBackup) -> NativeCanonicalBackup {
    NativeCanonicalBackup {
        file: file_to_js(b.file),
        digest: to_js(b.digest),
    }
}

/// One backup operation run on the libuv pool: `work` computes, `to_js` converts.
pub struct Job<T: Send + 'static, J> {
    work: Option<Box<dyn FnOnce() -> athanor_core::Result<T> + Send>>,
    to_js: fn(T) -> J,
}

impl<T: Send + 'static, J: ToNapiValue + TypeName> Job<T, J> {
    fn task(
        work: impl FnOnce() -> athanor_core::Result<T> + Send + 'static,
        to_js: fn(T) -> J,
    ) -> AsyncTask<Guarded<Self>> {
        guard::task(Job {
            work: Some(Box::new(work)),
            to_js,
        })
    }
}

impl<T: Send + 'static, J: ToNapiValue + TypeName> Work for Job<T, J> {
    type Output = T;
    type JsValue = J;
    fn compute(&mut self) -> athanor_core::Result<T> {
        let work = self
            .work
            .take()
            .ok_or_else(|| athanor_core::Error::internal("a backup task ran twice"))?;
        work()
    }
    fn resolve(&mut self, _env: Env, output: T) -> Result<J> {
        Ok((self.to_js)(output))
    }
}

type UnitJob = Job<(), ()>;
type DigestJob = Job<ContentDigest, NativeDigest>;
type FileJob = Job<WrittenFile, NativeWrittenFile>;
type CanonicalJob = Job<CanonicalBackup, NativeCanonicalBackup>;

fn unit(_: ()) {}

#[napi]
impl NativeDb {
    /// Writes a compacted copy of the canonical store to `<dest>/data.mdb` (one consistent
    /// committed state; writers go on meanwhile). Resolves to undefined.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn copy_compacted(&self, env: Env, dest: String) -> Result<AsyncTask<Guarded<UnitJob>>> {
        let engine: Arc<Engine> = guard(&env, || self.engine())?;
        Ok(Job::task(
            move || engine.store().copy_compacted(&PathBuf::from(dest)),
            unit,
        ))
    }

    /// Writes a compacted copy of the canonical store to the new file `dst` (zstd at
    /// `zstd_level` when given), hashing it as it is written, and the content digest of
    /// the same snapshot, in one pass.
    #[napi(ts_return_type = "Promise<NativeCanonicalBackup>")]
    pub fn backup_canonical(
        &self,
        env: Env,
        dst: String,
        zstd_level: Option<i32>,
    ) -> Result<AsyncTask<Guarded<CanonicalJob>>> {
        let engine: Arc<Engine> = guard(&env, || self.engine())?;
        Ok(Job::task(
            move || {
                engine
                    .store()
                    .backup_canonical(&PathBuf::from(dst), zstd_level)
            },
            canonical_to_js,
        ))
    }

    /// The content digest of the newest committed state.
    #[napi(ts_return_type = "Promise<NativeDigest>")]
    pub fn content_digest(&self, env: Env) -> Result<AsyncTask<Guarded<DigestJob>>> {
        let engine: Arc<Engine> = guard(&env, || self.engine())?;
        Ok(Job::task(move || engine.store().content_digest(), to_js))
    }
}

/// The content digest of a closed canonical store directory (`<dir>/data.mdb`).
#[napi(ts_return_type = "Promise<NativeDigest>")]
#[cfg_attr(test, allow(dead_code))]
pub fn digest_dir(dir: String) -> AsyncTask<Guarded<DigestJob>> {
    Job::task(move || backup::digest_dir(&PathBuf::from(dir)), to_js)
}

/// zstd-compresses `src` into the new file `dst`; resolves to the compressed file's size and SHA-256.
#[napi(ts_return_type = "Promise<NativeWrittenFile>")]
#[cfg_attr(test, allow(dead_code))]
pub fn compress_file(src: String, dst: String, level: i32) -> AsyncTask<Guarded<FileJob>> {
    Job::task(
        move || backup::compress_file(&PathBuf::from(src), &PathBuf::from(dst), level),
        file_to_js,
    )
}

/// Size and SHA-256 of the file at `path`, read on the libuv pool.
#[napi(ts_return_type = "Promise<NativeWrittenFile>")]
#[cfg_attr(test, allow(dead_code))]
pub fn hash_file(path: String) -> AsyncTask<Guarded<FileJob>> {
    Job::task(move || backup::hash_file(&PathBuf::from(path)), file_to_js)
}

/// Decompresses zstd `src` into the new file `dst`.
#[napi(ts_return_type = "Promise<void>")]
#[cfg_attr(test, allow(dead_code))]
pub fn decompress_file(src: String, dst: String) -> AsyncTask<Guarded<UnitJob>> {
    Job::task(
        move || backup::decompress_file(&PathBuf::from(src), &PathBuf::from(dst)),
        unit,
    )
}

/// Writes a consistent copy of the SQLite database `src` to the new file `dst` (VACUUM INTO);
/// resolves to its size and SHA-256.
#[napi(ts_return_type = "Promise<NativeWrittenFile>")]
#[cfg_attr(test, allow(dead_code))]
pub fn sqlite_snapshot(src: String, dst: String) -> AsyncTask<Guarded<FileJob>> {
    Job::task(
        move || backup::sqlite_snapshot(&PathBuf::from(src), &PathBuf::from(dst)),
        file_to_js,
    )
}
