//! The error type of `fidelis-faithfulness`.

use fidelis_models::ModelError;

/// What can go wrong while preparing data for, or running, an edge-ablated evaluation.
#[derive(Debug, thiserror::Error)]
pub enum FaithError {
    /// The model failed (bad input length, hook misuse, ...).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The graph does not fit the model.
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
}

/// `Result` with [`FaithError`].
pub type Result<T> = std::result::Result<T, FaithError>;
