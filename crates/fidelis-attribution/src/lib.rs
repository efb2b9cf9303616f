//! # fidelis-attribution
//!
//! Scores every edge of a transformer's computational graph for a task, the first step of
//! circuit discovery (Hanna, Pezzelle & Belinkov 2024, "Have Faith in Faithfulness",
//! arXiv 2403.17806; reference implementation hannamw/EAP-IG), and attributes single
//! predictions to input tokens. It sits beside `fidelis-faithfulness` on the circuit runtime
//! (`fidelis-circuit`), which supplies the node map, the recording and probed runs, the score
//! contraction, prompt pairs, metrics and ablation values.
//!
//! - [`edge`]: [`attribute_edges`] with the gradient [`Method`]s — EAP, EAP-IG on inputs,
//!   EAP-IG on activations, clean-corrupted; losses come from any [`fidelis_circuit::Metric`];
//!   Δa is measured against patched (corrupted), mean or zero activations; scores aggregate over
//!   d_model by sum or mean.
//! - [`exact`]: [`exact_edges`], true single-edge patching, many edges per forward.
//! - [`EdgeMethod`]: the five methods by name, as jobs and the CLI choose them.
//! - [`plan`]: [`plan::estimate`], the peak memory and the passes of a run from the config
//!   alone (`fidelis inspect --plan`).
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
//! use fidelis_circuit::{BuiltinMetric, PromptPair};
//! use fidelis_graph::{Graph, GraphConfig};
//! use fidelis_models::Model;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Model::load("models/organism".as_ref(), &Device::default())?;
//! let cfg = model.config();
//! let mut graph = Graph::new(GraphConfig::new(cfg.n_layers, cfg.n_heads, cfg.parallel_attn_mlp));
//! // One IOI pair: BOS prepended; the answers are single tokens read at the last position.
//! let tok = &model.tokenizer;
//! let pairs = vec![PromptPair {
//!     clean: tok.encode_prompt("When Mary and John went to the store, John gave a drink to", true)?,
//!     corrupted: tok.encode_prompt("When Mary and John went to the store, Anna gave a drink to", true)?,
//!     correct: vec![tok.single_token(" Mary")?],
//!     incorrect: vec![tok.single_token(" John")?],
//! }];
//! let opts = EdgeAttribution::new(Method::EapIgInputs);
//! attribute_edges(&model.transformer, &mut graph, &pairs, &BuiltinMetric::LogitDiff, &opts)?;
//! graph.apply_topn(200, true)?;
//! std::fs::write("graph.json", graph.to_json_string())?;
//! # Ok(()) }
//! ```

pub mod edge;
mod error;
pub mod exact;
pub mod plan;
pub mod token;

pub use edge::{
    Aggregation, EdgeAttribution, Method, attribute_edges, attribute_edges_with_progress,
};
pub use error::{AttributionError, Result};
pub use exact::{ExactPatching, exact_edges, exact_edges_with_progress};

fidelis_circuit::option_enum! {
    "method",
    /// An edge scoring method by name: the four gradient [`Method`]s and exact patching (`eap`,
    /// `eap-ig-inputs`, `eap-ig-activations`, `clean-corrupted`, `exact`).
    #[derive(Default)]
    #[strum(serialize_all = "kebab-case", ascii_case_insensitive)]
    pub enum EdgeMethod {
        /// [`Method::Eap`].
        Eap,
        /// [`Method::EapIgInputs`].
        #[default]
        EapIgInputs,
        /// [`Method::EapIgActivations`].
        EapIgActivations,
        /// [`Method::CleanCorrupted`].
        CleanCorrupted,
        /// True single-edge patching ([`exact_edges`]).
        Exact,
    }
}

impl EdgeMethod {
    /// The gradient method, or `None` for exact patching.
    pub fn gradient(self) -> Option<Method> {
        match self {
            Self::Eap => Some(Method::Eap),
            Self::EapIgInputs => Some(Method::EapIgInputs),
            Self::EapIgActivations => Some(Method::EapIgActivations),
            Self::CleanCorrupted => Some(Method::CleanCorrupted),
            Self::Exact => None,
        }
    }
}

/// The README's examples, compiled and run as doctests so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
