//! Loading the ONNX Runtime shared library. `ort` is built with `load-dynamic`, so
//! nothing is linked or downloaded at build time: the library is opened once per
//! process from an absolute path (onnxruntime-node's bundled copy, or one the user
//! names), and every embedder shares that environment.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Code, Error, Result};

/// The library the process loaded, once it did. ONNX Runtime cannot be unloaded or
/// swapped for another build inside one process, so a second, different path is refused.
static LOADED: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Loads ONNX Runtime from `path` (first call) or checks that `path` is the library
/// already loaded. Returns the canonical path in use.
pub fn ensure_loaded(path: &Path) -> Result<PathBuf> {
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        Error::new(
            Code::Runtime,
            format!(
                "ONNX Runtime library {} cannot be opened ({e}); install the optional dependency onnxruntime-node, or pass runtimePath / set ATHANOR_ORT_LIB to a libonnxruntime 1.24-1.30",
                path.display()
            ),
        )
    })?;
    if let Some(current) = loaded.as_ref() {
        if *current == canonical {
            return Ok(canonical);
        }
        return Err(Error::new(
            Code::Runtime,
            format!(
                "ONNX Runtime is already loaded from {} in this process and cannot be replaced by {}; use one runtimePath for every embedder",
                current.display(),
                canonical.display()
            ),
        ));
    }
    let builder = ort::init_from(&canonical).map_err(|e| {
        Error::new(
            Code::Runtime,
            format!(
                "could not load ONNX Runtime from {}: {e}; athanor needs ONNX Runtime 1.24 to 1.30 built for this platform",
                canonical.display()
            ),
        )
    })?;
    builder.with_name("athanor").commit();
    *loaded = Some(canonical.clone());
    Ok(canonical)
}

/// The library path loaded so far, if any.
pub fn loaded_path() -> Option<PathBuf> {
    LOADED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}
