//! Why a ghostctl command did not succeed, and the exit code each reason maps to (see
//! `EXIT_CODES` in cli.rs and the README).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// ghost-init or the agent answered with an error, or a local file could not be read or
    /// written: exit 1.
    Daemon(String),
    /// What was printed already says what failed (a tool call that ran and failed, an audit
    /// trail with problems): exit 1, nothing more to say.
    Reported,
    /// The control socket or the agent's could not be reached or stopped answering: exit 3.
    Unreachable(String),
    /// `status NAME`: the service exists but is not running: exit 4, nothing more to say.
    NotRunning,
    /// A tool call the agent's policy denied: exit 5.
    Denied,
    /// A tool call that waits for an operator (`ghostctl approve ID`): exit 6.
    AwaitingApproval,
    /// stdout was closed (`ghostctl logs -f | head`): a clean end, exit 0.
    StdoutClosed,
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Daemon(_) | Failure::Reported => 1,
            Failure::Unreachable(_) => 3,
            Failure::NotRunning => 4,
            Failure::Denied => 5,
            Failure::AwaitingApproval => 6,
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
            Failure::Reported => f.write_str("failed"),
            Failure::NotRunning => f.write_str("not running"),
            Failure::Denied => f.write_str("denied"),
            Failure::AwaitingApproval => f.write_str("waiting for approval"),
            Failure::StdoutClosed => f.write_str("stdout closed"),
        }
    }
}
