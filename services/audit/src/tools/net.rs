//! net.check: a TCP connect or a plain HTTP/1.1 GET, each within `timeout_ms` overall.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub const DEFAULT_TIMEOUT_MS: u64 = 3000;

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

#[cfg(test)]
mod tests {
    use super::*;

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
