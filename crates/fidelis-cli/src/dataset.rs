//! `--dataset FILE.jsonl` of `attribute` and `context`: every non-empty line a JSON object of
//! the command's options put over the flags ([`crate::options::overlay`]), all checked before
//! the model loads, then run one by one with a progress bar, one JSON result per line out.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest dataset file read (a dataset of prompts is text, far below this).
pub const MAX_DATASET_BYTES: u64 = 64 << 20;

/// The examples of `path`: each non-empty line put over `base` and passed through `check`,
/// with its 1-based line number; an error names `file:line`.
pub fn examples<T: Serialize + DeserializeOwned>(
    path: &Path,
    base: &T,
    check: impl Fn(&T) -> Result<()>,
) -> Result<Vec<(usize, T)>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    anyhow::ensure!(
        size <= MAX_DATASET_BYTES,
        "{} is {size} bytes; --dataset reads at most {MAX_DATASET_BYTES}",
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, json) in text.lines().enumerate() {
        if json.trim().is_empty() {
            continue;
        }
        let at = |e: anyhow::Error| e.context(format!("{}:{}", path.display(), i + 1));
        let patch: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).map_err(|e| at(e.into()))?;
        let opts = crate::options::overlay(base, &patch).map_err(at)?;
        check(&opts).map_err(at)?;
        out.push((i + 1, opts));
    }
    anyhow::ensure!(!out.is_empty(), "{} has no examples", path.display());
    Ok(out)
}

/// Runs `one` on every example under a progress bar labelled `what`, writes the results to
/// `out_path` as JSON lines, and prints the summary line. A failing example names
/// `dataset:line`.
pub fn run<T, R: Serialize>(
    what: &str,
    dataset: &Path,
    examples: &[(usize, T)],
    out_path: &Path,
    mut one: impl FnMut(&T) -> Result<R>,
) -> Result<()> {
    let start = Instant::now();
    let mut bar = crate::progress::Bar::new(what);
    let mut out = String::new();
    for (done, (line, opts)) in examples.iter().enumerate() {
        let _ = crate::progress::Progress::tick(&mut bar, "examples", done, examples.len());
        let result = one(opts).with_context(|| format!("{}:{line}", dataset.display()))?;
        out.push_str(&serde_json::to_string(&result)?);
        out.push('\n');
    }
    let _ = crate::progress::Progress::tick(&mut bar, "examples", examples.len(), examples.len());
    bar.finish();
    crate::output::write(out_path, out)?;
    eprintln!("wrote {}", out_path.display());
    crate::progress::summary(
        &format!(
            "{what}: {}",
            crate::progress::items(examples.len(), "example")
        ),
        start,
    );
    Ok(())
}
