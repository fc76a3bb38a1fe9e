//! A sentence-embedding model directory, as sentence-transformers and the Hugging
//! Face hub lay it out: `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`,
//! `config.json`, and optionally `sentence_bert_config.json` (max sequence length),
//! `tokenizer_config.json` (model_max_length) and `1_Pooling/config.json` (pooling).

use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use athanor_core::{Code, Error, Result};

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the token vectors under the attention mask.
    Mean,
    /// The first (`[CLS]`) token's vector.
    Cls,
    /// Component-wise maximum under the attention mask.
    Max,
}

impl Pooling {
    /// Parses `mean`, `cls` or `max`.
    pub fn parse(s: &str) -> Result<Pooling> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            other => Err(Error::invalid(format!(
                "pooling must be 'mean', 'cls' or 'max', got {other:?}"
            ))),
        }
    }

    /// The name users write.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
        }
    }
}

/// What the directory says about the model.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The model directory.
    pub dir: PathBuf,
    /// The ONNX graph file in it.
    pub onnx: PathBuf,
    /// Its `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// Longest input in tokens the model was trained for (after the rules in [`ModelFiles::open`]).
    pub max_length: usize,
    /// The pooling the model's own config asks for (mean when it says nothing).
    pub pooling: Pooling,
    /// Hidden size from config.json, when present.
    pub hidden_size: Option<usize>,
    /// SHA-256 of model.onnx, hex: identifies the vector space the model produces.
    pub sha256: String,
}

fn model_err(msg: String) -> Error {
    Error::new(Code::Model, msg)
}

fn read_json(path: &Path) -> Result<Option<Json>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| model_err(format!("{} is not valid JSON: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(model_err(format!("cannot read {}: {e}", path.display()))),
    }
}

fn positive(j: &Option<Json>, key: &str) -> Option<usize> {
    j.as_ref()?
        .get(key)?
        .as_u64()
        .filter(|&n| n > 0 && n < 1 << 20)
        .map(|n| n as usize)
}

/// Hashes a file in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| model_err(format!("cannot open {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| model_err(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}

impl ModelFiles {
    /// Reads a model directory. The max length is the sentence-transformers
    /// `max_seq_length` when given, else the tokenizer's `model_max_length`, capped by
    /// the model's `max_position_embeddings` (inputs longer than that cannot run).
    pub fn open(dir: &Path) -> Result<ModelFiles> {
        if !dir.is_dir() {
            return Err(model_err(format!(
                "model directory {} does not exist; give a directory holding model.onnx and tokenizer.json, or use Embedder.fromPretrained()",
                dir.display()
            )));
        }
        let onnx = [dir.join("model.onnx"), dir.join("onnx").join("model.onnx")]
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| {
                model_err(format!(
                    "{} has no model.onnx (nor onnx/model.onnx); export the model to ONNX first",
                    dir.display()
                ))
            })?;
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(model_err(format!(
                "{} has no tokenizer.json; athanor reads the fast-tokenizer file the model ships with",
                dir.display()
            )));
        }
        let config = read_json(&dir.join("config.json"))?;
        let st = read_json(&dir.join("sentence_bert_config.json"))?;
        let tok_cfg = read_json(&dir.join("tokenizer_config.json"))?;
        let pool_cfg = read_json(&dir.join("1_Pooling").join("config.json"))?;

        let positions = positive(&config, "max_position_embeddings");
        let wanted = positive(&st, "max_seq_length")
            .or_else(|| positive(&tok_cfg, "model_max_length"))
            .or(positions)
            .unwrap_or(512);
        let max_length = positions.map_or(wanted, |p| wanted.min(p));

        let flag = |k: &str| {
            pool_cfg
                .as_ref()
                .and_then(|j| j.get(k))
                .and_then(Json::as_bool)
                .unwrap_or(false)
        };
        let pooling = if flag("pooling_mode_cls_token") {
            Pooling::Cls
        } else if flag("pooling_mode_max_tokens") {
            Pooling::Max
        } else {
            Pooling::Mean
        };
        let sha256 = sha256_file(&onnx)?;
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            onnx,
            tokenizer,
            max_length,
            pooling,
            hidden_size: positive(&config, "hidden_size"),
            sha256,
        })
    }
}
