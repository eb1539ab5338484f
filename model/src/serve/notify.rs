//! sd_notify: tell the supervisor (ghost-init, or systemd) about readiness and status over the
//! datagram socket named by `NOTIFY_SOCKET`, as systemd's protocol defines it. Without the
//! variable (run by hand) every call does nothing.

use std::os::unix::net::UnixDatagram;

/// The supervisor's notify socket, if this process was given one.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::path::PathBuf)>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET")
            .filter(|p| !p.is_empty())
            .and_then(|p| {
                // Abstract sockets ('@name') are not used by ghost-init; only paths are supported.
                let path = std::path::PathBuf::from(p);
                UnixDatagram::unbound().ok().map(|s| (s, path))
            });
        Notifier { socket }
    }

    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (`READY=1`, `STATUS=…`, newline-separated); errors are ignored, as a
    /// supervisor that went away cannot be told anything.
    pub fn send(&self, state: &str) {
        if let Some((s, path)) = &self.socket {
            let _ = s.send_to(state.as_bytes(), path);
        }
    }

    pub fn status(&self, line: &str) {
        // One line: the protocol is newline-separated.
        self.send(&format!("STATUS={}", line.replace('\n', " ")));
    }

    pub fn ready(&self, line: &str) {
        self.send(&format!("READY=1\nSTATUS={}", line.replace('\n', " ")));
    }
}
