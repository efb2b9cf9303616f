//! The training loop: teacher-forced cross-entropy on freshly generated examples, AdamW, warmup
//! then cosine decay.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::corpus::{self, Example, Mix};
use super::model::{Marian, Shape};
use super::tokenizer::{self, EOS_ID, PAD_ID};

/// Everything that determines a training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Seeds the examples, the initial weights and the held-out set.
    pub seed: u64,
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per step (each freshly generated).
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Steps of linear warmup before the cosine decay.
    pub warmup_steps: usize,
    /// What the examples look like.
    pub mix: Mix,
    /// Loss weight of the pronoun token relative to other target tokens.
    pub pronoun_weight: f32,
    /// Residual width.
    pub d_model: usize,
    /// Encoder blocks.
    pub encoder_layers: usize,
    /// Decoder blocks.
    pub decoder_layers: usize,
    /// Heads per attention.
    pub n_heads: usize,
    /// MLP width.
    pub d_mlp: usize,
    /// Longest sequence (`max_position_embeddings`).
    pub n_ctx: usize,
    /// Steps between loss reports.
    pub log_every: usize,
}

impl TrainConfig {
    /// The configuration that built the committed organism.
    pub fn organism() -> Self {
        Self {
            seed: 0,
            steps: 2000,
            batch_size: 64,
            learning_rate: 3e-3,
            warmup_steps: 100,
            mix: Mix {
                contextless: 0.25,
                plain: 0.2,
            },
            pronoun_weight: 4.0,
            d_model: 64,
            encoder_layers: 2,
            decoder_layers: 2,
            n_heads: 4,
            d_mlp: 256,
            n_ctx: 64,
            log_every: 50,
        }
    }

    /// The model shape, with the task's vocabulary.
    pub fn shape(&self) -> Shape {
        Shape {
            d_vocab: tokenizer::vocabulary(&corpus::vocabulary()).len(),
            n_ctx: self.n_ctx,
            d_model: self.d_model,
            encoder_layers: self.encoder_layers,
            decoder_layers: self.decoder_layers,
            n_heads: self.n_heads,
            d_mlp: self.d_mlp,
        }
    }
}

/// One row of the training log (averages over the steps since the previous row).
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    /// Steps done.
    pub step: usize,
    /// Learning rate of the last step.
    pub learning_rate: f64,
    /// Mean loss (nats) over all target tokens (the final `</s>` included).
    pub loss: f64,
    /// Mean loss (nats) on pronouns of examples with a context.
    pub pronoun_loss: f64,
    /// Wall time since training began.
    pub elapsed_s: f64,
}

/// A trained model with its log.
pub struct Trained {
    /// The model (on the autodiff device it was trained on).
    pub model: Marian,
    /// Its shape.
    pub shape: Shape,
    /// The loss curve.
    pub log: Vec<LogRow>,
}

/// Warmup then cosine decay to a tenth of the peak.
fn learning_rate(cfg: &TrainConfig, step: usize) -> f64 {
    if step < cfg.warmup_steps {
        return cfg.learning_rate * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let progress = (step - cfg.warmup_steps) as f64 / (cfg.steps - cfg.warmup_steps).max(1) as f64;
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    cfg.learning_rate * (0.1 + 0.9 * cosine)
}

/// Source and target ids of examples, words looked up in `vocabulary`: the source ends with
/// `</s>` (as `MarianTokenizer` frames it), the target is the translation then `</s>`.
pub struct Encoded {
    /// Source ids.
    pub source: Vec<u32>,
    /// Target ids (without the decoder start token).
    pub target: Vec<u32>,
    /// The pronoun's position in `target`, when it has one and a context.
    pub pronoun: Option<usize>,
}

/// Looks `example`'s words up in `ids` (word → id).
pub fn encode(example: &Example, ids: &std::collections::HashMap<String, u32>) -> Result<Encoded> {
    let look = |words: Vec<String>| -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(words.len() + 1);
        for w in words {
            match ids.get(&w) {
                Some(&id) => out.push(id),
                None => bail!("{w:?} is not in the vocabulary"),
            }
        }
        out.push(EOS_ID);
        Ok(out)
    };
    let target = example.target_words();
    let offset = target.len() - example.current.target.len();
    Ok(Encoded {
        source: look(example.source_words())?,
        target: look(target)?,
        pronoun: example
            .pronoun
            .filter(|_| example.context.is_some())
            .map(|p| p + offset),
    })
}

/// A right-padded batch.
struct Batch {
    source: Tensor<2, Int>,
    source_lengths: Vec<usize>,
    decoder_inputs: Tensor<2, Int>,
    labels: Tensor<2, Int>,
    weights: Tensor<2>,
    real: Tensor<2>,
    pronoun: Tensor<2>,
    weight_sum: f32,
    real_tokens: f32,
    pronouns: f32,
}

fn batch(examples: &[Encoded], pronoun_weight: f32, device: &Device) -> Batch {
    let src_len = examples.iter().map(|e| e.source.len()).max().unwrap_or(1);
    let tgt_len = examples.iter().map(|e| e.target.len()).max().unwrap_or(1);
    let n = examples.len();
    let mut source = vec![i64::from(PAD_ID); n * src_len];
    let mut inputs = vec![i64::from(PAD_ID); n * tgt_len];
    let mut labels = vec![0i64; n * tgt_len];
    let (mut weights, mut real, mut pronoun) = (
        vec![0f32; n * tgt_len],
        vec![0f32; n * tgt_len],
        vec![0f32; n * tgt_len],
    );
    for (row, e) in examples.iter().enumerate() {
        for (p, &id) in e.source.iter().enumerate() {
            source[row * src_len + p] = i64::from(id);
        }
        for (p, &id) in e.target.iter().enumerate() {
            let i = row * tgt_len + p;
            // Decoder input p is the previous target token (the start token `<pad>` first).
            if p > 0 {
                inputs[i] = i64::from(e.target[p - 1]);
            }
            labels[i] = i64::from(id);
            let is_pronoun = e.pronoun == Some(p);
            weights[i] = if is_pronoun { pronoun_weight } else { 1.0 };
            real[i] = 1.0;
            pronoun[i] = f32::from(u8::from(is_pronoun));
        }
    }
    let sum = |v: &[f32]| v.iter().sum::<f32>();
    let (weight_sum, real_tokens, pronouns) = (sum(&weights), sum(&real), sum(&pronoun));
    let int = |v: Vec<i64>, len: usize| Tensor::from_data(TensorData::new(v, [n, len]), device);
    let float = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [n, tgt_len]), device);
    Batch {
        source: int(source, src_len),
        source_lengths: examples.iter().map(|e| e.source.len()).collect(),
        decoder_inputs: int(inputs, tgt_len),
        labels: int(labels, tgt_len),
        weights: float(weights),
        real: float(real),
        pronoun: float(pronoun),
        weight_sum,
        real_tokens,
        pronouns,
    }
}

/// Trains the model on `device` (an autodiff device), calling `on_log` with each log row.
pub fn train(
    cfg: &TrainConfig,
    device: &Device,
    mut on_log: impl FnMut(&LogRow) -> Result<()>,
) -> Result<Trained> {
    let shape = cfg.shape();
    let vocabulary = tokenizer::vocabulary(&corpus::vocabulary());
    let ids: std::collections::HashMap<String, u32> = vocabulary
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), i as u32))
        .collect();
    let mut model = Marian::new(shape, cfg.seed, device);
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(0.01)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    // The examples' stream is seeded apart from the weights and the held-out set.
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(1000));
    let mut log = Vec::new();
    let (mut loss_sum, mut pronoun_sum, mut rows) = (0f64, 0f64, 0usize);
    let start = Instant::now();
    for step in 0..cfg.steps {
        let examples = (0..cfg.batch_size)
            .map(|_| encode(&corpus::training_example(&mut rng, cfg.mix), &ids))
            .collect::<Result<Vec<_>>>()?;
        let longest = examples
            .iter()
            .map(|e| e.source.len().max(e.target.len()))
            .max()
            .unwrap_or(0);
        anyhow::ensure!(
            longest <= cfg.n_ctx,
            "an example has {longest} tokens, n_ctx is {}",
            cfg.n_ctx
        );
        let b = batch(&examples, cfg.pronoun_weight, device);
        let [n, len] = b.labels.dims();
        let logits = model.forward(b.source, &b.source_lengths, b.decoder_inputs);
        let log_probs = log_softmax(logits, 2)
            .gather(2, b.labels.unsqueeze_dim::<3>(2))
            .reshape([n, len]);
        let loss = (log_probs.clone() * b.weights)
            .sum()
            .neg()
            .div_scalar(b.weight_sum);
        let nll = (log_probs.clone().neg() * b.real)
            .sum()
            .into_scalar::<f32>();
        let pronoun_nll = (log_probs.neg() * b.pronoun).sum().into_scalar::<f32>();
        loss_sum += f64::from(nll / b.real_tokens);
        pronoun_sum += f64::from(pronoun_nll / b.pronouns.max(1.0));
        rows += 1;
        let lr = learning_rate(cfg, step);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(lr, model, grads);
        if (step + 1) % cfg.log_every == 0 || step + 1 == cfg.steps {
            let row = LogRow {
                step: step + 1,
                learning_rate: lr,
                loss: loss_sum / rows as f64,
                pronoun_loss: pronoun_sum / rows as f64,
                elapsed_s: start.elapsed().as_secs_f64(),
            };
            on_log(&row)?;
            log.push(row);
            (loss_sum, pronoun_sum, rows) = (0.0, 0.0, 0);
        }
    }
    Ok(Trained { model, shape, log })
}
