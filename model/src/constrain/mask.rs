//! A set of token ids as a bitset: which tokens the sampler may pick next.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMask {
    words: Vec<u64>,
    len: usize,
}

impl TokenMask {
    /// An empty mask over token ids `0..len`.
    pub fn new(len: usize) -> Self {
        Self { words: vec![0; len.div_ceil(64)], len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    pub fn insert(&mut self, id: u32) {
        let i = id as usize;
        if i < self.len {
            self.words[i / 64] |= 1 << (i % 64);
        }
    }

    pub fn remove(&mut self, id: u32) {
        let i = id as usize;
        if i < self.len {
            self.words[i / 64] &= !(1 << (i % 64));
        }
    }

    pub fn contains(&self, id: u32) -> bool {
        let i = id as usize;
        i < self.len && self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// Adds every id of `other` (masks of the same length).
    pub fn union_with(&mut self, other: &TokenMask) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let bit = w.trailing_zeros();
                    w &= w - 1;
                    (wi * 64) as u32 + bit
                })
            })
        })
    }

    /// Sets the logit of every token outside the mask to −∞, so no sampler (greedy,
    /// temperature, top-p) can pick it. Logits beyond the mask's length are disallowed too.
    pub fn apply_to_logits(&self, logits: &mut [f32]) {
        for (wi, chunk) in logits.chunks_mut(64).enumerate() {
            let w = self.words.get(wi).copied().unwrap_or(0);
            if w == u64::MAX {
                continue;
            }
            for (bit, l) in chunk.iter_mut().enumerate() {
                if w & (1 << bit) == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_iter_and_apply() {
        let mut m = TokenMask::new(130);
        for id in [0, 63, 64, 129, 500] {
            m.insert(id);
        }
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![0, 63, 64, 129]);
        assert_eq!(m.count(), 4);
        let mut logits = vec![1.0f32; 131];
        m.apply_to_logits(&mut logits);
        let kept: Vec<usize> = (0..131).filter(|&i| logits[i].is_finite()).collect();
        assert_eq!(kept, vec![0, 63, 64, 129]);
    }
}
