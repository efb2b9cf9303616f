//! GPT-2 (Radford et al. 2019): learned positions, pre-LayerNorm blocks, GELU (tanh) MLP and an
//! unembedding tied to the token embedding.
//!
//! Reference implementation: Hugging Face `transformers/models/gpt2/modeling_gpt2.py`. Its
//! `Conv1D` layers already store weights `[in, out]`, the layout Fidelis computes with; the fused
//! `c_attn` projection is split into q, k and v at load time.

use serde::Deserialize;

use crate::config::{ActivationFn, Architecture, NormKind, Positional, TransformerConfig};
use crate::error::{ModelError, Result};
use crate::loader::Loader;
use crate::transformer::{AttentionWeights, Block, MlpWeights, Norm, Transformer};

/// The fields of a Hugging Face GPT-2 `config.json` that Fidelis reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Context length.
    pub n_positions: usize,
    /// Residual width.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Number of heads.
    pub n_head: usize,
    /// MLP width (`4 * n_embd` when absent).
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// MLP activation (`gelu_new` by default).
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Whether scores are divided by sqrt(d_head) (must be true).
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// Mistral-style per-layer score scaling (unsupported when true).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

fn default_activation() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

impl Gpt2Config {
    /// The architecture-neutral config, or an error naming the unsupported option.
    pub fn to_transformer(&self) -> Result<TransformerConfig> {
        if !self.scale_attn_weights || self.scale_attn_by_inverse_layer_idx {
            return Err(ModelError::Unsupported(
                "GPT-2 with scale_attn_weights=false or scale_attn_by_inverse_layer_idx=true"
                    .into(),
            ));
        }
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return Err(ModelError::Unsupported(format!(
                "n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            )));
        }
        let act_fn = match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => ActivationFn::GeluTanh,
            "gelu" => ActivationFn::Gelu,
            "relu" => ActivationFn::Relu,
            "silu" | "swish" => ActivationFn::Silu,
            other => {
                return Err(ModelError::Unsupported(format!(
                    "GPT-2 activation_function {other}"
                )));
            }
        };
        Ok(TransformerConfig {
            architecture: Architecture::Gpt2,
            model_type: "gpt2".into(),
            n_layers: self.n_layer,
            d_model: self.n_embd,
            n_heads: self.n_head,
            n_kv_heads: self.n_head,
            d_head: self.n_embd / self.n_head,
            // Saturating: an absurd width is refused by `check_sizes`, not wrapped.
            d_mlp: self.n_inner.unwrap_or(self.n_embd.saturating_mul(4)),
            d_vocab: self.vocab_size,
            n_ctx: self.n_positions,
            norm: NormKind::LayerNorm,
            norm_eps: self.layer_norm_epsilon,
            act_fn,
            gated_mlp: false,
            positional: Positional::Learned,
            parallel_attn_mlp: false,
            qk_norm: false,
            embed_scale: None,
            query_pre_attn_scalar: None,
            attn_softcap: None,
            final_softcap: None,
            post_norms: false,
            attention_windows: Vec::new(),
            tied_embeddings: true,
            bos_token_id: self.bos_token_id,
            eos_token_id: self.eos_token_id,
        })
    }
}

/// Builds a GPT-2 from checkpoint tensors named as in `GPT2LMHeadModel` (with or without the
/// `transformer.` prefix of the LM-head wrapper).
pub(crate) fn build(cfg: TransformerConfig, w: &Loader<'_>) -> Result<Transformer> {
    let prefix = if w.src.contains("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    cfg.check_sizes()?;
    let last = cfg.n_layers - 1;
    w.expect_layers(
        cfg.n_layers,
        &format!("{prefix}h.{last}.attn.c_attn.weight"),
    )?;
    let (d, v, m) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp);
    let norm = |name: &str| -> Result<Norm> {
        Ok(Norm {
            kind: NormKind::LayerNorm,
            eps: cfg.norm_eps,
            weight: w.vector(&format!("{prefix}{name}.weight"), d)?,
            bias: w.optional_vector(&format!("{prefix}{name}.bias"), d)?,
        })
    };
    let embed = w.matrix(&format!("{prefix}wte.weight"), v, d)?;
    let pos_embed = w.matrix(&format!("{prefix}wpe.weight"), cfg.n_ctx, d)?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("{prefix}h.{l}");
        let c_attn = w.host(&format!("{p}.attn.c_attn.weight"), &[d, 3 * d])?;
        let c_attn_b = w.host(&format!("{p}.attn.c_attn.bias"), &[3 * d])?;
        let bias_part = |i: usize| {
            let data = c_attn_b.data[i * d..(i + 1) * d].to_vec();
            w.upload1(crate::weights::HostTensor {
                shape: vec![d],
                data,
            })
        };
        let attn = AttentionWeights {
            w_q: w.upload2(c_attn.columns(0, d)),
            b_q: Some(bias_part(0)),
            w_k: w.upload2(c_attn.columns(d, 2 * d)),
            b_k: Some(bias_part(1)),
            w_v: w.upload2(c_attn.columns(2 * d, 3 * d)),
            b_v: Some(bias_part(2)),
            w_o: w.matrix(&format!("{p}.attn.c_proj.weight"), d, d)?,
            b_o: w.optional_vector(&format!("{p}.attn.c_proj.bias"), d)?,
            q_norm: None,
            k_norm: None,
        };
        let mlp = MlpWeights {
            w_in: w.matrix(&format!("{p}.mlp.c_fc.weight"), d, m)?,
            b_in: w.optional_vector(&format!("{p}.mlp.c_fc.bias"), m)?,
            w_gate: None,
            w_out: w.matrix(&format!("{p}.mlp.c_proj.weight"), m, d)?,
            b_out: w.optional_vector(&format!("{p}.mlp.c_proj.bias"), d)?,
        };
        blocks.push(Block {
            ln1: norm(&format!("h.{l}.ln_1"))?,
            attn,
            ln2: norm(&format!("h.{l}.ln_2"))?,
            mlp,
            post_attn: None,
            post_mlp: None,
        });
    }
    let ln_final = norm("ln_f")?;
    Ok(Transformer {
        unembed: embed.clone(),
        embed,
        pos_embed: Some(pos_embed),
        blocks,
        ln_final,
        rotary: None,
        device: w.device.clone(),
        config: cfg,
    })
}
