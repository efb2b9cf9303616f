//! A trainable MarianMT (Junczys-Dowmunt et al. 2018, "Marian: Fast Neural Machine Translation
//! in C++"; the Transformer of Vaswani et al. 2017) built from Burn modules, laid out like
//! Hugging Face's `MarianMTModel` (`transformers/models/marian/modeling_marian.py`) so that its
//! weights save under the checkpoint's own names:
//!
//! - one shared token embedding for encoder, decoder and head (tied), scaled by `√d_model`
//!   (`scale_embedding`), plus a `final_logits_bias` on the logits;
//! - fixed sinusoidal positions from 0, laid out as `MarianSinusoidalPositionalEmbedding`:
//!   column `j < d/2` is `sin(p / 10000^(2j/d))`, column `d/2 + j` is `cos(p / 10000^(2j/d))`;
//! - post-norm blocks (LayerNorm after each residual addition, eps 1e-5), no final norms;
//! - attention with q/k/v/out biases, queries scaled by `d_head^-1/2`; a SiLU (`swish`) MLP.
//!
//! Burn's `Linear` stores weights `[in, out]`; `save.rs` transposes them to PyTorch's
//! `[out, in]`. Initialization: Glorot normals, N(0, 2/(in + out)), for matrices (as
//! PyTorch's `nn.Transformer`; Marian's `init_std` of 0.02 left the cross-attention uniform
//! for hundreds of steps), N(0, 1/d_model) for the embedding (so that scaled embeddings have
//! unit variance), zero biases, from our own seeded generator.

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Shape of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Vocabulary size (shared by source and target).
    pub d_vocab: usize,
    /// Longest sequence on either side (`max_position_embeddings`).
    pub n_ctx: usize,
    /// Residual width.
    pub d_model: usize,
    /// Encoder blocks.
    pub encoder_layers: usize,
    /// Decoder blocks.
    pub decoder_layers: usize,
    /// Heads of every attention.
    pub n_heads: usize,
    /// MLP width.
    pub d_mlp: usize,
}

/// LayerNorm epsilon of `nn.LayerNorm`, which Marian uses.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Multi-head attention with q/k/v/out projections (each with a bias).
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
}

/// An encoder block: `x = ln(x + attn(x))`, then `x = ln(x + fc2(silu(fc1(x))))`.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// Bidirectional self-attention.
    pub self_attn: Attention,
    /// Norm after the attention's residual addition.
    pub self_attn_layer_norm: LayerNorm,
    /// MLP input.
    pub fc1: Linear,
    /// MLP output.
    pub fc2: Linear,
    /// Norm after the MLP's residual addition.
    pub final_layer_norm: LayerNorm,
}

/// A decoder block: causal self-attention, cross-attention over the encoder output, MLP, each
/// followed by its residual addition and norm.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Causal self-attention.
    pub self_attn: Attention,
    /// Norm after the self-attention.
    pub self_attn_layer_norm: LayerNorm,
    /// Cross-attention (queries from the decoder, keys and values from the encoder).
    pub encoder_attn: Attention,
    /// Norm after the cross-attention.
    pub encoder_attn_layer_norm: LayerNorm,
    /// MLP input.
    pub fc1: Linear,
    /// MLP output.
    pub fc2: Linear,
    /// Norm after the MLP.
    pub final_layer_norm: LayerNorm,
}

/// The MarianMT model.
#[derive(Module, Debug)]
pub struct Marian {
    /// Shared token embedding `[d_vocab, d_model]`, also the head.
    pub shared: Embedding,
    /// `[d_vocab]`, added to the logits.
    pub final_logits_bias: Param<Tensor<1>>,
    /// Encoder blocks.
    pub encoder: Vec<EncoderLayer>,
    /// Decoder blocks.
    pub decoder: Vec<DecoderLayer>,
    /// Heads per attention.
    #[module(skip)]
    pub n_heads: usize,
}

/// Seeded draws for initialization (Box-Muller normals from a `StdRng`).
struct Init {
    rng: StdRng,
    device: Device,
}

impl Init {
    fn normal(&mut self, shape: [usize; 2], std: f32) -> Param<Tensor<2>> {
        let values: Vec<f32> = (0..shape[0] * shape[1])
            .map(|_| {
                let (u1, u2): (f32, f32) = (self.rng.random(), self.rng.random());
                let radius = (-2.0 * (1.0 - u1).ln()).sqrt();
                std * radius * (std::f32::consts::TAU * u2).cos()
            })
            .collect();
        Param::from_tensor(Tensor::from_data(
            TensorData::new(values, shape),
            &self.device,
        ))
    }

    fn linear(&mut self, d_in: usize, d_out: usize) -> Linear {
        let std = (2.0 / (d_in + d_out) as f32).sqrt();
        Linear {
            weight: self.normal([d_in, d_out], std),
            bias: Some(Param::from_tensor(Tensor::zeros([d_out], &self.device))),
        }
    }

    fn attention(&mut self, d: usize) -> Attention {
        Attention {
            q_proj: self.linear(d, d),
            k_proj: self.linear(d, d),
            v_proj: self.linear(d, d),
            out_proj: self.linear(d, d),
        }
    }

    fn norm(&self, d: usize) -> LayerNorm {
        LayerNormConfig::new(d)
            .with_epsilon(LAYER_NORM_EPS)
            .init(&self.device)
    }
}

/// Marian's sinusoid table `[n, d]` (see the module docs), computed in f64 as transformers
/// does with numpy.
pub fn sinusoids(n: usize, d: usize) -> Vec<f32> {
    let sines = d.div_ceil(2);
    let mut table = Vec::with_capacity(n * d);
    for p in 0..n {
        for j in 0..d {
            let (feature, sine) = if j < sines {
                (2 * j, true)
            } else {
                (2 * (j - sines) + 1, false)
            };
            let angle = p as f64 / 10000f64.powf((2 * (feature / 2)) as f64 / d as f64);
            table.push(if sine { angle.sin() } else { angle.cos() } as f32);
        }
    }
    table
}

impl Marian {
    /// A freshly initialized model; the same `seed` gives the same weights.
    pub fn new(shape: Shape, seed: u64, device: &Device) -> Self {
        let mut init = Init {
            rng: StdRng::seed_from_u64(seed),
            device: device.clone(),
        };
        let d = shape.d_model;
        let shared = Embedding {
            weight: init.normal([shape.d_vocab, d], 1.0 / (d as f32).sqrt()),
        };
        let encoder = (0..shape.encoder_layers)
            .map(|_| EncoderLayer {
                self_attn: init.attention(d),
                self_attn_layer_norm: init.norm(d),
                fc1: init.linear(d, shape.d_mlp),
                fc2: init.linear(shape.d_mlp, d),
                final_layer_norm: init.norm(d),
            })
            .collect();
        let decoder = (0..shape.decoder_layers)
            .map(|_| DecoderLayer {
                self_attn: init.attention(d),
                self_attn_layer_norm: init.norm(d),
                encoder_attn: init.attention(d),
                encoder_attn_layer_norm: init.norm(d),
                fc1: init.linear(d, shape.d_mlp),
                fc2: init.linear(shape.d_mlp, d),
                final_layer_norm: init.norm(d),
            })
            .collect();
        Self {
            shared,
            final_logits_bias: Param::from_tensor(Tensor::zeros([shape.d_vocab], device)),
            encoder,
            decoder,
            n_heads: shape.n_heads,
        }
    }

    /// Scaled token embeddings plus positions.
    fn embed(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [_, pos] = tokens.dims();
        let device = tokens.device();
        let d = self.shared.weight.dims()[1];
        let table = Tensor::<2>::from_data(TensorData::new(sinusoids(pos, d), [pos, d]), &device);
        self.shared.forward(tokens).mul_scalar((d as f32).sqrt()) + table.unsqueeze::<3>()
    }

    /// The encoder output.
    ///
    /// # Shapes
    /// - `source`: `[batch, src]` right-padded; `source_pad`: `[batch, 1, 1, src]`, true at
    ///   padding; returns `[batch, src, d_model]`
    pub fn encode(&self, source: Tensor<2, Int>, source_pad: Tensor<4, Bool>) -> Tensor<3> {
        let mut x = self.embed(source);
        for layer in &self.encoder {
            let attn =
                layer
                    .self_attn
                    .forward(x.clone(), x.clone(), source_pad.clone(), self.n_heads);
            x = layer.self_attn_layer_norm.forward(x + attn);
            let mlp = layer.fc2.forward(silu(layer.fc1.forward(x.clone())));
            x = layer.final_layer_norm.forward(x + mlp);
        }
        x
    }

    /// Logits of the decoder inputs `target` (starting with the decoder start token) over the
    /// encoder output `memory`.
    ///
    /// # Shapes
    /// - `target`: `[batch, tgt]`; `memory`: `[batch, src, d_model]`; `source_pad`:
    ///   `[batch, 1, 1, src]`; returns `[batch, tgt, d_vocab]`
    pub fn decode(
        &self,
        target: Tensor<2, Int>,
        memory: Tensor<3>,
        source_pad: Tensor<4, Bool>,
    ) -> Tensor<3> {
        let [batch, tgt] = target.dims();
        let device = target.device();
        // True where the key comes after the query. Padded target positions come after the
        // real ones, so the causal mask also hides them from every real query.
        let future = Tensor::<2, Bool>::tril_mask([tgt, tgt], 0, &device)
            .unsqueeze::<4>()
            .expand([batch, 1, tgt, tgt]);
        let mut x = self.embed(target);
        for layer in &self.decoder {
            let attn = layer
                .self_attn
                .forward(x.clone(), x.clone(), future.clone(), self.n_heads);
            x = layer.self_attn_layer_norm.forward(x + attn);
            let cross = layer.encoder_attn.forward(
                x.clone(),
                memory.clone(),
                source_pad.clone(),
                self.n_heads,
            );
            x = layer.encoder_attn_layer_norm.forward(x + cross);
            let mlp = layer.fc2.forward(silu(layer.fc1.forward(x.clone())));
            x = layer.final_layer_norm.forward(x + mlp);
        }
        let [_, _, d] = x.dims();
        let head = self.shared.weight.val().transpose();
        let vocab = head.dims()[1];
        x.reshape([batch * tgt, d])
            .matmul(head)
            .reshape([batch, tgt, vocab])
            + self.final_logits_bias.val().unsqueeze::<3>()
    }

    /// [`Marian::encode`] then [`Marian::decode`]; `source_lengths` are the real lengths of
    /// the right-padded sources.
    pub fn forward(
        &self,
        source: Tensor<2, Int>,
        source_lengths: &[usize],
        target: Tensor<2, Int>,
    ) -> Tensor<3> {
        let pad = padding_mask(source_lengths, source.dims()[1], &source.device());
        let memory = self.encode(source, pad.clone());
        self.decode(target, memory, pad)
    }
}

/// `[batch, 1, 1, len]`, true at the padded key positions.
pub fn padding_mask(lengths: &[usize], len: usize, device: &Device) -> Tensor<4, Bool> {
    let values: Vec<bool> = lengths
        .iter()
        .flat_map(|&n| (0..len).map(move |p| p >= n))
        .collect();
    Tensor::<2, Bool>::from_data(TensorData::new(values, [lengths.len(), len]), device).reshape([
        lengths.len(),
        1,
        1,
        len,
    ])
}

impl Attention {
    /// Attention of `x`'s queries over `kv`'s keys and values; `masked` is true where a score
    /// is hidden (broadcast over heads).
    ///
    /// # Shapes
    /// - `x`: `[batch, q, d]`; `kv`: `[batch, k, d]`; `masked`: `[batch, 1, 1 or q, k]`;
    ///   returns `[batch, q, d]`
    fn forward(
        &self,
        x: Tensor<3>,
        kv: Tensor<3>,
        masked: Tensor<4, Bool>,
        n_heads: usize,
    ) -> Tensor<3> {
        let [batch, q_len, d] = x.dims();
        let k_len = kv.dims()[1];
        let d_head = d / n_heads;
        let heads =
            |t: Tensor<3>, len: usize| t.reshape([batch, len, n_heads, d_head]).swap_dims(1, 2);
        let q = heads(
            self.q_proj
                .forward(x)
                .mul_scalar(1.0 / (d_head as f32).sqrt()),
            q_len,
        );
        let k = heads(self.k_proj.forward(kv.clone()), k_len);
        let v = heads(self.v_proj.forward(kv), k_len);
        let scores = q.matmul(k.swap_dims(2, 3));
        let masked = masked.expand([batch, n_heads, q_len, k_len]);
        let pattern = softmax(scores.mask_fill(masked, f32::NEG_INFINITY), 3);
        let z = pattern.matmul(v).swap_dims(1, 2).reshape([batch, q_len, d]);
        self.out_proj.forward(z)
    }
}
