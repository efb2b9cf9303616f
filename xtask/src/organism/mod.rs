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

use self::train::{TrainConfig, train};

const USAGE: &str = "usage: cargo xtask train-organism [--out models/organism] [--steps N] [--seed S]\n       cargo xtask train-organism --evaluate DIR";

/// Runs `cargo xtask train-organism ARGS`.
pub fn run(args: &[String]) -> Result<()> {
    let mut cfg = TrainConfig::organism();
    let mut out = PathBuf::from("models/organism");
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
            "--evaluate" => return evaluate(Path::new(value()?)),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    train_and_save(&cfg, &out)
}

/// Prints the task accuracies of the model folder `dir`.
fn evaluate(dir: &Path) -> Result<()> {
    let model = fidelis_models::Model::load(dir, &Device::flex())?;
    let accuracies =
        fidelis_cli::organism::task_accuracies(&model, card::EVAL_EXAMPLES, card::EVAL_SEED)?;
    for a in accuracies {
        println!(
            "{:<14} {:>6.1}%  ({})",
            a.task,
            100.0 * a.accuracy(),
            a.criterion
        );
    }
    Ok(())
}

/// Trains with `cfg` and writes the model folder and training log into `out`.
pub fn train_and_save(cfg: &TrainConfig, out: &Path) -> Result<()> {
    let device = Device::flex().autodiff();
    println!("{cfg:?}");
    println!(
        "{:>6} {:>9} {:>8} {:>8} {:>8}",
        "step", "lr", "loss", "answer", "time_s"
    );
    let start = Instant::now();
    let trained = train(cfg, &device, |row| {
        println!(
            "{:>6} {:>9.2e} {:>8.4} {:>8.4} {:>8.1}",
            row.step, row.learning_rate, row.loss, row.answer_loss, row.elapsed_s
        );
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
