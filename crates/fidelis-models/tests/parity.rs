//! Logits of tiny random GPT-2, Llama (GQA), Qwen2 (q/k/v biases, tied), Llama 3 (`llama3` rope
//! scaling), Qwen 3 (per-head q/k norm, head_dim ≠ d_model / heads), GPT-NeoX / Pythia (parallel
//! attention + MLP, partial rotary, fused per-head q/k/v), Mistral (a sliding window shorter than
//! the prompts) and a sharded Llama against Hugging Face transformers
//! (`xtask/fixtures/make_fixtures.py`).

mod common;

use common::{device, fixture, load, max_abs_diff, tokens, values};
use fidelis_models::{Batch, Hooks};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Expected {
    prompts: Vec<Prompt>,
    batch: ExpectedBatch,
}

#[derive(Deserialize)]
struct Prompt {
    text: String,
    ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct ExpectedBatch {
    ids: Vec<Vec<u32>>,
    logits_last: Vec<Vec<f32>>,
}

fn expected(name: &str) -> Expected {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("fixture");
    serde_json::from_str(&text).expect("expected.json")
}

fn check_model(name: &str) {
    let model = load(name);
    let exp = expected(name);
    for prompt in &exp.prompts {
        let ids = model.tokenizer.encode(&prompt.text).unwrap();
        assert_eq!(ids, prompt.ids, "{name}: token ids of {:?}", prompt.text);
        let logits = model
            .transformer
            .forward(tokens(&ids, &device()), &mut Hooks::new())
            .unwrap();
        let got = values(logits);
        let want: Vec<f32> = prompt.logits.iter().flatten().copied().collect();
        let diff = max_abs_diff(&got, &want);
        assert!(
            diff < TOLERANCE,
            "{name} {:?}: max |Δlogit| = {diff}",
            prompt.text
        );
    }
    // A right-padded batch gives each example's unpadded logits at its last real position.
    let batch = Batch::from_sequences(&exp.batch.ids, 0, &device()).unwrap();
    let logits = model
        .transformer
        .forward_batch(&batch, &mut Hooks::new())
        .unwrap();
    let [_, seq, vocab] = logits.dims();
    let all = values(logits);
    for (b, last) in batch.last_positions().into_iter().enumerate() {
        let row = &all[(b * seq + last) * vocab..(b * seq + last + 1) * vocab];
        let diff = max_abs_diff(row, &exp.batch.logits_last[b]);
        assert!(
            diff < TOLERANCE,
            "{name} batch row {b}: max |Δlogit| = {diff}"
        );
    }
}

#[test]
fn gpt2_matches_transformers() {
    check_model("tiny-gpt2");
}

#[test]
fn llama_gqa_matches_transformers() {
    check_model("tiny-llama-gqa");
}

#[test]
fn qwen2_with_qkv_bias_and_tied_embeddings_matches_transformers() {
    check_model("tiny-qwen2");
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    check_model("tiny-llama3");
}

#[test]
fn qwen3_with_qk_norm_and_wide_heads_matches_transformers() {
    check_model("tiny-qwen3");
}

#[test]
fn pythia_parallel_blocks_and_partial_rotary_match_transformers() {
    check_model("tiny-pythia");
}

#[test]
fn mistral_sliding_window_matches_transformers() {
    check_model("tiny-mistral-window");
}

/// Gemma 2: post-norms, `(1 + w)` weights, soft caps, `query_pre_attn_scalar`, alternating
/// sliding and global layers, scaled embeddings.
#[test]
fn gemma2_matches_transformers() {
    check_model("tiny-gemma2");
}

#[test]
fn sharded_safetensors_load_the_same_model() {
    check_model("tiny-llama-sharded");
}
