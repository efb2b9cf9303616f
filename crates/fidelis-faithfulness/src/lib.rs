//! # fidelis-faithfulness
//!
//! Is a circuit enough? This crate runs a model with every edge outside a circuit ablated and
//! measures how much of the behaviour survives (Hanna, Pezzelle & Belinkov 2024, "Have Faith in
//! Faithfulness", arXiv 2403.17806).
//!
//! - [`metric`]: task metrics at each example's last real position — logit difference,
//!   probability difference, KL and JS divergence to the clean distribution, probability mass on
//!   the correct answers — and the [`Metric`] trait for your own.
//! - [`data`]: tokenized clean/corrupted [`PromptPair`]s and padded [`PairBatch`]es.
//! - [`nodes`]: where the graph's nodes live among the model's hook points (node outputs,
//!   reader inputs, their stacking in graph row/column order).
//! - [`ablation`]: what an ablated edge carries: the corrupted output (patching), a dataset
//!   mean, or zero.
//! - [`evaluate`]: edge-ablated runs ([`evaluate_graph`]), the clean/corrupted baseline and
//!   normalized faithfulness `(m(C) − m(∅)) / (m(full) − m(∅))`; several circuits stacked into
//!   one forward ([`evaluate_circuits`]).
//! - [`curve`]: faithfulness curves over circuit size (absolute counts or the MIB fractions)
//!   with CPR and CMD, completeness (the circuit's complement), and edge/node overlap and IoU.
//!
//! ```no_run
//! use burn::prelude::*;
//! use fidelis_faithfulness::{Ablation, BuiltinMetric, PromptPair, evaluate_baseline, evaluate_graph};
//! use fidelis_graph::{Graph, GraphConfig};
//! use fidelis_models::Model;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::default();
//! let model = Model::load("models/organism".as_ref(), &device)?;
//! let cfg = model.config();
//! let mut graph = Graph::new(GraphConfig::new(cfg.n_layers, cfg.n_heads, cfg.parallel_attn_mlp));
//! let pairs: Vec<PromptPair> = vec![/* clean/corrupted token ids and answers */];
//! graph.apply_topn(100, true)?;
//! let metric = BuiltinMetric::LogitDiff;
//! let circuit = evaluate_graph(&model.transformer, &graph, &pairs, &metric, &Ablation::Patching, 16)?;
//! let base = evaluate_baseline(&model.transformer, &pairs, &metric, 16)?;
//! # Ok(()) }
//! ```

pub mod ablation;
pub mod curve;
pub mod data;
mod error;
pub mod evaluate;
pub mod metric;
pub mod nodes;

pub use ablation::{Ablation, NodeMeans};
pub use curve::{
    Completeness, Curve, CurvePoint, EvalOptions, MIB_FRACTIONS, Overlap, Selection, completeness,
    faithfulness_curve, mib_sizes, overlap, select_circuit,
};
pub use data::{PairBatch, PromptPair, check_pairs};
pub use error::{FaithError, Result};
pub use evaluate::{
    Baseline, evaluate_baseline, evaluate_circuits, evaluate_graph, normalized_faithfulness,
};
pub use metric::{BuiltinMetric, Metric, Targets};
