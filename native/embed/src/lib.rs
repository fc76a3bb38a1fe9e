//! Local text embeddings: a sentence-embedding model run with ONNX Runtime (`ort`,
//! library loaded at run time), tokenised with the model's own `tokenizer.json`
//! (`tokenizers`), pooled over the attention mask and L2-normalised.
//!
//! An [`Embedder`] is `Send + Sync`: calls from many threads share its sessions.
//! One call embeds any number of texts: they are tokenised in parallel, sorted by
//! token count so each batch pads to a similar length (less wasted compute than
//! padding mixed lengths together), run in batches, and returned in input order.

#![warn(missing_docs)]

mod model;
mod runtime;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::ep::ExecutionProviderDispatch;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;
use rayon::prelude::*;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

pub use model::{sha256_file, ModelFiles, Pooling};
pub use runtime::loaded_path as runtime_path;

use athanor_core::{Code, Error, Result};

/// Execution providers athanor knows how to ask ONNX Runtime for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// ONNX Runtime's CPU provider: always available.
    Cpu,
    /// NVIDIA CUDA, when the runtime library and drivers have it.
    Cuda,
    /// Apple Core ML (macOS).
    CoreMl,
}

impl Provider {
    /// Parses `cpu`, `cuda` or `coreml`.
    pub fn parse(s: &str) -> Result<Provider> {
        match s {
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda),
            "coreml" => Ok(Provider::CoreMl),
            other => Err(Error::invalid(format!(
                "execution provider must be 'cpu', 'cuda' or 'coreml', got {other:?}"
            ))),
        }
    }

    /// The name users write.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::CoreMl => "coreml",
        }
    }

    fn dispatch(self) -> ExecutionProviderDispatch {
        match self {
            Provider::Cpu => ort::ep::CPU::default().build().error_on_failure(),
            Provider::Cuda => ort::ep::CUDA::default().build().error_on_failure(),
            Provider::CoreMl => ort::ep::CoreML::default().build().error_on_failure(),
        }
    }
}

/// How an embedder is opened.
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// Absolute path of the ONNX Runtime shared library.
    pub runtime_path: PathBuf,
    /// Providers to try, in order. CPU is tried last when `fallback` is set and it is not listed.
    pub providers: Vec<Provider>,
    /// On a provider that cannot start: try the next one (true) or fail with `ERR_PROVIDER` (false).
    pub fallback: bool,
    /// Texts per model run.
    pub batch_size: usize,
    /// Token limit; `None` takes the model's.
    pub max_length: Option<usize>,
    /// Pooling; `None` takes the model's.
    pub pooling: Option<Pooling>,
    /// L2-normalise each vector.
    pub normalize: bool,
    /// ONNX Runtime intra-op threads per session; `None` splits the cores between the sessions.
    pub threads: Option<usize>,
    /// Independent sessions, for concurrent calls (each uses `threads`).
    pub sessions: usize,
}

impl EmbedderOptions {
    /// Defaults: CPU, fallback on, batch 32, the model's length and pooling, normalised, one session.
    pub fn new(runtime_path: impl Into<PathBuf>) -> Self {
        EmbedderOptions {
            runtime_path: runtime_path.into(),
            providers: vec![Provider::Cpu],
            fallback: true,
            batch_size: 32,
            max_length: None,
            pooling: None,
            normalize: true,
            threads: None,
            sessions: 1,
        }
    }
}

/// What happened to each provider tried at open: `(provider, None)` for the one that
/// runs, `(provider, Some(reason))` for each that could not start.
pub type ProviderAttempts = Vec<(Provider, Option<String>)>;

/// A loaded embedding model.
pub struct Embedder {
    files: ModelFiles,
    tokenizer: Tokenizer,
    sessions: Vec<Mutex<Session>>,
    /// Whether the graph takes `token_type_ids` / `attention_mask` inputs.
    wants_token_types: bool,
    wants_mask: bool,
    output: OutputKind,
    provider: Provider,
    attempts: ProviderAttempts,
    dimension: usize,
    max_length: usize,
    pooling: Pooling,
    normalize: bool,
    batch_size: usize,
    runtime: PathBuf,
}

/// Which output holds the embedding.
#[derive(Debug, Clone)]
enum OutputKind {
    /// `[batch, tokens, hidden]`: pool it.
    Tokens(String),
    /// `[batch, hidden]`: already one vector per text.
    Pooled(String),
}

fn model_err(msg: impl Into<String>) -> Error {
    Error::new(Code::Model, msg)
}

/// Checks `sessions` and `threads` against this machine and returns the intra-op
/// threads per session. Every session runs its own ONNX Runtime thread pool, so
/// the total is bounded too: past a few threads per core they only contend. The
/// default splits the cores between the sessions.
fn check_parallelism(o: &EmbedderOptions) -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A small floor so that modest settings work the same on a 1- or 2-core machine.
    let per_kind = cores.max(4);
    let max_sessions = per_kind.min(64);
    let max_total = 2 * per_kind;
    if o.sessions == 0 || o.sessions > max_sessions {
        return Err(Error::invalid(format!(
            "sessions must be between 1 and {max_sessions} on this machine ({cores} cores), got {}",
            o.sessions
        )));
    }
    let threads = match o.threads {
        Some(t) if t == 0 || t > per_kind => {
            return Err(Error::invalid(format!(
                "threads must be between 1 and {per_kind} on this machine ({cores} cores), got {t}"
            )))
        }
        Some(t) => t,
        None => (cores / o.sessions).max(1),
    };
    if o.sessions * threads > max_total {
        return Err(Error::invalid(format!(
            "sessions x threads = {} would start that many ONNX Runtime threads; keep it at most {max_total} on this machine ({cores} cores), e.g. fewer threads per session",
            o.sessions * threads
        )));
    }
    Ok(threads)
}

fn ort_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Code::Model, format!("{what}: {e}"))
}

impl Embedder {
    /// Loads the model in `dir`, starting the first provider that works (see
    /// [`EmbedderOptions::fallback`]), and checks it end to end with one short text.
    pub fn open(dir: &Path, o: &EmbedderOptions) -> Result<Embedder> {
        if o.batch_size == 0 || o.batch_size > 4096 {
            return Err(Error::invalid("batchSize must be between 1 and 4096"));
        }
        let threads = check_parallelism(o)?;
        if o.providers.is_empty() {
            return Err(Error::invalid(
                "providers must name at least one of 'cpu', 'cuda', 'coreml'",
            ));
        }
        let runtime = runtime::ensure_loaded(&o.runtime_path)?;
        let files = ModelFiles::open(dir)?;
        let max_length = match o.max_length {
            Some(n) if n < 2 => return Err(Error::invalid("maxLength must be at least 2 tokens")),
            Some(n) => n.min(files.max_length),
            None => files.max_length,
        };
        let mut tokenizer = Tokenizer::from_file(&files.tokenizer).map_err(|e| {
            model_err(format!(
                "{} is not a tokenizer.json the tokenizers library can read: {e}",
                files.tokenizer.display()
            ))
        })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| model_err(format!("cannot set truncation: {e}")))?;
        // Padding is done per batch below, after sorting by length.
        tokenizer.with_padding(None);

        let mut order = o.providers.clone();
        if o.fallback && !order.contains(&Provider::Cpu) {
            order.push(Provider::Cpu);
        }
        let mut attempts: ProviderAttempts = Vec::new();
        let mut first: Option<(Provider, Session)> = None;
        for p in order {
            match build_session(&files.onnx, p, threads) {
                Ok(s) => {
                    attempts.push((p, None));
                    first = Some((p, s));
                    break;
                }
                Err(e) => {
                    let reason = e.to_string();
                    attempts.push((p, Some(reason.clone())));
                    if !o.fallback {
                        return Err(Error::new(
                            Code::Provider,
                            format!(
                                "execution provider {} could not start: {reason}; install its ONNX Runtime provider libraries (matching ONNX Runtime's version), or allow fallback",
                                p.as_str()
                            ),
                        ));
                    }
                }
            }
        }
        let (provider, session) = first.ok_or_else(|| {
            let why = attempts
                .iter()
                .map(|(p, r)| format!("{}: {}", p.as_str(), r.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join("; ");
            Error::new(
                Code::Provider,
                format!("no execution provider could start ({why})"),
            )
        })?;

        let input_names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        if !input_names.iter().any(|n| n == "input_ids") {
            return Err(model_err(format!(
                "{} takes inputs {input_names:?}, not input_ids: it is not a text encoder athanor can run",
                files.onnx.display()
            )));
        }
        if let Some(other) = input_names.iter().find(|n| {
            !matches!(
                n.as_str(),
                "input_ids" | "attention_mask" | "token_type_ids"
            )
        }) {
            return Err(model_err(format!(
                "{} needs an input {other:?} athanor does not provide (it supplies input_ids, attention_mask, token_type_ids)",
                files.onnx.display()
            )));
        }
        let output_names: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let output = ["last_hidden_state", "token_embeddings"]
            .iter()
            .find(|n| output_names.iter().any(|o| o == *n))
            .map(|n| OutputKind::Tokens(n.to_string()))
            .or_else(|| {
                ["sentence_embedding", "pooler_output"]
                    .iter()
                    .find(|n| output_names.iter().any(|o| o == *n))
                    .map(|n| OutputKind::Pooled(n.to_string()))
            })
            .or_else(|| output_names.first().map(|n| OutputKind::Tokens(n.clone())))
            .ok_or_else(|| model_err("the model has no outputs"))?;

        let mut sessions = vec![Mutex::new(session)];
        for _ in 1..o.sessions {
            sessions.push(Mutex::new(
                build_session(&files.onnx, provider, threads)
                    .map_err(|e| ort_err("starting a session", e))?,
            ));
        }
        let mut e = Embedder {
            pooling: o.pooling.unwrap_or(files.pooling),
            files,
            tokenizer,
            sessions,
            wants_token_types: input_names.iter().any(|n| n == "token_type_ids"),
            wants_mask: input_names.iter().any(|n| n == "attention_mask"),
            output,
            provider,
            attempts,
            dimension: 0,
            max_length,
            normalize: o.normalize,
            batch_size: o.batch_size,
            runtime,
        };
        // One real run: proves the graph executes on this provider and gives the dimension.
        let probe = e.embed(&["athanor"])?;
        e.dimension = probe.len();
        if e.dimension == 0 {
            return Err(model_err("the model produced an empty embedding"));
        }
        Ok(e)
    }

    /// Length of every vector this embedder returns.
    pub fn dimension(&self) -> usize {
        self.dimension
    }
    /// The provider that runs the model.
    pub fn provider(&self) -> Provider {
        self.provider
    }
    /// Each provider tried at open and why the ones before the running one failed.
    pub fn attempts(&self) -> &ProviderAttempts {
        &self.attempts
    }
    /// Token limit applied to each text (longer texts are truncated).
    pub fn max_length(&self) -> usize {
        self.max_length
    }
    /// Pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }
    /// Whether vectors are L2-normalised.
    pub fn normalize(&self) -> bool {
        self.normalize
    }
    /// Texts per model run.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    /// The model's files.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }
    /// The ONNX Runtime library in use.
    pub fn runtime(&self) -> &Path {
        &self.runtime
    }

    /// Token ids of `text` (with special tokens, truncated), as the model sees them.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::invalid(format!("cannot tokenize text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Embeds `texts`; returns `texts.len() * dimension` floats, row `i` for `texts[i]`.
    pub fn embed<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<f32>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings: Vec<Encoding> = texts
            .par_iter()
            .map(|t| {
                self.tokenizer
                    .encode(t.as_ref(), true)
                    .map_err(|e| Error::invalid(format!("cannot tokenize text: {e}")))
            })
            .collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());

        let mut out: Vec<f32> = Vec::new();
        let mut dim = self.dimension;
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            let rows = self.run_batch(&batch)?;
            let d = rows.len() / batch.len();
            if dim == 0 {
                dim = d;
            }
            if d != dim {
                return Err(model_err(format!(
                    "the model returned {d} values per text in one batch and {dim} in another"
                )));
            }
            if out.is_empty() {
                out = vec![0.0; texts.len() * dim];
            }
            for (k, &i) in chunk.iter().enumerate() {
                out[i * dim..(i + 1) * dim].copy_from_slice(&rows[k * dim..(k + 1) * dim]);
            }
        }
        Ok(out)
    }

    /// Runs one padded batch and pools it; returns `batch.len() * dim` floats.
    fn run_batch(&self, batch: &[&Encoding]) -> Result<Vec<f32>> {
        let b = batch.len();
        let s = batch
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut ids = vec![0i64; b * s];
        let mut mask = vec![0i64; b * s];
        let mut types = vec![0i64; b * s];
        for (r, e) in batch.iter().enumerate() {
            let row = r * s;
            for (c, &id) in e.get_ids().iter().enumerate() {
                ids[row + c] = id as i64;
                mask[row + c] = 1;
            }
            for (c, &t) in e.get_type_ids().iter().enumerate() {
                types[row + c] = t as i64;
            }
        }
        let shape = [b, s];
        let mut inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> = Vec::with_capacity(3);
        inputs.push((
            "input_ids",
            Tensor::from_array((shape, ids))
                .map_err(|e| ort_err("input tensor", e))?
                .into(),
        ));
        let pool_mask = if self.wants_mask || self.pooling != Pooling::Cls {
            Some(mask.clone())
        } else {
            None
        };
        if self.wants_mask {
            inputs.push((
                "attention_mask",
                Tensor::from_array((shape, mask))
                    .map_err(|e| ort_err("input tensor", e))?
                    .into(),
            ));
        }
        if self.wants_token_types {
            inputs.push((
                "token_type_ids",
                Tensor::from_array((shape, types))
                    .map_err(|e| ort_err("input tensor", e))?
                    .into(),
            ));
        }
        let mut session = self.session();
        let outputs = session
            .run(inputs)
            .map_err(|e| Error::new(Code::Model, format!("the model failed to run: {e}")))?;
        let mut pooled = match &self.output {
            OutputKind::Pooled(name) => {
                let (shape, data) = outputs[name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| ort_err("reading the model's output", e))?;
                if shape.len() != 2 || shape[0] as usize != b {
                    return Err(model_err(format!(
                        "output {name} has shape {shape:?}, expected [batch, dim]"
                    )));
                }
                data.to_vec()
            }
            OutputKind::Tokens(name) => {
                let (shape, data) = outputs[name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| ort_err("reading the model's output", e))?;
                if shape.len() != 3 || shape[0] as usize != b || shape[1] as usize != s {
                    return Err(model_err(format!(
                        "output {name} has shape {shape:?}, expected [batch, tokens, dim] = [{b}, {s}, _]"
                    )));
                }
                let h = shape[2] as usize;
                pool(data, b, s, h, pool_mask.as_deref(), self.pooling)
            }
        };
        drop(outputs);
        drop(session);
        if self.normalize {
            let d = pooled.len() / b;
            for row in pooled.chunks_mut(d) {
                let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                if n > 1e-12 {
                    row.iter_mut().for_each(|x| *x /= n);
                }
            }
        }
        Ok(pooled)
    }

    /// A free session, or the first one (waiting for it) when all are busy.
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        for s in &self.sessions {
            if let Ok(g) = s.try_lock() {
                return g;
            }
        }
        self.sessions[0].lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn build_session(onnx: &Path, p: Provider, threads: usize) -> std::result::Result<Session, String> {
    let builder = Session::builder().map_err(|e| e.to_string())?;
    let builder = builder
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| e.to_string())?
        .with_intra_threads(threads)
        .map_err(|e| e.to_string())?
        .with_inter_threads(1)
        .map_err(|e| e.to_string())?;
    let mut builder = builder
        .with_execution_providers([p.dispatch()])
        .map_err(|e| e.to_string())?;
    builder.commit_from_file(onnx).map_err(|e| e.to_string())
}

/// Pools `[b, s, h]` token vectors into `[b, h]`.
fn pool(
    data: &[f32],
    b: usize,
    s: usize,
    h: usize,
    mask: Option<&[i64]>,
    how: Pooling,
) -> Vec<f32> {
    let mut out = vec![0f32; b * h];
    for r in 0..b {
        let dst = &mut out[r * h..(r + 1) * h];
        let on = |c: usize| mask.is_none_or(|m| m[r * s + c] != 0);
        match how {
            Pooling::Cls => dst.copy_from_slice(&data[r * s * h..r * s * h + h]),
            Pooling::Mean => {
                let mut n = 0f32;
                for c in (0..s).filter(|&c| on(c)) {
                    let tok = &data[(r * s + c) * h..(r * s + c + 1) * h];
                    dst.iter_mut().zip(tok).for_each(|(d, t)| *d += t);
                    n += 1.0;
                }
                let n = n.max(1e-9);
                dst.iter_mut().for_each(|d| *d /= n);
            }
            Pooling::Max => {
                dst.fill(f32::NEG_INFINITY);
                for c in (0..s).filter(|&c| on(c)) {
                    let tok = &data[(r * s + c) * h..(r * s + c + 1) * h];
                    dst.iter_mut().zip(tok).for_each(|(d, t)| *d = d.max(*t));
                }
                dst.iter_mut()
                    .filter(|d| !d.is_finite())
                    .for_each(|d| *d = 0.0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_ignores_padding() {
        // b=1, s=3, h=2; the third token is padding.
        let data = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let v = pool(&data, 1, 3, 2, Some(&[1, 1, 0]), Pooling::Mean);
        assert_eq!(v, vec![2.0, 3.0]);
        let v = pool(&data, 1, 3, 2, Some(&[1, 1, 0]), Pooling::Max);
        assert_eq!(v, vec![3.0, 4.0]);
        let v = pool(&data, 1, 3, 2, Some(&[1, 1, 0]), Pooling::Cls);
        assert_eq!(v, vec![1.0, 2.0]);
    }
}
