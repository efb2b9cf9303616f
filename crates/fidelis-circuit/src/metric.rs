//! Task metrics read at each example's last real position.
//!
//! A [`Metric`] maps the last-position logits of a run (and of the clean run, for divergences)
//! to one value per example. The built-in ones are those of the EAP-IG paper (Hanna et al. 2024,
//! §4) and of the MIB benchmark: logit difference, probability difference, KL and JS divergence
//! to the clean distribution, and the probability mass on the correct answers (Greater-Than).

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::{log_softmax, softmax};
use fidelis_models::precision::to_f32;

use crate::{CircuitError, Result};

/// The answer tokens of a batch as dense `[batch, d_vocab]` 0/1 masks.
///
/// Dense masks let every metric be one elementwise product and one sum on any backend, and
/// allow answer sets of any size (Greater-Than's "all years above the start year").
#[derive(Debug, Clone)]
pub struct Targets {
    /// `[batch, d_vocab]`: 1 at each example's correct answer tokens.
    pub correct: Tensor<2>,
    /// `[batch, d_vocab]`: 1 at each example's incorrect answer tokens.
    pub incorrect: Tensor<2>,
    /// `[batch, 1]`: number of correct tokens per example (at least 1 when any).
    pub n_correct: Tensor<2>,
    /// `[batch, 1]`: number of incorrect tokens per example (at least 1 when any).
    pub n_incorrect: Tensor<2>,
}

impl Targets {
    /// Builds the masks; every id must be below `d_vocab`.
    pub fn new(
        correct: &[Vec<u32>],
        incorrect: &[Vec<u32>],
        d_vocab: usize,
        device: &Device,
    ) -> Result<Self> {
        let mask = |sets: &[Vec<u32>], what: &str| -> Result<(Tensor<2>, Tensor<2>)> {
            let mut data = vec![0f32; sets.len() * d_vocab];
            let mut counts = Vec::with_capacity(sets.len());
            for (i, set) in sets.iter().enumerate() {
                for &id in set {
                    let id = id as usize;
                    if id >= d_vocab {
                        return Err(CircuitError::Data(format!(
                            "example {i}: {what} token id {id} is outside the vocabulary of {d_vocab}"
                        )));
                    }
                    data[i * d_vocab + id] = 1.0;
                }
                counts.push(set.len().max(1) as f32);
            }
            let n = sets.len();
            Ok((
                Tensor::from_data(TensorData::new(data, [n, d_vocab]), (device, DType::F32)),
                Tensor::from_data(TensorData::new(counts, [n, 1]), (device, DType::F32)),
            ))
        };
        let (correct, n_correct) = mask(correct, "correct")?;
        let (incorrect, n_incorrect) = mask(incorrect, "incorrect")?;
        Ok(Self {
            correct,
            incorrect,
            n_correct,
            n_incorrect,
        })
    }

    /// The same targets repeated `k` times along the batch (for stacked copies of a batch).
    pub fn repeat(&self, k: usize) -> Self {
        let rep = |t: &Tensor<2>| Tensor::cat(vec![t.clone(); k], 0);
        Self {
            correct: rep(&self.correct),
            incorrect: rep(&self.incorrect),
            n_correct: rep(&self.n_correct),
            n_incorrect: rep(&self.n_incorrect),
        }
    }
}

/// A scalar behaviour measured per example from last-position logits.
///
/// Implement it for a custom metric; [`BuiltinMetric`] covers the usual ones.
pub trait Metric: Send + Sync {
    /// Short name used in tables and errors (`logit-diff`).
    fn name(&self) -> String;

    /// Whether the metric is a divergence from the clean run (0 at the clean run, larger when
    /// the behaviour is broken). Attribution then uses it as the loss as is; for a behaviour
    /// metric (larger = task done better) it uses its negation, as the EAP-IG reference does.
    fn is_divergence(&self) -> bool {
        false
    }

    /// The metric per example.
    ///
    /// # Shapes
    /// - `logits`, `clean_logits`: `[batch, d_vocab]` at each example's last real position
    /// - returns `[batch]`
    fn per_example(
        &self,
        logits: Tensor<2>,
        clean_logits: Tensor<2>,
        targets: &Targets,
    ) -> Tensor<1>;
}

crate::option_enum! {
    "metric",
    /// The metrics Fidelis ships. Their names (`logit-diff`, `prob-diff`, `kl`, `js`,
    /// `correct-prob`) come from one table: `Display`, `FromStr`, serde and the CLI's choices all
    /// derive from the variant names.
    #[strum(serialize_all = "kebab-case")]
    pub enum BuiltinMetric {
        /// Mean logit of the correct tokens minus mean logit of the incorrect ones.
        LogitDiff,
        /// Probability mass on the correct tokens minus mass on the incorrect ones.
        ProbDiff,
        /// KL(clean ‖ run) of the next-token distributions.
        Kl,
        /// Jensen–Shannon divergence between the clean and the run's distributions.
        Js,
        /// Probability mass on the correct tokens (Greater-Than: years above the start year).
        CorrectProb,
    }
}

/// KL(p ‖ q) per row from log-probabilities `[batch, d_vocab]` → `[batch]`.
fn kl_rows(log_p: Tensor<2>, log_q: Tensor<2>) -> Tensor<1> {
    let [b, _] = log_p.dims();
    (log_p.clone().exp() * (log_p - log_q))
        .sum_dim(1)
        .reshape([b])
}

impl Metric for BuiltinMetric {
    fn name(&self) -> String {
        self.to_string()
    }

    fn is_divergence(&self) -> bool {
        matches!(self, Self::Kl | Self::Js)
    }

    fn per_example(&self, logits: Tensor<2>, clean_logits: Tensor<2>, t: &Targets) -> Tensor<1> {
        // In f32 whatever the model's float type: softmax over a vocabulary and differences of
        // nearby logits are where half precision loses most.
        let (logits, clean_logits) = (to_f32(logits), to_f32(clean_logits));
        let [b, _] = logits.dims();
        let mass = |x: Tensor<2>, mask: &Tensor<2>| (x * mask.clone()).sum_dim(1);
        let out = match self {
            Self::LogitDiff => {
                mass(logits.clone(), &t.correct) / t.n_correct.clone()
                    - mass(logits, &t.incorrect) / t.n_incorrect.clone()
            }
            Self::ProbDiff => {
                let p = softmax(logits, 1);
                mass(p.clone(), &t.correct) - mass(p, &t.incorrect)
            }
            Self::CorrectProb => mass(softmax(logits, 1), &t.correct),
            Self::Kl => {
                return kl_rows(log_softmax(clean_logits, 1), log_softmax(logits, 1));
            }
            Self::Js => {
                let (lp, lq) = (log_softmax(clean_logits, 1), log_softmax(logits, 1));
                let log_m = ((lp.clone().exp() + lq.clone().exp()) * 0.5).log();
                return (kl_rows(lp, log_m.clone()) + kl_rows(lq, log_m)) * 0.5;
            }
        };
        out.reshape([b])
    }
}

/// The loss attribution differentiates, per example: the metric itself for a divergence (KL,
/// JS), its negation for a behaviour metric (logit or probability difference), as the EAP-IG
/// reference does. A positive edge score then means "patching this edge breaks the behaviour".
///
/// # Shapes
/// - `logits`, `clean`: `[batch, d_vocab]`; returns `[batch]`
pub fn loss_per_example(
    metric: &dyn Metric,
    logits: Tensor<2>,
    clean: Tensor<2>,
    targets: &Targets,
) -> Tensor<1> {
    let m = metric.per_example(logits, clean, targets);
    if metric.is_divergence() { m } else { -m }
}

/// The rows of `logits` `[batch, pos, d_vocab]` at the given positions → `[batch, d_vocab]`.
pub fn last_position_logits(logits: Tensor<3>, positions: &[usize]) -> Tensor<2> {
    let [_, _, v] = logits.dims();
    let rows = positions
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            logits
                .clone()
                .slice([i..i + 1, p..p + 1, 0..v])
                .reshape([1, v])
        })
        .collect();
    Tensor::cat(rows, 0)
}
