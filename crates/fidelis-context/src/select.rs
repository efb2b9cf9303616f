//! Selecting the tokens that stand out: `|score| ≥ mean + λ·std`, then the top k by `|score|`.
//!
//! The same selector serves CTI (context-sensitive output tokens) and CCI (contextual cues), as
//! in PECoRe (Sarti et al. 2024, §2) and Inseq's `filter_rank_tokens`: the threshold is computed
//! from the signed scores (sample standard deviation, n − 1), tokens are compared by absolute
//! value, ranked by decreasing `|score|` with ties kept in position order. With λ = 0 or a
//! single score the threshold is the mean; all-equal scores therefore all pass (nothing stands
//! out, so nothing is filtered), and top-k then keeps the first k positions.

use serde::Serialize;

use crate::{ContextError, Result};

/// Selected positions, best first, and the threshold they passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    /// `(position, score)` of the selected tokens by decreasing `|score|`.
    pub ranked: Vec<(usize, f32)>,
    /// `mean + λ·std` of the scores (0 without λ).
    pub threshold: f32,
}

impl Selection {
    /// Whether position `i` was selected.
    pub fn contains(&self, i: usize) -> bool {
        self.ranked.iter().any(|&(j, _)| j == i)
    }

    /// The selected positions, best first.
    pub fn positions(&self) -> Vec<usize> {
        self.ranked.iter().map(|&(i, _)| i).collect()
    }
}

/// Selects scores with `|s| ≥ mean + std_weight·std` (no threshold when `std_weight` is
/// `None`), ranked by `|s|`, keeping at most `topk`.
pub fn select(scores: &[f32], std_weight: Option<f32>, topk: Option<usize>) -> Result<Selection> {
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(ContextError::Options(format!(
            "score {i} is {} (not finite)",
            scores[i]
        )));
    }
    if let Some(w) = std_weight
        && !w.is_finite()
    {
        return Err(ContextError::Options(format!(
            "the std weight must be finite, got {w}"
        )));
    }
    let threshold = threshold(scores, std_weight);
    let mut ranked: Vec<(usize, f32)> = scores
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, s)| s.abs() >= threshold)
        .collect();
    // A stable sort: ties keep position order.
    ranked.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    if let Some(k) = topk {
        ranked.truncate(k);
    }
    Ok(Selection { ranked, threshold })
}

/// `mean + w·std` in f64 (sample std); the mean alone for `w = 0` or one score; 0 without `w`.
fn threshold(scores: &[f32], std_weight: Option<f32>) -> f32 {
    let Some(w) = std_weight else { return 0.0 };
    if scores.is_empty() {
        return 0.0;
    }
    let n = scores.len() as f64;
    let mean = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
    if w == 0.0 || scores.len() == 1 {
        return mean as f32;
    }
    let var = scores
        .iter()
        .map(|&s| (f64::from(s) - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    (mean + f64::from(w) * var.sqrt()) as f32
}
