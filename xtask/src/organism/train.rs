//! The training loop: next-token cross-entropy on the corpus, AdamW, warmup then cosine decay.

use std::time::Instant;

use anyhow::Result;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::corpus::{self, Corpus, CorpusConfig, Document};
use super::model::{Gpt2, Shape};
use super::tokenizer::END_OF_TEXT_ID;

/// Everything that determines a training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Seeds the corpus, the initial weights and the batch order.
    pub seed: u64,
    /// Optimizer steps.
    pub steps: usize,
    /// Documents per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Steps of linear warmup before the cosine decay.
    pub warmup_steps: usize,
    /// The corpus (see [`corpus::build`]).
    pub corpus: CorpusConfig,
    /// Loss weight of answer tokens relative to other tokens. The answers are what the tests
    /// ask of the model, and in a corpus of random names and places they are a small share of
    /// tokens.
    pub answer_weight: f32,
    /// Residual width.
    pub d_model: usize,
    /// Blocks.
    pub n_layers: usize,
    /// Heads per block.
    pub n_heads: usize,
    /// Context length.
    pub n_ctx: usize,
    /// Steps between loss reports.
    pub log_every: usize,
}

impl TrainConfig {
    /// The configuration that built the committed organism.
    pub fn organism() -> Self {
        Self {
            seed: 0,
            steps: 1500,
            batch_size: 32,
            learning_rate: 3e-3,
            warmup_steps: 60,
            corpus: CorpusConfig {
                family_share: [2.0, 1.0, 0.5, 1.5],
                docs_per_family: 12_000,
            },
            answer_weight: 10.0,
            d_model: 128,
            n_layers: 3,
            n_heads: 4,
            n_ctx: 64,
            log_every: 25,
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
    /// Mean next-token loss (nats) over all real tokens.
    pub loss: f64,
    /// Mean loss (nats) over answer tokens only.
    pub answer_loss: f64,
    /// Wall time since training began.
    pub elapsed_s: f64,
}

/// A trained model with what it was trained on.
pub struct Trained {
    /// The model (on the autodiff device it was trained on).
    pub model: Gpt2,
    /// Its shape.
    pub shape: Shape,
    /// The corpus and tokenizer.
    pub corpus: Corpus,
    /// The loss curve.
    pub log: Vec<LogRow>,
}

/// The model shape `cfg` asks for, with the vocabulary of `corpus` (its pieces and the two
/// special tokens).
pub fn shape_of(cfg: &TrainConfig, corpus: &Corpus) -> Shape {
    Shape {
        d_vocab: corpus.pieces.len() + 2,
        n_ctx: cfg.n_ctx,
        d_model: cfg.d_model,
        n_layers: cfg.n_layers,
        n_heads: cfg.n_heads,
    }
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

/// A right-padded batch: inputs, targets, loss weights and the answer mask.
struct Batch {
    inputs: Tensor<2, Int>,
    targets: Tensor<2, Int>,
    weights: Tensor<2>,
    answer_mask: Tensor<2>,
    real_mask: Tensor<2>,
    weight_sum: f32,
    real_tokens: f32,
    answer_tokens: f32,
}

fn batch(documents: &[&Document], answer_weight: f32, device: &Device) -> Batch {
    let len = documents
        .iter()
        .map(|d| d.tokens.len() - 1)
        .max()
        .unwrap_or(1);
    let size = documents.len() * len;
    let (mut inputs, mut targets) = (vec![i64::from(END_OF_TEXT_ID); size], vec![0i64; size]);
    let (mut weights, mut answer_mask) = (vec![0f32; size], vec![0f32; size]);
    let mut real_mask = vec![0f32; size];
    let (mut real_tokens, mut answer_tokens) = (0f32, 0f32);
    for (row, doc) in documents.iter().enumerate() {
        for p in 0..doc.tokens.len() - 1 {
            let i = row * len + p;
            inputs[i] = i64::from(doc.tokens[p]);
            targets[i] = i64::from(doc.tokens[p + 1]);
            let is_answer = doc.answer.contains(&(p + 1));
            weights[i] = if is_answer { answer_weight } else { 1.0 };
            answer_mask[i] = f32::from(u8::from(is_answer));
            real_mask[i] = 1.0;
            real_tokens += 1.0;
            answer_tokens += answer_mask[i];
        }
    }
    let weight_sum = weights.iter().sum();
    let shape = [documents.len(), len];
    Batch {
        inputs: Tensor::from_data(TensorData::new(inputs, shape), device),
        targets: Tensor::from_data(TensorData::new(targets, shape), device),
        weights: Tensor::from_data(TensorData::new(weights, shape), device),
        answer_mask: Tensor::from_data(TensorData::new(answer_mask, shape), device),
        real_mask: Tensor::from_data(TensorData::new(real_mask, shape), device),
        weight_sum,
        real_tokens,
        answer_tokens,
    }
}

/// Trains the organism on `device` (an autodiff device), calling `on_log` with each log row
/// and the model as it is at that step.
pub fn train(
    cfg: &TrainConfig,
    device: &Device,
    mut on_log: impl FnMut(&LogRow, &Gpt2, &Corpus) -> Result<()>,
) -> Result<Trained> {
    let corpus = corpus::build(&cfg.corpus, cfg.seed)?;
    let shape = shape_of(cfg, &corpus);
    let longest = corpus
        .documents
        .iter()
        .map(|d| d.tokens.len())
        .max()
        .unwrap_or(0);
    anyhow::ensure!(
        longest <= cfg.n_ctx + 1,
        "a document has {longest} tokens, n_ctx is {}",
        cfg.n_ctx
    );
    let mut model = Gpt2::new(shape, cfg.seed, device);
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(0.01)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = Vec::new();
    let mut log = Vec::new();
    let (mut loss_sum, mut answer_sum, mut rows) = (0f64, 0f64, 0usize);
    let start = Instant::now();
    for step in 0..cfg.steps {
        if order.len() < cfg.batch_size {
            let mut epoch: Vec<usize> = (0..corpus.documents.len()).collect();
            epoch.shuffle(&mut rng);
            order.extend(epoch);
        }
        let picked: Vec<&Document> = order
            .drain(..cfg.batch_size)
            .map(|i| &corpus.documents[i])
            .collect();
        let b = batch(&picked, cfg.answer_weight, device);
        let [rows_n, len] = b.inputs.dims();
        let logits = model.forward(b.inputs);
        let log_probs = log_softmax(logits, 2)
            .gather(2, b.targets.unsqueeze_dim::<3>(2))
            .reshape([rows_n, len]);
        // Weighted next-token loss; padded positions have weight 0.
        let loss = (log_probs.clone() * b.weights)
            .sum()
            .neg()
            .div_scalar(b.weight_sum);
        let nll = (log_probs.clone().neg() * b.real_mask)
            .sum()
            .into_scalar::<f32>();
        let answer_nll = (log_probs.neg() * b.answer_mask).sum().into_scalar::<f32>();
        loss_sum += f64::from(nll / b.real_tokens);
        answer_sum += f64::from(answer_nll / b.answer_tokens.max(1.0));
        rows += 1;
        let lr = learning_rate(cfg, step);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(lr, model, grads);
        if (step + 1) % cfg.log_every == 0 || step + 1 == cfg.steps {
            let row = LogRow {
                step: step + 1,
                learning_rate: lr,
                loss: loss_sum / rows as f64,
                answer_loss: answer_sum / rows as f64,
                elapsed_s: start.elapsed().as_secs_f64(),
            };
            on_log(&row, &model, &corpus)?;
            log.push(row);
            (loss_sum, answer_sum, rows) = (0.0, 0.0, 0);
        }
    }
    Ok(Trained {
        model,
        shape,
        corpus,
        log,
    })
}
