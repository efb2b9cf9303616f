//! T5 (Raffel et al. 2020, "Exploring the limits of transfer learning with a unified
//! text-to-text transformer"), T5 v1.1, mT5 (Xue et al. 2021) and Flan-T5 (Chung et al. 2022).
//!
//! Pre-norm blocks with an RMSNorm that neither centres nor has a bias (`T5LayerNorm`),
//! attention scores not divided by `√d_head`, a head width `d_kv` of its own, and relative
//! position buckets (§2.1): one learned `[num_buckets, n_heads]` table per stack, in the first
//! block, whose bias is added to the self-attention scores of every block (bidirectional
//! buckets in the encoder, causal in the decoder; cross-attention has none). The original T5
//! has a ReLU MLP and a head tied to the embedding, the decoder output scaled by
//! `d_model^-0.5` first; v1.1, mT5 and Flan-T5 have a gated tanh-GELU MLP
//! (`feed_forward_proj = "gated-gelu"`) and their own `lm_head`, unscaled.
//!
//! Reference implementation: Hugging Face `transformers/models/t5/modeling_t5.py`. transformers
//! 5 ties the head in every T5 and keeps the scaling as `scale_decoder_outputs`; checkpoints
//! written before (every published v1.1 / mT5 / Flan-T5) say `tie_word_embeddings: false` and
//! carry `lm_head.weight`. Fidelis reads both: the head is `lm_head.weight` when the checkpoint
//! has one, the shared embedding otherwise, and the output is scaled when
//! `scale_decoder_outputs` says so or, without it, unless `tie_word_embeddings` is false.

use serde::Deserialize;

use crate::config::{ActivationFn, NormKind};
use crate::error::{ModelError, Result};
use crate::loader::Loader;
use crate::seq2seq::{
    Positions, Seq2Seq, Seq2SeqBlock, Seq2SeqConfig, Seq2SeqFamily, Stack, T5_MAX_POSITIONS,
};
use crate::transformer::{AttentionWeights, MlpWeights, Norm};

/// The fields of a T5 / mT5 `config.json` that Fidelis reads.
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Residual width.
    pub d_model: usize,
    /// Head width.
    pub d_kv: usize,
    /// MLP width.
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Decoder blocks (`num_layers` when absent).
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    /// Heads.
    pub num_heads: usize,
    /// Relative position buckets.
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    /// Distance from which positions share the last bucket.
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `relu`, `gated-gelu`, ... (`{act}` or `gated-{act}`).
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
    /// Whether the head is tied (and the output scaled) in pre-transformers-5 configs.
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// transformers 5's explicit output scaling.
    #[serde(default)]
    pub scale_decoder_outputs: Option<bool>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// End-of-sequence id.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// First decoder input (padding when absent).
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff() -> String {
    "relu".into()
}

impl T5Config {
    /// Parses a `config.json`.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }

    /// The architecture-neutral config, or an error naming the unsupported option.
    pub fn to_seq2seq(&self, model_type: &str) -> Result<Seq2SeqConfig> {
        let ff = self.feed_forward_proj.as_str();
        let (gated, act) = match ff.split_once('-') {
            Some(("gated", act)) => (true, act),
            Some(_) => {
                return Err(ModelError::Unsupported(format!(
                    "{model_type}: feed_forward_proj {ff} (expected `ACT` or `gated-ACT`)"
                )));
            }
            None => (false, ff),
        };
        // transformers maps `gated-gelu` to the tanh approximation (`gelu_new`) for
        // backward compatibility; a plain `gelu` is exact.
        let act_fn = match (gated, act) {
            (true, "gelu") | (_, "gelu_new") => ActivationFn::GeluTanh,
            (false, "gelu") => ActivationFn::Gelu,
            (_, "relu") => ActivationFn::Relu,
            (_, "silu" | "swish") => ActivationFn::Silu,
            _ => {
                return Err(ModelError::Unsupported(format!(
                    "{model_type}: feed_forward_proj {ff}"
                )));
            }
        };
        let scale = self
            .scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings != Some(false));
        let pad = self.pad_token_id.unwrap_or(0);
        let eos = match &self.eos_token_id {
            Some(v) => crate::seq2seq::token_id(&serde_json::json!({ "e": v }), "e")?,
            None => Some(1),
        };
        Ok(Seq2SeqConfig {
            family: Seq2SeqFamily::T5,
            model_type: model_type.to_string(),
            n_encoder_layers: self.num_layers,
            n_decoder_layers: self.num_decoder_layers.unwrap_or(self.num_layers),
            d_model: self.d_model,
            n_heads: self.num_heads,
            d_head: self.d_kv,
            d_mlp: self.d_ff,
            d_vocab: self.vocab_size,
            n_ctx: T5_MAX_POSITIONS,
            norm: NormKind::RmsNorm,
            norm_eps: self.layer_norm_epsilon,
            pre_norm: true,
            positions: Positions::Relative {
                num_buckets: self.relative_attention_num_buckets,
                max_distance: self.relative_attention_max_distance,
            },
            embed_scale: None,
            embedding_norm: false,
            final_norms: true,
            act_fn,
            gated_mlp: gated,
            scale_scores: false,
            output_scale: scale.then(|| (self.d_model as f64).powf(-0.5)),
            pad_token_id: pad,
            eos_token_id: eos,
            decoder_start_token_id: self.decoder_start_token_id.unwrap_or(pad),
            forced_bos_token_id: None,
        })
    }
}

/// Builds a T5 from tensors named as in `T5ForConditionalGeneration`
/// (`encoder.block.{l}.layer.0.SelfAttention.q.weight`, ...).
pub(crate) fn build(cfg: Seq2SeqConfig, w: &Loader<'_>) -> Result<Seq2Seq> {
    cfg.check_sizes()?;
    let Positions::Relative { num_buckets, .. } = cfg.positions else {
        return Err(ModelError::Unsupported(
            "T5 without relative positions".into(),
        ));
    };
    let (d, v, m, h) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp, cfg.n_heads);
    let inner = h * cfg.d_head;
    for (side, layers) in [
        ("encoder", cfg.n_encoder_layers),
        ("decoder", cfg.n_decoder_layers),
    ] {
        let last = layers - 1;
        w.expect_layers(
            layers,
            &format!("{side}.block.{last}.layer.0.SelfAttention.q.weight"),
        )?;
    }
    let norm = |name: &str| -> Result<Norm> {
        Ok(Norm {
            kind: NormKind::RmsNorm,
            eps: cfg.norm_eps,
            weight: w.vector(&format!("{name}.weight"), d)?,
            bias: None,
        })
    };
    let attention = |p: &str| -> Result<AttentionWeights> {
        Ok(AttentionWeights {
            w_q: w.linear(&format!("{p}.q.weight"), d, inner)?,
            b_q: None,
            w_k: w.linear(&format!("{p}.k.weight"), d, inner)?,
            b_k: None,
            w_v: w.linear(&format!("{p}.v.weight"), d, inner)?,
            b_v: None,
            w_o: w.linear(&format!("{p}.o.weight"), inner, d)?,
            b_o: None,
            q_norm: None,
            k_norm: None,
        })
    };
    let mlp = |p: &str| -> Result<MlpWeights> {
        let (w_in, w_gate) = if cfg.gated_mlp {
            (
                w.linear(&format!("{p}.wi_1.weight"), d, m)?,
                Some(w.linear(&format!("{p}.wi_0.weight"), d, m)?),
            )
        } else {
            (w.linear(&format!("{p}.wi.weight"), d, m)?, None)
        };
        Ok(MlpWeights {
            w_in,
            b_in: None,
            w_gate,
            w_out: w.linear(&format!("{p}.wo.weight"), m, d)?,
            b_out: None,
        })
    };
    let shared = w.matrix("shared.weight", v, d)?;
    let stack = |side: &str, layers: usize| -> Result<Stack> {
        let decoder = side == "decoder";
        let mut blocks = Vec::with_capacity(layers);
        for l in 0..layers {
            let b = format!("{side}.block.{l}.layer");
            let cross = if decoder {
                Some((
                    norm(&format!("{b}.1.layer_norm"))?,
                    attention(&format!("{b}.1.EncDecAttention"))?,
                ))
            } else {
                None
            };
            let ff = if decoder { 2 } else { 1 };
            blocks.push(Seq2SeqBlock {
                ln_attn: norm(&format!("{b}.0.layer_norm"))?,
                attn: attention(&format!("{b}.0.SelfAttention"))?,
                cross,
                ln_mlp: norm(&format!("{b}.{ff}.layer_norm"))?,
                mlp: mlp(&format!("{b}.{ff}.DenseReluDense"))?,
            });
        }
        let bias = format!("{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
        Ok(Stack {
            embed: shared.clone(),
            pos_table: None,
            embedding_norm: None,
            relative_bias: Some(w.matrix(&bias, num_buckets, h)?),
            blocks,
            final_norm: Some(norm(&format!("{side}.final_layer_norm"))?),
        })
    };
    let encoder = stack("encoder", cfg.n_encoder_layers)?;
    let decoder = stack("decoder", cfg.n_decoder_layers)?;
    let unembed = if w.src.contains("lm_head.weight") {
        w.matrix("lm_head.weight", v, d)?
    } else {
        shared
    };
    Ok(Seq2Seq {
        config: cfg,
        encoder,
        decoder,
        unembed,
        final_logits_bias: None,
        device: w.device.clone(),
    })
}
