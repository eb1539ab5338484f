//! The mount table: which API filesystems boot mounts, reading /proc/self/mountinfo, and the
//! order in which shutdown takes mounts down. Pure functions; the syscalls live in `sys`.

/// One filesystem boot mounts, if nothing is mounted there yet.
#[derive(Debug, Clone, Copy)]
pub struct EarlyMount {
    pub target: &'static str,
    pub fstype: &'static str,
    pub source: &'static str,
    pub flags: u64,
    pub data: &'static str,
}

const NOSUID: u64 = libc::MS_NOSUID;
const NODEV: u64 = libc::MS_NODEV;
const NOEXEC: u64 = libc::MS_NOEXEC;

/// In mount order: a parent before its children.
pub const EARLY_MOUNTS: &[EarlyMount] = &[
    EarlyMount { target: "/proc", fstype: "proc", source: "proc", flags: NOSUID | NODEV | NOEXEC, data: "" },
    EarlyMount { target: "/sys", fstype: "sysfs", source: "sysfs", flags: NOSUID | NODEV | NOEXEC, data: "" },
    EarlyMount { target: "/dev", fstype: "devtmpfs", source: "devtmpfs", flags: NOSUID, data: "mode=0755" },
    EarlyMount { target: "/dev/pts", fstype: "devpts", source: "devpts", flags: NOSUID | NOEXEC, data: "mode=0620,gid=5,ptmxmode=0666" },
    EarlyMount { target: "/dev/shm", fstype: "tmpfs", source: "tmpfs", flags: NOSUID | NODEV, data: "mode=1777" },
    EarlyMount { target: "/run", fstype: "tmpfs", source: "tmpfs", flags: NOSUID | NODEV, data: "mode=0755" },
    EarlyMount { target: "/tmp", fstype: "tmpfs", source: "tmpfs", flags: NOSUID | NODEV, data: "mode=1777" },
    EarlyMount { target: "/sys/fs/cgroup", fstype: "cgroup2", source: "cgroup2", flags: NOSUID | NODEV | NOEXEC, data: "nsdelegate" },
];

/// One line of /proc/self/mountinfo, the parts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    pub target: String,
    pub fstype: String,
    pub source: String,
}

/// Parses /proc/self/mountinfo; malformed lines are skipped (the kernel writes this file).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let id = fields.next()?.parse().ok()?;
    let parent = fields.next()?.parse().ok()?;
    let _majmin = fields.next()?;
    let _root = fields.next()?;
    let target = unescape(fields.next()?);
    // Optional fields run up to a lone "-".
    let mut rest = fields.skip_while(|f| *f != "-");
    rest.next()?;
    let fstype = rest.next()?.to_string();
    let source = unescape(rest.next().unwrap_or("none"));
    Some(MountEntry { id, parent, target, fstype, source })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether something is mounted exactly at `target`.
pub fn is_mounted(table: &[MountEntry], target: &str) -> bool {
    table.iter().any(|m| m.target == target)
}

/// What shutdown does with one mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    /// Unmount; if busy, remount read-only.
    Unmount(String),
    /// The root cannot be unmounted by PID 1; it is remounted read-only.
    RemountReadOnly(String),
}

/// Kernel API filesystems hold no data; they are left for the kernel to drop.
fn is_api_fs(fstype: &str) -> bool {
    matches!(
        fstype,
        "proc" | "sysfs" | "devtmpfs" | "devpts" | "cgroup" | "cgroup2" | "securityfs" | "debugfs"
            | "tracefs" | "mqueue" | "pstore" | "bpf" | "configfs" | "fusectl" | "hugetlbfs"
            | "efivarfs" | "binfmt_misc" | "autofs" | "rootfs"
    )
}

/// The shutdown order: children before parents (deepest mounts first, later mounts before
/// earlier ones at the same place), API filesystems left alone, the root last and read-only.
pub fn teardown_plan(table: &[MountEntry]) -> Vec<Teardown> {
    let mut order: Vec<(usize, &MountEntry)> =
        table.iter().enumerate().filter(|(_, m)| m.target != "/" && !is_api_fs(&m.fstype)).collect();
    // Deeper paths first; among equals, the one mounted later (stacked on top) first.
    order.sort_by(|(ia, a), (ib, b)| depth(&b.target).cmp(&depth(&a.target)).then(ib.cmp(ia)));
    let mut plan: Vec<Teardown> = order.into_iter().map(|(_, m)| Teardown::Unmount(m.target.clone())).collect();
    if table.iter().any(|m| m.target == "/" && m.fstype != "rootfs" && m.fstype != "tmpfs" && m.fstype != "ramfs") {
        plan.push(Teardown::RemountReadOnly("/".into()));
    }
    plan
}

fn depth(path: &str) -> usize {
    path.split('/').filter(|s| !s.is_empty()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime - rootfs rootfs rw
23 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
24 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:3 - sysfs sysfs rw
25 22 0:5 / /dev rw,nosuid,relatime - devtmpfs devtmpfs rw,size=1000k,mode=755
26 22 0:24 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
27 22 254:1 / /var/lib/ghost rw,relatime shared:9 - ext4 /dev/vda2 rw
28 27 0:30 / /var/lib/ghost/models/My\\040Models rw - tmpfs tmp\\040fs rw
29 22 0:31 / /tmp rw - tmpfs tmpfs rw
30 29 0:32 / /tmp rw - tmpfs tmpfs rw
garbage line
";

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let t = parse_mountinfo(SAMPLE);
        assert_eq!(t.len(), 9);
        assert_eq!(t[1], MountEntry { id: 23, parent: 22, target: "/proc".into(), fstype: "proc".into(), source: "proc".into() });
        assert_eq!(t[5].fstype, "ext4");
        assert_eq!(t[5].source, "/dev/vda2");
        assert_eq!(t[6].target, "/var/lib/ghost/models/My Models");
        assert_eq!(t[6].source, "tmp fs");
        assert!(is_mounted(&t, "/run"));
        assert!(!is_mounted(&t, "/dev/pts"));
    }

    #[test]
    fn teardown_goes_children_first_and_skips_api_filesystems() {
        let plan = teardown_plan(&parse_mountinfo(SAMPLE));
        let names: Vec<String> = plan
            .iter()
            .map(|t| match t {
                Teardown::Unmount(p) => format!("umount {p}"),
                Teardown::RemountReadOnly(p) => format!("ro {p}"),
            })
            .collect();
        assert_eq!(
            names,
            ["umount /var/lib/ghost/models/My Models", "umount /var/lib/ghost", "umount /tmp", "umount /tmp", "umount /run"]
        );
    }

    #[test]
    fn a_real_root_is_remounted_read_only_last() {
        let t = parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:2 / /home rw - ext4 /dev/sda2 rw\n");
        assert_eq!(teardown_plan(&t), [Teardown::Unmount("/home".into()), Teardown::RemountReadOnly("/".into())]);
    }

    #[test]
    fn early_mounts_put_parents_first() {
        for (i, m) in EARLY_MOUNTS.iter().enumerate() {
            for earlier in &EARLY_MOUNTS[..i] {
                assert!(!earlier.target.starts_with(&format!("{}/", m.target)), "{} before its parent {}", earlier.target, m.target);
            }
        }
    }
}
