//! Procedural memory: playbooks, and the evidence of how often each worked.

use serde::{Deserialize, Serialize};

use crate::MemoryError;

/// A playbook as the agent (or a rule file) defines it. The name is its key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlaybookSpec {
    pub name: String,
    pub description: String,
    /// When it applies, in words ("nginx exits repeatedly").
    pub trigger: String,
    /// The steps, as the agent's tool calls (any JSON).
    pub steps: serde_json::Value,
}

impl PlaybookSpec {
    pub(crate) fn validate(&self) -> Result<(), MemoryError> {
        if self.name.trim().is_empty() {
            return Err(MemoryError::invalid("playbook.name", "is empty"));
        }
        if self.description.trim().is_empty() && self.trigger.trim().is_empty() {
            return Err(MemoryError::invalid(
                "playbook.description",
                "description and trigger are both empty: nothing to find the playbook by",
            ));
        }
        Ok(())
    }
}

/// When a playbook counts as verified — a "truth crystal": at least `min_successes` successes
/// and a success rate of at least `min_success_rate`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyRule {
    pub min_successes: u64,
    pub min_success_rate: f64,
}

impl Default for VerifyRule {
    fn default() -> Self {
        VerifyRule { min_successes: 3, min_success_rate: 0.8 }
    }
}

impl VerifyRule {
    pub fn verified(&self, successes: u64, failures: u64) -> bool {
        let total = successes + failures;
        successes >= self.min_successes
            && total > 0
            && successes as f64 / total as f64 >= self.min_success_rate
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Playbook {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub trigger: String,
    pub steps: serde_json::Value,
    pub success_count: u64,
    pub failure_count: u64,
    pub last_used_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Computed from the counts with the memory's VerifyRule.
    pub verified: bool,
}

impl Playbook {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: i64,
        name: String,
        description: String,
        trigger: String,
        steps: serde_json::Value,
        success_count: u64,
        failure_count: u64,
        last_used_ms: Option<i64>,
        created_ms: i64,
        updated_ms: i64,
        rule: &VerifyRule,
    ) -> Self {
        let verified = rule.verified(success_count, failure_count);
        Playbook { id, name, description, trigger, steps, success_count, failure_count, last_used_ms, created_ms, updated_ms, verified }
    }

    /// Successes over uses; None before the first use.
    pub fn success_rate(&self) -> Option<f64> {
        let total = self.success_count + self.failure_count;
        (total > 0).then(|| self.success_count as f64 / total as f64)
    }
}

/// One playbook found by `search_playbooks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlaybookHit {
    pub playbook: Playbook,
    /// As `Hit::score` (larger is better).
    pub score: f64,
    pub word_rank: Option<usize>,
    pub meaning_rank: Option<usize>,
    pub similarity: Option<f32>,
}

/// What is embedded for a playbook.
pub(crate) fn embedding_text(name: &str, description: &str, trigger: &str) -> String {
    format!("{}. {description}. {trigger}", name.replace(['-', '_'], " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_needs_both_count_and_rate() {
        let r = VerifyRule { min_successes: 3, min_success_rate: 0.75 };
        assert!(!r.verified(0, 0));
        assert!(!r.verified(2, 0), "too few successes");
        assert!(r.verified(3, 0));
        assert!(r.verified(3, 1), "exactly 0.75");
        assert!(!r.verified(3, 2), "0.6 is below the rate");
        assert!(r.verified(9, 3));
    }
}
