//! The two sockets of the network step, and nothing else: a UDP socket on port 68 bound to
//! the interface (SO_BINDTODEVICE, SO_BROADCAST) that carries DHCP, and a NETLINK_ROUTE
//! socket that carries `netlink` requests. Both are non-blocking: rtnetlink handles a request
//! inside sendmsg, so its acknowledgement is queued before sendmsg returns.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::netlink::{self, Answer};

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn socket(domain: i32, kind: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with integer arguments; the new fd is owned by the OwnedFd at once.
    let fd = check(unsafe { libc::socket(domain, kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: fd was just returned by the kernel and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_option(fd: &OwnedFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live byte slice.
    check(unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), value.len() as libc::socklen_t) }).map(|_| ())
}

fn sockaddr_in(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(addr.octets()) },
        sin_zero: [0; 8],
    }
}

/// UDP port 68 on one interface.
///
/// A UDP socket rather than AF_PACKET: before the interface has an address the client asks
/// for broadcast replies (the BOOTP broadcast flag), which the kernel delivers to a socket
/// bound to the device; later unicast replies reach the leased address normally. It needs
/// reverse-path filtering off on the interface (the kernel's default, and the guest's).
pub struct DhcpSocket {
    fd: OwnedFd,
}

impl DhcpSocket {
    pub fn open(iface: &str) -> io::Result<DhcpSocket> {
        let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP)?;
        let on = 1i32.to_ne_bytes();
        set_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &on)?;
        set_option(&fd, libc::SOL_SOCKET, libc::SO_BROADCAST, &on)?;
        set_option(&fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, iface.as_bytes())?;
        let sa = sockaddr_in(Ipv4Addr::UNSPECIFIED, super::dhcp::CLIENT_PORT);
        // SAFETY: bind with a sockaddr_in that lives across the call and its exact size.
        check(unsafe {
            libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        })?;
        Ok(DhcpSocket { fd })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends one message to port 67 of `to`.
    pub fn send(&self, packet: &[u8], to: Ipv4Addr) -> io::Result<()> {
        let sa = sockaddr_in(to, super::dhcp::SERVER_PORT);
        // SAFETY: the buffer and the address live across the call; sizes are exact.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next datagram into `buf`, or None when none is waiting.
    pub fn recv<'a>(&self, buf: &'a mut [u8]) -> Option<&'a [u8]> {
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        (n >= 0).then(|| &buf[..n as usize])
    }
}

/// A NETLINK_ROUTE socket for requests, each answered by an acknowledgement.
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
}

impl RouteSocket {
    pub fn open() -> io::Result<RouteSocket> {
        let fd = socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
        // SAFETY: sockaddr_nl is plain data; zeroed means "kernel picks the port id".
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: bind with a sockaddr_nl that lives across the call and its exact size.
        check(unsafe {
            libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t)
        })?;
        Ok(RouteSocket { fd, seq: 1 })
    }

    /// Sends the message `build` makes for the next sequence number; Ok once the kernel
    /// acknowledged it, or the kernel's error.
    pub fn request(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let msg = build(self.seq);
        // SAFETY: sockaddr_nl is plain data; pid 0 addresses the kernel.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the message and the address live across the call; sizes are exact.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 4096];
        // A few reads at most: we joined no multicast group, so only answers arrive.
        for _ in 0..8 {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            match netlink::find_ack(&buf[..n as usize], self.seq) {
                Answer::Ack(0) => return Ok(()),
                Answer::Ack(errno) => return Err(io::Error::from_raw_os_error(errno)),
                Answer::NotYet => continue,
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "no acknowledgement from the kernel"))
    }
}
