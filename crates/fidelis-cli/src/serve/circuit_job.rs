//! The circuit job: the pieces of `fidelis circuit discover` (examples, tokenization, the
//! model's graph, edge attribution) followed by a faithfulness curve at the MIB sizes plus a
//! log-spaced grid, so the page's slider lands on evaluated sizes only.

use std::sync::Arc;
use std::time::Instant;

use fidelis_attribution::{EdgeAttribution, Method, attribute_edges};
use fidelis_faithfulness::{BuiltinMetric, EvalOptions, faithfulness_curve, mib_sizes};
use fidelis_graph::Graph;
use fidelis_models::Model;
use fidelis_tasks::Task;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api::ApiError;
use super::export::shell_command;
use super::jobs::Job;
use crate::circuit::{DataSource, ablation, graph_for, load_examples, tokenize};

/// Points of the log-spaced size grid added to the MIB sizes.
const GRID_POINTS: usize = 24;
/// Circuits larger than this are not sent as edge lists (the page draws the top edges).
pub const MAX_DRAWN_EDGES: usize = 400;

/// `POST /api/circuit`: what `fidelis circuit discover` takes, each optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitRequest {
    /// A model the server serves (default: the first).
    pub model: Option<String>,
    /// `ioi`, `greater-than`, `sva`, `gender-bias`, `country-capital` or `hypernymy`.
    pub task: Option<String>,
    /// `eap`, `eap-ig-inputs`, `eap-ig-activations`, `clean-corrupted` or `exact`.
    pub method: Option<String>,
    /// Number of generated examples.
    pub n: Option<usize>,
    /// EAP-IG interpolation steps.
    pub steps: Option<usize>,
    /// `logit-diff`, `prob-diff`, `kl` or `js`.
    pub loss: Option<String>,
    /// `patching`, `mean` or `zero`.
    pub ablation: Option<String>,
    /// Examples per batch.
    pub batch_size: Option<usize>,
    /// Task generator seed.
    pub seed: Option<u64>,
    /// Do not prepend BOS.
    pub no_bos: Option<bool>,
}

/// A checked request.
pub struct PreparedCircuit {
    model_name: String,
    model: Arc<Model>,
    task: Task,
    method: Method,
    n: usize,
    steps: usize,
    loss: BuiltinMetric,
    ablation: String,
    batch_size: usize,
    seed: u64,
    add_bos: bool,
    /// Concurrent eap-ig-activations passes: the CLI's default for the server's device.
    workers: usize,
    command: String,
}

impl PreparedCircuit {
    /// The model's name.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }
}

/// Checks a request against the server's models and limits.
pub fn prepare(state: &super::AppState, req: CircuitRequest) -> Result<PreparedCircuit, ApiError> {
    let limits = &state.limits;
    let model_name = req
        .model
        .clone()
        .unwrap_or_else(|| state.default_model().to_string());
    let served = state.model(&model_name)?;
    let bad = ApiError::bad_request;
    let task: Task = req
        .task
        .as_deref()
        .unwrap_or("ioi")
        .parse()
        .map_err(|e| bad(format!("{e}")))?;
    let method: Method = req
        .method
        .as_deref()
        .unwrap_or("eap-ig-inputs")
        .parse()
        .map_err(bad)?;
    let loss_name = req.loss.as_deref().unwrap_or("logit-diff");
    let loss: BuiltinMetric = loss_name.parse().map_err(bad)?;
    let ablation = req.ablation.clone().unwrap_or_else(|| "patching".into());
    if !["patching", "mean", "zero"].contains(&ablation.as_str()) {
        return Err(bad(format!(
            "unknown ablation {ablation:?} (expected patching, mean or zero)"
        )));
    }
    let n = req.n.unwrap_or(32);
    let steps = req.steps.unwrap_or(5);
    let batch_size = req.batch_size.unwrap_or(16);
    let checks = [
        ("n", n, 1, limits.max_examples),
        ("steps", steps, 1, limits.max_steps),
        ("batch_size", batch_size, 1, limits.max_examples),
    ];
    for (name, value, lo, hi) in checks {
        if !(lo..=hi).contains(&value) {
            return Err(ApiError::unprocessable(format!(
                "{name} is {value}; it must be between {lo} and {hi}"
            )));
        }
    }
    let seed = req.seed.unwrap_or(0);
    let add_bos = !req.no_bos.unwrap_or(false);
    let mut argv: Vec<String> = [
        "fidelis",
        "circuit",
        "discover",
        "--model",
        served.name.as_str(),
    ]
    .map(String::from)
    .to_vec();
    if state.device != "cpu" {
        argv.extend(["--device".into(), state.device.clone()]);
    }
    argv.extend([
        "--task".into(),
        task.name().into(),
        "--n".into(),
        n.to_string(),
        "--seed".into(),
        seed.to_string(),
        "--method".into(),
        method.name().into(),
        "--steps".into(),
        steps.to_string(),
        "--loss".into(),
        loss_name.into(),
        "--ablation".into(),
        ablation.clone(),
        "--batch-size".into(),
        batch_size.to_string(),
    ]);
    if !add_bos {
        argv.push("--no-bos".into());
    }
    argv.extend(["--curve".into(), "--out".into(), "graph.json".into()]);
    Ok(PreparedCircuit {
        model_name: served.name.clone(),
        model: Arc::clone(&served.model),
        task,
        method,
        n,
        steps,
        loss,
        ablation,
        batch_size,
        seed,
        add_bos,
        workers: crate::device::default_workers(&state.device),
        command: shell_command(&argv),
    })
}

/// Circuit sizes to evaluate: the MIB sizes, a log-spaced grid from 1 edge to all, and all.
pub fn curve_sizes(n_edges: usize) -> Vec<usize> {
    let mut sizes = mib_sizes(n_edges);
    let top = (n_edges.max(1) as f64).ln();
    sizes.extend((0..GRID_POINTS).map(|i| {
        let t = i as f64 / (GRID_POINTS - 1) as f64;
        ((top * t).exp().round() as usize).clamp(1, n_edges.max(1))
    }));
    sizes.push(n_edges.max(1));
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// One node of the drawn graph.
#[derive(Serialize)]
struct NodeView {
    name: String,
    /// The layer (`-1` for `input`, `n_layers` for `logits`).
    layer: i64,
}

/// Runs a prepared request as a job; returns the page's result.
pub fn run(job: &Job, p: PreparedCircuit) -> Result<serde_json::Value, String> {
    let start = Instant::now();
    let err = |e: anyhow::Error| format!("{e:#}");
    job.progress("generating examples", 0, 0);
    let data = DataSource::Task {
        task: p.task,
        n: p.n,
        seed: p.seed,
    };
    let examples = load_examples(&p.model, &data).map_err(err)?;
    let pairs = tokenize(&p.model, &examples, p.add_bos).map_err(err)?;
    let mut graph = graph_for(&p.model);
    let mut attribution = EdgeAttribution::new(p.method);
    attribution.steps = p.steps;
    attribution.batch_size = p.batch_size;
    attribution.workers = p.workers;
    attribution.ablation = ablation(&p.model, &p.ablation, &pairs, p.batch_size).map_err(err)?;
    job.progress("scoring edges", 0, 1);
    attribute_edges(
        &p.model.transformer,
        &mut graph,
        &pairs,
        &p.loss,
        &attribution,
        &mut |done, total| job.progress("scoring edges", done, total),
    )
    .map_err(|e| e.to_string())?;
    let scoring_seconds = start.elapsed().as_secs_f64();
    let sizes = curve_sizes(graph.n_edges());
    job.progress("faithfulness curve", 0, sizes.len());
    let eval = EvalOptions {
        ablation: attribution.ablation.clone(),
        batch_size: p.batch_size,
        circuits_per_pass: 4,
        selection: Default::default(),
    };
    let curve = faithfulness_curve(&p.model.transformer, &graph, &pairs, &p.loss, &sizes, &eval)
        .map_err(|e| e.to_string())?;
    job.check_cancelled();
    let view = graph_view(&graph, &curve).map_err(err)?;
    job.put_file("graph.json", graph.to_json_string());
    Ok(json!({
        "model": p.model_name,
        "task": p.task.name(),
        "method": p.method.name(),
        "examples": pairs.len(),
        "n_edges": graph.n_edges(),
        "n_nodes": graph.n_nodes(),
        "n_layers": graph.cfg().n_layers,
        "n_heads": graph.cfg().n_heads,
        "curve": curve,
        "graph": view,
        "command": p.command,
        "scoring_seconds": scoring_seconds,
        "seconds": start.elapsed().as_secs_f64(),
    }))
}

/// What the page draws: nodes, the top edges by |score|, and for each curve point the edges of
/// its pruned circuit (indices into `edges`), when it is small enough to draw.
fn graph_view(
    graph: &Graph,
    curve: &fidelis_faithfulness::Curve,
) -> anyhow::Result<serde_json::Value> {
    let n_layers = graph.cfg().n_layers as i64;
    let nodes: Vec<NodeView> = (0..graph.n_nodes())
        .map(|i| {
            let node = graph.node(i);
            let name = node.name();
            let layer = match name.as_str() {
                "input" => -1,
                "logits" => n_layers,
                other => other
                    .trim_start_matches(['a', 'm'])
                    .split('.')
                    .next()
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0),
            };
            NodeView { name, layer }
        })
        .collect();
    let top = graph.top_edges(MAX_DRAWN_EDGES.min(graph.n_edges()), true);
    let index: std::collections::HashMap<&str, usize> = top
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    let edges: Vec<serde_json::Value> = top
        .iter()
        .map(|e| json!({"name": e.name, "score": e.score}))
        .collect();
    let mut circuits = Vec::with_capacity(curve.points.len());
    for point in &curve.points {
        if point.requested_edges > MAX_DRAWN_EDGES {
            circuits.push(serde_json::Value::Null);
            continue;
        }
        let circuit = fidelis_faithfulness::curve::top_circuit(graph, point.requested_edges)?;
        let kept: Vec<usize> = circuit
            .edges()
            .filter(|e| e.in_graph)
            .filter_map(|e| index.get(e.name.as_str()).copied())
            .collect();
        circuits.push(json!(kept));
    }
    Ok(json!({"nodes": nodes, "edges": edges, "circuits": circuits}))
}
