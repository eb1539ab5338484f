//! The agent's socket (`/run/ghost/agent.sock`): what `ghostctl` asks `ghost agent`.
//!
//! PID 1's control socket stays small and boring (no SQLite, no signatures), so the agent's
//! own questions — memory, tools, approvals, the audit trail, goals, decisions — go to the
//! agent's socket, in the same wire format: one JSON request per line, one reply per line.
//!
//! ```text
//! → {"cmd":"tool-call","tool":"fs.read","args":{"path":"/etc/hostname"},"why":"look"}
//! ← {"ok":true,"result":{"decision":"allow","reason":"…","rule":"…","audit_seq":7,"result":{…}}}
//! → {"cmd":"approve","id":"r-3"}
//! ← {"ok":false,"error":"no pending request `r-3`"}
//! ```
//!
//! Only root (and, hosted, the uid that started the agent) is admitted.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The agent socket under a root: `ROOT/run/ghost/agent.sock`.
pub const AGENT_SOCKET: &str = "run/ghost/agent.sock";

/// One request. `cmd` names the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AgentRequest {
    /// The heartbeat's figures: beats, interval, observations, decisions (and how many were
    /// made without a model), actions, repairs, errors, rules loaded, memory mode.
    Status,
    /// One tool call through policy, approvals and the audit trail.
    ToolCall {
        tool: String,
        #[serde(default)]
        args: Value,
        why: String,
        #[serde(default)]
        dry_run: bool,
    },
    /// Calls waiting for an operator.
    Pending,
    Approve { id: String },
    Deny {
        id: String,
        #[serde(default)]
        reason: String,
    },
    /// Checks the whole audit trail: hash chain, signatures, order, nothing missing.
    AuditVerify,
    /// Hybrid search over episodic memory.
    MemorySearch {
        query: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// The newest decisions (rule or model), newest first.
    Decisions {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Why something happened: the episode and the chain of causes behind it.
    Why { id: String },
    /// The goal stack.
    Goals,
    GoalAdd {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        priority: Option<i32>,
        /// A predicate checked each beat: `service:NAME:running`, `disk:PATH:below:PCT`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        check: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    GoalDrop {
        id: String,
        #[serde(default)]
        reason: String,
    },
    /// An operator message: becomes an observation of source `operator`.
    Message { text: String },
    /// Rules the agent learned from the model and proposes: `[{"name", "text"}]`.
    Proposals,
    /// Moves a proposal into /etc/ghost/rules; the agent reloads its rules.
    Accept { name: String },
    /// A message to the agent (`ghostctl chat`, `ghostctl shell`): the reply is a stream of
    /// lines, each an `AgentReply` whose `result.event` is `note`, `call`, `result`, `text`
    /// (a piece of the answer) or, last, `done` (`answer`, `model`, `calls`).
    Chat {
        message: String,
        /// Earlier turns of the conversation: `[{"role": "user"|"assistant", "content"}]`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        history: Vec<Value>,
    },
    /// A crucible's verdict on a candidate (`ghost improve`): the agent appends it to the audit
    /// trail (actor `crucible`) and keeps it in memory — a kept one as a verified capability.
    Verdict {
        unit: String,
        /// `seeded`, `kept`, `refused`, `rolled-back`, `reverted`.
        outcome: String,
        text: String,
        #[serde(default)]
        data: Value,
    },
}

/// One reply: `ok`, and either `error` or `result` (absent for a plain acknowledgement).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl AgentReply {
    pub fn ok(result: Value) -> AgentReply {
        AgentReply { ok: true, error: None, result: Some(result) }
    }
    pub fn error(msg: impl Into<String>) -> AgentReply {
        AgentReply { ok: false, error: Some(msg.into()), result: None }
    }
}

/// Parses one request line, with an error message fit for the reply.
pub fn parse_agent_request(line: &str) -> Result<AgentRequest, String> {
    if line.len() > crate::MAX_LINE {
        return Err(format!("request longer than {} bytes", crate::MAX_LINE));
    }
    serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_line;

    #[test]
    fn agent_requests_round_trip_and_bad_ones_name_the_field() {
        let r = parse_agent_request(r#"{"cmd":"tool-call","tool":"fs.read","args":{"path":"/x"},"why":"look"}"#).unwrap();
        assert_eq!(
            r,
            AgentRequest::ToolCall { tool: "fs.read".into(), args: serde_json::json!({"path":"/x"}), why: "look".into(), dry_run: false }
        );
        assert_eq!(parse_agent_request(to_line(&r).trim_end()).unwrap(), r);
        assert_eq!(parse_agent_request(r#"{"cmd":"audit-verify"}"#).unwrap(), AgentRequest::AuditVerify);
        assert!(parse_agent_request(r#"{"cmd":"tool-call","tool":"x"}"#).unwrap_err().contains("why"));
        assert!(parse_agent_request(r#"{"cmd":"approve","idd":"1"}"#).unwrap_err().contains("idd"));
        assert_eq!(to_line(&AgentReply::error("no")), "{\"ok\":false,\"error\":\"no\"}\n");
    }
}
