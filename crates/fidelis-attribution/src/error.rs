//! The error type of `fidelis-attribution`.

use fidelis_faithfulness::FaithError;
use fidelis_models::ModelError;

/// What can go wrong while attributing.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    /// Data, model or metric problem found while running the model.
    #[error(transparent)]
    Faith(#[from] FaithError),
    /// The options do not fit together (names the options).
    #[error("invalid options: {0}")]
    Options(String),
}

impl From<ModelError> for AttributionError {
    fn from(e: ModelError) -> Self {
        Self::Faith(FaithError::Model(e))
    }
}

impl From<fidelis_graph::GraphError> for AttributionError {
    fn from(e: fidelis_graph::GraphError) -> Self {
        Self::Faith(FaithError::Graph(e))
    }
}

/// `Result` with [`AttributionError`].
pub type Result<T> = std::result::Result<T, AttributionError>;
