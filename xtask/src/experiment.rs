//! `cargo xtask experiment faithfulness`: the EAP-IG paper's central comparison. Every edge
//! attribution method scores the graph on one task; each scored graph is evaluated at the MIB
//! circuit sizes; the curves, a summary and a plot land in `results/<model>/<task>/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fidelis_attribution::EdgeMethod;
use fidelis_circuit::{Ablation, BuiltinMetric};
use fidelis_cli::circuit::{Scored, curve_csv, load_examples, score_edges, tokenize};
use fidelis_cli::device::parse_device;
use fidelis_cli::options::DiscoverJob;
use fidelis_cli::plot::faithfulness_plot;
use fidelis_cli::progress::Bar;
use fidelis_faithfulness::{
    Curve, CurvePoint, EvalOptions, Selection, evaluate::STAGE, faithfulness_curve_with_progress,
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

/// Parsed options: the scoring job every method shares (`circuit discover`'s typed options;
/// its `method` is replaced by each of `methods`) and what the experiment adds.
struct Options {
    model: String,
    task: Task,
    job: DiscoverJob,
    methods: Vec<EdgeMethod>,
    selections: Vec<Selection>,
    device: String,
    out: PathBuf,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut job = DiscoverJob::default();
    job.data.task = Some(Task::Ioi);
    let mut o = Options {
        model: "smollm2".into(),
        task: Task::Ioi,
        job,
        methods: vec![
            EdgeMethod::Eap,
            EdgeMethod::EapIgInputs,
            EdgeMethod::EapIgActivations,
            EdgeMethod::CleanCorrupted,
        ],
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
            "--task" => {
                o.task = value()?.parse()?;
                o.job.data.task = Some(o.task);
            }
            "--n" => o.job.data.n = value()?.parse()?,
            "--seed" => o.job.data.seed = value()?.parse()?,
            "--steps" => o.job.steps = value()?.parse()?,
            "--steps-per-pass" => o.job.steps_per_pass = value()?.parse()?,
            "--workers" => o.job.workers = Some(value()?.parse()?),
            "--batch-size" => o.job.batch_size = value()?.parse()?,
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
    method: EdgeMethod,
    selection: Selection,
    seconds: f64,
    curve: Curve,
}

impl Run {
    /// `method` for the abs rule, `method/rule` otherwise.
    fn label(&self) -> String {
        match self.selection {
            Selection::TopAbs => self.method.to_string(),
            other => format!("{}/{other}", self.method),
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
        faithfulness_plot(&lines, &title)?,
    )?;
    println!("wrote {}", dir.join("faithfulness.svg").display());
    Ok(())
}

fn faithfulness(o: &Options) -> Result<()> {
    let device = parse_device(&o.device)?;
    let path = resolve_model_name(&o.model)?;
    let model =
        Model::load(&path, &device).with_context(|| format!("loading {}", path.display()))?;
    let examples = load_examples(&model, &o.job.data.source()?)?;
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
        let job = DiscoverJob {
            method,
            loss: metric,
            ..o.job.clone()
        };
        let mut bar = Bar::new(&method.to_string());
        let start = Instant::now();
        let Scored { graph, ablation } =
            score_edges(&model, &job, &pairs, None, &o.device, &mut bar)?;
        let seconds = start.elapsed().as_secs_f64();
        bar.finish();
        println!("{method:<20} scored in {seconds:.1} s");
        std::fs::write(dir.join(format!("{method}.json")), graph.to_json_string())?;
        for &selection in &o.selections {
            let mut eval = EvalOptions::new(ablation.clone());
            eval.batch_size = o.job.batch_size;
            eval.selection = selection;
            let start = Instant::now();
            let mut bar = Bar::new(STAGE);
            let curve = faithfulness_curve_with_progress(
                &model.transformer,
                &graph,
                &pairs,
                &metric,
                &mib_sizes(graph.n_edges()),
                &eval,
                &mut bar,
            )?;
            bar.finish();
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
                "method": r.method.to_string(),
                "selection": r.selection.to_string(),
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
        "model": o.model, "task": o.task.name(), "examples": n_pairs, "steps": o.job.steps,
        "metric": metric_for(o.task).to_string(), "ablation": Ablation::Patching.name(),
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
        faithfulness_plot(&lines, &title)?,
    )?;
    Ok(())
}
