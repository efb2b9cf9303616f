//! What an ablated edge carries instead of its clean value: the upstream node's output on the
//! corrupted prompt (patching), its mean over a dataset, or zero.

use burn::prelude::*;
use fidelis_models::{Batch, Hooks, Transformer};

use crate::data::{PairBatch, PromptPair};
use crate::node_map::NodeMap;
use crate::{CircuitError, Result};

crate::option_enum! {
    "ablation",
    /// What ablated edges carry, by name: the typed option that jobs and the CLI take
    /// (`patching`, `mean`, `zero`). [`AblationKind::values`] turns it into an [`Ablation`].
    #[derive(Default)]
    #[strum(serialize_all = "kebab-case")]
    pub enum AblationKind {
        /// The upstream node's output on the corrupted prompt (activation patching).
        #[default]
        Patching,
        /// The upstream node's mean output over the clean prompts.
        Mean,
        /// Zero.
        Zero,
    }
}

impl AblationKind {
    /// The ablation values for `pairs`: for [`AblationKind::Mean`], each node's mean output
    /// over the clean prompts (`batch_size` prompts per forward).
    pub fn values(
        self,
        model: &Transformer,
        pairs: &[PromptPair],
        batch_size: usize,
    ) -> Result<Ablation> {
        Ok(match self {
            Self::Patching => Ablation::Patching,
            Self::Zero => Ablation::Zero,
            Self::Mean => {
                let prompts: Vec<Vec<u32>> = pairs.iter().map(|p| p.clean.clone()).collect();
                Ablation::Mean(Box::new(NodeMeans::compute(model, &prompts, batch_size)?))
            }
        })
    }
}

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
    /// Which kind of ablation this is.
    pub fn kind(&self) -> AblationKind {
        match self {
            Self::Patching => AblationKind::Patching,
            Self::Mean(_) => AblationKind::Mean,
            Self::Zero => AblationKind::Zero,
        }
    }

    /// Short name for tables (`patching`, `mean`, `zero`).
    pub fn name(&self) -> String {
        self.kind().to_string()
    }

    /// What an ablated edge of `batch` carries, per forward node.
    ///
    /// # Shapes
    /// - returns `[batch, pos, n_forward, d_model]` (pos of the clean prompts)
    pub fn node_values(
        &self,
        model: &Transformer,
        map: &NodeMap,
        batch: &PairBatch,
    ) -> Result<Tensor<4>> {
        let cfg = model.config();
        let n_forward = map.n_forward();
        let shape = [batch.size(), batch.n_pos(), n_forward, cfg.d_model];
        match self {
            Self::Patching => {
                if !batch.aligned() {
                    return Err(CircuitError::Data(
                        "patching needs clean and corrupted prompts of equal token length".into(),
                    ));
                }
                node_outputs(model, map, &batch.corrupted)
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
pub fn node_outputs(model: &Transformer, map: &NodeMap, batch: &Batch) -> Result<Tensor<4>> {
    let mut hooks = Hooks::new();
    map.record_outputs(&mut hooks);
    model.forward_batch(batch, &mut hooks)?;
    map.stack_outputs(&hooks)
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
        let map = NodeMap::for_config(model.config())?;
        let mut sum: Option<Tensor<2>> = None;
        let mut n_positions = 0;
        for chunk in prompts.chunks(batch_size.max(1)) {
            let batch = Batch::from_sequences(chunk, 0, device)?;
            let outputs = node_outputs(model, &map, &batch)?;
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
        let sum = sum.ok_or_else(|| CircuitError::Data("no prompts to average over".into()))?;
        Ok(Self {
            means: sum / n_positions as f32,
            n_positions,
        })
    }
}
