//! The error type of `fidelis-attribution`.

use fidelis_circuit::CircuitError;
use fidelis_models::ModelError;

/// What can go wrong while attributing.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    /// Data, model, graph or metric problem found by the circuit runtime, or a cancellation.
    #[error(transparent)]
    Circuit(#[from] CircuitError),
    /// The options do not fit together (names the options).
    #[error("invalid options: {0}")]
    Options(String),
}

impl AttributionError {
    /// Whether the work stopped because the caller's progress asked it to.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Circuit(e) if e.is_cancelled())
    }
}

impl From<ModelError> for AttributionError {
    fn from(e: ModelError) -> Self {
        Self::Circuit(CircuitError::Model(e))
    }
}

impl From<fidelis_graph::GraphError> for AttributionError {
    fn from(e: fidelis_graph::GraphError) -> Self {
        Self::Circuit(CircuitError::Graph(e))
    }
}

/// `Result` with [`AttributionError`].
pub type Result<T> = std::result::Result<T, AttributionError>;
