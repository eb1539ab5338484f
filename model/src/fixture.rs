//! Test fixture: writes a random-weight model of one of the generator's families into a
//! directory, in every form the generator loads — config.json, a real tokenizer.json,
//! tokenizer_config.json with the family's real chat template, generation_config.json,
//! model.safetensors (f32), and GGUF in Q8_0 and Q4_K_M. Same spec and seed, same bytes.
//!
//! Each family ([`FixtureArch`]) is written with the tensor names and config keys that Hugging
//! Face transformers and llama.cpp's `convert_hf_to_gguf.py` use for it:
//! - Qwen2 ([`FixtureSpec::tiny`]): `Qwen2ForCausalLM` with q/k/v biases and tied embeddings;
//!   a byte-level BPE with Qwen's `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (special) and
//!   Qwen2.5's `<tool_call>`, `</tool_call>` (added, not special), and Qwen2.5's chat template.
//! - Qwen3 ([`FixtureSpec::tiny_qwen3`]): `Qwen3ForCausalLM`, no biases, an RMS norm over each
//!   head of q and k (`self_attn.q_norm`/`k_norm`; GGUF `attn_q_norm`/`attn_k_norm`), and a
//!   `head_dim` that is not hidden/heads, as in Qwen3-0.6B; Qwen's tokenizer plus `<think>`,
//!   `</think>`, and Qwen3's chat template.
//! - Llama ([`FixtureSpec::tiny_llama`]): `LlamaForCausalLM` as TinyLlama-1.1B-Chat-v1.0 ships it:
//!   no biases, grouped-query attention, an untied `lm_head`, a SentencePiece-style tokenizer.json
//!   (`<unk>`, `<s>`, `</s>`, byte-fallback tokens `<0x00>`…`<0xFF>`, `▁` for spaces, BOS added
//!   by the post-processor) and TinyLlama's chat template (Zephyr's format). Its GGUF permutes
//!   the rows of attn_q/attn_k the way llama.cpp's converter does (`LlamaModel.permute`): for
//!   `llama` GGUF, llama.cpp and Candle's quantized Llama rotate interleaved pairs (2i, 2i+1),
//!   where transformers (and Candle's safetensors Llama) rotate halves (i, i + head_dim/2).
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
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
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

/// Qwen3's chat template (thinking and tools), as Qwen3-0.6B's tokenizer_config.json ships it
/// (llama.cpp keeps the same text as models/templates/Qwen-Qwen3-0.6B.jinja).
pub const QWEN3_CHAT_TEMPLATE: &str = r##"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in message.content %}
                {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
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
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"##;

/// TinyLlama-1.1B-Chat-v1.0's chat template, from its tokenizer_config.json (Zephyr's format:
/// `<|user|>\n…</s>\n<|assistant|>\n`, with the end-of-sequence token closing each turn).
pub const TINYLLAMA_CHAT_TEMPLATE: &str = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

/// The chat special tokens, in Qwen's order (they follow the BPE vocabulary).
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Qwen2.5's tool-call markers: added tokens that are not special (they stay in decoded text,
/// where tool-call parsers look for them), ids 151657/151658 in the real tokenizer; here they
/// follow [`SPECIAL_TOKENS`]. Qwen3's tokenizer has them too.
pub const QWEN_TOOL_CALL_TOKENS: [&str; 2] = ["<tool_call>", "</tool_call>"];

/// Qwen3's thinking markers (added, not special; ids 151667/151668 in the real tokenizer).
pub const QWEN3_THINK_TOKENS: [&str; 2] = ["<think>", "</think>"];

/// Llama's (SentencePiece's) special tokens at ids 0, 1, 2: unknown, BOS, EOS.
pub const LLAMA_SPECIAL_TOKENS: [&str; 3] = ["<unk>", "<s>", "</s>"];

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

/// The model family a fixture is written as: its tensor names, config keys, tokenizer, chat
/// template and GGUF metadata (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixtureArch {
    Qwen2,
    Qwen3,
    Llama,
}

/// Family, shape and seed of a fixture model.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureSpec {
    pub architecture: FixtureArch,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Width of one attention head; `None` is hidden_size / num_attention_heads. Qwen3 always
    /// writes `head_dim` (GGUF `attention.key_length`); Candle's Llama only runs the default.
    pub head_dim: Option<usize>,
    pub intermediate_size: usize,
    /// The model's vocabulary (embedding rows); the tokenizer may be smaller, like Qwen's.
    pub vocab_size: usize,
    /// Target size of the tokenizer: merges learnt from a built-in corpus, plus the family's
    /// fixed tokens (added tokens; Llama's `<unk>`/`<s>`/`</s>` and 256 byte tokens).
    pub tokenizer_size: usize,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub seed: u64,
}

impl FixtureSpec {
    /// A Qwen2 model small enough for debug-build tests; 256-wide so Q4_K really is Q4_K
    /// (k-quants need rows that are multiples of 256).
    pub fn tiny() -> Self {
        FixtureSpec {
            architecture: FixtureArch::Qwen2,
            hidden_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: None,
            intermediate_size: 256,
            vocab_size: 512,
            tokenizer_size: 512,
            max_position_embeddings: 256,
            tie_word_embeddings: true,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            seed: 42,
        }
    }

    /// A tiny Qwen3 model shaped like Qwen3-0.6B in the ways that matter to a loader: heads
    /// wider than hidden/heads (128 × 4 = 512 ≠ 256), grouped-query attention, tied embeddings.
    pub fn tiny_qwen3() -> Self {
        FixtureSpec {
            architecture: FixtureArch::Qwen3,
            hidden_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: Some(128),
            intermediate_size: 512,
            vocab_size: 512,
            tokenizer_size: 512,
            max_position_embeddings: 256,
            tie_word_embeddings: true,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            seed: 42,
        }
    }

    /// A tiny Llama model shaped like TinyLlama-1.1B-Chat-v1.0 in the ways that matter to a
    /// loader: 4:1 grouped-query attention, an untied lm_head, rope_theta 10000, eps 1e-5, and a
    /// vocabulary exactly the tokenizer's size.
    pub fn tiny_llama() -> Self {
        FixtureSpec {
            architecture: FixtureArch::Llama,
            hidden_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 8,
            num_key_value_heads: 2,
            head_dim: None,
            intermediate_size: 512,
            vocab_size: 512,
            tokenizer_size: 512,
            max_position_embeddings: 256,
            tie_word_embeddings: false,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            seed: 42,
        }
    }

    /// The exact dimensions of Qwen2.5-0.5B (for benchmarks; ~2 GB as f32 safetensors).
    pub fn qwen2_5_0_5b_shape() -> Self {
        FixtureSpec {
            architecture: FixtureArch::Qwen2,
            hidden_size: 896,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            head_dim: None,
            intermediate_size: 4864,
            vocab_size: 151_936,
            tokenizer_size: 1024,
            max_position_embeddings: 32_768,
            tie_word_embeddings: true,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            seed: 42,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
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

fn tokenizer_err(e: impl std::fmt::Display) -> FixtureError {
    FixtureError::Tokenizer(e.to_string())
}

/// The ids a family's config files name: BOS, EOS (the chat turn's end), padding and, for the
/// generation config, every id that ends generation.
struct TokenIds {
    bos: u32,
    eos: u32,
    pad: u32,
    eos_all: Vec<u32>,
    unk: Option<u32>,
}

fn token_ids(spec: &FixtureSpec, tokenizer: &Tokenizer) -> Result<TokenIds, FixtureError> {
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| FixtureError::Tokenizer(format!("{t} missing")))
    };
    Ok(match spec.architecture {
        FixtureArch::Qwen2 | FixtureArch::Qwen3 => {
            let (endoftext, im_end) = (id(SPECIAL_TOKENS[0])?, id(SPECIAL_TOKENS[2])?);
            id(SPECIAL_TOKENS[1])?; // <|im_start|> must be there too
            TokenIds {
                bos: endoftext,
                eos: im_end,
                pad: endoftext,
                eos_all: vec![im_end, endoftext],
                unk: None,
            }
        }
        FixtureArch::Llama => TokenIds {
            unk: Some(id(LLAMA_SPECIAL_TOKENS[0])?),
            bos: id(LLAMA_SPECIAL_TOKENS[1])?,
            eos: id(LLAMA_SPECIAL_TOKENS[2])?,
            // TinyLlama pads with </s>.
            pad: id(LLAMA_SPECIAL_TOKENS[2])?,
            eos_all: vec![id(LLAMA_SPECIAL_TOKENS[2])?],
        },
    })
}

/// Writes the model described by `spec` into `dir` (created if needed).
pub fn write(
    dir: &Path,
    spec: &FixtureSpec,
    forms: FixtureForms,
) -> Result<FixtureModel, FixtureError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tokenizer = build_tokenizer(spec)?;
    let ids = token_ids(spec, &tokenizer)?;
    if tokenizer.get_vocab_size(true) > spec.vocab_size {
        return Err(FixtureError::Tokenizer(format!(
            "tokenizer has {} tokens, more than the model's vocabulary of {}",
            tokenizer.get_vocab_size(true),
            spec.vocab_size
        )));
    }
    let tokenizer_json = tokenizer.to_string(true).map_err(tokenizer_err)?;
    write_file(&dir.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    write_json(&dir.join("config.json"), &config_json(spec, &ids))?;
    write_json(
        &dir.join("generation_config.json"),
        &generation_config_json(spec, &ids),
    )?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &tokenizer_config_json(spec),
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
        let tensor_err = |e: candle_core::Error| FixtureError::Tensor {
            name: weight.hf_name.clone(),
            reason: e.to_string(),
        };
        let gguf_tensor = match weight.gguf_permute_heads {
            Some(heads) if forms.gguf_q8_0 || forms.gguf_q4_k_m => {
                llama_cpp_permute(&tensor, heads).map_err(tensor_err)?
            }
            _ => tensor.clone(),
        };
        let quantize =
            |dtype: GgmlDType| QTensor::quantize(&gguf_tensor, dtype).map_err(tensor_err);
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
    let metadata = gguf_metadata(spec, &tokenizer, &ids)?;
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

fn build_tokenizer(spec: &FixtureSpec) -> Result<Tokenizer, FixtureError> {
    match spec.architecture {
        FixtureArch::Qwen2 => {
            build_byte_level_tokenizer(spec.tokenizer_size, &QWEN_TOOL_CALL_TOKENS)
        }
        FixtureArch::Qwen3 => {
            let added = [QWEN_TOOL_CALL_TOKENS, QWEN3_THINK_TOKENS].concat();
            build_byte_level_tokenizer(spec.tokenizer_size, &added)
        }
        FixtureArch::Llama => build_sentencepiece_tokenizer(spec.tokenizer_size),
    }
}

/// A byte-level BPE (GPT-2/Qwen style) learnt from [`CORPUS`], then Qwen's special tokens, then
/// `added` as added tokens that are not special (not normalized, like Qwen's).
fn build_byte_level_tokenizer(
    target_size: usize,
    added: &[&str],
) -> Result<Tokenizer, FixtureError> {
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
    tokenizer.with_decoder(Some(ByteLevel::new(false, false, true)));
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(target_size.saturating_sub(SPECIAL_TOKENS.len() + added.len()))
        .min_frequency(0)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, CORPUS.lines())
        .map_err(tokenizer_err)?;
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tokenizer.add_special_tokens(&specials);
    let added: Vec<AddedToken> = added
        .iter()
        .map(|t| AddedToken::from(*t, false).normalized(false))
        .collect();
    tokenizer.add_tokens(&added);
    Ok(tokenizer)
}

/// `▁` (U+2581), SentencePiece's mark for a space.
const SPIECE_SPACE: &str = "\u{2581}";

/// SentencePiece's normalization as transformers writes it for Llama: a `▁` in front, spaces
/// to `▁`.
fn sentencepiece_normalizer() -> Result<NormalizerSequence, FixtureError> {
    Ok(NormalizerSequence::new(vec![
        Prepend::new(SPIECE_SPACE.into()).into(),
        Replace::new(" ", SPIECE_SPACE)
            .map_err(tokenizer_err)?
            .into(),
    ]))
}

/// A Llama-style tokenizer.json (what transformers converts Llama's SentencePiece model to):
/// BPE with byte fallback over `▁`-normalized text; `<unk>`, `<s>`, `</s>` at ids 0–2, the byte
/// tokens `<0x00>`…`<0xFF>` at 3–258, then pieces learnt from [`CORPUS`]; `<s>` added in front
/// of every encoded text; decoding turns `▁` back into spaces and drops the leading one.
fn build_sentencepiece_tokenizer(target_size: usize) -> Result<Tokenizer, FixtureError> {
    // SentencePiece never merges across words, so learn the merges from words split before
    // each `▁` (the final tokenizer, like Llama's, has no pre-tokenizer).
    let mut learner = Tokenizer::new(BPE::default());
    learner.with_normalizer(Some(sentencepiece_normalizer()?));
    learner.with_pre_tokenizer(Some(Metaspace::new('\u{2581}', PrependScheme::Never, true)));
    let fixed = LLAMA_SPECIAL_TOKENS.len() + 256;
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(target_size.saturating_sub(fixed))
        .min_frequency(0)
        .show_progress(false)
        .build()
        .into();
    learner
        .train(&mut trainer, CORPUS.lines())
        .map_err(tokenizer_err)?;
    let learnt: serde_json::Value =
        serde_json::from_str(&learner.to_string(false).map_err(tokenizer_err)?)
            .map_err(tokenizer_err)?;
    let mut pieces: Vec<(String, u64)> = learnt
        .pointer("/model/vocab")
        .and_then(|v| v.as_object())
        .map(|v| {
            v.iter()
                .filter_map(|(t, id)| Some((t.clone(), id.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    pieces.sort_by_key(|(_, id)| *id);
    let merges: Vec<(String, String)> = merge_pairs(&learnt);

    let mut vocab = serde_json::Map::new();
    for (id, token) in LLAMA_SPECIAL_TOKENS.iter().enumerate() {
        vocab.insert(token.to_string(), id.into());
    }
    for byte in 0..=255usize {
        vocab.insert(
            format!("<0x{byte:02X}>"),
            (LLAMA_SPECIAL_TOKENS.len() + byte).into(),
        );
    }
    for (piece, _) in pieces {
        let next = vocab.len();
        vocab.entry(piece).or_insert(next.into());
    }
    // Through the model's JSON form, which is also what tokenizer.json stores.
    let model = serde_json::json!({
        "type": "BPE",
        "dropout": null,
        "unk_token": LLAMA_SPECIAL_TOKENS[0],
        "continuing_subword_prefix": null,
        "end_of_word_suffix": null,
        "fuse_unk": true,
        "byte_fallback": true,
        "ignore_merges": false,
        "vocab": vocab,
        "merges": merges,
    });
    let bpe: BPE = serde_json::from_str(&model.to_string()).map_err(tokenizer_err)?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_normalizer(Some(sentencepiece_normalizer()?));
    let bos = LLAMA_SPECIAL_TOKENS[1];
    let post = TemplateProcessing::builder()
        .try_single(format!("{bos} $A"))
        .map_err(tokenizer_err)?
        .try_pair(format!("{bos} $A {bos}:1 $B:1"))
        .map_err(tokenizer_err)?
        .special_tokens(vec![(bos, 1u32)])
        .build()
        .map_err(tokenizer_err)?;
    tokenizer.with_post_processor(Some(post));
    tokenizer.with_decoder(Some(DecoderSequence::new(vec![
        Replace::new(SPIECE_SPACE, " ")
            .map_err(tokenizer_err)?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
        Strip::new(' ', 1, 0).into(),
    ])));
    let specials: Vec<AddedToken> = LLAMA_SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}

/// The merges of a serialized BPE model, in either of tokenizers' formats ("a b" or ["a", "b"]).
fn merge_pairs(json: &serde_json::Value) -> Vec<(String, String)> {
    json.pointer("/model/merges")
        .and_then(|m| m.as_array())
        .map(|merges| {
            merges
                .iter()
                .filter_map(|m| match m {
                    serde_json::Value::String(s) => s
                        .split_once(' ')
                        .map(|(a, b)| (a.to_string(), b.to_string())),
                    serde_json::Value::Array(pair) => Some((
                        pair.first()?.as_str()?.to_string(),
                        pair.get(1)?.as_str()?.to_string(),
                    )),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn config_json(spec: &FixtureSpec, ids: &TokenIds) -> serde_json::Value {
    match spec.architecture {
        FixtureArch::Qwen2 => serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "attention_dropout": 0.0,
            "bos_token_id": ids.bos,
            "eos_token_id": ids.eos,
            "hidden_act": "silu",
            "hidden_size": spec.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": spec.intermediate_size,
            "max_position_embeddings": spec.max_position_embeddings,
            "max_window_layers": spec.num_hidden_layers,
            "num_attention_heads": spec.num_attention_heads,
            "num_hidden_layers": spec.num_hidden_layers,
            "num_key_value_heads": spec.num_key_value_heads,
            "rms_norm_eps": spec.rms_norm_eps,
            "rope_theta": spec.rope_theta,
            "sliding_window": spec.max_position_embeddings,
            "tie_word_embeddings": spec.tie_word_embeddings,
            "torch_dtype": "float32",
            "use_cache": true,
            "use_sliding_window": false,
            "vocab_size": spec.vocab_size,
        }),
        // Qwen3-0.6B's config.json keys.
        FixtureArch::Qwen3 => serde_json::json!({
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "bos_token_id": ids.bos,
            "eos_token_id": ids.eos,
            "head_dim": spec.head_dim(),
            "hidden_act": "silu",
            "hidden_size": spec.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": spec.intermediate_size,
            "max_position_embeddings": spec.max_position_embeddings,
            "max_window_layers": spec.num_hidden_layers,
            "num_attention_heads": spec.num_attention_heads,
            "num_hidden_layers": spec.num_hidden_layers,
            "num_key_value_heads": spec.num_key_value_heads,
            "rms_norm_eps": spec.rms_norm_eps,
            "rope_scaling": null,
            "rope_theta": spec.rope_theta,
            "sliding_window": null,
            "tie_word_embeddings": spec.tie_word_embeddings,
            "torch_dtype": "float32",
            "use_cache": true,
            "use_sliding_window": false,
            "vocab_size": spec.vocab_size,
        }),
        // TinyLlama-1.1B-Chat-v1.0's config.json keys.
        FixtureArch::Llama => serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": false,
            "bos_token_id": ids.bos,
            "eos_token_id": ids.eos,
            "hidden_act": "silu",
            "hidden_size": spec.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": spec.intermediate_size,
            "max_position_embeddings": spec.max_position_embeddings,
            "num_attention_heads": spec.num_attention_heads,
            "num_hidden_layers": spec.num_hidden_layers,
            "num_key_value_heads": spec.num_key_value_heads,
            "pretraining_tp": 1,
            "rms_norm_eps": spec.rms_norm_eps,
            "rope_scaling": null,
            "rope_theta": spec.rope_theta,
            "tie_word_embeddings": spec.tie_word_embeddings,
            "torch_dtype": "float32",
            "use_cache": true,
            "vocab_size": spec.vocab_size,
        }),
    }
}

fn generation_config_json(spec: &FixtureSpec, ids: &TokenIds) -> serde_json::Value {
    match spec.architecture {
        FixtureArch::Qwen2 | FixtureArch::Qwen3 => {
            serde_json::json!({ "bos_token_id": ids.bos, "eos_token_id": ids.eos_all })
        }
        FixtureArch::Llama => serde_json::json!({
            "bos_token_id": ids.bos,
            "eos_token_id": ids.eos,
            "max_length": spec.max_position_embeddings,
            // TinyLlama's generation config pads with <unk> (0), its tokenizer with </s>.
            "pad_token_id": ids.unk,
        }),
    }
}

fn tokenizer_config_json(spec: &FixtureSpec) -> serde_json::Value {
    match spec.architecture {
        FixtureArch::Qwen2 => serde_json::json!({
            "bos_token": null,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": spec.max_position_embeddings,
            "chat_template": QWEN_CHAT_TEMPLATE,
        }),
        FixtureArch::Qwen3 => serde_json::json!({
            "bos_token": null,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": spec.max_position_embeddings,
            "chat_template": QWEN3_CHAT_TEMPLATE,
        }),
        FixtureArch::Llama => serde_json::json!({
            "add_bos_token": true,
            "add_eos_token": false,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": "</s>",
            "clean_up_tokenization_spaces": false,
            "legacy": false,
            "model_max_length": spec.max_position_embeddings,
            "tokenizer_class": "LlamaTokenizer",
            "chat_template": TINYLLAMA_CHAT_TEMPLATE,
        }),
    }
}

/// One weight: its names in HF and GGUF, shape (HF order: out, in) and how it is drawn.
struct WeightSpec {
    hf_name: String,
    gguf_name: String,
    shape: Vec<usize>,
    init: Init,
    /// Layer index, for llama.cpp's "more bits in some layers" rule.
    layer: Option<usize>,
    /// Llama's attn_q/attn_k: permuted for GGUF over this many heads (see [`llama_cpp_permute`]).
    gguf_permute_heads: Option<usize>,
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
    // Qwen2 has q/k/v biases; Qwen3 and Llama have none. Qwen3 norms each head of q and k.
    let qkv_bias = spec.architecture == FixtureArch::Qwen2;
    let qk_norm = spec.architecture == FixtureArch::Qwen3;
    // llama.cpp permutes Llama's q/k rows (q over the query heads, k over the kv heads).
    let (q_permute, k_permute) = match spec.architecture {
        FixtureArch::Llama => (
            Some(spec.num_attention_heads),
            Some(spec.num_key_value_heads),
        ),
        _ => (None, None),
    };
    let linear = |fan_in: usize| Init::Uniform(1.0 / (fan_in as f32).sqrt());
    let w = |hf: String, gguf: String, shape: Vec<usize>, init: Init, layer: Option<usize>| {
        WeightSpec {
            hf_name: hf,
            gguf_name: gguf,
            shape,
            init,
            layer,
            gguf_permute_heads: None,
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
        list.push(w(
            hf("input_layernorm.weight"),
            gg("attn_norm.weight"),
            vec![h],
            Init::AroundOne(0.05),
            l,
        ));
        for (proj, gguf, out, permute) in [
            ("q_proj", "attn_q", q_out, q_permute),
            ("k_proj", "attn_k", kv_out, k_permute),
            ("v_proj", "attn_v", kv_out, None),
        ] {
            list.push(WeightSpec {
                gguf_permute_heads: permute,
                ..w(
                    hf(&format!("self_attn.{proj}.weight")),
                    gg(&format!("{gguf}.weight")),
                    vec![out, h],
                    linear(h),
                    l,
                )
            });
            if qkv_bias {
                list.push(w(
                    hf(&format!("self_attn.{proj}.bias")),
                    gg(&format!("{gguf}.bias")),
                    vec![out],
                    Init::Uniform(0.05),
                    l,
                ));
            }
        }
        list.push(w(
            hf("self_attn.o_proj.weight"),
            gg("attn_output.weight"),
            vec![h, q_out],
            linear(q_out),
            l,
        ));
        if qk_norm {
            list.extend([
                w(
                    hf("self_attn.q_norm.weight"),
                    gg("attn_q_norm.weight"),
                    vec![hd],
                    Init::AroundOne(0.05),
                    l,
                ),
                w(
                    hf("self_attn.k_norm.weight"),
                    gg("attn_k_norm.weight"),
                    vec![hd],
                    Init::AroundOne(0.05),
                    l,
                ),
            ]);
        }
        list.extend([
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

/// llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py) of a q or k projection, rows
/// `(heads × head_dim)`: within each head, row `j·head_dim/2 + i` (transformers' halves) moves
/// to row `2i + j` (interleaved pairs), i.e. `reshape(heads, 2, head_dim/2, in)
/// .swapaxes(1, 2).reshape(out, in)`.
fn llama_cpp_permute(weight: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, cols) = weight.dims2()?;
    weight
        .reshape((heads, 2, out / heads / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, cols))
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

/// llama.cpp token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_UNKNOWN: i32 = 2;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;
const TOKEN_BYTE: i32 = 6;

/// The GGUF metadata llama.cpp and Candle's quantized models read, as llama.cpp's converter
/// writes it for the family.
fn gguf_metadata(
    spec: &FixtureSpec,
    tokenizer: &Tokenizer,
    ids: &TokenIds,
) -> Result<Vec<(String, gguf_file::Value)>, FixtureError> {
    use gguf_file::Value as V;
    // Tokens and merges as tokenizer.json spells them (byte-level strings or `▁` pieces).
    let json: serde_json::Value =
        serde_json::from_str(&tokenizer.to_string(false).map_err(tokenizer_err)?)
            .map_err(tokenizer_err)?;
    let mut tokens: Vec<Option<String>> = vec![None; spec.vocab_size];
    let mut types = vec![TOKEN_UNUSED; spec.vocab_size];
    if let Some(vocab) = json.pointer("/model/vocab").and_then(|v| v.as_object()) {
        for (token, id) in vocab {
            if let Some(id) = id
                .as_u64()
                .map(|i| i as usize)
                .filter(|&i| i < spec.vocab_size)
            {
                tokens[id] = Some(token.clone());
                types[id] = if spec.architecture == FixtureArch::Llama && is_byte_token(token) {
                    TOKEN_BYTE
                } else {
                    TOKEN_NORMAL
                };
            }
        }
    }
    let mut added: Vec<(u32, AddedToken)> =
        tokenizer.get_added_tokens_decoder().into_iter().collect();
    added.sort_by_key(|(id, _)| *id);
    for (id, token) in added {
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = Some(token.content.clone());
            types[id as usize] = if Some(id) == ids.unk {
                TOKEN_UNKNOWN
            } else if token.special {
                TOKEN_CONTROL
            } else {
                TOKEN_USER_DEFINED
            };
        }
    }
    // SentencePiece-style scores for Llama: 0 for special and byte tokens, then falling with
    // the piece's rank (llama.cpp's SPM tokenizer merges the best-scored pair first);
    // llama.cpp gives padding -1000.
    let scores: Vec<V> = (0..spec.vocab_size)
        .map(|i| {
            V::F32(match types[i] {
                TOKEN_NORMAL => -(i as f32),
                TOKEN_UNUSED => -1000.0,
                _ => 0.0,
            })
        })
        .collect();
    let tokens: Vec<V> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| V::String(t.unwrap_or_else(|| format!("[PAD{i}]"))))
        .collect();
    let merges: Vec<V> = merge_pairs(&json)
        .into_iter()
        .map(|(a, b)| V::String(format!("{a} {b}")))
        .collect();
    let u32v = |n: usize| V::U32(n as u32);
    let arch = match spec.architecture {
        FixtureArch::Qwen2 => "qwen2",
        FixtureArch::Qwen3 => "qwen3",
        FixtureArch::Llama => "llama",
    };
    let key = |k: &str| format!("{arch}.{k}");
    let mut meta = vec![
        ("general.architecture".into(), V::String(arch.into())),
        (
            "general.name".into(),
            V::String("ghostos random-weight fixture".into()),
        ),
        ("general.quantization_version".into(), V::U32(2)),
        (key("block_count"), u32v(spec.num_hidden_layers)),
        (key("context_length"), u32v(spec.max_position_embeddings)),
        (key("embedding_length"), u32v(spec.hidden_size)),
        (key("feed_forward_length"), u32v(spec.intermediate_size)),
        (key("attention.head_count"), u32v(spec.num_attention_heads)),
        (
            key("attention.head_count_kv"),
            u32v(spec.num_key_value_heads),
        ),
        (key("rope.freq_base"), V::F32(spec.rope_theta as f32)),
        (
            key("attention.layer_norm_rms_epsilon"),
            V::F32(spec.rms_norm_eps as f32),
        ),
    ];
    match spec.architecture {
        FixtureArch::Qwen2 => {}
        // The converter writes head_dim when config.json has it.
        FixtureArch::Qwen3 => meta.extend([
            (key("attention.key_length"), u32v(spec.head_dim())),
            (key("attention.value_length"), u32v(spec.head_dim())),
        ]),
        FixtureArch::Llama => meta.extend([
            (key("vocab_size"), u32v(spec.vocab_size)),
            (key("rope.dimension_count"), u32v(spec.head_dim())),
        ]),
    }
    match spec.architecture {
        FixtureArch::Qwen2 | FixtureArch::Qwen3 => meta.extend([
            ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), V::String("qwen2".into())),
            ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
            (
                "tokenizer.ggml.token_type".into(),
                V::Array(types.into_iter().map(V::I32).collect()),
            ),
            ("tokenizer.ggml.merges".into(), V::Array(merges)),
            ("tokenizer.ggml.eos_token_id".into(), V::U32(ids.eos)),
            ("tokenizer.ggml.padding_token_id".into(), V::U32(ids.pad)),
            ("tokenizer.ggml.bos_token_id".into(), V::U32(ids.bos)),
            ("tokenizer.ggml.add_bos_token".into(), V::Bool(false)),
        ]),
        // What the converter writes for a SentencePiece Llama vocabulary (no merges: the
        // scores order the merges).
        FixtureArch::Llama => meta.extend([
            ("tokenizer.ggml.model".into(), V::String("llama".into())),
            ("tokenizer.ggml.pre".into(), V::String("default".into())),
            ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
            ("tokenizer.ggml.scores".into(), V::Array(scores)),
            (
                "tokenizer.ggml.token_type".into(),
                V::Array(types.into_iter().map(V::I32).collect()),
            ),
            ("tokenizer.ggml.bos_token_id".into(), V::U32(ids.bos)),
            ("tokenizer.ggml.eos_token_id".into(), V::U32(ids.eos)),
            (
                "tokenizer.ggml.unknown_token_id".into(),
                V::U32(ids.unk.unwrap_or(0)),
            ),
            ("tokenizer.ggml.padding_token_id".into(), V::U32(ids.pad)),
            ("tokenizer.ggml.add_bos_token".into(), V::Bool(true)),
            ("tokenizer.ggml.add_eos_token".into(), V::Bool(false)),
        ]),
    }
    let template = match spec.architecture {
        FixtureArch::Qwen2 => QWEN_CHAT_TEMPLATE,
        FixtureArch::Qwen3 => QWEN3_CHAT_TEMPLATE,
        FixtureArch::Llama => TINYLLAMA_CHAT_TEMPLATE,
    };
    meta.push(("tokenizer.chat_template".into(), V::String(template.into())));
    Ok(meta)
}

/// `<0x0A>`-style byte-fallback tokens.
fn is_byte_token(token: &str) -> bool {
    token.len() == 6
        && token.starts_with("<0x")
        && token.ends_with('>')
        && token[3..5].chars().all(|c| c.is_ascii_hexdigit())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_llama_permutation_is_llama_cpps() {
        // Rows numbered by their index; 2 heads of width 4: transformers' halves (0,1 | 2,3)
        // become interleaved pairs (0,2,1,3), as `LlamaModel.permute` writes them.
        let rows: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let w = Tensor::from_vec(rows, (8, 1), &Device::Cpu).unwrap();
        let p = llama_cpp_permute(&w, 2).unwrap().flatten_all().unwrap();
        assert_eq!(
            p.to_vec1::<f32>().unwrap(),
            [0., 2., 1., 3., 4., 6., 5., 7.]
        );
        let w = Tensor::from_vec((0..8).map(|i| i as f32).collect(), (8, 1), &Device::Cpu).unwrap();
        let p = llama_cpp_permute(&w, 1).unwrap().flatten_all().unwrap();
        assert_eq!(
            p.to_vec1::<f32>().unwrap(),
            [0., 4., 1., 5., 2., 6., 3., 7.]
        );
    }

    /// The tokenizer metadata of a fixture's Q8_0 GGUF: tokens and llama.cpp token types.
    fn gguf_tokens(spec: &FixtureSpec) -> (Vec<String>, Vec<i32>, gguf_file::Content) {
        let dir = std::env::temp_dir().join(format!(
            "ghost-fixture-{:?}-{}",
            spec.architecture,
            std::process::id()
        ));
        let forms = FixtureForms {
            safetensors: false,
            gguf_q8_0: true,
            gguf_q4_k_m: false,
        };
        let m = write(&dir, spec, forms).unwrap();
        let mut file = std::fs::File::open(m.gguf_q8_0.unwrap()).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let array = |key: &str| match &content.metadata[key] {
            gguf_file::Value::Array(a) => a.clone(),
            other => panic!("{key}: {other:?}"),
        };
        let tokens = array("tokenizer.ggml.tokens")
            .iter()
            .map(|v| v.to_string().unwrap().clone())
            .collect();
        let types = array("tokenizer.ggml.token_type")
            .iter()
            .map(|v| v.to_i32().unwrap())
            .collect();
        (tokens, types, content)
    }

    #[test]
    fn fixture_gguf_token_types_are_llama_cpps() {
        let (tokens, types, _) = gguf_tokens(&FixtureSpec::tiny());
        let ty = |t: &str| types[tokens.iter().position(|x| x == t).unwrap()];
        assert_eq!(tokens.len(), 512);
        assert_eq!(ty("<|im_end|>"), TOKEN_CONTROL);
        assert_eq!(ty("<tool_call>"), TOKEN_USER_DEFINED);
        assert_eq!(ty("</tool_call>"), TOKEN_USER_DEFINED);
        assert_eq!(ty("Ġthe"), TOKEN_NORMAL);

        let (tokens, types, content) = gguf_tokens(&FixtureSpec::tiny_llama());
        assert_eq!(&tokens[..4], ["<unk>", "<s>", "</s>", "<0x00>"]);
        assert_eq!(
            &types[..4],
            [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL, TOKEN_BYTE]
        );
        assert_eq!(tokens[258], "<0xFF>");
        assert!(types[259..].iter().all(|&t| t == TOKEN_NORMAL));
        let meta = |k: &str| content.metadata[k].clone();
        assert_eq!(meta("general.architecture").to_string().unwrap(), "llama");
        assert_eq!(meta("tokenizer.ggml.model").to_string().unwrap(), "llama");
        assert_eq!(meta("llama.rope.dimension_count").to_u32().unwrap(), 32);
        assert!(content.tensor_infos.contains_key("output.weight"));
        assert!(!content.tensor_infos.contains_key("blk.0.attn_q.bias"));

        let (tokens, types, content) = gguf_tokens(&FixtureSpec::tiny_qwen3());
        let ty = |t: &str| types[tokens.iter().position(|x| x == t).unwrap()];
        assert_eq!(ty("<think>"), TOKEN_USER_DEFINED);
        assert_eq!(
            content.metadata["qwen3.attention.key_length"]
                .to_u32()
                .unwrap(),
            128
        );
        assert!(content
            .tensor_infos
            .contains_key("blk.1.attn_k_norm.weight"));
        assert!(!content.tensor_infos.contains_key("output.weight"));
    }
}
