//! The two passes every gradient method is made of: a recording forward, and a forward with
//! probes at every reader input followed by one backward.

use burn::prelude::*;
use fidelis_faithfulness::data::repeat_batch;
use fidelis_faithfulness::metric::last_position_logits;
use fidelis_faithfulness::nodes::{probe_node_inputs, record_node_outputs, stack_input_grads};
use fidelis_faithfulness::{Metric, Targets};
use fidelis_models::{Batch, Hooks, Transformer};

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
}

/// Runs `batch` recording every node output.
pub fn clean_run(model: &Transformer, batch: &Batch) -> Result<CleanRun> {
    let n_layers = model.config().n_layers;
    let mut hooks = Hooks::new();
    record_node_outputs(&mut hooks, n_layers);
    let logits = model.forward_batch(batch, &mut hooks)?;
    Ok(CleanRun {
        outputs: fidelis_faithfulness::nodes::stack_node_outputs(&hooks, n_layers)?,
        last_logits: last_position_logits(logits, &batch.last_positions()),
    })
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
        let cfg = self.model.config();
        let mut hooks = Hooks::new();
        setup(&mut hooks);
        probe_node_inputs(&mut hooks, cfg.n_layers);
        let logits = self.model.forward_batch(tokens, &mut hooks)?;
        let [rows, p, _] = logits.dims();
        let last = last_position_logits(logits, &tokens.last_positions());
        let clean = repeat_batch(self.clean_logits.clone(), copies);
        let targets = if copies == 1 {
            self.targets.clone()
        } else {
            self.targets.repeat(copies)
        };
        let loss = loss_per_example(self.metric, last, clean, &targets).sum();
        let grads = loss.backward();
        let g = stack_input_grads(
            &hooks,
            &grads,
            cfg,
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
