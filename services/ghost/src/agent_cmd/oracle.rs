//! The Oracle: anticipation. The services' lifecycle events (`starting:web`, `ready:web`,
//! `stopped:worker`, `exited:db`) form a sequence; the Oracle counts which event follows which
//! (a first-order Markov chain over the last 10,000 events, kept in
//! /var/lib/ghost/agent/oracle.json) and, when one event is followed by the same next one often
//! enough (≥ `min_support` times, with probability ≥ `min_p`), predicts it. A predicted start of
//! a service that is stopped is pre-warmed: the agent starts it (audited, as actor `oracle`).
//!
//! Accuracy is measured on held-back history: the chain is trained on the first 80% of the
//! sequence and asked for the next event at every step of the last 20%; the baseline in the
//! same measurement always predicts the most frequent event of the training part.

use std::collections::HashMap;
use std::path::PathBuf;

use ghost_proto::{Event, EventKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const KEEP: usize = 10_000;

#[derive(Default, Serialize, Deserialize)]
pub struct Oracle {
    #[serde(skip)]
    path: PathBuf,
    history: Vec<String>,
    #[serde(skip)]
    counts: HashMap<String, HashMap<String, u32>>,
    #[serde(default)]
    pub prewarms: u64,
    #[serde(skip)]
    pub min_support: u32,
    #[serde(skip)]
    pub min_p: f64,
}

/// What the Oracle expects next.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub after: String,
    pub next: String,
    pub p: f64,
    pub seen: u32,
}

/// The token of a lifecycle event, if it is one.
pub fn token(e: &Event) -> Option<String> {
    let kind = match e.kind {
        EventKind::Starting => "starting",
        EventKind::Ready => "ready",
        EventKind::Stopped => "stopped",
        EventKind::Exited => "exited",
        _ => return None,
    };
    Some(format!("{kind}:{}", e.service.as_deref()?))
}

fn train(history: &[String]) -> HashMap<String, HashMap<String, u32>> {
    let mut counts: HashMap<String, HashMap<String, u32>> = HashMap::new();
    for w in history.windows(2) {
        *counts.entry(w[0].clone()).or_default().entry(w[1].clone()).or_default() += 1;
    }
    counts
}

fn best(counts: &HashMap<String, HashMap<String, u32>>, after: &str) -> Option<(String, f64, u32)> {
    let next = counts.get(after)?;
    let total: u32 = next.values().sum();
    // Ties go to the name that sorts first, so a prediction does not depend on hash order.
    let (tok, n) = next.iter().max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))?;
    Some((tok.clone(), *n as f64 / total as f64, *n))
}

impl Oracle {
    pub fn load(path: PathBuf, min_support: u32, min_p: f64) -> Oracle {
        let mut o: Oracle = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        o.counts = train(&o.history);
        o.path = path;
        o.min_support = min_support;
        o.min_p = min_p;
        o
    }

    pub fn save(&self) {
        if let Err(e) = ghost_audit::util::write_atomic(&self.path, &serde_json::to_vec(self).unwrap_or_default(), 0o644) {
            eprintln!("ghost agent: {}: {e}", self.path.display());
        }
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Adds an event to the sequence; returns what is expected next, if anything is.
    pub fn observe(&mut self, tok: String) -> Option<Prediction> {
        if let Some(last) = self.history.last() {
            *self.counts.entry(last.clone()).or_default().entry(tok.clone()).or_default() += 1;
        }
        self.history.push(tok.clone());
        if self.history.len() > KEEP + KEEP / 10 {
            self.history.drain(..self.history.len() - KEEP);
            self.counts = train(&self.history);
        }
        let (next, p, seen) = best(&self.counts, &tok)?;
        (seen >= self.min_support && p >= self.min_p).then_some(Prediction { after: tok, next, p, seen })
    }

    /// Top-1 accuracy on the last 20% of the history, trained on the first 80%, beside the
    /// most-frequent-event baseline.
    pub fn accuracy(&self) -> Value {
        let n = self.history.len();
        let cut = n * 4 / 5;
        if n < 10 {
            return json!({ "events": n, "accuracy": null, "baseline": null, "tested": 0 });
        }
        let (train_part, test_part) = (&self.history[..cut], &self.history[cut - 1..]);
        let counts = train(train_part);
        let mut freq: HashMap<&str, u32> = HashMap::new();
        train_part.iter().for_each(|t| *freq.entry(t).or_default() += 1);
        let common = freq.iter().max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0))).map(|(t, _)| t.to_string()).unwrap_or_default();
        let (mut hits, mut base, mut tested) = (0u32, 0u32, 0u32);
        for w in test_part.windows(2) {
            tested += 1;
            if best(&counts, &w[0]).is_some_and(|(t, ..)| t == w[1]) {
                hits += 1;
            }
            if common == w[1] {
                base += 1;
            }
        }
        let r = |x: u32| (x as f64 / tested.max(1) as f64 * 1000.0).round() / 1000.0;
        json!({ "events": n, "accuracy": r(hits), "baseline": r(base), "tested": tested })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_habit_is_learned_predicted_and_measured_against_the_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Oracle::load(dir.path().join("oracle.json"), 3, 0.6);
        let day = ["starting:db", "ready:db", "starting:web", "ready:web", "starting:worker", "ready:worker", "stopped:worker", "stopped:web"];
        let mut predicted = None;
        for round in 0..20 {
            for t in day {
                let p = o.observe(t.to_string());
                if round >= 3 && t == "ready:web" {
                    predicted = p;
                }
            }
        }
        let p = predicted.expect("after ready:web comes starting:worker");
        assert_eq!((p.next.as_str(), p.p), ("starting:worker", 1.0));
        let a = o.accuracy();
        assert_eq!(a["accuracy"], 1.0, "{a}");
        assert!(a["baseline"].as_f64().unwrap() < 0.2, "{a}");
        o.save();
        let again = Oracle::load(dir.path().join("oracle.json"), 3, 0.6);
        assert_eq!(again.accuracy(), a, "kept across restarts");
        // Too little evidence: no prediction.
        let mut fresh = Oracle::load(dir.path().join("other.json"), 3, 0.6);
        fresh.observe("ready:a".into());
        assert!(fresh.observe("starting:b".into()).is_none());
    }
}
