//! The Llama family (Touvron et al. 2023): rotary position embeddings, RMSNorm, SwiGLU MLP and
//! grouped-query attention. Covers Llama 2/3, Mistral, SmolLM, Qwen 2 (q/k/v biases), Qwen 3
//! (per-head q/k norms) and Gemma 2 (Gemma Team 2024), which adds norms after attention and
//! the MLP, `(1 + w)` norm weights, GeGLU, soft-capped scores and logits and scaled embeddings.
//!
//! Reference implementations: Hugging Face `transformers/models/llama/modeling_llama.py` and
//! `transformers/models/gemma2/modeling_gemma2.py`.
//! Weights follow the checkpoint's own names (`model.layers.{l}.self_attn.q_proj`); GGUF files
//! are read through [`GgufSource`](crate::gguf_source::GgufSource), which renames llama.cpp's
//! tensors to these names and undoes its rotary permutation of q and k.

use serde::Deserialize;

use crate::config::{
    ActivationFn, Architecture, NormKind, Positional, RopeScaling, TransformerConfig,
};
use crate::error::{ModelError, Result};
use crate::loader::Loader;
use crate::transformer::{AttentionWeights, Block, MlpWeights, Norm, Transformer};

/// The fields of a Hugging Face Llama/Mistral/Qwen2 `config.json` that Fidelis reads.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    /// `llama`, `mistral`, `qwen2` (decides default biases).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (equal to the query heads when absent).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head (`hidden_size / num_attention_heads` when absent).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Context length.
    #[serde(default = "default_ctx")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Rotary base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Rotary scaling (transformers 4); only absent/`default` is supported.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Rotary settings as transformers 5 writes them: `{"rope_theta": .., "rope_type": ..}`.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// MLP activation (`silu`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Gemma 2's name for the MLP activation (read instead of `hidden_act` when present).
    #[serde(default)]
    pub hidden_activation: Option<String>,
    /// Gemma 2: attention scores are divided by the square root of this instead of `head_dim`.
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 2: the attention-score soft cap (`null` for none; 50 when absent).
    #[serde(default, deserialize_with = "present")]
    pub attn_logit_softcapping: Option<Option<f64>>,
    /// Gemma 2: the final-logit soft cap (`null` for none; 30 when absent).
    #[serde(default, deserialize_with = "present")]
    pub final_logit_softcapping: Option<Option<f64>>,
    /// Whether `lm_head` is the embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's switch for q/k/v/o biases (Qwen2 always has q/k/v biases).
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Mistral/Qwen sliding attention window.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen's switch for the sliding window.
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    /// Qwen: the layers from this index on slide (when `use_sliding_window`).
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    /// Per layer `sliding_attention` or `full_attention`, as transformers 5 writes it.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Gemma 2's switch to non-causal attention (refused when true).
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
    /// Beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token (the first when a list is given).
    #[serde(default, deserialize_with = "one_or_many")]
    pub eos_token_id: Option<u32>,
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_ctx() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_act() -> String {
    "silu".into()
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        Some(OneOrMany::One(x)) => Some(x),
        Some(OneOrMany::Many(v)) => v.first().copied(),
        None => None,
    })
}

impl LlamaConfig {
    /// The rotary scaling of `rope_scaling` (transformers 4) or `rope_parameters`
    /// (transformers 5), or an error naming an unsupported `rope_type` or a missing field.
    pub fn rope_scaling(&self) -> Result<RopeScaling> {
        let mut out = RopeScaling::None;
        for scaling in [&self.rope_scaling, &self.rope_parameters]
            .into_iter()
            .flatten()
        {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            let number = |key: &str| {
                scaling.get(key).and_then(|v| v.as_f64()).ok_or_else(|| {
                    ModelError::Unsupported(format!(
                        "rope scaling type `{kind}` without a numeric `{key}`"
                    ))
                })
            };
            out = match kind {
                "default" => RopeScaling::None,
                "linear" => RopeScaling::Linear {
                    factor: number("factor")?,
                },
                "llama3" => {
                    let original = number("original_max_position_embeddings")?;
                    RopeScaling::Llama3 {
                        factor: number("factor")?,
                        low_freq_factor: number("low_freq_factor")?,
                        high_freq_factor: number("high_freq_factor")?,
                        original_max_position_embeddings: original as usize,
                    }
                }
                other => {
                    return Err(ModelError::Unsupported(format!(
                        "rope scaling type `{other}` (supported: {})",
                        RopeScaling::SUPPORTED.join(", ")
                    )));
                }
            };
            if let RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } = out
            {
                let valid = factor > 0.0
                    && low_freq_factor > 0.0
                    && high_freq_factor > low_freq_factor
                    && original_max_position_embeddings > 0;
                if !valid {
                    return Err(ModelError::Unsupported(format!(
                        "llama3 rope scaling needs factor > 0, 0 < low_freq_factor < \
                         high_freq_factor and original_max_position_embeddings > 0; got \
                         {factor}, {low_freq_factor}, {high_freq_factor}, \
                         {original_max_position_embeddings}"
                    )));
                }
            }
            if let RopeScaling::Linear { factor } = out
                && !(factor > 0.0 && factor.is_finite())
            {
                return Err(ModelError::Unsupported(format!(
                    "linear rope scaling needs a positive factor, got {factor}"
                )));
            }
        }
        Ok(out)
    }

    /// Each layer's sliding window (see [`TransformerConfig::attention_windows`]), or an error
    /// for a `layer_types` entry Fidelis does not know or a window of zero.
    pub fn attention_windows(&self) -> Result<Vec<Option<usize>>> {
        let enabled = match self.model_type.as_str() {
            "mistral" | "gemma2" => self.use_sliding_window != Some(false),
            _ => self.use_sliding_window == Some(true),
        };
        let window = match self.sliding_window {
            Some(0) if enabled => {
                return Err(ModelError::Unsupported(
                    "a sliding window of 0 positions".into(),
                ));
            }
            Some(w) if enabled => w,
            _ => return Ok(Vec::new()),
        };
        let n = self.num_hidden_layers;
        // The per-layer list is sized by the layer count: bound it before building it.
        crate::config::check_count("num_hidden_layers", n, crate::config::limits::MAX_LAYERS)?;
        let windows: Vec<Option<usize>> = match &self.layer_types {
            Some(types) => types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(Some(window)),
                    "full_attention" => Ok(None),
                    other => Err(ModelError::Unsupported(format!(
                        "layer type `{other}` (supported: full_attention, sliding_attention)"
                    ))),
                })
                .collect::<Result<_>>()?,
            None if self.model_type == "mistral" => vec![Some(window); n],
            // Gemma 2 before transformers 5: even layers slide, odd ones see everything.
            None if self.model_type == "gemma2" => (0..n)
                .map(|l| l.is_multiple_of(2).then_some(window))
                .collect(),
            None => {
                let first = self.max_window_layers.unwrap_or(0);
                (0..n).map(|l| (l >= first).then_some(window)).collect()
            }
        };
        if windows.len() != n {
            return Err(ModelError::Unsupported(format!(
                "layer_types lists {} layers for a model of {n}",
                windows.len()
            )));
        }
        Ok(if windows.iter().all(Option::is_none) {
            Vec::new()
        } else {
            windows
        })
    }

    /// Whether q, k and v projections carry biases.
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    /// The architecture-neutral config, or an error naming the unsupported option.
    pub fn to_transformer(&self) -> Result<TransformerConfig> {
        let scaling = self.rope_scaling()?;
        let theta = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|t| t.as_f64())
            .unwrap_or(self.rope_theta);
        let gemma2 = self.model_type == "gemma2";
        if gemma2 && self.attention_bias {
            return Err(ModelError::Unsupported(
                "Gemma 2 with attention_bias = true (an output bias under the post-attention \
                 norm would not be additive over heads)"
                    .into(),
            ));
        }
        if self.use_bidirectional_attention == Some(true) {
            return Err(ModelError::Unsupported(
                "use_bidirectional_attention = true (Fidelis runs causal decoders only)".into(),
            ));
        }
        // Gemma 2 reads `hidden_activation` only, with transformers' default.
        let act = match &self.hidden_activation {
            Some(act) if gemma2 => act.as_str(),
            None if gemma2 => "gelu_pytorch_tanh",
            _ => self.hidden_act.as_str(),
        };
        let act_fn = match act {
            "silu" | "swish" => ActivationFn::Silu,
            "gelu" => ActivationFn::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" => ActivationFn::GeluTanh,
            other => return Err(ModelError::Unsupported(format!("hidden_act {other}"))),
        };
        let n_heads = self.num_attention_heads;
        let n_kv_heads = self.num_key_value_heads.unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(ModelError::Unsupported(format!(
                "{n_heads} attention heads cannot be grouped over {n_kv_heads} key/value heads"
            )));
        }
        let d_head = match self.head_dim {
            Some(d) => d,
            None if gemma2 => 256,
            None if self.hidden_size.is_multiple_of(n_heads) => self.hidden_size / n_heads,
            None => {
                return Err(ModelError::Unsupported(format!(
                    "hidden_size {} is not divisible by {n_heads} heads",
                    self.hidden_size
                )));
            }
        };
        let attention_windows = self.attention_windows()?;
        let n_ctx = self.max_position_embeddings;
        // transformers' Gemma 2 defaults where a config leaves a cap out.
        let cap = |field: Option<Option<f64>>, default: f64| match field {
            Some(cap) => cap,
            None => gemma2.then_some(default),
        };
        let (attn_softcap, final_softcap) = (
            cap(self.attn_logit_softcapping, 50.0),
            cap(self.final_logit_softcapping, 30.0),
        );
        for (name, c) in [("attn", attn_softcap), ("final", final_softcap)] {
            if let Some(c) = c
                && !(c > 0.0 && c.is_finite())
            {
                return Err(ModelError::Unsupported(format!(
                    "{name}_logit_softcapping of {c} (it must be positive)"
                )));
            }
        }
        if let Some(s) = self.query_pre_attn_scalar
            && !(s > 0.0 && s.is_finite())
        {
            return Err(ModelError::Unsupported(format!(
                "query_pre_attn_scalar of {s} (it must be positive)"
            )));
        }
        Ok(TransformerConfig {
            architecture: if gemma2 {
                Architecture::Gemma2
            } else {
                Architecture::Llama
            },
            model_type: self.model_type.clone(),
            n_layers: self.num_hidden_layers,
            d_model: self.hidden_size,
            n_heads,
            n_kv_heads,
            d_head,
            d_mlp: self.intermediate_size,
            d_vocab: self.vocab_size,
            n_ctx,
            norm: NormKind::RmsNorm,
            norm_eps: self.rms_norm_eps,
            act_fn,
            gated_mlp: true,
            positional: Positional::Rotary {
                theta,
                rotary_dim: d_head,
                scaling,
            },
            parallel_attn_mlp: false,
            qk_norm: self.model_type == "qwen3",
            embed_scale: gemma2.then(|| (self.hidden_size as f64).sqrt()),
            query_pre_attn_scalar: self.query_pre_attn_scalar.or(gemma2.then_some(256.0)),
            attn_softcap,
            final_softcap,
            post_norms: gemma2,
            attention_windows,
            tied_embeddings: self.tie_word_embeddings,
            bos_token_id: self.bos_token_id,
            eos_token_id: self.eos_token_id,
        })
    }
}

/// Builds a Llama-family model from tensors named as in `LlamaForCausalLM`.
pub(crate) fn build(cfg: TransformerConfig, w: &Loader<'_>) -> Result<Transformer> {
    cfg.check_sizes()?;
    let last = cfg.n_layers - 1;
    w.expect_layers(
        cfg.n_layers,
        &format!("model.layers.{last}.self_attn.q_proj.weight"),
    )?;
    let (d, v, m) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp);
    let (q_out, kv_out) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
    // Gemma stores RMSNorm weights as offsets from 1 and multiplies by `1 + w`; adding the 1
    // once here is the same arithmetic in f32.
    let gemma = cfg.architecture == Architecture::Gemma2;
    let norm_of = |name: &str, width: usize| -> Result<Norm> {
        let weight = w.vector(name, width)?;
        Ok(Norm {
            kind: NormKind::RmsNorm,
            eps: cfg.norm_eps,
            weight: if gemma {
                weight.add_scalar(1.0)
            } else {
                weight
            },
            bias: None,
        })
    };
    let norm = |name: &str| norm_of(name, d);
    // Qwen 3: one RMSNorm over d_head for every query head, one for every key head.
    let head_norm = |name: String| -> Result<Option<Norm>> {
        if cfg.qk_norm {
            norm_of(&name, cfg.d_head).map(Some)
        } else {
            Ok(None)
        }
    };
    let embed = w.matrix("model.embed_tokens.weight", v, d)?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let attn = AttentionWeights {
            w_q: w.linear(&format!("{p}.self_attn.q_proj.weight"), d, q_out)?,
            b_q: w.optional_vector(&format!("{p}.self_attn.q_proj.bias"), q_out)?,
            w_k: w.linear(&format!("{p}.self_attn.k_proj.weight"), d, kv_out)?,
            b_k: w.optional_vector(&format!("{p}.self_attn.k_proj.bias"), kv_out)?,
            w_v: w.linear(&format!("{p}.self_attn.v_proj.weight"), d, kv_out)?,
            b_v: w.optional_vector(&format!("{p}.self_attn.v_proj.bias"), kv_out)?,
            w_o: w.linear(&format!("{p}.self_attn.o_proj.weight"), q_out, d)?,
            b_o: w.optional_vector(&format!("{p}.self_attn.o_proj.bias"), d)?,
            q_norm: head_norm(format!("{p}.self_attn.q_norm.weight"))?,
            k_norm: head_norm(format!("{p}.self_attn.k_norm.weight"))?,
        };
        let mlp = MlpWeights {
            w_in: w.linear(&format!("{p}.mlp.up_proj.weight"), d, m)?,
            b_in: w.optional_vector(&format!("{p}.mlp.up_proj.bias"), m)?,
            w_gate: Some(w.linear(&format!("{p}.mlp.gate_proj.weight"), d, m)?),
            w_out: w.linear(&format!("{p}.mlp.down_proj.weight"), m, d)?,
            b_out: w.optional_vector(&format!("{p}.mlp.down_proj.bias"), d)?,
        };
        // Llama's `post_attention_layernorm` is the norm before the MLP; Gemma 2 names that one
        // `pre_feedforward_layernorm` and uses the other two after attention and the MLP.
        let named = |part: &str| norm(&format!("{p}.{part}.weight"));
        let (ln2, post_attn, post_mlp) = if cfg.post_norms {
            (
                named("pre_feedforward_layernorm")?,
                Some(named("post_attention_layernorm")?),
                Some(named("post_feedforward_layernorm")?),
            )
        } else {
            (named("post_attention_layernorm")?, None, None)
        };
        blocks.push(Block {
            ln1: named("input_layernorm")?,
            attn,
            ln2,
            mlp,
            post_attn,
            post_mlp,
        });
    }
    let ln_final = norm("model.norm.weight")?;
    let unembed = if cfg.tied_embeddings || !w.src.contains("lm_head.weight") {
        embed.clone()
    } else {
        w.matrix("lm_head.weight", v, d)?
    };
    let mut cfg = cfg;
    cfg.tied_embeddings = !w.src.contains("lm_head.weight") || cfg.tied_embeddings;
    Ok(Transformer::rotary_decoder(
        cfg, embed, blocks, ln_final, unembed, w.device,
    ))
}
