//! Learning from the model: a call the model chose for the same kind of observation that
//! worked `propose_after` times becomes a proposed rule and playbook, in the rules' own syntax,
//! under /var/lib/ghost/agent/proposals/NAME.toml. The operator reads it
//! (`ghostctl proposals`) and accepts it (`ghostctl accept NAME`), which moves it into
//! /etc/ghost/rules/ where it decides from then on without a model. Counts are kept in
//! /var/lib/ghost/agent/learning.json.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ghost_agent::{Observation, RuleSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counts {
    successes: u32,
    failures: u32,
    proposed: Option<String>,
}

pub struct Learning {
    path: PathBuf,
    proposals: PathBuf,
    after: u32,
    counts: BTreeMap<String, Counts>,
}

/// The pattern of an observation and a call: the service's name in the arguments becomes
/// `{service}`, so that what worked for one service is a rule for the same kind of event.
fn pattern(o: &Observation, tool: &str, args: &Value) -> (String, Value) {
    let args = match &o.service {
        Some(s) if !s.is_empty() => generalise(args, s),
        _ => args.clone(),
    };
    let key = format!("{}/{}/{}/{tool}/{args}", o.source.as_str(), o.kind, if o.service.is_some() { "service" } else { "-" });
    (key, args)
}

fn generalise(v: &Value, service: &str) -> Value {
    match v {
        Value::String(s) if s == service => Value::String("{service}".into()),
        Value::Array(a) => Value::Array(a.iter().map(|x| generalise(x, service)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), generalise(x, service))).collect()),
        other => other.clone(),
    }
}

/// FNV-1a of the pattern, 24 bits: stable across runs and builds.
fn key_hash(key: &str) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in key.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h & 0xff_ffff
}

/// A JSON value as a TOML value (inline tables; strings in JSON's escaping, which TOML's basic
/// strings share for everything JSON escapes).
fn toml_value(v: &Value) -> String {
    match v {
        Value::Null => "\"\"".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(toml_value).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!("{{ {} }}", m.iter().map(|(k, x)| format!("{} = {}", Value::String(k.clone()), toml_value(x))).collect::<Vec<_>>().join(", ")),
    }
}

impl Learning {
    pub fn load(dir: &Path, after: u32) -> Learning {
        let path = dir.join("learning.json");
        let counts = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Learning { path, proposals: dir.join("proposals"), after: after.max(1), counts }
    }

    fn save(&self) {
        if let Err(e) = ghost_audit::util::write_atomic(&self.path, &serde_json::to_vec_pretty(&self.counts).unwrap_or_default(), 0o644) {
            eprintln!("ghost agent: {}: {e}", self.path.display());
        }
    }

    /// Counts how the model's call for `o` went; returns the name of a new proposal when this
    /// success is the one that makes it.
    pub fn record(&mut self, o: &Observation, tool: &str, args: &Value, worked: bool, today: &str) -> Option<String> {
        let (key, general) = pattern(o, tool, args);
        let hash = key_hash(&key);
        let c = self.counts.entry(key).or_default();
        if worked {
            c.successes += 1;
        } else {
            c.failures += 1;
        }
        let due = worked && c.proposed.is_none() && c.successes >= self.after && c.successes > c.failures;
        let mut made = None;
        if due {
            // Named by kind and tool, plus a short hash of the whole pattern so that two patterns
            // of one kind and tool never take each other's name.
            let name = format!("learned-{}-{}-{hash:06x}", o.kind.replace(|ch: char| !ch.is_ascii_alphanumeric(), "-"), tool.replace('.', "-"));
            let text = proposal_text(&name, o, tool, &general, c.successes, today);
            // Only what the rule engine reads back cleanly is proposed.
            let (_, problems) = RuleSet::parse(&[(PathBuf::from(format!("{name}.toml")), text.clone())]);
            let file = self.proposals.join(format!("{name}.toml"));
            // write_new never replaces: a proposal of that name waiting already stays as it is.
            if problems.is_empty() && std::fs::create_dir_all(&self.proposals).is_ok() && ghost_audit::util::write_new(&file, text.as_bytes(), 0o644).is_ok() {
                c.proposed = Some(name.clone());
                made = Some(name);
            }
        }
        self.save();
        made
    }

}

fn proposal_text(name: &str, o: &Observation, tool: &str, args: &Value, successes: u32, today: &str) -> String {
        let service = if o.service.is_some() { ", service = \"*\"" } else { "" };
        format!(
            "# Proposed by the agent on {today}: for `{source}` / `{kind}` the model chose this call {successes} times\n\
             # and it worked each time. Accept it with `ghostctl accept {name}`: it then decides without a model.\n\n\
             [[rule]]\nname = \"{name}\"\ndescription = \"learned: {source}/{kind} → {tool}\"\n\
             when = {{ source = \"{source}\", kind = \"{kind}\"{service} }}\nplaybook = \"{name}\"\ncooldown_s = 10\n\n\
             [[playbook]]\nname = \"{name}\"\ndescription = \"what the model did, {successes} times, successfully\"\n\
             steps = [{{ tool = \"{tool}\", args = {args} }}]\n",
            source = o.source.as_str(),
            kind = o.kind,
            args = toml_value(args),
        )
}

impl Learning {
    /// The proposals waiting for the operator: (name, text).
    pub fn proposals(&self) -> Vec<(String, String)> {
        let Ok(rd) = std::fs::read_dir(&self.proposals) else { return Vec::new() };
        let mut out: Vec<(String, String)> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().strip_suffix(".toml")?.to_string();
                Some((name, std::fs::read_to_string(e.path()).ok()?))
            })
            .collect();
        out.sort();
        out
    }

    /// Moves proposal `name` into `rules_dir`; the caller reloads the rules.
    pub fn accept(&self, name: &str, rules_dir: &Path) -> Result<PathBuf, String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("name: {name:?} is not a proposal's name"));
        }
        let from = self.proposals.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&from).map_err(|_| format!("no proposal named `{name}` (see ghostctl proposals)"))?;
        std::fs::create_dir_all(rules_dir).map_err(|e| format!("{}: {e}", rules_dir.display()))?;
        let to = rules_dir.join(format!("{name}.toml"));
        ghost_audit::util::write_new(&to, text.as_bytes(), 0o644).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!("{} exists already; nothing was changed", to.display()),
            _ => format!("{}: {e}", to.display()),
        })?;
        let _ = std::fs::remove_file(&from);
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghost_agent::Source;
    use serde_json::json;

    #[test]
    fn a_call_that_worked_three_times_is_proposed_as_a_rule_that_decides_and_can_be_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Learning::load(dir.path(), 3);
        let o = |svc: &str| Observation::new(Source::Supervisor, "unhealthy", &format!("{svc}: unhealthy"), 1).service(svc);
        let args = |svc: &str| json!({ "name": svc });
        assert_eq!(l.record(&o("web"), "service.restart", &args("web"), true, "2026-11-22"), None);
        assert_eq!(l.record(&o("db"), "service.restart", &args("db"), false, "2026-11-22"), None);
        assert_eq!(l.record(&o("api"), "service.restart", &args("api"), true, "2026-11-22"), None);
        let name = l.record(&o("web"), "service.restart", &args("web"), true, "2026-11-22").expect("proposed after 3 successes (1 failure)");
        assert!(name.starts_with("learned-unhealthy-service-restart-") && name.len() == "learned-unhealthy-service-restart-".len() + 6, "{name}");
        assert_eq!(l.record(&o("web"), "service.restart", &args("web"), true, "2026-11-22"), None, "proposed once");
        let proposals = Learning::load(dir.path(), 3).proposals();
        assert_eq!(proposals.len(), 1);
        let (set, problems) = RuleSet::parse(&[(PathBuf::from("p.toml"), proposals[0].1.clone())]);
        assert!(problems.is_empty(), "{problems:?}");
        let d = set.decide(&o("cache")).expect("the learned rule decides for another service");
        assert_eq!((d.steps[0].tool.as_str(), &d.steps[0].args), ("service.restart", &json!({ "name": "cache" })));
        let rules = dir.path().join("rules");
        assert!(l.accept("../x", &rules).is_err());
        assert!(l.accept("nosuch", &rules).unwrap_err().contains("no proposal"));
        let to = l.accept(&name, &rules).unwrap();
        assert!(to.is_file() && l.proposals().is_empty());
        assert_eq!(toml_value(&json!({"a": [1, "x\"y"], "b": true})), "{ \"a\" = [1, \"x\\\"y\"], \"b\" = true }");
    }
}
