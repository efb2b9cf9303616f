//! Faithfulness curves over circuit size, their areas (CPR, CMD), completeness, and overlap
//! between circuits.
//!
//! A curve point takes the top-n edges of a scored graph — by |score| (the default, as the
//! EAP-IG paper does), by signed score, or grown greedily from the logits ([`Selection`]) — then
//! prunes dangling nodes, as the EAP-IG reference does before evaluating, and measures
//! normalized faithfulness
//! `(m(C) − m(∅)) / (m(full) − m(∅))`. The MIB benchmark (Mueller et al. 2025) summarizes a curve
//! by CPR, the area under it, and CMD, the area between it and 1; both are taken here with the
//! trapezoid rule over the edge fraction and divided by the fraction range covered, so a curve
//! that is 1 everywhere has CPR 1 and CMD 0.

use fidelis_graph::Graph;
use fidelis_models::Transformer;
use serde::Serialize;

use fidelis_circuit::{Ablation, CircuitError, Metric, Progress, PromptPair, Result, Silent};

use crate::evaluate::{evaluate_baseline, evaluate_circuits_with_progress, mean};

/// The edge fractions at which MIB evaluates circuits: 0.1 % … 100 %.
pub const MIB_FRACTIONS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// One point of a faithfulness curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Edges asked for (top-n by |score|).
    pub requested_edges: usize,
    /// Edges left after pruning.
    pub edges: usize,
    /// `edges / n_edges`.
    pub fraction: f64,
    /// Mean metric with every other edge ablated.
    pub metric: f32,
    /// Normalized faithfulness of the mean metric.
    pub faithfulness: f32,
}

/// A faithfulness curve with its baseline and areas.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    /// Mean metric on the clean prompts.
    pub clean: f32,
    /// Mean metric with every edge ablated (the empty circuit).
    pub empty: f32,
    /// The points, by increasing size.
    pub points: Vec<CurvePoint>,
    /// Area under the curve over the edge fraction (higher is better).
    pub cpr: f64,
    /// Area between the curve and 1 (lower is better).
    pub cmd: f64,
}

impl Curve {
    /// The smallest circuit whose faithfulness reaches `level`, if any.
    pub fn first_reaching(&self, level: f32) -> Option<&CurvePoint> {
        self.points.iter().find(|p| p.faithfulness >= level)
    }
}

/// Circuit sizes (edge counts) for the MIB fractions of `n_edges`, at least one edge each,
/// without repeats (a small graph maps several fractions to one count).
pub fn mib_sizes(n_edges: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = MIB_FRACTIONS
        .iter()
        .map(|f| ((f * n_edges as f64).round() as usize).clamp(1, n_edges.max(1)))
        .collect();
    sizes.dedup();
    sizes
}

fidelis_circuit::option_enum! {
    "selection",
    /// How a circuit of n edges is chosen from a scored graph. Names: `abs`, `signed`, `greedy`
    /// (one table for `Display`, `FromStr`, serde and the CLI).
    #[derive(Default)]
    #[strum(serialize_all = "kebab-case")]
    pub enum Selection {
        /// The n edges of largest |score| (the EAP-IG paper and MIB).
        #[default]
        #[strum(to_string = "abs", serialize = "top-abs")]
        TopAbs,
        /// The n edges of largest signed score: edges whose ablation helps the metric come last.
        #[strum(to_string = "signed", serialize = "top-signed")]
        TopSigned,
        /// Greedy growth from the logits by |score| (the reference's `greedy`).
        Greedy,
    }
}

/// The pruned top-`n` circuit of a scored graph (by |score|).
pub fn top_circuit(scored: &Graph, n: usize) -> Result<Graph> {
    select_circuit(scored, n, Selection::TopAbs)
}

/// The pruned circuit of `n` edges chosen by `selection`.
pub fn select_circuit(scored: &Graph, n: usize, selection: Selection) -> Result<Graph> {
    let mut g = scored.clone();
    let n = n.min(g.n_edges());
    match selection {
        Selection::TopAbs => g.apply_topn(n, true)?,
        Selection::TopSigned => g.apply_topn(n, false)?,
        Selection::Greedy => g.apply_greedy(n, true)?,
    }
    g.prune();
    Ok(g)
}

/// Options shared by curve and completeness evaluations.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// What ablated edges carry.
    pub ablation: Ablation,
    /// Examples per batch.
    pub batch_size: usize,
    /// Circuits stacked into one forward.
    pub circuits_per_pass: usize,
    /// How each size's circuit is chosen.
    pub selection: Selection,
}

impl EvalOptions {
    /// Circuits stacked into one forward by default.
    pub const DEFAULT_CIRCUITS_PER_PASS: usize = 4;

    /// The defaults with `ablation`: batches of 16, four circuits per forward, top edges by
    /// |score|.
    pub fn new(ablation: Ablation) -> Self {
        Self {
            ablation,
            batch_size: 16,
            circuits_per_pass: Self::DEFAULT_CIRCUITS_PER_PASS,
            selection: Selection::default(),
        }
    }
}

/// The faithfulness curve of `scored` at the given sizes, without progress reports: see
/// [`faithfulness_curve_with_progress`].
pub fn faithfulness_curve(
    model: &Transformer,
    scored: &Graph,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    sizes: &[usize],
    opts: &EvalOptions,
) -> Result<Curve> {
    faithfulness_curve_with_progress(model, scored, pairs, metric, sizes, opts, &mut Silent)
}

/// The faithfulness curve of `scored` at the given sizes.
pub fn faithfulness_curve_with_progress(
    model: &Transformer,
    scored: &Graph,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    sizes: &[usize],
    opts: &EvalOptions,
    progress: &mut dyn Progress,
) -> Result<Curve> {
    if sizes.is_empty() {
        return Err(CircuitError::Data("no circuit sizes to evaluate".into()));
    }
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    let n_edges = scored.n_edges();
    let circuits: Vec<Graph> = sizes
        .iter()
        .map(|&n| select_circuit(scored, n, opts.selection))
        .collect::<Result<_>>()?;
    let mut masks: Vec<Vec<bool>> = circuits.iter().map(|g| g.in_graph().to_vec()).collect();
    masks.push(vec![false; masks[0].len()]);
    let values =
        evaluate_circuits_with_progress(model, scored, &masks, pairs, metric, opts, progress)?;
    let clean = mean(&evaluate_baseline(model, pairs, metric, opts.batch_size)?.clean);
    let empty = mean(&values[sizes.len()]);
    let points: Vec<CurvePoint> = sizes
        .iter()
        .zip(&circuits)
        .zip(&values)
        .map(|((&requested_edges, g), v)| {
            let m = mean(v);
            CurvePoint {
                requested_edges,
                edges: g.n_edges_in_graph(),
                fraction: g.n_edges_in_graph() as f64 / n_edges as f64,
                metric: m,
                faithfulness: (m - empty) / (clean - empty),
            }
        })
        .collect();
    let (cpr, cmd) = areas(&points);
    Ok(Curve {
        clean,
        empty,
        points,
        cpr,
        cmd,
    })
}

/// CPR and CMD of a curve (trapezoids over the edge fraction, divided by the range).
pub fn areas(points: &[CurvePoint]) -> (f64, f64) {
    let (mut under, mut between) = (0.0, 0.0);
    for w in points.windows(2) {
        let dx = w[1].fraction - w[0].fraction;
        let (f0, f1) = (f64::from(w[0].faithfulness), f64::from(w[1].faithfulness));
        under += dx * (f0 + f1) / 2.0;
        between += dx * ((1.0 - f0).abs() + (1.0 - f1).abs()) / 2.0;
    }
    let range = match (points.first(), points.last()) {
        (Some(a), Some(b)) if b.fraction > a.fraction => b.fraction - a.fraction,
        _ => return (0.0, 0.0),
    };
    (under / range, between / range)
}

/// How much of the behaviour the rest of the model carries without the circuit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completeness {
    /// Mean metric of the circuit alone.
    pub circuit_metric: f32,
    /// Normalized faithfulness of the circuit.
    pub circuit_faithfulness: f32,
    /// Mean metric of the full model with the circuit's own edges ablated (the complement).
    pub complement_metric: f32,
    /// Normalized faithfulness of the complement: near 0 when the circuit is complete (nothing
    /// outside it does the task), near 1 when the model does the task without it.
    pub complement_faithfulness: f32,
}

/// Evaluates a circuit and its complement, without progress reports: see
/// [`completeness_with_progress`].
pub fn completeness(
    model: &Transformer,
    circuit: &Graph,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &EvalOptions,
) -> Result<Completeness> {
    completeness_with_progress(model, circuit, pairs, metric, opts, &mut Silent)
}

/// Evaluates a circuit (`circuit.in_graph()`) and its complement in one stacked pass.
pub fn completeness_with_progress(
    model: &Transformer,
    circuit: &Graph,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &EvalOptions,
    progress: &mut dyn Progress,
) -> Result<Completeness> {
    let inside = circuit.in_graph().to_vec();
    let complement: Vec<bool> = circuit
        .valid_mask()
        .iter()
        .zip(&inside)
        .map(|(&v, &i)| v && !i)
        .collect();
    let empty = vec![false; inside.len()];
    let masks = [inside, complement, empty];
    let v = evaluate_circuits_with_progress(model, circuit, &masks, pairs, metric, opts, progress)?;
    let clean = mean(&evaluate_baseline(model, pairs, metric, opts.batch_size)?.clean);
    let (c, k, e) = (mean(&v[0]), mean(&v[1]), mean(&v[2]));
    Ok(Completeness {
        circuit_metric: c,
        circuit_faithfulness: (c - e) / (clean - e),
        complement_metric: k,
        complement_faithfulness: (k - e) / (clean - e),
    })
}

/// Overlap of two circuits' edges and nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overlap {
    /// Edges in both circuits.
    pub shared_edges: usize,
    /// Edges in either circuit.
    pub union_edges: usize,
    /// `shared / union` of edges (1 when both are empty).
    pub edge_iou: f64,
    /// Nodes in both circuits.
    pub shared_nodes: usize,
    /// Nodes in either circuit.
    pub union_nodes: usize,
    /// `shared / union` of nodes (1 when both are empty).
    pub node_iou: f64,
    /// Edges only in the first circuit.
    pub only_first: usize,
    /// Edges only in the second circuit.
    pub only_second: usize,
}

/// Edge and node overlap of the circuits of two graphs of the same shape.
pub fn overlap(a: &Graph, b: &Graph) -> Result<Overlap> {
    if a.cfg() != b.cfg() {
        return Err(CircuitError::Data(format!(
            "graphs of different shapes: {:?} vs {:?}",
            a.cfg(),
            b.cfg()
        )));
    }
    let count = |x: &[bool], y: &[bool], f: fn(bool, bool) -> bool| {
        x.iter().zip(y).filter(|(p, q)| f(**p, **q)).count()
    };
    let (ea, eb) = (a.in_graph(), b.in_graph());
    let (na, nb) = (a.nodes_in_graph(), b.nodes_in_graph());
    let iou = |s: usize, u: usize| if u == 0 { 1.0 } else { s as f64 / u as f64 };
    let (shared_edges, union_edges) = (count(ea, eb, |p, q| p && q), count(ea, eb, |p, q| p || q));
    let (shared_nodes, union_nodes) = (count(na, nb, |p, q| p && q), count(na, nb, |p, q| p || q));
    Ok(Overlap {
        shared_edges,
        union_edges,
        edge_iou: iou(shared_edges, union_edges),
        shared_nodes,
        union_nodes,
        node_iou: iou(shared_nodes, union_nodes),
        only_first: count(ea, eb, |p, q| p && !q),
        only_second: count(ea, eb, |p, q| !p && q),
    })
}

/// Spearman's rank correlation of the scores of the edges two graphs of the same shape share:
/// the Pearson correlation of their ranks, tied scores taking the mean of the ranks they span.
/// `None` when fewer than two edges or one side's scores are all equal.
pub fn score_rank_correlation(a: &Graph, b: &Graph) -> Result<Option<f64>> {
    if a.cfg() != b.cfg() {
        return Err(CircuitError::Data(format!(
            "graphs of different shapes: {:?} vs {:?}",
            a.cfg(),
            b.cfg()
        )));
    }
    let edges: Vec<usize> = a.edge_indices().collect();
    let pick =
        |g: &Graph| -> Vec<f64> { edges.iter().map(|&i| f64::from(g.scores()[i])).collect() };
    Ok(spearman(&pick(a), &pick(b)))
}

/// How many of the `n` edges of largest |score| in `a` are also among the `n` of largest |score|
/// in `b` (before any pruning; ties broken by edge index).
pub fn top_score_overlap(a: &Graph, b: &Graph, n: usize) -> Result<usize> {
    if a.cfg() != b.cfg() {
        return Err(CircuitError::Data(format!(
            "graphs of different shapes: {:?} vs {:?}",
            a.cfg(),
            b.cfg()
        )));
    }
    let top = |g: &Graph| -> std::collections::HashSet<usize> {
        let mut edges: Vec<usize> = g.edge_indices().collect();
        edges.sort_by(|&i, &j| {
            g.scores()[j]
                .abs()
                .total_cmp(&g.scores()[i].abs())
                .then(i.cmp(&j))
        });
        edges.into_iter().take(n).collect()
    };
    Ok(top(a).intersection(&top(b)).count())
}

/// Spearman's ρ of two equally long samples (mean ranks for ties); `None` when fewer than two
/// values or when either sample is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = rx.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// 1-based ranks of `v`, ties sharing the mean of their ranks (NaN sorts last).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut out = vec![0.0; v.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && v[order[end]] == v[order[start]] {
            end += 1;
        }
        let mean = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            out[i] = mean;
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: x = (1, 2, 3, 4, 5) against y = (5, 6, 7, 8, 7) has ranks (1, 2, 3.5, 5, 3.5);
    /// about their mean 3 the deviations are (−2, −1, 0, 1, 2) and (−2, −1, 0.5, 2, 0.5), so
    /// ρ = 8 / √(10 · 9.5) = 0.8208.
    #[test]
    fn spearman_on_hand_computed_cases() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(ranks(&[5.0, 6.0, 7.0, 8.0, 7.0]), [1.0, 2.0, 3.5, 5.0, 3.5]);
        let rho = spearman(&x, &[5.0, 6.0, 7.0, 8.0, 7.0]).unwrap();
        assert!((rho - 8.0 / (10.0f64 * 9.5).sqrt()).abs() < 1e-12, "{rho}");
        // Monotone maps keep ρ = 1; reversing gives −1.
        assert_eq!(spearman(&x, &[1.0, 10.0, 100.0, 1e3, 1e4]), Some(1.0));
        assert_eq!(spearman(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&x, &[2.0; 5]), None);
        assert_eq!(spearman(&[1.0], &[1.0]), None);
    }

    #[test]
    fn top_overlap_and_rank_correlation_of_graphs() {
        let mut a = Graph::new(fidelis_graph::GraphConfig::new(1, 2, false));
        let mut b = a.clone();
        let edges: Vec<usize> = a.edge_indices().collect();
        let nb = a.n_backward();
        for (k, &i) in edges.iter().enumerate() {
            a.set_score(i / nb, i % nb, k as f32);
            // b: the same order but the two largest swapped with the two smallest in |score|.
            let v = match k {
                0 => edges.len() as f32,
                1 => edges.len() as f32 + 1.0,
                _ => k as f32 - 0.5,
            };
            b.set_score(i / nb, i % nb, -v);
        }
        // a's top 2 are the last two edges; b's are the first two.
        assert_eq!(top_score_overlap(&a, &b, 2).unwrap(), 0);
        assert_eq!(top_score_overlap(&a, &b, 4).unwrap(), 2);
        assert_eq!(top_score_overlap(&a, &a, 3).unwrap(), 3);
        assert_eq!(score_rank_correlation(&a, &a).unwrap(), Some(1.0));
        assert!(score_rank_correlation(&a, &b).unwrap().unwrap() < 0.0);
    }
    use fidelis_graph::GraphConfig;

    /// One layer, one head. Rows: input 0, a0.h0 1, m0 2; columns: q 0, k 1, v 2, m0 3,
    /// logits 4. input→logits is the largest |score| but negative; input→m0→logits is the
    /// best positive path.
    fn scored() -> Graph {
        let mut g = Graph::new(GraphConfig::new(1, 1, false));
        for (f, b) in (0..3).flat_map(|f| (0..5).map(move |b| (f, b))) {
            if g.is_edge(f, b) {
                g.set_score(f, b, 0.1);
            }
        }
        g.set_score(0, 4, -5.0);
        g.set_score(0, 3, 4.0);
        g.set_score(2, 4, 3.5);
        g
    }

    fn edges(g: &Graph) -> Vec<(usize, usize)> {
        (0..3)
            .flat_map(|f| (0..5).map(move |b| (f, b)))
            .filter(|&(f, b)| g.in_graph()[f * 5 + b])
            .collect()
    }

    #[test]
    fn selection_rules_pick_different_circuits() {
        let g = scored();
        // |score|: input→logits and input→m0; m0 then reaches no reader, so pruning drops it.
        assert_eq!(
            edges(&select_circuit(&g, 2, Selection::TopAbs).unwrap()),
            [(0, 4)]
        );
        // Signed: the positive path input→m0→logits.
        assert_eq!(
            edges(&select_circuit(&g, 2, Selection::TopSigned).unwrap()),
            [(0, 3), (2, 4)]
        );
        // Greedy from the logits: input→logits, then m0→logits (m0 is not yet fed, so pruned);
        // with three edges input→m0 joins and the path survives.
        assert_eq!(
            edges(&select_circuit(&g, 2, Selection::Greedy).unwrap()),
            [(0, 4)]
        );
        assert_eq!(
            edges(&select_circuit(&g, 3, Selection::Greedy).unwrap()),
            [(0, 3), (0, 4), (2, 4)]
        );
        assert_eq!("signed".parse::<Selection>(), Ok(Selection::TopSigned));
        assert!(
            "best"
                .parse::<Selection>()
                .unwrap_err()
                .to_string()
                .contains("best")
        );
    }
}
