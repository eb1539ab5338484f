//! Text generation with Candle on the CPU: Qwen2/Qwen2.5, Qwen3 and Llama (TinyLlama, SmolLM)
//! from safetensors or GGUF (Q4_K_M, Q8_0 and the other types Candle reads), with the chat
//! template from the tokenizer config, sampling, stop tokens and strings, and streaming.
//!
//! # API
//!
//! ```no_run
//! use ghost_model::generate::{ChatMessage, GenerateOptions, Generator, LoadOptions, Prompt};
//! # fn main() -> Result<(), ghost_model::generate::GenerateError> {
//! // A model directory: config.json + model.safetensors, or a .gguf; tokenizer.json beside it.
//! let mut model = Generator::load("/var/lib/ghost/models/qwen".as_ref(), &LoadOptions {
//!     threads: 2,
//!     weights: None, // or Some(path of the .gguf / .safetensors to use)
//!     candle_only: false,
//! })?;
//! let messages = [ChatMessage::system("You are terse."), ChatMessage::user("Hi")];
//! let opts = GenerateOptions { max_tokens: 64, temperature: 0.7, seed: Some(42), ..Default::default() };
//! let out = model.generate(Prompt::Chat { messages: &messages, tools: None }, &opts,
//!     &mut |piece| { print!("{piece}"); std::ops::ControlFlow::Continue(()) }, None)?;
//! println!("\n{:?}: {} prompt + {} completion tokens", out.finish_reason,
//!     out.prompt_tokens, out.completion_tokens);
//! # Ok(()) }
//! ```
//!
//! - [`Generator::load`] reads the weights (safetensors are memory-mapped; GGUF tensors are
//!   read into memory in their quantized form), tokenizer.json (required, also for GGUF: the
//!   tokenizer is paired by sitting in the same directory), tokenizer_config.json (chat
//!   template, bos/eos tokens; for GGUF the template may come from `tokenizer.chat_template`),
//!   and generation_config.json if present. Errors name the file: missing tokenizer,
//!   unsupported architecture, truncated or corrupt weights.
//! - [`Generator::generate`] takes a [`Prompt`] (chat messages rendered through the template,
//!   raw text, or token ids) and [`GenerateOptions`]; it streams text pieces to a callback
//!   (each a whole number of UTF-8 characters; their concatenation is exactly
//!   [`Generation::text`]) and returns [`Generation`]: text, [`FinishReason`], prompt and
//!   completion token counts, timings. A prompt that does not fit the context is refused with
//!   both lengths. The callback returns `ControlFlow::Break(())` to cancel (client gone).
//! - Each call starts from an empty KV cache; within a call the cache makes each new token cost
//!   one position. Calls on one `Generator` are sequential (`&mut self`); the model server
//!   queues requests in front of it.
//! - Threads: every forward pass runs in the generator's own rayon pool of
//!   [`LoadOptions::threads`] threads, so the count from the config holds without touching
//!   process-wide state.
//!
//! # The logits hook (constrained decoding)
//!
//! At every step, after the repeat penalty and before temperature/top-p sampling, the hook is
//! called with the ids generated so far in this completion (prompt excluded) and the logits of
//! the next token, one per vocabulary id (`logits.len()` is the model's vocabulary size, which
//! may exceed the tokenizer's). Setting an entry to `f32::NEG_INFINITY` forbids that token;
//! the sampler never picks a forbidden token, at any temperature. If the hook forbids every
//! token, generation fails with [`GenerateError::AllTokensMasked`]. End-of-sequence ids
//! ([`Generator::eos_token_ids`]) are ordinary entries: allow only them to force the end,
//! forbid them to keep going. Stop tokens and stop strings still apply to what was sampled.
//! Any `FnMut(&[u32], &mut [f32])` closure is a [`LogitsHook`]; [`Generator::tokenizer`]
//! gives the vocabulary to build masks from.

mod arch;
mod error;
mod load;
mod own;
mod run;
mod sample;
mod stop;
mod stream;
mod template;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenizers::Tokenizer;

pub use arch::Architecture;
pub use error::GenerateError;
pub use load::WeightsFormat;
pub use sample::SamplingParams;
pub use template::{ChatMessage, ChatTemplate};

use load::Backend;
use run::GenerationRun;
use template::TokenizerConfig;

/// Masks the next token's logits before sampling; see the module docs for the contract.
pub trait LogitsHook {
    fn apply(&mut self, generated: &[u32], logits: &mut [f32]);
}

impl<F: FnMut(&[u32], &mut [f32])> LogitsHook for F {
    fn apply(&mut self, generated: &[u32], logits: &mut [f32]) {
        self(generated, logits)
    }
}

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Threads for inference; 0 means one per available core.
    pub threads: usize,
    /// The weights file to load (.gguf or .safetensors); `None` picks from the directory:
    /// safetensors if present, otherwise its only .gguf.
    pub weights: Option<PathBuf>,
    /// Candle's quantized Qwen2 even where our Q8_0 decoder would run (comparisons; also
    /// `GHOST_MODEL_ENGINE=candle` in the environment).
    pub candle_only: bool,
}

/// Settings of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate; generation also ends when the context is full.
    pub max_tokens: usize,
    /// 0 is greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// `None`: a seed from the clock (a different completion each time).
    pub seed: Option<u64>,
    /// 1.0 is off.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    /// Stop strings: generation ends before the first of them, which is not part of the text.
    /// A stop string that is a single special token (`<|im_end|>`) is matched as that token.
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            temperature: 0.7,
            top_p: 0.9,
            seed: None,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            stop: Vec::new(),
        }
    }
}

/// What to generate from.
#[derive(Debug, Clone, Copy)]
pub enum Prompt<'a> {
    /// Rendered through the model's chat template, with the assistant turn opened.
    Chat {
        messages: &'a [ChatMessage],
        tools: Option<&'a serde_json::Value>,
    },
    /// Used as is; the tokenizer adds its special tokens (e.g. Llama's BOS).
    Text(&'a str),
    /// Token ids, used as is.
    Tokens(&'a [u32]),
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token, a stop token or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
    /// The streaming callback asked to stop.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    /// Tokens sampled, including an end-of-sequence or stop token that ended generation.
    pub completion_tokens: usize,
    /// The sampled ids (same count as `completion_tokens`).
    pub tokens: Vec<u32>,
    /// Prompt tokens whose keys and values were still cached from the previous generation (the
    /// longest common prefix; our decoder only), so only the rest went through the model.
    pub cached_prompt_tokens: usize,
    /// Time of the prompt's forward pass (prompt processing).
    pub prompt_time: Duration,
    /// Time of everything after it (sampling, the per-token forward passes, decoding).
    pub generation_time: Duration,
}

/// A loaded model with its tokenizer and chat template, ready to generate.
pub struct Generator {
    backend: Backend,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    eos_token_ids: Vec<u32>,
    architecture: Architecture,
    format: WeightsFormat,
    weights_path: PathBuf,
    context_length: usize,
    pool: rayon::ThreadPool,
    /// The tokens whose keys and values the backend's cache holds, positions 0.. in order.
    cached: Vec<u32>,
}

impl Generator {
    /// Loads a model from `path`: a model directory, or a .gguf/.safetensors file inside one.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self, GenerateError> {
        Self::load_with_tokenizer(path, None, opts)
    }

    /// As [`load`](Self::load), with tokenizer.json and tokenizer_config.json read from
    /// `tokenizer_dir` instead of beside the weights: a GGUF repository on the hub
    /// (Qwen/Qwen2.5-0.5B-Instruct-GGUF) carries no tokenizer, so model.toml pairs it with
    /// the tokenizer files of the original repository.
    pub fn load_with_tokenizer(
        path: &Path,
        tokenizer_dir: Option<&Path>,
        opts: &LoadOptions,
    ) -> Result<Self, GenerateError> {
        let (dir, explicit) = if path.is_file() {
            (
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                Some(path.to_path_buf()),
            )
        } else if path.is_dir() {
            (path.to_path_buf(), opts.weights.clone())
        } else {
            return Err(GenerateError::io(path, "no such file or directory"));
        };
        let tokenizer_dir = tokenizer_dir.unwrap_or(&dir);
        let tokenizer_path = tokenizer_dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(GenerateError::MissingTokenizer {
                path: tokenizer_path,
            });
        }
        let tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| GenerateError::BadTokenizer {
                path: tokenizer_path.clone(),
                reason: e.to_string(),
            })?;
        let tokenizer_config = TokenizerConfig::read(&tokenizer_dir.join("tokenizer_config.json"))?;

        let files = load::find_weights(&dir, explicit.as_deref())?;
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            opts.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ghost-gen-{i}"))
            .build()
            .map_err(|e| {
                GenerateError::Inference(format!("cannot start {threads} inference threads: {e}"))
            })?;
        let candle_only = opts.candle_only || std::env::var("GHOST_MODEL_ENGINE").as_deref() == Ok("candle");
        let loaded = pool.install(|| load::load(&dir, files, candle_only))?;

        let primary_eos = loaded.eos_token_ids.first().copied();
        let mut eos_token_ids = loaded.eos_token_ids;
        for token in tokenizer_config.eos_token.iter() {
            eos_token_ids.extend(tokenizer.token_to_id(token));
        }
        eos_token_ids.sort_unstable();
        eos_token_ids.dedup();

        let template_source = tokenizer_config.chat_template.or(loaded.gguf_chat_template);
        let template = match template_source {
            Some(source) => {
                // A GGUF-only directory has no tokenizer_config.json: take the end token's text
                // from the id the weights declare, so templates that write it (TinyLlama's
                // `</s>`) still do.
                let eos = tokenizer_config.eos_token.clone().or_else(|| primary_eos.and_then(|id| tokenizer.id_to_token(id)));
                let bos = tokenizer_config.bos_token.as_deref().unwrap_or("");
                Some(ChatTemplate::new(&source, bos, eos.as_deref().unwrap_or(""))?)
            }
            None => None,
        };
        Ok(Generator {
            backend: loaded.backend,
            tokenizer,
            template,
            eos_token_ids,
            architecture: loaded.architecture,
            format: loaded.format,
            weights_path: loaded.path,
            context_length: loaded.context_length,
            pool,
            cached: Vec::new(),
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }
    pub fn format(&self) -> &WeightsFormat {
        &self.format
    }
    pub fn weights_path(&self) -> &Path {
        &self.weights_path
    }
    /// Most positions (prompt + completion) the model attends to.
    pub fn context_length(&self) -> usize {
        self.context_length
    }
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Forgets the cached prompt, so the next generation runs its whole prompt (benchmarks).
    pub fn forget_cache(&mut self) {
        self.cached.clear();
    }

    /// What runs the forward pass: `ghost` (our Qwen2 decoder for Q8_0 and Q4_K_M GGUF, own.rs) or `candle`.
    pub fn engine(&self) -> &'static str {
        self.backend.engine()
    }

    /// The prompt text the chat template makes of `messages`, assistant turn opened.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
    ) -> Result<String, GenerateError> {
        self.template
            .as_ref()
            .ok_or(GenerateError::NoChatTemplate)?
            .render(messages, tools, true)
    }

    /// The token ids of a prompt.
    pub fn encode(&self, prompt: Prompt<'_>) -> Result<Vec<u32>, GenerateError> {
        let (text, add_special) = match prompt {
            Prompt::Tokens(ids) => return Ok(ids.to_vec()),
            // Templates write BOS themselves, so the rendered text is encoded without adding
            // special tokens, as transformers' apply_chat_template does.
            Prompt::Chat { messages, tools } => (self.render_chat(messages, tools)?, false),
            Prompt::Text(text) => (text.to_string(), true),
        };
        let encoding = self
            .tokenizer
            .encode(text.as_str(), add_special)
            .map_err(|e| GenerateError::Tokenize(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Generates a completion of `prompt`; see the module docs.
    pub fn generate(
        &mut self,
        prompt: Prompt<'_>,
        opts: &GenerateOptions,
        on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
        logits_hook: Option<&mut dyn LogitsHook>,
    ) -> Result<Generation, GenerateError> {
        let prompt_ids = self.encode(prompt)?;
        let mut run = GenerationRun {
            pool: &self.pool,
            backend: &mut self.backend,
            tokenizer: &self.tokenizer,
            eos_token_ids: &self.eos_token_ids,
            context_length: self.context_length,
            cached: &mut self.cached,
        };
        run.run(&prompt_ids, opts, on_piece, logits_hook)
    }
}
