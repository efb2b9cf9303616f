//! One typed options struct per job, shared by the CLI (clap), `fidelis serve` (serde JSON)
//! and `cargo xtask`.
//!
//! Every choice is an enum whose names come from one table (strum's, in the crate that defines
//! it): clap lists them as `[possible values: ...]` through [`choice`], serde reads and writes
//! the same names, and [`to_args`] turns a struct back into the command line that reproduces
//! it, so the web page's exported command is the run by construction.

use std::ffi::OsStr;
use std::fmt::Display;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use clap::builder::{PossibleValue, TypedValueParser};
use fidelis_attribution::EdgeMethod;
use fidelis_attribution::token::{
    Baseline, DEFAULT_IG_STEPS, DEFAULT_PASS_MEMORY_BYTES, DEFAULT_ROWS_PER_PASS,
    EmbeddingAggregation, TargetFunction, TokenAttributionConfig, TokenMethod,
};
use fidelis_circuit::{AblationKind, BuiltinMetric};
use fidelis_context::CtiMetric;
use fidelis_faithfulness::{EvalOptions, Selection};
use fidelis_models::Dtype;
use fidelis_tasks::Task;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A clap value parser over a name table: `--help` lists the names as
/// `[possible values: ...]`, and a value is read with the type's own `FromStr`, whose error
/// (e.g. `unknown method "x" (expected one of ...)`) is what the user sees.
#[derive(Debug)]
pub struct Choice<T> {
    names: &'static [&'static str],
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for Choice<T> {
    fn clone(&self) -> Self {
        Self {
            names: self.names,
            _value: PhantomData,
        }
    }
}

impl<T> TypedValueParser for Choice<T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: Display,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> std::result::Result<T, clap::Error> {
        let text = value.to_string_lossy();
        text.parse::<T>().map_err(|e| {
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n")).with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.names.iter().map(|n| PossibleValue::new(*n))))
    }
}

/// A clap value parser over the names `names` of a `T` (see [`Choice`]).
pub fn choice<T>(names: &'static [&'static str]) -> Choice<T> {
    Choice {
        names,
        _value: PhantomData,
    }
}

/// A clap value parser for a strum enum, whose `VARIANTS` are its names.
pub fn variants<T: strum::VariantNames>() -> Choice<T> {
    choice::<T>(T::VARIANTS)
}

/// Where the examples of a circuit job come from (`--task`/`--data`, `--n`, `--seed`,
/// `--no-bos`).
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataOptions {
    /// A generated task.
    #[arg(long, conflicts_with = "data", required_unless_present = "data",
          value_parser = choice::<Task>(&Task::NAMES))]
    pub task: Option<Task>,
    /// An EAP-IG CSV (clean, corrupted, correct_idx, incorrect_idx) or a JSONL with text answers.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Number of generated examples (with --task).
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Seed of the task generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not prepend the BOS token to prompts.
    #[arg(long)]
    pub no_bos: bool,
}

impl Default for DataOptions {
    /// clap's defaults (no task: the command line must name one, or a data file).
    fn default() -> Self {
        Self {
            task: None,
            data: None,
            n: 64,
            seed: 0,
            no_bos: false,
        }
    }
}

impl DataOptions {
    /// The examples' source.
    pub fn source(&self) -> Result<crate::circuit::DataSource> {
        Ok(match (&self.task, &self.data) {
            (Some(task), _) => crate::circuit::DataSource::Task {
                task: *task,
                n: self.n,
                seed: self.seed,
            },
            (None, Some(path)) => crate::circuit::DataSource::File(path.clone()),
            (None, None) => bail!("give --task NAME or --data FILE"),
        })
    }
}

/// What edge scoring computes: the part of `circuit discover` that the web page and the
/// experiments run too.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscoverJob {
    /// The examples.
    #[command(flatten)]
    #[serde(flatten)]
    pub data: DataOptions,
    /// The edge scoring method.
    #[arg(long, default_value_t = EdgeMethod::EapIgInputs, value_parser = variants::<EdgeMethod>())]
    pub method: EdgeMethod,
    /// Interpolation steps of the EAP-IG methods.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// The loss that is differentiated (divergences as is, behaviour metrics negated).
    #[arg(long, default_value_t = BuiltinMetric::LogitDiff, value_parser = variants::<BuiltinMetric>())]
    pub loss: BuiltinMetric,
    /// What Δa is measured against: patching (corrupted prompts), mean (over the clean
    /// prompts) or zero.
    #[arg(long, default_value_t = AblationKind::Patching, value_parser = variants::<AblationKind>())]
    pub ablation: AblationKind,
    /// Examples per batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Interpolation steps stacked into one forward/backward (more memory, fewer passes).
    #[arg(long, default_value_t = 1)]
    pub steps_per_pass: usize,
    /// Passes of eap-ig-activations run at once, each on its own thread (memory × this)
    /// [default: the number of cores on a CPU device, 1 on a GPU].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Average scores over d_model instead of summing.
    #[arg(long)]
    pub mean_aggregation: bool,
    /// With --method exact: edges patched per forward.
    #[arg(long, default_value_t = 32)]
    pub exact_per_pass: usize,
}

impl Default for DiscoverJob {
    fn default() -> Self {
        Self {
            data: DataOptions::default(),
            method: EdgeMethod::EapIgInputs,
            steps: 5,
            loss: BuiltinMetric::LogitDiff,
            ablation: AblationKind::Patching,
            batch_size: 16,
            steps_per_pass: 1,
            workers: None,
            mean_aggregation: false,
            exact_per_pass: 32,
        }
    }
}

/// `fidelis circuit discover` (without the model flags): a [`DiscoverJob`] and what to do with
/// its graph.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscoverOptions {
    /// The scoring job.
    #[command(flatten)]
    #[serde(flatten)]
    pub job: DiscoverJob,
    /// With --method exact: score only the top edges of this earlier graph JSON.
    #[arg(long)]
    pub exact_from: Option<PathBuf>,
    /// With --exact-from: how many of its top edges.
    #[arg(long, default_value_t = 200)]
    pub exact_top: usize,
    /// Mark the top-n edges as the circuit (pruned) in the written graph.
    #[arg(long)]
    pub top_n: Option<usize>,
    /// How many top edges to print.
    #[arg(long, default_value_t = 20)]
    pub print_top: usize,
    /// Also evaluate the faithfulness curve at the MIB sizes (0.1 % … 100 % of edges): print
    /// it, and write it next to --out as .curve.csv, .curve.svg and .curve.png.
    #[arg(long)]
    pub curve: bool,
    /// Store node-level scores (each node's summed outgoing edge scores) in the graph JSON.
    #[arg(long)]
    pub node_scores: bool,
    /// Where to write the graph JSON (its folder is created).
    #[arg(long, default_value = "fidelis-out/graph.json")]
    pub out: PathBuf,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        Self {
            job: DiscoverJob::default(),
            exact_from: None,
            exact_top: 200,
            top_n: None,
            print_top: 20,
            curve: false,
            node_scores: false,
            out: crate::output::default_path("graph.json"),
        }
    }
}

/// `fidelis inspect --plan`: the attribution run to size, with `circuit discover`'s defaults.
/// Every flag but `--plan` needs `--plan`.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanOptions {
    /// Estimate the peak memory and the forward/backward passes of `circuit discover` on this
    /// model instead of describing it (see `--help`).
    #[arg(long)]
    pub plan: bool,
    /// The edge scoring method.
    #[arg(long, requires = "plan", default_value_t = EdgeMethod::EapIgInputs,
          value_parser = variants::<EdgeMethod>())]
    pub method: EdgeMethod,
    /// Examples per batch (`circuit discover --batch-size`).
    #[arg(long, visible_alias = "batch", requires = "plan", default_value_t = 16)]
    pub batch_size: usize,
    /// Padded prompt length in tokens: the longest prompt of a batch, BOS included.
    #[arg(long, requires = "plan", required_if_eq("plan", "true"))]
    pub tokens: Option<usize>,
    /// Number of prompt pairs (`circuit discover --n`).
    #[arg(long, requires = "plan", default_value_t = 64)]
    pub pairs: usize,
    /// Interpolation steps of the EAP-IG methods.
    #[arg(long, requires = "plan", default_value_t = 5)]
    pub steps: usize,
    /// Interpolation steps stacked into one forward/backward.
    #[arg(long, requires = "plan", default_value_t = 1)]
    pub steps_per_pass: usize,
    /// Passes of eap-ig-activations run at once (1, as on a GPU).
    #[arg(long, requires = "plan", default_value_t = 1)]
    pub workers: usize,
    /// With --method exact: edges patched per forward.
    #[arg(long, requires = "plan", default_value_t = 32)]
    pub exact_per_pass: usize,
    /// Float type of weights and activations (bytes per element): the model flags' `--dtype`.
    #[arg(skip)]
    pub dtype: Dtype,
}

impl Default for PlanOptions {
    fn default() -> Self {
        let job = DiscoverJob::default();
        Self {
            plan: false,
            method: job.method,
            batch_size: job.batch_size,
            tokens: None,
            pairs: job.data.n,
            steps: job.steps,
            steps_per_pass: job.steps_per_pass,
            workers: 1,
            exact_per_pass: job.exact_per_pass,
            dtype: Dtype::F32,
        }
    }
}

impl PlanOptions {
    /// The library's request; errors when `--tokens` is missing.
    pub fn request(&self) -> Result<fidelis_attribution::plan::PlanRequest> {
        let tokens = self
            .tokens
            .context("--plan needs --tokens (the padded prompt length)")?;
        Ok(fidelis_attribution::plan::PlanRequest {
            method: self.method,
            pairs: self.pairs,
            batch_size: self.batch_size,
            tokens,
            steps: self.steps,
            steps_per_pass: self.steps_per_pass,
            workers: self.workers,
            edges_per_pass: self.exact_per_pass,
            bytes_per_element: self.dtype.bytes() as u64,
        })
    }
}

/// `fidelis circuit evaluate` (without the graph path and the model flags).
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvaluateOptions {
    /// The examples.
    #[command(flatten)]
    #[serde(flatten)]
    pub data: DataOptions,
    /// The metric.
    #[arg(long, default_value_t = BuiltinMetric::LogitDiff, value_parser = variants::<BuiltinMetric>())]
    pub metric: BuiltinMetric,
    /// What ablated edges carry: patching (corrupted prompts), mean or zero.
    #[arg(long, default_value_t = AblationKind::Patching, value_parser = variants::<AblationKind>())]
    pub ablation: AblationKind,
    /// Circuit sizes (edge counts, comma-separated), chosen as --selection says.
    #[arg(long, value_delimiter = ',', conflicts_with = "mib")]
    pub sizes: Vec<usize>,
    /// Use the MIB edge fractions (0.1 % … 100 %) as sizes.
    #[arg(long)]
    pub mib: bool,
    /// How each size's circuit is chosen: abs (top edges by |score|, the paper's choice),
    /// signed (top edges by signed score) or greedy (grown from the logits by |score|).
    #[arg(long, default_value_t = Selection::TopAbs, value_parser = variants::<Selection>())]
    pub selection: Selection,
    /// Examples per batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Circuits stacked into one forward (memory × this, fewer passes).
    #[arg(long, default_value_t = EvalOptions::DEFAULT_CIRCUITS_PER_PASS)]
    pub circuits_per_pass: usize,
    /// Write the curve as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the result as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the curve as an SVG picture (needs --sizes or --mib).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Draw the curve as a PNG picture (needs --sizes or --mib; twice the SVG's size).
    #[arg(long)]
    pub png: Option<PathBuf>,
}

impl Default for EvaluateOptions {
    fn default() -> Self {
        Self {
            data: DataOptions::default(),
            metric: BuiltinMetric::LogitDiff,
            ablation: AblationKind::Patching,
            sizes: Vec::new(),
            mib: false,
            selection: Selection::TopAbs,
            batch_size: 16,
            circuits_per_pass: EvalOptions::DEFAULT_CIRCUITS_PER_PASS,
            csv: None,
            json: None,
            svg: None,
            png: None,
        }
    }
}

/// `fidelis generate` (without the model flags).
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateOptions {
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not prepend the BOS token.
    #[arg(long)]
    pub no_bos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            max_new_tokens: 32,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
            no_bos: false,
        }
    }
}

/// The token attribution method and its settings, shared by `fidelis attribute` and the CCI
/// step of `fidelis context`.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenOptions {
    /// The attribution method.
    #[arg(long, visible_alias = "attribution-method", aliases = ["attribution_method"],
          default_value_t = TokenMethod::Saliency, value_parser = variants::<TokenMethod>())]
    pub method: TokenMethod,
    /// Integrated-gradient steps (with --method ig).
    #[arg(long, default_value_t = DEFAULT_IG_STEPS)]
    pub ig_steps: usize,
    /// Baseline of ig and occlusion: `zero` or a text that is one token (e.g. an UNK or pad).
    #[arg(long, default_value = "zero")]
    pub baseline: String,
    /// Reduction over embedding dimensions.
    #[arg(long, default_value_t = EmbeddingAggregation::L2Norm,
          value_parser = variants::<EmbeddingAggregation>())]
    pub aggregation: EmbeddingAggregation,
}

impl Default for TokenOptions {
    fn default() -> Self {
        Self {
            method: TokenMethod::Saliency,
            ig_steps: DEFAULT_IG_STEPS,
            baseline: "zero".into(),
            aggregation: EmbeddingAggregation::L2Norm,
        }
    }
}

impl TokenOptions {
    /// The token attribution configuration for `model` (the baseline text becomes its token);
    /// attention is averaged over layers and heads.
    pub fn config(&self, model: &fidelis_models::Model) -> Result<TokenAttributionConfig> {
        self.config_for(&model.tokenizer)
    }

    /// [`TokenOptions::config`] for any model with this tokenizer (encoder-decoders too).
    pub fn config_for(
        &self,
        tokenizer: &fidelis_models::Tokenizer,
    ) -> Result<TokenAttributionConfig> {
        let mut cfg = TokenAttributionConfig::new(self.method);
        cfg.ig_steps = self.ig_steps;
        cfg.aggregation = self.aggregation;
        cfg.baseline = match self.baseline.as_str() {
            "zero" => Baseline::Zero,
            text => Baseline::Token(
                tokenizer
                    .single_token(text)
                    .context("--baseline must be `zero` or one token")?,
            ),
        };
        Ok(cfg)
    }
}

/// `fidelis attribute` (without the model flags and output files): token attribution of a
/// model's next-token predictions to the prompt.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttributeOptions {
    /// The prompt.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub prompt: String,
    /// A continuation to attribute token by token (forced); without it the model's own greedy
    /// continuation of --max-new-tokens tokens is used.
    #[arg(long)]
    pub output: Option<String>,
    /// Tokens generated when no --output is given.
    #[arg(long, default_value_t = 1)]
    pub max_new_tokens: usize,
    /// The attribution method and its settings.
    #[command(flatten)]
    #[serde(flatten)]
    pub token: TokenOptions,
    /// The attributed function of the next-token logits.
    #[arg(long, default_value_t = TargetFunction::Probability,
          value_parser = variants::<TargetFunction>())]
    pub target: TargetFunction,
    /// The token whose prediction is attributed (one token; with one output step only).
    #[arg(long)]
    pub target_token: Option<String>,
    /// The contrast token of contrast-prob-diff / contrast-logit-diff (one token).
    #[arg(long)]
    pub contrast_token: Option<String>,
    /// A contrast prompt: its next-token distribution is the reference of kl, pcxmi and the
    /// contrastive targets.
    #[arg(long)]
    pub contrast_prompt: Option<String>,
    /// Attention method: one layer (default: mean over layers).
    #[arg(long)]
    pub layer: Option<usize>,
    /// Attention method: one head (default: mean over heads).
    #[arg(long)]
    pub head: Option<usize>,
    /// Scale each step's scores to unit L1 mass.
    #[arg(long)]
    pub normalize: bool,
    /// Also report scores per word of the prompt (subword tokens summed).
    #[arg(long)]
    pub words: bool,
    /// Do not prepend the BOS token.
    #[arg(long)]
    pub no_bos: bool,
    /// Most stacked copies of the input per forward/backward: IG points, occluded variants and
    /// output steps share passes of up to this many rows (Captum's `internal_batch_size`).
    #[arg(long, visible_alias = "internal-batch-size", aliases = ["attribution_batch_size", "internal_batch_size"],
          default_value_t = DEFAULT_ROWS_PER_PASS)]
    pub attribution_batch_size: usize,
    /// Estimated activation memory one stacked pass may use, in MiB: passes hold fewer rows
    /// than --attribution-batch-size when longer inputs would need more.
    #[arg(long, aliases = ["attribution_memory_mib"], default_value_t = DEFAULT_PASS_MEMORY_BYTES >> 20)]
    pub attribution_memory_mib: usize,
    /// Encoder-decoders whose sources carry a language token (mBART, M2M100, NLLB): its name.
    #[arg(long, aliases = ["src_lang", "src-lang"])]
    pub source_lang: Option<String>,
    /// Encoder-decoders: the target-language token forced first (default: the model's
    /// forced_bos_token_id).
    #[arg(long, aliases = ["tgt_lang", "tgt-lang"])]
    pub target_lang: Option<String>,
}

impl Default for AttributeOptions {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            output: None,
            max_new_tokens: 1,
            token: TokenOptions::default(),
            target: TargetFunction::Probability,
            target_token: None,
            contrast_token: None,
            contrast_prompt: None,
            layer: None,
            head: None,
            normalize: false,
            words: false,
            no_bos: false,
            attribution_batch_size: DEFAULT_ROWS_PER_PASS,
            attribution_memory_mib: DEFAULT_PASS_MEMORY_BYTES >> 20,
            source_lang: None,
            target_lang: None,
        }
    }
}

/// `fidelis context` (without the model flags and output files): every PECoRe parameter. The
/// web page's requests and presets are partial JSON objects of these fields.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContextOptions {
    /// The input context (e.g. a short fact).
    #[arg(long, default_value = "", hide_default_value = true, help_heading = "Inputs (PECoRe's texts and templates)", visible_alias = "input-context-text", aliases = ["input_context_text"])]
    pub input_context: String,
    /// The input current text (e.g. a question about the fact).
    #[arg(long, default_value = "", hide_default_value = true, help_heading = "Inputs (PECoRe's texts and templates)", visible_alias = "input-current-text", aliases = ["input_current_text"])]
    pub input_current: String,
    /// The output current text to explain; generated greedily with the context when absent.
    #[arg(long, help_heading = "Inputs (PECoRe's texts and templates)", visible_alias = "output-current-text", aliases = ["output_current_text"])]
    pub output_current: Option<String>,
    /// An output context forced before the output current text.
    #[arg(long, help_heading = "Inputs (PECoRe's texts and templates)", visible_alias = "output-context-text", aliases = ["output_context_text"])]
    pub output_context: Option<String>,
    /// How input context and current text are joined.
    #[arg(
        long,
        help_heading = "Inputs (PECoRe's texts and templates)",
        alias = "input_template",
        default_value = "{context} {current}"
    )]
    pub input_template: String,
    /// How output context and current text are joined (default `{current}`, or
    /// `{context} {current}` with --output-context).
    #[arg(
        long,
        help_heading = "Inputs (PECoRe's texts and templates)",
        alias = "output_template"
    )]
    pub output_template: Option<String>,
    /// The contextless input.
    #[arg(
        long,
        help_heading = "Inputs (PECoRe's texts and templates)",
        visible_alias = "contextless-input-current-text",
        aliases = ["contextless_input_template", "contextless_input_current_text"],
        default_value = "{current}"
    )]
    pub contextless_input_template: String,
    /// Separator between input and output.
    #[arg(long, help_heading = "Inputs (PECoRe's texts and templates)", visible_alias = "decoder-input-output-separator", aliases = ["decoder_input_output_separator"], default_value = " ")]
    pub separator: String,
    /// Wrap the input in the model's own chat template (its Jinja `chat_template`), as a user
    /// turn.
    #[arg(long, help_heading = "Inputs (PECoRe's texts and templates)")]
    pub chat: bool,
    /// Do not prepend the BOS token.
    #[arg(long, help_heading = "Inputs (PECoRe's texts and templates)")]
    pub no_bos: bool,
    /// Limit of the generated output.
    #[arg(
        long,
        help_heading = "Generation",
        alias = "max_new_tokens",
        default_value_t = 32
    )]
    pub max_new_tokens: usize,
    /// Context-sensitivity metric.
    #[arg(long, help_heading = "Step 1: context-sensitive tokens (CTI)", visible_alias = "context-sensitivity-metric", aliases = ["context_sensitivity_metric"], default_value_t = CtiMetric::Kl, value_parser = variants::<CtiMetric>())]
    pub cti_metric: CtiMetric,
    /// λ of the CTI selector (|score| ≥ mean + λ·std); negative: no threshold.
    #[arg(long, help_heading = "Step 1: context-sensitive tokens (CTI)", visible_alias = "context-sensitivity-std-threshold", aliases = ["context_sensitivity_std_threshold"], default_value_t = 1.0, allow_negative_numbers = true)]
    pub cti_std: f32,
    /// At most this many context-sensitive tokens.
    #[arg(long, help_heading = "Step 1: context-sensitive tokens (CTI)", visible_alias = "context-sensitivity-topk", aliases = ["context_sensitivity_topk"])]
    pub cti_topk: Option<usize>,
    /// CCI attribution method and its settings.
    #[command(flatten, next_help_heading = "Step 2: contextual cues (CCI)")]
    #[serde(flatten)]
    pub token: TokenOptions,
    /// CCI target.
    #[arg(long, help_heading = "Step 2: contextual cues (CCI)", visible_alias = "attributed-fn",
          aliases = ["attributed_fn"], default_value_t = TargetFunction::ContrastProbDiff,
          value_parser = variants::<TargetFunction>())]
    pub target: TargetFunction,
    /// λ of the cue selector; negative: no threshold.
    #[arg(long, help_heading = "Step 2: contextual cues (CCI)", visible_alias = "attribution-std-threshold", aliases = ["attribution_std_threshold"], default_value_t = 1.0, allow_negative_numbers = true)]
    pub cci_std: f32,
    /// At most this many cues per token.
    #[arg(long, help_heading = "Step 2: contextual cues (CCI)", visible_alias = "attribution-topk", aliases = ["attribution_topk"])]
    pub cci_topk: Option<usize>,
    /// Reproduce Inseq 0.7.1's attribute-context where Fidelis differs on purpose: generate after
    /// the whole separator (the prompt ends with it; `--max-new-tokens` counts after it), and
    /// take each CCI contrast as Inseq does, by continuing the text of the output's standalone
    /// tokens (docs/inseq.md). With `--no-bos` for tokenizers that add no BOS (GPT-2, SmolLM2),
    /// the results are Inseq's.
    #[arg(long, help_heading = "Inputs (PECoRe's texts and templates)")]
    pub inseq_compat: bool,
    /// Encoder-decoders whose sources carry a language token (mBART, M2M100, NLLB): its name,
    /// e.g. en_XX, __en__, eng_Latn (Inseq: tokenizer_kwargs src_lang).
    #[arg(long, help_heading = "Inputs (PECoRe's texts and templates)", aliases = ["src_lang", "src-lang"])]
    pub source_lang: Option<String>,
    /// Encoder-decoders: the target-language token forced first in the target (default: the
    /// model's forced_bos_token_id; Inseq: tokenizer_kwargs tgt_lang).
    #[arg(long, help_heading = "Inputs (PECoRe's texts and templates)", aliases = ["tgt_lang", "tgt-lang"])]
    pub target_lang: Option<String>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            input_context: String::new(),
            input_current: String::new(),
            output_current: None,
            output_context: None,
            input_template: "{context} {current}".into(),
            output_template: None,
            contextless_input_template: "{current}".into(),
            separator: " ".into(),
            chat: false,
            no_bos: false,
            max_new_tokens: 32,
            cti_metric: CtiMetric::Kl,
            cti_std: 1.0,
            cti_topk: None,
            token: TokenOptions::default(),
            target: TargetFunction::ContrastProbDiff,
            cci_std: 1.0,
            cci_topk: None,
            inseq_compat: false,
            source_lang: None,
            target_lang: None,
        }
    }
}

/// Bounds of the numeric options. A value outside them is a mistake (no examples, a λ that
/// overflowed to infinity) or asks for absurd time or memory; the CLI and `fidelis serve`
/// refuse it with the same [`OutOfRange`] before any model work starts. The server applies
/// tighter resource limits of its own on top (`serve::Limits`).
pub mod bounds {
    /// Most tokens any token count may be (new tokens, top-k): more than any model's window.
    pub const MAX_TOKENS: usize = 1 << 20;
    /// Largest memory budget in MiB (1 TiB).
    pub const MAX_MEMORY_MIB: usize = 1 << 20;
    /// Most interpolation or integrated-gradient steps.
    pub const MAX_STEPS: usize = 10_000;
    /// Most examples, and examples per batch.
    pub const MAX_EXAMPLES: usize = 1_000_000;
    /// Most edges: more than the graph of any model Fidelis loads has.
    pub const MAX_EDGES: usize = 1 << 32;
    /// Most worker threads, or circuits stacked into one forward.
    pub const MAX_PARALLEL: usize = 1024;
}

/// A numeric option outside its [`bounds`]. `field` is the option's JSON name; its flag is
/// `--` and the same name with `-` for `_`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutOfRange {
    /// The field, as the JSON API names it (e.g. `max_new_tokens`).
    pub field: &'static str,
    /// The value given, as text.
    pub value: String,
    /// What it must be, e.g. `it must be between 1 and 1048576`.
    pub expected: String,
}

impl Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flag = self.field.replace('_', "-");
        write!(
            f,
            "{} is {}; {} (--{flag})",
            self.field, self.value, self.expected
        )
    }
}

impl std::error::Error for OutOfRange {}

/// `value` of `field` within `lo..=hi`.
fn in_range(field: &'static str, value: usize, lo: usize, hi: usize) -> Result<(), OutOfRange> {
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    Err(OutOfRange {
        field,
        value: value.to_string(),
        expected: format!("it must be between {lo} and {hi}"),
    })
}

/// An optional count: absent, or within `lo..=hi`.
fn optional_in_range(
    field: &'static str,
    value: Option<usize>,
    lo: usize,
    hi: usize,
) -> Result<(), OutOfRange> {
    value.map_or(Ok(()), |v| in_range(field, v, lo, hi))
}

/// A float that must be finite (JSON's `1e39` reads as an f32 infinity).
fn finite(field: &'static str, value: f32) -> Result<(), OutOfRange> {
    if value.is_finite() {
        return Ok(());
    }
    Err(OutOfRange {
        field,
        value: value.to_string(),
        expected: "it must be a finite number".into(),
    })
}

impl DataOptions {
    /// Checks the numeric fields against [`bounds`] (an [`OutOfRange`] error names the field).
    pub fn validate(&self) -> Result<()> {
        in_range("n", self.n, 1, bounds::MAX_EXAMPLES)?;
        Ok(())
    }
}

impl DiscoverJob {
    /// Checks the numeric fields against [`bounds`] (an [`OutOfRange`] error names the field).
    pub fn validate(&self) -> Result<()> {
        use bounds::*;
        self.data.validate()?;
        in_range("steps", self.steps, 1, MAX_STEPS)?;
        in_range("batch_size", self.batch_size, 1, MAX_EXAMPLES)?;
        in_range("steps_per_pass", self.steps_per_pass, 1, MAX_STEPS)?;
        optional_in_range("workers", self.workers, 1, MAX_PARALLEL)?;
        in_range("exact_per_pass", self.exact_per_pass, 1, MAX_EDGES)?;
        Ok(())
    }
}

impl DiscoverOptions {
    /// Checks the numeric fields against [`bounds`] (an [`OutOfRange`] error names the field).
    pub fn validate(&self) -> Result<()> {
        self.job.validate()?;
        in_range("exact_top", self.exact_top, 1, bounds::MAX_EDGES)?;
        optional_in_range("top_n", self.top_n, 0, bounds::MAX_EDGES)?;
        Ok(())
    }
}

impl EvaluateOptions {
    /// Checks the numeric fields against [`bounds`] (an [`OutOfRange`] error names the field).
    pub fn validate(&self) -> Result<()> {
        use bounds::*;
        self.data.validate()?;
        for &size in &self.sizes {
            in_range("sizes", size, 0, MAX_EDGES)?;
        }
        in_range("batch_size", self.batch_size, 1, MAX_EXAMPLES)?;
        in_range("circuits_per_pass", self.circuits_per_pass, 1, MAX_PARALLEL)?;
        anyhow::ensure!(
            (self.svg.is_none() && self.png.is_none()) || self.mib || !self.sizes.is_empty(),
            "--svg and --png draw a curve: give --sizes or --mib as well"
        );
        Ok(())
    }
}

impl GenerateOptions {
    /// Checks the numeric fields against [`bounds`] (an [`OutOfRange`] error names the field).
    pub fn validate(&self) -> Result<()> {
        in_range("max_new_tokens", self.max_new_tokens, 1, bounds::MAX_TOKENS)?;
        finite("temperature", self.temperature)?;
        if self.temperature < 0.0 {
            return Err(OutOfRange {
                field: "temperature",
                value: self.temperature.to_string(),
                expected: "it must be 0 (greedy) or more".into(),
            }
            .into());
        }
        optional_in_range("top_k", self.top_k, 1, bounds::MAX_TOKENS)?;
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(OutOfRange {
                field: "top_p",
                value: p.to_string(),
                expected: "it must be in (0, 1]".into(),
            }
            .into());
        }
        Ok(())
    }
}

impl TokenOptions {
    /// Checks the numeric fields against [`bounds`] (an [`OutOfRange`] error names the field).
    pub fn validate(&self) -> Result<()> {
        in_range("ig_steps", self.ig_steps, 1, bounds::MAX_STEPS)?;
        Ok(())
    }
}

impl AttributeOptions {
    /// Checks the numeric fields against [`bounds`] (an [`OutOfRange`] error names the field);
    /// `layer` and `head` are checked against the model when it is loaded.
    pub fn validate(&self) -> Result<()> {
        in_range("max_new_tokens", self.max_new_tokens, 1, bounds::MAX_TOKENS)?;
        in_range(
            "attribution_batch_size",
            self.attribution_batch_size,
            1,
            bounds::MAX_EXAMPLES,
        )?;
        in_range(
            "attribution_memory_mib",
            self.attribution_memory_mib,
            1,
            bounds::MAX_MEMORY_MIB,
        )?;
        self.token.validate()
    }
}

impl ContextOptions {
    /// Checks the numeric fields against [`bounds`] (an [`OutOfRange`] error names the field).
    pub fn validate(&self) -> Result<()> {
        use bounds::MAX_TOKENS;
        in_range("max_new_tokens", self.max_new_tokens, 1, MAX_TOKENS)?;
        finite("cti_std", self.cti_std)?;
        optional_in_range("cti_topk", self.cti_topk, 1, MAX_TOKENS)?;
        self.token.validate()?;
        finite("cci_std", self.cci_std)?;
        optional_in_range("cci_topk", self.cci_topk, 1, MAX_TOKENS)?;
        Ok(())
    }
}

/// The JSON object of an options struct (flattened fields inline).
fn object<T: Serialize>(value: &T) -> Result<Map<String, Value>> {
    match serde_json::to_value(value)? {
        Value::Object(map) => Ok(map),
        other => bail!("options serialize to {other}, not an object"),
    }
}

/// `base` with the fields of `patch` (a JSON object) put over it. A key `base` does not have is
/// an error naming it, as is a value of the wrong type.
pub fn overlay<T: Serialize + DeserializeOwned>(base: &T, patch: &Map<String, Value>) -> Result<T> {
    let mut merged = object(base)?;
    for (key, value) in patch {
        match merged.get_mut(key) {
            Some(slot) => *slot = value.clone(),
            None => {
                let known: Vec<&str> = merged.keys().map(String::as_str).collect();
                bail!(
                    "unknown field `{key}` (expected one of {})",
                    known.join(", ")
                )
            }
        }
    }
    Ok(serde_json::from_value(Value::Object(merged))?)
}

/// The command-line flags that turn `defaults` into `value`: one `--flag VALUE` for each field
/// that differs (`--flag` for a true bool, comma-joined lists), in the order clap declares
/// them, with clap's own flag names. Parsing them with the same clap struct gives `value` back
/// (a test checks each job).
pub fn to_args<T: Serialize + clap::Args>(value: &T, defaults: &T) -> Result<Vec<String>> {
    let (value, defaults) = (object(value)?, object(defaults)?);
    let command = T::augment_args(clap::Command::new("options"));
    let mut args = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        let Some(v) = value.get(id) else {
            bail!("clap argument `{id}` is not a serialized field");
        };
        if defaults.get(id) == Some(v) {
            continue;
        }
        let Some(long) = arg.get_long() else {
            bail!("clap argument `{id}` has no long flag");
        };
        let flag = format!("--{long}");
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match v {
            Value::Null | Value::Bool(false) => {}
            Value::Bool(true) => args.push(flag),
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(text).collect();
                args.extend([flag, items.join(",")]);
            }
            other => {
                let value = text(other);
                // `--flag=value` keeps a value that starts with `-` from reading as a flag.
                if value.starts_with('-') {
                    args.push(format!("{flag}={value}"));
                } else {
                    args.extend([flag, value]);
                }
            }
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use fidelis_attribution::{Aggregation, Method};
    use strum::VariantArray;

    #[derive(Parser)]
    struct Discover {
        #[command(flatten)]
        opts: DiscoverOptions,
    }

    #[derive(Parser)]
    struct Evaluate {
        #[command(flatten)]
        opts: EvaluateOptions,
    }

    #[derive(Parser)]
    struct Plan {
        #[command(flatten)]
        opts: PlanOptions,
    }

    #[derive(Parser)]
    struct Generate {
        #[command(flatten)]
        opts: GenerateOptions,
    }

    /// serde, `Display` and `FromStr` read and write the same names, listed by `VARIANTS`.
    fn one_table<T>()
    where
        T: VariantArray + strum::VariantNames + Display + FromStr + Serialize + DeserializeOwned,
        T: PartialEq + std::fmt::Debug,
        T::Err: std::fmt::Debug,
    {
        assert_eq!(
            <T as strum::VariantNames>::VARIANTS.len(),
            <T as VariantArray>::VARIANTS.len()
        );
        for (v, name) in <T as VariantArray>::VARIANTS
            .iter()
            .zip(<T as strum::VariantNames>::VARIANTS)
        {
            assert_eq!(&v.to_string(), name);
            assert_eq!(&name.parse::<T>().unwrap(), v);
            assert_eq!(
                serde_json::to_value(v).unwrap(),
                Value::String(name.to_string())
            );
            let back: T = serde_json::from_value(Value::String(name.to_string())).unwrap();
            assert_eq!(&back, v);
        }
    }

    #[test]
    fn every_option_enum_has_one_name_table() {
        one_table::<EdgeMethod>();
        one_table::<Method>();
        one_table::<Aggregation>();
        one_table::<BuiltinMetric>();
        one_table::<AblationKind>();
        one_table::<Selection>();
        one_table::<TokenMethod>();
        one_table::<TargetFunction>();
        one_table::<EmbeddingAggregation>();
        one_table::<CtiMetric>();
        one_table::<Dtype>();
        assert_eq!(
            "input-x-gradient".parse::<TokenMethod>().unwrap(),
            TokenMethod::InputXGradient
        );
        assert_eq!(TokenMethod::InputXGradient.name(), "ixg");
        assert_eq!(TargetFunction::KlDivergence.name(), "kl");
        for (task, name) in Task::ALL.iter().zip(Task::NAMES) {
            assert_eq!(
                serde_json::to_value(task).unwrap(),
                Value::String(name.into())
            );
            assert_eq!(name.parse::<Task>().unwrap(), *task);
        }
        let err = "eap-magic".parse::<EdgeMethod>().unwrap_err().to_string();
        assert!(
            err.contains("unknown method") && err.contains("eap-ig-inputs"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_clap_defaults() {
        let d = Discover::try_parse_from(["x", "--task", "ioi"])
            .unwrap()
            .opts;
        let mut want = DiscoverOptions::default();
        want.job.data.task = Some(Task::Ioi);
        assert_eq!(d, want);
        let e = Evaluate::try_parse_from(["x", "--task", "ioi"])
            .unwrap()
            .opts;
        let mut want = EvaluateOptions::default();
        want.data.task = Some(Task::Ioi);
        assert_eq!(e, want);
        let g = Generate::try_parse_from(["x", "--prompt", ""])
            .unwrap()
            .opts;
        assert_eq!(g, GenerateOptions::default());
        let p = Plan::try_parse_from(["x"]).unwrap().opts;
        assert_eq!(p, PlanOptions::default());
    }

    #[test]
    fn plan_flags_need_plan_and_plan_needs_tokens() {
        let p = Plan::try_parse_from(["x", "--plan", "--batch", "8", "--tokens", "16"])
            .unwrap()
            .opts;
        let req = p.request().unwrap();
        assert_eq!((req.batch_size, req.tokens, req.pairs), (8, 16, 64));
        assert!(Plan::try_parse_from(["x", "--tokens", "16"]).is_err());
        assert!(Plan::try_parse_from(["x", "--plan"]).is_err());
        #[derive(Parser)]
        struct WithModel {
            #[command(flatten)]
            model: crate::model_args::ModelFlags,
        }
        let m = WithModel::try_parse_from(["x", "--dtype", "bf16"]).unwrap();
        assert_eq!(m.model.dtype, Dtype::Bf16);
        let err = WithModel::try_parse_from(["x", "--dtype", "f8"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("unknown dtype") && err.contains("bf16"),
            "{err}"
        );
        let err = Plan::try_parse_from(["x", "--plan", "--tokens", "18446744073709551616"]);
        assert!(err.is_err());
    }

    #[test]
    fn to_args_parses_back_to_the_same_options() {
        let mut d = DiscoverOptions::default();
        d.job.data.task = Some(Task::GreaterThan);
        d.job.data.n = 12;
        d.job.data.no_bos = true;
        d.job.method = EdgeMethod::Exact;
        d.job.loss = BuiltinMetric::Kl;
        d.job.ablation = AblationKind::Mean;
        d.job.workers = Some(3);
        d.curve = true;
        d.out = PathBuf::from("a b/graph.json");
        let args = to_args(&d, &DiscoverOptions::default()).unwrap();
        assert_eq!(&args[..2], ["--task", "greater-than"]);
        let back = Discover::try_parse_from(std::iter::once("x".to_string()).chain(args))
            .unwrap()
            .opts;
        assert_eq!(back, d);

        let mut e = EvaluateOptions::default();
        e.data.data = Some(PathBuf::from("pairs.csv"));
        e.sizes = vec![10, 100];
        e.selection = Selection::Greedy;
        e.metric = BuiltinMetric::CorrectProb;
        let args = to_args(&e, &EvaluateOptions::default()).unwrap();
        let back = Evaluate::try_parse_from(std::iter::once("x".to_string()).chain(args))
            .unwrap()
            .opts;
        assert_eq!(back, e);
    }

    #[test]
    fn overlay_names_unknown_and_mistyped_fields() {
        let base = DiscoverJob::default();
        let patch = |v: Value| v.as_object().unwrap().clone();
        let job = overlay(&base, &patch(serde_json::json!({"n": 8, "method": "eap"}))).unwrap();
        assert_eq!((job.data.n, job.method), (8, EdgeMethod::Eap));
        let err = overlay(&base, &patch(serde_json::json!({"nn": 8}))).unwrap_err();
        assert!(err.to_string().contains("unknown field `nn`"), "{err}");
        let err = overlay(&base, &patch(serde_json::json!({"method": "magic"}))).unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
    }

    #[test]
    fn validation_names_the_field_out_of_range() {
        DiscoverOptions::default().validate().unwrap();
        EvaluateOptions::default().validate().unwrap();
        GenerateOptions::default().validate().unwrap();
        AttributeOptions::default().validate().unwrap();
        ContextOptions::default().validate().unwrap();
        let field = |r: Result<()>| r.unwrap_err().downcast::<OutOfRange>().unwrap().field;
        let mut c = ContextOptions {
            max_new_tokens: 0,
            ..ContextOptions::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "max_new_tokens is 0; it must be between 1 and 1048576 (--max-new-tokens)"
        );
        c.max_new_tokens = 4;
        c.cti_std = f32::INFINITY;
        assert_eq!(field(c.validate()), "cti_std");
        c.cti_std = -1.0;
        c.cti_topk = Some(1 << 63);
        assert_eq!(field(c.validate()), "cti_topk");
        c.cti_topk = None;
        c.token.ig_steps = 0;
        assert_eq!(field(c.validate()), "ig_steps");
        let mut d = DiscoverJob::default();
        d.data.n = usize::MAX;
        assert_eq!(field(d.validate()), "n");
        d.data.n = 8;
        d.batch_size = 0;
        assert_eq!(field(d.validate()), "batch_size");
        d.batch_size = 8;
        d.steps = 1 << 40;
        assert_eq!(field(d.validate()), "steps");
        let g = GenerateOptions {
            top_p: Some(f32::NAN),
            ..GenerateOptions::default()
        };
        assert_eq!(field(g.validate()), "top_p");
    }
}
