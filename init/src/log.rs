//! The boot log: every line PID 1 says goes to the console (stderr) and into a fixed-size ring
//! that the rescue console can show. Writing a line allocates nothing: it is formatted into a
//! stack buffer, so the reaping and signal paths can log without touching the heap.

use std::fmt::{self, Write as _};
use std::sync::Mutex;

const RING: usize = 64 * 1024;
const LINE: usize = 1024;

struct Ring {
    buf: [u8; RING],
    /// Next write position; the ring is full once `wrapped`.
    pos: usize,
    wrapped: bool,
    /// Set when stderr could not be written (no console yet): lines are replayed later.
    console_missed: bool,
    /// Lines the console could not take at once (non-blocking console): counted, said later.
    console_dropped: u64,
}

static LOG: Mutex<Ring> = Mutex::new(Ring { buf: [0; RING], pos: 0, wrapped: false, console_missed: false, console_dropped: 0 });

/// A line buffer on the stack; text beyond its size is cut with an ellipsis.
struct LineBuf {
    buf: [u8; LINE],
    len: usize,
    cut: bool,
}

impl fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len >= LINE - 4 {
                self.cut = true;
                return Ok(());
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Writes `ghost-init: <args>` as one line to the console and the ring.
pub fn line(args: fmt::Arguments) {
    let mut l = LineBuf { buf: [0; LINE], len: 0, cut: false };
    let _ = l.write_str("ghost-init: ");
    let _ = l.write_fmt(args);
    if l.cut {
        l.buf[l.len..l.len + 3].copy_from_slice(b"...");
        l.len += 3;
    }
    l.buf[l.len] = b'\n';
    l.len += 1;
    let bytes = &l.buf[..l.len];
    // A poisoned lock only means a panic happened while logging; the ring is still bytes.
    let mut ring = LOG.lock().unwrap_or_else(|p| p.into_inner());
    if ring.console_dropped > 0 {
        let mut note = LineBuf { buf: [0; LINE], len: 0, cut: false };
        let _ = write!(note, "ghost-init: ({} console lines dropped: the console was busy; `log` in the rescue console has them)\n", ring.console_dropped);
        if let Written::All = write_console(&note.buf[..note.len]) {
            ring.console_dropped = 0;
        }
    }
    match write_console(bytes) {
        Written::All => {}
        Written::WouldBlock => ring.console_dropped += 1,
        Written::Failed => ring.console_missed = true,
    }
    for &b in bytes {
        let p = ring.pos;
        ring.buf[p] = b;
        ring.pos = (p + 1) % RING;
        if ring.pos == 0 {
            ring.wrapped = true;
        }
    }
}

enum Written {
    All,
    /// The console is non-blocking and full: the line is not on the console (it is in the ring).
    WouldBlock,
    Failed,
}

/// Writes a whole line to the console, or nothing of it when the console cannot take it now
/// (a partial line is finished with a blocking-free best effort).
fn write_console(bytes: &[u8]) -> Written {
    // SAFETY: writing from a valid slice to fd 2.
    let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
    if n < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Written::WouldBlock,
            _ => Written::Failed,
        };
    }
    let n = n as usize;
    if n < bytes.len() && !write_all(2, &bytes[n..], 100) {
        return Written::Failed;
    }
    Written::All
}

/// Writes all of `bytes`, waiting up to `patience_ms` at a time for a full descriptor to make
/// room; false when it made no progress for that long or failed.
pub fn write_all(fd: i32, mut bytes: &[u8], patience_ms: i32) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid slice to a file descriptor; a bad fd only returns EBADF.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                    // SAFETY: poll on one valid pollfd, bounded by the caller's patience.
                    if unsafe { libc::poll(&mut p, 1, patience_ms) } <= 0 {
                        return false;
                    }
                    continue;
                }
                _ => return false,
            }
        }
        if n == 0 {
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// The whole ring, oldest first (for the rescue console; allocation is fine there).
pub fn contents() -> Vec<u8> {
    let ring = LOG.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::with_capacity(RING);
    if ring.wrapped {
        out.extend_from_slice(&ring.buf[ring.pos..]);
    }
    out.extend_from_slice(&ring.buf[..ring.pos]);
    out
}

/// After a re-execution: the previous program's lines, kept in the ring and not printed again.
pub fn restore(text: &[u8]) {
    let mut ring = LOG.lock().unwrap_or_else(|p| p.into_inner());
    for &b in &text[text.len().saturating_sub(RING)..] {
        let pos = ring.pos;
        ring.buf[pos] = b;
        ring.pos += 1;
        if ring.pos == RING {
            ring.pos = 0;
            ring.wrapped = true;
        }
    }
}

/// As PID 1 (the console is our own open file): never block on it again.
pub fn console_non_blocking() {
    // SAFETY: fcntl flag changes on fd 2 (and 0, 1, which share its open file description).
    unsafe {
        let fl = libc::fcntl(2, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(2, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

/// Once the console exists: prints what could not be printed before it did.
pub fn replay_if_missed() {
    let missed = {
        let mut ring = LOG.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut ring.console_missed, false)
    };
    if missed {
        let text = contents();
        write_all(2, &text, 100);
    }
}

/// `say!("x {}", y)`: one boot-log line.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::log::line(format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_land_in_the_ring_and_long_lines_are_cut() {
        crate::say!("hello {}", 42);
        let long = "x".repeat(1100);
        crate::say!("{long}");
        let text = String::from_utf8(super::contents()).unwrap();
        assert!(text.contains("ghost-init: hello 42\n"));
        let cut = text.lines().find(|l| l.starts_with("ghost-init: xxx")).unwrap();
        assert!(cut.len() < 1024 && cut.ends_with("..."));
    }
}
