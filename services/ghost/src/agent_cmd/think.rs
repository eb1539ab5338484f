//! The model layer of deliberation: what no rule covers, when it matters (salience ≥ 0.8), is
//! put to the local model server (`ghost model serve` on /run/ghost/model.sock) with the tool
//! registry as the request's `tools` and `tool_choice: "required"`. The server decodes under
//! each tool's JSON schema, so the answer is a call; it still goes through policy, approvals
//! and the audit trail like any other, as actor `model`. An answer that is not a call of a
//! known tool is discarded and counted. Without a server the observation stays `unhandled`.

use std::path::PathBuf;
use std::time::Duration;

use ghost_agent::Observation;
use ghost_audit::policy::Mode;
use ghost_audit::tools::{Registry, Risk, ToolCall};
use ghost_model::router::http::HttpClient;
use serde_json::{json, Value};

/// Tool names as the OpenAI API allows them (`^[a-zA-Z0-9_-]+$`): `service.start` is
/// `service_start`; none of ours has an underscore of its own to collide with.
fn wire_name(tool: &str) -> String {
    tool.replace('.', "_")
}

fn offered(mode: Mode, risk: Risk, reversible: bool) -> bool {
    match mode {
        Mode::Trusted => true,
        Mode::Normal => risk == Risk::Low || (risk == Risk::Medium && reversible),
        Mode::Safe | Mode::Paranoid => risk == Risk::Low,
    }
}

pub struct Model {
    socket: PathBuf,
    pub max_tokens: u32,
    timeout: Duration,
    tools: Value,
    /// wire name → tool name
    names: Vec<(String, String)>,
}

/// What the model answered.
pub enum Answer {
    Call(ToolCall, String),
    /// Not a call of a known tool with object arguments: discarded.
    Invalid(String),
    /// The server could not be asked (not there, down, an HTTP error).
    Unavailable(String),
}

const SYSTEM: &str = "You are the ghostos agent. You keep this machine healthy. An observation came in that no rule covers. Answer with exactly one tool call that helps: look closer first (sys.metrics, log.tail, service.status, process.list) unless the fix is plain. Never destroy data.";

impl Model {
    /// Offers the model the tools the security `mode` lets it run without an operator (by the
    /// tools' risk; the call still goes through the full policy): a small model chooses better
    /// from fewer, and the prompt stays short.
    pub fn new(socket: PathBuf, max_tokens: u32, timeout: Duration, registry: &Registry, mode: Mode, allowed: &dyn Fn(&str) -> bool) -> Model {
        let mut names = Vec::new();
        let tools: Vec<Value> = registry
            .specs()
            .filter(|s| allowed(&s.name) && offered(mode, s.risk, s.reversible))
            .map(|s| {
                names.push((wire_name(&s.name), s.name.clone()));
                json!({ "type": "function", "function": { "name": wire_name(&s.name), "description": s.description, "parameters": s.input_schema } })
            })
            .collect();
        Model { socket, max_tokens, timeout, tools: Value::Array(tools), names }
    }

    pub fn available(&self) -> bool {
        self.socket.exists()
    }

    /// Asks for one call about `o` (with `context`: what memory recalls about it).
    pub fn ask(&self, o: &Observation, context: &[String]) -> Answer {
        let mut user = format!("Observation ({} / {}): {}\nDetails: {}", o.source.as_str(), o.kind, o.text, o.data);
        if !context.is_empty() {
            user.push_str("\nWhat memory recalls:\n");
            for c in context {
                user.push_str(&format!("- {c}\n"));
            }
        }
        let body = json!({
            "model": "ghost",
            "messages": [{ "role": "system", "content": SYSTEM }, { "role": "user", "content": user }],
            "tools": self.tools,
            "tool_choice": "required",
            "max_tokens": self.max_tokens,
            "temperature": 0,
        });
        let client = HttpClient::unix(&self.socket, "/v1");
        let reply = match client.post_json("/chat/completions", &[], body.to_string().as_bytes(), self.timeout) {
            Ok(r) if r.status == 200 => r,
            Ok(r) => return Answer::Unavailable(format!("{} answered HTTP {}: {}", client.describe(), r.status, String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>())),
            Err(e) => return Answer::Unavailable(format!("{}: {e}", client.describe())),
        };
        self.parse(&reply.body, &o.text)
    }

    fn parse(&self, body: &[u8], about: &str) -> Answer {
        let Ok(v) = serde_json::from_slice::<Value>(body) else { return Answer::Invalid("the answer is not JSON".into()) };
        let f = &v["choices"][0]["message"]["tool_calls"][0]["function"];
        let Some(wire) = f["name"].as_str() else { return Answer::Invalid("the answer holds no tool call".into()) };
        let Some((_, tool)) = self.names.iter().find(|(w, _)| w == wire) else { return Answer::Invalid(format!("`{wire}` is not a tool")) };
        let args: Value = match f["arguments"].as_str().map(serde_json::from_str) {
            Some(Ok(a @ Value::Object(_))) => a,
            _ => return Answer::Invalid(format!("the arguments of `{wire}` are not a JSON object")),
        };
        let model = v["model"].as_str().unwrap_or("?").to_string();
        Answer::Call(ToolCall::new(tool.clone(), args, format!("model: {about}")), model)
    }
}

impl Model {
    /// The tool a wire name stands for.
    pub fn tool_of(&self, wire: &str) -> Option<&str> {
        self.names.iter().find(|(w, _)| w == wire).map(|(_, t)| t.as_str())
    }

    /// One round of a conversation: the assistant's message (with `tool_calls` or `content`)
    /// and the model's name. `tool_choice`: `required`, `auto` or `none`.
    pub fn chat_round(&self, messages: &[Value], tool_choice: &str) -> Result<(Value, String), String> {
        let mut body = json!({ "model": "ghost", "messages": messages, "max_tokens": self.max_tokens, "temperature": 0 });
        if tool_choice != "none" {
            body["tools"] = self.tools.clone();
            body["tool_choice"] = json!(tool_choice);
        }
        let client = HttpClient::unix(&self.socket, "/v1");
        let r = client.post_json("/chat/completions", &[], body.to_string().as_bytes(), self.timeout).map_err(|e| format!("{}: {e}", client.describe()))?;
        if r.status != 200 {
            return Err(format!("{} answered HTTP {}: {}", client.describe(), r.status, String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>()));
        }
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("the answer is not JSON: {e}"))?;
        let msg = v["choices"][0]["message"].clone();
        if !msg.is_object() {
            return Err("the answer holds no message".into());
        }
        Ok((msg, v["model"].as_str().unwrap_or("?").to_string()))
    }

    /// The final answer, streamed: each piece of text goes to `on_text` as the server sends
    /// it (server-sent events over the socket, chunked). Returns the whole text and the model.
    pub fn chat_stream(&self, messages: &[Value], on_text: &mut dyn FnMut(&str)) -> Result<(String, String), String> {
        use std::io::{BufRead, BufReader, Read, Write};
        let body = json!({ "model": "ghost", "messages": messages, "max_tokens": self.max_tokens, "temperature": 0, "stream": true }).to_string();
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).map_err(|e| format!("{}: {e}", self.socket.display()))?;
        let _ = s.set_read_timeout(Some(self.timeout));
        write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let status: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let mut chunked = false;
        loop {
            line.clear();
            if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 || line == "\r\n" {
                break;
            }
            if line.to_ascii_lowercase().starts_with("transfer-encoding:") && line.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
        // The body, de-chunked, fed through an SSE splitter.
        let mut text = String::new();
        let mut model = String::from("?");
        let mut pending = String::new();
        let mut feed = |bytes: &[u8], text: &mut String, model: &mut String| -> bool {
            pending.push_str(&String::from_utf8_lossy(bytes));
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                for l in event.lines() {
                    let Some(data) = l.strip_prefix("data: ") else { continue };
                    if data.trim() == "[DONE]" {
                        return false;
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(data) {
                        if let Some(m) = v["model"].as_str() {
                            *model = m.to_string();
                        }
                        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                            on_text(t);
                            text.push_str(t);
                        }
                    }
                }
            }
            true
        };
        if status != 200 {
            let mut rest = String::new();
            let _ = r.read_to_string(&mut rest);
            return Err(format!("{} answered HTTP {status}: {}", self.socket.display(), rest.chars().take(200).collect::<String>()));
        }
        loop {
            let bytes = if chunked {
                line.clear();
                if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                    break;
                }
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).map_err(|_| format!("a bad chunk size {line:?}"))?;
                if size == 0 {
                    break;
                }
                let mut buf = vec![0u8; size + 2];
                r.read_exact(&mut buf).map_err(|e| e.to_string())?;
                buf.truncate(size);
                buf
            } else {
                let mut buf = vec![0u8; 4096];
                let n = r.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                buf
            };
            if !feed(&bytes, &mut text, &mut model) {
                break;
            }
        }
        Ok((text, model))
    }
}

/// Memory's embeddings from the model server's `/v1/embeddings` (MiniLM there). While the
/// server is away, recording goes on and the episodes wait for `embed_pending`.
pub struct ServerEmbedder {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl ghost_memory::Embed for ServerEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        if !self.socket.exists() {
            return Err(format!("no model server at {}", self.socket.display()));
        }
        let client = HttpClient::unix(&self.socket, "/v1");
        let body = json!({ "input": texts });
        let reply = client.post_json("/embeddings", &[], body.to_string().as_bytes(), self.timeout).map_err(|e| format!("{}: {e}", client.describe()))?;
        if reply.status != 200 {
            return Err(format!("{} answered HTTP {}", client.describe(), reply.status));
        }
        let v: Value = serde_json::from_slice(&reply.body).map_err(|e| format!("embeddings: {e}"))?;
        let data = v["data"].as_array().ok_or("embeddings: no data")?;
        if data.len() != texts.len() {
            return Err(format!("embeddings: {} vectors for {} texts", data.len(), texts.len()));
        }
        data.iter()
            .map(|d| d["embedding"].as_array().ok_or("embeddings: no vector".to_string()).map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_back_to_tools_and_anything_else_is_invalid() {
        let offered = |mode| {
            let m = Model::new(PathBuf::from("/x"), 64, Duration::from_secs(1), &Registry::builtin(), mode, &|t: &str| t != "net.check");
            m.names.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>()
        };
        let normal = offered(Mode::Normal);
        assert!(normal.contains(&"service.restart".to_string()) && !normal.contains(&"shell.exec".to_string()), "{normal:?}");
        assert!(!normal.contains(&"net.check".to_string()), "not allowed by the constitution");
        assert!(!offered(Mode::Safe).contains(&"service.restart".to_string()));
        assert!(offered(Mode::Trusted).contains(&"shell.exec".to_string()));
        let m = Model::new(PathBuf::from("/nonexistent"), 64, Duration::from_secs(1), &Registry::builtin(), Mode::Normal, &|_: &str| true);
        assert!(m.tools.as_array().unwrap().iter().any(|t| t["function"]["name"] == "service_restart"));
        let body = |name: &str, args: &str| json!({ "model": "m", "choices": [{ "message": { "tool_calls": [{ "function": { "name": name, "arguments": args } }] } }] }).to_string();
        match m.parse(body("service_status", r#"{"name":"web"}"#).as_bytes(), "x") {
            Answer::Call(c, model) => assert_eq!((c.tool.as_str(), c.args["name"].as_str(), model.as_str()), ("service.status", Some("web"), "m")),
            _ => panic!("a call"),
        }
        assert!(matches!(m.parse(body("rm_rf", "{}").as_bytes(), "x"), Answer::Invalid(e) if e.contains("rm_rf")));
        assert!(matches!(m.parse(body("fs_read", "[1]").as_bytes(), "x"), Answer::Invalid(_)));
        assert!(matches!(m.parse(b"{\"choices\":[]}", "x"), Answer::Invalid(_)));
        assert!(matches!(m.ask(&Observation::new(ghost_agent::Source::Operator, "message", "hi", 0), &[]), Answer::Unavailable(_)));
    }
}
