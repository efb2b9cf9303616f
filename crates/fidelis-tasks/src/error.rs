//! The crate's one error type.

use std::path::PathBuf;

use crate::Task;

/// Everything that can go wrong while generating or loading task examples.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A file's contents are malformed (bad CSV quoting, bad JSON, a missing column or field,
    /// a token id that is not a number).
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// 1-based line number (for CSV, the line on which the record starts).
        line: usize,
        /// What is wrong, in words.
        message: String,
    },
    /// An answer given as text does not encode to exactly one token.
    #[error("answer {answer:?} encodes to {} tokens {tokens:?}; answers must be single tokens", tokens.len())]
    NotSingleToken {
        /// The answer text, as written (usually with its leading space).
        answer: String,
        /// What the tokenizer made of it.
        tokens: Vec<u32>,
    },
    /// An answer given as text is not in the vocabulary: it encodes to the unknown token alone,
    /// and would be scored as that token.
    #[error(
        "answer {answer:?} is not in the model's vocabulary (it encodes to the unknown token, id \
         {id}); answers must be tokens of the vocabulary"
    )]
    UnknownAnswer {
        /// The answer text, as written.
        answer: String,
        /// The unknown token's id.
        id: u32,
    },
    /// A clean prompt and its corrupted prompt encode to different numbers of tokens; edge
    /// attribution patches position by position, so they must match.
    #[error(
        "example {index}: clean prompt has {clean} tokens but corrupted prompt has {corrupted}; \
         they must have equal token length"
    )]
    UnequalLength {
        /// 0-based index of the example (the record number within a file).
        index: usize,
        /// Token count of the clean prompt (without BOS).
        clean: usize,
        /// Token count of the corrupted prompt (without BOS).
        corrupted: usize,
    },
    /// A generator could not make as many distinct valid examples as asked for with this
    /// tokenizer.
    #[error(
        "{task}: asked for {wanted} examples but only {valid} valid distinct ones were found; {hint}"
    )]
    TooFewExamples {
        /// The task being generated.
        task: Task,
        /// How many examples were asked for.
        wanted: usize,
        /// How many distinct valid examples were found.
        valid: usize,
        /// What usually causes this, and what to try.
        hint: String,
    },
    /// An error from a file, attached to the line where it happened (wraps
    /// [`TaskError::NotSingleToken`] and [`TaskError::UnequalLength`] from the loaders).
    #[error("{}:{line}: {error}", path.display())]
    InFile {
        /// The file being loaded.
        path: PathBuf,
        /// 1-based line number (for CSV, the line on which the record starts).
        line: usize,
        /// The error at that line (named `error`, not `source`, so that it is shown once: this
        /// message already includes it).
        error: Box<TaskError>,
    },
    /// The tokenizer failed.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
}

/// A task name that [`Task::from_str`](std::str::FromStr) does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown task {0:?}; expected one of: ioi, greater-than, sva, gender-bias, country-capital, hypernymy"
)]
pub struct UnknownTask(pub String);
