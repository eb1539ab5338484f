//! Seed files: the wizard's answers written down beforehand, for automated installs.
//!
//! ```toml
//! hostname = "box-1"
//! security = "normal"                 # safe | normal | paranoid | trusted
//! timezone = "Europe/Paris"
//! model = "none"                      # image | small | embed-only | none
//! [network]
//! mode = "static"                     # dhcp | static | off
//! address = "10.0.0.5/24"
//! gateway = "10.0.0.1"
//! dns = ["10.0.0.1"]
//! [operator]
//! group = "ghost"                     # or: key = "ssh-ed25519 AAAA… user@host"
//! ```
//!
//! A key the seed leaves out keeps the machine's current value. Every problem is one line
//! `FILE: key: reason`; a seed with any problem writes nothing.

use std::path::{Path, PathBuf};

use ghost_proto::settings::SEED_PATHS;

use super::answers::{Answers, Env, Field};

const KNOWN: &str = "hostname, network, model, security, operator, timezone";

/// Where a seed is looked for when `--seed` does not name one: the state partition, then the
/// ESP (when something has mounted it at /boot/efi).
pub fn discover(env: &Env) -> Option<PathBuf> {
    SEED_PATHS.iter().map(|p| env.path(p)).find(|p| p.is_file())
}

/// The seed paths, for messages.
pub fn searched(env: &Env) -> String {
    SEED_PATHS.iter().map(|p| env.path(p).display().to_string()).collect::<Vec<_>>().join(" and ")
}

pub fn load(path: &Path, env: &Env) -> Result<Answers, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    parse(&text, &path.display().to_string(), env)
}

/// The answers a seed gives over the machine's current ones, or its problems.
pub fn parse(text: &str, origin: &str, env: &Env) -> Result<Answers, Vec<String>> {
    let table: toml::Table = toml::from_str(text).map_err(|e| vec![format!("{origin}: not valid TOML: {}", ghost_proto::one_line(&e.to_string()))])?;
    let mut a = Answers::current(env);
    let mut problems = Vec::new();
    let mut bad = |key: &str, why: String| problems.push(format!("{origin}: {key}: {why}"));
    for (key, value) in &table {
        match key.as_str() {
            "hostname" | "model" | "security" | "timezone" => match value.as_str() {
                Some(s) => a.set(field_of(key), s.to_string()),
                None => bad(key, format!("expected a string, found {}", value.type_str())),
            },
            "operator" => match value {
                toml::Value::String(s) => a.operator = s.clone(),
                toml::Value::Table(t) => {
                    let (group, k) = (t.get("group"), t.get("key"));
                    for sub in t.keys().filter(|k| *k != "group" && *k != "key") {
                        bad(&format!("operator.{sub}"), "unknown key (known: group, key)".into());
                    }
                    match (group, k) {
                        (Some(_), Some(_)) => bad("operator", "give `group` or `key`, not both".into()),
                        (Some(v), None) | (None, Some(v)) => match v.as_str() {
                            Some(s) => a.operator = s.to_string(),
                            None => bad(&format!("operator.{}", if group.is_some() { "group" } else { "key" }), format!("expected a string, found {}", v.type_str())),
                        },
                        (None, None) => bad("operator", "needs `group = \"NAME\"` or `key = \"ssh-... AAAA...\"`".into()),
                    }
                }
                other => bad("operator", format!("expected a table {{ group = ... }} or {{ key = ... }}, found {}", other.type_str())),
            },
            "network" => match value.as_table() {
                Some(t) => {
                    for (k, v) in t {
                        match k.as_str() {
                            "mode" | "address" | "gateway" => match v.as_str() {
                                Some(s) => a.set(field_of(&format!("network.{k}")), s.to_string()),
                                None => bad(&format!("network.{k}"), format!("expected a string, found {}", v.type_str())),
                            },
                            "dns" => match v {
                                toml::Value::Array(items) if items.iter().all(|i| i.is_str()) => {
                                    a.dns = items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(", ");
                                }
                                toml::Value::String(s) => a.dns = s.clone(),
                                other => bad("network.dns", format!("expected a list of addresses, found {}", other.type_str())),
                            },
                            _ => bad(&format!("network.{k}"), "unknown key (known: mode, address, gateway, dns)".into()),
                        }
                    }
                    if t.get("mode").and_then(|m| m.as_str()) != Some("static") && t.get("mode").is_some() {
                        a.address.clear();
                        a.gateway.clear();
                        a.dns.clear();
                    }
                }
                None => bad("network", format!("expected a table [network], found {}", value.type_str())),
            },
            _ => bad(key, format!("unknown key (known: {KNOWN})")),
        }
    }
    if problems.is_empty() {
        for (f, why) in a.problems(env) {
            problems.push(format!("{origin}: {}: {why}", f.key()));
        }
    }
    if problems.is_empty() {
        Ok(a)
    } else {
        Err(problems)
    }
}

fn field_of(key: &str) -> Field {
    Field::ALL.into_iter().find(|f| f.key() == key).expect("a known key")
}


#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> (tempfile::TempDir, Env) {
        let d = tempfile::tempdir().unwrap();
        let e = Env::new(d.path());
        (d, e)
    }

    #[test]
    fn a_full_seed_is_read() {
        let (_d, e) = env();
        let a = parse(
            "hostname = \"box-1\"\nsecurity = \"paranoid\"\ntimezone = \"Europe/Paris\"\nmodel = \"none\"\n[network]\nmode = \"static\"\naddress = \"10.0.0.5/24\"\ngateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\", \"1.1.1.1\"]\n[operator]\ngroup = \"ops\"\n",
            "seed.toml",
            &e,
        )
        .unwrap();
        assert_eq!(a.hostname, "box-1");
        assert_eq!((a.network.as_str(), a.address.as_str(), a.gateway.as_str()), ("static", "10.0.0.5/24", "10.0.0.1"));
        assert_eq!(a.dns_list(), ["10.0.0.1", "1.1.1.1"]);
        assert_eq!((a.model.as_str(), a.security.as_str(), a.operator.as_str(), a.timezone.as_str()), ("none", "paranoid", "ops", "Europe/Paris"));
    }

    #[test]
    fn left_out_keys_keep_the_current_values() {
        let (_d, e) = env();
        let a = parse("hostname = \"only\"\n", "s", &e).unwrap();
        assert_eq!(a, Answers { hostname: "only".into(), ..Answers::default() });
        assert_eq!(parse("", "s", &e).unwrap(), Answers::default());
    }

    #[test]
    fn every_problem_is_file_key_reason() {
        let (_d, e) = env();
        let errs = parse(
            "hostname = \"bad name!\"\nsecurity = 3\ncolour = \"blue\"\n[network]\nmode = \"static\"\naddress = \"10.0.0.300/24\"\nmtu = 1500\n[operator]\nuser = \"x\"\n",
            "/r/var/lib/ghost/seed.toml",
            &e,
        )
        .unwrap_err();
        let all = errs.join("\n");
        for want in [
            "/r/var/lib/ghost/seed.toml: security: expected a string, found integer",
            "/r/var/lib/ghost/seed.toml: colour: unknown key",
            "/r/var/lib/ghost/seed.toml: network.mtu: unknown key",
            "/r/var/lib/ghost/seed.toml: operator.user: unknown key",
        ] {
            assert!(all.contains(want), "no `{want}` in:\n{all}");
        }
        // Value problems once the shape is right, each with its key.
        let errs = parse("hostname = \"bad name!\"\n[network]\nmode = \"static\"\naddress = \"10.0.0.300/24\"\n", "s.toml", &e).unwrap_err();
        assert_eq!(
            errs,
            [
                "s.toml: hostname: `bad name!` is not a valid host name (1-63 letters, digits and inner hyphens)",
                "s.toml: network.address: address `10.0.0.300` is not an IPv4 address"
            ]
        );
        let errs = parse("hostname = \"x\"\nhostname = \"y\"\n", "s.toml", &e).unwrap_err();
        assert!(errs[0].starts_with("s.toml: not valid TOML: "), "{errs:?}");
        assert!(!errs[0].contains('\n'));
    }

    #[test]
    fn seeds_are_found_on_the_state_partition_first() {
        let (d, e) = env();
        assert_eq!(discover(&e), None);
        std::fs::create_dir_all(d.path().join("boot/efi")).unwrap();
        std::fs::write(d.path().join("boot/efi/ghost-seed.toml"), "").unwrap();
        assert_eq!(discover(&e), Some(d.path().join("boot/efi/ghost-seed.toml")));
        std::fs::create_dir_all(d.path().join("var/lib/ghost")).unwrap();
        std::fs::write(d.path().join("var/lib/ghost/seed.toml"), "").unwrap();
        assert_eq!(discover(&e), Some(d.path().join("var/lib/ghost/seed.toml")));
    }
}
