//! Hook points: per-head decompositions, replacement, and gradient probes checked against
//! central finite differences.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use burn::prelude::*;
use burn::tensor::TensorData;
use common::{device, load, max_abs_diff, tokens, values};
use fidelis_models::{Activation, Hooks, Model, Transformer, point};

const PROMPT: &str = "When Mary and John went to the store, John gave";

fn run(model: &Model, hooks: &mut Hooks) -> Tensor<3> {
    let ids = model.tokenizer.encode(PROMPT).unwrap();
    model
        .transformer
        .forward(tokens(&ids, &device()), hooks)
        .unwrap()
}

/// Deterministic pseudo-random values in [-1, 1] (a 64-bit LCG), for directions and noise.
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn like(act: &Activation, data: Vec<f32>) -> Activation {
    match act {
        Activation::Rank3(t) => {
            Tensor::<3>::from_data(TensorData::new(data, t.dims()), &device()).into()
        }
        Activation::Rank4(t) => {
            Tensor::<4>::from_data(TensorData::new(data, t.dims()), &device()).into()
        }
    }
}

fn act_values(act: &Activation) -> Vec<f32> {
    match act {
        Activation::Rank3(t) => values(t.clone()),
        Activation::Rank4(t) => values(t.clone()),
    }
}

/// The metric differentiated in the probe tests: logit(a) − logit(b) at the last position.
fn logit_diff(logits: Tensor<3>) -> Tensor<1> {
    let [_, seq, _] = logits.dims();
    let last = logits.slice([0..1, seq - 1..seq]).reshape([-1]);
    last.clone().slice(5..6) - last.slice(17..18)
}

#[test]
fn per_head_results_plus_bias_sum_to_the_attention_output() {
    for name in ["tiny-gpt2", "tiny-llama-gqa", "tiny-qwen2", "tiny-gemma2"] {
        let model = load(name);
        let mut hooks = Hooks::new();
        for l in 0..model.config().n_layers {
            hooks.record(point::result(l)).record(point::attn_out(l));
        }
        run(&model, &mut hooks);
        for l in 0..model.config().n_layers {
            let result = hooks.recorded(&point::result(l)).unwrap().rank4().unwrap();
            let [b, p, h, d] = result.dims();
            assert_eq!(
                h,
                model.config().n_heads,
                "{name}: one result per query head"
            );
            let mut sum = result.sum_dim(2).reshape([b, p, d]);
            if let Some(bias) = model.transformer.attn_output_bias(l) {
                sum = sum + bias.unsqueeze::<3>();
            }
            let attn_out = hooks
                .recorded(&point::attn_out(l))
                .unwrap()
                .rank3()
                .unwrap();
            let diff = max_abs_diff(&values(sum), &values(attn_out));
            assert!(
                diff < 1e-5,
                "{name} layer {l}: |Σ result + b_O − attn_out| = {diff}"
            );
        }
    }
}

#[test]
fn split_qkv_inputs_give_the_plain_forward() {
    for name in ["tiny-gpt2", "tiny-llama-gqa", "tiny-qwen2", "tiny-gemma2"] {
        let model = load(name);
        let plain = values(run(&model, &mut Hooks::new()));
        let mut hooks = Hooks::new();
        for l in 0..model.config().n_layers {
            hooks
                .record(point::q_input(l))
                .record(point::k_input(l))
                .record(point::v_input(l));
        }
        let split = values(run(&model, &mut hooks));
        let diff = max_abs_diff(&plain, &split);
        assert!(diff < 1e-5, "{name}: split q/k/v changed logits by {diff}");
        let k_in = hooks.recorded(&point::k_input(0)).unwrap();
        assert_eq!(
            k_in.dims()[2],
            model.config().n_heads,
            "{name}: a k input per query head"
        );
    }
}

#[test]
fn replacing_an_activation_with_itself_changes_nothing() {
    let model = load("tiny-llama-gqa");
    let points = [
        point::EMBED.to_string(),
        point::resid_pre(1),
        point::q_input(0),
        point::k_input(1),
        point::pattern(0),
        point::result(1),
        point::mlp_in(0),
        point::mlp_post(1),
        point::LN_FINAL.to_string(),
    ];
    let mut record = Hooks::new();
    for p in &points {
        record.record(p.clone());
    }
    let reference = values(run(&model, &mut record));
    let mut replace = Hooks::new();
    for p in &points {
        replace.replace(p.clone(), record.recorded(p).unwrap().clone());
    }
    assert_eq!(values(run(&model, &mut replace)), reference);
}

#[test]
fn gqa_key_input_of_one_query_head_touches_only_that_head() {
    let model = load("tiny-llama-gqa");
    let mut base = Hooks::new();
    base.record(point::pattern(1)).record(point::k_input(1));
    run(&model, &mut base);
    let k_in = base.recorded(&point::k_input(1)).unwrap().clone();
    let [b, p, h, d] = k_in.rank4().unwrap().dims();
    // Perturb head 1's key input only (heads 0 and 1 share a kv head under GQA 4/2).
    let mut delta = vec![0.0; b * p * h * d];
    for pos in 0..p {
        for j in 0..d {
            delta[((pos * h) + 1) * d + j] = noise(1, (pos * d + j) as u64)[0];
        }
    }
    let mut patched = Hooks::new();
    patched
        .add(point::k_input(1), like(&k_in, delta))
        .record(point::pattern(1));
    run(&model, &mut patched);
    let before = base.recorded(&point::pattern(1)).unwrap().rank4().unwrap();
    let after = patched
        .recorded(&point::pattern(1))
        .unwrap()
        .rank4()
        .unwrap();
    for head in 0..h {
        let slice = |t: &Tensor<4>| values(t.clone().slice([0..b, head..head + 1]));
        let diff = max_abs_diff(&slice(&before), &slice(&after));
        if head == 1 {
            assert!(
                diff > 1e-3,
                "head 1's pattern should change, changed {diff}"
            );
        } else {
            assert!(
                diff < 1e-6,
                "head {head} changed by {diff}; only head 1 was patched"
            );
        }
    }
}

/// Gradient at `point` from a probe, checked against central finite differences of the metric
/// along a random direction v: (m(a + εv) − m(a − εv)) / 2ε ≈ ∇m · v.
fn check_probe(model: &Model, point: &str) {
    let mut probe = Hooks::new();
    probe.probe(point).record(point);
    let metric = logit_diff(run(model, &mut probe));
    let grads = metric.backward();
    let grad = act_values(&probe.probe_grad(point, &grads).expect("probe gradient"));
    let act = probe.recorded(point).unwrap().clone();
    let direction = noise(grad.len(), 42);
    let analytic: f64 = grad
        .iter()
        .zip(&direction)
        .map(|(g, v)| f64::from(g * v))
        .sum();
    let eps = 1e-2f32;
    let shifted = |sign: f32| {
        let delta = direction.iter().map(|v| sign * eps * v).collect();
        let mut hooks = Hooks::new();
        hooks.add(point, like(&act, delta));
        f64::from(values(logit_diff(run(model, &mut hooks)))[0])
    };
    let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * f64::from(eps));
    assert!(
        numeric.abs() > 1e-3,
        "{point}: the metric must depend on this activation"
    );
    let rel = (analytic - numeric).abs() / numeric.abs();
    assert!(
        rel < 1e-2,
        "{point}: probe {analytic:.6} vs finite difference {numeric:.6} (rel {rel:.2e})"
    );
}

#[test]
fn gradient_probes_match_finite_differences() {
    for name in ["tiny-gpt2", "tiny-llama-gqa", "tiny-gemma2"] {
        let model = load(name);
        for point in [
            point::EMBED.to_string(),
            point::q_input(1),
            point::k_input(0),
            point::v_input(1),
            point::result(0),
            point::mlp_in(1),
            point::resid_pre(1),
        ] {
            check_probe(&model, &point);
        }
    }
}

#[test]
fn hook_errors_name_the_point() {
    let model = load("tiny-gpt2");
    let mut hooks = Hooks::new();
    let wrong = Tensor::<3>::zeros([1, 1, 1], &device());
    hooks.replace(point::resid_pre(0), wrong);
    let ids = model.tokenizer.encode(PROMPT).unwrap();
    let err = model
        .transformer
        .forward(tokens(&ids, &device()), &mut hooks)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("blocks.0.hook_resid_pre") && msg.contains("shape"),
        "{msg}"
    );
}

/// A right-padded batch of two prompts of different lengths.
fn padded_batch(model: &Model) -> fidelis_models::Batch {
    let a = model.tokenizer.encode(PROMPT).unwrap();
    let b = model.tokenizer.encode("The cat sat").unwrap();
    fidelis_models::Batch::from_sequences(&[a, b], 0, &device()).unwrap()
}

#[test]
fn logits_at_positions_equal_the_full_forward_rows() {
    for name in ["tiny-gpt2", "tiny-llama-gqa"] {
        let model = load(name);
        let batch = padded_batch(&model);
        let full = model
            .transformer
            .forward_batch(&batch, &mut Hooks::new())
            .unwrap();
        let [_, seq, v] = full.dims();
        let positions = vec![batch.lengths[0] - 1, 1];
        let at = model
            .transformer
            .forward_batch_at(&batch, &positions, &mut Hooks::new())
            .unwrap();
        assert_eq!(at.dims(), [2, v]);
        let full = values(full);
        let at = values(at);
        for (i, &p) in positions.iter().enumerate() {
            let row = &full[(i * seq + p) * v..(i * seq + p + 1) * v];
            let diff = max_abs_diff(row, &at[i * v..(i + 1) * v]);
            assert!(diff < 1e-5, "{name}: example {i} differs by {diff}");
        }
    }
}

#[test]
fn a_run_from_a_recorded_residual_continues_the_full_run() {
    for name in ["tiny-gpt2", "tiny-llama-gqa"] {
        let model = load(name);
        let batch = padded_batch(&model);
        let positions = batch.last_positions();
        let n_layers = model.config().n_layers;
        for layer in 0..n_layers {
            // A hook after `layer` must act the same in both runs.
            let edit = |hooks: &mut Hooks| {
                hooks.map(point::mlp_out(n_layers - 1), |a| match a {
                    Activation::Rank3(t) => Activation::Rank3(t * 0.5),
                    other => other,
                });
            };
            let mut hooks = Hooks::new();
            hooks.record(point::resid_pre(layer));
            edit(&mut hooks);
            let full = model
                .transformer
                .forward_batch_at(&batch, &positions, &mut hooks)
                .unwrap();
            let resid = hooks
                .recorded(&point::resid_pre(layer))
                .and_then(Activation::rank3)
                .unwrap();
            let mut later = Hooks::new();
            edit(&mut later);
            // Hooks of skipped layers never fire.
            later.record(point::resid_pre(0));
            let from = model
                .transformer
                .forward_batch_from(&batch, layer, resid, &positions, &mut later)
                .unwrap();
            let diff = max_abs_diff(&values(full), &values(from));
            assert!(diff < 1e-5, "{name}: from layer {layer} differs by {diff}");
            assert_eq!(later.recorded(&point::resid_pre(0)).is_some(), layer == 0);
        }
    }
}

#[test]
fn bad_positions_and_start_layers_are_errors() {
    let model = load("tiny-gpt2");
    let batch = padded_batch(&model);
    let t = &model.transformer;
    let err = |r: fidelis_models::Result<Tensor<2>>| match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    };
    let e = err(t.forward_batch_at(&batch, &[0], &mut Hooks::new()));
    assert!(e.contains("1 logit positions for a batch of 2"), "{e}");
    let e = err(t.forward_batch_at(&batch, &[0, 99], &mut Hooks::new()));
    assert!(e.contains("position 99 is past the sequence"), "{e}");
    let [b, p] = batch.tokens.dims();
    let d = model.config().d_model;
    let resid = Tensor::<3>::zeros([b, p, d], &device());
    let layers = model.config().n_layers;
    let e = err(t.forward_batch_from(&batch, layers, resid.clone(), &[0, 0], &mut Hooks::new()));
    assert!(
        e.contains(&format!("start layer {layers} is out of range")),
        "{e}"
    );
    let wrong = Tensor::<3>::zeros([b, p, d + 1], &device());
    let e = err(t.forward_batch_from(&batch, 0, wrong, &[0, 0], &mut Hooks::new()));
    assert!(e.contains("residual stream has shape"), "{e}");
}

/// Checks `point::all` against what the forward of `model` does: every listed point is reached,
/// in the listed order, and records; a record-everything forward records only listed points.
fn check_listed_points(name: &str, model: &Transformer, ids: &[u32]) {
    let listed = point::all(model.config());
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "{name}: a point is listed twice"
    );
    let reached = Arc::new(Mutex::new(Vec::new()));
    let mut each = Hooks::new();
    for p in &listed {
        let reached = Arc::clone(&reached);
        let at = p.clone();
        each.record(p.clone()).map(p.clone(), move |a| {
            reached.lock().unwrap().push(at.clone());
            a
        });
    }
    model.forward(tokens(ids, &device()), &mut each).unwrap();
    assert_eq!(
        *reached.lock().unwrap(),
        listed,
        "{name}: forward order differs from the list"
    );
    for p in &listed {
        assert!(each.recorded(p).is_some(), "{name}: {p} was not recorded");
    }
    let mut everything = Hooks::new();
    everything.record_all();
    let logits = model
        .forward(tokens(ids, &device()), &mut everything)
        .unwrap();
    let mut recorded: Vec<String> = everything.take_recorded().into_keys().collect();
    recorded.sort();
    let mut expected = listed.clone();
    expected.sort();
    assert_eq!(recorded, expected, "{name}: record_all saw other points");
    let plain = model
        .forward(tokens(ids, &device()), &mut Hooks::new())
        .unwrap();
    let diff = max_abs_diff(&values(plain), &values(logits));
    assert!(
        diff < 1e-5,
        "{name}: recording everything changed logits by {diff}"
    );
}

#[test]
fn listed_hook_points_are_exactly_those_the_forward_offers() {
    for name in ["tiny-gpt2", "tiny-llama-gqa", "tiny-qwen2", "tiny-gemma2"] {
        let model = load(name);
        let ids = model.tokenizer.encode(PROMPT).unwrap();
        check_listed_points(name, &model.transformer, &ids);
    }
    // GPT-NeoX-style parallel blocks have no resid_mid; no fixture has them, so random weights.
    let mut cfg = load("tiny-gpt2").config().clone();
    cfg.parallel_attn_mlp = true;
    assert!(!point::all(&cfg).contains(&point::resid_mid(0)));
    let parallel = Transformer::random(cfg, 0, &device()).unwrap();
    check_listed_points("parallel tiny-gpt2", &parallel, &[1, 2, 3, 4]);
}

/// The gradient through each MLP nonlinearity, from a probe at `hook_pre` with the loss
/// `Σ hook_post` (so ∂loss/∂pre is the activation's derivative, element by element), against
/// central finite differences of the same forward function on the recorded pre-activations.
/// Pythia's exact (erf) GELU is the case to watch: some backends differentiate it with the
/// tanh approximation's derivative, which differs from the erf one by at most 8.7e-4 (at
/// |x| ≈ 2), so the tolerance is 2e-4 and the test checks that it can see that difference.
#[test]
fn mlp_activation_gradients_match_finite_differences_of_their_forward() {
    use burn::tensor::activation::gelu_approximate;
    // The exact GELU as the model writes it out: x/2 · (1 + erf(x/√2)).
    let gelu = |t: Tensor<1>| {
        t.clone() * ((t * std::f64::consts::FRAC_1_SQRT_2).erf().add_scalar(1.0) * 0.5)
    };
    for (name, exact) in [("tiny-pythia", true), ("tiny-gpt2", false)] {
        let model = load(name);
        let post: Arc<Mutex<Option<Tensor<3>>>> = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&post);
        let mut hooks = Hooks::new();
        hooks.probe(point::mlp_pre(0)).record(point::mlp_pre(0));
        hooks.map(point::mlp_post(0), move |a| {
            *slot.lock().unwrap() = a.rank3();
            a
        });
        run(&model, &mut hooks);
        let loss = post.lock().unwrap().take().expect("hook_post ran").sum();
        let grads = loss.backward();
        let grad = act_values(&hooks.probe_grad(&point::mlp_pre(0), &grads).unwrap());
        let pre = act_values(hooks.recorded(&point::mlp_pre(0)).unwrap());
        let (lo, hi) = pre
            .iter()
            .fold((0f32, 0f32), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(
            lo < -1.5 && hi > 1.5,
            "{name}: pre-activations span {lo}..{hi}"
        );
        let n = pre.len();
        // Central differences of an activation on the recorded pre-activations.
        let derivative = |exact: bool| {
            let h = 5e-3f32;
            let at = |shift: f32| {
                let x: Vec<f32> = pre.iter().map(|v| v + shift).collect();
                let t = Tensor::<1>::from_data(TensorData::new(x, [n]), &device());
                values(if exact { gelu(t) } else { gelu_approximate(t) })
            };
            let (plus, minus) = (at(h), at(-h));
            plus.iter()
                .zip(&minus)
                .map(|(p, m)| (p - m) / (2.0 * h))
                .collect::<Vec<f32>>()
        };
        let numeric = derivative(exact);
        let gap = max_abs_diff(&grad, &numeric);
        assert!(gap < 2e-4, "{name}: activation gradient off by {gap}");
        if exact {
            // The check has the power to see the tanh derivative in place of the erf one.
            let power = max_abs_diff(&derivative(false), &numeric);
            assert!(
                power > 4e-4,
                "the erf and tanh derivatives differ by only {power} here"
            );
        }
    }
}

/// `Transformer::qkv_input_grads` from probes at `hook_q`, `hook_k_rep` and `hook_v_rep` equals
/// what probes at the split per-head inputs receive, on every architecture: grouped-query
/// attention, Qwen 3's q/k norms, LayerNorm (GPT-2, Pythia) and Gemma 2's `(1 + w)` norms.
#[test]
fn per_head_input_gradients_from_q_k_v_equal_the_split_probes() {
    for name in [
        "tiny-gpt2",
        "tiny-llama-gqa",
        "tiny-qwen2",
        "tiny-qwen3",
        "tiny-pythia",
        "tiny-gemma2",
    ] {
        let model = load(name);
        for l in 0..model.config().n_layers {
            let mut split = Hooks::new();
            for pt in [point::q_input(l), point::k_input(l), point::v_input(l)] {
                split.probe(pt);
            }
            let grads = logit_diff(run(&model, &mut split)).backward();
            let want: Vec<Vec<f32>> = [point::q_input(l), point::k_input(l), point::v_input(l)]
                .iter()
                .map(|pt| act_values(&split.probe_grad(pt, &grads).unwrap()))
                .collect();

            let mut plain = Hooks::new();
            plain.record(point::resid_pre(l));
            for pt in [point::q(l), point::k_rep(l), point::v_rep(l)] {
                plain.probe(pt);
            }
            let grads = logit_diff(run(&model, &mut plain)).backward();
            let g = |pt: String| plain.probe_grad(&pt, &grads).unwrap().rank4().unwrap();
            let resid = plain
                .recorded(&point::resid_pre(l))
                .unwrap()
                .rank3()
                .unwrap();
            let got = model
                .transformer
                .qkv_input_grads(
                    l,
                    resid,
                    g(point::q(l)),
                    g(point::k_rep(l)),
                    g(point::v_rep(l)),
                )
                .unwrap();
            for (which, (got, want)) in ["q", "k", "v"].iter().zip(got.into_iter().zip(&want)) {
                let got = values(got);
                let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                let diff = max_abs_diff(&got, want);
                assert!(
                    scale > 1e-4,
                    "{name} layer {l} {which}: no gradient to compare"
                );
                assert!(
                    diff <= 1e-5 * scale.max(1.0),
                    "{name} layer {l} {which}: max |Δ| {diff} of gradients up to {scale}"
                );
            }
        }
    }
}
