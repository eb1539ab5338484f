//! The two chat protocols, as JSON in and out.
//!
//! - OpenAI-compatible (`POST {base}/chat/completions`, the local model server too):
//!   `{model, messages, max_tokens, temperature, stream: false}`; the answer is
//!   `choices[0].message.content`, the usage `usage.prompt_tokens` / `usage.completion_tokens`.
//!   The key goes in `Authorization: Bearer KEY`.
//! - Anthropic (`POST {url}/messages`, headers `x-api-key` and `anthropic-version:
//!   2023-06-01`): `{model, max_tokens, messages, system?, temperature}`, with the system
//!   messages joined into `system` and the temperature clamped to Anthropic's 0 to 1; the
//!   answer is the text blocks of `content`, the usage `usage.input_tokens` /
//!   `usage.output_tokens`.

use super::{Request, Role, Tokens};
use serde_json::{json, Value};

pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// What a model answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireAnswer {
    pub text: String,
    /// `None` when the server did not report usage.
    pub usage: Option<Tokens>,
}

fn role(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

pub fn openai_request(model: &str, req: &Request) -> Vec<u8> {
    let messages: Vec<Value> = req.messages.iter().map(|m| json!({"role": role(m.role), "content": m.content})).collect();
    let v = json!({
        "model": model,
        "messages": messages,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "stream": false,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

pub fn anthropic_request(model: &str, req: &Request) -> Vec<u8> {
    let system: Vec<&str> = req.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
    let messages: Vec<Value> = req.messages.iter().filter(|m| m.role != Role::System).map(|m| json!({"role": role(m.role), "content": m.content})).collect();
    let mut v = json!({
        "model": model,
        "max_tokens": req.max_tokens,
        "messages": messages,
        "temperature": req.temperature.clamp(0.0, 1.0),
    });
    if !system.is_empty() {
        v["system"] = Value::String(system.join("\n\n"));
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON ({e}): {}", snippet(body)))
}

fn usage(v: &Value, input: &str, output: &str) -> Option<Tokens> {
    let u = v.get("usage")?;
    Some(Tokens { prompt: u.get(input)?.as_u64()?, completion: u.get(output)?.as_u64()? })
}

pub fn parse_openai(body: &[u8]) -> Result<WireAnswer, String> {
    let v = parse_json(body)?;
    let text = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no choices[0].message.content in the answer: {}", snippet(body)))?;
    Ok(WireAnswer { text: text.to_string(), usage: usage(&v, "prompt_tokens", "completion_tokens") })
}

pub fn parse_anthropic(body: &[u8]) -> Result<WireAnswer, String> {
    let v = parse_json(body)?;
    let blocks = v.get("content").and_then(Value::as_array).ok_or_else(|| format!("no content in the answer: {}", snippet(body)))?;
    let texts: Vec<&str> = blocks.iter().filter(|b| b.get("type").and_then(Value::as_str) == Some("text")).filter_map(|b| b.get("text")?.as_str()).collect();
    if texts.is_empty() {
        return Err(format!("no text block in the answer's content: {}", snippet(body)));
    }
    Ok(WireAnswer { text: texts.concat(), usage: usage(&v, "input_tokens", "output_tokens") })
}

/// What an error answer says: `error.message` (both APIs), `error` as a string, or the start
/// of the body.
pub fn error_detail(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(m) = v.pointer("/error/message").and_then(Value::as_str) {
            return super::http::truncate(m, 200);
        }
        if let Some(m) = v.get("error").and_then(Value::as_str) {
            return super::http::truncate(m, 200);
        }
    }
    snippet(body)
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.is_empty() {
        "(empty)".into()
    } else {
        super::http::truncate(&s, 200)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Message, Need};
    use super::*;

    fn req() -> Request {
        let mut r = Request::new(Need::Code, "write it").max_tokens(64).temperature(1.5);
        r.messages.insert(0, Message::system("be brief"));
        r.messages.insert(1, Message::system("be right"));
        r
    }

    #[test]
    fn router_wire_openai_round_trip() {
        let v: Value = serde_json::from_slice(&openai_request("gpt-x", &req())).unwrap();
        assert_eq!(v["model"], "gpt-x");
        assert_eq!(v["max_tokens"], 64);
        assert_eq!(v["stream"], false);
        assert_eq!(v["messages"][0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(v["messages"][2], json!({"role": "user", "content": "write it"}));
        let a = parse_openai(br#"{"choices":[{"message":{"role":"assistant","content":"done"}}],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#).unwrap();
        assert_eq!(a, WireAnswer { text: "done".into(), usage: Some(Tokens { prompt: 7, completion: 3 }) });
        assert_eq!(parse_openai(br#"{"choices":[{"message":{"content":"x"}}]}"#).unwrap().usage, None);
        assert!(parse_openai(br#"{"choices":[]}"#).unwrap_err().contains("choices[0].message.content"));
        assert!(parse_openai(b"<html>").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn router_wire_anthropic_round_trip() {
        let v: Value = serde_json::from_slice(&anthropic_request("claude-x", &req())).unwrap();
        assert_eq!(v["system"], "be brief\n\nbe right");
        assert_eq!(v["messages"], json!([{"role": "user", "content": "write it"}]));
        assert_eq!(v["temperature"], 1.0);
        assert_eq!(v["max_tokens"], 64);
        let a = parse_anthropic(
            br#"{"content":[{"type":"text","text":"a"},{"type":"tool_use"},{"type":"text","text":"b"}],"usage":{"input_tokens":5,"output_tokens":2}}"#,
        )
        .unwrap();
        assert_eq!(a, WireAnswer { text: "ab".into(), usage: Some(Tokens { prompt: 5, completion: 2 }) });
        assert!(parse_anthropic(br#"{"content":[]}"#).unwrap_err().contains("no text block"));
    }

    #[test]
    fn router_wire_error_detail() {
        assert_eq!(error_detail(br#"{"type":"error","error":{"type":"x","message":"bad key"}}"#), "bad key");
        assert_eq!(error_detail(br#"{"error":"model not loaded"}"#), "model not loaded");
        assert_eq!(error_detail(b"  Internal\n  Server Error "), "Internal Server Error");
        assert_eq!(error_detail(b""), "(empty)");
    }
}
