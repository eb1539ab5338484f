//! `/etc/ghost/services/NAME.toml`: the service file schema of DESIGN.md section 4.
//!
//! Keys are flat and checked strictly: an unknown key or a wrong type leaves that one service
//! out with a line naming the file and the key; the other services start as usual.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::config::one_line;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub exec: Option<Vec<String>>,
    pub tcp: Option<String>,
    pub http: Option<String>,
    #[serde(default = "Health::default_interval")]
    pub interval_s: u64,
    #[serde(default = "Health::default_timeout")]
    pub timeout_s: u64,
    #[serde(default = "Health::default_failures")]
    pub failures: u32,
}

impl Health {
    fn default_interval() -> u64 {
        5
    }
    fn default_timeout() -> u64 {
        2
    }
    fn default_failures() -> u32 {
        3
    }
}

/// One service, as written in its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    #[serde(default)]
    pub description: String,
    pub exec: Vec<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub working_dir: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub requires: Vec<String>,
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default = "ServiceFile::default_restart_delay_ms")]
    pub restart_delay_ms: u64,
    #[serde(default = "ServiceFile::default_restart_max_delay_ms")]
    pub restart_max_delay_ms: u64,
    #[serde(default = "ServiceFile::default_restart_reset_s")]
    pub restart_reset_s: u64,
    #[serde(default = "ServiceFile::default_ready")]
    pub ready: String,
    pub health: Option<Health>,
    #[serde(default)]
    pub watchdog_s: u64,
    pub memory_max: Option<String>,
    pub cpu_max: Option<String>,
    pub pids_max: Option<u64>,
    pub nofile: Option<u64>,
    #[serde(default = "ServiceFile::default_stop_signal")]
    pub stop_signal: String,
    pub stop_timeout_s: Option<u64>,
    pub log_max_size: Option<String>,
    pub log_keep: Option<u32>,
    #[serde(default)]
    pub critical: bool,
    /// A terminal under /dev to run on (stdin, stdout and, unless `stderr = "log"`, stderr on
    /// it; a new session with it as the controlling tty).
    pub terminal: Option<String>,
    /// With `terminal`: where stderr goes, `terminal` (the default) or `log`.
    pub stderr: Option<String>,
    /// `restart` starts the new process beside the running one and stops the old one only
    /// once the new one is ready (sd_notify READY=1): no moment without a ready process, for
    /// services that can run twice at once (a listener moved by rename, SO_REUSEPORT).
    #[serde(default)]
    pub overlap: bool,
}

impl ServiceFile {
    fn default_restart_delay_ms() -> u64 {
        100
    }
    fn default_restart_max_delay_ms() -> u64 {
        30_000
    }
    fn default_restart_reset_s() -> u64 {
        60
    }
    fn default_ready() -> String {
        "started".into()
    }
    fn default_stop_signal() -> String {
        "TERM".into()
    }

    /// Parses and checks one service file; the error is one line naming `origin` and the key.
    pub fn parse(text: &str, origin: &str) -> Result<ServiceFile, String> {
        let s: ServiceFile = toml::from_str(text).map_err(|e| format!("{origin}: {}", one_line(&e.to_string())))?;
        let bad = |key: &str, why: String| Err(format!("{origin}: key `{key}`: {why}"));
        if s.exec.is_empty() || s.exec[0].is_empty() {
            return bad("exec", "needs at least the program path".into());
        }
        if !s.exec[0].starts_with('/') {
            return bad("exec", format!("program `{}` must be an absolute path (there is no shell and no PATH search)", s.exec[0]));
        }
        if signal_number(&s.stop_signal).is_none() {
            return bad("stop_signal", format!("`{}` is not a signal name (TERM, INT, QUIT, HUP, KILL, USR1, USR2)", s.stop_signal));
        }
        if !(s.ready == "started" || s.ready == "notify" || s.ready == "health" || parse_ready_arg(&s.ready, "fd:").is_some_and(|n| n >= 3) || parse_ready_arg(&s.ready, "tcp:").is_some_and(|p| (1..=65535).contains(&p))) {
            return bad("ready", format!("`{}` is not one of started, notify, fd:N (N >= 3), tcp:PORT, health", s.ready));
        }
        if s.restart_delay_ms > s.restart_max_delay_ms {
            return bad("restart_delay_ms", format!("{} is larger than restart_max_delay_ms ({})", s.restart_delay_ms, s.restart_max_delay_ms));
        }
        for (key, value) in [("memory_max", &s.memory_max), ("log_max_size", &s.log_max_size)] {
            if let Some(v) = value {
                if parse_size(v).is_none() {
                    return bad(key, format!("`{v}` is not a size like 512K, 256M or 2G"));
                }
            }
        }
        if let Some(v) = &s.cpu_max {
            if parse_percent(v).is_none() {
                return bad("cpu_max", format!("`{v}` is not a percentage like 50% or 150%"));
            }
        }
        if let Some(h) = &s.health {
            let kinds = h.exec.is_some() as u8 + h.tcp.is_some() as u8 + h.http.is_some() as u8;
            if kinds != 1 {
                return bad("health", "needs exactly one of exec, tcp, http".into());
            }
        }
        if s.overlap && s.ready != "notify" {
            return bad("overlap", format!("needs ready = \"notify\" (the new process says when it is ready), not `{}`", s.ready));
        }
        if s.ready == "health" && s.health.is_none() {
            return bad("ready", "`health` needs a `health` probe".into());
        }
        if let Some(t) = &s.terminal {
            if let Err(why) = valid_terminal(t) {
                return bad("terminal", why);
            }
        }
        match (s.stderr.as_deref(), &s.terminal) {
            (None | Some("terminal" | "log"), Some(_)) | (None | Some("log"), None) => {}
            (Some("terminal"), None) => return bad("stderr", "`terminal` needs a `terminal` to write to".into()),
            (Some(other), _) => return bad("stderr", format!("`{other}` is not one of terminal, log")),
        }
        Ok(s)
    }

    /// Whether stderr goes to the terminal (rather than to the service's log).
    pub fn stderr_on_terminal(&self) -> bool {
        self.terminal.is_some() && self.stderr.as_deref() != Some("log")
    }

    /// Reads `dir/NAME.toml`; the name is the file stem.
    pub fn load(path: &Path) -> Result<ServiceFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }
}

/// The operator TUI as ghost.toml's `[console]` asks for it: `ghost console` as the service
/// `console` on `tui` and as `console-serial` on `serial`, restarted always, stderr to its
/// log (the screen is the TUI's). A service file of the same name wins over these, so an
/// operator can tune one (limits, env) without touching ghost.toml.
pub fn add_console_services(files: &mut BTreeMap<String, ServiceFile>, console: &crate::config::Console) {
    // Checked when ghost.toml was read; a bad [console] there kept the default.
    let Ok((tui, serial)) = console.devices() else { return };
    for (name, device) in [("console", tui), ("console-serial", serial)] {
        let Some(device) = device else { continue };
        if files.contains_key(name) {
            continue;
        }
        let Ok(mut spec) = ServiceFile::parse("exec = [\"/usr/bin/ghost\", \"console\"]\nrestart = \"always\"\nrestart_delay_ms = 500\n", "[console]") else {
            continue;
        };
        spec.description = format!("operator console (ghost console) on {device}, from ghost.toml [console]");
        spec.terminal = Some(device);
        spec.stderr = Some("log".into());
        files.insert(name.to_string(), spec);
    }
}

/// A terminal path: absolute, under /dev, no `..`. (Whether it exists is checked at each
/// start: a serial port or a pty may come and go.)
pub fn valid_terminal(t: &str) -> Result<(), String> {
    let rest = t.strip_prefix("/dev/").unwrap_or_default();
    if rest.is_empty() || rest.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("`{t}` is not a device path under /dev (like /dev/tty2 or /dev/ttyS1)"));
    }
    Ok(())
}

/// `TERM` for a service on `terminal`: `linux` on a virtual console (/dev/ttyN), `vt220`
/// elsewhere (a serial line or a pty: the terminal at the far end is unknown, and vt220 is
/// what serial consoles have long been set to; the TUI does not read terminfo anyway).
pub fn term_for(terminal: &str) -> &'static str {
    match terminal.strip_prefix("/dev/tty") {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => "linux",
        _ => "vt220",
    }
}

fn parse_ready_arg(ready: &str, prefix: &str) -> Option<u32> {
    ready.strip_prefix(prefix)?.parse().ok()
}

pub use ghost_proto::parse_size;

/// `50%` → 50.
pub fn parse_percent(s: &str) -> Option<u32> {
    let n: u32 = s.trim().strip_suffix('%')?.trim().parse().ok()?;
    (n > 0).then_some(n)
}

/// `TERM` or `SIGTERM` → 15.
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.strip_prefix("SIG").unwrap_or(name);
    Some(match n {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "HUP" => libc::SIGHUP,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS: &str = r#"
description = "Redis"
exec = ["/usr/bin/redis-server", "/etc/redis/redis.conf"]
user = "redis"
group = "redis"
working_dir = "/var/lib/redis"
env = { LANG = "C" }
requires = ["network"]
after = ["logger"]
restart = "always"
restart_delay_ms = 100
restart_max_delay_ms = 30000
restart_reset_s = 60
ready = "notify"
health = { exec = ["/usr/bin/redis-cli", "ping"], interval_s = 5, timeout_s = 2, failures = 3 }
watchdog_s = 0
memory_max = "256M"
cpu_max = "50%"
pids_max = 256
nofile = 4096
stop_signal = "TERM"
stop_timeout_s = 5
log_max_size = "1M"
log_keep = 3
critical = false
"#;

    #[test]
    fn the_design_example_parses() {
        let s = ServiceFile::parse(REDIS, "redis.toml").unwrap();
        assert_eq!(s.exec[0], "/usr/bin/redis-server");
        assert_eq!(s.env["LANG"], "C");
        assert_eq!(s.health.as_ref().unwrap().failures, 3);
        assert_eq!(parse_size(s.memory_max.as_deref().unwrap()), Some(256 << 20));
        assert_eq!(s.restart, Restart::Always);
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let s = ServiceFile::parse("exec = [\"/bin/true\"]", "t.toml").unwrap();
        assert_eq!((s.restart, s.restart_delay_ms, s.ready.as_str(), s.critical), (Restart::Always, 100, "started", false));
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases = [
            ("exec = [\"/bin/true\"]\nrestrat = \"always\"", "restrat"),
            ("exec = \"/bin/true\"", "exec"),
            ("exec = [\"true\"]", "exec"),
            ("exec = []", "exec"),
            ("exec = [\"/bin/true\"]\nrestart = \"sometimes\"", "sometimes"),
            ("exec = [\"/bin/true\"]\nstop_signal = \"NOPE\"", "stop_signal"),
            ("exec = [\"/bin/true\"]\nmemory_max = \"lots\"", "memory_max"),
            ("exec = [\"/bin/true\"]\ncpu_max = \"half\"", "cpu_max"),
            ("exec = [\"/bin/true\"]\nready = \"fd:x\"", "ready"),
            ("exec = [\"/bin/true\"]\nhealth = { interval_s = 1 }", "health"),
            ("exec = [\"/bin/true\"]\nrestart_delay_ms = 5000\nrestart_max_delay_ms = 10", "restart_delay_ms"),
            ("description = \"no exec\"", "exec"),
        ];
        for (text, key) in cases {
            let e = ServiceFile::parse(text, "/etc/ghost/services/x.toml").unwrap_err();
            assert!(e.starts_with("/etc/ghost/services/x.toml"), "{e}");
            assert!(e.contains(key), "error for {text:?} does not name {key}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn terminal_key_is_a_device_path_and_stderr_follows_it() {
        let s = ServiceFile::parse("exec = [\"/bin/sh\"]\nterminal = \"/dev/tty3\"\n", "t.toml").unwrap();
        assert_eq!(s.terminal.as_deref(), Some("/dev/tty3"));
        assert!(s.stderr_on_terminal());
        let s = ServiceFile::parse("exec = [\"/bin/sh\"]\nterminal = \"/dev/pts/4\"\nstderr = \"log\"\n", "t.toml").unwrap();
        assert!(!s.stderr_on_terminal());
        assert!(!ServiceFile::parse("exec = [\"/bin/true\"]", "t.toml").unwrap().stderr_on_terminal());
        for (text, key) in [
            ("terminal = \"tty2\"", "terminal"),
            ("terminal = \"/tmp/tty2\"", "terminal"),
            ("terminal = \"/dev/../etc/passwd\"", "terminal"),
            ("terminal = \"/dev/\"", "terminal"),
            ("terminal = 2", "terminal"),
            ("stderr = \"terminal\"", "stderr"),
            ("terminal = \"/dev/tty2\"\nstderr = \"both\"", "stderr"),
        ] {
            let e = ServiceFile::parse(&format!("exec = [\"/bin/true\"]\n{text}\n"), "/etc/ghost/services/x.toml").unwrap_err();
            assert!(e.starts_with("/etc/ghost/services/x.toml") && e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn term_is_linux_on_a_virtual_console_and_vt220_elsewhere() {
        assert_eq!(term_for("/dev/tty2"), "linux");
        assert_eq!(term_for("/dev/tty12"), "linux");
        assert_eq!(term_for("/dev/ttyS1"), "vt220");
        assert_eq!(term_for("/dev/pts/3"), "vt220");
        assert_eq!(term_for("/dev/tty"), "vt220");
    }

    #[test]
    fn console_section_becomes_services_unless_a_file_names_them() {
        use crate::config::Console;
        let mut files = BTreeMap::new();
        add_console_services(&mut files, &Console { tui: "tty2".into(), serial: Some("ttyS1".into()) });
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, ["console", "console-serial"]);
        assert_eq!(files["console"].exec, ["/usr/bin/ghost", "console"]);
        assert_eq!(files["console"].terminal.as_deref(), Some("/dev/tty2"));
        assert_eq!(files["console-serial"].terminal.as_deref(), Some("/dev/ttyS1"));
        assert_eq!(files["console-serial"].restart, Restart::Always);
        assert!(!files["console"].stderr_on_terminal(), "the TUI's stderr goes to its log");

        let mut files = BTreeMap::new();
        let own = ServiceFile::parse("exec = [\"/bin/sh\"]\nterminal = \"/dev/tty2\"\n", "console.toml").unwrap();
        files.insert("console".to_string(), own.clone());
        add_console_services(&mut files, &Console { tui: "tty2".into(), serial: None });
        assert_eq!(files.len(), 1);
        assert_eq!(files["console"], own);

        let mut files = BTreeMap::new();
        add_console_services(&mut files, &Console { tui: "none".into(), serial: None });
        assert!(files.is_empty());
    }

    #[test]
    fn sizes_percents_signals() {
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_percent("150%"), Some(150));
        assert_eq!(parse_percent("0%"), None);
        assert_eq!(signal_number("SIGKILL"), Some(9));
    }
}
