//! Every bad input gives a `ModelError` that names the problem, never a panic: missing or broken
//! files, unsupported architectures and options, inconsistent shapes, malformed GGUF files and
//! invalid inputs to the forward pass and the tokenizer.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{device, fixture, load, tokens};
use fidelis_models::gguf::GgufWriter;
use fidelis_models::{Hooks, Model, ModelError};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// A fresh directory under the system temp dir, removed (with its contents) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("fidelis-errors-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// A temp dir holding a copy of every file of fixture `name`.
    fn copy_of(name: &str) -> Self {
        let dir = TempDir::new(name);
        for entry in std::fs::read_dir(fixture(name)).expect("fixture dir") {
            let entry = entry.expect("dir entry");
            std::fs::copy(entry.path(), dir.0.join(entry.file_name())).expect("copy fixture");
        }
        dir
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    fn write(&self, file: &str, contents: impl AsRef<[u8]>) {
        std::fs::write(self.path(file), contents).expect("write temp file");
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.path(file)).expect("remove temp file");
    }

    /// Edits `config.json` as JSON.
    fn edit_config(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let text = std::fs::read_to_string(self.path("config.json")).expect("config");
        let mut json: serde_json::Value = serde_json::from_str(&text).expect("config json");
        edit(&mut json);
        self.write(
            "config.json",
            serde_json::to_string_pretty(&json).expect("json"),
        );
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `path`, expecting an error (a panic inside the loader fails the test by itself).
fn load_err(path: &Path) -> ModelError {
    match Model::load(path, &device()) {
        Ok(_) => panic!("{} loaded although it is broken", path.display()),
        Err(e) => e,
    }
}

/// Asserts that the error's message contains every one of `needles`.
fn assert_mentions(err: &ModelError, needles: &[&str]) {
    let msg = err.to_string();
    for needle in needles {
        assert!(
            msg.contains(needle),
            "error message {msg:?} does not mention {needle:?}"
        );
    }
}

#[test]
fn missing_model_path() {
    let path = std::env::temp_dir().join("fidelis-errors-no-such-model");
    let err = load_err(&path);
    assert!(
        matches!(&err, ModelError::MissingFile { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_mentions(
        &err,
        &["missing file", "fidelis-errors-no-such-model", ".gguf"],
    );
}

#[test]
fn folder_without_config() {
    let dir = TempDir::copy_of("tiny-gpt2");
    dir.remove("config.json");
    let err = load_err(&dir.0);
    assert!(
        matches!(&err, ModelError::MissingFile { path, .. } if path.ends_with("config.json")),
        "{err:?}"
    );
    assert_mentions(&err, &["missing file", "config.json", "model config"]);
}

#[test]
fn config_that_is_not_json() {
    let dir = TempDir::copy_of("tiny-gpt2");
    dir.write(
        "config.json",
        "model_type = gpt2 # a TOML file by mistake\n",
    );
    let err = load_err(&dir.0);
    assert!(
        matches!(&err, ModelError::Config { path, .. } if path.ends_with("config.json")),
        "{err:?}"
    );
    assert_mentions(&err, &["malformed config", "config.json", "line 1"]);
}

#[test]
fn config_without_model_type() {
    let dir = TempDir::copy_of("tiny-gpt2");
    dir.edit_config(|c| {
        c.as_object_mut().unwrap().remove("model_type");
    });
    let err = load_err(&dir.0);
    assert!(matches!(&err, ModelError::Config { .. }), "{err:?}");
    assert_mentions(&err, &["config.json", "model_type"]);
}

#[test]
fn unsupported_model_type() {
    let dir = TempDir::copy_of("tiny-gpt2");
    dir.edit_config(|c| c["model_type"] = "mamba".into());
    let err = load_err(&dir.0);
    assert!(
        matches!(&err, ModelError::Unsupported(m) if m.contains("`mamba`")),
        "{err:?}"
    );
    // The message also lists what is supported.
    assert_mentions(&err, &["unsupported model", "mamba", "gpt2", "llama"]);
}

#[test]
fn unsupported_rope_scaling() {
    // transformers 5 writes `rope_parameters`, transformers 4 `rope_scaling`: both are checked.
    for key in ["rope_parameters", "rope_scaling"] {
        let dir = TempDir::copy_of("tiny-llama-gqa");
        dir.edit_config(|c| {
            c[key] = serde_json::json!({"rope_type": "yarn", "rope_theta": 500.0, "factor": 4.0});
        });
        let err = load_err(&dir.0);
        assert!(
            matches!(&err, ModelError::Unsupported(m) if m.contains("yarn")),
            "{key}: {err:?}"
        );
        assert_mentions(&err, &["rope scaling", "yarn"]);
    }
}

#[test]
fn rope_scaling_names_what_is_supported_and_what_is_missing() {
    let dir = TempDir::copy_of("tiny-llama-gqa");
    dir.edit_config(|c| {
        c["rope_scaling"] = serde_json::json!({"rope_type": "dynamic", "factor": 2.0})
    });
    assert_mentions(
        &load_err(&dir.0),
        &["dynamic", "default", "linear", "llama3"],
    );
    dir.edit_config(|c| {
        c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0});
    });
    assert_mentions(
        &load_err(&dir.0),
        &["llama3", "original_max_position_embeddings"],
    );
    dir.edit_config(|c| {
        c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 4.0, "high_freq_factor": 1.0,
            "original_max_position_embeddings": 64});
    });
    assert_mentions(&load_err(&dir.0), &["low_freq_factor < high_freq_factor"]);
    dir.edit_config(|c| c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": -1.0}));
    assert_mentions(&load_err(&dir.0), &["positive factor"]);
}

#[test]
fn missing_tokenizer() {
    let dir = TempDir::copy_of("tiny-gpt2");
    dir.remove("tokenizer.json");
    let err = load_err(&dir.0);
    assert!(
        matches!(&err, ModelError::MissingFile { path, .. } if path.ends_with("tokenizer.json")),
        "{err:?}"
    );
    assert_mentions(&err, &["missing file", "tokenizer.json", "tokenizer"]);
}

#[test]
fn malformed_tokenizer() {
    let dir = TempDir::copy_of("tiny-gpt2");
    dir.write("tokenizer.json", "{\"not\": \"a tokenizer\"}");
    let err = load_err(&dir.0);
    assert!(matches!(&err, ModelError::Tokenizer(_)), "{err:?}");
    assert_mentions(&err, &["tokenizer", "tokenizer.json"]);
}

#[test]
fn missing_weights() {
    let dir = TempDir::copy_of("tiny-gpt2");
    dir.remove("model.safetensors");
    let err = load_err(&dir.0);
    assert!(
        matches!(&err, ModelError::MissingFile { path, .. } if path.ends_with("model.safetensors")),
        "{err:?}"
    );
    assert_mentions(
        &err,
        &["missing file", "model.safetensors", "model weights"],
    );
}

#[test]
fn truncated_weights() {
    let dir = TempDir::copy_of("tiny-gpt2");
    let path = dir.path("model.safetensors");
    let len = std::fs::metadata(&path).expect("weights").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open weights");
    file.set_len(len / 2).expect("truncate");
    drop(file);
    let err = load_err(&dir.0);
    assert!(
        matches!(&err, ModelError::Safetensors { path, .. } if path.ends_with("model.safetensors")),
        "{err:?}"
    );
    assert_mentions(&err, &["invalid safetensors file", "model.safetensors"]);
}

#[test]
fn weights_disagreeing_with_the_config() {
    // n_inner = 64 makes the config expect c_fc [32, 64]; the file holds [32, 128].
    let dir = TempDir::copy_of("tiny-gpt2");
    dir.edit_config(|c| c["n_inner"] = 64.into());
    let err = load_err(&dir.0);
    match &err {
        ModelError::ShapeMismatch {
            tensor,
            expected,
            found,
        } => {
            assert_eq!(tensor, "transformer.h.0.mlp.c_fc.weight");
            assert_eq!(
                (expected.as_slice(), found.as_slice()),
                ([32, 64].as_slice(), [32, 128].as_slice())
            );
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    assert_mentions(
        &err,
        &["transformer.h.0.mlp.c_fc.weight", "[32, 64]", "[32, 128]"],
    );
}

#[test]
fn tensor_of_the_wrong_shape() {
    // Rewrites the Llama checkpoint with layer 1's k_proj cut to 8 rows (one kv head instead of 2).
    let dir = TempDir::copy_of("tiny-llama-gqa");
    let bytes = std::fs::read(dir.path("model.safetensors")).expect("weights");
    let parsed = SafeTensors::deserialize(&bytes).expect("fixture safetensors");
    let bad = "model.layers.1.self_attn.k_proj.weight";
    let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
    for (name, view) in parsed.tensors() {
        let view = if name == bad {
            assert_eq!(view.dtype(), Dtype::F32);
            let cols = view.shape()[1];
            TensorView::new(Dtype::F32, vec![8, cols], &view.data()[..8 * cols * 4]).expect("view")
        } else {
            view
        };
        views.push((name, view));
    }
    let out = safetensors::serialize(views, None).expect("serialize");
    dir.write("model.safetensors", out);
    let err = load_err(&dir.0);
    assert!(
        matches!(&err, ModelError::ShapeMismatch { tensor, expected, found }
            if tensor == bad && *expected == [16, 32] && *found == [8, 32]),
        "{err:?}"
    );
    assert_mentions(&err, &[bad, "[16, 32]", "[8, 32]"]);
}

#[test]
fn tensor_missing_from_the_checkpoint() {
    let dir = TempDir::copy_of("tiny-llama-gqa");
    let bytes = std::fs::read(dir.path("model.safetensors")).expect("weights");
    let parsed = SafeTensors::deserialize(&bytes).expect("fixture safetensors");
    let gone = "model.layers.0.mlp.up_proj.weight";
    let views: Vec<_> = parsed
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != gone)
        .collect();
    dir.write(
        "model.safetensors",
        safetensors::serialize(views, None).expect("serialize"),
    );
    let err = load_err(&dir.0);
    assert!(
        matches!(&err, ModelError::MissingTensor(t) if t == gone),
        "{err:?}"
    );
    assert_mentions(&err, &["missing tensor", gone]);
}

#[test]
fn gguf_with_bad_magic() {
    let dir = TempDir::new("bad-magic");
    let mut w = GgufWriter::new();
    w.add_string("general.architecture", "llama");
    let mut bytes = w.to_bytes().expect("gguf bytes");
    bytes[..4].copy_from_slice(b"GGML");
    dir.write("model.gguf", &bytes);
    let err = load_err(&dir.path("model.gguf"));
    assert!(
        matches!(&err, ModelError::Gguf { path, .. } if path.ends_with("model.gguf")),
        "{err:?}"
    );
    assert_mentions(&err, &["invalid GGUF file", "model.gguf", "bad magic"]);
}

#[test]
fn gguf_that_is_not_gguf_at_all() {
    // A JSON file given where a model is expected: not a directory, so it is read as GGUF.
    let err = load_err(&fixture("tiny-gpt2/config.json"));
    assert!(matches!(&err, ModelError::Gguf { .. }), "{err:?}");
    assert_mentions(&err, &["config.json", "bad magic"]);
}

#[test]
fn gguf_with_unsupported_architecture() {
    let dir = TempDir::new("mamba-gguf");
    let mut w = GgufWriter::new();
    w.add_string("general.architecture", "mamba")
        .add_u32("mamba.block_count", 1)
        .add_u32("mamba.embedding_length", 4);
    w.add_tensor_f32("token_embd.weight", &[2, 4], &[0.0; 8])
        .expect("tensor");
    w.write(&dir.path("mamba.gguf")).expect("write gguf");
    let err = load_err(&dir.path("mamba.gguf"));
    assert!(
        matches!(&err, ModelError::Unsupported(m) if m.contains("`mamba`")),
        "{err:?}"
    );
    assert_mentions(
        &err,
        &["unsupported model", "GGUF architecture", "mamba", "llama"],
    );
}

#[test]
fn gguf_without_architecture() {
    let dir = TempDir::new("no-arch-gguf");
    GgufWriter::new()
        .write(&dir.path("empty.gguf"))
        .expect("write gguf");
    let err = load_err(&dir.path("empty.gguf"));
    assert!(matches!(&err, ModelError::Gguf { .. }), "{err:?}");
    assert_mentions(&err, &["empty.gguf", "general.architecture"]);
}

#[test]
fn sequence_longer_than_the_context() {
    let model = load("tiny-gpt2");
    let n_ctx = model.config().n_ctx;
    assert_eq!(n_ctx, 64);
    let ids = vec![1u32; n_ctx + 1];
    let err = model
        .transformer
        .forward(tokens(&ids, &device()), &mut Hooks::new())
        .unwrap_err();
    assert!(matches!(&err, ModelError::InvalidInput(_)), "{err:?}");
    assert_mentions(&err, &["65 tokens", "context of 64"]);
    // Exactly n_ctx tokens are fine.
    model
        .transformer
        .forward(tokens(&ids[..n_ctx], &device()), &mut Hooks::new())
        .unwrap();
}

#[test]
fn cached_run_past_the_context() {
    let model = load("tiny-llama-gqa");
    let mut cache = fidelis_models::KvCache::new();
    model
        .transformer
        .forward_cached(tokens(&[1; 60], &device()), &mut cache)
        .unwrap();
    let err = model
        .transformer
        .forward_cached(tokens(&[1; 5], &device()), &mut cache)
        .unwrap_err();
    assert!(matches!(&err, ModelError::InvalidInput(_)), "{err:?}");
    assert_mentions(&err, &["65 tokens", "context of 64"]);
    assert_eq!(
        cache.len(),
        60,
        "a rejected step leaves the cache as it was"
    );
}

#[test]
fn token_id_outside_the_vocabulary() {
    let model = load("tiny-gpt2");
    let vocab = model.config().d_vocab as u32;
    let err = model
        .transformer
        .forward(tokens(&[1, vocab, 2], &device()), &mut Hooks::new())
        .unwrap_err();
    assert!(matches!(&err, ModelError::InvalidInput(_)), "{err:?}");
    assert_mentions(&err, &["token id out of range", "0..384", "384"]);
}

#[test]
fn token_id_outside_the_vocabulary_on_every_path() {
    let model = load("tiny-gpt2");
    let t = &model.transformer;
    let vocab = model.config().d_vocab as u32;
    let check = |what: &str, err: ModelError| {
        assert!(
            matches!(&err, ModelError::InvalidInput(_)),
            "{what}: {err:?}"
        );
        assert_mentions(&err, &["token id out of range", "0..384", "384"]);
    };
    // Ids built on the host, checked against the model only when it runs them.
    let batch =
        fidelis_models::Batch::from_sequences(&[vec![1, 2, 3], vec![4, vocab]], 0, &device())
            .unwrap();
    check(
        "forward_batch",
        t.forward_batch(&batch, &mut Hooks::new()).unwrap_err(),
    );
    check(
        "forward_batch_at",
        t.forward_batch_at(&batch, &[2, 1], &mut Hooks::new())
            .unwrap_err(),
    );
    let mut cache = fidelis_models::KvCache::new();
    check(
        "forward_cached",
        t.forward_cached(tokens(&[vocab], &device()), &mut cache)
            .unwrap_err(),
    );
    assert!(cache.is_empty(), "a rejected step leaves the cache empty");
    let greedy = fidelis_models::GenerateConfig::default();
    check(
        "generate",
        t.generate(&[1, vocab + 5], &greedy, |_| {}).unwrap_err(),
    );
}

#[test]
fn empty_token_sequence() {
    let model = load("tiny-gpt2");
    let err = model
        .transformer
        .forward(tokens(&[], &device()), &mut Hooks::new())
        .unwrap_err();
    assert!(matches!(&err, ModelError::InvalidInput(_)), "{err:?}");
    assert_mentions(&err, &["empty"]);
}

#[test]
fn single_token_of_a_multi_token_string() {
    let model = load("tiny-gpt2");
    let text = "When Mary and John";
    let pieces = model.tokenizer.encode_full(text).unwrap().tokens;
    assert!(pieces.len() > 1, "{pieces:?}");
    let err = model.tokenizer.single_token(text).unwrap_err();
    assert!(matches!(&err, ModelError::InvalidInput(_)), "{err:?}");
    assert_mentions(&err, &["is not a single token", "\"When Mary and John\""]);
    for piece in &pieces {
        assert_mentions(&err, &[&format!("{piece:?}")]);
    }
    // An empty string is not a single token either.
    let err = model.tokenizer.single_token("").unwrap_err();
    assert!(matches!(&err, ModelError::InvalidInput(_)), "{err:?}");
    // A real single token works.
    let id = model.tokenizer.single_token(&pieces[0]).unwrap();
    assert_eq!(
        model.tokenizer.token_str(id).as_deref(),
        Some(pieces[0].as_str())
    );
}

#[test]
fn a_progress_that_breaks_cancels_loading_and_ticks_count_every_weight() {
    let mut ticks = Vec::new();
    let mut count = |stage: &str, done: usize, total: usize| {
        ticks.push((stage.to_string(), done, total));
        std::ops::ControlFlow::Continue(())
    };
    let model = Model::load_with_progress(&fixture("tiny-gpt2"), &device(), &mut count).unwrap();
    let (stage, done, total) = ticks.last().cloned().unwrap();
    assert_eq!(stage, fidelis_models::model::LOADING);
    assert_eq!(done, total, "the last tick is the whole model");
    assert!(
        ticks
            .windows(2)
            .all(|w| w[0].1 <= w[1].1 && w[1].1 <= w[1].2)
    );
    assert!(model.config().n_layers > 0);
    let mut stop = |_: &str, _: usize, _: usize| std::ops::ControlFlow::Break(());
    let err = Model::load_with_progress(&fixture("tiny-gpt2"), &device(), &mut stop).unwrap_err();
    assert!(matches!(err, ModelError::Cancelled), "{err}");
}

#[test]
fn sliding_windows_per_layer_are_read_and_bad_ones_named() {
    // Qwen 2 slides from max_window_layers on, only with use_sliding_window.
    let dir = TempDir::copy_of("tiny-qwen2");
    dir.edit_config(|c| {
        c["use_sliding_window"] = true.into();
        c["sliding_window"] = 3.into();
        c["max_window_layers"] = 1.into();
        c.as_object_mut().unwrap().remove("layer_types");
    });
    let model = Model::load(&dir.0, &device()).unwrap();
    assert_eq!(model.config().attention_windows, [None, Some(3)]);
    assert_eq!(
        model.config().n_ctx,
        64,
        "the window no longer caps the context"
    );
    dir.edit_config(|c| c["layer_types"] = serde_json::json!(["sliding_attention", "chunked"]));
    assert_mentions(&load_err(&dir.0), &["chunked", "sliding_attention"]);
    dir.edit_config(|c| {
        c["layer_types"] = serde_json::json!(["full_attention", "full_attention"]);
        c["sliding_window"] = 0.into();
    });
    assert_mentions(&load_err(&dir.0), &["sliding window of 0"]);
}

#[test]
fn absurd_sizes_in_a_config_are_named_not_allocated() {
    for (key, value) in [
        ("n_layer", serde_json::json!(1_000_000_000_000u64)),
        ("n_embd", serde_json::json!(0)),
        ("vocab_size", serde_json::json!(1u64 << 40)),
    ] {
        let dir = TempDir::copy_of("tiny-gpt2");
        dir.edit_config(|c| c[key] = value.clone());
        let err = load_err(&dir.0);
        assert!(matches!(err, ModelError::Unsupported(_)), "{key}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains("must be between"), "{key}: {msg}");
    }
}

// ---- Hostile files (issue 18): every size is checked before it sizes anything. ----

/// Metadata and tensors of a minimal loadable Llama GGUF: 8 tokens, width 8, 2 heads of 4,
/// MLP 16, `layers` blocks; `edit` changes the writer before tensors are added.
fn tiny_llama_gguf(layers: u32, edit: impl FnOnce(&mut GgufWriter)) -> GgufWriter {
    let tokens: Vec<String> = "abcdefgh".chars().map(String::from).collect();
    let mut w = GgufWriter::new();
    w.add_string("general.architecture", "llama")
        .add_u32("llama.block_count", layers)
        .add_u32("llama.context_length", 16)
        .add_u32("llama.embedding_length", 8)
        .add_u32("llama.feed_forward_length", 16)
        .add_u32("llama.attention.head_count", 2)
        .add_u32("llama.attention.head_count_kv", 2)
        .add_f32("llama.attention.layer_norm_rms_epsilon", 1e-6)
        .add_string("tokenizer.ggml.model", "gpt2")
        .add_string("tokenizer.ggml.pre", "gpt-2")
        .add_string_array("tokenizer.ggml.tokens", &tokens)
        .add_i32_array("tokenizer.ggml.token_type", &[1; 8])
        .add_string_array::<&str>("tokenizer.ggml.merges", &[]);
    edit(&mut w);
    let mut tensor = |name: &str, shape: &[usize]| {
        let n: usize = shape.iter().product();
        if let Err(e) = w.add_tensor_f32(name, shape, &vec![0.01; n]) {
            panic!("{name}: {e}");
        }
    };
    tensor("token_embd.weight", &[8, 8]);
    tensor("output_norm.weight", &[8]);
    for l in 0..2u32.min(layers) {
        for (part, shape) in [
            ("attn_norm", &[8][..]),
            ("ffn_norm", &[8]),
            ("attn_q", &[8, 8]),
            ("attn_k", &[8, 8]),
            ("attn_v", &[8, 8]),
            ("attn_output", &[8, 8]),
            ("ffn_gate", &[16, 8]),
            ("ffn_up", &[16, 8]),
            ("ffn_down", &[8, 16]),
        ] {
            tensor(&format!("blk.{l}.{part}.weight"), shape);
        }
    }
    w
}

/// Writes `w` to `dir/model.gguf` and loads it, expecting an error.
fn gguf_load_err(dir: &TempDir, w: &GgufWriter) -> ModelError {
    w.write(&dir.path("model.gguf")).expect("write gguf");
    load_err(&dir.path("model.gguf"))
}

#[test]
fn the_tiny_gguf_of_these_tests_loads() {
    let dir = TempDir::new("tiny-gguf");
    tiny_llama_gguf(2, |_| {})
        .write(&dir.path("model.gguf"))
        .expect("write gguf");
    let model = Model::load(&dir.path("model.gguf"), &device()).expect("tiny gguf loads");
    assert_eq!(model.config().n_layers, 2);
}

#[test]
fn gguf_tensor_with_zero_dimensions_is_named() {
    let dir = TempDir::new("zero-dim-gguf");
    // No dimensions at all (a scalar), then a dimension of size 0.
    for shape in [&[][..], &[0, 8]] {
        let w = tiny_llama_gguf(2, |w| {
            w.add_tensor_f32(
                "rope_freqs.weight",
                shape,
                &vec![1.0; shape.iter().product()],
            )
            .expect("tensor");
        });
        let err = gguf_load_err(&dir, &w);
        assert!(
            matches!(&err, ModelError::Gguf { .. }),
            "{shape:?}: {err:?}"
        );
        assert_mentions(&err, &["rope_freqs.weight", "dimension"]);
    }
}

#[test]
fn gguf_with_huge_block_count_or_context_length_is_named_not_allocated() {
    let dir = TempDir::new("huge-gguf");
    for (key, value, needle) in [
        ("llama.block_count", u64::MAX, "n_layers"),
        ("llama.block_count", 1 << 40, "n_layers"),
        ("llama.context_length", 1 << 62, "n_ctx"),
        ("llama.context_length", 1 << 25, "n_ctx"),
    ] {
        let w = tiny_llama_gguf(2, |w| {
            w.add_u64(key, value);
        });
        let err = gguf_load_err(&dir, &w);
        assert!(
            matches!(&err, ModelError::Unsupported(_)),
            "{key}={value}: {err:?}"
        );
        assert_mentions(&err, &[needle]);
    }
    // A block count within the limits but above the blocks in the file.
    let err = gguf_load_err(&dir, &tiny_llama_gguf(3, |_| {}));
    assert!(matches!(&err, ModelError::MissingTensor(_)), "{err:?}");
    assert_mentions(
        &err,
        &["model.layers.2.self_attn.q_proj.weight", "3 layers"],
    );
}

#[test]
fn gguf_metadata_array_longer_than_the_file_is_named() {
    let dir = TempDir::new("long-array-gguf");
    let mut bytes = tiny_llama_gguf(2, |_| {}).to_bytes().expect("bytes");
    // The token_type array: element type i32 (5), then its u64 count, set to 2^40.
    let key = b"tokenizer.ggml.token_type";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("key in file")
        + key.len();
    assert_eq!(bytes[at..at + 4], 9u32.to_le_bytes(), "an array");
    assert_eq!(bytes[at + 4..at + 8], 5u32.to_le_bytes(), "of i32");
    bytes[at + 8..at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    dir.write("model.gguf", &bytes);
    let err = load_err(&dir.path("model.gguf"));
    assert!(matches!(&err, ModelError::Gguf { .. }), "{err:?}");
    assert_mentions(&err, &["token_type", "array length", "remain"]);
}

#[test]
fn huge_n_layer_in_a_config_is_named_not_allocated() {
    for (dir, key, value) in [
        ("tiny-gpt2", "n_layer", serde_json::json!(u64::MAX)),
        (
            "tiny-llama-gqa",
            "num_hidden_layers",
            serde_json::json!(1u64 << 40),
        ),
        (
            "tiny-pythia",
            "num_hidden_layers",
            serde_json::json!(1u64 << 40),
        ),
    ] {
        let dir = TempDir::copy_of(dir);
        dir.edit_config(|c| c[key] = value.clone());
        let err = load_err(&dir.0);
        assert!(matches!(err, ModelError::Unsupported(_)), "{key}: {err:?}");
        assert_mentions(&err, &["between 1 and 4096"]);
    }
    // Within the limit but more layers than the checkpoint holds.
    let dir = TempDir::copy_of("tiny-llama-gqa");
    dir.edit_config(|c| c["num_hidden_layers"] = 1000.into());
    let err = load_err(&dir.0);
    assert!(matches!(err, ModelError::MissingTensor(_)), "{err:?}");
    assert_mentions(&err, &["model.layers.999", "1000 layers"]);
}

#[test]
fn odd_or_zero_head_dim_and_empty_widths_are_named() {
    for (fixture_name, key, value, needle) in [
        ("tiny-llama-gqa", "head_dim", 7, "rotary_dim = 7"),
        ("tiny-llama-gqa", "head_dim", 0, "d_head = 0"),
        ("tiny-llama-gqa", "intermediate_size", 0, "d_mlp = 0"),
        ("tiny-llama-gqa", "hidden_size", 0, "d_model = 0"),
        ("tiny-gpt2", "n_embd", 0, "d_model = 0"),
        ("tiny-gpt2", "n_inner", 0, "d_mlp = 0"),
        ("tiny-pythia", "intermediate_size", 0, "d_mlp = 0"),
    ] {
        let dir = TempDir::copy_of(fixture_name);
        dir.edit_config(|c| c[key] = value.into());
        let err = load_err(&dir.0);
        assert!(
            matches!(err, ModelError::Unsupported(_)),
            "{fixture_name} {key}={value}: {err:?}"
        );
        assert_mentions(&err, &[needle]);
    }
    // A context whose rotary tables `[n_ctx, head_dim]` would exceed the named limit.
    let dir = TempDir::copy_of("tiny-llama-gqa");
    dir.edit_config(|c| {
        c["head_dim"] = 64.into();
        c["max_position_embeddings"] = (1 << 24).into();
    });
    let err = load_err(&dir.0);
    assert!(matches!(err, ModelError::Unsupported(_)), "{err:?}");
    assert_mentions(&err, &["n_ctx = 16777216", "MAX_ROTARY_TABLE_ELEMENTS"]);
}

#[test]
fn shard_paths_outside_the_model_folder_are_refused() {
    for shard in [
        "../outside.safetensors",
        "/etc/passwd",
        "a/../../b.safetensors",
        "",
    ] {
        let dir = TempDir::copy_of("tiny-llama-sharded");
        let index = serde_json::json!({"weight_map": {"model.embed_tokens.weight": shard}});
        dir.write("model.safetensors.index.json", index.to_string());
        let err = load_err(&dir.0);
        assert!(
            matches!(&err, ModelError::Safetensors { path, .. }
                if path.ends_with("model.safetensors.index.json")),
            "{shard}: {err:?}"
        );
        assert_mentions(&err, &["inside the model folder", &format!("{shard:?}")]);
    }
}

#[test]
fn a_large_shard_index_is_deduplicated_quickly() {
    // 200,000 entries over three shards: linear de-duplication takes milliseconds (the
    // quadratic one took minutes at 100,000 distinct names).
    let dir = TempDir::copy_of("tiny-llama-sharded");
    let text = std::fs::read_to_string(dir.path("model.safetensors.index.json")).unwrap();
    let mut index: serde_json::Value = serde_json::from_str(&text).unwrap();
    let shards: Vec<String> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let map = index["weight_map"].as_object_mut().unwrap();
    for i in 0..200_000 {
        map.insert(
            format!("unused.{i}"),
            shards[i % shards.len()].clone().into(),
        );
    }
    dir.write("model.safetensors.index.json", index.to_string());
    let start = std::time::Instant::now();
    let src = fidelis_models::weights::SafetensorsSource::open_folder(&dir.0).expect("opens");
    assert!(src.names().count() > 0);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    // And many distinct shards that do not exist fail on the first, fast.
    let map = index["weight_map"].as_object_mut().unwrap();
    for i in 0..100_000 {
        map.insert(format!("w.{i}"), format!("shard-{i}.safetensors").into());
    }
    dir.write("model.safetensors.index.json", index.to_string());
    let start = std::time::Instant::now();
    let err = load_err(&dir.0);
    assert!(matches!(err, ModelError::MissingFile { .. }), "{err:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn a_tokenizer_json_that_panics_inside_tokenizers_is_a_named_error() {
    let dir = TempDir::copy_of("tiny-gpt2");
    let text = std::fs::read_to_string(dir.path("tokenizer.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    // tokenizers 0.22 `expect`s on a syntax error inside the "decoder" object...
    json["decoder"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": "@@"});
    let broken_decoder = json.to_string().replace("\"@@\"", "tru");
    // ...and slices each merge's right part at the byte length of `continuing_subword_prefix`,
    // which panics past the end of a short token or inside a multi-byte character.
    json["decoder"] = serde_json::Value::Null;
    json["model"]["continuing_subword_prefix"] = "\u{e9}\u{e9}\u{e9}".into();
    let sliced_prefix = json.to_string();
    for (what, contents) in [("decoder", broken_decoder), ("prefix", sliced_prefix)] {
        dir.write("tokenizer.json", contents);
        let err = load_err(&dir.0);
        assert!(matches!(&err, ModelError::Tokenizer(_)), "{what}: {err:?}");
        assert_mentions(&err, &["tokenizer.json", "panicked", "malformed"]);
    }
}
