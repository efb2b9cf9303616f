//! The model flags every model command shares (`--model`, `--device`) and loading with a
//! progress bar.

use std::path::PathBuf;

use anyhow::{Context, Result};
use fidelis_models::Model;
use fidelis_models::fetch::resolve_model_name;

use crate::{device::parse_device, progress};

/// `--model` and `--device`.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelFlags {
    /// A Hugging Face model folder, a .gguf file, a hub id ORG/NAME in the Hugging Face cache
    /// (after `fidelis models fetch ORG/NAME`), `organism` (the small GPT-2 shipped in
    /// models/organism/) or `smollm2` (after `fidelis models fetch smollm2`).
    #[arg(long, default_value = "organism")]
    pub model: String,
    /// Where to run: cpu, flex, ndarray, wgpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Loads `model` (a path or a fetchable name) onto the device `device` names, with a progress
/// bar on stderr.
pub fn load_model(model: &str, device: &str) -> Result<Model> {
    let device = parse_device(device)?;
    let path: PathBuf = resolve_model_name(model)?;
    let mut bar = progress::Bar::new(fidelis_models::model::LOADING);
    let loaded = Model::load_with_progress(&path, &device, &mut bar)
        .with_context(|| format!("loading {}", path.display()))?;
    bar.finish();
    Ok(loaded)
}
