//! Decoding constrained to a JSON schema: at each step only tokens that keep the output a
//! prefix of a schema-valid JSON value may be sampled, so whatever the model's logits (even a
//! random model's), the text parses and validates, and it is finished within the token budget.
//!
//! A sampler loop drives a [`Constraint`]:
//! ```text
//! while !c.is_complete() {
//!     let logits = model.forward(..);        // one row of logits
//!     c.mask_logits(&mut logits);            // disallowed tokens → −∞
//!     let t = sample(&logits);
//!     c.advance(t)?;                         // feed the model `t` next
//! }
//! ```
//! With [`crate::generate`]'s logits hook, which reports the ids generated so far, use
//! [`Constraint::mask_generated`] instead: it catches up with those ids and, once the value is
//! complete, allows only the end-of-sequence ids.
//!
//! Masking a step costs one walk of the vocabulary's prefix tree, pruned at the first byte
//! the schema rejects; inside free string text the plain-text tokens are taken by length.
//! Nothing here blocks or touches the file system.

mod mask;
mod matcher;
mod schema;
mod tool;
mod vocab;

use std::sync::Arc;

pub use mask::TokenMask;
pub use schema::{Grammar, Limits, SchemaError};
pub use tool::{tool_call_schema, ToolSpec};
pub use vocab::Vocabulary;

use matcher::Matcher;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstrainError {
    #[error("a token budget of {budget} cannot hold the shortest valid value ({needed} tokens)")]
    BudgetTooSmall { needed: usize, budget: usize },
    #[error("the vocabulary has no single-byte token for {0:?}, which finishing a value may need")]
    MissingByte(char),
    #[error("token {0} is not allowed here")]
    TokenNotAllowed(u32),
    #[error("the value is already complete")]
    Complete,
}

/// One constrained generation: the schema, the vocabulary, what has been written, and how
/// many tokens are left.
pub struct Constraint {
    grammar: Arc<Grammar>,
    vocab: Arc<Vocabulary>,
    matcher: Matcher,
    remaining: usize,
    /// Tokens taken so far.
    taken: usize,
    output: Vec<u8>,
    mask: TokenMask,
    scratch: Vec<Matcher>,
}

impl Constraint {
    /// Starts a value of `grammar` that must be finished within `max_tokens` tokens. Fails when
    /// even the shortest value needs more, or when the vocabulary lacks a single-byte token
    /// that the guarantee to finish relies on (every byte-level BPE vocabulary has them all).
    pub fn new(grammar: Arc<Grammar>, vocab: Arc<Vocabulary>, max_tokens: usize) -> Result<Self, ConstrainError> {
        let mut needed_bytes = grammar.completion_bytes();
        if vocab.has_partial_utf8() {
            needed_bytes.extend(0x80..=0xbf);
        }
        if let Some(b) = needed_bytes.into_iter().find(|&b| !vocab.has_single_byte(b)) {
            return Err(ConstrainError::MissingByte(char::from(b)));
        }
        let matcher = Matcher::new(&grammar);
        let needed = matcher.distance(&grammar);
        if needed > max_tokens {
            return Err(ConstrainError::BudgetTooSmall { needed, budget: max_tokens });
        }
        let mask = TokenMask::new(vocab.len());
        Ok(Self { grammar, vocab, matcher, remaining: max_tokens, taken: 0, output: Vec::new(), mask, scratch: Vec::new() })
    }

    /// The tokens that may come next. Empty once the value is complete.
    pub fn allowed(&mut self) -> &TokenMask {
        self.mask.clear();
        if !self.is_complete() {
            self.vocab.allowed(&self.grammar, &self.matcher, self.remaining, &mut self.scratch, &mut self.mask);
        }
        &self.mask
    }

    /// The same set as [`allowed`](Self::allowed), found by trying every token on its own:
    /// the reference the prefix-tree walk is tested against and the baseline it is measured
    /// against. Slow (the whole vocabulary per step); not for generation.
    #[doc(hidden)]
    pub fn allowed_by_scanning(&self) -> TokenMask {
        let mut mask = TokenMask::new(self.vocab.len());
        if self.is_complete() {
            return mask;
        }
        let mut m = Matcher::default();
        for id in 0..self.vocab.len() as u32 {
            let bytes = self.vocab.token_bytes(id);
            if bytes.is_empty() {
                continue;
            }
            m.clone_from(&self.matcher);
            if m.feed_all(&self.grammar, bytes) && m.distance(&self.grammar) < self.remaining {
                mask.insert(id);
            }
        }
        mask
    }

    /// Sets every disallowed token's logit to −∞ (`logits` is one row, vocabulary-wide).
    pub fn mask_logits(&mut self, logits: &mut [f32]) {
        self.allowed();
        self.mask.apply_to_logits(logits);
    }

    /// For a sampler that reports every id generated so far (the generate module's logits
    /// hook): takes the ids not yet taken, then masks `logits`. Once the value is complete only
    /// the `eos` ids stay allowed, so generation ends there; give it a `max_tokens` one above
    /// this constraint's budget for that last token. An id that breaks the constraint (a
    /// sampler that ignored the mask) forbids every token, which stops the generation.
    pub fn mask_generated(&mut self, generated: &[u32], eos: &[u32], logits: &mut [f32]) {
        let mut caught_up = true;
        for &id in generated.get(self.taken..).unwrap_or(&[]) {
            if self.advance(id).is_err() {
                caught_up = false;
                break;
            }
        }
        if !caught_up || generated.len() < self.taken {
            logits.fill(f32::NEG_INFINITY);
        } else if self.is_complete() {
            let mut end = TokenMask::new(logits.len());
            eos.iter().for_each(|&id| end.insert(id));
            end.apply_to_logits(logits);
        } else {
            self.mask_logits(logits);
        }
    }

    /// Takes `token` as the next one. A token outside [`allowed`](Self::allowed) is refused and
    /// changes nothing.
    pub fn advance(&mut self, token: u32) -> Result<(), ConstrainError> {
        if self.is_complete() {
            return Err(ConstrainError::Complete);
        }
        let bytes = self.vocab.token_bytes(token);
        if bytes.is_empty() || self.remaining == 0 {
            return Err(ConstrainError::TokenNotAllowed(token));
        }
        let mut next = self.matcher.clone();
        if !next.feed_all(&self.grammar, bytes) || next.distance(&self.grammar) >= self.remaining {
            return Err(ConstrainError::TokenNotAllowed(token));
        }
        self.matcher = next;
        self.output.extend_from_slice(bytes);
        self.remaining -= 1;
        self.taken += 1;
        Ok(())
    }

    /// The value is complete: stop generating. (A bare number at the top level counts as
    /// complete after its first digit, as JSON text has no end mark for it.)
    pub fn is_complete(&self) -> bool {
        self.matcher.is_complete(&self.grammar)
    }

    /// The JSON text written so far.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Tokens left in the budget.
    pub fn remaining_tokens(&self) -> usize {
        self.remaining
    }
}

#[cfg(test)]
mod tests;
