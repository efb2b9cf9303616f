//! `cargo xtask bench`: runs the criterion benches on every requested backend and prints one
//! table of mean times with ratios to the first backend, all from the same run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The bench files, the criterion group each writes, and its benchmarks (the first is the
/// floor the others are compared with).
const BENCHES: [(&str, &str, &[&str]); 3] = [
    (
        "model",
        "smollm2_b8x16",
        &["forward", "forward_backward_probes"],
    ),
    (
        "circuit",
        "circuit_ioi16",
        &["forward_backward_probes", "eap", "eap_ig5"],
    ),
    (
        "token",
        "token_attribution_seq24",
        &[
            "forward_backward",
            "forward",
            "saliency",
            "input_x_gradient",
            "ig50",
            "occlusion",
        ],
    ),
];

pub fn run(args: &[String]) -> Result<()> {
    if args
        .windows(2)
        .any(|w| w[0] == "--bench" && w[1] == "scale")
    {
        return scale(args);
    }
    let mut backends = "flex,ndarray".to_string();
    let mut filter: Option<String> = None;
    let mut bench = "model".to_string();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--backends" => backends = it.next().context("--backends needs a value")?.clone(),
            "--filter" => filter = Some(it.next().context("--filter needs a value")?.clone()),
            "--bench" => bench = it.next().context("--bench needs a value")?.clone(),
            other => bail!("unknown argument `{other}` to `cargo xtask bench`"),
        }
    }
    let Some(&(_, group, names)) = BENCHES.iter().find(|(b, _, _)| *b == bench) else {
        bail!("unknown bench `{bench}` (expected model, circuit or token)");
    };
    let root = workspace_root();
    // The dev profile optimizes every dependency at opt-level 3 (see Cargo.toml), and all the
    // arithmetic happens inside Burn, so benches reuse the test build instead of a second
    // 15-minute release build of Burn.
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args([
            "bench",
            "-p",
            "fidelis-benches",
            "--profile",
            "dev",
            "--no-default-features",
        ])
        .args(["--features", &backends, "--bench", &bench, "--"])
        .arg("--noplot");
    if let Some(f) = &filter {
        cmd.arg(f);
    }
    let status = cmd.status().context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed");
    }
    print_table(&root.join("target/criterion").join(group), names, &backends)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| ".".into(), Path::to_path_buf)
}

/// Mean and standard error (ns) of one criterion benchmark.
fn estimate(dir: &Path) -> Result<(f64, f64)> {
    let path = dir.join("new/estimates.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let mean = &json["mean"];
    let point = mean["point_estimate"]
        .as_f64()
        .context("mean.point_estimate")?;
    let se = mean["standard_error"].as_f64().unwrap_or(0.0);
    Ok((point, se))
}

fn print_table(group_dir: &Path, names: &[&str], backends: &str) -> Result<()> {
    let backends: Vec<&str> = backends.split(',').collect();
    println!(
        "\n| benchmark | backend | mean (ms) | ± s.e. (ms) | ratio to {} | ratio to {} |",
        backends[0], names[0]
    );
    println!("|---|---|---:|---:|---:|---:|");
    for bench in names {
        let mut baseline = None;
        for backend in &backends {
            let Ok((mean, se)) = estimate(&group_dir.join(format!("{bench}_{backend}"))) else {
                continue;
            };
            let floor = estimate(&group_dir.join(format!("{}_{backend}", names[0])))
                .map_or(f64::NAN, |(m, _)| m);
            let base = *baseline.get_or_insert(mean);
            println!(
                "| {bench} | {backend} | {:.1} | {:.1} | {:.2} | {:.2} |",
                mean / 1e6,
                se / 1e6,
                mean / base,
                mean / floor
            );
        }
    }
    Ok(())
}

/// `cargo xtask bench --bench scale [--config FILE|smollm2] [--methods eap,eap-ig-inputs]
/// [--batches 1,4,8] [--pairs 16] [--tokens 16]`: one fresh process per (method, batch) case
/// (`benches/src/bin/scale.rs`, flex), so that each peak resident set is that case's own, and
/// a Markdown table of wall time and peak memory against the weights.
fn scale(args: &[String]) -> Result<()> {
    let mut config = "models/configs/llama-3.2-1b.json".to_string();
    let mut methods = "eap,eap-ig-inputs".to_string();
    let mut batches = "1,4,8".to_string();
    let mut extra: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {
                value()?;
            }
            "--config" => config = value()?.clone(),
            "--methods" => methods = value()?.clone(),
            "--batches" => batches = value()?.clone(),
            "--pairs" | "--tokens" | "--steps" => {
                let v = value()?.clone();
                extra.extend([arg.clone(), v]);
            }
            other => bail!("unknown argument `{other}` to `cargo xtask bench --bench scale`"),
        }
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "-p", "fidelis-benches", "--bin", "scale"])
        .status()
        .context("building the scale runner")?;
    if !status.success() {
        bail!("cargo build of the scale runner failed");
    }
    let target =
        std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    let exe = target.join("debug").join("scale");
    let gb = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0) / 1e9;
    let mut rows = Vec::new();
    for method in methods.split(',') {
        for batch in batches.split(',') {
            eprintln!("scale: {method} at batch {batch} on {config}");
            let out = Command::new(&exe)
                .current_dir(&root)
                .args(["--config", &config, "--method", method, "--batch", batch])
                .args(&extra)
                .output()
                .context("running the scale runner")?;
            if !out.status.success() {
                bail!(
                    "{method} at batch {batch}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let line = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = serde_json::from_str(line.trim())
                .with_context(|| format!("reading the runner's line `{line}`"))?;
            eprintln!("{v}");
            rows.push(v);
        }
    }
    if let Some(first) = rows.first() {
        println!(
            "{}: {} parameters ({:.2} GB of f32 weights), {} edges, {} pairs × {} tokens, {}\n",
            first["model"].as_str().unwrap_or("?"),
            first["parameters"],
            gb(&first["weights_bytes"]),
            first["edges"],
            first["pairs"],
            first["tokens"],
            first["backend"].as_str().unwrap_or("?"),
        );
    }
    println!("| method | batch | wall (s) | peak RSS (GB) | peak − weights (GB) |");
    println!("|---|---:|---:|---:|---:|");
    for v in &rows {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} |",
            v["method"].as_str().unwrap_or("?"),
            v["batch"],
            v["wall_s"].as_f64().unwrap_or(0.0),
            gb(&v["peak_rss"]),
            gb(&v["peak_rss"]) - gb(&v["weights_bytes"]),
        );
    }
    Ok(())
}
