//! The one error type of `fidelis-models`.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
///
/// Every variant names the file, tensor or setting at fault, so that a user reading the message
/// knows what to fix without a backtrace.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file the model needs does not exist.
    #[error("missing file: {path} ({what})")]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file was expected to hold.
        what: &'static str,
    },
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `config.json` could not be parsed.
    #[error("malformed config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The architecture (or one of its options) is not implemented.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A safetensors file is truncated or inconsistent.
    #[error("invalid safetensors file {path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A GGUF file is malformed (bad magic, truncated, inconsistent metadata).
    #[error("invalid GGUF file {path}: {message}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A GGUF tensor uses a type this crate cannot dequantize.
    #[error("tensor {tensor}: unsupported GGUF tensor type {type_id} ({type_name})")]
    UnknownTensorType {
        /// The tensor name.
        tensor: String,
        /// The numeric GGML type id.
        type_id: u32,
        /// Its name if known, otherwise "unknown".
        type_name: &'static str,
    },
    /// A weight the architecture needs is absent from the checkpoint.
    #[error("missing tensor {0} in checkpoint")]
    MissingTensor(String),
    /// A weight has a different shape than the config implies.
    #[error("tensor {tensor}: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The tensor name.
        tensor: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The tokenizer could not be built or failed on the input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An input the caller gave is not valid for this model (too long, empty, out of vocabulary).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A hook was asked for something that cannot be done (unknown point, wrong shape).
    #[error("hook {point}: {message}")]
    Hook {
        /// The hook point name.
        point: String,
        /// What went wrong.
        message: String,
    },
    /// Fetching a model (the only network access in Fidelis) failed.
    #[error("fetch failed: {0}")]
    Fetch(String),
    /// The caller's [`crate::Progress`] asked the work to stop.
    #[error("cancelled")]
    Cancelled,
}

/// Shorthand for results of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
