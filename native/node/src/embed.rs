//! Bindings of the embedder. Thin: option conversion, results as Float32Array,
//! error mapping; the engine logic is in `athanor_embed`. Opening and
//! embedding run on the libuv pool (AsyncTask), never on the JS thread, and
//! panics surface as `ERR_INTERNAL` instead of taking Node down.

use std::path::PathBuf;
use std::sync::Arc;

use athanor_core::Error;
use athanor_embed::{Embedder, EmbedderOptions, Pooling, Provider};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::guard::{self, guard, CoreResult, Guarded, Work};

/// How to open an embedder (defaults are applied in TS).
// napi-rs registers these only outside `cfg(test)`, so clippy's test build sees them unused.
#[cfg_attr(test, allow(dead_code))]
#[napi(object)]
pub struct NativeEmbedderOptions {
    pub dir: String,
    pub runtime_path: String,
    pub providers: Vec<String>,
    pub fallback: bool,
    pub batch_size: u32,
    pub max_length: Option<u32>,
    pub pooling: Option<String>,
    pub normalize: bool,
    pub threads: Option<u32>,
    pub sessions: u32,
}

/// One provider tried at open: `error` is unset for the one that runs.
#[napi(object)]
pub struct NativeProviderAttempt {
    pub provider: String,
    pub error: Option<String>,
}

/// What an open embedder is.
#[napi(object)]
pub struct NativeEmbedderInfo {
    pub dimension: u32,
    pub provider: String,
    pub attempts: Vec<NativeProviderAttempt>,
    pub max_length: u32,
    pub pooling: String,
    pub normalize: bool,
    pub batch_size: u32,
    pub model_dir: String,
    pub model_sha256: String,
    pub runtime_path: String,
}

/// A loaded embedding model.
#[napi]
pub struct NativeEmbedder {
    /// Shared with calls in flight; `close()` drops this handle's reference so the
    /// model is freed when the last of them finishes, not whenever the GC runs.
    inner: parking_lot::Mutex<Option<Arc<Embedder>>>,
}

impl NativeEmbedder {
    fn get(&self) -> CoreResult<Arc<Embedder>> {
        self.inner.lock().clone().ok_or_else(|| {
            Error::new(
                athanor_core::Code::Closed,
                "the embedder is closed; open it again with Embedder.open()",
            )
        })
    }
}

#[napi]
impl NativeEmbedder {
    /// The model, provider and settings in use.
    #[napi]
    pub fn info(&self, env: Env) -> Result<NativeEmbedderInfo> {
        guard(&env, || {
            let e = self.get()?;
            Ok(NativeEmbedderInfo {
                dimension: e.dimension() as u32,
                provider: e.provider().as_str().to_owned(),
                attempts: e
                    .attempts()
                    .iter()
                    .map(|(p, err)| NativeProviderAttempt {
                        provider: p.as_str().to_owned(),
                        error: err.clone(),
                    })
                    .collect(),
                max_length: e.max_length() as u32,
                pooling: e.pooling().as_str().to_owned(),
                normalize: e.normalize(),
                batch_size: e.batch_size() as u32,
                model_dir: e.files().dir.display().to_string(),
                model_sha256: e.files().sha256.clone(),
                runtime_path: e.runtime().display().to_string(),
            })
        })
    }
    /// Drops this handle's model reference; later calls fail with ERR_CLOSED.
    #[napi]
    pub fn close(&self, env: Env) -> Result<()> {
        guard(&env, || {
            self.inner.lock().take();
            Ok(())
        })
    }
    /// Token ids of one text, as the model sees it.
    #[napi]
    pub fn tokenize(&self, env: Env, text: String) -> Result<Vec<u32>> {
        guard(&env, || self.get()?.tokenize(&text))
    }
    /// Embeds texts on the libuv pool; resolves to `texts.length * dimension` floats.
    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn embed(&self, env: Env, texts: Vec<String>) -> Result<AsyncTask<Guarded<EmbedTask>>> {
        Ok(guard::task(EmbedTask {
            inner: guard(&env, || self.get())?,
            texts,
        }))
    }
}

/// Opens an embedder on the libuv pool (loading a model takes a while).
#[cfg_attr(test, allow(dead_code))]
#[napi(ts_return_type = "Promise<NativeEmbedder>")]
pub fn embedder_open(
    env: Env,
    options: NativeEmbedderOptions,
) -> Result<AsyncTask<Guarded<OpenTask>>> {
    let task = guard(&env, || {
        let mut o = EmbedderOptions::new(PathBuf::from(&options.runtime_path));
        o.providers = options
            .providers
            .iter()
            .map(|p| Provider::parse(p))
            .collect::<std::result::Result<_, _>>()?;
        o.fallback = options.fallback;
        o.batch_size = options.batch_size as usize;
        o.max_length = options.max_length.map(|n| n as usize);
        o.pooling = options.pooling.as_deref().map(Pooling::parse).transpose()?;
        o.normalize = options.normalize;
        o.threads = options.threads.map(|n| n as usize);
        o.sessions = options.sessions as usize;
        Ok(OpenTask {
            dir: PathBuf::from(&options.dir),
            options: o,
        })
    })?;
    Ok(guard::task(task))
}

#[cfg_attr(test, allow(dead_code))]
pub struct OpenTask {
    dir: PathBuf,
    options: EmbedderOptions,
}

impl Work for OpenTask {
    type Output = Embedder;
    type JsValue = NativeEmbedder;
    fn compute(&mut self) -> CoreResult<Embedder> {
        Embedder::open(&self.dir, &self.options)
    }
    fn resolve(&mut self, _env: Env, output: Embedder) -> Result<NativeEmbedder> {
        Ok(NativeEmbedder {
            inner: parking_lot::Mutex::new(Some(Arc::new(output))),
        })
    }
}

pub struct EmbedTask {
    inner: Arc<Embedder>,
    texts: Vec<String>,
}

impl Work for EmbedTask {
    type Output = Vec<f32>;
    type JsValue = Float32Array;
    fn compute(&mut self) -> CoreResult<Vec<f32>> {
        self.inner.embed(&self.texts)
    }
    fn resolve(&mut self, _env: Env, output: Vec<f32>) -> Result<Float32Array> {
        Ok(Float32Array::new(output))
    }
}
