//! Paths the policy guards: lexical normalisation, protected paths (never written, moved or
//! removed, except in trusted mode) and critical directories (never removed recursively or
//! re-permissioned recursively).

/// Directories whose recursive removal, move or `chmod -R`/`chown -R` wrecks the system.
pub const CRITICAL_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/usr",
    "/var",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/sbin",
    "/usr/local",
    "/usr/share",
    "/var/lib",
    "/var/log",
    "/etc/ghost",
    "/var/lib/ghost",
    "/efi",
    "/mnt",
    "/media",
    "/snap",
    "/nix",
];

/// Paths that are never written, truncated, moved or removed: the boot partition and the ESP,
/// the audit trail and the agent's identity, kernel memory and the sysrq trigger. Block
/// devices are matched by [`is_block_device`].
pub const PROTECTED: &[&str] = &[
    "/boot",
    "/efi",
    "/boot/efi",
    "/var/lib/ghost/audit",
    "/var/lib/ghost/agent",
    "/dev/mem",
    "/dev/kmem",
    "/dev/port",
    "/proc/sysrq-trigger",
    "/sys/firmware/efi/efivars",
    "/dev/disk",
    "/dev/mapper",
];

/// The directories disk.cleanup may clean (the executor's defaults: its `cleanable_dirs` and
/// its `log_dir`). The executor holds the exact list and checks it after resolving links; the
/// policy judges the path as written by its shape.
pub const CLEANABLE: &[&str] = &["/tmp", "/var/tmp", "/var/log/ghost"];

/// Whether the normalised `path` is a cleanable directory: one of [`CLEANABLE`], or one of them
/// under a root (`ROOT/tmp`, `ROOT/var/log/ghost`: the agent hosted under `--root ROOT`).
pub fn cleanable(path: &str) -> bool {
    CLEANABLE.iter().any(|c| path.ends_with(c))
}

/// Lexical normalisation: `//` and `/./` collapse, `..` climbs (never above `/`), a trailing
/// `/` goes. Relative paths stay relative. `~` and `~/x` are kept as they are.
pub fn normalize(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

/// Whether `path` is `base` or lies below it (component-wise).
pub fn under(path: &str, base: &str) -> bool {
    base == "/" || path == base || path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'))
}

/// `/dev/sda`, `/dev/sda1`, `/dev/nvme0n1p2`, `/dev/vdb`, `/dev/hda`, `/dev/xvda`, `/dev/mmcblk0`,
/// `/dev/dm-0`, `/dev/md0`, `/dev/loop0`, `/dev/sr0`, `/dev/disk/...`, `/dev/mapper/...`.
pub fn is_block_device(path: &str) -> bool {
    let Some(name) = path.strip_prefix("/dev/") else { return false };
    if name.starts_with("disk/") || name.starts_with("mapper/") {
        return true;
    }
    let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == 'p');
    ["sd", "hd", "vd", "xvd", "nvme", "mmcblk", "dm-", "md", "loop", "sr", "nbd", "rbd", "zd", "ubd"].iter().any(
        |prefix| {
            name.starts_with(prefix) && name[prefix.len()..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        },
    )
}

/// Why writing (or removing, moving, truncating) `path` is refused, if it is. `path` should be
/// absolute; `extra` are the constitution's protected paths.
pub fn protected_write(path: &str, extra: &[String]) -> Option<String> {
    let p = normalize(path);
    if is_block_device(&p) {
        return Some(format!("{p} is a block device"));
    }
    for base in PROTECTED.iter().copied().chain(extra.iter().map(String::as_str)) {
        let base = normalize(base);
        if under(&p, &base) {
            return Some(if p == base {
                format!("{p} is protected")
            } else {
                format!("{p} is under the protected {base}")
            });
        }
    }
    None
}

/// Whether `operand` of a recursive removal, move or chmod names a critical directory (or all
/// of one: `/usr/*`), the root itself in any spelling (`/`, `//`, `/.`, `/*`, `/usr/..`), or
/// the home directory (`~`).
pub fn critical(operand: &str, extra: &[String]) -> Option<String> {
    if operand == "~" || operand == "~/" || operand == "~/*" {
        return Some("the home directory".into());
    }
    if !operand.starts_with('/') {
        return None;
    }
    let mut p = normalize(operand);
    // `/usr/*` empties /usr; a glob in the first component (`/*`, `/[a-z]*`) reaches the root.
    loop {
        let first = p.trim_start_matches('/').split('/').next().unwrap_or("");
        if first.contains(['*', '?', '[']) {
            return Some(format!("`{operand}` reaches every top-level directory"));
        }
        match p.rsplit_once('/') {
            Some((parent, last)) if last.chars().all(|c| c == '*' || c == '?') && !last.is_empty() => {
                p = if parent.is_empty() { "/".into() } else { parent.to_string() };
            }
            _ => break,
        }
    }
    if CRITICAL_DIRS.contains(&p.as_str()) {
        return Some(if p == "/" { "the root directory".into() } else { format!("the system directory {p}") });
    }
    protected_write(&p, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_collapses_every_spelling_of_root() {
        for p in ["/", "//", "/.", "/./", "/..", "/usr/..", "///./../", "/tmp/../"] {
            assert_eq!(normalize(p), "/", "{p}");
        }
        assert_eq!(normalize("/tmp/../boot/x"), "/boot/x");
        assert_eq!(normalize("a/../../b"), "../b");
    }

    #[test]
    fn block_devices_and_protected_paths() {
        for d in [
            "/dev/sda",
            "/dev/sda1",
            "/dev/nvme0n1",
            "/dev/nvme0n1p2",
            "/dev/vda",
            "/dev/vdb3",
            "/dev/xvda",
            "/dev/mmcblk0p1",
            "/dev/dm-0",
            "/dev/md127",
            "/dev/disk/by-label/GHOST_STATE",
        ] {
            assert!(is_block_device(d), "{d}");
        }
        for d in ["/dev/null", "/dev/zero", "/dev/tty", "/dev/stdout", "/dev/shm/x", "/dev/urandom", "/tmp/sda"] {
            assert!(!is_block_device(d), "{d}");
        }
        assert!(protected_write("/boot/vmlinuz", &[]).is_some());
        assert!(protected_write("/boot/efi/EFI/BOOT/BOOTX64.EFI", &[]).is_some());
        assert!(protected_write("/tmp/../boot", &[]).is_some());
        assert!(protected_write("/var/lib/ghost/audit/audit-2025-01-01.jsonl", &[]).is_some());
        assert!(protected_write("/bootstrap/x", &[]).is_none());
        assert!(protected_write("/srv/data/x", &["/srv/data".into()]).is_some());
        assert!(protected_write("/etc/ghost/ghost.toml", &[]).is_none());
    }

    #[test]
    fn critical_operands() {
        for op in [
            "/",
            "/*",
            "//",
            "/.",
            "/usr/..",
            "/etc",
            "/etc/",
            "/usr/*",
            "/[a-z]*",
            "~",
            "/var/lib/ghost",
            "/boot/efi/EFI",
        ] {
            assert!(critical(op, &[]).is_some(), "{op}");
        }
        for op in ["/tmp/build", "/var/log/ghost/old", "build", "/home/user/.cache", "/srv/www/tmp"] {
            assert!(critical(op, &[]).is_none(), "{op}");
        }
    }
}
