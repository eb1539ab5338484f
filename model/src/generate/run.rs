//! The loop of one generation: prompt forward pass, then sample → stop checks → stream →
//! forward, one token at a time, with the KV cache carrying the positions already seen.

use std::ops::ControlFlow;
use std::time::Instant;

use tokenizers::Tokenizer;

use super::load::Backend;
use super::sample::{Sampler, SamplingParams};
use super::stop::StopCondition;
use super::stream::TextStream;
use super::{FinishReason, GenerateError, GenerateOptions, Generation, LogitsHook};

/// The loop of one generation, borrowing what it needs from the [`super::Generator`].
pub(super) struct GenerationRun<'g> {
    pub pool: &'g rayon::ThreadPool,
    pub backend: &'g mut Backend,
    pub tokenizer: &'g Tokenizer,
    pub eos_token_ids: &'g [u32],
    pub context_length: usize,
    /// The tokens in the backend's cache (see [`super::Generator`]).
    pub cached: &'g mut Vec<u32>,
}

impl GenerationRun<'_> {
    /// One forward pass on the generator's threads (the loop itself stays on the caller's
    /// thread, so the callback and the hook need not be `Send`).
    /// Keeps the cache's record: on success `tokens` follow the first `pos` cached ones; a
    /// failed pass leaves the cache unknown, so the next generation starts from nothing.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, GenerateError> {
        let backend = &mut *self.backend;
        self.cached.truncate(pos);
        match self.pool.install(|| backend.forward(tokens, pos)) {
            Ok(logits) => {
                self.cached.extend_from_slice(tokens);
                Ok(logits)
            }
            Err(e) => {
                self.cached.clear();
                Err(e.into())
            }
        }
    }

    /// Keeps the cached positions this prompt starts with (always leaving at least its last
    /// token to run, for the logits), where the backend can; otherwise clears the cache.
    /// Returns how many are kept.
    fn reuse_prefix(&mut self, prompt_ids: &[u32]) -> Result<usize, GenerateError> {
        let common = self.cached.iter().zip(prompt_ids).take_while(|(a, b)| a == b).count().min(prompt_ids.len() - 1);
        if common > 0 && self.backend.truncate_kv_cache(common) {
            self.cached.truncate(common);
            return Ok(common);
        }
        self.cached.clear();
        self.backend.clear_kv_cache()?;
        Ok(0)
    }

    pub(super) fn run(
        &mut self,
        prompt_ids: &[u32],
        opts: &GenerateOptions,
        on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
        mut logits_hook: Option<&mut dyn LogitsHook>,
    ) -> Result<Generation, GenerateError> {
        if prompt_ids.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if prompt_ids.len() >= self.context_length {
            return Err(GenerateError::PromptTooLong {
                prompt_tokens: prompt_ids.len(),
                context: self.context_length,
            });
        }
        let seed = opts.seed.unwrap_or_else(clock_seed);
        let mut sampler = Sampler::new(SamplingParams {
            temperature: opts.temperature,
            top_p: opts.top_p,
            repeat_penalty: opts.repeat_penalty,
            repeat_last_n: opts.repeat_last_n,
            seed,
        })
        .map_err(GenerateError::BadOption)?;
        let mut stop = StopCondition::new(self.stop_token_ids(&opts.stop), &opts.stop);
        let mut stream = TextStream::new();
        let mut text = String::new();
        let mut generated: Vec<u32> = Vec::new();
        // Repeat-penalty context: the prompt and what follows.
        let mut context: Vec<u32> = prompt_ids.to_vec();
        let detok = |e: String| GenerateError::Tokenize(e);

        let cached_prompt_tokens = self.reuse_prefix(prompt_ids)?;
        let start = Instant::now();
        let mut logits = self.forward(&prompt_ids[cached_prompt_tokens..], cached_prompt_tokens)?;
        let prompt_time = start.elapsed();
        let gen_start = Instant::now();

        let mut finish_reason = FinishReason::Length;
        let mut stopped_by_string = false;
        let mut emit = |piece: &str, text: &mut String| -> ControlFlow<()> {
            if piece.is_empty() {
                return ControlFlow::Continue(());
            }
            text.push_str(piece);
            on_piece(piece)
        };
        while generated.len() < opts.max_tokens {
            sampler.penalize(&mut logits, &context);
            if let Some(hook) = logits_hook.as_deref_mut() {
                hook.apply(&generated, &mut logits);
            }
            let token = sampler
                .sample(&logits)
                .ok_or(GenerateError::AllTokensMasked {
                    step: generated.len(),
                })?;
            generated.push(token);
            context.push(token);
            if stop.is_stop_token(token) {
                finish_reason = FinishReason::Stop;
                break;
            }
            let piece = stream.push(self.tokenizer, token).map_err(detok)?;
            let released = stop.push_text(&piece);
            let flow = emit(&released.text, &mut text);
            if released.stopped {
                finish_reason = FinishReason::Stop;
                stopped_by_string = true;
                break;
            }
            if flow.is_break() {
                finish_reason = FinishReason::Cancelled;
                break;
            }
            let position = prompt_ids.len() + generated.len();
            if generated.len() >= opts.max_tokens || position >= self.context_length {
                break;
            }
            logits = self.forward(&[token], position - 1)?;
        }
        if finish_reason != FinishReason::Cancelled && !stopped_by_string {
            // Release what the stream (an unfinished character) and the stop-string check
            // (a possible start of a stop string) still hold; it may complete a stop string.
            let tail = stream.finish(self.tokenizer).map_err(detok)?;
            let released = stop.push_text(&tail);
            let mut rest = released.text;
            if released.stopped {
                finish_reason = FinishReason::Stop;
            } else {
                rest.push_str(&stop.finish());
            }
            // Generation has ended, so a cancel from this last piece changes nothing.
            let _ = emit(&rest, &mut text);
        }
        Ok(Generation {
            text,
            finish_reason,
            prompt_tokens: prompt_ids.len(),
            completion_tokens: generated.len(),
            tokens: generated,
            cached_prompt_tokens,
            prompt_time,
            generation_time: gen_start.elapsed(),
        })
    }

    /// End-of-sequence ids, plus stop strings that are exactly one special token: those never
    /// appear in decoded text (special tokens are skipped), so they are matched as ids.
    fn stop_token_ids(&self, stop: &[String]) -> Vec<u32> {
        let mut ids = self.eos_token_ids.to_vec();
        for s in stop {
            if let Some(id) = self.tokenizer.token_to_id(s) {
                let special = self
                    .tokenizer
                    .get_added_vocabulary()
                    .get_added_tokens_decoder()
                    .get(&id)
                    .is_some_and(|t| t.special);
                if special {
                    ids.push(id);
                }
            }
        }
        ids
    }
}

/// A seed for requests that give none: the clock's nanoseconds.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
