//! PID 1 replaces its own program without a reboot, keeping every service running.
//!
//! The old program writes its state — every service with its pid, state, counters and
//! pending timers, the log pipes and their recent lines, the control and notify sockets, the
//! DHCP lease, the event history — as JSON into a memfd, clears close-on-exec on every
//! descriptor that must survive, and execs the new program with `--resume FD --fallback FD2`.
//! Exec keeps the pid, so every service process is still PID 1's child: the new program reads
//! the memfd, checks it (format, every descriptor open, every service pid its own child) and
//! adopts it all. Signals stay blocked across exec, so a child that ended in between is
//! reaped by the new program's first turn.
//!
//! Two guards:
//! - Before anything is handed over, the new program is run once as
//!   `BINARY --reexec-check 3` with the handover on descriptor 3; it must read it and say yes
//!   (a binary that does not run here, or speaks another format, is refused and nothing
//!   changes).
//! - A new program that fails its checks after the exec execs the previous program again
//!   (`--fallback`, an open descriptor of the old binary, so a replaced file does not matter),
//!   which resumes from the same memfd and says why it is back.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use ghost_proto::{self as proto, InitInfo, ReexecReport, Reply};

use crate::init::{Init, Phase};
use crate::logbook::{now_ms, SavedLog};
use crate::reactor::{Reactor, Token};
use crate::say;
use crate::supervisor::{SavedSupervisor, Supervisor};

/// The handover format; a program that reads another refuses in `--reexec-check`.
pub const FORMAT: u32 = 1;
/// How long `--reexec-check` may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Set in the environment of a new program, it fails its checks (tests of the fallback).
pub const FAULT_ENV: &str = "GHOST_INIT_FAIL_RESUME";

#[derive(Debug, Serialize, Deserialize)]
pub struct Handover {
    pub format: u32,
    /// The program that wrote it, and its version.
    pub from: String,
    pub from_version: String,
    /// The program it was written for.
    pub to: String,
    /// CLOCK_MONOTONIC at the execve, in microseconds.
    pub exec_us: u64,
    pub hosted: bool,
    pub root: PathBuf,
    pub cmdline: String,
    /// Since the first program started, at the exec.
    pub up_ms: u64,
    pub first_boot: bool,
    pub supervisor: SavedSupervisor,
    pub logs: Vec<SavedLog>,
    pub ready_fds: Vec<(u32, RawFd)>,
    pub control_fd: Option<RawFd>,
    pub notify_fd: Option<RawFd>,
    pub notify_path: Option<String>,
    pub cgroup_base: Option<PathBuf>,
    pub oom_seen: Vec<(String, u64)>,
    pub events: Vec<proto::Event>,
    pub removed: Vec<String>,
    pub strays_reaped: u64,
    /// The lease on the interface, when DHCP configured it.
    pub dhcp_lease: Option<crate::network::client::Lease>,
    pub reexecs: u32,
    /// PID 1's own boot log (the rescue console shows it).
    pub boot_log: String,
}

impl Handover {
    /// Every descriptor the new program takes over.
    fn fds(&self) -> Vec<RawFd> {
        let mut v: Vec<RawFd> = self.logs.iter().flat_map(|l| l.read.into_iter().chain(l.write)).collect();
        v.extend(self.ready_fds.iter().map(|&(_, fd)| fd));
        v.extend(self.control_fd);
        v.extend(self.notify_fd);
        v
    }
}

/// A re-execution waiting for its `--reexec-check`.
pub struct Pending {
    pub client: u32,
    pub binary: PathBuf,
    pub check_pid: i32,
    pub deadline: Instant,
    /// What the check printed.
    pub out: std::fs::File,
}

/// PID 1's record of its re-executions.
#[derive(Default)]
pub struct Record {
    pub pending: Option<Pending>,
    /// Checked; execs once the loop has flushed its replies.
    pub go: Option<(u32, PathBuf)>,
    pub count: u32,
    pub last: Option<ReexecReport>,
    /// After a resume: the previous program's descriptors, closed once the resume succeeded.
    pub originals: Vec<RawFd>,
}

fn monotonic_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// The program this process runs.
pub fn current_binary() -> String {
    std::fs::read_link("/proc/self/exe").map(|p| p.display().to_string()).unwrap_or_else(|_| "ghost-init".into())
}

fn set_cloexec(fd: RawFd, on: bool) -> bool {
    // SAFETY: fcntl flag changes on a descriptor number; a closed one gives EBADF.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFD);
        if fl < 0 {
            return false;
        }
        let want = if on { fl | libc::FD_CLOEXEC } else { fl & !libc::FD_CLOEXEC };
        libc::fcntl(fd, libc::F_SETFD, want) >= 0
    }
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// A memfd holding `bytes`; close-on-exec unless `inherit`.
fn memfd(bytes: &[u8], inherit: bool) -> Result<OwnedFd, String> {
    let name = CString::new("ghost-init-handover").unwrap_or_default();
    // SAFETY: memfd_create with a valid name; the fd is owned at once.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), if inherit { 0 } else { libc::MFD_CLOEXEC }) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor owned by no one else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, bytes).map_err(|e| format!("writing the handover: {e}"))?;
    Ok(OwnedFd::from(f))
}

/// Reads a handover from descriptor `fd` (from its start; the descriptor stays open).
pub fn read_handover(fd: RawFd) -> Result<Handover, String> {
    if !is_open(fd) {
        return Err(format!("descriptor {fd} (the handover) is not open"));
    }
    // SAFETY: duplicating an open descriptor; the copy is owned by the File below.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(format!("descriptor {fd}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `dup` is ours.
    let mut f = unsafe { std::fs::File::from_raw_fd(dup) };
    let mut text = String::new();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).map_err(|e| format!("the handover: {e}"))?;
    f.read_to_string(&mut text).map_err(|e| format!("the handover: {e}"))?;
    let h: Handover = serde_json::from_str(&text).map_err(|e| format!("the handover does not parse: {e}"))?;
    if h.format != FORMAT {
        return Err(format!("the handover is format {} (from ghost-init {}); this program reads format {FORMAT}", h.format, h.from_version));
    }
    Ok(h)
}

/// `ghost-init --reexec-check FD`: whether this program can take over the handover on FD.
pub fn check_main(fd: RawFd) -> i32 {
    match read_handover(fd) {
        Ok(h) => {
            println!("ghost-init {}: can take over {} service(s) from ghost-init {} ({})", env!("CARGO_PKG_VERSION"), h.supervisor.len(), h.from_version, h.from);
            0
        }
        Err(e) => {
            println!("ghost-init {}: cannot take over: {e}", env!("CARGO_PKG_VERSION"));
            1
        }
    }
}

impl Init {
    /// `reexec`: checks the request and starts the new program's `--reexec-check`; the reply
    /// waits for it (`Ok(())`).
    pub fn begin_reexec(&mut self, client: u32, binary: Option<String>) -> Result<(), String> {
        if self.phase != Phase::Running {
            return Err(format!("PID 1 re-executes only while running; it is {}", match self.phase {
                Phase::Booting | Phase::WaitingForCritical => "still booting",
                Phase::Rescue { .. } => "in the rescue console",
                Phase::Stopping { .. } => "shutting down",
                Phase::Running => "running",
            }));
        }
        if self.reexec.pending.is_some() || self.reexec.go.is_some() {
            return Err("a re-execution is already under way".into());
        }
        if let Some(name) = self.supervisor.overlapping() {
            return Err(format!("service {name} is being replaced (its old and new process overlap); try again once it is done"));
        }
        let binary = match binary {
            Some(b) => PathBuf::from(b),
            None => {
                let cur = current_binary();
                if cur.ends_with(" (deleted)") {
                    return Err(format!("the running program {cur} was removed; name the new one"));
                }
                PathBuf::from(cur)
            }
        };
        if !binary.is_absolute() {
            return Err(format!("{}: the new program must be an absolute path", binary.display()));
        }
        let meta = std::fs::metadata(&binary).map_err(|e| format!("{}: {e}", binary.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a regular file", binary.display()));
        }
        let path_c = CString::new(binary.as_os_str().as_encoded_bytes()).map_err(|_| format!("{}: contains a NUL byte", binary.display()))?;
        // SAFETY: access(2) on a valid C string.
        if unsafe { libc::access(path_c.as_ptr(), libc::X_OK) } != 0 {
            return Err(format!("{}: not executable: {}", binary.display(), std::io::Error::last_os_error()));
        }
        let h = self.handover(&binary, None);
        let json = serde_json::to_vec(&h).map_err(|e| format!("serialising the handover: {e}"))?;
        let state = memfd(&json, false)?;
        let out_path = self.paths.run().join("reexec-check.out");
        let out = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
        let _ = std::fs::remove_file(&out_path);
        let argv = [binary.display().to_string(), "--reexec-check".into(), "3".into()];
        let env: Vec<(String, String)> = std::env::vars().collect();
        let plan = crate::spawn::ExecPlan::new(&argv, &env)?.with_fd3_and_output(state.as_raw_fd(), out.as_raw_fd());
        let check_pid = plan.spawn()?;
        say!("re-exec: asking {} whether it can take over ({} bytes of state)", binary.display(), json.len());
        self.reexec.pending = Some(Pending { client, binary, check_pid, deadline: Instant::now() + CHECK_TIMEOUT, out });
        Ok(())
    }

    /// The check ended (`exit`) or ran out of time (`None`).
    pub fn reexec_checked(&mut self, exit: Option<crate::supervisor::Exit>) {
        let Some(mut p) = self.reexec.pending.take() else { return };
        let mut said = String::new();
        let _ = std::io::Seek::seek(&mut p.out, std::io::SeekFrom::Start(0));
        let _ = (&p.out).take(4096).read_to_string(&mut said);
        let said = said.trim().replace('\n', "; ");
        let refusal = match exit {
            Some(e) if e.success() => None,
            Some(e) => Some(format!("{} refused the handover ({e}): {said}", p.binary.display())),
            None => {
                let _ = crate::sys::kill(p.check_pid, libc::SIGKILL);
                Some(format!("{} --reexec-check did not answer within {} s", p.binary.display(), CHECK_TIMEOUT.as_secs()))
            }
        };
        match refusal {
            Some(why) => {
                say!("re-exec refused: {why}; nothing changed");
                if let Some(c) = &mut self.control {
                    c.reply(p.client, &Reply::error(why));
                }
            }
            None => self.reexec.go = Some((p.client, p.binary)),
        }
    }

    /// A re-execution asked for but not done yet is dropped (shutdown began): its check is
    /// killed and its client told why.
    pub fn cancel_reexec(&mut self, why: &str) {
        let client = match (self.reexec.pending.take(), self.reexec.go.take()) {
            (Some(p), _) => {
                let _ = crate::sys::kill(p.check_pid, libc::SIGKILL);
                Some(p.client)
            }
            (None, Some((client, _))) => Some(client),
            (None, None) => None,
        };
        if let (Some(client), Some(c)) = (client, &mut self.control) {
            c.reply(client, &Reply::error(format!("re-exec cancelled: {why}")));
        }
    }

    pub fn reexec_deadline(&self) -> Option<Instant> {
        self.reexec.pending.as_ref().map(|p| p.deadline)
    }

    /// The state as the new program will find it.
    fn handover(&self, to: &Path, exec_us: Option<u64>) -> Handover {
        let now = Instant::now();
        Handover {
            format: FORMAT,
            from: current_binary(),
            from_version: env!("CARGO_PKG_VERSION").into(),
            to: to.display().to_string(),
            exec_us: exec_us.unwrap_or(0),
            hosted: self.hosted,
            root: self.paths.root().to_path_buf(),
            cmdline: self.cmdline.line.clone(),
            up_ms: self.start.elapsed().as_millis() as u64,
            first_boot: self.first_boot,
            supervisor: self.supervisor.save(now),
            logs: self.os.logbook.save(),
            ready_fds: self.os.ready_fds.iter().map(|(&id, fd)| (id, fd.as_raw_fd())).collect(),
            control_fd: self.control.as_ref().map(|c| c.listener_fd()),
            notify_fd: self.notify.as_ref().map(|n| n.raw()),
            notify_path: self.os.notify_socket.clone(),
            cgroup_base: self.os.cgroups.base().map(Path::to_path_buf),
            oom_seen: self.os.oom_seen.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            events: self.events.iter().cloned().collect(),
            removed: self.removed.clone(),
            strays_reaped: self.strays_reaped,
            dhcp_lease: self.dhcp_lease(),
            reexecs: self.reexec.count,
            boot_log: String::from_utf8_lossy(&crate::log::contents()).into_owned(),
        }
    }

    /// Replaces the program. Returns only when the exec failed (the loop goes on as before).
    pub fn exec_now(&mut self, client: u32, binary: PathBuf) {
        let fail = |init: &mut Init, why: String| {
            say!("re-exec failed: {why}; PID 1 goes on as before");
            if let Some(c) = &mut init.control {
                c.reply(client, &Reply::error(why));
            }
        };
        if self.phase != Phase::Running {
            return fail(self, "PID 1 is no longer running normally (shutdown or rescue began)".into());
        }
        if let Some(name) = self.supervisor.overlapping() {
            return fail(self, format!("service {name} began an overlapping restart meanwhile; try again once it is done"));
        }
        // The previous program, open, for a new one that fails its checks.
        let exe = CString::new("/proc/self/exe").unwrap_or_default();
        // SAFETY: open(2) of a valid path; not close-on-exec on purpose.
        let old = unsafe { libc::open(exe.as_ptr(), libc::O_RDONLY) };
        if old < 0 {
            return fail(self, format!("/proc/self/exe: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `old` is ours.
        let old = unsafe { OwnedFd::from_raw_fd(old) };
        let exec_us = monotonic_us();
        let h = self.handover(&binary, Some(exec_us));
        let json = match serde_json::to_vec(&h) {
            Ok(j) => j,
            Err(e) => return fail(self, format!("serialising the handover: {e}")),
        };
        let state = match memfd(&json, true) {
            Ok(s) => s,
            Err(e) => return fail(self, e),
        };
        let kept = h.fds();
        let n = self.supervisor.services.len();
        say!("re-exec: handing {n} service(s) to {}", binary.display());
        let args = [binary.display().to_string(), "--resume".into(), state.as_raw_fd().to_string(), "--fallback".into(), old.as_raw_fd().to_string()];
        let err = exec(&binary, &args, &kept);
        fail(self, format!("exec {}: {err}", binary.display()));
    }

    /// `init`: what PID 1 is.
    pub fn init_info(&self) -> InitInfo {
        InitInfo {
            // SAFETY: getpid has no failure mode.
            pid: unsafe { libc::getpid() },
            binary: current_binary(),
            version: env!("CARGO_PKG_VERSION").into(),
            up_ms: self.start.elapsed().as_millis() as u64,
            reexecs: self.reexec.count,
            last_reexec: self.reexec.last.clone(),
        }
    }
}

/// execve with `kept` inherited; returns the error when it fails (and `kept` close-on-exec again).
fn exec(program: &Path, args: &[String], kept: &[RawFd]) -> std::io::Error {
    let prog = match CString::new(program.as_os_str().as_encoded_bytes()) {
        Ok(p) => p,
        Err(_) => return std::io::Error::other("the path contains a NUL byte"),
    };
    let argv_c: Vec<CString> = args.iter().map(|a| c_string(a)).collect();
    fexec_or_exec(Err(&prog), &argv_c, &next_env(), kept)
}

/// A C string of `s` (a NUL inside, which no argument of ours has, becomes a space).
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// The environment the next program gets: ours, less the test fault (it is for one program).
fn next_env() -> Vec<CString> {
    std::env::vars().filter(|(k, _)| k != FAULT_ENV).map(|(k, v)| c_string(&format!("{k}={v}"))).collect()
}

fn fexec_or_exec(target: Result<RawFd, &CString>, argv: &[CString], env: &[CString], kept: &[RawFd]) -> std::io::Error {
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    for &fd in kept {
        set_cloexec(fd, false);
    }
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings that outlive the call.
    unsafe {
        match target {
            Ok(fd) => libc::fexecve(fd, argv_p.as_ptr(), env_p.as_ptr()),
            Err(path) => libc::execve(path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr()),
        };
    }
    let err = std::io::Error::last_os_error();
    for &fd in kept {
        set_cloexec(fd, true);
    }
    err
}

/// The checks a new program makes before it touches anything; `Err` sends it back to the
/// previous program.
fn check(h: &Handover, fell_back: bool) -> Result<(), String> {
    if !fell_back {
        if let Ok(v) = std::env::var(FAULT_ENV) {
            return Err(format!("{FAULT_ENV}={v} is set in its environment"));
        }
    }
    for fd in h.fds() {
        if !is_open(fd) {
            return Err(format!("descriptor {fd} of the handover is not open"));
        }
    }
    if fell_back {
        // The previous program again: it wrote this state itself and takes it as it is.
        return Ok(());
    }
    // Every service process is still there (a child that ended is a zombie until reaped).
    // A main pid a service named itself (MAINPID=) may be no child of ours and may have ended.
    for (name, pid) in h.supervisor.pids() {
        if crate::procfs::stat(pid).is_none() && !h.supervisor.named_pid(name) {
            return Err(format!("service {name}: pid {pid} does not exist"));
        }
    }
    Ok(())
}

/// After `--resume FD [--fallback FD2] [--fell-back WHY]`: the init as the previous program
/// left it, or the reason it cannot be taken over.
pub fn resume(fd: RawFd, fell_back: Option<String>, reactor: Reactor, start: Instant) -> Result<Init, (String, Reactor)> {
    let h = match read_handover(fd) {
        Ok(h) => h,
        Err(e) => return Err((e, reactor)),
    };
    if let Err(e) = check(&h, fell_back.is_some()) {
        return Err((e, reactor));
    }
    // Close-on-exec copies of every handed-over descriptor, made before anything is built: one
    // that cannot be copied sends us back to the previous program, whose originals are
    // untouched (they are closed by `main` only once this succeeded).
    let originals = h.fds();
    let mut copies = std::collections::HashMap::with_capacity(originals.len());
    for &fd in &originals {
        // SAFETY: F_DUPFD_CLOEXEC of a descriptor checked open above; the copy is ours.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if copy < 0 {
            return Err((format!("descriptor {fd} of the handover cannot be copied: {}", std::io::Error::last_os_error()), reactor));
        }
        // SAFETY: a fresh descriptor owned by no one else.
        copies.insert(fd, unsafe { OwnedFd::from_raw_fd(copy) });
    }
    // From here on nothing fails: every descriptor's copy is adopted and owned.
    let now = Instant::now();
    let began = start.checked_sub(Duration::from_millis(h.up_ms)).unwrap_or(start);
    crate::log::restore(h.boot_log.as_bytes());
    let mut init = Init::new(h.hosted, crate::paths::Paths::new(&h.root), &h.cmdline, reactor, began);
    let _ = init.load_config();
    init.first_boot = h.first_boot;
    init.os.first_boot = h.first_boot;
    init.os.cgroups = crate::cgroup::Cgroups::adopt(h.cgroup_base.clone());
    init.os.notify_socket = h.notify_path.clone();
    init.os.oom_seen = h.oom_seen.iter().cloned().collect();
    // Every descriptor asked for here is one of `h.fds()`, copied above, and asked for once.
    let adopt = &mut |fd: RawFd| -> OwnedFd { copies.remove(&fd).unwrap_or_else(|| unreachable!("descriptor {fd} is not in the handover's list")) };
    for (fd, id, stream) in init.os.logbook.restore(h.logs, adopt) {
        init.watch(fd, Token::Log(id, stream));
    }
    for (id, fd) in h.ready_fds {
        let fd = adopt(fd);
        init.watch(fd.as_raw_fd(), Token::ReadyFd(id));
        init.os.ready_fds.insert(id, fd);
    }
    if let Some(fd) = h.notify_fd {
        let n = crate::notify::NotifySocket::adopt(adopt(fd));
        init.watch(n.raw(), Token::Notify);
        init.notify = Some(n);
    }
    if let Some(fd) = h.control_fd {
        let c = crate::control::ControlServer::adopt(adopt(fd), init.control_access());
        init.watch(c.listener_fd(), Token::ControlListener);
        init.control = Some(c);
    }
    let services = h.supervisor.len();
    init.supervisor = Supervisor::restore(h.supervisor, now);
    init.events = h.events.into();
    init.removed = h.removed;
    init.strays_reaped = h.strays_reaped;
    init.phase = Phase::Running;
    if !init.hosted {
        init.watch_power_button();
    }
    if let Some(lease) = h.dhcp_lease {
        init.resume_dhcp(lease);
    }
    let took_us = monotonic_us().saturating_sub(h.exec_us);
    let running = current_binary();
    let report = ReexecReport {
        from: h.from.clone(),
        to: running.clone(),
        took_us,
        services,
        fell_back: fell_back.clone(),
        ts_ms: now_ms(),
    };
    init.reexec.count = h.reexecs + 1;
    init.reexec.last = Some(report);
    let detail = match &fell_back {
        None => format!("{} → {running} in {:.2} ms; {services} service(s) kept", h.from, took_us as f64 / 1000.0),
        Some(why) => format!("{} failed its checks ({why}); {running} runs again, {services} service(s) kept", h.to),
    };
    say!("re-exec: {detail}");
    init.publish_event(proto::Event { ts_ms: now_ms(), kind: proto::EventKind::Reexec, service: None, pid: None, detail });
    // Children that ended during the exec: their SIGCHLD stayed pending (signals stay blocked
    // across exec), so the loop's first turn reaps them.
    init.reexec.originals = originals;
    Ok(init)
}

/// The new program cannot take over: the previous one runs again from the same handover.
/// Returns only when that is impossible.
pub fn fall_back(state_fd: RawFd, previous: Option<RawFd>, why: &str) -> String {
    let Some(old) = previous.filter(|&fd| is_open(fd)) else {
        return format!("{why}; and there is no previous program to go back to");
    };
    say!("re-exec: this program cannot take over ({why}); going back to the previous one");
    let argv = ["ghost-init", "--resume", &state_fd.to_string(), "--fallback", &old.to_string(), "--fell-back", why].map(c_string);
    let err = fexec_or_exec(Ok(old), &argv, &next_env(), &[state_fd, old]);
    format!("{why}; and the previous program could not be run again: {err}")
}
