//! One edge-attribution run on a model of a published shape with random weights, for
//! `cargo xtask bench --bench scale`: prints one JSON line with the wall time of the run and the
//! process's peak resident memory (`VmHWM`), so that each (method, batch) case is measured in a
//! fresh process.
//!
//! `scale --config models/configs/llama-3.2-1b.json --method eap --batch 8 [--pairs 16]
//! [--tokens 16] [--steps 5]`; `--config smollm2` takes the benchmark model of the other benches
//! (the cached SmolLM2 GGUF, else random weights of its shape).

use std::path::Path;
use std::time::Instant;

use fidelis_attribution::{EdgeAttribution, Method, attribute_edges_with_progress};
use fidelis_benches::{bench_model, devices, ioi_sized_pairs};
use fidelis_circuit::{BuiltinMetric, Silent};
use fidelis_graph::{Graph, GraphConfig};
use fidelis_models::Transformer;
use fidelis_models::model::config_from_file;

fn main() {
    if let Err(e) = run() {
        eprintln!("scale: {e}");
        std::process::exit(1);
    }
}

/// The process's peak resident set in bytes (Linux), or 0 where `/proc` has no answer.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn run() -> Result<(), String> {
    let mut config = String::from("smollm2");
    let (mut method, mut batch, mut pairs, mut tokens, mut steps) =
        (String::from("eap"), 8usize, 16usize, 16usize, 5usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--config" => config = value()?,
            "--method" => method = value()?,
            "--batch" => batch = number(value()?)?,
            "--pairs" => pairs = number(value()?)?,
            "--tokens" => tokens = number(value()?)?,
            "--steps" => steps = number(value()?)?,
            "--bench" => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let method: Method = method.parse().map_err(|e| format!("--method: {e}"))?;
    let (backend, device) = devices()
        .into_iter()
        .next()
        .ok_or("no backend compiled in")?;
    let load = Instant::now();
    let (model, what) = if config == "smollm2" {
        let (model, what) = bench_model(&device);
        (model, what.to_string())
    } else {
        let cfg = config_from_file(Path::new(&config)).map_err(|e| e.to_string())?;
        let model = Transformer::random(cfg, 0, &device).map_err(|e| e.to_string())?;
        (model, format!("random weights, shape of {config}"))
    };
    let load_s = load.elapsed().as_secs_f64();
    let weights_bytes = model.parameter_count() as u64 * 4;
    let after_load = peak_rss();
    let cfg = model.config().clone();
    let data = ioi_sized_pairs(pairs, tokens, cfg.d_vocab);
    let mut opts = EdgeAttribution::new(method);
    opts.batch_size = batch;
    opts.steps = steps;
    let mut graph = Graph::new(GraphConfig::new(
        cfg.n_layers,
        cfg.n_heads,
        cfg.parallel_attn_mlp,
    ));
    let start = Instant::now();
    let scores = attribute_edges_with_progress(
        &model,
        &mut graph,
        &data,
        &BuiltinMetric::LogitDiff,
        &opts,
        &mut Silent,
    )
    .map_err(|e| e.to_string())?;
    let wall_s = start.elapsed().as_secs_f64();
    let finite = scores.iter().all(|s| s.is_finite());
    println!(
        "{}",
        serde_json::json!({
            "model": what, "backend": backend, "method": method.to_string(), "batch": batch,
            "pairs": pairs, "tokens": tokens, "steps": steps, "edges": graph.n_edges(),
            "parameters": model.parameter_count(), "weights_bytes": weights_bytes,
            "load_s": load_s, "peak_rss_after_load": after_load,
            "wall_s": wall_s, "peak_rss": peak_rss(), "scores_finite": finite,
        })
    );
    Ok(())
}
