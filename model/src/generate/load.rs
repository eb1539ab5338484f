//! Loading weights: safetensors through a memory-mapped VarBuilder (converted to f32, the type
//! Candle's CPU matmuls are fastest in), GGUF through candle's `gguf_file` reader into the
//! quantized model of the family, or for Qwen2 in llama.cpp's Q8_0 and Q4_K_M types into our
//! own decoder's tiles (own.rs). Every failure names the file; a GGUF whose tensors reach past
//! the end of the file is refused before any tensor is read.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{
    llama, quantized_llama, quantized_qwen2, quantized_qwen3, qwen2, qwen3,
};

use super::arch::Architecture;
use super::GenerateError;

/// Where the weights come from and in which form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsFormat {
    /// Unquantized safetensors, run in f32.
    Safetensors,
    /// GGUF; the string is the type of the largest tensor (`Q4K`, `Q8_0`, …).
    Gguf(String),
}

/// The model family's forward pass with its KV cache (kept by Candle's models).
pub(crate) enum Backend {
    Qwen2(qwen2::ModelForCausalLM),
    Qwen3(qwen3::ModelForCausalLM),
    Llama {
        model: llama::Llama,
        cache: llama::Cache,
        config: llama::Config,
    },
    QuantizedQwen2(quantized_qwen2::ModelWeights),
    /// Qwen2 from a GGUF whose projections are all Q8_0, Q5_0, Q4_K or Q6_K (llama.cpp's Q8_0
    /// and Q4_K_M): our own decoder (own.rs).
    OwnQwen2(Box<super::own::OwnQwen2>),
    QuantizedQwen3(quantized_qwen3::ModelWeights),
    QuantizedLlama(quantized_llama::ModelWeights),
}

impl Backend {
    /// Runs `tokens` at positions `pos..` and returns the logits of the last one.
    pub(crate) fn forward(&mut self, tokens: &[u32], pos: usize) -> candle_core::Result<Vec<f32>> {
        let input = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
        let logits = match self {
            Backend::Qwen2(m) => m.forward(&input, pos)?,
            Backend::Qwen3(m) => m.forward(&input, pos)?,
            Backend::Llama { model, cache, .. } => model.forward(&input, pos, cache)?,
            Backend::QuantizedQwen2(m) => m.forward(&input, pos)?,
            Backend::OwnQwen2(m) => return m.forward(tokens, pos),
            Backend::QuantizedQwen3(m) => m.forward(&input, pos)?,
            Backend::QuantizedLlama(m) => m.forward(&input, pos)?,
        };
        logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
    }

    pub(crate) fn engine(&self) -> &'static str {
        match self {
            Backend::OwnQwen2(_) => "ghost",
            _ => "candle",
        }
    }

    /// Keeps the first `n` cached positions and forgets the rest, where the backend can
    /// (ours); `false` where it cannot (Candle's models only clear).
    pub(crate) fn truncate_kv_cache(&mut self, n: usize) -> bool {
        match self {
            Backend::OwnQwen2(m) => m.truncate_kv_cache(n),
            _ => false,
        }
    }

    /// Forgets every cached position, so the next forward starts a new sequence at 0.
    pub(crate) fn clear_kv_cache(&mut self) -> candle_core::Result<()> {
        match self {
            Backend::Qwen2(m) => m.clear_kv_cache(),
            Backend::Qwen3(m) => m.clear_kv_cache(),
            Backend::Llama { cache, config, .. } => {
                *cache = llama::Cache::new(true, DType::F32, config, &Device::Cpu)?
            }
            Backend::QuantizedQwen2(m) => m.clear_kv_cache(),
            Backend::OwnQwen2(m) => m.clear_kv_cache(),
            Backend::QuantizedQwen3(m) => m.clear_kv_cache(),
            Backend::QuantizedLlama(m) => m.clear_kv_cache(),
        }
        Ok(())
    }
}

/// What loading the weights yields besides the forward pass.
pub(crate) struct LoadedWeights {
    pub backend: Backend,
    pub architecture: Architecture,
    pub format: WeightsFormat,
    /// The file that was loaded (the first shard for sharded safetensors).
    pub path: PathBuf,
    pub context_length: usize,
    /// End-of-sequence ids the weights' metadata names (config.json, generation_config.json, GGUF).
    pub eos_token_ids: Vec<u32>,
    /// `tokenizer.chat_template` from GGUF metadata, used when tokenizer_config.json has none.
    pub gguf_chat_template: Option<String>,
}

/// The weight files to load: the caller's choice, or what the directory holds.
pub(crate) enum WeightFiles {
    Safetensors(Vec<PathBuf>),
    Gguf(PathBuf),
}

/// Finds the weights in `dir`, or takes `explicit` (a .gguf or .safetensors file) as given.
pub(crate) fn find_weights(
    dir: &Path,
    explicit: Option<&Path>,
) -> Result<WeightFiles, GenerateError> {
    if let Some(file) = explicit {
        if !file.is_file() {
            return Err(GenerateError::io(file, "no such file"));
        }
        return Ok(match file.extension().and_then(|e| e.to_str()) {
            Some("gguf") => WeightFiles::Gguf(file.to_path_buf()),
            _ => WeightFiles::Safetensors(vec![file.to_path_buf()]),
        });
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| GenerateError::io(&index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| GenerateError::BadConfig {
                path: index.clone(),
                reason: e.to_string(),
            })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| GenerateError::BadConfig {
                path: index.clone(),
                reason: "no `weight_map` object".into(),
            })?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(WeightFiles::Safetensors(files));
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(WeightFiles::Safetensors(vec![single]));
    }
    let mut safetensors = Vec::new();
    let mut ggufs = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| GenerateError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| GenerateError::io(dir, e))?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => safetensors.push(path),
            Some("gguf") => ggufs.push(path),
            _ => {}
        }
    }
    safetensors.sort();
    ggufs.sort();
    if !safetensors.is_empty() {
        return Ok(WeightFiles::Safetensors(safetensors));
    }
    match ggufs.len() {
        0 => Err(GenerateError::NoWeights {
            dir: dir.to_path_buf(),
        }),
        1 => Ok(WeightFiles::Gguf(ggufs.remove(0))),
        _ => Err(GenerateError::AmbiguousWeights {
            dir: dir.to_path_buf(),
            files: ggufs
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect(),
        }),
    }
}

pub(crate) fn load(dir: &Path, files: WeightFiles, candle_only: bool) -> Result<LoadedWeights, GenerateError> {
    let path = match &files {
        WeightFiles::Safetensors(paths) => {
            paths.first().cloned().unwrap_or_else(|| dir.to_path_buf())
        }
        WeightFiles::Gguf(path) => path.clone(),
    };
    // Candle checks shapes and sizes with errors, but a crafted file could still reach an
    // arithmetic overflow or index panic inside it; a bad file must never take the server down.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match files {
        WeightFiles::Safetensors(paths) => load_safetensors(dir, &paths),
        WeightFiles::Gguf(path) => load_gguf(dir, &path, candle_only),
    }));
    result.unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the loader panicked".into());
        Err(GenerateError::CorruptWeights { path, reason })
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value, GenerateError> {
    let text = std::fs::read_to_string(path).map_err(|e| GenerateError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| GenerateError::BadConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// `eos_token_id` as HF writes it: one id or a list.
fn eos_ids(json: &serde_json::Value) -> Vec<u32> {
    match json.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|n| vec![n as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn load_safetensors(dir: &Path, paths: &[PathBuf]) -> Result<LoadedWeights, GenerateError> {
    let first = paths
        .first()
        .cloned()
        .ok_or_else(|| GenerateError::NoWeights {
            dir: dir.to_path_buf(),
        })?;
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(GenerateError::BadConfig {
            path: config_path,
            reason: "missing (safetensors weights need config.json beside them)".into(),
        });
    }
    let config = read_json(&config_path)?;
    let architecture = Architecture::from_config(&config, &config_path)?;
    let mut eos_token_ids = eos_ids(&config);
    let generation_config = dir.join("generation_config.json");
    if generation_config.is_file() {
        eos_token_ids.extend(eos_ids(&read_json(&generation_config)?));
    }

    for path in paths {
        // SAFETY: the map is only read while this call runs; the hub moves finished files into
        // place by rename, so a mapped file is never rewritten underneath us.
        unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(|e| {
            GenerateError::CorruptWeights {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
    }
    // SAFETY: as above; the VarBuilder keeps the maps for the model's lifetime and the files are
    // replaced only by rename, never written in place.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(paths, DType::F32, &Device::Cpu) }
        .map_err(|e| GenerateError::CorruptWeights {
            path: first.clone(),
            reason: e.to_string(),
        })?;
    let bad_config = |e: serde_json::Error| GenerateError::BadConfig {
        path: config_path.clone(),
        reason: e.to_string(),
    };
    let bad_weights = |e: candle_core::Error| GenerateError::CorruptWeights {
        path: first.clone(),
        reason: e.to_string(),
    };

    let (backend, context_length) = match architecture {
        Architecture::Qwen2 => {
            let mut cfg: qwen2::Config =
                serde_json::from_value(config.clone()).map_err(bad_config)?;
            // Candle applies `sliding_window` whatever `use_sliding_window` says; Qwen2.5 ships
            // use_sliding_window=false with a window smaller than its context.
            if !cfg.use_sliding_window {
                cfg.sliding_window = cfg.max_position_embeddings;
            }
            let model = qwen2::ModelForCausalLM::new(&cfg, vb).map_err(bad_weights)?;
            (Backend::Qwen2(model), cfg.max_position_embeddings)
        }
        Architecture::Qwen3 => {
            let cfg: qwen3::Config = serde_json::from_value(config.clone()).map_err(bad_config)?;
            let model = qwen3::ModelForCausalLM::new(&cfg, vb).map_err(bad_weights)?;
            (Backend::Qwen3(model), cfg.max_position_embeddings)
        }
        Architecture::Llama => {
            let cfg: llama::LlamaConfig =
                serde_json::from_value(config.clone()).map_err(bad_config)?;
            let cfg = cfg.into_config(false);
            let head_dim = config.get("head_dim").and_then(|v| v.as_u64());
            check_llama_head_dim(&cfg, head_dim).map_err(|reason| GenerateError::BadConfig {
                path: config_path.clone(),
                reason,
            })?;
            let model = llama::Llama::load(vb, &cfg).map_err(bad_weights)?;
            let cache =
                llama::Cache::new(true, DType::F32, &cfg, &Device::Cpu).map_err(bad_weights)?;
            let context = cfg.max_position_embeddings;
            (
                Backend::Llama {
                    model,
                    cache,
                    config: cfg,
                },
                context,
            )
        }
    };
    Ok(LoadedWeights {
        backend,
        architecture,
        format: WeightsFormat::Safetensors,
        path: first,
        context_length,
        eos_token_ids,
        gguf_chat_template: None,
    })
}

fn load_gguf(_dir: &Path, path: &Path, candle_only: bool) -> Result<LoadedWeights, GenerateError> {
    let corrupt = |reason: String| GenerateError::CorruptWeights {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| GenerateError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut content = gguf_file::Content::read(&mut reader).map_err(|e| corrupt(e.to_string()))?;
    let file_len = reader
        .seek(std::io::SeekFrom::End(0))
        .map_err(|e| GenerateError::io(path, e))?;
    check_tensor_extents(&content, file_len).map_err(corrupt)?;

    let arch_name = match content.metadata.get("general.architecture") {
        Some(gguf_file::Value::String(s)) => s.clone(),
        _ => return Err(corrupt("no `general.architecture` in the metadata".into())),
    };
    let architecture = Architecture::from_gguf_name(&arch_name, path)?;
    let prefix = architecture.gguf_name();
    let meta_u32 = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
    let mut context_length = meta_u32(&format!("{prefix}.context_length"))
        .ok_or_else(|| corrupt(format!("no `{prefix}.context_length` in the metadata")))?
        as usize;
    if architecture == Architecture::Llama {
        // Candle's quantized Llama reads head_dim as embedding_length / head_count and has
        // rotary tables for MAX_SEQ_LEN (4096) positions, whatever the file says: refuse what it
        // would run wrongly, and stop at its last position (SmolLM2 declares 8192) instead of
        // failing in the middle of a generation.
        let (embd, heads) = (
            meta_u32("llama.embedding_length").unwrap_or(0),
            meta_u32("llama.attention.head_count").unwrap_or(0),
        );
        if let Some(key_length) = meta_u32("llama.attention.key_length") {
            if heads == 0 || key_length * heads != embd {
                return Err(GenerateError::BadConfig {
                    path: path.to_path_buf(),
                    reason: format!(
                        "llama.attention.key_length {key_length} × {heads} heads is not \
                         embedding_length {embd}; Candle's Llama runs only heads of \
                         embedding_length / head_count"
                    ),
                });
            }
        }
        context_length = context_length.min(quantized_llama::MAX_SEQ_LEN);
    }
    let eos_token_ids = meta_u32("tokenizer.ggml.eos_token_id")
        .into_iter()
        .collect();
    let gguf_chat_template = match content.metadata.get("tokenizer.chat_template") {
        Some(gguf_file::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let format = WeightsFormat::Gguf(dominant_type(&content));

    let device = Device::Cpu;
    let backend = match architecture {
        Architecture::Qwen2 => {
            // Our decoder where every projection is of a type it runs (`GHOST_MODEL_ENGINE=candle`
            // keeps Candle's, to compare); Candle's for every other quantization.
            let ours = if candle_only {
                None
            } else {
                super::own::OwnQwen2::from_gguf(&content, &mut reader, rayon::current_num_threads()).map_err(|e| corrupt(e.to_string()))?
            };
            match ours {
                Some(m) => Ok(Backend::OwnQwen2(Box::new(m))),
                None => quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, &device).map(Backend::QuantizedQwen2),
            }
        }
        Architecture::Qwen3 => {
            // Candle's quantized Qwen3 builds its rotary tables in the type named by
            // `general.dtype` (a Candle-only key that llama.cpp's files lack) and falls back to
            // f16: positions above 2048 then round to even numbers (above 4096 to multiples of
            // 4, …) and the angles to f16, so long prompts drift from the f32 model. The CPU
            // runs activations in f32 anyway; only the tables depend on this key.
            content
                .metadata
                .entry("general.dtype".to_string())
                .or_insert(gguf_file::Value::U32(0));
            quantized_qwen3::ModelWeights::from_gguf(content, &mut reader, &device)
                .map(Backend::QuantizedQwen3)
        }
        Architecture::Llama => {
            quantized_llama::ModelWeights::from_gguf(content, &mut reader, &device)
                .map(Backend::QuantizedLlama)
        }
    }
    .map_err(|e| corrupt(e.to_string()))?;
    Ok(LoadedWeights {
        backend,
        architecture,
        format,
        path: path.to_path_buf(),
        context_length,
        eos_token_ids,
        gguf_chat_template,
    })
}

/// Candle's Llama computes head_dim as hidden_size / num_attention_heads; a config that names
/// another `head_dim` would load and produce garbage, so it is refused by name.
fn check_llama_head_dim(cfg: &llama::Config, head_dim: Option<u64>) -> Result<(), String> {
    match head_dim {
        Some(d) if d as usize * cfg.num_attention_heads != cfg.hidden_size => Err(format!(
            "head_dim {d} × {} heads is not hidden_size {}; Candle's Llama runs only heads of \
             hidden_size / num_attention_heads",
            cfg.num_attention_heads, cfg.hidden_size
        )),
        _ => Ok(()),
    }
}

/// Refuses a GGUF whose tensor data would run past the end of the file (a truncated download),
/// naming the first tensor that does, instead of failing somewhere inside a model constructor.
fn check_tensor_extents(content: &gguf_file::Content, file_len: u64) -> Result<(), String> {
    let mut infos: Vec<_> = content.tensor_infos.iter().collect();
    infos.sort_by_key(|(_, info)| info.offset);
    for (name, info) in infos {
        let dtype = info.ggml_dtype;
        let elems = info.shape.elem_count();
        if elems % dtype.block_size() != 0 {
            return Err(format!(
                "tensor {name}: {elems} elements is not a whole number of {dtype:?} blocks"
            ));
        }
        let bytes = ((elems / dtype.block_size()) as u64).saturating_mul(dtype.type_size() as u64);
        let end = content
            .tensor_data_offset
            .saturating_add(info.offset)
            .saturating_add(bytes);
        if end > file_len {
            return Err(format!(
                "truncated: tensor {name} ends at byte {end} but the file has {file_len} bytes"
            ));
        }
    }
    Ok(())
}

/// The tensor type holding the most elements: what a user calls the file's quantization.
fn dominant_type(content: &gguf_file::Content) -> String {
    let mut by_type: Vec<(String, usize)> = Vec::new();
    for info in content.tensor_infos.values() {
        let name = format!("{:?}", info.ggml_dtype);
        let n = info.shape.elem_count();
        match by_type.iter_mut().find(|(t, _)| *t == name) {
            Some((_, count)) => *count += n,
            None => by_type.push((name, n)),
        }
    }
    by_type.sort();
    by_type
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t)
        .unwrap_or_default()
}
