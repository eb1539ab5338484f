//! Which interface to configure: the one named in ghost.toml, or the first Ethernet interface
//! (ARPHRD_ETHER, lowest ifindex, never loopback) under /sys/class/net; its index, hardware
//! address and whether its link is up. Reads sysfs only; the directory is a parameter so the
//! choice is tested on a fake tree.

use std::path::Path;

/// ARPHRD_ETHER from linux/if_arp.h: Ethernet, and what virtio-net and veth report.
const ARPHRD_ETHER: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// One entry of /sys/class/net.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    ifindex: u32,
    kind: u16,
}

fn entries(dir: &Path) -> Vec<Entry> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<Entry> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let read = |f: &str| -> Option<u32> { std::fs::read_to_string(dir.join(&name).join(f)).ok()?.trim().parse().ok() };
            Some(Entry { ifindex: read("ifindex")?, kind: read("type")?.try_into().ok()?, name })
        })
        .collect();
    out.sort_by_key(|e| e.ifindex);
    out
}

/// The interface to configure: `wanted` if given, else the first Ethernet one.
pub fn choose(dir: &Path, wanted: Option<&str>) -> Result<Interface, String> {
    let all = entries(dir);
    let names = || {
        let n: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
        if n.is_empty() { "none".to_string() } else { n.join(", ") }
    };
    let e = match wanted {
        Some(w) => all.iter().find(|e| e.name == w).ok_or_else(|| format!("interface {w} does not exist (present in {}: {})", dir.display(), names()))?,
        None => all
            .iter()
            .find(|e| e.kind == ARPHRD_ETHER && e.name != "lo")
            .ok_or_else(|| format!("no Ethernet interface in {} (present: {})", dir.display(), names()))?,
    };
    let text = std::fs::read_to_string(dir.join(&e.name).join("address")).unwrap_or_default();
    let mac = parse_mac(text.trim()).ok_or_else(|| format!("{}: no Ethernet hardware address (`{}`)", e.name, text.trim()))?;
    Ok(Interface { name: e.name.clone(), ifindex: e.ifindex, mac })
}

/// Whether the link reports carrier: operstate `up`, or `unknown` for drivers that do not
/// track it (sending then is all we can do).
pub fn link_ready(dir: &Path, name: &str) -> bool {
    let s = std::fs::read_to_string(dir.join(name).join("operstate")).unwrap_or_default();
    matches!(s.trim(), "up" | "unknown")
}

/// Whether the interface has carrier now (`carrier` reads 1; it cannot be read while down).
pub fn has_carrier(dir: &Path, name: &str) -> bool {
    std::fs::read_to_string(dir.join(name).join("carrier")).is_ok_and(|s| s.trim() == "1")
}

/// `52:54:00:12:34:56` to bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(dir: &Path, name: &str, ifindex: u32, kind: u16, mac: &str) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ifindex"), format!("{ifindex}\n")).unwrap();
        std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
        std::fs::write(d.join("operstate"), "down\n").unwrap();
    }

    #[test]
    fn the_first_ethernet_interface_by_index_is_chosen() {
        let t = tempfile::tempdir().unwrap();
        iface(t.path(), "lo", 1, 772, "00:00:00:00:00:00");
        iface(t.path(), "eth1", 4, 1, "52:54:00:00:00:04");
        iface(t.path(), "sit0", 2, 776, "00:00:00:00");
        iface(t.path(), "eth0", 3, 1, "52:54:00:12:34:56");
        let i = choose(t.path(), None).unwrap();
        assert_eq!(i, Interface { name: "eth0".into(), ifindex: 3, mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56] });
        assert_eq!(choose(t.path(), Some("eth1")).unwrap().ifindex, 4);
        let e = choose(t.path(), Some("wlan0")).unwrap_err();
        assert!(e.contains("interface wlan0 does not exist") && e.contains("eth0, eth1"), "{e}");
        assert!(!link_ready(t.path(), "eth0"));
        std::fs::write(t.path().join("eth0/operstate"), "up\n").unwrap();
        assert!(link_ready(t.path(), "eth0"));
        assert!(!has_carrier(t.path(), "eth0"), "no carrier file: as when the link is down");
        std::fs::write(t.path().join("eth0/carrier"), "1\n").unwrap();
        assert!(has_carrier(t.path(), "eth0"));
    }

    #[test]
    fn no_ethernet_interface_is_one_clear_line() {
        let t = tempfile::tempdir().unwrap();
        iface(t.path(), "lo", 1, 772, "00:00:00:00:00:00");
        let e = choose(t.path(), None).unwrap_err();
        assert!(e.starts_with("no Ethernet interface in ") && e.ends_with("(present: lo)"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(choose(empty.path(), None).unwrap_err().ends_with("(present: none)"));
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(parse_mac("52:54:00:12:34:5a"), Some([0x52, 0x54, 0, 0x12, 0x34, 0x5a]));
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("5:54:00:12:34:56"), None);
        assert_eq!(parse_mac(""), None);
    }
}
