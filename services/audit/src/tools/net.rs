//! net.check: a TCP connect or a plain HTTP/1.1 GET, each within `timeout_ms` overall.
//! net.free_port: the processes holding a TCP port's listening socket, stopped.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub const DEFAULT_TIMEOUT_MS: u64 = 3000;
/// How long net.free_port waits after SIGTERM by default, and at most.
pub const DEFAULT_GRACE_MS: u64 = 2000;
pub const MAX_GRACE_MS: u64 = 30000;
/// How long net.free_port waits for the port after SIGKILL.
pub const KILL_WAIT_MS: u64 = 2000;
/// Between two looks at /proc/net/tcp*.
const POLL: Duration = Duration::from_millis(20);

struct Probe {
    ok: bool,
    address: Option<String>,
    status: Option<u16>,
    error: Option<String>,
}

pub fn check(args: &Value) -> Result<Value, String> {
    let kind = args.get("kind").and_then(Value::as_str).unwrap_or("tcp");
    let target = args.get("target").and_then(Value::as_str).unwrap_or_default();
    let timeout = Duration::from_millis(args.get("timeout_ms").and_then(Value::as_u64).unwrap_or(DEFAULT_TIMEOUT_MS));
    let expect = args.get("expect_status").and_then(Value::as_u64).map(|s| s as u16);
    let started = Instant::now();
    let deadline = started + timeout;
    let probe = match kind {
        "http" => http(target, deadline, expect),
        _ => match connect(target, deadline) {
            Ok((_, addr)) => Probe { ok: true, address: Some(addr.to_string()), status: None, error: None },
            Err(e) => Probe { ok: false, address: None, status: None, error: Some(e) },
        },
    };
    // A failed probe is a result ("the port is closed"), not a tool failure.
    Ok(json!({
        "kind": kind,
        "target": target,
        "ok": probe.ok,
        "latency_ms": started.elapsed().as_millis() as u64,
        "address": probe.address,
        "status": probe.status,
        "error": probe.error,
    }))
}

fn left(deadline: Instant) -> Result<Duration, String> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err("timed out".into())
    } else {
        Ok(d)
    }
}

fn connect(host_port: &str, deadline: Instant) -> Result<(TcpStream, SocketAddr), String> {
    let addrs: Vec<SocketAddr> =
        host_port.to_socket_addrs().map_err(|e| format!("cannot resolve {host_port}: {e}"))?.collect();
    let mut last = format!("no address for {host_port}");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left(deadline)?) {
            Ok(s) => return Ok((s, addr)),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// `http://host[:port]/path` → (host:port, host header, path).
fn split_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or("expected an http:// URL")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("expected http://HOST[:PORT]/PATH".into());
    }
    let has_port = if authority.starts_with('[') { authority.contains("]:") } else { authority.contains(':') };
    let hp = if has_port { authority.to_string() } else { format!("{authority}:80") };
    Ok((hp, authority.to_string(), path))
}

fn http(url: &str, deadline: Instant, expect: Option<u16>) -> Probe {
    let fail = |address: Option<String>, e: String| Probe { ok: false, address, status: None, error: Some(e) };
    let (hp, host, path) = match split_url(url) {
        Ok(x) => x,
        Err(e) => return fail(None, e),
    };
    let (mut s, addr) = match connect(&hp, deadline) {
        Ok(x) => x,
        Err(e) => return fail(None, e),
    };
    let address = Some(addr.to_string());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ghost-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    let io = (|| -> Result<u16, String> {
        s.set_write_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
        s.write_all(request.as_bytes()).map_err(|e| format!("sending the request: {e}"))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') && head.len() < 8192 {
            s.set_read_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err("timed out waiting for the response".into())
                }
                Err(e) => return Err(format!("reading the response: {e}")),
            }
        }
        let line = String::from_utf8_lossy(&head);
        let line = line.lines().next().unwrap_or("");
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
            (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
            _ => Err(format!("not an HTTP response: {}", crate::util::clip(line, 80))),
        }
    })();
    match io {
        Ok(code) => {
            let ok = match expect {
                Some(e) => code == e,
                None => (200..400).contains(&code),
            };
            let error = (!ok).then(|| match expect {
                Some(e) => format!("status {code}, expected {e}"),
                None => format!("status {code}"),
            });
            Probe { ok, address, status: Some(code), error }
        }
        Err(e) => fail(address, e),
    }
}

// ---------------------------------------------------------------------------------------------
// net.free_port

/// The inodes of the sockets listening (state 0A) on TCP `port` in a `/proc/net/tcp` or
/// `/proc/net/tcp6` table.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            (local_port == port && *f.get(3)? == "0A" && inode != 0).then_some(inode)
        })
        .collect()
}

/// The inodes of the sockets listening on `port` (IPv4 and IPv6) in this network namespace.
fn listeners(port: u16) -> Result<BTreeSet<u64>, String> {
    let mut out = BTreeSet::new();
    let mut read_any = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(table) {
            Ok(t) => {
                read_any = true;
                out.extend(listening_inodes(&t, port));
            }
            // No IPv6 in this kernel: /proc/net/tcp6 is missing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{table}: {e}")),
        }
    }
    if !read_any {
        return Err("/proc/net/tcp: not found (is /proc mounted?)".into());
    }
    Ok(out)
}

/// Whether process `pid` has one of `inodes` open (`/proc/PID/fd/N` → `socket:[INODE]`).
fn holds(pid: i32, inodes: &BTreeSet<u64>) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(Result::ok).any(|fd| {
        std::fs::read_link(fd.path()).ok().is_some_and(|target| {
            let t = target.to_string_lossy();
            t.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| inodes.contains(&i))
        })
    })
}

/// The parent of `pid`, from /proc.
fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    super::process::parse_stat(&stat).map(|p| p.ppid)
}

/// This process and its ancestors up to PID 1 (a bounded walk).
fn self_and_ancestors() -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let mut pid = std::process::id() as i32;
    for _ in 0..4096 {
        if pid <= 0 || !out.insert(pid) {
            break;
        }
        match parent(pid) {
            Some(p) => pid = p,
            None => break,
        }
    }
    out
}

/// A process to signal: through a pidfd where the kernel has them (Linux 5.3), so that a pid
/// reused meanwhile is never hit.
struct Target {
    pid: i32,
    pidfd: Option<OwnedFd>,
}

impl Target {
    fn open(pid: i32) -> Target {
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
        Target { pid, pidfd }
    }

    fn signal(&self, sig: i32) -> std::io::Result<()> {
        let r = match &self.pidfd {
            Some(fd) => unsafe {
                libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
            },
            None => libc::c_long::from(unsafe { libc::kill(self.pid, sig) }),
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// Waits (polling, until `deadline`) for the listening sockets `inodes` to be gone; true if
/// they are.
fn wait_closed(port: u16, inodes: &BTreeSet<u64>, deadline: Instant) -> Result<bool, String> {
    loop {
        if listeners(port)?.is_disjoint(inodes) {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        std::thread::sleep(POLL.min(left));
    }
}

pub fn free_port(args: &Value) -> Result<Value, String> {
    let port = args.get("port").and_then(Value::as_u64).unwrap_or(0);
    let port = u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| format!("invalid port {port}"))?;
    let grace = Duration::from_millis(
        args.get("grace_ms").and_then(Value::as_u64).unwrap_or(DEFAULT_GRACE_MS).min(MAX_GRACE_MS),
    );
    let inodes = listeners(port)?;
    if inodes.is_empty() {
        return Ok(json!({ "port": port, "holders": [], "freed": true }));
    }
    let holders: Vec<i32> = super::process::pids().into_iter().filter(|&pid| holds(pid, &inodes)).collect();
    if holders.is_empty() {
        let list: Vec<String> = inodes.iter().map(u64::to_string).collect();
        return Err(format!(
            "port {port} is listened on (socket inode {}) but no process visible here holds it (the kernel's, or another PID namespace's)",
            list.join(", ")
        ));
    }
    // Refuse before anything is sent.
    let me = std::process::id() as i32;
    let protected = self_and_ancestors();
    for &pid in &holders {
        let who = if pid == 1 {
            "PID 1 (the init)".to_string()
        } else if pid == me {
            format!("the agent itself (pid {pid})")
        } else if protected.contains(&pid) {
            format!("pid {pid}, an ancestor of the agent")
        } else {
            continue;
        };
        return Err(format!("refusing to free port {port}: it is held by {who}; nothing was signalled"));
    }
    let targets: Vec<Target> = holders.iter().map(|&pid| Target::open(pid)).collect();
    let mut sent: Vec<(i32, String, &'static str)> = Vec::new();
    for t in &targets {
        let cmdline = super::process::cmdline(t.pid);
        // SIGCONT first: a stopped process would not act on SIGTERM before it is continued.
        let cont = t.signal(libc::SIGCONT);
        match cont.and_then(|()| t.signal(libc::SIGTERM)) {
            Ok(()) => sent.push((t.pid, cmdline, "TERM")),
            // It ended meanwhile: nothing to free there.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => {
                let done: Vec<String> = sent.iter().map(|(p, _, _)| p.to_string()).collect();
                return Err(format!(
                    "SIGTERM to pid {} (holding port {port}): {e}; already sent to: [{}]",
                    t.pid,
                    done.join(", ")
                ));
            }
        }
    }
    let mut freed = wait_closed(port, &inodes, Instant::now() + grace)?;
    if !freed {
        for t in &targets {
            if !holds(t.pid, &inodes) {
                continue;
            }
            match t.signal(libc::SIGKILL) {
                Ok(()) => match sent.iter_mut().find(|(p, _, _)| *p == t.pid) {
                    Some(entry) => entry.2 = "KILL",
                    None => sent.push((t.pid, super::process::cmdline(t.pid), "KILL")),
                },
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(format!("SIGKILL to pid {} (holding port {port}): {e}", t.pid)),
            }
        }
        freed = wait_closed(port, &inodes, Instant::now() + Duration::from_millis(KILL_WAIT_MS))?;
    }
    // Freed: nothing listens on the port any more (not even a newcomer).
    let freed = freed && listeners(port)?.is_empty();
    let holders: Vec<Value> = sent
        .into_iter()
        .map(|(pid, cmdline, signal)| json!({ "pid": pid, "cmdline": cmdline, "signal": signal }))
        .collect();
    Ok(json!({ "port": port, "holders": holders, "freed": freed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_found_by_port_in_both_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_inodes(tcp, 8080), [12345], "the established connection on 8080 is no listener");
        assert_eq!(listening_inodes(tcp, 80), [777]);
        assert!(listening_inodes(tcp, 443).is_empty());
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_inodes(tcp6, 8080), [999]);
        assert!(listening_inodes("garbage\nmore garbage", 8080).is_empty());
    }

    #[test]
    fn the_agent_and_its_ancestors_are_known() {
        let mine = self_and_ancestors();
        assert!(mine.contains(&(std::process::id() as i32)));
        assert!(mine.contains(&(std::os::unix::process::parent_id() as i32)));
    }

    #[test]
    fn urls_split_into_address_host_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/health").unwrap(),
            ("127.0.0.1:8080".into(), "127.0.0.1:8080".into(), "/health".into())
        );
        assert_eq!(split_url("http://localhost").unwrap(), ("localhost:80".into(), "localhost".into(), "/".into()));
        assert_eq!(split_url("http://[::1]:81?x=1").unwrap(), ("[::1]:81".into(), "[::1]:81".into(), "/?x=1".into()));
        assert!(split_url("https://x").is_err());
        assert!(split_url("http://user@x/").is_err());
    }
}
