//! Edge-ablated runs: the model with every edge outside a circuit ablated.
//!
//! In one clean forward, the input of every reader v is
//! `in_v = Σ_{u→v in C} a_u(this run) + Σ_{u→v not in C} ã_u + biases`,
//! with ã the ablation value (corrupted output, mean or zero). Because the residual stream at
//! v's input already holds `Σ_u a_u(this run) + biases`, the hook at v adds
//! `Σ_{u→v not in C} (ã_u − a_u(this run))` — one matrix product per reader group — so the run
//! costs one forward plus the recording of node outputs (EAP-IG reference, `evaluate_graph`).

use std::sync::{Arc, Mutex};

use burn::prelude::*;
use fidelis_graph::Graph;
use fidelis_models::{Activation, Hooks, Transformer, TransformerConfig, point};

use crate::data::{PairBatch, PromptPair, batches, check_pairs};
use crate::metric::{Metric, last_position_logits};
use crate::nodes::{input_point, logits_input_point};
use crate::{Ablation, FaithError, Result};

/// Which columns of the score matrix a hook point feeds, and how many rows it sees.
#[derive(Debug, Clone, Copy)]
pub struct ReaderGroup {
    /// First column.
    pub col: usize,
    /// Number of columns (heads for q/k/v inputs, 1 for an MLP or the logits).
    pub width: usize,
    /// Number of forward rows written before this reader (a prefix).
    pub visible: usize,
    /// Whether the hook point is per head (`[batch, pos, head, d]`, q/k/v inputs).
    pub per_head: bool,
}

/// The reader group of each reader hook point, in forward order: per layer q, k, v inputs and
/// the MLP input, then the logits input.
pub fn reader_groups(cfg: &TransformerConfig, parallel: bool) -> Vec<(String, ReaderGroup)> {
    let h = cfg.n_heads;
    let mut groups = Vec::with_capacity(4 * cfg.n_layers + 1);
    for l in 0..cfg.n_layers {
        let base = l * (3 * h + 1);
        let visible = 1 + l * (h + 1);
        let points = [point::q_input(l), point::k_input(l), point::v_input(l)];
        for (i, pt) in points.into_iter().enumerate() {
            let (col, width) = (base + i * h, h);
            groups.push((
                pt,
                ReaderGroup {
                    col,
                    width,
                    visible,
                    per_head: true,
                },
            ));
        }
        let mlp_visible = if parallel { visible } else { visible + h };
        let col = base + 3 * h;
        groups.push((
            point::mlp_in(l),
            ReaderGroup {
                col,
                width: 1,
                visible: mlp_visible,
                per_head: false,
            },
        ));
    }
    let n_forward = 1 + cfg.n_layers * (h + 1);
    groups.push((
        logits_input_point(cfg.n_layers),
        ReaderGroup {
            col: cfg.n_layers * (3 * h + 1),
            width: 1,
            visible: n_forward,
            per_head: false,
        },
    ));
    groups
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

/// State shared by the hooks of one ablated run.
struct AblatedRun {
    /// This run's node outputs so far, `[batch, pos, k, d]` chunks in row order.
    outputs: Vec<Tensor<4>>,
    /// `[batch, pos, n_forward, d]` ablation values.
    ablated: Tensor<4>,
    /// `[n_forward, n_backward]`: 1 where a valid edge is ablated.
    ablate: Tensor<2>,
}

impl AblatedRun {
    fn correction(&self, g: ReaderGroup) -> Tensor<4> {
        let run = Tensor::cat(self.outputs.clone(), 2);
        let run = run.slice_dim(2, 0..g.visible);
        let diff = self.ablated.clone().slice_dim(2, 0..g.visible) - run;
        let weights = self
            .ablate
            .clone()
            .slice([0..g.visible, g.col..g.col + g.width]);
        mix_rows(diff, weights)
    }
}

/// Registers the hooks of an edge-ablated run. `ablated` is `[batch, pos, n_forward, d]`;
/// `ablate` is the `[n_forward, n_backward]` boolean mask (row-major) of ablated edges.
pub fn ablation_hooks(
    model: &Transformer,
    graph: &Graph,
    ablated: Tensor<4>,
    ablate: &[bool],
) -> Hooks {
    let cfg = model.config();
    let (nf, nb) = (graph.n_forward(), graph.n_backward());
    let mask: Vec<f32> = ablate.iter().map(|&a| f32::from(u8::from(a))).collect();
    let state = Arc::new(Mutex::new(AblatedRun {
        outputs: Vec::new(),
        ablated,
        ablate: Tensor::from_data(TensorData::new(mask, [nf, nb]), model.device()),
    }));
    let mut hooks = Hooks::new();
    let record = |hooks: &mut Hooks, pt: String| {
        let st = state.clone();
        hooks.map(pt, move |a| {
            let chunk = match &a {
                Activation::Rank3(t) => t.clone().unsqueeze_dim::<4>(2),
                Activation::Rank4(t) => t.clone(),
            };
            st.lock().expect("hook state").outputs.push(chunk);
            a
        });
    };
    record(&mut hooks, input_point());
    for l in 0..cfg.n_layers {
        record(&mut hooks, point::result(l));
        record(&mut hooks, point::mlp_out(l));
    }
    for (pt, g) in reader_groups(cfg, graph.cfg().parallel_attn_mlp) {
        let any = (0..g.visible).any(|f| (g.col..g.col + g.width).any(|c| ablate[f * nb + c]));
        if !any {
            continue;
        }
        let st = state.clone();
        hooks.map(pt, move |a| {
            let corr = st.lock().expect("hook state").correction(g);
            match a {
                Activation::Rank4(x) => Activation::Rank4(x + corr),
                Activation::Rank3(x) => {
                    let [b, p, _, d] = corr.dims();
                    Activation::Rank3(x + corr.reshape([b, p, d]))
                }
            }
        });
    }
    hooks
}

/// Clean and corrupted metric values per example.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// The metric on the clean prompts.
    pub clean: Vec<f32>,
    /// The metric on the corrupted prompts (compared with the clean distribution for
    /// divergences).
    pub corrupted: Vec<f32>,
}

/// The values of a float tensor, row-major.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

fn check_finite(metric: &dyn Metric, vals: &[f32], batch: usize) -> Result<()> {
    match vals.iter().find(|v| !v.is_finite()) {
        Some(&value) => Err(FaithError::NotFinite {
            metric: metric.name(),
            value,
            batch,
        }),
        None => Ok(()),
    }
}

/// Last-position logits of a clean forward.
pub fn clean_last_logits(model: &Transformer, batch: &PairBatch) -> Result<Tensor<2>> {
    let logits = model.forward_batch(&batch.clean, &mut Hooks::new())?;
    Ok(last_position_logits(logits, &batch.last))
}

/// The metric on the clean and on the corrupted prompts.
pub fn evaluate_baseline(
    model: &Transformer,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    batch_size: usize,
) -> Result<Baseline> {
    check_pairs(pairs, model.config().d_vocab, false)?;
    let mut out = Baseline {
        clean: Vec::new(),
        corrupted: Vec::new(),
    };
    for (i, batch) in batches(model, pairs, batch_size).enumerate() {
        let batch = batch?;
        let clean = clean_last_logits(model, &batch)?;
        let corrupted = model.forward_batch(&batch.corrupted, &mut Hooks::new())?;
        let corrupted = last_position_logits(corrupted, &batch.last_corrupted);
        let c = values(metric.per_example(clean.clone(), clean.clone(), &batch.targets));
        let k = values(metric.per_example(corrupted, clean, &batch.targets));
        check_finite(metric, &c, i)?;
        check_finite(metric, &k, i)?;
        out.clean.extend(c);
        out.corrupted.extend(k);
    }
    Ok(out)
}

/// The metric per example with every edge outside `graph`'s circuit (its `in_graph` mask)
/// ablated.
pub fn evaluate_graph(
    model: &Transformer,
    graph: &Graph,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    ablation: &Ablation,
    batch_size: usize,
) -> Result<Vec<f32>> {
    check_graph_fits(model, graph)?;
    check_pairs(
        pairs,
        model.config().d_vocab,
        matches!(ablation, Ablation::Patching),
    )?;
    let ablate: Vec<bool> = graph
        .valid_mask()
        .iter()
        .zip(graph.in_graph())
        .map(|(&v, &i)| v && !i)
        .collect();
    let mut out = Vec::with_capacity(pairs.len());
    for (i, batch) in batches(model, pairs, batch_size).enumerate() {
        let batch = batch?;
        let clean = clean_last_logits(model, &batch)?;
        let ablated = ablation.node_values(model, &batch)?;
        let mut hooks = ablation_hooks(model, graph, ablated, &ablate);
        let logits = model.forward_batch(&batch.clean, &mut hooks)?;
        let logits = last_position_logits(logits, &batch.last);
        let vals = values(metric.per_example(logits, clean, &batch.targets));
        check_finite(metric, &vals, i)?;
        out.extend(vals);
    }
    Ok(out)
}

/// Errors unless `graph` was built for `model`'s layer and head counts.
pub fn check_graph_fits(model: &Transformer, graph: &Graph) -> Result<()> {
    let cfg = model.config();
    let g = graph.cfg();
    if g.n_layers != cfg.n_layers || g.n_heads != cfg.n_heads {
        return Err(FaithError::Data(format!(
            "the graph has {} layers × {} heads but the model has {} × {}",
            g.n_layers, g.n_heads, cfg.n_layers, cfg.n_heads
        )));
    }
    if g.parallel_attn_mlp != cfg.parallel_attn_mlp {
        return Err(FaithError::Data(
            "the graph and the model disagree on parallel attention/MLP".into(),
        ));
    }
    Ok(())
}

/// Normalized faithfulness `(m(C) − m(∅)) / (m(full) − m(∅))` (Hanna et al. 2024, §5).
pub fn normalized_faithfulness(circuit: f32, empty: f32, full: f32) -> f32 {
    (circuit - empty) / (full - empty)
}

/// Mean of a slice (0 for an empty one).
pub fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f32>() / v.len() as f32
    }
}
