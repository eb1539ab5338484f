//! cgroup v2: one cgroup per service under /sys/fs/cgroup/ghost/NAME with memory_max, cpu_max
//! and pids_max; cgroup.kill to stop everything of a service at once; OOM kills read from
//! memory.events. Where the controllers are missing (the build machines' v1 hosts), ghost-init
//! says so once and falls back to process groups and rlimits.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::service_file::{parse_percent, parse_size, ServiceFile};

const WANTED: [&str; 3] = ["memory", "pids", "cpu"];

#[derive(Debug)]
pub struct Cgroups {
    /// `/sys/fs/cgroup/ghost` when cgroup v2 with the controllers is usable.
    base: Option<PathBuf>,
}

impl Cgroups {
    pub fn disabled() -> Cgroups {
        Cgroups { base: None }
    }

    /// The hierarchy a previous program of PID 1 set up (a re-execution).
    pub fn adopt(base: Option<PathBuf>) -> Cgroups {
        Cgroups { base }
    }

    pub fn base(&self) -> Option<&Path> {
        self.base.as_deref()
    }

    /// Prepares `<mount>/<dir>` for service cgroups; `Err` says why cgroups are not used.
    pub fn setup(mount: &Path, dir: &str) -> Result<Cgroups, String> {
        let have = std::fs::read_to_string(mount.join("cgroup.controllers"))
            .map_err(|_| format!("no cgroup v2 hierarchy at {}", mount.display()))?;
        let missing: Vec<&str> = WANTED.iter().copied().filter(|c| !have.split_whitespace().any(|h| h == *c)).collect();
        if !missing.is_empty() {
            return Err(format!("cgroup v2 at {} lacks the {} controller(s)", mount.display(), missing.join(", ")));
        }
        let enable = WANTED.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ");
        std::fs::write(mount.join("cgroup.subtree_control"), &enable)
            .map_err(|e| format!("{}: cannot enable controllers: {e}", mount.join("cgroup.subtree_control").display()))?;
        let base = mount.join(dir);
        std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
        std::fs::write(base.join("cgroup.subtree_control"), &enable).map_err(|e| format!("{}: {e}", base.join("cgroup.subtree_control").display()))?;
        Ok(Cgroups { base: Some(base) })
    }

    fn dir(&self, name: &str) -> Option<PathBuf> {
        self.base.as_ref().map(|b| b.join(name))
    }

    /// Creates the service's cgroup with its limits; returns the `cgroup.procs` path the child
    /// writes itself into. `Ok(None)` without cgroups.
    pub fn prepare(&self, name: &str, spec: &ServiceFile) -> Result<Option<CString>, String> {
        let Some(dir) = self.dir(name) else { return Ok(None) };
        std::fs::create_dir_all(&dir).map_err(|e| format!("cgroup {}: {e}", dir.display()))?;
        let write = |file: &str, value: String| {
            std::fs::write(dir.join(file), &value).map_err(|e| format!("cgroup {}: {file} = {value}: {e}", dir.display()))
        };
        write("memory.max", spec.memory_max.as_deref().and_then(parse_size).map_or("max".into(), |b| b.to_string()))?;
        // The swap limit follows the memory limit so that memory_max means what it says.
        if spec.memory_max.is_some() && dir.join("memory.swap.max").exists() {
            write("memory.swap.max", "0".into())?;
        }
        write("pids.max", spec.pids_max.map_or("max".into(), |p| p.to_string()))?;
        write("cpu.max", spec.cpu_max.as_deref().and_then(parse_percent).map_or("max 100000".into(), |p| format!("{} 100000", p as u64 * 1000)))?;
        let procs = dir.join("cgroup.procs");
        CString::new(procs.as_os_str().as_encoded_bytes()).map(Some).map_err(|_| "cgroup path has a NUL byte".into())
    }

    /// Kills every process in the service's cgroup; false when that was not possible.
    pub fn kill(&self, name: &str) -> bool {
        let Some(dir) = self.dir(name) else { return false };
        if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
            return true;
        }
        // Kernels before 5.14 have no cgroup.kill: SIGKILL each member.
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = crate::sys::kill(pid, libc::SIGKILL);
        }
        true
    }

    /// Whether the service's cgroup still holds a process (`populated 1` in cgroup.events);
    /// false without cgroups.
    pub fn populated(&self, name: &str) -> bool {
        let Some(dir) = self.dir(name) else { return false };
        std::fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|t| memory_event(&t, "populated") > 0)
    }

    /// The `oom_kill` counter of memory.events.
    pub fn oom_kills(&self, name: &str) -> u64 {
        let Some(dir) = self.dir(name) else { return 0 };
        let text = std::fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
        memory_event(&text, "oom_kill")
    }

    pub fn memory_current(&self, name: &str) -> Option<u64> {
        let dir = self.dir(name)?;
        std::fs::read_to_string(dir.join("memory.current")).ok()?.trim().parse().ok()
    }

    /// Removes an empty service cgroup (after the service is gone for good).
    pub fn remove(&self, name: &str) {
        if let Some(dir) = self.dir(name) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

pub fn memory_event(text: &str, key: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_events_are_read() {
        let t = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(memory_event(t, "oom_kill"), 2);
        assert_eq!(memory_event(t, "oom"), 3);
        assert_eq!(memory_event(t, "nope"), 0);
    }

    #[test]
    fn a_tree_without_controllers_is_refused_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        assert!(Cgroups::setup(d.path(), "ghost").unwrap_err().contains("no cgroup v2 hierarchy"));
        std::fs::write(d.path().join("cgroup.controllers"), "cpuset io\n").unwrap();
        let e = Cgroups::setup(d.path(), "ghost").unwrap_err();
        assert!(e.contains("memory, pids, cpu"), "{e}");
    }

    #[test]
    fn limits_are_written_as_the_kernel_wants_them() {
        // A fake hierarchy: plain files stand in for the kernel's.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        let cg = Cgroups::setup(d.path(), "ghost").unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("cgroup.subtree_control")).unwrap(), "+memory +pids +cpu");
        let spec = ServiceFile::parse("exec = [\"/bin/true\"]\nmemory_max = \"256M\"\ncpu_max = \"50%\"\npids_max = 64", "t").unwrap();
        let procs = cg.prepare("redis", &spec).unwrap().unwrap();
        let dir = d.path().join("ghost/redis");
        assert_eq!(procs.to_str().unwrap(), dir.join("cgroup.procs").to_str().unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("memory.max")).unwrap(), (256u64 << 20).to_string());
        assert_eq!(std::fs::read_to_string(dir.join("cpu.max")).unwrap(), "50000 100000");
        assert_eq!(std::fs::read_to_string(dir.join("pids.max")).unwrap(), "64");
        assert!(Cgroups::disabled().base.is_none());
    }
}
