//! The one error type of generation: every variant names the file, architecture or length at
//! fault, so `ghost model generate` and the model server can show it as is.

use std::path::PathBuf;

/// Why loading a model or generating from it failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error("{}: no model weights found (expected model.safetensors, model.safetensors.index.json, model-*.safetensors or one *.gguf)", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("{}: several GGUF files ({}); name the one to load", dir.display(), files.join(", "))]
    AmbiguousWeights { dir: PathBuf, files: Vec<String> },
    #[error("{}: missing tokenizer (tokenizer.json is needed beside the weights)", path.display())]
    MissingTokenizer { path: PathBuf },
    #[error("{}: bad tokenizer: {reason}", path.display())]
    BadTokenizer { path: PathBuf, reason: String },
    #[error("{}: bad model config: {reason}", path.display())]
    BadConfig { path: PathBuf, reason: String },
    #[error("{}: unsupported model architecture {architecture:?} (supported: Qwen2/Qwen2.5, Qwen3, Llama)", path.display())]
    UnsupportedArchitecture { path: PathBuf, architecture: String },
    #[error("{}: corrupt or truncated weights: {reason}", path.display())]
    CorruptWeights { path: PathBuf, reason: String },
    #[error("no chat template: neither tokenizer_config.json nor the GGUF metadata has one")]
    NoChatTemplate,
    #[error("chat template: {0}")]
    Template(String),
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt of {prompt_tokens} tokens does not fit the model's context of {context} tokens (at least one token must be left to generate)")]
    PromptTooLong {
        prompt_tokens: usize,
        context: usize,
    },
    #[error("bad generation option: {0}")]
    BadOption(String),
    #[error("the logits hook masked every token at step {step}; nothing can be sampled")]
    AllTokensMasked { step: usize },
    #[error("inference failed: {0}")]
    Inference(String),
}

impl GenerateError {
    pub(crate) fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        GenerateError::Io {
            path: path.into(),
            reason: err.to_string(),
        }
    }
}

impl From<candle_core::Error> for GenerateError {
    fn from(err: candle_core::Error) -> Self {
        GenerateError::Inference(err.to_string())
    }
}
