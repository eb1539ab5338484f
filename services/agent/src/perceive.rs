//! Turning what the system reports into observations: supervisor events (with a salience per
//! kind, so an OOM outranks a status line) and metric samples against the thresholds the rules
//! care about (with hysteresis, so a value hovering at a threshold is one observation, not one
//! per sample).

use std::collections::HashMap;

use ghost_proto::{Event, EventKind};
use serde_json::json;

use crate::observation::{Observation, Source};
use crate::rules::RuleSet;

/// The observation for a supervisor event; `None` for events that need no attention
/// (starting, ready, healthy, stopping while shutting down…).
pub fn from_event(e: &Event) -> Option<Observation> {
    let (kind, salience) = match e.kind {
        EventKind::Exited => ("exited", 0.8),
        EventKind::CrashLoop => ("crash-loop", 0.95),
        EventKind::Oom => ("oom", 0.95),
        EventKind::Unhealthy => ("unhealthy", 0.85),
        EventKind::WatchdogTimeout => ("watchdog-timeout", 0.85),
        EventKind::ConfigError => ("config-error", 0.7),
        EventKind::Restarting => ("restarting", 0.3),
        EventKind::Healthy => ("healthy", 0.2),
        EventKind::Ready => ("ready", 0.1),
        EventKind::Stopped => ("stopped", 0.2),
        EventKind::Reloaded => ("reloaded", 0.3),
        EventKind::Reexec => ("reexec", 0.3),
        EventKind::Status | EventKind::Starting | EventKind::Stopping | EventKind::BootComplete | EventKind::Shutdown => return None,
    };
    let text = match &e.service {
        Some(s) if e.detail.is_empty() => format!("{s}: {kind}"),
        Some(s) => format!("{s}: {kind}: {}", e.detail),
        None => format!("{kind}: {}", e.detail),
    };
    let mut o = Observation::new(Source::Supervisor, kind, &text, e.ts_ms).salience(salience).data(json!({ "pid": e.pid, "detail": e.detail }));
    o.service = e.service.clone();
    Some(o)
}

/// A threshold some rule watches: `metric` above or below `value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub metric: String,
    pub above: Option<f64>,
    pub below: Option<f64>,
}

/// The metric thresholds of every rule on `Source::Metrics`.
pub fn thresholds(rules: &RuleSet) -> Vec<Threshold> {
    rules
        .rules()
        .iter()
        .filter(|r| r.source == Source::Metrics)
        .flat_map(|r| r.kinds.iter().map(move |k| Threshold { metric: k.clone(), above: r.above(), below: r.below() }))
        .collect()
}

/// Watches metric samples: a metric that crosses one of its thresholds is observed once, and
/// again only after it has come back by `hysteresis` (a fraction of the threshold).
#[derive(Debug)]
pub struct MetricWatch {
    thresholds: Vec<Threshold>,
    hysteresis: f64,
    /// (metric, subject, threshold index) → currently beyond it.
    beyond: HashMap<(String, String, usize), bool>,
}

impl MetricWatch {
    pub fn new(thresholds: Vec<Threshold>, hysteresis: f64) -> MetricWatch {
        MetricWatch { thresholds, hysteresis: hysteresis.max(0.0), beyond: HashMap::new() }
    }

    /// One sample of `metric` for `subject` (a mount point, a service, or "" for the system).
    pub fn sample(&mut self, metric: &str, subject: &str, value: f64, ts_ms: u64) -> Vec<Observation> {
        let mut out = Vec::new();
        for (i, t) in self.thresholds.iter().enumerate().filter(|(_, t)| t.metric == metric) {
            let key = (metric.to_string(), subject.to_string(), i);
            let was = *self.beyond.get(&key).unwrap_or(&false);
            let crossed = t.above.is_some_and(|a| value > a) || t.below.is_some_and(|b| value < b);
            let back = t.above.is_none_or(|a| value < a - a.abs() * self.hysteresis) && t.below.is_none_or(|b| value > b + b.abs() * self.hysteresis);
            if crossed && !was {
                self.beyond.insert(key, true);
                let what = if subject.is_empty() { metric.to_string() } else { format!("{metric} of {subject}") };
                let limit = t.above.map(|a| format!("above {a}")).or(t.below.map(|b| format!("below {b}"))).unwrap_or_default();
                out.push(
                    Observation::new(Source::Metrics, metric, &format!("{what} is {value:.1}, {limit}"), ts_ms)
                        .salience(0.75)
                        .data(json!({ "value": value, "subject": subject })),
                );
            } else if was && back {
                self.beyond.insert(key, false);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn events_become_observations_with_salience_and_quiet_ones_are_dropped() {
        let e = Event { ts_ms: 7, kind: EventKind::Oom, service: Some("redis".into()), pid: Some(42), detail: "memory.max 64M".into() };
        let o = from_event(&e).unwrap();
        assert_eq!((o.source, o.kind.as_str(), o.service.as_deref()), (Source::Supervisor, "oom", Some("redis")));
        assert!(o.salience > 0.9 && o.text.contains("memory.max"));
        assert_eq!(o.data["pid"], 42);
        let quiet = Event { ts_ms: 7, kind: EventKind::Status, service: Some("model".into()), pid: None, detail: "downloading".into() };
        assert!(from_event(&quiet).is_none());
    }

    #[test]
    fn a_metric_is_observed_once_per_crossing_with_hysteresis() {
        let (rules, problems) = RuleSet::parse(&[(
            PathBuf::from("r.toml"),
            "[[playbook]]\nname = \"p\"\nsteps = [{ tool = \"fs.list\" }]\n[[rule]]\nname = \"disk\"\nwhen = { source = \"metrics\", kind = \"disk_used_pct\", above = 90.0 }\nplaybook = \"p\"\n".into(),
        )]);
        assert!(problems.is_empty(), "{problems:?}");
        let mut w = MetricWatch::new(thresholds(&rules), 0.05);
        let seen: Vec<usize> = [50.0, 91.0, 95.0, 89.0, 92.0, 80.0, 93.0].iter().map(|&v| w.sample("disk_used_pct", "/", v, 0).len()).collect();
        // 91 crosses; 95 and 92 are still beyond (89 is within 5 % of 90); 80 re-arms; 93 crosses again.
        assert_eq!(seen, [0, 1, 0, 0, 0, 0, 1]);
        assert_eq!(w.sample("disk_used_pct", "/var", 99.0, 0).len(), 1, "per subject");
        let o = &w.sample("disk_used_pct", "/tmp", 97.0, 5)[0];
        assert_eq!(o.data["value"], 97.0);
        assert!(rules.decide(o).is_some(), "the rule that set the threshold takes it");
    }
}
