//! The control socket (`/run/ghost/control.sock`): a JSON-lines server in PID 1's event loop
//! (protocol in the ghost-proto crate). Peers are checked with SO_PEERCRED: root, members of
//! group `ghost`, and in hosted mode the user that started ghost-init.
//!
//! Nothing here blocks. Every buffer is bounded: a request line is at most
//! `ghost_proto::MAX_LINE`; a client's pending output at most `OUT_CAP`. A stream client that
//! reads too slowly loses items (and is told how many) instead of slowing anyone down; a
//! request client whose replies pile up is disconnected.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use ghost_proto::{self as proto, Reply, Request, StreamItem};

pub const OUT_CAP: usize = 1 << 20;
pub const MAX_CLIENTS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Requests,
    /// Following logs (of one service, or all).
    Logs(Option<String>),
    Events,
}

struct Client {
    fd: OwnedFd,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    mode: Mode,
    dropped: u64,
    want_write: bool,
    /// Skipping the rest of an over-long request line.
    discarding: bool,
}

/// Who may talk to PID 1.
pub struct Access {
    pub ghost_gid: Option<u32>,
    /// Hosted mode also admits this uid (the one that started ghost-init).
    pub owner_uid: Option<u32>,
}

impl Access {
    pub fn allows(&self, uid: u32, gid: u32, pid: i32) -> bool {
        if uid == 0 || self.owner_uid == Some(uid) {
            return true;
        }
        let Some(g) = self.ghost_gid else { return false };
        gid == g || supplementary_groups(pid).contains(&g)
    }
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| g.split_whitespace().filter_map(|x| x.parse().ok()).collect()).unwrap_or_default()
}

pub struct ControlServer {
    listener: OwnedFd,
    clients: HashMap<u32, Client>,
    next_id: u32,
    access: Access,
}

/// Builds a sockaddr_un for `path`.
pub fn sockaddr_un(path: &Path) -> std::io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; zeroed is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("socket path too long ({} bytes): {}", bytes.len(), path.display())));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    Ok((addr, len))
}

/// What the event loop must do for a request it cannot answer alone.
#[derive(Debug)]
pub struct Incoming {
    pub client: u32,
    pub request: Result<Request, String>,
}

impl ControlServer {
    /// Binds the socket with mode 0600 (0660 with group `ghost` when that group exists).
    pub fn bind(path: &Path, access: Access) -> std::io::Result<ControlServer> {
        let _ = std::fs::remove_file(path);
        // SAFETY: socket/bind/listen on a fresh descriptor; the umask dance keeps the socket
        // from ever existing with a wider mode than intended.
        let fd = unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let (addr, len) = sockaddr_un(path)?;
            let old = libc::umask(0o177);
            let r = libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len);
            libc::umask(old);
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::listen(fd.as_raw_fd(), 64) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            fd
        };
        if let Some(g) = access.ghost_gid {
            use std::os::unix::fs::PermissionsExt;
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
            // SAFETY: chown on a valid path.
            if unsafe { libc::chown(c.as_ptr(), 0, g) } == 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
            }
        }
        Ok(ControlServer { listener: fd, clients: HashMap::new(), next_id: 1, access })
    }

    /// The listening socket a previous program of PID 1 handed over (a re-execution):
    /// connections waiting in its backlog are served by this one.
    pub fn adopt(listener: OwnedFd, access: Access) -> ControlServer {
        ControlServer { listener, clients: HashMap::new(), next_id: 1, access }
    }

    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Accepts waiting connections; returns (id, fd) of the admitted ones to register.
    pub fn accept(&mut self) -> Vec<(u32, RawFd)> {
        let mut admitted = Vec::new();
        loop {
            // SAFETY: accept4 on our listener; the result is owned at once.
            let fd = unsafe { libc::accept4(self.listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) };
            if fd < 0 {
                return admitted;
            }
            // SAFETY: fresh descriptor from accept4.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let refuse = |fd: &OwnedFd, why: &str| {
                let line = proto::to_line(&Reply::error(why));
                // SAFETY: best-effort write of a short reply on a socket we own.
                unsafe { libc::write(fd.as_raw_fd(), line.as_ptr().cast(), line.len()) };
            };
            let Some((pid, uid, gid)) = peer(&fd) else { continue };
            if !self.access.allows(uid, gid, pid) {
                refuse(&fd, &format!("permission denied: uid {uid} is neither root nor in group `ghost`"));
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                refuse(&fd, "too many clients");
                continue;
            }
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            admitted.push((id, fd.as_raw_fd()));
            self.clients.insert(id, Client { fd, inbuf: Vec::new(), out: Vec::new(), mode: Mode::Requests, dropped: 0, want_write: false, discarding: false });
        }
    }

    /// Reads from a client; returns its complete requests, or `None` when it is gone.
    pub fn read(&mut self, id: u32) -> Option<Vec<Incoming>> {
        let c = self.clients.get_mut(&id)?;
        let mut buf = [0u8; 16 * 1024];
        let mut incoming = Vec::new();
        loop {
            // SAFETY: reading into a stack buffer from a socket we own.
            let n = unsafe { libc::read(c.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                return None;
            }
            if n < 0 {
                let e = std::io::Error::last_os_error().raw_os_error();
                if e == Some(libc::EAGAIN) || e == Some(libc::EINTR) {
                    break;
                }
                return None;
            }
            for &b in &buf[..n as usize] {
                if b == b'\n' {
                    if c.discarding {
                        c.discarding = false;
                        incoming.push(Incoming { client: id, request: Err(format!("request longer than {} bytes", proto::MAX_LINE)) });
                    } else if !c.inbuf.iter().all(u8::is_ascii_whitespace) {
                        let line = String::from_utf8_lossy(&c.inbuf).into_owned();
                        incoming.push(Incoming { client: id, request: proto::parse_request(&line) });
                    }
                    c.inbuf.clear();
                } else if c.inbuf.len() >= proto::MAX_LINE {
                    c.discarding = true;
                    c.inbuf.clear();
                } else if !c.discarding {
                    c.inbuf.push(b);
                }
            }
        }
        Some(incoming)
    }

    /// Queues a reply line; false when the client must be dropped (it does not read).
    pub fn reply(&mut self, id: u32, reply: &Reply) -> bool {
        let Some(c) = self.clients.get_mut(&id) else { return false };
        c.out.extend_from_slice(proto::to_line(reply).as_bytes());
        c.out.len() <= OUT_CAP
    }

    /// Queues one stream item for one client (the backlog of `logs -f`).
    pub fn send_item(&mut self, id: u32, item: &StreamItem) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.out.extend_from_slice(proto::to_line(item).as_bytes());
        }
    }

    pub fn set_mode(&mut self, id: u32, mode: Mode) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.mode = mode;
        }
    }

    /// Sends `item` to every streaming client that wants it, dropping for slow readers.
    pub fn publish(&mut self, item: &StreamItem) {
        let mut line: Option<String> = None;
        for c in self.clients.values_mut() {
            let wants = match (&c.mode, item) {
                (Mode::Logs(None), StreamItem::Log(_)) => true,
                (Mode::Logs(Some(n)), StreamItem::Log(l)) => *n == l.service,
                (Mode::Events, StreamItem::Event(_)) => true,
                _ => false,
            };
            if !wants {
                continue;
            }
            if c.out.len() > OUT_CAP / 2 {
                c.dropped += 1;
                continue;
            }
            if c.dropped > 0 {
                c.out.extend_from_slice(proto::to_line(&StreamItem::Dropped(c.dropped)).as_bytes());
                c.dropped = 0;
            }
            let l = line.get_or_insert_with(|| proto::to_line(item));
            c.out.extend_from_slice(l.as_bytes());
        }
    }

    /// Writes what each client can take now; returns fds whose write interest changed
    /// (fd, id, wants_write) and the ids of clients to drop.
    pub fn flush(&mut self) -> (Vec<(RawFd, u32, bool)>, Vec<u32>) {
        let mut changed = Vec::new();
        let mut dead = Vec::new();
        for (&id, c) in self.clients.iter_mut() {
            if c.out.len() > OUT_CAP && c.mode == Mode::Requests {
                dead.push(id);
                continue;
            }
            while !c.out.is_empty() {
                // SAFETY: writing from our buffer to a socket we own; MSG_NOSIGNAL avoids SIGPIPE.
                let n = unsafe { libc::send(c.fd.as_raw_fd(), c.out.as_ptr().cast(), c.out.len(), libc::MSG_NOSIGNAL) };
                if n < 0 {
                    let e = std::io::Error::last_os_error().raw_os_error();
                    if e != Some(libc::EAGAIN) && e != Some(libc::EINTR) {
                        dead.push(id);
                    }
                    break;
                }
                c.out.drain(..n as usize);
            }
            let want = !c.out.is_empty();
            if want != c.want_write {
                c.want_write = want;
                changed.push((c.fd.as_raw_fd(), id, want));
            }
        }
        (changed, dead)
    }

    /// Forgets a client; returns its fd to take out of the reactor first.
    pub fn drop_client(&mut self, id: u32) -> Option<OwnedFd> {
        self.clients.remove(&id).map(|c| c.fd)
    }

}

/// SO_PEERCRED of a connected unix socket: (pid, uid, gid).
fn peer(fd: &OwnedFd) -> Option<(i32, u32, u32)> {
    // SAFETY: ucred is plain data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        if libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len) < 0 {
            return None;
        }
        Some((cred.pid, cred.uid, cred.gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;

    fn server() -> (tempfile::TempDir, ControlServer, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("control.sock");
        let s = ControlServer::bind(&p, Access { ghost_gid: None, owner_uid: Some(unsafe { libc::getuid() }) }).unwrap();
        (d, s, p)
    }

    #[test]
    fn socket_is_private_and_requests_are_parsed_per_line() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, mut s, p) = server();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let mut c = UnixStream::connect(&p).unwrap();
        let ids = s.accept();
        assert_eq!(ids.len(), 1);
        c.write_all(b"{\"cmd\":\"status\"}\nnonsense\n\n{\"cmd\":\"stop\",\"name\":\"x\"}\n{\"cmd\":\"st").unwrap();
        let got = s.read(ids[0].0).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].request, Ok(Request::Status { name: None }));
        assert!(got[1].request.as_ref().unwrap_err().starts_with("bad request"));
        assert_eq!(got[2].request, Ok(Request::Stop { name: "x".into() }));
        assert!(s.reply(ids[0].0, &Reply::error("no service named `x`")));
        s.flush();
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line).unwrap();
        assert_eq!(line, "{\"ok\":false,\"error\":\"no service named `x`\"}\n");
        drop(c);
        assert!(s.read(ids[0].0).is_none(), "a closed client is reported gone");
    }

    #[test]
    fn an_over_long_line_is_refused_and_the_connection_stays_usable() {
        let (_d, mut s, p) = server();
        let mut c = UnixStream::connect(&p).unwrap();
        let id = s.accept()[0].0;
        let big = vec![b'x'; proto::MAX_LINE + 10];
        let writer = std::thread::spawn(move || {
            c.write_all(&big).unwrap();
            c.write_all(b"\n{\"cmd\":\"events\"}\n").unwrap();
            c
        });
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(s.read(id).unwrap());
        }
        writer.join().unwrap();
        assert!(got[0].request.as_ref().unwrap_err().contains("longer than"));
        assert_eq!(got[1].request, Ok(Request::Events));
    }

    #[test]
    fn a_slow_stream_reader_loses_items_and_is_told() {
        let (_d, mut s, p) = server();
        let c = UnixStream::connect(&p).unwrap();
        let id = s.accept()[0].0;
        s.set_mode(id, Mode::Events);
        let ev = StreamItem::Event(proto::Event { ts_ms: 0, kind: proto::EventKind::Ready, service: Some("x".into()), pid: None, detail: "y".repeat(1000) });
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            go_rx.recv().unwrap();
            let mut r = BufReader::new(c);
            let (mut events, mut dropped) = (0u64, 0u64);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(n) = line.strip_prefix("{\"dropped\":") {
                    dropped += n.trim_end_matches("}\n").parse::<u64>().unwrap();
                } else {
                    events += 1;
                }
                line.clear();
            }
            (events, dropped)
        });
        // Nobody reads yet: 5000 items of 1 KiB cannot all be queued.
        for _ in 0..5000 {
            s.publish(&ev);
            s.flush();
        }
        assert!(s.clients[&id].out.len() <= OUT_CAP / 2 + 2048, "bounded: {}", s.clients[&id].out.len());
        go_tx.send(()).unwrap();
        let drain = |s: &mut ControlServer| {
            while !s.clients[&id].out.is_empty() {
                s.flush();
                std::thread::yield_now();
            }
        };
        drain(&mut s);
        s.publish(&ev);
        drain(&mut s);
        drop(s.drop_client(id));
        let (events, dropped) = reader.join().unwrap();
        assert!(dropped > 0, "the client is told that items were dropped");
        assert_eq!(events + dropped, 5001, "every item is either delivered or counted");
    }
}
