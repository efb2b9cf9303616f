//! Context-sensitivity metrics (PECoRe step 1, Sarti et al. 2024 §2.1): how much the next-token
//! distribution at each output position changes when the context is removed.
//!
//! The metrics are those of Inseq's `attribute-context` (`kl_divergence`, `contrast_prob_diff`,
//! `pcxmi` in `inseq/attr/step_functions.py`), with Inseq's orientation: there the attributed
//! (original) run is the contextless one and the contextual run is the contrast, so its KL
//! divergence is `KL(P_noctx ‖ P_ctx)`, its probability difference `P_noctx(ŷ) − P_ctx(ŷ)` and
//! its P-CXMI `log₂ P_ctx(ŷ) − log₂ P_noctx(ŷ)` (in bits). `kl-ctx` is the KL divergence the
//! other way round, `KL(P_ctx ‖ P_noctx)` (what Fidelis computed before it matched Inseq), and
//! `ctx-prob-diff` the probability difference with the contextual run first. The two
//! probability differences differ only in sign, so they select the same tokens.

fidelis_circuit::option_enum! {
    "context-sensitivity metric",
    /// The context-sensitivity metric of CTI (`kl`, `kl-ctx`, `contrast-prob-diff`,
    /// `ctx-prob-diff`, `pcxmi`).
    #[strum(serialize_all = "kebab-case")]
    pub enum CtiMetric {
        /// `KL(P_noctx ‖ P_ctx)` over the vocabulary, in nats: Inseq's `kl_divergence` (the
        /// default).
        #[strum(to_string = "kl", serialize = "kl-divergence", serialize = "kl_divergence")]
        Kl,
        /// `KL(P_ctx ‖ P_noctx)`, in nats: the contextual distribution first.
        KlCtx,
        /// `P_noctx(ŷ) − P_ctx(ŷ)` of the output token ŷ: Inseq's `contrast_prob_diff`.
        #[strum(to_string = "contrast-prob-diff", serialize = "contrast_prob_diff")]
        ContrastProbDiff,
        /// `P_ctx(ŷ) − P_noctx(ŷ)`: the same difference with the contextual run first.
        CtxProbDiff,
        /// P-CXMI `log₂ P_ctx(ŷ) − log₂ P_noctx(ŷ)`, in bits: Inseq's `pcxmi`.
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
        let kl = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x.exp() * (x - y)).sum();
        let v = match self {
            Self::Kl => kl(&lq, &lp),
            Self::KlCtx => kl(&lp, &lq),
            Self::ContrastProbDiff => lq[t].exp() - lp[t].exp(),
            Self::CtxProbDiff => lp[t].exp() - lq[t].exp(),
            Self::Pcxmi => (lp[t] - lq[t]) / std::f64::consts::LN_2,
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
