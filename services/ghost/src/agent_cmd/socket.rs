//! The agent's socket: one thread per connection (at most 16 at once), one JSON request per
//! line, one reply per line (ghost_proto::agent). Only root and the agent's own user get in.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ghost_audit::audit::Why;
use ghost_audit::gate::CallRequest;
use ghost_audit::tools::ToolCall;
use ghost_memory::{EpisodeFilter, EpisodeKind, StoredEpisode};
use ghost_proto::agent::{parse_agent_request, AgentReply, AgentRequest};
use ghost_proto::{to_line, MAX_LINE};
use serde_json::{json, Value};

use super::known_good::now_ms;
use super::perceive::{operator_message, Input};
use super::Shared;

const MAX_CLIENTS: usize = 16;

pub fn serve(sh: Arc<Shared>, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by an agent that is gone; a live one answers and is left alone.
    if UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another agent answers on this socket"));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let clients = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("agent-socket".into()).spawn(move || {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and the like: say so and let it pass rather than spin.
                    eprintln!("ghost agent: socket: accept: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            };
            if !admitted(&stream) {
                continue;
            }
            if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                clients.fetch_sub(1, Ordering::SeqCst);
                let _ = (&stream).write_all(to_line(&AgentReply::error(format!("too many clients (at most {MAX_CLIENTS})"))).as_bytes());
                continue;
            }
            let (sh, clients) = (sh.clone(), clients.clone());
            let spawned = std::thread::Builder::new().name("agent-client".into()).spawn(move || {
                client(&sh, stream);
                clients.fetch_sub(1, Ordering::SeqCst);
            });
            if spawned.is_err() {
                eprintln!("ghost agent: socket: cannot start a client thread");
            }
        }
    })?;
    Ok(())
}

/// The peer's uid is root's or ours.
fn admitted(stream: &UnixStream) -> bool {
    // SAFETY: getuid cannot fail.
    peer_uid(stream).is_some_and(|uid| uid == 0 || uid == unsafe { libc::getuid() })
}

/// The connecting process's uid (SO_PEERCRED); None when the kernel does not say.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the size given.
    let r = unsafe { libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len) };
    (r == 0).then_some(cred.uid)
}

fn client(sh: &Shared, stream: UnixStream) {
    let who = format!("operator (uid {})", peer_uid(&stream).unwrap_or(u32::MAX));
    // An idle client lets its slot go after a minute (16 slots at most).
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(60)));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_LINE as u64 + 2).read_line(&mut line) {
            Ok(0) => return,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let _ = writer.write_all(to_line(&AgentReply::error("the request is not UTF-8")).as_bytes());
                return;
            }
            Err(_) => return,
            Ok(_) => {}
        }
        let too_long = line.trim_end_matches('\n').len() > MAX_LINE;
        let reply = if too_long {
            AgentReply::error(format!("request longer than {MAX_LINE} bytes"))
        } else {
            match parse_agent_request(line.trim_end()) {
                // A conversation streams its steps, then ends with its `done` line.
                Ok(AgentRequest::Chat { message, history }) => {
                    if message.trim().is_empty() {
                        AgentReply::error("message: the message is empty")
                    } else {
                        let mut gone = false;
                        let done = super::chat::chat(sh, &message, &history, &mut |ev| {
                            if !gone && writer.write_all(to_line(&AgentReply::ok(ev)).as_bytes()).is_err() {
                                gone = true;
                            }
                        });
                        if gone {
                            return;
                        }
                        AgentReply::ok(done)
                    }
                }
                Ok(req) => answer(sh, req, &who).unwrap_or_else(AgentReply::error),
                Err(e) => AgentReply::error(e),
            }
        };
        if writer.write_all(to_line(&reply).as_bytes()).is_err() || too_long {
            return;
        }
    }
}

fn episode_json(e: &StoredEpisode) -> Value {
    json!({ "id": e.id.to_string(), "time_ms": e.episode.time_ms, "kind": e.episode.kind, "source": e.episode.source, "text": e.episode.text })
}

fn answer(sh: &Shared, req: AgentRequest, who: &str) -> Result<AgentReply, String> {
    let ok = |v: Value| Ok(AgentReply::ok(v));
    match req {
        AgentRequest::Status => ok(sh.status_json()),
        AgentRequest::ToolCall { tool, args, why, dry_run } => {
            if why.trim().is_empty() {
                return Err("why: say why the call is made (it goes into the audit trail)".into());
            }
            let call = ToolCall::new(tool, args, why.clone());
            let why = Why { rule: None, layer: Some("operator".into()), memory_ids: vec![], text: why };
            let handled = sh.gate.handle(CallRequest { call, actor: who.to_string(), why, dry_run }).map_err(|e| e.to_string())?;
            ok(handled.to_json())
        }
        AgentRequest::Pending => ok(serde_json::to_value(sh.gate.approvals().pending()).map_err(|e| e.to_string())?),
        AgentRequest::Approve { id } => {
            let handled = sh.gate.approve(&id, who).map_err(|e| e.to_string())?;
            let v = handled.to_json();
            sh.send(Input::Resolved { request_id: id, outcome: Ok(handled) });
            ok(v)
        }
        AgentRequest::Deny { id, reason } => {
            let reason = if reason.is_empty() { "denied by the operator".to_string() } else { reason };
            let seq = sh.gate.deny(&id, who, &reason).map_err(|e| e.to_string())?;
            sh.send(Input::Resolved { request_id: id.clone(), outcome: Err(format!("the operator denied it: {reason}")) });
            ok(json!({ "id": id, "denied": true, "audit_seq": seq }))
        }
        AgentRequest::AuditVerify => {
            let report = ghost_audit::audit::verify(&sh.audit_dir, &sh.public_key).map_err(|e| e.to_string())?;
            let problems: Vec<Value> = report.problems.iter().map(|p| json!({ "seq": p.seq, "problem": p.to_string() })).collect();
            ok(json!({ "intact": report.ok(), "records": report.records, "last_seq": report.last_seq, "problems": problems, "warnings": report.warnings }))
        }
        AgentRequest::MemorySearch { query, limit } => {
            let found = sh.memory.search(&query, limit.unwrap_or(10).clamp(1, 100)).map_err(|e| e.to_string())?;
            let hits: Vec<Value> = found
                .hits
                .iter()
                .map(|h| {
                    let mut v = episode_json(&h.episode);
                    v["score"] = json!((h.score * 1000.0).round() / 1000.0);
                    v
                })
                .collect();
            ok(Value::Array(hits))
        }
        AgentRequest::Decisions { limit } => {
            let f = EpisodeFilter { kinds: vec![EpisodeKind::Decision], limit: limit.unwrap_or(20).clamp(1, 1000), ..EpisodeFilter::default() };
            let found = sh.memory.query(&f).map_err(|e| e.to_string())?;
            let rows: Vec<Value> = found
                .iter()
                .map(|e| {
                    let d = &e.episode.details;
                    let mut v = episode_json(e);
                    v["layer"] = d.get("layer").cloned().unwrap_or(Value::Null);
                    v["rule"] = d.get("rule").cloned().unwrap_or(Value::Null);
                    v["playbook"] = json!(e.episode.links.playbook);
                    v["outcome"] = outcome_of(sh, e.id);
                    v
                })
                .collect();
            ok(Value::Array(rows))
        }
        AgentRequest::Why { id } if id.trim().len() == 26 && id.trim().bytes().all(|b| b.is_ascii_alphanumeric()) => ok(Value::Array(why_snapshot(sh, id.trim())?)),
        AgentRequest::Why { id } => {
            let id: i64 = id.trim().parse().map_err(|_| format!("id: {id:?} is not a memory id (a number, as `ghostctl decisions` shows) nor a snapshot id (26 characters, as `ghostctl snapshot list` shows)"))?;
            let chain = sh.memory.chain(id).map_err(|e| e.to_string())?;
            if chain.is_empty() {
                return Err(format!("no memory {id}"));
            }
            ok(Value::Array(chain.iter().map(episode_json).collect()))
        }
        AgentRequest::Goals => {
            let g = sh.goals.lock().unwrap_or_else(|p| p.into_inner());
            ok(serde_json::to_value(&g.goals).map_err(|e| e.to_string())?)
        }
        AgentRequest::GoalAdd { text, priority, check, parent } => {
            let id = sh.goals.lock().unwrap_or_else(|p| p.into_inner()).add(&text, priority.unwrap_or(50), check, parent, now_ms())?;
            ok(json!({ "id": id }))
        }
        AgentRequest::GoalDrop { id, reason } => {
            sh.goals.lock().unwrap_or_else(|p| p.into_inner()).drop_goal(&id, &reason, now_ms())?;
            ok(json!({ "id": id, "dropped": true }))
        }
        AgentRequest::Proposals => {
            let list = sh.learning.lock().unwrap_or_else(|p| p.into_inner()).proposals();
            ok(Value::Array(list.into_iter().map(|(name, text)| json!({ "name": name, "text": text })).collect()))
        }
        AgentRequest::Accept { name } => {
            // Audited before it takes effect: no rule enters the rules unrecorded.
            let text = format!("{who} accepted the learned rule {name}");
            let why = Why { rule: None, layer: Some("operator".into()), memory_ids: vec![], text: text.clone() };
            let learning = sh.learning.lock().unwrap_or_else(|p| p.into_inner());
            if !learning.proposals().iter().any(|(n, _)| n == &name) {
                return Err(format!("no proposal named `{name}` (see ghostctl proposals)"));
            }
            sh.gate.audit().append(ghost_audit::audit::Entry::decision(who, &text, json!({ "rule": name }), why)).map_err(|e| e.to_string())?;
            let to = learning.accept(&name, &sh.rules_dir)?;
            drop(learning);
            sh.send(Input::ReloadRules);
            ok(json!({ "name": name, "file": to.display().to_string() }))
        }
        AgentRequest::Verdict { unit, outcome, text, data } => {
            let salience = match outcome.as_str() {
                "kept" | "seeded" => 0.8,
                "rolled-back" => 0.9,
                "refused" | "reverted" => 0.5,
                other => return Err(format!("outcome: {other:?} is not seeded, kept, refused, rolled-back or reverted")),
            };
            if unit.is_empty() || text.trim().is_empty() {
                return Err("unit and text: a verdict names its unit and says what happened".into());
            }
            let mut data = data;
            if !data.is_object() {
                data = json!({ "detail": data });
            }
            data["unit"] = json!(unit);
            data["outcome"] = json!(outcome);
            let why = Why { rule: None, layer: Some("crucible".into()), memory_ids: vec![], text: format!("the crucible's verdict on a candidate for {unit}") };
            let record = sh.gate.audit().append(ghost_audit::audit::Entry::decision("crucible", &text, data.clone(), why)).map_err(|e| e.to_string())?;
            // A kept candidate is a capability verified by tests and measurement: an outcome
            // memory recalls when the unit comes up again; the others are notes.
            let kind = if outcome == "kept" { EpisodeKind::Outcome } else { EpisodeKind::Note };
            let id = super::act::remember(&sh.memory, ghost_memory::Episode::new(kind, format!("crucible:{unit}"), &text).salience(salience).tool_call(format!("audit:{}", record.seq)).details(data), None);
            ok(json!({ "audit_seq": record.seq, "memory_id": id.map(|i| i.to_string()) }))
        }
        AgentRequest::Chat { .. } => Err("chat streams its answer: it is served by the connection loop".into()),
        AgentRequest::Message { text } => {
            if text.trim().is_empty() {
                return Err("text: the message is empty".into());
            }
            sh.send(Input::Obs(operator_message(&text)));
            ok(json!({ "received": true }))
        }
    }
}

/// The outcome recorded for a decision: the newest outcome episode it caused.
fn outcome_of(sh: &Shared, decision: i64) -> Value {
    match sh.memory.chain(decision) {
        Ok(chain) => chain.iter().rev().find(|e| e.episode.kind == EpisodeKind::Outcome).map(|e| json!(e.episode.text)).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// `why SNAPSHOT`: the snapshot, and what it was taken for — the risky call it protected (its
/// audit records, with the why of the call) or the restore it preceded.
fn why_snapshot(sh: &Shared, id: &str) -> Result<Vec<Value>, String> {
    let store = ghost_snapshot::Store::open(sh.root.dir())?;
    let m = store.load(id)?;
    let trigger = serde_json::to_value(m.trigger).ok().and_then(|t| t.as_str().map(str::to_string)).unwrap_or_default();
    let mut chain = vec![json!({
        "id": m.id, "time_ms": m.created_ms, "kind": "snapshot", "source": trigger,
        "text": format!("snapshot of {} ({} entries): {}", m.roots.join(", "), m.entries.len(), m.description),
    })];
    // The tool call it ran around: the records that name it in outcome.detail.safety.
    for r in ghost_audit::audit::read_records(&sh.audit_dir).unwrap_or_default() {
        let v = serde_json::to_value(&r).unwrap_or(Value::Null);
        let named = v["outcome"]["detail"]["safety"]["snapshot"] == id || v["outcome"]["detail"]["snapshot"] == id;
        if !named {
            continue;
        }
        let status = v["outcome"]["status"].as_str().unwrap_or("?");
        let restored = match v["outcome"]["detail"]["safety"]["restored"].as_bool() {
            Some(true) => "; it failed, and the snapshot was restored",
            Some(false) => "; it failed, and restoring the snapshot failed too",
            None => "",
        };
        chain.push(json!({
            "id": format!("audit:{}", v["seq"]), "time_ms": null, "kind": "tool call", "source": v["who"]["actor"],
            "text": format!("{} {} ({status}{restored}) — why: {}", v["what"]["tool"].as_str().unwrap_or("?"), v["what"]["args"], v["why"]["text"].as_str().unwrap_or("")),
        }));
    }
    Ok(chain)
}
