//! The error type of the circuit runtime, shared by `fidelis-faithfulness` and
//! `fidelis-attribution`.

use fidelis_models::ModelError;

/// What can go wrong while preparing data for, or running, a circuit computation.
#[derive(Debug, thiserror::Error)]
pub enum CircuitError {
    /// The model failed (bad input length, hook misuse, ...).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The graph is malformed or does not fit the model.
    #[error(transparent)]
    Graph(#[from] fidelis_graph::GraphError),
    /// The data cannot be used as given (names the example and the problem).
    #[error("invalid data: {0}")]
    Data(String),
    /// A metric produced NaN or infinity.
    #[error("the metric {metric} is not finite ({value}) on batch {batch}")]
    NotFinite {
        /// Metric name.
        metric: String,
        /// The value seen.
        value: f32,
        /// Index of the batch.
        batch: usize,
    },
    /// A tensor could not be read back to the host as `f32` values.
    #[error("reading a tensor back to the host failed: {0}")]
    Readback(String),
    /// The caller's [`crate::Progress`] asked the work to stop.
    #[error("cancelled")]
    Cancelled,
}

impl CircuitError {
    /// Whether the work stopped because the caller's progress asked it to.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled | Self::Model(ModelError::Cancelled))
    }
}

/// `Result` with [`CircuitError`].
pub type Result<T> = std::result::Result<T, CircuitError>;
