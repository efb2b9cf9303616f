//! The architecture-neutral model description every other part of Fidelis reads.
//!
//! Field names follow TransformerLens (`n_layers`, `d_model`, `n_heads`, `d_head`, `d_mlp`,
//! `d_vocab`, `n_ctx`) so that users recognise them. Each architecture file (`gpt2.rs`,
//! `llama.rs`) turns its own Hugging Face `config.json` into this struct.

use serde::Serialize;

/// Which family a model belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Architecture {
    /// GPT-2: learned positions, LayerNorm, GELU MLP, tied unembedding.
    Gpt2,
    /// Llama family (Llama, Mistral, Qwen2, SmolLM): RoPE, RMSNorm, SwiGLU, grouped-query attention.
    Llama,
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
    },
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
    /// Whether the unembedding shares the token embedding matrix.
    pub tied_embeddings: bool,
    /// Beginning-of-sequence token id, if the model has one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id, if the model has one.
    pub eos_token_id: Option<u32>,
}

impl TransformerConfig {
    /// How many query heads share one key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }
}
