//! # fidelis-context
//!
//! Context attribution with PECoRe (Sarti et al., "Quantifying the Plausibility of Context
//! Reliance in Neural Machine Translation", ICLR 2024; reference tool: Inseq's
//! `attribute-context`) for decoder-only models, and for encoder-decoders ([`seq2seq`]: the
//! context on the source and on the target side): given an input context (say, a fact) and an
//! input current text (a question about it), it tells which tokens of the model's answer depend
//! on the context, and which context tokens they relied on, from the model's internals alone.
//!
//! 1. **Output.** The answer is generated greedily with the context, or given
//!    ([`PecoreConfig::output_current`]). Texts are joined by templates (`{context} {current}`
//!    for the input, as in Inseq), a separator between input and output, and optionally the
//!    model's own chat template ([`prompt::ChatTemplate`], its Jinja `chat_template` rendered
//!    with minijinja as transformers renders it).
//! 2. **CTI** (context-sensitive token identification). The same output is force-decoded with
//!    and without the context; each output token gets a score from the two next-token
//!    distributions ([`CtiMetric`]: KL divergence by default, probability difference, P-CXMI,
//!    oriented as in Inseq). Every token after the contextless input is an output token, as in
//!    Inseq. Tokens with `|score| ≥ mean + λ·std` (λ = 1) are selected, optionally the top k
//!    ([`select`](mod@select)).
//! 3. **CCI** (contextual cue imputation). For each selected token, the contextless model's own
//!    next token is the contrast; the contrastive target (by default `p(token) − p(contrast)`
//!    on the contextual input) is attributed to the input and output context tokens with a
//!    [`fidelis_attribution::token`] method (saliency by default), and cues are selected the
//!    same way.
//! 4. **Views.** [`ContextAttribution`] serializes to the JSON fields of Inseq's output
//!    (`input_context_tokens`, `output_current_tokens`, `cti_scores`, `cci_scores` with the
//!    contrast, score and cue scores); [`render`] draws it in a terminal or as one
//!    self-contained HTML page.
//!
//! Fidelis matches Inseq 0.7.1's `attribute-context` (checked on fixtures Inseq wrote, see
//! docs/inseq.md) except in two deliberate points that [`PecoreConfig::inseq_compat`] turns
//! into Inseq's behaviour: the generation prompt (Inseq's ends with the separator) and how the
//! CCI contrast is found (Inseq's goes through texts and the output's standalone tokens).
//!
//! Bad input is an error that names the problem: empty texts, a template without `{current}`,
//! a contextual sequence longer than the model's window, an output that tokenizes differently
//! with and without the context.
//!
//! ```no_run
//! use burn::prelude::*;
//! use fidelis_context::{PecoreConfig, attribute_context, render};
//! use fidelis_models::Model;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &Device::default())?;
//! let cfg = PecoreConfig::new("The capital of Zembla is Korvo.", "What is the capital of Zembla?");
//! let out = attribute_context(&model, &cfg)?;
//! println!("{}", render::terminal(&out, true));
//! std::fs::write("context.json", serde_json::to_string_pretty(&out)?)?;
//! # Ok(()) }
//! ```

pub mod cti;
mod error;
pub mod pecore;
pub mod prompt;
pub mod render;
pub mod select;
pub mod seq2seq;

pub use cti::CtiMetric;
pub use error::{ContextError, Result};
pub use pecore::{
    CciOutput, ContextAttribution, Info, PecoreConfig, STAGE_CCI, STAGE_CTI, STAGE_GENERATING,
    attribute_context, attribute_context_with_progress,
};
pub use select::{Selection, select};
pub use seq2seq::{attribute_context_seq2seq, attribute_context_seq2seq_with_progress};

/// The README's examples, compiled and run as doctests so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
