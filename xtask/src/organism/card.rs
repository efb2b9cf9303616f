//! `MODEL_CARD.md`: how the organism was trained, its task accuracies, how to rebuild it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use burn::prelude::*;
use fidelis_cli::organism::{TaskAccuracy, task_accuracies};
use fidelis_models::Model;

use super::train::{LogRow, TrainConfig};

/// Held-out examples per task in the card (the test uses the same number and seed).
pub const EVAL_EXAMPLES: usize = 200;
/// Seed of the card's held-out examples.
pub const EVAL_SEED: u64 = 1;

/// Facts about the run that the card reports.
pub struct RunFacts<'a> {
    /// The configuration.
    pub cfg: &'a TrainConfig,
    /// The loss curve.
    pub log: &'a [LogRow],
    /// Training documents.
    pub documents: usize,
    /// Wall time of the whole training run, corpus generation included.
    pub train_s: f64,
}

/// Evaluates the saved model in `dir` and writes `dir/MODEL_CARD.md`; returns the accuracies.
pub fn write_card(dir: &Path, facts: &RunFacts<'_>) -> Result<Vec<TaskAccuracy>> {
    let model = Model::load(dir, &Device::flex()).context("loading the saved organism")?;
    let accuracies = task_accuracies(&model, EVAL_EXAMPLES, EVAL_SEED)?;
    let cfg = facts.cfg;
    let last = facts.log.last().context("empty training log")?;
    let bytes = std::fs::metadata(dir.join("model.safetensors"))?.len();
    let mut md = String::new();
    writeln!(md, "# Organism: the small GPT-2 Fidelis trains and ships\n")?;
    writeln!(
        md,
        "A {}-layer GPT-2 (d_model {}, {} heads, d_mlp {}, context {}, vocabulary {}, {} parameters, \
         {:.1} MB of f32 safetensors) trained by `cargo xtask train-organism` with Burn (autodiff, \
         AdamW) on a synthetic corpus generated in Rust from `fidelis-tasks`. It is the default \
         `--model` of every `fidelis` command, so Fidelis runs offline on a fresh clone.\n",
        cfg.n_layers,
        cfg.d_model,
        cfg.n_heads,
        4 * cfg.d_model,
        cfg.n_ctx,
        model.config().d_vocab,
        model.transformer.parameter_count(),
        bytes as f64 / 1e6
    )?;
    writeln!(md, "## Task accuracy (held-out prompts)\n")?;
    writeln!(
        md,
        "{EVAL_EXAMPLES} examples per task, generated with seed {EVAL_SEED} for the organism's tokenizer \
         from prompts on the held-out side of `fidelis_tasks::split` (never in the training corpus). \
         Checked by `cargo test -p fidelis-cli --test organism`.\n"
    )?;
    writeln!(md, "| task | criterion | accuracy |\n|---|---|---|")?;
    for a in &accuracies {
        writeln!(
            md,
            "| {} | {} | {:.1}% ({}/{}) |",
            a.task,
            a.criterion,
            100.0 * a.accuracy(),
            a.correct,
            a.total
        )?;
    }
    writeln!(md, "\n## Training\n")?;
    writeln!(
        md,
        "- Corpus: {} documents, `<|endoftext|> prompt answer . <|endoftext|>`: IOI (answer the \
         indirect object), Greater-Than (a random end year after the start year), SVA (the \
         agreeing verb) and context-copying questions, one location fact among one or two \
         distractors (\"Context: The coin is blue. The key is in the red box. Question: Where is \
         the key? Answer: in the red box.\").",
        facts.documents
    )?;
    writeln!(
        md,
        "- Tokenizer: word-level over GPT-2-style pieces (`\" Mary\"` is one token, `\" 1745\"` is \
         `\" 17\"` + `\"45\"`), `<|endoftext|>` = id 0 is BOS, EOS and padding."
    )?;
    writeln!(
        md,
        "- Objective: next-token cross-entropy on every token, answer tokens weighted {}x.",
        cfg.answer_weight
    )?;
    writeln!(
        md,
        "- Optimizer: AdamW (weight decay 0.01, gradient norm clipped at 1), peak learning rate {}, \
         {} warmup steps then cosine decay to 10%, batch {} documents, {} steps, seed {}.",
        cfg.learning_rate, cfg.warmup_steps, cfg.batch_size, cfg.steps, cfg.seed
    )?;
    writeln!(
        md,
        "- Final losses (mean of the last {} steps): {:.3} nats/token overall, {:.3} on answer tokens.",
        cfg.log_every, last.loss, last.answer_loss
    )?;
    writeln!(
        md,
        "- Time: {:.0} s on the flex CPU backend (2 shared cores). The loss curve is in \
         `training_log.csv`.\n",
        facts.train_s
    )?;
    writeln!(md, "## Rebuild\n")?;
    writeln!(
        md,
        "```\ncargo xtask train-organism            # writes models/organism/\n```\n\n\
         The same seed on the same backend gives identical weights (tested on a few steps by \
         `cargo test -p xtask --release`)."
    )?;
    std::fs::write(dir.join("MODEL_CARD.md"), md)?;
    Ok(accuracies)
}
