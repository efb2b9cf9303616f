//! Encoder-decoder transformers with hook points: the one forward of the BART family (MarianMT,
//! mBART / mBART-50, M2M100 / NLLB; [`crate::bart`]) and of T5 / mT5 / Flan-T5 ([`crate::t5`]).
//!
//! Vaswani et al. 2017 ("Attention is all you need", §3): an encoder of bidirectional
//! self-attention blocks reads the source; a decoder of causal self-attention, cross-attention
//! over the encoder output and an MLP predicts the target. The families differ only in what the
//! config says: where the norms sit (after each residual addition in Marian, before each
//! sublayer elsewhere), the norm (LayerNorm, or T5's RMSNorm without mean), how positions enter
//! (sinusoids added to the embeddings, a learned table, or T5's relative position buckets added
//! to the attention scores of every layer), the MLP (plain or gated) and the head (a final
//! logits bias, or T5's `d_model^-0.5` rescaling under a tied head). Reference implementations:
//! Hugging Face `transformers/models/{marian,mbart,m2m_100,t5}/modeling_*.py`.
//!
//! Hook points carry the decoder-only names ([`crate::point`]) under an `encoder.` or `decoder.`
//! prefix (`encoder.blocks.0.hook_resid_pre`, `decoder.blocks.1.attn.hook_pattern`), plus the
//! decoder's cross-attention (`decoder.blocks.{l}.cross_attn.hook_q`, `…hook_pattern`,
//! `…hook_result`, `decoder.blocks.{l}.hook_cross_attn_out`, `hook_resid_mid_cross`) and the
//! encoder output as each cross-attention reads it (`decoder.blocks.{l}.cross_attn.hook_kv_input`,
//! the point to probe for ∂loss/∂source representation). [`points::all`] lists them in forward
//! order. Per-head results and split per-head q/k/v inputs (`hook_q_input`, ... on every
//! self-attention; `cross_attn.hook_q_input` for the decoder residual and
//! `cross_attn.hook_k_input` / `hook_v_input` for the encoder output on cross-attention) are
//! computed only when a hook asks for them, as in the decoder-only forward.
//!
//! Weights are stored `[in, out]`, as in [`crate::Transformer`], and the norm, attention and
//! MLP weight structs are that forward's.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::{gelu_approximate, relu, silu, softmax};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::config::{ActivationFn, NormKind, check_count, limits};
use crate::error::{ModelError, Result};
use crate::generate::{GenerateConfig, pick_token};
use crate::hooks::{Hooks, point};
use crate::precision::to_f32;
use crate::progress::{Progress, Silent};
use crate::tokenizer::Tokenizer;
use crate::transformer::{
    AttentionWeights, Batch, MlpWeights, Norm, attention_mask, project_per_head,
};
use crate::weights::{SafetensorsSource, read_text};
use crate::{bart, t5};

/// Encoder-decoder families Fidelis can load, by Hugging Face `model_type`.
pub const SUPPORTED_SEQ2SEQ_MODEL_TYPES: &[&str] = &["marian", "mbart", "m2m_100", "t5", "mt5"];

/// Hook point names of encoder-decoder models.
pub mod points {
    use super::{Positions, Seq2SeqConfig};
    use crate::hooks::point;

    /// The prefix of every encoder point.
    pub const ENCODER: &str = "encoder";
    /// The prefix of every decoder point.
    pub const DECODER: &str = "decoder";

    /// `name` (a decoder-only point name, e.g. [`point::resid_pre`]) on the encoder.
    pub fn encoder(name: &str) -> String {
        format!("{ENCODER}.{name}")
    }
    /// `name` (a decoder-only point name) on the decoder.
    pub fn decoder(name: &str) -> String {
        format!("{DECODER}.{name}")
    }
    /// The encoder output after its final norm, what every cross-attention reads
    /// `[batch, src_pos, d_model]`.
    pub const ENCODER_OUT: &str = "encoder.hook_out";
    /// Per-head query input of cross-attention `l`, the residual before its norm
    /// `[batch, tgt_pos, head, d_model]` (opt-in).
    pub fn cross_q_input(l: usize) -> String {
        format!("decoder.blocks.{l}.cross_attn.hook_q_input")
    }
    /// Per-head key input of cross-attention `l`, the encoder output `[batch, src_pos, head,
    /// d_model]` (opt-in).
    pub fn cross_k_input(l: usize) -> String {
        format!("decoder.blocks.{l}.cross_attn.hook_k_input")
    }
    /// Per-head value input of cross-attention `l` `[batch, src_pos, head, d_model]` (opt-in).
    pub fn cross_v_input(l: usize) -> String {
        format!("decoder.blocks.{l}.cross_attn.hook_v_input")
    }
    /// Cross-attention queries `[batch, tgt_pos, head, d_head]`.
    pub fn cross_q(l: usize) -> String {
        format!("decoder.blocks.{l}.cross_attn.hook_q")
    }
    /// Cross-attention keys `[batch, src_pos, head, d_head]`.
    pub fn cross_k(l: usize) -> String {
        format!("decoder.blocks.{l}.cross_attn.hook_k")
    }
    /// Cross-attention values `[batch, src_pos, head, d_head]`.
    pub fn cross_v(l: usize) -> String {
        format!("decoder.blocks.{l}.cross_attn.hook_v")
    }
    /// Masked cross-attention scores `[batch, head, tgt_pos, src_pos]`.
    pub fn cross_scores(l: usize) -> String {
        format!("decoder.blocks.{l}.cross_attn.hook_attn_scores")
    }
    /// Cross-attention pattern `[batch, head, tgt_pos, src_pos]`.
    pub fn cross_pattern(l: usize) -> String {
        format!("decoder.blocks.{l}.cross_attn.hook_pattern")
    }
    /// Cross-attention weighted values `[batch, tgt_pos, head, d_head]`.
    pub fn cross_z(l: usize) -> String {
        format!("decoder.blocks.{l}.cross_attn.hook_z")
    }
    /// Per-head cross-attention output, without the output bias `[batch, tgt_pos, head,
    /// d_model]` (opt-in).
    pub fn cross_result(l: usize) -> String {
        format!("decoder.blocks.{l}.cross_attn.hook_result")
    }
    /// The encoder output as cross-attention `l` reads it (the input of its keys and values)
    /// `[batch, src_pos, d_model]`.
    pub fn cross_kv_input(l: usize) -> String {
        format!("decoder.blocks.{l}.cross_attn.hook_kv_input")
    }
    /// Cross-attention output including its bias `[batch, tgt_pos, d_model]`.
    pub fn cross_attn_out(l: usize) -> String {
        format!("decoder.blocks.{l}.hook_cross_attn_out")
    }
    /// Residual stream after cross-attention (after its norm in post-norm models)
    /// `[batch, tgt_pos, d_model]`.
    pub fn resid_mid_cross(l: usize) -> String {
        format!("decoder.blocks.{l}.hook_resid_mid_cross")
    }

    /// The self-attention and MLP points of block `l` of one side, in forward order, with
    /// `cross` (the decoder's cross-attention points) between `hook_resid_mid` and the MLP.
    fn block(prefix: fn(&str) -> String, l: usize, cross: Vec<String>) -> Vec<String> {
        let mut out: Vec<String> = [
            point::resid_pre(l),
            point::q_input(l),
            point::k_input(l),
            point::v_input(l),
            point::q(l),
            point::k(l),
            point::v(l),
            point::attn_scores(l),
            point::pattern(l),
            point::z(l),
            point::result(l),
            point::attn_out(l),
            point::resid_mid(l),
        ]
        .iter()
        .map(|n| prefix(n))
        .collect();
        out.extend(cross);
        out.extend(
            [
                point::mlp_in(l),
                point::mlp_pre(l),
                point::mlp_post(l),
                point::mlp_out(l),
                point::resid_post(l),
            ]
            .iter()
            .map(|n| prefix(n)),
        );
        out
    }

    /// Every hook point the forward of a model with config `cfg` offers, in forward order
    /// (opt-in per-head results included).
    pub fn all(cfg: &Seq2SeqConfig) -> Vec<String> {
        let mut out = stack_start(encoder, cfg);
        for l in 0..cfg.n_encoder_layers {
            out.extend(block(encoder, l, Vec::new()));
        }
        if cfg.final_norms {
            out.push(encoder(point::LN_FINAL));
        }
        out.push(ENCODER_OUT.to_string());
        out.extend(stack_start(decoder, cfg));
        for l in 0..cfg.n_decoder_layers {
            out.extend(block(decoder, l, cross_attention(l)));
        }
        if cfg.final_norms {
            out.push(decoder(point::LN_FINAL));
        }
        out
    }

    /// The embedding points of one stack.
    fn stack_start(prefix: fn(&str) -> String, cfg: &Seq2SeqConfig) -> Vec<String> {
        let mut out = vec![prefix(point::EMBED)];
        if !matches!(cfg.positions, Positions::Relative { .. }) {
            out.push(prefix(point::POS_EMBED));
        }
        out
    }

    /// The cross-attention points of decoder block `l`, in forward order.
    fn cross_attention(l: usize) -> Vec<String> {
        vec![
            cross_kv_input(l),
            cross_q_input(l),
            cross_k_input(l),
            cross_v_input(l),
            cross_q(l),
            cross_k(l),
            cross_v(l),
            cross_scores(l),
            cross_pattern(l),
            cross_z(l),
            cross_result(l),
            cross_attn_out(l),
            resid_mid_cross(l),
        ]
    }
}

/// Which encoder-decoder family a model belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Seq2SeqFamily {
    /// MarianMT: post-norm BART with sinusoidal positions from 0 and a final logits bias.
    Marian,
    /// mBART / mBART-50: pre-norm BART with learned positions (offset 2), a norm on the
    /// embeddings and final norms.
    MBart,
    /// M2M100 / NLLB: pre-norm BART with fairseq sinusoids past the padding index and final
    /// norms.
    M2M100,
    /// T5 / mT5 / Flan-T5: RMSNorm without mean, relative position buckets, unscaled scores.
    T5,
}

/// How positions enter an encoder-decoder model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Positions {
    /// A `[n_ctx, d_model]` table added to the embeddings (`hook_pos_embed`): sinusoids
    /// computed at load time or a learned table, position `p` at row `p`.
    Table,
    /// T5's relative position buckets: a learned `[num_buckets, n_heads]` bias of the first
    /// layer, added to the scores of every layer's self-attention.
    Relative {
        /// Number of buckets (half per direction in the bidirectional encoder).
        num_buckets: usize,
        /// Distances from here on share the last bucket.
        max_distance: usize,
    },
}

/// Architecture-neutral hyper-parameters of an encoder-decoder transformer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Seq2SeqConfig {
    /// Model family.
    pub family: Seq2SeqFamily,
    /// The `model_type` of the source config.
    pub model_type: String,
    /// Encoder blocks.
    pub n_encoder_layers: usize,
    /// Decoder blocks.
    pub n_decoder_layers: usize,
    /// Residual width.
    pub d_model: usize,
    /// Heads of every attention.
    pub n_heads: usize,
    /// Width of one head (T5's `d_kv` need not be `d_model / n_heads`).
    pub d_head: usize,
    /// Hidden width of the MLP.
    pub d_mlp: usize,
    /// Vocabulary size.
    pub d_vocab: usize,
    /// Longest sequence on either side (the position table's length; T5 has no limit of its
    /// own, so its is [`T5_MAX_POSITIONS`]).
    pub n_ctx: usize,
    /// Normalisation kind.
    pub norm: NormKind,
    /// Epsilon of the normalisation.
    pub norm_eps: f64,
    /// Whether the norms come before each sublayer (mBART, M2M100, T5) or after each residual
    /// addition (Marian).
    pub pre_norm: bool,
    /// How positions enter.
    pub positions: Positions,
    /// What token embeddings are multiplied by (`√d_model` under `scale_embedding`).
    pub embed_scale: Option<f64>,
    /// Whether a LayerNorm follows the embeddings (mBART's `layernorm_embedding`).
    pub embedding_norm: bool,
    /// Whether each stack ends with a norm (`layer_norm` / `final_layer_norm`).
    pub final_norms: bool,
    /// MLP nonlinearity.
    pub act_fn: ActivationFn,
    /// Whether the MLP is gated (`wo(act(wi_0 x) * wi_1 x)`, T5 v1.1).
    pub gated_mlp: bool,
    /// Whether attention scores are divided by `√d_head` (false for T5).
    pub scale_scores: bool,
    /// What the decoder output is multiplied by before the head (T5 with a tied head:
    /// `d_model^-0.5`).
    pub output_scale: Option<f64>,
    /// Padding id (also the position padding index of M2M100).
    pub pad_token_id: u32,
    /// End-of-sequence id: generation stops there.
    pub eos_token_id: Option<u32>,
    /// The first decoder input.
    pub decoder_start_token_id: u32,
    /// The token generation forces after the start token (mBART-50 / NLLB target language).
    pub forced_bos_token_id: Option<u32>,
}

/// T5's sequence limit: relative buckets have none, so this only bounds the inputs (the
/// published models were trained at 512).
pub const T5_MAX_POSITIONS: usize = 1 << 16;

impl Seq2SeqConfig {
    /// Errors unless every size is positive and within [`limits`], and no matrix the builders
    /// size overflows, so that a malformed config is named before anything is allocated.
    pub fn check_sizes(&self) -> Result<()> {
        let counts: [(&str, usize, usize); 8] = [
            ("encoder layers", self.n_encoder_layers, limits::MAX_LAYERS),
            ("decoder layers", self.n_decoder_layers, limits::MAX_LAYERS),
            ("d_model", self.d_model, limits::MAX_D_MODEL),
            ("n_heads", self.n_heads, limits::MAX_HEADS),
            ("d_head", self.d_head, limits::MAX_D_HEAD),
            ("d_mlp", self.d_mlp, limits::MAX_D_MLP),
            ("d_vocab", self.d_vocab, limits::MAX_D_VOCAB),
            ("n_ctx", self.n_ctx, limits::MAX_N_CTX),
        ];
        for (name, value, max) in counts {
            check_count(name, value, max)?;
        }
        let products = [
            ("n_heads × d_head", self.n_heads.checked_mul(self.d_head)),
            ("d_vocab × d_model", self.d_vocab.checked_mul(self.d_model)),
            ("d_model × d_mlp", self.d_model.checked_mul(self.d_mlp)),
            ("n_ctx × d_model", self.n_ctx.checked_mul(self.d_model)),
            (
                "n_heads × d_head × d_model",
                self.n_heads
                    .checked_mul(self.d_head)
                    .and_then(|x| x.checked_mul(self.d_model)),
            ),
        ];
        for (name, product) in products {
            if product.is_none_or(|p| p > limits::MAX_MATRIX_ELEMENTS) {
                return Err(ModelError::Unsupported(format!(
                    "config with {name} = {} (a weight of more than {} elements, \
                     limits::MAX_MATRIX_ELEMENTS)",
                    product.map_or_else(|| "an overflow".to_string(), |p| p.to_string()),
                    limits::MAX_MATRIX_ELEMENTS
                )));
            }
        }
        // Sinusoid tables are computed on the host at load time: bounded like rotary tables.
        let computed_table = matches!(self.family, Seq2SeqFamily::Marian | Seq2SeqFamily::M2M100);
        let table = self.n_ctx.checked_mul(self.d_model);
        if computed_table && table.is_none_or(|t| t > limits::MAX_ROTARY_TABLE_ELEMENTS) {
            return Err(ModelError::Unsupported(format!(
                "config with max_position_embeddings = {} and d_model = {}: the sinusoid table \
                 would hold more than {} elements (limits::MAX_ROTARY_TABLE_ELEMENTS)",
                self.n_ctx,
                self.d_model,
                limits::MAX_ROTARY_TABLE_ELEMENTS
            )));
        }
        if let Positions::Relative {
            num_buckets,
            max_distance,
        } = self.positions
        {
            check_count("relative_attention_num_buckets", num_buckets, 1 << 16)?;
            // Exact buckets cover distances below `num_buckets / 2` in the causal decoder
            // (`/ 4` per direction in the encoder) and log buckets the rest up to
            // max_distance, which must lie past the exact range.
            if num_buckets < 4 || max_distance <= num_buckets / 2 {
                return Err(ModelError::Unsupported(format!(
                    "relative attention with {num_buckets} buckets up to distance \
                     {max_distance} (at least 4 buckets and a distance past the exact ones)"
                )));
            }
        }
        for (name, id) in [
            ("pad_token_id", Some(self.pad_token_id)),
            ("decoder_start_token_id", Some(self.decoder_start_token_id)),
            ("eos_token_id", self.eos_token_id),
            ("forced_bos_token_id", self.forced_bos_token_id),
        ] {
            if let Some(id) = id
                && id as usize >= self.d_vocab
            {
                return Err(ModelError::Unsupported(format!(
                    "config with {name} = {id} outside the vocabulary of {}",
                    self.d_vocab
                )));
            }
        }
        Ok(())
    }
}

/// One encoder or decoder block.
#[derive(Debug, Clone)]
pub(crate) struct Seq2SeqBlock {
    /// The self-attention's norm (before it, or after its residual addition).
    pub ln_attn: Norm,
    pub attn: AttentionWeights,
    /// The decoder's cross-attention and its norm.
    pub cross: Option<(Norm, AttentionWeights)>,
    /// The MLP's norm.
    pub ln_mlp: Norm,
    pub mlp: MlpWeights,
}

/// The embeddings and blocks of the encoder or the decoder.
#[derive(Debug, Clone)]
pub(crate) struct Stack {
    /// `[d_vocab, d_model]`
    pub embed: Tensor<2>,
    /// `[n_ctx, d_model]`: position `p` at row `p` (offsets applied at load time)
    pub pos_table: Option<Tensor<2>>,
    /// mBART's norm on the embeddings.
    pub embedding_norm: Option<Norm>,
    /// T5's relative position bias `[num_buckets, n_heads]` (first layer, shared).
    pub relative_bias: Option<Tensor<2>>,
    pub blocks: Vec<Seq2SeqBlock>,
    pub final_norm: Option<Norm>,
}

/// An encoder-decoder transformer with hook points (BART family or T5).
#[derive(Debug, Clone)]
pub struct Seq2Seq {
    pub(crate) config: Seq2SeqConfig,
    pub(crate) encoder: Stack,
    pub(crate) decoder: Stack,
    /// `[d_vocab, d_model]` (the `lm_head` layout)
    pub(crate) unembed: Tensor<2>,
    /// `[d_vocab]`, Marian and mBART's `final_logits_bias`
    pub(crate) final_logits_bias: Option<Tensor<1>>,
    pub(crate) device: Device,
}

/// What the encoder produced for a batch: its output and each source's length (which masks
/// the padding in cross-attention).
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// `[batch, src_pos, d_model]`, after the encoder's final norm and the `encoder.hook_out`
    /// hooks.
    pub hidden: Tensor<3>,
    /// Real length of each source.
    pub lengths: Vec<usize>,
}

/// One layer's keys and values `[batch, n_heads, seq, d_head]`.
type Kv = (Tensor<4>, Tensor<4>);

/// The decoder's cache during generation: self-attention keys and values of the positions so
/// far, and the cross-attention keys and values, computed once from the encoder output.
#[derive(Debug, Clone)]
pub struct Seq2SeqCache {
    self_kv: Vec<Option<Kv>>,
    cross_kv: Vec<Kv>,
    len: usize,
}

impl Seq2SeqCache {
    /// Number of decoder positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no decoder position is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Which side a stack is, for hook names and the direction of attention.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Encoder,
    Decoder,
}

impl Side {
    fn name(self, point: &str) -> String {
        match self {
            Side::Encoder => points::encoder(point),
            Side::Decoder => points::decoder(point),
        }
    }
}

/// The hook points of one attention.
struct AttnPoints {
    q_input: String,
    k_input: String,
    v_input: String,
    q: String,
    k: String,
    v: String,
    scores: String,
    pattern: String,
    z: String,
    result: String,
}

impl AttnPoints {
    fn self_attn(side: Side, l: usize) -> Self {
        Self {
            q_input: side.name(&point::q_input(l)),
            k_input: side.name(&point::k_input(l)),
            v_input: side.name(&point::v_input(l)),
            q: side.name(&point::q(l)),
            k: side.name(&point::k(l)),
            v: side.name(&point::v(l)),
            scores: side.name(&point::attn_scores(l)),
            pattern: side.name(&point::pattern(l)),
            z: side.name(&point::z(l)),
            result: side.name(&point::result(l)),
        }
    }

    fn cross(l: usize) -> Self {
        Self {
            q_input: points::cross_q_input(l),
            k_input: points::cross_k_input(l),
            v_input: points::cross_v_input(l),
            q: points::cross_q(l),
            k: points::cross_k(l),
            v: points::cross_v(l),
            scores: points::cross_scores(l),
            pattern: points::cross_pattern(l),
            z: points::cross_z(l),
            result: points::cross_result(l),
        }
    }
}

/// Where an attention's keys and values come from.
enum KeysValues<'a> {
    /// Self-attention: projected from the queries' own input (through the same norm).
    Own,
    /// Cross-attention: projected from this `[batch, kv_pos, d_model]` input, not normalised.
    Input(&'a Tensor<3>),
    /// Self-attention during generation: projected from the new positions' input and appended
    /// to a cache slot.
    Cached(&'a mut Option<Kv>),
    /// Taken as they are (cross-attention during generation).
    Given(&'a Kv),
}

/// One attention call: its weights, queries' input, keys and values, mask and bias.
struct AttnInput<'a> {
    w: &'a AttentionWeights,
    points: AttnPoints,
    /// `[batch, q_pos, d_model]`, the residual stream the queries read.
    q_in: Tensor<3>,
    /// The norm applied to it before the projections (pre-norm models), or none.
    norm: Option<&'a Norm>,
    kv: KeysValues<'a>,
    /// `[batch, 1, q_pos, kv_pos]`, true where a query may not attend.
    mask: Option<Tensor<4, Bool>>,
    /// `[1, heads, q_pos, kv_pos]` added to the scores (T5's relative positions).
    bias: Option<Tensor<4>>,
}

impl Seq2Seq {
    /// The architecture-neutral config.
    pub fn config(&self) -> &Seq2SeqConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the encoder on a right-padded source batch (padding masked in its self-attention).
    ///
    /// # Shapes
    /// - `source.tokens`: `[batch, src_pos]`; returns the output `[batch, src_pos, d_model]`
    pub fn encode(&self, source: &Batch, hooks: &mut Hooks) -> Result<EncoderOutput> {
        let [batch, seq] = source.tokens.dims();
        self.check_batch(source, "source")?;
        let mut x = self.embed(Side::Encoder, source.tokens.clone(), 0, hooks)?;
        let mask = padding_mask(batch, seq, seq, &source.lengths, &self.device);
        let bias = self.relative_bias(Side::Encoder, seq, 0, seq);
        for (l, block) in self.encoder.blocks.iter().enumerate() {
            x = self.block(
                Side::Encoder,
                l,
                block,
                x,
                mask.clone(),
                bias.clone(),
                hooks,
            )?;
        }
        let x = self.final_norm(Side::Encoder, x, hooks)?;
        let hidden = hooks.apply3(points::ENCODER_OUT, x)?;
        Ok(EncoderOutput {
            hidden,
            lengths: source.lengths.clone(),
        })
    }

    /// Runs the decoder on a right-padded target batch (the decoder inputs, starting with the
    /// decoder start token) over `encoder`'s output, and returns the logits. The target batch
    /// must have as many examples as the source.
    ///
    /// # Shapes
    /// - `target.tokens`: `[batch, tgt_pos]`; returns logits `[batch, tgt_pos, d_vocab]`
    ///   (rows at padded positions are meaningless)
    pub fn decode(
        &self,
        encoder: &EncoderOutput,
        target: &Batch,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        self.check_batch(target, "target")?;
        let [batch, seq] = target.tokens.dims();
        let [enc_batch, src, _] = encoder.hidden.dims();
        if enc_batch != batch || encoder.lengths.len() != batch {
            return Err(ModelError::InvalidInput(format!(
                "a target batch of {batch} over an encoder output of {enc_batch}"
            )));
        }
        let mut x = self.embed(Side::Decoder, target.tokens.clone(), 0, hooks)?;
        let self_mask = attention_mask(batch, seq, 0, Some(&target.lengths), None, &self.device);
        let cross_mask = padding_mask(batch, seq, src, &encoder.lengths, &self.device);
        let bias = self.relative_bias(Side::Decoder, seq, 0, seq);
        for (l, block) in self.decoder.blocks.iter().enumerate() {
            let inputs = DecoderInputs {
                self_mask: self_mask.clone(),
                bias: bias.clone(),
                cross: CrossSource::Encoder(&encoder.hidden),
                cross_mask: cross_mask.clone(),
                cache: None,
            };
            x = self.decoder_block(l, block, x, inputs, hooks)?;
        }
        self.logits(x, hooks)
    }

    /// The full forward: [`Seq2Seq::encode`] then [`Seq2Seq::decode`] with the same hooks.
    ///
    /// # Shapes
    /// - returns logits `[batch, tgt_pos, d_vocab]`
    pub fn forward(&self, source: &Batch, target: &Batch, hooks: &mut Hooks) -> Result<Tensor<3>> {
        let encoder = self.encode(source, hooks)?;
        self.decode(&encoder, target, hooks)
    }

    /// Forced decoding of one example: the logits of the decoder inputs `[start] + target`
    /// over `source`, so that row `i` is the distribution `target[i]` was drawn from (the last
    /// row predicts what would follow). A target that begins with a forced language token
    /// includes it.
    ///
    /// # Shapes
    /// - returns logits `[1, target.len() + 1, d_vocab]`
    pub fn force_decode(
        &self,
        source: &[u32],
        target: &[u32],
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        let mut inputs = vec![self.config.decoder_start_token_id];
        inputs.extend_from_slice(target);
        let source =
            Batch::from_sequences(&[source.to_vec()], self.config.pad_token_id, &self.device)?;
        let target = Batch::from_sequences(&[inputs], self.config.pad_token_id, &self.device)?;
        self.forward(&source, &target, hooks)
    }

    /// An empty decoder cache for `encoder`'s output: the cross-attention keys and values of
    /// every layer are computed here, once.
    pub fn new_cache(&self, encoder: &EncoderOutput) -> Seq2SeqCache {
        let cross_kv = self
            .decoder
            .blocks
            .iter()
            .filter_map(|b| b.cross.as_ref())
            .map(|(_, w)| self.project_kv(w, encoder.hidden.clone()))
            .collect();
        Seq2SeqCache {
            self_kv: vec![None; self.config.n_decoder_layers],
            cross_kv,
            len: 0,
        }
    }

    /// Runs new decoder inputs of one example after those in `cache` (made by
    /// [`Seq2Seq::new_cache`] for the same `encoder` output), appending their self-attention
    /// keys and values to it. No hooks run.
    ///
    /// # Shapes
    /// - `encoder.hidden`: `[1, src_pos, d_model]`; returns logits `[1, ids.len(), d_vocab]`
    pub fn decode_cached(
        &self,
        encoder: &EncoderOutput,
        ids: &[u32],
        cache: &mut Seq2SeqCache,
    ) -> Result<Tensor<3>> {
        let [batch, src, _] = encoder.hidden.dims();
        if batch != 1 {
            return Err(ModelError::InvalidInput(format!(
                "cached decoding runs one example, not {batch}"
            )));
        }
        if ids.is_empty() {
            return Err(ModelError::InvalidInput("no decoder input ids".into()));
        }
        self.check_host_ids(ids)?;
        let layers = self.config.n_decoder_layers;
        if cache.self_kv.len() != layers || cache.cross_kv.len() != layers {
            return Err(ModelError::InvalidInput(format!(
                "a cache of {} layers for a decoder of {layers}",
                cache.cross_kv.len()
            )));
        }
        let start = cache.len;
        let total = start + ids.len();
        if total > self.config.n_ctx {
            return Err(ModelError::InvalidInput(format!(
                "a target of {total} tokens is longer than the model's context of {}",
                self.config.n_ctx
            )));
        }
        let seq = ids.len();
        let ids_i64: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        let tokens = Tensor::from_data(TensorData::new(ids_i64, [1, seq]), &self.device);
        let mut hooks = Hooks::new();
        let mut x = self.embed(Side::Decoder, tokens, start, &mut hooks)?;
        let self_mask = attention_mask(1, seq, start, None, None, &self.device);
        let cross_mask = padding_mask(1, seq, src, &encoder.lengths, &self.device);
        let bias = self.relative_bias(Side::Decoder, seq, start, total);
        let Seq2SeqCache {
            self_kv, cross_kv, ..
        } = cache;
        for (l, block) in self.decoder.blocks.iter().enumerate() {
            let inputs = DecoderInputs {
                self_mask: self_mask.clone(),
                bias: bias.clone(),
                cross: CrossSource::Cached(&cross_kv[l]),
                cross_mask: cross_mask.clone(),
                cache: Some(&mut self_kv[l]),
            };
            x = self.decoder_block(l, block, x, inputs, &mut hooks)?;
        }
        cache.len = total;
        self.logits(x, &mut hooks)
    }

    /// Generates a target for one source with the decoder cache: the decoder starts from the
    /// config's `decoder_start_token_id`, the first new token is the config's
    /// `forced_bos_token_id` when it has one (mBART-50, NLLB: the target language), and
    /// generation stops after the model's EOS or any of `cfg.stop_tokens`, or after
    /// `cfg.max_new_tokens` new tokens (the forced one counted, as transformers does).
    /// Returns the new tokens (the forced one included, the start token not).
    pub fn generate(
        &self,
        source: &[u32],
        cfg: &GenerateConfig,
        on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>> {
        let forced: Vec<u32> = self.config.forced_bos_token_id.into_iter().collect();
        self.generate_forced(source, &forced, cfg, on_token)
    }

    /// [`Seq2Seq::generate`] with the first new tokens given (`forced`, e.g. another target
    /// language than the config's) instead of the config's `forced_bos_token_id`; they count
    /// towards `cfg.max_new_tokens` and are returned and passed to `on_token` like the others.
    pub fn generate_forced(
        &self,
        source: &[u32],
        forced: &[u32],
        cfg: &GenerateConfig,
        mut on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>> {
        cfg.validate()?;
        self.check_host_ids(forced)?;
        let batch =
            Batch::from_sequences(&[source.to_vec()], self.config.pad_token_id, &self.device)?;
        let encoder = self.encode(&batch, &mut Hooks::new())?;
        let mut cache = self.new_cache(&encoder);
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        // The decoder inputs (start token and every new token but the last) fit the context.
        let steps = cfg.max_new_tokens.min(self.config.n_ctx);
        let mut input = vec![self.config.decoder_start_token_id];
        let mut out = Vec::with_capacity(steps);
        for step in 0..steps {
            let next = match forced.get(step) {
                Some(&token) => token,
                None => {
                    let logits = self.decode_cached(&encoder, &input, &mut cache)?;
                    let [_, seq, vocab] = logits.dims();
                    let last = logits
                        .slice([0..1, seq - 1..seq, 0..vocab])
                        .reshape([vocab]);
                    let last = last
                        .into_data()
                        .convert::<f32>()
                        .try_into_vec::<f32>()
                        .map_err(|e| ModelError::InvalidInput(format!("{e:?}")))?;
                    input.clear();
                    pick_token(&last, cfg, &mut rng)?
                }
            };
            input.push(next);
            out.push(next);
            on_token(next);
            if Some(next) == self.config.eos_token_id || cfg.stop_tokens.contains(&next) {
                break;
            }
        }
        Ok(out)
    }

    /// Token embeddings (scaled), plus positions `start..start + seq` from the table, then the
    /// embedding norm.
    fn embed(
        &self,
        side: Side,
        tokens: Tensor<2, Int>,
        start: usize,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        let stack = self.stack(side);
        let [batch, seq] = tokens.dims();
        let d = self.config.d_model;
        let x = stack
            .embed
            .clone()
            .select(0, tokens.reshape([batch * seq]))
            .reshape([batch, seq, d]);
        let x = match self.config.embed_scale {
            Some(s) => x * s,
            None => x,
        };
        let mut x = hooks.apply3(side.name(point::EMBED), x)?;
        if let Some(table) = &stack.pos_table {
            let pos = table
                .clone()
                .slice(start..start + seq)
                .unsqueeze_dim::<3>(0);
            let pos = hooks.apply3(side.name(point::POS_EMBED), pos.expand([batch, seq, d]))?;
            x = x + pos;
        }
        Ok(match &stack.embedding_norm {
            Some(norm) => norm.forward(x),
            None => x,
        })
    }

    fn stack(&self, side: Side) -> &Stack {
        match side {
            Side::Encoder => &self.encoder,
            Side::Decoder => &self.decoder,
        }
    }

    /// The final norm of a stack, when it has one.
    fn final_norm(&self, side: Side, x: Tensor<3>, hooks: &mut Hooks) -> Result<Tensor<3>> {
        match &self.stack(side).final_norm {
            Some(norm) => hooks.apply3(side.name(point::LN_FINAL), norm.forward(x)),
            None => Ok(x),
        }
    }

    /// Decoder final norm, output scale, head and final logits bias.
    fn logits(&self, x: Tensor<3>, hooks: &mut Hooks) -> Result<Tensor<3>> {
        let x = self.final_norm(Side::Decoder, x, hooks)?;
        let [batch, seq, d] = x.dims();
        let x = match self.config.output_scale {
            Some(s) => x * s,
            None => x,
        };
        let logits = x
            .reshape([batch * seq, d])
            .matmul(self.unembed.clone().transpose());
        let logits = match &self.final_logits_bias {
            Some(b) => logits + b.clone().unsqueeze::<2>(),
            None => logits,
        };
        Ok(logits.reshape([batch, seq, self.config.d_vocab]))
    }

    /// T5's relative position bias of queries `start..start + q_len` over keys `0..k_len`,
    /// from the stack's first-layer table (`None` for other families).
    ///
    /// # Shapes
    /// - returns `[1, heads, q_len, k_len]`
    fn relative_bias(
        &self,
        side: Side,
        q_len: usize,
        start: usize,
        k_len: usize,
    ) -> Option<Tensor<4>> {
        let table = self.stack(side).relative_bias.as_ref()?;
        let Positions::Relative {
            num_buckets,
            max_distance,
        } = self.config.positions
        else {
            return None;
        };
        let bidirectional = side == Side::Encoder;
        let mut buckets = Vec::with_capacity(q_len * k_len);
        for q in start..start + q_len {
            for k in 0..k_len {
                let rel = k as i64 - q as i64;
                buckets.push(relative_bucket(rel, bidirectional, num_buckets, max_distance) as i64);
            }
        }
        let index =
            Tensor::<1, Int>::from_data(TensorData::new(buckets, [q_len * k_len]), &self.device);
        let h = self.config.n_heads;
        Some(
            table
                .clone()
                .select(0, index)
                .reshape([q_len, k_len, h])
                .permute([2, 0, 1])
                .unsqueeze_dim::<4>(0),
        )
    }

    /// An encoder block: self-attention then the MLP, each a residual branch with its norm
    /// before the branch (pre-norm) or after the addition (post-norm).
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        side: Side,
        l: usize,
        block: &Seq2SeqBlock,
        x: Tensor<3>,
        mask: Option<Tensor<4, Bool>>,
        bias: Option<Tensor<4>>,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        let resid = hooks.apply3(side.name(&point::resid_pre(l)), x)?;
        let attn = self.attention(
            AttnInput {
                w: &block.attn,
                points: AttnPoints::self_attn(side, l),
                q_in: resid.clone(),
                norm: self.pre_norm(&block.ln_attn),
                kv: KeysValues::Own,
                mask,
                bias,
            },
            hooks,
        )?;
        let attn = hooks.apply3(side.name(&point::attn_out(l)), attn)?;
        let resid = self.post(&block.ln_attn, resid + attn);
        let resid = hooks.apply3(side.name(&point::resid_mid(l)), resid)?;
        self.mlp_branch(side, l, block, resid, hooks)
    }

    /// The MLP branch of any block, from `hook_mlp_in` to `hook_resid_post`.
    fn mlp_branch(
        &self,
        side: Side,
        l: usize,
        block: &Seq2SeqBlock,
        resid: Tensor<3>,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        let resid = hooks.apply3(side.name(&point::mlp_in(l)), resid)?;
        let out = self.mlp(
            side,
            l,
            &block.mlp,
            self.pre(&block.ln_mlp, resid.clone()),
            hooks,
        )?;
        let out = hooks.apply3(side.name(&point::mlp_out(l)), out)?;
        let resid = self.post(&block.ln_mlp, resid + out);
        hooks.apply3(side.name(&point::resid_post(l)), resid)
    }

    /// A decoder block: causal self-attention, cross-attention over the encoder output, MLP.
    fn decoder_block(
        &self,
        l: usize,
        block: &Seq2SeqBlock,
        x: Tensor<3>,
        inputs: DecoderInputs<'_>,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        let side = Side::Decoder;
        let DecoderInputs {
            self_mask,
            bias,
            cross,
            cross_mask,
            cache,
        } = inputs;
        let resid = hooks.apply3(side.name(&point::resid_pre(l)), x)?;
        let kv = match cache {
            Some(slot) => KeysValues::Cached(slot),
            None => KeysValues::Own,
        };
        let attn = self.attention(
            AttnInput {
                w: &block.attn,
                points: AttnPoints::self_attn(side, l),
                q_in: resid.clone(),
                norm: self.pre_norm(&block.ln_attn),
                kv,
                mask: self_mask,
                bias,
            },
            hooks,
        )?;
        let attn = hooks.apply3(side.name(&point::attn_out(l)), attn)?;
        let resid = self.post(&block.ln_attn, resid + attn);
        let resid = hooks.apply3(side.name(&point::resid_mid(l)), resid)?;
        let (ln_cross, w_cross) = block.cross.as_ref().ok_or_else(|| {
            ModelError::InvalidInput(format!("decoder block {l} has no cross-attention"))
        })?;
        let kv_in;
        let kv = match cross {
            CrossSource::Encoder(hidden) => {
                kv_in = hooks.apply3(points::cross_kv_input(l), hidden.clone())?;
                KeysValues::Input(&kv_in)
            }
            CrossSource::Cached(kv) => KeysValues::Given(kv),
        };
        let cross = self.attention(
            AttnInput {
                w: w_cross,
                points: AttnPoints::cross(l),
                q_in: resid.clone(),
                norm: self.pre_norm(ln_cross),
                kv,
                mask: cross_mask,
                bias: None,
            },
            hooks,
        )?;
        let cross = hooks.apply3(points::cross_attn_out(l), cross)?;
        let resid = self.post(ln_cross, resid + cross);
        let resid = hooks.apply3(points::resid_mid_cross(l), resid)?;
        self.mlp_branch(side, l, block, resid, hooks)
    }

    /// `norm(x)` in pre-norm models, `x` in post-norm ones.
    fn pre(&self, norm: &Norm, x: Tensor<3>) -> Tensor<3> {
        match self.pre_norm(norm) {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }

    /// The norm a sublayer applies to its input: `norm` in pre-norm models, none in post-norm
    /// ones.
    fn pre_norm<'a>(&self, norm: &'a Norm) -> Option<&'a Norm> {
        self.config.pre_norm.then_some(norm)
    }

    /// `norm(x)` in post-norm models, `x` in pre-norm ones.
    fn post(&self, norm: &Norm, x: Tensor<3>) -> Tensor<3> {
        if self.config.pre_norm {
            x
        } else {
            norm.forward(x)
        }
    }

    fn mlp(
        &self,
        side: Side,
        l: usize,
        m: &MlpWeights,
        x: Tensor<3>,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        let pre_point = side.name(&point::mlp_pre(l));
        let post = match &m.w_gate {
            Some(w_gate) => {
                let gate = hooks.apply3(pre_point, linear(x.clone(), w_gate, None))?;
                self.activation(gate) * linear(x, &m.w_in, m.b_in.as_ref())
            }
            None => {
                let pre = hooks.apply3(pre_point, linear(x, &m.w_in, m.b_in.as_ref()))?;
                self.activation(pre)
            }
        };
        let post = hooks.apply3(side.name(&point::mlp_post(l)), post)?;
        Ok(linear(post, &m.w_out, m.b_out.as_ref()))
    }

    fn activation(&self, x: Tensor<3>) -> Tensor<3> {
        match self.config.act_fn {
            ActivationFn::GeluTanh => gelu_approximate(x),
            ActivationFn::Gelu => crate::transformer::gelu_erf(x),
            ActivationFn::Silu => silu(x),
            ActivationFn::Relu => relu(x),
        }
    }

    /// Keys and values of `x` `[batch, kv_pos, d_model]` under `w`, `[batch, heads, kv_pos,
    /// d_head]` each.
    fn project_kv(&self, w: &AttentionWeights, x: Tensor<3>) -> Kv {
        let [batch, seq, _] = x.dims();
        let (h, dh) = (self.config.n_heads, self.config.d_head);
        let k = linear(x.clone(), &w.w_k, w.b_k.as_ref()).reshape([batch, seq, h, dh]);
        let v = linear(x, &w.w_v, w.b_v.as_ref()).reshape([batch, seq, h, dh]);
        (k.swap_dims(1, 2), v.swap_dims(1, 2))
    }

    /// Multi-head attention (self or cross). The split per-head inputs (`hook_q_input`, ...)
    /// are made only when a hook asks for one: each head then projects its own copy of the
    /// input (normalised per copy in pre-norm models), as in the decoder-only forward.
    ///
    /// # Shapes
    /// - `input.q_in`: `[batch, q_pos, d_model]`; returns `[batch, q_pos, d_model]`
    fn attention(&self, input: AttnInput<'_>, hooks: &mut Hooks) -> Result<Tensor<3>> {
        let AttnInput {
            w,
            points: p,
            q_in,
            norm,
            kv,
            mask,
            bias,
        } = input;
        let [batch, seq, d] = q_in.dims();
        let (h, dh) = (self.config.n_heads, self.config.d_head);
        let normalise = |x: Tensor<4>| match norm {
            Some(n) => n.forward(x),
            None => x,
        };
        let split = hooks.wants(&p.q_input) || hooks.wants(&p.k_input) || hooks.wants(&p.v_input);
        let (q, k, v) = if split {
            let per_head = |x: Tensor<3>| {
                let [b, s, _] = x.dims();
                x.unsqueeze_dim::<4>(2).expand([b, s, h, d])
            };
            let (kv_in, kv_normed) = match kv {
                KeysValues::Own => (q_in.clone(), true),
                KeysValues::Input(x) => (x.clone(), false),
                KeysValues::Cached(_) | KeysValues::Given(_) => {
                    return Err(ModelError::Hook {
                        point: p.q_input.clone(),
                        message: "split q/k/v inputs cannot be used with a cache".into(),
                    });
                }
            };
            let project = |x: Tensor<4>, normed: bool, w: &Tensor<2>, b: &Option<Tensor<1>>| {
                let x = if normed { normalise(x) } else { x };
                project_per_head(x, w, b.as_ref(), h, 1, dh)
            };
            let q_heads = hooks.apply4(&p.q_input, per_head(q_in))?;
            let k_heads = hooks.apply4(&p.k_input, per_head(kv_in.clone()))?;
            let v_heads = hooks.apply4(&p.v_input, per_head(kv_in))?;
            let q = hooks.apply4(&p.q, project(q_heads, true, &w.w_q, &w.b_q))?;
            let k = hooks.apply4(&p.k, project(k_heads, kv_normed, &w.w_k, &w.b_k))?;
            let v = hooks.apply4(&p.v, project(v_heads, kv_normed, &w.w_v, &w.b_v))?;
            (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2))
        } else {
            let normed = match norm {
                Some(n) => n.forward(q_in),
                None => q_in,
            };
            let q = linear(normed.clone(), &w.w_q, w.b_q.as_ref()).reshape([batch, seq, h, dh]);
            let q = hooks.apply4(&p.q, q)?.swap_dims(1, 2);
            let mut hooked = |x: Tensor<3>| -> Result<Kv> {
                let (k, v) = self.project_kv(w, x);
                let k = hooks.apply4(&p.k, k.swap_dims(1, 2))?.swap_dims(1, 2);
                let v = hooks.apply4(&p.v, v.swap_dims(1, 2))?.swap_dims(1, 2);
                Ok((k, v))
            };
            let (k, v) = match kv {
                KeysValues::Own => hooked(normed)?,
                KeysValues::Input(x) => hooked(x.clone())?,
                KeysValues::Given((k, v)) => (k.clone(), v.clone()),
                KeysValues::Cached(slot) => {
                    let (mut k, mut v) = self.project_kv(w, normed);
                    if let Some((k_past, v_past)) = slot.take() {
                        k = Tensor::cat(vec![k_past, k], 2);
                        v = Tensor::cat(vec![v_past, v], 2);
                    }
                    *slot = Some((k.clone(), v.clone()));
                    (k, v)
                }
            };
            (q, k, v)
        };
        let scores = q.matmul(k.swap_dims(2, 3));
        let scores = if self.config.scale_scores {
            scores / (dh as f64).sqrt()
        } else {
            scores
        };
        let scores = match bias {
            Some(b) => scores + b,
            None => scores,
        };
        let scores = match mask {
            Some(m) => scores.mask_fill(m, f32::NEG_INFINITY),
            None => scores,
        };
        let scores = hooks.apply4(&p.scores, scores)?;
        let dtype = scores.dtype();
        let pattern = softmax(to_f32(scores), 3).cast(dtype);
        let pattern = hooks.apply4(&p.pattern, pattern)?;
        let z = hooks.apply4(&p.z, pattern.matmul(v).swap_dims(1, 2))?;
        let out = if hooks.wants(&p.result) {
            // result[b, p, h, :] = z[b, p, h, :] @ W_O[h]
            let w_o = w.w_o.clone().reshape([h, dh, d]);
            let result = z
                .permute([2, 0, 1, 3])
                .reshape([h, batch * seq, dh])
                .matmul(w_o)
                .reshape([h, batch, seq, d])
                .permute([1, 2, 0, 3]);
            let result = hooks.apply4(&p.result, result)?;
            result.sum_dim(2).reshape([batch, seq, d])
        } else {
            linear(z.reshape([batch, seq, h * dh]), &w.w_o, None)
        };
        Ok(match &w.b_o {
            Some(b) => out + b.clone().unsqueeze::<3>(),
            None => out,
        })
    }

    /// Checks a batch's shape, lengths and ids (one read-back of the id range).
    fn check_batch(&self, batch: &Batch, what: &str) -> Result<()> {
        let [size, seq] = batch.tokens.dims();
        if size == 0 || seq == 0 {
            return Err(ModelError::InvalidInput(format!("an empty {what} batch")));
        }
        if batch.lengths.len() != size || batch.lengths.iter().any(|&n| n == 0 || n > seq) {
            return Err(ModelError::InvalidInput(format!(
                "{what} lengths {:?} do not fit a batch of {size} × {seq}",
                batch.lengths
            )));
        }
        if seq > self.config.n_ctx {
            return Err(ModelError::InvalidInput(format!(
                "a {what} of {seq} tokens is longer than the model's context of {}",
                self.config.n_ctx
            )));
        }
        let range = Tensor::cat(
            vec![batch.tokens.clone().min(), batch.tokens.clone().max()],
            0,
        )
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| ModelError::InvalidInput(format!("reading token ids: {e:?}")))?;
        self.check_id_range(range[0], range[1])
    }

    fn check_host_ids(&self, ids: &[u32]) -> Result<()> {
        let min = ids.iter().copied().min().map_or(0, i64::from);
        let max = ids.iter().copied().max().map_or(0, i64::from);
        self.check_id_range(min, max)
    }

    fn check_id_range(&self, min: i64, max: i64) -> Result<()> {
        if min < 0 || max >= self.config.d_vocab as i64 {
            return Err(ModelError::InvalidInput(format!(
                "token id out of range 0..{} (found {min}..={max})",
                self.config.d_vocab
            )));
        }
        Ok(())
    }
}

/// Where a decoder block's cross-attention gets its keys and values.
enum CrossSource<'a> {
    /// From the encoder output (through `cross_attn.hook_kv_input`).
    Encoder(&'a Tensor<3>),
    /// Computed once for generation.
    Cached(&'a Kv),
}

/// What a decoder block reads besides its residual and the hooks.
struct DecoderInputs<'a> {
    self_mask: Option<Tensor<4, Bool>>,
    bias: Option<Tensor<4>>,
    cross: CrossSource<'a>,
    /// `[batch, 1, tgt_pos, src_pos]`, true at padded source positions.
    cross_mask: Option<Tensor<4, Bool>>,
    cache: Option<&'a mut Option<Kv>>,
}

/// T5's bucket of a relative position `key − query` (Raffel et al. 2020 §2.1; transformers'
/// `T5Attention._relative_position_bucket`): exact buckets for short distances, logarithmic
/// ones up to `max_distance`, half of the buckets for each direction when bidirectional and
/// only the past when not. The logarithm is taken in f32, as transformers does.
pub fn relative_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let (mut buckets, mut offset) = (num_buckets, 0);
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            offset = buckets;
        }
        relative.unsigned_abs() as usize
    } else {
        (-relative.min(0)) as usize
    };
    let max_exact = buckets / 2;
    if distance < max_exact {
        return offset + distance;
    }
    let ratio = (distance as f32 / max_exact as f32).ln()
        / ((max_distance as f64 / max_exact as f64).ln() as f32)
        * (buckets - max_exact) as f32;
    offset + (max_exact + ratio as usize).min(buckets - 1)
}

/// True where a query may not attend: keys at or past each example's length.
///
/// # Shapes
/// - returns `[batch, 1, q_len, k_len]`, or `None` when no key is padding
fn padding_mask(
    batch: usize,
    q_len: usize,
    k_len: usize,
    lengths: &[usize],
    device: &Device,
) -> Option<Tensor<4, Bool>> {
    if lengths.iter().all(|&n| n >= k_len) {
        return None;
    }
    let shape = [batch, 1, q_len, k_len];
    let keys = Tensor::<1, Int>::arange(0..k_len as i64, device)
        .reshape([1, 1, 1, k_len])
        .expand(shape);
    let lengths: Vec<i64> = lengths.iter().map(|&n| n as i64).collect();
    let lengths = Tensor::<1, Int>::from_data(TensorData::new(lengths, [batch]), device)
        .reshape([batch, 1, 1, 1])
        .expand(shape);
    Some(keys.greater_equal(lengths))
}

/// `x @ w + b` over the last dimension.
fn linear(x: Tensor<3>, w: &Tensor<2>, b: Option<&Tensor<1>>) -> Tensor<3> {
    let [batch, seq, d_in] = x.dims();
    let d_out = w.dims()[1];
    let y = x.reshape([batch * seq, d_in]).matmul(w.clone());
    let y = match b {
        Some(b) => y + b.clone().unsqueeze::<2>(),
        None => y,
    };
    y.reshape([batch, seq, d_out])
}

/// A loaded encoder-decoder model: the network and its tokenizer.
#[derive(Debug, Clone)]
pub struct Seq2SeqModel {
    /// The network.
    pub model: Seq2Seq,
    /// Its tokenizer (the same for source and target in every supported family).
    pub tokenizer: Tokenizer,
    /// Where it was loaded from.
    pub source: PathBuf,
}

impl Seq2SeqModel {
    /// Loads a Hugging Face encoder-decoder folder (`config.json`, `model.safetensors` or
    /// shards, `tokenizer.json`, and `generation_config.json` when present, whose
    /// `decoder_start_token_id`, `forced_bos_token_id` and `eos_token_id` take precedence).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_with_progress(path, device, &mut Silent)
    }

    /// Like [`Seq2SeqModel::load`], ticking `progress` (stage [`crate::model::LOADING`], counts
    /// in weight elements) after every tensor; a `Break` stops loading with
    /// [`ModelError::Cancelled`].
    pub fn load_with_progress(
        path: &Path,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<Self> {
        if !path.is_dir() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "encoder-decoder model folder",
            });
        }
        let cfg = seq2seq_config_at(path)?;
        let tokenizer = Tokenizer::from_file(&path.join("tokenizer.json"), None, cfg.eos_token_id)?;
        let src = SafetensorsSource::open_folder(path)?;
        let total = estimate_elements(&cfg);
        let model =
            crate::model::build_with_progress(&src, device, total, progress, |w| {
                match cfg.family {
                    Seq2SeqFamily::T5 => t5::build(cfg, w),
                    _ => bart::build(cfg, w),
                }
            })?;
        Ok(Self {
            model,
            tokenizer,
            source: path.to_path_buf(),
        })
    }

    /// The source ids of `text` framed as the family's tokenizer frames them: Marian and T5
    /// `tokens + [eos]`; mBART-50 `tokens + [eos, lang]`; M2M100 / NLLB `[lang] + tokens +
    /// [eos]`, with `lang` the id of the source-language token `source_lang` (`"en_XX"`,
    /// `"__en__"`, `"eng_Latn"`), which those families need and the others refuse.
    pub fn encode_source(&self, text: &str, source_lang: Option<&str>) -> Result<Vec<u32>> {
        let cfg = &self.model.config;
        let mut ids = self.tokenizer.encode(text)?;
        let eos = cfg.eos_token_id.ok_or_else(|| {
            ModelError::InvalidInput("the model has no EOS token to end the source with".into())
        })?;
        let lang = match (cfg.family, source_lang) {
            (Seq2SeqFamily::MBart | Seq2SeqFamily::M2M100, Some(lang)) => self.token_id(lang)?,
            (Seq2SeqFamily::MBart | Seq2SeqFamily::M2M100, None) => {
                return Err(ModelError::InvalidInput(format!(
                    "{} sources carry a source-language token: pass its name",
                    cfg.model_type
                )));
            }
            (_, None) => {
                ids.push(eos);
                return Ok(ids);
            }
            (_, Some(lang)) => {
                return Err(ModelError::InvalidInput(format!(
                    "{} sources carry no language token (got {lang:?})",
                    cfg.model_type
                )));
            }
        };
        Ok(match cfg.family {
            Seq2SeqFamily::M2M100 => [vec![lang], ids, vec![eos]].concat(),
            _ => [ids, vec![eos, lang]].concat(),
        })
    }

    /// The id of a token given by name (a language code, a special token), or an error naming
    /// it.
    pub fn token_id(&self, token: &str) -> Result<u32> {
        self.tokenizer
            .inner()
            .token_to_id(token)
            .ok_or_else(|| ModelError::InvalidInput(format!("{token:?} is not in the vocabulary")))
    }
}

/// The number of weight elements a config implies (embeddings, attention, MLPs and norms of
/// both stacks, and an untied head counted as one more embedding): the total that loading
/// reports progress against.
pub fn estimate_elements(cfg: &Seq2SeqConfig) -> u64 {
    let d = cfg.d_model as u64;
    let inner = (cfg.n_heads * cfg.d_head) as u64;
    let attn = 4 * d * inner;
    let mlp = if cfg.gated_mlp { 3 } else { 2 } * d * cfg.d_mlp as u64;
    let norm = match cfg.norm {
        NormKind::LayerNorm => 2 * d,
        NormKind::RmsNorm => d,
    };
    let encoder = cfg.n_encoder_layers as u64 * (attn + mlp + 2 * norm);
    let decoder = cfg.n_decoder_layers as u64 * (2 * attn + mlp + 3 * norm);
    encoder + decoder + 2 * cfg.d_vocab as u64 * d
}

/// Whether a Hugging Face `model_type` is an encoder-decoder family Fidelis reads.
pub fn is_seq2seq_model_type(model_type: &str) -> bool {
    SUPPORTED_SEQ2SEQ_MODEL_TYPES.contains(&model_type)
}

/// The encoder-decoder config of a Hugging Face folder, sizes checked, without the weights.
pub fn seq2seq_config_at(dir: &Path) -> Result<Seq2SeqConfig> {
    let path = dir.join("config.json");
    let text = read_text(&path)?;
    let bad = |message: String| ModelError::Config {
        path: path.clone(),
        message,
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let generation = dir.join("generation_config.json");
    let generation: Option<serde_json::Value> = if generation.exists() {
        let text = read_text(&generation)?;
        Some(serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: generation.clone(),
            message: e.to_string(),
        })?)
    } else {
        None
    };
    let model_type = json
        .get("model_type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad("no `model_type` field".into()))?;
    let mut cfg = match model_type {
        "marian" | "mbart" | "m2m_100" => bart::BartConfig::from_json(&text)
            .map_err(|e| bad(e.to_string()))?
            .to_seq2seq(model_type)?,
        "t5" | "mt5" => t5::T5Config::from_json(&text)
            .map_err(|e| bad(e.to_string()))?
            .to_seq2seq(model_type)?,
        other => {
            return Err(ModelError::Unsupported(format!(
                "encoder-decoder architecture `{other}` (supported: {})",
                SUPPORTED_SEQ2SEQ_MODEL_TYPES.join(", ")
            )));
        }
    };
    if let Some(generation) = generation {
        let id = |key: &str| -> Result<Option<u32>> { token_id(&generation, key) };
        if let Some(start) = id("decoder_start_token_id")? {
            cfg.decoder_start_token_id = start;
        }
        if let Some(forced) = id("forced_bos_token_id")? {
            cfg.forced_bos_token_id = Some(forced);
        }
        if let Some(eos) = id("eos_token_id")? {
            cfg.eos_token_id = Some(eos);
        }
    }
    cfg.check_sizes()?;
    Ok(cfg)
}

/// A token id field of a config (`null` or absent: `None`; a list: its first entry).
pub(crate) fn token_id(json: &serde_json::Value, key: &str) -> Result<Option<u32>> {
    let value = match json.get(key) {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Array(list)) => match list.first() {
            Some(v) => v,
            None => return Ok(None),
        },
        Some(v) => v,
    };
    value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| {
            ModelError::Unsupported(format!("config field {key} = {value} is not a token id"))
        })
}

#[cfg(test)]
mod tests {
    use super::relative_bucket;

    /// Buckets by hand for 8 buckets up to distance 12: bidirectional, 4 per direction, exact
    /// below 2, then ⌊2 + ln(d/2)/ln(6)·2⌋ capped at 3; causal: 8 buckets of the past, exact
    /// below 4, then ⌊4 + ln(d/4)/ln(3)·4⌋ capped at 7, the future in bucket 0.
    #[test]
    fn relative_buckets_match_hand_values() {
        let bi = |r| relative_bucket(r, true, 8, 12);
        assert_eq!([bi(0), bi(-1), bi(-2), bi(-5), bi(-30)], [0, 1, 2, 3, 3]);
        assert_eq!([bi(1), bi(2), bi(3), bi(12)], [5, 6, 6, 7]);
        let causal = |r| relative_bucket(r, false, 8, 12);
        assert_eq!([causal(3), causal(0), causal(-3)], [0, 0, 3]);
        // d = 5: 4 + ln(1.25)/ln(3)·4 = 4.81; d = 9: 4 + ln(2.25)/ln(3)·4 = 6.95; d = 11: 7.68.
        assert_eq!(
            [causal(-4), causal(-5), causal(-9), causal(-11)],
            [4, 4, 6, 7]
        );
    }
}
