//! The error type of this crate.

/// Errors from building, filling, selecting in, reading or rendering a [`Graph`](crate::Graph).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    /// A score matrix had the wrong shape.
    #[error("score matrix has shape [{got_rows}, {got_cols}], expected [{rows}, {cols}]")]
    ShapeMismatch {
        /// Expected number of rows.
        rows: usize,
        /// Expected number of columns.
        cols: usize,
        /// Rows given.
        got_rows: usize,
        /// Columns given.
        got_cols: usize,
    },
    /// A flat buffer did not have the expected number of entries.
    #[error("buffer has {got} entries, expected {expected}")]
    LengthMismatch {
        /// Expected length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// More edges were requested than the graph has.
    #[error("requested {requested} edges but the graph only has {available}")]
    TooManyEdges {
        /// Edges requested.
        requested: usize,
        /// Edges in the graph.
        available: usize,
    },
    /// More nodes were requested than there are scored nodes.
    #[error("requested {requested} nodes but only {available} nodes are scored")]
    TooManyNodes {
        /// Nodes requested.
        requested: usize,
        /// Forward nodes with a (non-NaN) score.
        available: usize,
    },
    /// A node-level operation was asked of a graph without node scores.
    #[error("the graph has no node scores")]
    NoNodeScores,
    /// Neuron-level data needs `d_model` in the [`GraphConfig`](crate::GraphConfig).
    #[error("neuron-level data needs `d_model` in the graph config")]
    NoDModel,
    /// A node name did not match any node of this graph.
    #[error("unknown node name `{0}`")]
    UnknownNode(String),
    /// An edge name did not match any edge of this graph.
    #[error("unknown edge name `{0}`")]
    UnknownEdge(String),
    /// The configuration in a file was missing or invalid.
    #[error("invalid graph config: {0}")]
    InvalidConfig(String),
    /// The JSON could not be parsed or had the wrong structure.
    #[error("invalid graph JSON: {0}")]
    Json(String),
    /// The external Graphviz `dot` program failed.
    #[error("graphviz `dot` failed: {0}")]
    Render(String),
}
