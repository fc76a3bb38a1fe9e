//! HNSW dumps under `<dir>/index/<collection>/`: the frozen base graph in its
//! in-memory layout (`graph.bin`, see [`Frozen::write`]), so loading reads it
//! straight into the form searches walk, plus a manifest (format, collection id and parameters, the commit seq the
//! index reflected, the slot of every live document, file lengths and hashes).
//! A dump is written to a temporary folder and renamed into place, and loaded
//! only when its manifest matches the collection and its files hash as recorded;
//! otherwise the index is rebuilt from the stored documents. Dumps are derived
//! data: deleting them is always safe.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value as Json};

use super::collection::CollectionDef;
use super::index::Frozen;
use crate::error::{Error, Result};

/// Format version of a dump's manifest. Version 1 held hnsw_rs's own files; a
/// dump of that version is ignored at load (the index is rebuilt from the
/// stored documents, then dumped in this version).
pub const DUMP_FORMAT: u64 = 2;
/// The graph's file in a dump's folder.
pub const GRAPH_FILE: &str = "graph.bin";
const MANIFEST: &str = "manifest.json";

/// What a loaded dump gives: the graph, each dumped live document's slot, and
/// whether the dump reflects exactly the store's current commit.
pub(crate) struct Loaded {
    pub graph: Frozen,
    pub slots: HashMap<String, u32>,
    pub current: bool,
}

/// The folder of a collection's dump: `<dir>/index/<name>` for the default namespace,
/// `<dir>/namespaces/<id>/index/<name>` for a namespace's collection (beside the
/// namespace's projection.db, and removed with it), so no name of one reaches the other.
pub(crate) fn folder(index_dir: &Path, name: &str) -> PathBuf {
    match crate::store::split_collection(name) {
        (crate::store::DEFAULT_NAMESPACE_ID, _) => index_dir.join(name),
        (ns, plain) => {
            let dir = index_dir.parent().unwrap_or(index_dir);
            dir.join("namespaces")
                .join(ns.to_string())
                .join("index")
                .join(plain)
        }
    }
}

/// 64-bit FNV-1a over 8-byte words (plus the tail): a cheap integrity check
/// against torn or foreign files, not a cryptographic one.
fn hash_file(path: &Path) -> Result<(u64, u64)> {
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut h: u64 = 0xcbf29ce484222325;
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        let (words, tail) = buf[..n].split_at(n / 8 * 8);
        for w in words.chunks_exact(8) {
            h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x100000001b3);
        }
        for b in tail {
            h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
        }
    }
    Ok((len, h))
}

fn params_json(def: &CollectionDef) -> Json {
    let p = &def.params;
    json!({
        "id": def.id,
        "dimension": p.dimension,
        "metric": p.metric.as_str(),
        "m": p.m,
        "efConstruction": p.ef_construction,
        "quantization": p.quantization.as_str(),
    })
}

/// Writes a dump of `graph` whose live documents are `slots`, reflecting commit `seq`.
pub(crate) fn write(
    index_dir: &Path,
    def: &CollectionDef,
    graph: &Frozen,
    slots: &[(u32, Arc<str>)],
    seq: u64,
) -> Result<()> {
    fs::create_dir_all(index_dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = index_dir.join(format!(".tmp-{}-{}-{stamp}", def.id, std::process::id()));
    let r = (|| -> Result<()> {
        fs::create_dir_all(&tmp)?;
        {
            let file = fs::File::create(tmp.join(GRAPH_FILE))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            graph.write(&mut w)?;
            // No fsync: a torn file after a crash fails its checksum and the
            // index is rebuilt from the stored documents.
            w.flush()?;
        }
        let (graph_len, graph_hash) = hash_file(&tmp.join(GRAPH_FILE))?;
        let manifest = json!({
            "format": DUMP_FORMAT,
            "collection": params_json(def),
            "seq": seq,
            "graph": [graph_len, format!("{graph_hash:016x}")],
            "slots": slots.iter().map(|(s, id)| json!([s, &**id])).collect::<Vec<_>>(),
        });
        let text = serde_json::to_vec(&manifest)
            .map_err(|e| Error::new(crate::Code::Io, format!("manifest: {e}")))?;
        fs::write(tmp.join(MANIFEST), text)?;
        let target = folder(index_dir, &def.name);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        if target.exists() {
            // Not atomic: a crash between the two renames leaves only the old
            // dump, moved aside, which the next open puts back (`restore_old`).
            let old = index_dir.join(format!("{}{stamp}", old_prefix(def)));
            fs::rename(&target, &old)?;
            fs::rename(&tmp, &target)?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&tmp, &target)?;
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    r
}

/// Prefix of the folder a replaced dump is moved to while its successor is renamed into place.
fn old_prefix(def: &CollectionDef) -> String {
    format!(".old-{}-", def.id)
}

/// Puts back a replaced dump when a process stopped between moving it aside and
/// renaming its successor into place, so such a crash keeps the old dump
/// instead of leaving none.
fn restore_old(index_dir: &Path, def: &CollectionDef) {
    let target = folder(index_dir, &def.name);
    if target.exists() {
        return;
    }
    let prefix = old_prefix(def);
    let Ok(entries) = fs::read_dir(index_dir) else {
        return;
    };
    let mut olds: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    // The newest (by its time stamp) first; its manifest is checked as usual when loaded.
    olds.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n[prefix.len()..].parse::<u128>().ok())
            .unwrap_or(0)
    });
    if let Some(newest) = olds.pop() {
        let _ = fs::rename(newest, target);
    }
}

/// Removes the temporary and replaced folders that dumps interrupted by a crash
/// left behind (at open, once every collection is loaded). A dump another
/// process is writing at that moment fails and is retried; it is never loaded
/// half written, since its files no longer match its manifest.
pub(crate) fn sweep(index_dir: &Path) {
    let Ok(entries) = fs::read_dir(index_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".tmp-") || name.starts_with(".old-") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Loads the dump of `def` if there is a valid one; `seq` is the store's commit seq now.
pub(crate) fn load(index_dir: &Path, def: &CollectionDef, seq: u64) -> Option<Loaded> {
    restore_old(index_dir, def);
    let dir = folder(index_dir, &def.name);
    let text = fs::read(dir.join(MANIFEST)).ok()?;
    let m: Json = serde_json::from_slice(&text).ok()?;
    if m["format"].as_u64() != Some(DUMP_FORMAT) || m["collection"] != params_json(def) {
        return None;
    }
    let (len, hash) = hash_file(&dir.join(GRAPH_FILE)).ok()?;
    if m["graph"][0].as_u64() != Some(len)
        || m["graph"][1].as_str() != Some(&format!("{hash:016x}"))
    {
        return None;
    }
    let mut slots = HashMap::new();
    for e in m["slots"].as_array()? {
        slots.insert(
            e[1].as_str()?.to_owned(),
            u32::try_from(e[0].as_u64()?).ok()?,
        );
    }
    let file = fs::File::open(dir.join(GRAPH_FILE)).ok()?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let graph = Frozen::read(
        &mut r,
        def.params.dimension as usize,
        def.params.quantization,
    )
    .ok()?;
    Some(Loaded {
        graph,
        slots,
        current: m["seq"].as_u64() == Some(seq),
    })
}

/// Removes a collection's dump (after a drop).
pub(crate) fn remove(index_dir: &Path, name: &str) {
    let _ = fs::remove_dir_all(folder(index_dir, name));
}

/// Checks every dump under `index_dir` for [`crate::Engine::verify`]: a manifest
/// that parses, a format this build reads, and graph files of the recorded lengths
/// and checksums. Dumps being written (`.tmp-`) or replaced (`.old-`) are skipped.
/// Returns the number of dumps checked.
pub(crate) fn verify_all(index_dir: &Path) -> Result<u32> {
    let Ok(entries) = fs::read_dir(index_dir) else {
        return Ok(0);
    };
    let mut checked = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let dir = e.path();
        let damaged = |what: &str| {
            Error::corrupt(format!(
                "index dump {} is damaged: {what}; delete that folder (the index is rebuilt from the stored documents at the next open)",
                dir.display()
            ))
        };
        if !dir.is_dir() {
            return Err(damaged("it is not a folder"));
        }
        let text = fs::read(dir.join(MANIFEST))
            .map_err(|e| damaged(&format!("its manifest cannot be read ({e})")))?;
        let m: Json = serde_json::from_slice(&text)
            .map_err(|e| damaged(&format!("its manifest is not JSON ({e})")))?;
        match m["format"].as_u64() {
            Some(DUMP_FORMAT) => {}
            // An older build's dump, ignored at load and replaced by the next dump.
            Some(1) => continue,
            Some(f) if f > DUMP_FORMAT => continue, // a newer build's dump: not ours to judge
            _ => return Err(damaged("its manifest has no known format")),
        }
        let (len, hash) = hash_file(&dir.join(GRAPH_FILE))
            .map_err(|e| damaged(&format!("{GRAPH_FILE}: {}", e.message)))?;
        if m["graph"][0].as_u64() != Some(len)
            || m["graph"][1].as_str() != Some(&format!("{hash:016x}"))
        {
            return Err(damaged(&format!(
                "{GRAPH_FILE} does not match the length and checksum its manifest records"
            )));
        }
        if !m["slots"].is_array() || m["seq"].as_u64().is_none() {
            return Err(damaged("its manifest lacks the slots or commit seq"));
        }
        checked += 1;
    }
    Ok(checked)
}
