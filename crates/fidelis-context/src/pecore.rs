//! The PECoRe pipeline for decoder-only models (encoder-decoders: `seq2seq.rs`): generate (or take) the contextual output,
//! force-decode it without the context, score each output token's context sensitivity (CTI),
//! and attribute the selected tokens' contrastive predictions to the context tokens (CCI).

use burn::prelude::*;
use burn::tensor::TensorData;
use fidelis_attribution::token::{
    Target, TargetFunction, TokenAttributionConfig, TokenMethod, attribute_tokens,
};
use std::ops::ControlFlow;

use fidelis_circuit::{Progress, Silent};
use fidelis_models::{GenerateConfig, Hooks, Model};
use serde::Serialize;

use crate::cti::{CtiMetric, argmax};
use crate::prompt::{
    ChatTemplate, DEFAULT_INPUT_TEMPLATE, DEFAULT_OUTPUT_CONTEXT_TEMPLATE, DEFAULT_OUTPUT_TEMPLATE,
    DEFAULT_SEPARATOR, Layout, concat_with_sep, format_template,
};
use crate::select::select;
use crate::{ContextError, Result};

/// One PECoRe example and the method's options.
#[derive(Debug, Clone, PartialEq)]
pub struct PecoreConfig {
    /// The input context (e.g. a fact).
    pub input_context: String,
    /// The input current text (e.g. a question about it).
    pub input_current: String,
    /// An output context the output starts with (e.g. a previous answer), if any.
    pub output_context: Option<String>,
    /// The output current text to explain; generated greedily with the context when `None`.
    pub output_current: Option<String>,
    /// How input context and current text are joined: `{context}` and `{current}`.
    pub input_template: String,
    /// How output context and current text are joined; `None` picks `{current}`, or
    /// `{context} {current}` when an output context is given.
    pub output_template: Option<String>,
    /// The contextless input: `{current}` only, by default.
    pub contextless_input_template: String,
    /// Between input and output (ignored with a chat template, which opens the assistant turn).
    pub separator: String,
    /// Apply this chat template to the input (the user turn).
    pub chat: Option<ChatTemplate>,
    /// Prepend the model's BOS token, if it has one.
    pub add_bos: bool,
    /// Limit of the generated output.
    pub max_new_tokens: usize,
    /// The context-sensitivity metric.
    pub cti_metric: CtiMetric,
    /// λ of the CTI selector (`mean + λ·std`); `None`: no threshold.
    pub cti_std: Option<f32>,
    /// Keep at most this many context-sensitive tokens.
    pub cti_topk: Option<usize>,
    /// The attribution method of CCI (saliency by default, as in Inseq).
    pub attribution: TokenAttributionConfig,
    /// The attributed target of CCI.
    pub cci_target: TargetFunction,
    /// λ of the cue selector.
    pub cci_std: Option<f32>,
    /// Keep at most this many cues per token.
    pub cci_topk: Option<usize>,
    /// Reproduce Inseq 0.7.1's `attribute-context` where Fidelis deliberately differs: generate
    /// after the whole separator (the prompt ends with it) rather than leaving its trailing
    /// whitespace to the model, and build each CCI contrast as Inseq does, from the text of the
    /// output's standalone tokens (see [`attribute_context`] and docs/inseq.md).
    pub inseq_compat: bool,
    /// Encoder-decoders whose sources carry a language token (mBART, M2M100 / NLLB): its name
    /// (`en_XX`, `__en__`, `eng_Latn`); Inseq's `tokenizer_kwargs` `src_lang`.
    pub source_lang: Option<String>,
    /// Encoder-decoders: the target-language token forced first in the target (Inseq's
    /// `tgt_lang`); by default the model's `forced_bos_token_id`, if any.
    pub target_lang: Option<String>,
}

impl PecoreConfig {
    /// Defaults as in Inseq: templates `{context} {current}` / `{current}`, separator `" "`, KL
    /// divergence, λ = 1 for both selectors, saliency on the contrastive probability
    /// difference.
    pub fn new(input_context: &str, input_current: &str) -> Self {
        Self {
            input_context: input_context.to_string(),
            input_current: input_current.to_string(),
            output_context: None,
            output_current: None,
            input_template: DEFAULT_INPUT_TEMPLATE.into(),
            output_template: None,
            contextless_input_template: "{current}".into(),
            separator: DEFAULT_SEPARATOR.into(),
            chat: None,
            add_bos: true,
            max_new_tokens: 32,
            cti_metric: CtiMetric::Kl,
            cti_std: Some(1.0),
            cti_topk: None,
            attribution: TokenAttributionConfig::new(TokenMethod::Saliency),
            cci_target: TargetFunction::ContrastProbDiff,
            cci_std: Some(1.0),
            cci_topk: None,
            inseq_compat: false,
            source_lang: None,
            target_lang: None,
        }
    }
}

/// The result, with the information of Inseq's `attribute-context` JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContextAttribution {
    /// The input context.
    pub input_context: String,
    /// Its tokens.
    pub input_context_tokens: Vec<String>,
    /// The output context, if any.
    pub output_context: Option<String>,
    /// Its tokens.
    pub output_context_tokens: Option<Vec<String>>,
    /// The output current text (given or generated).
    pub output_current: String,
    /// Its tokens.
    pub output_current_tokens: Vec<String>,
    /// Context sensitivity of each output current token.
    pub cti_scores: Vec<f32>,
    /// The CTI selector's threshold.
    pub cti_threshold: f32,
    /// One entry per context-sensitive token, by decreasing `|cti score|`.
    pub cci_scores: Vec<CciOutput>,
    /// How the result was obtained.
    pub info: Info,
}

/// CCI for one context-sensitive token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CciOutput {
    /// Position among the output current tokens.
    pub cti_idx: usize,
    /// The token.
    pub cti_token: String,
    /// Its context-sensitivity score.
    pub cti_score: f32,
    /// The contextless model's own next token at that position (the contrast).
    pub contrast_token: String,
    /// The contextual text up to and including the token.
    pub contextual_output: String,
    /// The contextless text up to and including the contrast token.
    pub contextless_output: String,
    /// The attributed target's value.
    pub target_value: f32,
    /// Attribution to each input context token.
    pub input_context_scores: Vec<f32>,
    /// Attribution to each output context token, if there is an output context.
    pub output_context_scores: Option<Vec<f32>>,
    /// The selected cues among the input context tokens, best first.
    pub input_context_cues: Vec<usize>,
    /// The selected cues among the output context tokens, best first.
    pub output_context_cues: Vec<usize>,
    /// The cue selector's threshold.
    pub cci_threshold: f32,
}

/// Settings and the exact texts that were run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Info {
    /// The context-sensitivity metric.
    pub cti_metric: CtiMetric,
    /// λ of the CTI selector.
    pub cti_std: Option<f32>,
    /// Top-k of the CTI selector.
    pub cti_topk: Option<usize>,
    /// The CCI attribution method.
    pub attribution_method: String,
    /// The CCI target function.
    pub attributed_fn: String,
    /// λ of the cue selector.
    pub cci_std: Option<f32>,
    /// Top-k of the cue selector.
    pub cci_topk: Option<usize>,
    /// The input template.
    pub input_template: String,
    /// The output template.
    pub output_template: String,
    /// The input/output separator.
    pub separator: String,
    /// Whether a chat template was applied.
    pub chat_template: bool,
    /// Whether the output was generated (rather than given).
    pub generated: bool,
    /// Whether Inseq's own behaviour was reproduced where Fidelis differs by default.
    pub inseq_compat: bool,
    /// The full contextual text that was force-decoded.
    pub contextual_text: String,
    /// The full contextless text that was force-decoded.
    pub contextless_text: String,
    /// Encoder-decoders: the contextual target (`contextual_text` is then the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contextual_target_text: Option<String>,
    /// Encoder-decoders: the contextless target (`contextless_text` is then the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contextless_target_text: Option<String>,
}

/// The two force-decoded sequences and where the parts of the example sit in them.
struct Runs {
    contextual: Layout,
    contextless: Layout,
    input_context: std::ops::Range<usize>,
    output_context: Option<std::ops::Range<usize>>,
    /// Output current tokens in the contextual and the contextless sequence: every token after
    /// the contextless input, as in Inseq (the separator too when it is a token of its own).
    current_ctx: std::ops::Range<usize>,
    current_noctx: std::ops::Range<usize>,
    /// The contextless input with the separator, the text Inseq continues for a CCI contrast.
    contextless_prompt: String,
}

/// The stage of generating the output (when it is not given).
pub const STAGE_GENERATING: &str = "generating";
/// The stage of the two force-decoded runs and the CTI scores.
pub const STAGE_CTI: &str = "cti";
/// The stage of attributing each selected token to the context (counted).
pub const STAGE_CCI: &str = "cci";

/// Runs PECoRe on one example.
pub fn attribute_context(model: &Model, cfg: &PecoreConfig) -> Result<ContextAttribution> {
    attribute_context_with_progress(model, cfg, &mut Silent)
}

/// Like [`attribute_context`], reporting each stage to `progress` ([`STAGE_GENERATING`],
/// [`STAGE_CTI`], then [`STAGE_CCI`] with the count of attributed tokens); a `Break` from it
/// stops the run with [`ContextError::Cancelled`].
pub fn attribute_context_with_progress(
    model: &Model,
    cfg: &PecoreConfig,
    progress: &mut dyn Progress,
) -> Result<ContextAttribution> {
    let mut stage = |name: &str, done: usize, total: usize| match progress.tick(name, done, total) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(ContextError::Cancelled),
    };
    check(cfg)?;
    let output_template = cfg.output_template.clone().unwrap_or_else(|| {
        if cfg.output_context.is_some() {
            DEFAULT_OUTPUT_CONTEXT_TEMPLATE.into()
        } else {
            DEFAULT_OUTPUT_TEMPLATE.into()
        }
    });
    let (generated, output_current) = match &cfg.output_current {
        Some(text) => (false, text.trim().to_string()),
        None => {
            stage(STAGE_GENERATING, 0, 0)?;
            (true, generate(model, cfg, &output_template)?)
        }
    };
    if output_current.is_empty() {
        return Err(ContextError::Empty(if generated {
            "the generated output (the model stopped at once; give the output current text)"
        } else {
            "the output current text"
        }));
    }
    let runs = layout(model, cfg, &output_template, &output_current)?;
    stage(STAGE_CTI, 0, 0)?;
    let ctx_logits = next_token_logits(model, &runs.contextual.ids)?;
    let noctx_logits = next_token_logits(model, &runs.contextless.ids)?;
    let vocab = model.config().d_vocab;
    let row = |logits: &[f32], p: usize| logits[p * vocab..(p + 1) * vocab].to_vec();
    let n_out = runs.current_ctx.len();
    let mut cti_scores = Vec::with_capacity(n_out);
    for j in 0..n_out {
        let (pc, pn) = (runs.current_ctx.start + j, runs.current_noctx.start + j);
        let token = runs.contextual.ids[pc];
        cti_scores.push(cfg.cti_metric.score(
            &row(&ctx_logits, pc - 1),
            &row(&noctx_logits, pn - 1),
            token,
        ));
    }
    let cti = select(&cti_scores, cfg.cti_std, cfg.cti_topk)?;
    let tokens_of = |r: &std::ops::Range<usize>| runs.contextual.tokens[r.clone()].to_vec();
    let mut cci_scores = Vec::with_capacity(cti.ranked.len());
    for (step, &(j, score)) in cti.ranked.iter().enumerate() {
        stage(STAGE_CCI, step, cti.ranked.len())?;
        let site = cci_site(model, cfg, &runs, &noctx_logits, &output_current, j)?;
        let pc = site.position;
        let token = site.sequence[pc];
        let contrast = site.contrast;
        let target = cci_target(cfg.cci_target, token, contrast, site.contrast_logits);
        let prefix = &site.sequence[..pc];
        let attr = attribute_tokens(&model.transformer, prefix, &target, &cfg.attribution)?;
        let input_scores = attr.scores[runs.input_context.clone()].to_vec();
        let output_scores = runs
            .output_context
            .as_ref()
            .map(|r| attr.scores[r.clone()].to_vec());
        let all: Vec<f32> = input_scores
            .iter()
            .chain(output_scores.iter().flatten())
            .copied()
            .collect();
        let cues = select(&all, cfg.cci_std, cfg.cci_topk)?;
        let n_in = input_scores.len();
        let decode = |ids: &[u32]| model.tokenizer.decode(ids);
        let mut ctxless_ids = site.contrast_prefix;
        ctxless_ids.push(contrast);
        cci_scores.push(CciOutput {
            cti_idx: j,
            cti_token: runs.contextual.tokens[runs.current_ctx.start + j].clone(),
            cti_score: score,
            contrast_token: crate::prompt::display_token(&model.tokenizer, contrast),
            contextual_output: decode(&site.sequence[..=pc])?,
            contextless_output: decode(&ctxless_ids)?,
            target_value: attr.target_value,
            input_context_scores: input_scores,
            output_context_scores: output_scores,
            input_context_cues: cues.positions().into_iter().filter(|&i| i < n_in).collect(),
            output_context_cues: cues
                .positions()
                .into_iter()
                .filter(|&i| i >= n_in)
                .map(|i| i - n_in)
                .collect(),
            cci_threshold: cues.threshold,
        });
    }
    stage(STAGE_CCI, cti.ranked.len(), cti.ranked.len())?;
    Ok(ContextAttribution {
        input_context: cfg.input_context.clone(),
        input_context_tokens: tokens_of(&runs.input_context),
        output_context: cfg.output_context.clone(),
        output_context_tokens: runs.output_context.as_ref().map(tokens_of),
        output_current_tokens: tokens_of(&runs.current_ctx),
        output_current,
        cti_scores,
        cti_threshold: cti.threshold,
        cci_scores,
        info: Info {
            cti_metric: cfg.cti_metric,
            cti_std: cfg.cti_std,
            cti_topk: cfg.cti_topk,
            attribution_method: cfg.attribution.method.name().into(),
            attributed_fn: cfg.cci_target.name().into(),
            cci_std: cfg.cci_std,
            cci_topk: cfg.cci_topk,
            input_template: cfg.input_template.clone(),
            output_template,
            separator: cfg.separator.clone(),
            chat_template: cfg.chat.is_some(),
            generated,
            inseq_compat: cfg.inseq_compat,
            contextual_text: runs.contextual.text.clone(),
            contextless_text: runs.contextless.text.clone(),
            contextual_target_text: None,
            contextless_target_text: None,
        },
    })
}

/// Where CCI attributes one context-sensitive token and what its contrast is compared with.
struct CciSite {
    /// The sequence whose prefix is attributed (the contextual sequence by default).
    sequence: Vec<u32>,
    /// The position of the attributed token in `sequence`.
    position: usize,
    /// The contrast token.
    contrast: u32,
    /// The contextless tokens the contrast follows.
    contrast_prefix: Vec<u32>,
    /// The contextless model's next-token logits after them, `[d_vocab]`.
    contrast_logits: Vec<f32>,
}

/// The CCI site of output token `j`. By default it is that token itself, and its contrast is
/// the contextless run's own next token at the same output position (the force-decoded
/// contextless sequence up to it). With [`PecoreConfig::inseq_compat`], Inseq's
/// ([`inseq_cci_site`]).
fn cci_site(
    model: &Model,
    cfg: &PecoreConfig,
    runs: &Runs,
    noctx_logits: &[f32],
    output_current: &str,
    j: usize,
) -> Result<CciSite> {
    if cfg.inseq_compat {
        return inseq_cci_site(model, cfg, runs, output_current, j);
    }
    let vocab = model.config().d_vocab;
    let pn = runs.current_noctx.start + j;
    let contrast_logits = noctx_logits[(pn - 1) * vocab..pn * vocab].to_vec();
    Ok(CciSite {
        sequence: runs.contextual.ids.clone(),
        position: runs.current_ctx.start + j,
        contrast: argmax(&contrast_logits),
        contrast_prefix: runs.contextless.ids[..pn].to_vec(),
        contrast_logits,
    })
}

/// The CCI site of output token `j` as Inseq 0.7.1's `attribute_context` computes it
/// through texts (`generate_contextless_output`, `pos_start`): the output text is tokenized on
/// its own; the contrast continues the text `contextless input + separator + the first j of
/// those tokens` by one greedy token, and that continuation is decoded and tokenized again
/// (its last token is the contrast, the tokens before it the contrast's prefix); the attributed
/// sequence is the contextual text up to output token `j`, decoded and tokenized again, at the
/// position `j` counted from where the standalone tokens would start at the end of the
/// contextual sequence. The two agree when the output's standalone tokens are its tokens in
/// context and texts round-trip through the tokenizer. They differ when the separator is a
/// token of its own (Inseq then attributes the next token under token `j`'s name), for `j = 0`
/// when the output's first token carries the separator's space (Inseq's contrast then follows
/// a lone separator token, and may merge with it on re-tokenization), and when the standalone
/// first word tokenizes differently (a word-level vocabulary's unknown token).
fn inseq_cci_site(
    model: &Model,
    cfg: &PecoreConfig,
    runs: &Runs,
    output_current: &str,
    j: usize,
) -> Result<CciSite> {
    let vocab = model.config().d_vocab;
    let last_row = |logits: &[f32], n: usize| logits[(n - 1) * vocab..n * vocab].to_vec();
    let tok = &model.tokenizer;
    let special = [tok.bos_id(), tok.eos_id()];
    let plain = |ids: &[u32]| -> Vec<u32> {
        ids.iter()
            .copied()
            .filter(|id| !special.contains(&Some(*id)))
            .collect()
    };
    let tokenize =
        |text: &str| -> Result<Vec<u32>> { Ok(Layout::new(tok, text, add_bos(cfg))?.ids) };
    let standalone = plain(&tok.encode(output_current)?);
    let contextual = plain(&runs.contextual.ids);
    let bos = usize::from(add_bos(cfg) && tok.bos_id().is_some());
    // Inseq slices the contextual tokens at `len − standalone + j + 1` (a Python slice, so
    // past the end is the end) and attributes position `len − standalone + j` (+ BOS).
    let cut = (contextual.len() + j + 1)
        .checked_sub(standalone.len())
        .filter(|&c| c > 0);
    let sequence = match cut {
        Some(cut) => {
            let text = tok.decode(&contextual[..cut.min(contextual.len())])?;
            tokenize(text.trim_start_matches(' '))?
        }
        None => Vec::new(),
    };
    let position = cut.map(|c| c - 1 + bos);
    let Some(position) = position.filter(|&p| p > 0 && p < sequence.len()) else {
        return Err(ContextError::Options(format!(
            "Inseq compatibility: Inseq's CCI has no token to attribute for output token {j} \
             (the output is {} tokens on its own, {} after the input)",
            standalone.len(),
            runs.current_ctx.len()
        )));
    };
    let head = tok.decode(&standalone[..j])?;
    let text = concat_with_sep(&runs.contextless_prompt, &head, &cfg.separator);
    let prompt = tokenize(&text)?;
    check_length(model, prompt.len() + 1)?;
    if prompt.is_empty() {
        return Err(ContextError::Empty("the contextless input (no tokens)"));
    }
    let mut continued = plain(&prompt);
    continued.push(argmax(&last_row(
        &next_token_logits(model, &prompt)?,
        prompt.len(),
    )));
    let mut contrast_prefix = tokenize(&tok.decode(&continued)?)?;
    let contrast = contrast_prefix.pop().unwrap_or_default();
    if contrast_prefix.is_empty() {
        return Err(ContextError::Empty("the contextless input (no tokens)"));
    }
    let contrast_logits = last_row(
        &next_token_logits(model, &contrast_prefix)?,
        contrast_prefix.len(),
    );
    Ok(CciSite {
        sequence,
        position,
        contrast,
        contrast_prefix,
        contrast_logits,
    })
}

/// The CCI target for output token `token` with the contextless model's `contrast`: a
/// contrastive function compares the two tokens on the contextual input (Yin & Neubig 2022, as
/// PECoRe); when both are the same token it compares the contextual and the contextless
/// probability of that token instead (Inseq's form), which is otherwise identically zero. KL
/// and P-CXMI use the contextless distribution as the reference.
pub fn cci_target(
    function: TargetFunction,
    token: u32,
    contrast: u32,
    contextless: Vec<f32>,
) -> Target {
    let mut target = Target::new(function, token);
    match function {
        TargetFunction::ContrastProbDiff | TargetFunction::ContrastLogitDiff => {
            target.contrast_token = Some(contrast);
            if contrast == token {
                target.contrast_logits = Some(contextless);
            }
        }
        TargetFunction::KlDivergence | TargetFunction::Pcxmi => {
            target.contrast_logits = Some(contextless);
        }
        _ => {}
    }
    target
}

pub(crate) fn check(cfg: &PecoreConfig) -> Result<()> {
    check_texts(cfg)?;
    if cfg.source_lang.is_some() || cfg.target_lang.is_some() {
        return Err(ContextError::Options(
            "source and target languages are for encoder-decoder models".into(),
        ));
    }
    Ok(())
}

/// The checks both kinds of model share.
pub(crate) fn check_texts(cfg: &PecoreConfig) -> Result<()> {
    if cfg.input_current.trim().is_empty() {
        return Err(ContextError::Empty("the input current text"));
    }
    if cfg.input_context.trim().is_empty() {
        return Err(ContextError::Empty("the input context"));
    }
    if let Some(o) = &cfg.output_current
        && o.trim().is_empty()
    {
        return Err(ContextError::Empty("the output current text"));
    }
    if let Some(o) = &cfg.output_context
        && o.trim().is_empty()
    {
        return Err(ContextError::Empty("the output context"));
    }
    if cfg.inseq_compat && cfg.chat.is_some() {
        return Err(ContextError::Options(
            "Inseq compatibility is for plain templates; Inseq has no chat template mode (write the \
             chat markup into the templates instead)"
                .into(),
        ));
    }
    if cfg.max_new_tokens == 0 && cfg.output_current.is_none() {
        return Err(ContextError::Options(
            "max_new_tokens must be at least 1 to generate the output".into(),
        ));
    }
    Ok(())
}

/// The contextual and the contextless input text, each with where its user text went.
fn wrap_input(cfg: &PecoreConfig, text: &str) -> Result<(String, usize)> {
    Ok(match &cfg.chat {
        Some(chat) => {
            let (wrapped, range) = chat.wrap_user(text)?;
            (wrapped, range.start)
        }
        None => (text.to_string(), 0),
    })
}

/// Joins a (wrapped) input and an output text; returns the text and where the output starts.
fn join(cfg: &PecoreConfig, input: &str, output: &str) -> (String, usize) {
    let joined = if cfg.chat.is_some() {
        format!("{input}{output}")
    } else {
        concat_with_sep(input, output, &cfg.separator)
    };
    let start = joined.len() - output.len();
    (joined, start)
}

fn generate(model: &Model, cfg: &PecoreConfig, output_template: &str) -> Result<String> {
    let input = format_template(
        &cfg.input_template,
        &cfg.input_current,
        Some(&cfg.input_context),
    )?;
    let (wrapped, _) = wrap_input(cfg, &input.text)?;
    // The output context, when given, is forced before the generated current text.
    let prefix = match &cfg.output_context {
        Some(ctx) => {
            let head = output_template
                .split("{current}")
                .next()
                .unwrap_or_default();
            head.replace("{context}", ctx)
        }
        None => String::new(),
    };
    let (prompt, _) = join(cfg, &wrapped, &prefix);
    // A trailing space would be a token of its own that BPE models rarely see before a word
    // (and a word-level vocabulary cannot spell): by default the model writes it. Inseq
    // generates after the whole separator, and `max_new_tokens` counts from there.
    let prompt = if cfg.chat.is_some() || cfg.inseq_compat {
        prompt
    } else {
        prompt.trim_end().to_string()
    };
    let ids = Layout::new(&model.tokenizer, &prompt, add_bos(cfg))?.ids;
    check_length(model, ids.len())?;
    let mut stop: Vec<u32> = model.tokenizer.eos_id().into_iter().collect();
    if let Some(chat) = &cfg.chat
        && let Ok(id) = model.tokenizer.single_token(chat.end_of_turn())
    {
        stop.push(id);
    }
    let gen_cfg = GenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        stop_tokens: stop.clone(),
        ..GenerateConfig::default()
    };
    let mut out = model.transformer.generate(&ids, &gen_cfg, |_| {})?;
    if out.last().is_some_and(|t| stop.contains(t)) {
        out.pop();
    }
    Ok(model.tokenizer.decode(&out)?.trim().to_string())
}

/// Whether to prepend BOS: as asked, without a chat template; a chat template's text carries
/// the BOS when the template writes one, as transformers' `apply_chat_template` does.
fn add_bos(cfg: &PecoreConfig) -> bool {
    cfg.add_bos && cfg.chat.is_none()
}

fn check_length(model: &Model, tokens: usize) -> Result<()> {
    let n_ctx = model.config().n_ctx;
    if tokens > n_ctx {
        return Err(ContextError::TooLong { tokens, n_ctx });
    }
    Ok(())
}

/// The contextless input as Inseq joins it to the output: the separator appended (unless the
/// input already ends with it), or the chat template's open assistant turn.
fn contextless_prompt(cfg: &PecoreConfig, wrapped_less: &str) -> String {
    if cfg.chat.is_some() {
        wrapped_less.to_string()
    } else {
        concat_with_sep(wrapped_less, "", &cfg.separator)
    }
}

fn layout(model: &Model, cfg: &PecoreConfig, output_template: &str, current: &str) -> Result<Runs> {
    let tok = &model.tokenizer;
    let input = format_template(
        &cfg.input_template,
        &cfg.input_current,
        Some(&cfg.input_context),
    )?;
    let output = format_template(output_template, current, cfg.output_context.as_deref())?;
    let (wrapped, in_start) = wrap_input(cfg, &input.text)?;
    let (text, out_start) = join(cfg, &wrapped, &output.text);
    let contextual = Layout::new(tok, &text, add_bos(cfg))?;
    check_length(model, contextual.ids.len())?;
    let ctx_range = input.context.clone().unwrap_or(0..0);
    let shift = |r: &std::ops::Range<usize>, by: usize| r.start + by..r.end + by;
    let input_context = contextual.positions(&shift(&ctx_range, in_start), "input context")?;
    let output_context = match &output.context {
        Some(r) => Some(contextual.positions(&shift(r, out_start), "output context")?),
        None => None,
    };

    let less = format_template(&cfg.contextless_input_template, &cfg.input_current, None)?;
    let (wrapped_less, _) = wrap_input(cfg, &less.text)?;
    let (text_less, _) = join(cfg, &wrapped_less, current);
    let contextless = Layout::new(tok, &text_less, add_bos(cfg))?;
    // Inseq's CTI force-decodes `input + separator + output` from the input with its trailing
    // spaces stripped: every token after that input is an output token, the separator too when
    // it is a token of its own (a lone space before digits in SmolLM2).
    let prompt_less = contextless_prompt(cfg, &wrapped_less);
    let prompt_less = if cfg.chat.is_some() {
        prompt_less.as_str()
    } else {
        prompt_less.trim_end_matches(' ')
    };
    let prefix = Layout::new(tok, prompt_less, add_bos(cfg))?.ids;
    let n0 = prefix.len();
    let n_out = contextless.ids.len().saturating_sub(n0);
    // The contextual run's output tokens are its last n_out tokens (Inseq aligns the two runs
    // from the end); Fidelis checks that they are the same tokens.
    let start_ctx = contextual.ids.len().saturating_sub(n_out);
    let after_context = input_context
        .end
        .max(output_context.as_ref().map_or(0, |r| r.end));
    let aligned = n0 > 0
        && n_out > 0
        && contextless.ids.starts_with(&prefix)
        && start_ctx >= after_context.max(1)
        && contextual.ids[start_ctx..] == contextless.ids[n0..];
    if !aligned {
        let with_context = contextual.overlapping(&shift(&output.current, out_start)).0;
        return Err(ContextError::TokenizationMismatch {
            output: current.to_string(),
            with_context: contextual.tokens[with_context].to_vec(),
            without_context: contextless.tokens[n0.min(contextless.ids.len())..].to_vec(),
        });
    }
    if input_context.is_empty() {
        return Err(ContextError::Empty("the input context (no tokens)"));
    }
    Ok(Runs {
        current_ctx: start_ctx..contextual.ids.len(),
        current_noctx: n0..contextless.ids.len(),
        contextless_prompt: contextless_prompt(cfg, &wrapped_less),
        contextual,
        contextless,
        input_context,
        output_context,
    })
}

/// Logits at every position of one sequence, row-major `[pos · d_vocab]`.
fn next_token_logits(model: &Model, ids: &[u32]) -> Result<Vec<f32>> {
    let data: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
    let tokens = Tensor::<2, Int>::from_data(
        TensorData::new(data, [1, ids.len()]),
        model.transformer.device(),
    );
    let logits = model.transformer.forward(tokens, &mut Hooks::new())?;
    logits
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ContextError::Options(format!("cannot read logits: {e:?}")))
}
