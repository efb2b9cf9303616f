//! Edge attribution against independent references on the tiny fixture models: finite
//! differences (EAP), a separately integrated path gradient (EAP-IG), the quadratic agreement of
//! EAP and exact patching as Δa → 0, and edge-ablated runs at the two ends.
#![allow(clippy::needless_range_loop)]

mod common;

use burn::prelude::*;
use common::*;
use fidelis_attribution::exact::patch_edges;
use fidelis_attribution::{
    AttributionError, EdgeAttribution, ExactPatching, Method, attribute_edges_with_progress,
    exact_edges_with_progress,
};
use fidelis_circuit::ablation::node_outputs;
use fidelis_circuit::contract::contract;
use fidelis_circuit::runs::{PassContext, clean_run};
use fidelis_circuit::{
    Ablation, BuiltinMetric, NodeMap, PairBatch, PromptPair, Silent, loss_per_example,
};
use fidelis_faithfulness::evaluate::evaluate_graph;
use fidelis_faithfulness::evaluate_baseline;
use fidelis_graph::Graph;
use fidelis_models::{Activation, Hooks, Transformer, point};

const METRIC: BuiltinMetric = BuiltinMetric::LogitDiff;

fn scores(model: &Transformer, pairs: &[PromptPair], opts: &EdgeAttribution) -> (Graph, Vec<f32>) {
    let mut graph = graph_of(model);
    let s = attribute_edges_with_progress(model, &mut graph, pairs, &METRIC, opts, &mut Silent)
        .unwrap();
    (graph, s)
}

/// A spread of edges: every reader kind, upstream nodes from input, heads and MLPs.
fn sample_edges(graph: &Graph) -> Vec<(usize, usize)> {
    let nb = graph.n_backward();
    let all: Vec<usize> = graph.edge_indices().collect();
    let step = (all.len() / 23).max(1);
    all.iter()
        .step_by(step)
        .map(|&i| (i / nb, i % nb))
        .collect()
}

fn assert_close(what: &str, got: f64, want: f64, rel: f64, abs: f64) {
    assert!(
        (got - want).abs() <= abs + rel * want.abs(),
        "{what}: got {got}, want {want}"
    );
}

fn eap_matches_finite_differences_on(name: &str) {
    eap_matches_finite_differences(&load(name).transformer);
}

fn eap_matches_finite_differences(model: &Transformer) {
    let pairs = random_pairs(6, 300, 7);
    let (graph, s) = scores(model, &pairs, &EdgeAttribution::new(Method::Eap));
    let device = model.device();
    let clean = node_outputs_host(model, &batch_of(&pairs, false, device));
    let corrupted = node_outputs_host(model, &batch_of(&pairs, true, device));
    let delta: Vec<f32> = corrupted.iter().zip(&clean).map(|(c, a)| c - a).collect();
    let eps = 1e-2;
    let nb = graph.n_backward();
    for (f, b) in sample_edges(&graph) {
        let plus = loss_with_added(model, &graph, &pairs, &delta, f, b, eps);
        let minus = loss_with_added(model, &graph, &pairs, &delta, f, b, -eps);
        let taylor = (plus - minus) / (2.0 * f64::from(eps)) / pairs.len() as f64;
        let edge = graph.edge_name(f, b);
        assert_close(&edge, f64::from(s[f * nb + b]), taylor, 2e-2, 2e-4);
    }
}

#[test]
fn eap_equals_first_order_taylor_prediction_gpt2() {
    eap_matches_finite_differences_on("tiny-gpt2");
}

#[test]
fn eap_equals_first_order_taylor_prediction_llama_gqa() {
    eap_matches_finite_differences_on("tiny-llama-gqa");
}

#[test]
fn eap_equals_first_order_taylor_prediction_qwen3() {
    eap_matches_finite_differences_on("tiny-qwen3");
}

/// Pythia: exact (erf) GELU, whose backward some backends take from the tanh approximation,
/// and attention and MLP in parallel.
#[test]
fn eap_equals_first_order_taylor_prediction_pythia() {
    eap_matches_finite_differences_on("tiny-pythia");
}

#[test]
fn eap_equals_first_order_taylor_prediction_mistral_window() {
    eap_matches_finite_differences_on("tiny-mistral-window");
}

/// Gemma 2: heads write their share of the post-attention norm's output.
#[test]
fn eap_equals_first_order_taylor_prediction_gemma2() {
    eap_matches_finite_differences_on("tiny-gemma2");
}

#[test]
fn eap_agrees_with_exact_to_first_order_as_delta_shrinks() {
    let model = load("tiny-gpt2").transformer;
    let pairs = random_pairs(4, 300, 11);
    let graph = graph_of(&model);
    let batch = PairBatch::new(&model, &pairs).unwrap();
    let map = NodeMap::for_model(&model, &graph).unwrap();
    let clean = clean_run(&model, &map, &batch.clean, false).unwrap();
    let delta = node_outputs(&model, &map, &batch.corrupted).unwrap() - clean.outputs.clone();
    let ctx = PassContext {
        model: &model,
        map: &map,
        metric: &METRIC,
        clean_logits: clean.last_logits.clone(),
        targets: &batch.targets,
    };
    let g = ctx.reader_grads(&batch.clean, 1, |_| {}).unwrap();
    let base = loss_per_example(
        &METRIC,
        clean.last_logits.clone(),
        clean.last_logits.clone(),
        &batch.targets,
    );
    let edges = sample_edges(&graph);
    let nb = graph.n_backward();
    let mut errors = Vec::new();
    let unit = values(contract(delta.clone(), g.clone()));
    let scale = edges
        .iter()
        .fold(0f64, |m, &(f, b)| m.max(f64::from(unit[f * nb + b].abs())));
    for t in [0.1f32, 0.01] {
        let scaled = delta.clone() * t;
        let eap = values(contract(scaled.clone(), g.clone()));
        let exact = patch_edges(&ctx, &batch.clean, &scaled, &base, &edges).unwrap();
        let err: f64 = edges
            .iter()
            .zip(&exact)
            .map(|(&(f, b), &e)| f64::from((eap[f * nb + b] - e).abs()) / f64::from(t))
            .fold(0.0, f64::max);
        errors.push(err);
    }
    // Relative to the scale t, the gap is O(t): ten times smaller Δa, about ten times smaller gap.
    eprintln!("gaps per unit Δa {errors:?}, largest score per unit Δa {scale}");
    assert!(
        errors[1] < errors[0] / 4.0,
        "EAP − exact gaps per unit Δa: {errors:?}"
    );
    assert!(
        errors[1] < 0.02 * scale,
        "gap at t = 0.01: {} (scale {scale})",
        errors[1]
    );
}

/// The path integral of ∂L/∂in_v with the input embedding moving from corrupted to clean,
/// computed with plain probes and Simpson's rule on `n` intervals, contracted with Δa.
fn path_integral_scores(
    model: &Transformer,
    graph: &Graph,
    pairs: &[PromptPair],
    n: usize,
) -> Vec<f64> {
    let device = model.device();
    let (clean_b, corrupt_b) = (
        batch_of(pairs, false, device),
        batch_of(pairs, true, device),
    );
    let clean = node_outputs_host(model, &clean_b);
    let corrupted = node_outputs_host(model, &corrupt_b);
    let [bsz, p] = clean_b.tokens.dims();
    let (d, nf, nb) = (
        model.config().d_model,
        graph.n_forward(),
        graph.n_backward(),
    );
    let input = |acts: &[f32]| -> Vec<f32> {
        (0..bsz * p)
            .flat_map(|i| acts[i * nf * d..i * nf * d + d].to_vec())
            .collect()
    };
    let (x1, x0) = (input(&clean), input(&corrupted));
    let batch = PairBatch::new(model, pairs).unwrap();
    let mut grad_sum = vec![0f64; bsz * p * nb * d];
    for j in 0..=n {
        let alpha = j as f32 / n as f32;
        let weight = simpson_weight(j, n);
        let x: Vec<f32> = x0
            .iter()
            .zip(&x1)
            .map(|(a, b)| a + alpha * (b - a))
            .collect();
        let mut hooks = Hooks::new();
        hooks.replace(
            point::resid_pre(0),
            Tensor::<3>::from_data(TensorData::new(x, [bsz, p, d]), device),
        );
        let g = probed_reader_grads(model, &clean_b, &batch, hooks);
        for (acc, v) in grad_sum.iter_mut().zip(g) {
            *acc += weight * f64::from(v);
        }
    }
    let mut out = vec![0f64; nf * nb];
    for i in 0..bsz * p {
        for f in 0..nf {
            for b in 0..nb {
                let mut dot = 0f64;
                for k in 0..d {
                    let da =
                        f64::from(corrupted[(i * nf + f) * d + k] - clean[(i * nf + f) * d + k]);
                    dot += da * grad_sum[(i * nb + b) * d + k];
                }
                out[f * nb + b] += dot / pairs.len() as f64;
            }
        }
    }
    out
}

/// The largest gap between `scores` and `reference` over the edges, as a fraction of the
/// largest reference score, and that score.
fn largest_gap(graph: &Graph, scores: &[f32], reference: &[f64]) -> (f64, f64) {
    let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
    let worst = graph
        .edge_indices()
        .map(|i| (f64::from(scores[i]) - reference[i]).abs() / scale)
        .fold(0f64, f64::max);
    (worst, scale)
}

#[test]
fn eap_ig_inputs_with_64_steps_matches_an_independent_path_integral() {
    for name in [
        "tiny-gpt2",
        "tiny-llama-gqa",
        "tiny-llama3",
        "tiny-qwen3",
        "tiny-pythia",
        "tiny-mistral-window",
        "tiny-gemma2",
    ] {
        let model = load(name).transformer;
        let pairs = random_pairs(4, 300, 5);
        let mut opts = EdgeAttribution::new(Method::EapIgInputs);
        opts.steps = 64;
        opts.steps_per_pass = 16;
        let (graph, s) = scores(&model, &pairs, &opts);
        let reference = path_integral_scores(&model, &graph, &pairs, 64);
        let (worst, scale) = largest_gap(&graph, &s, &reference);
        // The library uses the reference's left Riemann sum; its error against the integral
        // is O(1/m), about 1% of the largest score at m = 64.
        assert!(
            worst < 0.02,
            "{name}: largest gap {worst} of the largest score {scale}"
        );
    }
}

/// EAP-IG on activations computed independently: for each node group (input, one layer's
/// heads, one MLP), full forwards from the embeddings with only that group's outputs moved from
/// corrupted to clean, plain probes, Simpson's rule on `n` intervals, contracted with the
/// group's Δa.
fn activation_path_integral_scores(
    model: &Transformer,
    graph: &Graph,
    pairs: &[PromptPair],
    n: usize,
) -> Vec<f64> {
    let device = model.device();
    let (clean_b, corrupt_b) = (
        batch_of(pairs, false, device),
        batch_of(pairs, true, device),
    );
    let clean = node_outputs_host(model, &clean_b);
    let corrupted = node_outputs_host(model, &corrupt_b);
    let [bsz, p] = clean_b.tokens.dims();
    let cfg = model.config();
    let (d, nf, nb) = (cfg.d_model, graph.n_forward(), graph.n_backward());
    let mut groups = vec![(point::resid_pre(0), 0..1)];
    for l in 0..cfg.n_layers {
        let mlp = graph.mlp_row(l);
        groups.push((point::result(l), graph.forward_range_of_layer(l)));
        groups.push((point::mlp_out(l), mlp..mlp + 1));
    }
    let batch = PairBatch::new(model, pairs).unwrap();
    let mut out = vec![0f64; nf * nb];
    for (pt, rows) in groups {
        let w = rows.len();
        let mut grad_sum = vec![0f64; bsz * p * nb * d];
        for j in 0..=n {
            let alpha = j as f32 / n as f32;
            let weight = simpson_weight(j, n);
            let mut x = Vec::with_capacity(bsz * p * w * d);
            for i in 0..bsz * p {
                for f in rows.clone() {
                    for k in 0..d {
                        let at = (i * nf + f) * d + k;
                        x.push(corrupted[at] + alpha * (clean[at] - corrupted[at]));
                    }
                }
            }
            let mut hooks = Hooks::new();
            if w == 1 {
                hooks.replace(
                    pt.clone(),
                    Tensor::<3>::from_data(TensorData::new(x, [bsz, p, d]), device),
                );
            } else {
                hooks.replace(
                    pt.clone(),
                    Tensor::<4>::from_data(TensorData::new(x, [bsz, p, w, d]), device),
                );
            }
            let g = probed_reader_grads(model, &clean_b, &batch, hooks);
            for (acc, v) in grad_sum.iter_mut().zip(g) {
                *acc += weight * f64::from(v);
            }
        }
        for i in 0..bsz * p {
            for f in rows.clone() {
                for b in 0..nb {
                    let mut dot = 0f64;
                    for k in 0..d {
                        let at = (i * nf + f) * d + k;
                        dot +=
                            f64::from(corrupted[at] - clean[at]) * grad_sum[(i * nb + b) * d + k];
                    }
                    out[f * nb + b] += dot / pairs.len() as f64;
                }
            }
        }
    }
    out
}

/// Simpson's rule weight of point `j` of `n` (even) intervals on [0, 1].
fn simpson_weight(j: usize, n: usize) -> f64 {
    let w = if j == 0 || j == n {
        1.0
    } else if j % 2 == 1 {
        4.0
    } else {
        2.0
    };
    w / (3.0 * n as f64)
}

/// ∂L/∂(every reader input) of one clean-prompt run with `hooks`' replacements, from plain
/// probes at the readers' own hook points (the split per-head q/k/v inputs, not the library's
/// derivation from q, k and v) and a full forward from the embeddings, as host values
/// `[batch, pos, n_backward, d]`. The loss is the logit difference, which does not read the
/// clean logits.
fn probed_reader_grads(
    model: &Transformer,
    clean_b: &fidelis_models::Batch,
    batch: &PairBatch,
    mut hooks: Hooks,
) -> Vec<f32> {
    let cfg = model.config();
    let [bsz, p] = clean_b.tokens.dims();
    let map = NodeMap::for_config(cfg).unwrap();
    for r in map.readers() {
        hooks.probe(r.point.clone());
    }
    let logits = model.forward_batch(clean_b, &mut hooks).unwrap();
    let last = fidelis_circuit::metric::last_position_logits(logits, &batch.last);
    let loss = loss_per_example(&METRIC, last.clone(), last, &batch.targets).sum();
    let grads = loss.backward();
    let parts: Vec<Tensor<4>> = map
        .readers()
        .iter()
        .map(|r| match hooks.probe_grad(&r.point, &grads) {
            Some(Activation::Rank4(g)) => g,
            Some(Activation::Rank3(g)) => g.unsqueeze_dim::<4>(2),
            None => Tensor::zeros([bsz, p, r.cols.len(), cfg.d_model], model.device()),
        })
        .collect();
    values(Tensor::cat(parts, 2))
}

#[test]
fn eap_ig_activations_with_64_steps_matches_an_independent_path_integral() {
    // The library starts each group's passes at the group's layer from the recorded clean
    // residual stream and differentiates only the readers from there on; the reference runs
    // every pass from the embeddings.
    for name in [
        "tiny-gpt2",
        "tiny-llama-gqa",
        "tiny-qwen3",
        "tiny-pythia",
        "tiny-gemma2",
    ] {
        activation_ig_matches_the_path_integral(name, &load(name).transformer);
    }
}

fn activation_ig_matches_the_path_integral(name: &str, model: &Transformer) {
    let pairs = random_pairs(3, 300, 11);
    let mut opts = EdgeAttribution::new(Method::EapIgActivations);
    opts.steps = 64;
    opts.steps_per_pass = 16;
    let (graph, s) = scores(model, &pairs, &opts);
    let reference = activation_path_integral_scores(model, &graph, &pairs, 64);
    let (worst, scale) = largest_gap(&graph, &s, &reference);
    // The library's right Riemann sum (k = 1..m) is O(1/m) from the integral.
    assert!(
        worst < 0.02,
        "{name}: largest gap {worst} of the largest score {scale}"
    );
}

#[test]
fn parallel_workers_give_the_sequential_scores() {
    let model = load("tiny-llama-gqa").transformer;
    let pairs = random_pairs(3, 300, 9);
    let mut opts = EdgeAttribution::new(Method::EapIgActivations);
    opts.steps = 2;
    let (_, one) = scores(&model, &pairs, &opts);
    opts.workers = 3;
    let mut ticks = Vec::new();
    let mut graph = graph_of(&model);
    let parallel = attribute_edges_with_progress(
        &model,
        &mut graph,
        &pairs,
        &METRIC,
        &opts,
        &mut |_: &str, done, total| {
            ticks.push((done, total));
            std::ops::ControlFlow::Continue(())
        },
    )
    .unwrap();
    for i in 0..one.len() {
        assert_close(
            &format!("edge {i}"),
            f64::from(parallel[i]),
            f64::from(one[i]),
            1e-4,
            1e-6,
        );
    }
    // Every pass is reported once, on the calling thread, and the count ends at the total.
    let passes = 2 * (2 * model.config().n_layers + 1);
    assert_eq!(ticks.last(), Some(&(passes, passes)));
    assert!(ticks.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn eap_ig_inputs_with_one_step_is_the_corrupted_half_of_clean_corrupted() {
    let model = load("tiny-gpt2").transformer;
    let pairs = random_pairs(5, 300, 3);
    let (_, eap) = scores(&model, &pairs, &EdgeAttribution::new(Method::Eap));
    let (_, cc) = scores(
        &model,
        &pairs,
        &EdgeAttribution::new(Method::CleanCorrupted),
    );
    let mut ig1 = EdgeAttribution::new(Method::EapIgInputs);
    ig1.steps = 1;
    let (_, ig) = scores(&model, &pairs, &ig1);
    for i in 0..eap.len() {
        assert_close(
            &format!("edge {i}"),
            f64::from(ig[i]),
            f64::from(2.0 * cc[i] - eap[i]),
            1e-3,
            1e-5,
        );
    }
}

#[test]
fn stacking_steps_in_one_pass_does_not_change_scores() {
    let model = load("tiny-llama-gqa").transformer;
    let pairs = random_pairs(3, 300, 9);
    let mut opts = EdgeAttribution::new(Method::EapIgActivations);
    opts.steps = 3;
    let (_, one) = scores(&model, &pairs, &opts);
    opts.steps_per_pass = 3;
    opts.batch_size = 2;
    let (_, stacked) = scores(&model, &pairs, &opts);
    for i in 0..one.len() {
        assert_close(
            &format!("edge {i}"),
            f64::from(stacked[i]),
            f64::from(one[i]),
            1e-3,
            1e-5,
        );
    }
}

#[test]
fn kl_has_zero_eap_gradient_at_the_clean_point_but_not_eap_ig() {
    let model = load("tiny-gpt2").transformer;
    let pairs = random_pairs(4, 300, 13);
    let run = |method| {
        let mut graph = graph_of(&model);
        let opts = EdgeAttribution::new(method);
        attribute_edges_with_progress(
            &model,
            &mut graph,
            &pairs,
            &BuiltinMetric::Kl,
            &opts,
            &mut Silent,
        )
        .unwrap()
    };
    let max_abs = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(max_abs(&run(Method::Eap)) < 1e-5);
    assert!(max_abs(&run(Method::EapIgInputs)) > 1e-3);
}

#[test]
fn exact_scores_equal_single_edge_ablated_runs() {
    exact_equals_single_edge_ablation(&load("tiny-gpt2").transformer);
    exact_equals_single_edge_ablation(&load("tiny-qwen3").transformer);
    exact_equals_single_edge_ablation(&load("tiny-pythia").transformer);
    exact_equals_single_edge_ablation(&load("tiny-gemma2").transformer);
}

fn exact_equals_single_edge_ablation(model: &Transformer) {
    let pairs = random_pairs(3, 300, 17);
    let mut graph = graph_of(model);
    let edges = sample_edges(&graph);
    let opts = ExactPatching {
        subset: Some(edges.clone()),
        edges_per_pass: 5,
        ..ExactPatching::default()
    };
    let s =
        exact_edges_with_progress(model, &mut graph, &pairs, &METRIC, &opts, &mut Silent).unwrap();
    let base = evaluate_baseline(model, &pairs, &METRIC, 8).unwrap();
    let clean_loss: f64 =
        -base.clean.iter().map(|&x| f64::from(x)).sum::<f64>() / pairs.len() as f64;
    let nb = graph.n_backward();
    for &(f, b) in &edges {
        let mut g = graph_of(model);
        for i in g.edge_indices().collect::<Vec<_>>() {
            g.set_in_graph(i / nb, i % nb, true);
        }
        g.set_in_graph(f, b, false);
        let m = evaluate_graph(model, &g, &pairs, &METRIC, &Ablation::Patching, 8).unwrap();
        let loss: f64 = -m.iter().map(|&x| f64::from(x)).sum::<f64>() / pairs.len() as f64;
        assert_close(
            &graph.edge_name(f, b),
            f64::from(s[f * nb + b]),
            loss - clean_loss,
            1e-3,
            1e-4,
        );
    }
}

#[test]
fn ablating_every_edge_gives_the_corrupted_run_and_none_the_clean_run() {
    for name in [
        "tiny-gpt2",
        "tiny-llama-gqa",
        "tiny-llama3",
        "tiny-qwen3",
        "tiny-pythia",
        "tiny-mistral-window",
        "tiny-gemma2",
    ] {
        every_and_no_edge_ablated(&load(name).transformer);
    }
}

fn every_and_no_edge_ablated(model: &Transformer) {
    {
        let pairs = random_pairs(5, 300, 23);
        let base = evaluate_baseline(model, &pairs, &METRIC, 3).unwrap();
        let mut graph = graph_of(model);
        let empty = evaluate_graph(model, &graph, &pairs, &METRIC, &Ablation::Patching, 3).unwrap();
        let nb = graph.n_backward();
        for i in graph.edge_indices().collect::<Vec<_>>() {
            graph.set_in_graph(i / nb, i % nb, true);
        }
        for ablation in [Ablation::Patching, Ablation::Zero] {
            let full = evaluate_graph(model, &graph, &pairs, &METRIC, &ablation, 3).unwrap();
            for i in 0..pairs.len() {
                assert_close(
                    "full graph",
                    f64::from(full[i]),
                    f64::from(base.clean[i]),
                    0.0,
                    1e-4,
                );
            }
        }
        for i in 0..pairs.len() {
            assert_close(
                "empty graph",
                f64::from(empty[i]),
                f64::from(base.corrupted[i]),
                0.0,
                1e-4,
            );
        }
    }
}

/// tiny-gpt2's shape with attention and MLP reading the same residual stream (GPT-NeoX's
/// parallel layout), random weights: a layout variant that the graph crate and the node map
/// define, and every consumer must follow.
fn parallel_model() -> Transformer {
    let mut cfg = load("tiny-gpt2").transformer.config().clone();
    cfg.parallel_attn_mlp = true;
    Transformer::random(cfg, 31, &device()).unwrap()
}

#[test]
fn a_parallel_attention_mlp_layout_is_followed_by_every_consumer() {
    let model = parallel_model();
    let graph = graph_of(&model);
    assert!(graph.cfg().parallel_attn_mlp);
    // The node map takes the layout from the graph: an MLP sees the writers before its layer.
    let map = NodeMap::for_model(&model, &graph).unwrap();
    for r in map.readers() {
        if r.kind == fidelis_circuit::ReaderKind::Mlp {
            assert_eq!(r.visible, graph.forward_range_of_layer(r.layer).start);
        }
    }
    // Every consumer, each against its independent reference: EAP (finite differences),
    // EAP-IG on activations (a separate path integral from the embeddings), exact patching
    // (single-edge ablated runs), and edge-ablated runs (the clean and corrupted runs).
    eap_matches_finite_differences(&model);
    activation_ig_matches_the_path_integral("parallel", &model);
    exact_equals_single_edge_ablation(&model);
    every_and_no_edge_ablated(&model);
    // The graph of the sequential layout does not fit the parallel model.
    let c = model.config();
    let sequential = Graph::new(fidelis_graph::GraphConfig::new(
        c.n_layers, c.n_heads, false,
    ));
    let mut g = sequential.clone();
    let err = attribute_edges_with_progress(
        &model,
        &mut g,
        &random_pairs(2, 300, 1),
        &METRIC,
        &EdgeAttribution::new(Method::Eap),
        &mut Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("parallel"), "{err}");
}

#[test]
fn bad_options_and_data_are_named() {
    let model = load("tiny-gpt2").transformer;
    let mut pairs = random_pairs(2, 300, 1);
    let mut graph = graph_of(&model);
    let mut opts = EdgeAttribution::new(Method::EapIgInputs);
    opts.ablation = Ablation::Zero;
    let err =
        attribute_edges_with_progress(&model, &mut graph, &pairs, &METRIC, &opts, &mut Silent)
            .unwrap_err();
    assert!(matches!(err, AttributionError::Options(_)), "{err}");
    assert!(err.to_string().contains("eap-ig-inputs"), "{err}");
    let eap_error = |pairs: &[PromptPair], graph: &mut Graph| {
        let opts = EdgeAttribution::new(Method::Eap);
        attribute_edges_with_progress(&model, graph, pairs, &METRIC, &opts, &mut Silent)
            .unwrap_err()
            .to_string()
    };
    pairs[1].corrupted.push(5);
    let err = eap_error(&pairs, &mut graph);
    assert!(
        err.contains("example 1") && err.contains("equal lengths"),
        "{err}"
    );
    pairs[1].corrupted.pop();
    pairs[0].correct = vec![100_000];
    let err = eap_error(&pairs, &mut graph);
    assert!(
        err.contains("100000") && err.contains("vocabulary"),
        "{err}"
    );
}

#[test]
fn a_progress_that_breaks_stops_the_work_with_a_cancellation() {
    let model = load("tiny-gpt2").transformer;
    let pairs = random_pairs(4, 300, 3);
    for workers in [1, 2] {
        let mut opts = EdgeAttribution::new(Method::EapIgActivations);
        opts.workers = workers;
        let mut ticks = 0;
        let mut stop_after_two = |_: &str, _: usize, _: usize| {
            ticks += 1;
            if ticks < 2 {
                std::ops::ControlFlow::Continue(())
            } else {
                std::ops::ControlFlow::Break(())
            }
        };
        let mut graph = graph_of(&model);
        let err = attribute_edges_with_progress(
            &model,
            &mut graph,
            &pairs,
            &METRIC,
            &opts,
            &mut stop_after_two,
        )
        .unwrap_err();
        assert!(err.is_cancelled(), "workers {workers}: {err}");
        let passes = 5 * (2 * model.config().n_layers + 1);
        assert!(
            ticks < passes,
            "workers {workers}: {ticks} ticks of {passes}"
        );
    }
    let mut graph = graph_of(&model);
    let opts = ExactPatching::default();
    let mut stop = |_: &str, _: usize, _: usize| std::ops::ControlFlow::Break(());
    let err = exact_edges_with_progress(&model, &mut graph, &pairs, &METRIC, &opts, &mut stop)
        .unwrap_err();
    assert!(err.is_cancelled(), "{err}");
}
