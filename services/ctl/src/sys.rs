//! The two libc calls ghostctl needs beyond std: poll(2), to notice a closed stdout while a
//! stream is idle, and localtime_r(3), to print times in the operator's time zone.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The socket has data (or was closed): a read will not block.
    Readable,
    /// Nobody reads our stdout any more (`| head` exited, the terminal hung up).
    StdoutGone,
}

/// Blocks until `sock` is readable or `stdout` reports an error or hang-up. Asking poll for no
/// events on stdout still reports POLLERR/POLLHUP, which a pipe whose reader left raises.
pub fn wait_readable_or_stdout_gone(sock: BorrowedFd<'_>, stdout: BorrowedFd<'_>) -> io::Result<Wake> {
    let mut fds = [
        libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: stdout.as_raw_fd(), events: 0, revents: 0 },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd for the whole call; both fds are borrowed
        // and so open.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return Ok(Wake::StdoutGone);
        }
        if fds[0].revents != 0 {
            return Ok(Wake::Readable);
        }
    }
}

/// A wall-clock time in the local time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// `unix_s` (seconds since the epoch) in the local time zone (TZ, /etc/localtime; UTC without).
pub fn local_time(unix_s: i64) -> Option<LocalTime> {
    // libc's time_t alias is deprecated on musl (it widens to 64 bits with musl 1.2); take
    // the type from localtime_r's own signature instead of naming it.
    let mut t = Default::default();
    set_checked(&mut t, unix_s)?;
    // SAFETY: all-zero is a valid `tm` (integers and, on glibc, a null zone pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the thread-safe variant.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return None;
    }
    Some(LocalTime {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
    })
}

/// `*slot = value` when it fits the slot's integer type (time_t is 32 bits on some targets).
fn set_checked<T: TryFrom<i64>>(slot: &mut T, value: i64) -> Option<()> {
    *slot = T::try_from(value).ok()?;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn an_output_whose_reader_left_wakes_the_wait() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (out, reader) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(reader);
        assert_eq!(wait_readable_or_stdout_gone(a.as_fd(), out.as_fd()).unwrap(), Wake::StdoutGone);
    }

    #[test]
    fn a_readable_socket_wakes_the_wait() {
        use std::io::Write;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (out, _reader) = std::os::unix::net::UnixStream::pair().unwrap();
        b.write_all(b"x\n").unwrap();
        assert_eq!(wait_readable_or_stdout_gone(a.as_fd(), out.as_fd()).unwrap(), Wake::Readable);
    }

    #[test]
    fn local_time_is_a_plausible_calendar_time() {
        let t = local_time(1_700_000_000).unwrap();
        assert_eq!((t.year, t.month), (2023, 11));
        assert!((13..=15).contains(&t.day) && t.hour < 24 && t.minute < 60 && t.second == 20);
    }
}
