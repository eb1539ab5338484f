//! Keeping actions in check: a rule's cooldown per subject, and the loop guard — an action
//! repeated on the same subject without the effect it promised (its verification failed each
//! time) is stopped and escalated to the operator instead of being tried forever.

use std::collections::HashMap;

/// What the guard says about acting now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Act,
    /// Acted on this subject less than the cooldown ago.
    CoolingDown { left_ms: u64 },
    /// Tried `failures` times in a row without effect; an operator must look.
    Escalated { failures: u32 },
}

#[derive(Debug, Default, Clone)]
struct Record {
    last_ms: Option<u64>,
    failures_in_a_row: u32,
    escalated: bool,
}

/// Per (rule, subject) state. The subject is usually the service.
#[derive(Debug)]
pub struct Guard {
    /// Failed attempts in a row after which a rule stops acting on a subject.
    pub max_failures: u32,
    records: HashMap<(String, String), Record>,
}

impl Guard {
    pub fn new(max_failures: u32) -> Guard {
        Guard { max_failures: max_failures.max(1), records: HashMap::new() }
    }

    pub fn check(&self, rule: &str, subject: &str, cooldown_ms: u64, now_ms: u64) -> Verdict {
        let Some(r) = self.records.get(&(rule.to_string(), subject.to_string())) else { return Verdict::Act };
        if r.escalated {
            return Verdict::Escalated { failures: r.failures_in_a_row };
        }
        match r.last_ms {
            // saturating: the wall clock may step back (NTP, an RTC fixed at boot).
            Some(t) if now_ms.saturating_sub(t) < cooldown_ms => Verdict::CoolingDown { left_ms: cooldown_ms - now_ms.saturating_sub(t) },
            _ => Verdict::Act,
        }
    }

    /// Records an attempt and whether its verification held. Returns true when this failure
    /// is the one that escalates.
    pub fn record(&mut self, rule: &str, subject: &str, now_ms: u64, verified: bool) -> bool {
        let r = self.records.entry((rule.to_string(), subject.to_string())).or_default();
        r.last_ms = Some(now_ms);
        if verified {
            r.failures_in_a_row = 0;
            r.escalated = false;
            return false;
        }
        r.failures_in_a_row += 1;
        if !r.escalated && r.failures_in_a_row >= self.max_failures {
            r.escalated = true;
            return true;
        }
        false
    }

    /// An operator has looked: the rule may act on the subject again.
    pub fn clear(&mut self, rule: &str, subject: &str) {
        self.records.remove(&(rule.to_string(), subject.to_string()));
    }

    /// The subject is well again (a service became ready): every rule may act on it again.
    pub fn clear_subject(&mut self, subject: &str) {
        self.records.retain(|(_, s), _| s != subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldown_then_act_and_repeated_failure_escalates_until_cleared() {
        let mut g = Guard::new(3);
        assert_eq!(g.check("r", "web", 1000, 0), Verdict::Act);
        assert!(!g.record("r", "web", 0, false));
        assert_eq!(g.check("r", "web", 1000, 400), Verdict::CoolingDown { left_ms: 600 });
        assert_eq!(g.check("r", "db", 1000, 400), Verdict::Act, "per subject");
        assert_eq!(g.check("r", "web", 1000, 1000), Verdict::Act);
        assert!(!g.record("r", "web", 1000, false));
        assert!(g.record("r", "web", 2000, false), "the third failure escalates");
        assert!(!g.record("r", "web", 3000, false), "only once");
        assert_eq!(g.check("r", "web", 0, 10_000), Verdict::Escalated { failures: 4 });
        g.clear("r", "web");
        assert_eq!(g.check("r", "web", 0, 10_000), Verdict::Act);
        // Success resets the count.
        g.record("r", "web", 0, false);
        g.record("r", "web", 0, true);
        g.record("r", "web", 0, false);
        g.record("r", "web", 0, false);
        assert_eq!(g.check("r", "web", 0, 0), Verdict::Act);
    }
}
