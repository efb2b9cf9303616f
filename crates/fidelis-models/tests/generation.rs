//! Generation with the KV cache on tiny GPT-2 (learned positions) and tiny Llama (rotary, GQA):
//! greedy decoding equals re-running the full forward each step, sampling is reproducible from
//! its seed, and stop tokens, the context limit and bad inputs are handled.

mod common;

use common::{device, fixture, load, tokens, values};
use fidelis_models::{GenerateConfig, Hooks, Model, ModelError};
use serde::Deserialize;

const MODELS: [&str; 7] = [
    "tiny-gpt2",
    "tiny-llama-gqa",
    "tiny-llama3",
    "tiny-qwen3",
    "tiny-pythia",
    "tiny-mistral-window",
    "tiny-gemma2",
];

#[derive(Deserialize)]
struct Expected {
    prompts: Vec<Prompt>,
}

#[derive(Deserialize)]
struct Prompt {
    ids: Vec<u32>,
}

/// The token ids of the fixture's prompts.
fn prompts(name: &str) -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("fixture");
    let exp: Expected = serde_json::from_str(&text).expect("expected.json");
    exp.prompts.into_iter().map(|p| p.ids).collect()
}

fn greedy(max_new_tokens: usize) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens,
        ..GenerateConfig::default()
    }
}

/// Generates and checks that the callback saw exactly the returned tokens, in order.
fn generate(model: &Model, prompt: &[u32], cfg: &GenerateConfig) -> Vec<u32> {
    let mut seen = Vec::new();
    let out = model
        .transformer
        .generate(prompt, cfg, |t| seen.push(t))
        .unwrap();
    assert_eq!(seen, out, "on_token sees every generated token");
    out
}

/// Index of the largest value; the last one among equals, as the generator's argmax.
fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap()
}

/// Greedy decoding without a cache: the full forward on the growing sequence, every step.
fn naive_greedy(model: &Model, prompt: &[u32], steps: usize) -> Vec<u32> {
    let vocab = model.config().d_vocab;
    let mut seq = prompt.to_vec();
    for _ in 0..steps {
        let logits = model
            .transformer
            .forward(tokens(&seq, &device()), &mut Hooks::new())
            .unwrap();
        let logits = values(logits);
        seq.push(argmax(&logits[logits.len() - vocab..]));
    }
    seq.split_off(prompt.len())
}

#[test]
fn greedy_with_cache_equals_full_forward_each_step() {
    for name in MODELS {
        let model = load(name);
        for prompt in prompts(name) {
            let cached = generate(&model, &prompt, &greedy(10));
            let naive = naive_greedy(&model, &prompt, 10);
            assert_eq!(
                cached.len(),
                10,
                "{name}: no stop tokens, so all 10 are generated"
            );
            assert_eq!(cached, naive, "{name}: prompt {prompt:?}");
        }
    }
}

#[test]
fn greedy_from_a_one_token_prompt() {
    // The first cached step has a single query (no mask needed); it must still match.
    for name in MODELS {
        let model = load(name);
        let cached = generate(&model, &[1], &greedy(10));
        assert_eq!(cached, naive_greedy(&model, &[1], 10), "{name}");
    }
}

#[test]
fn sampling_is_reproducible_from_the_seed() {
    for name in MODELS {
        let model = load(name);
        let vocab = model.config().d_vocab as u32;
        let prompt = &prompts(name)[0];
        let cfg = |seed| GenerateConfig {
            max_new_tokens: 20,
            temperature: 1.5,
            seed,
            ..GenerateConfig::default()
        };
        let runs: Vec<Vec<u32>> = (0..4)
            .map(|seed| generate(&model, prompt, &cfg(seed)))
            .collect();
        for run in &runs {
            assert_eq!(run.len(), 20, "{name}");
            assert!(
                run.iter().all(|&t| t < vocab),
                "{name}: ids outside the vocabulary {run:?}"
            );
        }
        // Same seed, same tokens.
        assert_eq!(
            generate(&model, prompt, &cfg(2)),
            runs[2],
            "{name}: seed 2 twice"
        );
        // Different seeds sample different continuations (at temperature 1.5 over 384 tokens of a
        // random model, 20 identical draws from two seeds would be astronomically unlikely).
        for i in 0..runs.len() {
            for j in i + 1..runs.len() {
                assert_ne!(
                    runs[i], runs[j],
                    "{name}: seeds {i} and {j} gave the same tokens"
                );
            }
        }
        // Sampling is not greedy at this temperature.
        assert!(
            runs.iter()
                .any(|r| *r != generate(&model, prompt, &greedy(20))),
            "{name}"
        );
    }
}

#[test]
fn top_k_one_is_greedy() {
    for name in MODELS {
        let model = load(name);
        let prompt = &prompts(name)[1];
        let cfg = GenerateConfig {
            max_new_tokens: 8,
            temperature: 2.0,
            top_k: Some(1),
            seed: 9,
            ..GenerateConfig::default()
        };
        assert_eq!(
            generate(&model, prompt, &cfg),
            generate(&model, prompt, &greedy(8)),
            "{name}"
        );
        // So is a nucleus so small that only the most likely token is in it.
        let cfg = GenerateConfig {
            top_k: None,
            top_p: Some(1e-6),
            temperature: 1.0,
            ..cfg
        };
        assert_eq!(
            generate(&model, prompt, &cfg),
            generate(&model, prompt, &greedy(8)),
            "{name}"
        );
    }
}

#[test]
fn generation_stops_at_a_stop_token() {
    for name in MODELS {
        let model = load(name);
        let prompt = &prompts(name)[2];
        let free = generate(&model, prompt, &greedy(10));
        let stop = free[3];
        let first = free.iter().position(|&t| t == stop).unwrap();
        let cfg = GenerateConfig {
            stop_tokens: vec![12345, stop],
            ..greedy(10)
        };
        let out = generate(&model, prompt, &cfg);
        assert_eq!(
            out,
            free[..=first],
            "{name}: stops right after the first {stop}"
        );
        // A stop token that never comes changes nothing.
        let cfg = GenerateConfig {
            stop_tokens: vec![u32::MAX],
            ..greedy(10)
        };
        assert_eq!(generate(&model, prompt, &cfg), free, "{name}");
    }
}

#[test]
fn max_new_tokens_is_clamped_to_the_context() {
    for name in MODELS {
        let model = load(name);
        let n_ctx = model.config().n_ctx;
        assert_eq!(n_ctx, 64, "{name}");
        let base = &prompts(name)[2];
        let long: Vec<u32> = base.iter().copied().cycle().take(n_ctx - 4).collect();
        let out = generate(&model, &long, &greedy(10));
        assert_eq!(
            out.len(),
            4,
            "{name}: prompt + output fill the context exactly"
        );
        assert_eq!(out, naive_greedy(&model, &long, 4), "{name}");
        // A prompt that fills the context leaves no room: nothing is generated, and no error.
        let full: Vec<u32> = base.iter().copied().cycle().take(n_ctx).collect();
        assert!(generate(&model, &full, &greedy(10)).is_empty(), "{name}");
        // max_new_tokens = 0 generates nothing.
        assert!(generate(&model, base, &greedy(0)).is_empty(), "{name}");
    }
}

#[test]
fn invalid_generation_requests() {
    let model = load("tiny-llama-gqa");
    let err = model
        .transformer
        .generate(&[], &greedy(5), |_| {})
        .unwrap_err();
    assert!(matches!(&err, ModelError::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("non-empty prompt"), "{err}");

    let vocab = model.config().d_vocab as u32;
    let err = model
        .transformer
        .generate(&[1, vocab], &greedy(5), |_| {})
        .unwrap_err();
    assert!(matches!(&err, ModelError::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("out of range"), "{err}");

    let bad = [
        (
            GenerateConfig {
                temperature: -1.0,
                ..greedy(5)
            },
            "temperature",
        ),
        (
            GenerateConfig {
                temperature: f32::NAN,
                ..greedy(5)
            },
            "temperature",
        ),
        (
            GenerateConfig {
                temperature: 1.0,
                top_k: Some(0),
                ..greedy(5)
            },
            "top_k",
        ),
        (
            GenerateConfig {
                temperature: 1.0,
                top_p: Some(0.0),
                ..greedy(5)
            },
            "top_p",
        ),
        (
            GenerateConfig {
                temperature: 1.0,
                top_p: Some(1.5),
                ..greedy(5)
            },
            "top_p",
        ),
    ];
    for (cfg, needle) in bad {
        let mut called = false;
        let err = model
            .transformer
            .generate(&[1, 2], &cfg, |_| called = true)
            .unwrap_err();
        assert!(matches!(&err, ModelError::InvalidInput(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{err}");
        assert!(!called, "no token before the settings are checked");
    }
}
