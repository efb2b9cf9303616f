//! `fidelis attribute`: token attribution of a model's next-token predictions to the prompt.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use fidelis_attribution::token::{
    AttentionSelection, PrefixTarget, Target, Word, aggregate_words,
    attribute_prefixes_with_progress, attribute_seq2seq_with_progress, normalize,
};
use fidelis_graph::format_score;
use fidelis_models::{Batch, GenerateConfig, Hooks, Model, Seq2SeqModel};
use serde::Serialize;

use crate::model_args::{AnyModel, ModelFlags};
use crate::options::AttributeOptions;

/// Arguments of `fidelis attribute`.
#[derive(clap::Args, Debug)]
pub struct AttributeArgs {
    /// The model.
    #[command(flatten)]
    pub model: ModelFlags,
    /// What to attribute.
    #[command(flatten)]
    pub opts: AttributeOptions,
    /// Write a self-contained HTML heatmap here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Write the scores as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run every line of this JSONL file (Inseq's `attribute-dataset`): each line is a JSON
    /// object of `attribute` options (`{"prompt": "...", "output": "..."}`, any field of the
    /// flags by its long name with `_`) put over the flags given here; the reports go to
    /// `--json`, one JSON object per line, with a progress bar over the lines.
    #[arg(long, requires = "json")]
    pub dataset: Option<PathBuf>,
}

/// The one input a run cannot do without.
fn check_prompt(opts: &AttributeOptions) -> Result<()> {
    anyhow::ensure!(
        !opts.prompt.is_empty(),
        "the prompt is empty: give --prompt, or --dataset FILE.jsonl with a `prompt` on every line"
    );
    Ok(())
}

/// Runs `fidelis attribute --dataset`: one report per line, written as JSONL.
fn run_dataset(
    args: &AttributeArgs,
    dataset: &std::path::Path,
    out_path: &std::path::Path,
) -> Result<()> {
    let examples = crate::dataset::examples(dataset, &args.opts, |opts| {
        opts.validate()?;
        check_prompt(opts)
    })?;
    let model = args.model.load_any()?;
    crate::dataset::run("attribute dataset", dataset, &examples, out_path, |opts| {
        attribute_any(&model, opts)
    })
}

/// The attribution of every output step, as written to JSON.
#[derive(Debug, Serialize)]
pub struct AttributeReport {
    /// The prompt.
    pub prompt: String,
    /// The method.
    pub method: String,
    /// The target function.
    pub target: String,
    /// Display strings of the prompt tokens (BOS included when added). For an
    /// encoder-decoder: the source tokens (EOS included), then the decoder start token.
    pub prompt_tokens: Vec<String>,
    /// Encoder-decoders: how many of `prompt_tokens` (and of each step's scores) are source
    /// tokens; the rest are decoder inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_len: Option<usize>,
    /// The attributed output tokens.
    pub output_tokens: Vec<String>,
    /// One entry per output token.
    pub steps: Vec<Step>,
}

/// One output token's attribution.
#[derive(Debug, Serialize)]
pub struct Step {
    /// The predicted token.
    pub token: String,
    /// The target's value.
    pub target_value: f32,
    /// The target at the baseline (integrated gradients).
    pub baseline_value: Option<f32>,
    /// Scores of every earlier token (prompt, then earlier output tokens; for an
    /// encoder-decoder: source, decoder start token, earlier output tokens).
    pub scores: Vec<f32>,
    /// Scores per prompt word, with --words.
    pub words: Option<Vec<WordScore>>,
}

/// A word of the prompt and its score.
#[derive(Debug, Serialize)]
pub struct WordScore {
    /// The word.
    pub word: String,
    /// The summed score of its tokens.
    pub score: f32,
}

fn one_token(model: &Model, text: &str, what: &str) -> Result<u32> {
    model
        .tokenizer
        .single_token(text)
        .with_context(|| format!("{what} must be one token"))
}

/// Runs `fidelis attribute`.
pub fn run(args: &AttributeArgs) -> Result<()> {
    if let (Some(dataset), Some(out)) = (&args.dataset, &args.json) {
        return run_dataset(args, dataset, out);
    }
    check_prompt(&args.opts)?;
    args.opts.validate()?;
    let model = args.model.load_any()?;
    let start = std::time::Instant::now();
    let report = attribute_any(&model, &args.opts)?;
    print!(
        "{}",
        terminal(
            &report,
            std::io::IsTerminal::is_terminal(&std::io::stdout())
        )
    );
    if let Some(path) = &args.json {
        crate::output::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.html {
        crate::output::write(path, html(&report))?;
        eprintln!("wrote {}", path.display());
    }
    crate::progress::summary(
        &format!(
            "attributed {} to {} with {}",
            crate::progress::items(report.steps.len(), "output token"),
            crate::progress::items(report.prompt_tokens.len(), "prompt token"),
            report.method
        ),
        start,
    );
    Ok(())
}

/// Computes the report of `fidelis attribute` on a loaded model.
pub fn attribute(model: &Model, args: &AttributeOptions) -> Result<AttributeReport> {
    args.validate()?;
    if args.source_lang.is_some() || args.target_lang.is_some() {
        bail!("--source-lang and --target-lang are for encoder-decoder models");
    }
    if args.prompt.is_empty() {
        bail!("--prompt is empty");
    }
    let (method, function) = (args.token.method, args.target);
    let mut cfg = args.token.config(model)?;
    cfg.attention = AttentionSelection {
        layer: args.layer,
        head: args.head,
    };
    let tok = &model.tokenizer;
    let prompt_ids = tok.encode_prompt(&args.prompt, !args.no_bos)?;
    let output_ids = match &args.output {
        Some(text) if text.is_empty() => bail!("--output is empty"),
        Some(text) => tok.encode(text)?,
        None if args.target_token.is_some() => Vec::new(),
        None => {
            let gen_cfg = GenerateConfig {
                max_new_tokens: args.max_new_tokens.max(1),
                ..GenerateConfig::default()
            };
            model.transformer.generate(&prompt_ids, &gen_cfg, |_| {})?
        }
    };
    let output_ids = match &args.target_token {
        Some(_) if output_ids.len() > 1 => bail!(
            "--target-token names one token but --output has {} tokens",
            output_ids.len()
        ),
        Some(t) => vec![one_token(model, t, "--target-token")?],
        None => output_ids,
    };
    let contrast_token = match &args.contrast_token {
        Some(t) => Some(one_token(model, t, "--contrast-token")?),
        None => None,
    };
    if function.needs_contrast_logits() && args.contrast_prompt.is_none() {
        bail!(
            "--target {} needs --contrast-prompt (the reference distribution)",
            function.name()
        );
    }
    let contrast_prompt = match &args.contrast_prompt {
        Some(p) if p.is_empty() => bail!("--contrast-prompt is empty"),
        Some(p) => Some(tok.encode_prompt(p, !args.no_bos)?),
        None => None,
    };
    let show = |id: u32| fidelis_context::prompt::display_token(tok, id);
    cfg.rows_per_pass = args.attribution_batch_size;
    cfg.pass_memory_bytes = args.attribution_memory_mib.saturating_mul(1 << 20);
    // Every output step is a prediction of one sequence (the prompt, then the output tokens
    // before it): all steps are attributed together, in shared stacked passes.
    let mut targets = Vec::with_capacity(output_ids.len());
    for (j, &token) in output_ids.iter().enumerate() {
        let contrast_logits = match &contrast_prompt {
            Some(c) => {
                let ids: Vec<u32> = c.iter().chain(&output_ids[..j]).copied().collect();
                Some(last_logits(model, &ids)?)
            }
            None => None,
        };
        targets.push(PrefixTarget {
            len: prompt_ids.len() + j,
            target: Target {
                function,
                token,
                contrast_token,
                contrast_logits,
            },
        });
    }
    let sequence: Vec<u32> = prompt_ids
        .iter()
        .chain(&output_ids[..output_ids.len().saturating_sub(1)])
        .copied()
        .collect();
    let mut bar = crate::progress::Bar::new("attributing");
    let results =
        attribute_prefixes_with_progress(&model.transformer, &sequence, &targets, &cfg, &mut bar);
    bar.finish();
    let mut steps = Vec::with_capacity(targets.len());
    for (out, &token) in results?.into_iter().zip(&output_ids) {
        let scores = if args.normalize {
            normalize(&out.scores)
        } else {
            out.scores
        };
        let words = if args.words {
            Some(prompt_words(model, args, &scores)?)
        } else {
            None
        };
        steps.push(Step {
            token: show(token),
            target_value: out.target_value,
            baseline_value: out.baseline_value,
            scores,
            words,
        });
    }
    Ok(AttributeReport {
        prompt: args.prompt.clone(),
        method: method.name().into(),
        target: function.name().into(),
        prompt_tokens: prompt_ids.iter().map(|&i| show(i)).collect(),
        source_len: None,
        output_tokens: output_ids.iter().map(|&i| show(i)).collect(),
        steps,
    })
}

/// Computes the report of `fidelis attribute` on either kind of model.
pub fn attribute_any(model: &AnyModel, args: &AttributeOptions) -> Result<AttributeReport> {
    match model {
        AnyModel::DecoderOnly(m) => attribute(m, args),
        AnyModel::Seq2Seq(m) => attribute_seq2seq(m, args),
    }
}

/// The report of `fidelis attribute` on an encoder-decoder: the prompt is the source, the
/// output the target (forced, or generated greedily); each output token is attributed to the
/// source and to the decoder inputs before it. `--contrast-prompt` is a contrast source over
/// which the same target prefix is force-decoded.
pub fn attribute_seq2seq(model: &Seq2SeqModel, args: &AttributeOptions) -> Result<AttributeReport> {
    args.validate()?;
    if args.prompt.is_empty() {
        bail!("--prompt is empty");
    }
    let (method, function) = (args.token.method, args.target);
    let mut cfg = args.token.config_for(&model.tokenizer)?;
    cfg.attention = AttentionSelection {
        layer: args.layer,
        head: args.head,
    };
    cfg.rows_per_pass = args.attribution_batch_size;
    cfg.pass_memory_bytes = args.attribution_memory_mib.saturating_mul(1 << 20);
    let tok = &model.tokenizer;
    let one = |text: &str, what: &str| -> Result<u32> {
        tok.single_token(text)
            .with_context(|| format!("{what} must be one token"))
    };
    let c = model.model.config();
    let source = model.encode_source(&args.prompt, args.source_lang.as_deref())?;
    let forced: Vec<u32> = match &args.target_lang {
        Some(lang) => vec![model.token_id(lang)?],
        None => c.forced_bos_token_id.into_iter().collect(),
    };
    let output_ids = match &args.output {
        Some(text) if text.is_empty() => bail!("--output is empty"),
        Some(text) => [forced.clone(), tok.encode(text)?].concat(),
        None if args.target_token.is_some() => forced.clone(),
        None => {
            let gen_cfg = GenerateConfig {
                max_new_tokens: args.max_new_tokens.max(1) + forced.len(),
                ..GenerateConfig::default()
            };
            model
                .model
                .generate_forced(&source, &forced, &gen_cfg, |_| {})?
        }
    };
    let output_ids = match &args.target_token {
        Some(_) if output_ids.len() > forced.len() + 1 => bail!(
            "--target-token names one token but --output has {} tokens",
            output_ids.len() - forced.len()
        ),
        Some(t) => [forced.clone(), vec![one(t, "--target-token")?]].concat(),
        None => output_ids,
    };
    let contrast_token = match &args.contrast_token {
        Some(t) => Some(one(t, "--contrast-token")?),
        None => None,
    };
    if function.needs_contrast_logits() && args.contrast_prompt.is_none() {
        bail!(
            "--target {} needs --contrast-prompt (the reference distribution)",
            function.name()
        );
    }
    let decoder: Vec<u32> = std::iter::once(c.decoder_start_token_id)
        .chain(output_ids.iter().copied())
        .collect();
    let contrast_logits = match &args.contrast_prompt {
        Some(p) if p.is_empty() => bail!("--contrast-prompt is empty"),
        Some(p) => Some(seq2seq_logits(
            model,
            &model.encode_source(p, None)?,
            &decoder,
        )?),
        None => None,
    };
    let vocab = c.d_vocab;
    // The forced language token is not attributed (nothing chose it).
    let targets: Vec<PrefixTarget> = (forced.len()..output_ids.len())
        .map(|j| PrefixTarget {
            len: j + 1,
            target: Target {
                function,
                token: output_ids[j],
                contrast_token,
                contrast_logits: contrast_logits
                    .as_ref()
                    .map(|l| l[j * vocab..(j + 1) * vocab].to_vec()),
            },
        })
        .collect();
    let mut bar = crate::progress::Bar::new("attributing");
    let results =
        attribute_seq2seq_with_progress(&model.model, &source, &decoder, &targets, &cfg, &mut bar);
    bar.finish();
    let show = |id: u32| fidelis_context::prompt::display_token(tok, id);
    let mut steps = Vec::with_capacity(targets.len());
    for (out, t) in results?.into_iter().zip(&targets) {
        let joined: Vec<f32> = out
            .source_scores
            .iter()
            .chain(&out.target_scores)
            .copied()
            .collect();
        let scores = if args.normalize {
            normalize(&joined)
        } else {
            joined
        };
        let words = if args.words {
            let enc = tok.encode_full(&args.prompt)?;
            let shift = source
                .windows(enc.ids.len().max(1))
                .position(|w| w == enc.ids.as_slice())
                .unwrap_or(0);
            let words = aggregate_words(
                &args.prompt,
                &enc.offsets,
                &scores[shift..shift + enc.ids.len()],
            )?;
            Some(
                words
                    .into_iter()
                    .map(|w| WordScore {
                        word: w.text,
                        score: w.score,
                    })
                    .collect(),
            )
        } else {
            None
        };
        steps.push(Step {
            token: show(t.target.token),
            target_value: out.target_value,
            baseline_value: out.baseline_value,
            scores,
            words,
        });
    }
    Ok(AttributeReport {
        prompt: args.prompt.clone(),
        method: method.name().into(),
        target: function.name().into(),
        prompt_tokens: source
            .iter()
            .chain(&decoder[..1 + forced.len()])
            .map(|&i| show(i))
            .collect(),
        source_len: Some(source.len()),
        output_tokens: output_ids[forced.len()..]
            .iter()
            .map(|&i| show(i))
            .collect(),
        steps,
    })
}

/// Forced-decoding logits of an encoder-decoder, row-major `[pos · d_vocab]`.
fn seq2seq_logits(model: &Seq2SeqModel, source: &[u32], decoder: &[u32]) -> Result<Vec<f32>> {
    let c = model.model.config();
    let device = model.model.device();
    let src = Batch::from_sequences(&[source.to_vec()], c.pad_token_id, device)?;
    let tgt = Batch::from_sequences(&[decoder.to_vec()], c.pad_token_id, device)?;
    let logits = model.model.forward(&src, &tgt, &mut Hooks::new())?;
    logits
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read logits: {e:?}"))
}

/// Word scores of the prompt tokens (BOS, when added, is left out).
fn prompt_words(model: &Model, args: &AttributeOptions, scores: &[f32]) -> Result<Vec<WordScore>> {
    let enc = model.tokenizer.encode_full(&args.prompt)?;
    let bos = scores.len() >= enc.ids.len() && !args.no_bos && model.tokenizer.bos_id().is_some();
    let start = usize::from(bos);
    let words: Vec<Word> = aggregate_words(
        &args.prompt,
        &enc.offsets,
        &scores[start..start + enc.ids.len()],
    )?;
    Ok(words
        .into_iter()
        .map(|w| WordScore {
            word: w.text,
            score: w.score,
        })
        .collect())
}

fn last_logits(model: &Model, ids: &[u32]) -> Result<Vec<f32>> {
    use burn::prelude::*;
    let data: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
    let tokens = Tensor::<2, Int>::from_data(
        burn::tensor::TensorData::new(data, [1, ids.len()]),
        model.transformer.device(),
    );
    let logits = model.transformer.forward(tokens, &mut Hooks::new())?;
    let [_, pos, vocab] = logits.dims();
    let row = logits
        .slice([0..1, pos - 1..pos, 0..vocab])
        .reshape([vocab]);
    row.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read logits: {e:?}"))
}

/// Terminal view: per output step, the earlier tokens shaded by |score| (24-bit background when
/// `color`, the scores in brackets otherwise).
pub fn terminal(r: &AttributeReport, color: bool) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "method {} · target {}", r.method, r.target);
    let all: Vec<String> = r
        .prompt_tokens
        .iter()
        .chain(&r.output_tokens)
        .cloned()
        .collect();
    for s in &r.steps {
        let max = s.scores.iter().fold(0f32, |m, x| m.max(x.abs()));
        let _ = write!(t, "→ {:?} ({} {:.4}): ", s.token, r.target, s.target_value);
        for (i, (tok, &score)) in all.iter().zip(&s.scores).enumerate() {
            // Encoder-decoder tokens are shown without their word boundaries: space them.
            if i > 0 && r.source_len.is_some() {
                t.push(' ');
            }
            let a = if max > 0.0 { score.abs() / max } else { 0.0 };
            if color {
                let (rv, gv, bv) = if score >= 0.0 {
                    (255, (255.0 * (1.0 - a)) as u8, (255.0 * (1.0 - a)) as u8)
                } else {
                    ((255.0 * (1.0 - a)) as u8, (255.0 * (1.0 - a)) as u8, 255)
                };
                let _ = write!(t, "\x1b[48;2;{rv};{gv};{bv}m\x1b[30m{tok}\x1b[0m");
            } else {
                let _ = write!(t, "{tok}[{}]", format_score(score));
            }
        }
        let _ = writeln!(t);
        if let Some(words) = &s.words {
            let list: Vec<String> = words
                .iter()
                .map(|w| format!("{}={}", w.word, format_score(w.score)))
                .collect();
            let _ = writeln!(t, "   words: {}", list.join(" "));
        }
    }
    t
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Self-contained HTML heatmap: rows are output tokens, columns the tokens they attend from.
pub fn html(r: &AttributeReport) -> String {
    let all: Vec<String> = r
        .prompt_tokens
        .iter()
        .chain(&r.output_tokens)
        .cloned()
        .collect();
    let mut rows = String::new();
    let _ = write!(rows, "<tr><th></th>");
    for tok in &all {
        let _ = write!(rows, "<th>{}</th>", escape(tok));
    }
    rows.push_str("</tr>");
    for s in &r.steps {
        let max = s.scores.iter().fold(0f32, |m, x| m.max(x.abs()));
        let _ = write!(
            rows,
            "<tr><th>{} <small>({})</small></th>",
            escape(&s.token),
            format_score(s.target_value)
        );
        for (i, _) in all.iter().enumerate() {
            match s.scores.get(i) {
                Some(&v) => {
                    let a = if max > 0.0 { v.abs() / max } else { 0.0 };
                    let rgb = if v >= 0.0 { POSITIVE_RGB } else { NEGATIVE_RGB };
                    let _ = write!(
                        rows,
                        "<td style=\"{}\" title=\"{v}\">{}</td>",
                        cell_style(rgb, a),
                        format_score(v)
                    );
                }
                None => rows.push_str("<td></td>"),
            }
        }
        rows.push_str("</tr>");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Fidelis token attribution</title>\n<style>\nbody {{ font-family: system-ui, sans-serif; margin: 2em; }}\ntable {{ border-collapse: collapse; font-family: ui-monospace, monospace; font-size: 12px; }}\nth, td {{ border: 1px solid #ddd; padding: 3px 5px; white-space: pre; }}\nsmall {{ color: inherit; opacity: 0.75; }}\n.scroll {{ overflow-x: auto; max-width: 100%; }}\n.legend span {{ display: inline-block; padding: 2px 8px; margin-right: 4px; }}\n</style></head><body>\n<h1>Token attribution</h1><p>method <b>{}</b> · target <b>{}</b> · prompt: {}</p>\n{}\n<div class=\"scroll\"><table>{rows}</table></div>\n{}</body></html>\n",
        escape(&r.method),
        escape(&r.target),
        escape(&r.prompt),
        legend(),
        words_table(r)
    )
}

/// Cell colour of a positive score (raises the target).
const POSITIVE_RGB: &str = "220,40,40";
/// Cell colour of a negative score (lowers the target).
const NEGATIVE_RGB: &str = "40,90,220";

/// A score cell's shading, `a` its |score| relative to the row's largest; text turns white on
/// the darkest cells so that it stays readable.
fn cell_style(rgb: &str, a: f32) -> String {
    let text = if a > 0.6 { "color:#fff;" } else { "" };
    format!("background:rgba({rgb},{a:.3});{text}")
}

/// The colour legend of [`html`]: hue is the sign, strength is |score| relative to the row's
/// largest.
fn legend() -> String {
    let swatch = |rgb: &str, a: f32, text: &str| {
        format!("<span style=\"background:rgba({rgb},{a})\">{text}</span>")
    };
    format!(
        "<p class=\"legend\"><b>Legend:</b> {}{}{}{}{} · each row is an output token (its target \
         value in brackets); shading is |score| relative to the largest in that row.</p>",
        swatch(NEGATIVE_RGB, 1.0, "−max"),
        swatch(NEGATIVE_RGB, 0.4, "negative"),
        swatch("255,255,255", 1.0, "0"),
        swatch(POSITIVE_RGB, 0.4, "positive"),
        swatch(POSITIVE_RGB, 1.0, "+max"),
    )
}

/// The `--words` table: per output step, the scores summed over each prompt word (empty when
/// words were not asked for).
fn words_table(r: &AttributeReport) -> String {
    let mut out = String::new();
    for s in &r.steps {
        let Some(words) = &s.words else { continue };
        if out.is_empty() {
            out.push_str("<h2>Per word</h2>\n<div class=\"scroll\"><table>");
        }
        let max = words.iter().fold(0f32, |m, w| m.max(w.score.abs()));
        let _ = write!(out, "<tr><th>{}</th>", escape(&s.token));
        for w in words {
            let a = if max > 0.0 { w.score.abs() / max } else { 0.0 };
            let rgb = if w.score >= 0.0 {
                POSITIVE_RGB
            } else {
                NEGATIVE_RGB
            };
            let _ = write!(
                out,
                "<td style=\"{}\" title=\"{}\">{} <small>{}</small></td>",
                cell_style(rgb, a),
                w.score,
                escape(&w.word),
                format_score(w.score)
            );
        }
        out.push_str("</tr>");
    }
    if !out.is_empty() {
        out.push_str("</table></div>\n");
    }
    out
}
