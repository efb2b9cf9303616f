//! # Fidelis
//!
//! Interpretability of transformer language models in Rust, on Burn: circuit discovery (EAP,
//! EAP-IG on inputs or activations, clean-corrupted, exact patching; Hanna, Pezzelle &
//! Belinkov 2024), circuit faithfulness (normalized faithfulness, curves at the MIB sizes,
//! CPR/CMD, completeness), context attribution (PECoRe, Sarti et al. 2024) and token
//! attribution, on Hugging Face folders and GGUF files of GPT-2, Llama 2/3, Mistral, Qwen 2/3,
//! Gemma 2 and Pythia.
//!
//! This crate is the one dependency a program needs: it re-exports every layer (and Burn, at
//! the version Fidelis is built with), a [`prelude`], and [`data`], the step from a task or a
//! CSV/JSONL file to tokenized prompt pairs. The backend is a Cargo feature (`flex`, the
//! default CPU backend; `ndarray`; `wgpu`; `cuda`), and [`cpu`] gives the CPU device.
//!
//! ```no_run
//! use fidelis::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = fidelis::cpu();
//! // `organism` is the small GPT-2 this repository ships; any Hugging Face folder, GGUF file
//! // or cached hub id works the same way.
//! let model = Model::load(&fidelis::models::fetch::resolve_model_name("organism")?, &device)?;
//! let pairs = fidelis::data::task_pairs(&model, Task::Ioi, 16, 0, true)?;
//! let cfg = model.config();
//! let mut graph = Graph::new(GraphConfig::new(cfg.n_layers, cfg.n_heads, cfg.parallel_attn_mlp));
//! let opts = EdgeAttribution::new(Method::EapIgInputs);
//! attribute_edges(&model.transformer, &mut graph, &pairs, &BuiltinMetric::LogitDiff, &opts)?;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/` has complete programs: `circuit_discovery`, `faithfulness_curve`,
//! `context_attribution` (`cargo run -p fidelis --example circuit_discovery`).

pub use burn;
pub use fidelis_attribution as attribution;
pub use fidelis_circuit as circuit;
pub use fidelis_context as context;
pub use fidelis_faithfulness as faithfulness;
pub use fidelis_graph as graph;
pub use fidelis_models as models;
pub use fidelis_tasks as tasks;

/// The CPU device of the backend compiled in (`flex` by default, else `ndarray`), or Burn's
/// default device when neither is.
pub fn cpu() -> burn::prelude::Device {
    #[cfg(feature = "flex")]
    return burn::prelude::Device::flex();
    #[cfg(all(not(feature = "flex"), feature = "ndarray"))]
    #[allow(deprecated)]
    return burn::prelude::Device::ndarray();
    #[cfg(not(any(feature = "flex", feature = "ndarray")))]
    return burn::prelude::Device::default();
}

/// What most programs use, in one import.
pub mod prelude {
    pub use burn::prelude::Device;
    pub use fidelis_attribution::{
        EdgeAttribution, EdgeMethod, Method, attribute_edges, attribute_edges_with_progress,
    };
    pub use fidelis_circuit::{Ablation, BuiltinMetric, Metric, PromptPair};
    pub use fidelis_context::{PecoreConfig, attribute_context};
    pub use fidelis_faithfulness::{
        EvalOptions, faithfulness_curve, faithfulness_curve_with_progress, mib_sizes,
    };
    pub use fidelis_graph::{Graph, GraphConfig};
    pub use fidelis_models::{
        Dtype, Hooks, Model, Progress, Seq2SeqModel, Silent, Transformer, point,
    };
    pub use fidelis_tasks::{Example, Task};
}

/// From tasks and data files to the tokenized prompt pairs the methods take.
pub mod data {
    use std::path::Path;

    use fidelis_circuit::PromptPair;
    use fidelis_models::{Model, ModelError, Tokenizer};
    use fidelis_tasks::{Example, Task, TaskError, TextTokenizer};

    /// A model's tokenizer as the task generators and loaders see it: encoding, and the
    /// unknown token's id, so that answers outside the vocabulary are refused.
    pub struct ModelTokens<'a>(pub &'a Tokenizer);

    impl TextTokenizer for ModelTokens<'_> {
        fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
            self.0.encode(text).map_err(|e| e.to_string())
        }

        fn unknown_id(&self) -> Option<u32> {
            self.0.unk_id()
        }
    }

    /// What going from text to prompt pairs can fail with.
    #[derive(Debug)]
    pub enum DataError {
        /// The task generator or the file loader refused the data.
        Task(TaskError),
        /// The tokenizer failed on example `index`.
        Tokenizer {
            /// 0-based example index.
            index: usize,
            /// The tokenizer's error.
            source: ModelError,
        },
    }

    impl std::fmt::Display for DataError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Self::Task(e) => write!(f, "{e}"),
                Self::Tokenizer { index, source } => write!(f, "example {index}: {source}"),
            }
        }
    }

    impl std::error::Error for DataError {}

    impl From<TaskError> for DataError {
        fn from(e: TaskError) -> Self {
            Self::Task(e)
        }
    }

    /// Tokenizes examples into prompt pairs, BOS prepended when `add_bos` is set and the model
    /// has one (the answers are single tokens already, read at the last position).
    pub fn pairs_from_examples(
        model: &Model,
        examples: &[Example],
        add_bos: bool,
    ) -> Result<Vec<PromptPair>, DataError> {
        examples
            .iter()
            .enumerate()
            .map(|(index, ex)| {
                let enc = |text: &str| {
                    model
                        .tokenizer
                        .encode_prompt(text, add_bos)
                        .map_err(|source| DataError::Tokenizer { index, source })
                };
                Ok(PromptPair {
                    clean: enc(&ex.clean)?,
                    corrupted: enc(&ex.corrupted)?,
                    correct: ex.correct.clone(),
                    incorrect: ex.incorrect.clone(),
                })
            })
            .collect()
    }

    /// `n` examples of a generated `task` for `model`'s tokenizer (seeded), as prompt pairs.
    pub fn task_pairs(
        model: &Model,
        task: Task,
        n: usize,
        seed: u64,
        add_bos: bool,
    ) -> Result<Vec<PromptPair>, DataError> {
        let examples = fidelis_tasks::generate(task, &ModelTokens(&model.tokenizer), n, seed)?;
        pairs_from_examples(model, &examples, add_bos)
    }

    /// The examples of an EAP-IG CSV (`.csv`) or a JSONL file with text answers, as prompt
    /// pairs for `model`.
    pub fn file_pairs(
        model: &Model,
        path: &Path,
        add_bos: bool,
    ) -> Result<Vec<PromptPair>, DataError> {
        let tok = ModelTokens(&model.tokenizer);
        let examples = match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => fidelis_tasks::load_csv(path, &tok)?,
            _ => fidelis_tasks::load_jsonl(path, &tok)?,
        };
        pairs_from_examples(model, &examples, add_bos)
    }
}

/// The README's examples, compiled and run as doctests so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
