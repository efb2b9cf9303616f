//! # fidelis-attribution
//!
//! Scores every edge of a transformer's computational graph for a task, the first step of
//! circuit discovery (Hanna, Pezzelle & Belinkov 2024, "Have Faith in Faithfulness",
//! arXiv 2403.17806; reference implementation hannamw/EAP-IG).
//!
//! - [`edge`]: [`attribute_edges`] with [`Method::Eap`], [`Method::EapIgInputs`],
//!   [`Method::EapIgActivations`], [`Method::CleanCorrupted`] and [`Method::Exact`]; losses
//!   come from any [`fidelis_faithfulness::Metric`] (logit difference, probability difference,
//!   KL to the clean distribution, or your own); Δa is measured against patched (corrupted),
//!   mean or zero activations; scores aggregate over d_model by sum or mean.
//! - [`exact`]: true single-edge patching, many edges per forward.
//! - [`gradient`]: the recording and probed passes the gradient methods share.
//! - [`token`]: token attribution for one prediction (saliency, input×gradient, integrated
//!   gradients, attention, occlusion) over probability, log-probability, logit, entropy,
//!   contrastive, KL and P-CXMI targets, with word aggregation; `fidelis-context` builds on it.
//!
//! Efficiency: one recording pass gathers Δa for every node of a batch, one backward gives the
//! gradients at every reader input, and the batch's whole score block is one matrix product
//! `[n_forward, batch·pos·d] × [batch·pos·d, n_backward]`. Interpolation steps can share a
//! forward (`steps_per_pass`); batches stream, so memory is bounded by one batch.
//!
//! ```no_run
//! use burn::prelude::*;
//! use fidelis_attribution::{EdgeAttribution, Method, attribute_edges};
//! use fidelis_faithfulness::{BuiltinMetric, PromptPair};
//! use fidelis_graph::{Graph, GraphConfig};
//! use fidelis_models::Model;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Model::load("models/organism".as_ref(), &Device::default())?;
//! let cfg = model.config();
//! let mut graph = Graph::new(GraphConfig::new(cfg.n_layers, cfg.n_heads, cfg.parallel_attn_mlp));
//! let pairs: Vec<PromptPair> = vec![/* clean/corrupted token ids and answers */];
//! let opts = EdgeAttribution::new(Method::EapIgInputs);
//! attribute_edges(&model.transformer, &mut graph, &pairs, &BuiltinMetric::LogitDiff, &opts, &mut |_, _| {})?;
//! graph.apply_topn(200, true)?;
//! std::fs::write("graph.json", graph.to_json_string())?;
//! # Ok(()) }
//! ```

pub mod edge;
mod error;
pub mod exact;
pub mod gradient;
pub mod token;

pub use edge::{Aggregation, EdgeAttribution, Method, attribute_edges};
pub use error::{AttributionError, Result};
