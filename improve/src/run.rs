//! Running the crucible's commands: output to a log file, a deadline after which the whole
//! process group is killed, and — for a candidate's tests and benchmark — a sandbox: new mount
//! and network namespaces in which every filesystem is read-only but the scratch copy, and there
//! is no network: the new network namespace has only its own loopback (up, so that tests may
//! talk to themselves on 127.0.0.1; nothing routes out of it).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cgroup::Cgroup;

/// How a command ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    Exited(i32),
    Signalled(i32),
    TimedOut,
}

impl Ended {
    pub fn ok(&self) -> bool {
        *self == Ended::Exited(0)
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(c) => write!(f, "exit code {c}"),
            Ended::Signalled(s) => write!(f, "killed by signal {s}"),
            Ended::TimedOut => write!(f, "timed out"),
        }
    }
}

/// Where a sandboxed command may write.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub writable: Vec<PathBuf>,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_int = 0x8000;
const SYS_MOUNT_SETATTR: libc::c_long = 442;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cvt(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// In the child, between fork and exec: only system calls on prepared strings.
unsafe fn enter(writable: &[CString]) -> io::Result<()> {
    cvt(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET) as libc::c_long)?;
    loopback_up()?;
    let root = c"/";
    cvt(libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) as libc::c_long)?;
    for w in writable {
        cvt(libc::mount(w.as_ptr(), w.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null()) as libc::c_long)?;
    }
    let ro = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    cvt(libc::syscall(SYS_MOUNT_SETATTR, libc::AT_FDCWD, root.as_ptr(), AT_RECURSIVE, &ro as *const MountAttr, std::mem::size_of::<MountAttr>()))?;
    let rw = MountAttr { attr_set: 0, attr_clr: MOUNT_ATTR_RDONLY, propagation: 0, userns_fd: 0 };
    for w in writable {
        cvt(libc::syscall(SYS_MOUNT_SETATTR, libc::AT_FDCWD, w.as_ptr(), AT_RECURSIVE, &rw as *const MountAttr, std::mem::size_of::<MountAttr>()))?;
    }
    Ok(())
}

/// In the child, in its new network namespace: `lo` up (SIOCSIFFLAGS, as `ip link set lo up`).
unsafe fn loopback_up() -> io::Result<()> {
    let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut req: libc::ifreq = std::mem::zeroed();
    for (d, b) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *b as libc::c_char;
    }
    let mut r = libc::ioctl(s, libc::SIOCGIFFLAGS as _, &mut req);
    if r == 0 {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        r = libc::ioctl(s, libc::SIOCSIFFLAGS as _, &req);
    }
    let err = io::Error::last_os_error();
    libc::close(s);
    if r < 0 {
        return Err(err);
    }
    Ok(())
}

/// In the child: moves itself into the cgroup whose `cgroup.procs` is `procs`.
unsafe fn join_cgroup(procs: &CString) -> io::Result<()> {
    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let wrote = libc::write(fd, b"0".as_ptr().cast(), 1);
    let err = io::Error::last_os_error();
    libc::close(fd);
    if wrote != 1 {
        return Err(err);
    }
    Ok(())
}

/// Runs `cmd` with stdout and stderr appended to `log`, killing its process group (and its
/// cgroup, when it runs in one) at `timeout`.
pub fn run(mut cmd: Command, timeout: Duration, sandbox: Option<&Sandbox>, cgroup: Option<&Cgroup>, log: &Path) -> io::Result<(Ended, Duration)> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
    let writable: Vec<CString> = match sandbox {
        Some(s) => s.writable.iter().map(|p| CString::new(p.as_os_str().as_bytes())).collect::<Result<_, _>>().map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        None => Vec::new(),
    };
    let sandboxed = sandbox.is_some();
    let procs = cgroup.map(|c| c.procs.clone());
    unsafe {
        cmd.pre_exec(move || {
            // Into the cgroup first, so that everything it starts is counted and limited too.
            if let Some(p) = &procs {
                join_cgroup(p)?;
            }
            // Its own process group, so that a timeout kills what it started too.
            if libc::setpgid(0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if sandboxed {
                enter(&writable)?;
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    let pidfd = pidfd_open(pid);
    let deadline = started + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            use std::os::unix::process::ExitStatusExt;
            // Whatever it left running in its group (or its cgroup) goes with it.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            if let Some(cg) = cgroup {
                cg.kill();
            }
            let ended = match (status.code(), status.signal()) {
                (Some(c), _) => Ended::Exited(c),
                (None, Some(s)) => Ended::Signalled(s),
                _ => Ended::Exited(-1),
            };
            return Ok((ended, started.elapsed()));
        }
        let now = Instant::now();
        if now >= deadline {
            if let Some(cg) = cgroup {
                cg.kill();
            }
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
            return Ok((Ended::TimedOut, started.elapsed()));
        }
        wait_readable(pidfd.as_ref(), deadline - now);
    }
}

/// A pidfd of `pid` (readable once it exits), if the kernel has them.
fn pidfd_open(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Until the process behind `pidfd` exits or `max` passes (without a pidfd: 5 ms).
fn wait_readable(pidfd: Option<&std::os::fd::OwnedFd>, max: Duration) {
    use std::os::fd::AsRawFd;
    match pidfd {
        Some(fd) => {
            let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = max.as_millis().clamp(1, 60_000) as libc::c_int;
            unsafe { libc::poll(&mut p, 1, ms) };
        }
        None => std::thread::sleep(max.min(Duration::from_millis(5))),
    }
}

/// The last `n` lines of a log, for a verdict's reason.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with("Compiling ")).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn a_command_past_its_deadline_is_killed_with_its_children() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("log");
        let mut c = Command::new("sh");
        c.args(["-c", "sleep 30 & echo started; wait"]);
        let (ended, took) = run(c, Duration::from_millis(300), None, None, &log).unwrap();
        assert_eq!(ended, Ended::TimedOut);
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(std::fs::read_to_string(&log).unwrap().contains("started"));
    }

    #[test]
    fn a_command_joins_its_cgroup_before_exec_and_the_cgroup_is_killed_at_the_deadline() {
        // A directory that looks like a cgroup: the child writes "0" (itself) into cgroup.procs;
        // at the deadline "1" goes into cgroup.kill.
        let t = tempfile::tempdir().unwrap();
        let cg = crate::cgroup::Cgroup::create(t.path(), "build", 1 << 30, 64).unwrap();
        std::fs::write(cg.dir.join("cgroup.procs"), "").unwrap();
        let log = t.path().join("log");
        let mut c = Command::new("sh");
        c.args(["-c", "echo started; sleep 30"]);
        let (ended, _) = run(c, Duration::from_millis(300), None, Some(&cg), &log).unwrap();
        assert_eq!(ended, Ended::TimedOut);
        assert_eq!(std::fs::read_to_string(cg.dir.join("cgroup.procs")).unwrap(), "0");
        assert_eq!(std::fs::read_to_string(cg.dir.join("cgroup.kill")).unwrap(), "1");
        // A cgroup that cannot be joined: the command does not run outside it.
        let gone = crate::cgroup::Cgroup { dir: t.path().join("gone"), procs: std::ffi::CString::new(t.path().join("gone/cgroup.procs").to_str().unwrap()).unwrap() };
        let err = run(Command::new("true"), Duration::from_secs(5), None, Some(&gone), &log).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn the_sandbox_writes_only_its_scratch_and_has_no_network() {
        if !root() {
            eprintln!("skipped: the sandbox needs root (mount and network namespaces)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let scratch = t.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let outside = t.path().join("outside");
        let log = t.path().join("log");
        let sb = Sandbox { writable: vec![scratch.clone()] };
        let script = format!(
            "echo in > {s}/in && echo out > {o}; echo wrote-outside=$?; \
             python3 -c 'import socket\nl = socket.create_server((\"127.0.0.1\", 0))\nsocket.create_connection(l.getsockname(), 1)\nprint(\"loopback ok\")\ntry:\n    socket.create_connection((\"192.0.2.1\", 80), 1)\nexcept OSError as e:\n    print(\"outside:\", e)' 2>&1",
            s = scratch.display(),
            o = outside.display()
        );
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        let (ended, _) = run(c, Duration::from_secs(20), Some(&sb), None, &log).unwrap();
        let out = std::fs::read_to_string(&log).unwrap();
        assert!(ended.ok(), "{ended}: {out}");
        assert_eq!(std::fs::read_to_string(scratch.join("in")).unwrap(), "in\n");
        assert!(!outside.exists(), "nothing is written outside the scratch copy: {out}");
        assert!(out.contains("wrote-outside=") && !out.contains("wrote-outside=0"), "{out}");
        assert!(out.contains("loopback ok"), "its own loopback works: {out}");
        assert!(out.contains("Network is unreachable") || out.contains("Errno 101"), "no network beyond it: {out}");
    }
}
