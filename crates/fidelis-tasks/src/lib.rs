//! Task datasets for circuit discovery: pairs of clean and corrupted prompts with single-token
//! answers, built for a given model's tokenizer.
//!
//! Edge attribution (EAP, EAP-IG; Hanna et al. 2024, arXiv:2403.17806) runs a model on a clean
//! prompt and on a corrupted one and compares activations position by position, so the two
//! prompts must encode to the **same number of tokens**, and the metric reads the probability
//! of answer tokens at the last position, so answers must be **single tokens**. Whether a
//! prompt pair qualifies depends on the tokenizer; this crate therefore builds every dataset
//! for the tokenizer you pass and keeps only the candidates that qualify.
//!
//! # Tasks
//!
//! | [`Task`] | clean → correct | corrupted → incorrect |
//! |---|---|---|
//! | `ioi` | "When Mary and John went to the store, John gave a drink to" → " Mary" | "..., Tiffany gave a drink to"; incorrect " John" (the subject) |
//! | `greater-than` | "The war lasted from the year 1745 to the year 17" → "46".."99" | "...1701..."; incorrect "00".."45" |
//! | `sva` | "The author near the pilots" → " is" | "The authors near the pilots"; incorrect " are" |
//! | `gender-bias` | "The nurse said that" → " she" | "The carpenter said that"; incorrect " he" |
//! | `country-capital` | "The capital of France is" → " Paris" | "The capital of Egypt is"; incorrect " Cairo" |
//! | `hypernymy` | "The apple is a kind of" → " fruit" | "The hammer is a kind of"; incorrect " tool" |
//!
//! Each task's module doc gives its source paper and the exact answer convention. Word lists
//! live in `data/*.txt`, one item per line, each with a header saying where it comes from.
//!
//! # Generating
//!
//! [`generate`] fills each task's templates with its word lists, drops candidates whose answers
//! are not single tokens or whose prompts differ in token length, and samples `n` distinct
//! examples with a seeded generator: the same tokenizer, `n` and seed always give the same
//! examples. If fewer than `n` valid examples exist it returns
//! [`TaskError::TooFewExamples`] with how many did and why that usually happens (Greater-Than,
//! for one, cannot be posed to tokenizers that split numbers into digits).
//!
//! ```
//! use fidelis_tasks::{Task, generate, check_equal_lengths};
//!
//! // A toy tokenizer, one id per word (a real one wraps the model's tokenizer).
//! let tok = |text: &str| -> Result<Vec<u32>, String> {
//!     let id = |word: &str| word.bytes().fold(7u32, |h, b| h.wrapping_mul(31) ^ u32::from(b));
//!     Ok(text.split_whitespace().map(id).collect())
//! };
//! let examples = generate(Task::Ioi, &tok, 8, 0).unwrap();
//! assert_eq!(examples.len(), 8);
//! check_equal_lengths(&examples, &tok).unwrap();
//! assert_eq!(examples[0].correct.len(), 1);
//! assert_ne!(examples[0].correct, examples[0].incorrect);
//! ```
//!
//! # Loading
//!
//! [`load_csv`] reads the EAP-IG reference CSV (`clean, corrupted, correct_idx, incorrect_idx`,
//! token ids; a Greater-Than file with a `label` column works too). [`load_jsonl`] reads one
//! JSON object per line with answers as text (`"answer": " Mary"`, `"wrong": " John"`) or ids.
//! Both check token lengths with the tokenizer given and name the file and line of any problem.
//!
//! The caller tokenizes the prompts itself and prepends BOS; [`TextTokenizer`] never adds it.
//! This crate has no dependency on Burn or on other Fidelis crates.

pub mod context_copy;
mod country_capital;
mod csv;
mod error;
mod example;
mod gender_bias;
mod greater_than;
mod hypernymy;
mod ioi;
mod jsonl;
mod sample;
pub mod split;
mod sva;
mod words;

use std::fmt;
use std::str::FromStr;

pub use crate::csv::load_csv;
pub use crate::error::{TaskError, UnknownTask};
pub use crate::example::{Example, TextTokenizer, check_equal_lengths};
pub use crate::jsonl::load_jsonl;

/// The task families this crate can generate. `Display`, `FromStr` and serde all use the one
/// name table, [`Task::NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// Indirect Object Identification: name the indirect object, not the repeated subject.
    Ioi,
    /// Greater-Than: continue a year span with an end year after the start year.
    GreaterThan,
    /// Subject-verb agreement: pick the verb form matching the subject's number.
    Sva,
    /// Gender bias: the pronoun a profession's stereotype suggests.
    GenderBias,
    /// Country-Capital: name a country's capital.
    CountryCapital,
    /// Hypernymy: name an item's category.
    Hypernymy,
}

impl Task {
    /// Every task, in the order of the crate doc's table.
    pub const ALL: [Task; 6] = [
        Task::Ioi,
        Task::GreaterThan,
        Task::Sva,
        Task::GenderBias,
        Task::CountryCapital,
        Task::Hypernymy,
    ];

    /// The command-line names of [`Task::ALL`], in order.
    pub const NAMES: [&'static str; 6] = [
        "ioi",
        "greater-than",
        "sva",
        "gender-bias",
        "country-capital",
        "hypernymy",
    ];

    /// The task's command-line name (`"ioi"`, `"greater-than"`, ...), which [`FromStr`] reads.
    pub fn name(self) -> &'static str {
        let i = Task::ALL.iter().position(|&t| t == self).unwrap_or(0);
        Task::NAMES[i]
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = UnknownTask;

    /// Reads a task name as [`Task::name`] writes it (ASCII case-insensitive; `_` may stand for `-`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let normalized = name.trim().to_ascii_lowercase().replace('_', "-");
        Task::ALL
            .into_iter()
            .find(|task| task.name() == normalized)
            .ok_or_else(|| UnknownTask(name.to_owned()))
    }
}

impl serde::Serialize for Task {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Task {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Generates `n` distinct examples of `task` for tokenizer `tok`, deterministically from `seed`.
///
/// Every example has single-token answers and clean/corrupted prompts of equal token length
/// under `tok`. Returns [`TaskError::TooFewExamples`] when fewer than `n` valid examples can be
/// made, and [`TaskError::Tokenizer`] when `tok` fails.
pub fn generate(
    task: Task,
    tok: &dyn TextTokenizer,
    n: usize,
    seed: u64,
) -> Result<Vec<Example>, TaskError> {
    match task {
        Task::Ioi => ioi::generate(tok, n, seed),
        Task::GreaterThan => greater_than::generate(tok, n, seed),
        Task::Sva => sva::generate(tok, n, seed),
        Task::GenderBias => gender_bias::generate(tok, n, seed),
        Task::CountryCapital => country_capital::generate(tok, n, seed),
        Task::Hypernymy => hypernymy::generate(tok, n, seed),
    }
}

/// The README's examples, compiled and run as doctests so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
