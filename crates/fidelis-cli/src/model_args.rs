//! The model flags every model command shares (`--model`, `--device`) and loading with a
//! progress bar.

use std::path::PathBuf;

use anyhow::{Context, Result};
use fidelis_models::fetch::resolve_model_name;
use fidelis_models::precision::set_dtype;
use fidelis_models::{Dtype, Model};

use crate::options::variants;
use crate::{device::parse_device, progress};

/// `--model`, `--device` and `--dtype`.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelFlags {
    /// A Hugging Face model folder, a .gguf file, a hub id ORG/NAME in the Hugging Face cache
    /// (after `fidelis models fetch ORG/NAME`), `organism` (the small GPT-2 shipped in
    /// models/organism/) or `smollm2` (after `fidelis models fetch smollm2`).
    #[arg(long, default_value = "organism", visible_alias = "model-name-or-path",
          aliases = ["model_name_or_path"])]
    pub model: String,
    /// Where to run: cpu, flex, ndarray, wgpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The float type of weights and activations: f32, f16 or bf16 (flex, wgpu and cuda; ndarray
    /// has f32 only). Metrics and attribution scores are accumulated in f32 whatever this is.
    #[arg(long, default_value_t = Dtype::F32, value_parser = variants::<Dtype>())]
    pub dtype: Dtype,
}

impl ModelFlags {
    /// Loads the model these flags name (see [`load_model`]).
    pub fn load(&self) -> Result<Model> {
        load_model(&self.model, &self.device, self.dtype)
    }
}

/// Loads `model` (a path or a fetchable name) onto the device `device` names, its weights and
/// activations in `dtype`, with a progress bar on stderr.
pub fn load_model(model: &str, device: &str, dtype: Dtype) -> Result<Model> {
    let mut device = parse_device(device)?;
    set_dtype(&mut device, dtype)?;
    let path: PathBuf = resolve_model_name(model)?;
    let mut bar = progress::Bar::new(fidelis_models::model::LOADING);
    let loaded = Model::load_with_progress(&path, &device, &mut bar)
        .with_context(|| format!("loading {}", path.display()))?;
    bar.finish();
    Ok(loaded)
}
