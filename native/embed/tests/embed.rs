//! The embedder against the real all-MiniLM-L6-v2 (int8 ONNX) test model and the
//! ONNX Runtime library from onnxruntime-node. `npm test` fetches both first
//! (scripts/test-model.mjs, npm install); `ATHANOR_TEST_MODEL_DIR` and
//! `ATHANOR_ORT_LIB` point elsewhere.

use std::path::PathBuf;

use athanor_core::Code;
use athanor_embed::{Embedder, EmbedderOptions, Pooling, Provider};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn runtime_lib() -> PathBuf {
    if let Ok(p) = std::env::var("ATHANOR_ORT_LIB") {
        return PathBuf::from(p);
    }
    let (os, arch, file) = match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => ("linux", "x64", "libonnxruntime.so.1"),
        ("linux", "aarch64") => ("linux", "arm64", "libonnxruntime.so.1"),
        ("macos", "aarch64") => ("darwin", "arm64", "libonnxruntime.1.dylib"),
        other => panic!("no bundled ONNX Runtime for {other:?}; set ATHANOR_ORT_LIB"),
    };
    let p = repo_root().join(format!(
        "node_modules/onnxruntime-node/bin/napi-v6/{os}/{arch}/{file}"
    ));
    assert!(
        p.is_file(),
        "{} is missing: run `npm install` (or set ATHANOR_ORT_LIB)",
        p.display()
    );
    p
}

fn model_dir() -> PathBuf {
    if let Ok(p) = std::env::var("ATHANOR_TEST_MODEL_DIR") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("ATHANOR_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("XDG_CACHE_HOME")
                .map(|x| PathBuf::from(x).join("athanor"))
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/athanor")
                })
        });
    let p = cache.join("test-models/all-MiniLM-L6-v2-int8");
    assert!(
        p.join("model.onnx").is_file(),
        "{} is missing: run `node scripts/test-model.mjs`",
        p.display()
    );
    p
}

fn open() -> Embedder {
    Embedder::open(&model_dir(), &EmbedderOptions::new(runtime_lib())).expect("open the test model")
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    d / (na * nb)
}

#[test]
fn embeds_with_the_models_own_settings() {
    let e = open();
    assert_eq!(e.dimension(), 384);
    assert_eq!(e.provider(), Provider::Cpu);
    assert_eq!(e.pooling(), Pooling::Mean);
    assert_eq!(
        e.max_length(),
        256,
        "sentence_bert_config.json's max_seq_length"
    );
    let texts = [
        "The cat sits on the mat.",
        "A feline is resting on a rug.",
        "Stock markets fell sharply today.",
    ];
    let v = e.embed(&texts).unwrap();
    assert_eq!(v.len(), 3 * 384);
    for row in v.chunks(384) {
        let n: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "normalised, got norm {n}");
    }
    let (cat, feline, stocks) = (&v[..384], &v[384..768], &v[768..]);
    assert!(
        cos(cat, feline) > cos(cat, stocks) + 0.2,
        "a paraphrase scores higher than an unrelated sentence"
    );
}

#[test]
fn a_text_embeds_the_same_alone_or_in_any_batch() {
    let e = open();
    let long = "word ".repeat(200);
    let alone = e.embed(&["short text"]).unwrap();
    let mixed = e
        .embed(&[
            long.as_str(),
            "short text",
            "another one of medium length here",
        ])
        .unwrap();
    assert!(
        cos(&alone, &mixed[384..768]) > 0.9999,
        "padding must not change a text's vector"
    );
    // Order is the caller's, whatever the length sort inside.
    let again = e
        .embed(&["another one of medium length here", long.as_str()])
        .unwrap();
    assert!(cos(&again[..384], &mixed[768..]) > 0.9999);
    assert!(cos(&again[384..], &mixed[..384]) > 0.9999);
}

#[test]
fn truncates_to_max_length_and_handles_empty_input() {
    let e = open();
    let ids = e.tokenize(&"token ".repeat(1000)).unwrap();
    assert_eq!(ids.len(), 256);
    assert!(e.embed::<&str>(&[]).unwrap().is_empty());
    assert_eq!(e.embed(&[""]).unwrap().len(), 384);
}

#[test]
fn unnormalised_and_cls_options_are_honoured() {
    let mut o = EmbedderOptions::new(runtime_lib());
    o.normalize = false;
    o.pooling = Some(Pooling::Cls);
    o.max_length = Some(16);
    let e = Embedder::open(&model_dir(), &o).unwrap();
    assert_eq!(e.max_length(), 16);
    let v = e.embed(&["hello world"]).unwrap();
    let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n - 1.0).abs() > 1e-3, "not normalised");
    // CLS is one token's hidden state, not the mean over the tokens (test/embed.test.ts
    // checks it against transformers.js).
    let mut mean = o.clone();
    mean.pooling = Some(Pooling::Mean);
    let m = Embedder::open(&model_dir(), &mean).unwrap();
    assert_eq!(m.pooling(), Pooling::Mean);
    let by_mean = m.embed(&["hello world"]).unwrap();
    assert!(cos(&v, &by_mean) < 0.99, "CLS pooled like the mean");
}

#[test]
fn bad_inputs_get_typed_errors() {
    let rt = runtime_lib();
    let missing = Embedder::open(
        std::path::Path::new("/nonexistent/model"),
        &EmbedderOptions::new(rt.clone()),
    );
    assert_eq!(missing.err().unwrap().code, Code::Model);

    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("tokenizer.json"), "{}").unwrap();
    let no_onnx = Embedder::open(empty.path(), &EmbedderOptions::new(rt.clone()));
    let err = no_onnx.err().unwrap();
    assert_eq!(err.code, Code::Model);
    assert!(err.message.contains("model.onnx"), "{}", err.message);

    let mut o = EmbedderOptions::new(rt.clone());
    o.batch_size = 0;
    assert_eq!(
        Embedder::open(&model_dir(), &o).err().unwrap().code,
        Code::InvalidArgument
    );

    let other_rt = Embedder::open(
        &model_dir(),
        &EmbedderOptions::new("/nonexistent/libonnxruntime.so"),
    );
    assert_eq!(other_rt.err().unwrap().code, Code::Runtime);
}

#[test]
fn unavailable_provider_fails_or_falls_back_as_asked() {
    let gpu = if cfg!(target_os = "macos") {
        Provider::CoreMl
    } else {
        Provider::Cuda
    };
    let mut o = EmbedderOptions::new(runtime_lib());
    o.providers = vec![gpu];
    o.fallback = false;
    match Embedder::open(&model_dir(), &o) {
        // A machine with the provider's libraries (and a device) runs it.
        Ok(e) => assert_eq!(e.provider(), gpu),
        Err(e) => {
            assert_eq!(e.code, Code::Provider);
            assert!(e.message.contains(gpu.as_str()), "{}", e.message);
            o.fallback = true;
            let e = Embedder::open(&model_dir(), &o).unwrap();
            assert_eq!(e.provider(), Provider::Cpu);
            assert_eq!(e.attempts().len(), 2);
            assert!(
                e.attempts()[0].1.is_some(),
                "the reason the first provider failed is kept"
            );
        }
    }
}

#[test]
fn sessions_and_threads_are_bounded_by_the_machine() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_kind = cores.max(4);
    let refused = |sessions: usize, threads: Option<usize>| {
        let mut o = EmbedderOptions::new(runtime_lib());
        o.sessions = sessions;
        o.threads = threads;
        let e = Embedder::open(&model_dir(), &o).err().expect("refused");
        assert_eq!(e.code, Code::InvalidArgument, "{e}");
        e.message
    };
    // The case: tens of thousands of threads asked for.
    refused(64, Some(1024));
    assert!(refused(1, Some(per_kind + 1)).contains(&format!("between 1 and {per_kind}")));
    assert!(refused(per_kind.min(64) + 1, None).contains("sessions must be between 1 and"));
    assert!(refused(3, Some(per_kind)).contains(&format!("at most {}", 2 * per_kind)));
}
