//! A GGUF file written the way llama.cpp's converter writes one (tensor names, q/k row
//! permutation, metadata, byte-level BPE vocabulary) loads into the same model as the Hugging
//! Face folder it was made from: same logits, same token ids. The same holds for GPT-NeoX
//! (`gptneox` names, fused q/k/v regrouped as llama.cpp does). A GGUF with a SentencePiece
//! vocabulary, written by gguf-py, tokenizes and computes as transformers reads it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{device, fixture, load, max_abs_diff, tokens, values};
use fidelis_models::gguf::GgufWriter;
use fidelis_models::weights::{HostTensor, SafetensorsSource, WeightSource};
use fidelis_models::{Hooks, Model, ModelError};
use serde::Deserialize;

/// The fixture every test here converts: Llama with grouped-query attention (4 query heads over
/// 2 key/value heads), untied `lm_head`, rope theta 500.
const FIXTURE: &str = "tiny-llama-gqa";

/// F32 GGUF against the F32 safetensors: the same numbers, so only summation order may differ.
const F32_TOLERANCE: f32 = 1e-5;

/// A file under the system temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("fidelis-gguf-model-{}-{n}-{tag}", std::process::id());
        TempFile(std::env::temp_dir().join(name))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = if self.0.is_dir() {
            std::fs::remove_dir_all(&self.0)
        } else {
            std::fs::remove_file(&self.0)
        };
    }
}

#[derive(Deserialize)]
struct Expected {
    prompts: Vec<Prompt>,
}

#[derive(Deserialize)]
struct Prompt {
    text: String,
    ids: Vec<u32>,
    /// transformers' logits, `[pos][vocab]`.
    logits: Vec<Vec<f32>>,
}

/// The prompts of a fixture's expected.json.
fn prompts_of(name: &str) -> Vec<Prompt> {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("fixture");
    serde_json::from_str::<Expected>(&text)
        .expect("expected.json")
        .prompts
}

fn prompts() -> Vec<Prompt> {
    prompts_of(FIXTURE)
}

/// The parts of `config.json` the GGUF metadata is made from.
#[derive(Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    max_position_embeddings: usize,
    rms_norm_eps: f32,
    rope_parameters: RopeParameters,
    bos_token_id: u32,
    eos_token_id: u32,
}

/// `rope_parameters`; the `llama3` fields only where the fixture has that scaling.
#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: f32,
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default)]
    factor: Option<f32>,
    #[serde(default)]
    low_freq_factor: Option<f32>,
    #[serde(default)]
    high_freq_factor: Option<f32>,
    #[serde(default)]
    original_max_position_embeddings: Option<f32>,
}

fn hf_config() -> HfConfig {
    hf_config_of(FIXTURE)
}

fn hf_config_of(name: &str) -> HfConfig {
    let text = std::fs::read_to_string(fixture(name).join("config.json")).expect("config");
    serde_json::from_str(&text).expect("config.json")
}

/// The vocabulary of the fixture's `tokenizer.json` as GGUF arrays: tokens by id, token types
/// (3 = control for added special tokens, 1 = normal) and merges as `"left right"`.
struct Vocabulary {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
}

/// The vocabulary of fixture `name` (all tiny fixtures share one tokenizer).
fn vocabulary(name: &str) -> Vocabulary {
    let text = std::fs::read_to_string(fixture(name).join("tokenizer.json")).expect("tokenizer");
    let json: serde_json::Value = serde_json::from_str(&text).expect("tokenizer.json");
    let model = &json["model"];
    assert_eq!(model["type"], "BPE");
    let vocab = model["vocab"].as_object().expect("vocab");
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in vocab {
        tokens[id.as_u64().expect("id") as usize] = token.clone();
    }
    assert!(
        tokens.iter().all(|t| !t.is_empty()),
        "vocabulary ids are dense"
    );
    let mut types = vec![1; tokens.len()];
    for added in json["added_tokens"].as_array().expect("added_tokens") {
        let id = added["id"].as_u64().expect("id") as usize;
        assert_eq!(tokens[id], added["content"].as_str().expect("content"));
        if added["special"].as_bool() == Some(true) {
            types[id] = 3;
        }
    }
    let merges = model["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(pair) => {
                format!(
                    "{} {}",
                    pair[0].as_str().unwrap(),
                    pair[1].as_str().unwrap()
                )
            }
            other => panic!("unexpected merge {other}"),
        })
        .collect();
    Vocabulary {
        tokens,
        types,
        merges,
    }
}

/// llama.cpp's `permute` of q/k rows: within each head of width `dh`, Hugging Face row
/// `h*dh + half*dh/2 + i` goes to GGUF row `h*dh + 2*i + half`.
fn permute_rows(t: &HostTensor, heads: usize) -> HostTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let dh = rows / heads;
    assert_eq!(heads * dh, rows);
    let mut data = vec![f32::NAN; t.data.len()];
    for h in 0..heads {
        for half in 0..2 {
            for i in 0..dh / 2 {
                let hf = h * dh + half * dh / 2 + i;
                let gguf = h * dh + 2 * i + half;
                data[gguf * cols..(gguf + 1) * cols]
                    .copy_from_slice(&t.data[hf * cols..(hf + 1) * cols]);
            }
        }
    }
    assert!(
        data.iter().all(|v| !v.is_nan()),
        "the permutation covers every row"
    );
    HostTensor {
        shape: t.shape.clone(),
        data,
    }
}

/// How the tensors of the GGUF are stored.
#[derive(Clone, Copy, PartialEq)]
enum Storage {
    F32,
    /// Matrices in F16, norm vectors in F32 (what llama.cpp's converter does for `--outtype f16`).
    F16,
}

/// A GGUF tensor, with the HF tensor it comes from.
struct Mapping {
    gguf: String,
    hf: String,
}

fn tensor_mappings(n_layers: usize) -> Vec<Mapping> {
    let map = |gguf: &str, hf: &str| Mapping {
        gguf: gguf.into(),
        hf: hf.into(),
    };
    let mut out = vec![map("token_embd.weight", "model.embed_tokens.weight")];
    for l in 0..n_layers {
        let p = format!("model.layers.{l}");
        for (gguf, hf) in [
            ("attn_norm", "input_layernorm"),
            ("attn_q", "self_attn.q_proj"),
            ("attn_k", "self_attn.k_proj"),
            ("attn_v", "self_attn.v_proj"),
            ("attn_output", "self_attn.o_proj"),
            ("ffn_norm", "post_attention_layernorm"),
            ("ffn_gate", "mlp.gate_proj"),
            ("ffn_up", "mlp.up_proj"),
            ("ffn_down", "mlp.down_proj"),
        ] {
            out.push(map(
                &format!("blk.{l}.{gguf}.weight"),
                &format!("{p}.{hf}.weight"),
            ));
        }
    }
    out.push(map("output_norm.weight", "model.norm.weight"));
    out.push(map("output.weight", "lm_head.weight"));
    out
}

/// The fixture converted to GGUF as llama.cpp would. `edit` may change a tensor (by GGUF name)
/// after the permutation, to build broken files.
fn convert(storage: Storage, edit: impl Fn(&str, HostTensor) -> HostTensor) -> GgufWriter {
    convert_llama(FIXTURE, storage, edit)
}

/// Llama fixture `name` converted to GGUF as llama.cpp would (tied fixtures have no `output`).
fn convert_llama(
    name: &str,
    storage: Storage,
    edit: impl Fn(&str, HostTensor) -> HostTensor,
) -> GgufWriter {
    let cfg = hf_config_of(name);
    let vocab = vocabulary(name);
    assert_eq!(vocab.tokens.len(), cfg.vocab_size);
    let mut w = GgufWriter::new();
    w.add_string("general.architecture", "llama")
        .add_string("general.name", name)
        .add_u32("llama.block_count", cfg.num_hidden_layers as u32)
        .add_u32("llama.context_length", cfg.max_position_embeddings as u32)
        .add_u32("llama.embedding_length", cfg.hidden_size as u32)
        .add_u32("llama.feed_forward_length", cfg.intermediate_size as u32)
        .add_u32("llama.attention.head_count", cfg.num_attention_heads as u32)
        .add_u32(
            "llama.attention.head_count_kv",
            cfg.num_key_value_heads as u32,
        )
        .add_u32("llama.attention.key_length", cfg.head_dim as u32)
        .add_u32("llama.attention.value_length", cfg.head_dim as u32)
        .add_f32("llama.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
        .add_f32("llama.rope.freq_base", cfg.rope_parameters.rope_theta)
        .add_u32("llama.rope.dimension_count", cfg.head_dim as u32)
        .add_u32("llama.vocab_size", cfg.vocab_size as u32)
        .add_string("tokenizer.ggml.model", "gpt2")
        .add_string("tokenizer.ggml.pre", "gpt-2")
        .add_string_array("tokenizer.ggml.tokens", &vocab.tokens)
        .add_i32_array("tokenizer.ggml.token_type", &vocab.types)
        .add_string_array("tokenizer.ggml.merges", &vocab.merges)
        .add_u32("tokenizer.ggml.bos_token_id", cfg.bos_token_id)
        .add_u32("tokenizer.ggml.eos_token_id", cfg.eos_token_id)
        .add_bool("tokenizer.ggml.add_bos_token", false);
    let src = SafetensorsSource::open_folder(&fixture(name)).expect("fixture weights");
    let mut mappings = tensor_mappings(cfg.num_hidden_layers);
    mappings.retain(|m| src.contains(&m.hf));
    assert_eq!(
        mappings.len(),
        src.names().count(),
        "every HF tensor is converted"
    );
    for Mapping { gguf, hf } in mappings {
        let mut t = src.tensor(&hf).expect("fixture tensor");
        if gguf.ends_with("attn_q.weight") {
            t = permute_rows(&t, cfg.num_attention_heads);
        } else if gguf.ends_with("attn_k.weight") {
            t = permute_rows(&t, cfg.num_key_value_heads);
        }
        let t = edit(&gguf, t);
        if storage == Storage::F16 && t.shape.len() == 2 {
            w.add_tensor_f16(&gguf, &t.shape, &t.data)
                .expect("f16 tensor");
        } else {
            w.add_tensor_f32(&gguf, &t.shape, &t.data)
                .expect("f32 tensor");
        }
    }
    w
}

fn write_gguf(w: &GgufWriter, tag: &str) -> TempFile {
    let file = TempFile::new(&format!("{tag}.gguf"));
    w.write(&file.0).expect("write gguf");
    file
}

fn load_path(path: &Path) -> Model {
    Model::load(path, &device()).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

fn logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    values(
        model
            .transformer
            .forward(tokens(ids, &device()), &mut Hooks::new())
            .unwrap(),
    )
}

/// The largest |Δlogit| between two models over the fixture prompts, after checking that their
/// tokenizers agree with each other and with transformers on every prompt.
fn compare(gguf: &Model, hf: &Model) -> f32 {
    compare_on(gguf, hf, &prompts())
}

/// [`compare`] over the given prompts.
fn compare_on(gguf: &Model, hf: &Model, prompts: &[Prompt]) -> f32 {
    let mut worst = 0.0f32;
    for prompt in prompts {
        let hf_ids = hf.tokenizer.encode(&prompt.text).unwrap();
        let gguf_ids = gguf.tokenizer.encode(&prompt.text).unwrap();
        assert_eq!(hf_ids, prompt.ids, "HF tokenizer on {:?}", prompt.text);
        assert_eq!(gguf_ids, prompt.ids, "GGUF tokenizer on {:?}", prompt.text);
        assert_eq!(gguf.tokenizer.decode(&gguf_ids).unwrap(), prompt.text);
        worst = worst.max(max_abs_diff(
            &logits(gguf, &prompt.ids),
            &logits(hf, &prompt.ids),
        ));
    }
    worst
}

/// The settings both loaders must agree on.
fn assert_same_config(gguf: &Model, hf: &Model) {
    let (g, h) = (gguf.config(), hf.config());
    assert_eq!(g.n_layers, h.n_layers);
    assert_eq!(g.d_model, h.d_model);
    assert_eq!(
        (g.n_heads, g.n_kv_heads, g.d_head),
        (h.n_heads, h.n_kv_heads, h.d_head)
    );
    assert_eq!(g.d_mlp, h.d_mlp);
    assert_eq!(g.d_vocab, h.d_vocab);
    assert_eq!(g.n_ctx, h.n_ctx);
    assert_eq!(g.norm_eps as f32, h.norm_eps as f32);
    assert_eq!(
        g.positional, h.positional,
        "rope theta comes from llama.rope.freq_base"
    );
    assert_eq!(g.tied_embeddings, h.tied_embeddings);
    assert_eq!(
        (g.bos_token_id, g.eos_token_id),
        (h.bos_token_id, h.eos_token_id)
    );
    assert_eq!(
        gguf.transformer.parameter_count(),
        hf.transformer.parameter_count()
    );
    assert_eq!(gguf.tokenizer.vocab_size(), hf.tokenizer.vocab_size());
    assert_eq!(
        (gguf.tokenizer.bos_id(), gguf.tokenizer.eos_id()),
        (Some(0), Some(0))
    );
}

#[test]
fn f32_gguf_equals_the_hf_folder() {
    let hf = load(FIXTURE);
    let file = write_gguf(&convert(Storage::F32, |_, t| t), "f32");
    let gguf = load_path(&file.0);
    assert_same_config(&gguf, &hf);
    let diff = compare(&gguf, &hf);
    assert!(
        diff < F32_TOLERANCE,
        "F32 GGUF vs HF: max |Δlogit| = {diff}"
    );
    // The config alone, as `inspect --plan` reads it: the loaded one but for the special
    // tokens, which come from the vocabulary.
    let cfg = fidelis_models::model::config_at(&file.0).unwrap();
    let loaded = fidelis_models::TransformerConfig {
        bos_token_id: None,
        eos_token_id: None,
        ..gguf.config().clone()
    };
    assert_eq!(cfg, loaded);
    let folder = fidelis_models::model::config_at(&fixture(FIXTURE)).unwrap();
    assert_eq!(&folder, hf.config());
}

#[test]
fn f16_gguf_equals_the_hf_folder_with_f16_weights() {
    // Exact comparison: a HF folder holding the same f16-rounded weights (stored as f32) must give
    // the GGUF's logits to f32 precision, so F16 decoding and the permutation lose nothing.
    let rounded = TempFile::new("f16-rounded-hf");
    std::fs::create_dir_all(&rounded.0).expect("temp dir");
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture(FIXTURE).join(file), rounded.0.join(file)).expect("copy");
    }
    let src = SafetensorsSource::open_folder(&fixture(FIXTURE)).expect("fixture weights");
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in src.names() {
        let t = src.tensor(name).unwrap();
        let round = t.shape.len() == 2;
        let bytes = t
            .data
            .iter()
            .map(|&v| {
                if round {
                    half::f16::from_f32(v).to_f32()
                } else {
                    v
                }
            })
            .flat_map(f32::to_le_bytes)
            .collect();
        owned.push((name.to_string(), t.shape, bytes));
    }
    let views = owned.iter().map(|(name, shape, bytes)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .expect("view");
        (name.clone(), view)
    });
    let st = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(rounded.0.join("model.safetensors"), st).expect("write safetensors");
    let hf_rounded = load_path(&rounded.0);

    let f16 = convert(Storage::F16, |_, t| t);
    let f32_len = convert(Storage::F32, |_, t| t).to_bytes().unwrap().len();
    assert!(
        f16.to_bytes().unwrap().len() < f32_len,
        "the F16 file is smaller"
    );
    let file = write_gguf(&f16, "f16");
    let gguf = load_path(&file.0);
    assert_same_config(&gguf, &hf_rounded);
    let diff = compare(&gguf, &hf_rounded);
    assert!(
        diff < F32_TOLERANCE,
        "F16 GGUF vs HF with f16-rounded weights: max |Δlogit| = {diff}"
    );

    // Against the original f32 weights. Rounding to f16 changes each weight by at most
    // u = 2^-11 ≈ 4.9e-4 relative. The logits go through 16 rounded matrices (7 per block, the
    // embedding and the unembedding); if each added a relative error u coherently, a logit of 4.7
    // (the fixture's largest) would move by 4.7 · 16u ≈ 3.7e-2. Independent rounding errors
    // mostly cancel, and the measured change is 8.4e-3. 2e-2 sits between the two, while a wrong
    // permutation or a swapped tensor moves the logits by whole units (see the next test).
    let hf = load(FIXTURE);
    let diff = compare(&gguf, &hf);
    assert!(diff < 2e-2, "F16 GGUF vs HF f32: max |Δlogit| = {diff}");
    assert!(diff > 0.0, "F16 rounding changes something");
}

#[test]
fn unpermuted_q_and_k_change_the_logits() {
    // Control for the tests above: a GGUF whose q/k rows were NOT permuted loads, but the
    // loader's un-permutation then scrambles the rotary pairs and the logits move.
    let cfg = hf_config();
    let undo = |t: HostTensor, heads: usize| {
        // The inverse of permute_rows: GGUF row h*dh + 2i + half back to h*dh + half*dh/2 + i.
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let dh = rows / heads;
        let mut data = vec![0.0; t.data.len()];
        for h in 0..heads {
            for half in 0..2 {
                for i in 0..dh / 2 {
                    let (hf, gguf) = (h * dh + half * dh / 2 + i, h * dh + 2 * i + half);
                    data[hf * cols..(hf + 1) * cols]
                        .copy_from_slice(&t.data[gguf * cols..(gguf + 1) * cols]);
                }
            }
        }
        HostTensor {
            shape: t.shape,
            data,
        }
    };
    let w = convert(Storage::F32, |name, t| {
        if name.ends_with("attn_q.weight") {
            undo(t, cfg.num_attention_heads)
        } else if name.ends_with("attn_k.weight") {
            undo(t, cfg.num_key_value_heads)
        } else {
            t
        }
    });
    let file = write_gguf(&w, "unpermuted");
    let gguf = load_path(&file.0);
    let diff = compare(&gguf, &load(FIXTURE));
    assert!(
        diff > 0.5,
        "unpermuted q/k should change the logits, max |Δlogit| = {diff}"
    );
}

#[test]
fn attn_q_of_the_wrong_shape() {
    // Layer 1's attn_q with 24 output rows (3 heads of 8) instead of 32.
    let w = convert(Storage::F32, |name, t| {
        if name == "blk.1.attn_q.weight" {
            let cols = t.shape[1];
            HostTensor {
                shape: vec![24, cols],
                data: t.data[..24 * cols].to_vec(),
            }
        } else {
            t
        }
    });
    let file = write_gguf(&w, "bad-attn-q");
    let err = Model::load(&file.0, &device()).expect_err("a malformed attn_q must not load");
    match &err {
        ModelError::ShapeMismatch {
            tensor,
            expected,
            found,
        } => {
            assert!(
                tensor.contains("layers.1") && tensor.contains("q_proj"),
                "{tensor}"
            );
            assert_eq!(expected, &[32, 32]);
            assert_eq!(found, &[24, 32]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("[32, 32]") && msg.contains("[24, 32]"),
        "{msg}"
    );
}

#[test]
fn gguf_rope_scaling_is_read_or_refused_by_name() {
    // Linear scaling from llama.cpp's metadata changes the positions, hence the logits.
    let mut w = convert(Storage::F32, |_, t| t);
    w.add_string("llama.rope.scaling.type", "linear")
        .add_f32("llama.rope.scaling.factor", 4.0);
    let file = write_gguf(&w, "rope-linear");
    let scaled = load_path(&file.0);
    assert!(
        matches!(
            scaled.config().positional,
            fidelis_models::config::Positional::Rotary {
                scaling: fidelis_models::RopeScaling::Linear { factor },
                ..
            } if factor == 4.0
        ),
        "{:?}",
        scaled.config().positional
    );
    let plain = load_path(&fixture(FIXTURE));
    assert!(
        compare(&scaled, &plain) > 1e-3,
        "linear scaling changes the logits"
    );
    // Per-frequency factors (llama.cpp's `rope_freqs`) divide the frequencies, on top of any
    // linear scaling: factors [1, 1, 2, 8] with linear 4 are the factors [4, 4, 8, 32].
    let factors = [1.0, 1.0, 2.0, 8.0];
    let mut w = convert(Storage::F32, |_, t| t);
    w.add_tensor_f32("rope_freqs.weight", &[4], &factors)
        .expect("f32 tensor");
    let file = write_gguf(&w, "rope-freqs");
    let with_factors = load_path(&file.0);
    assert!(
        compare(&with_factors, &plain) > 1e-3,
        "rope factors change the logits"
    );
    w.add_string("llama.rope.scaling.type", "linear")
        .add_f32("llama.rope.scaling.factor", 4.0);
    let file = write_gguf(&w, "rope-freqs-linear");
    let both = load_path(&file.0);
    let fidelis_models::config::Positional::Rotary { scaling, .. } = both.config().positional
    else {
        panic!("rotary")
    };
    assert_eq!(scaling.apply(&[1.0; 4]), [0.25, 0.25, 0.125, 1.0 / 32.0]);
    // An unknown scaling type names itself and what is supported.
    let mut w = convert(Storage::F32, |_, t| t);
    w.add_string("llama.rope.scaling.type", "yarn");
    let file = write_gguf(&w, "rope-yarn");
    let err = Model::load(&file.0, &device()).expect_err("yarn is not supported");
    let msg = err.to_string();
    assert!(msg.contains("yarn") && msg.contains("llama3"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// A SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`): the tiny-llama-spm fixture is a
// GGUF written by `make_fixtures.py` with gguf-py, and its expected.json holds what transformers'
// own GGUF loading makes of it (AutoTokenizer / AutoModelForCausalLM with `gguf_file`).
// ---------------------------------------------------------------------------------------------

/// The SentencePiece fixture folder and its GGUF.
const SPM_FIXTURE: &str = "tiny-llama-spm";

/// The fixture's logits are transformers' printed to 7 significant digits (as parity.rs).
const SPM_LOGIT_TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct SpmExpected {
    vocab_size: usize,
    texts: Vec<SpmText>,
    prompts: Vec<SpmPrompt>,
    without_prefix_space: Vec<SpmPlain>,
}

/// One text as transformers tokenizes it.
#[derive(Deserialize)]
struct SpmText {
    text: String,
    ids: Vec<u32>,
    tokens: Vec<String>,
    decoded: String,
    ids_with_bos: Vec<u32>,
}

#[derive(Deserialize)]
struct SpmPlain {
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

#[derive(Deserialize)]
struct SpmPrompt {
    ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn spm_expected() -> SpmExpected {
    let path = fixture(SPM_FIXTURE).join("expected.json");
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_json::from_str(&text).expect("expected.json")
}

#[test]
fn sentencepiece_gguf_tokenizes_as_transformers() {
    let exp = spm_expected();
    let model = load_path(&fixture(SPM_FIXTURE).join("model.gguf"));
    let tok = &model.tokenizer;
    assert_eq!(tok.vocab_size(), exp.vocab_size);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    for case in &exp.texts {
        let enc = tok.encode_full(&case.text).unwrap();
        assert_eq!(enc.ids, case.ids, "ids of {:?}", case.text);
        assert_eq!(enc.tokens, case.tokens, "pieces of {:?}", case.text);
        assert_eq!(
            tok.decode(&enc.ids).unwrap(),
            case.decoded,
            "{:?}",
            case.text
        );
        // llama.cpp's add_bos default for SentencePiece, which transformers follows.
        assert_eq!(
            tok.encode_prompt(&case.text, true).unwrap(),
            case.ids_with_bos
        );
    }
}

/// One text of the Gemma fixture as transformers' `gemma_tokenizer` builds the vocabulary.
#[derive(Deserialize)]
struct GemmaSpmText {
    text: String,
    ids: Vec<u32>,
    tokens: Vec<String>,
    decoded: String,
}

#[derive(Deserialize)]
struct GemmaSpmExpected {
    vocab_size: usize,
    whitespace_pieces: Vec<String>,
    texts: Vec<GemmaSpmText>,
}

/// A `gemma2` GGUF's SentencePiece vocabulary (whitespace-only pieces stored as spaces, no
/// prefix space, merges by vocabulary position) against transformers' own builder.
#[test]
fn gemma_sentencepiece_gguf_tokenizes_as_transformers() {
    let dir = fixture("tiny-gemma-spm");
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("fixture");
    let exp: GemmaSpmExpected = serde_json::from_str(&text).expect("expected.json");
    assert!(!exp.whitespace_pieces.is_empty());
    let tok = fidelis_models::gguf::GgufFile::open(&dir.join("tokenizer.gguf"))
        .and_then(|f| f.tokenizer())
        .expect("tokenizer");
    assert_eq!(tok.get_vocab_size(true), exp.vocab_size);
    for case in &exp.texts {
        let enc = tok.encode(case.text.as_str(), false).unwrap();
        assert_eq!(enc.get_ids(), case.ids, "ids of {:?}", case.text);
        assert_eq!(enc.get_tokens(), case.tokens, "pieces of {:?}", case.text);
        assert_eq!(
            tok.decode(enc.get_ids(), false).unwrap(),
            case.decoded,
            "{:?}",
            case.text
        );
    }
}

#[test]
fn sentencepiece_gguf_without_prefix_space() {
    // The same vocabulary with `tokenizer.ggml.add_space_prefix = false`, against transformers'
    // LlamaTokenizer built from the file with add_prefix_space=False.
    let mut w = copy_without(&fixture(SPM_FIXTURE).join("model.gguf"), &[]);
    w.add_bool("tokenizer.ggml.add_space_prefix", false);
    let copy = write_gguf(&w, "spm-no-prefix");
    let tok = fidelis_models::gguf::GgufFile::open(&copy.0)
        .and_then(|f| f.tokenizer())
        .expect("tokenizer");
    for case in spm_expected().without_prefix_space {
        let ids = tok
            .encode(case.text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids, case.ids, "ids of {:?}", case.text);
        assert_eq!(tok.decode(&ids, false).unwrap(), case.decoded);
    }
}

#[test]
fn sentencepiece_gguf_model_equals_transformers() {
    let model = load_path(&fixture(SPM_FIXTURE).join("model.gguf"));
    let mut worst = 0.0f32;
    for prompt in spm_expected().prompts {
        let want: Vec<f32> = prompt.logits.into_iter().flatten().collect();
        worst = worst.max(max_abs_diff(&logits(&model, &prompt.ids), &want));
    }
    assert!(
        worst < SPM_LOGIT_TOLERANCE,
        "GGUF (SentencePiece) vs transformers: max |Δlogit| = {worst}"
    );
}

// ---------------------------------------------------------------------------------------------
// GPT-NeoX (`general.architecture = "gptneox"`): tiny-pythia converted as llama.cpp's
// `GPTNeoXModel` converter does (tensor names, fused q/k/v regrouped, metadata keys).
// ---------------------------------------------------------------------------------------------

/// The GPT-NeoX fixture: parallel attention + MLP, rotary on a quarter of each head, untied
/// `embed_out`.
const PYTHIA: &str = "tiny-pythia";

/// The parts of tiny-pythia's `config.json` the GGUF metadata is made from.
#[derive(Deserialize)]
struct PythiaConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    layer_norm_eps: f32,
    use_parallel_residual: bool,
    rope_parameters: PythiaRope,
    bos_token_id: u32,
    eos_token_id: u32,
}

#[derive(Deserialize)]
struct PythiaRope {
    partial_rotary_factor: f64,
}

fn pythia_config() -> PythiaConfig {
    let text = std::fs::read_to_string(fixture(PYTHIA).join("config.json")).expect("config");
    serde_json::from_str(&text).expect("config.json")
}

/// llama.cpp's regrouping of the fused q/k/v projection (`GPTNeoXModel.modify_tensors`:
/// reshape to `[heads, 3, dh, ...]`, then q, k and v of all heads one after the other): Hugging
/// Face row `(3h + j)·dh + i` goes to GGUF row `j·d + h·dh + i`.
fn llama_cpp_qkv(t: &HostTensor, heads: usize) -> HostTensor {
    let rows = t.shape[0];
    let cols = t.data.len() / rows;
    let (d, dh) = (rows / 3, rows / 3 / heads);
    let mut data = vec![f32::NAN; t.data.len()];
    for h in 0..heads {
        for j in 0..3 {
            for i in 0..dh {
                let (hf, gguf) = ((3 * h + j) * dh + i, j * d + h * dh + i);
                data[gguf * cols..(gguf + 1) * cols]
                    .copy_from_slice(&t.data[hf * cols..(hf + 1) * cols]);
            }
        }
    }
    assert!(data.iter().all(|v| !v.is_nan()), "every row is placed");
    HostTensor {
        shape: t.shape.clone(),
        data,
    }
}

/// tiny-pythia's tensors: GGUF name (gguf-py's `TensorNameMap` for `gptneox`) and HF name.
fn pythia_mappings(n_layers: usize) -> Vec<Mapping> {
    let map = |gguf: String, hf: String| Mapping { gguf, hf };
    let mut out = vec![map(
        "token_embd.weight".into(),
        "gpt_neox.embed_in.weight".into(),
    )];
    for l in 0..n_layers {
        for (gguf, hf) in [
            ("attn_norm", "input_layernorm"),
            ("attn_qkv", "attention.query_key_value"),
            ("attn_output", "attention.dense"),
            ("ffn_norm", "post_attention_layernorm"),
            ("ffn_up", "mlp.dense_h_to_4h"),
            ("ffn_down", "mlp.dense_4h_to_h"),
        ] {
            for kind in ["weight", "bias"] {
                out.push(map(
                    format!("blk.{l}.{gguf}.{kind}"),
                    format!("gpt_neox.layers.{l}.{hf}.{kind}"),
                ));
            }
        }
    }
    for kind in ["weight", "bias"] {
        out.push(map(
            format!("output_norm.{kind}"),
            format!("gpt_neox.final_layer_norm.{kind}"),
        ));
    }
    out.push(map("output.weight".into(), "embed_out.weight".into()));
    out
}

/// tiny-pythia converted to an F32 `gptneox` GGUF as llama.cpp would; with `regroup_qkv` false
/// the fused q/k/v stays in Hugging Face's per-head layout (a broken file, for the control).
fn convert_pythia(regroup_qkv: bool) -> GgufWriter {
    let cfg = pythia_config();
    let vocab = vocabulary(PYTHIA);
    assert_eq!(vocab.tokens.len(), cfg.vocab_size);
    let d_head = cfg.hidden_size / cfg.num_attention_heads;
    // convert_hf_to_gguf.py: int(rotary_pct * head width).
    let rotary_dim = (cfg.rope_parameters.partial_rotary_factor * d_head as f64) as u32;
    let mut w = GgufWriter::new();
    w.add_string("general.architecture", "gptneox")
        .add_string("general.name", PYTHIA)
        .add_u32("gptneox.context_length", cfg.max_position_embeddings as u32)
        .add_u32("gptneox.embedding_length", cfg.hidden_size as u32)
        .add_u32("gptneox.block_count", cfg.num_hidden_layers as u32)
        .add_u32("gptneox.feed_forward_length", cfg.intermediate_size as u32)
        .add_u32("gptneox.rope.dimension_count", rotary_dim)
        .add_u32(
            "gptneox.attention.head_count",
            cfg.num_attention_heads as u32,
        )
        .add_bool("gptneox.use_parallel_residual", cfg.use_parallel_residual)
        .add_f32("gptneox.attention.layer_norm_epsilon", cfg.layer_norm_eps)
        .add_string("tokenizer.ggml.model", "gpt2")
        .add_string("tokenizer.ggml.pre", "gpt-2")
        .add_string_array("tokenizer.ggml.tokens", &vocab.tokens)
        .add_i32_array("tokenizer.ggml.token_type", &vocab.types)
        .add_string_array("tokenizer.ggml.merges", &vocab.merges)
        .add_u32("tokenizer.ggml.bos_token_id", cfg.bos_token_id)
        .add_u32("tokenizer.ggml.eos_token_id", cfg.eos_token_id);
    let src = SafetensorsSource::open_folder(&fixture(PYTHIA)).expect("fixture weights");
    let mappings = pythia_mappings(cfg.num_hidden_layers);
    assert_eq!(
        mappings.len(),
        src.names().count(),
        "every HF tensor is converted"
    );
    for Mapping { gguf, hf } in mappings {
        let mut t = src.tensor(&hf).expect("fixture tensor");
        if regroup_qkv && gguf.contains("attn_qkv") {
            t = llama_cpp_qkv(&t, cfg.num_attention_heads);
        }
        w.add_tensor_f32(&gguf, &t.shape, &t.data)
            .expect("f32 tensor");
    }
    w
}

#[test]
fn gpt_neox_gguf_equals_the_hf_folder_and_transformers() {
    let hf = load(PYTHIA);
    let file = write_gguf(&convert_pythia(true), "gptneox");
    let gguf = load_path(&file.0);
    assert_same_config(&gguf, &hf);
    assert!(gguf.config().parallel_attn_mlp);
    let prompts = prompts_of(PYTHIA);
    let diff = compare_on(&gguf, &hf, &prompts);
    assert!(
        diff < F32_TOLERANCE,
        "gptneox GGUF vs HF folder: max |Δlogit| = {diff}"
    );
    // And against transformers' own numbers (printed to 7 digits, as parity.rs).
    let mut worst = 0.0f32;
    for prompt in &prompts {
        let want: Vec<f32> = prompt.logits.iter().flatten().copied().collect();
        worst = worst.max(max_abs_diff(&logits(&gguf, &prompt.ids), &want));
    }
    assert!(
        worst < SPM_LOGIT_TOLERANCE,
        "gptneox GGUF vs transformers: max |Δlogit| = {worst}"
    );
}

#[test]
fn gpt_neox_qkv_in_the_hf_layout_changes_the_logits() {
    // Control: a file whose fused q/k/v was not regrouped loads (same shapes), but the loader's
    // regrouping then mixes heads and parts, and the logits move.
    let file = write_gguf(&convert_pythia(false), "gptneox-hf-qkv");
    let gguf = load_path(&file.0);
    let diff = compare_on(&gguf, &load(PYTHIA), &prompts_of(PYTHIA));
    assert!(
        diff > 0.5,
        "an unregrouped q/k/v should change the logits, max |Δlogit| = {diff}"
    );
}

#[test]
fn gguf_metadata_errors_name_the_problem() {
    let load_err = |w: &GgufWriter, tag: &str| {
        let file = write_gguf(w, tag);
        Model::load(&file.0, &device())
            .expect_err("a broken file must not load")
            .to_string()
    };
    // An unknown architecture names itself and every supported one.
    let mut w = convert_pythia(true);
    w.add_string("general.architecture", "falcon");
    let msg = load_err(&w, "falcon");
    assert!(
        msg.contains("`falcon`")
            && ["llama", "mistral", "qwen2", "qwen3", "gptneox"]
                .iter()
                .all(|a| msg.contains(a)),
        "{msg}"
    );
    // llama.cpp requires the parallel-residual flag; so does Fidelis, rather than guess.
    let complete = write_gguf(&convert_pythia(true), "complete");
    let w = copy_without(&complete.0, &["gptneox.use_parallel_residual"]);
    let msg = load_err(&w, "no-parallel-flag");
    assert!(msg.contains("gptneox.use_parallel_residual"), "{msg}");
    // A rotary width that is odd or wider than a head (8).
    for bad in [3, 10] {
        let mut w = convert_pythia(true);
        w.add_u32("gptneox.rope.dimension_count", bad);
        let msg = load_err(&w, "bad-rotary");
        assert!(msg.contains("gptneox.rope.dimension_count"), "{msg}");
    }
    // A GPT-NeoX without q/k/v biases is not one Fidelis builds.
    let w = copy_without(&complete.0, &["blk.0.attn_qkv.bias", "blk.1.attn_qkv.bias"]);
    let msg = load_err(&w, "no-qkv-bias");
    assert!(msg.contains("attention_bias=false"), "{msg}");
}

/// The GGUF at `path` rewritten without the metadata keys and tensors named in `omit`.
fn copy_without(path: &Path, omit: &[&str]) -> GgufWriter {
    let file = fidelis_models::gguf::GgufFile::open(path).expect("gguf");
    let mut w = GgufWriter::new();
    for (key, value) in file.metadata() {
        if !omit.contains(&key.as_str()) {
            w.add(key, value.clone());
        }
    }
    for info in file.tensors() {
        if !omit.contains(&info.name.as_str()) {
            let (shape, data) = file.tensor_f32(&info.name).expect("tensor");
            w.add_tensor_f32(&info.name, &shape, &data)
                .expect("f32 tensor");
        }
    }
    w
}

// ---------------------------------------------------------------------------------------------
// Llama 3.1's rope scaling as llama.cpp stores it: a `rope_freqs` tensor of per-frequency factors
// (`LlamaModel.generate_extra_tensors` in convert_hf_to_gguf.py), which its rotary kernel divides
// each frequency by. tiny-llama3's factor 8, low 0.25, high 1 and original context 32 put its four
// frequencies (wavelengths 6.3, 63, 628, 6283) in all three bands.
// ---------------------------------------------------------------------------------------------

/// The Llama 3.1 fixture: llama3 rope scaling, tied embeddings.
const LLAMA3: &str = "tiny-llama3";

/// The `rope_freqs` factors llama.cpp's converter computes for a `llama3` rope config, written
/// out here in f32 as its torch code runs: 1 for wavelengths under `old / high`, `factor` over
/// `old / low`, `1 / ((1 − s)/factor + s)` between, with `s = (old/λ − low) / (high − low)`.
/// (The converter reads the original context from the config's top level with a default of
/// 8192, which is what Llama 3.1 and 3.2 have; the fixture's 32 is in `rope_parameters`, and is
/// what the model was run with, so that is the one used here.)
fn llama_cpp_rope_factors(cfg: &HfConfig) -> Vec<f32> {
    let rope = &cfg.rope_parameters;
    assert_eq!(rope.rope_type.as_deref(), Some("llama3"));
    let factor = rope.factor.expect("factor");
    let low = rope.low_freq_factor.expect("low_freq_factor");
    let high = rope.high_freq_factor.expect("high_freq_factor");
    let old = rope
        .original_max_position_embeddings
        .expect("original context");
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    let dim = cfg.head_dim;
    (0..dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / rope.rope_theta.powf(i as f32 / dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// The largest |Δlogit| between a model and transformers' logits in a fixture's JSON.
fn worst_against(model: &Model, prompts: &[Prompt]) -> f32 {
    let mut worst = 0.0f32;
    for prompt in prompts {
        let want: Vec<f32> = prompt.logits.iter().flatten().copied().collect();
        worst = worst.max(max_abs_diff(&logits(model, &prompt.ids), &want));
    }
    worst
}

#[test]
fn llama3_rope_freqs_gguf_equals_the_hf_folder_and_transformers() {
    let cfg = hf_config_of(LLAMA3);
    let factors = llama_cpp_rope_factors(&cfg);
    // One frequency kept, one smoothed, two scaled by the full factor.
    assert_eq!(factors[0], 1.0);
    assert!(factors[1] > 1.0 && factors[1] < 8.0, "{factors:?}");
    assert_eq!(&factors[2..], &[8.0, 8.0]);
    let mut w = convert_llama(LLAMA3, Storage::F32, |_, t| t);
    w.add_tensor_f32("rope_freqs.weight", &[factors.len()], &factors)
        .expect("f32 tensor");
    let file = write_gguf(&w, "llama3-rope-freqs");
    let gguf = load_path(&file.0);
    let hf = load(LLAMA3);
    let prompts = prompts_of(LLAMA3);
    let folder = compare_on(&gguf, &hf, &prompts);
    let transformers = worst_against(&gguf, &prompts);
    eprintln!("llama3 rope_freqs GGUF: vs folder {folder:.2e}, vs transformers {transformers:.2e}");
    assert!(folder < 1e-4, "vs the HF folder: max |Δlogit| = {folder}");
    assert!(
        transformers < 1e-4,
        "vs transformers: max |Δlogit| = {transformers}"
    );
    // The same file without the tensor is a model without the scaling: the control.
    let plain = write_gguf(
        &copy_without(&file.0, &["rope_freqs.weight"]),
        "llama3-no-freqs",
    );
    let unscaled = compare_on(&load_path(&plain.0), &hf, &prompts);
    assert!(unscaled > 1e-3, "without rope_freqs: {unscaled}");
    // `inspect --plan` reads the same config without loading the weights.
    let cfg_only = fidelis_models::model::config_at(&file.0).unwrap();
    assert_eq!(cfg_only.positional, gguf.config().positional);
}

#[test]
fn malformed_rope_freqs_are_errors() {
    let with = |factors: &[f32], tag: &str| {
        let mut w = convert_llama(LLAMA3, Storage::F32, |_, t| t);
        w.add_tensor_f32("rope_freqs.weight", &[factors.len()], factors)
            .expect("f32 tensor");
        let file = write_gguf(&w, tag);
        Model::load(&file.0, &device()).expect_err("a malformed rope_freqs must not load")
    };
    // Three factors for four rotated pairs (head_dim 8).
    match with(&[1.0, 2.0, 8.0], "rope-freqs-short") {
        ModelError::ShapeMismatch {
            tensor,
            expected,
            found,
        } => {
            assert!(tensor.contains("rope_freqs"), "{tensor}");
            assert_eq!((expected, found), (vec![4], vec![3]));
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    for bad in [0.0, -1.0, f32::NAN] {
        let msg = with(&[1.0, 2.0, bad, 8.0], "rope-freqs-bad").to_string();
        assert!(
            msg.contains("rope_freqs") && msg.contains("positive"),
            "{msg}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Gemma 2 (`general.architecture = "gemma2"`): tiny-gemma2 converted as llama.cpp's
// `Gemma2Model` converter does (gguf-py names, `1 + w` norm weights, no q/k permutation, its
// metadata keys, no `output` tensor).
// ---------------------------------------------------------------------------------------------

/// The Gemma 2 fixture: soft caps 5 and 3, sliding window 4 on layer 0, query_pre_attn_scalar 24.
const GEMMA2: &str = "tiny-gemma2";

/// The parts of tiny-gemma2's `config.json` the GGUF metadata is made from.
#[derive(Deserialize)]
struct Gemma2Config {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    max_position_embeddings: usize,
    rms_norm_eps: f32,
    attn_logit_softcapping: f32,
    final_logit_softcapping: f32,
    sliding_window: u32,
    query_pre_attn_scalar: f64,
    bos_token_id: u32,
    eos_token_id: u32,
}

fn gemma2_config() -> Gemma2Config {
    let text = std::fs::read_to_string(fixture(GEMMA2).join("config.json")).expect("config");
    serde_json::from_str(&text).expect("config.json")
}

/// tiny-gemma2's tensors: GGUF name (gguf-py's `TensorNameMap` for `gemma2`) and HF name.
fn gemma2_mappings(n_layers: usize) -> Vec<Mapping> {
    let map = |gguf: String, hf: String| Mapping { gguf, hf };
    let mut out = vec![map(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
    )];
    for l in 0..n_layers {
        for (gguf, hf) in [
            ("attn_norm", "input_layernorm"),
            ("attn_q", "self_attn.q_proj"),
            ("attn_k", "self_attn.k_proj"),
            ("attn_v", "self_attn.v_proj"),
            ("attn_output", "self_attn.o_proj"),
            ("post_attention_norm", "post_attention_layernorm"),
            ("ffn_norm", "pre_feedforward_layernorm"),
            ("ffn_gate", "mlp.gate_proj"),
            ("ffn_up", "mlp.up_proj"),
            ("ffn_down", "mlp.down_proj"),
            ("post_ffw_norm", "post_feedforward_layernorm"),
        ] {
            out.push(map(
                format!("blk.{l}.{gguf}.weight"),
                format!("model.layers.{l}.{hf}.weight"),
            ));
        }
    }
    out.push(map("output_norm.weight".into(), "model.norm.weight".into()));
    out
}

/// tiny-gemma2 as an F32 `gemma2` GGUF, written as `Gemma2Model` in convert_hf_to_gguf.py does:
/// the metadata of its `set_gguf_parameters` (no rope keys: llama.cpp's defaults are Gemma's),
/// and every `*norm.weight` stored as `w + 1` unless `shift_norms` is false (a broken file).
fn convert_gemma2(shift_norms: bool) -> GgufWriter {
    let cfg = gemma2_config();
    let vocab = vocabulary(GEMMA2);
    assert_eq!(vocab.tokens.len(), cfg.vocab_size);
    let key = |k: &str| format!("gemma2.{k}");
    let mut w = GgufWriter::new();
    w.add_string("general.architecture", "gemma2")
        .add_string("general.name", GEMMA2)
        .add_u32(&key("context_length"), cfg.max_position_embeddings as u32)
        .add_u32(&key("embedding_length"), cfg.hidden_size as u32)
        .add_u32(&key("block_count"), cfg.num_hidden_layers as u32)
        .add_u32(&key("feed_forward_length"), cfg.intermediate_size as u32)
        .add_u32(&key("attention.head_count"), cfg.num_attention_heads as u32)
        .add_u32(
            &key("attention.head_count_kv"),
            cfg.num_key_value_heads as u32,
        )
        .add_f32(&key("attention.layer_norm_rms_epsilon"), cfg.rms_norm_eps)
        .add_u32(&key("attention.key_length"), cfg.head_dim as u32)
        .add_u32(&key("attention.value_length"), cfg.head_dim as u32)
        .add_f32(&key("attn_logit_softcapping"), cfg.attn_logit_softcapping)
        .add_f32(&key("final_logit_softcapping"), cfg.final_logit_softcapping)
        .add_u32(&key("attention.sliding_window"), cfg.sliding_window)
        .add_string("tokenizer.ggml.model", "gpt2")
        .add_string("tokenizer.ggml.pre", "gpt-2")
        .add_string_array("tokenizer.ggml.tokens", &vocab.tokens)
        .add_i32_array("tokenizer.ggml.token_type", &vocab.types)
        .add_string_array("tokenizer.ggml.merges", &vocab.merges)
        .add_u32("tokenizer.ggml.bos_token_id", cfg.bos_token_id)
        .add_u32("tokenizer.ggml.eos_token_id", cfg.eos_token_id)
        .add_bool("tokenizer.ggml.add_bos_token", false);
    let src = SafetensorsSource::open_folder(&fixture(GEMMA2)).expect("fixture weights");
    let mappings = gemma2_mappings(cfg.num_hidden_layers);
    assert_eq!(
        mappings.len(),
        src.names().count(),
        "every HF tensor is converted"
    );
    for Mapping { gguf, hf } in mappings {
        let mut t = src.tensor(&hf).expect("fixture tensor");
        if shift_norms && hf.ends_with("norm.weight") {
            t.data.iter_mut().for_each(|v| *v += 1.0);
        }
        w.add_tensor_f32(&gguf, &t.shape, &t.data)
            .expect("f32 tensor");
    }
    w
}

/// A copy of the tiny-gemma2 folder whose config says `query_pre_attn_scalar = head_dim`: the
/// model llama.cpp runs from a `gemma2` GGUF of it (the GGUF cannot say 24).
fn gemma2_folder_at_head_dim_scale() -> TempFile {
    let dir = TempFile::new("gemma2-head-dim-scale");
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    for file in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(fixture(GEMMA2).join(file), dir.0.join(file)).expect("copy");
    }
    let text = std::fs::read_to_string(fixture(GEMMA2).join("config.json")).expect("config");
    let mut config: serde_json::Value = serde_json::from_str(&text).expect("config.json");
    config["query_pre_attn_scalar"] = config["head_dim"].clone();
    std::fs::write(dir.0.join("config.json"), config.to_string()).expect("write config");
    dir
}

#[test]
fn gemma2_gguf_equals_the_hf_folder_and_transformers() {
    let cfg = gemma2_config();
    let file = write_gguf(&convert_gemma2(true), "gemma2");
    let gguf = load_path(&file.0);
    let folder = gemma2_folder_at_head_dim_scale();
    let hf = load_path(&folder.0);
    assert_same_config(&gguf, &hf);
    let c = gguf.config();
    assert_eq!(c.architecture, fidelis_models::Architecture::Gemma2);
    assert_eq!(c.attention_windows, [Some(4), None]);
    assert_eq!((c.attn_softcap, c.final_softcap), (Some(5.0), Some(3.0)));
    assert_eq!(c.query_pre_attn_scalar, Some(cfg.head_dim as f64));
    assert_eq!(c.embed_scale, Some((cfg.hidden_size as f64).sqrt()));
    assert!(c.post_norms && c.tied_embeddings);
    // Same weights, same arithmetic: only the norms' `(w + 1) − 1 + 1` may round.
    let prompts = prompts_of(GEMMA2);
    let diff = compare_on(&gguf, &hf, &prompts);
    // transformers' logits for these weights at llama.cpp's scale (expected_gguf.json).
    let text = std::fs::read_to_string(fixture(GEMMA2).join("expected_gguf.json")).expect("json");
    let reference = serde_json::from_str::<Expected>(&text).expect("expected_gguf.json");
    let transformers = worst_against(&gguf, &reference.prompts);
    eprintln!("gemma2 GGUF: vs folder {diff:.2e}, vs transformers {transformers:.2e}");
    assert!(
        diff < F32_TOLERANCE,
        "vs the HF folder: max |Δlogit| = {diff}"
    );
    assert!(
        transformers < SPM_LOGIT_TOLERANCE,
        "vs transformers: max |Δlogit| = {transformers}"
    );
    // The fixture's own query_pre_attn_scalar (24) is a different model, which no GGUF
    // describes: its logits differ.
    assert_eq!(cfg.query_pre_attn_scalar, 24.0);
    let unscaled = worst_against(&gguf, &prompts);
    assert!(unscaled > 1e-3, "vs the fixture at scalar 24: {unscaled}");
    let cfg_only = fidelis_models::model::config_at(&file.0).unwrap();
    assert_eq!(cfg_only.positional, c.positional);
    assert_eq!(cfg_only.attention_windows, c.attention_windows);
}

#[test]
fn gemma2_norms_without_llama_cpp_shift_change_the_logits() {
    // Control: the loader subtracts llama.cpp's 1 from every norm weight before the builder adds
    // Gemma's; a file whose norms were not shifted loads, but computes something else.
    let file = write_gguf(&convert_gemma2(false), "gemma2-unshifted");
    let diff = compare_on(
        &load_path(&file.0),
        &load_path(&gemma2_folder_at_head_dim_scale().0),
        &prompts_of(GEMMA2),
    );
    assert!(diff > 0.1, "unshifted norms: max |Δlogit| = {diff}");
}

#[test]
fn gemma2_gguf_metadata_as_llama_cpp_reads_it() {
    // Metadata only (config_at reads no weights): llama.cpp's defaults and its 27B rule.
    let config = |layers: u32, extra: &dyn Fn(&mut GgufWriter)| {
        let mut w = GgufWriter::new();
        // 4608 / 32 = 144 wide unless key_length says otherwise.
        w.add_string("general.architecture", "gemma2")
            .add_u32("gemma2.context_length", 8192)
            .add_u32("gemma2.embedding_length", 4608)
            .add_u32("gemma2.block_count", layers)
            .add_u32("gemma2.feed_forward_length", 36864)
            .add_u32("gemma2.attention.head_count", 32)
            .add_u32("gemma2.attention.head_count_kv", 16)
            .add_f32("gemma2.attention.layer_norm_rms_epsilon", 1e-6)
            .add_u32("gemma2.vocab_size", 256000);
        extra(&mut w);
        let file = write_gguf(&w, "gemma2-meta");
        fidelis_models::model::config_at(&file.0)
    };
    // Gemma 2 27B: 46 layers, scores scaled by 1/√(4608 / 32) = 1/√144 (its
    // query_pre_attn_scalar); caps, window and theta at llama.cpp's defaults.
    let key_length = |w: &mut GgufWriter| {
        w.add_u32("gemma2.attention.key_length", 128);
    };
    let cfg = config(46, &key_length).unwrap();
    assert_eq!(cfg.query_pre_attn_scalar, Some(144.0));
    assert_eq!(cfg.d_head, 128);
    assert_eq!(
        (cfg.attn_softcap, cfg.final_softcap),
        (Some(50.0), Some(30.0))
    );
    assert_eq!(cfg.window(0), Some(4096));
    assert_eq!(cfg.window(1), None);
    assert_eq!(cfg.window(44), Some(4096));
    // Any other depth: 1/√head_dim.
    let cfg = config(42, &key_length).unwrap();
    assert_eq!(cfg.query_pre_attn_scalar, Some(128.0));
    // Without key_length the head is d_model / n_heads, as in llama.cpp.
    let cfg = config(42, &|_| {}).unwrap();
    assert_eq!((cfg.d_head, cfg.query_pre_attn_scalar), (144, Some(144.0)));
    // Unequal key and value widths, and a mistyped cap, are named.
    let err = config(42, &|w| {
        w.add_u32("gemma2.attention.value_length", 64);
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("value_length"), "{err}");
    let err = config(42, &|w| {
        w.add_string("gemma2.final_logit_softcapping", "thirty");
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("gemma2.final_logit_softcapping"), "{err}");
}
