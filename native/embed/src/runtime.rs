//! Loading the ONNX Runtime shared library. `ort` is built with `load-dynamic`, so
//! nothing is linked or downloaded at build time: the library is opened once per
//! process from an absolute path (onnxruntime-node's bundled copy, or one the user
//! names), and every embedder shares that environment.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use athanor_core::{Code, Error, Result};

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
    // dlopen maps the file as it is: segments past the end of a truncated copy
    // fault (SIGBUS) on first use, so the file is checked against its own headers first.
    check_library(&canonical)?;
    // A failed `ort::init_from` leaves ort's once-cell marked done but empty, after
    // which every later load reads garbage (ERR_INTERNAL, an abort at exit). So the
    // checks ort makes are made here first, on a handle of our own.
    check_exports(&canonical)?;
    if POISONED.load(std::sync::atomic::Ordering::Acquire) {
        return Err(Error::new(
            Code::Runtime,
            "an earlier attempt to load ONNX Runtime failed inside ort in this process; restart the process with a working runtimePath",
        ));
    }
    let builder = ort::init_from(&canonical).map_err(|e| {
        POISONED.store(true, std::sync::atomic::Ordering::Release);
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

/// Set when `ort::init_from` itself failed: ort cannot load a library after that.
static POISONED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Loads `path` on its own and checks that it is an ONNX Runtime ort can use: it
/// exports `OrtGetApiBase` and reports a version at least `1.{ort::MINOR_VERSION}`.
/// The handle is closed again; ort opens the library itself afterwards.
fn check_exports(path: &Path) -> Result<()> {
    let bad = |what: String| {
        Error::new(
            Code::Runtime,
            format!(
                "{} is not a usable ONNX Runtime library: {what}; point runtimePath / ATHANOR_ORT_LIB at a libonnxruntime 1.24-1.30 for this platform",
                path.display()
            ),
        )
    };
    // SAFETY: loading runs the library's initialisers; the file passed `check_library`,
    // and loading it is what the caller asked for.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| bad(format!("it cannot be loaded ({e})")))?;
    // SAFETY: the symbol's type is the one ONNX Runtime's C API declares.
    let get_base = unsafe {
        lib.get::<unsafe extern "system" fn() -> *const ort::sys::OrtApiBase>(b"OrtGetApiBase")
    }
    .map_err(|_| bad("it does not export OrtGetApiBase".into()))?;
    // SAFETY: OrtGetApiBase takes no arguments and returns a static table (or null).
    let base = unsafe { get_base() };
    if base.is_null() {
        return Err(bad("OrtGetApiBase returned nothing".into()));
    }
    // SAFETY: `base` points at ONNX Runtime's static API table; the string is static.
    let version = unsafe { std::ffi::CStr::from_ptr(((*base).GetVersionString)()) }
        .to_string_lossy()
        .into_owned();
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if minor < ort::MINOR_VERSION {
        return Err(bad(format!(
            "it is ONNX Runtime {version}, older than 1.{}",
            ort::MINOR_VERSION
        )));
    }
    Ok(())
}

/// The library path loaded so far, if any.
pub fn loaded_path() -> Option<PathBuf> {
    LOADED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Checks that `path` is a shared library for this platform whose headers fit in
/// the file and whose loadable segments lie inside it (ELF on Linux, Mach-O on
/// macOS), so that loading it cannot touch bytes the file does not have.
fn check_library(path: &Path) -> Result<()> {
    use std::io::Read;
    let bad = |what: String| {
        Error::new(
            Code::Runtime,
            format!(
                "{} is not a usable ONNX Runtime library: {what}; point runtimePath / ATHANOR_ORT_LIB at an intact libonnxruntime 1.24-1.30 for this platform (reinstall onnxruntime-node if it is the bundled copy)",
                path.display()
            ),
        )
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    if !meta.is_file() {
        return Err(bad("it is not a regular file".into()));
    }
    let len = meta.len();
    // The headers describing every segment sit in the first pages; 1 MiB covers them.
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut head))
        .map_err(|e| bad(format!("cannot read it ({e})")))?;
    let h = &head[..];
    let u16_at = |o: usize| {
        h.get(o..o + 2)
            .map(|b| u16::from_le_bytes(b.try_into().unwrap()))
    };
    let u32_at = |o: usize| {
        h.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        h.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    let truncated = |end: u64| {
        bad(format!(
            "it is {len} bytes but its headers describe data up to byte {end} (a truncated copy?)"
        ))
    };
    if h.starts_with(b"\x7fELF") {
        if h.get(4) != Some(&2) || h.get(5) != Some(&1) {
            return Err(bad("it is not a 64-bit little-endian ELF file".into()));
        }
        let machine = u16_at(0x12).unwrap_or(0);
        let expected = if cfg!(target_arch = "x86_64") {
            62
        } else if cfg!(target_arch = "aarch64") {
            183
        } else {
            machine
        };
        if machine != expected {
            return Err(bad(format!(
                "it is built for another CPU (ELF machine {machine})"
            )));
        }
        let field16 = |o: usize| u16_at(o).unwrap_or(0) as u64;
        let (phoff, phentsize, phnum) = (u64_at(0x20).unwrap_or(0), field16(0x36), field16(0x38));
        let (shoff, shentsize, shnum) = (u64_at(0x28).unwrap_or(0), field16(0x3a), field16(0x3c));
        let sh_end = shoff.saturating_add(shnum.saturating_mul(shentsize));
        if phnum == 0 || phentsize < 56 {
            return Err(bad("it has no program headers".into()));
        }
        let ph_end = phoff.saturating_add(phnum * phentsize);
        if ph_end > len || ph_end > h.len() as u64 {
            return Err(truncated(ph_end));
        }
        if shnum > 0 && sh_end > len {
            return Err(truncated(sh_end));
        }
        for i in 0..phnum {
            let at = (phoff + i * phentsize) as usize;
            const PT_LOAD: u32 = 1;
            if u32_at(at) == Some(PT_LOAD) {
                let end = u64_at(at + 8)
                    .unwrap_or(0)
                    .saturating_add(u64_at(at + 0x20).unwrap_or(0));
                if end > len {
                    return Err(truncated(end));
                }
            }
        }
        Ok(())
    } else if u32_at(0) == Some(0xfeed_facf) {
        // Mach-O 64: load commands after a 32-byte header; LC_SEGMENT_64 gives file ranges.
        let ncmds = u32_at(16).unwrap_or(0) as usize;
        let mut at = 32usize;
        for _ in 0..ncmds {
            let (Some(cmd), Some(size)) = (u32_at(at), u32_at(at + 4)) else {
                return Err(truncated(at as u64 + 8));
            };
            const LC_SEGMENT_64: u32 = 0x19;
            if cmd == LC_SEGMENT_64 {
                let end = u64_at(at + 40)
                    .unwrap_or(0)
                    .saturating_add(u64_at(at + 48).unwrap_or(0));
                if end > len {
                    return Err(truncated(end));
                }
            }
            if size < 8 {
                return Err(bad("a load command is malformed".into()));
            }
            at += size as usize;
        }
        Ok(())
    } else if cfg!(target_os = "linux") || cfg!(target_os = "macos") {
        Err(bad("it is not a shared library for this platform".into()))
    } else {
        Ok(())
    }
}
