//! Forward, and forward + backward with gradient probes at every attention result and every
//! q/k/v/MLP input (what EAP needs), on SmolLM2-135M at batch 8 × 16 tokens, per backend.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use fidelis_benches::{bench_model, devices, token_batch};
use fidelis_models::{Hooks, point};

const BATCH: usize = 8;
const SEQ: usize = 16;

fn eap_probes(n_layers: usize) -> Hooks {
    let mut hooks = Hooks::new();
    for l in 0..n_layers {
        hooks
            .probe(point::result(l))
            .probe(point::q_input(l))
            .probe(point::k_input(l))
            .probe(point::v_input(l))
            .probe(point::mlp_in(l));
    }
    hooks
}

fn model_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("smollm2_b8x16");
    group.sample_size(10);
    for (backend, device) in devices() {
        let (model, what) = bench_model(&device);
        eprintln!("{backend}: {what}");
        let n_layers = model.config().n_layers;
        let tokens = token_batch(BATCH, SEQ, model.config().d_vocab, &device);
        group.bench_function(format!("forward/{backend}"), |b| {
            b.iter(|| {
                let logits = model.forward(tokens.clone(), &mut Hooks::new()).unwrap();
                logits.sum().into_scalar::<f32>()
            })
        });
        group.bench_function(format!("forward_backward_probes/{backend}"), |b| {
            b.iter(|| {
                let mut hooks = eap_probes(n_layers);
                let logits = model.forward(tokens.clone(), &mut hooks).unwrap();
                let grads = logits.slice([0..BATCH, SEQ - 1..SEQ]).mean().backward();
                // Read one gradient back so that lazy backends finish the work.
                let g = hooks.probe_grad(&point::q_input(0), &grads).unwrap();
                g.rank4().unwrap().sum().into_scalar::<f32>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, model_benches);
criterion_main!(benches);
