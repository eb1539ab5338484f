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
}

static LOG: Mutex<Ring> = Mutex::new(Ring { buf: [0; RING], pos: 0, wrapped: false, console_missed: false });

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
    let ok = write_all(2, bytes);
    // A poisoned lock only means a panic happened while logging; the ring is still bytes.
    let mut ring = LOG.lock().unwrap_or_else(|p| p.into_inner());
    if !ok {
        ring.console_missed = true;
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

fn write_all(fd: i32, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid slice to a file descriptor; a bad fd only returns EBADF.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
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

/// Once the console exists: prints what could not be printed before it did.
pub fn replay_if_missed() {
    let missed = {
        let mut ring = LOG.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut ring.console_missed, false)
    };
    if missed {
        let text = contents();
        write_all(2, &text);
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
