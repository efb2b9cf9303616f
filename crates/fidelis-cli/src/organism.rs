//! Task accuracy of a model on held-out generated examples: the numbers the organism's model
//! card reports and its test checks.
//!
//! Examples are generated for the model's own tokenizer and kept only when they fall on the
//! held-out side of [`fidelis_tasks::split`], which the organism's training corpus leaves out.
//! An example counts as solved when:
//! - IOI: logit(IO) > logit(S) (logit difference > 0);
//! - Greater-Than: the probability mass on end years after the start year is > 0.5;
//! - SVA: logit(agreeing verb) > logit(other form);
//! - context copying: every answer token is the argmax after the tokens before it (so greedy
//!   decoding reproduces the answer).

use anyhow::{Context, Result, bail};
use fidelis_models::{Batch, Hooks, Model};
use fidelis_tasks::context_copy::context_questions;
use fidelis_tasks::split::is_held_out;
use fidelis_tasks::{Example, Task, generate};

/// Examples per forward pass.
const BATCH: usize = 32;

/// How many candidates to generate per wanted held-out example (one in
/// [`fidelis_tasks::split::HELD_OUT_ONE_IN`] is held out; the rest is slack).
const OVERSAMPLE: usize = 12;

/// One task's accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskAccuracy {
    /// Task name (`ioi`, `greater-than`, `sva`, `context-copy`).
    pub task: &'static str,
    /// What counts as solved.
    pub criterion: &'static str,
    /// Examples solved.
    pub correct: usize,
    /// Examples tried.
    pub total: usize,
}

impl TaskAccuracy {
    /// `correct / total`.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
}

/// Accuracy on `n` held-out examples of each task (IOI, Greater-Than, SVA, context copying),
/// generated from `seed`.
pub fn task_accuracies(model: &Model, n: usize, seed: u64) -> Result<Vec<TaskAccuracy>> {
    let mut out = Vec::new();
    for (task, criterion) in [
        (Task::Ioi, "logit diff IO - S > 0"),
        (Task::GreaterThan, "P(end year > start year) > 0.5"),
        (Task::Sva, "logit(agreeing verb) > logit(other)"),
    ] {
        let examples = held_out_examples(model, task, n, seed)?;
        let correct = examples
            .chunks(BATCH)
            .map(|chunk| solved(model, task, chunk))
            .sum::<Result<usize>>()?;
        out.push(TaskAccuracy {
            task: task.name(),
            criterion,
            correct,
            total: examples.len(),
        });
    }
    out.push(context_copy_accuracy(model, n, seed)?);
    Ok(out)
}

fn held_out_examples(model: &Model, task: Task, n: usize, seed: u64) -> Result<Vec<Example>> {
    let tok = |text: &str| model.tokenizer.encode(text).map_err(|e| e.to_string());
    let candidates = generate(task, &tok, n * OVERSAMPLE, seed)
        .with_context(|| format!("generating {task} examples"))?;
    let held: Vec<Example> = candidates
        .into_iter()
        .filter(|example| is_held_out(&example.clean))
        .take(n)
        .collect();
    if held.len() < n {
        bail!("only {} held-out {task} examples of {n}", held.len());
    }
    Ok(held)
}

/// `[batch, d_vocab]` next-token logits at each sequence's last position, on the host.
fn last_logits(model: &Model, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
    let logits = all_logits(model, sequences)?;
    Ok(logits
        .into_iter()
        .zip(sequences)
        .map(|(rows, seq)| rows[seq.len() - 1].clone())
        .collect())
}

/// `[batch][pos][d_vocab]` logits of a padded batch, on the host.
fn all_logits(model: &Model, sequences: &[Vec<u32>]) -> Result<Vec<Vec<Vec<f32>>>> {
    let device = model.transformer.device();
    let pad = model.tokenizer.eos_id().unwrap_or(0);
    let batch = Batch::from_sequences(sequences, pad, device)?;
    let logits = model.transformer.forward_batch(&batch, &mut Hooks::new())?;
    let [b, pos, vocab] = logits.dims();
    let values = logits
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
    Ok((0..b)
        .map(|i| {
            (0..pos)
                .map(|p| values[(i * pos + p) * vocab..(i * pos + p + 1) * vocab].to_vec())
                .collect()
        })
        .collect())
}

fn solved(model: &Model, task: Task, examples: &[Example]) -> Result<usize> {
    let sequences = examples
        .iter()
        .map(|e| Ok(model.tokenizer.encode_prompt(&e.clean, true)?))
        .collect::<Result<Vec<_>>>()?;
    let logits = last_logits(model, &sequences)?;
    Ok(examples
        .iter()
        .zip(&logits)
        .filter(|(example, logits)| match task {
            Task::GreaterThan => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let total: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                let above: f32 = example
                    .correct
                    .iter()
                    .map(|&t| (logits[t as usize] - max).exp())
                    .sum();
                above / total > 0.5
            }
            _ => logits[example.correct[0] as usize] > logits[example.incorrect[0] as usize],
        })
        .count())
}

fn context_copy_accuracy(model: &Model, n: usize, seed: u64) -> Result<TaskAccuracy> {
    let questions: Vec<_> = context_questions(n * OVERSAMPLE, seed)
        .into_iter()
        .filter(|q| is_held_out(&q.prompt()))
        .take(n)
        .collect();
    if questions.len() < n {
        bail!("only {} held-out context questions of {n}", questions.len());
    }
    let mut correct = 0;
    for chunk in questions.chunks(BATCH) {
        let mut sequences = Vec::new();
        let mut spans = Vec::new();
        for q in chunk {
            let mut ids = model.tokenizer.encode_prompt(&q.prompt(), true)?;
            let start = ids.len();
            ids.extend(model.tokenizer.encode(&q.answer)?);
            spans.push(start..ids.len());
            sequences.push(ids);
        }
        let logits = all_logits(model, &sequences)?;
        for ((ids, span), rows) in sequences.iter().zip(&spans).zip(&logits) {
            let argmax = |row: &[f32]| {
                (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
            };
            if span
                .clone()
                .all(|p| argmax(&rows[p - 1]) == ids[p] as usize)
            {
                correct += 1;
            }
        }
    }
    Ok(TaskAccuracy {
        task: "context-copy",
        criterion: "greedy answer = the fact's location",
        correct,
        total: questions.len(),
    })
}
