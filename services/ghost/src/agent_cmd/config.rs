//! `/etc/ghost/agent.toml`: the heartbeat's pace, what the metrics sampler watches, when a
//! configuration counts as one that ran. Every key is optional; a bad key or value is reported
//! as `FILE: key: reason` and its default is kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The fastest and slowest heartbeat (also bounded by the constitution's beats per minute).
    pub min_interval: Duration,
    pub max_interval: Duration,
    /// How often the sampler reads disks, memory and the services' memory.
    pub metrics_interval: Duration,
    /// Mount points (system paths) whose use the sampler reports as `disk.used_percent`.
    pub disks: Vec<String>,
    /// Whether services' memory is sampled (`service.memory_mb`, subject: the service).
    pub service_memory: bool,
    /// A service that has run this long after becoming ready ran with a good configuration.
    pub stable: Duration,
    /// How long a call waits for an operator's approval before it expires.
    pub approval_timeout: Duration,
    /// Failed repairs in a row before a rule stops acting on a subject and escalates.
    pub max_failures: u32,
    /// The local model server (system path) asked about what no rule covers.
    pub model_socket: String,
    pub model_max_tokens: u32,
    pub model_timeout: Duration,
    /// Directories (system paths) whose entries' changes are observed (`file`).
    pub watch: Vec<String>,
    /// Named timers: an observation `timer` / NAME every period.
    pub timers: Vec<(String, Duration)>,
    /// The memory database (system path); on a path shared between machines or containers,
    /// their agents share one memory (SQLite WAL, writers wait for each other).
    pub memory_path: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            min_interval: Duration::from_millis(50),
            max_interval: Duration::from_secs(5),
            metrics_interval: Duration::from_secs(2),
            disks: vec!["/".into(), "/var/lib/ghost".into(), "/tmp".into(), "/var/log/ghost".into()],
            service_memory: true,
            stable: Duration::from_secs(3),
            approval_timeout: Duration::from_secs(600),
            max_failures: 3,
            model_socket: "/run/ghost/model.sock".into(),
            model_max_tokens: 256,
            model_timeout: Duration::from_secs(60),
            watch: vec!["/etc/ghost/services".into()],
            timers: Vec::new(),
            memory_path: "/var/lib/ghost/memory.db".into(),
        }
    }
}

impl AgentConfig {
    /// The file at `path` (absent: the defaults), with one line per problem.
    pub fn load(path: &Path) -> (AgentConfig, Vec<String>) {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (AgentConfig::default(), Vec::new()),
            Err(e) => (AgentConfig::default(), vec![format!("{}: {e}; using the defaults", path.display())]),
        }
    }

    pub fn parse(text: &str, origin: &str) -> (AgentConfig, Vec<String>) {
        let mut c = AgentConfig::default();
        let mut problems = Vec::new();
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => return (c, vec![format!("{origin}: {}; using the defaults", e.to_string().trim_end())]),
        };
        let mut bad = |key: &str, why: &str| problems.push(format!("{origin}: {key}: {why}; the default is kept"));
        for (section, value) in &table {
            if section == "timers" {
                match value.as_table() {
                    Some(t) => {
                        for (name, v) in t {
                            match v.as_integer() {
                                Some(n) if n > 0 && !name.is_empty() => c.timers.push((name.clone(), Duration::from_secs(n as u64))),
                                _ => bad(&format!("timers.{name}"), "must be a positive number of seconds"),
                            }
                        }
                    }
                    None => bad("timers", "must be a table of NAME = SECONDS"),
                }
                continue;
            }
            let Some(t) = value.as_table() else {
                bad(section, "must be a table");
                continue;
            };
            for (key, v) in t {
                let name = format!("{section}.{key}");
                let ms = |v: &toml::Value| v.as_integer().filter(|n| *n > 0).map(|n| Duration::from_millis(n as u64));
                match (section.as_str(), key.as_str()) {
                    ("heartbeat", "min_interval_ms") => ms(v).map(|d| c.min_interval = d).unwrap_or_else(|| bad(&name, "must be a positive integer")),
                    ("heartbeat", "max_interval_ms") => ms(v).map(|d| c.max_interval = d).unwrap_or_else(|| bad(&name, "must be a positive integer")),
                    ("heartbeat", "max_failures") => match v.as_integer() {
                        Some(n) if (1..=100).contains(&n) => c.max_failures = n as u32,
                        _ => bad(&name, "must be an integer from 1 to 100"),
                    },
                    ("metrics", "interval_ms") => ms(v).map(|d| c.metrics_interval = d).unwrap_or_else(|| bad(&name, "must be a positive integer")),
                    ("metrics", "disks") => absolute_paths(v).map(|d| c.disks = d).unwrap_or_else(|| bad(&name, "must be an array of absolute paths")),
                    ("metrics", "service_memory") => v.as_bool().map(|b| c.service_memory = b).unwrap_or_else(|| bad(&name, "must be true or false")),
                    ("config", "stable_ms") => ms(v).map(|d| c.stable = d).unwrap_or_else(|| bad(&name, "must be a positive integer")),
                    ("model", "socket") => match v.as_str() {
                        Some(p) if p.starts_with('/') => c.model_socket = p.to_string(),
                        _ => bad(&name, "must be an absolute path"),
                    },
                    ("model", "max_tokens") => match v.as_integer() {
                        Some(n) if (16..=4096).contains(&n) => c.model_max_tokens = n as u32,
                        _ => bad(&name, "must be an integer from 16 to 4096"),
                    },
                    ("model", "timeout_ms") => ms(v).map(|d| c.model_timeout = d).unwrap_or_else(|| bad(&name, "must be a positive integer")),
                    ("memory", "path") => match v.as_str() {
                        Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") => c.memory_path = p.to_string(),
                        _ => bad(&name, "must be an absolute path"),
                    },
                    ("watch", "paths") => absolute_paths(v).map(|d| c.watch = d).unwrap_or_else(|| bad(&name, "must be an array of absolute paths")),
                    ("approvals", "timeout_s") => match v.as_integer() {
                        Some(n) if n > 0 => c.approval_timeout = Duration::from_secs(n as u64),
                        _ => bad(&name, "must be a positive integer"),
                    },
                    _ => bad(
                        &name,
                        "unknown key (known: heartbeat.min_interval_ms, heartbeat.max_interval_ms, heartbeat.max_failures, metrics.interval_ms, metrics.disks, metrics.service_memory, config.stable_ms, approvals.timeout_s, model.socket, model.max_tokens, model.timeout_ms, watch.paths, timers.NAME)",
                    ),
                }
            }
        }
        if c.max_interval < c.min_interval {
            problems.push(format!("{origin}: heartbeat.max_interval_ms: below min_interval_ms; set to it"));
            c.max_interval = c.min_interval;
        }
        (c, problems)
    }

    /// The disks to sample, as paths under `root`.
    pub fn disk_paths(&self, root: &crate::paths::GhostRoot) -> Vec<PathBuf> {
        self.disks.iter().map(|d| root.path(d)).collect()
    }
}

/// An array of absolute path strings, or None.
fn absolute_paths(v: &toml::Value) -> Option<Vec<String>> {
    let paths: Vec<String> = v.as_array()?.iter().map(|x| x.as_str().map(str::to_string)).collect::<Option<_>>()?;
    paths.iter().all(|p| p.starts_with('/')).then_some(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_and_bad_ones_named_with_the_default_kept() {
        let (c, p) = AgentConfig::parse("[heartbeat]\nmin_interval_ms = 20\n[metrics]\ndisks = [\"/data\"]\ninterval_ms = 100\n[timers]\nhourly = 3600\n[watch]\npaths = [\"/etc/app\"]\n", "agent.toml");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.timers, vec![("hourly".to_string(), Duration::from_secs(3600))]);
        assert_eq!(c.watch, vec!["/etc/app"]);
        assert_eq!(c.min_interval, Duration::from_millis(20));
        assert_eq!(c.disks, vec!["/data"]);
        let (c, p) = AgentConfig::parse("[heartbeat]\nmin_interval_ms = -1\nspeed = 3\n[metrics]\ndisks = [\"rel\"]\n", "/etc/ghost/agent.toml");
        assert_eq!(c, AgentConfig::default());
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("/etc/ghost/agent.toml: heartbeat.min_interval_ms:"), "{p:?}");
        assert!(p[1].contains("heartbeat.speed: unknown key"), "{p:?}");
        assert!(p[2].contains("metrics.disks"), "{p:?}");
        let (_, p) = AgentConfig::parse("not toml [", "f");
        assert!(p[0].starts_with("f: "), "{p:?}");
    }
}
