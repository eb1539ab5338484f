//! Sentence embeddings with a BERT-family model (all-MiniLM-L6-v2 and its kin), for the agent's
//! semantic memory: tokenise a batch, run the encoder, mean-pool over real tokens, L2-normalise.
//!
//! Everything here may block (model load, inference); none of it runs in PID 1.

mod pooling;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The longest input, in tokens, when neither the model directory nor the config says otherwise.
/// sentence-transformers' all-MiniLM-L6-v2 truncates at 256.
const DEFAULT_MAX_TOKENS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("tokenising: {0}")]
    Tokenize(String),
    #[error("inference: {0}")]
    Inference(#[from] candle_core::Error),
}

/// A loaded sentence-embedding model. Cheap to share by reference; `embed` takes `&self`.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dimension: usize,
}

impl Embedder {
    /// Loads `config.json`, `model.safetensors` (memory-mapped) and `tokenizer.json` from `dir`,
    /// the layout of a Hugging Face sentence-transformers repository. `sentence_bert_config.json`,
    /// when present, gives the truncation length, as it does for sentence-transformers.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_slice(&read(&config_path)?)
            .map_err(|e| bad_file(&config_path, e))?;

        let max_tokens = max_tokens(dir, &config)?;
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(missing(&tokenizer_path));
        }
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| bad_file(&tokenizer_path, e))?;
        let pad_id = config.pad_token_id as u32;
        let pad_token = tokenizer.id_to_token(pad_id).unwrap_or_else(|| "[PAD]".to_owned());
        // Pad each batch to its own longest input (tokenizer.json often pins a fixed 128, which
        // wastes compute on short texts); the attention mask keeps padding out of the result.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| bad_file(&tokenizer_path, e))?;

        let weights_path = dir.join("model.safetensors");
        if !weights_path.is_file() {
            return Err(missing(&weights_path));
        }
        let device = Device::Cpu;
        // SAFETY: the mapping is read-only and model files are never modified in place: the hub
        // module moves verified files into place atomically, so the bytes under the map stay put.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&weights_path], DType::F32, &device)
        }
        .map_err(|e| bad_file(&weights_path, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| bad_file(&weights_path, e))?;

        Ok(Self { model, tokenizer, device, dimension: config.hidden_size })
    }

    /// Length of every vector this model returns (384 for all-MiniLM-L6-v2).
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// One unit-length vector per text, in order. Texts longer than the model's limit are
    /// truncated, as sentence-transformers does. An empty slice gives an empty result.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let batch = encodings.len();
        let seq_len = encodings.first().map_or(0, |e| e.len());

        let mut ids = Vec::with_capacity(batch * seq_len);
        let mut type_ids = Vec::with_capacity(batch * seq_len);
        let mut mask = Vec::with_capacity(batch * seq_len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            type_ids.extend_from_slice(e.get_type_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (batch, seq_len), &self.device)?;
        let type_ids = Tensor::from_vec(type_ids, (batch, seq_len), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, seq_len), &self.device)?;

        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        let pooled = pooling::mean_normalised(&hidden, &mask)?;
        Ok(pooled.to_vec2::<f32>()?)
    }

    /// The vector of a single text.
    /// Tokens the texts take (after truncation, special tokens included): the `usage` of an
    /// embeddings request.
    pub fn count_tokens<S: AsRef<str>>(&self, texts: &[S]) -> Result<usize, EmbedError> {
        let mut total = 0;
        for t in texts {
            let enc = self
                .tokenizer
                .encode(t.as_ref(), true)
                .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
            total += enc.get_attention_mask().iter().filter(|&&m| m == 1).count();
        }
        Ok(total)
    }

    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(self.embed(&[text])?.pop().unwrap_or_default())
    }
}

/// Cosine similarity of two vectors of equal length; 0 when either is all zeros.
/// For the unit vectors `Embedder` returns this is their dot product.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "cosine similarity of vectors of different lengths");
    let (mut dot, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    dot / (aa.sqrt() * bb.sqrt())
}

/// The truncation length: sentence_bert_config.json's `max_seq_length` when present, never
/// more than the model's position table.
fn max_tokens(dir: &Path, config: &Config) -> Result<usize, EmbedError> {
    let path = dir.join("sentence_bert_config.json");
    let configured = if path.is_file() {
        let v: serde_json::Value =
            serde_json::from_slice(&read(&path)?).map_err(|e| bad_file(&path, e))?;
        v.get("max_seq_length").and_then(serde_json::Value::as_u64).map(|n| n as usize)
    } else {
        None
    };
    Ok(configured.unwrap_or(DEFAULT_MAX_TOKENS).min(config.max_position_embeddings))
}

fn read(path: &Path) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(path).map_err(|source| EmbedError::Io { path: path.to_owned(), source })
}

fn missing(path: &Path) -> EmbedError {
    EmbedError::Io { path: path.to_owned(), source: std::io::ErrorKind::NotFound.into() }
}

fn bad_file(path: &Path, e: impl std::fmt::Display) -> EmbedError {
    EmbedError::BadFile { path: path.to_owned(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_parallel_orthogonal_and_opposite_vectors() {
        assert!((cosine_similarity(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!(cosine_similarity(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-6);
        assert!((cosine_similarity(&[1.0, 1.0], &[-1.0, -1.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn load_names_the_missing_file() {
        let dir = std::env::temp_dir().join(format!("ghost-embed-missing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = Embedder::load(&dir).err().expect("an empty directory must not load");
        assert!(err.to_string().contains("config.json"), "{err}");

        std::fs::write(dir.join("config.json"), b"{ not json").unwrap();
        let err = Embedder::load(&dir).err().expect("a broken config must not load");
        assert!(err.to_string().contains("config.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
