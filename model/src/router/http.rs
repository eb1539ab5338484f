//! One JSON POST with a deadline, to an `http(s)://` base URL (through ureq) or to an HTTP
//! server on a Unix socket (the small HTTP/1.1 client below: one request per connection,
//! `Connection: close`, a body by `Content-Length`, chunked, or up to EOF).
//!
//! Errors say whether the request can have reached the server ([`TransportError::sent`]),
//! which the budget needs: a request that was never sent cannot have been billed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The largest response body read.
pub const BODY_LIMIT: usize = 16 << 20;
const HEADER_LIMIT: usize = 64 << 10;
const LINE_LIMIT: u64 = 16 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Nothing was sent: no socket, connection refused, unknown host, TLS failed.
    #[error("{0}")]
    Unreachable(String),
    /// The deadline passed.
    #[error("timed out after {} s", .after.as_secs_f64())]
    Timeout { after: Duration, sent: bool },
    /// The connection broke, or what came back was not HTTP.
    #[error("{message}")]
    Broken { message: String, sent: bool },
}

impl TransportError {
    /// Whether the server can have received the request.
    pub fn sent(&self) -> bool {
        match self {
            TransportError::Unreachable(_) => false,
            TransportError::Timeout { sent, .. } | TransportError::Broken { sent, .. } => *sent,
        }
    }
}

/// Where requests go.
pub struct HttpClient {
    target: Target,
}

enum Target {
    /// An HTTP server on a Unix socket; `prefix` goes before every request path.
    Unix {
        socket: PathBuf,
        prefix: String,
    },
    Url {
        base: String,
        agent: ureq::Agent,
    },
}

impl HttpClient {
    /// A server on `socket`; request paths are prefixed with `prefix` (e.g. `/v1`).
    pub fn unix(socket: &Path, prefix: &str) -> HttpClient {
        HttpClient { target: Target::Unix { socket: socket.to_path_buf(), prefix: prefix.trim_end_matches('/').to_string() } }
    }

    /// A server at `base` (`http(s)://HOST[:PORT][/PATH]`). With `env_proxy`, the
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` of the environment apply (a remote API);
    /// without, the connection is direct (a local server).
    pub fn url(base: &str, env_proxy: bool) -> HttpClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(if env_proxy { ureq::Proxy::try_from_env() } else { None })
            .max_redirects(0)
            .user_agent(concat!("ghost-router/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        HttpClient { target: Target::Url { base: base.trim_end_matches('/').to_string(), agent } }
    }

    /// `HOST:PORT` or `unix:PATH`, for messages.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Unix { socket, .. } => format!("unix:{}", socket.display()),
            Target::Url { base, .. } => host_port(base),
        }
    }

    /// The full URL of `path`, for messages.
    pub fn url_of(&self, path: &str) -> String {
        match &self.target {
            Target::Unix { socket, prefix } => format!("unix:{}:{prefix}{path}", socket.display()),
            Target::Url { base, .. } => format!("{base}{path}"),
        }
    }

    /// POSTs `body` (JSON) to `path` under the base; the whole exchange ends within `timeout`.
    pub fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &[u8], timeout: Duration) -> Result<HttpReply, TransportError> {
        match &self.target {
            Target::Unix { socket, prefix } => unix_post(socket, &format!("{prefix}{path}"), headers, body, timeout),
            Target::Url { base, agent } => url_post(agent, base, path, headers, body, timeout),
        }
    }
}

/// `HOST:PORT` of a URL (the default port of its scheme when none is given).
pub fn host_port(url: &str) -> String {
    let (rest, port) = match url.strip_prefix("https://") {
        Some(r) => (r, 443),
        None => (url.strip_prefix("http://").unwrap_or(url), 80),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{port}")
    }
}

fn url_post(agent: &ureq::Agent, base: &str, path: &str, headers: &[(&str, &str)], body: &[u8], timeout: Duration) -> Result<HttpReply, TransportError> {
    let url = format!("{base}{path}");
    let mut req = agent.post(&url).header("Content-Type", "application/json").header("Accept", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.config().timeout_global(Some(timeout)).build();
    let mut resp = req.send(body).map_err(|e| map_ureq(e, base, timeout))?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(BODY_LIMIT as u64).read_to_vec().map_err(|e| match map_ureq(e, base, timeout) {
        TransportError::Unreachable(m) => TransportError::Broken { message: m, sent: true },
        other => other,
    })?;
    Ok(HttpReply { status, body })
}

fn map_ureq(e: ureq::Error, base: &str, timeout: Duration) -> TransportError {
    let hp = host_port(base);
    match e {
        ureq::Error::Timeout(t) => TransportError::Timeout { after: timeout, sent: !matches!(t, ureq::Timeout::Resolve | ureq::Timeout::Connect) },
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused => TransportError::Unreachable(format!("connection refused to {hp}")),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => TransportError::Timeout { after: timeout, sent: true },
            io::ErrorKind::NotFound | io::ErrorKind::AddrNotAvailable => TransportError::Unreachable(format!("cannot connect to {hp}: {io}")),
            _ => TransportError::Broken { message: format!("connection to {hp}: {io}"), sent: true },
        },
        ureq::Error::HostNotFound => TransportError::Unreachable(format!("host not found: {hp}")),
        ureq::Error::ConnectionFailed => TransportError::Unreachable(format!("cannot connect to {hp}")),
        ureq::Error::BodyExceedsLimit(n) => TransportError::Broken { message: format!("answer from {hp} is larger than {n} bytes"), sent: true },
        e @ (ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) | ureq::Error::TlsRequired) => {
            TransportError::Unreachable(format!("TLS with {hp}: {e}"))
        }
        e @ (ureq::Error::BadUri(_) | ureq::Error::Http(_)) => TransportError::Unreachable(format!("bad request to {hp}: {e}")),
        other => TransportError::Broken { message: format!("{hp}: {other}"), sent: true },
    }
}

fn unix_post(socket: &Path, path: &str, headers: &[(&str, &str)], body: &[u8], timeout: Duration) -> Result<HttpReply, TransportError> {
    let deadline = Instant::now() + timeout;
    let stream = UnixStream::connect(socket).map_err(|e| {
        TransportError::Unreachable(match e.kind() {
            io::ErrorKind::NotFound => format!("no socket at {}", socket.display()),
            io::ErrorKind::ConnectionRefused => format!("connection refused on {}", socket.display()),
            _ => format!("cannot connect to {}: {e}", socket.display()),
        })
    })?;
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    let broken = |sent: bool| {
        move |e: io::Error| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => TransportError::Timeout { after: timeout, sent },
            _ => TransportError::Broken { message: format!("{}: {e}", socket.display()), sent },
        }
    };
    {
        let mut w = DeadlineIo { stream: &stream, deadline };
        // A request cut off half-way may still have been read by the server: count it sent.
        w.write_all(head.as_bytes()).map_err(broken(false))?;
        w.write_all(body).and_then(|_| w.flush()).map_err(broken(true))?;
    }
    let mut r = BufReader::new(DeadlineIo { stream: &stream, deadline });
    let (status, body) = read_response(&mut r, BODY_LIMIT).map_err(broken(true))?;
    Ok(HttpReply { status, body })
}

/// A stream whose every read and write ends by `deadline`.
struct DeadlineIo<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl DeadlineIo<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        Ok(left)
    }
}

impl Read for DeadlineIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        let mut s = self.stream;
        s.read(buf)
    }
}

impl Write for DeadlineIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        let mut s = self.stream;
        s.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// One line ending in `\n` (without the line ending), at most [`LINE_LIMIT`] bytes.
fn read_line<R: BufRead>(r: &mut R) -> io::Result<String> {
    let mut buf = Vec::new();
    r.by_ref().take(LINE_LIMIT).read_until(b'\n', &mut buf)?;
    if buf.last() != Some(&b'\n') {
        return Err(bad(if buf.len() as u64 >= LINE_LIMIT { "a line of the answer is too long" } else { "the connection closed mid-answer" }));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| bad("the answer's head is not text"))
}

/// Reads an HTTP/1.x response: the status and the body (interim 1xx answers skipped).
pub fn read_response<R: BufRead>(r: &mut R, limit: usize) -> io::Result<(u16, Vec<u8>)> {
    for _ in 0..8 {
        let line = read_line(r)?;
        let mut parts = line.splitn(3, ' ');
        let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if !version.starts_with("HTTP/1.") || code.len() != 3 {
            return Err(bad(format!("not an HTTP answer: {:?}", truncate(&line, 80))));
        }
        let status: u16 = code.parse().map_err(|_| bad(format!("bad status in {:?}", truncate(&line, 80))))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut head_bytes = 0;
        loop {
            let h = read_line(r)?;
            if h.is_empty() {
                break;
            }
            head_bytes += h.len();
            if head_bytes > HEADER_LIMIT {
                return Err(bad("the answer's headers are too large"));
            }
            let Some((name, value)) = h.split_once(':') else { return Err(bad(format!("bad header line {:?}", truncate(&h, 80)))) };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n: usize = value.parse().map_err(|_| bad(format!("bad Content-Length {value:?}")))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("two different Content-Length headers"));
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.rsplit(',').next().is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            read_chunked(r, limit)?
        } else if let Some(n) = length {
            if n > limit {
                return Err(bad(format!("the answer is {n} bytes, more than {limit}")));
            }
            let mut b = vec![0; n];
            r.read_exact(&mut b).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { bad("the connection closed mid-answer") } else { e })?;
            b
        } else {
            let mut b = Vec::new();
            r.take(limit as u64 + 1).read_to_end(&mut b)?;
            if b.len() > limit {
                return Err(bad(format!("the answer is more than {limit} bytes")));
            }
            b
        };
        return Ok((status, body));
    }
    Err(bad("too many interim answers"))
}

fn read_chunked<R: BufRead>(r: &mut R, limit: usize) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk size {:?}", truncate(&line, 40))))?;
        if n == 0 {
            // Trailers, up to the empty line.
            for _ in 0..64 {
                if read_line(r)?.is_empty() {
                    return Ok(body);
                }
            }
            return Err(bad("too many trailers"));
        }
        if body.len().saturating_add(n) > limit {
            return Err(bad(format!("the answer is more than {limit} bytes")));
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])?;
        if !read_line(r)?.is_empty() {
            return Err(bad("a chunk is longer than its size"));
        }
    }
}

/// At most `n` characters of `s`, with `…` when cut.
pub fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::tempfile_lite::Dir;
    use super::*;
    use std::os::unix::net::UnixListener;

    fn parse(raw: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        read_response(&mut io::Cursor::new(raw), 1024)
    }

    #[test]
    fn router_http_parses_lengths_chunks_and_eof() {
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap(), (200, b"hello".to_vec()));
        assert_eq!(
            parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n")
                .unwrap(),
            (201, b"abcde".to_vec())
        );
        assert_eq!(parse(b"HTTP/1.0 500 Oops\nServer: x\n\nto the end").unwrap(), (500, b"to the end".to_vec()));
        assert_eq!(parse(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(), (204, vec![]));
    }

    #[test]
    fn router_http_refuses_what_is_not_http() {
        let cases: [(&[u8], &str); 6] = [
            (b"SSH-2.0-OpenSSH\r\n", "not an HTTP answer"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", "closed mid-answer"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", "more than 1024"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "bad header line"),
            (b"HTTP/1.1 200", "closed mid-answer"),
        ];
        for (raw, needle) in cases {
            let e = parse(raw).unwrap_err().to_string();
            assert!(e.contains(needle), "{:?}: {e}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn router_http_host_port() {
        assert_eq!(host_port("http://127.0.0.1:8081/v1"), "127.0.0.1:8081");
        assert_eq!(host_port("https://api.example.com/v1"), "api.example.com:443");
        assert_eq!(host_port("http://[::1]/x"), "[::1]:80");
        assert_eq!(host_port("http://[::1]:9/x"), "[::1]:9");
    }

    #[test]
    fn router_http_unix_socket_round_trip_and_deadline() {
        let d = Dir::new("router-http");
        let sock = d.path().join("m.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            // First connection: answer chunked. Second: read the request and never answer.
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(&s);
            let mut head = String::new();
            loop {
                let line = read_line(&mut r).unwrap();
                if line.is_empty() {
                    break;
                }
                head.push_str(&line);
                head.push('\n');
            }
            let mut body = [0u8; 7];
            r.read_exact(&mut body).unwrap();
            head.push_str(std::str::from_utf8(&body).unwrap());
            (&s).write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\n\r\n").unwrap();
            let (s2, _) = l.accept().unwrap();
            let mut sink = Vec::new();
            let _ = (&s2).read_to_end(&mut sink);
            head
        });
        let c = HttpClient::unix(&sock, "/v1");
        let r = c.post_json("/chat/completions", &[("X-A", "b")], b"{\"a\":1}", Duration::from_secs(5)).unwrap();
        assert_eq!(r, HttpReply { status: 200, body: b"ok".to_vec() });
        let t0 = Instant::now();
        let e = c.post_json("/chat/completions", &[], b"{}", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, TransportError::Timeout { sent: true, .. }), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(3));
        drop(c);
        // Closing our end lets the server's read_to_end return.
        let got = server.join().unwrap();
        assert!(got.starts_with("POST /v1/chat/completions HTTP/1.1\n"), "{got}");
        assert!(got.contains("X-A: b\n") && got.contains("Content-Length: 7\n") && got.contains("Connection: close\n"), "{got}");
        assert!(got.ends_with("{\"a\":1}"), "{got}");
        let e = HttpClient::unix(&d.path().join("none.sock"), "/v1").post_json("/x", &[], b"", Duration::from_secs(1)).unwrap_err();
        assert_eq!(e, TransportError::Unreachable(format!("no socket at {}", d.path().join("none.sock").display())));
        assert!(!e.sent());
    }
}
