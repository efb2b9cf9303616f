//! Encoder-decoder models against transformers: logits of a single example and of a padded
//! batch (padding on both sides), greedy generation (cached, uncached and transformers'), the
//! hook points, and gradient probes against central finite differences. The references are in
//! `tests/fixtures/tiny-{marian,mbart,m2m100,t5,t5-relu}/expected.json`, written by
//! `xtask/fixtures/make_fixtures.py`.

mod common;

use burn::prelude::*;
use burn::tensor::TensorData;
use common::{device, fixture, max_abs_diff, values};
use fidelis_models::hooks::point;
use fidelis_models::seq2seq::{Positions, points, seq2seq_config_at};
use fidelis_models::{Activation, Batch, GenerateConfig, Hooks, ModelError, Seq2SeqModel};
use serde_json::Value;

const FIXTURES: [&str; 5] = [
    "tiny-marian",
    "tiny-mbart",
    "tiny-m2m100",
    "tiny-t5",
    "tiny-t5-relu",
];
/// Largest difference allowed from transformers' f32 logits.
const TOLERANCE: f32 = 1e-4;

fn load(name: &str) -> Seq2SeqModel {
    Seq2SeqModel::load(&fixture(name), &device()).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("valid json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

fn id_lists(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().expect("lists").iter().map(ids).collect()
}

/// A `[pos, vocab]` logits table, flattened.
fn table(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("rows")
        .iter()
        .flat_map(|row| row.as_array().expect("a row").iter())
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn batch(model: &Seq2SeqModel, rows: &[Vec<u32>]) -> Batch {
    Batch::from_sequences(rows, model.model.config().pad_token_id, &device()).expect("a batch")
}

#[test]
fn single_example_logits_match_transformers() {
    for name in FIXTURES {
        let model = load(name);
        let exp = expected(name);
        let single = &exp["single"];
        let (src, tgt) = (ids(&single["source_ids"]), ids(&single["target_ids"]));
        let logits = model
            .model
            .forward(
                &batch(&model, &[src]),
                &batch(&model, std::slice::from_ref(&tgt)),
                &mut Hooks::new(),
            )
            .expect("forward");
        assert_eq!(logits.dims(), [1, tgt.len(), model.model.config().d_vocab]);
        let diff = max_abs_diff(&values(logits), &table(&single["logits"]));
        assert!(diff < TOLERANCE, "{name}: max |Δ| {diff:.2e}");
    }
}

#[test]
fn padded_batch_logits_match_transformers() {
    for name in FIXTURES {
        let model = load(name);
        let exp = expected(name);
        let b = &exp["batch"];
        let (src, tgt) = (id_lists(&b["source_ids"]), id_lists(&b["target_ids"]));
        let logits = model
            .model
            .forward(
                &batch(&model, &src),
                &batch(&model, &tgt),
                &mut Hooks::new(),
            )
            .expect("forward");
        let v = model.model.config().d_vocab;
        for (i, t) in tgt.iter().enumerate() {
            let rows = logits.clone().slice([i..i + 1, 0..t.len(), 0..v]);
            let want = table(&b["logits"][i]);
            let diff = max_abs_diff(&values(rows), &want);
            assert!(diff < TOLERANCE, "{name} example {i}: max |Δ| {diff:.2e}");
        }
    }
}

/// Greedy decoding by full forwards over the growing target, no cache.
fn uncached_greedy(model: &Seq2SeqModel, src: &[u32], max_new: usize) -> Vec<u32> {
    let cfg = model.model.config();
    let mut target: Vec<u32> = Vec::new();
    for step in 0..max_new {
        let next = match cfg.forced_bos_token_id {
            Some(forced) if step == 0 => forced,
            _ => {
                let logits = model
                    .model
                    .force_decode(src, &target, &mut Hooks::new())
                    .expect("forward");
                let [_, seq, v] = logits.dims();
                let last = values(logits.slice([0..1, seq - 1..seq, 0..v]));
                last.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i as u32)
                    .expect("a vocabulary")
            }
        };
        target.push(next);
        if Some(next) == cfg.eos_token_id {
            break;
        }
    }
    target
}

#[test]
fn cached_greedy_generation_equals_the_uncached_loop_and_transformers() {
    for name in FIXTURES {
        let model = load(name);
        let exp = expected(name);
        let g = &exp["greedy"];
        let src = ids(&g["source_ids"]);
        let max_new = g["max_new_tokens"].as_u64().unwrap() as usize;
        let cfg = GenerateConfig {
            max_new_tokens: max_new,
            ..GenerateConfig::default()
        };
        let mut streamed = Vec::new();
        let cached = model
            .model
            .generate(&src, &cfg, |t| streamed.push(t))
            .expect("generate");
        assert_eq!(cached, streamed, "{name}: on_token sees every token");
        assert_eq!(
            cached,
            ids(&g["generated"]),
            "{name}: transformers' greedy output"
        );
        assert_eq!(
            cached,
            uncached_greedy(&model, &src, max_new),
            "{name}: uncached loop"
        );
    }
}

#[test]
fn sampled_generation_is_seeded_and_stays_in_the_vocabulary() {
    let model = load("tiny-mbart");
    let src = ids(&expected("tiny-mbart")["greedy"]["source_ids"]);
    let cfg = GenerateConfig {
        max_new_tokens: 6,
        temperature: 1.5,
        top_k: Some(20),
        seed: 3,
        ..GenerateConfig::default()
    };
    let a = model.model.generate(&src, &cfg, |_| {}).expect("generate");
    let b = model.model.generate(&src, &cfg, |_| {}).expect("generate");
    assert_eq!(a, b, "the same seed gives the same sample");
    assert_eq!(a[0], model.model.config().forced_bos_token_id.unwrap());
    let v = model.model.config().d_vocab as u32;
    assert!(a.iter().all(|&t| t < v));
}

#[test]
fn every_listed_hook_point_fires_and_records_all_sees_them() {
    for name in FIXTURES {
        let model = load(name);
        let exp = expected(name);
        let b = &exp["batch"];
        let (src, tgt) = (id_lists(&b["source_ids"]), id_lists(&b["target_ids"]));
        let mut hooks = Hooks::new();
        hooks.record_all();
        let (src_batch, tgt_batch) = (batch(&model, &src), batch(&model, &tgt));
        let all = model
            .model
            .forward(&src_batch, &tgt_batch, &mut hooks)
            .expect("forward");
        // Recording everything runs the split per-head q/k/v inputs and per-head results of
        // every attention; the logits stay those of the plain forward, up to the summation
        // order of the per-head products (1.7e-5 on tiny-t5, whose unscaled scores amplify it).
        let plain = model
            .model
            .forward(&src_batch, &tgt_batch, &mut Hooks::new())
            .expect("forward");
        let diff = max_abs_diff(&values(all), &values(plain));
        assert!(
            diff < TOLERANCE,
            "{name}: split forward differs by {diff:.2e}"
        );
        let listed = points::all(model.model.config());
        for p in &listed {
            assert!(hooks.recorded(p).is_some(), "{name}: {p} did not fire");
        }
        let recorded = hooks.take_recorded();
        assert_eq!(
            recorded.len(),
            listed.len(),
            "{name}: unlisted points fired"
        );
        let cfg = model.model.config();
        let (h, dh, d) = (cfg.n_heads, cfg.d_head, cfg.d_model);
        let (s, t) = (
            src.iter().map(Vec::len).max().unwrap(),
            tgt.iter().map(Vec::len).max().unwrap(),
        );
        let shape = |p: &str| recorded[p].dims();
        assert_eq!(shape(&points::cross_pattern(0)), [3, h, t, s]);
        assert_eq!(shape(&points::cross_kv_input(1)), [3, s, d]);
        assert_eq!(shape(&points::cross_q_input(1)), [3, t, h, d]);
        assert_eq!(shape(&points::cross_v_input(0)), [3, s, h, d]);
        assert_eq!(shape(&points::encoder(&point::k_input(0))), [3, s, h, d]);
        assert_eq!(shape(&points::cross_result(1)), [3, t, h, d]);
        assert_eq!(shape(&points::decoder(&point::q(0))), [3, t, h, dh]);
        assert_eq!(shape(&points::encoder(&point::pattern(1))), [3, h, s, s]);
        assert_eq!(
            matches!(cfg.positions, Positions::Relative { .. }),
            !listed.contains(&points::encoder(point::POS_EMBED))
        );
    }
}

/// Per-head cross-attention results plus the output bias sum to `hook_cross_attn_out`, and the
/// cross-attention pattern gives no weight to padded source positions.
#[test]
fn cross_attention_heads_sum_and_padding_is_masked() {
    for name in ["tiny-marian", "tiny-t5"] {
        let model = load(name);
        let exp = expected(name);
        let b = &exp["batch"];
        let (src, tgt) = (id_lists(&b["source_ids"]), id_lists(&b["target_ids"]));
        let mut hooks = Hooks::new();
        hooks
            .record(points::cross_result(0))
            .record(points::cross_attn_out(0))
            .record(points::cross_pattern(0));
        model
            .model
            .forward(&batch(&model, &src), &batch(&model, &tgt), &mut hooks)
            .expect("forward");
        let result = hooks
            .recorded(&points::cross_result(0))
            .unwrap()
            .rank4()
            .unwrap();
        let out = hooks
            .recorded(&points::cross_attn_out(0))
            .unwrap()
            .rank3()
            .unwrap();
        let [bs, t, _, d] = result.dims();
        // What the heads leave out is the output bias: the same vector at every position.
        let rest = values(out - result.sum_dim(2).reshape([bs, t, d]));
        for row in rest.chunks(d) {
            assert!(
                max_abs_diff(row, &rest[..d]) < 1e-5,
                "{name}: heads plus bias"
            );
        }
        let pattern = hooks
            .recorded(&points::cross_pattern(0))
            .unwrap()
            .rank4()
            .unwrap();
        let [_, h, _, s] = pattern.dims();
        for (i, row) in src.iter().enumerate() {
            if row.len() < s {
                let padded = values(pattern.clone().slice([i..i + 1, 0..h, 0..t, row.len()..s]));
                assert!(
                    padded.iter().all(|&p| p == 0.0),
                    "{name}: example {i} attends to padding"
                );
            }
        }
    }
}

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

/// The differentiated metric: the probability of the next target token at every real decoder
/// position of every example, weighted by a fixed pattern, summed (probabilities rather than
/// log-probabilities keep the sum small, so that f32 resolves the finite differences).
fn metric(logits: Tensor<3>, targets: &[Vec<u32>]) -> Tensor<1> {
    let [b, t, v] = logits.dims();
    let probs = burn::tensor::activation::softmax(logits, 2);
    let mut weights = vec![0.0f32; b * t * v];
    for (i, row) in targets.iter().enumerate() {
        for p in 0..row.len() {
            let next = row.get(p + 1).copied().unwrap_or(row[0]) as usize;
            weights[(i * t + p) * v + next] = 1.0 + 0.1 * p as f32;
        }
    }
    let weights = Tensor::<3>::from_data(TensorData::new(weights, [b, t, v]), &probs.device());
    (probs * weights).sum()
}

/// ∂metric/∂activation at `point` from a probe, against central finite differences along a
/// direction `v`: (m(a + εv) − m(a − εv)) / 2ε ≈ ∇m · v.
fn check_probe(model: &Seq2SeqModel, src: &Batch, tgt: &Batch, targets: &[Vec<u32>], p: &str) {
    let mut probe = Hooks::new();
    probe.probe(p).record(p);
    let m = metric(
        model.model.forward(src, tgt, &mut probe).expect("forward"),
        targets,
    );
    let grads = m.backward();
    let grad = match probe.probe_grad(p, &grads).expect("a probe gradient") {
        Activation::Rank3(t) => values(t),
        Activation::Rank4(t) => values(t),
    };
    let act = probe.recorded(p).unwrap().clone();
    // Along the gradient (its largest entry scaled to 1) plus noise: a direction the metric
    // changes along measurably in f32, yet not the gradient alone. The step is 1e-4 of the
    // activation's own size: T5's unscaled scores make the random tiny models' attention
    // peaked, and at 1e-3 the curvature alone moves the difference by 3%.
    let max = grad.iter().fold(0f32, |m, g| m.max(g.abs()));
    assert!(max > 0.0, "{p}: a zero gradient");
    let direction: Vec<f32> = grad
        .iter()
        .zip(noise(grad.len(), 7))
        .map(|(g, n)| g / max + n)
        .collect();
    let analytic: f64 = grad
        .iter()
        .zip(&direction)
        .map(|(g, v)| f64::from(g * v))
        .sum();
    let a = match &act {
        Activation::Rank3(t) => values(t.clone()),
        Activation::Rank4(t) => values(t.clone()),
    };
    let rms = (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
    let eps = 1e-4 * rms;
    let shifted = |sign: f32| {
        let delta: Vec<f32> = direction.iter().map(|v| sign * eps * v).collect();
        let delta = TensorData::new(delta, act.dims());
        let delta: Activation = match &act {
            Activation::Rank3(_) => Tensor::<3>::from_data(delta, &device()).into(),
            Activation::Rank4(_) => Tensor::<4>::from_data(delta, &device()).into(),
        };
        let mut hooks = Hooks::new();
        hooks.add(p, delta);
        let logits = model.model.forward(src, tgt, &mut hooks).expect("forward");
        f64::from(values(metric(logits, targets))[0])
    };
    let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * f64::from(eps));
    assert!(
        numeric.abs() > 1e-3,
        "{p}: the metric must depend on this activation ({analytic} {numeric})"
    );
    let rel = (analytic - numeric).abs() / numeric.abs();
    assert!(
        rel < 1e-2,
        "{}: {p}: probe {analytic:.6} vs finite difference {numeric:.6} (rel {rel:.2e})",
        model.source.display()
    );
}

#[test]
fn gradient_probes_match_finite_differences() {
    for name in FIXTURES {
        let model = load(name);
        let exp = expected(name);
        let b = &exp["batch"];
        let (src, tgt) = (id_lists(&b["source_ids"]), id_lists(&b["target_ids"]));
        let (src_batch, tgt_batch) = (batch(&model, &src), batch(&model, &tgt));
        for p in [
            points::encoder(point::EMBED),
            points::encoder(&point::resid_pre(1)),
            points::ENCODER_OUT.to_string(),
            points::cross_kv_input(0),
            points::decoder(&point::resid_pre(1)),
            points::resid_mid_cross(0),
            points::decoder(point::EMBED),
            points::cross_k_input(1),
            points::cross_q_input(0),
            points::decoder(&point::v_input(1)),
        ] {
            check_probe(&model, &src_batch, &tgt_batch, &tgt, &p);
        }
    }
}

#[test]
fn bad_folders_and_inputs_are_errors() {
    let err = fidelis_models::Model::load(&fixture("tiny-marian"), &device()).unwrap_err();
    assert!(err.to_string().contains("Seq2SeqModel::load"), "{err}");
    let model = load("tiny-marian");
    let v = model.model.config().d_vocab as u32;
    let good = batch(&model, &[vec![5, 6, 2]]);
    let bad = batch(&model, &[vec![5, v]]);
    assert!(matches!(
        model.model.forward(&bad, &good, &mut Hooks::new()),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(matches!(
        model.model.forward(&good, &bad, &mut Hooks::new()),
        Err(ModelError::InvalidInput(_))
    ));
    let two = batch(&model, &[vec![5, 6], vec![7]]);
    assert!(model.model.forward(&good, &two, &mut Hooks::new()).is_err());

    let dir = std::env::temp_dir().join(format!("fidelis-s2s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let original = std::fs::read_to_string(fixture("tiny-marian").join("config.json")).unwrap();
    let write = |edit: &dyn Fn(&mut Value)| {
        let mut cfg: Value = serde_json::from_str(&original).unwrap();
        edit(&mut cfg);
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    };
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("tiny-marian").join(f), dir.join(f)).unwrap();
    }
    write(&|c| c["model_type"] = "bart".into());
    let err = Seq2SeqModel::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("`bart`"), "{err}");
    write(&|c| c["activation_function"] = "mish".into());
    let err = Seq2SeqModel::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("mish"), "{err}");
    write(&|c| c["decoder_layers"] = 3.into());
    let err = Seq2SeqModel::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("decoder.layers.2"), "{err}");
    write(&|c| c["d_model"] = 64.into());
    assert!(matches!(
        Seq2SeqModel::load(&dir, &device()),
        Err(ModelError::ShapeMismatch { .. })
    ));
    write(&|c| c["encoder_layers"] = 0.into());
    let err = Seq2SeqModel::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("encoder layers = 0"), "{err}");
    write(&|c| c["vocab_size"] = (1u64 << 40).into());
    assert!(matches!(
        seq2seq_config_at(&dir),
        Err(ModelError::Unsupported(_))
    ));
    write(&|c| c["max_position_embeddings"] = (1u64 << 24).into());
    let err = seq2seq_config_at(&dir).unwrap_err().to_string();
    assert!(err.contains("sinusoid table"), "{err}");
    write(&|c| c["decoder_start_token_id"] = 100_000.into());
    assert!(seq2seq_config_at(&dir).is_err());
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    assert!(matches!(
        seq2seq_config_at(&dir),
        Err(ModelError::Config { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The encoder output reaches cross-attention `l` only through its keys and values, so the
/// gradient at `cross_attn.hook_kv_input` is the sum over heads of the gradients at the split
/// per-head key and value inputs, in one pass.
#[test]
fn split_cross_attention_input_gradients_sum_to_the_kv_input_gradient() {
    for name in ["tiny-mbart", "tiny-t5"] {
        let model = load(name);
        let exp = expected(name);
        let b = &exp["batch"];
        let (src, tgt) = (id_lists(&b["source_ids"]), id_lists(&b["target_ids"]));
        let mut hooks = Hooks::new();
        let l = 1;
        hooks
            .probe(points::cross_kv_input(l))
            .probe(points::cross_k_input(l))
            .probe(points::cross_v_input(l));
        let logits = model
            .model
            .forward(&batch(&model, &src), &batch(&model, &tgt), &mut hooks)
            .expect("forward");
        let grads = metric(logits, &tgt).backward();
        let grad = |p: &str| hooks.probe_grad(p, &grads).expect("a probe gradient");
        let whole = values(grad(&points::cross_kv_input(l)).rank3().unwrap());
        let k = grad(&points::cross_k_input(l)).rank4().unwrap();
        let v = grad(&points::cross_v_input(l)).rank4().unwrap();
        let [bs, s, _, d] = k.dims();
        let parts = values((k + v).sum_dim(2).reshape([bs, s, d]));
        let scale = whole.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = max_abs_diff(&whole, &parts);
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "{name}: {diff:.2e} of {scale:.2e}"
        );
    }
}

/// Sources framed per family as the fixtures' script framed them, and an explicit forced
/// prefix overriding the config's target language.
#[test]
fn sources_are_framed_per_family_and_forced_prefixes_override_the_config() {
    for (name, lang) in [
        ("tiny-marian", None),
        ("tiny-mbart", Some("en_XX")),
        ("tiny-m2m100", Some("en_XX")),
        ("tiny-t5", None),
    ] {
        let model = load(name);
        let exp = expected(name);
        let single = &exp["single"];
        let text = single["source"].as_str().unwrap();
        let framed = model.encode_source(text, lang).expect("encode");
        assert_eq!(framed, ids(&single["source_ids"]), "{name}");
        let wrong = if lang.is_some() { None } else { Some("en_XX") };
        assert!(model.encode_source(text, wrong).is_err(), "{name}");
    }
    let model = load("tiny-mbart");
    assert!(model.token_id("xx_YY").is_err());
    let src = ids(&expected("tiny-mbart")["greedy"]["source_ids"]);
    let cfg = GenerateConfig {
        max_new_tokens: 4,
        ..GenerateConfig::default()
    };
    let de = model.token_id("de_DE").unwrap();
    let en = model.token_id("en_XX").unwrap();
    let by_config = model.model.generate(&src, &cfg, |_| {}).unwrap();
    let explicit = model
        .model
        .generate_forced(&src, &[de], &cfg, |_| {})
        .unwrap();
    assert_eq!(by_config, explicit);
    let other = model
        .model
        .generate_forced(&src, &[en], &cfg, |_| {})
        .unwrap();
    assert_eq!(other[0], en);
    assert_eq!(other.len(), 4);
    assert!(
        model
            .model
            .generate_forced(&src, &[100_000], &cfg, |_| {})
            .is_err()
    );
}

/// Loading reports every tensor against the config's estimate, ends at done == total, and a
/// `Break` cancels it.
#[test]
fn loading_reports_progress_and_can_be_cancelled() {
    use std::ops::ControlFlow;
    for name in ["tiny-m2m100", "tiny-t5"] {
        let mut ticks: Vec<(usize, usize)> = Vec::new();
        let mut record = |_: &str, done: usize, total: usize| {
            ticks.push((done, total));
            ControlFlow::Continue(())
        };
        Seq2SeqModel::load_with_progress(&fixture(name), &device(), &mut record).expect("load");
        let &(done, total) = ticks.last().expect("ticks");
        assert_eq!(done, total, "{name}");
        assert!(
            ticks.windows(2).all(|w| w[0].0 <= w[1].0),
            "{name}: monotone"
        );
        let mut cancel = |_: &str, _: usize, _: usize| ControlFlow::Break(());
        assert!(matches!(
            Seq2SeqModel::load_with_progress(&fixture(name), &device(), &mut cancel),
            Err(ModelError::Cancelled)
        ));
    }
}

/// Activation patching across the encoder: running a corrupted source (one token changed)
/// with the clean encoder output put back at `encoder.hook_out` gives the clean logits, and
/// without it different ones.
#[test]
fn replacing_the_encoder_output_patches_the_decoder() {
    for name in ["tiny-marian", "tiny-t5-relu"] {
        let model = load(name);
        let exp = expected(name);
        let single = &exp["single"];
        let (clean, tgt) = (ids(&single["source_ids"]), ids(&single["target_ids"]));
        let mut corrupted = clean.clone();
        corrupted[1] = if corrupted[1] == 7 { 8 } else { 7 };
        let (clean, corrupted, tgt) = (
            batch(&model, &[clean]),
            batch(&model, &[corrupted]),
            batch(&model, &[tgt]),
        );
        let mut record = Hooks::new();
        record.record(points::ENCODER_OUT);
        let want = values(model.model.forward(&clean, &tgt, &mut record).unwrap());
        let clean_out = record.recorded(points::ENCODER_OUT).unwrap().clone();
        let mut patch = Hooks::new();
        patch.replace(points::ENCODER_OUT, clean_out);
        let patched = values(model.model.forward(&corrupted, &tgt, &mut patch).unwrap());
        let plain = values(
            model
                .model
                .forward(&corrupted, &tgt, &mut Hooks::new())
                .unwrap(),
        );
        assert!(max_abs_diff(&patched, &want) < 1e-6, "{name}");
        assert!(
            max_abs_diff(&plain, &want) > 1e-3,
            "{name}: the corruption matters"
        );
    }
}
