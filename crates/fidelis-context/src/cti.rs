//! Context-sensitivity metrics (PECoRe step 1, Sarti et al. 2024 §2.1): how much the next-token
//! distribution at each output position changes when the context is removed.

use std::str::FromStr;

use serde::Serialize;

/// The context-sensitivity metric of CTI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CtiMetric {
    /// `KL(P_ctx ‖ P_noctx)` over the vocabulary, in nats (the default).
    Kl,
    /// `P_ctx(ŷ) − P_noctx(ŷ)` of the output token ŷ.
    CtxProbDiff,
    /// P-CXMI `log P_ctx(ŷ) − log P_noctx(ŷ)`.
    Pcxmi,
}

impl CtiMetric {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kl => "kl",
            Self::CtxProbDiff => "ctx-prob-diff",
            Self::Pcxmi => "pcxmi",
        }
    }

    /// The score of output token `token` from the contextual and contextless next-token logits
    /// (one row each, `[d_vocab]`), computed in f64.
    pub fn score(self, contextual: &[f32], contextless: &[f32], token: u32) -> f32 {
        let lp = log_softmax(contextual);
        let lq = log_softmax(contextless);
        let t = token as usize;
        let v = match self {
            Self::Kl => lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum(),
            Self::CtxProbDiff => lp[t].exp() - lq[t].exp(),
            Self::Pcxmi => lp[t] - lq[t],
        };
        v as f32
    }
}

impl FromStr for CtiMetric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kl" | "kl-divergence" | "kl_divergence" => Ok(Self::Kl),
            "ctx-prob-diff" | "contrast-prob-diff" | "contrast_prob_diff" => Ok(Self::CtxProbDiff),
            "pcxmi" => Ok(Self::Pcxmi),
            _ => Err(format!(
                "unknown context-sensitivity metric `{s}` (expected kl, ctx-prob-diff or pcxmi)"
            )),
        }
    }
}

/// `log softmax` of one logit row, in f64.
pub fn log_softmax(z: &[f32]) -> Vec<f64> {
    let m = z
        .iter()
        .map(|&x| f64::from(x))
        .fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z
        .iter()
        .map(|&x| (f64::from(x) - m).exp())
        .sum::<f64>()
        .ln();
    z.iter().map(|&x| f64::from(x) - lse).collect()
}

/// The index of the largest logit (the greedy next token).
pub fn argmax(z: &[f32]) -> u32 {
    z.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}
