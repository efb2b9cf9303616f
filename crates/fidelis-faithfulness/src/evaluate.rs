//! Edge-ablated runs: the model with every edge outside a circuit ablated.
//!
//! In one clean forward, the input of every reader v is
//! `in_v = Σ_{u→v in C} a_u(this run) + Σ_{u→v not in C} ã_u + biases`,
//! with ã the ablation value (corrupted output, mean or zero). Because the residual stream at
//! v's input already holds `Σ_u a_u(this run) + biases`, the hook at v adds
//! `Σ_{u→v not in C} (ã_u − a_u(this run))` — one matrix product per reader group — so the run
//! costs one forward plus the recording of node outputs (EAP-IG reference, `evaluate_graph`).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use burn::prelude::*;
use fidelis_circuit::data::{
    PairBatch, PromptPair, batches, check_pairs, repeat_batch, repeat_tokens,
};
use fidelis_circuit::node_map::ReaderKind;
use fidelis_circuit::progress::report;
use fidelis_circuit::{Ablation, CircuitError, Metric, NodeMap, Progress, Result, Silent, to_vec};
use fidelis_graph::{Graph, Qkv};
use fidelis_models::{Activation, Hooks, Transformer};

use crate::EvalOptions;

/// The stage name evaluations report to their [`Progress`].
pub const STAGE: &str = "evaluating circuits";

/// State shared by the hooks of one ablated run of `k` stacked circuits.
///
/// Node outputs are kept as chunks of `ã − a(this run)` (one chunk per hook point: the input,
/// one layer's heads, one MLP) rather than re-concatenated for every reader, and the q, k and v
/// inputs of a layer are corrected together and cached, so a run touches each chunk once per
/// reader layer and skips chunks whose edges into a reader are all kept.
struct AblatedRun {
    /// `(first row, ã − a(this run))` chunks, `[k, rows, batch·pos·d]`, in row order: the layout
    /// in which mixing rows is a plain batched matmul, with no copy per use.
    diffs: Vec<(usize, Tensor<3>)>,
    /// `(rows covered, Σ of all diffs so far over rows)`, `[k, 1, batch·pos·d]`, one per chunk.
    prefix: Vec<(usize, Tensor<3>)>,
    /// `[batch, pos, n_forward, d]` ablation values (the same for every circuit).
    ablated: Tensor<4>,
    /// `[k, n_forward, n_backward]`: 1 where a valid edge is ablated in circuit k.
    ablate: Tensor<3>,
    /// Host copies, row-major `[k][n_forward × n_backward]`: ablated edges, kept edges.
    ablate_host: Vec<Vec<bool>>,
    keep_host: Vec<Vec<bool>>,
    /// Corrections computed early (the k and v inputs of a layer), by first column.
    cached: Vec<(usize, Tensor<4>)>,
    /// `[batch, pos, d]` of one circuit's copy of the batch.
    shape: [usize; 3],
}

impl AblatedRun {
    /// Records a node-output chunk `[k × batch, pos, n, d]` starting at `row`.
    fn record(&mut self, row: usize, out: Tensor<4>) {
        let [k, _, _] = self.ablate.dims();
        let [rows, p, n, d] = out.dims();
        let b = rows / k;
        self.shape = [b, p, d];
        let ablated = self
            .ablated
            .clone()
            .slice_dim(2, row..row + n)
            .unsqueeze_dim::<5>(0)
            .expand([k, b, p, n, d]);
        let diff = (ablated - out.reshape([k, b, p, n, d]))
            .permute([0, 3, 1, 2, 4])
            .reshape([k, n, b * p * d]);
        let sum = diff.clone().sum_dim(1);
        let total = match self.prefix.last() {
            Some((_, s)) => s.clone() + sum,
            None => sum,
        };
        self.prefix.push((row + n, total));
        self.diffs.push((row, diff));
    }

    fn count(
        masks: &[Vec<bool>],
        nb: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) -> usize {
        masks
            .iter()
            .map(|m| {
                rows.clone()
                    .map(|f| cols.clone().filter(|&c| m[f * nb + c]).count())
                    .sum::<usize>()
            })
            .sum()
    }

    /// `Σ_f (ã_f − a_f) · ablate[k, f, c]` over the rows visible to columns `cols`, per circuit.
    ///
    /// When fewer edges are kept than ablated it is computed as the prefix sum of all diffs
    /// minus the kept ones, so small and large circuits both touch few chunks.
    ///
    /// # Shapes
    /// - returns `[k × batch, pos, cols.len(), d]`
    fn correction(&self, visible: usize, cols: std::ops::Range<usize>) -> Option<Tensor<4>> {
        let nb = self.ablate.dims()[2];
        let n_ablated = Self::count(&self.ablate_host, nb, 0..visible, cols.clone());
        if n_ablated == 0 {
            return None;
        }
        let n_kept = Self::count(&self.keep_host, nb, 0..visible, cols.clone());
        let complement = n_kept < n_ablated;
        let host = if complement {
            &self.keep_host
        } else {
            &self.ablate_host
        };
        let mixed = self.mix(visible, cols.clone(), host);
        let out = if complement {
            let (_, all) = self.prefix.iter().find(|(end, _)| *end == visible)?;
            let [k, _, n] = all.dims();
            let all = all.clone().expand([k, cols.len(), n]);
            match mixed {
                Some(kept) => all - kept,
                None => all,
            }
        } else {
            mixed?
        };
        let [k, width, _] = out.dims();
        let [b, p, d] = self.shape;
        Some(
            out.reshape([k, width, b, p, d])
                .permute([0, 2, 3, 1, 4])
                .reshape([k * b, p, width, d]),
        )
    }

    /// `Σ_f w[k, f, c] · diff_f` over the rows `f` that carry a nonzero weight for some circuit
    /// (`host` holds the 0/1 weights) → `[k, cols.len(), batch·pos·d]`. Only those rows are
    /// gathered, so the cost is (rows used) × columns × batch·pos·d: small for sparse masks.
    fn mix(
        &self,
        visible: usize,
        cols: std::ops::Range<usize>,
        host: &[Vec<bool>],
    ) -> Option<Tensor<3>> {
        let k = host.len();
        let nb = self.ablate.dims()[2];
        let width = cols.len();
        let device = self.ablate.device();
        let mut parts = Vec::new();
        let mut rows = Vec::new();
        for (row, diff) in &self.diffs {
            let n = diff.dims()[1];
            let end = (row + n).min(visible);
            let used: Vec<usize> = (*row..end)
                .filter(|&f| host.iter().any(|m| cols.clone().any(|c| m[f * nb + c])))
                .collect();
            if used.is_empty() {
                continue;
            }
            let local: Vec<i64> = used.iter().map(|&f| (f - row) as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(local, [used.len()]), &device);
            parts.push(diff.clone().select(1, idx));
            rows.extend(used);
        }
        if rows.is_empty() {
            return None;
        }
        let mut w = vec![0f32; k * width * rows.len()];
        for (ki, m) in host.iter().enumerate() {
            for (ci, c) in cols.clone().enumerate() {
                for (ri, &f) in rows.iter().enumerate() {
                    if m[f * nb + c] {
                        w[(ki * width + ci) * rows.len() + ri] = 1.0;
                    }
                }
            }
        }
        let w = Tensor::<3>::from_data(TensorData::new(w, [k, width, rows.len()]), &device);
        Some(w.matmul(Tensor::cat(parts, 1)))
    }

    /// The correction of the reader columns `cols`, which see rows `0..visible`. With
    /// `merged` (a layer's q, k and v column ranges, contiguous) the corrections of all of them
    /// come from one product and the others are cached for their own hooks.
    fn group_correction(
        &mut self,
        cols: &Range<usize>,
        visible: usize,
        merged: Option<&[Range<usize>]>,
    ) -> Option<Tensor<4>> {
        if let Some(i) = self.cached.iter().position(|(c, _)| *c == cols.start) {
            return Some(self.cached.swap_remove(i).1);
        }
        let Some(parts) = merged else {
            return self.correction(visible, cols.clone());
        };
        let (first, last) = (parts.first()?.start, parts.last()?.end);
        let all = self.correction(visible, first..last)?;
        let mut own = None;
        for part in parts {
            let slice = all
                .clone()
                .slice_dim(2, part.start - first..part.end - first);
            if part == cols {
                own = Some(slice);
            } else {
                self.cached.push((part.start, slice));
            }
        }
        own
    }
}

/// Registers the hooks of an edge-ablated run of `masks.len()` circuits stacked along the batch
/// (copy k of the batch runs circuit k). `ablated` is `[batch, pos, n_forward, d]`; each mask is
/// a row-major `[n_forward, n_backward]` boolean matrix of *ablated* edges.
pub(crate) fn ablation_hooks(
    model: &Transformer,
    map: &NodeMap,
    graph: &Graph,
    ablated: Tensor<4>,
    masks: &[Vec<bool>],
) -> Hooks {
    let (nf, nb, k) = (map.n_forward(), map.n_backward(), masks.len());
    let flat: Vec<f32> = masks
        .iter()
        .flat_map(|m| m.iter().map(|&a| f32::from(u8::from(a))))
        .collect();
    let keep_host: Vec<Vec<bool>> = masks
        .iter()
        .map(|m| {
            graph
                .valid_mask()
                .iter()
                .zip(m)
                .map(|(&v, &a)| v && !a)
                .collect()
        })
        .collect();
    let device = model.device();
    let state = Arc::new(Mutex::new(AblatedRun {
        diffs: Vec::new(),
        prefix: Vec::new(),
        ablated,
        ablate: Tensor::from_data(TensorData::new(flat, [k, nf, nb]), device),
        ablate_host: masks.to_vec(),
        keep_host,
        cached: Vec::new(),
        shape: [0; 3],
    }));
    let mut hooks = Hooks::new();
    for w in map.writers() {
        let (st, row) = (state.clone(), w.rows.start);
        hooks.map(w.point.clone(), move |a| {
            let chunk = match &a {
                Activation::Rank3(t) => t.clone().unsqueeze_dim::<4>(2),
                Activation::Rank4(t) => t.clone(),
            };
            st.lock().expect("hook state").record(row, chunk);
            a
        });
    }
    let touched = |visible: usize, cols: &Range<usize>| {
        masks
            .iter()
            .any(|m| (0..visible).any(|f| cols.clone().any(|c| m[f * nb + c])))
    };
    for r in map.readers() {
        // A layer's q, k and v inputs are corrected together by the q hook when the map says
        // they are contiguous; the k and v hooks then take their cached share.
        let span = match r.kind {
            ReaderKind::Attention(_) => map.attention_columns(r.layer),
            _ => None,
        };
        let merged: Option<Vec<Range<usize>>> = match (&span, r.kind) {
            (Some(_), ReaderKind::Attention(Qkv::Q)) => Some(
                map.readers()
                    .iter()
                    .filter(|o| o.layer == r.layer && matches!(o.kind, ReaderKind::Attention(_)))
                    .map(|o| o.cols.clone())
                    .collect(),
            ),
            _ => None,
        };
        if !touched(r.visible, span.as_ref().unwrap_or(&r.cols)) {
            continue;
        }
        let (st, cols, visible) = (state.clone(), r.cols.clone(), r.visible);
        hooks.map(r.point.clone(), move |a| {
            let corr =
                st.lock()
                    .expect("hook state")
                    .group_correction(&cols, visible, merged.as_deref());
            let Some(corr) = corr else {
                return a;
            };
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

fn check_finite(metric: &dyn Metric, vals: &[f32], batch: usize) -> Result<()> {
    match vals.iter().find(|v| !v.is_finite()) {
        Some(&value) => Err(CircuitError::NotFinite {
            metric: metric.name(),
            value,
            batch,
        }),
        None => Ok(()),
    }
}

/// Last-position logits of a clean forward.
pub(crate) fn clean_last_logits(model: &Transformer, batch: &PairBatch) -> Result<Tensor<2>> {
    Ok(model.forward_batch_at(&batch.clean, &batch.last, &mut Hooks::new())?)
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
        let corrupted =
            model.forward_batch_at(&batch.corrupted, &batch.last_corrupted, &mut Hooks::new())?;
        let c = to_vec(metric.per_example(clean.clone(), clean.clone(), &batch.targets))?;
        let k = to_vec(metric.per_example(corrupted, clean, &batch.targets))?;
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
    let opts = EvalOptions {
        ablation: ablation.clone(),
        batch_size,
        circuits_per_pass: 1,
        selection: Default::default(),
    };
    let circuit = graph.in_graph().to_vec();
    let out = evaluate_circuits_with_progress(
        model,
        graph,
        &[circuit],
        pairs,
        metric,
        &opts,
        &mut Silent,
    )?;
    out.into_iter()
        .next()
        .ok_or_else(|| CircuitError::Data("the evaluation returned no circuit".into()))
}

/// Evaluates several circuits of one graph, without progress reports: see
/// [`evaluate_circuits_with_progress`]. Returns `[circuit][example]`.
pub fn evaluate_circuits(
    model: &Transformer,
    graph: &Graph,
    circuits: &[Vec<bool>],
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &EvalOptions,
) -> Result<Vec<Vec<f32>>> {
    evaluate_circuits_with_progress(model, graph, circuits, pairs, metric, opts, &mut Silent)
}

/// The metric per example for each circuit (an `in_graph` mask over `graph`'s
/// `[n_forward, n_backward]` matrix), `opts.circuits_per_pass` circuits stacked into one
/// forward, ablated as `opts.ablation` says, `opts.batch_size` examples per batch
/// (`opts.selection` is not used: the circuits are given). Ticks `progress` once per forward
/// with the stage [`STAGE`].
///
/// A curve of k circuit sizes therefore costs about `k / circuits_per_pass` forwards of
/// `circuits_per_pass × batch` rows per batch, plus one clean and one corrupted forward — not k
/// independent evaluations. Returns `[circuit][example]`.
pub fn evaluate_circuits_with_progress(
    model: &Transformer,
    graph: &Graph,
    circuits: &[Vec<bool>],
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &EvalOptions,
    progress: &mut dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    let map = NodeMap::for_model(model, graph)?;
    let ablation = &opts.ablation;
    check_pairs(
        pairs,
        model.config().d_vocab,
        matches!(ablation, Ablation::Patching),
    )?;
    let n = graph.n_forward() * graph.n_backward();
    if let Some(bad) = circuits.iter().position(|c| c.len() != n) {
        return Err(CircuitError::Data(format!(
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
    let per_pass = opts.circuits_per_pass.max(1);
    let total = pairs.len().div_ceil(opts.batch_size.max(1)) * masks.len().div_ceil(per_pass);
    let mut done = 0;
    let mut out = vec![Vec::with_capacity(pairs.len()); circuits.len()];
    for (i, batch) in batches(model, pairs, opts.batch_size).enumerate() {
        let batch = batch?;
        let clean = clean_last_logits(model, &batch)?;
        let ablated = ablation.node_values(model, &map, &batch)?;
        for (c0, chunk) in masks.chunks(per_pass).enumerate() {
            let k = chunk.len();
            let mut hooks = ablation_hooks(model, &map, graph, ablated.clone(), chunk);
            let tokens = repeat_tokens(&batch.clean, k);
            let logits = model.forward_batch_at(&tokens, &tokens.last_positions(), &mut hooks)?;
            let clean_k = repeat_batch(clean.clone(), k);
            let targets = if k == 1 {
                batch.targets.clone()
            } else {
                batch.targets.repeat(k)
            };
            let vals = to_vec(metric.per_example(logits, clean_k, &targets))?;
            check_finite(metric, &vals, i)?;
            let b = batch.size();
            for (j, v) in vals.chunks(b).enumerate() {
                out[c0 * per_pass + j].extend_from_slice(v);
            }
            done += 1;
            report(progress, STAGE, done, total)?;
        }
    }
    Ok(out)
}

/// Normalized faithfulness `(m(C) − m(∅)) / (m(full) − m(∅))` (Hanna et al. 2024, §5).
pub fn normalized_faithfulness(circuit: f32, empty: f32, full: f32) -> f32 {
    (circuit - empty) / (full - empty)
}

/// Mean of a slice (0 for an empty one).
pub(crate) fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f32>() / v.len() as f32
    }
}
