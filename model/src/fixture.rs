//! Test fixture: writes a random-weight Qwen2-architecture model into a directory, in every form
//! the generator loads — config.json, a real byte-level BPE tokenizer.json with Qwen's chat
//! special tokens, tokenizer_config.json with Qwen2.5's chat template, generation_config.json,
//! model.safetensors (f32), and GGUF in Q8_0 and Q4_K_M. Same spec and seed, same bytes.
//!
//! GGUF files carry llama.cpp's metadata (architecture hyper-parameters and the tokenizer as
//! `tokenizer.ggml.*`, vocabulary padded to the model's size with `[PAD{id}]` tokens the way
//! llama.cpp's converter pads Qwen), so llama.cpp loads them too; our loader pairs a GGUF with
//! the tokenizer.json in its directory. Q4_K_M follows llama.cpp's recipe: Q4_K, with Q6_K for
//! the output/tied embedding and for attn_v/ffn_down in the layers that get more bits, and
//! llama.cpp's fallback for rows whose length is not a multiple of 256 (Q4_K→Q5_0, Q6_K→Q8_0) —
//! which is why Qwen2.5-0.5B (hidden 896) is mostly Q5_0 in its Q4_K_M form.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// Qwen2.5's chat template (tools included), as its tokenizer_config.json ships it.
pub const QWEN_CHAT_TEMPLATE: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

/// The chat special tokens, in Qwen's order (they follow the BPE vocabulary).
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Text the tokenizer's merges are learnt from: English, JSON and shell-ish text, so prompts in
/// tests encode to a sensible number of tokens.
const CORPUS: &str = r#"The quick brown fox jumps over the lazy dog. You are a helpful assistant.
ghostos boots a small Linux system whose first process supervises every service and runs a local model.
The user asks a question and the assistant answers it briefly, then waits for the next question.
system user assistant tool function name arguments content role message messages tools
{"name": "restart_service", "arguments": {"service": "nginx", "reason": "health check failed"}}
{"type": "object", "properties": {"path": {"type": "string"}, "count": {"type": "integer"}}, "required": ["path"]}
[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 1000, true, false, null]
Hello, world! How are you today? I am fine, thank you. What time is it? It is twelve o'clock.
The model reads the configuration, loads the weights, renders the chat template and generates text.
memory disk network process service status start stop restart logs error warning info debug
cat /etc/ghost/ghost.toml; ls -la /var/lib/ghost/models; ghostctl status nginx --json
Once upon a time there was a little computer that wanted to think for itself, and so it learned.
"#;

/// Shape and seed of a fixture model (Qwen2 architecture).
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureSpec {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub intermediate_size: usize,
    /// The model's vocabulary (embedding rows); the tokenizer may be smaller, like Qwen's.
    pub vocab_size: usize,
    /// Target size of the BPE tokenizer (merges learnt from a built-in corpus, plus specials).
    pub tokenizer_size: usize,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub rope_theta: f64,
    pub seed: u64,
}

impl FixtureSpec {
    /// A model small enough for debug-build tests; 256-wide so Q4_K really is Q4_K (k-quants
    /// need rows that are multiples of 256).
    pub fn tiny() -> Self {
        FixtureSpec {
            hidden_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            intermediate_size: 256,
            vocab_size: 512,
            tokenizer_size: 512,
            max_position_embeddings: 256,
            tie_word_embeddings: true,
            rope_theta: 1_000_000.0,
            seed: 42,
        }
    }

    /// The exact dimensions of Qwen2.5-0.5B (for benchmarks; ~2 GB as f32 safetensors).
    pub fn qwen2_5_0_5b_shape() -> Self {
        FixtureSpec {
            hidden_size: 896,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            intermediate_size: 4864,
            vocab_size: 151_936,
            tokenizer_size: 1024,
            max_position_embeddings: 32_768,
            tie_word_embeddings: true,
            rope_theta: 1_000_000.0,
            seed: 42,
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Which weight files to write (config and tokenizer files are always written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixtureForms {
    pub safetensors: bool,
    pub gguf_q8_0: bool,
    pub gguf_q4_k_m: bool,
}

impl FixtureForms {
    pub const ALL: FixtureForms = FixtureForms {
        safetensors: true,
        gguf_q8_0: true,
        gguf_q4_k_m: true,
    };
}

/// The files a fixture wrote.
#[derive(Debug, Clone)]
pub struct FixtureModel {
    pub dir: PathBuf,
    pub safetensors: Option<PathBuf>,
    pub gguf_q8_0: Option<PathBuf>,
    pub gguf_q4_k_m: Option<PathBuf>,
}

impl FixtureModel {
    /// Every file in the directory, sorted (for comparing two fixtures byte by byte).
    pub fn files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        Ok(files)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> FixtureError + '_ {
    move |e| FixtureError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes the model described by `spec` into `dir` (created if needed).
pub fn write(
    dir: &Path,
    spec: &FixtureSpec,
    forms: FixtureForms,
) -> Result<FixtureModel, FixtureError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tokenizer = build_tokenizer(spec.tokenizer_size)?;
    let special_ids: Vec<u32> = SPECIAL_TOKENS
        .iter()
        .map(|t| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| FixtureError::Tokenizer(format!("{t} missing")))
        })
        .collect::<Result<_, _>>()?;
    let (endoftext, im_end) = (special_ids[0], special_ids[2]);
    if tokenizer.get_vocab_size(true) > spec.vocab_size {
        return Err(FixtureError::Tokenizer(format!(
            "tokenizer has {} tokens, more than the model's vocabulary of {}",
            tokenizer.get_vocab_size(true),
            spec.vocab_size
        )));
    }
    let tokenizer_json = tokenizer
        .to_string(true)
        .map_err(|e| FixtureError::Tokenizer(e.to_string()))?;
    write_file(&dir.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    write_json(
        &dir.join("config.json"),
        &config_json(spec, endoftext, im_end),
    )?;
    write_json(
        &dir.join("generation_config.json"),
        &serde_json::json!({ "bos_token_id": endoftext, "eos_token_id": [im_end, endoftext] }),
    )?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &serde_json::json!({
            "bos_token": null,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": spec.max_position_embeddings,
            "chat_template": QWEN_CHAT_TEMPLATE,
        }),
    )?;

    let mut model = FixtureModel {
        dir: dir.to_path_buf(),
        safetensors: None,
        gguf_q8_0: None,
        gguf_q4_k_m: None,
    };
    let mut f32_tensors: HashMap<String, Tensor> = HashMap::new();
    let mut q8: Vec<(String, QTensor)> = Vec::new();
    let mut q4: Vec<(String, QTensor)> = Vec::new();
    let mut rng = StdRng::seed_from_u64(spec.seed);
    for weight in weight_list(spec) {
        let tensor = random_tensor(&mut rng, &weight)?;
        let quantize = |dtype: GgmlDType| {
            QTensor::quantize(&tensor, dtype).map_err(|e| FixtureError::Tensor {
                name: weight.hf_name.clone(),
                reason: e.to_string(),
            })
        };
        if forms.gguf_q8_0 {
            let dtype = if weight.shape.len() == 1 {
                GgmlDType::F32
            } else {
                GgmlDType::Q8_0
            };
            q8.push((weight.gguf_name.clone(), quantize(dtype)?));
        }
        if forms.gguf_q4_k_m {
            q4.push((
                weight.gguf_name.clone(),
                quantize(q4_k_m_type(spec, &weight))?,
            ));
        }
        if forms.safetensors {
            f32_tensors.insert(weight.hf_name.clone(), tensor);
        }
    }
    if forms.safetensors {
        let path = dir.join("model.safetensors");
        candle_core::safetensors::save(&f32_tensors, &path).map_err(|e| FixtureError::Io {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        model.safetensors = Some(path);
    }
    let metadata = gguf_metadata(spec, &tokenizer, endoftext, im_end)?;
    if forms.gguf_q8_0 {
        let path = dir.join("model-q8_0.gguf");
        write_gguf(&path, &metadata, 7, &q8)?; // llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0
        model.gguf_q8_0 = Some(path);
    }
    if forms.gguf_q4_k_m {
        let path = dir.join("model-q4_k_m.gguf");
        write_gguf(&path, &metadata, 15, &q4)?; // LLAMA_FTYPE_MOSTLY_Q4_K_M
        model.gguf_q4_k_m = Some(path);
    }
    Ok(model)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), FixtureError> {
    std::fs::write(path, bytes).map_err(io_err(path))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), FixtureError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| FixtureError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_file(path, text.as_bytes())
}

/// A byte-level BPE (GPT-2/Qwen style) learnt from [`CORPUS`], then Qwen's special tokens.
fn build_tokenizer(target_size: usize) -> Result<Tokenizer, FixtureError> {
    let err = |e: tokenizers::Error| FixtureError::Tokenizer(e.to_string());
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
    tokenizer.with_decoder(Some(ByteLevel::new(false, false, true)));
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(target_size.saturating_sub(SPECIAL_TOKENS.len()))
        .min_frequency(0)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer.train(&mut trainer, CORPUS.lines()).map_err(err)?;
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}

fn config_json(spec: &FixtureSpec, endoftext: u32, im_end: u32) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "attention_dropout": 0.0,
        "bos_token_id": endoftext,
        "eos_token_id": im_end,
        "hidden_act": "silu",
        "hidden_size": spec.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": spec.intermediate_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "max_window_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_key_value_heads": spec.num_key_value_heads,
        "rms_norm_eps": 1e-6,
        "rope_theta": spec.rope_theta,
        "sliding_window": spec.max_position_embeddings,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "torch_dtype": "float32",
        "use_cache": true,
        "use_sliding_window": false,
        "vocab_size": spec.vocab_size,
    })
}

/// One weight: its names in HF and GGUF, shape (HF order: out, in) and how it is drawn.
struct WeightSpec {
    hf_name: String,
    gguf_name: String,
    shape: Vec<usize>,
    init: Init,
    /// Layer index, for llama.cpp's "more bits in some layers" rule.
    layer: Option<usize>,
}

#[derive(Clone, Copy)]
enum Init {
    /// Uniform with this standard deviation.
    Uniform(f32),
    /// 1 plus uniform noise of this standard deviation (norm weights).
    AroundOne(f32),
}

fn weight_list(spec: &FixtureSpec) -> Vec<WeightSpec> {
    let (h, hd) = (spec.hidden_size, spec.head_dim());
    let (q_out, kv_out) = (spec.num_attention_heads * hd, spec.num_key_value_heads * hd);
    let linear = |fan_in: usize| Init::Uniform(1.0 / (fan_in as f32).sqrt());
    let w = |hf: String, gguf: String, shape: Vec<usize>, init: Init, layer: Option<usize>| {
        WeightSpec {
            hf_name: hf,
            gguf_name: gguf,
            shape,
            init,
            layer,
        }
    };
    // Embeddings scaled so that tied logits have a spread of a few units: sampling then has
    // real preferences, and greedy runs are not decided by rounding.
    let embed_std = 2.5 / (h as f32).sqrt();
    let mut list = vec![w(
        "model.embed_tokens.weight".into(),
        "token_embd.weight".into(),
        vec![spec.vocab_size, h],
        Init::Uniform(embed_std),
        None,
    )];
    for i in 0..spec.num_hidden_layers {
        let hf = |s: &str| format!("model.layers.{i}.{s}");
        let gg = |s: &str| format!("blk.{i}.{s}");
        let l = Some(i);
        list.extend([
            w(
                hf("input_layernorm.weight"),
                gg("attn_norm.weight"),
                vec![h],
                Init::AroundOne(0.05),
                l,
            ),
            w(
                hf("self_attn.q_proj.weight"),
                gg("attn_q.weight"),
                vec![q_out, h],
                linear(h),
                l,
            ),
            w(
                hf("self_attn.q_proj.bias"),
                gg("attn_q.bias"),
                vec![q_out],
                Init::Uniform(0.05),
                l,
            ),
            w(
                hf("self_attn.k_proj.weight"),
                gg("attn_k.weight"),
                vec![kv_out, h],
                linear(h),
                l,
            ),
            w(
                hf("self_attn.k_proj.bias"),
                gg("attn_k.bias"),
                vec![kv_out],
                Init::Uniform(0.05),
                l,
            ),
            w(
                hf("self_attn.v_proj.weight"),
                gg("attn_v.weight"),
                vec![kv_out, h],
                linear(h),
                l,
            ),
            w(
                hf("self_attn.v_proj.bias"),
                gg("attn_v.bias"),
                vec![kv_out],
                Init::Uniform(0.05),
                l,
            ),
            w(
                hf("self_attn.o_proj.weight"),
                gg("attn_output.weight"),
                vec![h, q_out],
                linear(q_out),
                l,
            ),
            w(
                hf("post_attention_layernorm.weight"),
                gg("ffn_norm.weight"),
                vec![h],
                Init::AroundOne(0.05),
                l,
            ),
            w(
                hf("mlp.gate_proj.weight"),
                gg("ffn_gate.weight"),
                vec![spec.intermediate_size, h],
                linear(h),
                l,
            ),
            w(
                hf("mlp.up_proj.weight"),
                gg("ffn_up.weight"),
                vec![spec.intermediate_size, h],
                linear(h),
                l,
            ),
            w(
                hf("mlp.down_proj.weight"),
                gg("ffn_down.weight"),
                vec![h, spec.intermediate_size],
                linear(spec.intermediate_size),
                l,
            ),
        ]);
    }
    list.push(w(
        "model.norm.weight".into(),
        "output_norm.weight".into(),
        vec![h],
        Init::AroundOne(0.05),
        None,
    ));
    if !spec.tie_word_embeddings {
        list.push(w(
            "lm_head.weight".into(),
            "output.weight".into(),
            vec![spec.vocab_size, h],
            Init::Uniform(embed_std),
            None,
        ));
    }
    list
}

fn random_tensor(rng: &mut StdRng, weight: &WeightSpec) -> Result<Tensor, FixtureError> {
    let n: usize = weight.shape.iter().product();
    // Uniform on [-a, a] has standard deviation a / sqrt(3).
    let (center, half_width) = match weight.init {
        Init::Uniform(std) => (0.0, std * 3f32.sqrt()),
        Init::AroundOne(std) => (1.0, std * 3f32.sqrt()),
    };
    let values: Vec<f32> = (0..n)
        .map(|_| center + half_width * (rng.random::<f32>() * 2.0 - 1.0))
        .collect();
    Tensor::from_vec(values, weight.shape.as_slice(), &Device::Cpu).map_err(|e| {
        FixtureError::Tensor {
            name: weight.hf_name.clone(),
            reason: e.to_string(),
        }
    })
}

/// llama.cpp's Q4_K_M choice for one tensor (see the module docs).
fn q4_k_m_type(spec: &FixtureSpec, weight: &WeightSpec) -> GgmlDType {
    if weight.shape.len() == 1 {
        return GgmlDType::F32;
    }
    let n = spec.num_hidden_layers;
    let more_bits = |i: usize| i < n / 8 || i >= 7 * n / 8 || (i >= n / 8 && (i - n / 8) % 3 == 2);
    let is_output = weight.gguf_name == "output.weight"
        || (spec.tie_word_embeddings && weight.gguf_name == "token_embd.weight");
    let wanted = if is_output {
        GgmlDType::Q6K
    } else if weight.gguf_name.ends_with("attn_v.weight")
        || weight.gguf_name.ends_with("ffn_down.weight")
    {
        if weight.layer.is_some_and(more_bits) {
            GgmlDType::Q6K
        } else {
            GgmlDType::Q4K
        }
    } else {
        GgmlDType::Q4K
    };
    // Rows (the last, "in" dimension) must be whole 256-element super-blocks for k-quants.
    let row = weight.shape[weight.shape.len() - 1];
    if row % 256 == 0 {
        wanted
    } else if wanted == GgmlDType::Q6K {
        GgmlDType::Q8_0
    } else {
        GgmlDType::Q5_0
    }
}

/// The GGUF metadata llama.cpp and Candle's quantized Qwen2 read.
fn gguf_metadata(
    spec: &FixtureSpec,
    tokenizer: &Tokenizer,
    endoftext: u32,
    im_end: u32,
) -> Result<Vec<(String, gguf_file::Value)>, FixtureError> {
    use gguf_file::Value as V;
    // Tokens and merges as tokenizer.json spells them (byte-level strings, "a b" merges).
    let json: serde_json::Value = serde_json::from_str(
        &tokenizer
            .to_string(false)
            .map_err(|e| FixtureError::Tokenizer(e.to_string()))?,
    )
    .map_err(|e| FixtureError::Tokenizer(e.to_string()))?;
    let mut tokens: Vec<Option<String>> = vec![None; spec.vocab_size];
    let mut types = vec![5i32; spec.vocab_size]; // llama.cpp token types: 1 normal, 3 control, 5 unused
    if let Some(vocab) = json.pointer("/model/vocab").and_then(|v| v.as_object()) {
        for (token, id) in vocab {
            if let Some(id) = id
                .as_u64()
                .map(|i| i as usize)
                .filter(|&i| i < spec.vocab_size)
            {
                tokens[id] = Some(token.clone());
                types[id] = 1;
            }
        }
    }
    for special in SPECIAL_TOKENS {
        if let Some(id) = tokenizer.token_to_id(special) {
            tokens[id as usize] = Some(special.to_string());
            types[id as usize] = 3;
        }
    }
    let tokens: Vec<V> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| V::String(t.unwrap_or_else(|| format!("[PAD{i}]"))))
        .collect();
    let merges: Vec<V> = json
        .pointer("/model/merges")
        .and_then(|m| m.as_array())
        .map(|merges| {
            merges
                .iter()
                .filter_map(|m| match m {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Array(pair) => Some(format!(
                        "{} {}",
                        pair.first()?.as_str()?,
                        pair.get(1)?.as_str()?
                    )),
                    _ => None,
                })
                .map(V::String)
                .collect()
        })
        .unwrap_or_default();
    let u32v = |n: usize| V::U32(n as u32);
    Ok(vec![
        ("general.architecture".into(), V::String("qwen2".into())),
        (
            "general.name".into(),
            V::String("ghostos random-weight fixture".into()),
        ),
        ("general.quantization_version".into(), V::U32(2)),
        ("qwen2.block_count".into(), u32v(spec.num_hidden_layers)),
        (
            "qwen2.context_length".into(),
            u32v(spec.max_position_embeddings),
        ),
        ("qwen2.embedding_length".into(), u32v(spec.hidden_size)),
        (
            "qwen2.feed_forward_length".into(),
            u32v(spec.intermediate_size),
        ),
        (
            "qwen2.attention.head_count".into(),
            u32v(spec.num_attention_heads),
        ),
        (
            "qwen2.attention.head_count_kv".into(),
            u32v(spec.num_key_value_heads),
        ),
        (
            "qwen2.rope.freq_base".into(),
            V::F32(spec.rope_theta as f32),
        ),
        (
            "qwen2.attention.layer_norm_rms_epsilon".into(),
            V::F32(1e-6),
        ),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), V::String("qwen2".into())),
        ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            V::Array(types.into_iter().map(V::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), V::Array(merges)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(im_end)),
        ("tokenizer.ggml.padding_token_id".into(), V::U32(endoftext)),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(endoftext)),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            V::String(QWEN_CHAT_TEMPLATE.into()),
        ),
    ])
}

fn write_gguf(
    path: &Path,
    metadata: &[(String, gguf_file::Value)],
    file_type: u32,
    tensors: &[(String, QTensor)],
) -> Result<(), FixtureError> {
    let file_type = gguf_file::Value::U32(file_type);
    let mut meta: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    meta.insert(2, ("general.file_type", &file_type));
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    let mut out = BufWriter::new(file);
    gguf_file::write(&mut out, &meta, &tensors).map_err(|e| FixtureError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    out.flush().map_err(io_err(path))
}
