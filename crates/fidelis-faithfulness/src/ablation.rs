//! What an ablated edge carries instead of its clean value: the upstream node's output on the
//! corrupted prompt (patching), its mean over a dataset, or zero.

use burn::prelude::*;
use fidelis_models::{Batch, Hooks, Transformer};

use crate::data::PairBatch;
use crate::nodes::{record_node_outputs, stack_node_outputs};
use crate::{FaithError, Result};

/// How ablated edges are filled.
#[derive(Debug, Clone)]
pub enum Ablation {
    /// The upstream node's output on the corrupted prompt, position by position.
    Patching,
    /// The upstream node's mean output (over examples and positions of a dataset).
    Mean(Box<NodeMeans>),
    /// Zero.
    Zero,
}

impl Ablation {
    /// Short name for tables (`patching`, `mean`, `zero`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Patching => "patching",
            Self::Mean(_) => "mean",
            Self::Zero => "zero",
        }
    }

    /// What an ablated edge of `batch` carries, per forward node.
    ///
    /// # Shapes
    /// - returns `[batch, pos, n_forward, d_model]` (pos of the clean prompts)
    pub fn node_values(&self, model: &Transformer, batch: &PairBatch) -> Result<Tensor<4>> {
        let cfg = model.config();
        let n_forward = 1 + cfg.n_layers * (cfg.n_heads + 1);
        let shape = [batch.size(), batch.n_pos(), n_forward, cfg.d_model];
        match self {
            Self::Patching => {
                if !batch.aligned() {
                    return Err(FaithError::Data(
                        "patching needs clean and corrupted prompts of equal token length".into(),
                    ));
                }
                node_outputs(model, &batch.corrupted)
            }
            Self::Mean(means) => Ok(means
                .means
                .clone()
                .reshape([1, 1, n_forward, cfg.d_model])
                .expand(shape)),
            Self::Zero => Ok(Tensor::zeros(shape, model.device())),
        }
    }
}

/// Every forward node's output on `batch`.
///
/// # Shapes
/// - returns `[batch, pos, n_forward, d_model]`
pub fn node_outputs(model: &Transformer, batch: &Batch) -> Result<Tensor<4>> {
    let mut hooks = Hooks::new();
    record_node_outputs(&mut hooks, model.config().n_layers);
    model.forward_batch(batch, &mut hooks)?;
    stack_node_outputs(&hooks, model.config().n_layers)
}

/// Mean output of every forward node over all real positions of a set of prompts.
#[derive(Debug, Clone)]
pub struct NodeMeans {
    /// `[n_forward, d_model]`
    pub means: Tensor<2>,
    /// Number of positions averaged.
    pub n_positions: usize,
}

impl NodeMeans {
    /// Averages over `prompts` (token ids), `batch_size` prompts per forward.
    pub fn compute(model: &Transformer, prompts: &[Vec<u32>], batch_size: usize) -> Result<Self> {
        let device = model.device();
        let mut sum: Option<Tensor<2>> = None;
        let mut n_positions = 0;
        for chunk in prompts.chunks(batch_size.max(1)) {
            let batch = Batch::from_sequences(chunk, 0, device)?;
            let outputs = node_outputs(model, &batch)?;
            let [b, p, f, d] = outputs.dims();
            let keep: Vec<f32> = batch
                .lengths
                .iter()
                .flat_map(|&len| (0..p).map(move |i| if i < len { 1.0 } else { 0.0 }))
                .collect();
            let keep = Tensor::<1>::from_data(TensorData::new(keep, [b * p]), device);
            let summed = (outputs.reshape([b * p, f * d]) * keep.reshape([b * p, 1]))
                .sum_dim(0)
                .reshape([f, d]);
            sum = Some(match sum {
                Some(s) => s + summed,
                None => summed,
            });
            n_positions += batch.lengths.iter().sum::<usize>();
        }
        let sum = sum.ok_or_else(|| FaithError::Data("no prompts to average over".into()))?;
        Ok(Self {
            means: sum / n_positions as f32,
            n_positions,
        })
    }
}
