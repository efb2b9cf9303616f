//! The model flags every model command shares (`--model`, `--device`) and loading with a
//! progress bar.

use std::path::PathBuf;

use anyhow::{Context, Result};
use fidelis_models::fetch::resolve_model_name;
use fidelis_models::precision::set_dtype;
use fidelis_models::seq2seq::is_seq2seq_model_type;
use fidelis_models::{Dtype, Model, Seq2SeqModel};

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

    /// Loads the model these flags name, decoder-only or encoder-decoder (see [`load_any`]).
    pub fn load_any(&self) -> Result<AnyModel> {
        load_any(&self.model, &self.device, self.dtype)
    }
}

/// A loaded model of either kind (loaded once per command, so the size difference between the
/// variants does not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum AnyModel {
    /// A decoder-only language model.
    DecoderOnly(Model),
    /// An encoder-decoder (Marian, mBART, M2M100, T5).
    Seq2Seq(Seq2SeqModel),
}

/// Whether `path` is a Hugging Face folder whose `config.json` names an encoder-decoder
/// `model_type`.
pub fn is_seq2seq_folder(path: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path.join("config.json")) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("model_type")?.as_str().map(is_seq2seq_model_type))
        .unwrap_or(false)
}

/// Loads `model` as [`load_model`] does, or as an encoder-decoder when its folder's
/// `config.json` names one.
pub fn load_any(model: &str, device: &str, dtype: Dtype) -> Result<AnyModel> {
    let path: PathBuf = resolve_model_name(model)?;
    if !path.is_dir() || !is_seq2seq_folder(&path) {
        return Ok(AnyModel::DecoderOnly(load_model(model, device, dtype)?));
    }
    let mut device = parse_device(device)?;
    set_dtype(&mut device, dtype)?;
    let mut bar = progress::Bar::new(fidelis_models::model::LOADING);
    let loaded = Seq2SeqModel::load_with_progress(&path, &device, &mut bar)
        .with_context(|| format!("loading {}", path.display()))?;
    bar.finish();
    Ok(AnyModel::Seq2Seq(loaded))
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
