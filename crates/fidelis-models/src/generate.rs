//! Greedy and sampled generation with a KV cache.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{ModelError, Result};
use crate::transformer::{KvCache, Transformer};

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Maximum number of tokens to generate.
    pub max_new_tokens: usize,
    /// Softmax temperature; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens before sampling.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches `p` (nucleus sampling).
    pub top_p: Option<f32>,
    /// Seed of the sampler.
    pub seed: u64,
    /// Generation stops after producing any of these ids (typically EOS).
    pub stop_tokens: Vec<u32>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 32,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
            stop_tokens: Vec::new(),
        }
    }
}

impl GenerateConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(ModelError::InvalidInput(format!(
                "temperature must be finite and >= 0, got {}",
                self.temperature
            )));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(ModelError::InvalidInput(format!(
                "top_p must be in (0, 1], got {p}"
            )));
        }
        if self.top_k == Some(0) {
            return Err(ModelError::InvalidInput("top_k must be at least 1".into()));
        }
        Ok(())
    }
}

impl Transformer {
    /// Generates up to `cfg.max_new_tokens` tokens after `prompt`, calling `on_token` for each.
    /// Returns the generated ids (without the prompt).
    pub fn generate(
        &self,
        prompt: &[u32],
        cfg: &GenerateConfig,
        mut on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>> {
        cfg.validate()?;
        if prompt.is_empty() {
            return Err(ModelError::InvalidInput(
                "generation needs a non-empty prompt".into(),
            ));
        }
        let n_ctx = self.config().n_ctx;
        if prompt.len() > n_ctx {
            return Err(ModelError::InvalidInput(format!(
                "prompt of {} tokens is longer than the model's context of {n_ctx}",
                prompt.len()
            )));
        }
        // Prompt plus output never exceed the context.
        let budget = n_ctx - prompt.len();
        let steps = cfg.max_new_tokens.min(budget);
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut cache = KvCache::new();
        let mut input: Vec<u32> = prompt.to_vec();
        let mut out = Vec::with_capacity(steps);
        for _ in 0..steps {
            // The ids are on the host: checking them there spares a device read-back per step.
            let logits = self.forward_cached_ids(&input, &mut cache)?;
            let [_, seq, vocab] = logits.dims();
            let last = logits
                .slice([0..1, seq - 1..seq, 0..vocab])
                .reshape([vocab]);
            let last: Vec<f32> = last
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| ModelError::InvalidInput(format!("{e:?}")))?;
            let next = pick_token(&last, cfg, &mut rng)?;
            out.push(next);
            on_token(next);
            if cfg.stop_tokens.contains(&next) {
                break;
            }
            input = vec![next];
        }
        Ok(out)
    }
}

/// Chooses the next token from one row of logits.
pub fn pick_token(logits: &[f32], cfg: &GenerateConfig, rng: &mut impl Rng) -> Result<u32> {
    if logits.iter().any(|x| x.is_nan()) {
        return Err(ModelError::InvalidInput(
            "the model produced NaN logits".into(),
        ));
    }
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if cfg.temperature == 0.0 {
        return Ok(argmax());
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let Some(k) = cfg.top_k {
        order.truncate(k);
    }
    let max = logits[order[0]];
    let mut probs: Vec<f32> = order
        .iter()
        .map(|&i| ((logits[i] - max) / cfg.temperature).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = cfg.top_p {
        let mut mass = 0.0;
        let keep = probs
            .iter()
            .position(|&p| {
                mass += p;
                mass >= top_p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        order.truncate(keep);
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let mut u: f32 = rng.random();
    for (p, &i) in probs.iter().zip(&order) {
        if u < *p {
            return Ok(i as u32);
        }
        u -= p;
    }
    Ok(*order.last().unwrap_or(&0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> GenerateConfig {
        GenerateConfig {
            temperature,
            top_k,
            top_p,
            ..GenerateConfig::default()
        }
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            pick_token(&[0.1, 3.0, -1.0], &cfg(0.0, None, None), &mut rng).unwrap(),
            1
        );
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_temperature() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..20 {
            let t = pick_token(&[0.0, 0.5, 0.4], &cfg(5.0, Some(1), None), &mut rng).unwrap();
            assert_eq!(t, 1);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Probabilities ≈ [0.88, 0.12, 0.00...]: p = 0.5 keeps only the first token.
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..20 {
            let t = pick_token(&[2.0, 0.0, -9.0], &cfg(1.0, None, Some(0.5)), &mut rng).unwrap();
            assert_eq!(t, 0);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // logits ln(3), 0 -> probabilities 0.75 / 0.25.
        let mut rng = StdRng::seed_from_u64(11);
        let logits = [3f32.ln(), 0.0];
        let n = 4000;
        let zeros = (0..n)
            .filter(|_| pick_token(&logits, &cfg(1.0, None, None), &mut rng).unwrap() == 0)
            .count();
        let freq = zeros as f64 / n as f64;
        assert!((freq - 0.75).abs() < 0.03, "freq {freq}");
    }

    #[test]
    fn bad_settings_and_nan_are_errors() {
        let mut rng = StdRng::seed_from_u64(0);
        assert!(pick_token(&[f32::NAN, 1.0], &cfg(0.0, None, None), &mut rng).is_err());
        assert!(cfg(-1.0, None, None).validate().is_err());
        assert!(cfg(1.0, Some(0), None).validate().is_err());
        assert!(cfg(1.0, None, Some(1.5)).validate().is_err());
    }
}
