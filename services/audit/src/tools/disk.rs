//! disk.cleanup: frees space the way systemd-tmpfiles ages temporary directories.
//!
//! `path` must be, after canonicalisation, exactly one of the executor's cleanable directories
//! (`/tmp`, `/var/tmp`) or its log directory. In a temporary directory, regular files and
//! symbolic links (the links themselves) last modified at least `older_than_s` ago go, then
//! the subdirectories left empty that were that old before the walk; in the log directory only
//! rotated logs (`NAME.log.1`, `NAME.log.2.gz`, …) go, never a live `NAME.log`, and no
//! directory. The walk holds a descriptor of every directory on its path and works relative
//! to it (`openat` with `O_NOFOLLOW`, `fstatat`, `unlinkat`), so a symbolic link swapped in
//! while it runs cannot lead it out of the directory; it never enters a directory on another
//! filesystem (`st_dev`), and it stops at the executor's default timeout, keeping what it has
//! not visited.

use super::{ArgErrors, ExecConfig, ToolError};
use serde_json::{json, Value};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// At most this many error messages come back (the first ones).
pub const MAX_ERRORS: u64 = 10;
/// Directories nested deeper than this are kept as they are.
const MAX_DEPTH: usize = 128;
/// Entries read from one directory per run (a later run goes on: removed ones are gone).
const MAX_ENTRIES_PER_DIR: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A temporary directory: old files and symbolic links, then empty old directories.
    Tmp,
    /// The log directory: old rotated logs only.
    Logs,
}

/// `NAME.log.<digits>`, optionally compressed (`.gz`, `.zst`, `.xz`), with NAME not empty.
pub fn rotated_log(name: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(name) else { return false };
    let s = [".gz", ".zst", ".xz"].iter().find_map(|ext| s.strip_suffix(ext)).unwrap_or(s);
    match s.rsplit_once('.') {
        Some((stem, digits)) => {
            !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && stem.strip_suffix(".log").is_some_and(|n| !n.is_empty())
        }
        None => false,
    }
}

fn invalid_path(message: String) -> ToolError {
    ToolError::InvalidArgs(ArgErrors::one("args.path", message))
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

fn lstat_at(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// Opens the directory `name` in `dir` without following a symbolic link.
fn open_dir_at(dir: Option<&OwnedFd>, name: &CStr) -> io::Result<OwnedFd> {
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = cvt(unsafe { libc::openat(at, name.as_ptr(), flags) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The names in `dir` (without `.` and `..`), at most `max`; true when there were more.
fn names(dir: &OwnedFd, max: usize) -> io::Result<(Vec<CString>, bool)> {
    // fdopendir takes the descriptor it is given: hand it a duplicate.
    let dup = cvt(unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    let dp = unsafe { libc::fdopendir(dup) };
    if dp.is_null() {
        let e = io::Error::last_os_error();
        unsafe { libc::close(dup) };
        return Err(e);
    }
    let mut out = Vec::new();
    let mut more = false;
    let result = loop {
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir(dp) };
        if ent.is_null() {
            let errno = io::Error::last_os_error();
            break if errno.raw_os_error().unwrap_or(0) == 0 { Ok(()) } else { Err(errno) };
        }
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        if out.len() >= max {
            more = true;
            break Ok(());
        }
        out.push(name.to_owned());
    };
    unsafe { libc::closedir(dp) };
    result.map(|()| (out, more))
}

fn mtime_ns(st: &libc::stat) -> i128 {
    st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128
}

struct Walk {
    kind: Kind,
    /// The filesystem of the cleaned directory.
    dev: u64,
    /// Entries modified after this (ns since the epoch) are kept.
    cutoff_ns: i128,
    dry_run: bool,
    deadline: Instant,
    stopped: bool,
    removed_files: u64,
    removed_dirs: u64,
    freed_bytes: u64,
    kept_files: u64,
    errors: Vec<String>,
}

impl Walk {
    fn error(&mut self, message: String) {
        if (self.errors.len() as u64) < MAX_ERRORS {
            self.errors.push(message);
        }
    }

    fn old(&self, st: &libc::stat) -> bool {
        mtime_ns(st) <= self.cutoff_ns
    }

    /// Cleans the directory open as `dir` (shown as `shown`); true when nothing is left in it
    /// (with dry_run: when nothing would be).
    fn dir(&mut self, dir: &OwnedFd, shown: &Path, depth: usize) -> bool {
        let (entries, more) = match names(dir, MAX_ENTRIES_PER_DIR) {
            Ok(x) => x,
            Err(e) => {
                self.error(format!("{}: {e}", shown.display()));
                return false;
            }
        };
        if more {
            self.error(format!(
                "{}: more than {MAX_ENTRIES_PER_DIR} entries; the rest were not visited (run again)",
                shown.display()
            ));
        }
        let mut empty = !more;
        for name in entries {
            if !self.stopped && Instant::now() >= self.deadline {
                self.stopped = true;
                self.error(format!(
                    "stopped at the time limit in {}: what was not visited is kept (run again)",
                    shown.display()
                ));
            }
            if self.stopped {
                return false;
            }
            empty &= self.entry(dir, &name, shown, depth);
        }
        empty
    }

    /// Handles one entry of `dir`; true when it is gone (or would be, with dry_run).
    fn entry(&mut self, dir: &OwnedFd, name: &CStr, parent: &Path, depth: usize) -> bool {
        let shown = parent.join(OsStr::from_bytes(name.to_bytes()));
        let st = match lstat_at(dir, name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return true,
            Err(e) => {
                self.error(format!("{}: {e}", shown.display()));
                return false;
            }
        };
        let fmt = st.st_mode & libc::S_IFMT;
        if st.st_dev as u64 != self.dev {
            // A mount point (or a file bind-mounted) inside: another filesystem's business.
            if fmt != libc::S_IFDIR {
                self.kept_files += 1;
            }
            return false;
        }
        match fmt {
            libc::S_IFDIR => self.subdir(dir, name, &st, &shown, depth),
            libc::S_IFREG if self.kind == Kind::Tmp || rotated_log(name.to_bytes()) => {
                self.remove_file(dir, name, &st, &shown)
            }
            libc::S_IFLNK if self.kind == Kind::Tmp => self.remove_file(dir, name, &st, &shown),
            _ => {
                // Live logs, other files of the log directory, sockets, FIFOs, devices.
                self.kept_files += 1;
                false
            }
        }
    }

    fn remove_file(&mut self, dir: &OwnedFd, name: &CStr, st: &libc::stat, shown: &Path) -> bool {
        if !self.old(st) {
            self.kept_files += 1;
            return false;
        }
        let size = if st.st_mode & libc::S_IFMT == libc::S_IFREG { st.st_size.max(0) as u64 } else { 0 };
        if !self.dry_run {
            if let Err(e) = cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }) {
                if e.raw_os_error() == Some(libc::ENOENT) {
                    return true; // gone already, not by us
                }
                self.error(format!("{}: {e}", shown.display()));
                self.kept_files += 1;
                return false;
            }
        }
        self.removed_files += 1;
        self.freed_bytes += size;
        true
    }

    fn subdir(&mut self, dir: &OwnedFd, name: &CStr, st: &libc::stat, shown: &Path, depth: usize) -> bool {
        if depth >= MAX_DEPTH {
            self.error(format!("{}: nested deeper than {MAX_DEPTH} directories; kept", shown.display()));
            return false;
        }
        let sub = match open_dir_at(Some(dir), name) {
            Ok(fd) => fd,
            // Replaced by something else since the stat (a symbolic link: O_NOFOLLOW).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => return false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return true,
            Err(e) => {
                self.error(format!("{}: {e}", shown.display()));
                return false;
            }
        };
        match fstat(&sub) {
            Ok(now) if now.st_dev == st.st_dev && now.st_ino == st.st_ino => {}
            Ok(_) => return false, // swapped between the stat and the open
            Err(e) => {
                self.error(format!("{}: {e}", shown.display()));
                return false;
            }
        }
        let empty = self.dir(&sub, shown, depth + 1);
        drop(sub);
        // The directory's age as it was before the walk touched it (as systemd-tmpfiles does).
        if !empty || self.kind != Kind::Tmp || !self.old(st) {
            return false;
        }
        if !self.dry_run {
            if let Err(e) = cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) }) {
                return match e.raw_os_error() {
                    Some(libc::ENOENT) => true,
                    // Something new arrived in it meanwhile: it stays.
                    Some(libc::ENOTEMPTY | libc::EEXIST) => false,
                    _ => {
                        self.error(format!("{}: {e}", shown.display()));
                        false
                    }
                };
            }
        }
        self.removed_dirs += 1;
        true
    }
}

/// The cleanable directories, canonicalised (those that do not exist are left out), with
/// their kind; the log directory first, so that it is cleaned as one even if listed twice.
fn cleanable(config: &ExecConfig) -> Vec<(PathBuf, Kind)> {
    std::iter::once((&config.log_dir, Kind::Logs))
        .chain(config.cleanable_dirs.iter().map(|d| (d, Kind::Tmp)))
        .filter_map(|(d, k)| Some((std::fs::canonicalize(d).ok()?, k)))
        .collect()
}

pub fn cleanup(args: &Value, config: &ExecConfig) -> Result<Value, ToolError> {
    let given = args.get("path").and_then(Value::as_str).unwrap_or_default();
    let older_than_s = args.get("older_than_s").and_then(Value::as_u64).unwrap_or(0);
    let dry_run = args.get("dry_run").and_then(Value::as_bool).unwrap_or(false);
    let allowed = cleanable(config);
    let list = || {
        let mut names: Vec<String> = config.cleanable_dirs.iter().map(|d| d.display().to_string()).collect();
        names.push(format!("{} (rotated logs)", config.log_dir.display()));
        names.join(", ")
    };
    let path = std::fs::canonicalize(given)
        .map_err(|e| invalid_path(format!("{given}: {e} (cleanable directories: {})", list())))?;
    let Some(&(_, kind)) = allowed.iter().find(|(d, _)| *d == path) else {
        let resolved =
            if path.as_os_str() == OsStr::new(given) { String::new() } else { format!(" (it is {})", path.display()) };
        return Err(invalid_path(format!(
            "{given}{resolved} is not a cleanable directory (cleanable directories: {})",
            list()
        )));
    };
    let root = open_dir_at(None, &cstring(&path).map_err(|e| ToolError::Failed(format!("{given}: {e}")))?)
        .map_err(|e| ToolError::Failed(format!("{}: {e}", path.display())))?;
    let st = fstat(&root).map_err(|e| ToolError::Failed(format!("{}: {e}", path.display())))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
    let mut walk = Walk {
        kind,
        dev: st.st_dev as u64,
        cutoff_ns: now - older_than_s as i128 * 1_000_000_000,
        dry_run,
        deadline: Instant::now() + config.default_timeout,
        stopped: false,
        removed_files: 0,
        removed_dirs: 0,
        freed_bytes: 0,
        kept_files: 0,
        errors: Vec::new(),
    };
    walk.dir(&root, &path, 0);
    Ok(json!({
        "path": path.display().to_string(),
        "removed_files": walk.removed_files,
        "removed_dirs": walk.removed_dirs,
        "freed_bytes": walk.freed_bytes,
        "kept_files": walk.kept_files,
        "errors": walk.errors,
        "dry_run": dry_run,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_logs_are_recognised_and_live_logs_are_not() {
        for n in ["redis.log.1", "redis.log.2.gz", "a.log.10.zst", "x-y.log.3.xz", "app.err.log.7"] {
            assert!(rotated_log(n.as_bytes()), "{n}");
        }
        for n in [
            "redis.log",
            ".log.1",
            "redis.log.",
            "redis.log.1.bz2",
            "redis.log.gz",
            "redis.log.1a",
            "redis.log.old",
            "redis.txt.1",
            "redis.log.1.gz.gz",
            "notes",
        ] {
            assert!(!rotated_log(n.as_bytes()), "{n}");
        }
        assert!(!rotated_log(b"r\xffs.log.1"));
    }
}
