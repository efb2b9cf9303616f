//! `cargo xtask experiment faithfulness`: the EAP-IG paper's central comparison. Every edge
//! attribution method scores the graph on one task; each scored graph is evaluated at the MIB
//! circuit sizes; the curves, a summary and a plot land in `results/<model>/<task>/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fidelis_attribution::{EdgeAttribution, Method, attribute_edges};
use fidelis_cli::circuit::{DataSource, curve_csv, graph_for, load_examples, tokenize};
use fidelis_cli::plot::faithfulness_plot;
use fidelis_cli::{device::parse_device, progress};
use fidelis_faithfulness::{
    Ablation, BuiltinMetric, Curve, CurvePoint, EvalOptions, Selection, faithfulness_curve,
    mib_sizes,
};
use fidelis_models::Model;
use fidelis_models::fetch::resolve_model_name;
use fidelis_tasks::Task;

const USAGE: &str = "usage: cargo xtask experiment faithfulness --model NAME|PATH --task TASK
    [--n 64] [--seed 0] [--methods eap,eap-ig-inputs,eap-ig-activations,clean-corrupted]
    [--steps 5] [--steps-per-pass 1] [--workers N] [--batch-size 16] [--selection abs[,signed,greedy]] [--device cpu]
    [--out results]

Each method's graph is evaluated once per selection rule (abs: top edges by |score|, the
paper's rule; signed: top edges by signed score; greedy: grown from the logits); curves of
other rules than abs are labelled METHOD/RULE. Results are rewritten after every method.";

/// Parsed options.
struct Options {
    model: String,
    task: Task,
    n: usize,
    seed: u64,
    methods: Vec<Method>,
    steps: usize,
    steps_per_pass: usize,
    /// Concurrent eap-ig-activations passes; `None`: every core on a CPU device, 1 otherwise.
    workers: Option<usize>,
    batch_size: usize,
    selections: Vec<Selection>,
    device: String,
    out: PathBuf,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        model: "smollm2".into(),
        task: Task::Ioi,
        n: 64,
        seed: 0,
        methods: vec![
            Method::Eap,
            Method::EapIgInputs,
            Method::EapIgActivations,
            Method::CleanCorrupted,
        ],
        steps: 5,
        steps_per_pass: 1,
        workers: None,
        batch_size: 16,
        selections: vec![Selection::TopAbs],
        device: "cpu".into(),
        out: PathBuf::from("results"),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--model" => o.model = value()?.clone(),
            "--task" => o.task = value()?.parse()?,
            "--n" => o.n = value()?.parse()?,
            "--seed" => o.seed = value()?.parse()?,
            "--steps" => o.steps = value()?.parse()?,
            "--steps-per-pass" => o.steps_per_pass = value()?.parse()?,
            "--workers" => o.workers = Some(value()?.parse()?),
            "--batch-size" => o.batch_size = value()?.parse()?,
            "--device" => o.device = value()?.clone(),
            "--selection" => {
                o.selections = value()?
                    .split(',')
                    .map(|m| m.parse().map_err(anyhow::Error::msg))
                    .collect::<Result<_>>()?;
            }
            "--out" => o.out = PathBuf::from(value()?),
            "--methods" => {
                o.methods = value()?
                    .split(',')
                    .map(|m| m.parse().map_err(anyhow::Error::msg))
                    .collect::<Result<_>>()?;
            }
            other => bail!("unknown option {other}\n\n{USAGE}"),
        }
    }
    Ok(o)
}

/// The metric of a task: the probability difference for Greater-Than (the paper's choice),
/// the logit difference otherwise.
fn metric_for(task: Task) -> BuiltinMetric {
    match task {
        Task::GreaterThan => BuiltinMetric::ProbDiff,
        _ => BuiltinMetric::LogitDiff,
    }
}

/// One method's result under one selection rule.
struct Run {
    method: Method,
    selection: Selection,
    seconds: f64,
    curve: Curve,
}

impl Run {
    /// `method` for the abs rule, `method/rule` otherwise.
    fn label(&self) -> String {
        match self.selection {
            Selection::TopAbs => self.method.name().to_string(),
            other => format!("{}/{}", self.method.name(), other.name()),
        }
    }
}

/// Runs `cargo xtask experiment ...`.
pub fn run(args: &[String]) -> Result<()> {
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("faithfulness"), _) => faithfulness(&parse(&args[1..])?),
        (Some("replot"), Some(dir)) => replot(Path::new(dir)),
        _ => bail!("{USAGE}\n\nor: cargo xtask experiment replot results/<model>/<task>"),
    }
}

/// Redraws `faithfulness.svg` of a results folder from its `curves.csv` and `summary.json`
/// (no model runs).
fn replot(dir: &Path) -> Result<()> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let summary: serde_json::Value = serde_json::from_str(&read("summary.json")?)?;
    let mut curves: Vec<(String, Curve)> = Vec::new();
    for (i, line) in read("curves.csv")?.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || anyhow::anyhow!("curves.csv line {}: {line:?}", i + 1);
        let [label, requested, edges, fraction, metric, faithfulness] = f[..] else {
            return Err(bad());
        };
        let point = CurvePoint {
            requested_edges: requested.parse().map_err(|_| bad())?,
            edges: edges.parse().map_err(|_| bad())?,
            fraction: fraction.parse().map_err(|_| bad())?,
            metric: metric.parse().map_err(|_| bad())?,
            faithfulness: faithfulness.parse().map_err(|_| bad())?,
        };
        match curves.iter_mut().find(|(l, _)| l == label) {
            Some((_, c)) => c.points.push(point),
            None => curves.push((
                label.to_string(),
                Curve {
                    clean: 0.0,
                    empty: 0.0,
                    points: vec![point],
                    cpr: 0.0,
                    cmd: 0.0,
                },
            )),
        }
    }
    let name = |key: &str| summary[key].as_str().unwrap_or("?").to_string();
    let title = format!("{} · {}", name("model"), name("task"));
    let lines: Vec<(&str, &Curve)> = curves.iter().map(|(l, c)| (l.as_str(), c)).collect();
    std::fs::write(
        dir.join("faithfulness.svg"),
        faithfulness_plot(&lines, &title),
    )?;
    println!("wrote {}", dir.join("faithfulness.svg").display());
    Ok(())
}

fn faithfulness(o: &Options) -> Result<()> {
    let device = parse_device(&o.device)?;
    let path = resolve_model_name(&o.model)?;
    let model =
        Model::load(&path, &device).with_context(|| format!("loading {}", path.display()))?;
    let examples = load_examples(
        &model,
        &DataSource::Task {
            task: o.task,
            n: o.n,
            seed: o.seed,
        },
    )?;
    let pairs = tokenize(&model, &examples, true)?;
    let metric = metric_for(o.task);
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let model_name = if o.model.contains('/') || o.model.contains('.') {
        stem
    } else {
        o.model.as_str()
    };
    let dir = o.out.join(model_name).join(o.task.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut runs = Vec::new();
    for &method in &o.methods {
        let mut graph = graph_for(&model);
        let mut opts = EdgeAttribution::new(method);
        opts.steps = o.steps;
        opts.steps_per_pass = o.steps_per_pass;
        opts.workers = o
            .workers
            .unwrap_or_else(|| fidelis_cli::device::default_workers(&o.device));
        opts.batch_size = o.batch_size;
        let bar = progress::bar(1, method.name());
        let start = Instant::now();
        attribute_edges(
            &model.transformer,
            &mut graph,
            &pairs,
            &metric,
            &opts,
            &mut |d, t| {
                bar.set_length(t as u64);
                bar.set_position(d as u64);
            },
        )?;
        let seconds = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        println!("{:<20} scored in {seconds:.1} s", method.name());
        std::fs::write(
            dir.join(format!("{}.json", method.name())),
            graph.to_json_string(),
        )?;
        for &selection in &o.selections {
            let eval = EvalOptions {
                ablation: Ablation::Patching,
                batch_size: o.batch_size,
                circuits_per_pass: 4,
                selection,
            };
            let start = Instant::now();
            let curve = faithfulness_curve(
                &model.transformer,
                &graph,
                &pairs,
                &metric,
                &mib_sizes(graph.n_edges()),
                &eval,
            )?;
            let run = Run {
                method,
                selection,
                seconds,
                curve,
            };
            let curve = &run.curve;
            println!(
                "{:<20} CPR {:.3}  CMD {:.3}  first ≥ 0.8 at {}  (evaluated in {:.1} s)",
                run.label(),
                curve.cpr,
                curve.cmd,
                curve
                    .first_reaching(0.8)
                    .map_or("never".into(), |p| format!("{} edges", p.edges)),
                start.elapsed().as_secs_f64()
            );
            runs.push(run);
            write_results(&dir, o, &runs, pairs.len())?;
        }
    }
    println!("wrote {}", dir.display());
    Ok(())
}

fn write_results(dir: &Path, o: &Options, runs: &[Run], n_pairs: usize) -> Result<()> {
    let mut csv = String::from("method,");
    csv.push_str(curve_csv(&runs[0].curve).lines().next().unwrap_or(""));
    csv.push('\n');
    for r in runs {
        for line in curve_csv(&r.curve).lines().skip(1) {
            let _ = writeln!(csv, "{},{line}", r.label());
        }
    }
    std::fs::write(dir.join("curves.csv"), csv)?;
    let summary: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "label": r.label(),
                "method": r.method.name(),
                "selection": r.selection.name(),
                "seconds": r.seconds,
                "cpr": r.curve.cpr,
                "cmd": r.curve.cmd,
                "clean_metric": r.curve.clean,
                "empty_metric": r.curve.empty,
                "edges_to_reach_0.8": r.curve.first_reaching(0.8).map(|p| p.edges),
            })
        })
        .collect();
    let summary = serde_json::json!({
        "model": o.model, "task": o.task.name(), "examples": n_pairs, "steps": o.steps,
        "metric": fidelis_faithfulness::Metric::name(&metric_for(o.task)), "ablation": "patching",
        "methods": summary,
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let labels: Vec<String> = runs.iter().map(Run::label).collect();
    let lines: Vec<(&str, &Curve)> = labels
        .iter()
        .zip(runs)
        .map(|(l, r)| (l.as_str(), &r.curve))
        .collect();
    let title = format!("{} · {}", o.model, o.task.name());
    std::fs::write(
        dir.join("faithfulness.svg"),
        faithfulness_plot(&lines, &title),
    )?;
    Ok(())
}
