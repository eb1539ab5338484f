//! What each of the agent's commands sends to the agent's socket, what it prints (human or
//! `--json`: the agent's result as one line) and how it ends: a tool call's exit code says
//! whether it ran, failed, was denied or waits for an operator.

use std::io::Write;

use ghost_proto::agent::AgentRequest;
use serde::Serialize;
use serde_json::Value;

use crate::agent_render::{self, Fields};
use crate::cli::{AgentCommand, AuditCommand, GoalCommand, MemoryCommand, ToolCommand};
use crate::client::{Connection, SocketPath};
use crate::commands::{json_line, print, Output};
use crate::failure::Failure;
use crate::human;

/// The request a command sends.
pub fn request_for(command: &AgentCommand) -> AgentRequest {
    match command {
        AgentCommand::Status => AgentRequest::Status,
        AgentCommand::Tool { command: ToolCommand::Call { name, args, why, dry_run } } => {
            AgentRequest::ToolCall { tool: name.clone(), args: Value::Object(args.clone()), why: why.clone(), dry_run: *dry_run }
        }
        AgentCommand::Pending => AgentRequest::Pending,
        AgentCommand::Approve { id } => AgentRequest::Approve { id: id.clone() },
        AgentCommand::Deny { id, reason } => AgentRequest::Deny { id: id.clone(), reason: reason.clone() },
        AgentCommand::Audit { command: AuditCommand::Verify } => AgentRequest::AuditVerify,
        AgentCommand::Memory { command: MemoryCommand::Search { query, limit } } => AgentRequest::MemorySearch { query: query.join(" "), limit: *limit },
        AgentCommand::Decisions { limit } => AgentRequest::Decisions { limit: *limit },
        AgentCommand::Why { id } => AgentRequest::Why { id: id.clone() },
        AgentCommand::Goals => AgentRequest::Goals,
        AgentCommand::Goal { command: GoalCommand::Add { text, priority, check, parent } } => {
            AgentRequest::GoalAdd { text: text.clone(), priority: *priority, check: check.clone(), parent: parent.clone() }
        }
        AgentCommand::Goal { command: GoalCommand::Drop { id, reason } } => AgentRequest::GoalDrop { id: id.clone(), reason: reason.clone() },
        AgentCommand::Tell { text } => AgentRequest::Message { text: text.join(" ") },
        AgentCommand::Proposals => AgentRequest::Proposals,
        AgentCommand::Accept { name } => AgentRequest::Accept { name: name.clone() },
        AgentCommand::Chat { message } => AgentRequest::Chat { message: message.join(" "), history: Vec::new() },
        AgentCommand::Shell => AgentRequest::Chat { message: String::new(), history: Vec::new() },
    }
}

pub fn run(command: &AgentCommand, socket: &SocketPath, output: Output, out: &mut dyn Write) -> Result<(), Failure> {
    let mut conn = Connection::open(socket)?;
    let request = request_for(command);
    let today = human::today();
    let style = output.style;
    match command {
        AgentCommand::Status => {
            let fields: Fields = conn.agent_request(&request)?.unwrap_or_default();
            emit(out, output, &fields, || agent_render::status(&fields))
        }
        AgentCommand::Tool { .. } | AgentCommand::Approve { .. } => {
            let outcome: Value = conn.agent_request(&request)?.unwrap_or_default();
            emit(out, output, &outcome, || agent_render::tool_outcome(&outcome))?;
            tool_call_ending(&outcome)
        }
        AgentCommand::Audit { .. } => {
            let report: Value = conn.agent_request(&request)?.unwrap_or_default();
            emit(out, output, &report, || agent_render::audit_report(&report))?;
            if report["intact"] == true {
                Ok(())
            } else {
                Err(Failure::Reported)
            }
        }
        AgentCommand::Pending => list(&mut conn, &request, out, output, |calls| agent_render::pending_table(calls, style)),
        AgentCommand::Memory { .. } => list(&mut conn, &request, out, output, |hits| agent_render::memory_table(hits, style, today)),
        AgentCommand::Decisions { .. } => list(&mut conn, &request, out, output, |ds| agent_render::decisions_table(ds, style, today)),
        AgentCommand::Why { id } => list(&mut conn, &request, out, output, |chain| agent_render::why_chain(id, chain, today)),
        AgentCommand::Goals => list(&mut conn, &request, out, output, |goals| agent_render::goals_table(goals, style, today)),
        AgentCommand::Goal { command: GoalCommand::Add { .. } } | AgentCommand::Tell { .. } => acknowledged(&mut conn, &request, out, output, agent_render::created_id),
        AgentCommand::Goal { command: GoalCommand::Drop { id, .. } } => acknowledged(&mut conn, &request, out, output, |_| format!("dropped goal {id}\n")),
        AgentCommand::Deny { id, .. } => acknowledged(&mut conn, &request, out, output, |_| format!("denied {id}\n")),
        AgentCommand::Proposals => list(&mut conn, &request, out, output, |ps| {
            if ps.is_empty() {
                return "no learned rules wait to be accepted\n".to_string();
            }
            ps.iter().map(|p| format!("== {} ==\n{}\n", p["name"].as_str().unwrap_or("?"), p["text"].as_str().unwrap_or(""))).collect()
        }),
        AgentCommand::Accept { name } => acknowledged(&mut conn, &request, out, output, |r| format!("accepted {name}: {}\n", r["file"].as_str().unwrap_or("?"))),
        AgentCommand::Chat { .. } => chat_turn(&mut conn, &request, out, output).map(|_| ()),
        AgentCommand::Shell => shell(&mut conn, out, output),
    }
}

/// One message: every event printed as it arrives (`--json`: one line each), the answer last.
fn chat_turn(conn: &mut Connection, request: &AgentRequest, out: &mut dyn Write, output: Output) -> Result<String, Failure> {
    let mut answer = String::new();
    conn.agent_stream(request, &mut |ev: &Value| {
        if output.json {
            return json_line(out, ev);
        }
        let text = match ev["event"].as_str() {
            Some("text") => {
                answer.push_str(ev["text"].as_str().unwrap_or(""));
                ev["text"].as_str().unwrap_or("").to_string()
            }
            Some("note") => format!("· {}\n", ev["text"].as_str().unwrap_or("")),
            Some("call") => format!("→ {} {}\n", ev["tool"].as_str().unwrap_or("?"), ev["args"]),
            Some("result") => {
                let how = if let Some(r) = ev["refused"].as_str() {
                    format!("refused: {r}")
                } else if let Some(id) = ev["pending"].as_str() {
                    format!("waits for an operator: ghostctl approve {id}")
                } else if let Some(e) = ev["error"].as_str() {
                    format!("error: {e}")
                } else if ev["ok"] == true {
                    "ok".into()
                } else {
                    "failed".into()
                };
                format!("← {} {how}\n", ev["tool"].as_str().unwrap_or("?"))
            }
            Some("done") => "\n".to_string(),
            _ => String::new(),
        };
        print(out, &text)?;
        out.flush().map_err(|_| Failure::StdoutClosed)
    })?;
    Ok(answer)
}

/// `ghostctl shell`: a prompt, one message per line, the conversation so far sent along.
fn shell(conn: &mut Connection, out: &mut dyn Write, output: Output) -> Result<(), Failure> {
    use std::io::BufRead;
    let history_file = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".ghost_history"));
    let mut turns: Vec<Value> = Vec::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if !output.json {
            print(out, "ghost> ")?;
            out.flush().map_err(|_| Failure::StdoutClosed)?;
        }
        let Some(Ok(line)) = lines.next() else { break };
        let line = line.trim().to_string();
        if line.is_empty() {
            continue;
        }
        if line == "exit" || line == "quit" {
            break;
        }
        if let Some(f) = &history_file {
            if let Ok(mut h) = std::fs::OpenOptions::new().create(true).append(true).open(f) {
                let _ = writeln!(h, "{line}");
            }
        }
        let request = AgentRequest::Chat { message: line.clone(), history: turns.clone() };
        let answer = chat_turn(conn, &request, out, output)?;
        turns.push(serde_json::json!({ "role": "user", "content": line }));
        turns.push(serde_json::json!({ "role": "assistant", "content": answer }));
        // The newest 10 turns are enough context for a small model.
        if turns.len() > 20 {
            turns.drain(..turns.len() - 20);
        }
    }
    if !output.json {
        print(out, "\n")?;
    }
    Ok(())
}

/// 0 when the call ran (or its dry run was allowed), 1 when it ran and failed, 5 when the
/// policy denied it, 6 when it waits for an operator.
pub fn tool_call_ending(outcome: &Value) -> Result<(), Failure> {
    match outcome["decision"].as_str() {
        Some("deny") => Err(Failure::Denied),
        Some("ask") => Err(Failure::AwaitingApproval),
        _ if outcome["result"]["ok"] == false => Err(Failure::Reported),
        _ => Ok(()),
    }
}

/// `--json`: the result as one line, as `status --json` prints its array; else `human`'s text.
fn emit<T: Serialize>(out: &mut dyn Write, output: Output, result: &T, human: impl FnOnce() -> String) -> Result<(), Failure> {
    if output.json {
        json_line(out, result)
    } else {
        print(out, &human())
    }
}

/// A command whose result is an array.
fn list(conn: &mut Connection, request: &AgentRequest, out: &mut dyn Write, output: Output, human: impl FnOnce(&[Value]) -> String) -> Result<(), Failure> {
    let items: Vec<Value> = conn.agent_request(request)?.unwrap_or_default();
    emit(out, output, &items, || human(&items))
}

/// A command the agent acknowledges, perhaps with a result; `--json` without one prints
/// `{"ok":true}`, as `start` does.
fn acknowledged(conn: &mut Connection, request: &AgentRequest, out: &mut dyn Write, output: Output, human: impl FnOnce(&Value) -> String) -> Result<(), Failure> {
    let result: Value = conn.agent_request(request)?.unwrap_or_else(|| serde_json::json!({ "ok": true }));
    emit(out, output, &result, || human(&result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;
    use serde_json::json;

    fn request(args: &[&str]) -> String {
        let cli = Cli::try_parse_from(std::iter::once("ghostctl").chain(args.iter().copied())).unwrap();
        let crate::cli::Command::Agent(command) = cli.command else { panic!("{args:?} is not an agent command") };
        serde_json::to_string(&request_for(&command)).unwrap()
    }

    #[test]
    fn each_command_sends_its_request() {
        assert_eq!(request(&["agent"]), r#"{"cmd":"status"}"#);
        assert_eq!(
            request(&["tool", "call", "fs.read", "--args", r#"{"path":"/etc/hostname"}"#, "--why", "look"]),
            r#"{"cmd":"tool-call","tool":"fs.read","args":{"path":"/etc/hostname"},"why":"look","dry_run":false}"#
        );
        assert_eq!(request(&["deny", "r-1", "--reason", "not now"]), r#"{"cmd":"deny","id":"r-1","reason":"not now"}"#);
        assert_eq!(request(&["memory", "search", "disk", "full"]), r#"{"cmd":"memory-search","query":"disk full"}"#);
        assert_eq!(request(&["decisions"]), r#"{"cmd":"decisions"}"#);
        assert_eq!(request(&["goal", "add", "g", "--parent", "g-1"]), r#"{"cmd":"goal-add","text":"g","parent":"g-1"}"#);
        assert_eq!(request(&["goal", "drop", "g-1"]), r#"{"cmd":"goal-drop","id":"g-1","reason":""}"#);
        assert_eq!(request(&["tell", "redis", "is", "fine"]), r#"{"cmd":"message","text":"redis is fine"}"#);
    }

    #[test]
    fn a_tool_calls_exit_code_follows_its_outcome() {
        let code = |v: Value| tool_call_ending(&v).err().map_or(0, |f| f.exit_code());
        assert_eq!(code(json!({"decision":"allow","result":{"ok":true}})), 0);
        assert_eq!(code(json!({"decision":"allow","dry_run":true})), 0);
        assert_eq!(code(json!({"decision":"allow","result":{"ok":false,"error":"x"}})), 1);
        assert_eq!(code(json!({"decision":"deny"})), 5);
        assert_eq!(code(json!({"decision":"ask","request_id":"r-1"})), 6);
    }
}
