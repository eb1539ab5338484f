//! The event source of PID 1: one epoll set over a signalfd (the signals PID 1 handles), a
//! timerfd (the supervisor's next deadline) and, in the rescue console, stdin. Waiting
//! allocates nothing and never polls: PID 1 sleeps in epoll_wait until something happens.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub const HANDLED_SIGNALS: [i32; 7] =
    [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGHUP, libc::SIGPWR];

const TOKEN_SIGNAL: u64 = 1;
const TOKEN_TIMER: u64 = 2;
const TOKEN_STDIN: u64 = 3;

pub struct Reactor {
    epoll: OwnedFd,
    signals: OwnedFd,
    timer: OwnedFd,
    stdin_watched: bool,
}

/// What woke the reactor up.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ready {
    pub signal: bool,
    pub timer: bool,
    pub stdin: bool,
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
            let r = Reactor { epoll, signals, timer, stdin_watched: false };
            r.ctl(libc::EPOLL_CTL_ADD, r.signals.as_raw_fd(), TOKEN_SIGNAL)?;
            r.ctl(libc::EPOLL_CTL_ADD, r.timer.as_raw_fd(), TOKEN_TIMER)?;
            Ok(r)
        }
    }

    fn ctl(&self, op: i32, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: epoll_ctl with a valid epoll fd and an event struct that lives across the call.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Starts or stops watching fd 0 (the rescue prompt reads it).
    pub fn watch_stdin(&mut self, on: bool) {
        if on != self.stdin_watched {
            let op = if on { libc::EPOLL_CTL_ADD } else { libc::EPOLL_CTL_DEL };
            self.stdin_watched = self.ctl(op, 0, TOKEN_STDIN).is_ok() == on;
        }
    }

    /// Arms the timer for `deadline` (None disarms it).
    pub fn arm(&self, deadline: Option<Instant>) {
        let value = match deadline {
            None => libc::timespec { tv_sec: 0, tv_nsec: 0 },
            Some(d) => {
                // A zero it_value disarms; a deadline already past fires after 1 ns.
                let left = d.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
                libc::timespec { tv_sec: left.as_secs() as _, tv_nsec: left.subsec_nanos() as libc::c_long }
            }
        };
        let spec = libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
        // SAFETY: valid timerfd and itimerspec.
        unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    /// Sleeps until a signal, the timer or stdin is ready.
    pub fn wait(&self) -> Ready {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let n = loop {
            // SAFETY: the buffer holds `events.len()` entries.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1) };
            if n >= 0 {
                break n as usize;
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Ready::default();
            }
        };
        let mut ready = Ready::default();
        for ev in &events[..n] {
            match ev.u64 {
                TOKEN_SIGNAL => ready.signal = true,
                TOKEN_TIMER => {
                    ready.timer = true;
                    let mut expirations = [0u8; 8];
                    // SAFETY: reading 8 bytes into an 8-byte buffer clears the timer.
                    unsafe { libc::read(self.timer.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
                }
                TOKEN_STDIN => ready.stdin = true,
                _ => {}
            }
        }
        ready
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
