//! Edge attribution scores (Hanna, Pezzelle & Belinkov 2024, §3).
//!
//! For an upstream node u and a reader input v, with `Δa_u = ã_u − a_u(clean)` (ã the corrupted
//! output, a dataset mean or zero) and L the loss of [`fidelis_circuit::loss_per_example`]:
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

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::DType;
use fidelis_circuit::contract::flatten_rows;
use fidelis_circuit::data::{PairBatch, PromptPair, batches, check_pairs, repeat_tokens};
use fidelis_circuit::progress::report;
use fidelis_circuit::runs::{CleanRun, PassContext, Start, clean_run};
use fidelis_circuit::{Ablation, Metric, NodeMap, Progress, Silent, to_vec};
use fidelis_graph::Graph;
use fidelis_models::{Activation, Hooks, Transformer};

use crate::{AttributionError, Result};

/// The stage name edge attribution reports to its [`Progress`].
pub const STAGE: &str = "scoring edges";

fidelis_circuit::option_enum! {
    "method",
    /// A gradient edge attribution method (exact patching has its own entry point,
    /// [`crate::exact::exact_edges`]; [`crate::EdgeMethod`] names all five).
    #[strum(serialize_all = "kebab-case", ascii_case_insensitive)]
    pub enum Method {
        /// Edge attribution patching: one gradient at the clean input.
        Eap,
        /// EAP with integrated gradients over the input embeddings.
        EapIgInputs,
        /// EAP with integrated gradients over each node group's activations.
        EapIgActivations,
        /// Gradients averaged over the clean and the corrupted input.
        CleanCorrupted,
    }
}

fidelis_circuit::option_enum! {
    "aggregation",
    /// How a score is aggregated over the d_model dimension (`sum`, `mean`).
    #[derive(Default)]
    #[strum(serialize_all = "kebab-case")]
    pub enum Aggregation {
        /// Sum over dimensions (the EAP-IG default).
        #[default]
        Sum,
        /// Mean over dimensions (the sum divided by d_model).
        Mean,
    }
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

/// Scores every edge of `graph` with `opts.method` on `pairs`, without progress reports: see
/// [`attribute_edges_with_progress`].
pub fn attribute_edges(
    model: &Transformer,
    graph: &mut Graph,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &EdgeAttribution,
) -> Result<Vec<f32>> {
    attribute_edges_with_progress(model, graph, pairs, metric, opts, &mut Silent)
}

/// Scores every edge of `graph` with `opts.method` on `pairs` and stores the scores in the
/// graph (invalid positions stay 0). Returns the `[n_forward, n_backward]` score matrix.
/// Ticks `progress` after every forward/backward pass (stage [`STAGE`]); a `Break` from it
/// stops the work with [`AttributionError::is_cancelled`].
pub fn attribute_edges_with_progress(
    model: &Transformer,
    graph: &mut Graph,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &EdgeAttribution,
    progress: &mut dyn Progress,
) -> Result<Vec<f32>> {
    opts.check()?;
    let map = NodeMap::for_model(model, graph)?;
    let needs_equal = matches!(opts.ablation, Ablation::Patching);
    check_pairs(pairs, model.config().d_vocab, needs_equal)?;
    let mut scores = gradient_scores(model, &map, pairs, metric, opts, progress)?;
    if opts.aggregation == Aggregation::Mean {
        let d = model.config().d_model as f32;
        scores.iter_mut().for_each(|s| *s /= d);
    }
    store_scores(graph, scores)
}

/// Zeroes the entries that are not edges, stores the scores in `graph` and returns them.
pub(crate) fn store_scores(graph: &mut Graph, mut scores: Vec<f32>) -> Result<Vec<f32>> {
    for (s, valid) in scores.iter_mut().zip(graph.valid_mask()) {
        if !valid {
            *s = 0.0;
        }
    }
    let (nf, nb) = (graph.n_forward(), graph.n_backward());
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
    }
}

fn gradient_scores(
    model: &Transformer,
    map: &NodeMap,
    pairs: &[PromptPair],
    metric: &dyn Metric,
    opts: &EdgeAttribution,
    progress: &mut dyn Progress,
) -> Result<Vec<f32>> {
    let n_batches = pairs.len().div_ceil(opts.batch_size);
    let per_batch = passes_per_batch(opts.method, opts.steps, model.config().n_layers);
    let total = n_batches * per_batch;
    let mut done = 0;
    let mut sum: Option<Tensor<2>> = None;
    for batch in batches(model, pairs, opts.batch_size) {
        let batch = batch?;
        let mut tick = |k: usize| {
            done += k;
            report(progress, STAGE, done, total)
        };
        let block = batch_scores(model, map, &batch, metric, opts, &mut tick)?;
        sum = Some(match sum {
            Some(s) => s + block,
            None => block,
        });
    }
    let sum = sum.ok_or_else(|| AttributionError::Options("no examples".into()))?;
    let scores = sum / pairs.len() as f32;
    Ok(to_vec(scores)?)
}

/// Counts finished passes; an error (a cancelled [`Progress`]) stops the work.
type Tick<'a> = dyn FnMut(usize) -> fidelis_circuit::Result<()> + 'a;

/// The summed `[n_forward, n_backward]` score block of one batch.
fn batch_scores(
    model: &Transformer,
    map: &NodeMap,
    batch: &PairBatch,
    metric: &dyn Metric,
    opts: &EdgeAttribution,
    tick: &mut Tick<'_>,
) -> Result<Tensor<2>> {
    let clean = clean_run(
        model,
        map,
        &batch.clean,
        opts.method == Method::EapIgActivations,
    )?;
    let ablated = opts.ablation.node_values(model, map, batch)?;
    let ctx = PassContext {
        model,
        map,
        metric,
        clean_logits: clean.last_logits.clone(),
        targets: &batch.targets,
    };
    if opts.method == Method::EapIgActivations {
        let delta = ablated.clone() - clean.outputs.clone();
        let run = GroupRuns {
            ctx: &ctx,
            batch,
            clean: &clean,
            ablated: &ablated,
            delta,
            opts,
        };
        return run.all(tick);
    }
    // The other methods read the node outputs only through Δa (and EAP-IG on inputs through
    // the input rows): keep Δa's flattened copy alone, not the clean and ablated outputs.
    let input = &map.writers()[0];
    let input_of = |t: &Tensor<4>| {
        // A slice is a view of the whole tensor; adding zero makes it its own copy.
        let rows = input.rows.clone();
        t.clone()
            .slice_dim(2, rows)
            .squeeze_dim::<3>(2)
            .add_scalar(0.0)
    };
    let inputs = (opts.method == Method::EapIgInputs)
        .then(|| (input_of(&clean.outputs), input_of(&ablated)));
    let CleanRun { outputs, .. } = clean;
    let delta = flatten_rows(ablated - outputs);
    match (opts.method, inputs) {
        (Method::CleanCorrupted, _) => {
            // Linear in the gradient: the mean of the two blocks is the block of the mean
            // gradient, and neither stacked gradient tensor is built.
            let at_clean = ctx.reader_scores(&batch.clean, 1, &delta, |_| {})?;
            tick(1)?;
            let at_corrupted = ctx.reader_scores(&batch.corrupted, 1, &delta, |_| {})?;
            tick(1)?;
            Ok((at_clean + at_corrupted) / 2.0)
        }
        (Method::EapIgInputs, Some((x_clean, x_corrupted))) => {
            let alphas: Vec<f32> = (0..opts.steps)
                .map(|k| k as f32 / opts.steps as f32)
                .collect();
            let how = Interpolation {
                alphas: &alphas,
                start: &Start::Embeddings,
                point: &input.point,
                delta: &delta,
                all_rows: true,
            };
            integrated(&ctx, batch, &how, opts, tick, |alpha| {
                let x = x_corrupted.clone() + (x_clean.clone() - x_corrupted.clone()) * alpha;
                Activation::Rank3(x)
            })
        }
        _ => {
            let block = ctx.reader_scores(&batch.clean, 1, &delta, |_| {})?;
            tick(1)?;
            Ok(block)
        }
    }
}

/// What an integrated-gradients pass interpolates and scores.
struct Interpolation<'a> {
    /// The interpolation points.
    alphas: &'a [f32],
    /// Where each pass starts.
    start: &'a Start,
    /// The hook point whose activation is interpolated.
    point: &'a str,
    /// Δa of the scored rows as `flatten_rows` lays it out: every row (EAP-IG on inputs, each
    /// reader meeting the rows it sees) or one node group's rows (EAP-IG on activations).
    delta: &'a Tensor<2>,
    /// Whether `delta` holds every row.
    all_rows: bool,
}

/// Mean over `alphas` of the score blocks of runs whose `how.point` is replaced by
/// `replace(alpha)`,
/// `opts.steps_per_pass` points stacked per forward/backward. The block is linear in the
/// gradient, so each pass is contracted as it comes (reader group by reader group) and the
/// blocks are averaged: no stacked gradient tensor, and no sum of them, is held.
fn integrated(
    ctx: &PassContext<'_>,
    batch: &PairBatch,
    how: &Interpolation<'_>,
    opts: &EdgeAttribution,
    tick: &mut Tick<'_>,
    replace: impl Fn(f32) -> Activation,
) -> Result<Tensor<2>> {
    let mut total: Option<Tensor<2>> = None;
    for chunk in how.alphas.chunks(opts.steps_per_pass) {
        let copies = chunk.len();
        let tokens = repeat_tokens(&batch.clean, copies);
        let acts: Vec<Activation> = chunk.iter().map(|&alpha| replace(alpha)).collect();
        let setup = |hooks: &mut Hooks| {
            hooks.replace(how.point, cat_activations(acts));
        };
        let block = if how.all_rows {
            ctx.reader_scores(&tokens, copies, how.delta, setup)?
        } else {
            ctx.reader_scores_from(&tokens, copies, how.start, how.delta, setup)?
        };
        tick(copies)?;
        total = Some(match total {
            Some(t) => t + block,
            None => block,
        });
    }
    let total = total.ok_or_else(|| AttributionError::Options("no steps".into()))?;
    Ok(total / how.alphas.len() as f32)
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

/// A node group of EAP-IG on activations: its output hook point, its rows, where its passes
/// start.
struct Group {
    point: String,
    rows: Range<usize>,
    per_head: bool,
    start: Start,
}

/// EAP-IG on activations for one batch: for each node group (a writer of the node map: the
/// input, the heads of a layer, an MLP), integrate the reader gradients while that group's
/// outputs move from the ablated to the clean value.
///
/// Everything upstream of a group's layer is clean in those runs, so each run starts at the
/// group's layer from the recorded clean residual stream and only the readers from that layer
/// on are differentiated: about half the work of running every pass from the embeddings, with
/// the same gradients.
struct GroupRuns<'a> {
    ctx: &'a PassContext<'a>,
    batch: &'a PairBatch,
    clean: &'a CleanRun,
    ablated: &'a Tensor<4>,
    delta: Tensor<4>,
    opts: &'a EdgeAttribution,
}

impl GroupRuns<'_> {
    /// The groups, in row order.
    fn groups(&self) -> Vec<Group> {
        self.ctx
            .map
            .writers()
            .iter()
            .map(|w| Group {
                point: w.point.clone(),
                rows: w.rows.clone(),
                per_head: w.per_head,
                start: match w.layer {
                    None => Start::Embeddings,
                    Some(l) => Start::Layer(l, Box::new(self.clean.resid_pre[l].clone())),
                },
            })
            .collect()
    }

    /// The score rows of one group, `[rows, n_backward]`.
    fn run(&self, group: &Group, tick: &mut Tick<'_>) -> Result<Tensor<2>> {
        let (ctx, opts) = (self.ctx, self.opts);
        let alphas: Vec<f32> = (1..=opts.steps)
            .map(|k| k as f32 / opts.steps as f32)
            .collect();
        let range = group.rows.clone();
        let (a, c) = (
            self.clean.outputs.clone().slice_dim(2, range.clone()),
            self.ablated.clone().slice_dim(2, range.clone()),
        );
        let how = Interpolation {
            alphas: &alphas,
            start: &group.start,
            point: &group.point,
            delta: &flatten_rows(self.delta.clone().slice_dim(2, range.clone())),
            all_rows: false,
        };
        let block = integrated(ctx, self.batch, &how, opts, tick, |alpha| {
            let x = c.clone() + (a.clone() - c.clone()) * alpha;
            if group.per_head {
                Activation::Rank4(x)
            } else {
                Activation::Rank3(x.squeeze_dim::<3>(2))
            }
        })?;
        let skipped = ctx.map.first_column(group.start.layer());
        let row = if skipped == 0 {
            block
        } else {
            let zeros = Tensor::zeros([range.len(), skipped], (ctx.model.device(), DType::F32));
            Tensor::cat(vec![zeros, block], 1)
        };
        debug_assert_eq!(row.dims()[1], ctx.map.n_backward());
        Ok(row)
    }

    /// Every group's rows, stacked in row order: `[n_forward, n_backward]`.
    fn all(&self, tick: &mut Tick<'_>) -> Result<Tensor<2>> {
        let groups = self.groups();
        let rows = if self.opts.workers <= 1 {
            groups
                .iter()
                .map(|group| self.run(group, &mut *tick))
                .collect::<Result<Vec<_>>>()?
        } else {
            in_parallel(&groups, self.opts.workers, tick, |g, t| self.run(g, t))?
        };
        Ok(Tensor::cat(rows, 0))
    }
}

/// Runs `run` on every group with `workers` threads, in any order, and returns the results in
/// group order. Progress ticks reach `tick` on the calling thread; when it returns an error (a
/// cancelled job) the workers stop at their next tick and that error is returned.
fn in_parallel(
    groups: &[Group],
    workers: usize,
    tick: &mut Tick<'_>,
    run: impl Fn(&Group, &mut Tick<'_>) -> Result<Tensor<2>> + Sync,
) -> Result<Vec<Tensor<2>>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Mutex, mpsc};
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<Tensor<2>>>>> =
        groups.iter().map(|_| Mutex::new(None)).collect();
    let mut stopped: Option<fidelis_circuit::CircuitError> = None;
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
                        if stop.load(Ordering::Relaxed) || tx.send(k).is_err() {
                            stop.store(true, Ordering::Relaxed);
                            return Err(fidelis_circuit::CircuitError::Cancelled);
                        }
                        Ok(())
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
            if stopped.is_none()
                && let Err(e) = tick(k)
            {
                stop.store(true, Ordering::Relaxed);
                stopped = Some(e);
            }
        }
    });
    if let Some(e) = stopped {
        return Err(e.into());
    }
    // The first real error wins over the groups that stopped or were skipped because of it.
    let mut rows = Vec::with_capacity(groups.len());
    let mut skipped = false;
    for slot in results {
        match slot.into_inner().ok().flatten() {
            Some(Ok(row)) => rows.push(row),
            Some(Err(e)) if !e.is_cancelled() => return Err(e),
            Some(Err(_)) | None => skipped = true,
        }
    }
    if skipped {
        return Err(AttributionError::Options(
            "a worker stopped before scoring its node group".into(),
        ));
    }
    Ok(rows)
}
