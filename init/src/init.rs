//! The running init: its state, and the event loop that reaps children, serves signals,
//! timers, the control socket, the notify socket, service output and probes. The loop sleeps
//! in epoll; reaping an orphan allocates nothing; a panic while handling one event is caught
//! and the loop goes on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use ghost_proto::{self as proto, Reply, Request, StreamItem};

use crate::cmdline::Cmdline;
use crate::config::GhostConfig;
use crate::control::{ControlServer, Mode};
use crate::logbook::now_ms;
use crate::notify::NotifySocket;
use crate::paths::Paths;
use crate::probe::{Probes, Started};
use crate::reactor::{self, Reactor, Token};
use crate::spawn::RealOs;
use crate::supervisor::{Note, ProbeRequest, Supervisor};
use crate::sys::PowerAction;
use crate::{rescue, say};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Booting,
    /// Services started; waiting for the critical ones to be ready.
    WaitingForCritical,
    Running,
    /// The rescue console; `shell` is the pid of /bin/sh while it runs; `resume` means boot
    /// was interrupted and `continue` finishes it.
    Rescue { shell: Option<i32>, resume: bool },
    Stopping { action: PowerAction, bound: Instant },
}

/// Events kept for clients that connect later (the TUI shows recent history).
const EVENT_HISTORY: usize = 256;

pub struct Init {
    pub hosted: bool,
    /// PID 1 of the machine or of a PID namespace: kill(-1) reaches only what we may end.
    pub is_pid1: bool,
    pub paths: Paths,
    pub cmdline: Cmdline,
    pub config: GhostConfig,
    pub start: Instant,
    pub first_boot: bool,
    pub supervisor: Supervisor,
    pub os: RealOs,
    pub control: Option<ControlServer>,
    pub notify: Option<NotifySocket>,
    pub probes: Probes,
    pub phase: Phase,
    pub reactor: Reactor,
    pub rescue_input: rescue::LineReader,
    pub events: std::collections::VecDeque<proto::Event>,
    /// Services removed by a reload that are still stopping.
    pub removed: Vec<String>,
    /// Orphans reaped that were no service's main process.
    pub strays_reaped: u64,
    pub power_buttons: crate::power_button::PowerButtons,
    /// Reused between wake-ups so that waiting allocates nothing.
    pub ready_buf: Vec<reactor::Ready>,
    /// DHCP on the configured interface, when the network step uses it (network/mod.rs).
    pub network: Option<crate::network::Dhcp>,
    /// When a service's status line was last printed on the console: progress (a model
    /// download) is shown there at most every [`STATUS_EVERY`], and as events always.
    pub status_said: Option<Instant>,
    /// The first-boot wizard boot is waiting for (wizard.rs).
    pub wizard: Option<crate::wizard::WizardRun>,
    /// Re-executions of PID 1 (reexec.rs).
    pub reexec: crate::reexec::Record,
}

/// How often a service's status line may reach the console.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Extra time, past the last service's stop timeout, that shutdown waits for stragglers.
pub const STRAGGLER_GRACE: Duration = Duration::from_secs(2);

impl Init {
    pub fn new(hosted: bool, paths: Paths, cmdline: &str, reactor: Reactor, start: Instant) -> Init {
        let mut init = Init {
            hosted,
            is_pid1: std::process::id() == 1,
            os: RealOs::new(paths.clone(), hosted),
            paths,
            cmdline: Cmdline::default(),
            config: GhostConfig::default(),
            start,
            first_boot: false,
            supervisor: Supervisor::empty(Duration::from_secs(5)),
            control: None,
            notify: None,
            probes: Probes::default(),
            phase: Phase::Booting,
            reactor,
            rescue_input: rescue::LineReader::default(),
            events: Default::default(),
            removed: Vec::new(),
            strays_reaped: 0,
            ready_buf: Vec::with_capacity(reactor::MAX_EVENTS),
            power_buttons: Default::default(),
            network: None,
            status_said: None,
            wizard: None,
            reexec: Default::default(),
        };
        init.set_cmdline(cmdline);
        init
    }

    pub fn set_cmdline(&mut self, line: &str) {
        self.cmdline = Cmdline::parse(line);
        self.os.logbook.echo = self.cmdline.debug;
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
        } else if !self.start_wizard() {
            self.boot_services();
        }
        self.serve_events()
    }

    /// Watches `fd` under `token`, saying so when the kernel refuses.
    pub fn watch(&mut self, fd: std::os::fd::RawFd, token: Token) {
        if let Err(e) = self.reactor.add(fd, token, false) {
            say!("event loop: cannot watch a descriptor for {token:?}: {e}");
        }
    }

    /// The event loop, until shutdown is complete; returns the action to take.
    pub fn serve_events(&mut self) -> PowerAction {
        loop {
            // Before every sleep: watch what was created since (log and readiness pipes of
            // services started during boot too), flush replies, check boot progress.
            let after = catch_unwind(AssertUnwindSafe(|| self.after_events()));
            if let Err(p) = after {
                say!("event loop: recovered from a panic: {}", crate::boot::panic_text(&*p));
            }
            if let Phase::Stopping { action, bound } = self.phase {
                if self.supervisor.all_down() || Instant::now() >= bound {
                    return action;
                }
            }
            // A checked re-execution, once the replies of this turn are out.
            if let Some((client, binary)) = self.reexec.go.take() {
                self.exec_now(client, binary);
            }
            self.reactor.arm(self.next_deadline());
            let mut ready = std::mem::take(&mut self.ready_buf);
            ready.clear();
            self.reactor.wait(|r| ready.push(r));
            // Service output last: a flooding service must not delay signals, the operator or
            // health probes within one wake-up.
            ready.sort_by_key(|r| matches!(r.token, Token::Log(..)));
            for &r in &ready {
                let turn = catch_unwind(AssertUnwindSafe(|| self.handle(r)));
                if let Err(p) = turn {
                    say!("event loop: recovered from a panic: {}", crate::boot::panic_text(&*p));
                }
            }
            self.ready_buf = ready;
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d = [self.supervisor.next_deadline(), self.probes.next_deadline(), self.network_deadline(), self.wizard_deadline(), self.reexec_deadline()].into_iter().flatten().min();
        if let Phase::Stopping { bound, .. } = self.phase {
            d = Some(d.map_or(bound, |x| x.min(bound)));
        }
        d
    }

    fn handle(&mut self, r: reactor::Ready) {
        match r.token {
            Token::Signal => {
                while let Some(sig) = self.reactor.next_signal() {
                    self.on_signal(sig);
                }
            }
            Token::Timer => {
                if self.reexec_deadline().is_some_and(|d| Instant::now() >= d) {
                    self.reexec_checked(None);
                }
                self.wizard_tick(Instant::now());
                self.tick();
                self.network_tick();
            }
            Token::Stdin => self.rescue_readable(),
            Token::ControlListener => {
                if let Some(c) = &mut self.control {
                    for (id, fd) in c.accept() {
                        if self.reactor.add(fd, Token::ControlClient(id), false).is_err() {
                            c.drop_client(id);
                        }
                    }
                }
            }
            Token::ControlClient(id) => self.client_ready(id, r),
            Token::Notify => self.notify_readable(),
            Token::Log(id, stream) => {
                let lines = self.os.logbook.read(id, stream, now_ms());
                if let Some(c) = &mut self.control {
                    for l in lines {
                        c.publish(&StreamItem::Log(l));
                    }
                }
            }
            Token::ReadyFd(id) => self.ready_fd(id),
            Token::Dhcp => self.network_readable(),
            Token::PowerButton => {
                if self.power_buttons.pressed() {
                    say!("power button pressed");
                    self.begin_shutdown(PowerAction::PowerOff);
                }
            }
            Token::Probe(id) => {
                if let Some(out) = self.probes.on_ready(id) {
                    self.probe_done(out);
                } else if let Some(fd) = self.probes.wants_read(id) {
                    let _ = self.reactor.modify(fd, Token::Probe(id), false);
                }
            }
        }
    }

    /// After every batch of events: new descriptors, boot progress, output to clients.
    fn after_events(&mut self) {
        for (fd, token) in std::mem::take(&mut self.os.new_fds) {
            if let Err(e) = self.reactor.add(fd, token, false) {
                say!("event loop: cannot watch a descriptor for {token:?}: {e}");
            }
        }
        if !self.removed.is_empty() {
            let removed = std::mem::take(&mut self.removed);
            for (id, name) in self.supervisor.drop_removed(&removed) {
                for fd in self.os.logbook.remove(id) {
                    self.reactor.remove(fd);
                }
                self.os.cgroups.remove(&name);
            }
            self.removed = removed.into_iter().filter(|n| self.supervisor.index_of(n).is_some()).collect();
        }
        if self.phase == Phase::WaitingForCritical {
            self.check_critical();
        }
        if let Some(c) = &mut self.control {
            let (changed, dead) = c.flush();
            for (fd, id, want) in changed {
                let _ = self.reactor.modify(fd, Token::ControlClient(id), want);
            }
            for id in dead {
                if let Some(fd) = c.drop_client(id) {
                    self.reactor.remove(std::os::fd::AsRawFd::as_raw_fd(&fd));
                }
            }
        }
    }

    /// Boot completes once every critical service is ready; a critical service that failed
    /// for good opens the rescue console.
    pub fn check_critical(&mut self) {
        let (ready, failed) = self.supervisor.critical_state();
        if let Some(why) = failed {
            say!("critical service {why}; opening the rescue console");
            self.enter_rescue();
        } else if ready {
            self.boot_complete();
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let mut notes = Vec::new();
        let probes = self.supervisor.tick(&mut self.os, now, &mut notes);
        self.publish_notes(notes);
        for out in self.probes.expire(now) {
            self.probe_done(out);
        }
        for p in probes {
            self.start_probe(p, now);
        }
    }

    fn start_probe(&mut self, req: ProbeRequest, now: Instant) {
        match self.probes.start(req, now) {
            Started::Socket(id, fd) => {
                if let Err(e) = self.reactor.add(fd, Token::Probe(id), true) {
                    say!("probe: cannot watch its socket: {e}");
                }
            }
            Started::Exec => {}
            Started::Done(out) => self.probe_done(out),
        }
    }

    fn probe_done(&mut self, (req, ok, why): crate::probe::Outcome) {
        // A result about a process that is no longer the service's (restarted, or replaced by
        // an overlapping restart) says nothing about the one that runs now.
        if self.supervisor.by_id(req.service).and_then(|i| self.supervisor.services[i].state.pid()) != Some(req.pid) {
            return;
        }
        let mut notes = Vec::new();
        self.supervisor.probe_result(req.service, req.purpose, ok, &why, &mut self.os, Instant::now(), &mut notes);
        self.publish_notes(notes);
    }

    fn ready_fd(&mut self, id: u32) {
        let Some(fd) = self.os.ready_fds.get(&id) else { return };
        let mut buf = [0u8; 64];
        // SAFETY: reading into a stack buffer from a pipe we own.
        let n = unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(fd), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
            return;
        }
        // Readiness, or EOF (the service closed it without a word): either way we are done with it.
        if let Some(fd) = self.os.ready_fds.remove(&id) {
            self.reactor.remove(std::os::fd::AsRawFd::as_raw_fd(&fd));
        }
        if n > 0 && buf[..n as usize].contains(&b'\n') {
            let mut notes = Vec::new();
            self.supervisor.ready_fd(id, &mut self.os, Instant::now(), &mut notes);
            self.publish_notes(notes);
        }
    }

    fn notify_readable(&mut self) {
        let mut batch = Vec::new();
        if let Some(n) = &self.notify {
            while let Some(msg) = n.recv() {
                batch.push(msg);
            }
        }
        for (pid, text) in batch {
            // Only while an overlapping restart is under way (no /proc read otherwise).
            let successor = self.supervisor.overlapping().and_then(|_| self.supervisor.find_overlap(pid).or_else(|| self.supervisor.find_overlap(crate::notify::process_group(pid)?)));
            if let Some(i) = successor {
                let mut notes = Vec::new();
                self.supervisor.successor_notify(i, &text, &mut self.os, Instant::now(), &mut notes);
                self.publish_notes(notes);
                continue;
            }
            let who = self.supervisor.find_pid(pid).or_else(|| {
                let group = crate::notify::process_group(pid)?;
                self.supervisor.find_pid(group)
            });
            let Some(i) = who else {
                if self.cmdline.debug {
                    say!("notify: message from pid {pid}, which is no service's; ignored");
                }
                continue;
            };
            let mut notes = Vec::new();
            self.supervisor.notify(i, &text, &mut self.os, Instant::now(), &mut notes);
            self.publish_notes(notes);
        }
    }

    fn client_ready(&mut self, id: u32, r: reactor::Ready) {
        let Some(c) = &mut self.control else { return };
        let requests = if r.readable || r.closed { c.read(id) } else { Some(Vec::new()) };
        let Some(requests) = requests else {
            if let Some(fd) = c.drop_client(id) {
                self.reactor.remove(std::os::fd::AsRawFd::as_raw_fd(&fd));
            }
            return;
        };
        for inc in requests {
            let reply = match inc.request {
                Ok(req) => self.serve(inc.client, req),
                Err(e) => Some(Reply::error(e)),
            };
            if let (Some(c), Some(reply)) = (&mut self.control, reply) {
                c.reply(inc.client, &reply);
            }
        }
    }

    /// Answers one control request (`None`: the reply was already queued).
    fn serve(&mut self, client: u32, req: Request) -> Option<Reply> {
        let now = Instant::now();
        let mut notes = Vec::new();
        let reply = match req {
            Request::Status { name } => {
                let list: Vec<proto::ServiceStatus> = self
                    .supervisor
                    .services
                    .iter()
                    .filter(|s| name.as_ref().is_none_or(|n| *n == s.name))
                    .map(|s| {
                        let mem = self.os.cgroups.memory_current(&s.name).or_else(|| s.state.pid().and_then(rss_bytes));
                        self.supervisor.status_of(s, now, mem)
                    })
                    .collect();
                match name {
                    Some(n) if list.is_empty() => Reply::error(format!("no service named `{n}`")),
                    _ => Reply { ok: true, services: Some(list), ..Reply::default() },
                }
            }
            Request::Start { name } => ack(self.supervisor.start_service(&name, &mut self.os, now, &mut notes)),
            Request::Stop { name } => ack(self.supervisor.stop_service(&name, &mut self.os, now, &mut notes)),
            Request::Restart { name } => ack(self.supervisor.restart_service(&name, &mut self.os, now, &mut notes)),
            Request::Logs { name, lines, follow } => {
                if let Some(n) = &name {
                    if self.supervisor.index_of(n).is_none() {
                        return Some(Reply::error(format!("no service named `{n}`")));
                    }
                }
                let tail = self.os.logbook.tail(name.as_deref(), lines.unwrap_or(50).min(10_000));
                if follow {
                    if let Some(c) = &mut self.control {
                        c.reply(client, &Reply { ok: true, stream: Some("logs".into()), ..Reply::default() });
                        for l in tail {
                            c.send_item(client, &StreamItem::Log(l));
                        }
                        c.set_mode(client, Mode::Logs(name));
                    }
                    return None;
                }
                Reply { ok: true, logs: Some(tail), ..Reply::default() }
            }
            Request::Events => {
                if let Some(c) = &mut self.control {
                    c.set_mode(client, Mode::Events);
                }
                Reply { ok: true, stream: Some("events".into()), ..Reply::default() }
            }
            Request::Reload => {
                let (mut files, errors) = crate::boot::read_service_files(&self.paths.services_dirs());
                if !self.hosted {
                    crate::service_file::add_console_services(&mut files, &self.config.console);
                }
                let report = self.supervisor.reload(files, errors, &mut self.os, now, &mut notes);
                for e in &report.errors {
                    say!("reload: {e}");
                }
                self.removed.extend(report.removed.iter().cloned());
                Reply { ok: true, reload: Some(report), ..Reply::default() }
            }
            Request::Init => Reply { ok: true, init: Some(self.init_info()), ..Reply::default() },
            Request::Reexec { binary } => match self.begin_reexec(client, binary) {
                Ok(()) => return None,
                Err(e) => Reply::error(e),
            },
            Request::Poweroff => {
                self.begin_shutdown(PowerAction::PowerOff);
                Reply::ok()
            }
            Request::Reboot => {
                self.begin_shutdown(PowerAction::Reboot);
                Reply::ok()
            }
        };
        self.publish_notes(notes);
        Some(reply)
    }

    /// Console lines and events for what the supervisor did.
    pub fn publish_notes(&mut self, notes: Vec<Note>) {
        for n in notes {
            self.say_note(&n);
            let ev = proto::Event { ts_ms: now_ms(), kind: n.kind, service: (!n.service.is_empty()).then_some(n.service), pid: n.pid, detail: n.detail };
            self.publish_event(ev);
        }
    }

    pub fn publish_event(&mut self, ev: proto::Event) {
        if let Some(c) = &mut self.control {
            c.publish(&StreamItem::Event(ev.clone()));
        }
        self.events.push_back(ev);
        while self.events.len() > EVENT_HISTORY {
            self.events.pop_front();
        }
    }

    fn say_note(&mut self, n: &Note) {
        use proto::EventKind as K;
        if n.kind == K::Status {
            let now = Instant::now();
            if self.status_said.is_some_and(|t| now.duration_since(t) < STATUS_EVERY) && !self.cmdline.debug {
                return;
            }
            self.status_said = Some(now);
        }
        let quiet = matches!(n.kind, K::Starting | K::Ready | K::Stopping | K::Stopped) && !self.cmdline.debug;
        if quiet && !(n.kind == K::Stopping && n.detail.contains("killed")) {
            return;
        }
        let what = match n.kind {
            K::Starting => "started".to_string(),
            K::Ready => "ready".into(),
            K::Exited if n.detail.starts_with("failed to start") => n.detail.clone(),
            K::Exited => format!("exited: {}", n.detail),
            K::Restarting => format!("restarting {}", n.detail),
            K::CrashLoop => format!("crash loop: {}", n.detail),
            K::Unhealthy => format!("unhealthy: {}", n.detail),
            K::Healthy => "healthy again".into(),
            K::Oom => format!("out of memory: {}", n.detail),
            K::WatchdogTimeout => format!("watchdog: {}", n.detail),
            K::Status => n.detail.clone(),
            K::Stopping => format!("stopping: {}", n.detail),
            K::Stopped => format!("stopped ({})", n.detail),
            K::Reloaded => format!("reload: {}", n.detail),
            K::ConfigError | K::BootComplete | K::Shutdown | K::Reexec => n.detail.clone(),
        };
        let pid = n.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        if n.service.is_empty() {
            say!("{what}");
        } else {
            say!("service {}{pid}: {what}", n.service);
        }
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            libc::SIGCHLD => self.reap(),
            libc::SIGTERM | libc::SIGUSR2 | libc::SIGPWR => self.begin_shutdown(PowerAction::PowerOff),
            libc::SIGINT => self.begin_shutdown(PowerAction::Reboot),
            libc::SIGUSR1 => self.begin_shutdown(PowerAction::Halt),
            libc::SIGHUP => {
                say!("SIGHUP: reloading the service files");
                let r = self.serve(0, Request::Reload);
                if let Some(rep) = r.and_then(|r| r.reload) {
                    say!("reload: {} added, {} removed, {} changed, {} unchanged", rep.added.len(), rep.removed.len(), rep.changed.len(), rep.unchanged.len());
                }
            }
            _ => {}
        }
    }

    /// Reaps every ended child. Orphans cost one waitpid and a counter, no allocation.
    pub fn reap(&mut self) {
        while let Some((pid, exit)) = reactor::reap_one() {
            let mut notes = Vec::new();
            if self.supervisor.overlap_exited(pid, exit, &mut self.os, Instant::now(), &mut notes) {
                self.publish_notes(notes);
                continue;
            }
            if self.supervisor.find_pid(pid).is_some() {
                let mut notes = Vec::new();
                self.supervisor.child_exited(pid, exit, &mut self.os, Instant::now(), &mut notes);
                self.publish_notes(notes);
                continue;
            }
            if self.wizard.as_ref().is_some_and(|w| w.pid == pid) {
                self.wizard_exited(exit);
                continue;
            }
            if self.reexec.pending.as_ref().is_some_and(|p| p.check_pid == pid) {
                self.reexec_checked(Some(exit));
                continue;
            }
            if let Some(out) = self.probes.on_exit(pid, exit) {
                self.probe_done(out);
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
    }

    pub fn begin_shutdown(&mut self, action: PowerAction) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        self.reactor.watch_stdin(false);
        self.stop_wizard();
        self.cancel_reexec("PID 1 is shutting down");
        let now = Instant::now();
        let up = self.supervisor.services.iter().filter(|s| s.state.is_up()).count();
        say!("{} requested: stopping {up} service(s)", match action {
            PowerAction::PowerOff => "power-off",
            PowerAction::Reboot => "reboot",
            PowerAction::Halt => "halt",
        });
        self.publish_event(proto::Event { ts_ms: now_ms(), kind: proto::EventKind::Shutdown, service: None, pid: None, detail: format!("{action:?}") });
        let mut notes = Vec::new();
        self.supervisor.stop_all(&mut self.os, now, &mut notes);
        self.publish_notes(notes);
        // Bounded: every stop timeout along the longest dependency chain, plus SIGKILL's landing.
        let bound = now + self.supervisor.worst_case_stop() + STRAGGLER_GRACE;
        self.phase = Phase::Stopping { action, bound };
    }
}

fn ack(r: Result<(), String>) -> Reply {
    match r {
        Ok(()) => Reply::ok(),
        Err(e) => Reply::error(e),
    }
}

/// Resident memory of one process (without cgroups), bytes.
fn rss_bytes(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
