//! A ghost service file (DESIGN.md section 4) as import-unit fills it in, written as TOML in
//! the schema's key order with a comment block on top. Written by hand rather than with the
//! `toml` crate's serializer: the schema is flat and small, and this keeps the key order and
//! the comments exactly as the operator should read them.

use std::collections::BTreeMap;

/// The keys import-unit can fill in; `None` (or empty) keys are left out so that ghost-init's
/// defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceToml {
    pub description: Option<String>,
    pub exec: Vec<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub working_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub requires: Vec<String>,
    pub after: Vec<String>,
    /// `always`, `on-failure` or `never`.
    pub restart: Option<&'static str>,
    pub restart_delay_ms: Option<u64>,
    pub restart_max_delay_ms: Option<u64>,
    /// `started` or `notify`.
    pub ready: Option<&'static str>,
    pub watchdog_s: Option<u64>,
    pub memory_max: Option<String>,
    pub cpu_max: Option<String>,
    pub pids_max: Option<u64>,
    pub nofile: Option<u64>,
    pub stop_signal: Option<&'static str>,
    pub stop_timeout_s: Option<u64>,
}

impl ServiceToml {
    /// The file: `header` lines as `# ` comments, a blank line, then the keys.
    pub fn to_toml(&self, header: &[String]) -> String {
        let mut out = String::new();
        for line in header {
            out.push_str(comment(line).trim_end());
            out.push('\n');
        }
        if !header.is_empty() {
            out.push('\n');
        }
        let list = |v: &[String]| (!v.is_empty()).then(|| format!("[{}]", v.iter().map(|x| string(x)).collect::<Vec<_>>().join(", ")));
        let text = |v: Option<&str>| v.map(string);
        let number = |v: Option<u64>| v.map(|n| n.to_string());
        let env = (!self.env.is_empty()).then(|| {
            let pairs: Vec<String> = self.env.iter().map(|(k, v)| format!("{} = {}", bare_or_quoted(k), string(v))).collect();
            format!("{{ {} }}", pairs.join(", "))
        });
        let keys = [
            ("description", text(self.description.as_deref())),
            ("exec", list(&self.exec)),
            ("user", text(self.user.as_deref())),
            ("group", text(self.group.as_deref())),
            ("working_dir", text(self.working_dir.as_deref())),
            ("env", env),
            ("requires", list(&self.requires)),
            ("after", list(&self.after)),
            ("restart", text(self.restart)),
            ("restart_delay_ms", number(self.restart_delay_ms)),
            ("restart_max_delay_ms", number(self.restart_max_delay_ms)),
            ("ready", text(self.ready)),
            ("watchdog_s", number(self.watchdog_s)),
            ("memory_max", text(self.memory_max.as_deref())),
            ("cpu_max", text(self.cpu_max.as_deref())),
            ("pids_max", number(self.pids_max)),
            ("nofile", number(self.nofile)),
            ("stop_signal", text(self.stop_signal)),
            ("stop_timeout_s", number(self.stop_timeout_s)),
        ];
        for (key, value) in keys {
            if let Some(v) = value {
                out.push_str(&format!("{key} = {v}\n"));
            }
        }
        out
    }
}

/// A TOML basic string: `"`, `\` and every control character escaped (TOML allows no raw
/// control character but tab in a string, and no tab-free escaping shortcut for DEL).
pub fn string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn bare_or_quoted(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        k.to_string()
    } else {
        string(k)
    }
}

/// One comment line; control characters (which TOML forbids in comments) become `?`.
fn comment(line: &str) -> String {
    let clean: String = line.chars().map(|c| if c.is_control() && c != '\t' { '?' } else { c }).collect();
    if clean.is_empty() {
        "#".into()
    } else {
        format!("# {clean}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_schema_keys_in_order_and_parses_back() {
        let svc = ServiceToml {
            description: Some("Say \"hi\"\\".into()),
            exec: vec!["/bin/sh".into(), "-c".into(), "echo 'a\tb'\n\u{7f}".into()],
            user: Some("nobody".into()),
            env: BTreeMap::from([("LANG".into(), "C".into()), ("odd key".into(), "x=y".into())]),
            requires: vec!["network".into()],
            restart: Some("on-failure"),
            restart_delay_ms: Some(250),
            ready: Some("notify"),
            memory_max: Some("256M".into()),
            nofile: Some(65535),
            stop_signal: Some("QUIT"),
            ..ServiceToml::default()
        };
        let text = svc.to_toml(&["imported".into(), String::new(), "bad\u{1b}char".into()]);
        assert!(text.starts_with("# imported\n#\n# bad?char\n\ndescription = "), "{text}");
        let keys: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(|l| l.split(" = ").next().unwrap()).collect();
        assert_eq!(keys, ["description", "exec", "user", "env", "requires", "restart", "restart_delay_ms", "ready", "memory_max", "nofile", "stop_signal"]);
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(t["description"].as_str(), Some("Say \"hi\"\\"));
        assert_eq!(t["exec"][2].as_str(), Some("echo 'a\tb'\n\u{7f}"));
        assert_eq!(t["env"]["odd key"].as_str(), Some("x=y"));
        assert_eq!(t["nofile"].as_integer(), Some(65535));
    }
}
