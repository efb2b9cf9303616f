//! Stacked passes change nothing but the speed: integrated gradients and occlusion give the
//! same attributions with one row per pass as with many (including pass sizes that do not
//! divide the row count and a memory budget that splits passes), and [`attribute_prefixes`]
//! over several predictions of one sequence gives what [`attribute_tokens`] gives on each
//! prefix alone, for every method.

mod common;

use common::load;
use fidelis_attribution::token::{
    Baseline, EmbeddingAggregation, PrefixTarget, Target, TargetFunction, TokenAttribution,
    TokenAttributionConfig, TokenMethod, attribute_prefixes, attribute_tokens,
};
use fidelis_models::Model;

const PROMPT: &str = "When Mary and John went to the store, John gave";
/// The tolerance of "equal up to float rounding".
const TOL: f32 = 1e-5;

fn ids(model: &Model) -> Vec<u32> {
    model.tokenizer.encode(PROMPT).unwrap()
}

/// Asserts two lists agree within `TOL` relative to the larger magnitude (at least 1).
fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let scale = x.abs().max(y.abs()).max(1.0);
        assert!(
            (x - y).abs() <= TOL * scale,
            "{what} [{i}]: {x} vs {y} (diff {:.2e})",
            (x - y).abs()
        );
    }
}

fn assert_same(what: &str, a: &TokenAttribution, b: &TokenAttribution) {
    assert_close(&format!("{what} scores"), &a.scores, &b.scores);
    if let (Some(x), Some(y)) = (&a.per_dim, &b.per_dim) {
        assert_close(&format!("{what} per-dim"), x, y);
    }
    assert_close(
        &format!("{what} target value"),
        &[a.target_value],
        &[b.target_value],
    );
    assert_eq!(a.baseline_value.is_some(), b.baseline_value.is_some());
    if let (Some(x), Some(y)) = (a.baseline_value, b.baseline_value) {
        assert_close(&format!("{what} baseline value"), &[x], &[y]);
    }
    if let (Some(x), Some(y)) = (&a.attention, &b.attention) {
        assert_close(&format!("{what} attention"), x, y);
    }
}

fn target(function: TargetFunction, token: u32) -> Target {
    let mut t = Target::new(function, token);
    if function == TargetFunction::ContrastProbDiff {
        t.contrast_token = Some(token + 1);
    }
    t
}

#[test]
fn pass_sizes_do_not_change_integrated_gradients_or_occlusion() {
    for (name, baseline) in [
        ("tiny-gpt2", Baseline::Zero),
        ("tiny-llama-gqa", Baseline::Token(3)),
    ] {
        let model = load(name);
        let ids = ids(&model);
        for (method, function) in [
            (
                TokenMethod::IntegratedGradients,
                TargetFunction::LogProbability,
            ),
            (
                TokenMethod::IntegratedGradients,
                TargetFunction::ContrastProbDiff,
            ),
            (TokenMethod::Occlusion, TargetFunction::Probability),
            (TokenMethod::Occlusion, TargetFunction::ContrastProbDiff),
        ] {
            let t = target(function, 5);
            let mut cfg = TokenAttributionConfig::new(method);
            cfg.ig_steps = 10;
            cfg.baseline = baseline;
            cfg.aggregation = EmbeddingAggregation::Sum;
            cfg.rows_per_pass = 1;
            let one_at_a_time = attribute_tokens(&model.transformer, &ids, &t, &cfg).unwrap();
            // Neither 3 nor 4 divides the 10 IG steps; 64 holds all rows in one pass.
            for rows in [3, 4, 64] {
                cfg.rows_per_pass = rows;
                let stacked = attribute_tokens(&model.transformer, &ids, &t, &cfg).unwrap();
                assert_same(
                    &format!("{name} {method} {function} rows {rows}"),
                    &stacked,
                    &one_at_a_time,
                );
            }
            // A budget too small for two rows runs one row per pass.
            cfg.rows_per_pass = 64;
            cfg.pass_memory_bytes = 1;
            let budgeted = attribute_tokens(&model.transformer, &ids, &t, &cfg).unwrap();
            assert_same(
                &format!("{name} {method} {function} 1-byte budget"),
                &budgeted,
                &one_at_a_time,
            );
        }
    }
}

#[test]
fn prefixes_attributed_together_equal_each_prefix_alone() {
    for name in ["tiny-gpt2", "tiny-llama-gqa"] {
        let model = load(name);
        let ids = ids(&model);
        let vocab = model.config().d_vocab as u32;
        // Every prediction from the fourth token on, each with its own target token.
        let targets: Vec<PrefixTarget> = (4..=ids.len())
            .map(|len| PrefixTarget {
                len,
                target: target(TargetFunction::LogProbability, (len as u32 * 7) % vocab),
            })
            .collect();
        for method in <TokenMethod as strum::VariantArray>::VARIANTS {
            let mut cfg = TokenAttributionConfig::new(*method);
            cfg.ig_steps = 6;
            cfg.baseline = Baseline::Token(3);
            // 7 rows mix targets of different lengths in one pass.
            cfg.rows_per_pass = 7;
            let together = attribute_prefixes(&model.transformer, &ids, &targets, &cfg).unwrap();
            assert_eq!(together.len(), targets.len());
            for (t, got) in targets.iter().zip(&together) {
                let alone =
                    attribute_tokens(&model.transformer, &ids[..t.len], &t.target, &cfg).unwrap();
                assert_eq!(got.scores.len(), t.len);
                assert_same(&format!("{name} {method} prefix {}", t.len), got, &alone);
            }
        }
    }
}

#[test]
fn prefix_targets_are_checked() {
    let model = load("tiny-gpt2");
    let ids = ids(&model);
    let cfg = TokenAttributionConfig::new(TokenMethod::Saliency);
    let bad = |len: usize| {
        let t = PrefixTarget {
            len,
            target: Target::new(TargetFunction::Probability, 1),
        };
        attribute_prefixes(&model.transformer, &ids, &[t], &cfg)
            .unwrap_err()
            .to_string()
    };
    assert!(bad(0).contains("prefix of 0 tokens"));
    assert!(bad(ids.len() + 1).contains("prefix of"));
    assert!(
        attribute_prefixes(&model.transformer, &ids, &[], &cfg)
            .unwrap()
            .is_empty()
    );
}
