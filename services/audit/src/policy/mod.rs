//! The policy: may this tool call run now, must an operator approve it first, or is it refused?
//!
//! [`decide`] is a pure function of the call, the security mode, the constitution and the tool
//! registry. In order:
//!
//! 1. an unknown tool, a tool the constitution does not allow, or arguments that do not match
//!    the tool's schema: **deny** (in every mode; the constitution binds even trusted mode);
//! 2. `trusted`: **allow**;
//! 3. a deny pattern — a destructive shell command (see [`shell`]), a write under a protected
//!    path (/boot, the ESP, block devices, the audit trail, the agent key, the constitution's
//!    `protected_paths`), signalling PID 1, disk.cleanup of anything but a temporary or the
//!    service log directory: **deny**;
//! 4. `paranoid`: **allow** what the allow-list names, **deny** the rest;
//! 5. `normal`: **ask** for risky calls (risk high or critical, or medium and irreversible),
//!    **allow** the rest;
//! 6. `safe`: **ask** for anything of medium risk or more, **allow** the rest.
//!
//! Rate limits are not part of a decision: the agent checks
//! [`crate::constitution::RateLimiter`] before it runs an allowed call.

pub mod paths;
pub mod shell;

use crate::constitution::Constitution;
use crate::tools::{Registry, Risk, ToolCall};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The security mode (`security` in ghost.toml, or the constitution's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Safe,
    Normal,
    Paranoid,
    Trusted,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "safe" => Mode::Safe,
            "normal" => Mode::Normal,
            "paranoid" => Mode::Paranoid,
            "trusted" => Mode::Trusted,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Safe => "safe",
            Mode::Normal => "normal",
            Mode::Paranoid => "paranoid",
            Mode::Trusted => "trusted",
        }
    }

    /// trusted < normal < safe < paranoid.
    pub fn strictness(self) -> u8 {
        match self {
            Mode::Trusted => 0,
            Mode::Normal => 1,
            Mode::Safe => 2,
            Mode::Paranoid => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Ask,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Ask => "ask",
            Verdict::Deny => "deny",
        }
    }
}

/// A policy decision: the verdict, a sentence saying why, and the rule that decided (stable
/// identifiers such as `deny.rm-recursive-critical`, `mode.normal.risky`,
/// `paranoid.allow-list`, `constitution.allowed_tools`, `args.schema`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: String,
    pub rule: String,
}

impl Decision {
    fn new(verdict: Verdict, rule: impl Into<String>, reason: impl Into<String>) -> Decision {
        Decision { verdict, reason: reason.into(), rule: rule.into() }
    }

    /// `{"decision": "allow"|"ask"|"deny", "reason", "rule"}`: what
    /// `ghostctl tool call --json` prints.
    pub fn to_json(&self) -> Value {
        json!({ "decision": self.verdict.as_str(), "reason": self.reason, "rule": self.rule })
    }
}

/// Decides on `call` (see the module documentation for the order of the rules).
pub fn decide(call: &ToolCall, mode: Mode, constitution: &Constitution, registry: &Registry) -> Decision {
    use Verdict::*;
    let Some(spec) = registry.get(&call.tool) else {
        return Decision::new(Deny, "tool.unknown", format!("unknown tool `{}`", crate::util::clip(&call.tool, 64)));
    };
    if !constitution.allows_tool(&call.tool) {
        return Decision::new(
            Deny,
            "constitution.allowed_tools",
            format!("the constitution does not allow `{}`", call.tool),
        );
    }
    if let Err(e) = registry.validate(&call.tool, &call.args) {
        return Decision::new(Deny, "args.schema", format!("invalid arguments: {e}"));
    }
    if mode == Mode::Trusted {
        return Decision::new(Allow, "mode.trusted", "trusted mode allows every call the constitution allows");
    }
    if let Some(h) = deny_pattern(&call.tool, &call.args, &constitution.protected_paths) {
        return Decision::new(Deny, format!("deny.{}", h.rule), h.reason);
    }
    let risky_normal = spec.risk >= Risk::High || (spec.risk >= Risk::Medium && !spec.reversible);
    let risk = format!("{:?} risk{}", spec.risk, if spec.reversible { "" } else { ", irreversible" }).to_lowercase();
    match mode {
        Mode::Paranoid => match paranoid_match(&call.tool, &call.args, &constitution.paranoid_allow) {
            Some(entry) => Decision::new(
                Allow,
                "paranoid.allow-list",
                format!("allowed by the paranoid allow-list entry `{entry}`"),
            ),
            None => Decision::new(
                Deny,
                "paranoid.not-listed",
                format!("paranoid mode: `{}` with these arguments is not on the allow-list", call.tool),
            ),
        },
        Mode::Normal if risky_normal => {
            Decision::new(Ask, "mode.normal.risky", format!("`{}` is {risk}: an operator must approve it", call.tool))
        }
        Mode::Safe if spec.risk >= Risk::Medium => Decision::new(
            Ask,
            "mode.safe.risky",
            format!("safe mode: `{}` is {risk}: an operator must approve it", call.tool),
        ),
        _ => Decision::new(Allow, format!("mode.{}.low-risk", mode.as_str()), format!("`{}` is {risk}", call.tool)),
    }
}

/// The deny patterns: destructive commands and writes to protected paths. `protected` adds to
/// the built-in protected paths.
pub fn deny_pattern(tool: &str, args: &Value, protected: &[String]) -> Option<shell::Hit> {
    let s = |k: &str| args.get(k).and_then(Value::as_str);
    match tool {
        "shell.exec" => {
            if let Some(cmd) = s("command") {
                shell::analyze(cmd, s("cwd"), protected)
            } else {
                let argv: Vec<String> = args
                    .get("argv")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect())
                    .unwrap_or_default();
                shell::analyze_argv(&argv, s("cwd"), protected)
            }
        }
        "fs.write" => {
            let p = s("path")?;
            let why = paths::protected_write(p, protected)?;
            let rule =
                if paths::is_block_device(&paths::normalize(p)) { "write-block-device" } else { "write-protected" };
            Some(shell::Hit { rule, reason: format!("fs.write to {p}: {why}") })
        }
        "fs.read" => {
            let p = paths::normalize(s("path")?);
            (p.ends_with("/agent/agent.key") || p == "/etc/shadow")
                .then(|| shell::Hit { rule: "read-secret", reason: format!("{p} holds a secret") })
        }
        "disk.cleanup" => {
            let p = s("path")?;
            if let Some(why) = paths::protected_write(p, protected) {
                return Some(shell::Hit { rule: "write-protected", reason: format!("disk.cleanup of {p}: {why}") });
            }
            (!paths::cleanable(&paths::normalize(p))).then(|| shell::Hit {
                rule: "cleanup-not-cleanable",
                reason: format!(
                    "args.path: {p} is not a cleanable directory ({}, or the same under the agent's root)",
                    paths::CLEANABLE.join(", ")
                ),
            })
        }
        "process.kill" => match args.get("pid").and_then(Value::as_i64) {
            Some(1) => Some(shell::Hit { rule: "kill-init", reason: "signalling PID 1 (the init)".into() }),
            Some(p) if p <= 0 => {
                Some(shell::Hit { rule: "kill-all", reason: format!("pid {p} signals a whole group") })
            }
            _ => None,
        },
        _ => None,
    }
}

/// The paranoid allow-list entry that admits this call, if any. Entries are `TOOL` or
/// `TOOL:PREFIX`: for shell.exec the call must be a single plain command (no pipes, lists,
/// substitutions or redirections) whose words start with PREFIX's words; for fs.*, log.tail
/// and disk.cleanup the path must lie under PREFIX; for service.* the name must equal it; for
/// net.check the target must start with it; for net.free_port the port must be PREFIX.
pub fn paranoid_match<'a>(tool: &str, args: &Value, allow: &'a [String]) -> Option<&'a str> {
    allow.iter().map(String::as_str).find(|entry| {
        let (t, prefix) = match entry.split_once(':') {
            Some((t, p)) => (t, Some(p)),
            None => (*entry, None),
        };
        if t != tool {
            return false;
        }
        let Some(prefix) = prefix else { return true };
        let s = |k: &str| args.get(k).and_then(Value::as_str);
        match tool {
            "shell.exec" => {
                let words: Option<Vec<String>> = match (s("command"), args.get("argv").and_then(Value::as_array)) {
                    (Some(c), _) => plain_words(c),
                    (None, Some(a)) => a.iter().map(|v| v.as_str().map(str::to_string)).collect(),
                    _ => None,
                };
                let want: Vec<&str> = prefix.split_whitespace().collect();
                words.is_some_and(|w| w.len() >= want.len() && w.iter().zip(&want).all(|(a, b)| a == b))
            }
            "fs.read" | "fs.list" | "fs.write" | "log.tail" | "disk.cleanup" => match s("path") {
                Some(p) => paths::under(&paths::normalize(p), &paths::normalize(prefix)),
                None => s("service") == Some(prefix),
            },
            "service.status" | "service.start" | "service.stop" | "service.restart" | "service.rollback" => {
                s("name") == Some(prefix)
            }
            "net.check" => s("target").is_some_and(|t| t.starts_with(prefix)),
            "net.free_port" => args.get("port").and_then(Value::as_u64).is_some_and(|p| prefix.parse::<u64>() == Ok(p)),
            _ => false,
        }
    })
}

/// The words of a command that is one plain simple command (letters, digits and a few safe
/// punctuation characters only), or None.
fn plain_words(command: &str) -> Option<Vec<String>> {
    let safe = |c: char| c.is_ascii_alphanumeric() || " \t-_./=,:@%+".contains(c);
    command.chars().all(safe).then(|| command.split_whitespace().map(str::to_string).collect())
}

#[cfg(test)]
pub(crate) mod tests;
