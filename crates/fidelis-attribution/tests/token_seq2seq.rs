//! Token attribution on encoder-decoder models checked against independent references on the
//! tiny Marian and T5 fixtures: saliency against central finite differences at both embedding
//! points, integrated-gradient completeness over both sides at 64 steps, occlusion against
//! explicit reruns, attention against the recorded patterns, and stacked passes against one
//! target at a time.

mod common;

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;
use common::device;
use fidelis_attribution::token::{
    Baseline, EmbeddingAggregation, PrefixTarget, Seq2SeqAttribution, Target, TargetFunction,
    TokenAttributionConfig, TokenMethod, attribute_seq2seq,
};
use fidelis_models::seq2seq::points;
use fidelis_models::{Batch, Hooks, Seq2SeqModel, point};

fn load(name: &str) -> Seq2SeqModel {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fidelis-models/tests/fixtures");
    Seq2SeqModel::load(&dir.join(name), &device()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A source, decoder inputs (start token first) and the model's greedy continuation read at
/// the last decoder position.
fn example(m: &Seq2SeqModel) -> (Vec<u32>, Vec<u32>) {
    let c = m.model.config();
    let v = c.d_vocab as u32;
    let source: Vec<u32> = [7, 12, 30, 41, 9].iter().map(|t| t % v).collect();
    let mut source = source;
    source.extend(c.eos_token_id);
    let decoder = vec![c.decoder_start_token_id, 20 % v, 33 % v, 14 % v];
    (source, decoder)
}

/// Logits at the last decoder position for a forward with `hooks`.
fn last_logits(m: &Seq2SeqModel, source: &[u32], decoder: &[u32], hooks: &mut Hooks) -> Vec<f64> {
    let c = m.model.config();
    let src = Batch::from_sequences(&[source.to_vec()], c.pad_token_id, &device()).unwrap();
    let tgt = Batch::from_sequences(&[decoder.to_vec()], c.pad_token_id, &device()).unwrap();
    let logits = m.model.forward(&src, &tgt, hooks).unwrap();
    let [_, n, vocab] = logits.dims();
    let row: Vec<f32> = logits
        .slice([0..1, n - 1..n, 0..vocab])
        .reshape([vocab])
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap();
    row.into_iter().map(f64::from).collect()
}

fn log_prob(z: &[f64], t: u32) -> f64 {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
    z[t as usize] - lse
}

fn argmax(z: &[f64]) -> u32 {
    z.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap()
}

/// `delta` added to one (position, dimension) of an embedding point, or a whole position
/// replaced by zero when `zero_out`.
fn perturbation(n: usize, d: usize, pos: usize, dim: usize, delta: f32) -> Tensor<3> {
    let mut v = vec![0f32; n * d];
    v[pos * d + dim] = delta;
    Tensor::from_data(TensorData::new(v, [1, n, d]), &device())
}

fn run(
    m: &Seq2SeqModel,
    source: &[u32],
    decoder: &[u32],
    target: &Target,
    cfg: &TokenAttributionConfig,
) -> Seq2SeqAttribution {
    let t = [PrefixTarget {
        len: decoder.len(),
        target: target.clone(),
    }];
    attribute_seq2seq(&m.model, source, decoder, &t, cfg)
        .unwrap()
        .remove(0)
}

#[test]
fn saliency_equals_central_finite_differences_on_both_sides() {
    for name in ["tiny-marian", "tiny-t5"] {
        let m = load(name);
        let (source, decoder) = example(&m);
        let top = argmax(&last_logits(&m, &source, &decoder, &mut Hooks::new()));
        let target = Target::new(TargetFunction::LogProbability, top);
        let cfg = TokenAttributionConfig::new(TokenMethod::Saliency);
        let out = run(&m, &source, &decoder, &target, &cfg);
        let d = m.model.config().d_model;
        let eps = 3e-3f32;
        let sides = [
            (
                points::encoder(point::EMBED),
                source.len(),
                &out.source_per_dim,
            ),
            (
                points::decoder(point::EMBED),
                decoder.len(),
                &out.target_per_dim,
            ),
        ];
        for (p, n, per_dim) in sides {
            let per_dim = per_dim.as_ref().unwrap();
            for (pos, dim) in [(0, 0), (1, 3), (n - 1, d - 1), (n / 2, d / 2)] {
                let f = |delta: f32| {
                    let mut hooks = Hooks::new();
                    hooks.add(p.clone(), perturbation(n, d, pos, dim, delta));
                    log_prob(&last_logits(&m, &source, &decoder, &mut hooks), top)
                };
                let fd = (f(eps) - f(-eps)) / (2.0 * f64::from(eps));
                let got = f64::from(per_dim[pos * d + dim]);
                assert!(
                    (got - fd.abs()).abs() <= 2e-3 + 2e-2 * fd.abs(),
                    "{name} {p} ({pos}, {dim}): saliency {got} vs |finite difference| {}",
                    fd.abs()
                );
            }
        }
    }
}

/// Completeness over both sides: Σ source + Σ target = f(x) − f(0) within 1% at 64 midpoint
/// steps, with f(x) and f(0) from plain runs (zero embeddings written by hooks), on the tiny
/// Marian fixture and on the trained seq2seq organism.
#[test]
fn integrated_gradients_are_complete_over_both_sides_at_64_steps() {
    let organism = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/seq2seq-organism");
    let organism = Seq2SeqModel::load(&organism, &device()).unwrap();
    for m in [load("tiny-marian"), organism] {
        complete_at_64_steps(&m);
    }
}

fn complete_at_64_steps(m: &Seq2SeqModel) {
    let (source, decoder) = example(m);
    let z = last_logits(m, &source, &decoder, &mut Hooks::new());
    let top = argmax(&z);
    let other = (top + 5) % z.len() as u32;
    let d = m.model.config().d_model;
    let mut zero = Hooks::new();
    zero.map(points::encoder(point::EMBED), |a| match a {
        fidelis_models::Activation::Rank3(x) => fidelis_models::Activation::Rank3(x.zeros_like()),
        o => o,
    });
    zero.map(points::decoder(point::EMBED), |a| match a {
        fidelis_models::Activation::Rank3(x) => fidelis_models::Activation::Rank3(x.zeros_like()),
        o => o,
    });
    let zb = last_logits(m, &source, &decoder, &mut zero);
    for (function, f) in [
        (
            TargetFunction::LogProbability,
            log_prob(&z, top) - log_prob(&zb, top),
        ),
        (
            TargetFunction::ContrastLogitDiff,
            (z[top as usize] - z[other as usize]) - (zb[top as usize] - zb[other as usize]),
        ),
    ] {
        let mut target = Target::new(function, top);
        if function == TargetFunction::ContrastLogitDiff {
            target.contrast_token = Some(other);
        }
        let mut cfg = TokenAttributionConfig::new(TokenMethod::IntegratedGradients);
        cfg.ig_steps = 64;
        cfg.aggregation = EmbeddingAggregation::Sum;
        cfg.rows_per_pass = 24;
        let out = run(m, &source, &decoder, &target, &cfg);
        let total: f64 = out
            .source_scores
            .iter()
            .chain(&out.target_scores)
            .map(|&s| f64::from(s))
            .sum();
        let gap = f64::from(out.target_value - out.baseline_value.unwrap());
        assert!((gap - f).abs() <= 1e-3 * f.abs().max(1.0), "{gap} vs {f}");
        assert!(f.abs() > 1e-3, "degenerate path");
        assert!(
            (total - f).abs() <= 0.01 * f.abs(),
            "{function:?}: Σ attributions {total} vs f(x) − f(x') {f}"
        );
        // Both sides carry attribution.
        assert!(out.source_scores.iter().any(|s| s.abs() > 1e-4));
        assert!(out.target_scores.iter().any(|s| s.abs() > 1e-4));
        assert_eq!(out.source_per_dim.unwrap().len(), source.len() * d);
    }
}

#[test]
fn occlusion_equals_explicit_reruns() {
    let m = load("tiny-marian");
    let (source, decoder) = example(&m);
    let z = last_logits(&m, &source, &decoder, &mut Hooks::new());
    let top = argmax(&z);
    let target = Target::new(TargetFunction::Probability, top);
    let mut cfg = TokenAttributionConfig::new(TokenMethod::Occlusion);
    cfg.rows_per_pass = 4;
    let out = run(&m, &source, &decoder, &target, &cfg);
    let p = |z: &[f64]| log_prob(z, top).exp();
    let d = m.model.config().d_model;
    for (point, n, scores) in [
        (
            points::encoder(point::EMBED),
            source.len(),
            &out.source_scores,
        ),
        (
            points::decoder(point::EMBED),
            decoder.len(),
            &out.target_scores,
        ),
    ] {
        assert_eq!(scores.len(), n);
        for (pos, &score) in scores.iter().enumerate() {
            let mut hooks = Hooks::new();
            hooks.map(point.clone(), move |a| match a {
                fidelis_models::Activation::Rank3(x) => {
                    let mut mask = vec![1f32; n * d];
                    mask[pos * d..(pos + 1) * d].fill(0.0);
                    let mask =
                        Tensor::<3>::from_data(TensorData::new(mask, [1, n, d]), &x.device());
                    fidelis_models::Activation::Rank3(x * mask)
                }
                o => o,
            });
            let want = p(&z) - p(&last_logits(&m, &source, &decoder, &mut hooks));
            assert!(
                (f64::from(score) - want).abs() <= 1e-5,
                "{point} {pos}: {score} vs {want}"
            );
        }
    }
}

#[test]
fn attention_reads_the_cross_and_self_attention_rows() {
    let m = load("tiny-marian");
    let (source, decoder) = example(&m);
    let target = Target::new(TargetFunction::Probability, 5);
    let cfg = TokenAttributionConfig::new(TokenMethod::Attention);
    let out = run(&m, &source, &decoder, &target, &cfg);
    // Rows of a softmax: each head's row sums to 1, so does their mean.
    let sum = |v: &[f32]| v.iter().sum::<f32>();
    assert!((sum(&out.source_scores) - 1.0).abs() < 1e-4);
    assert!((sum(&out.target_scores) - 1.0).abs() < 1e-4);
    let mut hooks = Hooks::new();
    hooks.record(points::cross_pattern(1));
    last_logits(&m, &source, &decoder, &mut hooks);
    let pat = hooks
        .recorded(&points::cross_pattern(1))
        .unwrap()
        .rank4()
        .unwrap();
    let [_, h, q, s] = pat.dims();
    let want: Vec<f32> = pat
        .slice([0..1, 0..h, q - 1..q, 0..s])
        .reshape([h * s])
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap();
    let cross = out.cross_attention.unwrap();
    let got = &cross[h * s..2 * h * s];
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-6);
    }
}

/// Several prefixes stacked into shared passes of up to 7 rows equal one call per prefix run
/// one row per pass (a memory budget below one row).
#[test]
fn stacked_prefixes_equal_one_call_each() {
    let m = load("tiny-marian");
    let (source, decoder) = example(&m);
    let targets: Vec<PrefixTarget> = (1..=decoder.len())
        .map(|len| PrefixTarget {
            len,
            target: Target::new(
                TargetFunction::Probability,
                decoder.get(len).copied().unwrap_or(4),
            ),
        })
        .collect();
    for method in [
        TokenMethod::InputXGradient,
        TokenMethod::IntegratedGradients,
        TokenMethod::Occlusion,
    ] {
        let mut cfg = TokenAttributionConfig::new(method);
        cfg.ig_steps = 8;
        cfg.rows_per_pass = 7;
        let all = attribute_seq2seq(&m.model, &source, &decoder, &targets, &cfg).unwrap();
        // One row per pass: a memory budget below one row.
        let mut single = cfg.clone();
        single.pass_memory_bytes = 1;
        for (t, got) in targets.iter().zip(&all) {
            let one = run(&m, &source, &decoder[..t.len], &t.target, &single);
            assert_eq!(got.target_scores.len(), t.len);
            for (a, b) in got
                .source_scores
                .iter()
                .chain(&got.target_scores)
                .zip(one.source_scores.iter().chain(&one.target_scores))
            {
                assert!(
                    (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                    "{method:?} len {}: {a} vs {b}",
                    t.len
                );
            }
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let m = load("tiny-marian");
    let (source, decoder) = example(&m);
    let cfg = TokenAttributionConfig::new(TokenMethod::Saliency);
    let t = |len| {
        [PrefixTarget {
            len,
            target: Target::new(TargetFunction::Probability, 3),
        }]
    };
    let err = |r: Result<Vec<Seq2SeqAttribution>, fidelis_attribution::AttributionError>| {
        r.unwrap_err().to_string()
    };
    assert!(err(attribute_seq2seq(&m.model, &[], &decoder, &t(1), &cfg)).contains("non-empty"));
    assert!(err(attribute_seq2seq(&m.model, &source, &decoder, &t(9), &cfg)).contains("prefix"));
    assert!(
        err(attribute_seq2seq(
            &m.model,
            &[100_000],
            &decoder,
            &t(1),
            &cfg
        ))
        .contains("vocabulary")
    );
    let mut cfg = cfg;
    cfg.baseline = Baseline::Token(1 << 30);
    assert!(err(attribute_seq2seq(&m.model, &source, &decoder, &t(1), &cfg)).contains("baseline"));
}
