//! bf16 weights and activations (`--dtype bf16`): the device's float type set once at the start
//! of this test binary (a process of its own, since a device's type is fixed once tensors exist
//! on it), then every tiny architecture's logits against transformers' f32 logits: no further
//! from them than twice as far as transformers' own bf16 run of the same weights lands
//! (`bf16_max_abs_diff` in each fixture's expected.json), and errors for a second type.

mod common;

use burn::tensor::FloatDType;
use common::{fixture, max_abs_diff, tokens, values};
use fidelis_models::precision::{dtype_of, set_dtype};
use fidelis_models::{Dtype, Hooks, Model};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    prompts: Vec<Prompt>,
    bf16_max_abs_diff: f32,
}

#[derive(Deserialize)]
struct Prompt {
    ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

#[test]
fn bf16_models_follow_transformers_f32_logits_within_bf16_precision() {
    let Some(mut device) = bf16_device() else {
        return;
    };
    set_dtype(&mut device, Dtype::Bf16).expect("flex has bf16");
    // Setting the same type again is fine; another one, now that the type is in use, is not.
    set_dtype(&mut device, Dtype::Bf16).unwrap();
    let _ = burn::tensor::Tensor::<1>::zeros([1], &device);
    let err = set_dtype(&mut device, Dtype::F16).unwrap_err().to_string();
    assert!(err.contains("--dtype f16"), "{err}");
    assert_eq!(dtype_of(&device), Dtype::Bf16);
    for name in [
        "tiny-gpt2",
        "tiny-llama-gqa",
        "tiny-qwen2",
        "tiny-llama3",
        "tiny-qwen3",
        "tiny-pythia",
        "tiny-mistral-window",
        "tiny-gemma2",
    ] {
        let model = Model::load(&fixture(name), &device).unwrap();
        assert_eq!(
            model.transformer.device().settings().float_dtype,
            FloatDType::BF16
        );
        let text = std::fs::read_to_string(fixture(name).join("expected.json")).unwrap();
        let exp: Expected = serde_json::from_str(&text).unwrap();
        for prompt in &exp.prompts {
            let logits = model
                .transformer
                .forward(tokens(&prompt.ids, &device), &mut Hooks::new())
                .unwrap();
            assert_eq!(logits.dtype(), burn::tensor::DType::BF16, "{name}");
            let got = values(logits);
            let want: Vec<f32> = prompt.logits.iter().flatten().copied().collect();
            let diff = max_abs_diff(&got, &want);
            let yardstick = exp.bf16_max_abs_diff;
            eprintln!("{name}: bf16 max |Δlogit| {diff} (transformers bf16: {yardstick})");
            assert!(
                diff <= 2.0 * yardstick,
                "{name}: max |Δlogit| {diff}; transformers' bf16 run is off by {yardstick}"
            );
            assert!(diff > 0.0, "{name}: bf16 gave f32's logits exactly");
        }
    }
}

/// The flex device, where bf16 exists; `None` when this build has no flex backend.
fn bf16_device() -> Option<burn::prelude::Device> {
    #[cfg(feature = "flex")]
    return Some(burn::prelude::Device::flex());
    #[cfg(not(feature = "flex"))]
    None
}
