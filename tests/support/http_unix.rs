//! A small HTTP/1.1 client over a Unix socket for the model-server tests: whole responses
//! (Content-Length or chunked) and server-sent events read one `data:` line at a time.
//! Independent of the server's own code, so a framing mistake there shows up here.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn send(sock: &Path, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> BufReader<UnixStream> {
    let mut s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).unwrap();
    BufReader::new(s)
}

fn read_head(r: &mut BufReader<UnixStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("header {l:?}"));
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"))
}

/// One chunk of a chunked body; `None` at the last (empty) chunk.
fn read_chunk(r: &mut BufReader<UnixStream>) -> Option<Vec<u8>> {
    let mut size = String::new();
    r.read_line(&mut size).unwrap();
    let n = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16).unwrap_or_else(|_| panic!("chunk size {size:?}"));
    let mut data = vec![0; n + 2];
    r.read_exact(&mut data).unwrap();
    data.truncate(n);
    (n > 0).then_some(data)
}

pub fn request(sock: &Path, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Response {
    let mut r = send(sock, method, path, body, headers);
    let (status, headers) = read_head(&mut r);
    let mut body = Vec::new();
    if is_chunked(&headers) {
        while let Some(c) = read_chunk(&mut r) {
            body.extend(c);
        }
    } else if let Some(n) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.parse::<usize>().unwrap()) {
        body.resize(n, 0);
        r.read_exact(&mut body).unwrap();
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Response { status, headers, body }
}

pub fn get(sock: &Path, path: &str) -> Response {
    request(sock, "GET", path, None, &[])
}

pub fn post(sock: &Path, path: &str, body: &serde_json::Value) -> Response {
    request(sock, "POST", path, Some(&body.to_string()), &[])
}

/// A streaming response, read event by event.
pub struct EventStream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    r: BufReader<UnixStream>,
    buf: Vec<u8>,
    chunked: bool,
}

impl EventStream {
    pub fn open(sock: &Path, body: &serde_json::Value, headers: &[(&str, &str)]) -> EventStream {
        let mut r = send(sock, "POST", "/v1/chat/completions", Some(&body.to_string()), headers);
        let (status, headers) = read_head(&mut r);
        let chunked = is_chunked(&headers);
        EventStream { status, headers, r, buf: Vec::new(), chunked }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The next `data:` payload; `None` at the end of the body.
    pub fn next_data(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(event).expect("events are UTF-8");
                let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if !data.is_empty() {
                    return Some(data.join("\n"));
                }
                continue;
            }
            let more = if self.chunked {
                read_chunk(&mut self.r)
            } else {
                let mut b = vec![0; 4096];
                let n = self.r.read(&mut b).unwrap();
                b.truncate(n);
                (n > 0).then_some(b)
            };
            match more {
                Some(b) => self.buf.extend(b),
                None => return None,
            }
        }
    }

    /// Every remaining payload up to and including `[DONE]`.
    pub fn rest(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next_data()).collect()
    }
}
