//! The running init: its state, the event loop that reaps children and serves signals and
//! timers, and the way into shutdown. The loop sleeps in epoll; reaping an orphan allocates
//! nothing; a panic while handling one event is caught and the loop goes on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::cmdline::Cmdline;
use crate::config::GhostConfig;
use crate::paths::Paths;
use crate::reactor::{self, Reactor};
use crate::spawn::RealSpawner;
use crate::supervisor::Supervisor;
use crate::sys::PowerAction;
use crate::{rescue, say};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Booting,
    Running,
    /// The rescue console; `shell` is the pid of /bin/sh while it runs; `resume` means boot
    /// was interrupted and `continue` finishes it.
    Rescue { shell: Option<i32>, resume: bool },
    Stopping { action: PowerAction, bound: Instant },
}

pub struct Init {
    pub hosted: bool,
    /// PID 1 of the machine or of a PID namespace: kill(-1) reaches only what we may end.
    pub is_pid1: bool,
    pub paths: Paths,
    pub cmdline: Cmdline,
    pub config: GhostConfig,
    pub start: Instant,
    pub first_boot: bool,
    pub critical_failed: bool,
    pub supervisor: Supervisor,
    pub spawner: RealSpawner,
    pub phase: Phase,
    pub reactor: Reactor,
    pub rescue_input: rescue::LineReader,
    /// Orphans reaped that were no service's main process.
    pub strays_reaped: u64,
}

/// Extra time, past the last service's stop timeout, that shutdown waits for stragglers.
pub const STRAGGLER_GRACE: Duration = Duration::from_secs(2);

impl Init {
    pub fn new(hosted: bool, paths: Paths, cmdline: &str, reactor: Reactor, start: Instant) -> Init {
        let mut init = Init {
            hosted,
            is_pid1: std::process::id() == 1,
            spawner: RealSpawner { paths: paths.clone(), hosted, first_boot: false },
            paths,
            cmdline: Cmdline::default(),
            config: GhostConfig::default(),
            start,
            first_boot: false,
            critical_failed: false,
            supervisor: Supervisor::new(Default::default(), Duration::from_secs(5)).0,
            phase: Phase::Booting,
            reactor,
            rescue_input: rescue::LineReader::default(),
            strays_reaped: 0,
        };
        init.set_cmdline(cmdline);
        init
    }

    pub fn set_cmdline(&mut self, line: &str) {
        self.cmdline = Cmdline::parse(line);
        for w in &self.cmdline.warnings {
            say!("{w}");
        }
    }

    /// Boot, then serve events until shutdown is complete. Returns the action to take.
    pub fn run(&mut self) -> PowerAction {
        self.boot_system();
        if self.cmdline.emergency {
            say!("ghost.emergency=1: stopping after the mounts");
            self.phase = Phase::Rescue { shell: None, resume: true };
            self.enter_rescue();
        } else {
            self.boot_services();
        }
        loop {
            if let Phase::Stopping { action, bound } = self.phase {
                if self.supervisor.all_down() || Instant::now() >= bound {
                    return action;
                }
            }
            self.reactor.arm(self.next_deadline());
            let ready = self.reactor.wait();
            let turn = catch_unwind(AssertUnwindSafe(|| self.handle(ready)));
            if let Err(p) = turn {
                say!("event loop: recovered from a panic: {}", crate::boot::panic_text(&*p));
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sup = self.supervisor.next_deadline();
        match self.phase {
            Phase::Stopping { bound, .. } => Some(sup.map_or(bound, |d| d.min(bound))),
            _ => sup,
        }
    }

    fn handle(&mut self, ready: reactor::Ready) {
        if ready.signal {
            while let Some(sig) = self.reactor.next_signal() {
                self.on_signal(sig);
            }
        }
        if ready.timer {
            let mut notes = Vec::new();
            self.supervisor.tick(&mut self.spawner, Instant::now(), &mut notes);
            self.say_notes(&notes);
        }
        if ready.stdin {
            self.rescue_readable();
        }
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            libc::SIGCHLD => self.reap(),
            libc::SIGTERM | libc::SIGUSR2 | libc::SIGPWR => self.begin_shutdown(PowerAction::PowerOff),
            libc::SIGINT => self.begin_shutdown(PowerAction::Reboot),
            libc::SIGUSR1 => self.begin_shutdown(PowerAction::Halt),
            libc::SIGHUP => say!("SIGHUP: reload is not supported by this ghost-init yet; nothing changed"),
            _ => {}
        }
    }

    /// Reaps every ended child. Orphans cost one waitpid and a counter, no allocation.
    pub fn reap(&mut self) {
        let mut notes = Vec::new();
        while let Some((pid, exit)) = reactor::reap_one() {
            let now = Instant::now();
            if self.supervisor.child_exited(pid, exit, now, &mut notes).is_some() {
                continue;
            }
            if let Phase::Rescue { shell: Some(sh), resume } = self.phase {
                if sh == pid {
                    self.phase = Phase::Rescue { shell: None, resume };
                    rescue::prompt(self);
                    continue;
                }
            }
            self.strays_reaped += 1;
        }
        if !notes.is_empty() {
            self.say_notes(&notes);
        }
    }

    pub fn begin_shutdown(&mut self, action: PowerAction) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        self.reactor.watch_stdin(false);
        let now = Instant::now();
        say!("{} requested: stopping {} service(s)", match action {
            PowerAction::PowerOff => "power-off",
            PowerAction::Reboot => "reboot",
            PowerAction::Halt => "halt",
        }, self.supervisor.services.iter().filter(|s| matches!(s.state, crate::supervisor::State::Running { .. })).count());
        self.supervisor.stop_all(&mut self.spawner, now);
        // Bounded: the longest stop timeout, plus a little for SIGKILL to land.
        let bound = self.supervisor.stop_bound().unwrap_or(now) + STRAGGLER_GRACE;
        self.phase = Phase::Stopping { action, bound };
    }
}
