//! The client end of the control socket: which path to use, connecting with errors that say
//! what is wrong, and one JSON line out, one JSON line (or a stream of them) back.

use ghost_proto::{Reply, Request, StreamItem};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::failure::Failure;

/// How long a plain request may wait for its reply; streams have no limit after their first.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the socket path came from, so that an error can say which setting to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketSource {
    Flag,
    GhostSocket,
    GhostRoot,
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPath {
    pub path: PathBuf,
    pub source: SocketSource,
}

impl fmt::Display for SocketPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match self.source {
            SocketSource::Flag => "from --socket",
            SocketSource::GhostSocket => "from GHOST_SOCKET",
            SocketSource::GhostRoot => "under GHOST_ROOT",
            SocketSource::Default => "the default",
        };
        write!(f, "{} ({from})", self.path.display())
    }
}

/// `--socket`, else `GHOST_SOCKET`, else `$GHOST_ROOT/run/ghost/control.sock`, else the default.
/// Empty variables count as unset.
pub fn socket_path(flag: Option<&Path>, ghost_socket: Option<OsString>, ghost_root: Option<OsString>) -> SocketPath {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty());
    if let Some(p) = flag {
        return SocketPath { path: p.to_path_buf(), source: SocketSource::Flag };
    }
    if let Some(p) = set(ghost_socket) {
        return SocketPath { path: p.into(), source: SocketSource::GhostSocket };
    }
    if let Some(root) = set(ghost_root) {
        return SocketPath { path: Path::new(&root).join("run/ghost/control.sock"), source: SocketSource::GhostRoot };
    }
    SocketPath { path: "/run/ghost/control.sock".into(), source: SocketSource::Default }
}

/// The path as this process's environment decides it.
pub fn socket_path_from_env(flag: Option<&Path>) -> SocketPath {
    socket_path(flag, std::env::var_os("GHOST_SOCKET"), std::env::var_os("GHOST_ROOT"))
}

/// One connection to ghost-init.
pub struct Connection {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: SocketPath,
}

impl Connection {
    pub fn open(socket: &SocketPath) -> Result<Connection, Failure> {
        let stream = UnixStream::connect(&socket.path).map_err(|e| Failure::Unreachable(connect_error(socket, &e)))?;
        let writer = stream.try_clone().map_err(|e| Failure::Unreachable(format!("{socket}: {e}")))?;
        Ok(Connection { reader: BufReader::new(stream), writer, socket: socket.clone() })
    }

    /// Sends `req` and reads its reply; an `ok: false` reply is [`Failure::Daemon`].
    pub fn request(&mut self, req: &Request) -> Result<Reply, Failure> {
        let socket = self.socket.clone();
        let lost = |e: io::Error| Failure::Unreachable(format!("{socket}: {e}"));
        self.writer.write_all(ghost_proto::to_line(req).as_bytes()).map_err(lost)?;
        self.reader.get_ref().set_read_timeout(Some(REPLY_TIMEOUT)).map_err(lost)?;
        let line = match self.read_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                return Err(Failure::Unreachable(format!(
                    "{}: ghost-init closed the connection without a reply (the control socket admits root and group `ghost` only)",
                    self.socket
                )))
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(Failure::Unreachable(format!("{}: no reply within {} s", self.socket, REPLY_TIMEOUT.as_secs())))
            }
            Err(e) => return Err(Failure::Unreachable(format!("{}: {e}", self.socket))),
        };
        self.reader.get_ref().set_read_timeout(None).map_err(lost)?;
        let reply: Reply = serde_json::from_str(&line).map_err(|e| Failure::Daemon(format!("unreadable reply from ghost-init ({e}): {}", line.trim_end())))?;
        if !reply.ok {
            return Err(Failure::Daemon(reply.error.unwrap_or_else(|| "ghost-init refused the request without saying why".into())));
        }
        Ok(reply)
    }

    /// The next item of a stream; `None` when ghost-init closed it.
    pub fn next_item(&mut self) -> Result<Option<StreamItem>, Failure> {
        let Some(line) = self.read_line().map_err(|e| Failure::Unreachable(format!("{}: {e}", self.socket)))? else {
            return Ok(None);
        };
        serde_json::from_str(&line).map(Some).map_err(|e| Failure::Daemon(format!("unreadable stream line from ghost-init ({e}): {}", line.trim_end())))
    }

    /// Whether a whole line may already be buffered (then reading will not block on the socket).
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    pub fn socket_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.reader.get_ref().as_fd()
    }

    fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut line = String::new();
        match self.reader.read_line(&mut line)? {
            0 => Ok(None),
            _ => Ok(Some(line)),
        }
    }
}

/// Says why connecting failed and which setting picks another socket.
fn connect_error(socket: &SocketPath, e: &io::Error) -> String {
    let hint = "hint: set GHOST_SOCKET or pass --socket PATH to use another socket";
    let why = match e.kind() {
        io::ErrorKind::NotFound => "no such socket (is ghost-init running?)".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied: the control socket admits root and group `ghost` only".to_string(),
        io::ErrorKind::ConnectionRefused => match std::fs::metadata(&socket.path) {
            Ok(m) if !m.file_type().is_socket() => "this path exists but is not a socket".to_string(),
            _ => "nothing is listening there (a socket left behind by a ghost-init that is gone?)".to_string(),
        },
        _ => e.to_string(),
    };
    format!("cannot connect to {socket}: {why}\n  {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_path_follows_flag_then_env_then_root_then_default() {
        let os = |s: &str| Some(OsString::from(s));
        let p = |f: Option<&str>, s: Option<OsString>, r: Option<OsString>| {
            let sp = socket_path(f.map(Path::new), s, r);
            (sp.path.display().to_string(), sp.source)
        };
        assert_eq!(p(Some("/a"), os("/b"), os("/r")), ("/a".into(), SocketSource::Flag));
        assert_eq!(p(None, os("/b"), os("/r")), ("/b".into(), SocketSource::GhostSocket));
        assert_eq!(p(None, os(""), os("/r")), ("/r/run/ghost/control.sock".into(), SocketSource::GhostRoot));
        assert_eq!(p(None, None, os("")), ("/run/ghost/control.sock".into(), SocketSource::Default));
    }

    #[test]
    fn connect_errors_name_the_path_and_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = socket_path(Some(&dir.path().join("nope.sock")), None, None);
        let Err(Failure::Unreachable(msg)) = Connection::open(&missing) else { panic!("connected to nothing") };
        assert!(msg.contains(&missing.path.display().to_string()) && msg.contains("no such socket") && msg.contains("GHOST_SOCKET"), "{msg}");

        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let Err(Failure::Unreachable(msg)) = Connection::open(&socket_path(Some(&file), None, None)) else { panic!() };
        assert!(msg.contains("not a socket"), "{msg}");

        // A socket whose listener is gone.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let Err(Failure::Unreachable(msg)) = Connection::open(&socket_path(Some(&stale), None, None)) else { panic!() };
        assert!(msg.contains("nothing is listening"), "{msg}");
    }

    #[test]
    fn replies_errors_and_streams_over_a_fake_server() {
        use std::io::{BufRead, BufReader, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut got = Vec::new();
            for reply in [
                "{\"ok\":false,\"error\":\"no service named `x`\"}\n",
                "{\"ok\":true,\"stream\":\"events\"}\n{\"dropped\":3}\n",
            ] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                got.push(line);
                w.write_all(reply.as_bytes()).unwrap();
            }
            got
        });
        let mut c = Connection::open(&socket_path(Some(&path), None, None)).unwrap();
        let e = c.request(&Request::Stop { name: "x".into() }).unwrap_err();
        assert_eq!(e, Failure::Daemon("no service named `x`".into()));
        assert_eq!(c.request(&Request::Events).unwrap().stream.as_deref(), Some("events"));
        assert_eq!(c.next_item().unwrap(), Some(StreamItem::Dropped(3)));
        let got = server.join().unwrap();
        assert_eq!(got, ["{\"cmd\":\"stop\",\"name\":\"x\"}\n", "{\"cmd\":\"events\"}\n"]);
        assert_eq!(c.next_item().unwrap(), None, "the server closed the stream");
    }
}
