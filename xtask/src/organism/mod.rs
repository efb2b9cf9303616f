//! `cargo xtask train-organism`: trains the small GPT-2 that Fidelis ships under
//! `models/organism/` and uses as its default model.
//!
//! The corpus (`corpus.rs`) is generated from `fidelis-tasks`; the tokenizer (`tokenizer.rs`)
//! is word-level over GPT-2-style pieces; the model (`model.rs`) is a GPT-2 made of Burn
//! modules; training (`train.rs`) uses Burn's autodiff and AdamW on the flex CPU backend;
//! `save.rs` writes a Hugging Face folder that `fidelis_models::Model::load` reads back.

pub mod card;
pub mod corpus;
pub mod model;
pub mod save;
pub mod tokenizer;
pub mod train;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use self::train::{TrainConfig, shape_of, train};

const USAGE: &str =
    "usage: cargo xtask train-organism [--out models/organism] [--steps N] [--seed S]
         [--lr F] [--batch N] [--warmup N] [--layers N] [--heads N] [--d-model N]
         [--docs N] [--share IOI,GT,SVA,CONTEXT] [--answer-weight F]
         [--eval-every N]
       cargo xtask train-organism --evaluate DIR
Without flags it rebuilds the committed organism; the others are for experiments.";

/// Runs `cargo xtask train-organism ARGS`.
pub fn run(args: &[String]) -> Result<()> {
    let mut cfg = TrainConfig::organism();
    let mut out = PathBuf::from("models/organism");
    let mut eval_every: Option<usize> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--out" => out = PathBuf::from(value()?),
            "--steps" => cfg.steps = value()?.parse().context("--steps")?,
            "--seed" => cfg.seed = value()?.parse().context("--seed")?,
            "--lr" => cfg.learning_rate = value()?.parse().context("--lr")?,
            "--batch" => cfg.batch_size = value()?.parse().context("--batch")?,
            "--warmup" => cfg.warmup_steps = value()?.parse().context("--warmup")?,
            "--layers" => cfg.n_layers = value()?.parse().context("--layers")?,
            "--heads" => cfg.n_heads = value()?.parse().context("--heads")?,
            "--d-model" => cfg.d_model = value()?.parse().context("--d-model")?,
            "--docs" => cfg.corpus.docs_per_family = value()?.parse().context("--docs")?,
            "--share" => cfg.corpus.family_share = parse_shares(value()?)?,
            "--eval-every" => eval_every = Some(value()?.parse().context("--eval-every")?),
            "--answer-weight" => cfg.answer_weight = value()?.parse().context("--answer-weight")?,
            "--evaluate" => return evaluate(Path::new(value()?)),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    if cfg.steps == 0 || cfg.batch_size == 0 || cfg.n_heads == 0 || cfg.n_layers == 0 {
        bail!("--steps, --batch, --heads and --layers must be positive\n{USAGE}");
    }
    if !cfg.d_model.is_multiple_of(cfg.n_heads) {
        bail!(
            "--d-model {} is not a multiple of --heads {}",
            cfg.d_model,
            cfg.n_heads
        );
    }
    if let Some(every) = eval_every
        && (every == 0 || !every.is_multiple_of(cfg.log_every))
    {
        bail!(
            "--eval-every {every} must be a positive multiple of the log interval ({})",
            cfg.log_every
        );
    }
    train_and_save(&cfg, &out, eval_every)
}

/// `"1,1,0.5,2"` → the four family shares.
fn parse_shares(text: &str) -> Result<[f64; 4]> {
    let shares = text
        .split(',')
        .map(|s| s.trim().parse::<f64>().context("--share"))
        .collect::<Result<Vec<_>>>()?;
    match shares[..] {
        [a, b, c, d] if shares.iter().all(|s| s.is_finite() && *s >= 0.0) => Ok([a, b, c, d]),
        _ => bail!("--share takes four non-negative numbers (IOI,GT,SVA,CONTEXT), got {text}"),
    }
}

/// Prints the task accuracies of the model folder `dir`.
fn evaluate(dir: &Path) -> Result<()> {
    let model = fidelis_models::Model::load(dir, &Device::flex())?;
    let accuracies =
        fidelis_cli::organism::task_accuracies(&model, card::EVAL_EXAMPLES, card::EVAL_SEED)?;
    print_accuracies(&accuracies);
    Ok(())
}

fn print_accuracies(accuracies: &[fidelis_cli::organism::TaskAccuracy]) {
    for a in accuracies {
        println!(
            "{:<14} {:>6.1}%  ({})",
            a.task,
            100.0 * a.accuracy(),
            a.criterion
        );
    }
}

/// Trains with `cfg` and writes the model folder and training log into `out`; with
/// `eval_every`, also saves the model to `out/checkpoint` every that many steps (a multiple of
/// the log interval) and prints its task accuracies.
pub fn train_and_save(cfg: &TrainConfig, out: &Path, eval_every: Option<usize>) -> Result<()> {
    let device = Device::flex().autodiff();
    println!("{cfg:?}");
    println!(
        "{:>6} {:>9} {:>8} {:>8} {:>8}",
        "step", "lr", "loss", "answer", "time_s"
    );
    let start = Instant::now();
    let trained = train(cfg, &device, |row, model, corpus| {
        println!(
            "{:>6} {:>9.2e} {:>8.4} {:>8.4} {:>8.1}",
            row.step, row.learning_rate, row.loss, row.answer_loss, row.elapsed_s
        );
        match eval_every {
            Some(every) if row.step.is_multiple_of(every) => {
                let dir = out.join("checkpoint");
                save::save_hf_folder(model, shape_of(cfg, corpus), &corpus.pieces, &dir)?;
                let model = fidelis_models::Model::load(&dir, &Device::flex())?;
                let accuracies = fidelis_cli::organism::task_accuracies(
                    &model,
                    card::EVAL_EXAMPLES,
                    card::EVAL_SEED,
                )?;
                print_accuracies(&accuracies);
                Ok(())
            }
            _ => Ok(()),
        }
    })?;
    let train_s = start.elapsed().as_secs_f64();
    println!(
        "trained {} steps in {train_s:.0} s on {} documents, vocabulary {}",
        cfg.steps,
        trained.corpus.documents.len(),
        trained.shape.d_vocab
    );
    save::save_hf_folder(&trained.model, trained.shape, &trained.corpus.pieces, out)?;
    save::write_log(&trained.log, &out.join("training_log.csv"))?;
    let facts = card::RunFacts {
        cfg,
        log: &trained.log,
        documents: trained.corpus.documents.len(),
        train_s,
    };
    for a in card::write_card(out, &facts)? {
        println!(
            "{:<14} {:>6.1}%  ({})",
            a.task,
            100.0 * a.accuracy(),
            a.criterion
        );
    }
    println!("wrote {}", out.display());
    Ok(())
}
