//! The two passes every gradient method is made of: a recording forward, and a forward with
//! probes at every reader input followed by one backward.

use burn::prelude::*;
use fidelis_faithfulness::data::repeat_batch;
use fidelis_faithfulness::nodes::{
    probe_node_inputs_from, record_node_outputs, stack_input_grads_from,
};
use fidelis_faithfulness::{Metric, Targets};
use fidelis_models::{Activation, Batch, Hooks, Transformer, point};

use crate::Result;

/// The loss attribution differentiates, per example: the metric itself for a divergence (KL,
/// JS), its negation for a behaviour metric (logit or probability difference), as the EAP-IG
/// reference does. A positive edge score then means "patching this edge breaks the behaviour".
///
/// # Shapes
/// - `logits`, `clean`: `[batch, d_vocab]`; returns `[batch]`
pub fn loss_per_example(
    metric: &dyn Metric,
    logits: Tensor<2>,
    clean: Tensor<2>,
    targets: &Targets,
) -> Tensor<1> {
    let m = metric.per_example(logits, clean, targets);
    if metric.is_divergence() { m } else { -m }
}

/// A clean forward that records every node output.
pub struct CleanRun {
    /// `[batch, pos, n_forward, d]`
    pub outputs: Tensor<4>,
    /// `[batch, d_vocab]` at the last real positions
    pub last_logits: Tensor<2>,
    /// The residual stream entering each layer, `[batch, pos, d]` (only when asked for).
    pub resid_pre: Vec<Tensor<3>>,
}

/// Runs `batch` recording every node output, and the residual stream entering every layer
/// when `with_resid` is set.
pub fn clean_run(model: &Transformer, batch: &Batch, with_resid: bool) -> Result<CleanRun> {
    let n_layers = model.config().n_layers;
    let mut hooks = Hooks::new();
    record_node_outputs(&mut hooks, n_layers);
    if with_resid {
        // resid_pre(0) is the input node's output, recorded already.
        for l in 1..n_layers {
            hooks.record(point::resid_pre(l));
        }
    }
    let last_logits = model.forward_batch_at(batch, &batch.last_positions(), &mut hooks)?;
    let mut resid_pre = Vec::new();
    if with_resid {
        for l in 0..n_layers {
            let pt = point::resid_pre(l);
            let x = hooks
                .recorded(&pt)
                .and_then(Activation::rank3)
                .ok_or_else(|| fidelis_models::ModelError::Hook {
                    point: pt.clone(),
                    message: "activation was not recorded".into(),
                })?;
            resid_pre.push(x);
        }
    }
    Ok(CleanRun {
        outputs: fidelis_faithfulness::nodes::stack_node_outputs(&hooks, n_layers)?,
        last_logits,
        resid_pre,
    })
}

/// Where a gradient pass starts: at the embeddings, or at a layer from a given residual stream
/// (all reader inputs before that layer then get no gradient and are left out).
#[derive(Clone)]
pub enum Start {
    /// A full forward from the token embeddings.
    Embeddings,
    /// Blocks `layer..` only, from `resid_pre` `[batch, pos, d]` (one copy's batch).
    Layer(usize, Box<Tensor<3>>),
}

impl Start {
    /// The first layer the pass runs.
    pub fn layer(&self) -> usize {
        match self {
            Start::Embeddings => 0,
            Start::Layer(l, _) => *l,
        }
    }
}

/// What every gradient pass of one batch shares.
pub struct PassContext<'a> {
    /// The model.
    pub model: &'a Transformer,
    /// The metric.
    pub metric: &'a dyn Metric,
    /// Clean last-position logits of the batch, `[batch, d_vocab]`.
    pub clean_logits: Tensor<2>,
    /// Targets of the batch.
    pub targets: &'a Targets,
}

impl PassContext<'_> {
    /// Runs `tokens` (`copies` stacked copies of the batch) forward with `setup`'s extra hooks
    /// plus probes at all reader inputs, backpropagates the summed loss, and returns the
    /// reader-input gradients summed over the copies.
    ///
    /// # Shapes
    /// - returns `[batch, pos, n_backward, d]` (one copy's batch size)
    pub fn reader_grads(
        &self,
        tokens: &Batch,
        copies: usize,
        setup: impl FnOnce(&mut Hooks),
    ) -> Result<Tensor<4>> {
        self.reader_grads_from(tokens, copies, &Start::Embeddings, setup)
    }

    /// [`PassContext::reader_grads`] from `start`: the columns of reader inputs before the
    /// start layer are left out, so the result has `n_backward - start_layer · (3 · n_heads + 1)`
    /// columns (the last columns of the graph, in graph order).
    ///
    /// # Shapes
    /// - returns `[batch, pos, n_backward - skipped, d]` (one copy's batch size)
    pub fn reader_grads_from(
        &self,
        tokens: &Batch,
        copies: usize,
        start: &Start,
        setup: impl FnOnce(&mut Hooks),
    ) -> Result<Tensor<4>> {
        let cfg = self.model.config();
        let first = start.layer();
        let mut hooks = Hooks::new();
        setup(&mut hooks);
        probe_node_inputs_from(&mut hooks, first, cfg.n_layers);
        let positions = tokens.last_positions();
        let last = match start {
            Start::Embeddings => self
                .model
                .forward_batch_at(tokens, &positions, &mut hooks)?,
            Start::Layer(l, resid) => {
                let resid = if copies == 1 {
                    (**resid).clone()
                } else {
                    Tensor::cat(vec![(**resid).clone(); copies], 0)
                };
                self.model
                    .forward_batch_from(tokens, *l, resid, &positions, &mut hooks)?
            }
        };
        let [rows, p] = tokens.tokens.dims();
        let clean = repeat_batch(self.clean_logits.clone(), copies);
        let targets = if copies == 1 {
            self.targets.clone()
        } else {
            self.targets.repeat(copies)
        };
        let loss = loss_per_example(self.metric, last, clean, &targets).sum();
        let grads = loss.backward();
        let g = stack_input_grads_from(
            &hooks,
            &grads,
            cfg,
            first,
            [rows, p, cfg.d_model],
            self.model.device(),
        );
        Ok(sum_copies(g, copies))
    }
}

/// Sums `[copies × batch, ...]` over the copies → `[batch, ...]`.
pub fn sum_copies(t: Tensor<4>, copies: usize) -> Tensor<4> {
    if copies == 1 {
        return t;
    }
    let [rows, p, c, d] = t.dims();
    t.reshape([copies, rows / copies, p * c * d])
        .sum_dim(0)
        .reshape([rows / copies, p, c, d])
}

/// A batch repeated `copies` times along the batch dimension.
pub fn repeat(batch: &Batch, copies: usize) -> Batch {
    if copies == 1 {
        return batch.clone();
    }
    Batch {
        tokens: Tensor::cat(vec![batch.tokens.clone(); copies], 0),
        lengths: batch.lengths.repeat(copies),
    }
}
