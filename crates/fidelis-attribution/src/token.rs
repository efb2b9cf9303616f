//! Token attribution: how much each input token contributed to one prediction.
//!
//! The attributed quantity is a [`Target`] read from the logits at the last position of a token
//! sequence (the prediction of the next token): its probability, log-probability, logit, the
//! entropy of the distribution, a contrastive probability or logit difference, the KL
//! divergence to a reference distribution, or the pointwise conditional cross-mutual information
//! (P-CXMI, Fernandes et al. 2021). The methods ([`TokenMethod`]) are those Inseq offers for
//! context attribution (Sarti et al. 2023, 2024):
//!
//! - **saliency**: `|∂f/∂e|`, the gradient at the token embeddings e (Simonyan et al. 2014);
//! - **input × gradient**: `e ⊙ ∂f/∂e` (Shrikumar et al. 2017);
//! - **integrated gradients**: `(e − e') ⊙ ∫₀¹ ∂f/∂e(e' + α(e − e')) dα` with a zero or token
//!   baseline e' and the midpoint rule over `ig_steps` points (Sundararajan et al. 2017); the
//!   attributions sum to `f(e) − f(e')` (completeness) up to the quadrature error. On RMSNorm
//!   models without positional embeddings the zero baseline's path crosses a near-singular point
//!   (`x/√(mean x² + ε)` jumps near α = 0) that no coarse quadrature resolves; prefer a token
//!   baseline there;
//! - **attention**: the attention pattern row of the last query position, per layer and head
//!   and averaged over a selection (`blocks.{l}.attn.hook_pattern`);
//! - **occlusion**: `f(e) − f(e with token i's embedding replaced by the baseline)`, one rerun
//!   per token.
//!
//! Every method except attention runs as stacked copies of the input ("rows": IG points,
//! occluded variants, targets) in passes bounded by a row count and a memory budget, and
//! [`attribute_prefixes`] attributes many predictions of one sequence (a generated
//! continuation, token by token) in the same passes; see `token/rows.rs`.
//!
//! Gradient methods give per-dimension attributions `[pos, d_model]`, reduced per token by the
//! L2 norm or the sum ([`EmbeddingAggregation`]). [`normalize`] rescales scores to unit L1 mass
//! and [`aggregate_words`] merges subword tokens into words using the tokenizer's byte offsets.
//!
//! Encoder-decoder models are attributed to both sides at once by [`attribute_seq2seq`] (see
//! `token/seq2seq.rs`).
//!
//! Embeddings are the token embeddings at `hook_embed`; for models with learned positions the
//! positional embedding is added after that point and is not attributed, as in Inseq.

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::{log_softmax, softmax};
use fidelis_circuit::{Progress, Silent, report, to_vec};
use fidelis_models::{Activation, Hooks, Transformer, point};

use crate::{AttributionError, Result};

mod rows;
pub mod seq2seq;
use rows::{Mix, Row};
pub use seq2seq::{Seq2SeqAttribution, attribute_seq2seq, attribute_seq2seq_with_progress};

fidelis_circuit::option_enum! {
    "target function",
    /// The scalar function of the next-token logits that is attributed.
    #[strum(serialize_all = "kebab-case")]
    pub enum TargetFunction {
        /// `p(t)`.
        Probability,
        /// `log p(t)`.
        #[strum(to_string = "log-probability", serialize = "log_probability")]
        LogProbability,
        /// The logit `z_t`.
        Logit,
        /// Entropy of the next-token distribution, `−Σ p log p` (nats).
        Entropy,
        /// `p(t) − q(c)`: q is the contrast distribution when given, else p itself (Inseq's
        /// `contrast_prob_diff` is accepted too).
        #[strum(to_string = "contrast-prob-diff", serialize = "contrast_prob_diff")]
        ContrastProbDiff,
        /// `z_t − z'_c`: z' are the contrast logits when given, else z itself (Inseq's
        /// `contrast_logits_diff` is accepted too).
        #[strum(
            to_string = "contrast-logit-diff",
            serialize = "contrast_logits_diff",
            serialize = "contrast-logits-diff"
        )]
        ContrastLogitDiff,
        /// `KL(p ‖ q)` to the (constant) contrast distribution q, in nats.
        #[strum(to_string = "kl", serialize = "kl_divergence", serialize = "kl-divergence")]
        KlDivergence,
        /// P-CXMI `log p(t) − log q(t)` with q the contrast distribution.
        Pcxmi,
    }
}

impl TargetFunction {
    /// Whether the function needs a contrast distribution (from a contrast input).
    pub fn needs_contrast_logits(self) -> bool {
        matches!(self, Self::KlDivergence | Self::Pcxmi)
    }
}

/// What is attributed: a function of the next-token logits at the last position.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The function.
    pub function: TargetFunction,
    /// The predicted token t.
    pub token: u32,
    /// The contrast token c of the contrastive functions (defaults to t when contrast logits
    /// are given).
    pub contrast_token: Option<u32>,
    /// Next-token logits of a contrast run `[d_vocab]`, a constant (no gradient flows into it).
    pub contrast_logits: Option<Vec<f32>>,
}

impl Target {
    /// A target without contrast.
    pub fn new(function: TargetFunction, token: u32) -> Self {
        Self {
            function,
            token,
            contrast_token: None,
            contrast_logits: None,
        }
    }

    /// Checks ids against the vocabulary and that contrastive functions have their contrast.
    pub fn validate(&self, d_vocab: usize) -> Result<()> {
        let check = |id: u32, what: &str| {
            if id as usize >= d_vocab {
                return Err(AttributionError::Options(format!(
                    "{what} id {id} is outside the vocabulary of {d_vocab}"
                )));
            }
            Ok(())
        };
        check(self.token, "target token")?;
        if let Some(c) = self.contrast_token {
            check(c, "contrast token")?;
        }
        if let Some(l) = &self.contrast_logits
            && l.len() != d_vocab
        {
            return Err(AttributionError::Options(format!(
                "contrast logits have {} entries, the vocabulary has {d_vocab}",
                l.len()
            )));
        }
        let f = self.function;
        if f.needs_contrast_logits() && self.contrast_logits.is_none() {
            return Err(AttributionError::Options(format!(
                "target `{}` needs a contrast input (its next-token distribution)",
                f.name()
            )));
        }
        if matches!(
            f,
            TargetFunction::ContrastProbDiff | TargetFunction::ContrastLogitDiff
        ) && self.contrast_token.is_none()
            && self.contrast_logits.is_none()
        {
            return Err(AttributionError::Options(format!(
                "target `{}` needs a contrast token or a contrast input",
                f.name()
            )));
        }
        Ok(())
    }

    /// Evaluates the target on a batch of next-token logits.
    ///
    /// # Shapes
    /// - `logits`: `[k, d_vocab]`; returns `[k]`
    pub fn evaluate(&self, logits: Tensor<2>) -> Tensor<1> {
        let [k, vocab] = logits.dims();
        let device = logits.device();
        let t = self.token as usize;
        let c = self.contrast_token.map_or(t, |c| c as usize);
        let column = |x: Tensor<2>, i: usize| x.slice([0..k, i..i + 1]).reshape([k]);
        // The contrast run's logits as a constant `[k, vocab]`.
        let contrast = || {
            let l = self.contrast_logits.clone().unwrap_or_default();
            Tensor::<2>::from_data(TensorData::new(l, [1, vocab]), &device).expand([k, vocab])
        };
        match self.function {
            TargetFunction::Probability => column(softmax(logits, 1), t),
            TargetFunction::LogProbability => column(log_softmax(logits, 1), t),
            TargetFunction::Logit => column(logits, t),
            TargetFunction::Entropy => {
                let logp = log_softmax(logits, 1);
                -(logp.clone().exp() * logp).sum_dim(1).reshape([k])
            }
            TargetFunction::ContrastProbDiff => {
                let other = match self.contrast_logits {
                    Some(_) => column(softmax(contrast(), 1), c),
                    None => column(softmax(logits.clone(), 1), c),
                };
                column(softmax(logits, 1), t) - other
            }
            TargetFunction::ContrastLogitDiff => {
                let other = match self.contrast_logits {
                    Some(_) => column(contrast(), c),
                    None => column(logits.clone(), c),
                };
                column(logits, t) - other
            }
            TargetFunction::KlDivergence => {
                let logp = log_softmax(logits, 1);
                let logq = log_softmax(contrast(), 1);
                (logp.clone().exp() * (logp - logq)).sum_dim(1).reshape([k])
            }
            TargetFunction::Pcxmi => {
                column(log_softmax(logits, 1), t) - column(log_softmax(contrast(), 1), t)
            }
        }
    }
}

fidelis_circuit::option_enum! {
    "attribution method",
    /// A token attribution method (`saliency`, `ixg`, `ig`, `attention`, `occlusion`).
    #[strum(serialize_all = "kebab-case")]
    pub enum TokenMethod {
        /// `|∂f/∂e|`.
        Saliency,
        /// `e ⊙ ∂f/∂e`.
        #[strum(to_string = "ixg", serialize = "input-x-gradient", serialize = "input_x_gradient")]
        InputXGradient,
        /// Integrated gradients from a baseline.
        #[strum(
            to_string = "ig",
            serialize = "integrated-gradients",
            serialize = "integrated_gradients"
        )]
        IntegratedGradients,
        /// Attention weights of the last query position.
        Attention,
        /// Output change when one token's embedding is replaced by the baseline.
        Occlusion,
    }
}

/// The reference input of integrated gradients and the replacement of occlusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Baseline {
    /// The zero embedding.
    #[default]
    Zero,
    /// The embedding of this token (e.g. a pad or UNK token) at every position.
    Token(u32),
}

fidelis_circuit::option_enum! {
    "aggregation",
    /// How per-dimension attributions `[pos, d_model]` are reduced to one score per token
    /// (`l2`, `sum`).
    #[derive(Default)]
    #[strum(serialize_all = "kebab-case")]
    pub enum EmbeddingAggregation {
        /// The L2 norm over d_model (Inseq's default; always ≥ 0).
        #[default]
        #[strum(to_string = "l2", serialize = "l2-norm", serialize = "norm")]
        L2Norm,
        /// The signed sum over d_model (completeness holds for IG under this one).
        Sum,
    }
}

/// Which attention weights the attention method reports as the token scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttentionSelection {
    /// One layer, or `None` for the mean over layers.
    pub layer: Option<usize>,
    /// One head, or `None` for the mean over heads.
    pub head: Option<usize>,
}

/// Default number of integrated-gradient points (Captum and Inseq use 50).
pub const DEFAULT_IG_STEPS: usize = 50;
/// Default cap on the stacked copies per forward/backward (IG points, occluded variants,
/// targets); the memory budget usually binds first.
pub const DEFAULT_ROWS_PER_PASS: usize = 64;
/// Default activation-memory budget of one stacked pass, in bytes (1 GiB).
pub const DEFAULT_PASS_MEMORY_BYTES: usize = 1 << 30;

/// Options of [`attribute_tokens`] and [`attribute_prefixes`].
#[derive(Debug, Clone, PartialEq)]
pub struct TokenAttributionConfig {
    /// The method.
    pub method: TokenMethod,
    /// Integration points of integrated gradients (midpoint rule).
    pub ig_steps: usize,
    /// Baseline of integrated gradients and occlusion.
    pub baseline: Baseline,
    /// Reduction of per-dimension attributions to token scores.
    pub aggregation: EmbeddingAggregation,
    /// Attention weights reported by the attention method.
    pub attention: AttentionSelection,
    /// Most stacked copies per forward/backward (IG points, occluded variants, targets):
    /// memory against passes. Captum calls it `internal_batch_size`.
    pub rows_per_pass: usize,
    /// Estimated activation memory one stacked pass may use, in bytes; passes hold fewer rows
    /// than `rows_per_pass` when their rows would need more (at least one row always runs).
    pub pass_memory_bytes: usize,
}

impl TokenAttributionConfig {
    /// Defaults for `method`: 50 IG steps, zero baseline, L2 norm, mean attention, passes of
    /// at most 64 rows and 1 GiB.
    pub fn new(method: TokenMethod) -> Self {
        Self {
            method,
            ig_steps: DEFAULT_IG_STEPS,
            baseline: Baseline::Zero,
            aggregation: EmbeddingAggregation::L2Norm,
            attention: AttentionSelection::default(),
            rows_per_pass: DEFAULT_ROWS_PER_PASS,
            pass_memory_bytes: DEFAULT_PASS_MEMORY_BYTES,
        }
    }
}

/// The attribution of one prediction to the tokens before it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenAttribution {
    /// One score per input position `[pos]`.
    pub scores: Vec<f32>,
    /// Per-dimension attributions `[pos, d_model]` (gradient methods only).
    pub per_dim: Option<Vec<f32>>,
    /// `d_model`, the row length of `per_dim`.
    pub d_model: usize,
    /// The target at the input, `f(e)`.
    pub target_value: f32,
    /// The target at the baseline, `f(e')` (integrated gradients only).
    pub baseline_value: Option<f32>,
    /// Attention pattern rows of the last query position `[n_layers, n_heads, pos]`
    /// (attention method only).
    pub attention: Option<Vec<f32>>,
}

impl TokenAttribution {
    fn new(d_model: usize) -> Self {
        Self {
            scores: Vec::new(),
            per_dim: None,
            d_model,
            target_value: 0.0,
            baseline_value: None,
            attention: None,
        }
    }
}

/// One prediction of a token sequence: `target` read from the logits after its first `len`
/// tokens (at position `len − 1`), attributed to those `len` tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixTarget {
    /// The prefix length, `1..=ids.len()`.
    pub len: usize,
    /// What is attributed.
    pub target: Target,
}

/// Attributes `target`, read at the last position of `ids`, to every position of `ids`.
///
/// # Shapes
/// - `ids`: `[pos]`; the returned scores are `[pos]`
pub fn attribute_tokens(
    model: &Transformer,
    ids: &[u32],
    target: &Target,
    cfg: &TokenAttributionConfig,
) -> Result<TokenAttribution> {
    let one = [PrefixTarget {
        len: ids.len(),
        target: target.clone(),
    }];
    attribute_prefixes(model, ids, &one, cfg)?
        .pop()
        .ok_or_else(|| AttributionError::Options("no attribution was computed".into()))
}

/// Attributes several predictions of one sequence, each to its own prefix: the attribution of
/// a generated continuation token by token, as [`attribute_tokens`] on each prefix would give
/// (equal up to float rounding), in fewer and fuller passes. Integrated gradients, occlusion,
/// saliency and input × gradient stack their copies of all targets into passes of at most
/// `cfg.rows_per_pass` rows and `cfg.pass_memory_bytes` (see `rows.rs`); attention reads every
/// target from one forward of the whole sequence (under the causal mask, the pattern row of
/// query `len − 1` over keys `0..len` is the prefix's own).
///
/// # Shapes
/// - `ids`: `[pos]`; one result per target, with scores `[target.len]`
pub fn attribute_prefixes(
    model: &Transformer,
    ids: &[u32],
    targets: &[PrefixTarget],
    cfg: &TokenAttributionConfig,
) -> Result<Vec<TokenAttribution>> {
    attribute_prefixes_with_progress(model, ids, targets, cfg, &mut Silent)
}

/// [`attribute_prefixes`] that ticks `progress` after each stacked pass (stage
/// `"token attribution"`, passes done of all passes) and stops with a cancellation error when
/// it answers `Break`.
pub fn attribute_prefixes_with_progress(
    model: &Transformer,
    ids: &[u32],
    targets: &[PrefixTarget],
    cfg: &TokenAttributionConfig,
    progress: &mut dyn Progress,
) -> Result<Vec<TokenAttribution>> {
    check_inputs(model, ids, cfg)?;
    check_targets(
        targets,
        ids.len(),
        model.config().d_vocab,
        ("prefix", "input"),
    )?;
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let mut stacked = Stacked {
        model,
        ids,
        targets: targets.iter().map(|t| &t.target).collect(),
        cfg,
        progress,
        passes: (0, 0),
    };
    match cfg.method {
        TokenMethod::Saliency | TokenMethod::InputXGradient => stacked.gradients(targets),
        TokenMethod::IntegratedGradients => stacked.integrated_gradients(targets),
        TokenMethod::Occlusion => stacked.occlusion(targets),
        TokenMethod::Attention => attention(model, ids, targets, cfg),
    }
}

/// The stacked-pass methods over one sequence.
struct Stacked<'a> {
    model: &'a Transformer,
    ids: &'a [u32],
    targets: Vec<&'a Target>,
    cfg: &'a TokenAttributionConfig,
    progress: &'a mut dyn Progress,
    /// Passes done and planned so far (IG plans its end-point pass after its gradient passes).
    passes: (usize, usize),
}

/// The stage name of token attribution's progress ticks.
const STAGE: &str = "token attribution";

impl Stacked<'_> {
    /// Plans `rows` into passes under the config's row cap and memory budget.
    fn plan(&self, rows: &[Row], grad: bool) -> Vec<Range<usize>> {
        let mc = self.model.config();
        let float_bytes = fidelis_models::precision::dtype_of(self.model.device()).bytes();
        rows::pass_plan(
            rows,
            self.cfg.rows_per_pass,
            self.cfg.pass_memory_bytes,
            |n| rows::bytes_per_row(mc, n, grad, float_bytes),
        )
    }

    /// Runs `rows` in passes sized by the config, calling `each(row, value, gradient, embed)`
    /// for every row with its target value, its gradient `[len, d]` (gradient passes) and the
    /// token embeddings of its prefix `[len, d]`.
    fn run(
        &mut self,
        rows: &[Row],
        grad: bool,
        baseline: Option<&[f32]>,
        mut each: impl FnMut(&Row, f32, Option<&[f32]>, &[f32]),
    ) -> Result<()> {
        let d = self.model.config().d_model;
        let plan = self.plan(rows, grad);
        self.passes.1 = self.passes.1.max(self.passes.0 + plan.len());
        for range in plan {
            let chunk = &rows[range];
            let out = rows::run_pass(self.model, self.ids, chunk, &self.targets, baseline, grad)?;
            let n = out.len;
            for (r, row) in chunk.iter().enumerate() {
                let g = out
                    .grads
                    .as_ref()
                    .map(|g| &g[r * n * d..(r * n + row.len) * d]);
                each(row, out.values[r], g, &out.embed[..row.len * d]);
            }
            self.passes.0 += 1;
            report(&mut *self.progress, STAGE, self.passes.0, self.passes.1)?;
        }
        Ok(())
    }

    /// Saliency `|∂f/∂e|` and input × gradient `e ⊙ ∂f/∂e`: one row per target.
    fn gradients(&mut self, targets: &[PrefixTarget]) -> Result<Vec<TokenAttribution>> {
        let d = self.model.config().d_model;
        let rows: Vec<Row> = targets
            .iter()
            .enumerate()
            .map(|(target, t)| Row {
                target,
                len: t.len,
                mix: Mix::Plain,
            })
            .collect();
        let mut out = vec![TokenAttribution::new(d); targets.len()];
        let saliency = self.cfg.method == TokenMethod::Saliency;
        self.run(&rows, true, None, |row, value, grad, embed| {
            let grad = grad.unwrap_or_default();
            let per_dim: Vec<f32> = if saliency {
                grad.iter().map(|g| g.abs()).collect()
            } else {
                grad.iter().zip(embed).map(|(g, x)| g * x).collect()
            };
            let o = &mut out[row.target];
            o.target_value = value;
            o.scores = aggregate_dims(&per_dim, d, self.cfg.aggregation);
            o.per_dim = Some(per_dim);
        })?;
        Ok(out)
    }

    /// Integrated gradients: `ig_steps` rows per target at the midpoints α_k = (k + ½)/m of
    /// the path `x' + α(x − x')`, plus the two ends in a forward-only pass for f(x) and f(x').
    fn integrated_gradients(&mut self, targets: &[PrefixTarget]) -> Result<Vec<TokenAttribution>> {
        let d = self.model.config().d_model;
        let m = self.cfg.ig_steps;
        let base = baseline_embedding(self.model, self.cfg.baseline)?;
        let rows: Vec<Row> = targets
            .iter()
            .enumerate()
            .flat_map(|(target, t)| {
                (0..m).map(move |k| Row {
                    target,
                    len: t.len,
                    mix: Mix::Everywhere(1.0 - (k as f32 + 0.5) / m as f32),
                })
            })
            .collect();
        let mut mean_grad: Vec<Vec<f32>> = targets.iter().map(|t| vec![0f32; t.len * d]).collect();
        let mut embeds: Vec<Vec<f32>> = vec![Vec::new(); targets.len()];
        self.run(&rows, true, base.as_deref(), |row, _, grad, embed| {
            for (acc, g) in mean_grad[row.target]
                .iter_mut()
                .zip(grad.unwrap_or_default())
            {
                *acc += g / m as f32;
            }
            if embeds[row.target].is_empty() {
                embeds[row.target] = embed.to_vec();
            }
        })?;
        let ends: Vec<Row> = (0..targets.len())
            .flat_map(|target| {
                let len = targets[target].len;
                [Mix::Plain, Mix::Everywhere(1.0)].map(|mix| Row { target, len, mix })
            })
            .collect();
        let mut out = vec![TokenAttribution::new(d); targets.len()];
        self.run(&ends, false, base.as_deref(), |row, value, _, _| {
            let o = &mut out[row.target];
            match row.mix {
                Mix::Plain => o.target_value = value,
                _ => o.baseline_value = Some(value),
            }
        })?;
        for (i, o) in out.iter_mut().enumerate() {
            let per_dim: Vec<f32> = mean_grad[i]
                .iter()
                .zip(&embeds[i])
                .enumerate()
                .map(|(j, (g, x))| {
                    let b = base.as_ref().map_or(0.0, |b| b[j % d]);
                    g * (x - b)
                })
                .collect();
            o.scores = aggregate_dims(&per_dim, d, self.cfg.aggregation);
            o.per_dim = Some(per_dim);
        }
        Ok(out)
    }

    /// Occlusion `f(e) − f(e with position i at the baseline)`: per target, the unoccluded row
    /// and one row per position, forward only.
    fn occlusion(&mut self, targets: &[PrefixTarget]) -> Result<Vec<TokenAttribution>> {
        let d = self.model.config().d_model;
        let base = baseline_embedding(self.model, self.cfg.baseline)?;
        let rows: Vec<Row> = targets
            .iter()
            .enumerate()
            .flat_map(|(target, t)| {
                std::iter::once(Mix::Plain)
                    .chain((0..t.len).map(Mix::At))
                    .map(move |mix| Row {
                        target,
                        len: t.len,
                        mix,
                    })
            })
            .collect();
        let mut out = vec![TokenAttribution::new(d); targets.len()];
        self.run(&rows, false, base.as_deref(), |row, value, _, _| {
            let o = &mut out[row.target];
            match row.mix {
                Mix::At(_) => o.scores.push(o.target_value - value),
                _ => o.target_value = value,
            }
        })?;
        Ok(out)
    }
}

/// The attention method for every target from one forward of the whole sequence.
fn attention(
    model: &Transformer,
    ids: &[u32],
    targets: &[PrefixTarget],
    cfg: &TokenAttributionConfig,
) -> Result<Vec<TokenAttribution>> {
    let mc = model.config();
    let mut hooks = Hooks::new();
    for l in 0..mc.n_layers {
        hooks.record(point::pattern(l));
    }
    let logits = model.forward(token_tensor(ids, model.device()), &mut hooks)?;
    let [_, _, vocab] = logits.dims();
    let patterns = (0..mc.n_layers)
        .map(|l| recorded4(&hooks, &point::pattern(l)))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let q = t.len - 1;
        let row = logits
            .clone()
            .slice([0..1, q..q + 1, 0..vocab])
            .reshape([1, vocab]);
        let mut o = TokenAttribution::new(mc.d_model);
        o.target_value = to_vec(t.target.evaluate(row))?[0];
        let mut rows = Vec::with_capacity(mc.n_layers * mc.n_heads * t.len);
        for p in &patterns {
            let [_, h, _, _] = p.dims();
            rows.extend(to_vec(
                p.clone()
                    .slice([0..1, 0..h, q..q + 1, 0..t.len])
                    .reshape([h * t.len]),
            )?);
        }
        o.scores = select_attention(&rows, mc.n_layers, mc.n_heads, t.len, cfg.attention);
        o.attention = Some(rows);
        out.push(o);
    }
    Ok(out)
}

fn check_inputs(model: &Transformer, ids: &[u32], cfg: &TokenAttributionConfig) -> Result<()> {
    let mc = model.config();
    let bad = |m: String| Err(AttributionError::Options(m));
    if ids.is_empty() {
        return bad("token attribution needs a non-empty input".into());
    }
    if ids.len() > mc.n_ctx {
        return bad(format!(
            "input of {} tokens is longer than the model's context of {}",
            ids.len(),
            mc.n_ctx
        ));
    }
    if let Some(id) = ids.iter().find(|&&i| i as usize >= mc.d_vocab) {
        return bad(format!(
            "input token id {id} is outside the vocabulary of {}",
            mc.d_vocab
        ));
    }
    check_config(cfg, mc.d_vocab, mc.n_layers, mc.n_heads, "the model")
}

/// Checks that every target reads a non-empty prefix of the `n_ids` input tokens and names
/// tokens of the vocabulary; `names` are the prefix's and the input's names in the message.
pub(crate) fn check_targets(
    targets: &[PrefixTarget],
    n_ids: usize,
    d_vocab: usize,
    names: (&str, &str),
) -> Result<()> {
    let (prefix, input) = names;
    for t in targets {
        if t.len == 0 || t.len > n_ids {
            return Err(AttributionError::Options(format!(
                "a target reads a {prefix} of {} tokens, the {input} has {n_ids}",
                t.len
            )));
        }
        t.target.validate(d_vocab)?;
    }
    Ok(())
}

/// Checks the options of a token attribution against a model's vocabulary, its layers (named
/// `layers_of`, e.g. "the decoder") and heads; shared by the decoder-only and encoder-decoder
/// entry points.
pub(crate) fn check_config(
    cfg: &TokenAttributionConfig,
    d_vocab: usize,
    n_layers: usize,
    n_heads: usize,
    layers_of: &str,
) -> Result<()> {
    let bad = |m: String| Err(AttributionError::Options(m));
    if cfg.ig_steps == 0 {
        return bad("integrated gradients needs at least 1 step".into());
    }
    if cfg.rows_per_pass == 0 {
        return bad("rows per pass must be at least 1".into());
    }
    if let Baseline::Token(id) = cfg.baseline
        && id as usize >= d_vocab
    {
        return bad(format!(
            "baseline token id {id} is outside the vocabulary of {}",
            d_vocab
        ));
    }
    if let Some(l) = cfg.attention.layer
        && l >= n_layers
    {
        return bad(format!(
            "attention layer {l} does not exist ({layers_of} has {n_layers} layers)"
        ));
    }
    if let Some(h) = cfg.attention.head
        && h >= n_heads
    {
        return bad(format!(
            "attention head {h} does not exist (the model has {} heads)",
            n_heads
        ));
    }
    Ok(())
}

/// Mean of the selected layers and heads of `[n_layers, n_heads, pos]` attention rows.
fn select_attention(
    rows: &[f32],
    n_layers: usize,
    n_heads: usize,
    pos: usize,
    sel: AttentionSelection,
) -> Vec<f32> {
    let layers: Vec<usize> = sel
        .layer
        .map_or_else(|| (0..n_layers).collect(), |l| vec![l]);
    let heads: Vec<usize> = sel.head.map_or_else(|| (0..n_heads).collect(), |h| vec![h]);
    let n = (layers.len() * heads.len()) as f32;
    let mut out = vec![0f32; pos];
    for &l in &layers {
        for &h in &heads {
            let row = &rows[(l * n_heads + h) * pos..(l * n_heads + h + 1) * pos];
            for (o, r) in out.iter_mut().zip(row) {
                *o += r / n;
            }
        }
    }
    out
}

/// Reduces `[pos, d]` per-dimension attributions to `[pos]`.
pub fn aggregate_dims(per_dim: &[f32], d: usize, how: EmbeddingAggregation) -> Vec<f32> {
    per_dim
        .chunks(d)
        .map(|row| match how {
            EmbeddingAggregation::L2Norm => row.iter().map(|x| x * x).sum::<f32>().sqrt(),
            EmbeddingAggregation::Sum => row.iter().sum(),
        })
        .collect()
}

/// Scales scores so that their absolute values sum to 1 (Inseq's normalization); all-zero
/// scores stay zero.
pub fn normalize(scores: &[f32]) -> Vec<f32> {
    let total: f32 = scores.iter().map(|s| s.abs()).sum();
    if total == 0.0 || !total.is_finite() {
        return scores.to_vec();
    }
    scores.iter().map(|s| s / total).collect()
}

/// A word: consecutive subword tokens, with the summed score of its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    /// The word's text (its tokens' span, whitespace trimmed).
    pub text: String,
    /// The token positions it covers.
    pub tokens: Range<usize>,
    /// The sum of its tokens' scores.
    pub score: f32,
}

/// Merges subword tokens into words using byte offsets into `text`: a token starts a new word
/// when whitespace precedes or begins it, or when its span is empty (special tokens); every
/// other token continues the previous word. Scores are summed.
///
/// # Shapes
/// - `offsets`, `scores`: `[pos]`
pub fn aggregate_words(
    text: &str,
    offsets: &[(usize, usize)],
    scores: &[f32],
) -> Result<Vec<Word>> {
    if offsets.len() != scores.len() {
        return Err(AttributionError::Options(format!(
            "{} token offsets but {} scores",
            offsets.len(),
            scores.len()
        )));
    }
    let span = |s: usize, e: usize| {
        text.get(s..e).ok_or_else(|| {
            AttributionError::Options(format!(
                "offsets {s}..{e} are not character boundaries of a text of {} bytes",
                text.len()
            ))
        })
    };
    let mut words: Vec<Word> = Vec::new();
    let mut prev_end: Option<usize> = None;
    for (i, (&(s, e), &score)) in offsets.iter().zip(scores).enumerate() {
        let piece = span(s, e)?;
        let gap = match prev_end {
            Some(p) if p <= s => span(p, s)?,
            _ => "",
        };
        let starts_word = words.is_empty()
            || s == e
            || prev_end.is_none()
            || piece.starts_with(char::is_whitespace)
            || gap.chars().any(char::is_whitespace)
            || words.last().is_some_and(|w| w.text.is_empty());
        if starts_word {
            words.push(Word {
                text: piece.trim().to_string(),
                tokens: i..i + 1,
                score,
            });
        } else if let Some(w) = words.last_mut() {
            let start = offsets[w.tokens.start].0;
            w.text = span(start, e)?.trim().to_string();
            w.tokens.end = i + 1;
            w.score += score;
        }
        prev_end = if s == e { None } else { Some(e) };
    }
    Ok(words)
}

// ---------------------------------------------------------------------------------------------
// Passes.

fn token_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

fn recorded3(hooks: &Hooks, point: &str) -> Result<Tensor<3>> {
    hooks
        .recorded(point)
        .and_then(Activation::rank3)
        .ok_or_else(|| AttributionError::Options(format!("no rank-3 activation at {point}")))
}

fn recorded4(hooks: &Hooks, point: &str) -> Result<Tensor<4>> {
    hooks
        .recorded(point)
        .and_then(Activation::rank4)
        .ok_or_else(|| AttributionError::Options(format!("no rank-4 activation at {point}")))
}

/// The baseline embedding `[d_model]`, the same at every position; `None` for the zero
/// baseline.
fn baseline_embedding(model: &Transformer, baseline: Baseline) -> Result<Option<Vec<f32>>> {
    match baseline {
        Baseline::Zero => Ok(None),
        Baseline::Token(id) => {
            let mut hooks = Hooks::new();
            hooks.record(point::EMBED);
            model.forward(token_tensor(&[id], model.device()), &mut hooks)?;
            Ok(Some(to_vec(recorded3(&hooks, point::EMBED)?)?))
        }
    }
}
