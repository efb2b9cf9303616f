//! The circuit job: the pieces of `fidelis circuit discover` (examples, tokenization, the
//! model's graph, edge attribution) followed by a faithfulness curve at the MIB sizes plus a
//! log-spaced grid, so the page's slider lands on evaluated sizes only.

use std::sync::Arc;
use std::time::Instant;

use fidelis_faithfulness::{EvalOptions, faithfulness_curve_with_progress, mib_sizes};
use fidelis_graph::Graph;
use fidelis_models::Model;
use fidelis_tasks::Task;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::api::{ApiError, overlay_request};
use super::export::shell_command;
use super::jobs::Job;
use crate::circuit::{Scored, load_examples, score_edges, tokenize};
use crate::options::{DiscoverJob, DiscoverOptions, to_args};

/// Points of the log-spaced size grid added to the MIB sizes.
const GRID_POINTS: usize = 24;
/// Circuits larger than this are not sent as edge lists (the page draws the top edges).
pub const MAX_DRAWN_EDGES: usize = 400;

/// What the page runs when a field is not given: `circuit discover`'s defaults, on 32 IOI
/// examples.
pub fn default_job() -> DiscoverJob {
    let mut job = DiscoverJob::default();
    job.data.task = Some(Task::Ioi);
    job.data.n = 32;
    job
}

/// A checked request.
pub struct PreparedCircuit {
    model_name: String,
    model: Arc<Model>,
    job: DiscoverJob,
    device: String,
    command: String,
}

impl PreparedCircuit {
    /// The model's name.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }
}

/// Checks a `POST /api/circuit` body — `model` (a served model, default the first) and any
/// field of [`DiscoverJob`] — against the server's models and limits.
pub fn prepare(
    state: &super::AppState,
    mut body: Map<String, Value>,
) -> Result<PreparedCircuit, ApiError> {
    let limits = &state.limits;
    let model_name = match body.remove("model") {
        None | Some(Value::Null) => state.default_model().to_string(),
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid parameters: model must be a string, not {other}"
            )));
        }
    };
    let served = state.model(&model_name)?;
    let job: DiscoverJob = overlay_request(&default_job(), &body)?;
    // The bounds `fidelis circuit discover` checks, then this server's tighter limits.
    job.validate().map_err(|e| ApiError::invalid_options(&e))?;
    if job.data.data.is_some() || job.data.task.is_none() {
        return Err(ApiError::unprocessable(
            "the page runs generated tasks only: give task, not data".into(),
        ));
    }
    let checks = [
        ("n", job.data.n, 1, limits.max_examples),
        ("steps", job.steps, 1, limits.max_steps),
        ("batch_size", job.batch_size, 1, limits.max_examples),
        ("steps_per_pass", job.steps_per_pass, 1, limits.max_steps),
        ("exact_per_pass", job.exact_per_pass, 1, limits.max_examples),
        ("workers", job.workers.unwrap_or(1), 1, 64),
    ];
    for (name, value, lo, hi) in checks {
        if !(lo..=hi).contains(&value) {
            return Err(ApiError::out_of_range(
                name,
                format!("{name} is {value}; this server allows {lo} to {hi}"),
            ));
        }
    }
    let mut argv: Vec<String> = ["fidelis", "circuit", "discover", "--model", &served.name]
        .map(String::from)
        .to_vec();
    if state.device != "cpu" {
        argv.extend(["--device".into(), state.device.clone()]);
    }
    let cli = DiscoverOptions {
        job: job.clone(),
        curve: true,
        ..DiscoverOptions::default()
    };
    let flags = to_args(&cli, &DiscoverOptions::default())
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    argv.extend(flags);
    Ok(PreparedCircuit {
        model_name: served.name.clone(),
        model: Arc::clone(&served.model),
        job,
        device: state.device.clone(),
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

/// Runs a prepared request as a job; returns the page's result. A cancelled job returns
/// `Err` with the job marked cancelled by the caller.
pub fn run(job: &Job, p: PreparedCircuit) -> Result<serde_json::Value, String> {
    let start = Instant::now();
    let err = |e: anyhow::Error| format!("{e:#}");
    let mut progress = job;
    job.progress("generating examples", 0, 0);
    let data = p.job.data.source().map_err(err)?;
    let examples = load_examples(&p.model, &data).map_err(err)?;
    let pairs = tokenize(&p.model, &examples, !p.job.data.no_bos).map_err(err)?;
    job.progress(fidelis_attribution::edge::STAGE, 0, 1);
    let Scored { graph, ablation } =
        score_edges(&p.model, &p.job, &pairs, None, &p.device, &mut progress).map_err(err)?;
    let scoring_seconds = start.elapsed().as_secs_f64();
    let sizes = curve_sizes(graph.n_edges());
    let mut eval = EvalOptions::new(ablation);
    eval.batch_size = p.job.batch_size;
    let curve = faithfulness_curve_with_progress(
        &p.model.transformer,
        &graph,
        &pairs,
        &p.job.loss,
        &sizes,
        &eval,
        &mut progress,
    )
    .map_err(|e| e.to_string())?;
    let view = graph_view(&graph, &curve).map_err(err)?;
    job.put_file("graph.json", graph.to_json_string());
    Ok(json!({
        "model": p.model_name,
        "task": p.job.data.task.map(Task::name),
        "method": p.job.method.to_string(),
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
