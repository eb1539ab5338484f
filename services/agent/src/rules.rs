//! Reactive rules and playbooks from /etc/ghost/rules/*.toml: when an observation matches a
//! rule, its playbook's tool calls are the decision — no model involved.
//!
//! ```toml
//! [[rule]]
//! name = "restart-dead-service"
//! when = { source = "supervisor", kind = ["exited", "oom"], service = "*" }
//! # also: text = "regex on the observation's text", above = 90.0, below = 5.0 (data.value)
//! playbook = "restart-service"
//! priority = 50          # higher is tried first; default 50
//! cooldown_s = 5         # per rule and service; default 0
//!
//! [[playbook]]
//! name = "restart-service"
//! steps = [
//!     { tool = "log.tail", args = { service = "{service}", lines = 50 } },
//!     { tool = "service.restart", args = { name = "{service}" } },
//! ]
//! verify = { tool = "service.status", args = { name = "{service}" }, expect = { state = "running" }, within_s = 10 }
//! ```
//!
//! Placeholders in argument strings: `{service}`, `{kind}`, `{source}`, `{text}` and
//! `{data.FIELD}`; a rule whose playbook needs `{service}` matches only observations that name
//! one. Every key is closed: an unknown key, a bad regex, an unknown playbook or placeholder is
//! reported with the file, the entry and the key, and only that rule (or playbook) is left out.
//!
//! Matching is an index lookup by (source, kind) and a short scan of the candidates in
//! priority order, so a decision costs microseconds, not milliseconds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::observation::{Observation, Source};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    description: String,
    when: RawWhen,
    playbook: String,
    #[serde(default = "default_priority")]
    priority: i32,
    #[serde(default)]
    cooldown_s: u64,
    #[serde(default = "yes")]
    enabled: bool,
}

fn default_priority() -> i32 {
    50
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    source: String,
    #[serde(default)]
    kind: OneOrMany,
    service: Option<String>,
    text: Option<String>,
    above: Option<f64>,
    below: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    Any,
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    name: String,
    #[serde(default)]
    description: String,
    steps: Vec<RawStep>,
    verify: Option<RawVerify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    tool: String,
    #[serde(default)]
    args: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    tool: String,
    #[serde(default)]
    args: toml::Table,
    #[serde(default)]
    expect: toml::Table,
    #[serde(default = "default_within")]
    within_s: u64,
}

fn default_within() -> u64 {
    10
}

/// A tool call of a playbook, arguments still holding placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub tool: String,
    pub args: Value,
}

/// How a playbook checks that it worked: call `tool` until its output contains `expect`
/// (every key equal), for at most `within_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    pub tool: String,
    pub args: Value,
    pub expect: Value,
    pub within_s: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub name: String,
    pub description: String,
    pub steps: Vec<Step>,
    pub verify: Option<Verify>,
    /// Some argument needs `{service}`.
    needs_service: bool,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub description: String,
    pub source: Source,
    /// Empty: any kind.
    pub kinds: Vec<String>,
    service: Option<Glob>,
    text: Option<Regex>,
    above: Option<f64>,
    below: Option<f64>,
    pub playbook: String,
    pub priority: i32,
    pub cooldown_s: u64,
    pub file: PathBuf,
}

impl Rule {
    /// The `when.above` threshold, if any.
    pub fn above(&self) -> Option<f64> {
        self.above
    }
    /// The `when.below` threshold, if any.
    pub fn below(&self) -> Option<f64> {
        self.below
    }

    fn matches(&self, o: &Observation, needs_service: bool) -> bool {
        if o.source != self.source || (!self.kinds.is_empty() && !self.kinds.contains(&o.kind)) {
            return false;
        }
        if needs_service && o.service.is_none() {
            return false;
        }
        if let Some(g) = &self.service {
            match &o.service {
                Some(s) if g.matches(s) => {}
                _ => return false,
            }
        }
        if let Some(re) = &self.text {
            if !re.is_match(&o.text) {
                return false;
            }
        }
        let value = o.number("value");
        if let Some(a) = self.above {
            if !value.is_some_and(|v| v > a) {
                return false;
            }
        }
        if let Some(b) = self.below {
            if !value.is_some_and(|v| v < b) {
                return false;
            }
        }
        true
    }
}

/// What a rule decided for one observation: the tool calls to make, arguments filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub rule: String,
    pub playbook: String,
    pub steps: Vec<Step>,
    pub verify: Option<Verify>,
    pub cooldown_s: u64,
}

/// The loaded rules and playbooks.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    playbooks: HashMap<String, Playbook>,
    /// Rule indices by source, in priority order.
    by_source: HashMap<Source, Vec<usize>>,
}

impl RuleSet {
    /// Every `*.toml` of `dir` in name order; the problems, one line each, name file and key.
    pub fn load_dir(dir: &Path) -> (RuleSet, Vec<String>) {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return (RuleSet::default(), vec![format!("{}: {e}", dir.display())]),
        };
        files.sort();
        let mut texts = Vec::new();
        let mut problems = Vec::new();
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(t) => texts.push((f, t)),
                Err(e) => problems.push(format!("{}: {e}", f.display())),
            }
        }
        let (set, more) = RuleSet::parse(&texts);
        problems.extend(more);
        (set, problems)
    }

    /// Rules and playbooks from `(file, text)` pairs (playbooks are shared across files).
    pub fn parse(files: &[(PathBuf, String)]) -> (RuleSet, Vec<String>) {
        let mut problems = Vec::new();
        let mut raw_rules = Vec::new();
        let mut playbooks = HashMap::new();
        for (path, text) in files {
            let at = |what: &str, msg: &str| format!("{}: {what}: {msg}", path.display());
            let table: toml::Table = match toml::from_str(text) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{}: {}", path.display(), e.to_string().trim_end()));
                    continue;
                }
            };
            for key in table.keys().filter(|k| *k != "rule" && *k != "playbook") {
                problems.push(at(key, "unknown key (expected [[rule]] and [[playbook]] entries)"));
            }
            for (i, v) in array(&table, "playbook", path, &mut problems).into_iter().enumerate() {
                let name = entry_name(&v);
                let what = format!("playbook[{i}]{name}");
                match RawPlaybook::deserialize(v).map_err(|e| e.to_string()).and_then(compile_playbook) {
                    Ok(p) if playbooks.contains_key(&p.name) => problems.push(at(&what, "a playbook of this name is already defined; this one is left out")),
                    Ok(p) => {
                        playbooks.insert(p.name.clone(), p);
                    }
                    Err(e) => problems.push(at(&what, &e)),
                }
            }
            for (i, v) in array(&table, "rule", path, &mut problems).into_iter().enumerate() {
                let what = format!("rule[{i}]{}", entry_name(&v));
                match RawRule::deserialize(v) {
                    Ok(r) => raw_rules.push((path.clone(), what, r)),
                    Err(e) => problems.push(at(&what, &e.to_string())),
                }
            }
        }
        let mut rules = Vec::new();
        for (path, what, r) in raw_rules {
            if !r.enabled {
                continue;
            }
            match compile_rule(r, &path, &playbooks) {
                Ok(rule) => rules.push(rule),
                Err(e) => problems.push(format!("{}: {what}: {e}", path.display())),
            }
        }
        // Stable: equal priority keeps file order.
        rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
        let mut by_source: HashMap<Source, Vec<usize>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            by_source.entry(r.source).or_default().push(i);
        }
        (RuleSet { rules, playbooks, by_source }, problems)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn playbook(&self, name: &str) -> Option<&Playbook> {
        self.playbooks.get(name)
    }

    /// The first rule (by priority) that matches, with its playbook's calls filled in.
    pub fn decide(&self, o: &Observation) -> Option<Decision> {
        self.decide_where(o, |_| true)
    }

    /// As [`decide`](Self::decide), skipping rules `allowed` refuses (cooling down, guarded).
    pub fn decide_where(&self, o: &Observation, mut allowed: impl FnMut(&Rule) -> bool) -> Option<Decision> {
        let candidates = self.by_source.get(&o.source)?;
        for &i in candidates {
            let rule = &self.rules[i];
            let pb = &self.playbooks[&rule.playbook];
            if rule.matches(o, pb.needs_service) && allowed(rule) {
                return Some(Decision {
                    rule: rule.name.clone(),
                    playbook: pb.name.clone(),
                    steps: pb.steps.iter().map(|s| Step { tool: s.tool.clone(), args: fill(&s.args, o) }).collect(),
                    verify: pb.verify.as_ref().map(|v| Verify { tool: v.tool.clone(), args: fill(&v.args, o), expect: fill(&v.expect, o), within_s: v.within_s }),
                    cooldown_s: rule.cooldown_s,
                });
            }
        }
        None
    }
}

impl RuleSet {
    /// The same decision by trying every rule in priority order, without the index: the
    /// baseline the indexed lookup is measured against.
    #[doc(hidden)]
    pub fn decide_scanning(&self, o: &Observation) -> Option<String> {
        self.rules.iter().find(|r| r.matches(o, self.playbooks[&r.playbook].needs_service)).map(|r| r.name.clone())
    }
}

fn array(table: &toml::Table, key: &str, path: &Path, problems: &mut Vec<String>) -> Vec<toml::Value> {
    match table.get(key) {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a.clone(),
        Some(_) => {
            problems.push(format!("{}: {key}: must be an array of tables ([[{key}]])", path.display()));
            Vec::new()
        }
    }
}

fn entry_name(v: &toml::Value) -> String {
    v.get("name").and_then(toml::Value::as_str).map(|n| format!(" ({n})")).unwrap_or_default()
}

fn compile_rule(r: RawRule, path: &Path, playbooks: &HashMap<String, Playbook>) -> Result<Rule, String> {
    let source = Source::parse(&r.when.source)
        .ok_or_else(|| format!("when.source: {:?} is not one of supervisor, log, metrics, file, timer, operator", r.when.source))?;
    let kinds = match r.when.kind {
        OneOrMany::Any => Vec::new(),
        OneOrMany::One(k) => vec![k],
        OneOrMany::Many(k) => k,
    };
    let text = match r.when.text {
        Some(t) => Some(Regex::new(&t).map_err(|e| format!("when.text: not a regular expression: {e}"))?),
        None => None,
    };
    if !playbooks.contains_key(&r.playbook) {
        return Err(format!("playbook: no playbook named {:?}", r.playbook));
    }
    Ok(Rule {
        name: r.name,
        description: r.description,
        source,
        kinds,
        service: r.when.service.map(Glob),
        text,
        above: r.when.above,
        below: r.when.below,
        playbook: r.playbook,
        priority: r.priority,
        cooldown_s: r.cooldown_s,
        file: path.to_path_buf(),
    })
}

fn compile_playbook(p: RawPlaybook) -> Result<Playbook, String> {
    if p.steps.is_empty() {
        return Err("steps: a playbook needs at least one step".into());
    }
    let mut needs_service = false;
    let mut steps = Vec::new();
    for (i, s) in p.steps.into_iter().enumerate() {
        let args = to_json(toml::Value::Table(s.args));
        check_placeholders(&args, &format!("steps[{i}].args"), &mut needs_service)?;
        steps.push(Step { tool: s.tool, args });
    }
    let verify = match p.verify {
        Some(v) => {
            let args = to_json(toml::Value::Table(v.args));
            let expect = to_json(toml::Value::Table(v.expect));
            check_placeholders(&args, "verify.args", &mut needs_service)?;
            check_placeholders(&expect, "verify.expect", &mut needs_service)?;
            Some(Verify { tool: v.tool, args, expect, within_s: v.within_s })
        }
        None => None,
    };
    Ok(Playbook { name: p.name, description: p.description, steps, verify, needs_service })
}

fn to_json(v: toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn check_placeholders(v: &Value, at: &str, needs_service: &mut bool) -> Result<(), String> {
    match v {
        Value::String(s) => {
            for p in placeholders(s) {
                match p {
                    "service" => *needs_service = true,
                    "kind" | "source" | "text" => {}
                    d if d.starts_with("data.") && d.len() > 5 => {}
                    other => return Err(format!("{at}: unknown placeholder {{{other}}} (service, kind, source, text, data.FIELD)")),
                }
            }
            Ok(())
        }
        Value::Array(a) => a.iter().enumerate().try_for_each(|(i, x)| check_placeholders(x, &format!("{at}[{i}]"), needs_service)),
        Value::Object(o) => o.iter().try_for_each(|(k, x)| check_placeholders(x, &format!("{at}.{k}"), needs_service)),
        _ => Ok(()),
    }
}

fn placeholders(s: &str) -> impl Iterator<Item = &str> {
    s.split('{').skip(1).filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// Arguments with placeholders replaced by the observation's values.
fn fill(v: &Value, o: &Observation) -> Value {
    match v {
        Value::String(s) if s.contains('{') => {
            // A string that is exactly one `{data.X}` keeps the value's type (a number stays one).
            if let Some(field) = s.strip_prefix("{data.").and_then(|r| r.strip_suffix('}')).filter(|f| !f.contains('{')) {
                return o.data.get(field).cloned().unwrap_or(Value::Null);
            }
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(at) = rest.find('{') {
                out.push_str(&rest[..at]);
                match rest[at + 1..].split_once('}') {
                    Some((name, after)) => {
                        out.push_str(&value_of(name, o));
                        rest = after;
                    }
                    None => {
                        out.push_str(&rest[at..]);
                        rest = "";
                    }
                }
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, o)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), fill(x, o))).collect()),
        other => other.clone(),
    }
}

fn value_of(name: &str, o: &Observation) -> String {
    match name {
        "service" => o.service.clone().unwrap_or_default(),
        "kind" => o.kind.clone(),
        "source" => o.source.as_str().to_string(),
        "text" => o.text.clone(),
        d => match d.strip_prefix("data.").and_then(|f| o.data.get(f)) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        },
    }
}

/// A shell-style glob with `*` and `?`.
#[derive(Debug, Clone)]
struct Glob(String);

impl Glob {
    fn matches(&self, s: &str) -> bool {
        fn go(p: &[u8], s: &[u8]) -> bool {
            match (p.first(), s.first()) {
                (None, None) => true,
                (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
                (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
                (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
                _ => false,
            }
        }
        go(self.0.as_bytes(), s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENTINEL: &str = r#"
[[rule]]
name = "restart-dead-service"
when = { source = "supervisor", kind = ["exited", "oom"], service = "*" }
playbook = "restart-service"
cooldown_s = 5

[[rule]]
name = "nginx-first"
when = { source = "supervisor", kind = "exited", service = "nginx*" }
playbook = "restart-service"
priority = 90

[[rule]]
name = "disk-pressure"
when = { source = "metrics", kind = "disk_used_pct", above = 90.0 }
playbook = "clean-disk"

[[playbook]]
name = "restart-service"
steps = [
    { tool = "log.tail", args = { service = "{service}", lines = 50 } },
    { tool = "service.restart", args = { name = "{service}", why = "{kind}: {text}" } },
]
verify = { tool = "service.status", args = { name = "{service}" }, expect = { state = "running" }, within_s = 10 }

[[playbook]]
name = "clean-disk"
steps = [{ tool = "shell.exec", args = { argv = ["find", "{data.path}", "-delete"], limit = "{data.value}" } }]
"#;

    fn set(text: &str) -> (RuleSet, Vec<String>) {
        RuleSet::parse(&[(PathBuf::from("/etc/ghost/rules/sentinel.toml"), text.to_string())])
    }

    #[test]
    fn rules_match_by_priority_and_fill_the_playbook() {
        let (s, problems) = set(SENTINEL);
        assert!(problems.is_empty(), "{problems:?}");
        let o = Observation::new(Source::Supervisor, "exited", "status 1", 5).service("nginx");
        let d = s.decide(&o).unwrap();
        assert_eq!(d.rule, "nginx-first");
        assert_eq!(d.steps[1].args, serde_json::json!({"name": "nginx", "why": "exited: status 1"}));
        assert_eq!(d.verify.unwrap().expect, serde_json::json!({"state": "running"}));
        let o = Observation::new(Source::Supervisor, "oom", "killed", 5).service("redis");
        assert_eq!(s.decide(&o).unwrap().rule, "restart-dead-service");
        // No service: a playbook that needs one does not match.
        assert!(s.decide(&Observation::new(Source::Supervisor, "exited", "?", 5)).is_none());
        // Thresholds, and a whole-placeholder argument keeps its type.
        let full = Observation::new(Source::Metrics, "disk_used_pct", "disk", 5).data(serde_json::json!({"value": 95.5, "path": "/tmp"}));
        let d = s.decide(&full).unwrap();
        assert_eq!(d.steps[0].args["limit"], serde_json::json!(95.5));
        assert_eq!(d.steps[0].args["argv"][1], "/tmp");
        let fine = Observation::new(Source::Metrics, "disk_used_pct", "disk", 5).data(serde_json::json!({"value": 50.0}));
        assert!(s.decide(&fine).is_none());
        // A refused rule lets the next one decide.
        let o = Observation::new(Source::Supervisor, "exited", "x", 5).service("nginx");
        assert_eq!(s.decide_where(&o, |r| r.name != "nginx-first").unwrap().rule, "restart-dead-service");
    }

    #[test]
    fn bad_rules_are_named_with_file_and_key_and_only_they_are_left_out() {
        let text = format!(
            "{SENTINEL}\n{}",
            r#"
[[rule]]
name = "typo"
when = { source = "supervisor", knd = "exited" }
playbook = "restart-service"

[[rule]]
name = "bad-regex"
when = { source = "log", text = "(unclosed" }
playbook = "restart-service"

[[rule]]
name = "no-playbook"
when = { source = "log" }
playbook = "nosuch"

[[rule]]
name = "bad-source"
when = { source = "dreams" }
playbook = "restart-service"

[[playbook]]
name = "bad-placeholder"
steps = [{ tool = "x", args = { a = "{servce}" } }]
"#
        );
        let (s, problems) = set(&text);
        let all = problems.join("\n");
        assert_eq!(problems.len(), 5, "{all}");
        assert!(all.contains("sentinel.toml: rule[3] (typo)") && all.contains("knd"), "{all}");
        assert!(all.contains("rule[4] (bad-regex): when.text"), "{all}");
        assert!(all.contains("rule[5] (no-playbook): playbook"), "{all}");
        assert!(all.contains("rule[6] (bad-source): when.source"), "{all}");
        assert!(all.contains("playbook[2] (bad-placeholder)") && all.contains("{servce}"), "{all}");
        assert_eq!(s.rules().len(), 3, "the good rules stay");
    }

    #[test]
    fn globs() {
        assert!(Glob("ng*x".into()).matches("nginx"));
        assert!(Glob("*".into()).matches(""));
        assert!(Glob("re?is".into()).matches("redis"));
        assert!(!Glob("web".into()).matches("web2"));
    }
}
