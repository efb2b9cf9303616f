//! Edge attribution cost on SmolLM2-135M: EAP and EAP-IG (m = 5) over 16 IOI-sized pairs
//! (16 tokens), against the floor they are built from — one forward + backward of the same batch
//! with gradient probes at every reader input (EAP needs one; EAP-IG needs m).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use fidelis_attribution::{EdgeAttribution, Method, attribute_edges_with_progress};
use fidelis_benches::{bench_model, devices, ioi_sized_pairs};
use fidelis_circuit::metric::last_position_logits;
use fidelis_circuit::{BuiltinMetric, Metric, NodeMap, PairBatch, Silent};
use fidelis_graph::{Graph, GraphConfig};
use fidelis_models::{Hooks, point};

const PAIRS: usize = 16;
const SEQ: usize = 16;

fn circuit_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("circuit_ioi16");
    group.sample_size(10);
    for (backend, device) in devices() {
        let (model, what) = bench_model(&device);
        eprintln!("{backend}: {what}");
        let cfg = model.config().clone();
        let pairs = ioi_sized_pairs(PAIRS, SEQ, cfg.d_vocab);
        let batch = PairBatch::new(&model, &pairs).expect("batch");
        let metric = BuiltinMetric::LogitDiff;
        let map = NodeMap::for_config(&cfg).expect("node map");
        group.bench_function(format!("forward_backward_probes/{backend}"), |b| {
            b.iter(|| {
                let mut hooks = Hooks::new();
                map.probe_inputs_from(&mut hooks, 0);
                let logits = model.forward_batch(&batch.clean, &mut hooks).unwrap();
                let last = last_position_logits(logits, &batch.last);
                let grads = metric
                    .per_example(last.clone(), last, &batch.targets)
                    .sum()
                    .backward();
                // Read one gradient back so that lazy backends finish the work.
                let g = hooks
                    .probe_grad(&point::q(0), &grads)
                    .and_then(|a| a.rank4());
                g.map(|t| t.sum().into_scalar::<f32>())
            })
        });
        for (name, method) in [("eap", Method::Eap), ("eap_ig5", Method::EapIgInputs)] {
            let mut opts = EdgeAttribution::new(method);
            opts.batch_size = PAIRS;
            group.bench_function(format!("{name}/{backend}"), |b| {
                b.iter(|| {
                    let mut graph = Graph::new(GraphConfig::new(
                        cfg.n_layers,
                        cfg.n_heads,
                        cfg.parallel_attn_mlp,
                    ));
                    attribute_edges_with_progress(
                        &model,
                        &mut graph,
                        &pairs,
                        &metric,
                        &opts,
                        &mut Silent,
                    )
                    .unwrap()[0]
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, circuit_benches);
criterion_main!(benches);
