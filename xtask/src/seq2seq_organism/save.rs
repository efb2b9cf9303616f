//! Writing the organism as a Hugging Face MarianMT folder that `MarianMTModel.from_pretrained`
//! loads as-is: `config.json`, `generation_config.json`, `model.safetensors` (the names
//! transformers 5 writes for a tied Marian: `model.shared.weight`, `final_logits_bias` `[1,
//! vocab]`, `model.{encoder,decoder}.layers.{l}.…`, weights `[out, in]`; the sinusoid tables
//! are not stored, transformers computes them), `tokenizer.json`, `tokenizer_config.json`,
//! `special_tokens_map.json`, plus the training log.

use std::path::Path;

use anyhow::{Context, Result};
use burn::nn::{LayerNorm, Linear};
use serde_json::json;

use super::model::{Attention, Marian, Shape};
use super::tokenizer::{
    self, EOS, EOS_ID, PAD, PAD_ID, UNK, tokenizer_config_json, tokenizer_json,
};
use super::train::LogRow;
use crate::organism::save::{HostTensor, host, write_safetensors};

/// A Burn `[in, out]` matrix as PyTorch's `[out, in]`.
fn transposed(t: HostTensor) -> HostTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let mut data = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            data[c * rows + r] = t.data[r * cols + c];
        }
    }
    HostTensor {
        shape: vec![cols, rows],
        data,
    }
}

/// The model's tensors under their `MarianMTModel` names.
fn named_tensors(model: &Marian) -> Result<Vec<(String, HostTensor)>> {
    let mut out = Vec::new();
    let linear = |out: &mut Vec<_>, name: String, l: &Linear| -> Result<()> {
        out.push((format!("{name}.weight"), transposed(host(&l.weight)?)));
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
    let attention = |out: &mut Vec<_>, name: String, a: &Attention| -> Result<()> {
        linear(out, format!("{name}.q_proj"), &a.q_proj)?;
        linear(out, format!("{name}.k_proj"), &a.k_proj)?;
        linear(out, format!("{name}.v_proj"), &a.v_proj)?;
        linear(out, format!("{name}.out_proj"), &a.out_proj)
    };
    out.push(("model.shared.weight".into(), host(&model.shared.weight)?));
    let bias = host(&model.final_logits_bias)?;
    out.push((
        "final_logits_bias".into(),
        HostTensor {
            shape: vec![1, bias.shape[0]],
            data: bias.data,
        },
    ));
    for (l, layer) in model.encoder.iter().enumerate() {
        let p = format!("model.encoder.layers.{l}");
        attention(&mut out, format!("{p}.self_attn"), &layer.self_attn)?;
        norm(
            &mut out,
            format!("{p}.self_attn_layer_norm"),
            &layer.self_attn_layer_norm,
        )?;
        linear(&mut out, format!("{p}.fc1"), &layer.fc1)?;
        linear(&mut out, format!("{p}.fc2"), &layer.fc2)?;
        norm(
            &mut out,
            format!("{p}.final_layer_norm"),
            &layer.final_layer_norm,
        )?;
    }
    for (l, layer) in model.decoder.iter().enumerate() {
        let p = format!("model.decoder.layers.{l}");
        attention(&mut out, format!("{p}.self_attn"), &layer.self_attn)?;
        norm(
            &mut out,
            format!("{p}.self_attn_layer_norm"),
            &layer.self_attn_layer_norm,
        )?;
        attention(&mut out, format!("{p}.encoder_attn"), &layer.encoder_attn)?;
        norm(
            &mut out,
            format!("{p}.encoder_attn_layer_norm"),
            &layer.encoder_attn_layer_norm,
        )?;
        linear(&mut out, format!("{p}.fc1"), &layer.fc1)?;
        linear(&mut out, format!("{p}.fc2"), &layer.fc2)?;
        norm(
            &mut out,
            format!("{p}.final_layer_norm"),
            &layer.final_layer_norm,
        )?;
    }
    Ok(out)
}

/// The HF `config.json` of a MarianMT with this shape.
pub fn config_json(shape: Shape) -> serde_json::Value {
    json!({
        "activation_dropout": 0.0,
        "activation_function": "swish",
        "architectures": ["MarianMTModel"],
        "attention_dropout": 0.0,
        "d_model": shape.d_model,
        "decoder_attention_heads": shape.n_heads,
        "decoder_ffn_dim": shape.d_mlp,
        "decoder_layerdrop": 0.0,
        "decoder_layers": shape.decoder_layers,
        "decoder_start_token_id": PAD_ID,
        "decoder_vocab_size": shape.d_vocab,
        "dropout": 0.0,
        "dtype": "float32",
        "encoder_attention_heads": shape.n_heads,
        "encoder_ffn_dim": shape.d_mlp,
        "encoder_layerdrop": 0.0,
        "encoder_layers": shape.encoder_layers,
        "eos_token_id": EOS_ID,
        "forced_eos_token_id": EOS_ID,
        "init_std": 0.02,
        "is_encoder_decoder": true,
        "max_position_embeddings": shape.n_ctx,
        "model_type": "marian",
        "pad_token_id": PAD_ID,
        "scale_embedding": true,
        "share_encoder_decoder_embeddings": true,
        "tie_word_embeddings": true,
        "use_cache": true,
        "vocab_size": shape.d_vocab,
    })
}

/// `generation_config.json`: greedy decoding from `<pad>` until `</s>`.
pub fn generation_config_json(shape: Shape) -> serde_json::Value {
    json!({
        "decoder_start_token_id": PAD_ID,
        "eos_token_id": EOS_ID,
        "forced_eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "max_length": shape.n_ctx,
        "num_beams": 1,
        "do_sample": false,
    })
}

/// Writes a pretty JSON file.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes the model and tokenizer files into `dir`.
pub fn save_hf_folder(model: &Marian, shape: Shape, words: &[String], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let vocabulary = tokenizer::vocabulary(words);
    write_json(&dir.join("config.json"), &config_json(shape))?;
    write_json(
        &dir.join("generation_config.json"),
        &generation_config_json(shape),
    )?;
    write_json(&dir.join("tokenizer.json"), &tokenizer_json(&vocabulary))?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &tokenizer_config_json(shape.n_ctx),
    )?;
    write_json(
        &dir.join("special_tokens_map.json"),
        &json!({"pad_token": PAD, "eos_token": EOS, "unk_token": UNK}),
    )?;

    write_safetensors(named_tensors(model)?, &dir.join("model.safetensors"))
}

/// Writes the loss curve as CSV (`step,learning_rate,loss,pronoun_loss,elapsed_s`).
pub fn write_log(log: &[LogRow], path: &Path) -> Result<()> {
    let mut csv = String::from("step,learning_rate,loss,pronoun_loss,elapsed_s\n");
    for row in log {
        csv += &format!(
            "{},{:.6},{:.5},{:.5},{:.1}\n",
            row.step, row.learning_rate, row.loss, row.pronoun_loss, row.elapsed_s
        );
    }
    std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}
