//! Acting: the tools that need the agent (service.* through ghost-init's control socket,
//! service.rollback through the known-good copies, memory.search through memory), and the
//! run of one playbook — precondition, steps through the gate — and its verification, which
//! the heartbeat polls between beats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ghost_agent::{expect_matches, Check, Condition, Decision, Observation, Verify};
use ghost_audit::audit::Why;
use ghost_audit::gate::{CallRequest, Handled};
use ghost_audit::tools::{Delegate, MemoryHit, ServiceAction, ToolCall};
use ghost_memory::{Episode, EpisodeKind, Memory};
use ghost_proto::Request;
use serde_json::{json, Value};

use super::known_good::KnownGood;
use super::perceive::{control, sample};
use super::Shared;

pub struct SystemDelegate {
    pub memory: Arc<Memory>,
    pub known_good: KnownGood,
}

impl Delegate for SystemDelegate {
    fn service(&self, action: ServiceAction, name: &str) -> Result<Value, String> {
        let done = |what: &str| Ok(json!({ "service": name, "done": what }));
        match action {
            ServiceAction::Status => {
                let reply = control(&Request::Status { name: Some(name.to_string()) })?;
                let status = reply.services.and_then(|mut s| s.pop()).ok_or_else(|| format!("ghost-init gave no status for `{name}`"))?;
                serde_json::to_value(status).map_err(|e| e.to_string())
            }
            ServiceAction::Start => control(&Request::Start { name: name.into() }).and_then(|_| done("start")),
            ServiceAction::Stop => control(&Request::Stop { name: name.into() }).and_then(|_| done("stop")),
            ServiceAction::Restart => control(&Request::Restart { name: name.into() }).and_then(|_| done("restart")),
            ServiceAction::Rollback => {
                let mut report = self.known_good.rollback(name)?;
                let reload = control(&Request::Reload)?;
                report["reload"] = serde_json::to_value(reload.reload).unwrap_or(Value::Null);
                control(&Request::Restart { name: name.into() })?;
                report["done"] = json!("rollback");
                Ok(report)
            }
        }
    }

    fn memory_search(&self, query: &str, limit: usize) -> Result<Vec<MemoryHit>, String> {
        let found = self.memory.search(query, limit).map_err(|e| e.to_string())?;
        Ok(found.hits.into_iter().map(|h| MemoryHit { id: h.episode.id.to_string(), score: h.score, text: h.episode.episode.text }).collect())
    }
}

/// How a playbook run ended.
#[derive(Debug)]
pub enum End {
    /// Every step ran and the verification held (after `checks` checks).
    Verified { checks: u32 },
    /// Every step ran; the verification is under way (the heartbeat polls it).
    Verifying(Verification),
    /// A step was refused, or the verification did not hold in time.
    Failed(String),
    /// Step `step` waits for an operator (request `id`); the rest follows the approval.
    Parked { id: String, step: usize },
    /// The precondition did not hold: nothing to do (the supervisor is on it).
    Skipped(String),
}

/// What a decision is about: the service, else the metric's subject (a mount point), else the
/// source (`operator`, `metrics`) — never empty, as memory needs a source for every episode.
pub fn subject_of(o: &Observation) -> String {
    o.service
        .clone()
        .or_else(|| o.data.get("subject").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string))
        .unwrap_or_else(|| o.source.as_str().to_string())
}

/// One read-only check (a precondition, a verification): the tool's output against `expect`.
/// Run through the executor, not the gate: the outcome record of the playbook carries them.
fn holds(sh: &Shared, c: &Condition) -> Result<bool, String> {
    let r = sh.executor.call(&c.tool, &c.args);
    match r.outcome {
        Ok(out) => Ok(expect_matches(&c.expect, &out)),
        Err(e) => Err(format!("{}: {e}", c.tool)),
    }
}

fn check_once(sh: &Shared, check: &Check) -> Result<bool, String> {
    match check {
        Check::Tool(c) => holds(sh, c),
        Check::Metric { metric, subject, below, above } => {
            let v = sample(metric, subject).ok_or_else(|| format!("{metric} of {subject:?} cannot be read"))?;
            Ok(below.is_none_or(|b| v < b) && above.is_none_or(|a| v > a))
        }
    }
}

/// A verification under way. The heartbeat checks it once per poll (every
/// [`VERIFY_POLL`]) until it holds, and keeps holding for `hold_ms`, or `within_s` passes;
/// there is no event for "a service's state matches", so this polls — but between checks the
/// heartbeat goes on perceiving and deciding: a slow repair never blinds the agent.
#[derive(Debug)]
pub struct Verification {
    verify: Verify,
    deadline: Instant,
    held_since: Option<Instant>,
    checks: u32,
    last: String,
}

/// How often a verification under way is checked.
pub const VERIFY_POLL: Duration = Duration::from_millis(20);

impl Verification {
    pub fn start(v: &Verify) -> Verification {
        Verification { verify: v.clone(), deadline: Instant::now() + Duration::from_secs(v.within_s), held_since: None, checks: 0, last: "not checked".into() }
    }

    /// One check: `Some(Ok(checks))` once it held long enough, `Some(Err(why))` once its time is
    /// up, `None` while it is still open.
    pub fn poll(&mut self, sh: &Shared) -> Option<Result<u32, String>> {
        self.checks += 1;
        match check_once(sh, &self.verify.check) {
            Ok(true) => {
                let since = *self.held_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(self.verify.hold_ms) {
                    return Some(Ok(self.checks));
                }
            }
            Ok(false) => {
                self.held_since = None;
                self.last = "the check did not hold".into();
            }
            Err(e) => {
                self.held_since = None;
                self.last = e;
            }
        }
        if Instant::now() >= self.deadline && self.held_since.is_none() {
            return Some(Err(format!("not verified within {} s after {} checks: {}", self.verify.within_s, self.checks, self.last)));
        }
        None
    }
}

/// Runs `d`'s steps from `from` through the gate as `rule:NAME`, then its verification.
pub fn run_playbook(sh: &Shared, d: &Decision, o: &Observation, memory_ids: &[String], from: usize, cause: Option<i64>) -> End {
    if from == 0 {
        if let Some(c) = &d.only_if {
            match holds(sh, c) {
                Ok(true) => {}
                Ok(false) => return End::Skipped(format!("precondition not met: {} {} expects {}", c.tool, c.args, c.expect)),
                Err(e) => return End::Skipped(format!("precondition could not be checked: {e}")),
            }
        }
    }
    for (i, step) in d.steps.iter().enumerate().skip(from) {
        let call = ToolCall::new(step.tool.clone(), step.args.clone(), format!("{}: {}", d.rule, o.text));
        let why = Why { rule: Some(d.rule.clone()), layer: Some("rule".into()), memory_ids: memory_ids.to_vec(), text: format!("playbook {} step {}: {}", d.playbook, i + 1, o.text) };
        let handled = sh.gate.handle(CallRequest { call, actor: format!("rule:{}", d.rule), why, dry_run: false });
        match handled {
            Ok(Handled::Ran { result, seq, .. }) => {
                sh.stats().actions += 1;
                let text = format!("{} {}: {}", step.tool, step.args, if result.is_ok() { "ok" } else { "failed" });
                let details = result.to_json();
                remember(&sh.memory, Episode::new(EpisodeKind::Action, subject_of(o), text).playbook(&d.playbook).tool_call(format!("audit:{seq}")).details(details.clone()), cause);
                if !result.is_ok() && !step.optional {
                    return End::Failed(format!("{} failed: {}", step.tool, details["message"].as_str().unwrap_or("?")));
                }
            }
            Ok(Handled::Pending { request_id, .. }) => return End::Parked { id: request_id, step: i + 1 },
            Ok(Handled::Denied { decision, .. }) => return End::Failed(format!("{} was denied: {}", step.tool, decision.reason)),
            Ok(Handled::Limited { exceeded, .. }) => return End::Failed(format!("{}: {exceeded}", step.tool)),
            Ok(Handled::DryRun { .. }) => return End::Failed("dry run".into()),
            Err(e) => return End::Failed(format!("{}: {e}", step.tool)),
        }
    }
    match &d.verify {
        Some(v) => End::Verifying(Verification::start(v)),
        None => End::Verified { checks: 0 },
    }
}

/// Records an episode (linked to its cause); a memory failure is counted, never fatal.
pub fn remember(memory: &Memory, mut e: Episode, cause: Option<i64>) -> Option<i64> {
    if let Some(c) = cause {
        e = e.caused_by(c);
    }
    match memory.record(&e) {
        Ok(id) => Some(id),
        Err(err) => {
            eprintln!("ghost agent: memory: {err}");
            None
        }
    }
}
