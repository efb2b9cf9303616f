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
    /// an allocation of unbounded size: each count against its limit in [`limits`], the
    /// products the builders size matrices with (`n_heads × d_head`, `3 × d_model`, ...)
    /// without overflow, and the rotary width (positive, even, at most `d_head`) with its
    /// `[n_ctx, rotary_dim]` tables under [`limits::MAX_ROTARY_TABLE_ELEMENTS`].
    pub fn check_sizes(&self) -> crate::Result<()> {
        let unsupported = |m: String| Err(crate::ModelError::Unsupported(m));
        let counts: [(&str, usize, usize); 8] = [
            ("n_layers", self.n_layers, limits::MAX_LAYERS),
            ("d_model", self.d_model, limits::MAX_D_MODEL),
            ("n_heads", self.n_heads, limits::MAX_HEADS),
            ("n_kv_heads", self.n_kv_heads, limits::MAX_HEADS),
            ("d_head", self.d_head, limits::MAX_D_HEAD),
            ("d_mlp", self.d_mlp, limits::MAX_D_MLP),
            ("d_vocab", self.d_vocab, limits::MAX_D_VOCAB),
            ("n_ctx", self.n_ctx, limits::MAX_N_CTX),
        ];
        for (name, value, max) in counts {
            check_count(name, value, max)?;
        }
        // Every width a builder multiplies out, checked once here so that no product of
        // file-provided numbers wraps or overflows later.
        let products = [
            ("n_heads × d_head", self.n_heads.checked_mul(self.d_head)),
            ("3 × d_model", self.d_model.checked_mul(3)),
            ("d_vocab × d_model", self.d_vocab.checked_mul(self.d_model)),
            ("d_model × d_mlp", self.d_model.checked_mul(self.d_mlp)),
            ("n_ctx × d_model", self.n_ctx.checked_mul(self.d_model)),
        ];
        for (name, product) in products {
            if product.is_none_or(|p| p > limits::MAX_MATRIX_ELEMENTS) {
                return unsupported(format!(
                    "config with {name} = {} (a weight of more than {} elements, \
                     limits::MAX_MATRIX_ELEMENTS)",
                    product.map_or_else(|| "an overflow".to_string(), |p| p.to_string()),
                    limits::MAX_MATRIX_ELEMENTS
                ));
            }
        }
        // Within the limits above, so no overflow: 4096 × 4097. The circuit graph of a model is
        // sized by this count squared, so a config past it could not be analysed anyway.
        let components = self.n_layers * (self.n_heads + 1);
        if components > limits::MAX_COMPONENTS {
            return unsupported(format!(
                "config with {} layers of {} heads: n_layers × (n_heads + 1) = {components} \
                 components, more than {} (limits::MAX_COMPONENTS)",
                self.n_layers,
                self.n_heads,
                limits::MAX_COMPONENTS
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return unsupported(format!(
                "config with {} query heads over {} key/value heads (n_heads must be a \
                 multiple of n_kv_heads)",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.attention_windows.is_empty() && self.attention_windows.len() != self.n_layers {
            return unsupported(format!(
                "config with {} attention windows for {} layers",
                self.attention_windows.len(),
                self.n_layers
            ));
        }
        if let Positional::Rotary { rotary_dim, .. } = self.positional {
            if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) || rotary_dim > self.d_head {
                return unsupported(format!(
                    "config with rotary_dim = {rotary_dim} for d_head = {} (the rotary width \
                     must be a positive even number no larger than d_head)",
                    self.d_head
                ));
            }
            let table = self.n_ctx.checked_mul(rotary_dim);
            if table.is_none_or(|t| t > limits::MAX_ROTARY_TABLE_ELEMENTS) {
                return unsupported(format!(
                    "config with n_ctx = {} and rotary_dim = {rotary_dim}: the rotary tables \
                     would hold more than {} elements each (limits::MAX_ROTARY_TABLE_ELEMENTS)",
                    self.n_ctx,
                    limits::MAX_ROTARY_TABLE_ELEMENTS
                ));
            }
        }
        Ok(())
    }
}

/// Errors unless `1 <= value <= max`, naming the config field and its limit.
pub fn check_count(name: &str, value: usize, max: usize) -> crate::Result<()> {
    if value == 0 || value > max {
        return Err(crate::ModelError::Unsupported(format!(
            "config with {name} = {value} (it must be between 1 and {max})"
        )));
    }
    Ok(())
}

/// The largest sizes a model file may declare. Each is far above any published model (the
/// largest in the comment) so that real models load, and low enough that what they size fits
/// a workstation: a file that asks for more is refused by [`TransformerConfig::check_sizes`]
/// before anything is allocated.
pub mod limits {
    /// Transformer blocks (Llama 3.1 405B: 126).
    pub const MAX_LAYERS: usize = 4096;
    /// Residual width (Llama 3.1 405B: 16,384).
    pub const MAX_D_MODEL: usize = 1 << 20;
    /// Query or key/value heads (Llama 3.1 405B: 128).
    pub const MAX_HEADS: usize = 4096;
    /// Head width (Gemma 2: 256).
    pub const MAX_D_HEAD: usize = 1 << 16;
    /// MLP width (Llama 3.1 405B: 53,248).
    pub const MAX_D_MLP: usize = 1 << 22;
    /// Vocabulary (Gemma 2: 256,000).
    pub const MAX_D_VOCAB: usize = 1 << 24;
    /// Context length (Qwen 2.5 1M: 1,010,000).
    pub const MAX_N_CTX: usize = 1 << 24;
    /// Heads and MLPs over all layers, `n_layers × (n_heads + 1)`: the rows of the circuit
    /// graph, whose dense score matrix grows with its square (Llama 3 70B: 5,200; at this limit
    /// the matrix stays within `fidelis_graph::limits::MAX_CELLS`, so Llama 3.1 405B's 16,254
    /// is refused).
    pub const MAX_COMPONENTS: usize = 1 << 13;
    /// Elements of one weight matrix (Llama 3.1 405B's `lm_head`: 2.1e9).
    pub const MAX_MATRIX_ELEMENTS: usize = 1 << 34;
    /// Elements of each rotary cos/sin table `[n_ctx, rotary_dim]` (Qwen 2.5 1M: 1.3e8; the
    /// table is 512 MiB of f32 at this limit).
    pub const MAX_ROTARY_TABLE_ELEMENTS: usize = 1 << 27;
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
