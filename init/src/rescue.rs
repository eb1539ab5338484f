//! The rescue console: `/bin/sh` on the console when the image has one, and a built-in prompt
//! that needs nothing from the image: show the boot log, list mounts and processes, continue
//! boot, reboot, power off. It reads stdin through the event loop, so reaping goes on.

use std::path::Path;

use crate::init::{Init, Phase};
use crate::sys::PowerAction;
use crate::{mounts, say, spawn};

const HELP: &str = "commands: help, log, mounts, ps, sh, continue, reboot, poweroff, halt\n";

/// Collects bytes from stdin into lines, with a bounded buffer.
#[derive(Default)]
pub struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    const MAX: usize = 4096;

    /// Feeds new bytes; returns complete lines. An over-long line is cut, not grown without bound.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.buf.is_empty() {
                    lines.push(String::from_utf8_lossy(&self.buf).trim().to_string());
                    self.buf.clear();
                }
            } else if self.buf.len() < Self::MAX {
                self.buf.push(b);
            }
        }
        lines
    }
}

/// What the prompt should do for one typed line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Log,
    Mounts,
    Ps,
    Shell,
    Continue,
    Power(PowerAction),
    Empty,
    Unknown(String),
}

pub fn parse(line: &str) -> Command {
    match line.trim() {
        "" => Command::Empty,
        "help" | "?" => Command::Help,
        "log" => Command::Log,
        "mounts" => Command::Mounts,
        "ps" => Command::Ps,
        "sh" | "shell" => Command::Shell,
        "continue" | "exit" => Command::Continue,
        "reboot" => Command::Power(PowerAction::Reboot),
        "poweroff" => Command::Power(PowerAction::PowerOff),
        "halt" => Command::Power(PowerAction::Halt),
        other => Command::Unknown(other.to_string()),
    }
}

/// The prompt's answers: the operator asked for them, so they wait for a slow console (the
/// console is non-blocking for PID 1's own lines) up to 5 s without progress.
fn out(text: &str) {
    crate::log::write_all(1, text.as_bytes(), 5000);
}

impl Init {
    /// Opens the rescue console: /bin/sh as PID 1 when the image has one, else the prompt.
    pub fn enter_rescue(&mut self) {
        let resume = match self.phase {
            Phase::Rescue { resume, .. } => resume,
            Phase::Booting | Phase::WaitingForCritical => true,
            _ => false,
        };
        self.phase = Phase::Rescue { shell: None, resume };
        say!("rescue console: type `help` for commands, `continue` to go on with boot");
        if !self.hosted && Path::new("/bin/sh").exists() {
            self.start_shell();
        } else {
            prompt(self);
        }
    }

    fn start_shell(&mut self) {
        match spawn::spawn_on_terminal("/bin/sh", "/dev/console") {
            Ok(pid) => {
                say!("rescue console: /bin/sh started (pid {pid}); leave it to return to the prompt");
                self.reactor.watch_stdin(false);
                if let Phase::Rescue { resume, .. } = self.phase {
                    self.phase = Phase::Rescue { shell: Some(pid), resume };
                }
            }
            Err(e) => {
                say!("rescue console: cannot start a shell: {e}");
                prompt(self);
            }
        }
    }

    /// stdin has bytes (or EOF) for the prompt.
    pub fn rescue_readable(&mut self) {
        let mut buf = [0u8; 512];
        // SAFETY: reading into a valid stack buffer.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            if n == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                // End of input: nobody is at the console; carry on rather than wait forever.
                self.reactor.watch_stdin(false);
                say!("rescue console: end of input; continuing");
                self.leave_rescue();
            }
            return;
        }
        for line in self.rescue_input.feed(&buf[..n as usize]) {
            if !matches!(self.phase, Phase::Rescue { shell: None, .. }) {
                break;
            }
            self.rescue_command(parse(&line));
        }
        if matches!(self.phase, Phase::Rescue { shell: None, .. }) {
            out("ghost-rescue> ");
        }
    }

    fn rescue_command(&mut self, cmd: Command) {
        match cmd {
            Command::Empty => {}
            Command::Help => out(HELP),
            Command::Log => out(&String::from_utf8_lossy(&crate::log::contents())),
            Command::Mounts => {
                let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                let mut text = String::new();
                for m in mounts::parse_mountinfo(&table) {
                    text.push_str(&format!("{:<32} {:<10} {}\n", m.target, m.fstype, m.source));
                }
                out(&text);
            }
            Command::Ps => out(&process_list()),
            Command::Shell => {
                if Path::new("/bin/sh").exists() && !self.hosted {
                    self.start_shell();
                } else {
                    out("no /bin/sh in this image (or hosted mode)\n");
                }
            }
            Command::Continue => self.leave_rescue(),
            Command::Power(action) => self.begin_shutdown(action),
            Command::Unknown(w) => out(&format!("unknown command `{w}`; {HELP}")),
        }
    }

    fn leave_rescue(&mut self) {
        self.reactor.watch_stdin(false);
        if let Phase::Rescue { resume, .. } = self.phase {
            self.phase = crate::init::Phase::Running;
            if resume {
                say!("rescue console: continuing boot");
                if self.control.is_none() {
                    self.boot_services();
                } else {
                    self.boot_complete();
                }
            }
        }
    }
}

/// Shows the prompt and starts reading stdin.
pub fn prompt(init: &mut Init) {
    out("ghost-rescue> ");
    init.reactor.watch_stdin(true);
}

fn process_list() -> String {
    let mut rows = vec![format!("{:>7} {:<5} {}\n", "PID", "STATE", "COMMAND")];
    for p in crate::procfs::processes() {
        rows.push(format!("{:>7} {:<5} {}\n", p.pid, p.state, p.comm));
    }
    rows.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_bounded() {
        let mut r = LineReader::default();
        assert_eq!(r.feed(b"lo"), Vec::<String>::new());
        assert_eq!(r.feed(b"g\r\nmounts\n\npower"), ["log", "mounts"]);
        assert_eq!(r.feed(b"off\n"), ["poweroff"]);
        let long = vec![b'x'; 10_000];
        let got = r.feed(&[&long[..], b"\n"].concat());
        assert_eq!(got[0].len(), LineReader::MAX);
    }

    #[test]
    fn commands() {
        assert_eq!(parse(" log "), Command::Log);
        assert_eq!(parse("poweroff"), Command::Power(PowerAction::PowerOff));
        assert_eq!(parse("exit"), Command::Continue);
        assert_eq!(parse("rm -rf"), Command::Unknown("rm -rf".into()));
    }
}
