//! Starting a service's process for real: argv without a shell, a clean environment, its own
//! session and process group, user and groups, working directory and file limit.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::Stdio;

use crate::identity;
use crate::paths::Paths;
use crate::supervisor::{Service, Spawn};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct RealSpawner {
    pub paths: Paths,
    pub hosted: bool,
    pub first_boot: bool,
}

impl Spawn for RealSpawner {
    fn spawn(&mut self, svc: &Service) -> Result<i32, String> {
        let spec = &svc.spec;
        let mut cmd = crate::sys::command(&spec.exec[0]);
        cmd.args(&spec.exec[1..]).env_clear().stdin(Stdio::null());
        cmd.env("PATH", std::env::var("PATH").ok().filter(|_| self.hosted).unwrap_or_else(|| DEFAULT_PATH.into()));
        cmd.env("GHOST_SERVICE", &svc.name);
        cmd.env("GHOST_ROOT", self.paths.root());
        cmd.env("GHOST_SOCKET", self.paths.control_socket());
        if self.first_boot {
            cmd.env("GHOST_FIRST_BOOT", "1");
        }
        let mut home = "/".to_string();
        let mut ids: Option<(u32, u32, Vec<u32>)> = None;
        if spec.user.is_some() || spec.group.is_some() {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
            let (uid, mut gid, supp) = match &spec.user {
                Some(u) => {
                    let user = identity::lookup_user(&passwd, u).ok_or_else(|| format!("key `user`: no user `{u}` in /etc/passwd"))?;
                    home = user.home.clone();
                    (user.uid, user.gid, identity::supplementary_groups(&groups, u))
                }
                None => (0, 0, Vec::new()),
            };
            if let Some(g) = &spec.group {
                gid = identity::lookup_group(&groups, g).ok_or_else(|| format!("key `group`: no group `{g}` in /etc/group"))?;
            }
            ids = Some((uid, gid, supp));
        }
        cmd.env("HOME", &home);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &spec.working_dir {
            cmd.current_dir(dir);
        }
        let nofile = spec.nofile;
        let supp = ids.as_ref().map(|(_, _, s)| s.clone()).unwrap_or_default();
        let set_ids = ids.as_ref().map(|(u, g, _)| (*u, *g));
        // Identity is dropped here, not with Command::uid: std runs pre_exec closures after its
        // own setuid, when setgroups/setgid would no longer be allowed.
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(n) = nofile {
                    let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some((uid, gid)) = set_ids {
                    if libc::setgroups(supp.len(), supp.as_ptr()) < 0
                        || libc::setgid(gid) < 0
                        || libc::setuid(uid) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| match &spec.working_dir {
            Some(d) if e.kind() == std::io::ErrorKind::NotFound && !std::path::Path::new(d).is_dir() => {
                format!("working_dir {d}: {e}")
            }
            _ => format!("exec {}: {e}", spec.exec[0]),
        })?;
        // The child is reaped by the event loop's waitpid(-1); the handle is dropped unwaited.
        Ok(child.id() as i32)
    }

    fn signal_group(&mut self, pid: i32, sig: i32) {
        // The process group first (grandchildren too); if the service left its group, the pid.
        if crate::sys::kill(-pid, sig).is_err() {
            let _ = crate::sys::kill(pid, sig);
        }
    }
}

/// Runs `/bin/sh` on `tty` as a session leader with the terminal as its controlling tty.
pub fn spawn_on_terminal(program: &str, tty: &str) -> Result<i32, String> {
    let tty_c = CString::new(tty).map_err(|_| "bad tty path".to_string())?;
    let mut cmd = crate::sys::command(program);
    cmd.env_clear().env("PATH", DEFAULT_PATH).env("HOME", "/").env("TERM", "linux");
    // SAFETY: only async-signal-safe calls on a CString built before the fork.
    unsafe {
        cmd.pre_exec(move || crate::sys::child_take_terminal(&tty_c));
    }
    cmd.spawn().map(|c| c.id() as i32).map_err(|e| format!("{program}: {e}"))
}
