//! System calls PID 1 makes, in one place. Everything here is a thin, explicit wrapper; the
//! logic that decides what to call lives in the pure modules and is unit-tested there.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn mount(source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let dptr = if data.is_empty() { std::ptr::null() } else { d.as_ptr().cast() };
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    check(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags as libc::c_ulong, dptr) })
}

pub fn umount(target: &str) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::umount2(t.as_ptr(), 0) })
}

pub fn remount_read_only(target: &str) -> io::Result<()> {
    mount("", target, "", libc::MS_REMOUNT | libc::MS_RDONLY, "")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Reboot,
    PowerOff,
    Halt,
}

impl PowerAction {
    pub fn verb(self) -> &'static str {
        match self {
            PowerAction::Reboot => "rebooting",
            PowerAction::PowerOff => "powered off",
            PowerAction::Halt => "halted",
        }
    }
}

/// reboot(2). Returns only on failure.
pub fn reboot(action: PowerAction) -> io::Error {
    let cmd = match action {
        PowerAction::Reboot => libc::LINUX_REBOOT_CMD_RESTART,
        PowerAction::PowerOff => libc::LINUX_REBOOT_CMD_POWER_OFF,
        PowerAction::Halt => libc::LINUX_REBOOT_CMD_HALT,
    };
    // SAFETY: reboot(2) takes no pointers with these commands.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// Ctrl-Alt-Del sends SIGINT to PID 1 instead of rebooting at once.
pub fn hand_ctrl_alt_del_to_init() -> io::Result<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF) })
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe a valid byte slice.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
}

pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
}

pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::kill(pid, sig) })
}

pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() };
}

/// Brings a network interface up (SIOCSIFFLAGS with IFF_UP), as `ip link set NAME up` does.
pub fn interface_up(name: &str) -> io::Result<()> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    // SAFETY: a plain datagram socket, closed by OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass, which lives across the calls.
    unsafe {
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req))?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req))
    }
}

/// The kernel's own module loader.
pub struct KernelModules;

const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

impl crate::modules::Loader for KernelModules {
    fn load_file(&mut self, file: &std::fs::File, compressed: bool) -> Result<(), i32> {
        let flags = if compressed { MODULE_INIT_COMPRESSED_FILE } else { 0 };
        let params = b"\0";
        // SAFETY: finit_module(fd, params, flags) with a valid fd and a NUL-terminated string.
        let r = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), flags) };
        if r < 0 {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
        } else {
            Ok(())
        }
    }

    fn load_image(&mut self, image: &[u8]) -> Result<(), i32> {
        let params = b"\0";
        // SAFETY: init_module(image, len, params) reads `len` bytes from a valid slice.
        let r = unsafe { libc::syscall(libc::SYS_init_module, image.as_ptr(), image.len(), params.as_ptr()) };
        if r < 0 {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
        } else {
            Ok(())
        }
    }
}

/// Makes `/dev/console` (or `tty`) stdin, stdout and stderr of this process.
pub fn console_on_stdio(tty: &str) -> io::Result<()> {
    let path = cstr(tty)?;
    // SAFETY: valid path; the fd is dup'ed onto 0..2 and closed if it is not one of them.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        for target in 0..3 {
            if fd != target && libc::dup2(fd, target) < 0 {
                let e = io::Error::last_os_error();
                libc::close(fd);
                return Err(e);
            }
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
    Ok(())
}

/// In a freshly forked child: new session, `tty` as the controlling terminal and stdio.
/// Async-signal-safe: only syscalls on a pre-built C string.
pub fn child_take_terminal(tty: &CString) -> io::Result<()> {
    // SAFETY: called between fork and exec; only async-signal-safe calls.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::open(tty.as_ptr(), libc::O_RDWR);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // Steal the terminal even if another session had it (we are the init's child).
        if libc::ioctl(fd, libc::TIOCSCTTY as _, 1) < 0 {
            return Err(io::Error::last_os_error());
        }
        for target in 0..3 {
            if fd != target && libc::dup2(fd, target) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
    Ok(())
}

/// In a freshly forked child, on a terminal `fd`: a terminal that knows no size (a serial line
/// says 0x0) is given 80x24, so that a full-screen program has something to draw on.
/// Async-signal-safe.
pub fn child_default_window_size(fd: libc::c_int) {
    // SAFETY: ioctls on a descriptor with a winsize on the stack.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0 && (ws.ws_row == 0 || ws.ws_col == 0) {
            ws.ws_row = 24;
            ws.ws_col = 80;
            libc::ioctl(fd, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// In a freshly forked child: unblock every signal. PID 1 blocks the signals it reads from
/// its signalfd, a mask that exec would otherwise pass on (std's Command does not reset it).
/// Async-signal-safe.
pub fn child_unblock_signals() -> io::Result<()> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; only async-signal-safe calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        check(libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()))
    }
}

/// A command that starts with the signal mask cleared (see `child_unblock_signals`).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(program);
    // SAFETY: the closure only makes an async-signal-safe system call.
    unsafe {
        cmd.pre_exec(child_unblock_signals);
    }
    cmd
}
