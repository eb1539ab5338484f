//! What the overview samples on its own: CPU, memory, load, uptime and boot time from /proc,
//! disk use from statvfs, and the model server's `/health` over its Unix socket.
//!
//! Every path is under `GHOST_ROOT`. /proc is the kernel's: `ROOT/proc` when the root has one
//! (a real system, where ROOT is `/`), else the host's `/proc` (hosted mode, whose root has no
//! /proc of its own).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// The files the overview reads, resolved once.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub proc: PathBuf,
    /// Filesystems whose use is shown: the root and the state partition.
    pub disks: Vec<(String, PathBuf)>,
    pub model_socket: PathBuf,
}

impl Paths {
    pub fn under(root: &Path) -> Paths {
        let proc = if root.join("proc/stat").is_file() { root.join("proc") } else { PathBuf::from("/proc") };
        let disks = vec![("/".to_string(), root.to_path_buf()), ("/var/lib/ghost".to_string(), root.join("var/lib/ghost"))];
        Paths { root: root.to_path_buf(), proc, disks, model_socket: model_socket(root) }
    }
}

/// `[serve] socket` of ROOT/etc/ghost/model.toml (under the root), else ROOT/run/ghost/model.sock.
pub fn model_socket(root: &Path) -> PathBuf {
    let configured = std::fs::read_to_string(root.join("etc/ghost/model.toml"))
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .and_then(|t| t.get("serve")?.get("socket")?.as_str().map(str::to_string));
    match configured {
        Some(p) => root.join(p.trim_start_matches('/')),
        None => root.join("run/ghost/model.sock"),
    }
}

/// CPU time counters of the `cpu` line of /proc/stat: (busy, total) jiffies.
pub fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is counted in user already).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Seconds since the epoch when the machine booted (`btime` of /proc/stat).
pub fn boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// (total, available) bytes from /proc/meminfo.
pub fn memory(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| l.strip_prefix(name)).and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).map(|kb| kb * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:").or_else(|| Some(field("MemFree:")? + field("Cached:").unwrap_or(0)))?;
    Some((total, available.min(total)))
}

/// The three load averages.
pub fn load(loadavg: &str) -> Option<[f64; 3]> {
    let mut f = loadavg.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// (used, total) bytes of the filesystem holding `path`, as `df` counts them (blocks available
/// to unprivileged users count as free).
pub fn disk(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is valid; the path is NUL-terminated and lives for the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    let used = (s.f_blocks as u64).saturating_sub(s.f_bfree as u64) * frsize;
    let avail = s.f_bavail as u64 * frsize;
    // df's percentage: used / (used + available); the blocks kept for root are not offered.
    Some((used, used + avail))
}

fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev(),
        _ => true,
    }
}

/// One reading of the machine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Busy share of the CPUs since the previous sample, percent.
    pub cpu_percent: Option<f64>,
    pub mem_total: Option<u64>,
    pub mem_used: Option<u64>,
    pub load: Option<[f64; 3]>,
    pub cpus: usize,
    pub uptime_s: Option<f64>,
    pub boot_time_s: Option<u64>,
    /// (where it is mounted as the system sees it, used, total)
    pub disks: Vec<(String, u64, u64)>,
    pub hostname: Option<String>,
}

/// Reads the machine, keeping the CPU counters between readings.
pub struct Sampler {
    paths: Paths,
    last_cpu: Option<(u64, u64)>,
}

impl Sampler {
    pub fn new(paths: Paths) -> Sampler {
        Sampler { paths, last_cpu: None }
    }

    pub fn sample(&mut self) -> Sample {
        let read = |name: &str| std::fs::read_to_string(self.paths.proc.join(name)).ok();
        let stat = read("stat").unwrap_or_default();
        let cpu = cpu_times(&stat);
        let cpu_percent = match (self.last_cpu, cpu) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some((b1.saturating_sub(b0)) as f64 * 100.0 / (t1 - t0) as f64),
            _ => None,
        };
        if cpu.is_some() {
            self.last_cpu = cpu;
        }
        let mem = read("meminfo").as_deref().and_then(memory);
        let cpus = stat.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count().max(1);
        let mut disks = Vec::new();
        for (i, (name, path)) in self.paths.disks.iter().enumerate() {
            // The state partition only when it is a filesystem of its own.
            if i > 0 && (!path.exists() || same_filesystem(path, &self.paths.root)) {
                continue;
            }
            if let Some((used, total)) = disk(path) {
                disks.push((name.clone(), used, total));
            }
        }
        let hostname = std::fs::read_to_string(self.paths.root.join("etc/hostname"))
            .ok()
            .or_else(|| read("sys/kernel/hostname"))
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        Sample {
            cpu_percent,
            mem_total: mem.map(|m| m.0),
            mem_used: mem.map(|(t, a)| t - a),
            load: read("loadavg").as_deref().and_then(load),
            cpus,
            uptime_s: read("uptime").and_then(|u| u.split_whitespace().next()?.parse().ok()),
            boot_time_s: boot_time(&stat),
            disks,
            hostname,
        }
    }
}

/// What the model server says about itself (`GET /health`), or why it could not be asked.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelHealth {
    /// No socket: the server is not running (or not yet listening).
    NoSocket(PathBuf),
    /// The `/health` body (503 while downloading or loading, 200 when ready).
    Answer(Value),
    Error(String),
}

/// `GET /health` over the model server's Unix socket: HTTP/1.1 with `Connection: close`.
pub fn model_health(socket: &Path, timeout: Duration) -> ModelHealth {
    if !socket.exists() {
        return ModelHealth::NoSocket(socket.to_path_buf());
    }
    let ask = || -> std::io::Result<String> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ghost-console\r\nConnection: close\r\n\r\n")?;
        let mut raw = Vec::new();
        s.take(1 << 20).read_to_end(&mut raw)?;
        Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    match ask() {
        Ok(raw) => match http_body(&raw).and_then(|b| serde_json::from_str::<Value>(&b).map_err(|e| format!("not JSON: {e}"))) {
            Ok(v) => ModelHealth::Answer(v),
            Err(e) => ModelHealth::Error(format!("{}: /health: {e}", socket.display())),
        },
        Err(e) => ModelHealth::Error(format!("{}: {e}", socket.display())),
    }
}

/// The body of an HTTP/1.1 response, de-chunked when it is chunked.
pub fn http_body(raw: &str) -> Result<String, String> {
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no end of headers")?;
    if !head.starts_with("HTTP/1.") {
        return Err("not an HTTP response".into());
    }
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked"));
    if !chunked {
        return Ok(body.to_string());
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("a chunk without its size line")?;
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        if n == 0 {
            return Ok(out);
        }
        let chunk = after.get(..n).ok_or("a chunk shorter than its size")?;
        out.push_str(chunk);
        rest = after.get(n..).unwrap_or("").trim_start_matches("\r\n");
    }
}

/// The percentage in a progress line (`model.safetensors  12M / 100M  12%  …`).
pub fn percent_in(text: &str) -> Option<u16> {
    text.split_whitespace().find_map(|w| w.strip_suffix('%')?.parse::<u16>().ok()).filter(|p| *p <= 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_the_kernel_writes_them() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nbtime 1763800000\n";
        assert_eq!(cpu_times(stat), Some((150, 1000)));
        assert_eq!(boot_time(stat), Some(1_763_800_000));
        assert_eq!(memory("MemTotal:  4000 kB\nMemFree: 100 kB\nMemAvailable:  1000 kB\n"), Some((4_096_000, 1_024_000)));
        assert_eq!(memory("MemTotal: 4000 kB\nMemFree: 100 kB\nCached: 900 kB\n"), Some((4_096_000, 1_024_000)), "old kernels without MemAvailable");
        assert_eq!(load("0.50 0.25 0.10 1/100 42\n"), Some([0.5, 0.25, 0.1]));
        assert_eq!(load("garbage"), None);
        assert_eq!(cpu_times("intr 1 2\n"), None);
    }

    #[test]
    fn a_root_with_its_own_proc_is_read_and_cpu_use_is_a_difference() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        std::fs::create_dir_all(&proc).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "box\n").unwrap();
        std::fs::write(proc.join("stat"), "cpu  100 0 0 900 0 0 0 0\ncpu0 100 0 0 900 0 0 0 0\nbtime 1700000000\n").unwrap();
        std::fs::write(proc.join("meminfo"), "MemTotal: 1000 kB\nMemAvailable: 250 kB\n").unwrap();
        std::fs::write(proc.join("loadavg"), "1.00 0.50 0.25 1/1 1\n").unwrap();
        std::fs::write(proc.join("uptime"), "3725.5 100.0\n").unwrap();
        let mut s = Sampler::new(Paths::under(dir.path()));
        let first = s.sample();
        assert_eq!(first.cpu_percent, None, "one reading says nothing about use");
        assert_eq!((first.mem_used, first.mem_total), (Some(768_000), Some(1_024_000)));
        assert_eq!((first.uptime_s, first.boot_time_s, first.cpus), (Some(3725.5), Some(1_700_000_000), 1));
        assert_eq!(first.hostname.as_deref(), Some("box"));
        assert_eq!(first.disks.len(), 1, "no state partition of its own: only /");
        std::fs::write(proc.join("stat"), "cpu  160 0 0 940 0 0 0 0\nbtime 1700000000\n").unwrap();
        assert_eq!(s.sample().cpu_percent, Some(60.0));
    }

    #[test]
    fn http_bodies_plain_and_chunked() {
        assert_eq!(http_body("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap(), "{}");
        assert_eq!(http_body("HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n").unwrap(), "{\"a\":1}");
        assert!(http_body("garbage").is_err());
        assert_eq!(percent_in("model.safetensors  12M / 100M  12%  1M/s"), Some(12));
        assert_eq!(percent_in("loading Qwen"), None);
    }

    #[test]
    fn the_model_server_is_asked_over_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.sock");
        assert_eq!(model_health(&path, Duration::from_secs(1)), ModelHealth::NoSocket(path.clone()));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            let body = r#"{"status":"downloading","detail":"downloading m: x 5M / 10M  50%"}"#;
            write!(s, "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let ModelHealth::Answer(v) = model_health(&path, Duration::from_secs(5)) else { panic!("no answer") };
        assert_eq!(v["status"], "downloading");
        assert!(server.join().unwrap().starts_with("GET /health HTTP/1.1\r\n"));
    }
}
