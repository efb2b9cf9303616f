//! Token attribution on encoder-decoder models ([`Seq2Seq`]): a prediction of the decoder is
//! attributed to every source token (through the encoder and cross-attention) and to the
//! decoder inputs before it (the target prefix), as Inseq attributes encoder-decoders
//! (`source_attributions` and `target_attributions`, Sarti et al. 2023).
//!
//! The methods are those of the parent module, on both sides at once:
//! - gradients are read at the encoder's and the decoder's token embeddings
//!   (`encoder.hook_embed`, `decoder.hook_embed`, after the embedding scale and before the
//!   positions, as the decoder-only methods read `hook_embed`);
//! - integrated gradients moves both sides along the straight line from the baseline together,
//!   so completeness reads `Σ source + Σ target = f(x) − f(x')`;
//! - occlusion replaces one token of either side by the baseline per rerun;
//! - attention reports the cross-attention row of the read position (over the source) and its
//!   decoder self-attention row (over the prefix), `decoder.blocks.{l}.cross_attn.hook_pattern`
//!   and `decoder.blocks.{l}.attn.hook_pattern`.
//!
//! Rows (IG points, occluded variants, targets) are stacked into passes exactly as for
//! decoder-only models (`rows.rs`): every row carries the whole source and the decoder prefix
//! of the longest row of its pass, and reads its target at its own last decoder position
//! (under the decoder's causal mask later positions change nothing it reads). An occluded
//! position is numbered over both sides: `0..src_len` the source, then the decoder inputs.
//!
//! # Shapes
//! - a pass over `k` rows of longest prefix `n`: source `[k, src]`, decoder inputs `[k, n]`,
//!   gradients `[k, src, d_model]` and `[k, n, d_model]`

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::TensorData;
use fidelis_circuit::{Progress, Silent, report, to_vec};
use fidelis_models::seq2seq::points;
use fidelis_models::{Activation, Batch, Hooks, Seq2Seq, Seq2SeqConfig, point};

use super::rows::{Mix, Row, evaluate_rows, pass_plan};
use super::{
    Baseline, PrefixTarget, STAGE, TokenAttributionConfig, TokenMethod, aggregate_dims,
    select_attention,
};
use crate::{AttributionError, Result};

/// The attribution of one decoder prediction to the source and to the decoder inputs before
/// it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seq2SeqAttribution {
    /// One score per source token `[src]`.
    pub source_scores: Vec<f32>,
    /// One score per decoder input of the prefix `[len]` (the decoder start token first).
    pub target_scores: Vec<f32>,
    /// Per-dimension source attributions `[src, d_model]` (gradient methods only).
    pub source_per_dim: Option<Vec<f32>>,
    /// Per-dimension target attributions `[len, d_model]` (gradient methods only).
    pub target_per_dim: Option<Vec<f32>>,
    /// `d_model`.
    pub d_model: usize,
    /// The target at the input, `f(x)`.
    pub target_value: f32,
    /// The target at the baseline, `f(x')` (integrated gradients only).
    pub baseline_value: Option<f32>,
    /// Cross-attention rows of the read position `[n_decoder_layers, n_heads, src]`
    /// (attention method only).
    pub cross_attention: Option<Vec<f32>>,
    /// Decoder self-attention rows of the read position `[n_decoder_layers, n_heads, len]`
    /// (attention method only).
    pub self_attention: Option<Vec<f32>>,
}

impl Seq2SeqAttribution {
    fn new(d_model: usize) -> Self {
        Self {
            source_scores: Vec::new(),
            target_scores: Vec::new(),
            source_per_dim: None,
            target_per_dim: None,
            d_model,
            target_value: 0.0,
            baseline_value: None,
            cross_attention: None,
            self_attention: None,
        }
    }
}

/// Attributes several decoder predictions of one (source, decoder inputs) pair: target `t`
/// is read from the logits at decoder position `t.len − 1` and attributed to every source token
/// and to the decoder inputs `0..t.len`. `decoder_inputs` starts with the decoder start token
/// (forced decoding of a target `y` reads `[start] + y`).
///
/// # Shapes
/// - `source`: `[src]`, `decoder_inputs`: `[pos]`; one result per target
pub fn attribute_seq2seq(
    model: &Seq2Seq,
    source: &[u32],
    decoder_inputs: &[u32],
    targets: &[PrefixTarget],
    cfg: &TokenAttributionConfig,
) -> Result<Vec<Seq2SeqAttribution>> {
    attribute_seq2seq_with_progress(model, source, decoder_inputs, targets, cfg, &mut Silent)
}

/// [`attribute_seq2seq`] that ticks `progress` after each stacked pass (stage
/// `"token attribution"`) and stops with a cancellation error when it answers `Break`.
pub fn attribute_seq2seq_with_progress(
    model: &Seq2Seq,
    source: &[u32],
    decoder_inputs: &[u32],
    targets: &[PrefixTarget],
    cfg: &TokenAttributionConfig,
    progress: &mut dyn Progress,
) -> Result<Vec<Seq2SeqAttribution>> {
    check_inputs(model.config(), source, decoder_inputs, cfg)?;
    super::check_targets(
        targets,
        decoder_inputs.len(),
        model.config().d_vocab,
        ("decoder prefix", "decoder input"),
    )?;
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let mut stacked = Stacked {
        model,
        source,
        ids: decoder_inputs,
        targets: targets.iter().map(|t| &t.target).collect(),
        cfg,
        progress,
        passes: (0, 0),
    };
    match cfg.method {
        TokenMethod::Saliency | TokenMethod::InputXGradient => stacked.gradients(targets),
        TokenMethod::IntegratedGradients => stacked.integrated_gradients(targets),
        TokenMethod::Occlusion => stacked.occlusion(targets),
        TokenMethod::Attention => attention(model, source, decoder_inputs, targets, cfg),
    }
}

/// What one stacked pass returns.
struct PassOutput {
    values: Vec<f32>,
    /// `[k, src, d]` and `[k, n, d]` (gradient passes only).
    grads: Option<(Vec<f32>, Vec<f32>)>,
    /// Token embeddings of the source `[src, d]` and of the pass's decoder prefix `[n, d]`.
    embed: (Vec<f32>, Vec<f32>),
    len: usize,
}

/// Estimated activation memory of one row, in bytes, as `rows::bytes_per_row` counts a
/// decoder-only row: about 12 `d_model`-wide and 4 `d_mlp`-wide tensors per token and layer,
/// plus the attention maps; the decoder's cross-attention counts as a second attention.
fn bytes_per_row(c: &Seq2SeqConfig, src: usize, len: usize, grad: bool, float: usize) -> usize {
    let width = 12 * c.d_model + 4 * c.d_mlp;
    let enc = src * (width + 4 * c.n_heads * src);
    let dec = len * (width + 4 * c.d_model + 4 * c.n_heads * (len + src));
    let (el, dl) = if grad {
        (c.n_encoder_layers, c.n_decoder_layers)
    } else {
        (2.min(c.n_encoder_layers), 2.min(c.n_decoder_layers))
    };
    (enc * el + dec * dl) * float
}

struct Stacked<'a> {
    model: &'a Seq2Seq,
    source: &'a [u32],
    ids: &'a [u32],
    targets: Vec<&'a super::Target>,
    cfg: &'a TokenAttributionConfig,
    progress: &'a mut dyn Progress,
    passes: (usize, usize),
}

/// Per-row callback arguments: the row, its value, its gradients (source `[src, d]`, target
/// `[len, d]`) and the embeddings (source `[src, d]`, target `[len, d]`).
type Each<'f> = dyn FnMut(&Row, f32, Option<(&[f32], &[f32])>, (&[f32], &[f32])) + 'f;

impl Stacked<'_> {
    fn plan(&self, rows: &[Row], grad: bool) -> Vec<Range<usize>> {
        let c = self.model.config();
        let float = fidelis_models::precision::dtype_of(self.model.device()).bytes();
        let src = self.source.len();
        pass_plan(
            rows,
            self.cfg.rows_per_pass,
            self.cfg.pass_memory_bytes,
            |n| bytes_per_row(c, src, n, grad, float),
        )
    }

    fn run(
        &mut self,
        rows: &[Row],
        grad: bool,
        baseline: Option<&[f32]>,
        each: &mut Each<'_>,
    ) -> Result<()> {
        let d = self.model.config().d_model;
        let s = self.source.len();
        let plan = self.plan(rows, grad);
        self.passes.1 = self.passes.1.max(self.passes.0 + plan.len());
        for range in plan {
            let chunk = &rows[range];
            let out = run_pass(
                self.model,
                self.source,
                self.ids,
                chunk,
                &self.targets,
                baseline,
                grad,
            )?;
            let n = out.len;
            for (r, row) in chunk.iter().enumerate() {
                let g = out.grads.as_ref().map(|(gs, gt)| {
                    (
                        &gs[r * s * d..(r + 1) * s * d],
                        &gt[r * n * d..(r * n + row.len) * d],
                    )
                });
                each(
                    row,
                    out.values[r],
                    g,
                    (&out.embed.0, &out.embed.1[..row.len * d]),
                );
            }
            self.passes.0 += 1;
            report(&mut *self.progress, STAGE, self.passes.0, self.passes.1)?;
        }
        Ok(())
    }

    fn set_per_dim(&self, o: &mut Seq2SeqAttribution, source: Vec<f32>, target: Vec<f32>) {
        let d = self.model.config().d_model;
        o.source_scores = aggregate_dims(&source, d, self.cfg.aggregation);
        o.target_scores = aggregate_dims(&target, d, self.cfg.aggregation);
        o.source_per_dim = Some(source);
        o.target_per_dim = Some(target);
    }

    /// Saliency and input × gradient: one row per target.
    fn gradients(&mut self, targets: &[PrefixTarget]) -> Result<Vec<Seq2SeqAttribution>> {
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
        let saliency = self.cfg.method == TokenMethod::Saliency;
        let mut parts = vec![(0f32, Vec::new(), Vec::new()); targets.len()];
        self.run(&rows, true, None, &mut |row, value, grad, (es, et)| {
            let (gs, gt) = grad.unwrap_or_default();
            let f = |g: &[f32], e: &[f32]| -> Vec<f32> {
                if saliency {
                    g.iter().map(|g| g.abs()).collect()
                } else {
                    g.iter().zip(e).map(|(g, x)| g * x).collect()
                }
            };
            parts[row.target] = (value, f(gs, es), f(gt, et));
        })?;
        Ok(parts
            .into_iter()
            .map(|(value, s, t)| {
                let mut o = Seq2SeqAttribution::new(d);
                o.target_value = value;
                self.set_per_dim(&mut o, s, t);
                o
            })
            .collect())
    }

    /// Integrated gradients along `x' + α(x − x')` on both sides at once, midpoint rule.
    fn integrated_gradients(
        &mut self,
        targets: &[PrefixTarget],
    ) -> Result<Vec<Seq2SeqAttribution>> {
        let d = self.model.config().d_model;
        let s = self.source.len();
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
        let mut mean: Vec<(Vec<f32>, Vec<f32>)> = targets
            .iter()
            .map(|t| (vec![0f32; s * d], vec![0f32; t.len * d]))
            .collect();
        let mut embeds: Vec<Option<(Vec<f32>, Vec<f32>)>> = vec![None; targets.len()];
        self.run(
            &rows,
            true,
            base.as_deref(),
            &mut |row, _, grad, (es, et)| {
                let (gs, gt) = grad.unwrap_or_default();
                let acc = &mut mean[row.target];
                for (a, g) in acc.0.iter_mut().zip(gs) {
                    *a += g / m as f32;
                }
                for (a, g) in acc.1.iter_mut().zip(gt) {
                    *a += g / m as f32;
                }
                embeds[row.target].get_or_insert_with(|| (es.to_vec(), et.to_vec()));
            },
        )?;
        let ends: Vec<Row> = (0..targets.len())
            .flat_map(|target| {
                let len = targets[target].len;
                [Mix::Plain, Mix::Everywhere(1.0)].map(|mix| Row { target, len, mix })
            })
            .collect();
        let mut out = vec![Seq2SeqAttribution::new(d); targets.len()];
        self.run(&ends, false, base.as_deref(), &mut |row, value, _, _| {
            let o = &mut out[row.target];
            match row.mix {
                Mix::Plain => o.target_value = value,
                _ => o.baseline_value = Some(value),
            }
        })?;
        let times_delta = |g: &[f32], x: &[f32]| -> Vec<f32> {
            g.iter()
                .zip(x)
                .enumerate()
                .map(|(j, (g, x))| g * (x - base.as_ref().map_or(0.0, |b| b[j % d])))
                .collect()
        };
        for (i, o) in out.iter_mut().enumerate() {
            let (es, et) = embeds[i].take().unwrap_or_default();
            let source = times_delta(&mean[i].0, &es);
            let target = times_delta(&mean[i].1, &et);
            self.set_per_dim(o, source, target);
        }
        Ok(out)
    }

    /// Occlusion: per target the unoccluded row and one row per source token and per decoder
    /// input of its prefix, forward only.
    fn occlusion(&mut self, targets: &[PrefixTarget]) -> Result<Vec<Seq2SeqAttribution>> {
        let d = self.model.config().d_model;
        let s = self.source.len();
        let base = baseline_embedding(self.model, self.cfg.baseline)?;
        let rows: Vec<Row> = targets
            .iter()
            .enumerate()
            .flat_map(|(target, t)| {
                std::iter::once(Mix::Plain)
                    .chain((0..s + t.len).map(Mix::At))
                    .map(move |mix| Row {
                        target,
                        len: t.len,
                        mix,
                    })
            })
            .collect();
        let mut out = vec![Seq2SeqAttribution::new(d); targets.len()];
        self.run(&rows, false, base.as_deref(), &mut |row, value, _, _| {
            let o = &mut out[row.target];
            match row.mix {
                Mix::At(p) if p < s => o.source_scores.push(o.target_value - value),
                Mix::At(_) => o.target_scores.push(o.target_value - value),
                _ => o.target_value = value,
            }
        })?;
        Ok(out)
    }
}

/// The embedding hook of one side: mixes `x` with the baseline by the rows' weights at
/// positions `offset..offset + n` of the joint numbering (source first).
fn mix_hook(
    hooks: &mut Hooks,
    point: String,
    rows: &[Row],
    offset: usize,
    n: usize,
    baseline: Option<&[f32]>,
    device: &Device,
) {
    let k = rows.len();
    let weights: Vec<f32> = rows
        .iter()
        .flat_map(|r| (0..n).map(move |p| r.weight(offset + p)))
        .collect();
    if weights.iter().all(|&w| w == 0.0) {
        return;
    }
    let d = baseline.map(<[f32]>::len);
    let w = Tensor::<3>::from_data(TensorData::new(weights, [k, n, 1]), device);
    let base = baseline
        .map(|b| Tensor::<3>::from_data(TensorData::new(b.to_vec(), [1, 1, b.len()]), device));
    hooks.map(point, move |a| match a {
        Activation::Rank3(x) => {
            let [k, n, dm] = x.dims();
            debug_assert!(d.is_none_or(|d| d == dm));
            let toward = match &base {
                Some(b) => b.clone().expand([k, n, dm]) - x.clone(),
                None => -x.clone(),
            };
            Activation::Rank3(x + w.clone().expand([k, n, dm]) * toward)
        }
        other => other,
    });
}

#[allow(clippy::too_many_arguments)]
fn run_pass(
    model: &Seq2Seq,
    source: &[u32],
    ids: &[u32],
    rows: &[Row],
    targets: &[&super::Target],
    baseline: Option<&[f32]>,
    grad: bool,
) -> Result<PassOutput> {
    let c = model.config();
    let d = c.d_model;
    let device = model.device();
    let k = rows.len();
    let s = source.len();
    let n = rows.iter().map(|r| r.len).max().unwrap_or(0);
    if k == 0 || n == 0 || n > ids.len() {
        return Err(AttributionError::Options(format!(
            "a stacked pass needs rows of decoder prefixes of 1..={} tokens",
            ids.len()
        )));
    }
    let repeat = |seq: &[u32]| -> Vec<Vec<u32>> { vec![seq.to_vec(); k] };
    let src_batch = Batch::from_sequences(&repeat(source), c.pad_token_id, device)?;
    let tgt_batch = Batch::from_sequences(&repeat(&ids[..n]), c.pad_token_id, device)?;
    let enc_embed = points::encoder(point::EMBED);
    let dec_embed = points::decoder(point::EMBED);
    let mut hooks = Hooks::new();
    hooks.record_detached(enc_embed.clone());
    hooks.record_detached(dec_embed.clone());
    mix_hook(&mut hooks, enc_embed.clone(), rows, 0, s, baseline, device);
    mix_hook(&mut hooks, dec_embed.clone(), rows, s, n, baseline, device);
    if grad {
        hooks.probe(enc_embed.clone());
        hooks.probe(dec_embed.clone());
    }
    let logits = model.forward(&src_batch, &tgt_batch, &mut hooks)?;
    let vocab = c.d_vocab;
    let read: Vec<i64> = rows
        .iter()
        .enumerate()
        .map(|(r, row)| (r * n + row.len - 1) as i64)
        .collect();
    let read = Tensor::<1, Int>::from_data(TensorData::new(read, [k]), device);
    let logits = logits.reshape([k * n, vocab]).select(0, read);
    let values = evaluate_rows(logits, rows, targets);
    let recorded = |p: &str, len: usize| -> Result<Vec<f32>> {
        let x = hooks
            .recorded(p)
            .and_then(Activation::rank3)
            .ok_or_else(|| AttributionError::Options(format!("no embeddings recorded at {p}")))?;
        Ok(to_vec(x.slice([0..1, 0..len, 0..d]))?)
    };
    let embed = (recorded(&enc_embed, s)?, recorded(&dec_embed, n)?);
    let grads = if grad {
        let grads = values.clone().sum().backward();
        // A side the target does not depend on (the decoder start token alone, say) has no
        // gradient: zeros.
        let side = |p: &str, len: usize| -> Result<Vec<f32>> {
            match hooks.probe_grad(p, &grads).and_then(|a| a.rank3()) {
                Some(g) => Ok(to_vec(g)?),
                None => Ok(vec![0f32; k * len * d]),
            }
        };
        Some((side(&enc_embed, s)?, side(&dec_embed, n)?))
    } else {
        None
    };
    Ok(PassOutput {
        values: to_vec(values)?,
        grads,
        embed,
        len: n,
    })
}

/// The attention method: cross-attention and decoder self-attention rows of each target's
/// read position, from one forward of the whole pair.
fn attention(
    model: &Seq2Seq,
    source: &[u32],
    ids: &[u32],
    targets: &[PrefixTarget],
    cfg: &TokenAttributionConfig,
) -> Result<Vec<Seq2SeqAttribution>> {
    let c = model.config();
    let layers = c.n_decoder_layers;
    let mut hooks = Hooks::new();
    for l in 0..layers {
        hooks.record(points::cross_pattern(l));
        hooks.record(points::decoder(&point::pattern(l)));
    }
    let device = model.device();
    let src = Batch::from_sequences(&[source.to_vec()], c.pad_token_id, device)?;
    let tgt = Batch::from_sequences(&[ids.to_vec()], c.pad_token_id, device)?;
    let logits = model.forward(&src, &tgt, &mut hooks)?;
    let [_, _, vocab] = logits.dims();
    let pattern = |p: &str| {
        hooks
            .recorded(p)
            .and_then(Activation::rank4)
            .ok_or_else(|| AttributionError::Options(format!("no rank-4 activation at {p}")))
    };
    let cross = (0..layers)
        .map(|l| pattern(&points::cross_pattern(l)))
        .collect::<Result<Vec<_>>>()?;
    let selfs = (0..layers)
        .map(|l| pattern(&points::decoder(&point::pattern(l))))
        .collect::<Result<Vec<_>>>()?;
    let s = source.len();
    let rows_of = |ps: &[Tensor<4>], q: usize, keys: usize| -> Result<Vec<f32>> {
        let mut rows = Vec::new();
        for p in ps {
            let [_, h, _, _] = p.dims();
            rows.extend(to_vec(
                p.clone()
                    .slice([0..1, 0..h, q..q + 1, 0..keys])
                    .reshape([h * keys]),
            )?);
        }
        Ok(rows)
    };
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let q = t.len - 1;
        let row = logits
            .clone()
            .slice([0..1, q..q + 1, 0..vocab])
            .reshape([1, vocab]);
        let mut o = Seq2SeqAttribution::new(c.d_model);
        o.target_value = to_vec(t.target.evaluate(row))?[0];
        let cr = rows_of(&cross, q, s)?;
        let sr = rows_of(&selfs, q, t.len)?;
        o.source_scores = select_attention(&cr, layers, c.n_heads, s, cfg.attention);
        o.target_scores = select_attention(&sr, layers, c.n_heads, t.len, cfg.attention);
        o.cross_attention = Some(cr);
        o.self_attention = Some(sr);
        out.push(o);
    }
    Ok(out)
}

fn check_inputs(
    c: &Seq2SeqConfig,
    source: &[u32],
    ids: &[u32],
    cfg: &TokenAttributionConfig,
) -> Result<()> {
    let bad = |m: String| Err(AttributionError::Options(m));
    if source.is_empty() || ids.is_empty() {
        return bad("token attribution needs a non-empty source and decoder input".into());
    }
    for (what, seq) in [("source", source), ("decoder input", ids)] {
        if seq.len() > c.n_ctx {
            return bad(format!(
                "a {what} of {} tokens is longer than the model's context of {}",
                seq.len(),
                c.n_ctx
            ));
        }
        if let Some(id) = seq.iter().find(|&&i| i as usize >= c.d_vocab) {
            return bad(format!(
                "{what} token id {id} is outside the vocabulary of {}",
                c.d_vocab
            ));
        }
    }
    super::check_config(cfg, c.d_vocab, c.n_decoder_layers, c.n_heads, "the decoder")
}

/// The baseline token's embedding `[d_model]` as `encoder.hook_embed` sees it (the encoder and
/// decoder share their embeddings in every supported family); `None` for the zero baseline.
fn baseline_embedding(model: &Seq2Seq, baseline: Baseline) -> Result<Option<Vec<f32>>> {
    match baseline {
        Baseline::Zero => Ok(None),
        Baseline::Token(id) => {
            let p = points::encoder(point::EMBED);
            let mut hooks = Hooks::new();
            hooks.record(p.clone());
            let src =
                Batch::from_sequences(&[vec![id]], model.config().pad_token_id, model.device())?;
            model.encode(&src, &mut hooks)?;
            let x = hooks
                .recorded(&p)
                .and_then(Activation::rank3)
                .ok_or_else(|| AttributionError::Options(format!("no embeddings at {p}")))?;
            Ok(Some(to_vec(x)?))
        }
    }
}
