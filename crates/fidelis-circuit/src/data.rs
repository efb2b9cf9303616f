//! Tokenized clean/corrupted prompt pairs and their batches.

use burn::prelude::*;
use fidelis_models::{Batch, Transformer};

use crate::metric::Targets;
use crate::{CircuitError, Result};

/// One clean/corrupted pair, tokenized (BOS already prepended if wanted), with its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptPair {
    /// Clean prompt token ids.
    pub clean: Vec<u32>,
    /// Corrupted prompt token ids.
    pub corrupted: Vec<u32>,
    /// Correct answer token ids (read at the last position).
    pub correct: Vec<u32>,
    /// Incorrect answer token ids.
    pub incorrect: Vec<u32>,
}

/// A batch of pairs on a device: both prompts right-padded, the answer masks, the last
/// positions.
#[derive(Debug, Clone)]
pub struct PairBatch {
    /// Clean prompts.
    pub clean: Batch,
    /// Corrupted prompts.
    pub corrupted: Batch,
    /// Answer masks.
    pub targets: Targets,
    /// Each clean example's last real position.
    pub last: Vec<usize>,
    /// Each corrupted example's last real position.
    pub last_corrupted: Vec<usize>,
}

impl PairBatch {
    /// Pads `pairs` into one batch for `model`.
    pub fn new(model: &Transformer, pairs: &[PromptPair]) -> Result<Self> {
        let device = model.device();
        let clean: Vec<Vec<u32>> = pairs.iter().map(|p| p.clean.clone()).collect();
        let corrupted: Vec<Vec<u32>> = pairs.iter().map(|p| p.corrupted.clone()).collect();
        let clean = Batch::from_sequences(&clean, 0, device)?;
        let corrupted = Batch::from_sequences(&corrupted, 0, device)?;
        let correct: Vec<Vec<u32>> = pairs.iter().map(|p| p.correct.clone()).collect();
        let incorrect: Vec<Vec<u32>> = pairs.iter().map(|p| p.incorrect.clone()).collect();
        let targets = Targets::new(&correct, &incorrect, model.config().d_vocab, device)?;
        Ok(Self {
            last: clean.last_positions(),
            last_corrupted: corrupted.last_positions(),
            clean,
            corrupted,
            targets,
        })
    }

    /// Number of examples.
    pub fn size(&self) -> usize {
        self.last.len()
    }

    /// Padded length of the clean prompts.
    pub fn n_pos(&self) -> usize {
        self.clean.tokens.dims()[1]
    }

    /// Whether clean and corrupted prompts have the same padded shape and lengths, as position-
    /// wise patching needs.
    pub fn aligned(&self) -> bool {
        self.clean.lengths == self.corrupted.lengths
    }
}

/// Checks pairs before any model runs: non-empty prompts, ids in the vocabulary, at least one
/// correct answer, and (when `equal_lengths`) clean and corrupted of equal token length.
pub fn check_pairs(pairs: &[PromptPair], d_vocab: usize, equal_lengths: bool) -> Result<()> {
    if pairs.is_empty() {
        return Err(CircuitError::Data("no examples".into()));
    }
    for (i, p) in pairs.iter().enumerate() {
        if p.clean.is_empty() || p.corrupted.is_empty() {
            return Err(CircuitError::Data(format!("example {i}: empty prompt")));
        }
        let ids = p.clean.iter().chain(&p.corrupted).chain(&p.correct);
        if let Some(id) = ids.chain(&p.incorrect).find(|&&id| id as usize >= d_vocab) {
            return Err(CircuitError::Data(format!(
                "example {i}: token id {id} is outside the vocabulary of {d_vocab}"
            )));
        }
        if p.correct.is_empty() {
            return Err(CircuitError::Data(format!(
                "example {i}: no correct answer token"
            )));
        }
        if equal_lengths && p.clean.len() != p.corrupted.len() {
            return Err(CircuitError::Data(format!(
                "example {i}: clean prompt has {} tokens but corrupted has {}; this method \
                 patches position by position and needs equal lengths",
                p.clean.len(),
                p.corrupted.len()
            )));
        }
    }
    Ok(())
}

/// Splits `pairs` into batches of at most `batch_size` examples.
pub fn batches(
    model: &Transformer,
    pairs: &[PromptPair],
    batch_size: usize,
) -> impl Iterator<Item = Result<PairBatch>> {
    pairs
        .chunks(batch_size.max(1))
        .map(move |chunk| PairBatch::new(model, chunk))
}

/// Repeats a `[batch, ...]` tensor `k` times along the batch dimension.
pub fn repeat_batch<const D: usize>(t: Tensor<D>, k: usize) -> Tensor<D> {
    if k == 1 {
        return t;
    }
    Tensor::cat(vec![t; k], 0)
}

/// A token batch repeated `k` times along the batch dimension (copy j is rows
/// `j·batch..(j+1)·batch`), for stacked runs.
pub fn repeat_tokens(batch: &Batch, k: usize) -> Batch {
    if k == 1 {
        return batch.clone();
    }
    Batch {
        tokens: Tensor::cat(vec![batch.tokens.clone(); k], 0),
        lengths: batch.lengths.repeat(k),
    }
}

/// `n` synthetic pairs for tests and benchmarks: prompts of 4 to 7 random tokens below `vocab`
/// (so batches are padded), corrupted prompts differing at two positions after the first, one
/// correct and one different incorrect answer token. Deterministic in `seed`.
pub fn synthetic_pairs(n: usize, vocab: u32, seed: u64) -> Vec<PromptPair> {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(seed);
    let vocab = vocab.max(3);
    (0..n)
        .map(|i| {
            let len = 4 + i % 4;
            let clean: Vec<u32> = (0..len).map(|_| rng.random_range(1..vocab)).collect();
            let mut corrupted = clean.clone();
            for _ in 0..2 {
                let p = rng.random_range(1..len);
                corrupted[p] = rng.random_range(1..vocab);
            }
            let correct = rng.random_range(1..vocab);
            let mut incorrect = rng.random_range(1..vocab);
            while incorrect == correct {
                incorrect = rng.random_range(1..vocab);
            }
            PromptPair {
                clean,
                corrupted,
                correct: vec![correct],
                incorrect: vec![incorrect],
            }
        })
        .collect()
}
