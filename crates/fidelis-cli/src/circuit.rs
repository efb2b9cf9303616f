//! `fidelis circuit discover` and `fidelis circuit show`: score every edge of a model's graph
//! for a task, write the EAP-IG graph JSON, and look at a saved graph.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fidelis_attribution::{
    Aggregation, EdgeAttribution, EdgeMethod, ExactPatching, attribute_edges_with_progress,
    exact_edges_with_progress,
};
use fidelis_circuit::{Ablation, Progress, PromptPair};
use fidelis_faithfulness::{
    EvalOptions, completeness_with_progress, faithfulness_curve_with_progress, mib_sizes,
};
use fidelis_graph::{Graph, GraphConfig, SvgOptions};
use fidelis_models::Model;
use fidelis_tasks::{Example, Task, TextTokenizer};

use crate::options::{DataOptions, DiscoverJob, DiscoverOptions, EvaluateOptions};
use crate::progress::{self, Bar, count, items};

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

/// The model's tokenizer as the tasks crate wants it.
fn task_tokenizer(model: &Model) -> impl TextTokenizer + '_ {
    fidelis::data::ModelTokens(&model.tokenizer)
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

/// Tokenizes examples into prompt pairs (BOS prepended when `add_bos` and the model has one):
/// [`fidelis::data::pairs_from_examples`].
pub fn tokenize(model: &Model, examples: &[Example], add_bos: bool) -> Result<Vec<PromptPair>> {
    Ok(fidelis::data::pairs_from_examples(
        model, examples, add_bos,
    )?)
}

/// The graph of `model`'s shape.
pub fn graph_for(model: &Model) -> Graph {
    let c = model.config();
    let mut cfg = GraphConfig::new(c.n_layers, c.n_heads, c.parallel_attn_mlp);
    cfg.d_model = Some(c.d_model);
    Graph::new(cfg)
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

/// What [`score_edges`] hands back: the scored graph and the ablation values it used (the
/// faithfulness curve that may follow reuses them).
pub struct Scored {
    /// The graph with every edge scored.
    pub graph: Graph,
    /// What ablated edges carried.
    pub ablation: Ablation,
}

/// Scores every edge of `model`'s graph on `pairs` as `job` says (only `subset` for exact
/// patching when given), reporting to `progress`. `device` is the `--device` the model runs
/// on, for the default number of workers.
pub fn score_edges(
    model: &Model,
    job: &DiscoverJob,
    pairs: &[PromptPair],
    subset: Option<Vec<(usize, usize)>>,
    device: &str,
    progress: &mut dyn Progress,
) -> Result<Scored> {
    let mut graph = graph_for(model);
    let ablation = job
        .ablation
        .values(&model.transformer, pairs, job.batch_size)?;
    let t = &model.transformer;
    match job.method.gradient() {
        Some(method) => {
            let mut opts = EdgeAttribution::new(method);
            opts.steps = job.steps;
            opts.batch_size = job.batch_size;
            opts.steps_per_pass = job.steps_per_pass;
            opts.workers = job
                .workers
                .unwrap_or_else(|| crate::device::default_workers(device));
            opts.ablation = ablation.clone();
            if job.mean_aggregation {
                opts.aggregation = Aggregation::Mean;
            }
            attribute_edges_with_progress(t, &mut graph, pairs, &job.loss, &opts, progress)?;
        }
        None => {
            let opts = ExactPatching {
                ablation: ablation.clone(),
                batch_size: job.batch_size,
                edges_per_pass: job.exact_per_pass,
                subset,
            };
            exact_edges_with_progress(t, &mut graph, pairs, &job.loss, &opts, progress)?;
        }
    }
    Ok(Scored { graph, ablation })
}

/// Runs `fidelis circuit discover` on `model` (which runs on `device`); returns the scored
/// graph.
pub fn discover(model: &Model, device: &str, opts: &DiscoverOptions) -> Result<Graph> {
    opts.validate()?;
    let job = &opts.job;
    anyhow::ensure!(
        opts.exact_from.is_none() || job.method == EdgeMethod::Exact,
        "--exact-from only applies to --method exact"
    );
    let examples = load_examples(model, &job.data.source()?)?;
    let pairs = tokenize(model, &examples, !job.data.no_bos)?;
    let subset = match &opts.exact_from {
        Some(from) => Some(top_edges_of(from, &graph_for(model), opts.exact_top)?),
        None => None,
    };
    let n_edges = graph_for(model).n_edges();
    if !crate::progress::quiet() {
        eprintln!(
            "{} examples · {} edges · method {} · loss {} · ablation {}",
            pairs.len(),
            count(n_edges),
            job.method,
            job.loss,
            job.ablation
        );
    }
    let n_subset = subset.as_ref().map(Vec::len);
    let start = Instant::now();
    let mut bar = Bar::new(&job.method.to_string());
    let scored = score_edges(model, job, &pairs, subset, device, &mut bar)?;
    bar.finish();
    let Scored {
        mut graph,
        ablation,
    } = scored;
    let scoring = start.elapsed();
    if opts.node_scores {
        let scores = graph.node_scores_from_edges();
        graph.set_node_scores(&scores)?;
    }
    if let Some(n) = opts.top_n {
        graph.apply_topn(n.min(graph.n_edges()), true)?;
        graph.prune();
    }
    crate::output::write(&opts.out, graph.to_json_string())?;
    print_top(&graph, opts.print_top);
    println!("wrote {}", opts.out.display());
    let scored = match n_subset {
        Some(n) => format!("scored {n} of {}", items(graph.n_edges(), "edge")),
        None => format!("scored {}", items(graph.n_edges(), "edge")),
    };
    if !opts.curve {
        progress::summary(&scored, start);
        return Ok(graph);
    }
    let curve_start = Instant::now();
    let points = discover_curve(model, &graph, &pairs, opts, ablation)?;
    progress::summary(
        &format!(
            "{scored} ({}) and evaluated {} ({})",
            progress::seconds(scoring),
            items(points, "circuit"),
            progress::seconds(curve_start.elapsed())
        ),
        start,
    );
    Ok(graph)
}

/// `discover --curve`: the faithfulness curve of the scored `graph` at the MIB sizes, printed
/// and written next to `--out` (`.curve.csv`, `.curve.svg`); returns its number of points.
fn discover_curve(
    model: &Model,
    graph: &Graph,
    pairs: &[PromptPair],
    opts: &DiscoverOptions,
    ablation: Ablation,
) -> Result<usize> {
    let job = &opts.job;
    let mut eval = EvalOptions::new(ablation);
    eval.batch_size = job.batch_size;
    let sizes = mib_sizes(graph.n_edges());
    let mut bar = Bar::new(fidelis_faithfulness::evaluate::STAGE);
    let curve = faithfulness_curve_with_progress(
        &model.transformer,
        graph,
        pairs,
        &job.loss,
        &sizes,
        &eval,
        &mut bar,
    )?;
    bar.finish();
    print_curve(&curve);
    let (csv, svg, png) = (
        opts.out.with_extension("curve.csv"),
        opts.out.with_extension("curve.svg"),
        opts.out.with_extension("curve.png"),
    );
    crate::output::write(&csv, curve_csv(&curve))?;
    let name = job.method.to_string();
    let title = plot_title(model, &job.data, &name);
    let plot = crate::plot::faithfulness_plot(&[(name.as_str(), &curve)], &title)?;
    crate::output::write_picture(&svg, &plot)?;
    crate::output::write_picture(&png, &plot)?;
    println!(
        "wrote {}, {} and {}",
        csv.display(),
        svg.display(),
        png.display()
    );
    Ok(curve.points.len())
}

/// The title of a curve picture: `model · task · method` (the data file's name for `--data`).
fn plot_title(model: &Model, data: &DataOptions, method: &str) -> String {
    let task = match (&data.task, &data.data) {
        (Some(task), _) => task.to_string(),
        (None, Some(path)) => file_name(path),
        (None, None) => "?".to_string(),
    };
    format!("{} · {task} · {method}", file_name(&model.source))
}

/// The last component of `path` (the whole path when it has none).
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
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
/// `pictures` are the `--svg` and `--png` paths (each optional).
pub fn show(path: &Path, top: usize, pictures: &[Option<PathBuf>]) -> Result<()> {
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
    let pictures: Vec<&PathBuf> = pictures.iter().flatten().collect();
    if !pictures.is_empty() {
        let picture = if graph.n_edges_in_graph() == 0 {
            let mut shown = graph.clone();
            shown.apply_topn(top.min(shown.n_edges()), true)?;
            shown.prune();
            eprintln!("no circuit marked in the file; drawing its top {top} edges");
            shown.to_svg(&SvgOptions::default())
        } else {
            graph.to_svg(&SvgOptions::default())
        };
        for out in pictures {
            crate::output::write_picture(out, &picture)?;
            println!("wrote {}", out.display());
        }
    }
    Ok(())
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
    opts.validate()?;
    let graph = read_graph(graph_path)?;
    let examples = load_examples(model, &opts.data.source()?)?;
    let pairs = tokenize(model, &examples, !opts.data.no_bos)?;
    let start = Instant::now();
    let eval = EvalOptions {
        ablation: opts
            .ablation
            .values(&model.transformer, &pairs, opts.batch_size)?,
        batch_size: opts.batch_size,
        circuits_per_pass: opts.circuits_per_pass,
        selection: opts.selection,
    };
    let metric = &opts.metric;
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
        let mut bar = Bar::new(fidelis_faithfulness::evaluate::STAGE);
        let c = completeness_with_progress(
            &model.transformer,
            &graph,
            &pairs,
            metric,
            &eval,
            &mut bar,
        )?;
        bar.finish();
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
        progress::summary(
            &format!(
                "evaluated a circuit of {} and its complement on {}",
                items(graph.n_edges_in_graph(), "edge"),
                items(pairs.len(), "example")
            ),
            start,
        );
        serde_json::to_value(&c)?
    } else {
        let mut bar = Bar::new(fidelis_faithfulness::evaluate::STAGE);
        let curve = faithfulness_curve_with_progress(
            &model.transformer,
            &graph,
            &pairs,
            metric,
            &sizes,
            &eval,
            &mut bar,
        )?;
        bar.finish();
        println!(
            "{} ablation, {} examples, circuits chosen by {}",
            eval.ablation.name(),
            pairs.len(),
            eval.selection.name()
        );
        print_curve(&curve);
        if let Some(csv) = &opts.csv {
            crate::output::write(csv, curve_csv(&curve))?;
            println!("wrote {}", csv.display());
        }
        let pictures: Vec<&PathBuf> = [&opts.svg, &opts.png].into_iter().flatten().collect();
        if !pictures.is_empty() {
            let label = format!("{} ({})", file_name(graph_path), eval.selection.name());
            let title = plot_title(model, &opts.data, &label);
            let plot = crate::plot::faithfulness_plot(&[(label.as_str(), &curve)], &title)?;
            for out in pictures {
                crate::output::write_picture(out, &plot)?;
                println!("wrote {}", out.display());
            }
        }
        progress::summary(
            &format!(
                "evaluated {} on {}",
                items(curve.points.len(), "circuit"),
                items(pairs.len(), "example")
            ),
            start,
        );
        serde_json::to_value(&curve)?
    };
    if let Some(json) = &opts.json {
        crate::output::write(json, serde_json::to_string_pretty(&result)?)?;
        println!("wrote {}", json.display());
    }
    Ok(())
}

/// Runs `fidelis circuit compare`: the rank correlation of the two files' edge scores, and the
/// edge and node overlap of their circuits (each the file's circuit, or its top `top` edges
/// when given).
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
    if let Some(rho) = fidelis_faithfulness::curve::score_rank_correlation(&ga, &gb)? {
        println!(
            "scores: Spearman ρ {rho:.4} over all {} edges",
            ga.n_edges()
        );
    }
    if let Some(n) = top {
        let (sa, sb) = (read_graph(a)?, read_graph(b)?);
        let shared = fidelis_faithfulness::curve::top_score_overlap(&sa, &sb, n)?;
        println!(
            "top {n} edges by |score| (before pruning): {shared} shared ({:.1} %)",
            100.0 * shared as f64 / n.min(sa.n_edges()).max(1) as f64
        );
    }
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
