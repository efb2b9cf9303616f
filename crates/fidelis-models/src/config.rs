//! The architecture-neutral model description every other part of Fidelis reads.
//!
//! Field names follow TransformerLens (`n_layers`, `d_model`, `n_heads`, `d_head`, `d_mlp`,
//! `d_vocab`, `n_ctx`) so that users recognise them. Each architecture file (`gpt2.rs`,
//! `llama.rs`, `gpt_neox.rs`) turns its own Hugging Face `config.json` into this struct.

use serde::Serialize;

/// Which family a model belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Architecture {
    /// GPT-2: learned positions, LayerNorm, GELU MLP, tied unembedding.
    Gpt2,
    /// Llama family (Llama, Mistral, Qwen2, SmolLM): RoPE, RMSNorm, SwiGLU, grouped-query attention.
    Llama,
    /// GPT-NeoX / Pythia: partial RoPE, LayerNorm with bias, GELU MLP, attention and MLP in
    /// parallel on the same residual.
    GptNeoX,
    /// Gemma 2: RMSNorm with `(1 + w)` before and after attention and the MLP, GeGLU with tanh
    /// GELU, soft-capped attention and final logits, alternating sliding-window layers and
    /// embeddings scaled by `√d_model`.
    Gemma2,
}

/// The normalisation applied before attention, before the MLP and before the unembedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NormKind {
    /// `(x - mean) / sqrt(var + eps) * w + b`.
    LayerNorm,
    /// `x / sqrt(mean(x²) + eps) * w`.
    RmsNorm,
}

/// The MLP nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActivationFn {
    /// GELU with the tanh approximation (`gelu_new`, GPT-2).
    GeluTanh,
    /// Exact GELU with erf.
    Gelu,
    /// SiLU (`x * sigmoid(x)`), used gated in SwiGLU.
    Silu,
    /// ReLU.
    Relu,
}

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Positional {
    /// A learned `[n_ctx, d_model]` table added to the token embedding (`hook_pos_embed`).
    Learned,
    /// Rotary embeddings on q and k, rotate-half layout as in Hugging Face transformers.
    Rotary {
        /// Base of the inverse frequencies (`rope_theta`).
        theta: f64,
        /// How many dimensions of each head are rotated (all of `d_head` for Llama).
        rotary_dim: usize,
        /// How the frequencies are rescaled for long contexts.
        scaling: RopeScaling,
    },
}

/// How rotary frequencies are rescaled for long contexts: Hugging Face's `rope_scaling`
/// (`rope_parameters` in transformers 5) by `rope_type`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub enum RopeScaling {
    /// `default`: the frequencies `theta^(-2i/d)` as they are.
    #[default]
    None,
    /// `linear` (position interpolation): every frequency divided by `factor`.
    Linear {
        /// The scale factor.
        factor: f64,
    },
    /// `llama3` (Llama 3.1 and later): low frequencies divided by `factor`, high ones kept,
    /// the band between them interpolated smoothly.
    Llama3 {
        /// The scale factor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
    /// Per-frequency divisors, as llama.cpp stores them in a GGUF's `rope_freqs` tensor (its
    /// converter writes Llama 3.1's scaling that way): inverse frequency `i` is divided by
    /// factor `i`.
    Factors(FreqFactors),
}

/// The per-frequency divisors of [`RopeScaling::Factors`], one per rotated pair of dimensions
/// (`rotary_dim / 2`).
///
/// The table is interned as a `'static` slice so that [`RopeScaling`] and the config holding it
/// stay `Copy`: each distinct table is kept once for the life of the process (a few hundred
/// bytes per model architecture loaded).
#[derive(Clone, Copy, PartialEq)]
pub struct FreqFactors(&'static [f32]);

impl FreqFactors {
    /// The interned table holding `factors`.
    pub fn new(factors: &[f32]) -> Self {
        static TABLES: std::sync::Mutex<Vec<&'static [f32]>> = std::sync::Mutex::new(Vec::new());
        let mut tables = TABLES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let same = |t: &&'static [f32]| {
            t.len() == factors.len()
                && t.iter()
                    .zip(factors)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
        };
        if let Some(table) = tables.iter().copied().find(same) {
            return Self(table);
        }
        let table: &'static [f32] = Box::leak(factors.to_vec().into_boxed_slice());
        tables.push(table);
        Self(table)
    }

    /// The factors, lowest dimension pair (highest frequency) first.
    pub fn as_slice(&self) -> &'static [f32] {
        self.0
    }
}

impl std::fmt::Debug for FreqFactors {
    /// A short summary (count and range); the full table is in the serialized config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (lo, hi) = self
            .0
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        write!(f, "{} factors from {lo} to {hi}", self.0.len())
    }
}

impl Serialize for FreqFactors {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl RopeScaling {
    /// The `rope_type` names this crate reads.
    pub const SUPPORTED: &'static [&'static str] = &["default", "linear", "llama3"];

    /// The inverse frequencies after scaling, computed in f32 as transformers does
    /// (`_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`) and as llama.cpp
    /// applies a `rope_freqs` tensor (`freq / factor`; a frequency past the end of the table is
    /// kept as it is, though loading checks that the table has one factor per frequency).
    pub fn apply(self, inv_freq: &[f32]) -> Vec<f32> {
        match self {
            Self::None => inv_freq.to_vec(),
            Self::Factors(factors) => inv_freq
                .iter()
                .enumerate()
                .map(|(i, f)| f / factors.as_slice().get(i).copied().unwrap_or(1.0))
                .collect(),
            Self::Linear { factor } => inv_freq.iter().map(|f| f / factor as f32).collect(),
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                );
                let old = original_max_position_embeddings as f32;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                inv_freq
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                        if medium {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Architecture-neutral hyper-parameters of a decoder-only transformer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransformerConfig {
    /// Model family.
    pub architecture: Architecture,
    /// The `model_type` of the source config (`gpt2`, `llama`, `qwen2`, ...).
    pub model_type: String,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads (`< n_heads` under grouped-query attention).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub d_head: usize,
    /// Hidden width of the MLP.
    pub d_mlp: usize,
    /// Vocabulary size.
    pub d_vocab: usize,
    /// Longest sequence the model accepts.
    pub n_ctx: usize,
    /// Normalisation kind.
    pub norm: NormKind,
    /// Epsilon of the normalisation.
    pub norm_eps: f64,
    /// MLP nonlinearity.
    pub act_fn: ActivationFn,
    /// Whether the MLP is gated (`down(act(gate(x)) * up(x))`).
    pub gated_mlp: bool,
    /// Position encoding.
    pub positional: Positional,
    /// Whether attention and MLP read the same residual (GPT-NeoX style); false for GPT-2/Llama.
    pub parallel_attn_mlp: bool,
    /// Whether each head's queries and keys are RMS-normalised over `d_head` before rotary
    /// (Qwen 3's `q_norm` / `k_norm`).
    pub qk_norm: bool,
    /// Per layer, the sliding attention window (a query sees the `w` positions up to and
    /// including its own) or `None` for full causal attention; empty when no layer slides
    /// (Mistral: every layer; Qwen 2/3 with `use_sliding_window`: the layers from
    /// `max_window_layers` on, or as `layer_types` says).
    pub attention_windows: Vec<Option<usize>>,
    /// What the token embeddings are multiplied by before entering the residual stream
    /// (Gemma: `√d_model`); `None` for 1.
    pub embed_scale: Option<f64>,
    /// Attention scores are `q·k / √s` with `s` this value (Gemma 2's `query_pre_attn_scalar`);
    /// `None` for `d_head`.
    pub query_pre_attn_scalar: Option<f64>,
    /// Attention scores soft-capped to `c · tanh(scores / c)` before masking (Gemma 2's
    /// `attn_logit_softcapping`); `None` for no cap.
    pub attn_softcap: Option<f64>,
    /// Final logits soft-capped to `c · tanh(logits / c)` (Gemma 2's
    /// `final_logit_softcapping`); `None` for no cap.
    pub final_softcap: Option<f64>,
    /// Whether the attention and MLP outputs are normalised again before they are added to the
    /// residual stream (Gemma 2's `post_attention_layernorm` and `post_feedforward_layernorm`).
    /// Each head's result is then its share of the normalised output, so that the heads still
    /// sum to what the block adds: see [`crate::hooks::point::result`].
    pub post_norms: bool,
    /// Whether the unembedding shares the token embedding matrix.
    pub tied_embeddings: bool,
    /// Beginning-of-sequence token id, if the model has one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id, if the model has one.
    pub eos_token_id: Option<u32>,
}

impl TransformerConfig {
    /// The sliding window of layer `layer`, if it has one.
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.attention_windows.get(layer).copied().flatten()
    }

    /// The factor attention scores are multiplied by: `1 / √query_pre_attn_scalar`, or
    /// `1 / √d_head` by default.
    pub fn attn_scale(&self) -> f64 {
        1.0 / self
            .query_pre_attn_scalar
            .unwrap_or(self.d_head as f64)
            .sqrt()
    }

    /// How many query heads share one key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Errors unless every size is positive and within what any published model uses (with
    /// wide margins), so that a malformed or hostile config is named instead of turning into
    /// an allocation of unbounded size.
    pub fn check_sizes(&self) -> crate::Result<()> {
        let limits: [(&str, usize, usize); 8] = [
            ("n_layers", self.n_layers, 4096),
            ("d_model", self.d_model, 1 << 20),
            ("n_heads", self.n_heads, 4096),
            ("n_kv_heads", self.n_kv_heads, 4096),
            ("d_head", self.d_head, 1 << 16),
            ("d_mlp", self.d_mlp, 1 << 22),
            ("d_vocab", self.d_vocab, 1 << 24),
            ("n_ctx", self.n_ctx, 1 << 24),
        ];
        for (name, value, max) in limits {
            if value == 0 || value > max {
                return Err(crate::ModelError::Unsupported(format!(
                    "config with {name} = {value} (it must be between 1 and {max})"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama 3's frequency bands on four frequencies whose wavelengths (2π/f ≈ 6.3, 62.8, 628,
    /// 6283) fall in the kept, smoothed and scaled bands of factor 8, low 1, high 4, context 64;
    /// the smoothed value by hand: s = (64/62.83 − 1)/3, (1 − s)·0.1/8 + s·0.1.
    #[test]
    fn llama3_scaling_keeps_smooths_and_scales_the_three_bands() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        };
        let got = scaling.apply(&[1.0, 0.1, 0.01, 0.001]);
        let s = (64.0 / (2.0 * std::f64::consts::PI / 0.1) - 1.0) / 3.0;
        let smoothed = (1.0 - s) * 0.1 / 8.0 + s * 0.1;
        let want = [1.0, smoothed, 0.01 / 8.0, 0.001 / 8.0];
        for (g, w) in got.iter().zip(want) {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-6 * w,
                "got {got:?}, want {want:?}"
            );
        }
        let factors = RopeScaling::Factors(FreqFactors::new(&[1.0, 4.0]));
        assert_eq!(factors.apply(&[1.0, 0.5]), [1.0, 0.125]);
        assert_eq!(FreqFactors::new(&[1.0, 4.0]), FreqFactors::new(&[1.0, 4.0]));
        assert_eq!(
            format!("{factors:?}"),
            "Factors(2 factors from 1 to 4)",
            "inspect prints a summary"
        );
        let linear = RopeScaling::Linear { factor: 4.0 }.apply(&[1.0, 0.5]);
        assert_eq!(linear, [0.25, 0.125]);
        assert_eq!(RopeScaling::None.apply(&[1.0, 0.5]), [1.0, 0.5]);
    }
}
