//! PECoRe on encoder-decoder models ([`fidelis_models::Seq2SeqModel`]: Marian, T5), as Inseq
//! 0.7.1's `attribute-context` defines it for them (`attribute_context.py`, the
//! `model.is_encoder_decoder` branches; Sarti et al. 2024 used it on MarianMT and mBART):
//!
//! - **Inputs.** The source is the input template filled with the input context and current
//!   text (`{context} <brk> {current}` for context-aware MT); the target is the output template
//!   filled with the output context and current text (`{context} <brk> {current}`), framed as
//!   the family frames a target (`tokens + [eos]`, after the forced language token when the
//!   model has one) and force-decoded after the decoder start token. There is no input/output
//!   separator: source and target are separate sequences.
//! - **Contextless run.** The source without the context (the contextless input template,
//!   `{current}` by default) and the target without the output context: the output current
//!   tokens alone, as Inseq's `contextless_output_current_text = "{current}"`.
//! - **CTI.** Each output current token (the final EOS excluded, as Inseq drops it) is scored
//!   from the contextual and contextless next-token distributions at its position, with the
//!   decoder-only code's metrics and orientation ([`crate::CtiMetric`]).
//! - **CCI.** Each selected token's contrast is the contextless run's own next token at the
//!   same output position; the target ([`crate::pecore::cci_target`]) is attributed with
//!   [`fidelis_attribution::token::attribute_seq2seq`] to the source (its input context tokens
//!   become `input_context_scores`) and to the decoder prefix (its output context tokens become
//!   `output_context_scores`), and cues are selected over both together.
//! - **Languages.** Sources of mBART and M2M100 carry a language token
//!   ([`PecoreConfig::source_lang`]); targets start with the target-language token
//!   ([`PecoreConfig::target_lang`], else the model's `forced_bos_token_id`), which is not an
//!   output token.
//! - **Generation.** Without a given output current text, the target is generated greedily
//!   with the context: after a given output context the decoder is forced through the template's
//!   text up to `{current}` (Inseq's `decoder_input_ids`); without one, when the output template
//!   has `{context}`, the whole output is generated and split at the template's text between
//!   `{context}` and `{current}` (Inseq's first splitting strategy).

use std::ops::Range;

use burn::prelude::*;
use fidelis_attribution::token::{PrefixTarget, attribute_seq2seq};
use fidelis_circuit::Progress;
use fidelis_models::{Batch, GenerateConfig, Hooks, Seq2SeqModel};
use std::ops::ControlFlow;

use crate::cti::argmax;
use crate::pecore::{
    CciOutput, ContextAttribution, Info, PecoreConfig, STAGE_CCI, STAGE_CTI, STAGE_GENERATING,
    cci_target, check_texts,
};
use crate::prompt::{
    DEFAULT_OUTPUT_CONTEXT_TEMPLATE, DEFAULT_OUTPUT_TEMPLATE, Layout, display_token,
    format_template,
};
use crate::select::select;
use crate::{ContextError, Result};

/// Runs PECoRe on one example with an encoder-decoder model.
pub fn attribute_context_seq2seq(
    model: &Seq2SeqModel,
    cfg: &PecoreConfig,
) -> Result<ContextAttribution> {
    attribute_context_seq2seq_with_progress(model, cfg, &mut fidelis_circuit::Silent)
}

/// One side of an encoder-decoder example: its tokens and where the parts sit.
struct Side {
    layout: Layout,
    /// The framed ids (special tokens added).
    ids: Vec<u32>,
    /// Where the layout's tokens start among `ids`.
    shift: usize,
}

impl Side {
    fn range(&self, r: &Range<usize>) -> Range<usize> {
        r.start + self.shift..r.end + self.shift
    }
}

/// Like [`attribute_context_seq2seq`], reporting the stages as
/// [`crate::attribute_context_with_progress`] does.
pub fn attribute_context_seq2seq_with_progress(
    model: &Seq2SeqModel,
    cfg: &PecoreConfig,
    progress: &mut dyn Progress,
) -> Result<ContextAttribution> {
    let mut stage = |name: &str, done: usize, total: usize| match progress.tick(name, done, total) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(ContextError::Cancelled),
    };
    check_texts(cfg)?;
    if cfg.chat.is_some() {
        return Err(ContextError::Options(
            "chat templates are for decoder-only models; an encoder-decoder's source and target \
             are separate sequences"
                .into(),
        ));
    }
    if cfg.inseq_compat {
        return Err(ContextError::Options(
            "Inseq compatibility mode is implemented for decoder-only models only".into(),
        ));
    }
    let output_template = cfg.output_template.clone().unwrap_or_else(|| {
        if cfg.output_context.is_some() {
            DEFAULT_OUTPUT_CONTEXT_TEMPLATE.into()
        } else {
            DEFAULT_OUTPUT_TEMPLATE.into()
        }
    });
    let input = format_template(
        &cfg.input_template,
        &cfg.input_current,
        Some(&cfg.input_context),
    )?;
    let source = source_side(model, cfg, &input.text)?;
    let input_context = source.range(
        &source
            .layout
            .positions(&input.context.clone().unwrap_or(0..0), "input context")?,
    );
    if input_context.is_empty() {
        return Err(ContextError::Empty("the input context (no tokens)"));
    }
    let (generated, output_context, output_current) = match &cfg.output_current {
        Some(text) => (false, cfg.output_context.clone(), text.trim().to_string()),
        None => {
            stage(STAGE_GENERATING, 0, 0)?;
            let (ctx, cur) = generate(model, cfg, &source.ids, &output_template)?;
            (true, ctx, cur)
        }
    };
    if output_current.is_empty() {
        return Err(ContextError::Empty(if generated {
            "the generated output (the model stopped at once; give the output current text)"
        } else {
            "the output current text"
        }));
    }
    if !output_template.trim_end().ends_with("{current}") {
        return Err(ContextError::Template {
            template: output_template.clone(),
            message: "an encoder-decoder's output template must end with {current}: the \
                      contextual and contextless targets are aligned from their ends"
                .into(),
        });
    }
    let output = format_template(&output_template, &output_current, output_context.as_deref())?;
    let target = target_side(model, cfg, &output.text)?;
    let output_context_range = match &output.context {
        Some(r) => Some(target.range(&target.layout.positions(r, "output context")?)),
        None => None,
    };
    let current = target.range(&target.layout.positions(&output.current, "output current")?);

    let less = format_template(&cfg.contextless_input_template, &cfg.input_current, None)?;
    let source_less = source_side(model, cfg, &less.text)?;
    let target_less = target_side(model, cfg, &output_current)?;
    // The output current tokens must be the same with and without the output context.
    let current_less = target_less.shift..target_less.shift + target_less.layout.ids.len();
    if target.ids[current.clone()] != target_less.ids[current_less.clone()]
        || current.end != target.ids.len() - 1
    {
        return Err(ContextError::TokenizationMismatch {
            output: output_current.clone(),
            with_context: target.layout.tokens[current.start - target.shift..].to_vec(),
            without_context: target_less.layout.tokens.clone(),
        });
    }

    stage(STAGE_CTI, 0, 0)?;
    let start = model.model.config().decoder_start_token_id;
    let decoder_inputs = |ids: &[u32]| [&[start], ids].concat();
    let ctx_logits = logits(model, &source.ids, &decoder_inputs(&target.ids))?;
    let noctx_logits = logits(model, &source_less.ids, &decoder_inputs(&target_less.ids))?;
    let vocab = model.model.config().d_vocab;
    // Row i of the decoder's logits predicts target token i (the start token shifts by one).
    let row = |l: &[f32], i: usize| l[i * vocab..(i + 1) * vocab].to_vec();
    let n_out = current.len();
    let cti_scores: Vec<f32> = (0..n_out)
        .map(|j| {
            let (pc, pn) = (current.start + j, current_less.start + j);
            cfg.cti_metric.score(
                &row(&ctx_logits, pc),
                &row(&noctx_logits, pn),
                target.ids[pc],
            )
        })
        .collect();
    let cti = select(&cti_scores, cfg.cti_std, cfg.cti_topk)?;

    stage(STAGE_CCI, 0, cti.ranked.len())?;
    let mut contrasts = Vec::with_capacity(cti.ranked.len());
    let targets: Vec<PrefixTarget> = cti
        .ranked
        .iter()
        .map(|&(j, _)| {
            let (pc, pn) = (current.start + j, current_less.start + j);
            let contextless = row(&noctx_logits, pn);
            let contrast = argmax(&contextless);
            contrasts.push(contrast);
            PrefixTarget {
                // Decoder inputs `[start] + target[..pc]` read the prediction of target[pc].
                len: pc + 1,
                target: cci_target(cfg.cci_target, target.ids[pc], contrast, contextless),
            }
        })
        .collect();
    let decoder = decoder_inputs(&target.ids);
    let attributions = attribute_seq2seq(
        &model.model,
        &source.ids,
        &decoder,
        &targets,
        &cfg.attribution,
    )?;
    let tok = &model.tokenizer;
    let plain = |ids: &[u32]| -> Result<String> { Ok(tok.decode(ids)?) };
    let mut cci_scores = Vec::with_capacity(targets.len());
    for (((&(j, score), attr), &contrast), t) in cti
        .ranked
        .iter()
        .zip(&attributions)
        .zip(&contrasts)
        .zip(&targets)
    {
        let pc = current.start + j;
        let input_scores = attr.source_scores[input_context.clone()].to_vec();
        // Decoder position p + 1 holds target token p.
        let output_scores = output_context_range
            .as_ref()
            .map(|r| attr.target_scores[r.start + 1..r.end + 1].to_vec());
        let all: Vec<f32> = input_scores
            .iter()
            .chain(output_scores.iter().flatten())
            .copied()
            .collect();
        let cues = select(&all, cfg.cci_std, cfg.cci_topk)?;
        let n_in = input_scores.len();
        let mut ctxless = target_less.ids[..current_less.start + j].to_vec();
        ctxless.push(contrast);
        debug_assert_eq!(t.len, pc + 1);
        cci_scores.push(CciOutput {
            cti_idx: j,
            cti_token: display_token(tok, target.ids[pc]),
            cti_score: score,
            contrast_token: display_token(tok, contrast),
            contextual_output: plain(&target.ids[..=pc])?,
            contextless_output: plain(&ctxless)?,
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
    stage(STAGE_CCI, cci_scores.len(), cci_scores.len())?;
    let tokens_of = |side: &Side, r: &Range<usize>| {
        side.layout.tokens[r.start - side.shift..r.end - side.shift].to_vec()
    };
    Ok(ContextAttribution {
        input_context: cfg.input_context.clone(),
        input_context_tokens: tokens_of(&source, &input_context),
        output_context_tokens: output_context_range.as_ref().map(|r| tokens_of(&target, r)),
        output_context,
        output_current_tokens: tokens_of(&target, &current),
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
            separator: String::new(),
            chat_template: false,
            generated,
            inseq_compat: false,
            contextual_text: input.text.clone(),
            contextless_text: less.text.clone(),
            contextual_target_text: Some(output.text.clone()),
            contextless_target_text: Some(target_less.layout.text.clone()),
        },
    })
}

/// The source as the family frames it (`tokens + [eos]` for Marian and T5, with the source
/// language token for mBART and M2M100, which need [`PecoreConfig::source_lang`]).
fn source_side(model: &Seq2SeqModel, cfg: &PecoreConfig, text: &str) -> Result<Side> {
    let layout = Layout::new(&model.tokenizer, text, false)?;
    let ids = model.encode_source(text, cfg.source_lang.as_deref())?;
    let shift = ids
        .windows(layout.ids.len().max(1))
        .position(|w| w == layout.ids.as_slice())
        .unwrap_or(0);
    Ok(Side { layout, ids, shift })
}

/// The forced target-language token: [`PecoreConfig::target_lang`], else the model's own.
fn target_lang(model: &Seq2SeqModel, cfg: &PecoreConfig) -> Result<Vec<u32>> {
    Ok(match &cfg.target_lang {
        Some(lang) => vec![model.token_id(lang)?],
        None => model
            .model
            .config()
            .forced_bos_token_id
            .into_iter()
            .collect(),
    })
}

/// The target: the forced language token (when there is one), the tokens, EOS.
fn target_side(model: &Seq2SeqModel, cfg: &PecoreConfig, text: &str) -> Result<Side> {
    let c = model.model.config();
    let layout = Layout::new(&model.tokenizer, text, false)?;
    let forced = target_lang(model, cfg)?;
    let eos = c.eos_token_id.ok_or(ContextError::Empty(
        "the model's EOS token (a target ends with it)",
    ))?;
    let ids = [forced.as_slice(), &layout.ids, &[eos]].concat();
    check_length(model, ids.len() + 1)?;
    Ok(Side {
        shift: forced.len(),
        layout,
        ids,
    })
}

fn check_length(model: &Seq2SeqModel, tokens: usize) -> Result<()> {
    let n_ctx = model.model.config().n_ctx;
    if tokens > n_ctx {
        return Err(ContextError::TooLong { tokens, n_ctx });
    }
    Ok(())
}

/// Logits of every decoder position, row-major `[pos · d_vocab]`.
fn logits(model: &Seq2SeqModel, source: &[u32], decoder: &[u32]) -> Result<Vec<f32>> {
    check_length(model, source.len())?;
    let c = model.model.config();
    let device = model.model.device();
    let src = Batch::from_sequences(&[source.to_vec()], c.pad_token_id, device)?;
    let tgt = Batch::from_sequences(&[decoder.to_vec()], c.pad_token_id, device)?;
    let logits: Tensor<3> = model.model.forward(&src, &tgt, &mut Hooks::new())?;
    logits
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ContextError::Options(format!("cannot read logits: {e:?}")))
}

/// Generates the output with the context; returns the output context (given or split off the
/// generation) and the output current text.
fn generate(
    model: &Seq2SeqModel,
    cfg: &PecoreConfig,
    source: &[u32],
    output_template: &str,
) -> Result<(Option<String>, String)> {
    let c = model.model.config();
    let tok = &model.tokenizer;
    let mut forced = target_lang(model, cfg)?;
    let n_lang = forced.len();
    let head = output_template
        .split("{current}")
        .next()
        .unwrap_or_default();
    let wants_context = output_template.contains("{context}");
    if let Some(ctx) = &cfg.output_context {
        forced.extend(tok.encode(head.replace("{context}", ctx).trim())?);
    }
    let gen_cfg = GenerateConfig {
        max_new_tokens: cfg.max_new_tokens + forced.len(),
        stop_tokens: c.eos_token_id.into_iter().collect(),
        ..GenerateConfig::default()
    };
    let mut out = model
        .model
        .generate_forced(source, &forced, &gen_cfg, |_| {})?;
    if out.last().is_some_and(|&t| Some(t) == c.eos_token_id) {
        out.pop();
    }
    let skip = if cfg.output_context.is_some() {
        forced.len()
    } else {
        n_lang
    };
    let text = tok.decode(&out[skip.min(out.len())..])?.trim().to_string();
    if cfg.output_context.is_some() || !wants_context {
        return Ok((cfg.output_context.clone(), text));
    }
    // Split the generated output at the template's text between {context} and {current}.
    let between = output_template
        .split("{context}")
        .nth(1)
        .and_then(|s| s.split("{current}").next())
        .unwrap_or_default()
        .trim();
    let parts: Vec<&str> = if between.is_empty() {
        Vec::new()
    } else {
        text.split(between).collect()
    };
    match parts.as_slice() {
        [ctx, cur] if !ctx.trim().is_empty() => {
            Ok((Some(ctx.trim().to_string()), cur.trim().to_string()))
        }
        _ => Err(ContextError::Options(format!(
            "the generated output {text:?} does not split into an output context and current \
             text at {between:?}; give the output context"
        ))),
    }
}
