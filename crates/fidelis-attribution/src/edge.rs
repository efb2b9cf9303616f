//! Edge attribution scores (Hanna, Pezzelle & Belinkov 2024, §3).
//!
//! For an upstream node u and a reader input v, with `Δa_u = ã_u − a_u(clean)` (ã the corrupted
//! output, a dataset mean or zero) and L the loss of [`loss_per_example`]:
//! - **EAP**: `Σ_examples Σ_pos Δa_u · ∂L/∂in_v` at the clean input.
//! - **EAP-IG (inputs)**: the gradient averaged over m points `x' + (k/m)(x − x')`,
//!   k = 0..m−1, between the corrupted (x') and clean (x) input embeddings — the Riemann sum of
//!   the EAP-IG reference.
//! - **EAP-IG (activations)**: the gradient averaged over m points k = 1..m on which the outputs
//!   of u's group (the input, one layer's heads, or one MLP) are interpolated
//!   `ã + (k/m)(a − ã)` while the rest of the run stays clean. Each edge uses the interpolations
//!   of its own upstream group, which is the paper's formula; the reference code averages every
//!   reader's gradient over all groups' interpolations instead.
//! - **clean-corrupted**: the gradient averaged over the clean and the corrupted input.
//! - **exact** ([`crate::exact`]): the true change of L when the one edge is patched.
//!
//! Every gradient method gathers Δa for all nodes in one recording pass, gets all reader
//! gradients from one backward, and forms the whole `[n_forward, n_backward]` score block of a
//! batch as one batched matrix product ([`contract`]). Scores are means over examples.
//!
//! EAP-IG on activations costs `(2L + 1)·m` passes per batch, as in the reference. Two things
//! make them cheaper here without changing a number: a group's passes start at its layer from
//! the clean residual stream (nothing upstream of the group differs from the clean run), and
//! groups run on [`EdgeAttribution::workers`] threads.

use burn::prelude::*;
use fidelis_faithfulness::data::{PairBatch, PromptPair, batches, check_pairs};
use fidelis_faithfulness::evaluate::check_graph_fits;
use fidelis_faithfulness::nodes::{columns_before, contract, input_point};
use fidelis_faithfulness::{Ablation, Metric};
use fidelis_graph::Graph;
use fidelis_models::{Activation, Transformer, point};

use crate::gradient::{CleanRun, PassContext, Start, clean_run, repeat};
use crate::{AttributionError, Result};

pub use crate::gradient::loss_per_example;

/// An edge attribution method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Edge attribution patching: one gradient at the clean input.
    Eap,
    /// EAP with integrated gradients over the input embeddings.
    EapIgInputs,
    /// EAP with integrated gradients over each node group's activations.
    EapIgActivations,
    /// Gradients averaged over the clean and the corrupted input.
    CleanCorrupted,
    /// True single-edge patching effects.
    Exact,
}

impl Method {
    /// Every method with its command-line name.
    pub const ALL: [(Self, &'static str); 5] = [
        (Self::Eap, "eap"),
        (Self::EapIgInputs, "eap-ig-inputs"),
        (Self::EapIgActivations, "eap-ig-activations"),
        (Self::CleanCorrupted, "clean-corrupted"),
        (Self::Exact, "exact"),
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(m, _)| *m == self)
            .map_or("?", |(_, n)| n)
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.to_ascii_lowercase();
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(m, _)| *m)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
                format!(
                    "unknown method {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// How a score is aggregated over the d_model dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    /// Sum over dimensions (the EAP-IG default).
    #[default]
    Sum,
    /// Mean over dimensions (the sum divided by d_model).
    Mean,
}

/// Options of [`attribute_edges`].
#[derive(Debug, Clone)]
pub struct EdgeAttribution {
    /// The method.
    pub method: Method,
    /// Interpolation steps m of the EAP-IG methods (the paper uses 5).
    pub steps: usize,
    /// What Δa is measured against: patching (corrupted prompts), mean or zero.
    pub ablation: Ablation,
    /// Aggregation over d_model of the gradient methods.
    pub aggregation: Aggregation,
    /// Examples per batch.
    pub batch_size: usize,
    /// Interpolation steps stacked into one forward/backward (memory × this).
    pub steps_per_pass: usize,
    /// Edges patched per forward by [`Method::Exact`] (memory × this).
    pub exact_edges_per_pass: usize,
    /// Restrict [`Method::Exact`] to these `(row, column)` edges; the others keep score 0.
    pub exact_subset: Option<Vec<(usize, usize)>>,
    /// Forward/backward passes of [`Method::EapIgActivations`] run at once, each on its own
    /// thread (its node groups are independent). Worth the cores on a CPU backend, where one
    /// pass keeps little more than one core busy; memory × this.
    pub workers: usize,
}

impl EdgeAttribution {
    /// The defaults for `method`: 5 steps, patching, sum, batches of 16.
    pub fn new(method: Method) -> Self {
        Self {
            method,
            steps: 5,
            ablation: Ablation::Patching,
            aggregation: Aggregation::Sum,
            batch_size: 16,
            steps_per_pass: 1,
            exact_edges_per_pass: 32,
            exact_subset: None,
            workers: 1,
        }
    }

    fn check(&self) -> Result<()> {
        let patching_only = matches!(self.method, Method::EapIgInputs | Method::CleanCorrupted);
        if patching_only && !matches!(self.ablation, Ablation::Patching) {
            return Err(AttributionError::Options(format!(
                "{} interpolates towards the corrupted prompt and needs patching, not {} ablation",
                self.method.name(),
                self.ablation.name()
            )));
        }
        if self.steps == 0 || self.batch_size == 0 || self.steps_per_pass == 0 || self.workers == 0
        {
            return Err(AttributionError::Options(
                "steps, batch size, steps per pass and workers must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Progress of a long attribution: `done` of `total` units (forward/backward passes).
pub type ProgressFn<'a> = &'a mut dyn FnMut(usize, usize);

/// Scores every edge of `graph` with `opts.method` on `pairs` and stores the scores in the
/// graph (invalid positions stay 0). Returns the `[n_forward, n_backward]` score matrix.
pub fn attribute_edges(
    model: &Transformer,
    graph: &mut Graph,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &EdgeAttribution,
    progress: ProgressFn<'_>,
) -> Result<Vec<f32>> {
    opts.check()?;
    check_graph_fits(model, graph)?;
    let needs_equal = matches!(opts.ablation, Ablation::Patching);
    check_pairs(pairs, model.config().d_vocab, needs_equal)?;
    let (nf, nb) = (graph.n_forward(), graph.n_backward());
    let mut scores = if opts.method == Method::Exact {
        crate::exact::exact_scores(model, graph, pairs, metric, opts, progress)?
    } else {
        gradient_scores(model, pairs, metric, opts, progress)?
    };
    if opts.aggregation == Aggregation::Mean && opts.method != Method::Exact {
        let d = model.config().d_model as f32;
        scores.iter_mut().for_each(|s| *s /= d);
    }
    for (s, valid) in scores.iter_mut().zip(graph.valid_mask()) {
        if !valid {
            *s = 0.0;
        }
    }
    graph.set_scores(&scores, nf, nb)?;
    Ok(scores)
}

/// Forward/backward passes per batch of a gradient method.
pub fn passes_per_batch(method: Method, steps: usize, n_layers: usize) -> usize {
    match method {
        Method::Eap => 1,
        Method::CleanCorrupted => 2,
        Method::EapIgInputs => steps,
        Method::EapIgActivations => (2 * n_layers + 1) * steps,
        Method::Exact => 0,
    }
}

fn gradient_scores(
    model: &Transformer,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &EdgeAttribution,
    progress: ProgressFn<'_>,
) -> Result<Vec<f32>> {
    let n_batches = pairs.len().div_ceil(opts.batch_size);
    let per_batch = passes_per_batch(opts.method, opts.steps, model.config().n_layers);
    let total = n_batches * per_batch;
    let mut done = 0;
    let mut sum: Option<Tensor<2>> = None;
    for batch in batches(model, pairs, opts.batch_size) {
        let batch = batch?;
        let block = batch_scores(model, &batch, metric, opts, &mut |k| {
            done += k;
            progress(done, total);
        })?;
        sum = Some(match sum {
            Some(s) => s + block,
            None => block,
        });
    }
    let sum = sum.ok_or_else(|| AttributionError::Options("no examples".into()))?;
    let scores = sum / pairs.len() as f32;
    Ok(fidelis_faithfulness::evaluate::values(scores))
}

/// The summed `[n_forward, n_backward]` score block of one batch.
fn batch_scores(
    model: &Transformer,
    batch: &PairBatch,
    metric: &dyn Metric,
    opts: &EdgeAttribution,
    tick: &mut dyn FnMut(usize),
) -> Result<Tensor<2>> {
    let clean = clean_run(model, &batch.clean, opts.method == Method::EapIgActivations)?;
    let ablated = opts.ablation.node_values(model, batch)?;
    let delta = ablated.clone() - clean.outputs.clone();
    let ctx = PassContext {
        model,
        metric,
        clean_logits: clean.last_logits.clone(),
        targets: &batch.targets,
    };
    match opts.method {
        Method::Eap => {
            let g = ctx.reader_grads(&batch.clean, 1, |_| {})?;
            tick(1);
            Ok(contract(delta, g))
        }
        Method::CleanCorrupted => {
            let g_clean = ctx.reader_grads(&batch.clean, 1, |_| {})?;
            tick(1);
            let g_corrupted = ctx.reader_grads(&batch.corrupted, 1, |_| {})?;
            tick(1);
            Ok(contract(delta, (g_clean + g_corrupted) / 2.0))
        }
        Method::EapIgInputs => {
            let input = |t: &Tensor<4>| t.clone().slice_dim(2, 0..1).squeeze_dim::<3>(2);
            let (x_clean, x_corrupted) = (input(&clean.outputs), input(&ablated));
            let alphas: Vec<f32> = (0..opts.steps)
                .map(|k| k as f32 / opts.steps as f32)
                .collect();
            let g = integrated(
                &ctx,
                batch,
                &alphas,
                opts,
                &Start::Embeddings,
                tick,
                |alpha| {
                    let x = x_corrupted.clone() + (x_clean.clone() - x_corrupted.clone()) * alpha;
                    vec![(input_point(), Activation::Rank3(x))]
                },
            )?;
            Ok(contract(delta, g))
        }
        Method::EapIgActivations => activation_ig(&ctx, batch, &clean, &ablated, delta, opts, tick),
        Method::Exact => unreachable!("exact scores are computed by crate::exact"),
    }
}

/// Mean over `alphas` of the reader gradients of runs whose hooks `replace(alpha)` sets up,
/// `opts.steps_per_pass` interpolation points stacked per forward/backward.
fn integrated(
    ctx: &PassContext<'_>,
    batch: &PairBatch,
    alphas: &[f32],
    opts: &EdgeAttribution,
    start: &Start,
    tick: &mut dyn FnMut(usize),
    replace: impl Fn(f32) -> Vec<(String, Activation)>,
) -> Result<Tensor<4>> {
    let mut total: Option<Tensor<4>> = None;
    for chunk in alphas.chunks(opts.steps_per_pass) {
        let copies = chunk.len();
        let tokens = repeat(&batch.clean, copies);
        let mut stacked: Vec<(String, Vec<Activation>)> = Vec::new();
        for &alpha in chunk {
            for (i, (pt, act)) in replace(alpha).into_iter().enumerate() {
                if stacked.len() <= i {
                    stacked.push((pt, Vec::new()));
                }
                stacked[i].1.push(act);
            }
        }
        let g = ctx.reader_grads_from(&tokens, copies, start, |hooks| {
            for (pt, acts) in stacked {
                hooks.replace(pt, cat_activations(acts));
            }
        })?;
        tick(copies);
        total = Some(match total {
            Some(t) => t + g,
            None => g,
        });
    }
    let total = total.ok_or_else(|| AttributionError::Options("no steps".into()))?;
    Ok(total / alphas.len() as f32)
}

fn cat_activations(acts: Vec<Activation>) -> Activation {
    if let Some(Activation::Rank4(_)) = acts.first() {
        Activation::Rank4(Tensor::cat(
            acts.iter().filter_map(Activation::rank4).collect(),
            0,
        ))
    } else {
        Activation::Rank3(Tensor::cat(
            acts.iter().filter_map(Activation::rank3).collect(),
            0,
        ))
    }
}

/// EAP-IG on activations: for each node group (input, the heads of a layer, an MLP), integrate
/// the reader gradients while that group's outputs move from the ablated to the clean value.
///
/// Everything upstream of a group's layer is clean in those runs, so each run starts at the
/// group's layer from the recorded clean residual stream and only the readers from that layer
/// on are differentiated: about half the work of running every pass from the embeddings, with
/// the same gradients.
#[allow(clippy::too_many_arguments)]
fn activation_ig(
    ctx: &PassContext<'_>,
    batch: &PairBatch,
    clean: &CleanRun,
    ablated: &Tensor<4>,
    delta: Tensor<4>,
    opts: &EdgeAttribution,
    tick: &mut dyn FnMut(usize),
) -> Result<Tensor<2>> {
    let cfg = ctx.model.config();
    let h = cfg.n_heads;
    let nb = columns_before(cfg, cfg.n_layers) + 1;
    let alphas: Vec<f32> = (1..=opts.steps)
        .map(|k| k as f32 / opts.steps as f32)
        .collect();
    let mut groups: Vec<Group> = vec![(input_point(), 0..1, Start::Embeddings)];
    for l in 0..cfg.n_layers {
        let first = 1 + l * (h + 1);
        let start = Start::Layer(l, Box::new(clean.resid_pre[l].clone()));
        groups.push((point::result(l), first..first + h, start.clone()));
        groups.push((point::mlp_out(l), first + h..first + h + 1, start));
    }
    let run = |(pt, range, start): &Group, tick: &mut dyn FnMut(usize)| -> Result<Tensor<2>> {
        let (a, c) = (
            clean.outputs.clone().slice_dim(2, range.clone()),
            ablated.clone().slice_dim(2, range.clone()),
        );
        let rank3 = range.len() == 1;
        let g = integrated(ctx, batch, &alphas, opts, start, tick, |alpha| {
            let x = c.clone() + (a.clone() - c.clone()) * alpha;
            let act = if rank3 {
                Activation::Rank3(x.squeeze_dim::<3>(2))
            } else {
                Activation::Rank4(x)
            };
            vec![(pt.clone(), act)]
        })?;
        let skipped = columns_before(cfg, start.layer());
        let block = contract(delta.clone().slice_dim(2, range.clone()), g);
        let row = if skipped == 0 {
            block
        } else {
            let zeros = Tensor::zeros([range.len(), skipped], ctx.model.device());
            Tensor::cat(vec![zeros, block], 1)
        };
        debug_assert_eq!(row.dims()[1], nb);
        Ok(row)
    };
    let rows = if opts.workers <= 1 {
        groups
            .iter()
            .map(|group| run(group, &mut *tick))
            .collect::<Result<Vec<_>>>()?
    } else {
        in_parallel(&groups, opts.workers, tick, run)?
    };
    Ok(Tensor::cat(rows, 0))
}

/// A node group of EAP-IG on activations: its output hook point, its rows, where its passes
/// start.
type Group = (String, std::ops::Range<usize>, Start);

/// Runs `run` on every group with `workers` threads, in any order, and returns the results in
/// group order. Progress ticks reach `tick` on the calling thread, so a callback that unwinds
/// (a cancelled job) stops the workers at their next tick.
fn in_parallel(
    groups: &[Group],
    workers: usize,
    tick: &mut dyn FnMut(usize),
    run: impl Fn(&Group, &mut dyn FnMut(usize)) -> Result<Tensor<2>> + Sync,
) -> Result<Vec<Tensor<2>>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Mutex, mpsc};
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<Tensor<2>>>>> =
        groups.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<usize>();
        for _ in 0..workers.min(groups.len()) {
            let tx = tx.clone();
            let (next, stop, results, run) = (&next, &stop, &results, &run);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= groups.len() || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut report = |k: usize| {
                        if tx.send(k).is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                    };
                    let r = run(&groups[i], &mut report);
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
        drop(tx);
        for k in rx {
            tick(k);
        }
    });
    // The first real error wins over the groups that were skipped because of it.
    let mut rows = Vec::with_capacity(groups.len());
    let mut skipped = false;
    for slot in results {
        match slot.into_inner().ok().flatten() {
            Some(Ok(row)) => rows.push(row),
            Some(Err(e)) => return Err(e),
            None => skipped = true,
        }
    }
    if skipped {
        return Err(AttributionError::Options(
            "a worker stopped before scoring its node group".into(),
        ));
    }
    Ok(rows)
}
