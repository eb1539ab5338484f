//! The approval queue: calls the policy answered with `ask` wait here until an operator
//! approves or denies them (`ghostctl approve|deny ID` through the agent's control socket), or
//! until they expire.
//!
//! The queue lives in memory: a pending request does not survive an agent restart (the agent
//! re-deliberates after a restart; an approval given to a previous process would be given for
//! a situation that may no longer hold). Every submission and resolution is meant to be
//! written to the audit trail by the agent, which is where the history lives. The queue holds
//! at most `capacity` pending requests and keeps the last `capacity` resolved ones for
//! listing.
//!
//! Ids are 8 lowercase hex digits, random, unique among the requests the queue holds.

use crate::constitution::{Clock, MonotonicClock};
use crate::policy::Decision;
use crate::tools::ToolCall;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Resolution {
    Approved {
        by: String,
    },
    Denied {
        by: String,
        reason: String,
    },
    /// No operator answered in time: treated as denied.
    Expired,
}

impl Resolution {
    pub fn approved(&self) -> bool {
        matches!(self, Resolution::Approved { .. })
    }
}

/// One request, pending or resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    pub id: String,
    pub call: ToolCall,
    /// The policy's `ask` decision.
    pub decision: Decision,
    /// Wall-clock time of the submission (RFC 3339 UTC), for display.
    pub requested: String,
    /// Milliseconds left before it expires (at the time of listing; 0 once resolved).
    pub expires_in_ms: u64,
    pub resolution: Option<Resolution>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalError {
    /// No request with this id (never was, or resolved long ago).
    Unknown(String),
    /// Already approved, denied or expired.
    AlreadyResolved(String),
    /// Too many pending requests.
    Full(usize),
}

impl std::fmt::Display for ApprovalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApprovalError::Unknown(id) => write!(f, "no pending request {id}"),
            ApprovalError::AlreadyResolved(id) => write!(f, "request {id} is already resolved"),
            ApprovalError::Full(n) => write!(f, "{n} requests are already waiting for an operator"),
        }
    }
}

impl std::error::Error for ApprovalError {}

struct Slot {
    request: Request,
    deadline_ms: u64,
}

struct State {
    pending: Vec<Slot>,
    resolved: VecDeque<Request>,
    /// Expired requests not yet handed out by [`ApprovalQueue::expire`] (expiry also happens
    /// as a side effect of listing; none must go unreported).
    unreported: VecDeque<Request>,
}

/// The queue (share it behind an `Arc`).
pub struct ApprovalQueue<C: Clock = MonotonicClock> {
    state: Mutex<State>,
    changed: Condvar,
    clock: C,
    timeout: Duration,
    capacity: usize,
}

impl ApprovalQueue<MonotonicClock> {
    /// A queue whose requests expire after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self::with_clock(timeout, 64, MonotonicClock::default())
    }
}

impl<C: Clock> ApprovalQueue<C> {
    pub fn with_clock(timeout: Duration, capacity: usize, clock: C) -> Self {
        ApprovalQueue {
            state: Mutex::new(State { pending: Vec::new(), resolved: VecDeque::new(), unreported: VecDeque::new() }),
            changed: Condvar::new(),
            clock,
            timeout,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves expired requests to the resolved list; returns them.
    fn expire_locked(&self, st: &mut State) -> Vec<Request> {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        let mut i = 0;
        while i < st.pending.len() {
            if st.pending[i].deadline_ms <= now {
                let mut r = st.pending.remove(i).request;
                r.resolution = Some(Resolution::Expired);
                r.expires_in_ms = 0;
                out.push(r.clone());
                if st.unreported.len() >= self.capacity * 4 {
                    st.unreported.pop_front();
                }
                st.unreported.push_back(r.clone());
                self.push_resolved(st, r);
            } else {
                i += 1;
            }
        }
        if !out.is_empty() {
            self.changed.notify_all();
        }
        out
    }

    fn push_resolved(&self, st: &mut State, r: Request) {
        if st.resolved.len() >= self.capacity {
            st.resolved.pop_front();
        }
        st.resolved.push_back(r);
    }

    /// Queues `call` for an operator; returns its id.
    pub fn submit(&self, call: ToolCall, decision: Decision) -> Result<String, ApprovalError> {
        let mut st = self.lock();
        self.expire_locked(&mut st);
        if st.pending.len() >= self.capacity {
            return Err(ApprovalError::Full(st.pending.len()));
        }
        let id = loop {
            let id = format!("{:08x}", getrandom::u32().unwrap_or_else(|_| self.clock.now_ms() as u32));
            let taken = st.pending.iter().any(|s| s.request.id == id) || st.resolved.iter().any(|r| r.id == id);
            if !taken {
                break id;
            }
        };
        let deadline_ms = self.clock.now_ms() + self.timeout.as_millis() as u64;
        let request = Request {
            id: id.clone(),
            call,
            decision,
            requested: crate::util::rfc3339(SystemTime::now()),
            expires_in_ms: self.timeout.as_millis() as u64,
            resolution: None,
        };
        st.pending.push(Slot { request, deadline_ms });
        Ok(id)
    }

    fn resolve(&self, id: &str, resolution: Resolution) -> Result<Request, ApprovalError> {
        let mut st = self.lock();
        self.expire_locked(&mut st);
        let Some(pos) = st.pending.iter().position(|s| s.request.id == id) else {
            return Err(if st.resolved.iter().any(|r| r.id == id) {
                ApprovalError::AlreadyResolved(id.into())
            } else {
                ApprovalError::Unknown(id.into())
            });
        };
        let mut r = st.pending.remove(pos).request;
        r.resolution = Some(resolution);
        r.expires_in_ms = 0;
        self.push_resolved(&mut st, r.clone());
        self.changed.notify_all();
        Ok(r)
    }

    /// `ghostctl approve ID`.
    pub fn approve(&self, id: &str, by: &str) -> Result<Request, ApprovalError> {
        self.resolve(id, Resolution::Approved { by: by.into() })
    }

    /// `ghostctl deny ID`.
    pub fn deny(&self, id: &str, by: &str, reason: &str) -> Result<Request, ApprovalError> {
        self.resolve(id, Resolution::Denied { by: by.into(), reason: reason.into() })
    }

    /// Pending requests (oldest first), then the recently resolved ones.
    pub fn list(&self) -> Vec<Request> {
        let mut st = self.lock();
        self.expire_locked(&mut st);
        let now = self.clock.now_ms();
        let mut out: Vec<Request> = st
            .pending
            .iter()
            .map(|s| Request { expires_in_ms: s.deadline_ms.saturating_sub(now), ..s.request.clone() })
            .collect();
        out.extend(st.resolved.iter().cloned());
        out
    }

    /// Only the pending requests.
    pub fn pending(&self) -> Vec<Request> {
        self.list().into_iter().filter(|r| r.resolution.is_none()).collect()
    }

    /// The resolution of `id`, if it has one (None while pending or unknown).
    pub fn resolution(&self, id: &str) -> Option<Resolution> {
        let mut st = self.lock();
        self.expire_locked(&mut st);
        st.resolved.iter().rev().find(|r| r.id == id).and_then(|r| r.resolution.clone())
    }

    /// Expires what is due and returns every expiry not returned before, including those
    /// noticed while listing (the agent audits each as denied by timeout).
    pub fn expire(&self) -> Vec<Request> {
        let mut st = self.lock();
        self.expire_locked(&mut st);
        st.unreported.drain(..).collect()
    }

    /// Blocks until `id` is resolved or `wait` has passed (real time); expiry is checked
    /// against the queue's clock as it goes.
    pub fn wait(&self, id: &str, wait: Duration) -> Option<Resolution> {
        let until = std::time::Instant::now() + wait;
        let mut st = self.lock();
        loop {
            self.expire_locked(&mut st);
            if let Some(r) = st.resolved.iter().rev().find(|r| r.id == id) {
                return r.resolution.clone();
            }
            if !st.pending.iter().any(|s| s.request.id == id) {
                return None;
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            // Wake at least every 50 ms to notice expiry on the queue's clock.
            st =
                self.changed.wait_timeout(st, left.min(Duration::from_millis(50))).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constitution::ManualClock;
    use crate::policy::Verdict;
    use serde_json::json;
    use std::sync::Arc;

    fn ask() -> Decision {
        Decision { verdict: Verdict::Ask, reason: "risky".into(), rule: "mode.normal.risky".into() }
    }

    #[test]
    fn approve_deny_and_expire_flow() {
        let clock = ManualClock::default();
        let q = ApprovalQueue::with_clock(Duration::from_secs(60), 8, clock.clone());
        let a = q.submit(ToolCall::new("process.kill", json!({"pid": 4242}), "runaway"), ask()).unwrap();
        let b = q.submit(ToolCall::new("shell.exec", json!({"command": "apt-get clean"}), "disk full"), ask()).unwrap();
        let c = q.submit(ToolCall::new("fs.write", json!({"path": "/tmp/x", "content": ""}), "x"), ask()).unwrap();
        assert_eq!(a.len(), 8);
        assert_eq!(q.pending().len(), 3);
        assert_eq!(q.pending()[0].id, a, "oldest first");

        let r = q.approve(&a, "uid 0").unwrap();
        assert_eq!(r.resolution, Some(Resolution::Approved { by: "uid 0".into() }));
        assert_eq!(q.approve(&a, "uid 0").unwrap_err(), ApprovalError::AlreadyResolved(a.clone()));
        q.deny(&b, "uid 0", "not now").unwrap();
        assert!(!q.resolution(&b).unwrap().approved());
        assert_eq!(q.deny("ffffffff", "x", "y").unwrap_err(), ApprovalError::Unknown("ffffffff".into()));

        clock.advance(Duration::from_secs(59));
        assert!(q.expire().is_empty());
        assert_eq!(q.pending()[0].expires_in_ms, 1000);
        clock.advance(Duration::from_secs(1));
        assert!(q.pending().is_empty(), "listing notices the expiry");
        let expired = q.expire();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].id, c);
        assert_eq!(q.resolution(&c), Some(Resolution::Expired));
        assert!(q.expire().is_empty(), "reported once");
        assert_eq!(q.list().len(), 3);
    }

    #[test]
    fn capacity_is_bounded() {
        let q = ApprovalQueue::with_clock(Duration::from_secs(60), 2, ManualClock::default());
        for _ in 0..2 {
            q.submit(ToolCall::new("fs.write", json!({}), ""), ask()).unwrap();
        }
        assert_eq!(q.submit(ToolCall::new("fs.write", json!({}), ""), ask()).unwrap_err(), ApprovalError::Full(2));
    }

    #[test]
    fn a_waiting_agent_is_woken_by_the_operator() {
        let q = Arc::new(ApprovalQueue::new(Duration::from_secs(60)));
        let id = q.submit(ToolCall::new("process.kill", json!({"pid": 9}), ""), ask()).unwrap();
        let (q2, id2) = (q.clone(), id.clone());
        let operator = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            q2.approve(&id2, "operator").unwrap();
        });
        let started = std::time::Instant::now();
        let r = q.wait(&id, Duration::from_secs(5));
        operator.join().unwrap();
        assert!(r.unwrap().approved());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(q.wait("00000000", Duration::from_millis(10)), None);
    }
}
