//! The wizard's answers, one field per question, and the rules each value must pass. The
//! rules for ghost.toml's keys are ghost-init's own (`ghost_proto::settings`), so a value the
//! wizard accepts is one PID 1 takes at the next boot.

use std::path::{Path, PathBuf};

use ghost_proto::settings::{self, check_gateway, parse_cidr, parse_host, valid_group_name, valid_hostname};

use super::catalog;

/// One question of the wizard, in the order they are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Hostname,
    Network,
    Address,
    Gateway,
    Dns,
    Model,
    Security,
    Operator,
    Timezone,
}

impl Field {
    pub const ALL: [Field; 9] =
        [Field::Hostname, Field::Network, Field::Address, Field::Gateway, Field::Dns, Field::Model, Field::Security, Field::Operator, Field::Timezone];

    /// The key in a seed file (and in messages).
    pub fn key(self) -> &'static str {
        match self {
            Field::Hostname => "hostname",
            Field::Network => "network.mode",
            Field::Address => "network.address",
            Field::Gateway => "network.gateway",
            Field::Dns => "network.dns",
            Field::Model => "model",
            Field::Security => "security",
            Field::Operator => "operator",
            Field::Timezone => "timezone",
        }
    }

    /// The field's title on screen.
    pub fn title(self) -> &'static str {
        match self {
            Field::Hostname => "Host name",
            Field::Network => "Network",
            Field::Address => "Static address",
            Field::Gateway => "Gateway",
            Field::Dns => "Name servers",
            Field::Model => "Language model",
            Field::Security => "Security mode",
            Field::Operator => "Operator access",
            Field::Timezone => "Time zone",
        }
    }

    /// What to type, shown above the field.
    pub fn help(self) -> &'static str {
        match self {
            Field::Hostname => "The machine's name: 1-63 letters, digits and inner hyphens.",
            Field::Network => "How the first Ethernet interface gets its address.",
            Field::Address => "This machine's IPv4 address with its prefix length, e.g. 192.168.1.20/24.",
            Field::Gateway => "The default router, e.g. 192.168.1.1 (empty: no default route).",
            Field::Dns => "Name servers, separated by commas or spaces (empty: none).",
            Field::Model => "The local model downloaded on first boot and served to the agent.",
            Field::Security => "What the agent may do without asking an operator.",
            Field::Operator => {
                "Who may use ghostctl: a group name (its members reach the control socket) or an SSH public key line (ssh-ed25519 AAAA... user@host)."
            }
            Field::Timezone => "The machine's time zone, e.g. UTC or Europe/Paris.",
        }
    }

    /// The choices of a pick-one field: (value, description).
    pub fn options(self) -> Option<Vec<(String, String)>> {
        let o = |v: &str, d: &str| (v.to_string(), d.to_string());
        match self {
            Field::Network => Some(vec![
                o("dhcp", "DHCP: ask the network for an address"),
                o("static", "static: an address, gateway and name servers you give"),
                o("off", "off: no network (loopback only)"),
            ]),
            Field::Security => Some(vec![
                o("safe", "safe: anything of medium risk or more waits for an operator"),
                o("normal", "normal: routine repairs run; risky actions wait for an operator"),
                o("paranoid", "paranoid: only the constitution's allow-list runs; the rest is refused"),
                o("trusted", "trusted: whatever the constitution allows runs without asking"),
            ]),
            Field::Model => Some(catalog::CHOICES.iter().map(|c| (c.id.to_string(), c.line())).collect()),
            _ => None,
        }
    }
}

/// Everything the wizard asks, as typed (strings, as a form holds them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    pub hostname: String,
    /// `dhcp`, `static` or `off`.
    pub network: String,
    /// `ADDR/PREFIX`, for `static`.
    pub address: String,
    pub gateway: String,
    /// Comma- or space-separated.
    pub dns: String,
    /// A [`catalog::CHOICES`] id.
    pub model: String,
    pub security: String,
    /// A group name or an SSH public key line.
    pub operator: String,
    pub timezone: String,
}

impl Default for Answers {
    fn default() -> Self {
        Answers {
            hostname: "ghost".into(),
            network: "dhcp".into(),
            address: String::new(),
            gateway: String::new(),
            dns: String::new(),
            model: catalog::IMAGE.into(),
            security: "normal".into(),
            operator: "ghost".into(),
            timezone: "UTC".into(),
        }
    }
}

/// Where the wizard's checks look (the zoneinfo database) and where it writes, under the root.
#[derive(Debug, Clone)]
pub struct Env {
    pub root: PathBuf,
}

impl Env {
    pub fn new(root: impl Into<PathBuf>) -> Env {
        Env { root: root.into() }
    }

    /// `abs` (`/var/lib/ghost/etc`) under the root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// The wizard's overlay directory on the state partition.
    pub fn overlay(&self) -> PathBuf {
        self.path("/var/lib/ghost/etc")
    }

    /// A file of /etc/ghost as ghost-init reads it: the overlay's copy when there is one.
    pub fn effective(&self, name: &str) -> PathBuf {
        let over = self.overlay().join(name);
        if over.exists() {
            over
        } else {
            self.path("/etc/ghost").join(name)
        }
    }
}

/// The kind of operator access an answer gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    Group(String),
    Key(String),
}

impl Answers {
    /// What this machine has now: the effective ghost.toml (overlay, else the image's) and
    /// timezone; defaults for what they do not say (or say wrongly: the wizard is there to fix it).
    pub fn current(env: &Env) -> Answers {
        let mut a = Answers::default();
        let table: toml::Table = std::fs::read_to_string(env.effective("ghost.toml")).ok().and_then(|t| toml::from_str(&t).ok()).unwrap_or_default();
        let s = |t: &toml::Table, k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_string);
        if let Some(h) = s(&table, "hostname").filter(|h| valid_hostname(h).is_ok()) {
            a.hostname = h;
        }
        if let Some(m) = s(&table, "security").filter(|m| settings::SECURITY_MODES.contains(&m.as_str())) {
            a.security = m;
        }
        if let Some(net) = table.get("network").and_then(|n| n.as_table()) {
            if let Some(m) = s(net, "mode").filter(|m| settings::NETWORK_MODES.contains(&m.as_str())) {
                a.network = m;
            }
            a.address = s(net, "address").unwrap_or_default();
            a.gateway = s(net, "gateway").unwrap_or_default();
            if let Some(d) = net.get("dns").and_then(|d| d.as_array()) {
                a.dns = d.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ");
            }
        }
        if let Some(op) = table.get("operator").and_then(|o| o.as_table()) {
            if let Some(v) = s(op, "key").or_else(|| s(op, "group")) {
                a.operator = v;
            }
        }
        if let Ok(tz) = std::fs::read_to_string(env.overlay().join("timezone")) {
            let tz = tz.trim().to_string();
            if check_timezone(&tz, env).is_ok() {
                a.timezone = tz;
            }
        }
        a
    }

    pub fn get(&self, f: Field) -> &str {
        match f {
            Field::Hostname => &self.hostname,
            Field::Network => &self.network,
            Field::Address => &self.address,
            Field::Gateway => &self.gateway,
            Field::Dns => &self.dns,
            Field::Model => &self.model,
            Field::Security => &self.security,
            Field::Operator => &self.operator,
            Field::Timezone => &self.timezone,
        }
    }

    pub fn set(&mut self, f: Field, v: String) {
        let slot = match f {
            Field::Hostname => &mut self.hostname,
            Field::Network => &mut self.network,
            Field::Address => &mut self.address,
            Field::Gateway => &mut self.gateway,
            Field::Dns => &mut self.dns,
            Field::Model => &mut self.model,
            Field::Security => &mut self.security,
            Field::Operator => &mut self.operator,
            Field::Timezone => &mut self.timezone,
        };
        *slot = v;
    }

    /// The questions that apply to these answers (the static address only for `static`).
    pub fn fields(&self) -> Vec<Field> {
        Field::ALL.into_iter().filter(|f| self.network == "static" || !matches!(f, Field::Address | Field::Gateway | Field::Dns)).collect()
    }

    /// Checks `value` for field `f` in the context of the other answers; the reason is one
    /// line for the screen (the key is added by callers that need it).
    pub fn check(&self, f: Field, value: &str, env: &Env) -> Result<(), String> {
        let v = value.trim();
        match f {
            Field::Hostname => valid_hostname(v),
            Field::Network => one_of(v, settings::NETWORK_MODES),
            Field::Address => parse_cidr(v).map(drop),
            Field::Gateway => {
                if v.is_empty() {
                    return Ok(());
                }
                let g = parse_host(v, "gateway")?;
                match parse_cidr(self.address.trim()) {
                    Ok((a, _)) => check_gateway(a, Some(g)),
                    Err(_) => Ok(()),
                }
            }
            Field::Dns => dns_list(v).map(drop),
            Field::Model => one_of(v, &catalog::CHOICES.iter().map(|c| c.id).collect::<Vec<_>>()),
            Field::Security => one_of(v, settings::SECURITY_MODES),
            Field::Operator => operator(v).map(drop),
            Field::Timezone => check_timezone(v, env),
        }
    }

    /// Every problem of the whole set, field by field (what a seed is checked with).
    pub fn problems(&self, env: &Env) -> Vec<(Field, String)> {
        self.fields().into_iter().filter_map(|f| self.check(f, self.get(f), env).err().map(|e| (f, e))).collect()
    }

    pub fn dns_list(&self) -> Vec<String> {
        dns_list(self.dns.trim()).unwrap_or_default()
    }

    pub fn operator_kind(&self) -> Operator {
        operator(self.operator.trim()).unwrap_or_else(|_| Operator::Group("ghost".into()))
    }
}

fn one_of(v: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(format!("`{v}` is not one of {}", allowed.join(", ")))
    }
}

fn dns_list(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for d in v.split([',', ' ']).map(str::trim).filter(|d| !d.is_empty()) {
        out.push(parse_host(d, "name server")?.to_string());
    }
    if out.len() > 3 {
        return Err(format!("{} name servers given; at most 3 are used (resolv.conf)", out.len()));
    }
    Ok(out)
}

/// A group name, or an SSH public key line whose blob names the same key type.
pub fn operator(v: &str) -> Result<Operator, String> {
    if v.is_empty() {
        return Err("empty: give a group name (e.g. ghost) or an SSH public key line".into());
    }
    if !v.contains(' ') && !v.starts_with("ssh-") && !v.starts_with("ecdsa-") {
        return valid_group_name(v).map(|_| Operator::Group(v.to_string()));
    }
    const TYPES: &[&str] = &["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com"];
    let mut words = v.split_whitespace();
    let kind = words.next().unwrap_or("");
    if !TYPES.contains(&kind) {
        return Err(format!("`{kind}` is not an SSH key type ({}), nor is this a group name", TYPES.join(", ")));
    }
    let blob = words.next().ok_or_else(|| format!("the {kind} key has no base64 part after the type"))?;
    let bytes = base64_decode(blob).ok_or_else(|| format!("the {kind} key's second word is not base64"))?;
    // The blob starts with the key type, as a 4-byte big-endian length and the name.
    let named = bytes.len() >= 4 && {
        let n = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        bytes.get(4..4 + n) == Some(kind.as_bytes())
    };
    if !named {
        return Err(format!("the base64 part is not an {kind} public key (its blob names another type, or is cut short)"));
    }
    Ok(Operator::Key(v.split_whitespace().collect::<Vec<_>>().join(" ")))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let body = s.trim_end_matches('=');
    if !s.len().is_multiple_of(4) || s.len() - body.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in body.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `UTC`, or an Area/City name; checked against ROOT/usr/share/zoneinfo when the root has one.
pub fn check_timezone(tz: &str, env: &Env) -> Result<(), String> {
    let seg_ok = |s: &str| !s.is_empty() && !s.starts_with(['.', '-']) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b));
    let parts: Vec<&str> = tz.split('/').collect();
    if tz.len() > 64 || parts.len() > 3 || !parts.iter().all(|p| seg_ok(p)) {
        return Err(format!("`{tz}` is not a time zone name (UTC, or Area/City such as Europe/Paris)"));
    }
    let db = env.path("/usr/share/zoneinfo");
    if db.is_dir() {
        if db.join(tz).is_file() {
            return Ok(());
        }
        return Err(format!("`{tz}` is not in the time zone database ({})", Path::new("/usr/share/zoneinfo").join(tz).display()));
    }
    if parts.len() == 1 && !matches!(tz, "UTC" | "GMT" | "Etc") {
        return Err(format!("`{tz}` is not a time zone name (UTC, or Area/City such as Europe/Paris)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> (tempfile::TempDir, Env) {
        let d = tempfile::tempdir().unwrap();
        let e = Env::new(d.path());
        (d, e)
    }

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJrZ8vXoq+2oCP5hZbW3ZPp7tM1oN0GFUk1dJ4pk7s0Y ops@desk";

    #[test]
    fn each_field_refuses_a_wrong_value_with_its_reason() {
        let (_d, e) = env();
        let mut a = Answers::default();
        let err = |a: &Answers, f, v: &str| a.check(f, v, &e).unwrap_err();
        assert!(err(&a, Field::Hostname, "bad name!").contains("`bad name!` is not a valid host name"));
        assert!(err(&a, Field::Network, "wifi").contains("`wifi` is not one of dhcp, static, off"));
        assert_eq!(err(&a, Field::Address, "10.0.0.300/24"), "address `10.0.0.300` is not an IPv4 address");
        assert!(err(&a, Field::Address, "10.0.0.3").contains("has no /PREFIX"));
        assert!(err(&a, Field::Gateway, "router").contains("gateway `router` is not an IPv4 address"));
        a.address = "10.0.0.5/24".into();
        assert!(err(&a, Field::Gateway, "10.0.0.5").contains("is the address itself"));
        assert!(err(&a, Field::Dns, "1.1.1.1, x").contains("name server `x`"));
        assert!(err(&a, Field::Dns, "1.1.1.1 1.0.0.1 8.8.8.8 9.9.9.9").contains("at most 3"));
        assert!(err(&a, Field::Model, "gpt-5").contains("`gpt-5` is not one of"));
        assert!(err(&a, Field::Security, "lax").contains("`lax` is not one of safe, normal, paranoid, trusted"));
        assert!(err(&a, Field::Operator, "Wheel").contains("is not a group name"));
        assert!(err(&a, Field::Operator, "ssh-dss AAAA").contains("not an SSH key type"));
        assert!(err(&a, Field::Operator, "ssh-ed25519 !!!!").contains("not base64"));
        assert!(err(&a, Field::Operator, "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIJrZ8vXoq+2oCP5hZbW3ZPp7tM1oN0GFUk1dJ4pk7s0Y").contains("not an ssh-rsa public key"));
        assert!(err(&a, Field::Timezone, "Mars/Olympus Mons").contains("not a time zone name"));
        assert!(err(&a, Field::Timezone, "../etc/passwd").contains("not a time zone name"));
        assert!(err(&a, Field::Timezone, "Paris").contains("not a time zone name"));
    }

    #[test]
    fn good_values_pass() {
        let (_d, e) = env();
        let a = Answers { address: "10.0.0.5/24".into(), ..Answers::default() };
        for (f, v) in [
            (Field::Hostname, "box-1"),
            (Field::Network, "static"),
            (Field::Address, "10.0.0.5/24"),
            (Field::Gateway, "10.0.0.1"),
            (Field::Gateway, ""),
            (Field::Dns, "10.0.0.1, 1.1.1.1"),
            (Field::Dns, ""),
            (Field::Model, "none"),
            (Field::Security, "paranoid"),
            (Field::Operator, "ops"),
            (Field::Operator, ED25519),
            (Field::Timezone, "UTC"),
            (Field::Timezone, "America/Argentina/Buenos_Aires"),
        ] {
            a.check(f, v, &e).unwrap_or_else(|why| panic!("{f:?} {v:?}: {why}"));
        }
        assert_eq!(operator(ED25519).unwrap(), Operator::Key(ED25519.into()));
        assert_eq!(operator("ghost").unwrap(), Operator::Group("ghost".into()));
    }

    #[test]
    fn time_zones_are_checked_against_the_roots_database_when_it_has_one() {
        let (d, e) = env();
        std::fs::create_dir_all(d.path().join("usr/share/zoneinfo/Europe")).unwrap();
        std::fs::write(d.path().join("usr/share/zoneinfo/Europe/Paris"), "TZif").unwrap();
        assert!(check_timezone("Europe/Paris", &e).is_ok());
        assert!(check_timezone("Europe/Atlantis", &e).unwrap_err().contains("not in the time zone database"));
        // A directory is not a zone.
        assert!(check_timezone("Europe", &e).is_err());
    }

    #[test]
    fn static_fields_are_asked_only_for_static() {
        let mut a = Answers::default();
        assert!(!a.fields().contains(&Field::Address));
        a.network = "static".into();
        assert_eq!(a.fields().len(), 9);
        // A static setup without an address is a problem named by its key.
        let (_d, e) = env();
        let p = a.problems(&e);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0.key(), "network.address");
    }

    #[test]
    fn current_answers_come_from_the_overlay_before_the_image() {
        let (d, e) = env();
        std::fs::create_dir_all(d.path().join("etc/ghost")).unwrap();
        std::fs::write(d.path().join("etc/ghost/ghost.toml"), "hostname = \"img\"\nsecurity = \"safe\"\n").unwrap();
        assert_eq!(Answers::current(&e).hostname, "img");
        std::fs::create_dir_all(d.path().join("var/lib/ghost/etc")).unwrap();
        std::fs::write(
            d.path().join("var/lib/ghost/etc/ghost.toml"),
            "hostname = \"over\"\n[network]\nmode = \"static\"\naddress = \"10.1.1.1/16\"\ndns = [\"10.1.0.1\", \"1.1.1.1\"]\n[operator]\ngroup = \"ops\"\n",
        )
        .unwrap();
        std::fs::write(d.path().join("var/lib/ghost/etc/timezone"), "Asia/Tokyo\n").unwrap();
        let a = Answers::current(&e);
        assert_eq!((a.hostname.as_str(), a.security.as_str(), a.network.as_str()), ("over", "normal", "static"));
        assert_eq!((a.address.as_str(), a.dns.as_str(), a.operator.as_str(), a.timezone.as_str()), ("10.1.1.1/16", "10.1.0.1, 1.1.1.1", "ops", "Asia/Tokyo"));
    }
}
