//! Shared helpers for the integration tests: where the built binaries are, a temporary hosted
//! root, and a running ghost-init whose console lines can be awaited.
//!
//! Binaries come from `GHOST_BIN_DIR` (set by tests/run, which builds them once for the whole
//! suite); without it, the workspace's musl debug build and then the host debug build are used.

pub mod agent_world;
pub mod measure;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A built binary of the workspace; fails loudly (not a skip) when it has not been built.
pub fn bin(name: &str) -> PathBuf {
    // The static musl build first (what the image ships), then the host build: `ghost` (with
    // Candle) is built for the host only, to keep the suite's build time down.
    let t = workspace_root().join("target");
    let mut candidates: Vec<PathBuf> = std::env::var_os("GHOST_BIN_DIR").map(|d| PathBuf::from(d).join(name)).into_iter().collect();
    candidates.extend([t.join("x86_64-unknown-linux-musl/debug").join(name), t.join("debug").join(name)]);
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!("{name} is not built (looked at {candidates:?}); run tests/run, or `cargo build -p {name}` first")
    })
}

/// A temporary root for hosted mode, with /etc/ghost/services ready for service files.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Root {
        let dir = tempfile::Builder::new().prefix("ghost-root-").tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("etc/ghost/services")).expect("services dir");
        Root { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn service(&self, name: &str, toml: &str) -> &Root {
        std::fs::write(self.path().join(format!("etc/ghost/services/{name}.toml")), toml).expect("write service file");
        self
    }

    pub fn ghost_toml(&self, toml: &str) -> &Root {
        std::fs::write(self.path().join("etc/ghost/ghost.toml"), toml).expect("write ghost.toml");
        self
    }
}

impl Default for Root {
    fn default() -> Self {
        Root::new()
    }
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// Console lines of a process, awaited by content rather than by time.
#[derive(Clone, Default)]
pub struct Console {
    inner: Arc<(Mutex<Lines>, Condvar)>,
}

impl Console {
    fn attach(&self, stream: impl Read + Send + 'static) {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (m, cv) = &*me.inner;
                m.lock().unwrap().lines.push(line);
                cv.notify_all();
            }
            let (m, cv) = &*me.inner;
            m.lock().unwrap().closed = true;
            cv.notify_all();
        });
    }

    pub fn text(&self) -> String {
        self.inner.0.lock().unwrap().lines.join("\n")
    }

    /// The first line containing `needle`, waiting up to `timeout` for it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.lines.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let now = Instant::now();
            if g.closed || now >= deadline {
                let all = g.lines.join("\n");
                drop(g);
                panic!("no line containing {needle:?} within {timeout:?} (stream closed: {}); console so far:\n{all}", self.closed());
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Waits until the stream ends (the process closed its output).
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let mut g = m.lock().unwrap();
        while !g.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
        true
    }

    fn closed(&self) -> bool {
        self.inner.0.lock().unwrap().closed
    }
}

/// How ghost-init runs in a test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Isolation {
    /// PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`).
    PidNamespace,
    /// An ordinary process and child subreaper.
    Subreaper,
}

/// Whether this machine lets us make PID namespaces (root, unshare present).
pub fn pid_namespaces_available() -> Result<(), String> {
    let out = Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("unshare --pid failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("unshare not runnable: {e}")),
    }
}

/// A running ghost-init in hosted mode.
pub struct Ghost {
    pub child: Child,
    pub console: Console,
    pub stdout: Console,
    pub isolation: Isolation,
    /// Host pid of ghost-init itself (for a namespace: unshare's child).
    pub pid: i32,
}

impl Ghost {
    pub fn start(root: &Root, isolation: Isolation, cmdline: &str) -> Ghost {
        Self::start_with_stdin(root, isolation, cmdline, None)
    }

    /// Starts ghost-init; with `stdin`, those bytes are its standard input (then EOF).
    pub fn start_with_stdin(root: &Root, isolation: Isolation, cmdline: &str, stdin: Option<&str>) -> Ghost {
        let init = bin("ghost-init");
        let mut cmd = match isolation {
            Isolation::PidNamespace => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--mount-proc", "--kill-child"]).arg(&init);
                c
            }
            Isolation::Subreaper => Command::new(&init),
        };
        cmd.arg("--hosted").arg("--root").arg(root.path()).arg("--cmdline").arg(cmdline);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ghost-init");
        if let Some(text) = stdin {
            use std::io::Write;
            let mut s = child.stdin.take().expect("stdin");
            s.write_all(text.as_bytes()).expect("write stdin");
        }
        let console = Console::default();
        console.attach(child.stderr.take().expect("stderr"));
        let stdout = Console::default();
        stdout.attach(child.stdout.take().expect("stdout"));
        let pid = match isolation {
            Isolation::Subreaper => child.id() as i32,
            Isolation::PidNamespace => wait_for_child_of(child.id() as i32, Duration::from_secs(10)),
        };
        Ghost { child, console, stdout, isolation, pid }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we started.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Waits for ghost-init (or unshare, which passes its status on) to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Exit has no fd to wait on without owning a pidfd; stderr closing is our signal.
            self.console.wait_closed(Duration::from_millis(50));
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Host pids of every process in ghost-init's PID namespace, or its descendants.
    pub fn processes(&self) -> Vec<Proc> {
        let all = process_table();
        match self.isolation {
            Isolation::PidNamespace => {
                let ns = pid_ns(self.pid);
                all.into_iter().filter(|p| ns.is_some() && pid_ns(p.pid) == ns).collect()
            }
            Isolation::Subreaper => descendants(&all, self.pid, true),
        }
    }
}

impl Drop for Ghost {
    fn drop(&mut self) {
        // Leave nothing behind even when a test failed half-way.
        for p in self.processes() {
            // SAFETY: kill(2) on pids of our test's tree.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One process as /proc shows it.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    pub cmdline: String,
}

pub fn process_table() -> Vec<Proc> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 1..];
            let mut f = after.split_whitespace();
            let state = f.next()?.chars().next()?;
            let ppid = f.next()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
            Some(Proc { pid, ppid, state, cmdline })
        })
        .collect()
}

/// `root`'s descendants (and `root` itself when `include_root`).
pub fn descendants(all: &[Proc], root: i32, include_root: bool) -> Vec<Proc> {
    let mut out: Vec<Proc> = all.iter().filter(|p| p.pid == root && include_root).cloned().collect();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            frontier.push(p.pid);
            out.push(p.clone());
        }
    }
    out
}

fn pid_ns(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

fn wait_for_child_of(parent: i32, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(p) = process_table().into_iter().find(|p| p.ppid == parent) {
            return p.pid;
        }
        assert!(Instant::now() < deadline, "unshare (pid {parent}) started no child within {timeout:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls `cond` until it holds or `timeout` passes; for states with no event to wait on
/// (another process's death as seen in /proc).
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One request to a hosted ghost-init's control socket; the parsed reply.
pub fn control(root: &Root, request: &str) -> ghost_proto::Reply {
    use std::io::Write;
    let path = root.path().join("run/ghost/control.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
}

/// The status of one service through the control socket.
pub fn status(root: &Root, name: &str) -> ghost_proto::ServiceStatus {
    let r = control(root, &format!("{{\"cmd\":\"status\",\"name\":\"{name}\"}}"));
    assert!(r.ok, "status {name}: {:?}", r.error);
    r.services.unwrap().remove(0)
}

/// Waits until the control socket exists (ghost-init opens it before starting services).
pub fn wait_for_control(root: &Root, timeout: Duration) {
    let path = root.path().join("run/ghost/control.sock");
    assert!(eventually(timeout, || std::os::unix::net::UnixStream::connect(&path).is_ok()), "no control socket at {}", path.display());
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A service that may run twice at once: it listens on a fresh Unix socket, renames it over
/// the served path (connections from then on reach it), says READY=1, and on SIGTERM serves
/// what already waits on its old socket and exits. Each answer is its pid. With the file
/// `fail-next` beside the path, it exits at once instead (and removes the file).
pub const SWAPPABLE: &str = r#"
import os, signal, socket, sys
path = sys.argv[1]
flag = os.path.join(os.path.dirname(path), "fail-next")
if os.path.exists(flag):
    os.remove(flag)
    sys.exit(7)
tmp = "%s.%d" % (path, os.getpid())
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(tmp)
s.listen(128)
os.rename(tmp, path)
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
signal.signal(signal.SIGTERM, lambda *_: s.setblocking(False))
while True:
    try:
        c, _ = s.accept()
    except BlockingIOError:
        break
    c.sendall(b"%d\n" % os.getpid())
    c.close()
"#;

/// Asks the swappable service once: its pid, or the error.
pub fn ask_swappable(path: &std::path::Path) -> Result<i32, String> {
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = String::new();
    s.read_to_string(&mut line).map_err(|e| format!("read: {e}"))?;
    line.trim().parse().map_err(|_| format!("answer {line:?}"))
}
