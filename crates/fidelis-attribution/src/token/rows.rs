//! Stacked passes of token attribution: many copies of one token sequence in one forward (and
//! one backward), each copy a prefix of the sequence with its embeddings mixed with the
//! baseline in its own way.
//!
//! Every method of the parent module is a set of such copies ("rows"): integrated gradients is
//! `ig_steps` rows per target at the interpolation points, occlusion one row per occluded
//! position (plus the unoccluded one), saliency and input × gradient one row per target. Rows
//! are independent, so one backward of the sum of their targets gives each row its own
//! gradient, and rows of different targets (prefixes of different lengths) can share a pass:
//! each pass carries the sequence's first `n` tokens with `n` the longest prefix among its rows,
//! and a row of a shorter prefix reads its target at its own last position. Under the causal
//! mask nothing at a position depends on later positions, so the tokens past a row's prefix
//! change nothing it reads (up to float rounding of the longer reductions); only the final
//! norm and the unembedding are restricted to the read positions
//! ([`Transformer::forward_batch_at`]).
//!
//! The embeddings are mixed on the device by a hook at `hook_embed` (`x + w ⊙ (x' − x)`, with
//! x the token embeddings, x' the baseline and w one weight per row and position), so that no
//! separate run is needed to read x first; the same hook records x for the methods that
//! multiply by it.
//!
//! Passes are sized by [`pass_plan`]: at most `max_rows` rows, and at most `memory_bytes` of
//! estimated activation memory ([`bytes_per_row`]).
//!
//! # Shapes
//! - a pass over `k` rows of longest prefix `n`: tokens `[k, n]`, embeddings `[k, n, d_model]`,
//!   gradients `[k, n, d_model]`, read positions `[k]`

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::TensorData;
use fidelis_circuit::to_vec;
use fidelis_models::{Activation, Batch, Hooks, Transformer, TransformerConfig, point};

use super::Target;
use crate::{AttributionError, Result};

/// How one row's embeddings are mixed with the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mix {
    /// The token embeddings unchanged.
    Plain,
    /// `x + w · (x' − x)` at every position (an integrated-gradient point with α = 1 − w).
    Everywhere(f32),
    /// The baseline at one position, the token embeddings elsewhere (occlusion).
    At(usize),
}

/// One copy of a prefix in a stacked pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Row {
    /// Index of the row's target.
    pub target: usize,
    /// The prefix length: the target is read at position `len − 1`.
    pub len: usize,
    /// How the embeddings are mixed with the baseline.
    pub mix: Mix,
}

impl Row {
    /// The baseline weight at position `p`.
    pub(crate) fn weight(&self, p: usize) -> f32 {
        match self.mix {
            Mix::Plain => 0.0,
            Mix::Everywhere(w) => w,
            Mix::At(q) => f32::from(u8::from(p == q)),
        }
    }
}

/// What one stacked pass returns.
pub(crate) struct PassOutput {
    /// Each row's target value `[k]`.
    pub values: Vec<f32>,
    /// Each row's gradient at its (mixed) embeddings, `[k, n, d_model]` row-major with `n` the
    /// pass's longest prefix (gradient passes only; positions past a row's prefix are zero).
    pub grads: Option<Vec<f32>>,
    /// The token embeddings of the pass's first `n` positions `[n, d_model]`.
    pub embed: Vec<f32>,
    /// The pass's longest prefix `n`.
    pub len: usize,
}

/// Estimated activation memory of one row of `len` tokens in a pass, in bytes: what a
/// forward keeps for its backward (`grad`), or the largest transient of a forward alone.
///
/// Counted per token and layer, in the model's float size: the residual stream, the norms'
/// outputs, q/k/v, the attention output and its projection, about 12 `d_model`-wide tensors;
/// the MLP's gate, input, activation and product, four `d_mlp`-wide ones; the attention scores,
/// mask fill, pattern and its softmax input, four `n_heads × len` ones. The measured peaks of
/// `docs/benchmarks.md` (token attribution section) are under this estimate.
pub(crate) fn bytes_per_row(
    cfg: &TransformerConfig,
    len: usize,
    grad: bool,
    float_bytes: usize,
) -> usize {
    let per_layer = 12 * cfg.d_model + 4 * cfg.d_mlp + 4 * cfg.n_heads * len;
    let layers = if grad { cfg.n_layers } else { 2 };
    len * per_layer * layers * float_bytes
}

/// Splits `rows` (in order) into passes of at most `max_rows` rows whose estimated memory
/// ([`bytes_per_row`] at the pass's longest prefix, times its row count) stays within
/// `memory_bytes`; a pass always holds at least one row.
pub(crate) fn pass_plan(
    rows: &[Row],
    max_rows: usize,
    memory_bytes: usize,
    row_bytes: impl Fn(usize) -> usize,
) -> Vec<Range<usize>> {
    let mut passes = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        let mut longest = rows[start].len;
        while end < rows.len() && end - start < max_rows {
            let n = longest.max(rows[end].len);
            if (end + 1 - start) * row_bytes(n) > memory_bytes {
                break;
            }
            longest = n;
            end += 1;
        }
        passes.push(start..end);
        start = end;
    }
    passes
}

/// Runs `rows` of prefixes of `ids` in one stacked forward, and with `grad` one backward of the
/// sum of their targets. `baseline` is the baseline embedding `[d_model]` (the same at every
/// position), `None` for the zero baseline.
pub(crate) fn run_pass(
    model: &Transformer,
    ids: &[u32],
    rows: &[Row],
    targets: &[&Target],
    baseline: Option<&[f32]>,
    grad: bool,
) -> Result<PassOutput> {
    let d = model.config().d_model;
    let device = model.device();
    let k = rows.len();
    let n = rows.iter().map(|r| r.len).max().unwrap_or(0);
    if k == 0 || n == 0 || n > ids.len() {
        return Err(AttributionError::Options(format!(
            "a stacked pass needs rows of prefixes of 1..={} tokens",
            ids.len()
        )));
    }
    let tokens: Vec<i64> = (0..k)
        .flat_map(|_| ids[..n].iter().map(|&t| i64::from(t)))
        .collect();
    let batch = Batch {
        tokens: Tensor::from_data(TensorData::new(tokens, [k, n]), device),
        lengths: vec![n; k],
    };
    let read_at: Vec<usize> = rows.iter().map(|r| r.len - 1).collect();
    let mut hooks = Hooks::new();
    hooks.record_detached(point::EMBED);
    if rows.iter().any(|r| r.mix != Mix::Plain) {
        let weights: Vec<f32> = rows
            .iter()
            .flat_map(|r| (0..n).map(move |p| r.weight(p)))
            .collect();
        let w =
            Tensor::<3>::from_data(TensorData::new(weights, [k, n, 1]), device).expand([k, n, d]);
        let base = baseline.map(|b| {
            Tensor::<3>::from_data(TensorData::new(b.to_vec(), [1, 1, d]), device).expand([k, n, d])
        });
        hooks.map(point::EMBED, move |a| match a {
            Activation::Rank3(x) => {
                let toward = match &base {
                    Some(b) => b.clone() - x.clone(),
                    None => -x.clone(),
                };
                Activation::Rank3(x + w.clone() * toward)
            }
            other => other,
        });
    }
    if grad {
        hooks.probe(point::EMBED);
    }
    let logits = model.forward_batch_at(&batch, &read_at, &mut hooks)?;
    let values = evaluate_rows(logits, rows, targets);
    let embed = hooks
        .recorded(point::EMBED)
        .and_then(Activation::rank3)
        .ok_or_else(|| AttributionError::Options("no embeddings recorded at hook_embed".into()))?;
    let embed = to_vec(embed.slice([0..1, 0..n, 0..d]))?;
    let grads = if grad {
        // Rows are independent copies, so the gradient of the sum is each row's own gradient.
        let grads = values.clone().sum().backward();
        let g = hooks
            .probe_grad(point::EMBED, &grads)
            .and_then(|a| a.rank3())
            .ok_or_else(|| {
                AttributionError::Options(
                    "the target does not depend on the embeddings (no gradient)".into(),
                )
            })?;
        Some(to_vec(g)?)
    } else {
        None
    };
    Ok(PassOutput {
        values: to_vec(values)?,
        grads,
        embed,
        len: n,
    })
}

/// Each row's target on its next-token logits: rows are grouped by target in runs, and each
/// run is evaluated with its own target.
///
/// # Shapes
/// - `logits`: `[k, d_vocab]`; returns `[k]`
pub(crate) fn evaluate_rows(logits: Tensor<2>, rows: &[Row], targets: &[&Target]) -> Tensor<1> {
    let [k, vocab] = logits.dims();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < k {
        let t = rows[start].target;
        let end = (start..k).find(|&i| rows[i].target != t).unwrap_or(k);
        let group = if start == 0 && end == k {
            logits.clone()
        } else {
            logits.clone().slice([start..end, 0..vocab])
        };
        parts.push(targets[t].evaluate(group));
        start = end;
    }
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        Tensor::cat(parts, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(lens: &[usize]) -> Vec<Row> {
        lens.iter()
            .map(|&len| Row {
                target: 0,
                len,
                mix: Mix::Plain,
            })
            .collect()
    }

    #[test]
    fn passes_respect_the_row_cap_and_the_memory_budget() {
        // 10 bytes per token: a pass of k rows at longest prefix n needs 10·k·n bytes.
        let bytes = |n: usize| 10 * n;
        let r = rows(&[2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(pass_plan(&r, 3, usize::MAX, bytes), vec![0..3, 3..6, 6..7]);
        // 100 bytes hold 5 rows of 2 tokens.
        assert_eq!(pass_plan(&r, 64, 100, bytes), vec![0..5, 5..7]);
        // A longer row lowers what the pass can hold: 2, 2, then 5 makes 3 rows of 5 = 150.
        let r = rows(&[2, 2, 5, 5, 1]);
        assert_eq!(pass_plan(&r, 64, 100, bytes), vec![0..2, 2..4, 4..5]);
        // A budget below one row still runs every row, one per pass.
        assert_eq!(pass_plan(&r, 64, 0, bytes).len(), 5);
        assert!(pass_plan(&[], 4, 100, bytes).is_empty());
    }
}
