//! Exact edge scores: the true change of the loss when one edge is patched.
//!
//! Patching edge u→v changes only v's input, by `Δa_u = ã_u − a_u(clean)`: u runs before v,
//! so its output in the patched run is its clean output. Many edges are therefore scored in one
//! forward: the batch is stacked once per edge and each copy gets `Δa_u` added at its edge's
//! reader input, so a pass of C edges costs one forward of C × batch rows and no backward.

use burn::prelude::*;
use fidelis_faithfulness::data::{PromptPair, batches};
use fidelis_faithfulness::evaluate::{mix_rows, reader_groups};
use fidelis_faithfulness::{Metric, PairBatch};
use fidelis_graph::Graph;
use fidelis_models::{Activation, Hooks, Transformer};

use crate::Result;
use crate::edge::{EdgeAttribution, ProgressFn};
use crate::gradient::{clean_run, loss_per_example, repeat};

/// The edges to score, `(row, column)`, ordered by column so that a pass touches few readers.
fn edge_list(graph: &Graph, opts: &EdgeAttribution) -> Vec<(usize, usize)> {
    let nb = graph.n_backward();
    let mut edges: Vec<(usize, usize)> = match &opts.exact_subset {
        Some(subset) => subset
            .iter()
            .copied()
            .filter(|&(f, b)| f < graph.n_forward() && b < nb && graph.is_edge(f, b))
            .collect(),
        None => graph.edge_indices().map(|i| (i / nb, i % nb)).collect(),
    };
    edges.sort_by_key(|&(f, b)| (b, f));
    edges.dedup();
    edges
}

/// Exact scores of every edge (or of `opts.exact_subset`), as a row-major
/// `[n_forward, n_backward]` matrix of mean loss changes.
pub fn exact_scores(
    model: &Transformer,
    graph: &Graph,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &EdgeAttribution,
    progress: ProgressFn<'_>,
) -> Result<Vec<f32>> {
    let edges = edge_list(graph, opts);
    let per_pass = opts.exact_edges_per_pass.max(1);
    let n_batches = pairs.len().div_ceil(opts.batch_size);
    let total = n_batches * edges.len().div_ceil(per_pass);
    let nb = graph.n_backward();
    let mut scores = vec![0f32; graph.n_forward() * nb];
    let mut done = 0;
    for batch in batches(model, pairs, opts.batch_size) {
        let batch = batch?;
        let clean = clean_run(model, &batch.clean, false)?;
        let delta = opts.ablation.node_values(model, &batch)? - clean.outputs;
        let base = loss_per_example(
            metric,
            clean.last_logits.clone(),
            clean.last_logits.clone(),
            &batch.targets,
        );
        for chunk in edges.chunks(per_pass) {
            let effects = patch_edges(
                model,
                graph,
                &batch,
                metric,
                &delta,
                &clean.last_logits,
                &base,
                chunk,
            )?;
            for (&(f, b), e) in chunk.iter().zip(effects) {
                scores[f * nb + b] += e;
            }
            done += 1;
            progress(done, total);
        }
    }
    let n = pairs.len() as f32;
    scores.iter_mut().for_each(|s| *s /= n);
    Ok(scores)
}

/// Loss change summed over the batch for each edge of `chunk`, patched one per batch copy:
/// `Σ_examples L(clean run with Δa_u added at v) − L(clean)` (`base` is the clean loss per
/// example, `delta` is `[batch, pos, n_forward, d]`).
#[allow(clippy::too_many_arguments)]
pub fn patch_edges(
    model: &Transformer,
    graph: &Graph,
    batch: &PairBatch,
    metric: &dyn Metric,
    delta: &Tensor<4>,
    clean_logits: &Tensor<2>,
    base: &Tensor<1>,
    chunk: &[(usize, usize)],
) -> Result<Vec<f32>> {
    let copies = chunk.len();
    let device = model.device();
    let nf = graph.n_forward();
    let [b, p, _, d] = delta.dims();
    let mut hooks = Hooks::new();
    for (pt, g) in reader_groups(model.config(), graph.cfg().parallel_attn_mlp) {
        let mut weights = vec![0f32; nf * copies * g.width];
        let mut any = false;
        for (c, &(f, col)) in chunk.iter().enumerate() {
            if (g.col..g.col + g.width).contains(&col) {
                weights[f * copies * g.width + c * g.width + (col - g.col)] = 1.0;
                any = true;
            }
        }
        if !any {
            continue;
        }
        let w = Tensor::from_data(TensorData::new(weights, [nf, copies * g.width]), device);
        let add = mix_rows(delta.clone(), w)
            .reshape([b, p, copies, g.width, d])
            .permute([2, 0, 1, 3, 4])
            .reshape([copies * b, p, g.width, d]);
        let add = if !g.per_head {
            Activation::Rank3(add.reshape([copies * b, p, d]))
        } else {
            Activation::Rank4(add)
        };
        hooks.add(pt, add);
    }
    let tokens = repeat(&batch.clean, copies);
    let last = model.forward_batch_at(&tokens, &tokens.last_positions(), &mut hooks)?;
    let clean = Tensor::cat(vec![clean_logits.clone(); copies], 0);
    let targets = batch.targets.repeat(copies);
    let loss = loss_per_example(metric, last, clean, &targets);
    let base = Tensor::cat(vec![base.clone(); copies], 0);
    let effect = (loss - base)
        .reshape([copies, b])
        .sum_dim(1)
        .reshape([copies]);
    Ok(fidelis_faithfulness::evaluate::values(effect))
}
