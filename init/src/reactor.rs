//! The event source of PID 1: one epoll set over a signalfd (the signals PID 1 handles), a
//! timerfd (the next deadline of anything) and every other descriptor the loop serves
//! (control clients, log pipes, the notify socket, probes), each under a token. Waiting
//! allocates nothing and never polls: PID 1 sleeps in epoll_wait until something happens.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub const HANDLED_SIGNALS: [i32; 7] =
    [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGHUP, libc::SIGPWR];

/// What a registered descriptor is; packed into epoll's 64-bit user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Signal,
    Timer,
    Stdin,
    ControlListener,
    ControlClient(u32),
    Notify,
    /// A service's output pipe: service id, 0 stdout / 1 stderr.
    Log(u32, u8),
    /// A readiness pipe (`ready = "fd:N"`) of a service.
    ReadyFd(u32),
    /// A tcp/http probe socket.
    Probe(u32),
    /// The DHCP client's socket (network/mod.rs).
    Dhcp,
    /// An input device that has a power key (the ACPI power button).
    PowerButton,
}

impl Token {
    fn pack(self) -> u64 {
        let (kind, a, b): (u64, u64, u64) = match self {
            Token::Signal => (1, 0, 0),
            Token::Timer => (2, 0, 0),
            Token::Stdin => (3, 0, 0),
            Token::ControlListener => (4, 0, 0),
            Token::ControlClient(i) => (5, i as u64, 0),
            Token::Notify => (6, 0, 0),
            Token::Log(i, s) => (7, i as u64, s as u64),
            Token::ReadyFd(i) => (8, i as u64, 0),
            Token::Probe(i) => (9, i as u64, 0),
            Token::Dhcp => (10, 0, 0),
            Token::PowerButton => (11, 0, 0),
        };
        kind << 56 | b << 48 | a
    }

    fn unpack(v: u64) -> Option<Token> {
        let a = (v & 0xffff_ffff) as u32;
        let b = ((v >> 48) & 0xff) as u8;
        Some(match v >> 56 {
            1 => Token::Signal,
            2 => Token::Timer,
            3 => Token::Stdin,
            4 => Token::ControlListener,
            5 => Token::ControlClient(a),
            6 => Token::Notify,
            7 => Token::Log(a, b),
            8 => Token::ReadyFd(a),
            9 => Token::Probe(a),
            10 => Token::Dhcp,
            11 => Token::PowerButton,
            _ => return None,
        })
    }
}

/// Readiness of one descriptor.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub token: Token,
    pub readable: bool,
    /// Hang-up or error: the other side is gone.
    pub closed: bool,
}

pub const MAX_EVENTS: usize = 64;

pub struct Reactor {
    epoll: OwnedFd,
    signals: OwnedFd,
    timer: OwnedFd,
    stdin_watched: bool,
    events: [libc::epoll_event; MAX_EVENTS],
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by the kernel and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Reactor {
    /// Blocks the handled signals (they arrive through the signalfd only) and sets up epoll.
    pub fn new() -> io::Result<Reactor> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; the fds
        // created here are wrapped in OwnedFd at once.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in HANDLED_SIGNALS {
                libc::sigaddset(&mut set, s);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) < 0 {
                return Err(io::Error::last_os_error());
            }
            let signals = owned(libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))?;
            let timer = owned(libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC))?;
            let epoll = owned(libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
            let r = Reactor { epoll, signals, timer, stdin_watched: false, events: [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS] };
            r.add(r.signals.as_raw_fd(), Token::Signal, false)?;
            r.add(r.timer.as_raw_fd(), Token::Timer, false)?;
            Ok(r)
        }
    }

    fn ctl(&self, op: i32, fd: RawFd, token: Token, writable: bool) -> io::Result<()> {
        let mut flags = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
        if writable {
            flags |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event { events: flags, u64: token.pack() };
        // SAFETY: epoll_ctl with a valid epoll fd and an event struct that lives across the call.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for input (and for room to write when `writable`).
    pub fn add(&self, fd: RawFd, token: Token, writable: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, writable)
    }

    pub fn modify(&self, fd: RawFd, token: Token, writable: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, writable)
    }

    pub fn remove(&self, fd: RawFd) {
        // SAFETY: removing a descriptor from our epoll set; a non-member only gives ENOENT.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Starts or stops watching fd 0 (the rescue prompt reads it).
    pub fn watch_stdin(&mut self, on: bool) {
        if on != self.stdin_watched {
            let r = if on { self.add(0, Token::Stdin, false) } else { self.ctl(libc::EPOLL_CTL_DEL, 0, Token::Stdin, false) };
            if r.is_ok() {
                self.stdin_watched = on;
            }
        }
    }

    /// Arms the timer for `deadline` (None disarms it).
    pub fn arm(&self, deadline: Option<Instant>) {
        let value = match deadline {
            None => libc::timespec { tv_sec: 0, tv_nsec: 0 },
            Some(d) => {
                // A zero it_value disarms; a deadline already past fires after 1 ns.
                let left = d.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
                libc::timespec { tv_sec: left.as_secs() as _, tv_nsec: left.subsec_nanos() as _ }
            }
        };
        let spec = libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
        // SAFETY: valid timerfd and itimerspec.
        unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    /// Sleeps until something is ready; calls `f` for each ready descriptor.
    pub fn wait(&mut self, mut f: impl FnMut(Ready)) {
        let n = loop {
            // SAFETY: the buffer holds MAX_EVENTS entries.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), self.events.as_mut_ptr(), MAX_EVENTS as i32, -1) };
            if n >= 0 {
                break n as usize;
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return;
            }
        };
        for i in 0..n {
            let ev = self.events[i];
            let Some(token) = Token::unpack(ev.u64) else { continue };
            if token == Token::Timer {
                let mut expirations = [0u8; 8];
                // SAFETY: reading 8 bytes into an 8-byte buffer clears the timer.
                unsafe { libc::read(self.timer.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
            }
            let e = ev.events;
            f(Ready {
                token,
                readable: e & (libc::EPOLLIN as u32) != 0,
                closed: e & ((libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32) != 0,
            });
        }
    }

    /// The next pending signal, if any.
    pub fn next_signal(&self) -> Option<i32> {
        // SAFETY: signalfd_siginfo is plain data; we read exactly its size.
        unsafe {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let n = libc::read(self.signals.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size);
            (n == size as isize).then_some(info.ssi_signo as i32)
        }
    }
}

/// Reaps one ended child without blocking: `Some((pid, exit))`, or None when none is left.
pub fn reap_one() -> Option<(i32, crate::supervisor::Exit)> {
    let mut status = 0;
    // SAFETY: waitpid writes the status into a valid int.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let exit = if libc::WIFEXITED(status) {
        crate::supervisor::Exit::Code(libc::WEXITSTATUS(status))
    } else {
        crate::supervisor::Exit::Signal(libc::WTERMSIG(status))
    };
    Some((pid, exit))
}

/// Whether this process has any child left (waitpid would not say ECHILD).
pub fn has_children() -> bool {
    // SAFETY: siginfo_t is plain data; WNOWAIT|WNOHANG only peeks and reaps nothing.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
    };
    !(r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn tokens_round_trip() {
        for t in [Token::Signal, Token::Timer, Token::Stdin, Token::ControlListener, Token::ControlClient(7), Token::Notify, Token::Log(u32::MAX, 1), Token::ReadyFd(3), Token::Probe(9), Token::Dhcp, Token::PowerButton] {
            assert_eq!(Token::unpack(t.pack()), Some(t));
        }
        assert_eq!(Token::unpack(0), None);
    }
}
