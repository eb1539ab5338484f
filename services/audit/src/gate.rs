//! The path of one tool call through policy, bounds, approvals, execution and the audit
//! trail — what `ghostctl tool call NAME --args JSON --why TEXT [--dry-run]` and the agent's
//! own actions go through, and what `ghostctl approve|deny ID` resolves.
//!
//! For each call:
//!
//! 1. [`policy::decide`]; with `dry_run`, one record (`dry_run`) and nothing else;
//! 2. **deny**: one record (`denied`);
//! 3. **ask**: the call joins the [`ApprovalQueue`]; one record (`pending`, with the request
//!    id). An approval writes an `approval` record, decides again (the constitution may have
//!    changed; a deny now wins over the approval) and runs the call as in 4; a denial or an
//!    expiry writes an `approval` record and the call never runs;
//! 4. **allow**: calls that act (risk above low, or irreversible) must fit the constitution's
//!    `actions_per_hour` (refused: a `denied` record naming the bound); then a `started`
//!    record, the call, and a record of its outcome (`ok` or `error`, with the duration).
//!
//! Nothing runs unless its records were written: an audit failure stops the call.

use crate::approvals::{ApprovalError, ApprovalQueue, Resolution};
use crate::audit::{AuditError, AuditLog, Entry, Outcome, PolicyRecord, Status, What, Why};
use crate::constitution::{Constitution, Exceeded, RateLimiter, Resource};
use crate::policy::{self, Decision, Mode, Verdict};
use crate::tools::{Executor, Registry, Risk, ToolCall, ToolResult};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// One call as the gate receives it.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub call: ToolCall,
    /// `agent`, `operator (uid 0)`, `rule:NAME`, …
    pub actor: String,
    /// Why: the rule or model layer, the memories used; `text` defaults to the call's `why`.
    pub why: Why,
    pub dry_run: bool,
}

/// What became of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    DryRun {
        decision: Decision,
        seq: u64,
    },
    Denied {
        decision: Decision,
        seq: u64,
    },
    Pending {
        decision: Decision,
        request_id: String,
        seq: u64,
    },
    /// Allowed, but a resource bound of the constitution was reached.
    Limited {
        decision: Decision,
        exceeded: Exceeded,
        seq: u64,
    },
    Ran {
        decision: Decision,
        result: ToolResult,
        seq: u64,
    },
}

impl Handled {
    pub fn decision(&self) -> &Decision {
        match self {
            Handled::DryRun { decision, .. }
            | Handled::Denied { decision, .. }
            | Handled::Pending { decision, .. }
            | Handled::Limited { decision, .. }
            | Handled::Ran { decision, .. } => decision,
        }
    }

    /// The seq of the last audit record written for it.
    pub fn seq(&self) -> u64 {
        match self {
            Handled::DryRun { seq, .. }
            | Handled::Denied { seq, .. }
            | Handled::Pending { seq, .. }
            | Handled::Limited { seq, .. }
            | Handled::Ran { seq, .. } => *seq,
        }
    }

    /// `{"decision", "reason", "rule", "audit_seq", "request_id"?, "result"?, "limit"?}`: what
    /// `ghostctl tool call --json` prints.
    pub fn to_json(&self) -> Value {
        let mut v = self.decision().to_json();
        v["audit_seq"] = json!(self.seq());
        match self {
            Handled::Pending { request_id, .. } => v["request_id"] = json!(request_id),
            Handled::Limited { exceeded, .. } => {
                v["decision"] = json!("deny");
                v["reason"] = json!(exceeded.to_string());
                v["rule"] = json!(format!("bounds.{}", exceeded.resource.name()));
            }
            Handled::Ran { result, .. } => v["result"] = result.to_json(),
            Handled::DryRun { .. } => v["dry_run"] = json!(true),
            Handled::Denied { .. } => {}
        }
        v
    }
}

#[derive(Debug)]
pub enum GateError {
    Audit(AuditError),
    Approval(ApprovalError),
}

impl std::fmt::Display for GateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateError::Audit(e) => write!(f, "audit: {e}"),
            GateError::Approval(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GateError {}

impl From<AuditError> for GateError {
    fn from(e: AuditError) -> Self {
        GateError::Audit(e)
    }
}

impl From<ApprovalError> for GateError {
    fn from(e: ApprovalError) -> Self {
        GateError::Approval(e)
    }
}

struct Settings {
    constitution: Constitution,
    /// ghost.toml's `security`.
    system_mode: Mode,
}

/// Snapshots around risky calls (safe execution). The agent provides one (ghost-snapshot);
/// the gate calls it for every tool that is high-risk or irreversible.
pub trait SafetyNet: Send + Sync {
    /// A snapshot of what `call` can touch, taken now: `Ok(Some(id))`; `Ok(None)` when there is
    /// nothing a snapshot could put back (a process, files the tool only deletes as disposable);
    /// `Err` when one is needed and cannot be taken — the call is then refused, not run unprotected.
    fn before(&self, call: &ToolCall) -> Result<Option<String>, String>;
    /// Puts snapshot `id` back after the call failed.
    fn restore(&self, id: &str) -> Result<(), String>;
}

/// Policy + bounds + approvals + executor + audit, shared by the agent's threads.
pub struct Gate {
    executor: Executor,
    audit: Arc<AuditLog>,
    approvals: Arc<ApprovalQueue>,
    limiter: Mutex<RateLimiter>,
    settings: RwLock<Settings>,
    /// Actor and reasons of queued calls, by request id.
    waiting: Mutex<HashMap<String, (String, Why)>>,
    safety: RwLock<Option<Arc<dyn SafetyNet>>>,
}

impl Gate {
    pub fn new(
        executor: Executor,
        audit: Arc<AuditLog>,
        approvals: Arc<ApprovalQueue>,
        constitution: Constitution,
        system_mode: Mode,
    ) -> Gate {
        let bounds = constitution.bounds;
        Gate {
            executor,
            audit,
            approvals,
            limiter: Mutex::new(RateLimiter::new(bounds)),
            settings: RwLock::new(Settings { constitution, system_mode }),
            waiting: Mutex::new(HashMap::new()),
            safety: RwLock::new(None),
        }
    }

    /// Risky calls run inside `net`'s snapshots from now on.
    pub fn set_safety_net(&self, net: Arc<dyn SafetyNet>) {
        *self.safety.write().unwrap_or_else(|p| p.into_inner()) = Some(net);
    }

    /// A reloaded constitution or security mode (bounds apply at once; usage so far counts).
    pub fn set_constitution(&self, constitution: Constitution, system_mode: Mode) {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner()).set_bounds(constitution.bounds);
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Settings { constitution, system_mode };
    }

    pub fn mode(&self) -> Mode {
        let s = self.settings.read().unwrap_or_else(|p| p.into_inner());
        s.constitution.effective_mode(s.system_mode)
    }

    pub fn approvals(&self) -> &ApprovalQueue {
        &self.approvals
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    fn decide(&self, call: &ToolCall) -> (Decision, Mode) {
        let s = self.settings.read().unwrap_or_else(|p| p.into_inner());
        let mode = s.constitution.effective_mode(s.system_mode);
        let registry = self.executor.registry();
        (policy::decide(call, mode, &s.constitution, registry), mode)
    }

    fn record(
        &self,
        actor: &str,
        call: &ToolCall,
        why: &Why,
        policy: PolicyRecord,
        outcome: Outcome,
    ) -> Result<u64, AuditError> {
        Ok(self.audit.append(Entry::tool_call(actor, call, why.clone(), Some(policy), outcome))?.seq)
    }

    /// Handles one call (see the module documentation).
    pub fn handle(&self, req: CallRequest) -> Result<Handled, GateError> {
        let CallRequest { call, actor, mut why, dry_run } = req;
        if why.text.is_empty() {
            why.text = call.why.clone();
        }
        let (decision, mode) = self.decide(&call);
        let policy = PolicyRecord::new(&decision, mode);
        let reason = json!({ "reason": decision.reason });
        if dry_run {
            let seq = self.record(&actor, &call, &why, policy, Outcome::new(Status::DryRun, reason))?;
            return Ok(Handled::DryRun { decision, seq });
        }
        match decision.verdict {
            Verdict::Deny => {
                let seq = self.record(&actor, &call, &why, policy, Outcome::new(Status::Denied, reason))?;
                Ok(Handled::Denied { decision, seq })
            }
            Verdict::Ask => {
                // Held until the request's actor is filed: an operator who approves at once
                // (the id is listed as soon as it is submitted) waits here for it in `approve`.
                let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                let request_id = match self.approvals.submit(call.clone(), decision.clone()) {
                    Ok(id) => id,
                    Err(e) => {
                        let seq = self.record(
                            &actor,
                            &call,
                            &why,
                            policy,
                            Outcome::new(Status::Denied, json!({ "reason": e.to_string() })),
                        )?;
                        return Ok(Handled::Denied {
                            decision: Decision {
                                verdict: Verdict::Deny,
                                reason: e.to_string(),
                                rule: "approvals.full".into(),
                            },
                            seq,
                        });
                    }
                };
                let outcome =
                    Outcome::new(Status::Pending, json!({ "request_id": request_id, "reason": decision.reason }));
                let seq = match self.record(&actor, &call, &why, policy, outcome) {
                    Ok(seq) => seq,
                    Err(e) => {
                        // Unaudited requests must not be approvable.
                        let _ = self.approvals.deny(&request_id, "audit", "could not be audited");
                        return Err(e.into());
                    }
                };
                waiting.insert(request_id.clone(), (actor, why));
                Ok(Handled::Pending { decision, request_id, seq })
            }
            Verdict::Allow => self.run(&actor, &call, &why, decision, mode),
        }
    }

    fn run(
        &self,
        actor: &str,
        call: &ToolCall,
        why: &Why,
        decision: Decision,
        mode: Mode,
    ) -> Result<Handled, GateError> {
        let policy = PolicyRecord::new(&decision, mode);
        let acts = self.executor.registry().get(&call.tool).is_some_and(|s| s.risk > Risk::Low || !s.reversible);
        if acts {
            let limited = self.limiter.lock().unwrap_or_else(|p| p.into_inner()).try_acquire(Resource::Actions, 1);
            if let Err(exceeded) = limited {
                let outcome = Outcome::new(
                    Status::Denied,
                    json!({ "reason": exceeded.to_string(), "bound": exceeded.resource.name(), "limit": exceeded.limit }),
                );
                let seq = self.record(actor, call, why, policy, outcome)?;
                return Ok(Handled::Limited { decision, exceeded, seq });
            }
        }
        // Safe execution: a snapshot of what a risky call can touch first.
        let risky = self.executor.registry().get(&call.tool).is_some_and(|s| s.risk >= Risk::High || !s.reversible);
        let net = if risky { self.safety.read().unwrap_or_else(|p| p.into_inner()).clone() } else { None };
        let mut snapshot = None;
        if let Some(net) = &net {
            match net.before(call) {
                Ok(id) => snapshot = id,
                Err(e) => {
                    let reason = format!("no snapshot could be taken first ({e}); a risky call is not run unprotected");
                    let outcome = Outcome::new(Status::Denied, json!({ "reason": reason, "safety": "snapshot failed" }));
                    let seq = self.record(actor, call, why, policy, outcome)?;
                    let decision = Decision { verdict: Verdict::Deny, reason, rule: "safety.snapshot".into() };
                    return Ok(Handled::Denied { decision, seq });
                }
            }
        }
        let started = match &snapshot {
            Some(id) => json!({ "snapshot": id }),
            None => Value::Null,
        };
        self.record(actor, call, why, policy.clone(), Outcome::new(Status::Started, started))?;
        let result = self.executor.call(&call.tool, &call.args);
        let mut outcome = Outcome::from_result(&result);
        if let (Some(net), Some(id)) = (&net, &snapshot) {
            let mut safety = json!({ "snapshot": id });
            // A command that ran and failed (non-zero exit, killed at its timeout) failed too.
            let failed = match &result.outcome {
                Err(_) => true,
                Ok(out) => out.get("exit_code").is_some_and(|c| c.as_i64() != Some(0)) || out.get("timed_out") == Some(&json!(true)),
            };
            if failed {
                // It failed: what it may have half-done is put back.
                match net.restore(id) {
                    Ok(()) => safety["restored"] = json!(true),
                    Err(e) => {
                        safety["restored"] = json!(false);
                        safety["restore_error"] = json!(e);
                    }
                }
            }
            outcome.detail = match outcome.detail {
                Value::Object(mut m) => {
                    m.insert("safety".into(), safety);
                    Value::Object(m)
                }
                other => json!({ "output": other, "safety": safety }),
            };
        }
        let seq = self.record(actor, call, why, policy, outcome)?;
        Ok(Handled::Ran { decision, result, seq })
    }

    fn record_resolution(
        &self,
        request_id: &str,
        call: &ToolCall,
        by: &str,
        approved: bool,
        why_text: String,
    ) -> Result<u64, AuditError> {
        let record = self.audit.append(Entry {
            actor: by.to_string(),
            what: What::Approval { call_id: call.id.clone(), request_id: request_id.into(), approved },
            why: Why { rule: Some("operator".into()), text: why_text, ..Why::default() },
            policy: None,
            outcome: Outcome::new(if approved { Status::Approved } else { Status::Denied }, Value::Null),
        })?;
        Ok(record.seq)
    }

    /// `ghostctl approve ID`: records the approval, decides again, and runs the call.
    pub fn approve(&self, request_id: &str, by: &str) -> Result<Handled, GateError> {
        let request = self.approvals.approve(request_id, by)?;
        let (actor, why) = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(request_id)
            .unwrap_or_else(|| ("agent".into(), Why { text: request.call.why.clone(), ..Why::default() }));
        self.record_resolution(request_id, &request.call, by, true, format!("approved by {by}"))?;
        let (decision, mode) = self.decide(&request.call);
        match decision.verdict {
            Verdict::Deny => {
                let policy = PolicyRecord::new(&decision, mode);
                let seq = self.record(
                    &actor,
                    &request.call,
                    &why,
                    policy,
                    Outcome::new(Status::Denied, json!({ "reason": decision.reason })),
                )?;
                Ok(Handled::Denied { decision, seq })
            }
            _ => {
                let approved = Decision {
                    verdict: Verdict::Allow,
                    reason: format!("approved by {by} (policy: {})", decision.reason),
                    rule: "approvals.approved".into(),
                };
                self.run(&actor, &request.call, &why, approved, mode)
            }
        }
    }

    /// `ghostctl deny ID`: records the refusal; the call never runs.
    pub fn deny(&self, request_id: &str, by: &str, reason: &str) -> Result<u64, GateError> {
        let request = self.approvals.deny(request_id, by, reason)?;
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(request_id);
        Ok(self.record_resolution(request_id, &request.call, by, false, format!("denied by {by}: {reason}"))?)
    }

    /// Expires requests nobody answered in time, recording each as denied; call it from the
    /// agent's heartbeat.
    pub fn expire(&self) -> Result<Vec<String>, GateError> {
        // Forget reasons of requests resolved behind the gate's back (directly on the queue).
        let pending: Vec<String> = self.approvals.pending().into_iter().map(|r| r.id).collect();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).retain(|id, _| pending.contains(id));
        let mut ids = Vec::new();
        for r in self.approvals.expire() {
            self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&r.id);
            self.audit.append(Entry {
                actor: "approvals".into(),
                what: What::Approval { call_id: r.call.id.clone(), request_id: r.id.clone(), approved: false },
                why: Why {
                    rule: Some("approvals.timeout".into()),
                    text: "no operator answered in time".into(),
                    ..Why::default()
                },
                policy: None,
                outcome: Outcome::new(Status::Expired, Value::Null),
            })?;
            debug_assert_eq!(r.resolution, Some(Resolution::Expired));
            ids.push(r.id);
        }
        Ok(ids)
    }

    /// The registry the gate decides against.
    pub fn registry(&self) -> &Registry {
        self.executor.registry()
    }
}

#[cfg(test)]
mod tests;
