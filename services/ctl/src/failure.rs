//! Why a ghostctl command did not succeed, and the exit code each reason maps to (see
//! `EXIT_CODES` in cli.rs and the README).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// ghost-init answered with an error, or a local file could not be read or written: exit 1.
    Daemon(String),
    /// The control socket could not be reached or stopped answering: exit 3.
    Unreachable(String),
    /// `status NAME`: the service exists but is not running: exit 4, nothing more to say.
    NotRunning,
    /// stdout was closed (`ghostctl logs -f | head`): a clean end, exit 0.
    StdoutClosed,
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Daemon(_) => 1,
            Failure::Unreachable(_) => 3,
            Failure::NotRunning => 4,
            Failure::StdoutClosed => 0,
        }
    }

    /// Writing to stdout failed: a closed pipe ends quietly, anything else is reported.
    pub fn from_stdout(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::StdoutClosed
        } else {
            Failure::Daemon(format!("cannot write to stdout: {e}"))
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Daemon(m) | Failure::Unreachable(m) => f.write_str(m),
            Failure::NotRunning => f.write_str("not running"),
            Failure::StdoutClosed => f.write_str("stdout closed"),
        }
    }
}
