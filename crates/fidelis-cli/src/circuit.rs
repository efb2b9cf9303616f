//! `fidelis circuit discover` and `fidelis circuit show`: score every edge of a model's graph
//! for a task, write the EAP-IG graph JSON, and look at a saved graph.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fidelis_attribution::{Aggregation, EdgeAttribution, Method, attribute_edges};
use fidelis_faithfulness::{Ablation, BuiltinMetric, NodeMeans, PromptPair};
use fidelis_graph::{Graph, GraphConfig, SvgOptions};
use fidelis_models::Model;
use fidelis_tasks::{Example, Task, TextTokenizer};

use crate::progress;

/// Where the examples come from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// A generated task (`ioi`, `greater-than`, ...): how many examples, with which seed.
    Task {
        /// The task.
        task: Task,
        /// Number of examples.
        n: usize,
        /// Generator seed.
        seed: u64,
    },
    /// An EAP-IG CSV (`clean, corrupted, correct_idx, incorrect_idx`) or a JSONL with text
    /// answers.
    File(PathBuf),
}

/// Options of `fidelis circuit discover`.
#[derive(Debug, Clone)]
pub struct DiscoverOptions {
    /// The examples.
    pub data: DataSource,
    /// Attribution method.
    pub method: Method,
    /// EAP-IG interpolation steps.
    pub steps: usize,
    /// The loss (`logit-diff`, `prob-diff`, `kl`, `js`).
    pub loss: BuiltinMetric,
    /// `patching`, `mean` or `zero`.
    pub ablation: String,
    /// Examples per batch.
    pub batch_size: usize,
    /// Interpolation steps stacked per pass.
    pub steps_per_pass: usize,
    /// Passes of eap-ig-activations run at once on their own threads.
    pub workers: usize,
    /// Mean instead of sum over d_model.
    pub mean_aggregation: bool,
    /// Prepend BOS to every prompt.
    pub add_bos: bool,
    /// Exact: only the top edges of this previously scored graph.
    pub exact_from: Option<PathBuf>,
    /// Exact: how many of its top edges (by |score|).
    pub exact_top: usize,
    /// Exact: edges patched per forward.
    pub exact_per_pass: usize,
    /// Mark the top-n edges as the circuit (then prune) in the written graph.
    pub top_n: Option<usize>,
    /// Number of edges to print.
    pub print_top: usize,
    /// Also evaluate the faithfulness curve at the MIB sizes (table, CSV and SVG plot).
    pub curve: bool,
    /// Store node scores (each node's summed outgoing edge scores) in the graph JSON.
    pub node_scores: bool,
    /// Where to write the graph JSON.
    pub out: PathBuf,
}

/// The model's tokenizer as the tasks crate wants it.
fn task_tokenizer(model: &Model) -> impl TextTokenizer + '_ {
    |text: &str| model.tokenizer.encode(text).map_err(|e| e.to_string())
}

/// Loads or generates the examples.
pub fn load_examples(model: &Model, data: &DataSource) -> Result<Vec<Example>> {
    let tok = task_tokenizer(model);
    Ok(match data {
        DataSource::Task { task, n, seed } => fidelis_tasks::generate(*task, &tok, *n, *seed)?,
        DataSource::File(path) => {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            match ext {
                "csv" => fidelis_tasks::load_csv(path, &tok)?,
                "jsonl" | "json" => fidelis_tasks::load_jsonl(path, &tok)?,
                _ => bail!(
                    "{}: expected a .csv (EAP-IG columns) or .jsonl file",
                    path.display()
                ),
            }
        }
    })
}

/// Tokenizes examples into prompt pairs (BOS prepended when `add_bos` and the model has one).
pub fn tokenize(model: &Model, examples: &[Example], add_bos: bool) -> Result<Vec<PromptPair>> {
    examples
        .iter()
        .enumerate()
        .map(|(i, ex)| {
            let enc = |text: &str| {
                model
                    .tokenizer
                    .encode_prompt(text, add_bos)
                    .with_context(|| format!("example {i}: tokenizing {text:?}"))
            };
            Ok(PromptPair {
                clean: enc(&ex.clean)?,
                corrupted: enc(&ex.corrupted)?,
                correct: ex.correct.clone(),
                incorrect: ex.incorrect.clone(),
            })
        })
        .collect()
}

/// The graph of `model`'s shape.
pub fn graph_for(model: &Model) -> Graph {
    let c = model.config();
    let mut cfg = GraphConfig::new(c.n_layers, c.n_heads, c.parallel_attn_mlp);
    cfg.d_model = Some(c.d_model);
    Graph::new(cfg)
}

/// What ablated edges carry, by name (`patching`, `mean` over the clean prompts, `zero`).
pub fn ablation(model: &Model, name: &str, pairs: &[PromptPair], batch: usize) -> Result<Ablation> {
    Ok(match name {
        "patching" => Ablation::Patching,
        "zero" => Ablation::Zero,
        "mean" => {
            let prompts: Vec<Vec<u32>> = pairs.iter().map(|p| p.clean.clone()).collect();
            Ablation::Mean(Box::new(NodeMeans::compute(
                &model.transformer,
                &prompts,
                batch,
            )?))
        }
        other => bail!("unknown ablation {other:?} (expected patching, mean or zero)"),
    })
}

/// The top `n` edges (by |score|) of a saved graph, as `(row, column)` of `graph`.
fn top_edges_of(path: &Path, graph: &Graph, n: usize) -> Result<Vec<(usize, usize)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let saved =
        Graph::from_json_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    saved
        .top_edges(n, true)
        .iter()
        .map(|e| Ok(graph.edge_index(&e.name)?))
        .collect()
}

/// Runs `fidelis circuit discover`; returns the scored graph.
pub fn discover(model: &Model, opts: &DiscoverOptions) -> Result<Graph> {
    let examples = load_examples(model, &opts.data)?;
    let pairs = tokenize(model, &examples, opts.add_bos)?;
    let mut graph = graph_for(model);
    let mut attribution = EdgeAttribution::new(opts.method);
    attribution.steps = opts.steps;
    attribution.batch_size = opts.batch_size;
    attribution.steps_per_pass = opts.steps_per_pass;
    attribution.workers = opts.workers;
    attribution.exact_edges_per_pass = opts.exact_per_pass;
    attribution.ablation = ablation(model, &opts.ablation, &pairs, opts.batch_size)?;
    if opts.mean_aggregation {
        attribution.aggregation = Aggregation::Mean;
    }
    if let Some(from) = &opts.exact_from {
        attribution.exact_subset = Some(top_edges_of(from, &graph, opts.exact_top)?);
    }
    eprintln!(
        "{} examples · {} edges · method {} · loss {} · ablation {}",
        pairs.len(),
        graph.n_edges(),
        opts.method.name(),
        fidelis_faithfulness::Metric::name(&opts.loss),
        attribution.ablation.name()
    );
    let bar = progress::bar(1, opts.method.name());
    let start = Instant::now();
    attribute_edges(
        &model.transformer,
        &mut graph,
        &pairs,
        &opts.loss,
        &attribution,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    if opts.node_scores {
        let scores = graph.node_scores_from_edges();
        graph.set_node_scores(&scores)?;
    }
    if let Some(n) = opts.top_n {
        graph.apply_topn(n.min(graph.n_edges()), true)?;
        graph.prune();
    }
    std::fs::write(&opts.out, graph.to_json_string())
        .with_context(|| format!("writing {}", opts.out.display()))?;
    println!("scored {} edges in {secs:.1} s", graph.n_edges());
    print_top(&graph, opts.print_top);
    println!("wrote {}", opts.out.display());
    if opts.curve {
        let eval = fidelis_faithfulness::EvalOptions {
            ablation: attribution.ablation.clone(),
            batch_size: opts.batch_size,
            circuits_per_pass: 4,
            selection: Default::default(),
        };
        let sizes = fidelis_faithfulness::mib_sizes(graph.n_edges());
        let curve = fidelis_faithfulness::faithfulness_curve(
            &model.transformer,
            &graph,
            &pairs,
            &opts.loss,
            &sizes,
            &eval,
        )?;
        print_curve(&curve);
        let (csv, svg) = (
            opts.out.with_extension("curve.csv"),
            opts.out.with_extension("curve.svg"),
        );
        std::fs::write(&csv, curve_csv(&curve))
            .with_context(|| format!("writing {}", csv.display()))?;
        let plot =
            crate::plot::faithfulness_plot(&[(opts.method.name(), &curve)], "discovered circuit");
        std::fs::write(&svg, plot).with_context(|| format!("writing {}", svg.display()))?;
        println!("wrote {} and {}", csv.display(), svg.display());
    }
    Ok(graph)
}

/// Prints a faithfulness curve as a table.
pub fn print_curve(curve: &fidelis_faithfulness::Curve) {
    println!(
        "clean metric {:.4} · empty circuit {:.4}",
        curve.clean, curve.empty
    );
    println!(
        "{:>10} {:>10} {:>9} {:>10} {:>13}",
        "requested", "edges", "fraction", "metric", "faithfulness"
    );
    for p in &curve.points {
        println!(
            "{:>10} {:>10} {:>8.3}% {:>10.4} {:>13.3}",
            p.requested_edges,
            p.edges,
            100.0 * p.fraction,
            p.metric,
            p.faithfulness
        );
    }
    println!("CPR {:.3} · CMD {:.3}", curve.cpr, curve.cmd);
}

/// Prints the top `n` edges by |score|.
pub fn print_top(graph: &Graph, n: usize) {
    if n == 0 {
        return;
    }
    println!("{:>4}  {:<28} {:>12}  in circuit", "rank", "edge", "score");
    for (rank, e) in graph.top_edges(n, true).iter().enumerate() {
        let mark = if e.in_graph { "yes" } else { "" };
        println!("{:>4}  {:<28} {:>12.5}  {mark}", rank + 1, e.name, e.score);
    }
}

/// Runs `fidelis circuit show`.
pub fn show(path: &Path, top: usize, svg: Option<&Path>) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let graph =
        Graph::from_json_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let cfg = graph.cfg();
    println!(
        "{}: {} layers × {} heads · {} nodes · {} edges · {} edges and {} nodes in the circuit",
        path.display(),
        cfg.n_layers,
        cfg.n_heads,
        graph.n_nodes(),
        graph.n_edges(),
        graph.n_edges_in_graph(),
        graph.nodes_in_graph().iter().filter(|n| **n).count()
    );
    print_top(&graph, top);
    if let Some(out) = svg {
        let picture = if graph.n_edges_in_graph() == 0 {
            let mut shown = graph.clone();
            shown.apply_topn(top.min(shown.n_edges()), true)?;
            shown.prune();
            eprintln!("no circuit marked in the file; drawing its top {top} edges");
            shown.to_svg(&SvgOptions::default())
        } else {
            graph.to_svg(&SvgOptions::default())
        };
        std::fs::write(out, picture).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// Options of `fidelis circuit evaluate`.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// The examples.
    pub data: DataSource,
    /// The metric (`logit-diff`, `prob-diff`, `kl`, `js`, `correct-prob`).
    pub metric: BuiltinMetric,
    /// `patching`, `mean` or `zero`.
    pub ablation: String,
    /// Circuit sizes (top-n edges of the graph's scores); empty = the graph's own circuit.
    pub sizes: Vec<usize>,
    /// Use the MIB edge fractions as sizes.
    pub mib: bool,
    /// Examples per batch.
    pub batch_size: usize,
    /// Circuits stacked into one forward.
    pub circuits_per_pass: usize,
    /// How each size's circuit is chosen.
    pub selection: fidelis_faithfulness::Selection,
    /// Prepend BOS.
    pub add_bos: bool,
    /// Write the curve as CSV here.
    pub csv: Option<PathBuf>,
    /// Write the result as JSON here.
    pub json: Option<PathBuf>,
}

/// Reads a graph JSON.
pub fn read_graph(path: &Path) -> Result<Graph> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Graph::from_json_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The curve as CSV (`requested_edges,edges,fraction,metric,faithfulness`).
pub fn curve_csv(curve: &fidelis_faithfulness::Curve) -> String {
    let mut out = String::from("requested_edges,edges,fraction,metric,faithfulness\n");
    for p in &curve.points {
        out.push_str(&format!(
            "{},{},{:.6},{},{}\n",
            p.requested_edges, p.edges, p.fraction, p.metric, p.faithfulness
        ));
    }
    out
}

/// Runs `fidelis circuit evaluate`: a faithfulness curve over sizes, or the file's own circuit
/// with its completeness.
pub fn evaluate(model: &Model, graph_path: &Path, opts: &EvaluateOptions) -> Result<()> {
    use fidelis_faithfulness::{EvalOptions, completeness, faithfulness_curve, mib_sizes};
    let graph = read_graph(graph_path)?;
    let examples = load_examples(model, &opts.data)?;
    let pairs = tokenize(model, &examples, opts.add_bos)?;
    let eval = EvalOptions {
        ablation: ablation(model, &opts.ablation, &pairs, opts.batch_size)?,
        batch_size: opts.batch_size,
        circuits_per_pass: opts.circuits_per_pass,
        selection: opts.selection,
    };
    let metric = &opts.metric;
    let start = Instant::now();
    let sizes = if opts.mib {
        mib_sizes(graph.n_edges())
    } else {
        opts.sizes.clone()
    };
    let result = if sizes.is_empty() {
        anyhow::ensure!(
            graph.n_edges_in_graph() > 0,
            "{} marks no circuit; give --sizes or --mib to evaluate its top edges",
            graph_path.display()
        );
        let c = completeness(&model.transformer, &graph, &pairs, metric, &eval)?;
        println!(
            "circuit of {} edges ({} ablation)",
            graph.n_edges_in_graph(),
            eval.ablation.name()
        );
        println!(
            "  metric {:.4} · faithfulness {:.3}",
            c.circuit_metric, c.circuit_faithfulness
        );
        println!(
            "  complement (full model without the circuit): metric {:.4} · faithfulness {:.3}",
            c.complement_metric, c.complement_faithfulness
        );
        serde_json::to_value(&c)?
    } else {
        let curve = faithfulness_curve(&model.transformer, &graph, &pairs, metric, &sizes, &eval)?;
        println!(
            "{} ablation, {} examples, circuits chosen by {}",
            eval.ablation.name(),
            pairs.len(),
            eval.selection.name()
        );
        print_curve(&curve);
        if let Some(csv) = &opts.csv {
            std::fs::write(csv, curve_csv(&curve))
                .with_context(|| format!("writing {}", csv.display()))?;
            println!("wrote {}", csv.display());
        }
        serde_json::to_value(&curve)?
    };
    eprintln!("evaluated in {:.1} s", start.elapsed().as_secs_f64());
    if let Some(json) = &opts.json {
        std::fs::write(json, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("writing {}", json.display()))?;
        println!("wrote {}", json.display());
    }
    Ok(())
}

/// Runs `fidelis circuit compare`: edge and node overlap of two circuits (each the file's
/// circuit, or its top `top` edges when given).
pub fn compare(a: &Path, b: &Path, top: Option<usize>) -> Result<()> {
    let select = |path: &Path| -> Result<Graph> {
        let g = read_graph(path)?;
        match top {
            Some(n) => Ok(fidelis_faithfulness::curve::top_circuit(&g, n)?),
            None => {
                anyhow::ensure!(
                    g.n_edges_in_graph() > 0,
                    "{} marks no circuit; give --top N to compare top edges",
                    path.display()
                );
                Ok(g)
            }
        }
    };
    let (ga, gb) = (select(a)?, select(b)?);
    let o = fidelis_faithfulness::overlap(&ga, &gb)?;
    println!(
        "edges: {} shared of {} in either (IoU {:.3}); {} only in {}, {} only in {}",
        o.shared_edges,
        o.union_edges,
        o.edge_iou,
        o.only_first,
        a.display(),
        o.only_second,
        b.display()
    );
    println!(
        "nodes: {} shared of {} in either (IoU {:.3})",
        o.shared_nodes, o.union_nodes, o.node_iou
    );
    Ok(())
}
