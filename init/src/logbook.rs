//! Service output: every service's stdout and stderr arrive on pipes that PID 1 holds for the
//! service's whole life (so nothing is lost across restarts). Lines are timestamped, kept in
//! a bounded ring per service for `ghostctl logs`, and appended to /var/log/ghost/NAME.log,
//! which is capped at `log_max_size` and rotated keeping `log_keep` files.
//!
//! Reads take at most `READ_BUDGET` bytes per pipe per wake-up, so a service that floods its
//! output gets its turn like everyone else and then waits on its full pipe; it cannot starve
//! PID 1's other work.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use ghost_proto::{LogLine, Stream};

use crate::service_file::{parse_size, ServiceFile};

/// Bytes read from one pipe per wake-up of the event loop: small enough that one wake-up of a
/// flooded loop stays well under a millisecond.
pub const READ_BUDGET: usize = 16 * 1024;
/// A line longer than this is cut into pieces of this size.
pub const MAX_LINE: usize = 4096;
/// Lines kept in memory per service, and their bytes at most: PID 1's memory stays bounded
/// however long a service's lines are.
pub const RING_LINES: usize = 2000;
pub const RING_BYTES: usize = 256 * 1024;
/// The most text one `logs` answer carries (older lines are left out).
pub const TAIL_BYTES: usize = 512 * 1024;
const DEFAULT_MAX_SIZE: u64 = 1 << 20;
const DEFAULT_KEEP: u32 = 3;

/// One service's log across a re-execution.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedLog {
    pub id: u32,
    pub name: String,
    pub read: [RawFd; 2],
    pub write: [RawFd; 2],
    pub partial: [String; 2],
    pub ring: Vec<LogLine>,
    pub max_size: u64,
    pub keep: u32,
}

/// The pipes and the record of one service.
struct ServiceLog {
    name: String,
    /// Read ends (stdout, stderr), registered with the reactor.
    read: [OwnedFd; 2],
    /// Write ends, handed to each new process of the service as fd 1 and 2.
    write: [OwnedFd; 2],
    partial: [Vec<u8>; 2],
    ring: VecDeque<LogLine>,
    ring_bytes: usize,
    file: Option<File>,
    file_size: u64,
    max_size: u64,
    keep: u32,
    file_error_said: bool,
}

pub struct Logbook {
    dir: PathBuf,
    logs: HashMap<u32, ServiceLog>,
    /// Echo every line to the console too (`ghost.debug=1`).
    pub echo: bool,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array; both are owned below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned by no one else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The writer side must block: a service writing faster than we read waits, it does not lose
    // lines or get EAGAIN it never expected.
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(w.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(w.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    Ok((r, w))
}

impl Logbook {
    pub fn new(dir: PathBuf) -> Logbook {
        Logbook { dir, logs: HashMap::new(), echo: false }
    }

    /// The write ends (stdout, stderr) for a new process of service `id`, creating the pipes
    /// on first use; the second value lists read ends to register with the reactor.
    pub fn writers(&mut self, id: u32, name: &str, spec: &ServiceFile) -> std::io::Result<([RawFd; 2], Vec<(RawFd, u8)>)> {
        let mut new = Vec::new();
        if !self.logs.contains_key(&id) {
            let (r1, w1) = pipe()?;
            let (r2, w2) = pipe()?;
            new.push((r1.as_raw_fd(), 0));
            new.push((r2.as_raw_fd(), 1));
            self.logs.insert(
                id,
                ServiceLog {
                    name: name.to_string(),
                    read: [r1, r2],
                    write: [w1, w2],
                    partial: [Vec::new(), Vec::new()],
                    ring: VecDeque::new(),
                    ring_bytes: 0,
                    file: None,
                    file_size: 0,
                    max_size: DEFAULT_MAX_SIZE,
                    keep: DEFAULT_KEEP,
                    file_error_said: false,
                },
            );
        }
        let Some(log) = self.logs.get_mut(&id) else {
            return Err(std::io::Error::other("log pipes vanished"));
        };
        log.max_size = spec.log_max_size.as_deref().and_then(parse_size).unwrap_or(DEFAULT_MAX_SIZE).max(1024);
        log.keep = spec.log_keep.unwrap_or(DEFAULT_KEEP);
        Ok(([log.write[0].as_raw_fd(), log.write[1].as_raw_fd()], new))
    }

    /// Reads what is waiting on one pipe (up to the budget) and returns the complete lines.
    pub fn read(&mut self, id: u32, stream: u8, now_ms: u64) -> Vec<LogLine> {
        let dir = self.dir.clone();
        let echo = self.echo;
        let Some(log) = self.logs.get_mut(&id) else { return Vec::new() };
        let s = stream.min(1) as usize;
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        let mut out = Vec::new();
        while total < READ_BUDGET {
            // SAFETY: reading into a stack buffer from a descriptor we own.
            let n = unsafe { libc::read(log.read[s].as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            total += n;
            for &b in &buf[..n] {
                if b == b'\n' || log.partial[s].len() >= MAX_LINE {
                    let text = String::from_utf8_lossy(&log.partial[s]).into_owned();
                    log.partial[s].clear();
                    if b != b'\n' {
                        log.partial[s].push(b);
                    }
                    out.push(LogLine { service: log.name.clone(), ts_ms: now_ms, stream: if s == 0 { Stream::Stdout } else { Stream::Stderr }, text });
                } else {
                    log.partial[s].push(b);
                }
            }
        }
        if !out.is_empty() {
            log.record(&dir, &out);
        }
        if echo {
            for line in &out {
                crate::say!("{} | {}", line.service, line.text);
            }
        }
        out
    }

    /// The last `n` lines of one service, or of all merged by time.
    pub fn tail(&self, name: Option<&str>, n: usize) -> Vec<LogLine> {
        let mut lines: Vec<LogLine> = self
            .logs
            .values()
            .filter(|l| name.is_none_or(|n| n == l.name))
            .flat_map(|l| l.ring.iter().skip(l.ring.len().saturating_sub(n)).cloned())
            .collect();
        // Oldest first; the sort is stable, so lines of one service keep their order.
        lines.sort_by_key(|l| l.ts_ms);
        let mut skip = lines.len().saturating_sub(n);
        let mut bytes: usize = lines[skip..].iter().map(|l| l.text.len()).sum();
        while bytes > TAIL_BYTES && skip < lines.len() {
            bytes -= lines[skip].text.len();
            skip += 1;
        }
        lines.split_off(skip)
    }

    /// Every service's pipes and lines, for a re-execution (reexec.rs); the descriptors stay
    /// open and owned here until the exec.
    pub fn save(&self) -> Vec<SavedLog> {
        let mut v: Vec<SavedLog> = self
            .logs
            .iter()
            .map(|(&id, l)| SavedLog {
                id,
                name: l.name.clone(),
                read: [l.read[0].as_raw_fd(), l.read[1].as_raw_fd()],
                write: [l.write[0].as_raw_fd(), l.write[1].as_raw_fd()],
                partial: [String::from_utf8_lossy(&l.partial[0]).into_owned(), String::from_utf8_lossy(&l.partial[1]).into_owned()],
                ring: l.ring.iter().cloned().collect(),
                max_size: l.max_size,
                keep: l.keep,
            })
            .collect();
        v.sort_by_key(|l| l.id);
        v
    }

    /// The pipes of a previous program (every descriptor already checked to be open and now
    /// owned by the caller's `adopt`); read ends are returned to register with the reactor.
    /// The log files are opened again on the next line.
    pub fn restore(&mut self, saved: Vec<SavedLog>, adopt: &mut dyn FnMut(RawFd) -> OwnedFd) -> Vec<(RawFd, u32, u8)> {
        let mut watch = Vec::new();
        for s in saved {
            let read = [adopt(s.read[0]), adopt(s.read[1])];
            let write = [adopt(s.write[0]), adopt(s.write[1])];
            watch.push((read[0].as_raw_fd(), s.id, 0));
            watch.push((read[1].as_raw_fd(), s.id, 1));
            let ring_bytes = s.ring.iter().map(|l| l.text.len()).sum();
            let [p0, p1] = s.partial;
            self.logs.insert(
                s.id,
                ServiceLog {
                    name: s.name,
                    read,
                    write,
                    partial: [p0.into_bytes(), p1.into_bytes()],
                    ring: s.ring.into(),
                    ring_bytes,
                    file: None,
                    file_size: 0,
                    max_size: s.max_size,
                    keep: s.keep,
                    file_error_said: false,
                },
            );
        }
        watch
    }

    /// Forgets a service removed for good; its pipes close.
    pub fn remove(&mut self, id: u32) -> Vec<RawFd> {
        self.logs.remove(&id).map(|l| l.read.iter().map(|f| f.as_raw_fd()).collect()).unwrap_or_default()
    }
}

impl ServiceLog {
    /// Keeps `lines` (all read at the same moment) in the ring and appends them to the file
    /// with one write per file: a flood costs PID 1 a few syscalls per wake-up, not one per line.
    fn record(&mut self, dir: &Path, lines: &[LogLine]) {
        for line in lines {
            self.ring_bytes += line.text.len();
            self.ring.push_back(line.clone());
        }
        while self.ring.len() > RING_LINES || self.ring_bytes > RING_BYTES {
            match self.ring.pop_front() {
                Some(old) => self.ring_bytes -= old.text.len(),
                None => break,
            }
        }
        let stamp = rfc3339_ms(lines[0].ts_ms);
        let mut chunk = String::with_capacity(lines.iter().map(|l| l.text.len() + 32).sum());
        for line in lines {
            let tag = if line.stream == Stream::Stdout { "out" } else { "err" };
            let before = chunk.len();
            chunk.push_str(&stamp);
            chunk.push(' ');
            chunk.push_str(tag);
            chunk.push(' ');
            chunk.push_str(&line.text);
            chunk.push('\n');
            // Rotate at line boundaries: flush what fits, then start the next file.
            if self.file.is_some() && self.file_size + chunk.len() as u64 > self.max_size && before > 0 {
                let rest = chunk.split_off(before);
                self.append(dir, &chunk);
                chunk = rest;
                self.file_size = self.max_size; // forces the rotation below
            }
            if self.file.is_none() || self.file_size + chunk.len() as u64 > self.max_size {
                if let Err(e) = self.open(dir, self.file.is_some()) {
                    if !self.file_error_said {
                        crate::say!("logs: {}: {e}; keeping its lines in memory only", dir.join(format!("{}.log", self.name)).display());
                        self.file_error_said = true;
                    }
                    return;
                }
            }
        }
        self.append(dir, &chunk);
    }

    fn append(&mut self, _dir: &Path, text: &str) {
        if let Some(f) = &mut self.file {
            if f.write_all(text.as_bytes()).is_ok() {
                self.file_size += text.len() as u64;
            }
        }
    }

    /// Opens NAME.log for appending; with `rotate`, shifts NAME.log → .1 → .2 … first.
    fn open(&mut self, dir: &Path, rotate: bool) -> std::io::Result<()> {
        let path = dir.join(format!("{}.log", self.name));
        self.file = None;
        if rotate || std::fs::metadata(&path).map(|m| m.len() >= self.max_size).unwrap_or(false) {
            rotate_files(&path, self.keep)?;
        }
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        self.file_size = f.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(f);
        Ok(())
    }
}

/// NAME.log → NAME.log.1, NAME.log.1 → .2, …, dropping what falls past `keep`.
pub fn rotate_files(path: &Path, keep: u32) -> std::io::Result<()> {
    let numbered = |k: u32| PathBuf::from(format!("{}.{k}", path.display()));
    if keep == 0 {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let _ = std::fs::remove_file(numbered(keep));
    for k in (1..keep).rev() {
        let _ = std::fs::rename(numbered(k), numbered(k + 1));
    }
    match std::fs::rename(path, numbered(1)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Milliseconds since the epoch as `2026-11-22T11:40:00.123Z` (UTC; no time-zone database in PID 1).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = ghost_proto::civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_434_000_999), "2026-11-23T11:40:00.999Z"); // `date -u -d @1795434000`
    }

    #[test]
    fn lines_are_split_kept_and_written_then_rotated() {
        let d = tempfile::tempdir().unwrap();
        let mut book = Logbook::new(d.path().to_path_buf());
        let spec = ServiceFile::parse("exec = [\"/bin/true\"]\nlog_max_size = \"1K\"\nlog_keep = 2", "t").unwrap();
        let ([out, err], fresh) = book.writers(7, "svc", &spec).unwrap();
        assert_eq!(fresh.len(), 2);
        let w = |fd: RawFd, s: &[u8]| unsafe { libc::write(fd, s.as_ptr().cast(), s.len()) };
        w(out, b"hello\nwor");
        w(err, b"oops\n");
        let lines = book.read(7, 0, 1000);
        assert_eq!(lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["hello"]);
        w(out, b"ld\n");
        assert_eq!(book.read(7, 0, 2000)[0].text, "world");
        assert_eq!(book.read(7, 1, 3000)[0].stream, Stream::Stderr);
        let tail = book.tail(Some("svc"), 2);
        assert_eq!(tail.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["world", "oops"]);
        let file = std::fs::read_to_string(d.path().join("svc.log")).unwrap();
        assert!(file.contains("1970-01-01T00:00:01.000Z out hello\n"), "{file}");
        assert!(file.contains(" err oops\n"));
        // 1 KiB cap: enough lines rotate twice, keeping .1 and .2 and never more.
        for i in 0..100 {
            w(out, format!("line {i:03} {}\n", "x".repeat(40)).as_bytes());
            book.read(7, 0, 4000);
        }
        assert!(d.path().join("svc.log.1").exists() && d.path().join("svc.log.2").exists());
        assert!(!d.path().join("svc.log.3").exists());
        assert!(std::fs::metadata(d.path().join("svc.log")).unwrap().len() <= 1024);
        let newest = std::fs::read_to_string(d.path().join("svc.log")).unwrap();
        assert!(newest.contains("line 099"), "{newest}");
    }

    #[test]
    fn memory_is_bounded_by_bytes_and_answers_too() {
        let d = tempfile::tempdir().unwrap();
        let mut book = Logbook::new(d.path().to_path_buf());
        let spec = ServiceFile::parse("exec = [\"/bin/true\"]", "t").unwrap();
        let ([out, _], _) = book.writers(3, "big", &spec).unwrap();
        let line = format!("{}\n", "z".repeat(MAX_LINE - 1));
        for _ in 0..200 {
            let _ = unsafe { libc::write(out, line.as_ptr().cast(), line.len()) };
            while !book.read(3, 0, 0).is_empty() {}
        }
        let log = &book.logs[&3];
        assert!(log.ring_bytes <= RING_BYTES && log.ring.len() == RING_BYTES / (MAX_LINE - 1), "{} lines, {} bytes", log.ring.len(), log.ring_bytes);
        let tail = book.tail(Some("big"), 10_000);
        assert!(tail.iter().map(|l| l.text.len()).sum::<usize>() <= TAIL_BYTES);
        assert_eq!(tail.last().unwrap().text.len(), MAX_LINE - 1, "the newest lines are the ones kept");
    }

    #[test]
    fn over_long_lines_are_cut_and_a_flood_is_read_in_budgets() {
        let d = tempfile::tempdir().unwrap();
        let mut book = Logbook::new(d.path().to_path_buf());
        let spec = ServiceFile::parse("exec = [\"/bin/true\"]", "t").unwrap();
        let ([out, _], _) = book.writers(1, "flood", &spec).unwrap();
        let big = vec![b'y'; 60_000];
        let _ = unsafe { libc::write(out, big.as_ptr().cast(), big.len()) };
        let first = book.read(1, 0, 0);
        assert!(!first.is_empty() && first.len() <= READ_BUDGET / MAX_LINE, "one read takes at most one budget: {}", first.len());
        let mut lines = first;
        for _ in 0..10 {
            lines.extend(book.read(1, 0, 0));
        }
        assert_eq!(lines.len(), 60_000 / MAX_LINE, "the rest comes in the next turns, nothing lost");
        assert!(lines.iter().all(|l| l.text.len() == MAX_LINE));
    }
}
