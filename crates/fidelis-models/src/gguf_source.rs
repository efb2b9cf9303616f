//! GGUF tensors seen under Hugging Face Llama names.
//!
//! llama.cpp's converter renames tensors (`blk.3.attn_q.weight`) and permutes the rows of the q
//! and k projections of `llama` models so that rotary embeddings act on interleaved pairs. This
//! source renames them back and undoes that permutation, so the Llama builder, the hook points
//! and the rotate-half rotary code are the same for both file formats.

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::weights::{HostTensor, WeightSource};

/// A GGUF file exposing `LlamaForCausalLM` tensor names.
pub struct GgufSource<'a> {
    file: &'a GgufFile,
    n_heads: usize,
    n_kv_heads: usize,
    /// Whether q/k rows are in llama.cpp's interleaved-rotary order (true for `llama`).
    permuted_qk: bool,
}

impl<'a> GgufSource<'a> {
    /// Wraps an opened GGUF file.
    pub fn new(file: &'a GgufFile, n_heads: usize, n_kv_heads: usize, permuted_qk: bool) -> Self {
        Self {
            file,
            n_heads,
            n_kv_heads,
            permuted_qk,
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
}

impl WeightSource for GgufSource<'_> {
    fn tensor_shaped(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let gguf = Self::gguf_name(name).unwrap_or_default();
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
        Self::gguf_name(name).is_some_and(|g| self.file.tensor_info(&g).is_some())
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let gguf = Self::gguf_name(name).ok_or_else(|| ModelError::MissingTensor(name.into()))?;
        let (shape, data) = self.file.tensor_f32(&gguf)?;
        let mut t = HostTensor { shape, data };
        if self.permuted_qk {
            if name.contains("self_attn.q_proj") {
                t = unpermute_rows(t, self.n_heads);
            } else if name.contains("self_attn.k_proj") {
                t = unpermute_rows(t, self.n_kv_heads);
            }
        }
        Ok(t)
    }
}

/// Undoes llama.cpp's q/k row permutation.
///
/// Within each head of width `dh`, Hugging Face row `half * dh/2 + i` was stored at row
/// `2 * i + half` (interleaved pairs), for `half ∈ {0, 1}` and `i < dh/2`.
fn unpermute_rows(t: HostTensor, heads: usize) -> HostTensor {
    let rows = t.shape[0];
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
