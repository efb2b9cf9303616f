//! `cargo xtask bench`: runs the criterion benches on every requested backend and prints one
//! table of mean times with ratios to the first backend, all from the same run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The bench files, the criterion group each writes, and its benchmarks (the first is the
/// floor the others are compared with).
const BENCHES: [(&str, &str, &[&str]); 2] = [
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
];

pub fn run(args: &[String]) -> Result<()> {
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
        bail!("unknown bench `{bench}` (expected model or circuit)");
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
