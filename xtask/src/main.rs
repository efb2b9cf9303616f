//! `cargo xtask TASK`: project automation written in Rust (one file per task).

mod bench;
mod experiment;
mod fuzz;
mod organism;
mod seq2seq_organism;

use anyhow::{Result, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  bench [--bench model|circuit|token] [--backends flex,ndarray,wgpu,cuda] [--filter TEXT]
        run the criterion benches (benches/) and print a table of times and ratios
  bench --bench scale [--config FILE|smollm2] [--methods eap,eap-ig-inputs] [--batches 1,4,8]
        [--pairs 16] [--tokens 16] [--steps 5]
        wall time and peak RSS of edge attribution on random weights of a published shape
        (default models/configs/llama-3.2-1b.json), one process per case
  experiment faithfulness --model NAME|PATH --task TASK [--n 64] [--methods ...]
        score the task's graph with every edge attribution method, evaluate each at the MIB
        circuit sizes, write curves.csv, summary.json and faithfulness.svg to
        results/<model>/<task>/
  fuzz [--minutes 1] [--format safetensors,gguf,config,tokenizer,graph,tasks] [--inputs N]
        structure-aware fuzzing of every loader in-process under a heap cap (xtask/src/fuzz.rs)
  train-organism [--out models/organism] [--steps N] [--seed S]
        train the small GPT-2 shipped in models/organism/ (the default --model)
  train-seq2seq-organism [--out models/seq2seq-organism] [--steps N] [--seed S]
        train the small MarianMT shipped in models/seq2seq-organism/ (context-dependent
        pronoun translation, the encoder-decoder subject of PECoRe)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        Some("experiment") => experiment::run(&args[1..]),
        Some("train-organism") => organism::run(&args[1..]),
        Some("train-seq2seq-organism") => seq2seq_organism::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}
