//! Encoder-decoders in bf16 (`--dtype bf16`), in a test process of its own since a device's
//! float type is fixed once tensors exist on it: every tiny encoder-decoder's logits against
//! transformers' f32 logits, no further from them than twice as far as transformers' own bf16
//! run of the same weights lands (`bf16_max_abs_diff` in each fixture's expected.json), and
//! bf16 greedy generation running through the decoder cache.

mod common;

use common::{fixture, max_abs_diff, values};
use fidelis_models::precision::set_dtype;
use fidelis_models::{Batch, Dtype, GenerateConfig, Hooks, Seq2SeqModel};
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

#[test]
fn bf16_encoder_decoders_follow_transformers_f32_logits_within_bf16_precision() {
    let Some(mut device) = bf16_device() else {
        return;
    };
    set_dtype(&mut device, Dtype::Bf16).expect("flex has bf16");
    for name in [
        "tiny-marian",
        "tiny-mbart",
        "tiny-m2m100",
        "tiny-t5",
        "tiny-t5-relu",
    ] {
        let model = Seq2SeqModel::load(&fixture(name), &device).expect("load");
        let text = std::fs::read_to_string(fixture(name).join("expected.json")).unwrap();
        let exp: Value = serde_json::from_str(&text).unwrap();
        let single = &exp["single"];
        let pad = model.model.config().pad_token_id;
        let src = Batch::from_sequences(&[ids(&single["source_ids"])], pad, &device).unwrap();
        let tgt = Batch::from_sequences(&[ids(&single["target_ids"])], pad, &device).unwrap();
        let logits = model.model.forward(&src, &tgt, &mut Hooks::new()).unwrap();
        assert_eq!(logits.dtype(), burn::tensor::DType::BF16, "{name}");
        let want: Vec<f32> = single["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter())
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let diff = max_abs_diff(&values(logits), &want);
        let yardstick = exp["bf16_max_abs_diff"].as_f64().unwrap() as f32;
        eprintln!("{name}: bf16 max |Δlogit| {diff} (transformers bf16: {yardstick})");
        assert!(
            diff <= 2.0 * yardstick,
            "{name}: max |Δlogit| {diff}; transformers' bf16 run is off by {yardstick}"
        );
        assert!(diff > 0.0, "{name}: bf16 gave f32's logits exactly");
        let cfg = GenerateConfig {
            max_new_tokens: 4,
            ..GenerateConfig::default()
        };
        let out = model
            .model
            .generate(&ids(&exp["greedy"]["source_ids"]), &cfg, |_| {})
            .expect("bf16 generation");
        assert!(!out.is_empty() && out.len() <= 4, "{name}");
    }
}

/// The flex device, where bf16 exists; `None` when this build has no flex backend.
fn bf16_device() -> Option<burn::prelude::Device> {
    #[cfg(feature = "flex")]
    return Some(burn::prelude::Device::flex());
    #[cfg(not(feature = "flex"))]
    None
}
