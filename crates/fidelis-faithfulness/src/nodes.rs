//! Where the graph's nodes live in the hooked forward.
//!
//! Forward nodes (residual writers) and their hook points, in graph row order:
//! `input` = `blocks.0.hook_resid_pre` (embeddings plus positions), then per layer the heads
//! `a{l}.h{h}` = `blocks.{l}.attn.hook_result[:, :, h]` and the MLP `m{l}` =
//! `blocks.{l}.hook_mlp_out`.
//!
//! Backward nodes (reader inputs) in graph column order: per layer the q inputs of all heads
//! (`blocks.{l}.hook_q_input`), the k inputs, the v inputs, the MLP input
//! (`blocks.{l}.hook_mlp_in`); last the logits, whose input is the final residual
//! (`blocks.{L-1}.hook_resid_post`, before `ln_final`).

use burn::prelude::*;
use burn::tensor::Gradients;
use fidelis_models::{Activation, Hooks, ModelError, TransformerConfig, point};

use crate::Result;

/// Hook point of the `input` node's output.
pub fn input_point() -> String {
    point::resid_pre(0)
}

/// Hook point of the logits node's input.
pub fn logits_input_point(n_layers: usize) -> String {
    point::resid_post(n_layers - 1)
}

/// Registers recording of every forward node's output.
pub fn record_node_outputs(hooks: &mut Hooks, n_layers: usize) {
    hooks.record(input_point());
    for l in 0..n_layers {
        hooks.record(point::result(l)).record(point::mlp_out(l));
    }
}

fn missing(point: &str) -> ModelError {
    ModelError::Hook {
        point: point.to_string(),
        message: "activation was not recorded".into(),
    }
}

fn as3(a: Option<&Activation>, point: &str) -> Result<Tensor<3>> {
    Ok(a.and_then(Activation::rank3)
        .ok_or_else(|| missing(point))?)
}

fn as4(a: Option<&Activation>, point: &str) -> Result<Tensor<4>> {
    Ok(a.and_then(Activation::rank4)
        .ok_or_else(|| missing(point))?)
}

/// Stacks the recorded node outputs in graph row order.
///
/// # Shapes
/// - returns `[batch, pos, n_forward, d_model]`, detached from any autodiff graph
pub fn stack_node_outputs(hooks: &Hooks, n_layers: usize) -> Result<Tensor<4>> {
    let input = input_point();
    let mut parts = vec![as3(hooks.recorded(&input), &input)?.unsqueeze_dim::<4>(2)];
    for l in 0..n_layers {
        let (r, m) = (point::result(l), point::mlp_out(l));
        parts.push(as4(hooks.recorded(&r), &r)?);
        parts.push(as3(hooks.recorded(&m), &m)?.unsqueeze_dim::<4>(2));
    }
    Ok(Tensor::cat(parts, 2).detach())
}

/// Registers gradient probes at every backward node's input.
pub fn probe_node_inputs(hooks: &mut Hooks, n_layers: usize) {
    probe_node_inputs_from(hooks, 0, n_layers);
}

/// Registers gradient probes at the inputs of backward nodes in layers `first..` and the logits.
pub fn probe_node_inputs_from(hooks: &mut Hooks, first: usize, n_layers: usize) {
    for l in first..n_layers {
        hooks
            .probe(point::q_input(l))
            .probe(point::k_input(l))
            .probe(point::v_input(l))
            .probe(point::mlp_in(l));
    }
    hooks.probe(logits_input_point(n_layers));
}

/// ∂loss/∂input of every backward node, stacked in graph column order. A probe the loss does
/// not depend on gives zeros.
///
/// # Shapes
/// - `shape`: `[batch, pos, d_model]` of the run
/// - returns `[batch, pos, n_backward, d_model]` on the model's (non-autodiff) device
pub fn stack_input_grads(
    hooks: &Hooks,
    grads: &Gradients,
    cfg: &TransformerConfig,
    shape: [usize; 3],
    device: &Device,
) -> Tensor<4> {
    stack_input_grads_from(hooks, grads, cfg, 0, shape, device)
}

/// Number of backward columns (reader inputs) before layer `first`: `first · (3 · n_heads + 1)`.
pub fn columns_before(cfg: &TransformerConfig, first: usize) -> usize {
    first * (3 * cfg.n_heads + 1)
}

/// [`stack_input_grads`] for the reader inputs of layers `first..` and the logits only: the
/// last `n_backward - columns_before(first)` columns of the graph.
///
/// # Shapes
/// - returns `[batch, pos, n_backward - columns_before(cfg, first), d_model]`
pub fn stack_input_grads_from(
    hooks: &Hooks,
    grads: &Gradients,
    cfg: &TransformerConfig,
    first: usize,
    shape: [usize; 3],
    device: &Device,
) -> Tensor<4> {
    let [b, p, d] = shape;
    let h = cfg.n_heads;
    let grad4 = |pt: String, n: usize| match hooks.probe_grad(&pt, grads) {
        Some(Activation::Rank4(g)) => g,
        Some(Activation::Rank3(g)) => g.unsqueeze_dim::<4>(2),
        None => Tensor::zeros([b, p, n, d], device),
    };
    let mut parts = Vec::with_capacity(4 * (cfg.n_layers - first.min(cfg.n_layers)) + 1);
    for l in first..cfg.n_layers {
        parts.push(grad4(point::q_input(l), h));
        parts.push(grad4(point::k_input(l), h));
        parts.push(grad4(point::v_input(l), h));
        parts.push(grad4(point::mlp_in(l), 1));
    }
    parts.push(grad4(logits_input_point(cfg.n_layers), 1));
    Tensor::cat(parts, 2)
}

/// `Σ_{batch, pos, d} a[b, p, f, d] · g[b, p, c, d]` for every row f and column c: the EAP
/// score matrix of one batch.
///
/// Computed as one batched product per chunk of positions, `g[bp] @ a[bp]ᵀ`, summed over the
/// positions: `g` (the large operand, `n_backward` wide) is read in place and never
/// transposed; only `a` is, and only a chunk's worth of `[c, f]` products is held at once.
///
/// # Shapes
/// - `a`: `[batch, pos, n_forward, d]`, `g`: `[batch, pos, n_backward, d]`
/// - returns `[n_forward, n_backward]`
pub fn contract(a: Tensor<4>, g: Tensor<4>) -> Tensor<2> {
    /// Bound on the floats of one chunk's `[chunk, c, f]` products.
    const CHUNK_FLOATS: usize = 1 << 24;
    let [b, p, f, d] = a.dims();
    let [_, _, c, _] = g.dims();
    let rows = b * p;
    let chunk = (CHUNK_FLOATS / (c * f).max(1)).clamp(1, rows);
    let a = a.reshape([rows, f, d]);
    let g = g.reshape([rows, c, d]);
    let mut total: Option<Tensor<2>> = None;
    for lo in (0..rows).step_by(chunk) {
        let hi = (lo + chunk).min(rows);
        let at = a.clone().slice_dim(0, lo..hi).swap_dims(1, 2);
        let part = g
            .clone()
            .slice_dim(0, lo..hi)
            .matmul(at)
            .sum_dim(0)
            .reshape([c, f]);
        total = Some(match total {
            Some(t) => t + part,
            None => part,
        });
    }
    match total {
        Some(t) => t.transpose(),
        None => Tensor::zeros([f, c], &a.device()),
    }
}
