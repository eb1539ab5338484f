//! A local Hugging Face–compatible hub on 127.0.0.1 for tests and benchmarks: it serves repos
//! from directories and answers what hf-hub 1.0 and `ghost model pull` ask for —
//!
//! - `GET /api/models/{repo}/revision/{rev}`: JSON with `sha` and `siblings[].rfilename`;
//! - `GET /api/models/{repo}/tree/{rev}`: the file list hf-hub's `snapshot_download` reads
//!   (recursive, one page);
//! - `HEAD|GET /{repo}/resolve/{rev}/{file}`: small files directly (200, `ETag` = git blob
//!   sha1, `X-Repo-Commit`); LFS files (at least `lfs_threshold` bytes) as the hub does, with
//!   a 302 to `/cdn-lfs/…` (at the request's `Host`, so a QEMU guest that names the mirror
//!   10.0.2.2 is sent back there) carrying `X-Linked-Etag` (sha256), `X-Linked-Size`, `ETag`,
//!   `X-Repo-Commit`;
//! - `GET /cdn-lfs/{repo}/{sha256}/{file}`: the bytes, with `Range` (206 + `Content-Range`,
//!   416 past the end);
//! - errors as the hub sends them: 401 + `X-Error-Code: RepoNotFound` for an unknown repo,
//!   404 + `RevisionNotFound` / `EntryNotFound`.
//!
//! Every request is logged (method, path, `Range`, status, body bytes sent), and a test arms
//! faults per file: drop the connection after N body bytes, answer a status, corrupt a byte,
//! stall; [`Mirror::move_branch`] makes `main` answer another commit.

#![allow(dead_code)]

use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the mirror saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
    /// Body bytes actually written before the response ended (or was dropped).
    pub body_bytes: u64,
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Close the connection after this many body bytes of a response carrying the file.
    DropAfter(u64),
    /// Answer resolve requests for the file with this status.
    Status(u16),
    /// Send the byte at this file offset inverted.
    CorruptByte(u64),
    /// Pause this long after this many body bytes.
    StallAfter(u64, Duration),
}

struct Armed {
    file: String,
    fault: Fault,
    times: usize,
}

#[derive(Clone)]
struct FileInfo {
    path: PathBuf,
    size: u64,
    sha256: String,
    git_sha1: String,
    lfs: bool,
}

struct Repo {
    id: String,
    commit: String,
    known: Vec<String>,
    files: BTreeMap<String, FileInfo>,
}

struct State {
    repos: Vec<Repo>,
    faults: Vec<Armed>,
    log: Vec<Logged>,
}

pub struct Mirror {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

/// Files of at least this size are served as LFS files.
pub const LFS_THRESHOLD: u64 = 64 << 10;

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256_of(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A 40-hex commit id derived from a label, so tests can name commits.
pub fn commit_id(label: &str) -> String {
    hex(&Sha1::digest(label.as_bytes()))
}

fn hash_file(path: &Path) -> (u64, String, String) {
    let mut f = std::fs::File::open(path).expect("open fixture file");
    let size = f.metadata().unwrap().len();
    let mut s256 = Sha256::new();
    let mut s1 = Sha1::new();
    s1.update(format!("blob {size}\0").as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        s256.update(&buf[..n]);
        s1.update(&buf[..n]);
    }
    (size, hex(&s256.finalize()), hex(&s1.finalize()))
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, FileInfo>) {
    for e in std::fs::read_dir(dir).expect("read fixture dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(base, &p, out);
        } else {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let (size, sha256, git_sha1) = hash_file(&p);
            out.insert(rel, FileInfo { path: p, size, sha256, git_sha1, lfs: size >= LFS_THRESHOLD });
        }
    }
}

impl Mirror {
    /// Serves each `(repo id, directory, commit)`; `main` resolves to that commit.
    pub fn start(repos: &[(&str, &Path, &str)]) -> Mirror {
        Mirror::start_on("127.0.0.1:0", repos)
    }

    /// As [`start`](Self::start), on a chosen address (a hub that comes up late).
    pub fn start_on(addr: &str, repos: &[(&str, &Path, &str)]) -> Mirror {
        let repos = repos
            .iter()
            .map(|(id, dir, commit)| {
                let mut files = BTreeMap::new();
                walk(dir, dir, &mut files);
                Repo { id: id.to_string(), commit: commit.to_string(), known: vec![commit.to_string()], files }
            })
            .collect();
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind mirror on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { repos, faults: Vec::new(), log: Vec::new() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, addr, &st);
                });
            }
        });
        Mirror { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Arms `fault` for the next `times` responses that concern `file`.
    pub fn arm(&self, file: &str, fault: Fault, times: usize) {
        self.state.lock().unwrap().faults.push(Armed { file: file.to_string(), fault, times });
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// `main` of `repo` now answers `commit` (the same files); the old commit stays reachable.
    pub fn move_branch(&self, repo: &str, commit: &str) {
        let mut s = self.state.lock().unwrap();
        let r = s.repos.iter_mut().find(|r| r.id == repo).expect("known repo");
        r.commit = commit.to_string();
        r.known.push(commit.to_string());
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// sha256 of a served file.
    pub fn sha256(&self, repo: &str, file: &str) -> String {
        let s = self.state.lock().unwrap();
        s.repos.iter().find(|r| r.id == repo).and_then(|r| r.files.get(file)).expect("known file").sha256.clone()
    }

    pub fn git_sha1(&self, repo: &str, file: &str) -> String {
        let s = self.state.lock().unwrap();
        s.repos.iter().find(|r| r.id == repo).and_then(|r| r.files.get(file)).expect("known file").git_sha1.clone()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

struct Request {
    method: String,
    path: String,
    range: Option<String>,
    /// The `Host` header: the name the client reached the mirror by (a QEMU guest reaches the
    /// host's 127.0.0.1:PORT as 10.0.2.2:PORT), so that the LFS redirect points back there.
    host: Option<String>,
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut range = None;
    let mut host = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
            if k.trim().eq_ignore_ascii_case("host") {
                host = Some(v.trim().to_string());
            }
        }
    }
    Some(Request { method, path, range, host })
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What to send.
enum Reply {
    Json(u16, String, Vec<(String, String)>),
    Empty(u16, Vec<(String, String)>),
    File { status: u16, headers: Vec<(String, String)>, info: FileInfo, start: u64, end: u64, name: String },
}

fn error(status: u16, code: &str, message: &str, extra: Vec<(String, String)>) -> Reply {
    let mut h: Vec<(String, String)> = vec![("X-Error-Message".into(), message.into())];
    if !code.is_empty() {
        h.push(("X-Error-Code".into(), code.into()));
    }
    h.extend(extra);
    Reply::Json(status, format!("{{\"error\":\"{message}\"}}"), h)
}

fn route(req: &Request, me: SocketAddr, st: &Mutex<State>) -> Reply {
    let path = req.path.split('?').next().unwrap_or("").to_string();
    let mut s = st.lock().unwrap();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();

    // Resolves `rev` of a repo to the commit it names now.
    fn commit_for(r: &Repo, rev: &str) -> Option<String> {
        if rev == "main" {
            Some(r.commit.clone())
        } else {
            r.known.iter().find(|c| *c == rev).cloned()
        }
    }

    if segs.len() >= 6 && segs[0] == "api" && segs[1] == "models" && segs[4] == "revision" {
        let id = format!("{}/{}", segs[2], segs[3]);
        let rev = decode(&segs[5..].join("/"));
        let Some(r) = s.repos.iter().find(|r| r.id == id) else {
            return error(401, "RepoNotFound", "Repository not found", vec![]);
        };
        let Some(commit) = commit_for(r, &rev) else {
            return error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"), vec![]);
        };
        let siblings: Vec<String> = r.files.keys().map(|f| format!("{{\"rfilename\":{}}}", serde_json::to_string(f).unwrap())).collect();
        let body = format!(
            "{{\"_id\":\"{commit}\",\"id\":\"{id}\",\"modelId\":\"{id}\",\"sha\":\"{commit}\",\"private\":false,\"gated\":false,\"disabled\":false,\"siblings\":[{}]}}",
            siblings.join(",")
        );
        return Reply::Json(200, body, vec![]);
    }

    // hf-hub's `list_tree` (snapshot_download lists files with it): one page, no Link header.
    if segs.len() >= 6 && segs[0] == "api" && segs[1] == "models" && segs[4] == "tree" {
        let id = format!("{}/{}", segs[2], segs[3]);
        let rev = decode(segs[5]);
        let prefix = decode(&segs[6..].join("/"));
        let Some(r) = s.repos.iter().find(|r| r.id == id) else {
            return error(401, "RepoNotFound", "Repository not found", vec![]);
        };
        if commit_for(r, &rev).is_none() {
            return error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"), vec![]);
        }
        let entries: Vec<String> = r
            .files
            .iter()
            .filter(|(name, _)| prefix.is_empty() || name.starts_with(&format!("{prefix}/")))
            .map(|(name, i)| {
                let lfs = if i.lfs { format!(",\"lfs\":{{\"oid\":\"{}\",\"size\":{},\"pointerSize\":134}}", i.sha256, i.size) } else { String::new() };
                format!("{{\"type\":\"file\",\"oid\":\"{}\",\"size\":{},\"path\":{}{lfs}}}", i.git_sha1, i.size, serde_json::to_string(name).unwrap())
            })
            .collect();
        return Reply::Json(200, format!("[{}]", entries.join(",")), vec![]);
    }

    if segs.len() >= 5 && segs[2] == "resolve" {
        let id = format!("{}/{}", segs[0], segs[1]);
        let rev = decode(segs[3]);
        let file = decode(&segs[4..].join("/"));
        let Some(r) = s.repos.iter().find(|r| r.id == id) else {
            return error(401, "RepoNotFound", "Repository not found", vec![]);
        };
        let Some(commit) = commit_for(r, &rev) else {
            return error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"), vec![]);
        };
        let commit_h = ("X-Repo-Commit".to_string(), commit.clone());
        let Some(info) = r.files.get(&file).cloned() else {
            return error(404, "EntryNotFound", "Entry not found", vec![commit_h]);
        };
        if let Some(code) = take_fault(&mut s, &file, |f| matches!(f, Fault::Status(_))).map(|f| match f {
            Fault::Status(c) => c,
            _ => unreachable!(),
        }) {
            return error(code, "", &format!("injected {code}"), vec![commit_h]);
        }
        if info.lfs {
            // Back to the address the client used (its Host header), else the bound one.
            let host = req.host.clone().unwrap_or_else(|| me.to_string());
            let loc = format!("http://{host}/cdn-lfs/{id}/{}/{}", info.sha256, file);
            let h = vec![
                ("Location".into(), loc),
                ("ETag".into(), format!("\"{}\"", info.sha256)),
                ("X-Linked-Etag".into(), format!("\"{}\"", info.sha256)),
                ("X-Linked-Size".into(), info.size.to_string()),
                commit_h,
            ];
            return Reply::Empty(302, h);
        }
        let h = vec![("ETag".into(), format!("\"{}\"", info.git_sha1)), commit_h];
        return file_reply(req, info, h, file);
    }

    if segs.len() >= 5 && segs[0] == "cdn-lfs" {
        let id = format!("{}/{}", segs[1], segs[2]);
        let sha = segs[3];
        let file = decode(&segs[4..].join("/"));
        let found = s.repos.iter().find(|r| r.id == id).and_then(|r| r.files.get(&file)).filter(|i| i.sha256 == sha).cloned();
        let Some(info) = found else {
            return Reply::Json(404, "{\"error\":\"no such object\"}".into(), vec![]);
        };
        let h = vec![("ETag".into(), format!("\"{}\"", info.sha256))];
        return file_reply(req, info, h, file);
    }
    Reply::Json(404, "{\"error\":\"not found\"}".into(), vec![])
}

fn file_reply(req: &Request, info: FileInfo, mut headers: Vec<(String, String)>, name: String) -> Reply {
    headers.push(("Accept-Ranges".into(), "bytes".into()));
    let size = info.size;
    let Some(spec) = req.range.as_deref() else {
        return Reply::File { status: 200, headers, info, start: 0, end: size, name };
    };
    let parsed = spec.strip_prefix("bytes=").and_then(|r| r.split_once('-')).and_then(|(a, b)| match (a.trim(), b.trim()) {
        ("", n) => n.parse::<u64>().ok().map(|n| (size.saturating_sub(n), size)),
        (a, "") => a.parse::<u64>().ok().map(|a| (a, size)),
        (a, b) => Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?.saturating_add(1).min(size))),
    });
    match parsed {
        Some((start, end)) if start < end && start < size => {
            headers.push(("Content-Range".into(), format!("bytes {start}-{}/{size}", end - 1)));
            Reply::File { status: 206, headers, info, start, end, name }
        }
        _ => {
            headers.push(("Content-Range".into(), format!("bytes */{size}")));
            Reply::Empty(416, headers)
        }
    }
}

fn take_fault(s: &mut State, file: &str, want: impl Fn(&Fault) -> bool) -> Option<Fault> {
    let a = s.faults.iter_mut().find(|a| a.file == file && a.times > 0 && want(&a.fault))?;
    a.times -= 1;
    Some(a.fault.clone())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

fn head(conn: &mut TcpStream, status: u16, len: u64, ctype: &str, headers: &[(String, String)]) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status} {}\r\nContent-Length: {len}\r\nContent-Type: {ctype}\r\nConnection: close\r\n", reason(status));
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    conn.write_all(h.as_bytes())
}

fn serve(mut conn: TcpStream, me: SocketAddr, st: &Mutex<State>) -> std::io::Result<()> {
    let Some(req) = read_request(&conn) else { return Ok(()) };
    let is_head = req.method == "HEAD";
    let reply = route(&req, me, st);
    let mut log = Logged { method: req.method.clone(), path: req.path.clone(), range: req.range.clone(), status: 0, body_bytes: 0 };
    let result = match reply {
        Reply::Json(status, body, h) => {
            log.status = status;
            head(&mut conn, status, body.len() as u64, "application/json", &h).and_then(|_| {
                if !is_head {
                    conn.write_all(body.as_bytes())?;
                    log.body_bytes = body.len() as u64;
                }
                Ok(())
            })
        }
        Reply::Empty(status, h) => {
            log.status = status;
            head(&mut conn, status, 0, "text/plain", &h)
        }
        Reply::File { status, headers, info, start, end, name } => {
            log.status = status;
            let faults: Vec<Fault> = {
                let mut s = st.lock().unwrap();
                if is_head {
                    Vec::new()
                } else {
                    let mut v: Vec<Fault> = Vec::new();
                    loop {
                        let got = take_fault(&mut s, &name, |f| !matches!(f, Fault::Status(_)) && !v.iter().any(|g| std::mem::discriminant(g) == std::mem::discriminant(f)));
                        match got {
                            Some(f) => v.push(f),
                            None => break v,
                        }
                    }
                }
            };
            head(&mut conn, status, end - start, "application/octet-stream", &headers).and_then(|_| {
                if is_head {
                    return Ok(());
                }
                send_file(&mut conn, &info, start, end, &faults, &mut log.body_bytes)
            })
        }
    };
    st.lock().unwrap().log.push(log);
    let _ = conn.flush();
    let _ = conn.shutdown(std::net::Shutdown::Both);
    result
}

fn send_file(conn: &mut TcpStream, info: &FileInfo, start: u64, end: u64, faults: &[Fault], sent: &mut u64) -> std::io::Result<()> {
    let mut f = std::fs::File::open(&info.path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut pos = start;
    let drop_after = faults.iter().find_map(|f| if let Fault::DropAfter(n) = f { Some(*n) } else { None });
    let mut stall = faults.iter().find_map(|f| if let Fault::StallAfter(n, d) = f { Some((*n, *d)) } else { None });
    let corrupt = faults.iter().find_map(|f| if let Fault::CorruptByte(o) = f { Some(*o) } else { None });
    while pos < end {
        let mut want = ((end - pos) as usize).min(buf.len());
        if let Some(limit) = drop_after {
            if *sent >= limit {
                return Ok(()); // the caller shuts the connection: a truncated body
            }
            want = want.min((limit - *sent) as usize);
        }
        if let Some((n, _)) = stall {
            if *sent < n {
                want = want.min((n - *sent) as usize);
            }
        }
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        if let Some(o) = corrupt {
            if (pos..pos + n as u64).contains(&o) {
                buf[(o - pos) as usize] ^= 0xff;
            }
        }
        conn.write_all(&buf[..n])?;
        pos += n as u64;
        *sent += n as u64;
        if let Some((at, d)) = stall {
            if *sent >= at {
                conn.flush()?;
                std::thread::sleep(d);
                stall = None;
            }
        }
    }
    Ok(())
}
