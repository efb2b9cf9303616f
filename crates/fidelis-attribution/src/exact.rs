//! Exact edge scores: the true change of the loss when one edge is patched.
//!
//! Patching edge u→v changes only v's input, by `Δa_u = ã_u − a_u(clean)`: u runs before v,
//! so its output in the patched run is its clean output. Many edges are therefore scored in one
//! forward: the batch is stacked once per edge and each copy gets `Δa_u` added at its edge's
//! reader input, so a pass of C edges costs one forward of C × batch rows and no backward.

use burn::prelude::*;
use fidelis_circuit::contract::mix_rows;
use fidelis_circuit::data::{PromptPair, batches, check_pairs, repeat_tokens};
use fidelis_circuit::progress::report;
use fidelis_circuit::runs::{PassContext, clean_run};
use fidelis_circuit::{Ablation, Metric, NodeMap, Progress, Silent, loss_per_example, to_vec};
use fidelis_graph::Graph;
use fidelis_models::{Activation, Batch, Hooks, Transformer};

use crate::edge::store_scores;
use crate::{AttributionError, Result};

/// The stage name exact patching reports to its [`Progress`].
pub const STAGE: &str = "patching edges";

/// Options of [`exact_edges`].
#[derive(Debug, Clone)]
pub struct ExactPatching {
    /// What a patched edge carries: the corrupted output (patching), a mean or zero.
    pub ablation: Ablation,
    /// Examples per batch.
    pub batch_size: usize,
    /// Edges patched per forward (memory × this).
    pub edges_per_pass: usize,
    /// Only these `(row, column)` edges; the others keep score 0. `None`: every edge.
    pub subset: Option<Vec<(usize, usize)>>,
}

impl Default for ExactPatching {
    /// Patching, batches of 16, 32 edges per forward, every edge.
    fn default() -> Self {
        Self {
            ablation: Ablation::Patching,
            batch_size: 16,
            edges_per_pass: 32,
            subset: None,
        }
    }
}

/// The edges to score, `(row, column)`, ordered by column so that a pass touches few readers.
fn edge_list(graph: &Graph, opts: &ExactPatching) -> Vec<(usize, usize)> {
    let nb = graph.n_backward();
    let mut edges: Vec<(usize, usize)> = match &opts.subset {
        Some(subset) => subset
            .iter()
            .copied()
            .filter(|&(f, b)| graph.is_edge(f, b))
            .collect(),
        None => graph.edge_indices().map(|i| (i / nb, i % nb)).collect(),
    };
    edges.sort_by_key(|&(f, b)| (b, f));
    edges.dedup();
    edges
}

/// Exact scores of every edge of `graph` (or `opts.subset`), without progress reports: see
/// [`exact_edges_with_progress`].
pub fn exact_edges(
    model: &Transformer,
    graph: &mut Graph,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &ExactPatching,
) -> Result<Vec<f32>> {
    exact_edges_with_progress(model, graph, pairs, metric, opts, &mut Silent)
}

/// Exact scores (mean loss change over the examples) of every edge of `graph`, or of
/// `opts.subset`, stored in the graph and returned as a row-major `[n_forward, n_backward]`
/// matrix. Ticks `progress` after every forward (stage [`STAGE`]).
pub fn exact_edges_with_progress(
    model: &Transformer,
    graph: &mut Graph,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &ExactPatching,
    progress: &mut dyn Progress,
) -> Result<Vec<f32>> {
    if opts.batch_size == 0 || opts.edges_per_pass == 0 {
        return Err(AttributionError::Options(
            "batch size and edges per pass must be at least 1".into(),
        ));
    }
    let map = NodeMap::for_model(model, graph)?;
    let needs_equal = matches!(opts.ablation, Ablation::Patching);
    check_pairs(pairs, model.config().d_vocab, needs_equal)?;
    let edges = edge_list(graph, opts);
    let n_batches = pairs.len().div_ceil(opts.batch_size);
    let total = n_batches * edges.len().div_ceil(opts.edges_per_pass);
    let nb = graph.n_backward();
    let mut scores = vec![0f32; graph.n_forward() * nb];
    let mut done = 0;
    for batch in batches(model, pairs, opts.batch_size) {
        let batch = batch?;
        let clean = clean_run(model, &map, &batch.clean, false)?;
        let delta = opts.ablation.node_values(model, &map, &batch)? - clean.outputs;
        let ctx = PassContext {
            model,
            map: &map,
            metric,
            clean_logits: clean.last_logits.clone(),
            targets: &batch.targets,
        };
        let base = loss_per_example(
            metric,
            clean.last_logits.clone(),
            clean.last_logits,
            &batch.targets,
        );
        for chunk in edges.chunks(opts.edges_per_pass) {
            let effects = patch_edges(&ctx, &batch.clean, &delta, &base, chunk)?;
            for (&(f, b), e) in chunk.iter().zip(effects) {
                scores[f * nb + b] += e;
            }
            done += 1;
            report(progress, STAGE, done, total)?;
        }
    }
    let n = pairs.len() as f32;
    scores.iter_mut().for_each(|s| *s /= n);
    store_scores(graph, scores)
}

/// Loss change summed over the batch for each edge of `chunk`, patched one per batch copy:
/// `Σ_examples L(clean run with Δa_u added at v) − L(clean)` (`tokens` are the clean prompts,
/// `base` is the clean loss per example, `delta` is `[batch, pos, n_forward, d]`).
pub fn patch_edges(
    ctx: &PassContext<'_>,
    tokens: &Batch,
    delta: &Tensor<4>,
    base: &Tensor<1>,
    chunk: &[(usize, usize)],
) -> Result<Vec<f32>> {
    let (model, map) = (ctx.model, ctx.map);
    let copies = chunk.len();
    let device = model.device();
    let nf = map.n_forward();
    let [b, p, _, d] = delta.dims();
    let mut hooks = Hooks::new();
    for r in map.readers() {
        let width = r.cols.len();
        let mut weights = vec![0f32; nf * copies * width];
        let mut any = false;
        for (c, &(f, col)) in chunk.iter().enumerate() {
            if r.cols.contains(&col) {
                weights[f * copies * width + c * width + (col - r.cols.start)] = 1.0;
                any = true;
            }
        }
        if !any {
            continue;
        }
        let w = Tensor::from_data(TensorData::new(weights, [nf, copies * width]), device);
        let add = mix_rows(delta.clone(), w)
            .reshape([b, p, copies, width, d])
            .permute([2, 0, 1, 3, 4])
            .reshape([copies * b, p, width, d]);
        let add = if r.per_head {
            Activation::Rank4(add)
        } else {
            Activation::Rank3(add.reshape([copies * b, p, d]))
        };
        hooks.add(r.point.clone(), add);
    }
    let tokens = repeat_tokens(tokens, copies);
    let last = model.forward_batch_at(&tokens, &tokens.last_positions(), &mut hooks)?;
    let clean = Tensor::cat(vec![ctx.clean_logits.clone(); copies], 0);
    let targets = ctx.targets.repeat(copies);
    let loss = loss_per_example(ctx.metric, last, clean, &targets);
    let base = Tensor::cat(vec![base.clone(); copies], 0);
    let effect = (loss - base)
        .reshape([copies, b])
        .sum_dim(1)
        .reshape([copies]);
    Ok(to_vec(effect)?)
}
