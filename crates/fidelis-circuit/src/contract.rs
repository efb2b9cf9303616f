//! The two products every circuit method ends in: the edge-score contraction of node output
//! differences with reader gradients, and the mixing of node rows into reader columns.

use burn::prelude::*;

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
    let chunk = (CHUNK_FLOATS / (c * f).max(1)).clamp(1, rows.max(1));
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
