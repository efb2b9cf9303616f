//! A trainable GPT-2 (Radford et al. 2019) built from Burn modules, laid out like Hugging Face's
//! `GPT2LMHeadModel` so that its weights save under the checkpoint's own names: pre-LayerNorm
//! blocks (eps 1e-5), a fused `c_attn` q/k/v projection, GELU with the tanh approximation
//! (`gelu_new`), learned positions and an unembedding tied to the token embedding.
//!
//! Burn's `Linear` stores weights `[in, out]` (`O = IW + b`), the layout of GPT-2's `Conv1D`, so
//! tensors save without transposing. Initialization follows GPT-2: N(0, 0.02) for matrices and
//! embeddings, residual output projections scaled by 1/sqrt(2 n_layer), zero biases, drawn from
//! our own seeded generator so that a seed fixes the weights on every backend.

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::{gelu_approximate, softmax};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Shape of the organism (TransformerLens vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Vocabulary size.
    pub d_vocab: usize,
    /// Context length (learned positions).
    pub n_ctx: usize,
    /// Residual width.
    pub d_model: usize,
    /// Blocks.
    pub n_layers: usize,
    /// Attention heads per block.
    pub n_heads: usize,
}

impl Shape {
    /// MLP width, GPT-2's `4 * d_model`.
    pub fn d_mlp(&self) -> usize {
        4 * self.d_model
    }
}

/// Standard deviation of GPT-2's initial weights (`initializer_range`).
const INIT_STD: f32 = 0.02;
/// LayerNorm epsilon of GPT-2 (`layer_norm_epsilon`).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// One pre-LayerNorm block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct Block {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Fused q/k/v projection `[d_model, 3 d_model]`.
    pub c_attn: Linear,
    /// Attention output projection `[d_model, d_model]`.
    pub attn_proj: Linear,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm,
    /// MLP input `[d_model, d_mlp]`.
    pub c_fc: Linear,
    /// MLP output `[d_mlp, d_model]`.
    pub mlp_proj: Linear,
}

/// The GPT-2 language model.
#[derive(Module, Debug)]
pub struct Gpt2 {
    /// Token embedding `[d_vocab, d_model]`, also the unembedding (tied).
    pub wte: Embedding,
    /// Position embedding `[n_ctx, d_model]`.
    pub wpe: Embedding,
    /// The blocks.
    pub blocks: Vec<Block>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    /// Heads per block.
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
        let n = shape[0] * shape[1];
        let values: Vec<f32> = (0..n)
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

    fn linear(&mut self, d_in: usize, d_out: usize, std: f32) -> Linear {
        Linear {
            weight: self.normal([d_in, d_out], std),
            bias: Some(Param::from_tensor(Tensor::zeros([d_out], &self.device))),
        }
    }

    fn layer_norm(&self, d_model: usize) -> LayerNorm {
        LayerNormConfig::new(d_model)
            .with_epsilon(LAYER_NORM_EPS)
            .init(&self.device)
    }
}

impl Gpt2 {
    /// A freshly initialized model; the same `seed` gives the same weights.
    pub fn new(shape: Shape, seed: u64, device: &Device) -> Self {
        let mut init = Init {
            rng: StdRng::seed_from_u64(seed),
            device: device.clone(),
        };
        let d = shape.d_model;
        let residual_std = INIT_STD / (2.0 * shape.n_layers as f32).sqrt();
        let wte = Embedding {
            weight: init.normal([shape.d_vocab, d], INIT_STD),
        };
        let wpe = Embedding {
            weight: init.normal([shape.n_ctx, d], INIT_STD / 2.0),
        };
        let blocks = (0..shape.n_layers)
            .map(|_| Block {
                ln_1: init.layer_norm(d),
                c_attn: init.linear(d, 3 * d, INIT_STD),
                attn_proj: init.linear(d, d, residual_std),
                ln_2: init.layer_norm(d),
                c_fc: init.linear(d, shape.d_mlp(), INIT_STD),
                mlp_proj: init.linear(shape.d_mlp(), d, residual_std),
            })
            .collect();
        Self {
            wte,
            wpe,
            blocks,
            ln_f: init.layer_norm(d),
            n_heads: shape.n_heads,
        }
    }

    /// Next-token logits.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, pos]`
    /// - returns `[batch, pos, d_vocab]`
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [batch, pos] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..pos as i64, &device).unsqueeze::<2>();
        let mut x = self.wte.forward(tokens) + self.wpe.forward(positions);
        // True where the key comes after the query: those scores are masked.
        let future = Tensor::<2, Bool>::tril_mask([pos, pos], 0, &device).unsqueeze::<4>();
        for block in &self.blocks {
            x = block.forward(x, future.clone(), self.n_heads);
        }
        let x = self.ln_f.forward(x);
        let [_, _, d_model] = x.dims();
        let unembed = self.wte.weight.val().transpose();
        let d_vocab = unembed.dims()[1];
        x.reshape([batch * pos, d_model])
            .matmul(unembed)
            .reshape([batch, pos, d_vocab])
    }
}

impl Block {
    /// # Shapes
    /// - `x`: `[batch, pos, d_model]`; `future`: `[1, 1, pos, pos]`
    fn forward(&self, x: Tensor<3>, future: Tensor<4, Bool>, n_heads: usize) -> Tensor<3> {
        let [batch, pos, d_model] = x.dims();
        let d_head = d_model / n_heads;
        let qkv = self.c_attn.forward(self.ln_1.forward(x.clone()));
        let heads = |t: Tensor<3>| t.reshape([batch, pos, n_heads, d_head]).swap_dims(1, 2);
        let mut parts = qkv.chunk(3, 2).into_iter().map(heads);
        let (q, k, v) = (
            parts.next().expect("q"),
            parts.next().expect("k"),
            parts.next().expect("v"),
        );
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .div_scalar((d_head as f32).sqrt());
        let future = future.expand([batch, n_heads, pos, pos]);
        let pattern = softmax(scores.mask_fill(future, f32::NEG_INFINITY), 3);
        let z = pattern
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, pos, d_model]);
        let x = x + self.attn_proj.forward(z);
        let hidden = gelu_approximate(self.c_fc.forward(self.ln_2.forward(x.clone())));
        x.clone() + self.mlp_proj.forward(hidden)
    }
}
