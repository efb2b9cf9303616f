//! # fidelis-circuit
//!
//! The circuit runtime: what edge attribution (`fidelis-attribution`) and faithfulness
//! (`fidelis-faithfulness`) share, between the models (`fidelis-models`) and the graph
//! (`fidelis-graph`). Nothing here is a method of its own; it is the machinery both method
//! crates run on.
//!
//! - [`node_map`]: [`NodeMap`], built once from a graph and the model config, the one place
//!   that says which hook point fills which graph rows (writers) and columns (reader inputs);
//!   recording, probing and stacking in graph order.
//! - [`runs`]: the clean recording run and the probed gradient pass ([`PassContext`]).
//! - [`contract`]: the edge-score contraction and the row mixing of ablated runs.
//! - [`data`]: tokenized clean/corrupted [`PromptPair`]s and padded [`PairBatch`]es.
//! - [`metric`]: task metrics at the last position ([`BuiltinMetric`], the [`Metric`] trait)
//!   and the attribution loss.
//! - [`ablation`]: what an ablated edge carries ([`AblationKind`] by name, [`Ablation`] with
//!   its values).
//! - [`progress`]: the [`Progress`] contract of every long call, with cancellation by return.
//! - [`tensor`]: the one checked tensor → `Vec<f32>` read-back.
//!
//! ```no_run
//! use burn::prelude::*;
//! use fidelis_circuit::{NodeMap, PairBatch, PromptPair, runs::clean_run};
//! use fidelis_graph::{Graph, GraphConfig};
//! use fidelis_models::Model;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Model::load("models/organism".as_ref(), &Device::default())?;
//! let cfg = model.config();
//! let graph = Graph::new(GraphConfig::new(cfg.n_layers, cfg.n_heads, cfg.parallel_attn_mlp));
//! let map = NodeMap::new(cfg, &graph)?;
//! let tok = &model.tokenizer;
//! let pairs = vec![PromptPair {
//!     clean: tok.encode_prompt("When Mary and John went to the store, John gave a drink to", true)?,
//!     corrupted: tok.encode_prompt("When Mary and John went to the store, Anna gave a drink to", true)?,
//!     correct: vec![tok.single_token(" Mary")?],
//!     incorrect: vec![tok.single_token(" John")?],
//! }];
//! let batch = PairBatch::new(&model.transformer, &pairs)?;
//! // [batch, pos, n_forward, d_model]: every writer's output, in graph row order.
//! let outputs = clean_run(&model.transformer, &map, &batch.clean, false)?.outputs;
//! # Ok(()) }
//! ```

pub mod ablation;
pub mod contract;
pub mod data;
mod error;
pub mod metric;
pub mod names;
pub mod node_map;
pub mod progress;
pub mod runs;
pub mod tensor;

pub use ablation::{Ablation, AblationKind, NodeMeans};
pub use data::{PairBatch, PromptPair, batches, check_pairs};
pub use error::{CircuitError, Result};
pub use metric::{BuiltinMetric, Metric, Targets, loss_per_example};
pub use node_map::{NodeMap, ReaderGroup, ReaderKind, WriterGroup};
pub use progress::{Progress, Silent, report};
pub use runs::{CleanRun, PassContext, Start, clean_run};
pub use tensor::to_vec;

/// The README's examples, compiled and run as doctests so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
