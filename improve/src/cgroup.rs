//! cgroup v2 limits on a candidate's build and tests: each cargo run goes into a cgroup of its
//! own, beside the one `ghost improve` runs in (under ghost-init's `/sys/fs/cgroup/ghost` when
//! a service or an operator's shell of the image runs it), with the unit's `build_memory_max`
//! and `build_pids_max`, and is killed as a whole with `cgroup.kill` at its deadline.
//!
//! Where there is no cgroup v2 hierarchy with the memory and pids controllers (a v1 or hybrid
//! build host), [`locate`] says why, and the crucible says so in the build log and the verdict:
//! the build is then bounded by its timeout only.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WANTED: [&str; 2] = ["memory", "pids"];

/// The cgroup2 mount point in `/proc/self/mounts`'s text.
pub fn mount_point(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

/// Where build cgroups are made: the parent of our own cgroup (its siblings are ours to make,
/// and a cgroup with processes in it cannot have limited children), or the root when we run in
/// it; its `cgroup.subtree_control` must hand down memory and pids (enabled here if the
/// kernel lets us). `self_cgroup` is `/proc/self/cgroup`'s text; `Err` says why there is none.
pub fn locate(mount: Option<&Path>, self_cgroup: &str) -> Result<PathBuf, String> {
    let Some(mount) = mount else { return Err("no cgroup v2 file system is mounted".into()) };
    let have = std::fs::read_to_string(mount.join("cgroup.controllers")).map_err(|e| format!("{}: {e}", mount.join("cgroup.controllers").display()))?;
    let missing: Vec<&str> = WANTED.iter().copied().filter(|c| !have.split_whitespace().any(|h| h == *c)).collect();
    if !missing.is_empty() {
        return Err(format!("the cgroup v2 hierarchy at {} lacks the {} controller(s)", mount.display(), missing.join(" and ")));
    }
    let Some(own) = self_cgroup.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Err("this process is in no cgroup v2 (/proc/self/cgroup has no 0:: line)".into());
    };
    let own = own.trim().trim_start_matches('/');
    let parent = match Path::new(own).parent() {
        Some(p) if !own.is_empty() => mount.join(p),
        _ => mount.to_path_buf(),
    };
    let control = parent.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).unwrap_or_default();
    let off: Vec<&str> = WANTED.iter().copied().filter(|c| !enabled.split_whitespace().any(|h| h == *c)).collect();
    if !off.is_empty() {
        let enable = off.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ");
        std::fs::write(&control, &enable).map_err(|e| format!("{}: cannot enable {enable}: {e}", control.display()))?;
    }
    Ok(parent)
}

/// Where build cgroups go on this machine, from /proc.
pub fn locate_here() -> Result<PathBuf, String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    locate(mount_point(&mounts).as_deref(), &own)
}

/// One command's cgroup.
#[derive(Debug)]
pub struct Cgroup {
    pub dir: PathBuf,
    /// `DIR/cgroup.procs`, which the child writes itself into before it execs.
    pub procs: CString,
}

impl Cgroup {
    /// Makes `parent/name` with `memory.max` (and no swap beyond it) and `pids.max`.
    pub fn create(parent: &Path, name: &str, memory_max: u64, pids_max: u64) -> Result<Cgroup, String> {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("cgroup {}: {e}", dir.display()))?;
        let write = |file: &str, value: String| std::fs::write(dir.join(file), &value).map_err(|e| format!("cgroup {}: {file} = {value}: {e}", dir.display()));
        let made = write("memory.max", memory_max.to_string())
            .and_then(|()| if dir.join("memory.swap.max").exists() { write("memory.swap.max", "0".into()) } else { Ok(()) })
            .and_then(|()| write("pids.max", pids_max.to_string()));
        if let Err(e) = made {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).map_err(|_| format!("cgroup {}: a NUL byte in the path", dir.display()))?;
        Ok(Cgroup { dir, procs })
    }

    /// Kills everything in it (cgroup.kill; before Linux 5.14, SIGKILL to each member).
    pub fn kill(&self) {
        if std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// What the kernel counted: the memory peak (Linux 5.19+) and the times pids.max refused a
    /// fork, for the log.
    pub fn report(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        let peak = read("memory.peak").trim().parse::<u64>().ok().map(|b| format!("memory peak {} MiB, ", b >> 20)).unwrap_or_default();
        let oom = event(&read("memory.events"), "oom_kill");
        let forks = event(&read("pids.events"), "max");
        format!("{peak}{oom} OOM kill(s), {forks} fork(s) refused at pids.max")
    }

    /// Kills what is left, waits (at most 5 s) until it is empty and removes it.
    pub fn remove(self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while event(&std::fs::read_to_string(self.dir.join("cgroup.events")).unwrap_or_default(), "populated") > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `KEY N` of a cgroup events file.
fn event(text: &str, key: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory that looks like a cgroup2 mount with ghost-init's `ghost/` and a service in it.
    fn fake(controllers: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), controllers).unwrap();
        std::fs::create_dir_all(d.path().join("ghost/conductor")).unwrap();
        std::fs::write(d.path().join("ghost/cgroup.subtree_control"), "cpu memory pids\n").unwrap();
        d
    }

    #[test]
    fn the_mount_point_is_found_in_proc_mounts() {
        let m = "sysfs /sys sysfs rw 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(mount_point(m), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(mount_point("cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n"), None);
    }

    #[test]
    fn build_cgroups_go_beside_our_own_under_ghosts_with_the_limits_written() {
        let d = fake("cpuset cpu io memory pids\n");
        let parent = locate(Some(d.path()), "0::/ghost/conductor\n").unwrap();
        assert_eq!(parent, d.path().join("ghost"));
        let cg = Cgroup::create(&parent, "improve-sample-1-build", 512 << 20, 64).unwrap();
        assert_eq!(cg.dir, d.path().join("ghost/improve-sample-1-build"));
        assert_eq!(std::fs::read_to_string(cg.dir.join("memory.max")).unwrap(), (512u64 << 20).to_string());
        assert_eq!(std::fs::read_to_string(cg.dir.join("pids.max")).unwrap(), "64");
        assert_eq!(cg.procs.to_str().unwrap(), cg.dir.join("cgroup.procs").to_str().unwrap());
        std::fs::write(cg.dir.join("pids.events"), "max 3\n").unwrap();
        std::fs::write(cg.dir.join("memory.events"), "low 0\noom_kill 1\n").unwrap();
        assert_eq!(cg.report(), "1 OOM kill(s), 3 fork(s) refused at pids.max");
        cg.kill();
        assert_eq!(std::fs::read_to_string(cg.dir.join("cgroup.kill")).unwrap(), "1", "cgroup.kill is how it is killed");
        // In the root cgroup (a real host's root shell): under the root, controllers enabled there.
        let parent = locate(Some(d.path()), "0::/\n").unwrap();
        assert_eq!(parent, d.path());
        assert_eq!(std::fs::read_to_string(d.path().join("cgroup.subtree_control")).unwrap(), "+memory +pids");
    }

    #[test]
    fn no_usable_hierarchy_is_refused_with_the_reason() {
        assert_eq!(locate(None, "0::/\n").unwrap_err(), "no cgroup v2 file system is mounted");
        let d = fake("cpuset cpu io\n");
        let e = locate(Some(d.path()), "0::/ghost/conductor\n").unwrap_err();
        assert!(e.contains("lacks the memory and pids controller(s)"), "{e}");
        // A hybrid host: cgroup2 is mounted but this process lives in v1 hierarchies only.
        let d = fake("memory pids\n");
        let e = locate(Some(d.path()), "4:memory:/x\n1:cpu:/\n").unwrap_err();
        assert!(e.contains("no 0:: line"), "{e}");
        // A hierarchy that does not exist where /proc says.
        let e = locate(Some(&d.path().join("nowhere")), "0::/\n").unwrap_err();
        assert!(e.contains("nowhere/cgroup.controllers"), "{e}");
        // A cgroup of that name already there (another build of the same id) is not reused.
        let parent = d.path().join("ghost");
        std::fs::create_dir(parent.join("taken")).unwrap();
        assert!(Cgroup::create(&parent, "taken", 1 << 30, 64).unwrap_err().contains("taken"));
    }
}
