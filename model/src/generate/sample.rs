//! Choosing the next token from logits: repeat penalty, then temperature and nucleus (top-p)
//! sampling with a seeded RNG, or the arg-max at temperature 0. Same seed, same logits, same
//! token — the property the tests and reproducible runs rely on.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sampling settings, checked by [`Sampler::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (arg-max).
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches this (1.0 keeps all).
    pub top_p: f32,
    /// Divides positive and multiplies negative logits of recently seen tokens (1.0 is off).
    pub repeat_penalty: f32,
    /// How many of the last tokens (prompt included) the repeat penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Reused across steps: token ids ordered by probability, and their probabilities.
    order: Vec<usize>,
    probs: Vec<f32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self, String> {
        let p = &params;
        if !(p.temperature >= 0.0 && p.temperature.is_finite()) {
            return Err(format!(
                "temperature must be a finite number >= 0, not {}",
                p.temperature
            ));
        }
        if !(p.top_p > 0.0 && p.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], not {}", p.top_p));
        }
        if !(p.repeat_penalty > 0.0 && p.repeat_penalty.is_finite()) {
            return Err(format!(
                "repeat_penalty must be a finite number > 0, not {}",
                p.repeat_penalty
            ));
        }
        Ok(Sampler {
            params,
            rng: StdRng::seed_from_u64(params.seed),
            order: Vec::new(),
            probs: Vec::new(),
        })
    }

    /// Applies the repeat penalty for the tokens in `context` (only the last `repeat_last_n`).
    pub fn penalize(&self, logits: &mut [f32], context: &[u32]) {
        let penalty = self.params.repeat_penalty;
        if penalty == 1.0 {
            return;
        }
        let recent = &context[context.len().saturating_sub(self.params.repeat_last_n)..];
        let mut seen = std::collections::BTreeSet::new();
        for &t in recent {
            if !seen.insert(t) {
                continue;
            }
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l >= 0.0 {
                    *l / penalty
                } else {
                    *l * penalty
                };
            }
        }
    }

    /// Picks a token; `None` if every logit is -inf or NaN (everything masked).
    pub fn sample(&mut self, logits: &[f32]) -> Option<u32> {
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }
        let max = logits
            .iter()
            .copied()
            .filter(|l| !l.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return None;
        }
        let inv_t = 1.0 / self.params.temperature;
        self.probs.clear();
        self.probs.extend(logits.iter().map(|&l| {
            if l.is_nan() {
                0.0
            } else {
                ((l - max) * inv_t).exp()
            }
        }));
        let total: f32 = self.probs.iter().sum();
        // Tokens in descending probability; ties keep id order so the result is deterministic.
        self.order.clear();
        self.order
            .extend((0..self.probs.len()).filter(|&i| self.probs[i] > 0.0));
        let probs = &self.probs;
        self.order
            .sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let mut kept = self.order.len();
        if self.params.top_p < 1.0 {
            let mut cumulative = 0.0;
            for (i, &t) in self.order.iter().enumerate() {
                cumulative += probs[t] / total;
                if cumulative >= self.params.top_p {
                    kept = i + 1;
                    break;
                }
            }
        }
        let kept_total: f32 = self.order[..kept].iter().map(|&t| probs[t]).sum();
        let mut target = self.rng.random::<f32>() * kept_total;
        for &t in &self.order[..kept] {
            target -= probs[t];
            if target <= 0.0 {
                return Some(t as u32);
            }
        }
        self.order[..kept].last().map(|&t| t as u32)
    }
}

/// The index of the largest logit (the first one on ties), ignoring NaN; `None` if all are -inf.
fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() || l == f32::NEG_INFINITY {
            continue;
        }
        if best.map_or(true, |(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed,
        }
    }

    #[test]
    fn generate_sample_greedy_is_argmax_and_masked_tokens_are_never_chosen() {
        let mut s = Sampler::new(params(0.0, 1.0, 1)).unwrap();
        assert_eq!(s.sample(&[0.1, 2.0, -1.0, 2.0]), Some(1));
        assert_eq!(s.sample(&[f32::NEG_INFINITY; 3]), None);
        let mut s = Sampler::new(params(1.5, 1.0, 7)).unwrap();
        let logits = [5.0, f32::NEG_INFINITY, 4.0, f32::NEG_INFINITY];
        for _ in 0..200 {
            let t = s.sample(&logits).unwrap();
            assert!(t == 0 || t == 2, "masked token {t} sampled");
        }
    }

    #[test]
    fn generate_sample_top_p_keeps_only_the_nucleus() {
        // Token 0 has ~88% of the mass: top_p 0.5 must always pick it.
        let mut s = Sampler::new(params(1.0, 0.5, 3)).unwrap();
        for _ in 0..100 {
            assert_eq!(s.sample(&[4.0, 2.0, 0.0, 0.0]), Some(0));
        }
    }

    #[test]
    fn generate_sample_same_seed_same_choices() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(1.0, 0.95, seed)).unwrap();
            (0..30)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn generate_sample_repeat_penalty_lowers_seen_tokens() {
        let mut p = params(0.0, 1.0, 0);
        p.repeat_penalty = 2.0;
        let s = Sampler::new(p).unwrap();
        let mut logits = [4.0, 3.0, -1.0];
        s.penalize(&mut logits, &[0, 2, 0]);
        assert_eq!(logits, [2.0, 3.0, -2.0]);
        assert!(Sampler::new(params(-1.0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0.0, 0)).is_err());
    }
}
