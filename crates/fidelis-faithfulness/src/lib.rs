//! # fidelis-faithfulness
//!
//! Is a circuit enough? This crate runs a model with every edge outside a circuit ablated and
//! measures how much of the behaviour survives (Hanna, Pezzelle & Belinkov 2024, "Have Faith in
//! Faithfulness", arXiv 2403.17806). It sits beside `fidelis-attribution` on the circuit runtime
//! (`fidelis-circuit`), which supplies the node map, prompt pairs, metrics and ablation values.
//!
//! - [`evaluate`]: edge-ablated runs ([`evaluate_graph`]), the clean/corrupted baseline and
//!   normalized faithfulness `(m(C) − m(∅)) / (m(full) − m(∅))`; several circuits stacked into
//!   one forward ([`evaluate_circuits`]).
//! - [`curve`]: faithfulness curves over circuit size (absolute counts or the MIB fractions)
//!   with CPR and CMD, completeness (the circuit's complement), and edge/node overlap and IoU.
//!
//! ```no_run
//! use burn::prelude::*;
//! use fidelis_circuit::{Ablation, BuiltinMetric, PromptPair};
//! use fidelis_faithfulness::{EvalOptions, evaluate_baseline, evaluate_graph, faithfulness_curve, mib_sizes};
//! use fidelis_graph::{Graph, GraphConfig};
//! use fidelis_models::Model;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::default();
//! let model = Model::load("models/organism".as_ref(), &device)?;
//! let cfg = model.config();
//! let mut graph = Graph::new(GraphConfig::new(cfg.n_layers, cfg.n_heads, cfg.parallel_attn_mlp));
//! let tok = &model.tokenizer;
//! let pairs = vec![PromptPair {
//!     clean: tok.encode_prompt("When Mary and John went to the store, John gave a drink to", true)?,
//!     corrupted: tok.encode_prompt("When Mary and John went to the store, Anna gave a drink to", true)?,
//!     correct: vec![tok.single_token(" Mary")?],
//!     incorrect: vec![tok.single_token(" John")?],
//! }];
//! // Score the edges first (fidelis-attribution), or load a scored graph from its JSON.
//! let metric = BuiltinMetric::LogitDiff;
//! let sizes = mib_sizes(graph.n_edges());
//! let opts = EvalOptions::new(Ablation::Patching);
//! let curve = faithfulness_curve(&model.transformer, &graph, &pairs, &metric, &sizes, &opts)?;
//! graph.apply_topn(100, true)?;
//! let circuit = evaluate_graph(&model.transformer, &graph, &pairs, &metric, &Ablation::Patching, 16)?;
//! let base = evaluate_baseline(&model.transformer, &pairs, &metric, 16)?;
//! # Ok(()) }
//! ```

pub mod curve;
pub mod evaluate;

pub use curve::{
    Completeness, Curve, CurvePoint, EvalOptions, MIB_FRACTIONS, Overlap, Selection, completeness,
    completeness_with_progress, faithfulness_curve, faithfulness_curve_with_progress, mib_sizes,
    overlap, select_circuit,
};
pub use evaluate::{
    Baseline, evaluate_baseline, evaluate_circuits, evaluate_circuits_with_progress,
    evaluate_graph, normalized_faithfulness,
};

/// The README's examples, compiled and run as doctests so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
