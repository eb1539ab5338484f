//! Talking to the agent (`ghostctl chat`, `ghostctl shell`).
//!
//! Every message first gets what the agent knows without a model: the services' state, why a
//! service it names was last restarted (the decision chain in memory), what changed in the last
//! 24 hours (the audit trail), or what memory recalls. With the model server up, that goes into
//! the prompt with the message and the conversation so far, and the model works through tools:
//! one call first (look before answering: `tool_choice: required`), then up to two more if it
//! wants them, each through policy, approvals and the audit trail as actor `chat`, each result
//! shown to it; then its answer, streamed. Without a model the answer is what was retrieved,
//! and it says so.

use std::time::Duration;

use ghost_audit::audit::Why;
use ghost_audit::gate::{CallRequest, Handled};
use ghost_audit::tools::ToolCall;
use ghost_memory::{EpisodeFilter, EpisodeKind};
use ghost_proto::{Request, State};
use serde_json::{json, Value};

use super::known_good::now_ms;
use super::perceive::control;
use super::Shared;

/// Tool calls one message may lead to.
const MAX_CALLS: usize = 3;

const SYSTEM: &str = "You are the ghostos agent, talking with the operator of this machine. Use the tools to look before you answer; be brief and concrete; never destroy data. Facts the agent already has are below.";

/// One step of a conversation as the client sees it.
pub fn event(kind: &str, v: Value) -> Value {
    let mut v = if v.is_object() { v } else { json!({ "value": v }) };
    v["event"] = json!(kind);
    v
}

/// Answers `message` (with `history`: earlier turns, `[{"role","content"}]`); every step goes
/// to `emit` as it happens; returns the final event (`done`, with the whole answer).
pub fn chat(sh: &Shared, message: &str, history: &[Value], emit: &mut dyn FnMut(Value)) -> Value {
    let facts = retrieve(sh, message);
    let model = &sh.model;
    if !model.available() {
        let answer = format!("{facts}\n\n(No model server is running, so this is what memory and the audit trail say; I cannot do more than that for this question.)");
        emit(event("text", json!({ "text": answer })));
        return event("done", json!({ "answer": answer, "model": null, "calls": 0 }));
    }
    emit(event("note", json!({ "text": "asking the model, with what the agent knows" })));
    let mut messages = vec![json!({ "role": "system", "content": format!("{SYSTEM}\n\n{facts}") })];
    messages.extend(history.iter().filter(|m| matches!(m["role"].as_str(), Some("user" | "assistant")) && m["content"].is_string()).cloned());
    messages.push(json!({ "role": "user", "content": message }));
    let mut calls = 0;
    let mut model_name = String::from("?");
    while calls < MAX_CALLS {
        let choice = if calls == 0 { "required" } else { "auto" };
        let (msg, name) = match model.chat_round(&messages, choice) {
            Ok(x) => x,
            Err(e) => {
                let answer = format!("{facts}\n\n(The model could not be asked: {e}.)");
                emit(event("text", json!({ "text": answer })));
                return event("done", json!({ "answer": answer, "model": null, "calls": calls }));
            }
        };
        model_name = name;
        let Some(tc) = msg["tool_calls"].as_array().and_then(|a| a.first()).cloned() else { break };
        let wire = tc["function"]["name"].as_str().unwrap_or("").to_string();
        let args: Value = tc["function"]["arguments"].as_str().and_then(|a| serde_json::from_str(a).ok()).or_else(|| tc["function"]["arguments"].as_object().map(|o| Value::Object(o.clone()))).unwrap_or(Value::Null);
        let id = tc["id"].as_str().unwrap_or("call-0").to_string();
        calls += 1;
        let result = match (model.tool_of(&wire), args.is_object()) {
            (Some(tool), true) => {
                emit(event("call", json!({ "tool": tool, "args": args })));
                let call = ToolCall::new(tool, args.clone(), format!("chat: {message}"));
                let why = Why { rule: None, layer: Some("chat".into()), memory_ids: vec![], text: format!("the operator asked: {message}") };
                let handled = sh.gate.handle(CallRequest { call, actor: "chat".into(), why, dry_run: false });
                let (shown, out) = match handled {
                    Ok(Handled::Ran { result, .. }) => {
                        let out = result.to_json();
                        (json!({ "tool": tool, "ok": result.is_ok() }), out)
                    }
                    Ok(Handled::Pending { request_id, .. }) => {
                        (json!({ "tool": tool, "pending": request_id }), json!({ "waiting_for_approval": request_id }))
                    }
                    Ok(other) => {
                        let reason = other.decision().reason.clone();
                        (json!({ "tool": tool, "refused": reason }), json!({ "refused": reason }))
                    }
                    Err(e) => (json!({ "tool": tool, "error": e.to_string() }), json!({ "error": e.to_string() })),
                };
                emit(event("result", shown));
                out
            }
            _ => {
                emit(event("note", json!({ "text": format!("the model asked for `{wire}`, which is not a tool it may use; ignored") })));
                json!({ "error": format!("`{wire}` is not a tool you may use") })
            }
        };
        messages.push(json!({ "role": "assistant", "content": "", "tool_calls": [{ "id": id, "type": "function", "function": { "name": wire, "arguments": args.to_string() } }] }));
        let text: String = result.to_string().chars().take(4000).collect();
        messages.push(json!({ "role": "tool", "tool_call_id": id, "content": text }));
    }
    // The answer, streamed as the server writes it.
    let mut streamed = String::new();
    let answer = match model.chat_stream(&messages, &mut |t| {
        streamed.push_str(t);
        emit(event("text", json!({ "text": t })));
    }) {
        Ok((text, name)) => {
            model_name = name;
            text
        }
        Err(e) => {
            let answer = format!("{facts}\n\n(The model's answer could not be read: {e}.)");
            emit(event("text", json!({ "text": answer })));
            answer
        }
    };
    event("done", json!({ "answer": answer, "model": model_name, "calls": calls }))
}

/// What the agent can say about `message` without a model.
pub fn retrieve(sh: &Shared, message: &str) -> String {
    let lower = message.to_lowercase();
    let services: Vec<ghost_proto::ServiceStatus> = control(&Request::Status { name: None }).ok().and_then(|r| r.services).unwrap_or_default();
    let named: Vec<&str> = services.iter().map(|s| s.name.as_str()).filter(|n| lower.split(|c: char| !c.is_alphanumeric() && c != '-' && c != '_').any(|w| w == *n)).collect();
    let mut parts = Vec::new();
    if lower.contains("why") {
        for n in &named {
            parts.push(why_service(sh, n));
        }
    }
    if lower.contains("changed") || lower.contains("what happened") || lower.contains("since") {
        parts.push(what_changed(sh, Duration::from_secs(24 * 3600)));
    }
    let about_state = ["status", "running", "how are", "health", "all right", "alright", "services", "is everything"].iter().any(|w| lower.contains(w));
    if parts.is_empty() && about_state {
        parts.push(status(sh, &services));
    }
    if parts.is_empty() {
        for n in &named {
            parts.push(why_service(sh, n));
        }
    }
    if parts.is_empty() {
        parts.push(recall(sh, message));
    }
    parts.join("\n\n")
}

fn when(ms: i64) -> String {
    ghost_model::router::budget::rfc3339(ms.max(0) as u64)
}

fn status(sh: &Shared, services: &[ghost_proto::ServiceStatus]) -> String {
    let mut s = String::from("Services:");
    if services.is_empty() {
        s.push_str(" none (or ghost-init cannot be reached)");
    }
    for v in services {
        let state = serde_json::to_value(v.state).ok().and_then(|x| x.as_str().map(str::to_string)).unwrap_or_default();
        let extra = match (v.state, &v.last_exit) {
            (State::Running, _) => format!(", up {:.0} s, {} restarts", v.uptime_s.unwrap_or(0.0), v.restarts),
            (_, Some(e)) => format!(", last exit: {e}"),
            _ => String::new(),
        };
        s.push_str(&format!("\n- {}: {state}{extra}", v.name));
    }
    let st = sh.status_json();
    s.push_str(&format!(
        "\nAgent: {} decisions ({} by rules, {} by the model), {} repairs verified, {} failed, {} waiting for approval.",
        st["decisions"], st["decisions_by_rule"], st["decisions_by_model"], st["repairs_verified"], st["repairs_failed"], st["pending_approvals"]
    ));
    s
}

/// The newest decision about `service`, with its chain; else the newest observation of it.
fn why_service(sh: &Shared, service: &str) -> String {
    let f = EpisodeFilter { kinds: vec![EpisodeKind::Decision], source: Some(service.to_string()), limit: 1, ..EpisodeFilter::default() };
    if let Some(d) = sh.memory.query(&f).ok().and_then(|v| v.into_iter().next()) {
        let chain = sh.memory.chain(d.id).unwrap_or_default();
        let mut s = format!("Why {service} (decision {} at {}):", d.id, when(d.episode.time_ms));
        for e in chain {
            s.push_str(&format!("\n- {}: {}", e.episode.kind.as_str(), e.episode.text));
        }
        return s;
    }
    let f = EpisodeFilter { kinds: vec![EpisodeKind::Observation], source: Some(service.to_string()), limit: 3, ..EpisodeFilter::default() };
    match sh.memory.query(&f) {
        Ok(obs) if !obs.is_empty() => {
            let mut s = format!("The agent made no decision about {service}; what it saw (newest first):");
            for e in obs {
                s.push_str(&format!("\n- {}: {}", when(e.episode.time_ms), e.episode.text));
            }
            s.push_str("\nA restart without a decision is ghost-init's own, by the service's restart policy.");
            s
        }
        _ => format!("The agent has nothing about {service} in memory."),
    }
}

/// The actions in the audit trail over the last `span`.
fn what_changed(sh: &Shared, span: Duration) -> String {
    let since = now_ms().saturating_sub(span.as_millis() as u64);
    let records = ghost_audit::audit::read_records(&sh.audit_dir).unwrap_or_default();
    let mut lines = Vec::new();
    for r in records {
        let v = serde_json::to_value(&r).unwrap_or(Value::Null);
        let ts = v["ts"].as_str().unwrap_or("");
        if parse_ms(ts).is_some_and(|t| t < since) {
            continue;
        }
        let status = v["outcome"]["status"].as_str().unwrap_or("");
        let actor = v["who"]["actor"].as_str().unwrap_or("?");
        match v["what"]["kind"].as_str() {
            Some("tool_call") if !matches!(status, "started" | "dry_run") => {
                let tool = v["what"]["tool"].as_str().unwrap_or("?");
                if read_only(tool) {
                    continue;
                }
                lines.push(format!("- {ts} {tool} {} by {actor}: {status}", v["what"]["args"]));
            }
            Some("decision") if actor != "agent" => lines.push(format!("- {ts} {actor}: {}", v["what"]["text"].as_str().unwrap_or(""))),
            _ => {}
        }
    }
    if lines.is_empty() {
        return format!("Nothing changed since {} (the audit trail has no action since then).", when(since as i64));
    }
    let n = lines.len();
    let shown: Vec<String> = lines.into_iter().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
    format!("What changed since {} ({n} actions in the audit trail{}):\n{}", when(since as i64), if n > 20 { ", the newest 20 shown" } else { "" }, shown.join("\n"))
}

fn read_only(tool: &str) -> bool {
    matches!(tool, "fs.read" | "fs.list" | "process.list" | "service.status" | "log.tail" | "sys.metrics" | "net.check" | "memory.search")
}

/// `2026-11-22T21:00:00.123Z` → ms since the epoch.
fn parse_ms(ts: &str) -> Option<u64> {
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, mi) = (t.next()?.parse::<u64>().ok()?, t.next()?.parse::<u64>().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    let days = ghost_proto::days_from_civil(y, m as u32, dd as u32);
    Some((days as u64) * 86_400_000 + h * 3_600_000 + mi * 60_000 + (sec * 1000.0) as u64)
}

fn recall(sh: &Shared, message: &str) -> String {
    match sh.memory.search(message, 3) {
        Ok(r) if !r.hits.is_empty() => {
            let mut s = String::from("What memory recalls about it:");
            for h in r.hits {
                s.push_str(&format!("\n- {} ({}): {}", when(h.episode.episode.time_ms), h.episode.episode.source, h.episode.episode.text));
            }
            s
        }
        _ => "Memory recalls nothing about that.".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_times_parse() {
        assert_eq!(parse_ms("1970-01-01T00:00:01.500Z"), Some(1500));
        assert_eq!(parse_ms("2026-11-22T00:00:00Z"), Some(ghost_proto::days_from_civil(2026, 11, 22) as u64 * 86_400_000));
        assert_eq!(parse_ms("yesterday"), None);
    }
}
