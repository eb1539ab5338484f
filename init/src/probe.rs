//! Health and readiness probes, run inside PID 1's event loop without blocking: exec probes
//! are child processes (reaped like any other, killed at their timeout), tcp and http probes
//! are non-blocking sockets in the reactor. A probe of a service whose main process is
//! stopped (SIGSTOP) fails at once: such a service is hung, whatever its socket says.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::spawn::ExecPlan;
use crate::supervisor::{ProbeRequest, ProbeSpec};

enum Phase {
    Connecting,
    /// HTTP: request bytes still to send.
    Sending(Vec<u8>),
    /// HTTP: response bytes so far (the status line is all we need).
    Reading(Vec<u8>),
}

enum Running {
    Exec { pid: i32 },
    Socket { fd: OwnedFd, phase: Phase, http: bool },
}

struct InFlight {
    req: ProbeRequest,
    deadline: Instant,
    run: Running,
}

/// A finished probe: the request, whether it passed, and why not.
pub type Outcome = (ProbeRequest, bool, String);

#[derive(Default)]
pub struct Probes {
    inflight: HashMap<u32, InFlight>,
    next: u32,
}

/// What starting a probe needs from the event loop.
pub enum Started {
    /// Watch this socket for writability under `Token::Probe(id)`.
    Socket(u32, RawFd),
    /// An exec probe runs; its exit comes through the reaper.
    Exec,
    /// Finished before it began (bad address, stopped process, spawn failure).
    Done(Outcome),
}

impl Probes {
    pub fn start(&mut self, req: ProbeRequest, now: Instant) -> Started {
        if process_is_stopped(req.pid) {
            return Started::Done((req, false, "the main process is stopped (SIGSTOP)".into()));
        }
        let deadline = now + req.timeout;
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        match req.spec.clone() {
            ProbeSpec::Exec(argv) => {
                let env = [("PATH".to_string(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string())];
                let spawned = ExecPlan::new(&argv, &env).and_then(|mut p| {
                    p.quiet();
                    p.spawn()
                });
                match spawned {
                    Ok(pid) => {
                        self.inflight.insert(id, InFlight { req, deadline, run: Running::Exec { pid } });
                        Started::Exec
                    }
                    Err(e) => Started::Done((req, false, e)),
                }
            }
            ProbeSpec::Tcp(addr) | ProbeSpec::Http(addr) => {
                let http = matches!(req.spec, ProbeSpec::Http(_));
                let target = if http { parse_http(&addr) } else { resolve(&addr).map(|a| (a, String::new(), String::new())) };
                let (sa, host, path) = match target {
                    Ok(t) => t,
                    Err(e) => return Started::Done((req, false, e)),
                };
                match connect(sa) {
                    Ok(fd) => {
                        let raw = fd.as_raw_fd();
                        let phase = if http {
                            Phase::Sending(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ghost-init\r\nConnection: close\r\n\r\n").into_bytes())
                        } else {
                            Phase::Connecting
                        };
                        self.inflight.insert(id, InFlight { req, deadline, run: Running::Socket { fd, phase, http } });
                        Started::Socket(id, raw)
                    }
                    Err(e) => Started::Done((req, false, format!("connect {sa}: {e}"))),
                }
            }
        }
    }

    /// A probe socket is ready; returns the outcome once it is decided (its fd is then closed,
    /// which also takes it out of the reactor).
    pub fn on_ready(&mut self, id: u32) -> Option<Outcome> {
        let f = self.inflight.get_mut(&id)?;
        let Running::Socket { fd, phase, http } = &mut f.run else { return None };
        let raw = fd.as_raw_fd();
        let verdict: Option<(bool, String)> = loop {
            match phase {
                Phase::Connecting => {
                    break Some(match socket_error(raw) {
                        0 => (true, String::new()),
                        e => (false, format!("connect: {}", std::io::Error::from_raw_os_error(e))),
                    })
                }
                Phase::Sending(buf) => {
                    let e = socket_error(raw);
                    if e != 0 {
                        break Some((false, format!("connect: {}", std::io::Error::from_raw_os_error(e))));
                    }
                    // SAFETY: sending from our buffer on a socket we own.
                    let n = unsafe { libc::send(raw, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
                    if n < 0 {
                        break would_block_or(|| "send failed".into());
                    }
                    buf.drain(..n as usize);
                    if buf.is_empty() {
                        *phase = Phase::Reading(Vec::new());
                    }
                }
                Phase::Reading(got) => {
                    let mut chunk = [0u8; 512];
                    // SAFETY: reading into a stack buffer from a socket we own.
                    let n = unsafe { libc::read(raw, chunk.as_mut_ptr().cast(), chunk.len()) };
                    if n < 0 {
                        break would_block_or(|| "read failed".into());
                    }
                    got.extend_from_slice(&chunk[..n as usize]);
                    if let Some(end) = got.windows(2).position(|w| w == b"\r\n") {
                        break Some(http_verdict(&String::from_utf8_lossy(&got[..end])));
                    }
                    if n == 0 || got.len() > 4096 {
                        break Some((false, "no HTTP status line in the reply".into()));
                    }
                }
            }
        };
        let _ = http;
        let (ok, why) = verdict?;
        let f = self.inflight.remove(&id)?;
        Some((f.req, ok, why))
    }

    /// Whether the socket of probe `id` now waits to read (HTTP reply) rather than to write.
    pub fn wants_read(&self, id: u32) -> Option<RawFd> {
        match &self.inflight.get(&id)?.run {
            Running::Socket { fd, phase: Phase::Reading(_), .. } => Some(fd.as_raw_fd()),
            _ => None,
        }
    }

    /// An exec probe ended.
    pub fn on_exit(&mut self, pid: i32, exit: crate::supervisor::Exit) -> Option<Outcome> {
        let id = *self.inflight.iter().find(|(_, f)| matches!(f.run, Running::Exec { pid: p } if p == pid))?.0;
        let f = self.inflight.remove(&id)?;
        let ok = exit.success();
        let why = if ok { String::new() } else { format!("probe {} ended with {exit}", argv0(&f.req)) };
        Some((f.req, ok, why))
    }

    /// Probes past their timeout fail (exec probes are killed).
    pub fn expire(&mut self, now: Instant) -> Vec<Outcome> {
        let late: Vec<u32> = self.inflight.iter().filter(|(_, f)| f.deadline <= now).map(|(id, _)| *id).collect();
        late.into_iter()
            .filter_map(|id| self.inflight.remove(&id))
            .map(|f| {
                if let Running::Exec { pid } = f.run {
                    let _ = crate::sys::kill(-pid, libc::SIGKILL);
                    let _ = crate::sys::kill(pid, libc::SIGKILL);
                }
                let why = format!("timed out after {} s", f.req.timeout.as_secs());
                (f.req, false, why)
            })
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.inflight.values().map(|f| f.deadline).min()
    }
}

fn argv0(req: &ProbeRequest) -> String {
    match &req.spec {
        ProbeSpec::Exec(a) => a.first().cloned().unwrap_or_default(),
        ProbeSpec::Tcp(a) | ProbeSpec::Http(a) => a.clone(),
    }
}

fn would_block_or(why: impl FnOnce() -> String) -> Option<(bool, String)> {
    let e = std::io::Error::last_os_error().raw_os_error();
    if e == Some(libc::EAGAIN) || e == Some(libc::EINTR) {
        None
    } else {
        Some((false, why()))
    }
}

fn http_verdict(status_line: &str) -> (bool, String) {
    let code: Option<u16> = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    match code {
        Some(c) if (200..400).contains(&c) => (true, String::new()),
        Some(c) => (false, format!("HTTP status {c}")),
        None => (false, format!("not an HTTP status line: {status_line:?}")),
    }
}

/// `host:port`; only numeric addresses and `localhost` (PID 1 does no DNS).
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let fixed = addr.replace("localhost:", "127.0.0.1:");
    fixed.parse::<SocketAddr>().or_else(|_| {
        fixed.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| format!("`{addr}` is not an IP:PORT address"))
    })
}

/// `http://host:port/path` → (address, Host header, path).
fn parse_http(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("`{url}`: only http:// URLs can be probed"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let with_port = if hostport.rsplit(':').next().is_some_and(|p| p.parse::<u16>().is_ok()) && hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Ok((resolve(&with_port)?, hostport.to_string(), path))
}

fn connect(sa: SocketAddr) -> std::io::Result<OwnedFd> {
    let family = if sa.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: a fresh non-blocking socket, owned at once; the sockaddr structs are filled
    // from a parsed address and live across connect.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let r = match sa {
            SocketAddr::V4(a) => {
                let mut s: libc::sockaddr_in = std::mem::zeroed();
                s.sin_family = libc::AF_INET as _;
                s.sin_port = a.port().to_be();
                s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                libc::connect(fd.as_raw_fd(), (&s as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&s) as _)
            }
            SocketAddr::V6(a) => {
                let mut s: libc::sockaddr_in6 = std::mem::zeroed();
                s.sin6_family = libc::AF_INET6 as _;
                s.sin6_port = a.port().to_be();
                s.sin6_addr.s6_addr = a.ip().octets();
                libc::connect(fd.as_raw_fd(), (&s as *const libc::sockaddr_in6).cast(), std::mem::size_of_val(&s) as _)
            }
        };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

fn socket_error(fd: RawFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: SO_ERROR writes one int.
    unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len) };
    err
}

/// State `T` (stopped) or `t` (traced) in /proc/PID/stat.
pub fn process_is_stopped(pid: i32) -> bool {
    crate::procfs::stat(pid).is_some_and(|s| s.state == 'T' || s.state == 't')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn http_status_lines() {
        assert_eq!(http_verdict("HTTP/1.1 200 OK"), (true, String::new()));
        assert_eq!(http_verdict("HTTP/1.0 301 Moved"), (true, String::new()));
        assert_eq!(http_verdict("HTTP/1.1 503 Busy").1, "HTTP status 503");
        assert!(!http_verdict("SSH-2.0").0);
    }

    #[test]
    fn urls_and_addresses() {
        let (a, host, path) = parse_http("http://127.0.0.1:8080/health?x=1").unwrap();
        assert_eq!((a.port(), host.as_str(), path.as_str()), (8080, "127.0.0.1:8080", "/health?x=1"));
        assert_eq!(parse_http("http://localhost").unwrap().0.to_string(), "127.0.0.1:80");
        assert!(parse_http("https://x").unwrap_err().contains("only http://"));
        assert_eq!(resolve("[::1]:6379").unwrap().port(), 6379);
        assert!(resolve("nonsense").is_err());
    }

    fn run(p: &mut Probes, req: ProbeRequest) -> Outcome {
        let t = Instant::now();
        match p.start(req, t) {
            Started::Done(o) => o,
            Started::Socket(id, fd) => loop {
                let want_read = p.wants_read(id).is_some();
                let mut pfd = libc::pollfd { fd: p.wants_read(id).unwrap_or(fd), events: if want_read { libc::POLLIN } else { libc::POLLOUT }, revents: 0 };
                unsafe { libc::poll(&mut pfd, 1, 2000) };
                if let Some(o) = p.on_ready(id) {
                    return o;
                }
            },
            Started::Exec => panic!("not in this test"),
        }
    }

    fn req(spec: ProbeSpec) -> ProbeRequest {
        ProbeRequest { service: 1, purpose: crate::supervisor::ProbePurpose::Health, spec, timeout: Duration::from_secs(2), pid: std::process::id() as i32 }
    }

    #[test]
    fn tcp_and_http_probes_against_real_sockets() {
        let mut p = Probes::default();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(run(&mut p, req(ProbeSpec::Tcp(format!("127.0.0.1:{port}")))).1);
        drop(l);
        let (_, ok, why) = run(&mut p, req(ProbeSpec::Tcp(format!("127.0.0.1:{port}"))));
        assert!(!ok && why.contains("refused"), "{why}");
        for (status, pass) in [("200 OK", true), ("500 Oops", false)] {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                use std::io::{Read, Write};
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).unwrap();
                req
            });
            let (_, ok, why) = run(&mut p, req(ProbeSpec::Http(format!("http://127.0.0.1:{port}/health"))));
            assert_eq!(ok, pass, "{why}");
            assert!(server.join().unwrap().starts_with("GET /health HTTP/1.0\r\n"));
        }
    }

    #[test]
    fn a_probe_that_never_answers_times_out() {
        let mut p = Probes::default();
        // A listener that never accepts: the connect completes, the HTTP reply never comes.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let t = Instant::now();
        assert!(matches!(p.start(req(ProbeSpec::Http(url)), t), Started::Socket(..)));
        assert!(p.expire(t + Duration::from_secs(1)).is_empty());
        let out = p.expire(t + Duration::from_secs(2));
        assert_eq!(out.len(), 1);
        assert!(out[0].2.contains("timed out after 2 s"));
        assert!(p.next_deadline().is_none());
    }
}
