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
use fidelis_models::{Activation, Batch, Hooks, Transformer, TransformerConfig, point};

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

/// State shared by the hooks of one ablated run of `k` stacked circuits.
struct AblatedRun {
    /// This run's node outputs so far, `[k × batch, pos, n, d]` chunks in row order.
    outputs: Vec<Tensor<4>>,
    /// `[batch, pos, n_forward, d]` ablation values (the same for every circuit).
    ablated: Tensor<4>,
    /// `[k, n_forward, n_backward]`: 1 where a valid edge is ablated in circuit k.
    ablate: Tensor<3>,
}

impl AblatedRun {
    /// What reader group `g` must add: `Σ_f (ã_f − a_f(run)) · ablate[k, f, c]` per circuit k.
    fn correction(&self, g: ReaderGroup) -> Tensor<4> {
        let [k, _, _] = self.ablate.dims();
        let run = Tensor::cat(self.outputs.clone(), 2).slice_dim(2, 0..g.visible);
        let [rows, p, vis, d] = run.dims();
        let b = rows / k;
        let ablated = self
            .ablated
            .clone()
            .slice_dim(2, 0..vis)
            .unsqueeze_dim::<5>(0)
            .expand([k, b, p, vis, d])
            .reshape([rows, p, vis, d]);
        let weights = self
            .ablate
            .clone()
            .slice([0..k, 0..vis, g.col..g.col + g.width]);
        (ablated - run)
            .reshape([k, b * p, vis, d])
            .permute([0, 1, 3, 2])
            .reshape([k, b * p * d, vis])
            .matmul(weights)
            .reshape([k, b, p, d, g.width])
            .permute([0, 1, 2, 4, 3])
            .reshape([rows, p, g.width, d])
    }
}

/// Registers the hooks of an edge-ablated run of `masks.len()` circuits stacked along the batch
/// (copy k of the batch runs circuit k). `ablated` is `[batch, pos, n_forward, d]`; each mask is
/// a row-major `[n_forward, n_backward]` boolean matrix of *ablated* edges.
pub fn ablation_hooks(
    model: &Transformer,
    graph: &Graph,
    ablated: Tensor<4>,
    masks: &[Vec<bool>],
) -> Hooks {
    let cfg = model.config();
    let (nf, nb, k) = (graph.n_forward(), graph.n_backward(), masks.len());
    let flat: Vec<f32> = masks
        .iter()
        .flat_map(|m| m.iter().map(|&a| f32::from(u8::from(a))))
        .collect();
    let state = Arc::new(Mutex::new(AblatedRun {
        outputs: Vec::new(),
        ablated,
        ablate: Tensor::from_data(TensorData::new(flat, [k, nf, nb]), model.device()),
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
        let touched =
            |m: &Vec<bool>| (0..g.visible).any(|f| (g.col..g.col + g.width).any(|c| m[f * nb + c]));
        if !masks.iter().any(touched) {
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
    let circuit = graph.in_graph().to_vec();
    let mut out = evaluate_circuits(
        model,
        graph,
        &[circuit],
        pairs,
        metric,
        ablation,
        batch_size,
        1,
    )?;
    Ok(out.pop().unwrap_or_default())
}

/// The metric per example for each circuit (an `in_graph` mask over `graph`'s
/// `[n_forward, n_backward]` matrix), `circuits_per_pass` circuits stacked into one forward.
///
/// A curve of k circuit sizes therefore costs about `k / circuits_per_pass` forwards of
/// `circuits_per_pass × batch` rows per batch, plus one clean and one corrupted forward — not k
/// independent evaluations. Returns `[circuit][example]`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_circuits(
    model: &Transformer,
    graph: &Graph,
    circuits: &[Vec<bool>],
    pairs: &[PromptPair],
    metric: &dyn Metric,
    ablation: &Ablation,
    batch_size: usize,
    circuits_per_pass: usize,
) -> Result<Vec<Vec<f32>>> {
    check_graph_fits(model, graph)?;
    check_pairs(
        pairs,
        model.config().d_vocab,
        matches!(ablation, Ablation::Patching),
    )?;
    let n = graph.n_forward() * graph.n_backward();
    if let Some(bad) = circuits.iter().position(|c| c.len() != n) {
        return Err(FaithError::Data(format!(
            "circuit {bad} has {} entries, the graph's matrix has {n}",
            circuits[bad].len()
        )));
    }
    let masks: Vec<Vec<bool>> = circuits
        .iter()
        .map(|c| {
            graph
                .valid_mask()
                .iter()
                .zip(c)
                .map(|(&v, &i)| v && !i)
                .collect()
        })
        .collect();
    let mut out = vec![Vec::with_capacity(pairs.len()); circuits.len()];
    for (i, batch) in batches(model, pairs, batch_size).enumerate() {
        let batch = batch?;
        let clean = clean_last_logits(model, &batch)?;
        let ablated = ablation.node_values(model, &batch)?;
        for (c0, chunk) in masks.chunks(circuits_per_pass.max(1)).enumerate() {
            let k = chunk.len();
            let mut hooks = ablation_hooks(model, graph, ablated.clone(), chunk);
            let tokens = repeat_batch_of(&batch.clean, k);
            let logits = model.forward_batch(&tokens, &mut hooks)?;
            let logits = last_position_logits(logits, &tokens.last_positions());
            let clean_k = crate::data::repeat_batch(clean.clone(), k);
            let targets = if k == 1 {
                batch.targets.clone()
            } else {
                batch.targets.repeat(k)
            };
            let vals = values(metric.per_example(logits, clean_k, &targets));
            check_finite(metric, &vals, i)?;
            let b = batch.size();
            for (j, v) in vals.chunks(b).enumerate() {
                out[c0 * circuits_per_pass.max(1) + j].extend_from_slice(v);
            }
        }
    }
    Ok(out)
}

/// A batch repeated `k` times along the batch dimension.
fn repeat_batch_of(batch: &Batch, k: usize) -> Batch {
    if k == 1 {
        return batch.clone();
    }
    Batch {
        tokens: Tensor::cat(vec![batch.tokens.clone(); k], 0),
        lengths: batch.lengths.repeat(k),
    }
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
