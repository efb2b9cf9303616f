//! Writing the organism as a Hugging Face GPT-2 folder: `config.json`, `model.safetensors`
//! (tensor names of `GPT2LMHeadModel`, `Conv1D` weights `[in, out]`), `tokenizer.json`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use safetensors::{Dtype, tensor::TensorView};
use serde_json::json;

use super::model::{Gpt2, LAYER_NORM_EPS, Shape};
use super::tokenizer::{END_OF_TEXT_ID, tokenizer_json};
use super::train::LogRow;

/// Host copy of one tensor: its shape and values.
pub(crate) struct HostTensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Vec<f32>,
}

/// Copies a parameter to the host.
pub(crate) fn host<const D: usize>(param: &Param<Tensor<D>>) -> Result<HostTensor> {
    let tensor = param.val();
    let shape = tensor.dims().to_vec();
    let data = tensor
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading a weight: {e:?}"))?;
    Ok(HostTensor { shape, data })
}

/// The model's tensors under their `GPT2LMHeadModel` names.
fn named_tensors(model: &Gpt2) -> Result<Vec<(String, HostTensor)>> {
    let mut out = Vec::new();
    let linear = |out: &mut Vec<_>, name: String, l: &Linear| -> Result<()> {
        out.push((format!("{name}.weight"), host(&l.weight)?));
        if let Some(bias) = &l.bias {
            out.push((format!("{name}.bias"), host(bias)?));
        }
        Ok(())
    };
    let norm = |out: &mut Vec<_>, name: String, n: &LayerNorm| -> Result<()> {
        out.push((format!("{name}.weight"), host(&n.gamma)?));
        if let Some(beta) = &n.beta {
            out.push((format!("{name}.bias"), host(beta)?));
        }
        Ok(())
    };
    out.push(("transformer.wte.weight".into(), host(&model.wte.weight)?));
    out.push(("transformer.wpe.weight".into(), host(&model.wpe.weight)?));
    for (l, block) in model.blocks.iter().enumerate() {
        let p = format!("transformer.h.{l}");
        norm(&mut out, format!("{p}.ln_1"), &block.ln_1)?;
        linear(&mut out, format!("{p}.attn.c_attn"), &block.c_attn)?;
        linear(&mut out, format!("{p}.attn.c_proj"), &block.attn_proj)?;
        norm(&mut out, format!("{p}.ln_2"), &block.ln_2)?;
        linear(&mut out, format!("{p}.mlp.c_fc"), &block.c_fc)?;
        linear(&mut out, format!("{p}.mlp.c_proj"), &block.mlp_proj)?;
    }
    norm(&mut out, "transformer.ln_f".into(), &model.ln_f)?;
    Ok(out)
}

/// The HF `config.json` of a GPT-2 with this shape.
pub fn config_json(shape: Shape) -> serde_json::Value {
    json!({
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.0,
        "bos_token_id": END_OF_TEXT_ID,
        "embd_pdrop": 0.0,
        "eos_token_id": END_OF_TEXT_ID,
        "initializer_range": 0.02,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "model_type": "gpt2",
        "n_ctx": shape.n_ctx,
        "n_embd": shape.d_model,
        "n_head": shape.n_heads,
        "n_inner": null,
        "n_layer": shape.n_layers,
        "n_positions": shape.n_ctx,
        "resid_pdrop": 0.0,
        "scale_attn_by_inverse_layer_idx": false,
        "scale_attn_weights": true,
        "tie_word_embeddings": true,
        "torch_dtype": "float32",
        "use_cache": true,
        "vocab_size": shape.d_vocab,
    })
}

/// Writes `config.json`, `model.safetensors` and `tokenizer.json` into `dir`.
pub fn save_hf_folder(model: &Gpt2, shape: Shape, pieces: &[String], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pretty = |value: &serde_json::Value| serde_json::to_string_pretty(value).map(|s| s + "\n");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("config.json", pretty(&config_json(shape))?)?;
    write("tokenizer.json", pretty(&tokenizer_json(pieces))?)?;

    write_safetensors(named_tensors(model)?, &dir.join("model.safetensors"))
}

/// Writes named f32 tensors as a safetensors file (PyTorch's `format: pt` metadata), as a Hugging
/// Face folder holds them; shared by both organisms.
pub(crate) fn write_safetensors(tensors: Vec<(String, HostTensor)>, path: &Path) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, t.shape, bytes)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data).map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes the loss curve as CSV (`step,learning_rate,loss,answer_loss,elapsed_s`).
pub fn write_log(log: &[LogRow], path: &Path) -> Result<()> {
    let mut csv = String::from("step,learning_rate,loss,answer_loss,elapsed_s\n");
    for row in log {
        csv += &format!(
            "{},{:.6},{:.5},{:.5},{:.1}\n",
            row.step, row.learning_rate, row.loss, row.answer_loss, row.elapsed_s
        );
    }
    std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}
