//! Context-sensitivity metrics (PECoRe step 1, Sarti et al. 2024 §2.1): how much the next-token
//! distribution at each output position changes when the context is removed.

fidelis_circuit::option_enum! {
    "context-sensitivity metric",
    /// The context-sensitivity metric of CTI (`kl`, `ctx-prob-diff`, `pcxmi`).
    #[strum(serialize_all = "kebab-case")]
    pub enum CtiMetric {
        /// `KL(P_ctx ‖ P_noctx)` over the vocabulary, in nats (the default).
        #[strum(to_string = "kl", serialize = "kl-divergence", serialize = "kl_divergence")]
        Kl,
        /// `P_ctx(ŷ) − P_noctx(ŷ)` of the output token ŷ.
        #[strum(
            to_string = "ctx-prob-diff",
            serialize = "contrast-prob-diff",
            serialize = "contrast_prob_diff"
        )]
        CtxProbDiff,
        /// P-CXMI `log P_ctx(ŷ) − log P_noctx(ŷ)`.
        Pcxmi,
    }
}

impl CtiMetric {
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
