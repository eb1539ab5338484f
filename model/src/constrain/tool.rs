//! Tool lists: the schema of "one call of one of these tools", written as
//! `{"name": "<tool>", "arguments": {…}}` with the name first, so the arguments that follow
//! are already narrowed to that tool's parameters.

use serde_json::{json, Value};

use super::schema::{Grammar, Limits, SchemaError};

/// A tool the model may call: its name and the JSON schema of its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub parameters: Value,
}

impl ToolSpec {
    /// Reads one entry of an OpenAI `tools` array (`{"type": "function", "function": {"name",
    /// "parameters"}}`) or a bare `{"name", "parameters"}`. A tool without parameters takes `{}`.
    pub fn from_openai(tool: &Value) -> Option<Self> {
        let f = tool.get("function").unwrap_or(tool);
        let name = f.get("name")?.as_str()?.to_owned();
        let parameters = f.get("parameters").cloned().unwrap_or_else(no_parameters);
        Some(Self { name, parameters })
    }
}

fn no_parameters() -> Value {
    json!({"type": "object", "properties": {}})
}

/// The JSON schema that a generated tool call satisfies: one alternative per tool.
pub fn tool_call_schema(tools: &[ToolSpec]) -> Value {
    let alternatives: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": { "name": { "const": t.name }, "arguments": t.parameters },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    json!({ "anyOf": alternatives })
}

impl Grammar {
    /// The grammar of one call of one of `tools` (see [`tool_call_schema`]), with `name`
    /// written before `arguments`.
    pub fn tool_calls(tools: &[ToolSpec], limits: &Limits) -> Result<Self, SchemaError> {
        if tools.is_empty() {
            return Err(SchemaError { pointer: "/".to_owned(), reason: "no tools to call".to_owned() });
        }
        let calls: Vec<(Value, &Value)> = tools.iter().map(|t| (Value::String(t.name.clone()), &t.parameters)).collect();
        Self::from_ordered_objects(&calls, "name", "arguments", limits)
    }
}
