//! The rules for the machine settings of `ghost.toml` that both PID 1 (which reads them at
//! boot) and the first-boot wizard (which writes them) apply, so that a value the wizard
//! accepts is one ghost-init takes, with the same message when it is wrong. std only.
//!
//! Also the commit step of the wizard's overlay (`/var/lib/ghost/etc`), which ghost-init
//! finishes at boot when a power cut interrupted it: see [`finish_overlay_commit`].

use std::net::Ipv4Addr;
use std::path::Path;

/// `security` values, mildest last: what the agent's policy may do without asking.
pub const SECURITY_MODES: &[&str] = &["safe", "normal", "paranoid", "trusted"];

/// `[network] mode` values.
pub const NETWORK_MODES: &[&str] = &["dhcp", "static", "off"];

/// RFC 1123 host name: 1..=63 letters, digits and inner hyphens (one label; no domain here).
pub fn valid_hostname(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{h}` is not a valid host name (1-63 letters, digits and inner hyphens)"))
    }
}

/// `10.0.2.15/24`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, p) = s.split_once('/').ok_or_else(|| format!("`{s}` has no /PREFIX (e.g. 10.0.2.15/24)"))?;
    let address = parse_host(a, "address")?;
    let prefix: u8 = p.parse().ok().filter(|p| (1..=32).contains(p)).ok_or_else(|| format!("`/{p}` is not a prefix length (1-32)"))?;
    Ok((address, prefix))
}

/// A unicast IPv4 address a host may use; `what` names it in the message (`address`,
/// `gateway`, `name server`; only a name server may be a loopback address).
pub fn parse_host(s: &str, what: &str) -> Result<Ipv4Addr, String> {
    let a: Ipv4Addr = s.trim().parse().map_err(|_| format!("{what} `{s}` is not an IPv4 address"))?;
    if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || (a.is_loopback() && what != "name server") {
        return Err(format!("{what} {a} cannot be used here"));
    }
    Ok(a)
}

/// A gateway must not be the address itself.
pub fn check_gateway(address: Ipv4Addr, gateway: Option<Ipv4Addr>) -> Result<(), String> {
    if gateway == Some(address) {
        return Err(format!("the gateway {address} is the address itself"));
    }
    Ok(())
}

/// A group name for the control socket: a letter or `_`, then up to 31 letters, digits, `_`
/// or `-` (what `groupadd` accepts by default).
pub fn valid_group_name(g: &str) -> Result<(), String> {
    let mut bytes = g.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    if first_ok && g.len() <= 32 && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
        Ok(())
    } else {
        Err(format!("`{g}` is not a group name (a lower-case letter or _, then up to 31 of a-z, 0-9, _ and -)"))
    }
}

/// Where a seed file (the wizard's answers, for unattended installs) is looked for, in order,
/// under the root: the state partition, then the ESP where something has mounted it.
pub const SEED_PATHS: &[&str] = &["/var/lib/ghost/seed.toml", "/boot/efi/ghost-seed.toml"];

/// Where the wizard stages the files of one commit, fsynced, before the commit point.
pub const OVERLAY_PENDING: &str = ".wizard-pending";
/// The commit point: the staging directory renamed to this name. Once it exists, the files in
/// it are the new configuration, and moving them into place is finished by whoever runs next.
pub const OVERLAY_COMMIT: &str = ".wizard-commit";

/// Finishes (or discards) an interrupted wizard commit in the overlay directory `etc`
/// (`/var/lib/ghost/etc`): a staging directory that never reached the commit point is removed
/// (the old configuration stays, whole), a committed one has its remaining files moved into
/// place. Returns the names moved; idempotent, so a power cut during it is harmless too.
pub fn finish_overlay_commit(etc: &Path) -> std::io::Result<Vec<String>> {
    let pending = etc.join(OVERLAY_PENDING);
    if pending.exists() {
        std::fs::remove_dir_all(&pending)?;
    }
    let commit = etc.join(OVERLAY_COMMIT);
    let mut moved = Vec::new();
    let entries = match std::fs::read_dir(&commit) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(moved),
        Err(e) => return Err(e),
    };
    let mut names: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort();
    for name in names {
        std::fs::rename(commit.join(&name), etc.join(&name))?;
        moved.push(name);
    }
    std::fs::File::open(etc)?.sync_all()?;
    std::fs::remove_dir(&commit)?;
    std::fs::File::open(etc)?.sync_all()?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert!(valid_hostname("box-1").is_ok());
        assert!(valid_hostname(&"a".repeat(63)).is_ok());
        for bad in ["", "-a", "a-", "bad name!", "a.b", &"a".repeat(64)] {
            let e = valid_hostname(bad).unwrap_err();
            assert!(e.contains("is not a valid host name"), "{e}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_cidr("10.0.2.15/24").unwrap(), (Ipv4Addr::new(10, 0, 2, 15), 24));
        assert_eq!(parse_cidr("10.0.0.300/24").unwrap_err(), "address `10.0.0.300` is not an IPv4 address");
        assert_eq!(parse_cidr("10.0.0.3").unwrap_err(), "`10.0.0.3` has no /PREFIX (e.g. 10.0.2.15/24)");
        assert_eq!(parse_cidr("10.0.0.3/0").unwrap_err(), "`/0` is not a prefix length (1-32)");
        assert!(parse_host("127.0.0.1", "gateway").is_err());
        assert!(parse_host("127.0.0.53", "name server").is_ok());
        assert!(check_gateway(Ipv4Addr::new(1, 2, 3, 4), Some(Ipv4Addr::new(1, 2, 3, 4))).is_err());
    }

    #[test]
    fn group_names() {
        assert!(valid_group_name("ghost").is_ok());
        assert!(valid_group_name("_ops-2").is_ok());
        for bad in ["", "Ghost", "2ops", "a b", &"a".repeat(33)] {
            assert!(valid_group_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_uncommitted_stage_is_dropped_and_a_committed_one_finished() {
        let d = std::env::temp_dir().join(format!("ghost-proto-overlay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join(OVERLAY_PENDING)).unwrap();
        std::fs::write(d.join("ghost.toml"), "old").unwrap();
        std::fs::write(d.join(OVERLAY_PENDING).join("ghost.toml"), "half").unwrap();
        assert!(finish_overlay_commit(&d).unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(d.join("ghost.toml")).unwrap(), "old");
        assert!(!d.join(OVERLAY_PENDING).exists());

        std::fs::create_dir_all(d.join(OVERLAY_COMMIT)).unwrap();
        std::fs::write(d.join(OVERLAY_COMMIT).join("ghost.toml"), "new").unwrap();
        std::fs::write(d.join(OVERLAY_COMMIT).join("timezone"), "UTC\n").unwrap();
        assert_eq!(finish_overlay_commit(&d).unwrap(), ["ghost.toml", "timezone"]);
        assert_eq!(std::fs::read_to_string(d.join("ghost.toml")).unwrap(), "new");
        assert!(!d.join(OVERLAY_COMMIT).exists());
        assert!(finish_overlay_commit(&d).unwrap().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
