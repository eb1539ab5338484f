//! shell.exec: a child process in its own process group, with resource limits set between
//! fork and exec, output caps, and a deadline after which the whole group is killed.
//!
//! Limits (see [`ShellLimits`]): RLIMIT_CPU (the timeout plus one second), RLIMIT_AS,
//! RLIMIT_NOFILE, RLIMIT_NPROC (the caller's uid's current thread count plus
//! `extra_processes`: RLIMIT_NPROC counts every task of the real uid, so a fixed small number
//! would fail at once for a busy user; root is exempt from it by the kernel, where the
//! supervisor's cgroup `pids_max` is what bounds a fork bomb) and RLIMIT_CORE = 0.
//! When the command ends, whatever it left running in its process group is killed too, so
//! that a stray background child can neither outlive the call nor hold its pipes open.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEFAULT_TIMEOUT_S: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellLimits {
    /// RLIMIT_AS in bytes.
    pub address_space: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// How many more tasks than its uid already has the command may create (RLIMIT_NPROC).
    pub extra_processes: u64,
    /// Bytes of stdout and of stderr kept (the rest is read and counted, not kept).
    pub output_cap: usize,
    /// Grace after the command exits for its pipes to reach end of file.
    pub drain_grace: Duration,
    /// The shell for `command` (`/bin/sh`).
    pub shell: String,
}

impl Default for ShellLimits {
    fn default() -> Self {
        ShellLimits {
            address_space: 2 << 30,
            open_files: 256,
            extra_processes: 128,
            output_cap: 64 << 10,
            drain_grace: Duration::from_millis(200),
            shell: "/bin/sh".into(),
        }
    }
}

/// Tasks (threads) that belong to real uid `uid`: what RLIMIT_NPROC is compared against.
fn tasks_of_uid(uid: u32) -> u64 {
    let mut n = 0;
    for pid in super::process::pids() {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        if super::process::status_uid(&status) == Some(uid) {
            n += status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(1);
        }
    }
    n
}

struct Capture {
    kept: Vec<u8>,
    total: u64,
    open: bool,
}

impl Capture {
    fn new() -> Capture {
        Capture { kept: Vec::new(), total: 0, open: true }
    }

    fn take(&mut self, data: &[u8], cap: usize) {
        self.total += data.len() as u64;
        let room = cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
    }
}

pub fn exec(args: &Value, limits: &ShellLimits) -> Result<Value, String> {
    let timeout = Duration::from_secs(args.get("timeout_s").and_then(Value::as_u64).unwrap_or(DEFAULT_TIMEOUT_S));
    let mut cmd = if let Some(command) = args.get("command").and_then(Value::as_str) {
        let mut c = Command::new(&limits.shell);
        c.arg("-c").arg(command);
        c
    } else {
        let argv: Vec<&str> = args
            .get("argv")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let (prog, rest) = argv.split_first().ok_or("argv is empty")?;
        let mut c = Command::new(prog);
        c.args(rest);
        c
    };
    // Without `cwd`, `/`: the directory the policy resolved relative operands against.
    cmd.current_dir(args.get("cwd").and_then(Value::as_str).unwrap_or("/"));
    for (k, v) in args.get("env").and_then(Value::as_object).into_iter().flatten() {
        cmd.env(k, v.as_str().unwrap_or_default());
    }
    let stdin_data = args.get("stdin").and_then(Value::as_str).map(|s| s.as_bytes().to_vec());
    cmd.stdin(if stdin_data.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);

    let cpu = timeout.as_secs() + 1;
    let nproc = tasks_of_uid(unsafe { libc::getuid() }) + limits.extra_processes;
    let rlimits = [
        (libc::RLIMIT_CPU, cpu, cpu + 1),
        (libc::RLIMIT_AS, limits.address_space, limits.address_space),
        (libc::RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (libc::RLIMIT_NPROC, nproc, nproc),
        (libc::RLIMIT_CORE, 0, 0),
    ];
    // SAFETY: between fork and exec only setrlimit(2), which is async-signal-safe, runs; the
    // array is prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for (res, soft, hard) in rlimits {
                let lim = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
                if libc::setrlimit(res, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }

    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let pgid = child.id() as i32;
    if let (Some(data), Some(mut stdin)) = (stdin_data, child.stdin.take()) {
        // A writer thread, so that a child that does not read its input cannot block us.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let result = supervise(&mut child, pgid, started + timeout, limits);
    let (status, timed_out, out, err) = match result {
        Ok(x) => x,
        Err(e) => {
            kill_group(pgid);
            let _ = child.wait();
            return Err(e);
        }
    };
    let text = |c: &Capture| String::from_utf8_lossy(&c.kept).into_owned();
    Ok(json!({
        "exit_code": status.code(),
        "signal": status.signal(),
        "stdout": text(&out),
        "stderr": text(&err),
        "stdout_bytes": out.total,
        "stderr_bytes": err.total,
        "stdout_truncated": out.total > out.kept.len() as u64,
        "stderr_truncated": err.total > err.kept.len() as u64,
        "timed_out": timed_out,
        "duration_ms": started.elapsed().as_millis() as u64,
    }))
}

fn kill_group(pgid: i32) {
    // SAFETY: plain syscall; pgid is our child's group, which cannot be reused while the
    // (unreaped) leader exists.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// Whether the child has exited, without reaping it (so its pid, and the group id, stay ours).
fn exited_unreaped(pid: i32) -> bool {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with WNOWAIT only inspects the child's state.
    let r = unsafe {
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
    };
    r == 0 && unsafe { info.si_pid() } == pid
}

type Supervised = (std::process::ExitStatus, bool, Capture, Capture);

fn supervise(child: &mut Child, pgid: i32, deadline: Instant, limits: &ShellLimits) -> Result<Supervised, String> {
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let (mut out, mut err) = (Capture::new(), Capture::new());
    let mut timed_out = false;
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if exited_at.is_none() {
            if exited_unreaped(pgid) {
                // The command is done: end whatever it left behind in its group, then reap.
                kill_group(pgid);
                exited_at = Some(Instant::now());
            } else if Instant::now() >= deadline {
                kill_group(pgid);
                timed_out = true;
                exited_at = Some(Instant::now());
            }
        }
        if let Some(t) = exited_at {
            if (!out.open && !err.open) || t.elapsed() >= limits.drain_grace {
                break;
            }
        }
        let mut fds = Vec::with_capacity(2);
        if out.open {
            fds.push(libc::pollfd { fd: stdout.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        if err.open {
            fds.push(libc::pollfd { fd: stderr.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        let wait_ms = match exited_at {
            Some(_) => 20,
            None => deadline.saturating_duration_since(Instant::now()).as_millis().clamp(1, 20) as i32,
        };
        // SAFETY: fds is a valid array of pollfd for the length given (with none, poll sleeps).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for fd in fds.iter().filter(|f| f.revents != 0) {
            let (pipe, cap): (&mut dyn Read, &mut Capture) =
                if fd.fd == stdout.as_raw_fd() { (&mut stdout, &mut out) } else { (&mut stderr, &mut err) };
            match pipe.read(&mut buf) {
                Ok(0) => cap.open = false,
                Ok(n) => cap.take(&buf[..n], limits.output_cap),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => cap.open = false,
            }
        }
    }
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    Ok((status, timed_out, out, err))
}
