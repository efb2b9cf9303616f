//! The hooked forward pass shared by every architecture.
//!
//! `gpt2.rs` and `llama.rs` map their checkpoints onto these weight structs; the forward below
//! reads the [`TransformerConfig`] to pick the norm, the position encoding and the MLP kind.
//! Weights are stored `[in, out]` so that a projection is `x @ W`.

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::{gelu_approximate, relu, silu, softmax};

use crate::config::{ActivationFn, NormKind, Positional, RopeScaling, TransformerConfig};
use crate::error::{ModelError, Result};
use crate::hooks::{Hooks, point};
use crate::precision::to_f32;

/// A LayerNorm or RMSNorm with its learned scale (and bias, for LayerNorm).
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    pub kind: NormKind,
    pub eps: f64,
    /// `[d_model]`
    pub weight: Tensor<1>,
    /// `[d_model]`
    pub bias: Option<Tensor<1>>,
}

impl Norm {
    /// Normalises over the last dimension, whatever the rank. The statistics are taken in f32
    /// for a half-precision `x`, as transformers does, and the result is cast back.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let last = D - 1;
        let dtype = x.dtype();
        let x = to_f32(x);
        let x = match self.kind {
            NormKind::LayerNorm => {
                let centered = x.clone() - x.mean_dim(last);
                let var = centered.clone().square().mean_dim(last);
                centered / (var + self.eps).sqrt()
            }
            NormKind::RmsNorm => {
                let ms = x.clone().square().mean_dim(last);
                x / (ms + self.eps).sqrt()
            }
        };
        let x = x.cast(dtype) * self.weight.clone().unsqueeze::<D>();
        match &self.bias {
            Some(b) => x + b.clone().unsqueeze::<D>(),
            None => x,
        }
    }

    /// The per-row factor `w / √(mean(x²) + eps)` an RMSNorm multiplies `x` by, so that
    /// `forward(x) = x · factor(x)`: a sum of parts normalised together is the sum of each part
    /// times the factor of the whole. `None` for a LayerNorm.
    pub fn rms_factor<const D: usize>(&self, x: Tensor<D>) -> Option<Tensor<D>> {
        let NormKind::RmsNorm = self.kind else {
            return None;
        };
        let ms = x.square().mean_dim(D - 1);
        Some(self.weight.clone().unsqueeze::<D>() / (ms + self.eps).sqrt())
    }
}

/// Attention weights, `[in, out]` layout, heads concatenated along `out`.
#[derive(Debug, Clone)]
pub(crate) struct AttentionWeights {
    /// `[d_model, n_heads * d_head]`
    pub w_q: Tensor<2>,
    /// `[n_heads * d_head]`
    pub b_q: Option<Tensor<1>>,
    /// `[d_model, n_kv_heads * d_head]`
    pub w_k: Tensor<2>,
    /// `[n_kv_heads * d_head]`
    pub b_k: Option<Tensor<1>>,
    /// `[d_model, n_kv_heads * d_head]`
    pub w_v: Tensor<2>,
    /// `[n_kv_heads * d_head]`
    pub b_v: Option<Tensor<1>>,
    /// `[n_heads * d_head, d_model]`
    pub w_o: Tensor<2>,
    /// `[d_model]`
    pub b_o: Option<Tensor<1>>,
    /// Per-head query norm over `d_head` (Qwen 3), applied before rotary.
    pub q_norm: Option<Norm>,
    /// Per-head key norm over `d_head` (Qwen 3), applied before rotary.
    pub k_norm: Option<Norm>,
}

/// MLP weights: plain (`out(act(in(x)))`) or gated (`out(act(gate(x)) * in(x))`).
#[derive(Debug, Clone)]
pub(crate) struct MlpWeights {
    /// `[d_model, d_mlp]` (the "up" projection of a gated MLP)
    pub w_in: Tensor<2>,
    /// `[d_mlp]`
    pub b_in: Option<Tensor<1>>,
    /// `[d_model, d_mlp]`, gated MLPs only
    pub w_gate: Option<Tensor<2>>,
    /// `[d_mlp, d_model]`
    pub w_out: Tensor<2>,
    /// `[d_model]`
    pub b_out: Option<Tensor<1>>,
}

/// One transformer block.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub ln1: Norm,
    pub attn: AttentionWeights,
    pub ln2: Norm,
    pub mlp: MlpWeights,
    /// Norm of the attention output before it joins the residual (Gemma 2).
    pub post_attn: Option<Norm>,
    /// Norm of the MLP output before it joins the residual (Gemma 2).
    pub post_mlp: Option<Norm>,
}

/// What one block (and its attention) reads besides the hooks and the KV cache, in the manner
/// of Burn's `MhaInput`.
struct BlockInput<'a> {
    /// Index of the block, which names its hook points.
    layer: usize,
    /// The block's weights.
    block: &'a Block,
    /// Residual stream `[batch, pos, d_model]` (`resid_pre` of the block).
    x: Tensor<3>,
    /// Absolute position of the first row of `x`; cached positions come before it.
    start: usize,
    /// `[batch, 1, pos, start + pos]`, true where a query may not attend; `None` when nothing
    /// is masked (one new position and no padding).
    mask: Option<Tensor<4, Bool>>,
}

/// One layer's cached keys and values `[batch, n_kv_heads, seq, d_head]`, after rotary.
type LayerKv = Option<(Tensor<4>, Tensor<4>)>;

/// Cached keys and values of earlier positions, for generation.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer: keys and values `[batch, n_kv_heads, seq, d_head]`, after rotary.
    layers: Vec<LayerKv>,
    /// How many positions are cached.
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A decoder-only transformer with hook points (GPT-2 or Llama family).
#[derive(Debug, Clone)]
pub struct Transformer {
    pub(crate) config: TransformerConfig,
    /// `[d_vocab, d_model]`
    pub(crate) embed: Tensor<2>,
    /// `[n_ctx, d_model]`, learned positions only
    pub(crate) pos_embed: Option<Tensor<2>>,
    pub(crate) blocks: Vec<Block>,
    pub(crate) ln_final: Norm,
    /// `[d_vocab, d_model]` (the `lm_head` layout; the embedding itself when tied)
    pub(crate) unembed: Tensor<2>,
    /// cos and sin tables `[n_ctx, rotary_dim]` for rotary models
    pub(crate) rotary: Option<(Tensor<2>, Tensor<2>)>,
    pub(crate) device: Device,
}

/// A right-padded batch of token ids with each example's real length.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[batch, pos]` token ids; positions at or after an example's length are padding.
    pub tokens: Tensor<2, Int>,
    /// Real length of each example.
    pub lengths: Vec<usize>,
}

impl Batch {
    /// Pads `sequences` on the right with `pad_id` into one batch.
    pub fn from_sequences(sequences: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Self> {
        let max_len = sequences.iter().map(Vec::len).max().unwrap_or(0);
        if sequences.is_empty() || sequences.iter().any(Vec::is_empty) {
            return Err(ModelError::InvalidInput(
                "a batch needs non-empty sequences".into(),
            ));
        }
        let mut ids = Vec::with_capacity(sequences.len() * max_len);
        for seq in sequences {
            ids.extend(seq.iter().map(|&t| i64::from(t)));
            ids.extend(std::iter::repeat_n(i64::from(pad_id), max_len - seq.len()));
        }
        let tokens = Tensor::from_data(TensorData::new(ids, [sequences.len(), max_len]), device);
        Ok(Self {
            tokens,
            lengths: sequences.iter().map(Vec::len).collect(),
        })
    }

    /// Number of examples.
    pub fn size(&self) -> usize {
        self.lengths.len()
    }

    /// Each example's last real position.
    pub fn last_positions(&self) -> Vec<usize> {
        self.lengths.iter().map(|l| l - 1).collect()
    }
}

impl Transformer {
    /// The architecture-neutral config.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of parameters (tied matrices counted once).
    pub fn parameter_count(&self) -> usize {
        let n1 = |t: &Tensor<1>| t.dims()[0];
        let o1 = |t: &Option<Tensor<1>>| t.as_ref().map_or(0, n1);
        let n2 = |t: &Tensor<2>| t.dims().iter().product::<usize>();
        let norm = |n: &Norm| n1(&n.weight) + o1(&n.bias);
        let mut total = n2(&self.embed)
            + self.pos_embed.as_ref().map_or(0, n2)
            + norm(&self.ln_final)
            + if self.config.tied_embeddings {
                0
            } else {
                n2(&self.unembed)
            };
        for b in &self.blocks {
            let a = &b.attn;
            total += norm(&b.ln1) + norm(&b.ln2);
            total += b.post_attn.as_ref().map_or(0, norm) + b.post_mlp.as_ref().map_or(0, norm);
            total += n2(&a.w_q) + n2(&a.w_k) + n2(&a.w_v) + n2(&a.w_o);
            total += o1(&a.b_q) + o1(&a.b_k) + o1(&a.b_v) + o1(&a.b_o);
            let m = &b.mlp;
            total += n2(&m.w_in) + n2(&m.w_out) + m.w_gate.as_ref().map_or(0, n2);
            total += o1(&m.b_in) + o1(&m.b_out);
        }
        total
    }

    /// The attention output bias `b_O` of layer `l` `[d_model]`, if the model has one. It is
    /// added once to the sum of the per-head results (`attn.hook_result` excludes it).
    pub fn attn_output_bias(&self, l: usize) -> Option<Tensor<1>> {
        self.blocks.get(l)?.attn.b_o.clone()
    }

    /// The MLP output bias of layer `l` `[d_model]`, if the model has one.
    pub fn mlp_output_bias(&self, l: usize) -> Option<Tensor<1>> {
        self.blocks.get(l)?.mlp.b_out.clone()
    }

    /// Runs the model on `tokens` with hooks.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, pos]`
    /// - returns logits `[batch, pos, d_vocab]`
    pub fn forward(&self, tokens: Tensor<2, Int>, hooks: &mut Hooks) -> Result<Tensor<3>> {
        self.check_tokens(&tokens, 0)?;
        self.run(tokens, None, hooks, None)
    }

    /// Runs a right-padded batch; real positions give the same logits as unpadded runs.
    ///
    /// # Shapes
    /// - returns logits `[batch, pos, d_vocab]`; rows at padded positions are meaningless
    pub fn forward_batch(&self, batch: &Batch, hooks: &mut Hooks) -> Result<Tensor<3>> {
        self.check_tokens(&batch.tokens, 0)?;
        self.run(batch.tokens.clone(), Some(&batch.lengths), hooks, None)
    }

    /// Runs new tokens after those in `cache`, appending their keys and values to it.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, new_pos]`; returns logits `[batch, new_pos, d_vocab]`
    pub fn forward_cached(&self, tokens: Tensor<2, Int>, cache: &mut KvCache) -> Result<Tensor<3>> {
        self.check_tokens(&tokens, cache.len)?;
        self.run(tokens, None, &mut Hooks::new(), Some(cache))
    }

    /// [`Transformer::forward_cached`] on one example whose ids are still on the host, where
    /// they are checked without reading anything back from the device (generation).
    ///
    /// # Shapes
    /// - returns logits `[1, ids.len(), d_vocab]`
    pub(crate) fn forward_cached_ids(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor<3>> {
        self.check_length(ids.len(), cache.len + ids.len())?;
        self.check_host_ids(ids)?;
        let ids_i64: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        let tokens = Tensor::from_data(TensorData::new(ids_i64, [1, ids.len()]), &self.device);
        self.run(tokens, None, &mut Hooks::new(), Some(cache))
    }

    /// Runs a right-padded batch and returns the logits at one position per example only
    /// (usually [`Batch::last_positions`]). The final norm and the unembedding run on those
    /// rows alone, which saves most of the `d_vocab`-wide work of [`Transformer::forward_batch`].
    /// The `ln_final` hook sees `[batch, 1, d_model]`.
    ///
    /// # Shapes
    /// - `positions`: one per example; returns logits `[batch, d_vocab]`
    pub fn forward_batch_at(
        &self,
        batch: &Batch,
        positions: &[usize],
        hooks: &mut Hooks,
    ) -> Result<Tensor<2>> {
        let [size, seq] = batch.tokens.dims();
        self.check_tokens(&batch.tokens, 0)?;
        check_positions(positions, size, seq)?;
        let x = self.embed_tokens(batch.tokens.clone(), 0, hooks)?;
        let x = self.blocks_from(0, x, 0, Some(&batch.lengths), hooks, None)?;
        self.unembed_at(x, positions, hooks)
    }

    /// Runs blocks `layer..` of a right-padded batch from a given residual stream (what
    /// `blocks.{layer}.hook_resid_pre` holds), and returns the logits at one position per
    /// example. Everything before `layer` is skipped, so attribution methods that perturb a
    /// late activation pay only for the layers it can affect; hooks of earlier layers never
    /// fire.
    ///
    /// # Shapes
    /// - `resid_pre`: `[batch, pos, d_model]`; `positions`: one per example; returns
    ///   `[batch, d_vocab]`
    pub fn forward_batch_from(
        &self,
        batch: &Batch,
        layer: usize,
        resid_pre: Tensor<3>,
        positions: &[usize],
        hooks: &mut Hooks,
    ) -> Result<Tensor<2>> {
        let [size, seq] = batch.tokens.dims();
        if layer >= self.config.n_layers {
            return Err(ModelError::InvalidInput(format!(
                "start layer {layer} is out of range: the model has {} layers",
                self.config.n_layers
            )));
        }
        if resid_pre.dims() != [size, seq, self.config.d_model] {
            return Err(ModelError::InvalidInput(format!(
                "residual stream has shape {:?}, expected {:?}",
                resid_pre.dims(),
                [size, seq, self.config.d_model]
            )));
        }
        check_positions(positions, size, seq)?;
        let x = self.blocks_from(layer, resid_pre, 0, Some(&batch.lengths), hooks, None)?;
        self.unembed_at(x, positions, hooks)
    }

    /// The forward of tokens that the caller has checked ([`Transformer::check_tokens`]).
    fn run(
        &self,
        tokens: Tensor<2, Int>,
        lengths: Option<&[usize]>,
        hooks: &mut Hooks,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>> {
        let [batch, seq] = tokens.dims();
        let start = cache.as_ref().map_or(0, |c| c.len);
        if let Some(c) = cache.as_deref_mut()
            && c.layers.is_empty()
        {
            c.layers = vec![None; self.config.n_layers];
        }
        let d = self.config.d_model;
        let x = self.embed_tokens(tokens, start, hooks)?;
        let x = self.blocks_from(0, x, start, lengths, hooks, cache.as_deref_mut())?;
        if let Some(c) = cache {
            c.len += seq;
        }
        let x = hooks.apply3(point::LN_FINAL, self.ln_final.forward(x))?;
        let logits = x
            .reshape([batch * seq, d])
            .matmul(self.unembed.clone().transpose());
        Ok(self
            .final_softcap(logits)
            .reshape([batch, seq, self.config.d_vocab]))
    }

    /// Token (and learned position) embeddings of positions `start..start + seq`.
    fn embed_tokens(
        &self,
        tokens: Tensor<2, Int>,
        start: usize,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>> {
        let [batch, seq] = tokens.dims();
        let d = self.config.d_model;
        let flat = tokens.reshape([batch * seq]);
        let embed = self.embed.clone().select(0, flat).reshape([batch, seq, d]);
        let embed = match self.config.embed_scale {
            Some(scale) => embed * scale,
            None => embed,
        };
        let mut x = hooks.apply3(point::EMBED, embed)?;
        if let Some(pos) = &self.pos_embed {
            let pos = pos.clone().slice(start..start + seq).unsqueeze_dim::<3>(0);
            let pos = hooks.apply3(point::POS_EMBED, pos.expand([batch, seq, d]))?;
            x = x + pos;
        }
        Ok(x)
    }

    /// Blocks `first..` on the residual stream `x`.
    fn blocks_from(
        &self,
        first: usize,
        mut x: Tensor<3>,
        start: usize,
        lengths: Option<&[usize]>,
        hooks: &mut Hooks,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>> {
        let [batch, seq, _] = x.dims();
        let full = attention_mask(batch, seq, start, lengths, None, &self.device);
        // Sliding-window layers share one mask per window size.
        let mut windowed: Vec<(usize, Option<Tensor<4, Bool>>)> = Vec::new();
        for (layer, block) in self.blocks.iter().enumerate().skip(first) {
            let mask = match self.config.window(layer) {
                None => full.clone(),
                Some(w) => match windowed.iter().find(|(size, _)| *size == w) {
                    Some((_, m)) => m.clone(),
                    None => {
                        let m = attention_mask(batch, seq, start, lengths, Some(w), &self.device);
                        windowed.push((w, m.clone()));
                        m
                    }
                },
            };
            let input = BlockInput {
                layer,
                block,
                x,
                start,
                mask,
            };
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[layer]);
            x = self.block(input, hooks, layer_cache)?;
        }
        Ok(x)
    }

    /// Final norm and unembedding of one position per example.
    fn unembed_at(
        &self,
        x: Tensor<3>,
        positions: &[usize],
        hooks: &mut Hooks,
    ) -> Result<Tensor<2>> {
        let [batch, seq, d] = x.dims();
        let rows: Vec<i64> = positions
            .iter()
            .enumerate()
            .map(|(b, &p)| (b * seq + p) as i64)
            .collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(rows, [batch]), &x.device());
        let x = x
            .reshape([batch * seq, d])
            .select(0, index)
            .reshape([batch, 1, d]);
        let x = hooks.apply3(point::LN_FINAL, self.ln_final.forward(x))?;
        Ok(self.final_softcap(
            x.reshape([batch, d])
                .matmul(self.unembed.clone().transpose()),
        ))
    }

    /// Gemma 2's `c · tanh(logits / c)` on the final logits, when the model caps them.
    fn final_softcap(&self, logits: Tensor<2>) -> Tensor<2> {
        match self.config.final_softcap {
            Some(c) => softcap(logits, c),
            None => logits,
        }
    }

    /// Checks the length of `tokens` (placed after `start` cached positions) and that every id
    /// is in the vocabulary. The ids are on the device, so this reads their minimum and maximum
    /// back in one transfer.
    fn check_tokens(&self, tokens: &Tensor<2, Int>, start: usize) -> Result<()> {
        let [_, seq] = tokens.dims();
        self.check_length(seq, start + seq)?;
        let range = Tensor::cat(vec![tokens.clone().min(), tokens.clone().max()], 0)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| ModelError::InvalidInput(format!("reading token ids: {e:?}")))?;
        self.check_id_range(range[0], range[1])
    }

    /// Checks ids that are still on the host; no device work.
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

    /// A forward of `seq` new tokens, `total_len` positions in all, fits the model.
    fn check_length(&self, seq: usize, total_len: usize) -> Result<()> {
        if seq == 0 {
            return Err(ModelError::InvalidInput("empty token sequence".into()));
        }
        if total_len > self.config.n_ctx {
            return Err(ModelError::InvalidInput(format!(
                "sequence of {total_len} tokens is longer than the model's context of {}",
                self.config.n_ctx
            )));
        }
        Ok(())
    }

    /// One block: attention, then the MLP (or both on the same residual, GPT-NeoX style).
    ///
    /// # Shapes
    /// - `input.x`: `[batch, pos, d_model]`; returns `resid_post` `[batch, pos, d_model]`
    fn block(
        &self,
        input: BlockInput<'_>,
        hooks: &mut Hooks,
        cache: Option<&mut LayerKv>,
    ) -> Result<Tensor<3>> {
        let (l, block) = (input.layer, input.block);
        let resid_pre = hooks.apply3(point::resid_pre(l), input.x)?;
        let attn_input = BlockInput {
            x: resid_pre.clone(),
            ..input
        };
        let attn_out = self.attention(attn_input, hooks, cache)?;
        let attn_out = hooks.apply3(point::attn_out(l), attn_out)?;
        // GPT-NeoX-style blocks feed the MLP the same residual as attention.
        let (mlp_source, resid_mid) = if self.config.parallel_attn_mlp {
            (resid_pre.clone(), resid_pre + attn_out)
        } else {
            let mid = hooks.apply3(point::resid_mid(l), resid_pre + attn_out)?;
            (mid.clone(), mid)
        };
        let mlp_in = hooks.apply3(point::mlp_in(l), mlp_source)?;
        let mlp_out = self.mlp(l, block, block.ln2.forward(mlp_in), hooks)?;
        let mlp_out = match &block.post_mlp {
            Some(norm) => norm.forward(mlp_out),
            None => mlp_out,
        };
        let mlp_out = hooks.apply3(point::mlp_out(l), mlp_out)?;
        hooks.apply3(point::resid_post(l), resid_mid + mlp_out)
    }

    fn mlp(&self, l: usize, block: &Block, x: Tensor<3>, hooks: &mut Hooks) -> Result<Tensor<3>> {
        let m = &block.mlp;
        let post = match &m.w_gate {
            Some(w_gate) => {
                let gate = hooks.apply3(point::mlp_pre(l), linear(x.clone(), w_gate, None))?;
                self.activation(gate) * linear(x, &m.w_in, m.b_in.as_ref())
            }
            None => {
                let pre = hooks.apply3(point::mlp_pre(l), linear(x, &m.w_in, m.b_in.as_ref()))?;
                self.activation(pre)
            }
        };
        let post = hooks.apply3(point::mlp_post(l), post)?;
        Ok(linear(post, &m.w_out, m.b_out.as_ref()))
    }

    fn activation(&self, x: Tensor<3>) -> Tensor<3> {
        match self.config.act_fn {
            ActivationFn::GeluTanh => gelu_approximate(x),
            ActivationFn::Gelu => gelu_erf(x),
            ActivationFn::Silu => silu(x),
            ActivationFn::Relu => relu(x),
        }
    }

    /// Multi-head (grouped-query) attention of one block, reading `input.x` as its residual.
    ///
    /// # Shapes
    /// - `input.x`: `[batch, pos, d_model]`; returns the attention output `[batch, pos, d_model]`
    fn attention(
        &self,
        input: BlockInput<'_>,
        hooks: &mut Hooks,
        cache: Option<&mut LayerKv>,
    ) -> Result<Tensor<3>> {
        let BlockInput {
            layer: l,
            block,
            x: resid,
            start,
            mask,
        } = input;
        let cfg = &self.config;
        let [batch, seq, d] = resid.dims();
        let (h, dh) = (cfg.n_heads, cfg.d_head);
        let a = &block.attn;
        let split = hooks.wants(&point::q_input(l))
            || hooks.wants(&point::k_input(l))
            || hooks.wants(&point::v_input(l));
        let (q, k, v) = if split {
            if cache.is_some() {
                return Err(ModelError::Hook {
                    point: point::q_input(l),
                    message: "split q/k/v inputs cannot be used with a KV cache".into(),
                });
            }
            let per_head = |x: Tensor<3>| x.unsqueeze_dim::<4>(2).expand([batch, seq, h, d]);
            let q_in = hooks.apply4(point::q_input(l), per_head(resid.clone()))?;
            let k_in = hooks.apply4(point::k_input(l), per_head(resid.clone()))?;
            let v_in = hooks.apply4(point::v_input(l), per_head(resid))?;
            let q = project_per_head(block.ln1.forward(q_in), &a.w_q, a.b_q.as_ref(), h, 1, dh);
            let rep = cfg.group_size();
            let k = project_per_head(block.ln1.forward(k_in), &a.w_k, a.b_k.as_ref(), h, rep, dh);
            let v = project_per_head(block.ln1.forward(v_in), &a.w_v, a.b_v.as_ref(), h, rep, dh);
            (q, k, v)
        } else {
            let normed = block.ln1.forward(resid);
            let kv = cfg.n_kv_heads;
            let q = linear(normed.clone(), &a.w_q, a.b_q.as_ref()).reshape([batch, seq, h, dh]);
            let k = linear(normed.clone(), &a.w_k, a.b_k.as_ref()).reshape([batch, seq, kv, dh]);
            let v = linear(normed, &a.w_v, a.b_v.as_ref()).reshape([batch, seq, kv, dh]);
            (q, k, v)
        };
        let head_norm = |norm: &Option<Norm>, x: Tensor<4>| match norm {
            Some(n) => n.forward(x),
            None => x,
        };
        let (q, k) = (head_norm(&a.q_norm, q), head_norm(&a.k_norm, k));
        let per_query = hooks.wants(&point::k_rep(l)) || hooks.wants(&point::v_rep(l));
        if per_query && cache.is_some() {
            return Err(ModelError::Hook {
                point: point::k_rep(l),
                message: "per-query-head keys and values cannot be used with a KV cache".into(),
            });
        }
        let q = self.rotate(hooks.apply4(point::q(l), q)?, start);
        let k = hooks.apply4(point::k(l), k)?;
        let k = if hooks.wants(&point::k_rep(l)) {
            hooks.apply4(point::k_rep(l), repeat_heads(k, h))?
        } else {
            k
        };
        let k = self.rotate(k, start);
        let v = hooks.apply4(point::v(l), v)?;
        let v = if hooks.wants(&point::v_rep(l)) {
            hooks.apply4(point::v_rep(l), repeat_heads(v, h))?
        } else {
            v
        };
        // [batch, heads, pos, d_head]
        let (q, mut k, mut v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2));
        if let Some(slot) = cache {
            if let Some((k_past, v_past)) = slot.take() {
                k = Tensor::cat(vec![k_past, k], 2);
                v = Tensor::cat(vec![v_past, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let (k, v) = (repeat_kv(k, h), repeat_kv(v, h));
        let scores = q.matmul(k.swap_dims(2, 3));
        let scores = match cfg.query_pre_attn_scalar {
            Some(_) => scores * cfg.attn_scale(),
            None => scores / (dh as f64).sqrt(),
        };
        let scores = match cfg.attn_softcap {
            Some(c) => softcap(scores, c),
            None => scores,
        };
        let scores = match mask {
            Some(mask) => scores.mask_fill(mask, f32::NEG_INFINITY),
            None => scores,
        };
        let scores = hooks.apply4(point::attn_scores(l), scores)?;
        // The softmax in f32 for half-precision scores, as transformers does.
        let dtype = scores.dtype();
        let pattern = softmax(to_f32(scores), 3).cast(dtype);
        let pattern = hooks.apply4(point::pattern(l), pattern)?;
        let z = hooks.apply4(point::z(l), pattern.matmul(v).swap_dims(1, 2))?;
        let bias = a.b_o.clone().map(|b| b.unsqueeze::<3>());
        if !hooks.wants(&point::result(l)) {
            let out = linear(z.reshape([batch, seq, h * dh]), &a.w_o, None);
            let out = match bias {
                Some(b) => out + b,
                None => out,
            };
            return Ok(match &block.post_attn {
                Some(norm) => norm.forward(out),
                None => out,
            });
        }
        // result[b, p, h, :] = z[b, p, h, :] @ W_O[h]
        let w_o = a.w_o.clone().reshape([h, dh, d]);
        let z_heads = z.permute([2, 0, 1, 3]).reshape([h, batch * seq, dh]);
        let result = z_heads
            .matmul(w_o)
            .reshape([h, batch, seq, d])
            .permute([1, 2, 0, 3]);
        // Under a post-attention RMSNorm each head's result is its share of the normalised
        // output: its own output times the factor of the whole, so the shares still add up to
        // what the block writes and the graph's edges stay additive.
        let (result, bias) = match &block.post_attn {
            Some(norm) => {
                let total = result.clone().sum_dim(2).reshape([batch, seq, d]);
                let total = match bias.clone() {
                    Some(b) => total + b,
                    None => total,
                };
                let factor = norm.rms_factor(total).ok_or_else(|| ModelError::Hook {
                    point: point::result(l),
                    message: "per-head results under a post-attention LayerNorm".into(),
                })?;
                let per_head = factor.clone().unsqueeze_dim::<4>(2);
                (result * per_head, bias.map(|b| b * factor))
            }
            None => (result, bias),
        };
        let result = hooks.apply4(point::result(l), result)?;
        let out = result.sum_dim(2).reshape([batch, seq, d]);
        Ok(match bias {
            Some(b) => out + b,
            None => out,
        })
    }

    /// Applies rotary embeddings (rotate-half layout) to `[batch, pos, heads, d_head]`.
    fn rotate(&self, x: Tensor<4>, start: usize) -> Tensor<4> {
        let (Some((cos, sin)), Positional::Rotary { rotary_dim, .. }) =
            (&self.rotary, self.config.positional)
        else {
            return x;
        };
        let [batch, seq, heads, dh] = x.dims();
        let cos = cos
            .clone()
            .slice(start..start + seq)
            .reshape([1, seq, 1, rotary_dim]);
        let sin = sin
            .clone()
            .slice(start..start + seq)
            .reshape([1, seq, 1, rotary_dim]);
        let (rot, pass) = if rotary_dim == dh {
            (x, None)
        } else {
            let rot = x.clone().slice([0..batch, 0..seq, 0..heads, 0..rotary_dim]);
            (
                rot,
                Some(x.slice([0..batch, 0..seq, 0..heads, rotary_dim..dh])),
            )
        };
        let half = rotary_dim / 2;
        let x1 = rot.clone().slice([0..batch, 0..seq, 0..heads, 0..half]);
        let x2 = rot
            .clone()
            .slice([0..batch, 0..seq, 0..heads, half..rotary_dim]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        let out = rot * cos + rotated * sin;
        match pass {
            Some(pass) => Tensor::cat(vec![out, pass], 3),
            None => out,
        }
    }
}

/// True where a query may NOT attend: future keys, and keys past an example's length.
///
/// Built on the device by comparing position ranges, so a forward sends at most the
/// lengths across and reads nothing back.
///
/// # Shapes
/// - returns `[batch, 1, seq, start + seq]`
pub(crate) fn attention_mask(
    batch: usize,
    seq: usize,
    start: usize,
    lengths: Option<&[usize]>,
    window: Option<usize>,
    device: &Device,
) -> Option<Tensor<4, Bool>> {
    let keys = start + seq;
    let window = window.filter(|&w| w < keys);
    if seq == 1 && lengths.is_none() && window.is_none() {
        return None;
    }
    let shape = [batch, 1, seq, keys];
    // Query q sits at absolute position start + q; key k is in its future when k > start + q.
    let query_pos = Tensor::<1, Int>::arange(start as i64..keys as i64, device)
        .reshape([1, 1, seq, 1])
        .expand(shape);
    let key_pos = Tensor::<1, Int>::arange(0..keys as i64, device)
        .reshape([1, 1, 1, keys])
        .expand(shape);
    let future = key_pos.clone().greater(query_pos.clone());
    let future = match window {
        // A query sees the `w` keys up to its own: key k is out when q − k ≥ w. The diagonal
        // stays visible so that no row is empty (a padded query's row is then finite).
        Some(w) => {
            let outside = query_pos
                .clone()
                .sub_scalar(w as i64)
                .greater_equal(key_pos.clone());
            let diagonal = key_pos.clone().equal(query_pos.clone());
            future.bool_or(outside.bool_and(diagonal.bool_not()))
        }
        None => future,
    };
    let Some(lengths) = lengths else {
        return Some(future);
    };
    let lengths: Vec<i64> = lengths.iter().take(batch).map(|&l| l as i64).collect();
    let lengths = Tensor::<1, Int>::from_data(TensorData::new(lengths, [batch]), device)
        .reshape([batch, 1, 1, 1])
        .expand(shape);
    // Padded queries still see one key so that no softmax row is empty: key 0, or under a
    // sliding window (which may hide key 0) their own position.
    let seen = match window {
        None => key_pos.clone().greater_elem(0),
        Some(_) => key_pos.clone().not_equal(query_pos),
    };
    let padding = key_pos.greater_equal(lengths).bool_and(seen);
    Some(future.bool_or(padding))
}

/// One position per example, each inside the sequence.
fn check_positions(positions: &[usize], batch: usize, seq: usize) -> Result<()> {
    if positions.len() != batch {
        return Err(ModelError::InvalidInput(format!(
            "{} logit positions for a batch of {batch}",
            positions.len()
        )));
    }
    if let Some(p) = positions.iter().find(|&&p| p >= seq) {
        return Err(ModelError::InvalidInput(format!(
            "logit position {p} is past the sequence of {seq} tokens"
        )));
    }
    Ok(())
}

/// `x @ w + b` over the last dimension of a rank-3 tensor.
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

/// Projects per-head inputs with each head's own slice of `w`.
///
/// `w` is `[d_model, groups * d_head]`; query head `i` uses group `i / rep` (grouped-query
/// attention, the same order as Hugging Face's `repeat_kv`).
///
/// # Shapes
/// - `x`: `[batch, pos, heads, d_model]`; returns `[batch, pos, heads, d_head]`
pub(crate) fn project_per_head(
    x: Tensor<4>,
    w: &Tensor<2>,
    b: Option<&Tensor<1>>,
    heads: usize,
    rep: usize,
    dh: usize,
) -> Tensor<4> {
    let [batch, seq, _, d] = x.dims();
    let groups = heads / rep;
    let w = w.clone().reshape([d, groups, dh]).swap_dims(0, 1); // [groups, d, dh]
    let w = w
        .unsqueeze_dim::<4>(1)
        .expand([groups, rep, d, dh])
        .reshape([heads, d, dh]);
    let x = x.permute([2, 0, 1, 3]).reshape([heads, batch * seq, d]);
    let y = x
        .matmul(w)
        .reshape([heads, batch, seq, dh])
        .permute([1, 2, 0, 3]);
    match b {
        Some(b) => {
            let b = b.clone().reshape([groups, 1, dh]).expand([groups, rep, dh]);
            y + b.reshape([1, 1, heads, dh])
        }
        None => y,
    }
}

/// Per head, a gradient at the head's projection output taken back to the projection's input:
/// `g[b, p, i, :] @ W[:, group(i)]ᵀ`, query head `i` using group `i / (heads / groups)` of `w`
/// (`[d_model, groups · d_head]`, grouped-query order as in [`project_per_head`]). In f32.
///
/// # Shapes
/// - `g`: `[batch, pos, heads, d_head]`; returns `[batch, pos, heads, d_model]`
fn heads_back(g: Tensor<4>, w: &Tensor<2>, d: usize) -> Tensor<4> {
    let [b, p, heads, dh] = g.dims();
    let groups = w.dims()[1] / dh;
    let rep = heads / groups;
    let wt = to_f32(w.clone())
        .reshape([d, groups, dh])
        .permute([1, 2, 0]);
    to_f32(g)
        .reshape([b, p, groups, rep, dh])
        .permute([2, 0, 1, 3, 4])
        .reshape([groups, b * p * rep, dh])
        .matmul(wt)
        .reshape([groups, b, p, rep, d])
        .permute([1, 2, 0, 3, 4])
        .reshape([b, p, heads, d])
}

/// The vector-Jacobian product of `norm` at `x`: `J(x)ᵀ u` over the last dimension, where
/// `x` broadcasts against `u` along dimension 2 (one residual for every head). With
/// `u' = w ⊙ u` and `x̂` the normalised `x`: RMSNorm gives `(u' − x̂ · mean(u' ⊙ x̂)) / r` with
/// `r = √(mean(x²) + eps)`, LayerNorm `(u' − mean(u') − x̂ · mean(u' ⊙ x̂)) / σ` with
/// `σ = √(var(x) + eps)`. In f32.
///
/// # Shapes
/// - `x`: `[batch, pos, 1 or heads, width]`; `u`: `[batch, pos, heads, width]`
fn norm_vjp(norm: &Norm, x: Tensor<4>, u: Tensor<4>) -> Tensor<4> {
    let x = to_f32(x);
    let u = to_f32(u) * to_f32(norm.weight.clone()).unsqueeze::<4>();
    match norm.kind {
        NormKind::RmsNorm => {
            let r = (x.clone().square().mean_dim(3) + norm.eps).sqrt();
            let xh = x / r.clone();
            (u.clone() - xh.clone() * (u * xh).mean_dim(3)) / r
        }
        NormKind::LayerNorm => {
            let c = x.clone() - x.mean_dim(3);
            let s = (c.clone().square().mean_dim(3) + norm.eps).sqrt();
            let xh = c / s.clone();
            (u.clone() - u.clone().mean_dim(3) - xh.clone() * (u * xh).mean_dim(3)) / s
        }
    }
}

/// Repeats key/value heads over their query groups in the `[batch, pos, kv, d_head]` layout:
/// `[b, p, kv, dh] -> [b, p, heads, dh]` (a no-op when every query head has its own).
fn repeat_heads(x: Tensor<4>, heads: usize) -> Tensor<4> {
    let [batch, seq, kv, dh] = x.dims();
    if kv == heads {
        return x;
    }
    x.unsqueeze_dim::<5>(3)
        .expand([batch, seq, kv, heads / kv, dh])
        .reshape([batch, seq, heads, dh])
}

/// Repeats key/value heads so each query head has its own: `[b, kv, t, dh] -> [b, heads, t, dh]`.
fn repeat_kv(x: Tensor<4>, heads: usize) -> Tensor<4> {
    let [batch, kv, t, dh] = x.dims();
    if kv == heads {
        return x;
    }
    let rep = heads / kv;
    x.unsqueeze_dim::<5>(2)
        .expand([batch, kv, rep, t, dh])
        .reshape([batch, heads, t, dh])
}

impl Transformer {
    /// What gradient probes at the split per-head inputs `hook_{q,k,v}_input` of layer `l` would
    /// receive, from the gradients of the same pass at `hook_q`, `hook_k_rep` and `hook_v_rep`
    /// and the residual stream `resid_pre` that entered the block: each head's gradient taken
    /// back through Qwen 3's q/k norm (when the model has one), its own slice of `W_Q`, `W_K` or
    /// `W_V`, and the block's input norm, all at `resid_pre`. Every query head reads the same
    /// residual, so this equals the split forward's probes (`tests/hooks.rs` checks it on every
    /// architecture) while the forward stays the plain one: no `[batch, pos, head, d_model]`
    /// copies of the residual, its norm or the per-head weights are made or kept for the
    /// backward, and the caller can turn one layer's gradients into scores before the next.
    ///
    /// # Shapes
    /// - `resid_pre`: `[batch, pos, d_model]`; `dq`, `dk`, `dv`: `[batch, pos, head, d_head]`
    /// - returns the q, k and v input gradients, each `[batch, pos, head, d_model]`, in f32
    pub fn qkv_input_grads(
        &self,
        l: usize,
        resid_pre: Tensor<3>,
        dq: Tensor<4>,
        dk: Tensor<4>,
        dv: Tensor<4>,
    ) -> Result<[Tensor<4>; 3]> {
        let cfg = &self.config;
        let block = self.blocks.get(l).ok_or_else(|| {
            ModelError::InvalidInput(format!(
                "layer {l} is out of range: the model has {} layers",
                cfg.n_layers
            ))
        })?;
        let (h, dh) = (cfg.n_heads, cfg.d_head);
        let [b, p, d] = resid_pre.dims();
        for (name, g) in [("q", &dq), ("k", &dk), ("v", &dv)] {
            if g.dims() != [b, p, h, dh] {
                return Err(ModelError::InvalidInput(format!(
                    "{name} gradient has shape {:?}, expected {:?}",
                    g.dims(),
                    [b, p, h, dh]
                )));
            }
        }
        let a = &block.attn;
        let x = to_f32(resid_pre.clone()).unsqueeze_dim::<4>(2);
        // Through the per-head q/k norms, at the pre-norm projections of this residual.
        let (dq, dk) = if a.q_norm.is_some() || a.k_norm.is_some() {
            let normed = block.ln1.forward(resid_pre);
            let project = |w: &Tensor<2>, bias: &Option<Tensor<1>>| {
                let y = linear(normed.clone(), w, bias.as_ref());
                let groups = y.dims()[2] / dh;
                repeat_heads(to_f32(y).reshape([b, p, groups, dh]), h)
            };
            let back = |norm: &Option<Norm>, y: Tensor<4>, g: Tensor<4>| match norm {
                Some(norm) => norm_vjp(norm, y, g),
                None => g,
            };
            (
                back(&a.q_norm, project(&a.w_q, &a.b_q), dq),
                back(&a.k_norm, project(&a.w_k, &a.b_k), dk),
            )
        } else {
            (dq, dk)
        };
        let through =
            |g: Tensor<4>, w: &Tensor<2>| norm_vjp(&block.ln1, x.clone(), heads_back(g, w, d));
        Ok([
            through(dq, &a.w_q),
            through(dk, &a.w_k),
            through(dv, &a.w_v),
        ])
    }

    /// A decoder with rotary positions (no position table) from its parts, the rotary tables
    /// computed for `cfg`'s context: what every rotary architecture's builder ends with.
    pub(crate) fn rotary_decoder(
        cfg: TransformerConfig,
        embed: Tensor<2>,
        blocks: Vec<Block>,
        ln_final: Norm,
        unembed: Tensor<2>,
        device: &Device,
    ) -> Self {
        let rotary = match cfg.positional {
            Positional::Rotary {
                theta,
                rotary_dim,
                scaling,
            } => Some(rotary_tables(cfg.n_ctx, rotary_dim, theta, scaling, device)),
            Positional::Learned => None,
        };
        Transformer {
            embed,
            pos_embed: None,
            blocks,
            ln_final,
            unembed,
            rotary,
            device: device.clone(),
            config: cfg,
        }
    }
}

/// Gemma 2's soft cap `c · tanh(x / c)`: close to `x` for small values, never past `±c`.
fn softcap<const D: usize>(x: Tensor<D>, c: f64) -> Tensor<D> {
    (x / c).tanh() * c
}

/// Exact GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))`, written out with `erf` rather than taken
/// from Burn's `gelu`: on some backends (ndarray) that one's backward is the tanh
/// approximation's derivative, off by up to 8.7e-4 (`tests/hooks.rs` checks the gradient
/// against finite differences of this forward on every backend it runs on).
pub(crate) fn gelu_erf(x: Tensor<3>) -> Tensor<3> {
    let cdf = (x.clone() * std::f64::consts::FRAC_1_SQRT_2)
        .erf()
        .add_scalar(1.0)
        * 0.5;
    x * cdf
}

/// cos and sin tables for rotary embeddings, as Hugging Face computes them (rotate-half).
///
/// # Shapes
/// - returns two `[n_ctx, rotary_dim]` tensors
pub(crate) fn rotary_tables(
    n_ctx: usize,
    rotary_dim: usize,
    theta: f64,
    scaling: RopeScaling,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let half = rotary_dim / 2;
    // inv_freq_i = theta^(-2i / rotary_dim), computed in f32 as transformers does, then
    // rescaled for long contexts.
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / rotary_dim as f32))
        .collect();
    let inv_freq = scaling.apply(&inv_freq);
    let mut cos = Vec::with_capacity(n_ctx * rotary_dim);
    let mut sin = Vec::with_capacity(n_ctx * rotary_dim);
    for pos in 0..n_ctx {
        // The table is [freqs, freqs]: both halves of a head use the same frequencies.
        for _half in 0..2 {
            for f in &inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    let shape = [n_ctx, rotary_dim];
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask as the forward built it on the host before: the reference for the device one.
    fn host_mask(batch: usize, seq: usize, start: usize, lengths: Option<&[usize]>) -> Vec<bool> {
        let keys = start + seq;
        let mut mask = Vec::with_capacity(batch * seq * keys);
        for b in 0..batch {
            let len = lengths.map_or(keys, |l| l[b]);
            for q in 0..seq {
                for k in 0..keys {
                    mask.push(k > start + q || (k >= len && k > 0));
                }
            }
        }
        mask
    }

    #[test]
    fn device_attention_mask_equals_the_host_reference() {
        let device = Device::default();
        let cases: [(usize, usize, usize, Option<&[usize]>); 6] = [
            (1, 4, 0, None),
            (2, 5, 0, Some(&[5, 3])),
            (3, 6, 0, Some(&[1, 6, 2])),
            (1, 3, 6, None),
            (2, 3, 2, Some(&[5, 4])),
            (2, 1, 0, Some(&[1, 1])),
        ];
        for (batch, seq, start, lengths) in cases {
            let mask = attention_mask(batch, seq, start, lengths, None, &device).expect("a mask");
            assert_eq!(mask.dims(), [batch, 1, seq, start + seq]);
            let got = mask.into_data().try_to_vec::<bool>().expect("bool data");
            let case = (batch, seq, start, lengths);
            assert_eq!(got, host_mask(batch, seq, start, lengths), "{case:?}");
        }
        assert!(attention_mask(2, 1, 7, None, None, &device).is_none());
    }
}
