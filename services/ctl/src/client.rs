//! The client end of ghost-init's control socket and of the agent's socket: which path to use,
//! connecting with errors that say what is wrong, and one JSON line out, one JSON line (or a
//! stream of them) back.

use ghost_proto::agent::{AgentReply, AgentRequest, AGENT_SOCKET};
use ghost_proto::{Reply, Request, StreamItem};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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

/// Whose socket: ghost-init's control socket, or the agent's (`ghost agent`). Each is found
/// the same way, through its own flag and variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Control,
    Agent,
}

impl Endpoint {
    pub fn flag(self) -> &'static str {
        match self {
            Endpoint::Control => "--socket",
            Endpoint::Agent => "--agent-socket",
        }
    }

    pub fn env_var(self) -> &'static str {
        match self {
            Endpoint::Control => "GHOST_SOCKET",
            Endpoint::Agent => "GHOST_AGENT_SOCKET",
        }
    }

    /// The socket under a root (`GHOST_ROOT`, or `/`).
    fn under_root(self) -> &'static str {
        match self {
            Endpoint::Control => "run/ghost/control.sock",
            Endpoint::Agent => AGENT_SOCKET,
        }
    }

    /// Who answers, for messages.
    fn daemon(self) -> &'static str {
        match self {
            Endpoint::Control => "ghost-init",
            Endpoint::Agent => "the agent",
        }
    }

    /// Who may connect (the server closes the connection on anyone else).
    fn admits(self) -> &'static str {
        match self {
            Endpoint::Control => "the control socket admits root and group `ghost` only",
            Endpoint::Agent => "the agent socket admits root and the user that started the agent only",
        }
    }

    /// Why the socket file may be missing or dead.
    fn not_running(self, stale: bool) -> &'static str {
        match (self, stale) {
            (Endpoint::Control, false) => "is ghost-init running?",
            (Endpoint::Control, true) => "a socket left behind by a ghost-init that is gone?",
            (Endpoint::Agent, _) => "the agent, `ghost agent`, may not be running",
        }
    }
}

/// Where the socket path came from, so that an error can say which setting to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketSource {
    /// `--socket` / `--agent-socket`
    Flag,
    /// `GHOST_SOCKET` / `GHOST_AGENT_SOCKET`
    Env,
    GhostRoot,
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPath {
    pub path: PathBuf,
    pub source: SocketSource,
    pub endpoint: Endpoint,
}

impl fmt::Display for SocketPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match self.source {
            SocketSource::Flag => format!("from {}", self.endpoint.flag()),
            SocketSource::Env => format!("from {}", self.endpoint.env_var()),
            SocketSource::GhostRoot => "under GHOST_ROOT".into(),
            SocketSource::Default => "the default".into(),
        };
        write!(f, "{} ({from})", self.path.display())
    }
}

/// The endpoint's flag, else its variable (`env`), else the socket under `GHOST_ROOT`, else
/// under `/`. Empty variables count as unset.
pub fn socket_path(endpoint: Endpoint, flag: Option<&Path>, env: Option<OsString>, ghost_root: Option<OsString>) -> SocketPath {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty());
    let (path, source) = if let Some(p) = flag {
        (p.to_path_buf(), SocketSource::Flag)
    } else if let Some(p) = set(env) {
        (p.into(), SocketSource::Env)
    } else if let Some(root) = set(ghost_root) {
        (Path::new(&root).join(endpoint.under_root()), SocketSource::GhostRoot)
    } else {
        (Path::new("/").join(endpoint.under_root()), SocketSource::Default)
    };
    SocketPath { path, source, endpoint }
}

/// The path as this process's environment decides it.
pub fn socket_path_from_env(endpoint: Endpoint, flag: Option<&Path>) -> SocketPath {
    socket_path(endpoint, flag, std::env::var_os(endpoint.env_var()), std::env::var_os("GHOST_ROOT"))
}

/// One request to ghost-init on a connection of its own, to the control socket the environment
/// names (`GHOST_SOCKET`, `GHOST_ROOT`); `ok: false` is [`Failure::Daemon`].
/// How long a re-execution may take before the new program answers.
pub const REEXEC_WAIT: Duration = Duration::from_secs(30);

/// Asks ghost-init on `conn` to re-execute (`binary`, or its own program), waits for the
/// program to be replaced (the connection closes) and for the new one to answer on `socket`;
/// returns what it then reports (`last_reexec.fell_back` says when the previous program came
/// back). A refusal is [`Failure::Daemon`]; no answer within [`REEXEC_WAIT`] is unreachable.
pub fn reexec_and_wait(conn: &mut Connection, socket: &SocketPath, binary: Option<String>) -> Result<ghost_proto::InitInfo, Failure> {
    let before = conn.request(&Request::Init)?.init.unwrap_or_default();
    if conn.request_or_closed(&Request::Reexec { binary })?.is_some() {
        return Err(Failure::Daemon("ghost-init acknowledged the re-execution but did not replace its program".into()));
    }
    // The listening socket survives the exec: a new connection waits in its backlog until the
    // new program serves it.
    let deadline = std::time::Instant::now() + REEXEC_WAIT;
    loop {
        match Connection::open(socket).and_then(|mut c| c.request(&Request::Init)) {
            Ok(r) => {
                let info = r.init.unwrap_or_default();
                if info.reexecs > before.reexecs {
                    return Ok(info);
                }
            }
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => {}
        }
        if std::time::Instant::now() >= deadline {
            return Err(Failure::Unreachable(format!("{socket}: ghost-init did not report the re-execution within {} s", REEXEC_WAIT.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn control_request(req: &Request) -> Result<Reply, Failure> {
    Connection::open(&socket_path_from_env(Endpoint::Control, None))?.request(req)
}

/// One connection to ghost-init or to the agent.
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
        let line = self.exchange(req)?;
        let reply: Reply = self.parse_reply(&line)?;
        if !reply.ok {
            return Err(Failure::Daemon(reply.error.unwrap_or_else(|| "ghost-init refused the request without saying why".into())));
        }
        Ok(reply)
    }

    /// Sends one request to the agent and returns the reply's `result` as `T` (`None` for a
    /// plain acknowledgement); `ok: false` is [`Failure::Daemon`] with `agent: ` before the
    /// error.
    pub fn agent_request<T: DeserializeOwned>(&mut self, req: &AgentRequest) -> Result<Option<T>, Failure> {
        /// The reply again, its result as the caller's type: a `Value` would lose the order of
        /// an object's keys (serde_json sorts them here).
        #[derive(Deserialize)]
        struct ResultOf<T> {
            result: Option<T>,
        }
        let line = self.exchange(req)?;
        let reply: AgentReply = self.parse_reply(&line)?;
        if !reply.ok {
            return Err(Failure::Daemon(format!("agent: {}", reply.error.unwrap_or_else(|| "refused the request without saying why".into()))));
        }
        self.parse_reply::<ResultOf<T>>(&line).map(|r| r.result)
    }

    /// Sends a request whose reply is a stream (`chat`): every line's `result` goes to
    /// `on_event` until the one whose `event` is `done`; `ok: false` ends it as
    /// [`Failure::Daemon`]. A step may take as long as the model does: no reply timeout here.
    pub fn agent_stream(&mut self, req: &AgentRequest, on_event: &mut dyn FnMut(&serde_json::Value) -> Result<(), Failure>) -> Result<(), Failure> {
        let socket = self.socket.clone();
        self.writer.write_all(ghost_proto::to_line(req).as_bytes()).map_err(|e| Failure::Unreachable(format!("{socket}: {e}")))?;
        loop {
            let Some(line) = self.read_line().map_err(|e| Failure::Unreachable(format!("{socket}: {e}")))? else {
                return Err(Failure::Unreachable(format!("{socket}: the agent closed the connection before its answer was done")));
            };
            let reply: AgentReply = self.parse_reply(&line)?;
            if !reply.ok {
                return Err(Failure::Daemon(format!("agent: {}", reply.error.unwrap_or_else(|| "refused the request without saying why".into()))));
            }
            let ev = reply.result.unwrap_or(serde_json::Value::Null);
            on_event(&ev)?;
            if ev["event"] == "done" {
                return Ok(());
            }
        }
    }

    /// Writes `req` as one line and reads the one reply line.
    /// Sends `req`: its reply, or `None` when ghost-init closed the connection instead
    /// (`reexec`: the program was replaced).
    pub fn request_or_closed(&mut self, req: &Request) -> Result<Option<Reply>, Failure> {
        let Some(line) = self.exchange_or_closed(req)? else { return Ok(None) };
        let reply: Reply = self.parse_reply(&line)?;
        if !reply.ok {
            return Err(Failure::Daemon(reply.error.unwrap_or_else(|| "ghost-init refused the request without saying why".into())));
        }
        Ok(Some(reply))
    }

    fn exchange(&mut self, req: &impl Serialize) -> Result<String, Failure> {
        let endpoint = self.socket.endpoint;
        self.exchange_or_closed(req)?.ok_or_else(|| {
            Failure::Unreachable(format!("{}: {} closed the connection without a reply ({})", self.socket, endpoint.daemon(), endpoint.admits()))
        })
    }

    fn exchange_or_closed(&mut self, req: &impl Serialize) -> Result<Option<String>, Failure> {
        let socket = self.socket.clone();
        let lost = |e: io::Error| Failure::Unreachable(format!("{socket}: {e}"));
        self.writer.write_all(ghost_proto::to_line(req).as_bytes()).map_err(lost)?;
        self.reader.get_ref().set_read_timeout(Some(REPLY_TIMEOUT)).map_err(lost)?;
        let line = match self.read_line() {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(Failure::Unreachable(format!("{}: no reply within {} s", self.socket, REPLY_TIMEOUT.as_secs())))
            }
            Err(e) => return Err(Failure::Unreachable(format!("{}: {e}", self.socket))),
        };
        self.reader.get_ref().set_read_timeout(None).map_err(lost)?;
        Ok(Some(line))
    }

    fn parse_reply<T: DeserializeOwned>(&self, line: &str) -> Result<T, Failure> {
        serde_json::from_str(line).map_err(|e| Failure::Daemon(format!("unreadable reply from {} ({e}): {}", self.socket.endpoint.daemon(), line.trim_end())))
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
    let endpoint = socket.endpoint;
    let hint = format!("hint: set {} or pass {} PATH to use another socket", endpoint.env_var(), endpoint.flag());
    let why = match e.kind() {
        io::ErrorKind::NotFound => format!("no such socket ({})", endpoint.not_running(false)),
        io::ErrorKind::PermissionDenied => format!("permission denied: {}", endpoint.admits()),
        io::ErrorKind::ConnectionRefused => match std::fs::metadata(&socket.path) {
            Ok(m) if !m.file_type().is_socket() => "this path exists but is not a socket".to_string(),
            _ => format!("nothing is listening there ({})", endpoint.not_running(true)),
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
        let p = |e: Endpoint, f: Option<&str>, s: Option<OsString>, r: Option<OsString>| {
            let sp = socket_path(e, f.map(Path::new), s, r);
            (sp.path.display().to_string(), sp.source)
        };
        use Endpoint::{Agent, Control};
        assert_eq!(p(Control, Some("/a"), os("/b"), os("/r")), ("/a".into(), SocketSource::Flag));
        assert_eq!(p(Control, None, os("/b"), os("/r")), ("/b".into(), SocketSource::Env));
        assert_eq!(p(Control, None, os(""), os("/r")), ("/r/run/ghost/control.sock".into(), SocketSource::GhostRoot));
        assert_eq!(p(Control, None, None, os("")), ("/run/ghost/control.sock".into(), SocketSource::Default));
        assert_eq!(p(Agent, None, os(""), os("/r")), ("/r/run/ghost/agent.sock".into(), SocketSource::GhostRoot));
        assert_eq!(p(Agent, None, None, None), ("/run/ghost/agent.sock".into(), SocketSource::Default));
        let flag = socket_path(Agent, Some(Path::new("/a")), None, None);
        assert_eq!(flag.to_string(), "/a (from --agent-socket)");
        assert_eq!(socket_path(Agent, None, os("/e"), None).to_string(), "/e (from GHOST_AGENT_SOCKET)");
    }

    #[test]
    fn connect_errors_name_the_path_and_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = socket_path(Endpoint::Control, Some(&dir.path().join("nope.sock")), None, None);
        let Err(Failure::Unreachable(msg)) = Connection::open(&missing) else { panic!("connected to nothing") };
        assert!(msg.contains(&missing.path.display().to_string()) && msg.contains("no such socket") && msg.contains("GHOST_SOCKET"), "{msg}");

        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let Err(Failure::Unreachable(msg)) = Connection::open(&socket_path(Endpoint::Control, Some(&file), None, None)) else { panic!() };
        assert!(msg.contains("not a socket"), "{msg}");

        // A socket whose listener is gone.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let Err(Failure::Unreachable(msg)) = Connection::open(&socket_path(Endpoint::Control, Some(&stale), None, None)) else { panic!() };
        assert!(msg.contains("nothing is listening"), "{msg}");
        // The agent's: the same causes, its own settings and daemon.
        let Err(Failure::Unreachable(msg)) = Connection::open(&socket_path(Endpoint::Agent, Some(&stale), None, None)) else { panic!() };
        assert!(msg.contains("nothing is listening") && msg.contains("`ghost agent`") && msg.contains("--agent-socket PATH"), "{msg}");
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
        let mut c = Connection::open(&socket_path(Endpoint::Control, Some(&path), None, None)).unwrap();
        let e = c.request(&Request::Stop { name: "x".into() }).unwrap_err();
        assert_eq!(e, Failure::Daemon("no service named `x`".into()));
        assert_eq!(c.request(&Request::Events).unwrap().stream.as_deref(), Some("events"));
        assert_eq!(c.next_item().unwrap(), Some(StreamItem::Dropped(3)));
        let got = server.join().unwrap();
        assert_eq!(got, ["{\"cmd\":\"stop\",\"name\":\"x\"}\n", "{\"cmd\":\"events\"}\n"]);
        assert_eq!(c.next_item().unwrap(), None, "the server closed the stream");
    }
}
