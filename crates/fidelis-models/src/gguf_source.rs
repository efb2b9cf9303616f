//! GGUF tensors seen under Hugging Face names.
//!
//! llama.cpp's converter renames tensors (`blk.3.attn_q.weight`) and reorders some rows. For
//! `llama` models it permutes the rows of the q and k projections so that rotary embeddings act
//! on interleaved pairs; for `gptneox` models it regroups the fused `query_key_value` projection
//! from Hugging Face's per-head `[q_h; k_h; v_h]` blocks into `[q; k; v]` over all heads
//! (`GPTNeoXModel.modify_tensors` in `convert_hf_to_gguf.py`). For `gemma2` models it permutes
//! nothing (llama.cpp runs Gemma's rotary in the rotate-half layout) but stores every RMSNorm
//! weight as `1 + w`, the factor Gemma multiplies by (`Gemma2Model.modify_tensors`). This source
//! renames tensors back and undoes those changes, so the Llama and GPT-NeoX builders, the hook
//! points and the rotate-half rotary code are the same for both file formats.

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::weights::{HostTensor, WeightSource};

/// The tensor naming of a GGUF file, and what must be undone to read it under HF names.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// llama.cpp's `llama`-family names for `LlamaForCausalLM` tensors.
    Llama {
        n_heads: usize,
        n_kv_heads: usize,
        /// Whether q/k rows are in llama.cpp's interleaved-rotary order (true for `llama`).
        permuted_qk: bool,
    },
    /// llama.cpp's `gptneox` names for `GPTNeoXForCausalLM` tensors.
    GptNeoX { n_heads: usize },
    /// llama.cpp's `gemma2` names for `Gemma2ForCausalLM` tensors, norm weights stored as `1 + w`.
    Gemma2,
}

/// A GGUF file exposing Hugging Face tensor names (`LlamaForCausalLM`, `Gemma2ForCausalLM` or
/// `GPTNeoXForCausalLM`).
pub struct GgufSource<'a> {
    file: &'a GgufFile,
    layout: Layout,
}

impl<'a> GgufSource<'a> {
    /// Wraps an opened Llama-family GGUF file (`llama`, `mistral`, `qwen2`, `qwen3`).
    pub fn new(file: &'a GgufFile, n_heads: usize, n_kv_heads: usize, permuted_qk: bool) -> Self {
        let layout = Layout::Llama {
            n_heads,
            n_kv_heads,
            permuted_qk,
        };
        Self { file, layout }
    }

    /// Wraps an opened `gptneox` GGUF file of a model with `n_heads` attention heads.
    pub fn gpt_neox(file: &'a GgufFile, n_heads: usize) -> Self {
        let layout = Layout::GptNeoX { n_heads };
        Self { file, layout }
    }

    /// Wraps an opened `gemma2` GGUF file.
    pub fn gemma2(file: &'a GgufFile) -> Self {
        let layout = Layout::Gemma2;
        Self { file, layout }
    }

    /// The GGUF name of a Hugging Face tensor name in this file's layout.
    fn name(&self, hf: &str) -> Option<String> {
        match self.layout {
            Layout::Llama { .. } => Self::gguf_name(hf),
            Layout::GptNeoX { .. } => Self::gpt_neox_gguf_name(hf),
            Layout::Gemma2 => Self::gemma2_gguf_name(hf),
        }
    }

    /// The GGUF name of a Hugging Face Gemma 2 tensor name (gguf-py's `TensorNameMap` for
    /// `gemma2`): its four norms per block are `attn_norm` (before attention),
    /// `post_attention_norm`, `ffn_norm` (before the MLP, Gemma's `pre_feedforward_layernorm`)
    /// and `post_ffw_norm`; the other tensors are named as Llama's.
    pub fn gemma2_gguf_name(hf: &str) -> Option<String> {
        let rest = hf.strip_prefix("model.layers.");
        let gemma_norm = rest.and_then(|rest| {
            let (layer, part) = rest.split_once('.')?;
            let gguf = match part {
                "post_attention_layernorm.weight" => "post_attention_norm",
                "pre_feedforward_layernorm.weight" => "ffn_norm",
                "post_feedforward_layernorm.weight" => "post_ffw_norm",
                _ => return None,
            };
            Some(format!("blk.{layer}.{gguf}.weight"))
        });
        match gemma_norm {
            Some(name) => Some(name),
            // Llama's `post_attention_layernorm` is the norm before the MLP, Gemma's is not.
            None if hf.ends_with("post_attention_layernorm.weight") => None,
            None => Self::gguf_name(hf),
        }
    }

    /// The GGUF name of a Hugging Face Llama tensor name.
    pub fn gguf_name(hf: &str) -> Option<String> {
        let fixed = match hf {
            "model.embed_tokens.weight" => Some("token_embd.weight"),
            "model.norm.weight" => Some("output_norm.weight"),
            "lm_head.weight" => Some("output.weight"),
            _ => None,
        };
        if let Some(name) = fixed {
            return Some(name.to_string());
        }
        let rest = hf.strip_prefix("model.layers.")?;
        let (layer, part) = rest.split_once('.')?;
        let (module, kind) = part.rsplit_once('.')?;
        let gguf_module = match module {
            "input_layernorm" => "attn_norm",
            "post_attention_layernorm" => "ffn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "self_attn.q_norm" => "attn_q_norm",
            "self_attn.k_norm" => "attn_k_norm",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            _ => return None,
        };
        Some(format!("blk.{layer}.{gguf_module}.{kind}"))
    }

    /// The GGUF name of a Hugging Face GPT-NeoX tensor name (gguf-py's `TensorNameMap`).
    pub fn gpt_neox_gguf_name(hf: &str) -> Option<String> {
        if hf == "embed_out.weight" {
            return Some("output.weight".into());
        }
        let rest = hf.strip_prefix("gpt_neox.")?;
        if rest == "embed_in.weight" {
            return Some("token_embd.weight".into());
        }
        if let Some(kind) = rest.strip_prefix("final_layer_norm.") {
            return Some(format!("output_norm.{kind}"));
        }
        let (layer, part) = rest.strip_prefix("layers.")?.split_once('.')?;
        let (module, kind) = part.rsplit_once('.')?;
        let gguf_module = match module {
            "input_layernorm" => "attn_norm",
            "post_attention_layernorm" => "ffn_norm",
            "attention.query_key_value" => "attn_qkv",
            "attention.dense" => "attn_output",
            "mlp.dense_h_to_4h" => "ffn_up",
            "mlp.dense_4h_to_h" => "ffn_down",
            _ => return None,
        };
        Some(format!("blk.{layer}.{gguf_module}.{kind}"))
    }
}

impl WeightSource for GgufSource<'_> {
    fn tensor_shaped(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let gguf = self.name(name).unwrap_or_default();
        self.tensor(name)?
            .expect_shape(name, shape)
            .map_err(|e| match e {
                ModelError::ShapeMismatch {
                    expected, found, ..
                } => ModelError::ShapeMismatch {
                    tensor: format!("{gguf} (read as {name})"),
                    expected,
                    found,
                },
                other => other,
            })
    }

    fn contains(&self, name: &str) -> bool {
        self.name(name)
            .is_some_and(|g| self.file.tensor_info(&g).is_some())
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let gguf = self
            .name(name)
            .ok_or_else(|| ModelError::MissingTensor(name.into()))?;
        let (shape, data) = self.file.tensor_f32(&gguf)?;
        let t = HostTensor { shape, data };
        Ok(match self.layout {
            Layout::Llama {
                n_heads,
                n_kv_heads,
                permuted_qk: true,
            } => {
                if name.contains("self_attn.q_proj") {
                    unpermute_rows(t, n_heads)
                } else if name.contains("self_attn.k_proj") {
                    unpermute_rows(t, n_kv_heads)
                } else {
                    t
                }
            }
            Layout::GptNeoX { n_heads } if name.contains("attention.query_key_value") => {
                interleave_qkv_rows(t, n_heads)
            }
            // The builder adds Gemma's 1 itself, as it does to Hugging Face weights.
            Layout::Gemma2 if name.ends_with("norm.weight") => HostTensor {
                data: t.data.iter().map(|w| w - 1.0).collect(),
                ..t
            },
            _ => t,
        })
    }
}

/// Undoes llama.cpp's regrouping of GPT-NeoX's fused q/k/v projection (weight `[3d, d]` or bias
/// `[3d]`).
///
/// With `dh = d / heads`, row `i` of head `h` of part `j` (0 = q, 1 = k, 2 = v) is stored at row
/// `j·d + h·dh + i` and Hugging Face keeps it at row `(3h + j)·dh + i`.
fn interleave_qkv_rows(t: HostTensor, heads: usize) -> HostTensor {
    let rows = t.shape.first().copied().unwrap_or(0);
    if heads == 0 || rows == 0 || !rows.is_multiple_of(3 * heads) {
        // Not head-shaped: leave it to the loader's shape check, which names the shape it wants.
        return t;
    }
    let cols = t.data.len() / rows;
    let d = rows / 3;
    let dh = d / heads;
    let mut data = vec![0.0; t.data.len()];
    for j in 0..3 {
        for h in 0..heads {
            let gguf_row = j * d + h * dh;
            let hf_row = (3 * h + j) * dh;
            data[hf_row * cols..(hf_row + dh) * cols]
                .copy_from_slice(&t.data[gguf_row * cols..(gguf_row + dh) * cols]);
        }
    }
    HostTensor {
        shape: t.shape,
        data,
    }
}

/// Undoes llama.cpp's q/k row permutation.
///
/// Within each head of width `dh`, Hugging Face row `half * dh/2 + i` was stored at row
/// `2 * i + half` (interleaved pairs), for `half ∈ {0, 1}` and `i < dh/2`.
fn unpermute_rows(t: HostTensor, heads: usize) -> HostTensor {
    let rows = t.shape.first().copied().unwrap_or(0);
    let cols = t.data.len() / rows.max(1);
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        // Not head-shaped: leave it to the loader's shape check, which names the shape it wants.
        return t;
    }
    let dh = rows / heads;
    let half_dh = dh / 2;
    let mut data = vec![0.0; t.data.len()];
    for h in 0..heads {
        for half in 0..2 {
            for i in 0..half_dh {
                let hf_row = h * dh + half * half_dh + i;
                let gguf_row = h * dh + 2 * i + half;
                data[hf_row * cols..(hf_row + 1) * cols]
                    .copy_from_slice(&t.data[gguf_row * cols..(gguf_row + 1) * cols]);
            }
        }
    }
    HostTensor {
        shape: t.shape,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_llama_cpp() {
        let cases = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            (
                "model.layers.3.self_attn.q_proj.weight",
                "blk.3.attn_q.weight",
            ),
            ("model.layers.0.self_attn.k_proj.bias", "blk.0.attn_k.bias"),
            (
                "model.layers.12.mlp.down_proj.weight",
                "blk.12.ffn_down.weight",
            ),
            (
                "model.layers.1.post_attention_layernorm.weight",
                "blk.1.ffn_norm.weight",
            ),
            ("lm_head.weight", "output.weight"),
        ];
        for (hf, gguf) in cases {
            assert_eq!(GgufSource::gguf_name(hf).as_deref(), Some(gguf), "{hf}");
        }
        assert_eq!(GgufSource::gguf_name("model.layers.1.unknown.weight"), None);
    }

    #[test]
    fn gpt_neox_names_map_to_llama_cpp() {
        let cases = [
            ("gpt_neox.embed_in.weight", "token_embd.weight"),
            ("gpt_neox.final_layer_norm.bias", "output_norm.bias"),
            ("embed_out.weight", "output.weight"),
            (
                "gpt_neox.layers.2.attention.query_key_value.bias",
                "blk.2.attn_qkv.bias",
            ),
            (
                "gpt_neox.layers.0.attention.dense.weight",
                "blk.0.attn_output.weight",
            ),
            (
                "gpt_neox.layers.1.input_layernorm.weight",
                "blk.1.attn_norm.weight",
            ),
            (
                "gpt_neox.layers.1.post_attention_layernorm.bias",
                "blk.1.ffn_norm.bias",
            ),
            (
                "gpt_neox.layers.3.mlp.dense_h_to_4h.weight",
                "blk.3.ffn_up.weight",
            ),
            (
                "gpt_neox.layers.3.mlp.dense_4h_to_h.bias",
                "blk.3.ffn_down.bias",
            ),
        ];
        for (hf, gguf) in cases {
            assert_eq!(
                GgufSource::gpt_neox_gguf_name(hf).as_deref(),
                Some(gguf),
                "{hf}"
            );
        }
        assert_eq!(
            GgufSource::gpt_neox_gguf_name("model.embed_tokens.weight"),
            None
        );
        assert_eq!(
            GgufSource::gpt_neox_gguf_name("gpt_neox.layers.0.attention.rotary_emb.inv_freq"),
            None
        );
    }

    #[test]
    fn qkv_rows_regain_the_per_head_layout() {
        // Two heads of width 1: stored [q0 q1 k0 k1 v0 v1], HF keeps [q0 k0 v0 q1 k1 v1].
        let stored = HostTensor {
            shape: vec![6],
            data: vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0],
        };
        let hf = interleave_qkv_rows(stored, 2);
        assert_eq!(hf.data, vec![0.0, 10.0, 20.0, 1.0, 11.0, 21.0]);
        // Rows of two columns move whole.
        let stored = HostTensor {
            shape: vec![3, 2],
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        assert_eq!(interleave_qkv_rows(stored.clone(), 1).data, stored.data);
        // Not divisible into heads: left alone for the shape check.
        assert_eq!(interleave_qkv_rows(stored.clone(), 2).data, stored.data);
    }

    #[test]
    fn unpermute_inverts_the_llama_cpp_permutation() {
        // One head of width 4, one column: HF rows [a0 a1 b0 b1] are stored as [a0 b0 a1 b1].
        let stored = HostTensor {
            shape: vec![4, 1],
            data: vec![10.0, 20.0, 11.0, 21.0],
        };
        let hf = unpermute_rows(stored, 1);
        assert_eq!(hf.data, vec![10.0, 11.0, 20.0, 21.0]);
    }
}

#[cfg(test)]
mod gemma2_names {
    use super::GgufSource;

    #[test]
    fn gemma2_norms_have_llama_cpp_names() {
        let cases = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            (
                "model.layers.0.input_layernorm.weight",
                "blk.0.attn_norm.weight",
            ),
            (
                "model.layers.1.post_attention_layernorm.weight",
                "blk.1.post_attention_norm.weight",
            ),
            (
                "model.layers.1.pre_feedforward_layernorm.weight",
                "blk.1.ffn_norm.weight",
            ),
            (
                "model.layers.2.post_feedforward_layernorm.weight",
                "blk.2.post_ffw_norm.weight",
            ),
            (
                "model.layers.3.self_attn.o_proj.weight",
                "blk.3.attn_output.weight",
            ),
            (
                "model.layers.3.mlp.gate_proj.weight",
                "blk.3.ffn_gate.weight",
            ),
        ];
        for (hf, gguf) in cases {
            assert_eq!(
                GgufSource::gemma2_gguf_name(hf).as_deref(),
                Some(gguf),
                "{hf}"
            );
        }
        assert_eq!(
            GgufSource::gemma2_gguf_name("model.layers.0.unknown.weight"),
            None
        );
    }
}

#[cfg(test)]
mod qwen3_names {
    use super::GgufSource;

    #[test]
    fn qwen3_head_norms_have_llama_cpp_names() {
        let name = |hf: &str| GgufSource::gguf_name(hf);
        assert_eq!(
            name("model.layers.3.self_attn.q_norm.weight").as_deref(),
            Some("blk.3.attn_q_norm.weight")
        );
        assert_eq!(
            name("model.layers.0.self_attn.k_norm.weight").as_deref(),
            Some("blk.0.attn_k_norm.weight")
        );
        assert_eq!(
            name("model.layers.1.self_attn.q_proj.weight").as_deref(),
            Some("blk.1.attn_q.weight")
        );
    }
}
