//! The runs every circuit method is made of: a clean recording forward, and a forward with
//! gradient probes at every reader input followed by one backward.

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::Gradients;
use fidelis_models::{Activation, Batch, Hooks, Transformer, point};

use crate::Result;
use crate::contract::contract_rows;
use crate::data::repeat_batch;
use crate::metric::{Metric, Targets, loss_per_example};
use crate::node_map::NodeMap;

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
pub fn clean_run(
    model: &Transformer,
    map: &NodeMap,
    batch: &Batch,
    with_resid: bool,
) -> Result<CleanRun> {
    let n_layers = model.config().n_layers;
    let mut hooks = Hooks::new();
    map.record_outputs(&mut hooks);
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
        outputs: map.stack_outputs(&hooks)?,
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
    /// Where the graph's nodes live.
    pub map: &'a NodeMap,
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
        let (hooks, grads, [rows, p]) = self.backward(tokens, copies, &Start::Embeddings, setup)?;
        let g = self.map.stack_input_grads_from(
            self.model,
            &hooks,
            &grads,
            0,
            [rows, p, self.model.config().d_model],
        )?;
        Ok(sum_copies(g, copies))
    }

    /// The EAP score block of one gradient pass, `Σ_{b,p,d} delta[b, p, f, d] · g[b, p, c, d]`,
    /// contracted reader group by reader group as the gradients come out of the backward: each
    /// group's gradient meets only the rows it reads (`0..visible`, about half the products of
    /// the full block), and the stacked `[batch, pos, n_backward, d]` gradient tensor of
    /// [`PassContext::reader_grads`] is never built. Equal to `contract(delta, reader_grads(..))`
    /// up to the order of the sums.
    ///
    /// # Shapes
    /// - `delta`: Δa of every row, `[n_forward, batch·pos·d]` as
    ///   [`crate::contract::flatten_rows`] lays it out (one copy's batch)
    /// - returns `[n_forward, n_backward]`
    pub fn reader_scores(
        &self,
        tokens: &Batch,
        copies: usize,
        delta: &Tensor<2>,
        setup: impl FnOnce(&mut Hooks),
    ) -> Result<Tensor<2>> {
        self.scores(tokens, copies, &Start::Embeddings, delta, true, setup)
    }

    /// The score rows of some writers (`delta` holds their Δa, in row order) against every
    /// reader of the pass from `start` on, contracted group by group as in
    /// [`PassContext::reader_scores`]: EAP-IG on activations, where one node group's outputs
    /// are interpolated and only its rows are scored.
    ///
    /// # Shapes
    /// - `delta`: `[rows, batch·pos·d]` as [`crate::contract::flatten_rows`] lays it out
    /// - returns `[rows, n_backward − map.first_column(start_layer)]`
    pub fn reader_scores_from(
        &self,
        tokens: &Batch,
        copies: usize,
        start: &Start,
        delta: &Tensor<2>,
        setup: impl FnOnce(&mut Hooks),
    ) -> Result<Tensor<2>> {
        self.scores(tokens, copies, start, delta, false, setup)
    }

    /// [`PassContext::reader_scores`] and [`PassContext::reader_scores_from`]: with
    /// `visible_only`, `delta` has every row and each reader meets its visible prefix (zeros
    /// below); otherwise every row of `delta` meets every reader.
    fn scores(
        &self,
        tokens: &Batch,
        copies: usize,
        start: &Start,
        delta: &Tensor<2>,
        visible_only: bool,
        setup: impl FnOnce(&mut Hooks),
    ) -> Result<Tensor<2>> {
        let (hooks, grads, _) = self.backward(tokens, copies, start, setup)?;
        let device = self.model.device();
        let [f, _] = delta.dims();
        let first = start.layer();
        let mut blocks = Vec::new();
        self.map
            .for_each_input_grad(self.model, &hooks, &grads, first, |r, g| {
                let width = r.cols.len();
                let Some(g) = g else {
                    blocks.push(Tensor::zeros([f, width], (device, DType::F32)));
                    return Ok(());
                };
                let seen = if visible_only { r.visible.min(f) } else { f };
                let block =
                    contract_rows(delta.clone().slice_dim(0, 0..seen), sum_copies(g, copies));
                blocks.push(if seen == f {
                    block
                } else {
                    let unseen = Tensor::zeros([f - seen, width], (device, DType::F32));
                    Tensor::cat(vec![block, unseen], 0)
                });
                Ok(())
            })?;
        Ok(Tensor::cat(blocks, 1))
    }

    /// Runs `tokens` (`copies` stacked copies) from `start` with `setup`'s hooks and probes at
    /// the readers of the start layer on, and backpropagates the summed loss.
    fn backward(
        &self,
        tokens: &Batch,
        copies: usize,
        start: &Start,
        setup: impl FnOnce(&mut Hooks),
    ) -> Result<(Hooks, Gradients, [usize; 2])> {
        let mut hooks = Hooks::new();
        setup(&mut hooks);
        self.map.probe_inputs_from(&mut hooks, start.layer());
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
        let clean = repeat_batch(self.clean_logits.clone(), copies);
        let targets = if copies == 1 {
            self.targets.clone()
        } else {
            self.targets.repeat(copies)
        };
        let loss = loss_per_example(self.metric, last, clean, &targets).sum();
        let grads = loss.backward();
        Ok((hooks, grads, tokens.tokens.dims()))
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
