//! The goal stack, kept in `/var/lib/ghost/agent/goals.json`: what the agent works towards,
//! with a status history and a success predicate checked each beat.
//!
//! Predicates (`check`): `service:NAME:running`, `services:running` (every service that is
//! wanted runs), `disk:PATH:below:PCT`. A maintenance goal (seeded, `keep = true`) stays
//! active and records whether it holds; another goal completes when its check first holds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Active,
    Blocked,
    Suspended,
    Completed,
    Abandoned,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    pub id: String,
    pub text: String,
    pub priority: i32,
    pub status: Status,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub check: Option<String>,
    #[serde(default)]
    pub parent: Option<String>,
    /// Checks that did not hold (for maintenance goals: times it was found broken).
    #[serde(default)]
    pub attempts: u32,
    /// Whether the check held when last evaluated.
    #[serde(default)]
    pub holds: Option<bool>,
    /// Maintenance: never completes.
    #[serde(default)]
    pub keep: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// (status, reason, time) of every change.
    #[serde(default)]
    pub history: Vec<(Status, String, u64)>,
}

/// A parsed predicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    ServiceRunning(String),
    ServicesRunning,
    DiskBelow(String, f64),
}

pub fn parse_check(s: &str) -> Result<Check, String> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        ["service", name, "running"] if !name.is_empty() => Ok(Check::ServiceRunning(name.to_string())),
        ["services", "running"] => Ok(Check::ServicesRunning),
        ["disk", path, "below", pct] if path.starts_with('/') => {
            pct.parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)).map(|p| Check::DiskBelow(path.to_string(), p)).ok_or_else(|| format!("check: {pct:?} is not a percentage"))
        }
        _ => Err(format!("check: {s:?} is not one of service:NAME:running, services:running, disk:PATH:below:PCT")),
    }
}

pub struct Goals {
    path: PathBuf,
    pub goals: Vec<Goal>,
    next: u64,
}

impl Goals {
    /// Loads the stack; on first start (no file) seeds the maintenance goals. A file that does
    /// not parse is kept aside as `goals.json.bad` and reported, and the seed is used.
    pub fn load(path: PathBuf, now: u64) -> (Goals, Option<String>) {
        let mut warning = None;
        let goals = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Goal>>(&bytes) {
                Ok(g) => g,
                Err(e) => {
                    let aside = path.with_extension("json.bad");
                    let _ = std::fs::rename(&path, &aside);
                    warning = Some(format!("{}: {e}; kept as {} and the goals start from the seed", path.display(), aside.display()));
                    seed(now)
                }
            },
            Err(_) => seed(now),
        };
        let next = goals.iter().filter_map(|g| g.id.strip_prefix('g')?.parse::<u64>().ok()).max().unwrap_or(0) + 1;
        let g = Goals { path, goals, next };
        g.save();
        (g, warning)
    }

    pub fn save(&self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = ghost_audit::util::write_atomic(&self.path, &serde_json::to_vec_pretty(&self.goals).unwrap_or_default(), 0o644) {
            eprintln!("ghost agent: {}: {e}", self.path.display());
        }
    }

    pub fn add(&mut self, text: &str, priority: i32, check: Option<String>, parent: Option<String>, now: u64) -> Result<String, String> {
        if text.trim().is_empty() {
            return Err("text: a goal needs words".into());
        }
        if let Some(c) = &check {
            parse_check(c)?;
        }
        if let Some(p) = &parent {
            if !self.goals.iter().any(|g| &g.id == p) {
                return Err(format!("parent: no goal `{p}`"));
            }
        }
        let id = format!("g{}", self.next);
        self.next += 1;
        self.goals.push(Goal {
            id: id.clone(),
            text: text.trim().to_string(),
            priority,
            status: Status::Pending,
            reason: "added by the operator".into(),
            check,
            parent,
            attempts: 0,
            holds: None,
            keep: false,
            created_ms: now,
            updated_ms: now,
            history: vec![(Status::Pending, "added by the operator".into(), now)],
        });
        self.sort();
        self.save();
        Ok(id)
    }

    pub fn drop_goal(&mut self, id: &str, reason: &str, now: u64) -> Result<(), String> {
        let g = self.goals.iter_mut().find(|g| g.id == id).ok_or_else(|| format!("no goal `{id}`"))?;
        let reason = if reason.is_empty() { "dropped by the operator" } else { reason };
        set(g, Status::Abandoned, reason, now);
        self.save();
        Ok(())
    }

    fn sort(&mut self) {
        self.goals.sort_by_key(|g| (std::cmp::Reverse(g.priority), g.created_ms));
    }

    /// Evaluates every open goal's check with `eval` (None: cannot tell now). Returns the
    /// goals whose state changed, as (id, text, holds) — the agent remembers those.
    pub fn check(&mut self, now: u64, mut eval: impl FnMut(&Check) -> Option<bool>) -> Vec<(String, String, bool)> {
        let mut changed = Vec::new();
        for g in self.goals.iter_mut().filter(|g| !matches!(g.status, Status::Completed | Status::Abandoned | Status::Suspended)) {
            let Some(check) = g.check.as_deref().and_then(|c| parse_check(c).ok()) else { continue };
            let Some(holds) = eval(&check) else { continue };
            if g.holds == Some(holds) {
                continue;
            }
            g.holds = Some(holds);
            if !holds {
                g.attempts += 1;
            }
            let (status, reason) = match (holds, g.keep) {
                (true, true) => (Status::Active, "holds"),
                (true, false) => (Status::Completed, "its check holds"),
                (false, _) => (Status::Active, "does not hold; working on it"),
            };
            set(g, status, reason, now);
            changed.push((g.id.clone(), g.text.clone(), holds));
        }
        if !changed.is_empty() {
            self.save();
        }
        changed
    }
}

fn set(g: &mut Goal, status: Status, reason: &str, now: u64) {
    g.status = status;
    g.reason = reason.to_string();
    g.updated_ms = now;
    g.history.push((status, reason.to_string(), now));
    if g.history.len() > 50 {
        g.history.remove(0);
    }
}

fn seed(now: u64) -> Vec<Goal> {
    let goal = |id: &str, text: &str, priority: i32, check: &str| Goal {
        id: id.into(),
        text: text.into(),
        priority,
        status: Status::Active,
        reason: "seeded at first start".into(),
        check: Some(check.into()),
        parent: None,
        attempts: 0,
        holds: None,
        keep: true,
        created_ms: now,
        updated_ms: now,
        history: vec![(Status::Active, "seeded at first start".into(), now)],
    };
    vec![
        goal("g1", "System health: every wanted service runs", 100, "services:running"),
        goal("g2", "Performance: the state partition stays below 90% full", 80, "disk:/var/lib/ghost:below:90"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_persist_complete_and_are_dropped_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("goals.json");
        let (mut g, w) = Goals::load(path.clone(), 1);
        assert!(w.is_none());
        assert_eq!(g.goals.len(), 2, "seeded");
        assert!(g.add("x", 1, Some("service:web:sometimes".into()), None, 2).unwrap_err().starts_with("check:"));
        assert!(g.add("y", 1, None, Some("g99".into()), 2).unwrap_err().starts_with("parent:"));
        let id = g.add("web runs", 120, Some("service:web:running".into()), Some("g1".into()), 2).unwrap();
        assert_eq!(g.goals[0].id, id, "highest priority first");
        let changed = g.check(3, |c| Some(!matches!(c, Check::DiskBelow(..))));
        assert_eq!(changed.len(), 3);
        let (g2, _) = Goals::load(path.clone(), 4);
        let web = g2.goals.iter().find(|x| x.id == id).unwrap();
        assert_eq!(web.status, Status::Completed);
        let health = g2.goals.iter().find(|x| x.id == "g1").unwrap();
        assert_eq!((health.status, health.holds), (Status::Active, Some(true)));
        let disk = g2.goals.iter().find(|x| x.id == "g2").unwrap();
        assert_eq!((disk.holds, disk.attempts), (Some(false), 1));
        let mut g2 = g2;
        g2.drop_goal("g2", "", 5).unwrap();
        assert_eq!(g2.goals.iter().find(|x| x.id == "g2").unwrap().status, Status::Abandoned);
        assert!(g2.drop_goal("nope", "", 5).is_err());
        std::fs::write(&path, "{broken").unwrap();
        let (g3, w) = Goals::load(path.clone(), 6);
        assert!(w.unwrap().contains("goals.json.bad"));
        assert_eq!(g3.goals.len(), 2);
    }
}
