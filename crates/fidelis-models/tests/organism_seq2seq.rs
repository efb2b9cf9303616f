//! The committed encoder-decoder organism (`models/seq2seq-organism/`, trained by `cargo xtask
//! train-seq2seq-organism`): it loads through `Seq2SeqModel::load`, its tokenizer gives the ids
//! recorded in `heldout.jsonl`, its greedy translations of every held-out example equal
//! transformers' (with and without the context), its forced-decoding logits match
//! transformers' within 1e-4, and the pronoun accuracies scored here equal those in the model
//! card's `evaluation.json`: ≥ 95 % with the context, chance without it. The transformers
//! references are in `tests/fixtures/seq2seq-organism/expected.json`, written by
//! `xtask/fixtures/make_fixtures.py --only seq2seq-organism`.

mod common;

use std::path::PathBuf;

use common::{device, fixture, max_abs_diff, values};
use fidelis_models::seq2seq::Seq2SeqFamily;
use fidelis_models::{GenerateConfig, Hooks, Seq2SeqModel};
use serde_json::Value;

/// Largest difference allowed from transformers' f32 logits.
const TOLERANCE: f32 = 1e-4;

fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/seq2seq-organism")
}

fn json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid json")
}

fn held_out() -> Vec<Value> {
    std::fs::read_to_string(folder().join("heldout.jsonl"))
        .expect("heldout.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a json line"))
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

fn index(v: &Value, key: &str) -> usize {
    v[key].as_u64().unwrap_or_else(|| panic!("{key}")) as usize
}

fn load() -> Seq2SeqModel {
    Seq2SeqModel::load(&folder(), &device()).expect("loading models/seq2seq-organism")
}

#[test]
fn committed_organism_is_a_small_marian_with_the_recorded_tokenizer() {
    let model = load();
    let cfg = model.model.config();
    assert_eq!(cfg.family, Seq2SeqFamily::Marian);
    assert_eq!((cfg.pad_token_id, cfg.decoder_start_token_id), (0, 0));
    assert_eq!(cfg.eos_token_id, Some(1));
    assert_eq!(model.token_id("<brk>").unwrap(), 3);
    let bytes = std::fs::metadata(folder().join("model.safetensors"))
        .unwrap()
        .len();
    assert!(bytes < 10_000_000, "{bytes} bytes");
    let records = held_out();
    assert_eq!(records.len(), 200);
    for r in &records {
        let source = model
            .encode_source(r["source"].as_str().unwrap(), None)
            .unwrap();
        assert_eq!(source, ids(&r["source_ids"]), "{}", r["source"]);
        let mut target = model
            .tokenizer
            .encode(r["target"].as_str().unwrap())
            .unwrap();
        target.push(1);
        assert_eq!(target, ids(&r["target_ids"]), "{}", r["target"]);
        let pronoun = ids(&r["target_ids"])[index(r, "pronoun_target_index")];
        assert_eq!(
            model.tokenizer.token_str(pronoun).as_deref(),
            r["pronoun"].as_str()
        );
        // The indices PECoRe checks its cues against point at the antecedent on both sides.
        let word = |list: &str, at: &str| {
            model
                .tokenizer
                .token_str(ids(&r[list])[index(r, at)])
                .unwrap()
        };
        assert_eq!(
            word("source_ids", "antecedent_source_index"),
            r["antecedent"].as_str().unwrap()
        );
        assert_eq!(
            word("target_ids", "antecedent_target_index"),
            r["antecedent_translation"].as_str().unwrap()
        );
    }
}

#[test]
fn greedy_translations_match_transformers_and_the_recorded_accuracy() {
    let model = load();
    let exp = json(fixture("seq2seq-organism").join("expected.json"));
    let card = json(folder().join("evaluation.json"));
    let records = held_out();
    let brk = model.token_id("<brk>").unwrap();
    let cfg = GenerateConfig {
        max_new_tokens: model.model.config().n_ctx - 1,
        ..GenerateConfig::default()
    };
    let (mut right_with, mut right_without) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let source = ids(&r["source_ids"]);
        let target = ids(&r["target_ids"]);
        let at = index(r, "pronoun_current_index");
        let pronoun = target[index(r, "pronoun_target_index")];

        let out = model.model.generate(&source, &cfg, |_| {}).unwrap();
        assert_eq!(
            out,
            ids(&exp["greedy_with_context"][i]),
            "example {i} with context"
        );
        let current = match out.iter().position(|&t| t == brk) {
            Some(sep) => &out[sep + 1..],
            None => &out[..0],
        };
        right_with += usize::from(current.get(at) == Some(&pronoun));

        let alone = &source[source.iter().position(|&t| t == brk).unwrap() + 1..];
        let out = model.model.generate(alone, &cfg, |_| {}).unwrap();
        assert_eq!(
            out,
            ids(&exp["greedy_without_context"][i]),
            "example {i} alone"
        );
        right_without += usize::from(out.get(at) == Some(&pronoun));
    }
    let count = |v: &Value, key: &str| v[key].as_u64().unwrap() as usize;
    for source in [&exp, &card] {
        assert_eq!(right_with, count(source, "pronoun_correct_with_context"));
        assert_eq!(
            right_without,
            count(source, "pronoun_correct_without_context")
        );
    }
    let n = records.len() as f64;
    assert!(
        right_with as f64 / n >= 0.95,
        "{right_with}/{n} with context"
    );
    let chance = right_without as f64 / n;
    assert!(
        (0.4..=0.6).contains(&chance),
        "{right_without}/{n} without context"
    );
}

#[test]
fn forced_decoding_logits_match_transformers() {
    let model = load();
    let exp = json(fixture("seq2seq-organism").join("expected.json"));
    let records = held_out();
    let table = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter())
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let cases = exp["logits"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let r = &records[index(case, "index")];
        for (source, target, want) in [
            (
                ids(&r["source_ids"]),
                ids(&r["target_ids"]),
                &case["context"],
            ),
            (
                ids(&case["source_ids_no_context"]),
                ids(&case["target_ids_no_context"]),
                &case["no_context"],
            ),
        ] {
            let logits = model
                .model
                .force_decode(&source, &target, &mut Hooks::new())
                .unwrap();
            assert_eq!(logits.dims()[1], target.len() + 1);
            let diff = max_abs_diff(&values(logits), &table(want));
            eprintln!("forced-decoding logits: max |Δ| {diff:.2e} from transformers");
            assert!(diff < TOLERANCE, "max |Δ| {diff:.2e}");
        }
    }
}
