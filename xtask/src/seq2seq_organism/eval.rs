//! Held-out evaluation of a saved organism folder through `fidelis_models::Seq2SeqModel` (the
//! loader every Fidelis command uses): greedy translation of each held-out example with its
//! context and without it, scored on the pronoun, plus the probability of the right pronoun
//! under forced decoding of the reference target.

use std::path::Path;

use anyhow::{Context, Result};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use fidelis_models::{GenerateConfig, Hooks, Seq2SeqModel};
use serde::Serialize;
use serde_json::Value;

use super::tokenizer::{EOS_ID, SEPARATOR_ID};

/// What the evaluation measured (counts over the held-out set).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Held-out examples.
    pub examples: usize,
    /// With context: greedy output's pronoun right.
    pub pronoun_correct_with_context: usize,
    /// With context: greedy output equal to the whole reference target.
    pub exact_with_context: usize,
    /// Without context: greedy output's pronoun equal to the antecedent's.
    pub pronoun_correct_without_context: usize,
    /// Without context: greedy outputs whose pronoun is `il`.
    pub il_without_context: usize,
    /// Without context: greedy output equal to the reference current sentence.
    pub exact_without_context: usize,
    /// Examples whose context has a distractor noun of the other gender.
    pub with_other_gender_distractor: usize,
    /// ... and of them, pronoun right with context.
    pub pronoun_correct_other_gender_distractor: usize,
    /// Mean probability of the right pronoun, reference prefix forced, with context.
    pub mean_p_correct_with_context: f64,
    /// The same without context.
    pub mean_p_correct_without_context: f64,
}

impl Evaluation {
    /// Pronoun accuracy with context.
    pub fn accuracy_with_context(&self) -> f64 {
        self.pronoun_correct_with_context as f64 / self.examples.max(1) as f64
    }

    /// Pronoun accuracy without context.
    pub fn accuracy_without_context(&self) -> f64 {
        self.pronoun_correct_without_context as f64 / self.examples.max(1) as f64
    }
}

/// Reads `heldout.jsonl`.
pub fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).context("a held-out line"))
        .collect()
}

fn ids(v: &Value) -> Result<Vec<u32>> {
    v.as_array()
        .context("an id list")?
        .iter()
        .map(|x| x.as_u64().map(|x| x as u32).context("an id"))
        .collect()
}

fn index(v: &Value, key: &str) -> Result<usize> {
    v[key]
        .as_u64()
        .map(|x| x as usize)
        .with_context(|| format!("field {key}"))
}

/// Greedy output without its final `</s>`.
fn greedy(model: &Seq2SeqModel, source: &[u32]) -> Result<Vec<u32>> {
    let cfg = GenerateConfig {
        max_new_tokens: model.model.config().n_ctx - 1,
        ..GenerateConfig::default()
    };
    let mut out = model.model.generate(source, &cfg, |_| {})?;
    if out.last() == Some(&EOS_ID) {
        out.pop();
    }
    Ok(out)
}

/// Probability of `target[at]` when the decoder is forced through `target[..at]`.
fn p_forced(model: &Seq2SeqModel, source: &[u32], target: &[u32], at: usize) -> Result<f64> {
    let logits = model
        .model
        .force_decode(source, &target[..at], &mut Hooks::new())?;
    let [_, len, vocab] = logits.dims();
    let last = softmax(
        logits
            .slice([0..1, len - 1..len, 0..vocab])
            .reshape([vocab]),
        0,
    );
    let probs = last
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(f64::from(probs[target[at] as usize]))
}

/// Evaluates the folder `dir` on its `heldout.jsonl`.
pub fn evaluate(dir: &Path) -> Result<Evaluation> {
    let model = Seq2SeqModel::load(dir, &Device::flex()).context("loading the saved organism")?;
    let records = read_jsonl(&dir.join("heldout.jsonl"))?;
    let il = model.token_id("il")?;
    let mut e = Evaluation {
        examples: records.len(),
        pronoun_correct_with_context: 0,
        exact_with_context: 0,
        pronoun_correct_without_context: 0,
        il_without_context: 0,
        exact_without_context: 0,
        with_other_gender_distractor: 0,
        pronoun_correct_other_gender_distractor: 0,
        mean_p_correct_with_context: 0.0,
        mean_p_correct_without_context: 0.0,
    };
    for r in &records {
        let source = ids(&r["source_ids"])?;
        let target = ids(&r["target_ids"])?;
        let at = index(r, "pronoun_target_index")?;
        let at_current = index(r, "pronoun_current_index")?;
        let pronoun = *target
            .get(at)
            .context("pronoun_target_index past the target")?;
        let gender = r["gender"].as_str().context("gender")?;
        let other_distractor = r["distractors"]
            .as_array()
            .context("distractors")?
            .iter()
            .any(|d| d["gender"].as_str() != Some(gender));

        // With context: the pronoun is read from the generated current sentence (after the
        // separator), so a context translated with another length still counts right.
        let out = greedy(&model, &source)?;
        let current = match out.iter().position(|&t| t == SEPARATOR_ID) {
            Some(sep) => &out[sep + 1..],
            None => &out[..0],
        };
        let right = current.get(at_current) == Some(&pronoun);
        e.pronoun_correct_with_context += usize::from(right);
        e.exact_with_context += usize::from(out == target[..target.len() - 1]);
        if other_distractor {
            e.with_other_gender_distractor += 1;
            e.pronoun_correct_other_gender_distractor += usize::from(right);
        }
        e.mean_p_correct_with_context += p_forced(&model, &source, &target, at)?;

        // Without context: the current sentence alone.
        let sep_src = source
            .iter()
            .position(|&t| t == SEPARATOR_ID)
            .context("no separator in a held-out source")?;
        let sep_tgt = (at.checked_sub(at_current + 1))
            .filter(|&sep| target.get(sep) == Some(&SEPARATOR_ID))
            .context("pronoun indices that do not follow the separator")?;
        let (source, target) = (&source[sep_src + 1..], &target[sep_tgt + 1..]);
        let out = greedy(&model, source)?;
        e.pronoun_correct_without_context += usize::from(out.get(at_current) == Some(&pronoun));
        e.il_without_context += usize::from(out.get(at_current) == Some(&il));
        e.exact_without_context += usize::from(out == target[..target.len() - 1]);
        e.mean_p_correct_without_context += p_forced(&model, source, target, at_current)?;
    }
    let n = records.len().max(1) as f64;
    e.mean_p_correct_with_context /= n;
    e.mean_p_correct_without_context /= n;
    Ok(e)
}
