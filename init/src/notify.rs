//! The sd_notify socket (`/run/ghost/notify.sock`): services with `ready = "notify"` or a
//! watchdog get `NOTIFY_SOCKET` and send READY=1, STATUS=, WATCHDOG=1, MAINPID=, STOPPING=1
//! datagrams, so daemons built for systemd work unchanged. The sender is identified by the
//! kernel (SCM_CREDENTIALS), never by what the message claims.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

pub struct NotifySocket {
    fd: OwnedFd,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> std::io::Result<NotifySocket> {
        let _ = std::fs::remove_file(path);
        // SAFETY: socket/bind/setsockopt on a fresh descriptor with a sockaddr_un we fill.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let (addr, len) = crate::control::sockaddr_un(path)?;
            if libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let on: libc::c_int = 1;
            if libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, (&on as *const libc::c_int).cast(), 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(NotifySocket { fd })
        }
    }

    /// The bound socket a previous program of PID 1 handed over (a re-execution).
    pub fn adopt(fd: OwnedFd) -> NotifySocket {
        NotifySocket { fd }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next datagram: the sender's pid (from the kernel) and its text.
    pub fn recv(&self) -> Option<(i32, String)> {
        let mut data = [0u8; 4096];
        // Room for one SCM_CREDENTIALS message.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
        // SAFETY: msghdr points at buffers that live across recvmsg; CMSG_* walk only within
        // the control buffer whose length we pass.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let n = libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC);
            if n < 0 {
                return None;
            }
            let mut pid = 0;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                    let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    pid = cred.pid;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            Some((pid, String::from_utf8_lossy(&data[..n as usize]).into_owned()))
        }
    }
}

/// The process group of `pid` (services are session leaders: their group is their main pid).
pub fn process_group(pid: i32) -> Option<i32> {
    crate::procfs::stat(pid).map(|s| s.pgrp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_is_attributed_to_its_real_sender() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify.sock");
        let sock = NotifySocket::bind(&path).unwrap();
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
        let (pid, text) = sock.recv().unwrap();
        assert_eq!(pid, std::process::id() as i32);
        assert_eq!(text, "READY=1\nSTATUS=up");
        assert!(sock.recv().is_none());
        assert_eq!(process_group(std::process::id() as i32), Some(unsafe { libc::getpgrp() }));
    }
}
