//! GPT-NeoX (Black et al. 2022) and Pythia (Biderman et al. 2023): attention and MLP read the
//! same residual stream (`use_parallel_residual`), rotary embeddings on the first
//! `rotary_pct` of each head, LayerNorm with bias, exact GELU, and an unembedding (`embed_out`)
//! separate from the token embedding.
//!
//! Reference implementation: Hugging Face `transformers/models/gpt_neox/modeling_gpt_neox.py`.
//! Its fused `query_key_value` projection is laid out per head — for head h the output rows
//! `3h·d_head ..` are that head's query, then key, then value — and is split into the q, k and v
//! weights here.

use serde::Deserialize;

use crate::config::{
    ActivationFn, Architecture, NormKind, Positional, RopeScaling, TransformerConfig,
};
use crate::error::{ModelError, Result};
use crate::loader::Loader;
use crate::transformer::{AttentionWeights, Block, MlpWeights, Norm, Transformer};
use crate::weights::HostTensor;

/// The fields of a Hugging Face GPT-NeoX `config.json` that Fidelis reads (transformers 4's
/// `rotary_pct` / `rotary_emb_base` or transformers 5's `rope_parameters`).
#[derive(Debug, Clone, Deserialize)]
pub struct GptNeoXConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Number of heads.
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Context length.
    pub max_position_embeddings: usize,
    /// MLP activation (`gelu`, exact, for Pythia).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Fraction of each head that is rotated (transformers 4).
    #[serde(default)]
    pub rotary_pct: Option<f64>,
    /// Rotary base (transformers 4).
    #[serde(default)]
    pub rotary_emb_base: Option<f64>,
    /// Rotary settings as transformers 5 writes them.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Rotary scaling (transformers 4); only absent/`default` is supported here.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Attention and MLP on the same residual (all Pythia models).
    #[serde(default = "default_true")]
    pub use_parallel_residual: bool,
    /// Whether the unembedding is the token embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Whether the attention projections carry biases (true for Pythia).
    #[serde(default = "default_true")]
    pub attention_bias: bool,
    /// Beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

impl GptNeoXConfig {
    /// The architecture-neutral config, or an error naming the unsupported option.
    pub fn to_transformer(&self) -> Result<TransformerConfig> {
        let (d, h) = (self.hidden_size, self.num_attention_heads);
        if h == 0 || !d.is_multiple_of(h) {
            return Err(ModelError::Unsupported(format!(
                "hidden_size {d} is not divisible by {h} attention heads"
            )));
        }
        if !self.attention_bias {
            return Err(ModelError::Unsupported(
                "GPT-NeoX with attention_bias=false".into(),
            ));
        }
        let d_head = d / h;
        let param = |key: &str| {
            self.rope_parameters
                .as_ref()
                .and_then(|p| p.get(key))
                .and_then(|v| v.as_f64())
        };
        for scaling in [&self.rope_scaling, &self.rope_parameters]
            .into_iter()
            .flatten()
        {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            if kind != "default" {
                return Err(ModelError::Unsupported(format!(
                    "GPT-NeoX rope scaling type `{kind}` (supported: default)"
                )));
            }
        }
        let pct = param("partial_rotary_factor")
            .or(self.rotary_pct)
            .unwrap_or(0.25);
        let theta = param("rope_theta")
            .or(self.rotary_emb_base)
            .unwrap_or(10_000.0);
        // transformers: rotary_ndims = int(head_size * rotary_pct).
        let rotary_dim = (d_head as f64 * pct) as usize;
        if !(0.0..=1.0).contains(&pct) || rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
            return Err(ModelError::Unsupported(format!(
                "rotary_pct {pct} of a {d_head}-wide head rotates {rotary_dim} dimensions; \
                 it must be a positive even number"
            )));
        }
        let act_fn = match self.hidden_act.as_str() {
            "gelu" => ActivationFn::Gelu,
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => ActivationFn::GeluTanh,
            "relu" => ActivationFn::Relu,
            "silu" | "swish" => ActivationFn::Silu,
            other => {
                return Err(ModelError::Unsupported(format!(
                    "GPT-NeoX hidden_act {other}"
                )));
            }
        };
        Ok(TransformerConfig {
            architecture: Architecture::GptNeoX,
            model_type: "gpt_neox".into(),
            n_layers: self.num_hidden_layers,
            d_model: d,
            n_heads: h,
            n_kv_heads: h,
            d_head,
            d_mlp: self.intermediate_size,
            d_vocab: self.vocab_size,
            n_ctx: self.max_position_embeddings,
            norm: NormKind::LayerNorm,
            norm_eps: self.layer_norm_eps,
            act_fn,
            gated_mlp: false,
            positional: Positional::Rotary {
                theta,
                rotary_dim,
                scaling: RopeScaling::None,
            },
            parallel_attn_mlp: self.use_parallel_residual,
            qk_norm: false,
            embed_scale: None,
            query_pre_attn_scalar: None,
            attn_softcap: None,
            final_softcap: None,
            post_norms: false,
            attention_windows: Vec::new(),
            tied_embeddings: self.tie_word_embeddings,
            bos_token_id: self.bos_token_id,
            eos_token_id: self.eos_token_id,
        })
    }
}

/// Builds a GPT-NeoX from checkpoint tensors named as in `GPTNeoXForCausalLM`.
pub(crate) fn build(cfg: TransformerConfig, w: &Loader<'_>) -> Result<Transformer> {
    cfg.check_sizes()?;
    let last = cfg.n_layers - 1;
    w.expect_layers(
        cfg.n_layers,
        &format!("gpt_neox.layers.{last}.attention.query_key_value.weight"),
    )?;
    let (d, v, m, h, dh) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp, cfg.n_heads, cfg.d_head);
    let norm = |name: &str| -> Result<Norm> {
        Ok(Norm {
            kind: NormKind::LayerNorm,
            eps: cfg.norm_eps,
            weight: w.vector(&format!("{name}.weight"), d)?,
            bias: w.optional_vector(&format!("{name}.bias"), d)?,
        })
    };
    let embed = w.matrix("gpt_neox.embed_in.weight", v, d)?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("gpt_neox.layers.{l}");
        let qkv = w.host(
            &format!("{p}.attention.query_key_value.weight"),
            &[3 * d, d],
        )?;
        let qkv_b = w.host(&format!("{p}.attention.query_key_value.bias"), &[3 * d])?;
        // Part j (0 = q, 1 = k, 2 = v) of every head: rows 3h·dh + j·dh .. + dh.
        let rows_of = |j: usize| -> Vec<usize> {
            (0..h)
                .flat_map(|head| {
                    let start = (3 * head + j) * dh;
                    start..start + dh
                })
                .collect()
        };
        let weight = |j: usize| {
            let data = rows_of(j)
                .into_iter()
                .flat_map(|r| qkv.data[r * d..(r + 1) * d].iter().copied())
                .collect();
            let out_in = HostTensor {
                shape: vec![d, d],
                data,
            };
            w.upload2(out_in.transposed())
        };
        let bias = |j: usize| {
            let data = rows_of(j).into_iter().map(|r| qkv_b.data[r]).collect();
            w.upload1(HostTensor {
                shape: vec![d],
                data,
            })
        };
        let attn = AttentionWeights {
            w_q: weight(0),
            b_q: Some(bias(0)),
            w_k: weight(1),
            b_k: Some(bias(1)),
            w_v: weight(2),
            b_v: Some(bias(2)),
            w_o: w.linear(&format!("{p}.attention.dense.weight"), d, d)?,
            b_o: w.optional_vector(&format!("{p}.attention.dense.bias"), d)?,
            q_norm: None,
            k_norm: None,
        };
        let mlp = MlpWeights {
            w_in: w.linear(&format!("{p}.mlp.dense_h_to_4h.weight"), d, m)?,
            b_in: w.optional_vector(&format!("{p}.mlp.dense_h_to_4h.bias"), m)?,
            w_gate: None,
            w_out: w.linear(&format!("{p}.mlp.dense_4h_to_h.weight"), m, d)?,
            b_out: w.optional_vector(&format!("{p}.mlp.dense_4h_to_h.bias"), d)?,
        };
        blocks.push(Block {
            ln1: norm(&format!("{p}.input_layernorm"))?,
            attn,
            ln2: norm(&format!("{p}.post_attention_layernorm"))?,
            mlp,
            post_attn: None,
            post_mlp: None,
        });
    }
    let ln_final = norm("gpt_neox.final_layer_norm")?;
    let unembed = if cfg.tied_embeddings {
        embed.clone()
    } else {
        w.matrix("embed_out.weight", v, d)?
    };
    Ok(Transformer::rotary_decoder(
        cfg, embed, blocks, ln_final, unembed, w.device,
    ))
}
