//! The error type of `fidelis-context`.

use fidelis_attribution::AttributionError;
use fidelis_models::ModelError;

/// What can go wrong in context attribution; each variant names the input at fault.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A text the method needs is empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// A template lacks a placeholder or has an unknown one.
    #[error("template {template:?}: {message}")]
    Template {
        /// The template.
        template: String,
        /// What is wrong with it.
        message: String,
    },
    /// The contextual input does not fit in the model's window.
    #[error(
        "the contextual sequence has {tokens} tokens, longer than the model's context window of {n_ctx}; shorten the context"
    )]
    TooLong {
        /// Tokens of the contextual sequence.
        tokens: usize,
        /// The model's window.
        n_ctx: usize,
    },
    /// The output current text is not the same token sequence with and without the context.
    #[error(
        "the output {output:?} tokenizes differently in the two runs: {with_context:?} with the context, {without_context:?} without"
    )]
    TokenizationMismatch {
        /// The output current text.
        output: String,
        /// Its tokens in the contextual run.
        with_context: Vec<String>,
        /// Its tokens in the contextless run.
        without_context: Vec<String>,
    },
    /// Options that do not fit together, or a model/tokenizer feature that is missing.
    #[error("invalid options: {0}")]
    Options(String),
    /// A model or tokenizer error.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An attribution error.
    #[error(transparent)]
    Attribution(#[from] AttributionError),
    /// The caller's progress asked the run to stop.
    #[error("cancelled")]
    Cancelled,
}

impl ContextError {
    /// Whether the run stopped because the caller's progress asked it to.
    pub fn is_cancelled(&self) -> bool {
        match self {
            Self::Cancelled => true,
            Self::Attribution(e) => e.is_cancelled(),
            _ => false,
        }
    }
}

/// `Result` with [`ContextError`].
pub type Result<T> = std::result::Result<T, ContextError>;
