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
//! verify = { tool = "service.status", args = { name = "{service}" }, expect = { state = "running" }, within_s = 10, hold_s = 1 }
//! # or a metric back on the right side of a threshold:
//! # verify = { metric = "disk.used_percent", subject = "{data.subject}", below = 85.0, within_s = 10 }
//! # only act when a precondition holds (else the supervisor is already on it):
//! only_if = { tool = "service.status", args = { name = "{service}" }, expect = { state = ["stopped", "crash-loop"] } }
//! ```
//!
//! Placeholders in argument strings: `{service}`, `{kind}`, `{source}`, `{text}`, `{root}` (the
//! agent's root: empty on a real system, the hosted root otherwise; `{root}/tmp`) and
//! `{data.FIELD}` (a log rule's named capture groups land in `data`); a rule whose playbook
//! needs `{service}` matches only observations that name one.
//!
//! An `expect` value is compared with the tool's output key by key: equal, one of an array, or
//! `{ below = N }` / `{ above = N }` for numbers ([`expect_matches`]). `hold_s` asks the check
//! to hold that long once it passed (a service that comes up and dies again is not repaired). Every key is closed: an unknown key, a bad regex, an unknown playbook or placeholder is
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
    only_if: Option<RawCondition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    tool: String,
    #[serde(default)]
    args: toml::Table,
    #[serde(default)]
    expect: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    tool: String,
    #[serde(default)]
    args: toml::Table,
    #[serde(default)]
    optional: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    tool: Option<String>,
    #[serde(default)]
    args: toml::Table,
    #[serde(default)]
    expect: toml::Table,
    metric: Option<String>,
    subject: Option<String>,
    below: Option<f64>,
    above: Option<f64>,
    #[serde(default = "default_within")]
    within_s: u64,
    #[serde(default)]
    hold_s: f64,
}

fn default_within() -> u64 {
    10
}

/// A tool call of a playbook, arguments still holding placeholders. A step that fails ends
/// the playbook (as failed) unless it is `optional` (keeping log lines, say).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub tool: String,
    pub args: Value,
    pub optional: bool,
}

/// A tool call whose output must match `expect` ([`expect_matches`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub tool: String,
    pub args: Value,
    pub expect: Value,
}

/// What a playbook's verification checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Call a tool until its output matches.
    Tool(Condition),
    /// Sample a metric of `subject` (a mount point, a service) until it is below / above.
    Metric { metric: String, subject: String, below: Option<f64>, above: Option<f64> },
}

/// How a playbook checks that it worked: `check` must pass within `within_s`, and then keep
/// passing for `hold_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    pub check: Check,
    pub within_s: u64,
    pub hold_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub name: String,
    pub description: String,
    pub steps: Vec<Step>,
    pub verify: Option<Verify>,
    pub only_if: Option<Condition>,
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
    /// The `when.text` pattern (log rules: its named groups become the observation's data).
    pub fn text_pattern(&self) -> Option<&Regex> {
        self.text.as_ref()
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
    pub only_if: Option<Condition>,
    pub cooldown_s: u64,
}

/// The loaded rules and playbooks.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    playbooks: HashMap<String, Playbook>,
    /// Rule indices by source, in priority order.
    by_source: HashMap<Source, Vec<usize>>,
    /// What `{root}` stands for.
    root: String,
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
        (RuleSet { rules, playbooks, by_source, root: String::new() }, problems)
    }

    /// `{root}` becomes `root` (no trailing slash): the hosted root, or empty for `/`.
    pub fn with_root(mut self, root: &str) -> RuleSet {
        self.root = root.trim_end_matches('/').to_string();
        self
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
                let f = |v: &Value| fill(v, o, &self.root);
                let cond = |c: &Condition| Condition { tool: c.tool.clone(), args: f(&c.args), expect: f(&c.expect) };
                return Some(Decision {
                    rule: rule.name.clone(),
                    playbook: pb.name.clone(),
                    steps: pb.steps.iter().map(|s| Step { tool: s.tool.clone(), args: f(&s.args), optional: s.optional }).collect(),
                    verify: pb.verify.as_ref().map(|v| Verify {
                        check: match &v.check {
                            Check::Tool(c) => Check::Tool(cond(c)),
                            Check::Metric { metric, subject, below, above } => Check::Metric {
                                metric: metric.clone(),
                                subject: fill_str(subject, o, &self.root),
                                below: *below,
                                above: *above,
                            },
                        },
                        within_s: v.within_s,
                        hold_ms: v.hold_ms,
                    }),
                    only_if: pb.only_if.as_ref().map(cond),
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
    if r.cooldown_s > 86_400 {
        return Err(format!("cooldown_s: {} is more than a day (86400)", r.cooldown_s));
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
        steps.push(Step { tool: s.tool, args, optional: s.optional });
    }
    let mut condition = |tool: String, args: toml::Table, expect: toml::Table, at: &str| -> Result<Condition, String> {
        let args = to_json(toml::Value::Table(args));
        let expect = to_json(toml::Value::Table(expect));
        check_placeholders(&args, &format!("{at}.args"), &mut needs_service)?;
        check_placeholders(&expect, &format!("{at}.expect"), &mut needs_service)?;
        Ok(Condition { tool, args, expect })
    };
    let only_if = match p.only_if {
        Some(c) => Some(condition(c.tool, c.args, c.expect, "only_if")?),
        None => None,
    };
    let verify = match p.verify {
        Some(v) => {
            if !(1..=600).contains(&v.within_s) {
                return Err("verify.within_s: must be between 1 and 600 seconds".into());
            }
            if !(0.0..=600.0).contains(&v.hold_s) {
                return Err("verify.hold_s: must be between 0 and 600 seconds".into());
            }
            let check = match (v.tool, v.metric) {
                (Some(tool), None) => Check::Tool(condition(tool, v.args, v.expect, "verify")?),
                (None, Some(metric)) => {
                    if v.below.is_none() && v.above.is_none() {
                        return Err("verify: a metric check needs `below` or `above`".into());
                    }
                    let subject = v.subject.unwrap_or_default();
                    check_placeholders(&Value::String(subject.clone()), "verify.subject", &mut needs_service)?;
                    Check::Metric { metric, subject, below: v.below, above: v.above }
                }
                (Some(_), Some(_)) => return Err("verify: give either `tool` or `metric`, not both".into()),
                (None, None) => return Err("verify: needs `tool` (with `expect`) or `metric` (with `below`/`above`)".into()),
            };
            Some(Verify { check, within_s: v.within_s, hold_ms: (v.hold_s * 1000.0) as u64 })
        }
        None => None,
    };
    Ok(Playbook { name: p.name, description: p.description, steps, verify, only_if, needs_service })
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
                    "kind" | "source" | "text" | "root" => {}
                    d if d.starts_with("data.") && d.len() > 5 => {}
                    other => return Err(format!("{at}: unknown placeholder {{{other}}} (service, kind, source, text, root, data.FIELD)")),
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
fn fill(v: &Value, o: &Observation, root: &str) -> Value {
    match v {
        Value::String(s) if s.contains('{') => {
            // A string that is exactly one `{data.X}` keeps the value's type (a number stays one).
            if let Some(field) = s.strip_prefix("{data.").and_then(|r| r.strip_suffix('}')).filter(|f| !f.contains('{')) {
                return o.data.get(field).cloned().unwrap_or(Value::Null);
            }
            Value::String(fill_str(s, o, root))
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, o, root)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), fill(x, o, root))).collect()),
        other => other.clone(),
    }
}

fn fill_str(s: &str, o: &Observation, root: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        match rest[at + 1..].split_once('}') {
            Some((name, after)) => {
                out.push_str(&value_of(name, o, root));
                rest = after;
            }
            None => {
                out.push_str(&rest[at..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `actual` (a tool's output) meets `expect`: every key of `expect` is in `actual`
/// and equal to it, or — when the expected value is an array — equal to one of its items, or
/// — when it is `{"below": N}` / `{"above": N}` — a number on that side. Nested objects are
/// compared the same way. An empty `expect` asks only that the call succeeded.
pub fn expect_matches(expect: &Value, actual: &Value) -> bool {
    match expect {
        Value::Object(m) if is_comparison(m) => {
            let Some(x) = actual.as_f64() else { return false };
            m.get("below").and_then(Value::as_f64).is_none_or(|b| x < b) && m.get("above").and_then(Value::as_f64).is_none_or(|a| x > a)
        }
        Value::Object(m) => m.iter().all(|(k, want)| actual.get(k).is_some_and(|got| expect_matches(want, got))),
        Value::Array(options) => options.iter().any(|want| expect_matches(want, actual)),
        want => want == actual,
    }
}

fn is_comparison(m: &serde_json::Map<String, Value>) -> bool {
    !m.is_empty() && m.keys().all(|k| k == "below" || k == "above") && m.values().all(Value::is_number)
}

fn value_of(name: &str, o: &Observation, root: &str) -> String {
    match name {
        "service" => o.service.clone().unwrap_or_default(),
        "root" => root.to_string(),
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
        match d.verify.unwrap().check {
            Check::Tool(c) => assert_eq!(c.expect, serde_json::json!({"state": "running"})),
            other => panic!("a tool check, not {other:?}"),
        }
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
    fn preconditions_metric_checks_and_root() {
        let text = r#"
[[rule]]
name = "revive"
when = { source = "supervisor", kind = "exited", service = "*" }
playbook = "revive"

[[rule]]
name = "disk"
when = { source = "metrics", kind = "disk.used_percent", above = 90.0 }
playbook = "clean"

[[playbook]]
name = "revive"
only_if = { tool = "service.status", args = { name = "{service}" }, expect = { state = ["stopped", "crash-loop"] } }
steps = [{ tool = "service.start", args = { name = "{service}" } }]
verify = { tool = "service.status", args = { name = "{service}" }, expect = { state = "running" }, hold_s = 0.5 }

[[playbook]]
name = "clean"
steps = [{ tool = "disk.cleanup", args = { path = "{root}/tmp" } }]
verify = { metric = "disk.used_percent", subject = "{data.subject}", below = 85.0, within_s = 5 }
"#;
        let (s, problems) = set(text);
        assert!(problems.is_empty(), "{problems:?}");
        let s = s.with_root("/tmp/r/");
        let d = s.decide(&Observation::new(Source::Supervisor, "exited", "x", 1).service("web")).unwrap();
        let only = d.only_if.unwrap();
        assert!(expect_matches(&only.expect, &serde_json::json!({"name": "web", "state": "crash-loop", "restarts": 3})));
        assert!(!expect_matches(&only.expect, &serde_json::json!({"state": "running"})));
        assert_eq!(d.verify.as_ref().unwrap().hold_ms, 500);
        let full = Observation::new(Source::Metrics, "disk.used_percent", "full", 1).data(serde_json::json!({"value": 97.0, "subject": "/tmp/r/tmp"}));
        let d = s.decide(&full).unwrap();
        assert_eq!(d.steps[0].args["path"], "/tmp/r/tmp");
        assert_eq!(
            d.verify.unwrap().check,
            Check::Metric { metric: "disk.used_percent".into(), subject: "/tmp/r/tmp".into(), below: Some(85.0), above: None }
        );
        // Comparisons, nesting, and a missing key.
        assert!(expect_matches(&serde_json::json!({"m": {"rss": {"below": 10}}}), &serde_json::json!({"m": {"rss": 9.5}})));
        assert!(!expect_matches(&serde_json::json!({"m": {"rss": {"below": 10}}}), &serde_json::json!({"m": {"rss": 10}})));
        assert!(!expect_matches(&serde_json::json!({"state": "running"}), &serde_json::json!({})));
        assert!(expect_matches(&serde_json::json!({}), &serde_json::json!(null)));
        // A verify needs exactly one kind of check.
        let bad = "[[playbook]]\nname = \"b\"\nsteps = [{ tool = \"x\" }]\nverify = { metric = \"m\" }\n";
        let (_, problems) = set(bad);
        assert!(problems[0].contains("below") && problems[0].contains("playbook[0] (b)"), "{problems:?}");
    }

    #[test]
    fn the_shipped_sentinel_rules_load_cleanly_and_decide() {
        let text = include_str!("../../../initramfs/etc/ghost/rules/sentinel.toml");
        let (s, problems) = set(text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.rules().len(), 5);
        let log = Observation::new(Source::Log, "line", "Could not create server TCP listening socket *:6380: bind: Address already in use", 1).service("redis");
        // The log sense puts the pattern's named groups into data (digits as numbers).
        let caps = s.rules().iter().find(|r| r.name == "free-stuck-port").unwrap().text_pattern().unwrap().captures(&log.text).unwrap();
        assert_eq!(&caps["port"], "6380");
        let log = log.data(serde_json::json!({"port": 6380}));
        let d = s.decide(&log).unwrap();
        assert_eq!(d.steps[0].args, serde_json::json!({"port": 6380}));
        let port_of = |line: &str| s.rules().iter().find_map(|r| r.text_pattern()?.captures(line)).map(|c| c["port"].to_string());
        assert_eq!(port_of("2026/11/22 18:22:01 [emerg] 7#7: bind() to 0.0.0.0:8080 failed (98: Address already in use)").as_deref(), Some("8080"));
        assert_eq!(port_of("4711:M 22 Nov 2026 18:22:01.5 # Warning: Could not create server TCP listening socket 127.0.0.1:36335: bind: Address already in use").as_deref(), Some("36335"));
        assert_eq!(port_of("4711:M 22 Nov 2026 18:22:01.5 # Could not create server TCP listening socket *:6379: bind: Address already in use").as_deref(), Some("6379"));
        assert_eq!(port_of("OSError: [Errno 98] Address already in use"), None);
        // A death is revived; a one-shot job that finished is not.
        let died = |detail: &str| Observation::new(Source::Supervisor, "exited", &format!("web: exited: {detail}"), 1).service("web");
        assert_eq!(s.decide(&died("signal 9")).unwrap().rule, "revive-dead-service");
        assert_eq!(s.decide(&died("exit code 1")).unwrap().rule, "revive-dead-service");
        assert!(s.decide(&died("exit code 0")).is_none());
        let d = s.decide(&Observation::new(Source::Supervisor, "crash-loop", "x", 1).service("web")).unwrap();
        assert_eq!(d.steps[1].tool, "service.rollback");
        assert!(d.steps[0].optional && !d.steps[1].optional);
    }

    #[test]
    fn globs() {
        assert!(Glob("ng*x".into()).matches("nginx"));
        assert!(Glob("*".into()).matches(""));
        assert!(Glob("re?is".into()).matches("redis"));
        assert!(!Glob("web".into()).matches("web2"));
    }
}
