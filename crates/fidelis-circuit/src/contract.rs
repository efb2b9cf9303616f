//! The two products every circuit method ends in: the edge-score contraction of node output
//! differences with reader gradients, and the mixing of node rows into reader columns.
//!
//! The score contraction runs in f32 whatever the model's float type (`--dtype`): its inner
//! dimension (batch·pos·d) is thousands of terms long, more than bf16's 8-bit mantissa can sum.

use burn::prelude::*;
use fidelis_models::precision::to_f32;

/// Δa laid out for scoring, rows first: `[batch, pos, rows, d]` → `[rows, batch·pos·d]`. Made
/// once per batch (or node group), then any reader's block is one product with it. In f32.
pub fn flatten_rows(a: Tensor<4>) -> Tensor<2> {
    let [b, p, f, d] = a.dims();
    to_f32(a).permute([2, 0, 1, 3]).reshape([f, b * p * d])
}

/// `Σ_{batch, pos, d} a[f, (b, p, d)] · g[b, p, c, d]` for every row f of `rows` (Δa as
/// [`flatten_rows`] lays it out) and every column c of `g`: one matrix product whose inner
/// dimension is batch·pos·d. In f32 (`g` is widened first).
///
/// # Shapes
/// - `rows`: `[f, batch·pos·d]`, `g`: `[batch, pos, c, d]`; returns `[f, c]`
pub fn contract_rows(rows: Tensor<2>, g: Tensor<4>) -> Tensor<2> {
    let [b, p, c, d] = g.dims();
    to_f32(rows).matmul(to_f32(g).permute([0, 1, 3, 2]).reshape([b * p * d, c]))
}

/// `Σ_{batch, pos, d} a[b, p, f, d] · g[b, p, c, d]` for every row f and column c: the EAP
/// score matrix of one batch, [`contract_rows`] of [`flatten_rows`]`(a)`.
///
/// # Shapes
/// - `a`: `[batch, pos, n_forward, d]`, `g`: `[batch, pos, n_backward, d]`
/// - returns `[n_forward, n_backward]`
pub fn contract(a: Tensor<4>, g: Tensor<4>) -> Tensor<2> {
    contract_rows(flatten_rows(a), g)
}

/// `Σ_f diff[b, p, f, :] · weights[f, c]` for each column c.
///
/// # Shapes
/// - `diff`: `[batch, pos, f, d]`, `weights`: `[f, c]`; returns `[batch, pos, c, d]`
pub fn mix_rows(diff: Tensor<4>, weights: Tensor<2>) -> Tensor<4> {
    let [b, p, f, d] = diff.dims();
    let [_, c] = weights.dims();
    diff.permute([0, 1, 3, 2])
        .reshape([b * p * d, f])
        .matmul(weights)
        .reshape([b, p, d, c])
        .permute([0, 1, 3, 2])
}
