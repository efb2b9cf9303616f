//! Criterion benchmarks of Fidelis, one bench file per subject, every compiled CPU/GPU backend
//! in each. Run them with `cargo xtask bench`, which prints a table of times and ratios.
//!
//! This crate only hosts shared setup: the devices to compare and the benchmark model
//! (SmolLM2-135M when it has been fetched, otherwise random weights of its shape).

use burn::prelude::*;
use burn::tensor::TensorData;
use fidelis_circuit::PromptPair;
use fidelis_models::llama::LlamaConfig;
use fidelis_models::{Model, Transformer, fetch};

/// Every backend compiled into this build, by name.
#[allow(clippy::vec_init_then_push)]
pub fn devices() -> Vec<(&'static str, Device)> {
    // Which pushes exist depends on the compiled features.
    #[allow(unused_mut)]
    let mut devices: Vec<(&'static str, Device)> = Vec::new();
    #[cfg(feature = "flex")]
    devices.push(("flex", Device::flex()));
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    devices.push(("ndarray", Device::ndarray()));
    #[cfg(feature = "wgpu")]
    devices.push((
        "wgpu",
        Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
    ));
    #[cfg(feature = "cuda")]
    devices.push(("cuda", Device::cuda(0)));
    devices
}

/// SmolLM2-135M's shape (30 layers, d_model 576, 9 heads over 3 kv heads, vocab 49,152).
pub fn smollm2_shape() -> LlamaConfig {
    serde_json::from_value(serde_json::json!({
        "model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
        "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0, "tie_word_embeddings": true
    }))
    .expect("a valid Llama config")
}

/// The benchmark model on `device`: the cached SmolLM2 GGUF, else random weights of its shape.
pub fn bench_model(device: &Device) -> (Transformer, &'static str) {
    if let Some(path) = fetch::cached_smollm2()
        && let Ok(model) = Model::load(&path, device)
    {
        return (model.transformer, "SmolLM2-135M (Q4_1 GGUF, f32 compute)");
    }
    let cfg = smollm2_shape().to_transformer().expect("supported config");
    (
        Transformer::random(cfg, 0, device).expect("random model"),
        "random weights, SmolLM2-135M shape",
    )
}

/// A deterministic `[batch, seq]` batch of token ids below `vocab`.
pub fn token_batch(batch: usize, seq: usize, vocab: usize, device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = (0..batch * seq)
        .map(|i| ((i * 7919 + 13) % vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(ids, [batch, seq]), device)
}

/// `n` deterministic prompt pairs of `seq` tokens below `vocab` (IOI-sized at `seq` = 16): the
/// corrupted prompt differs from the clean one at two positions.
pub fn ioi_sized_pairs(n: usize, seq: usize, vocab: usize) -> Vec<PromptPair> {
    (0..n)
        .map(|i| {
            let clean: Vec<u32> = (0..seq)
                .map(|p| ((i * 7919 + p * 104_729 + 13) % vocab) as u32)
                .collect();
            let mut corrupted = clean.clone();
            for (at, shift) in [(3, 17), (9, 29)] {
                if let Some(t) = corrupted.get_mut(at % seq) {
                    *t = ((clean[at % seq] as usize + shift) % vocab) as u32;
                }
            }
            PromptPair {
                clean,
                corrupted,
                correct: vec![(i * 31 % vocab) as u32],
                incorrect: vec![(i * 37 % vocab + 1) as u32],
            }
        })
        .collect()
}
