//! The held-out set, `heldout.jsonl`: one example per line with everything a context
//! attribution test needs (PECoRe: which target word depends on the context, and which context
//! word is its cue).
//!
//! Fields: `input_context`, `input_current`, `output_context`, `output_current` (the four parts
//! as Inseq's `attribute-context` takes them), `source` / `target` (the joined texts, parts
//! separated by ` <brk> `), `source_ids` / `target_ids` (ids of the organism's tokenizer, each
//! ending with `</s>`, the target without the decoder start token), `pronoun` (`il`/`elle`),
//! `pronoun_target_index` (in `target_ids`), `pronoun_current_index` (word index in
//! `output_current`), `antecedent` / `antecedent_translation` (the context's subject),
//! `antecedent_source_index` / `antecedent_target_index` (in `source_ids` / `target_ids`),
//! `antecedent_context_index` (word index in `input_context`), `gender`, `context_template`,
//! and `distractors` (the context's other nouns, each with its gender).

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::corpus::{Example, Gender, NOUNS};
use super::train::encode;

fn gender_name(g: Gender) -> &'static str {
    match g {
        Gender::Masculine => "masculine",
        Gender::Feminine => "feminine",
    }
}

/// The JSON record of one held-out example (which has a context and a pronoun).
pub fn record(example: &Example, ids: &HashMap<String, u32>) -> Result<Value> {
    let context = example
        .context
        .as_ref()
        .context("a held-out example without context")?;
    let antecedent = example.antecedent.context("no antecedent")?;
    let pronoun = example.pronoun.context("no pronoun")?;
    let encoded = encode(example, ids)?;
    let words = |w: &[String]| w.join(" ");
    let find = |list: &[String], word: &str| list.iter().position(|w| w == word);
    let at_context = find(&context.source, antecedent.0).context("antecedent not in context")?;
    let at_target = find(&context.target, antecedent.1).context("translation not in context")?;
    let distractors: Vec<Value> = context
        .source
        .iter()
        .filter(|w| *w != antecedent.0)
        .filter_map(|w| NOUNS.iter().find(|n| n.0 == w))
        .map(|n| json!({"noun": n.0, "translation": n.1, "gender": gender_name(n.2)}))
        .collect();
    Ok(json!({
        "input_context": words(&context.source),
        "input_current": words(&example.current.source),
        "output_context": words(&context.target),
        "output_current": words(&example.current.target),
        "source": words(&example.source_words()),
        "target": words(&example.target_words()),
        "source_ids": encoded.source,
        "target_ids": encoded.target,
        "pronoun": example.current.target[pronoun],
        "pronoun_target_index": encoded.pronoun,
        "pronoun_current_index": pronoun,
        "antecedent": antecedent.0,
        "antecedent_translation": antecedent.1,
        "antecedent_source_index": at_context,
        "antecedent_target_index": at_target,
        "antecedent_context_index": at_context,
        "gender": gender_name(antecedent.2),
        "context_template": example.context_template,
        "distractors": distractors,
    }))
}

/// Writes the records as JSON lines.
pub fn write_jsonl(records: &[Value], path: &std::path::Path) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text += &serde_json::to_string(r)?;
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
