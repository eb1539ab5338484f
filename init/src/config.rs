//! `/etc/ghost/ghost.toml`: hostname, modules, network, security mode, console ttys.
//!
//! Every key is checked on its own: an unknown key or a wrong value is one clear line naming
//! the file and the key, that key keeps its default, and every other key still applies. A
//! missing file means all defaults. PID 1 never refuses to boot over its configuration.

use serde::de::DeserializeOwned;
use std::path::Path;

/// The machine-wide settings PID 1 reads at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GhostConfig {
    pub hostname: String,
    /// Kernel modules to load, by name (`virtio_net`) as modules.dep knows them.
    pub modules: Vec<String>,
    pub security: SecurityMode,
    pub network: Network,
    pub console: Console,
    /// Seconds a service gets between its stop signal and SIGKILL at shutdown.
    pub stop_timeout_s: u64,
    /// Who operates the machine (`[operator]`, written by the first-boot wizard).
    pub operator: Operator,
}

/// `[operator]`: the group whose members may use the control socket (default `ghost`), or
/// an SSH public key line kept for remote access (nothing in the image reads it yet).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub group: Option<String>,
    pub key: Option<String>,
}

impl Operator {
    /// The group that may reach the control socket.
    pub fn socket_group(&self) -> &str {
        self.group.as_deref().unwrap_or("ghost")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    Safe,
    Normal,
    Paranoid,
    Trusted,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `dhcp`, `static` or `off`.
    #[serde(default = "Network::default_mode")]
    pub mode: String,
    /// Interface name; the first Ethernet interface when absent.
    pub interface: Option<String>,
    /// `ADDR/PREFIX` for `static`.
    pub address: Option<String>,
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
}

impl Network {
    fn default_mode() -> String {
        "dhcp".into()
    }
}

/// `[console]`: where ghost-init runs the operator TUI (`ghost console`), as the services
/// `console` (on `tui`) and `console-serial` (on `serial`); see `service_file::console_services`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// Terminal of the operator TUI: a name under /dev (`tty2`), a /dev path, or `none`.
    #[serde(default = "Console::default_tui")]
    pub tui: String,
    /// Headless serial port that also carries the operator TUI, if any (`ttyS1`).
    #[serde(default)]
    pub serial: Option<String>,
}

impl Console {
    fn default_tui() -> String {
        "tty2".into()
    }

    /// `tty2` or `/dev/tty2` → `/dev/tty2`; `none` → None.
    pub fn device(name: &str) -> Result<Option<String>, String> {
        if name == "none" {
            return Ok(None);
        }
        let path = if name.starts_with('/') { name.to_string() } else { format!("/dev/{name}") };
        crate::service_file::valid_terminal(&path)?;
        Ok(Some(path))
    }

    /// The TUI's terminal and the serial port's, checked.
    pub fn devices(&self) -> Result<(Option<String>, Option<String>), String> {
        let tui = Self::device(&self.tui).map_err(|e| format!("tui: {e}"))?;
        let serial = match &self.serial {
            Some(s) => Self::device(s).map_err(|e| format!("serial: {e}"))?,
            None => None,
        };
        if tui.is_some() && tui == serial {
            return Err(format!("tui and serial are both {}", self.tui));
        }
        Ok((tui, serial))
    }
}

impl Default for GhostConfig {
    fn default() -> Self {
        GhostConfig {
            hostname: "ghost".into(),
            modules: Vec::new(),
            security: SecurityMode::Normal,
            network: Network { mode: Network::default_mode(), ..Network::default() },
            console: Console { tui: Console::default_tui(), serial: None },
            stop_timeout_s: 5,
            operator: Operator::default(),
        }
    }
}

/// A configuration together with the complaints found while reading it.
#[derive(Debug)]
pub struct Loaded {
    pub config: GhostConfig,
    pub problems: Vec<String>,
}

impl GhostConfig {
    /// Reads `path`; a missing file is all defaults (said once), anything else is per key.
    pub fn load(path: &Path) -> Loaded {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Loaded {
                config: GhostConfig::default(),
                problems: vec![format!("{}: not found; using defaults", path.display())],
            },
            Err(e) => Loaded {
                config: GhostConfig::default(),
                problems: vec![format!("{}: cannot read ({e}); using defaults", path.display())],
            },
        }
    }

    /// Parses the text of a ghost.toml; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Loaded {
        let mut config = GhostConfig::default();
        let mut problems = Vec::new();
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{origin}: not valid TOML, using defaults: {}", one_line(&e.to_string())));
                return Loaded { config, problems };
            }
        };
        for (key, value) in table {
            let mut take = |result: Result<(), String>| {
                if let Err(why) = result {
                    problems.push(format!("{origin}: key `{key}`: {why}; using the default"));
                }
            };
            match key.as_str() {
                "hostname" => take(field(value).and_then(|h: String| {
                    valid_hostname(&h)?;
                    config.hostname = h;
                    Ok(())
                })),
                "modules" => take(field(value).map(|m: Vec<String>| config.modules = m)),
                "security" => take(field(value).map(|s| config.security = s)),
                "network" => take(field(value).and_then(|n: Network| {
                    if !matches!(n.mode.as_str(), "dhcp" | "static" | "off") {
                        return Err(format!("mode `{}` is not one of dhcp, static, off", n.mode));
                    }
                    if n.mode == "static" && n.address.is_none() {
                        return Err("mode `static` needs `address = \"ADDR/PREFIX\"`".into());
                    }
                    config.network = n;
                    Ok(())
                })),
                "console" => take(field(value).and_then(|c: Console| {
                    c.devices()?;
                    config.console = c;
                    Ok(())
                })),
                "stop_timeout_s" => take(field(value).map(|s| config.stop_timeout_s = s)),
                "operator" => take(field(value).and_then(|o: Operator| {
                    if let Some(g) = &o.group {
                        ghost_proto::settings::valid_group_name(g)?;
                    }
                    if o.key.as_deref().is_some_and(|k| k.trim().is_empty()) {
                        return Err("key is empty".into());
                    }
                    config.operator = o;
                    Ok(())
                })),
                // The snapshot policy is the userland's (ghost-snapshot reads and checks it);
                // PID 1 only knows that it is a table.
                "snapshots" if value.is_table() => {}
                "snapshots" => problems.push(format!("{origin}: key `snapshots`: must be a table (hourly, keep, paths); ignored")),
                _ => problems.push(format!(
                    "{origin}: unknown key `{key}` (known: hostname, modules, security, network, console, stop_timeout_s, operator, snapshots); ignored"
                )),
            }
        }
        Loaded { config, problems }
    }
}

fn field<T: DeserializeOwned>(value: toml::Value) -> Result<T, String> {
    value.try_into().map_err(|e: toml::de::Error| one_line(&e.to_string()))
}

pub use ghost_proto::one_line;

/// RFC 1123 host name; the rule is shared with the wizard (ghost-proto).
pub use ghost_proto::settings::valid_hostname;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_is_read() {
        let l = GhostConfig::parse(
            r#"
hostname = "box-1"
modules = ["virtio_net", "virtio_blk"]
security = "paranoid"
stop_timeout_s = 9
[network]
mode = "static"
address = "10.0.2.15/24"
gateway = "10.0.2.2"
dns = ["10.0.2.3"]
[console]
tui = "tty3"
serial = "ttyS1"
"#,
            "ghost.toml",
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        let c = l.config;
        assert_eq!(c.hostname, "box-1");
        assert_eq!(c.modules, ["virtio_net", "virtio_blk"]);
        assert_eq!(c.security, SecurityMode::Paranoid);
        assert_eq!(c.stop_timeout_s, 9);
        assert_eq!(c.network.address.as_deref(), Some("10.0.2.15/24"));
        assert_eq!(c.console.tui, "tty3");
        assert_eq!(c.console.devices(), Ok((Some("/dev/tty3".into()), Some("/dev/ttyS1".into()))));
    }

    #[test]
    fn console_terminals_are_device_names_or_none() {
        for (text, devices) in [
            ("[console]\ntui = \"none\"\n", (None, None)),
            ("[console]\ntui = \"/dev/tty4\"\nserial = \"ttyS2\"\n", (Some("/dev/tty4"), Some("/dev/ttyS2"))),
            ("", (Some("/dev/tty2"), None)),
        ] {
            let l = GhostConfig::parse(text, "g.toml");
            assert!(l.problems.is_empty(), "{:?}", l.problems);
            let want = (devices.0.map(String::from), devices.1.map(String::from));
            assert_eq!(l.config.console.devices(), Ok(want), "{text}");
        }
        for bad in ["tui = \"../etc/passwd\"", "tui = \"/tmp/tty\"", "serial = \"\"", "tui = \"ttyS1\"\nserial = \"ttyS1\""] {
            let l = GhostConfig::parse(&format!("[console]\n{bad}\n"), "/etc/ghost/ghost.toml");
            assert_eq!(l.config.console, GhostConfig::default().console, "{bad}");
            assert_eq!(l.problems.len(), 1, "{bad}: {:?}", l.problems);
            assert!(l.problems[0].starts_with("/etc/ghost/ghost.toml: key `console`: "), "{}", l.problems[0]);
        }
    }

    #[test]
    fn unknown_key_is_named_and_the_rest_still_applies() {
        let l = GhostConfig::parse("hostnme = \"x\"\nhostname = \"real\"\n", "/etc/ghost/ghost.toml");
        assert_eq!(l.config.hostname, "real");
        assert_eq!(l.problems.len(), 1);
        assert!(l.problems[0].contains("/etc/ghost/ghost.toml"), "{}", l.problems[0]);
        assert!(l.problems[0].contains("`hostnme`"), "{}", l.problems[0]);
    }

    #[test]
    fn the_snapshot_policy_is_left_to_the_userland_but_must_be_a_table() {
        let l = GhostConfig::parse("hostname = \"h\"\n[snapshots]\nkeep = 3\npaths = [\"/srv\"]\n", "g.toml");
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        let l = GhostConfig::parse("snapshots = 3\n", "g.toml");
        assert_eq!(l.problems, vec!["g.toml: key `snapshots`: must be a table (hourly, keep, paths); ignored".to_string()]);
    }

    #[test]
    fn wrong_types_and_values_keep_defaults_and_name_the_key() {
        let l = GhostConfig::parse(
            "hostname = \"bad name!\"\nmodules = \"virtio_net\"\nsecurity = \"lax\"\n[network]\nmode = \"static\"\n[console]\ntty = \"tty9\"\n",
            "g.toml",
        );
        let d = GhostConfig::default();
        assert_eq!(l.config, d);
        let all = l.problems.join("\n");
        for key in ["`hostname`", "`modules`", "`security`", "`network`", "`console`"] {
            assert!(all.contains(key), "no complaint about {key} in:\n{all}");
        }
        assert!(all.contains("tty"), "{all}");
        assert!(l.problems.iter().all(|p| !p.contains('\n')));
    }

    #[test]
    fn the_wizards_operator_table_is_read_and_checked() {
        let l = GhostConfig::parse("[operator]\ngroup = \"ops\"\n", "g.toml");
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.config.operator.socket_group(), "ops");
        assert_eq!(GhostConfig::default().operator.socket_group(), "ghost");
        let l = GhostConfig::parse("[operator]\ngroup = \"Bad Group\"\n", "g.toml");
        assert_eq!(l.config.operator.socket_group(), "ghost");
        assert!(l.problems[0].contains("`operator`") && l.problems[0].contains("is not a group name"), "{:?}", l.problems);
        let l = GhostConfig::parse("[operator]\nkey = \"ssh-ed25519 AAAA x\"\nuser = \"x\"\n", "g.toml");
        assert!(l.problems[0].contains("`operator`") && l.problems[0].contains("user"), "{:?}", l.problems);
    }

    #[test]
    fn malformed_file_is_one_line_and_defaults() {
        let l = GhostConfig::parse("hostname = \"unterminated\nmodules = [", "ghost.toml");
        assert_eq!(l.config, GhostConfig::default());
        assert_eq!(l.problems.len(), 1);
        assert!(l.problems[0].starts_with("ghost.toml: not valid TOML"), "{}", l.problems[0]);
        assert!(!l.problems[0].contains('\n'));
    }

    #[test]
    fn missing_file_is_defaults_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let l = GhostConfig::load(&dir.path().join("ghost.toml"));
        assert_eq!(l.config, GhostConfig::default());
        assert_eq!(l.problems.len(), 1);
        assert!(l.problems[0].contains("not found"));
    }
}
