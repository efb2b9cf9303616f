//! `cargo xtask train-seq2seq-organism`: trains the small MarianMT that Fidelis ships under
//! `models/seq2seq-organism/`, the encoder-decoder subject of context attribution.
//!
//! The task (`corpus.rs`) is toy English → toy French where the pronoun's gender is given only
//! by the previous sentence; the tokenizer (`tokenizer.rs`) is word-level; the model
//! (`model.rs`) is a MarianMT made of Burn modules; training (`train.rs`) uses Burn's autodiff
//! and AdamW on the flex CPU backend; `save.rs` writes a Hugging Face folder that
//! `MarianMTModel.from_pretrained` and `fidelis_models::Seq2SeqModel::load` read as-is;
//! `heldout.rs` writes the held-out set, `eval.rs` scores it and `card.rs` writes the model
//! card.

pub mod card;
pub mod corpus;
pub mod eval;
pub mod heldout;
pub mod model;
pub mod save;
pub mod tokenizer;
pub mod train;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use self::train::{TrainConfig, train};

/// Held-out examples written to `heldout.jsonl`.
pub const HELD_OUT_EXAMPLES: usize = 200;

const USAGE: &str = "usage: cargo xtask train-seq2seq-organism [--out models/seq2seq-organism]
         [--steps N] [--seed S] [--lr F] [--batch N] [--warmup N] [--layers N] [--heads N]
         [--d-model N] [--d-mlp N] [--pronoun-weight F] [--contextless F]
       cargo xtask train-seq2seq-organism --evaluate DIR
Without flags it rebuilds the committed organism; the others are for experiments.";

/// Runs `cargo xtask train-seq2seq-organism ARGS`.
pub fn run(args: &[String]) -> Result<()> {
    let mut cfg = TrainConfig::organism();
    let mut out = PathBuf::from("models/seq2seq-organism");
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
            "--layers" => {
                cfg.encoder_layers = value()?.parse().context("--layers")?;
                cfg.decoder_layers = cfg.encoder_layers;
            }
            "--heads" => cfg.n_heads = value()?.parse().context("--heads")?,
            "--d-model" => cfg.d_model = value()?.parse().context("--d-model")?,
            "--d-mlp" => cfg.d_mlp = value()?.parse().context("--d-mlp")?,
            "--pronoun-weight" => {
                cfg.pronoun_weight = value()?.parse().context("--pronoun-weight")?;
            }
            "--contextless" => cfg.mix.contextless = value()?.parse().context("--contextless")?,
            "--evaluate" => {
                let e = eval::evaluate(Path::new(value()?))?;
                println!("{e:#?}");
                return Ok(());
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    if cfg.steps == 0 || cfg.batch_size == 0 || cfg.n_heads == 0 || cfg.encoder_layers == 0 {
        bail!("--steps, --batch, --heads and --layers must be positive\n{USAGE}");
    }
    if !cfg.d_model.is_multiple_of(cfg.n_heads) {
        bail!(
            "--d-model {} is not a multiple of --heads {}",
            cfg.d_model,
            cfg.n_heads
        );
    }
    if !(0.0..1.0).contains(&cfg.mix.contextless) {
        bail!("--contextless must be in [0, 1)");
    }
    train_and_save(&cfg, &out)
}

/// Writes `heldout.jsonl` into `dir`: [`HELD_OUT_EXAMPLES`] examples drawn with `seed`.
pub fn write_held_out(dir: &Path, seed: u64) -> Result<()> {
    let vocabulary = tokenizer::vocabulary(&corpus::vocabulary());
    let ids: HashMap<String, u32> = vocabulary
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), i as u32))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(2000));
    let records = corpus::held_out(&mut rng, HELD_OUT_EXAMPLES)
        .iter()
        .map(|e| heldout::record(e, &ids))
        .collect::<Result<Vec<_>>>()?;
    heldout::write_jsonl(&records, &dir.join("heldout.jsonl"))
}

/// Trains with `cfg` and writes the model folder, held-out set, log and card into `out`.
pub fn train_and_save(cfg: &TrainConfig, out: &Path) -> Result<()> {
    let device = Device::flex().autodiff();
    println!("{cfg:?}");
    println!(
        "{:>6} {:>9} {:>8} {:>8} {:>8}",
        "step", "lr", "loss", "pronoun", "time_s"
    );
    let start = Instant::now();
    let trained = train(cfg, &device, |row| {
        println!(
            "{:>6} {:>9.2e} {:>8.4} {:>8.4} {:>8.1}",
            row.step, row.learning_rate, row.loss, row.pronoun_loss, row.elapsed_s
        );
        Ok(())
    })?;
    let train_s = start.elapsed().as_secs_f64();
    println!("trained {} steps in {train_s:.0} s", cfg.steps);
    save::save_hf_folder(&trained.model, trained.shape, &corpus::vocabulary(), out)?;
    save::write_log(&trained.log, &out.join("training_log.csv"))?;
    write_held_out(out, cfg.seed)?;
    let evaluation = eval::evaluate(out)?;
    println!("{evaluation:#?}");
    card::write_card(
        out,
        &card::RunFacts {
            cfg,
            log: &trained.log,
            vocab: trained.shape.d_vocab,
            parameters: trained.model.num_params(),
            train_s,
            eval: &evaluation,
        },
    )?;
    println!(
        "pronoun accuracy: {:.1}% with context, {:.1}% without; wrote {}",
        100.0 * evaluation.accuracy_with_context(),
        100.0 * evaluation.accuracy_without_context(),
        out.display()
    );
    Ok(())
}
