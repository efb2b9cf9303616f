//! Edge-ablated runs against independent computations on the tiny fixture models.
#![allow(clippy::needless_range_loop)]

use std::path::PathBuf;

use burn::prelude::*;
use fidelis_circuit::data::synthetic_pairs;
use fidelis_circuit::{Ablation, BuiltinMetric, NodeMeans, PromptPair, Silent};
use fidelis_faithfulness::{
    EvalOptions, completeness_with_progress, evaluate_baseline, evaluate_circuits_with_progress,
    evaluate_graph, faithfulness_curve_with_progress, mib_sizes, overlap,
};
use fidelis_graph::{Graph, GraphConfig};
use fidelis_models::{Activation, Batch, Hooks, Model, Transformer, point};

const METRIC: BuiltinMetric = BuiltinMetric::LogitDiff;

fn device() -> Device {
    match std::env::var("FIDELIS_TEST_DEVICE").as_deref() {
        #[cfg(feature = "wgpu")]
        Ok("wgpu") => return Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        _ => {}
    }
    #[cfg(feature = "flex")]
    return Device::flex();
    #[cfg(not(feature = "flex"))]
    return Device::default();
}

fn load(name: &str) -> Transformer {
    let dir = std::env::var("FIDELIS_FIXTURE_DIR").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fidelis-models/tests/fixtures"),
        PathBuf::from,
    );
    Model::load(&dir.join(name), &device()).unwrap().transformer
}

fn graph_of(model: &Transformer) -> Graph {
    let c = model.config();
    Graph::new(GraphConfig::new(c.n_layers, c.n_heads, c.parallel_attn_mlp))
}

fn full(graph: &Graph) -> Graph {
    let mut g = graph.clone();
    let nb = g.n_backward();
    for i in g.edge_indices().collect::<Vec<_>>() {
        g.set_in_graph(i / nb, i % nb, true);
    }
    g
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Logit difference (correct − incorrect) at each example's last clean position, read on the
/// host from `[batch, pos, d_vocab]` logits — independent of the library's metric code.
fn logit_diff_host(logits: Tensor<3>, pairs: &[PromptPair]) -> Vec<f32> {
    let [_, p, v] = logits.dims();
    let logits = values(logits);
    pairs
        .iter()
        .enumerate()
        .map(|(i, pr)| {
            let row = &logits[(i * p + pr.clean.len() - 1) * v..][..v];
            row[pr.correct[0] as usize] - row[pr.incorrect[0] as usize]
        })
        .collect()
}

fn assert_all_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
    }
}

/// Logit difference of a run whose every reader input is replaced by the sum of the given
/// per-node values (host `[n_forward, d]`, the same at every position) plus the attention
/// output biases written before it — the empty circuit under mean or zero ablation, computed
/// without the ablation machinery.
fn every_edge_ablated(model: &Transformer, pairs: &[PromptPair], node_values: &[f32]) -> Vec<f32> {
    let cfg = model.config();
    let (d, h, dev) = (cfg.d_model, cfg.n_heads, model.device());
    let graph = graph_of(model);
    let batch = fidelis_circuit::PairBatch::new(model, pairs).unwrap().clean;
    let [b, p] = batch.tokens.dims();
    let bias = |l: usize| model.attn_output_bias(l).map_or(vec![0.0; d], values);
    let mut written = vec![0f32; d];
    let add = |acc: &mut Vec<f32>, v: &[f32]| acc.iter_mut().zip(v).for_each(|(a, x)| *a += x);
    add(&mut written, &node_values[..d]);
    let mut hooks = Hooks::new();
    let rank3 = |v: &[f32]| {
        Tensor::<1>::from_data(TensorData::new(v.to_vec(), [d]), dev)
            .reshape([1, 1, d])
            .expand([b, p, d])
    };
    for l in 0..cfg.n_layers {
        let heads = rank3(&written).unsqueeze_dim::<4>(2).expand([b, p, h, d]);
        for pt in [point::q_input(l), point::k_input(l), point::v_input(l)] {
            hooks.replace(pt, Activation::Rank4(heads.clone()));
        }
        let mut for_mlp = written.clone();
        for row in graph.forward_range_of_layer(l) {
            add(&mut for_mlp, &node_values[row * d..(row + 1) * d]);
        }
        add(&mut for_mlp, &bias(l));
        hooks.replace(point::mlp_in(l), rank3(&for_mlp));
        written = for_mlp;
        let mlp = graph.mlp_row(l);
        add(&mut written, &node_values[mlp * d..(mlp + 1) * d]);
    }
    hooks.replace(point::resid_post(cfg.n_layers - 1), rank3(&written));
    logit_diff_host(model.forward_batch(&batch, &mut hooks).unwrap(), pairs)
}

#[test]
fn full_graph_is_clean_and_empty_graph_is_the_ablated_run_for_every_ablation() {
    for name in ["tiny-gpt2", "tiny-llama-gqa", "tiny-gemma2"] {
        let model = load(name);
        let pairs = synthetic_pairs(5, 300, 4);
        let base = evaluate_baseline(&model, &pairs, &METRIC, 2).unwrap();
        let graph = graph_of(&model);
        let prompts: Vec<Vec<u32>> = pairs.iter().map(|p| p.clean.clone()).collect();
        let means = NodeMeans::compute(&model, &prompts, 2).unwrap();
        let n_forward = graph.n_forward();
        let d = model.config().d_model;
        let cases = [
            (Ablation::Patching, None),
            (Ablation::Zero, Some(vec![0f32; n_forward * d])),
            (
                Ablation::Mean(Box::new(means.clone())),
                Some(values(means.means.clone())),
            ),
        ];
        for (ablation, node_values) in cases {
            let what = format!("{name} {}", ablation.name());
            let full_run =
                evaluate_graph(&model, &full(&graph), &pairs, &METRIC, &ablation, 2).unwrap();
            assert_all_close(&format!("{what} full"), &full_run, &base.clean, 1e-4);
            let empty = evaluate_graph(&model, &graph, &pairs, &METRIC, &ablation, 2).unwrap();
            let want = match node_values {
                None => base.corrupted.clone(),
                Some(v) => every_edge_ablated(&model, &pairs, &v),
            };
            assert_all_close(&format!("{what} empty"), &empty, &want, 1e-4);
        }
    }
}

#[test]
fn one_ablated_edge_into_the_logits_is_the_hand_computed_residual_shift() {
    // Ablating a0.h1 -> logits with patching moves the final residual by exactly
    // result_corrupted[a0.h1] − result_clean[a0.h1] and changes nothing else.
    let model = load("tiny-gpt2");
    let pairs = synthetic_pairs(3, 300, 8);
    let (last, h) = (model.config().n_layers - 1, 1);
    // The library pads the pairs; padding is not what this test checks.
    let batches = fidelis_circuit::PairBatch::new(&model, &pairs).unwrap();
    let record = |batch: &Batch| {
        let mut hooks = Hooks::new();
        hooks
            .record(point::result(0))
            .record(point::resid_post(last));
        model.forward_batch(batch, &mut hooks).unwrap();
        let r = hooks
            .recorded(&point::result(0))
            .and_then(Activation::rank4)
            .unwrap();
        let resid = hooks
            .recorded(&point::resid_post(last))
            .and_then(Activation::rank3)
            .unwrap();
        (r, resid)
    };
    let (clean_result, clean_resid) = record(&batches.clean);
    let (corrupt_result, _) = record(&batches.corrupted);
    let [b, p, _, d] = clean_result.dims();
    let shift = (corrupt_result - clean_result)
        .slice_dim(2, h..h + 1)
        .reshape([b, p, d]);
    let mut hooks = Hooks::new();
    hooks.replace(point::resid_post(last), clean_resid + shift);
    let want = logit_diff_host(
        model.forward_batch(&batches.clean, &mut hooks).unwrap(),
        &pairs,
    );
    let mut g = full(&graph_of(&model));
    let (f, col) = g.edge_index("a0.h1->logits").unwrap();
    g.set_in_graph(f, col, false);
    let got = evaluate_graph(&model, &g, &pairs, &METRIC, &Ablation::Patching, 3).unwrap();
    assert_all_close("a0.h1->logits ablated", &got, &want, 1e-4);
}

fn random_circuit(graph: &Graph, seed: u64) -> Vec<bool> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    graph
        .valid_mask()
        .iter()
        .map(|&v| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            v && (state >> 33).is_multiple_of(3)
        })
        .collect()
}

/// Patching, batches of 3, `k` circuits per forward.
fn stack(k: usize) -> EvalOptions {
    EvalOptions {
        ablation: Ablation::Patching,
        batch_size: 3,
        circuits_per_pass: k,
        selection: Default::default(),
    }
}

#[test]
fn stacked_circuits_equal_one_by_one_and_runs_repeat_exactly() {
    let model = load("tiny-llama-gqa");
    let pairs = synthetic_pairs(4, 300, 12);
    let graph = graph_of(&model);
    let circuits: Vec<Vec<bool>> = (0..5).map(|s| random_circuit(&graph, s)).collect();
    let stacked = evaluate_circuits_with_progress(
        &model,
        &graph,
        &circuits,
        &pairs,
        &METRIC,
        &stack(4),
        &mut Silent,
    )
    .unwrap();
    let again = evaluate_circuits_with_progress(
        &model,
        &graph,
        &circuits,
        &pairs,
        &METRIC,
        &stack(4),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(
        stacked, again,
        "evaluating twice must give identical values"
    );
    for (k, c) in circuits.iter().enumerate() {
        let one = evaluate_circuits_with_progress(
            &model,
            &graph,
            std::slice::from_ref(c),
            &pairs,
            &METRIC,
            &stack(1),
            &mut Silent,
        )
        .unwrap();
        assert_all_close(&format!("circuit {k}"), &stacked[k], &one[0], 1e-4);
    }
}

#[test]
fn curve_ends_at_one_and_completeness_of_the_full_circuit_is_zero() {
    let model = load("tiny-gpt2");
    let pairs = synthetic_pairs(6, 300, 21);
    let mut scored = graph_of(&model);
    let n = scored.n_edges();
    let nb = scored.n_backward();
    for (j, i) in scored
        .edge_indices()
        .collect::<Vec<_>>()
        .into_iter()
        .enumerate()
    {
        scored.set_score(i / nb, i % nb, (j % 17) as f32 - 8.0);
    }
    let opts = EvalOptions {
        ablation: Ablation::Patching,
        batch_size: 4,
        circuits_per_pass: 4,
        selection: Default::default(),
    };
    let curve = faithfulness_curve_with_progress(
        &model,
        &scored,
        &pairs,
        &METRIC,
        &mib_sizes(n),
        &opts,
        &mut Silent,
    )
    .unwrap();
    let sizes = mib_sizes(n);
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    assert_eq!(curve.points.len(), sizes.len());
    let last = curve.points.last().unwrap();
    assert_eq!((last.edges, last.fraction), (n, 1.0));
    assert!((last.faithfulness - 1.0).abs() < 1e-3, "{last:?}");
    assert!(curve.points.windows(2).all(|w| w[0].edges <= w[1].edges));
    let c = completeness_with_progress(&model, &full(&scored), &pairs, &METRIC, &opts, &mut Silent)
        .unwrap();
    assert!(
        (c.circuit_faithfulness - 1.0).abs() < 1e-3 && c.complement_faithfulness.abs() < 1e-3,
        "{c:?}"
    );
}

#[test]
fn areas_and_overlap_on_hand_made_inputs() {
    use fidelis_faithfulness::CurvePoint;
    let pt = |fraction: f64, faithfulness: f32| CurvePoint {
        requested_edges: 0,
        edges: 0,
        fraction,
        metric: 0.0,
        faithfulness,
    };
    // Trapezoids over [0, 1]: 0.5·(0 + 0.5)·0.5 + 0.5·(0.5 + 1)·0.5 = 0.5; |1 − f| mirrors it.
    let (cpr, cmd) =
        fidelis_faithfulness::curve::areas(&[pt(0.0, 0.0), pt(0.5, 0.5), pt(1.0, 1.0)]);
    assert!(
        (cpr - 0.5).abs() < 1e-12 && (cmd - 0.5).abs() < 1e-12,
        "{cpr} {cmd}"
    );
    let (cpr, cmd) = fidelis_faithfulness::curve::areas(&[pt(0.1, 1.0), pt(0.3, 1.0)]);
    assert!((cpr - 1.0).abs() < 1e-12 && cmd.abs() < 1e-12);

    let mut a = Graph::new(GraphConfig::new(2, 2, false));
    let mut b = a.clone();
    for (g, names) in [
        (&mut a, ["input->a0.h0<q>", "a0.h0->logits", "m1->logits"]),
        (&mut b, ["input->a0.h0<q>", "a0.h0->logits", "m0->logits"]),
    ] {
        for e in names {
            let (f, c) = g.edge_index(e).unwrap();
            g.set_in_graph(f, c, true);
        }
        g.update_nodes();
    }
    let o = overlap(&a, &b).unwrap();
    assert_eq!(
        (o.shared_edges, o.union_edges, o.only_first, o.only_second),
        (2, 4, 1, 1)
    );
    assert!((o.edge_iou - 0.5).abs() < 1e-12);
    assert!(overlap(&a, &Graph::new(GraphConfig::new(3, 2, false))).is_err());
}
