//! The OpenAI API's request and response shapes, read by hand from JSON so that every mistake
//! in a request is answered with the field at fault (`messages[2].content: …`), as OpenAI's
//! own `param` does, and nothing unknown is silently dropped where it would change the answer.

use serde_json::{json, Map, Value};

use crate::generate::{ChatMessage, GenerateOptions};

/// An error answer: HTTP status, OpenAI's error object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// `invalid_request_error`, `server_error`, `service_unavailable`, …
    pub kind: &'static str,
    pub param: Option<String>,
}

impl ApiError {
    pub fn bad_request(param: &str, message: impl Into<String>) -> Self {
        ApiError { status: 400, message: format!("{param}: {}", message.into()), kind: "invalid_request_error", param: Some(param.to_string()) }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError { status: 400, message: message.into(), kind: "invalid_request_error", param: None }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError { status: 503, message: message.into(), kind: "service_unavailable", param: None }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: 404, message: message.into(), kind: "not_found_error", param: None }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError { status: 500, message: message.into(), kind: "server_error", param: None }
    }

    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": Value::Null}})
    }
}

/// How tools may be used in a completion.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// The model answers in text.
    None,
    /// The model may call a tool: text until it opens a tool call, then a valid call.
    Auto,
    /// The model must call one of the tools.
    Required,
    /// The model must call this tool.
    Function(String),
}

/// A structured-output request (`response_format`).
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this schema.
    JsonSchema(Value),
}

/// A checked `/v1/chat/completions` request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// The `tools` array as sent (for the chat template) — empty when there are none.
    pub tools: Vec<Value>,
    pub tool_choice: ToolChoice,
    pub response_format: ResponseFormat,
    /// `None`: as many as the context holds.
    pub max_tokens: Option<usize>,
    pub options: GenerateOptions,
    /// Token id → bias added to its logit; -100 bans the token, as OpenAI documents.
    pub logit_bias: Vec<(u32, f32)>,
    pub stream: bool,
    pub include_usage: bool,
    pub user: Option<String>,
}

/// A checked `/v1/embeddings` request.
#[derive(Debug, Clone)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Vec<String>,
    pub base64: bool,
}

/// Fields we accept and ignore because they do not change a single-choice completion here.
const IGNORED_CHAT_FIELDS: [&str; 7] =
    ["metadata", "store", "parallel_tool_calls", "service_tier", "prediction", "modalities", "reasoning_effort"];

pub fn parse_chat(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let v = parse_object(body)?;
    let model = opt_str(&v, "model")?.unwrap_or("").to_string();
    let messages = match v.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a.iter().enumerate().map(|(i, m)| parse_message(i, m)).collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => return Err(ApiError::bad_request("messages", "must hold at least one message")),
        Some(_) => return Err(ApiError::bad_request("messages", "must be an array of messages")),
        None => return Err(ApiError::bad_request("messages", "is required")),
    };
    let tools = match v.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => {
            for (i, t) in a.iter().enumerate() {
                check_tool(i, t)?;
            }
            a.clone()
        }
        Some(_) => return Err(ApiError::bad_request("tools", "must be an array of tools")),
    };
    let tool_choice = match v.get("tool_choice") {
        None | Some(Value::Null) => {
            if tools.is_empty() {
                ToolChoice::None
            } else {
                ToolChoice::Auto
            }
        }
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => return Err(ApiError::bad_request("tool_choice", format!("{other:?} is not none, auto, required or a function"))),
        },
        Some(Value::Object(o)) => {
            let name = o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
            match name {
                Some(n) => ToolChoice::Function(n.to_string()),
                None => return Err(ApiError::bad_request("tool_choice.function.name", "is required")),
            }
        }
        Some(_) => return Err(ApiError::bad_request("tool_choice", "must be a string or an object")),
    };
    if tools.is_empty() && matches!(tool_choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return Err(ApiError::bad_request("tool_choice", "names tools, but `tools` is empty"));
    }
    if let ToolChoice::Function(name) = &tool_choice {
        if !tools.iter().any(|t| tool_name(t) == Some(name.as_str())) {
            return Err(ApiError::bad_request("tool_choice.function.name", format!("{name:?} is not in `tools`")));
        }
    }
    let response_format = match v.get("response_format") {
        None | Some(Value::Null) => ResponseFormat::Text,
        Some(rf) => match rf.get("type").and_then(Value::as_str) {
            Some("text") => ResponseFormat::Text,
            Some("json_object") => ResponseFormat::JsonObject,
            Some("json_schema") => match rf.get("json_schema").and_then(|s| s.get("schema")) {
                Some(schema) if schema.is_object() || schema.is_boolean() => ResponseFormat::JsonSchema(schema.clone()),
                _ => return Err(ApiError::bad_request("response_format.json_schema.schema", "is required (a JSON schema object)")),
            },
            _ => return Err(ApiError::bad_request("response_format.type", "must be text, json_object or json_schema")),
        },
    };
    if response_format != ResponseFormat::Text && !tools.is_empty() && tool_choice != ToolChoice::None {
        return Err(ApiError::bad_request("response_format", "cannot be combined with tool calls; set tool_choice to none"));
    }
    let max_tokens = match (opt_uint(&v, "max_completion_tokens")?, opt_uint(&v, "max_tokens")?) {
        (Some(n), _) | (None, Some(n)) => {
            if n == 0 {
                return Err(ApiError::bad_request("max_tokens", "must be at least 1"));
            }
            Some(n as usize)
        }
        (None, None) => None,
    };
    if let Some(n) = opt_uint(&v, "n")? {
        if n != 1 {
            return Err(ApiError::bad_request("n", "only n = 1 is supported (one model, one choice)"));
        }
    }
    if v.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad_request("logprobs", "is not supported"));
    }
    let temperature = opt_f32(&v, "temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = opt_f32(&v, "top_p", 0.0, 1.0)?.unwrap_or(1.0);
    if top_p == 0.0 {
        return Err(ApiError::bad_request("top_p", "must be above 0"));
    }
    let frequency_penalty = opt_f32(&v, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let presence_penalty = opt_f32(&v, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    // Candle's repeat penalty divides the logits of recent tokens; map OpenAI's additive
    // penalties onto it (0 → off), and take llama.cpp's own name when it is given.
    let repeat_penalty = match opt_f32(&v, "repeat_penalty", 0.0, 10.0)? {
        Some(p) => p,
        None => 1.0 + frequency_penalty.max(presence_penalty).max(0.0) / 2.0,
    };
    let seed = match v.get("seed") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .or_else(|| n.as_i64().map(|i| i as u64))
                .ok_or_else(|| ApiError::bad_request("seed", "must be an integer"))?,
        ),
        Some(_) => return Err(ApiError::bad_request("seed", "must be an integer")),
    };
    let stop = match v.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, s)| s.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request(&format!("stop[{i}]"), "must be a string")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("stop", "must be a string or an array of strings")),
    };
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::bad_request("stop", "at most 4 non-empty strings"));
    }
    let stream = opt_bool(&v, "stream")?.unwrap_or(false);
    let include_usage = match v.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(o) => o.get("include_usage").and_then(Value::as_bool).unwrap_or(false),
    };
    let user = opt_str(&v, "user")?.map(str::to_string);
    check_known_fields(
        &v,
        &[
            "model", "messages", "tools", "tool_choice", "response_format", "max_tokens", "max_completion_tokens", "n", "logprobs",
            "top_logprobs", "temperature", "top_p", "frequency_penalty", "presence_penalty", "repeat_penalty", "seed", "stop", "stream",
            "stream_options", "user", "logit_bias",
        ],
        &IGNORED_CHAT_FIELDS,
    )?;
    let logit_bias = match v.get("logit_bias") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, b)| {
                let at = format!("logit_bias.{k}");
                let id = k.parse::<u32>().map_err(|_| ApiError::bad_request(&at, "keys are token ids"))?;
                match b.as_f64() {
                    Some(b) if (-100.0..=100.0).contains(&b) => Ok((id, b as f32)),
                    _ => Err(ApiError::bad_request(&at, "must be a number in -100..=100")),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("logit_bias", "must be an object of token id → bias")),
    };
    let options = GenerateOptions { max_tokens: max_tokens.unwrap_or(usize::MAX), temperature, top_p, seed, repeat_penalty, stop, ..Default::default() };
    Ok(ChatRequest { model, messages, tools, tool_choice, response_format, max_tokens, options, logit_bias, stream, include_usage, user })
}

pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
    let v = parse_object(body)?;
    let model = opt_str(&v, "model")?.unwrap_or("").to_string();
    let input = match v.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request(&format!("input[{i}]"), "must be a string (token arrays are not supported)"))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => return Err(ApiError::bad_request("input", "must not be empty")),
        Some(_) => return Err(ApiError::bad_request("input", "must be a string or an array of strings")),
        None => return Err(ApiError::bad_request("input", "is required")),
    };
    if input.len() > 2048 {
        return Err(ApiError::bad_request("input", format!("{} texts; at most 2048 per request", input.len())));
    }
    let base64 = match opt_str(&v, "encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::bad_request("encoding_format", format!("{other:?} is not float or base64"))),
    };
    if v.get("dimensions").is_some_and(|d| !d.is_null()) {
        return Err(ApiError::bad_request("dimensions", "is not supported (the model's vectors have a fixed size)"));
    }
    check_known_fields(&v, &["model", "input", "encoding_format", "dimensions", "user"], &[])?;
    Ok(EmbeddingsRequest { model, input, base64 })
}

pub fn tool_name(tool: &Value) -> Option<&str> {
    tool.get("function").unwrap_or(tool).get("name").and_then(Value::as_str)
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::invalid("the request body must be a JSON object")),
        Err(e) => Err(ApiError::invalid(format!("the request body is not valid JSON: {e}"))),
    }
}

fn check_known_fields(v: &Map<String, Value>, known: &[&str], ignored: &[&str]) -> Result<(), ApiError> {
    match v.keys().find(|k| !known.contains(&k.as_str()) && !ignored.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(k, "unknown field")),
        None => Ok(()),
    }
}

fn check_tool(i: usize, t: &Value) -> Result<(), ApiError> {
    let at = |f: &str| format!("tools[{i}].{f}");
    if let Some(kind) = t.get("type") {
        if kind != "function" {
            return Err(ApiError::bad_request(&at("type"), "only \"function\" tools are supported"));
        }
    }
    let f = t.get("function").ok_or_else(|| ApiError::bad_request(&at("function"), "is required"))?;
    match f.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => {}
        _ => return Err(ApiError::bad_request(&at("function.name"), "is required")),
    }
    if let Some(p) = f.get("parameters") {
        if !p.is_object() {
            return Err(ApiError::bad_request(&at("function.parameters"), "must be a JSON schema object"));
        }
    }
    Ok(())
}

fn parse_message(i: usize, m: &Value) -> Result<ChatMessage, ApiError> {
    let at = |f: &str| format!("messages[{i}].{f}");
    let o = m.as_object().ok_or_else(|| ApiError::bad_request(&format!("messages[{i}]"), "must be an object"))?;
    let role = match o.get("role").and_then(Value::as_str) {
        Some("developer") => "system",
        Some(r @ ("system" | "user" | "assistant" | "tool")) => r,
        Some(other) => return Err(ApiError::bad_request(&at("role"), format!("{other:?} is not system, developer, user, assistant or tool"))),
        None => return Err(ApiError::bad_request(&at("role"), "is required")),
    };
    let content = match o.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None if role == "assistant" && o.contains_key("tool_calls") => String::new(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(kind), _) if kind != "text" => {
                        return Err(ApiError::bad_request(&at(&format!("content[{j}].type")), format!("{kind:?} parts are not supported (text only)")))
                    }
                    _ => return Err(ApiError::bad_request(&at(&format!("content[{j}]")), "must be {\"type\": \"text\", \"text\": …}")),
                }
            }
            text
        }
        Some(_) => return Err(ApiError::bad_request(&at("content"), "must be a string or an array of text parts")),
        None => return Err(ApiError::bad_request(&at("content"), "is required")),
    };
    let mut msg = ChatMessage::new(role, &content);
    if let Some(calls) = o.get("tool_calls").filter(|c| !c.is_null()) {
        let list = calls.as_array().ok_or_else(|| ApiError::bad_request(&at("tool_calls"), "must be an array"))?;
        // The templates want arguments as an object; the API carries them as a JSON string.
        let mut fixed = Vec::with_capacity(list.len());
        for (j, c) in list.iter().enumerate() {
            let mut c = c.clone();
            if let Some(args) = c.pointer_mut("/function/arguments") {
                if let Value::String(s) = args {
                    *args = serde_json::from_str(s)
                        .map_err(|e| ApiError::bad_request(&at(&format!("tool_calls[{j}].function.arguments")), format!("is not JSON: {e}")))?;
                }
            }
            fixed.push(c);
        }
        msg.tool_calls = Some(Value::Array(fixed));
    }
    msg.tool_call_id = o.get("tool_call_id").and_then(Value::as_str).map(str::to_string);
    msg.name = o.get("name").and_then(Value::as_str).map(str::to_string);
    if role == "tool" && msg.tool_call_id.is_none() {
        return Err(ApiError::bad_request(&at("tool_call_id"), "is required for a tool message"));
    }
    Ok(msg)
}

fn opt_str<'a>(v: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(key, "must be a string")),
    }
}

fn opt_bool(v: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(key, "must be true or false")),
    }
}

fn opt_uint(v: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n.as_u64().map(Some).ok_or_else(|| ApiError::bad_request(key, "must be a non-negative integer")),
    }
}

fn opt_f32(v: &Map<String, Value>, key: &str, min: f32, max: f32) -> Result<Option<f32>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => match n.as_f64() {
            Some(x) if (min as f64..=max as f64).contains(&x) => Ok(Some(x as f32)),
            Some(x) => Err(ApiError::bad_request(key, format!("{x} is outside {min}..={max}"))),
            None => Err(ApiError::bad_request(key, "must be a number")),
        },
    }
}

/// Base64 (standard alphabet, padded) of the little-endian f32s, as OpenAI sends
/// `encoding_format = "base64"`.
pub fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse_chat(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn serve_api_reads_a_full_chat_request() {
        let r = parse_chat(
            br#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"ls","arguments":"{\"dir\":\"/\"}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"ok"}],
                "tools":[{"type":"function","function":{"name":"ls","parameters":{"type":"object"}}}],
                "max_tokens":7,"temperature":0,"seed":3,"stop":"END","stream":true,"stream_options":{"include_usage":true},"user":"agent"}"#,
        )
        .unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[1].content, "ab");
        assert_eq!(r.messages[2].tool_calls.as_ref().unwrap()[0]["function"]["arguments"]["dir"], "/");
        assert_eq!(r.tool_choice, ToolChoice::Auto);
        assert_eq!((r.max_tokens, r.options.seed, r.options.temperature), (Some(7), Some(3), 0.0));
        assert_eq!(r.options.stop, ["END"]);
        assert!(r.stream && r.include_usage);
        assert_eq!(r.user.as_deref(), Some("agent"));
    }

    #[test]
    fn serve_api_errors_name_the_field() {
        assert!(err("{").contains("not valid JSON"));
        assert!(err("[]").contains("JSON object"));
        assert_eq!(err(r#"{"model":"m"}"#), "messages: is required");
        assert!(err(r#"{"messages":[{"role":"user"}]}"#).starts_with("messages[0].content"));
        assert!(err(r#"{"messages":[{"role":"robot","content":"x"}]}"#).starts_with("messages[0].role"));
        assert!(err(r#"{"messages":[{"role":"user","content":"x"}],"temperature":5}"#).starts_with("temperature"));
        assert!(err(r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#).starts_with("max_tokens"));
        assert!(err(r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#).starts_with("n:"));
        assert!(err(r#"{"messages":[{"role":"user","content":"x"}],"temprature":1}"#).starts_with("temprature: unknown field"));
        assert!(err(r#"{"messages":[{"role":"user","content":"x"}],"tool_choice":"required"}"#).starts_with("tool_choice"));
        assert!(err(r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{}}]}"#)
            .starts_with("tools[0].function.name"));
        let e = parse_embeddings(br#"{"input":[1,2]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[0]"));
    }

    #[test]
    fn serve_api_base64_matches_the_standard_encoding() {
        // 1.0f32 = 00 00 80 3f → "AACAPw=="
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 1.0]), "AACAPwAAgD8=");
    }
}
