//! Token attribution cost on SmolLM2-135M: saliency, input × gradient, integrated gradients
//! (50 steps, Captum's and Inseq's default) and occlusion, attributing one next-token
//! prediction to a 24-token input, beside the floor they are built from (one forward and one
//! forward + backward of that input).
//!
//! The same file builds against older versions of `fidelis-attribution` (it only uses
//! `attribute_tokens` and `TokenAttributionConfig::new`), so that a before/after comparison is
//! one criterion run of each build.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use burn::tensor::activation::log_softmax;
use criterion::{Criterion, criterion_group, criterion_main};
use fidelis_attribution::token::{
    Target, TargetFunction, TokenAttributionConfig, TokenMethod, attribute_tokens,
};
use fidelis_benches::{bench_model, devices, token_batch};
use fidelis_models::{Hooks, point};

/// Input length: a short prompt plus some generated tokens.
const SEQ: usize = 24;
/// Integrated-gradient steps.
const IG_STEPS: usize = 50;

fn token_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("token_attribution_seq24");
    group.sample_size(10);
    for (backend, device) in devices() {
        let (model, what) = bench_model(&device);
        eprintln!("{backend}: {what}");
        let vocab = model.config().d_vocab;
        let tokens = token_batch(1, SEQ, vocab, &device);
        let ids: Vec<u32> = (0..SEQ).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
        let target = Target::new(TargetFunction::LogProbability, 42);
        group.bench_function(format!("forward/{backend}"), |b| {
            b.iter(|| {
                let logits = model.forward(tokens.clone(), &mut Hooks::new()).unwrap();
                logits.sum().into_scalar::<f32>()
            })
        });
        group.bench_function(format!("forward_backward/{backend}"), |b| {
            b.iter(|| {
                let mut hooks = Hooks::new();
                hooks.probe(point::EMBED);
                let logits = model.forward(tokens.clone(), &mut hooks).unwrap();
                let [_, pos, v] = logits.dims();
                let last = logits.slice([0..1, pos - 1..pos, 0..v]).reshape([1, v]);
                let grads = log_softmax(last, 1).slice([0..1, 42..43]).sum().backward();
                let g = hooks
                    .probe_grad(point::EMBED, &grads)
                    .and_then(|a| a.rank3());
                g.map(|t| t.sum().into_scalar::<f32>())
            })
        });
        for (name, method) in [
            ("saliency", TokenMethod::Saliency),
            ("input_x_gradient", TokenMethod::InputXGradient),
            ("ig50", TokenMethod::IntegratedGradients),
            ("occlusion", TokenMethod::Occlusion),
        ] {
            let mut cfg = TokenAttributionConfig::new(method);
            cfg.ig_steps = IG_STEPS;
            group.bench_function(format!("{name}/{backend}"), |b| {
                b.iter(|| {
                    attribute_tokens(&model, &ids, &target, &cfg)
                        .unwrap()
                        .target_value
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, token_benches);
criterion_main!(benches);
