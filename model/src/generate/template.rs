//! Chat templates: the Jinja template a model ships in tokenizer_config.json (`chat_template`)
//! or in GGUF metadata (`tokenizer.chat_template`), rendered with minijinja.
//!
//! Why minijinja and not a hand-written renderer: real templates (Qwen2.5 with tools, Qwen3
//! with thinking, Llama 3) use loops, `namespace`, filters and Python string methods; a minimal
//! renderer would only cover the one template it was written for. The environment copies what
//! transformers' `apply_chat_template` sets up: `trim_blocks` and `lstrip_blocks` on,
//! `raise_exception`, `strftime_now`, Python string methods (minijinja-contrib's pycompat),
//! and `bos_token`/`eos_token`/`add_generation_prompt`/`tools` in the context. Known difference:
//! minijinja's `tojson` escapes `<`, `>`, `&` and `'` as `\u003c`-style sequences where Python's
//! json.dumps leaves them; this touches only tool schemas that contain those characters.

use std::path::Path;

use serde::Serialize;

use super::GenerateError;

/// One message of a chat. `content` is plain text; tool calls and tool results are passed
/// through to the template as the OpenAI API shapes them.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }
    pub fn system(content: &str) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: &str) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: &str) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template with the special tokens it may refer to.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// What tokenizer_config.json says about chat formatting.
#[derive(Debug, Default)]
pub(crate) struct TokenizerConfig {
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

impl TokenizerConfig {
    /// Reads `path` if it exists (a model may ship without one).
    pub(crate) fn read(path: &Path) -> Result<Self, GenerateError> {
        if !path.is_file() {
            return Ok(TokenizerConfig::default());
        }
        let text = std::fs::read_to_string(path).map_err(|e| GenerateError::io(path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| GenerateError::BadConfig {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let chat_template = match json.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: the one named "default" is the chat template.
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        };
        Ok(TokenizerConfig {
            chat_template,
            bos_token: special_token(&json, "bos_token"),
            eos_token: special_token(&json, "eos_token"),
        })
    }
}

/// A special token as HF writes it: a string or `{"content": …}`.
fn special_token(json: &serde_json::Value, key: &str) -> Option<String> {
    match json.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        obj => obj.get("content")?.as_str().map(str::to_string),
    }
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, GenerateError> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        // Llama 3 templates print today's date; a fixed format, like transformers' helper.
        env.add_function("strftime_now", |_format: String| -> String { today() });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| GenerateError::Template(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Renders `messages`; `add_generation_prompt` appends the assistant turn's opening.
    /// `tools` is the OpenAI `tools` array, passed to templates that format tool definitions.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, GenerateError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| GenerateError::Template(e.to_string()))?;
        template
            .render(minijinja::context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| GenerateError::Template(format!("{e:#}")))
    }
}

/// Today's date as "26 Jul 2024" (the format Llama 3 templates ask for), from the system clock.
fn today() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (year, month, day) = ghost_proto::civil_from_days((secs / 86_400) as i64);
    format!("{day:02} {} {year}", MONTHS[(month - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_template_renders_qwen_chat_and_reports_template_errors() {
        let t = ChatTemplate::new(crate::fixture::QWEN_CHAT_TEMPLATE, "", "<|im_end|>").unwrap();
        let text = t
            .render(
                &[ChatMessage::system("Be brief."), ChatMessage::user("Hi!")],
                None,
                true,
            )
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
        let bad = ChatTemplate::new("{{ raise_exception('only user turns') }}", "", "").unwrap();
        let err = bad.render(&[], None, false).unwrap_err().to_string();
        assert!(err.contains("only user turns"), "{err}");
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
