//! Starting processes for real: argv without a shell, a clean environment, its own session
//! and process group, its cgroup, user and groups, working directory, file limit, and its
//! output on the service's log pipes.
//!
//! Written on fork(2) + execve(2) rather than std's Command because Command blocks the parent
//! until the child has exec'd (it waits on an error pipe); PID 1 must not wait on a child, and
//! ten services would start one scheduler round-trip after another. What can be checked
//! before the fork (the program exists and is executable, the working directory, the user) is
//! checked there and reported as a start failure; a late exec failure is exit code 127 with a
//! line on the service's stderr. ghost-init is single-threaded, so fork is safe here.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::cgroup::Cgroups;
use crate::identity;
use crate::logbook::Logbook;
use crate::paths::Paths;
use crate::reactor::Token;
use crate::supervisor::{Os, Service};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything the child needs, prepared (allocated) before the fork.
pub struct ExecPlan {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    ids: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    nofile: Option<u64>,
    /// A terminal to make the controlling tty and stdio (console services).
    terminal: Option<CString>,
    /// With `terminal`: stderr goes to `output`'s stderr pipe (the log) instead.
    terminal_stderr_to_log: bool,
    /// stdout and stderr; None inherits PID 1's.
    output: Option<[RawFd; 2]>,
    /// Output to /dev/null (probes).
    quiet: bool,
    /// (source, target): descriptors to place at a fixed number (`ready = "fd:N"`).
    extra_fd: Option<(RawFd, RawFd)>,
    /// `cgroup.procs` of the service's cgroup; the child writes itself into it.
    cgroup_procs: Option<CString>,
    /// Printed by the child if execve fails.
    exec_error: Vec<u8>,
}

fn c(s: impl AsRef<OsStr>) -> Result<CString, String> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| format!("{:?} contains a NUL byte", s.as_ref()))
}

impl ExecPlan {
    pub fn new(argv: &[String], env: &[(String, String)]) -> Result<ExecPlan, String> {
        let program = argv.first().ok_or("empty argv")?;
        // Checked here so that the operator gets the reason at once, not an exit code.
        let p = c(program)?;
        // SAFETY: access(2) on a valid C string.
        if unsafe { libc::access(p.as_ptr(), libc::X_OK) } != 0 {
            return Err(format!("exec {program}: {}", std::io::Error::last_os_error()));
        }
        Ok(ExecPlan {
            program: p,
            argv: argv.iter().map(c).collect::<Result<_, _>>()?,
            envp: env.iter().map(|(k, v)| c(format!("{k}={v}"))).collect::<Result<_, _>>()?,
            cwd: None,
            ids: None,
            nofile: None,
            terminal: None,
            terminal_stderr_to_log: false,
            output: None,
            quiet: false,
            extra_fd: None,
            cgroup_procs: None,
            exec_error: format!("ghost-init: exec {program} failed; exit code 127\n").into_bytes(),
        })
    }

    /// stdin, stdout and stderr on /dev/null.
    pub fn quiet(&mut self) {
        self.quiet = true;
    }

    /// A program PID 1 asks something of (`--reexec-check`): `fd3` placed as its descriptor
    /// 3, stdout and stderr into `out`, stdin /dev/null, its own session.
    pub fn with_fd3_and_output(mut self, fd3: RawFd, out: RawFd) -> ExecPlan {
        self.extra_fd = Some((fd3, 3));
        self.output = Some([out, out]);
        self
    }

    /// Forks and execs; returns the child's pid without waiting for it.
    pub fn spawn(&self) -> Result<i32, String> {
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        let devnull = c("/dev/null")?;
        // SAFETY: fork in a single-threaded process; the child only makes async-signal-safe
        // calls on memory prepared above and leaves by execve or _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: see above; never returns.
            unsafe { self.child(&argv, &envp, &devnull) }
        }
        Ok(pid)
    }

    /// In the child. Async-signal-safe only.
    unsafe fn child(&self, argv: &[*const libc::c_char], envp: &[*const libc::c_char], devnull: &CString) -> ! {
        let fail = |what: &[u8]| -> ! {
            libc::write(2, what.as_ptr().cast(), what.len());
            libc::_exit(127)
        };
        let _ = crate::sys::child_unblock_signals();
        // Join the cgroup first, so that everything the service ever forks is in it.
        if let Some(procs) = &self.cgroup_procs {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(b"ghost-init: cannot join the service's cgroup\n");
            }
            libc::close(fd);
        }
        match &self.terminal {
            Some(tty) => {
                if crate::sys::child_take_terminal(tty).is_err() {
                    fail(b"ghost-init: cannot take the terminal\n");
                }
                if let (true, Some([_, err])) = (self.terminal_stderr_to_log, self.output) {
                    if libc::dup2(err, 2) < 0 {
                        fail(b"ghost-init: cannot attach the log pipe\n");
                    }
                }
                crate::sys::child_default_window_size(0);
            }
            None => {
                if libc::setsid() < 0 {
                    fail(b"ghost-init: setsid failed\n");
                }
                let fd = libc::open(devnull.as_ptr(), libc::O_RDWR);
                if fd >= 0 {
                    libc::dup2(fd, 0);
                    if self.quiet {
                        libc::dup2(fd, 1);
                        libc::dup2(fd, 2);
                    }
                    if fd > 2 {
                        libc::close(fd);
                    }
                }
                if let Some([out, err]) = self.output {
                    if libc::dup2(out, 1) < 0 || libc::dup2(err, 2) < 0 {
                        fail(b"ghost-init: cannot attach the log pipes\n");
                    }
                }
            }
        }
        if let Some((src, target)) = self.extra_fd {
            if libc::dup2(src, target) < 0 {
                fail(b"ghost-init: cannot place the readiness descriptor\n");
            }
        }
        if let Some(n) = self.nofile {
            let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) < 0 {
                fail(b"ghost-init: setrlimit(RLIMIT_NOFILE) failed\n");
            }
        }
        if let Some(dir) = &self.cwd {
            if libc::chdir(dir.as_ptr()) < 0 {
                fail(b"ghost-init: chdir to working_dir failed\n");
            }
        }
        if let Some((uid, gid, groups)) = &self.ids {
            if libc::setgroups(groups.len(), groups.as_ptr()) < 0 || libc::setgid(*gid) < 0 || libc::setuid(*uid) < 0 {
                fail(b"ghost-init: dropping to the service's user and groups failed\n");
            }
        }
        libc::execve(self.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(&self.exec_error)
    }
}

/// PID 1's side of every service process: spawning with pipes and cgroups, signalling,
/// killing, OOM accounting.
pub struct RealOs {
    pub paths: Paths,
    pub hosted: bool,
    pub first_boot: bool,
    pub logbook: Logbook,
    pub cgroups: Cgroups,
    pub notify_socket: Option<String>,
    /// Read ends of `ready = "fd:N"` pipes, by service id.
    pub ready_fds: HashMap<u32, OwnedFd>,
    /// Descriptors created since the loop last looked: to add to the reactor.
    pub new_fds: Vec<(RawFd, Token)>,
    pub oom_seen: HashMap<String, u64>,
    rng: u64,
}

impl RealOs {
    pub fn new(paths: Paths, hosted: bool) -> RealOs {
        let logbook = Logbook::new(paths.log_dir());
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
        RealOs {
            paths,
            hosted,
            first_boot: false,
            logbook,
            cgroups: Cgroups::disabled(),
            notify_socket: None,
            ready_fds: HashMap::new(),
            new_fds: Vec::new(),
            oom_seen: HashMap::new(),
            rng: seed,
        }
    }

    fn plan(&mut self, svc: &Service) -> Result<ExecPlan, String> {
        let spec = &svc.spec;
        let path = std::env::var("PATH").ok().filter(|_| self.hosted).unwrap_or_else(|| DEFAULT_PATH.into());
        let mut env = vec![
            ("PATH".to_string(), path),
            ("GHOST_SERVICE".into(), svc.name.clone()),
            ("GHOST_ROOT".into(), self.paths.root().display().to_string()),
            ("GHOST_SOCKET".into(), self.paths.control_socket().display().to_string()),
        ];
        if self.first_boot {
            env.push(("GHOST_FIRST_BOOT".into(), "1".into()));
        }
        if spec.ready == "notify" || spec.watchdog_s > 0 {
            if let Some(sock) = &self.notify_socket {
                env.push(("NOTIFY_SOCKET".into(), sock.clone()));
            }
        }
        if spec.watchdog_s > 0 {
            env.push(("WATCHDOG_USEC".into(), (spec.watchdog_s * 1_000_000).to_string()));
        }
        let mut home = "/".to_string();
        let mut ids = None;
        if spec.user.is_some() || spec.group.is_some() {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
            let (uid, mut gid, supp) = match &spec.user {
                Some(u) => {
                    let user = identity::lookup_user(&passwd, u).ok_or_else(|| format!("key `user`: no user `{u}` in /etc/passwd"))?;
                    home = user.home.clone();
                    (user.uid, user.gid, identity::supplementary_groups(&groups, u))
                }
                None => (0, 0, Vec::new()),
            };
            if let Some(g) = &spec.group {
                gid = identity::lookup_group(&groups, g).ok_or_else(|| format!("key `group`: no group `{g}` in /etc/group"))?;
            }
            ids = Some((uid, gid, supp));
        }
        env.push(("HOME".into(), home));
        if let Some(t) = &spec.terminal {
            env.push(("TERM".into(), crate::service_file::term_for(t).into()));
        }
        // The service's own `env` wins over ours (PATH, GHOST_ROOT, HOME…), except for the
        // sd_notify protocol's variables, which must point at this supervisor.
        let protocol = |k: &str| k == "NOTIFY_SOCKET" || k == "WATCHDOG_USEC";
        env.retain(|(k, _)| protocol(k) || !spec.env.contains_key(k));
        env.extend(spec.env.iter().filter(|(k, _)| !protocol(k)).map(|(k, v)| (k.clone(), v.clone())));
        let mut plan = ExecPlan::new(&spec.exec, &env)?;
        if let Some(dir) = &spec.working_dir {
            if !Path::new(dir).is_dir() {
                return Err(format!("key `working_dir`: {dir} is not a directory"));
            }
            plan.cwd = Some(c(dir)?);
        }
        if let Some(t) = &spec.terminal {
            // Checked at each start: a serial port or a pty may come and go, and a serial port
            // whose UART is not there has a device node that cannot be opened (EIO). Opened
            // without becoming PID 1's controlling terminal, and closed again at once.
            use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                .open(t)
                .and_then(|f| f.metadata());
            match opened {
                Ok(m) if m.file_type().is_char_device() => {}
                Ok(_) => return Err(format!("key `terminal`: {t} is not a character device")),
                Err(e) => return Err(format!("key `terminal`: {t}: {e}")),
            }
            plan.terminal = Some(c(t)?);
            plan.terminal_stderr_to_log = !spec.stderr_on_terminal();
        }
        plan.ids = ids;
        plan.nofile = spec.nofile;
        let (writers, fresh) = self.logbook.writers(svc.id, &svc.name, spec).map_err(|e| format!("log pipes: {e}"))?;
        self.new_fds.extend(fresh.into_iter().map(|(fd, s)| (fd, Token::Log(svc.id, s))));
        plan.output = Some(writers);
        plan.cgroup_procs = self.cgroups.prepare(&svc.name, spec)?;
        Ok(plan)
    }
}

impl Os for RealOs {
    fn spawn(&mut self, svc: &Service) -> Result<i32, String> {
        let mut plan = self.plan(svc)?;
        // `fd:N`: a fresh pipe per start; the service writes a newline when it is ready.
        let mut ready_pipe = None;
        if let Some(n) = svc.spec.ready.strip_prefix("fd:").and_then(|n| n.parse::<RawFd>().ok()) {
            let mut fds = [0; 2];
            // SAFETY: pipe2 writes two descriptors, owned below.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
                return Err(format!("readiness pipe: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: fresh descriptors.
            let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            plan.extra_fd = Some((w.as_raw_fd(), n));
            ready_pipe = Some((r, w));
        }
        let pid = plan.spawn()?;
        if let Some((r, w)) = ready_pipe {
            drop(w);
            self.new_fds.push((r.as_raw_fd(), Token::ReadyFd(svc.id)));
            self.ready_fds.insert(svc.id, r);
        }
        self.oom_seen.insert(svc.name.clone(), self.cgroups.oom_kills(&svc.name));
        Ok(pid)
    }

    fn signal(&mut self, _svc: &Service, pid: i32, sig: i32) {
        // The process group first (grandchildren too); if the service left its group, the pid.
        if crate::sys::kill(-pid, sig).is_err() {
            let _ = crate::sys::kill(pid, sig);
        }
    }

    fn kill_all(&mut self, svc: &Service, pid: i32) {
        if !self.cgroups.kill(&svc.name) {
            let _ = crate::sys::kill(-pid, libc::SIGKILL);
            let _ = crate::sys::kill(pid, libc::SIGKILL);
        }
        if let Some(fd) = self.ready_fds.remove(&svc.id) {
            drop(fd);
        }
    }

    fn oom_killed(&mut self, svc: &Service) -> bool {
        let now = self.cgroups.oom_kills(&svc.name);
        let before = self.oom_seen.insert(svc.name.clone(), now).unwrap_or(0);
        now > before
    }

    fn jitter(&mut self) -> f64 {
        // xorshift64: spreading restarts needs no cryptography.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        0.9 + (self.rng % 2001) as f64 / 10_000.0
    }
}

/// Runs `program` on `tty` as a session leader with the terminal as its controlling tty.
pub fn spawn_on_terminal(program: &str, tty: &str) -> Result<i32, String> {
    spawn_with(&[program.to_string()], &[("TERM".into(), "linux".into())], Some(tty))
}

/// Runs `argv` with PATH, HOME and `env` (which wins), on `tty` as above, or without one: its
/// own session, stdin on /dev/null, stdout and stderr PID 1's (the console).
pub fn spawn_with(argv: &[String], env: &[(String, String)], tty: Option<&str>) -> Result<i32, String> {
    let mut all = vec![("PATH".to_string(), DEFAULT_PATH.to_string()), ("HOME".into(), "/".into())];
    all.retain(|(k, _)| !env.iter().any(|(e, _)| e == k));
    all.extend(env.iter().cloned());
    let mut plan = ExecPlan::new(argv, &all)?;
    if let Some(t) = tty {
        plan.terminal = Some(c(t)?);
    }
    plan.spawn()
}
