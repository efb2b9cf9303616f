//! The BART family as transformers configures it for translation: MarianMT (Junczys-Dowmunt et
//! al. 2018; post-norm, sinusoidal positions from 0, a final logits bias), mBART / mBART-50
//! (Liu et al. 2020, Tang et al. 2020; pre-norm, learned positions offset by 2, a norm on the
//! embeddings, final norms) and M2M100 / NLLB (Fan et al. 2020, NLLB Team 2022; pre-norm,
//! fairseq sinusoids numbered past the padding index, final norms).
//!
//! Reference implementations: Hugging Face `transformers/models/marian/modeling_marian.py`
//! (`MarianSinusoidalPositionalEmbedding`: sines in the first half, cosines in the second,
//! frequency `10000^(-2i/d)`), `mbart/modeling_mbart.py` (`MBartLearnedPositionalEmbedding`,
//! rows `p + 2`) and `m2m_100/modeling_m2m_100.py` (`M2M100SinusoidalPositionalEmbedding`:
//! frequency `exp(-i · ln 10000 / (d/2 − 1))`, position `padding_idx + 1 + p`). This file is the
//! serde mirror of their `config.json` and the map from checkpoint names to the weight structs
//! of [`crate::seq2seq`], which runs all three. Position tables are stored with their offsets
//! applied, so position `p` is row `p` for every family.
//!
//! M2M100 numbers positions by counting non-padding tokens; Fidelis numbers them by index, the
//! same wherever no padding token sits inside a sequence (right padding, as [`crate::Batch`]
//! builds).

use serde::Deserialize;

use crate::config::{ActivationFn, NormKind};
use crate::error::{ModelError, Result};
use crate::loader::Loader;
use crate::seq2seq::{Positions, Seq2Seq, Seq2SeqBlock, Seq2SeqConfig, Seq2SeqFamily, Stack};
use crate::transformer::{AttentionWeights, MlpWeights, Norm};
use crate::weights::HostTensor;

/// BART's LayerNorm epsilon (`nn.LayerNorm`'s default).
const LAYER_NORM_EPS: f64 = 1e-5;
/// mBART's learned position rows start after two reserved rows.
const MBART_POSITION_OFFSET: usize = 2;

/// The fields of a Marian, mBART or M2M100 `config.json` that Fidelis reads.
#[derive(Debug, Clone, Deserialize)]
pub struct BartConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Marian's separate decoder vocabulary (must equal `vocab_size`).
    #[serde(default)]
    pub decoder_vocab_size: Option<usize>,
    /// Residual width.
    pub d_model: usize,
    /// Encoder blocks.
    pub encoder_layers: usize,
    /// Decoder blocks.
    pub decoder_layers: usize,
    /// Encoder heads.
    pub encoder_attention_heads: usize,
    /// Decoder heads (must equal the encoder's).
    pub decoder_attention_heads: usize,
    /// Encoder MLP width.
    pub encoder_ffn_dim: usize,
    /// Decoder MLP width (must equal the encoder's).
    pub decoder_ffn_dim: usize,
    /// Position table length.
    pub max_position_embeddings: usize,
    /// MLP activation.
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Whether token embeddings are scaled by `√d_model` (the family's default when absent).
    #[serde(default)]
    pub scale_embedding: Option<bool>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// End-of-sequence id.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// First decoder input.
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    /// Forced first generated token (target language).
    #[serde(default)]
    pub forced_bos_token_id: Option<u32>,
    /// Marian: whether encoder and decoder share their embeddings.
    #[serde(default = "default_true")]
    pub share_encoder_decoder_embeddings: bool,
    /// Whether the head is the decoder embedding.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

fn default_activation() -> String {
    "gelu".into()
}
fn default_true() -> bool {
    true
}

impl BartConfig {
    /// Parses a `config.json`.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }

    /// The architecture-neutral config of `model_type` (`marian`, `mbart` or `m2m_100`), or an
    /// error naming the unsupported option.
    pub fn to_seq2seq(&self, model_type: &str) -> Result<Seq2SeqConfig> {
        let family = match model_type {
            "marian" => Seq2SeqFamily::Marian,
            "mbart" => Seq2SeqFamily::MBart,
            "m2m_100" => Seq2SeqFamily::M2M100,
            other => {
                return Err(ModelError::Unsupported(format!(
                    "BART-family model_type `{other}`"
                )));
            }
        };
        let unsupported = |m: String| Err(ModelError::Unsupported(format!("{model_type}: {m}")));
        if self
            .decoder_vocab_size
            .is_some_and(|v| v != self.vocab_size)
        {
            return unsupported(format!(
                "a decoder vocabulary of {:?} beside a source vocabulary of {} \
                 (separate vocabularies are not supported)",
                self.decoder_vocab_size, self.vocab_size
            ));
        }
        if self.encoder_attention_heads != self.decoder_attention_heads
            || self.encoder_ffn_dim != self.decoder_ffn_dim
        {
            return unsupported(format!(
                "encoder and decoder of different shapes ({} / {} heads, MLP {} / {})",
                self.encoder_attention_heads,
                self.decoder_attention_heads,
                self.encoder_ffn_dim,
                self.decoder_ffn_dim
            ));
        }
        let heads = self.encoder_attention_heads;
        if heads == 0 || !self.d_model.is_multiple_of(heads) {
            return unsupported(format!(
                "d_model {} is not divisible by {heads} heads",
                self.d_model
            ));
        }
        let act_fn = match self.activation_function.as_str() {
            "gelu" => ActivationFn::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => ActivationFn::GeluTanh,
            "relu" => ActivationFn::Relu,
            "silu" | "swish" => ActivationFn::Silu,
            other => return unsupported(format!("activation_function {other}")),
        };
        // transformers' defaults: MarianConfig and MBartConfig `False`, M2M100Config `True`.
        let scale = self
            .scale_embedding
            .unwrap_or(family == Seq2SeqFamily::M2M100);
        let pad = self.pad_token_id.unwrap_or(1);
        let eos = match &self.eos_token_id {
            Some(v) => crate::seq2seq::token_id(&serde_json::json!({ "e": v }), "e")?,
            None => None,
        };
        Ok(Seq2SeqConfig {
            family,
            model_type: model_type.to_string(),
            n_encoder_layers: self.encoder_layers,
            n_decoder_layers: self.decoder_layers,
            d_model: self.d_model,
            n_heads: heads,
            d_head: self.d_model / heads,
            d_mlp: self.encoder_ffn_dim,
            d_vocab: self.vocab_size,
            n_ctx: self.max_position_embeddings,
            norm: NormKind::LayerNorm,
            norm_eps: LAYER_NORM_EPS,
            pre_norm: family != Seq2SeqFamily::Marian,
            positions: Positions::Table,
            embed_scale: scale.then(|| (self.d_model as f64).sqrt()),
            embedding_norm: family == Seq2SeqFamily::MBart,
            final_norms: family != Seq2SeqFamily::Marian,
            act_fn,
            gated_mlp: false,
            scale_scores: true,
            output_scale: None,
            pad_token_id: pad,
            eos_token_id: eos,
            // transformers' defaults: Marian starts from padding, M2M100 from EOS.
            decoder_start_token_id: self
                .decoder_start_token_id
                .or(match family {
                    Seq2SeqFamily::Marian => Some(pad),
                    _ => eos,
                })
                .unwrap_or(pad),
            forced_bos_token_id: self.forced_bos_token_id,
        })
    }
}

/// Marian's sinusoids: position `p`, column `i < ⌈d/2⌉` is `sin(p / 10000^(2i/d))`, column
/// `⌈d/2⌉ + i` is `cos(p / 10000^(2i/d))`, computed in f64 as transformers does with numpy.
fn marian_sinusoids(n_ctx: usize, d: usize) -> HostTensor {
    let sines = d.div_ceil(2);
    let mut data = Vec::with_capacity(n_ctx * d);
    for p in 0..n_ctx {
        for j in 0..d {
            // Column j holds feature 2j (a sine) or 2(j − sines) + 1 (a cosine).
            let (feature, sine) = if j < sines {
                (2 * j, true)
            } else {
                (2 * (j - sines) + 1, false)
            };
            let angle = p as f64 / 10000f64.powf((2 * (feature / 2)) as f64 / d as f64);
            data.push(if sine { angle.sin() } else { angle.cos() } as f32);
        }
    }
    HostTensor {
        shape: vec![n_ctx, d],
        data,
    }
}

/// M2M100's (fairseq's) sinusoids for positions `padding_idx + 1 + p`: `[sin(v·f_i), cos(v·f_i)]`
/// with `f_i = exp(−i · ln(10000) / (d/2 − 1))`, in f32 as transformers computes them (a zero
/// column last when `d` is odd).
fn fairseq_sinusoids(n_ctx: usize, d: usize, padding_idx: usize) -> HostTensor {
    let half = d / 2;
    let step = (10000f64.ln() / (half.max(2) - 1) as f64) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut data = Vec::with_capacity(n_ctx * d);
    for p in 0..n_ctx {
        let v = (padding_idx + 1 + p) as f32;
        data.extend(freqs.iter().map(|f| (v * f).sin()));
        data.extend(freqs.iter().map(|f| (v * f).cos()));
        if d % 2 == 1 {
            data.push(0.0);
        }
    }
    HostTensor {
        shape: vec![n_ctx, d],
        data,
    }
}

/// Builds a Marian, mBART or M2M100 model from tensors named as in `*ForConditionalGeneration`
/// (`model.encoder.layers.{l}.self_attn.q_proj.weight`, ...; the `model.` prefix optional).
pub(crate) fn build(cfg: Seq2SeqConfig, w: &Loader<'_>) -> Result<Seq2Seq> {
    cfg.check_sizes()?;
    let prefix = if w.src.contains("model.shared.weight")
        || w.src.contains("model.encoder.embed_tokens.weight")
    {
        "model."
    } else {
        ""
    };
    let (d, v, m, n_ctx) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp, cfg.n_ctx);
    for (side, layers) in [
        ("encoder", cfg.n_encoder_layers),
        ("decoder", cfg.n_decoder_layers),
    ] {
        let last = layers - 1;
        w.expect_layers(
            layers,
            &format!("{prefix}{side}.layers.{last}.self_attn.q_proj.weight"),
        )?;
    }
    let norm = |name: &str| -> Result<Norm> {
        Ok(Norm {
            kind: NormKind::LayerNorm,
            eps: cfg.norm_eps,
            weight: w.vector(&format!("{name}.weight"), d)?,
            bias: Some(w.vector(&format!("{name}.bias"), d)?),
        })
    };
    let attention = |p: &str| -> Result<AttentionWeights> {
        Ok(AttentionWeights {
            w_q: w.linear(&format!("{p}.q_proj.weight"), d, d)?,
            b_q: w.optional_vector(&format!("{p}.q_proj.bias"), d)?,
            w_k: w.linear(&format!("{p}.k_proj.weight"), d, d)?,
            b_k: w.optional_vector(&format!("{p}.k_proj.bias"), d)?,
            w_v: w.linear(&format!("{p}.v_proj.weight"), d, d)?,
            b_v: w.optional_vector(&format!("{p}.v_proj.bias"), d)?,
            w_o: w.linear(&format!("{p}.out_proj.weight"), d, d)?,
            b_o: w.optional_vector(&format!("{p}.out_proj.bias"), d)?,
            q_norm: None,
            k_norm: None,
        })
    };
    // One embedding per side when the checkpoint has it, else the shared one.
    let shared = format!("{prefix}shared.weight");
    let embedding = |side: &str| -> Result<_> {
        let own = format!("{prefix}{side}.embed_tokens.weight");
        let name = if w.src.contains(&own) || !w.src.contains(&shared) {
            own
        } else {
            shared.clone()
        };
        w.matrix(&name, v, d)
    };
    let stack = |side: &str, layers: usize| -> Result<Stack> {
        let p = format!("{prefix}{side}");
        let pos_table = match cfg.family {
            Seq2SeqFamily::Marian => w.upload2(marian_sinusoids(n_ctx, d)),
            Seq2SeqFamily::M2M100 => {
                w.upload2(fairseq_sinusoids(n_ctx, d, cfg.pad_token_id as usize))
            }
            _ => {
                let name = format!("{p}.embed_positions.weight");
                let table = w.host(&name, &[n_ctx + MBART_POSITION_OFFSET, d])?;
                w.upload2(HostTensor {
                    shape: vec![n_ctx, d],
                    data: table.data[MBART_POSITION_OFFSET * d..].to_vec(),
                })
            }
        };
        let mut blocks = Vec::with_capacity(layers);
        for l in 0..layers {
            let b = format!("{p}.layers.{l}");
            let cross = if side == "decoder" {
                Some((
                    norm(&format!("{b}.encoder_attn_layer_norm"))?,
                    attention(&format!("{b}.encoder_attn"))?,
                ))
            } else {
                None
            };
            blocks.push(Seq2SeqBlock {
                ln_attn: norm(&format!("{b}.self_attn_layer_norm"))?,
                attn: attention(&format!("{b}.self_attn"))?,
                cross,
                ln_mlp: norm(&format!("{b}.final_layer_norm"))?,
                mlp: MlpWeights {
                    w_in: w.linear(&format!("{b}.fc1.weight"), d, m)?,
                    b_in: w.optional_vector(&format!("{b}.fc1.bias"), m)?,
                    w_gate: None,
                    w_out: w.linear(&format!("{b}.fc2.weight"), m, d)?,
                    b_out: w.optional_vector(&format!("{b}.fc2.bias"), d)?,
                },
            });
        }
        Ok(Stack {
            embed: embedding(side)?,
            pos_table: Some(pos_table),
            embedding_norm: if cfg.embedding_norm {
                Some(norm(&format!("{p}.layernorm_embedding"))?)
            } else {
                None
            },
            relative_bias: None,
            blocks,
            final_norm: if cfg.final_norms {
                Some(norm(&format!("{p}.layer_norm"))?)
            } else {
                None
            },
        })
    };
    let encoder = stack("encoder", cfg.n_encoder_layers)?;
    let decoder = stack("decoder", cfg.n_decoder_layers)?;
    let unembed = if w.src.contains("lm_head.weight") {
        w.matrix("lm_head.weight", v, d)?
    } else {
        decoder.embed.clone()
    };
    let final_logits_bias = if w.src.contains("final_logits_bias") {
        let bias = w.host("final_logits_bias", &[1, v])?;
        Some(w.upload1(HostTensor {
            shape: vec![v],
            data: bias.data,
        }))
    } else {
        None
    };
    Ok(Seq2Seq {
        config: cfg,
        encoder,
        decoder,
        unembed,
        final_logits_bias,
        device: w.device.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand values: Marian at p = 1, d = 4: sin(1), sin(1/100), cos(1), cos(1/100);
    /// fairseq at padding 1, p = 0 (value 2), d = 4: f = [1, 1/10000], sin(2), sin(2e-4), cos(2),
    /// cos(2e-4).
    #[test]
    fn sinusoid_tables_match_hand_values() {
        let m = marian_sinusoids(2, 4);
        let want = [1f64.sin(), 0.01f64.sin(), 1f64.cos(), 0.01f64.cos()];
        for (g, w) in m.data[4..].iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{:?}", m.data);
        }
        assert_eq!(&m.data[..4], &[0.0, 0.0, 1.0, 1.0]);
        let f = fairseq_sinusoids(1, 4, 1);
        let want = [2f64.sin(), 2e-4f64.sin(), 2f64.cos(), 2e-4f64.cos()];
        for (g, w) in f.data.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{:?}", f.data);
        }
    }
}
