//! Service supervision: the state machine of every service — dependencies, readiness,
//! restarts with backoff, health, watchdog, operator commands, reload and shutdown order.
//!
//! Pure: time comes in as an argument and every effect on processes goes through the `Os`
//! trait, so each transition is unit-tested with a fake process table in microseconds.
//! Nothing here blocks. The event loop feeds it exits, probe results, notify messages and
//! timer ticks, and carries out the probes it asks for.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ghost_proto as proto;

use crate::service_file::{signal_number, Restart, ServiceFile};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Wanted, waiting for its requirements (or not started yet).
    Pending,
    /// Running, not yet ready.
    Starting { pid: i32, since: Instant },
    /// Ready.
    Running { pid: i32, since: Instant },
    /// Waiting out its restart delay.
    Backoff { until: Instant },
    /// Stop signal sent; SIGKILL at `deadline`.
    Stopping { pid: i32, deadline: Instant, killed: bool },
    Stopped,
}

impl State {
    pub fn pid(&self) -> Option<i32> {
        match *self {
            State::Starting { pid, .. } | State::Running { pid, .. } | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// A process of the service exists.
    pub fn is_up(&self) -> bool {
        self.pid().is_some()
    }
}

/// What happens once a service asked to stop is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterStop {
    /// Stays down (operator stop, shutdown).
    Stay,
    /// Waits for its requirement to come back (it was stopped because a requirement went).
    Pending,
    /// Starts again at once (restart, unhealthy, watchdog).
    Restart,
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSpec {
    Exec(Vec<String>),
    Tcp(String),
    Http(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbePurpose {
    /// Readiness (`ready = "tcp:PORT"` or `ready = "health"`).
    Ready,
    Health,
}

/// A probe the event loop should run now and report back with `probe_result`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRequest {
    pub service: u32,
    pub purpose: ProbePurpose,
    pub spec: ProbeSpec,
    pub timeout: Duration,
    /// The main pid at request time (a SIGSTOPped main process fails the probe at once).
    pub pid: i32,
}

#[derive(Debug, Clone)]
pub struct HealthState {
    pub status: proto::Health,
    pub failures: u32,
    pub next: Option<Instant>,
    pub in_flight: bool,
}

#[derive(Debug, Clone)]
pub struct Service {
    /// Stable across reloads; tokens and pipes refer to it.
    pub id: u32,
    pub name: String,
    pub spec: ServiceFile,
    pub state: State,
    /// The operator (or boot) wants it running.
    pub wanted: bool,
    /// A stop is pending or under way, and what follows it.
    pub stop: Option<AfterStop>,
    pub restarts: u32,
    /// Failures since the last healthy run; drives the backoff.
    pub consecutive_failures: u32,
    pub crash_loop: bool,
    pub last_exit: Option<String>,
    pub health: HealthState,
    /// Next readiness probe and its current interval (tcp:PORT, health).
    pub ready_next: Option<Instant>,
    ready_interval: Duration,
    ready_in_flight: bool,
    pub watchdog_deadline: Option<Instant>,
    pub status_text: Option<String>,
    /// Ever became ready since its last start (boot waits on critical services for this).
    pub ever_ready: bool,
    pub start_failed: Option<String>,
    /// A restart with `overlap = true` under way: the second process of the service.
    pub overlap: Option<Overlap>,
    /// The main pid is one the service named (MAINPID=), not necessarily a child of PID 1.
    pub mainpid: bool,
}

/// The second process of a service during an overlapping restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// The new process, started beside the running one; not ready yet.
    Successor { pid: i32, deadline: Instant },
    /// The old process, asked to stop once its successor was ready.
    Retiring { pid: i32, deadline: Instant, killed: bool },
}

impl Overlap {
    pub fn pid(self) -> i32 {
        match self {
            Overlap::Successor { pid, .. } | Overlap::Retiring { pid, .. } => pid,
        }
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Overlap::Successor { deadline, .. } | Overlap::Retiring { deadline, killed: false, .. } => Some(deadline),
            Overlap::Retiring { .. } => None,
        }
    }
}

/// How long the new process of an overlapping restart has to become ready.
pub const OVERLAP_READY: Duration = Duration::from_secs(30);

/// Starts, signals and inspects processes; the real one forks, the test one pretends.
pub trait Os {
    /// Starts the service's process in a new session; returns its pid.
    fn spawn(&mut self, svc: &Service) -> Result<i32, String>;
    /// Sends `sig` to the service (its process group).
    fn signal(&mut self, svc: &Service, pid: i32, sig: i32);
    /// Kills everything of the service (cgroup.kill, or SIGKILL to its process group).
    fn kill_all(&mut self, svc: &Service, pid: i32);
    /// Whether the kernel's OOM killer struck the service since the last call.
    fn oom_killed(&mut self, svc: &Service) -> bool;
    /// A factor in [0.9, 1.1] spreading restart delays.
    fn jitter(&mut self) -> f64;
}

/// What the supervisor wants said and broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: proto::EventKind,
    pub service: String,
    pub pid: Option<i32>,
    pub detail: String,
}

fn note(kind: proto::EventKind, svc: &Service, pid: Option<i32>, detail: impl Into<String>) -> Note {
    Note { kind, service: svc.name.clone(), pid, detail: detail.into() }
}

/// Failures in a row after which a service is shown as crash-looping.
pub const CRASH_LOOP_AFTER: u32 = 5;
const READY_PROBE_FIRST: Duration = Duration::from_millis(5);
const READY_PROBE_MAX: Duration = Duration::from_millis(250);

/// Targets that PID 1 itself provides; services may name them in `requires`/`after`.
pub const BUILTIN_TARGETS: &[&str] = &["network"];

pub struct Supervisor {
    pub services: Vec<Service>,
    stop_timeout: Duration,
    pub shutting_down: bool,
    /// Services that ended within their grace period during shutdown, and those killed.
    pub stopped_count: usize,
    pub killed_count: usize,
    next_id: u32,
    /// Built-in targets that are up (`network`).
    pub targets_up: Vec<String>,
}

impl Supervisor {
    pub fn empty(stop_timeout: Duration) -> Supervisor {
        Supervisor { services: Vec::new(), stop_timeout, shutting_down: false, stopped_count: 0, killed_count: 0, next_id: 1, targets_up: Vec::new() }
    }

    /// Builds the service set; returns one line per service left out (unknown requirement,
    /// cycle). Nothing starts until `start_wanted`.
    pub fn new(files: BTreeMap<String, ServiceFile>, stop_timeout: Duration) -> (Supervisor, Vec<String>) {
        let mut sup = Supervisor::empty(stop_timeout);
        let (order, problems) = admit(files);
        for (name, spec) in order {
            let id = sup.alloc_id();
            sup.services.push(new_service(id, name, spec));
        }
        (sup, problems)
    }

    fn alloc_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id - 1
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name == name)
    }

    pub fn by_id(&self, id: u32) -> Option<usize> {
        self.services.iter().position(|s| s.id == id)
    }

    pub fn find_pid(&self, pid: i32) -> Option<usize> {
        self.services.iter().position(|s| s.state.pid() == Some(pid))
    }

    /// Marks every service wanted and starts what can start.
    pub fn start_wanted(&mut self, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) {
        for s in &mut self.services {
            s.wanted = true;
        }
        self.advance(os, now, notes);
    }

    /// Whether every requirement of `i` is ready and nothing it is ordered after is starting.
    fn deps_ok(&self, i: usize) -> bool {
        let s = &self.services[i];
        let up = |name: &String| -> Option<&Service> { self.services.iter().find(|x| &x.name == name) };
        s.spec.requires.iter().all(|r| {
            if BUILTIN_TARGETS.contains(&r.as_str()) {
                return self.targets_up.iter().any(|t| t == r);
            }
            matches!(up(r).map(|x| &x.state), Some(State::Running { .. }))
        }) && s.spec.after.iter().all(|a| match up(a) {
            Some(x) => !(x.wanted && matches!(x.state, State::Pending | State::Starting { .. })),
            None => !BUILTIN_TARGETS.contains(&a.as_str()) || self.targets_up.iter().any(|t| t == a),
        })
    }

    /// Services that must be down before `i` may be signalled: those being stopped that
    /// require it or are ordered after it.
    fn blocking_dependents(&self, i: usize) -> bool {
        let name = &self.services[i].name;
        self.services.iter().any(|d| {
            d.stop.is_some() && d.state.is_up() && (d.spec.requires.contains(name) || d.spec.after.contains(name))
        })
    }

    /// Applies every rule until nothing changes: starts what may start, signals what may stop.
    pub fn advance(&mut self, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) {
        for _round in 0..=self.services.len() * 2 + 1 {
            let mut changed = false;
            for i in 0..self.services.len() {
                let s = &self.services[i];
                match (&s.state, s.stop) {
                    (State::Starting { .. } | State::Running { .. }, Some(_)) if !self.blocking_dependents(i) => {
                        self.signal_stop(i, os, now, notes);
                        changed = true;
                    }
                    (State::Pending | State::Backoff { .. }, Some(then)) => {
                        self.finish_stop(i, then);
                        changed = true;
                    }
                    (State::Stopped, Some(then)) => {
                        self.finish_stop(i, then);
                        changed = self.services[i].state != State::Stopped;
                    }
                    (State::Pending, None) if s.wanted && !self.shutting_down && self.deps_ok(i) => {
                        self.start(i, os, now, notes);
                        changed = true;
                    }
                    _ => {}
                }
            }
            if !changed {
                return;
            }
        }
    }

    fn start(&mut self, i: usize, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) {
        let svc = &mut self.services[i];
        svc.health = HealthState { status: proto::Health::Unknown, failures: 0, next: None, in_flight: false };
        svc.status_text = None;
        svc.ready_in_flight = false;
        svc.watchdog_deadline = None;
        svc.mainpid = false;
        match os.spawn(svc) {
            Ok(pid) => {
                svc.start_failed = None;
                notes.push(note(proto::EventKind::Starting, svc, Some(pid), ""));
                svc.state = State::Starting { pid, since: now };
                if svc.spec.watchdog_s > 0 {
                    svc.watchdog_deadline = Some(now + Duration::from_secs(svc.spec.watchdog_s));
                }
                if svc.spec.ready == "started" {
                    self.became_ready(i, now, notes);
                } else if svc.spec.ready.starts_with("tcp:") || svc.spec.ready == "health" {
                    svc.ready_interval = READY_PROBE_FIRST;
                    svc.ready_next = Some(now + READY_PROBE_FIRST);
                }
            }
            Err(why) => {
                svc.start_failed = Some(why.clone());
                notes.push(note(proto::EventKind::Exited, svc, None, format!("failed to start: {why}")));
                self.after_failure(i, now, os, notes, format!("failed to start: {why}"));
            }
        }
    }

    fn became_ready(&mut self, i: usize, now: Instant, notes: &mut Vec<Note>) {
        let svc = &mut self.services[i];
        if let State::Starting { pid, since } = svc.state {
            svc.state = State::Running { pid, since };
            svc.ready_next = None;
            svc.ever_ready = true;
            if let Some(h) = &svc.spec.health {
                svc.health.next = Some(now + Duration::from_secs(h.interval_s));
                if svc.spec.ready == "health" {
                    svc.health.status = proto::Health::Healthy;
                }
            }
            notes.push(note(proto::EventKind::Ready, svc, Some(pid), ""));
        }
    }

    fn signal_stop(&mut self, i: usize, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) {
        let grace = self.services[i].spec.stop_timeout_s.map(Duration::from_secs).unwrap_or(self.stop_timeout);
        let svc = &mut self.services[i];
        let Some(pid) = svc.state.pid() else { return };
        // A new process not ready yet goes at once; its exit is then no one's.
        if let Some(Overlap::Successor { pid: new, .. }) = svc.overlap {
            os.signal(svc, new, libc::SIGKILL);
            svc.overlap = None;
        }
        let sig = signal_number(&svc.spec.stop_signal).unwrap_or(libc::SIGTERM);
        os.signal(svc, pid, sig);
        // A stopped (SIGSTOP) process must wake up to see its stop signal.
        os.signal(svc, pid, libc::SIGCONT);
        svc.state = State::Stopping { pid, deadline: now + grace, killed: false };
        svc.ready_next = None;
        svc.health.next = None;
        svc.watchdog_deadline = None;
        notes.push(note(proto::EventKind::Stopping, svc, Some(pid), format!("signal {sig}, {} ms to stop", grace.as_millis())));
    }

    fn finish_stop(&mut self, i: usize, then: AfterStop) {
        let svc = &mut self.services[i];
        svc.stop = None;
        svc.state = match then {
            AfterStop::Stay => State::Stopped,
            AfterStop::Pending | AfterStop::Restart => {
                if then == AfterStop::Restart {
                    svc.wanted = true;
                }
                if svc.wanted {
                    State::Pending
                } else {
                    State::Stopped
                }
            }
        };
    }

    /// Asks service `i` to stop; services that require it stop first and wait for it.
    fn request_stop(&mut self, i: usize, then: AfterStop) {
        let mut todo = vec![(i, then)];
        while let Some((j, then)) = todo.pop() {
            let s = &mut self.services[j];
            if s.stop.is_some() && then != AfterStop::Stay {
                continue;
            }
            s.stop = Some(then);
            let name = s.name.clone();
            for (k, d) in self.services.iter().enumerate() {
                if d.spec.requires.contains(&name) && d.stop.is_none() && (d.state.is_up() || matches!(d.state, State::Backoff { .. })) {
                    todo.push((k, if self.shutting_down { AfterStop::Stay } else { AfterStop::Pending }));
                }
            }
        }
    }

    /// A child ended; returns the service it belonged to, if any.
    pub fn child_exited(&mut self, pid: i32, exit: Exit, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) -> Option<usize> {
        let i = self.find_pid(pid)?;
        let oom = os.oom_killed(&self.services[i]);
        let svc = &mut self.services[i];
        let what = if oom { format!("killed by the OOM killer ({exit})") } else { exit.to_string() };
        svc.last_exit = Some(if oom { "oom".into() } else { exit.to_string() });
        if oom {
            notes.push(note(proto::EventKind::Oom, svc, Some(pid), what.clone()));
        }
        match svc.state.clone() {
            State::Stopping { killed, .. } => {
                // Whatever the service left behind goes with it.
                os.kill_all(svc, pid);
                if self.shutting_down {
                    if killed {
                        self.killed_count += 1;
                    } else {
                        self.stopped_count += 1;
                    }
                }
                svc.state = State::Stopped;
                notes.push(note(proto::EventKind::Stopped, svc, Some(pid), what));
                if svc.stop.is_none() {
                    svc.stop = Some(AfterStop::Stay);
                }
            }
            State::Running { .. } if matches!(svc.overlap, Some(Overlap::Successor { .. })) => {
                // The old process ended while its successor starts: the successor is the
                // service now, and becomes ready as any new process does.
                let Some(Overlap::Successor { pid: new, .. }) = svc.overlap.take() else { return Some(i) };
                // What the old one left in its process group goes; the new one is in its own.
                os.signal(svc, pid, libc::SIGKILL);
                notes.push(note(proto::EventKind::Exited, svc, Some(pid), format!("{what}; pid {new}, started to replace it, takes over")));
                svc.state = State::Starting { pid: new, since: now };
            }
            State::Starting { since, .. } | State::Running { since, .. } => {
                os.kill_all(svc, pid);
                notes.push(note(proto::EventKind::Exited, svc, Some(pid), what.clone()));
                if now.duration_since(since) >= Duration::from_secs(svc.spec.restart_reset_s) {
                    svc.consecutive_failures = 0;
                    svc.crash_loop = false;
                }
                let wanted = match svc.spec.restart {
                    Restart::Always => true,
                    Restart::OnFailure => !exit.success() || oom,
                    Restart::Never => false,
                };
                // Dependents go down with it and come back after it.
                let name = svc.name.clone();
                for k in 0..self.services.len() {
                    if self.services[k].spec.requires.contains(&name) && self.services[k].state.is_up() {
                        let then = if wanted { AfterStop::Pending } else { AfterStop::Stay };
                        self.request_stop(k, then);
                    }
                }
                if wanted && !self.shutting_down && self.services[i].stop.is_none() {
                    self.after_failure(i, now, os, notes, what);
                } else {
                    let svc = &mut self.services[i];
                    svc.state = State::Stopped;
                    if svc.stop.is_none() {
                        svc.wanted = false;
                    }
                }
            }
            _ => {}
        }
        self.advance(os, now, notes);
        Some(i)
    }

    fn after_failure(&mut self, i: usize, now: Instant, os: &mut dyn Os, notes: &mut Vec<Note>, why: String) {
        let svc = &mut self.services[i];
        if svc.spec.restart == Restart::Never || self.shutting_down {
            svc.state = State::Stopped;
            svc.wanted = false;
            return;
        }
        svc.consecutive_failures += 1;
        let delay = restart_delay(&svc.spec, svc.consecutive_failures, os.jitter());
        svc.state = State::Backoff { until: now + delay };
        if svc.consecutive_failures >= CRASH_LOOP_AFTER && !svc.crash_loop {
            svc.crash_loop = true;
            notes.push(note(proto::EventKind::CrashLoop, svc, None, format!("{} failures in a row, last: {why}; still retrying", svc.consecutive_failures)));
        }
        notes.push(note(proto::EventKind::Restarting, svc, None, format!("in {} ms", delay.as_millis())));
    }

    /// Runs what is due; returns the probes to start now.
    pub fn tick(&mut self, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) -> Vec<ProbeRequest> {
        let mut probes = Vec::new();
        for i in 0..self.services.len() {
            self.overlap_tick(i, os, now, notes);
            let svc = &mut self.services[i];
            match svc.state {
                State::Backoff { until } if until <= now => {
                    svc.restarts += 1;
                    svc.state = State::Pending;
                }
                State::Stopping { pid, deadline, killed: false } if deadline <= now => {
                    os.kill_all(svc, pid);
                    svc.state = State::Stopping { pid, deadline, killed: true };
                    notes.push(note(proto::EventKind::Stopping, svc, Some(pid), "did not stop in time; killed"));
                }
                _ => {}
            }
            let svc = &mut self.services[i];
            if let (Some(d), Some(pid)) = (svc.watchdog_deadline, svc.state.pid()) {
                if d <= now && svc.stop.is_none() {
                    svc.watchdog_deadline = None;
                    notes.push(note(proto::EventKind::WatchdogTimeout, svc, Some(pid), format!("no WATCHDOG=1 for {} s; restarting", svc.spec.watchdog_s)));
                    svc.consecutive_failures += 1;
                    self.request_stop(i, AfterStop::Restart);
                    continue;
                }
            }
            let svc = &mut self.services[i];
            if let (State::Starting { pid, .. }, Some(next)) = (&svc.state, svc.ready_next) {
                if next <= now && !svc.ready_in_flight {
                    let spec = if let Some(port) = svc.spec.ready.strip_prefix("tcp:") {
                        ProbeSpec::Tcp(format!("127.0.0.1:{port}"))
                    } else {
                        match health_spec(&svc.spec) {
                            Some(s) => s,
                            None => continue,
                        }
                    };
                    svc.ready_in_flight = true;
                    let timeout = Duration::from_secs(svc.spec.health.as_ref().map_or(2, |h| h.timeout_s.max(1)));
                    probes.push(ProbeRequest { service: svc.id, purpose: ProbePurpose::Ready, spec, timeout, pid: *pid });
                }
            }
            if let (State::Running { pid, .. }, Some(next)) = (&svc.state, svc.health.next) {
                if next <= now && !svc.health.in_flight && svc.stop.is_none() {
                    if let (Some(spec), Some(h)) = (health_spec(&svc.spec), &svc.spec.health) {
                        svc.health.in_flight = true;
                        probes.push(ProbeRequest { service: svc.id, purpose: ProbePurpose::Health, spec, timeout: Duration::from_secs(h.timeout_s.max(1)), pid: *pid });
                    }
                }
            }
        }
        self.advance(os, now, notes);
        probes
    }

    /// The result of a probe asked for by `tick`.
    pub fn probe_result(&mut self, id: u32, purpose: ProbePurpose, ok: bool, detail: &str, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) {
        let Some(i) = self.by_id(id) else { return };
        match purpose {
            ProbePurpose::Ready => {
                let svc = &mut self.services[i];
                svc.ready_in_flight = false;
                if !matches!(svc.state, State::Starting { .. }) {
                    return;
                }
                if ok {
                    self.became_ready(i, now, notes);
                    self.advance(os, now, notes);
                } else {
                    svc.ready_interval = (svc.ready_interval * 2).min(READY_PROBE_MAX);
                    svc.ready_next = Some(now + svc.ready_interval);
                }
            }
            ProbePurpose::Health => {
                let svc = &mut self.services[i];
                svc.health.in_flight = false;
                let Some(h) = svc.spec.health.clone() else { return };
                if !matches!(svc.state, State::Running { .. }) {
                    return;
                }
                svc.health.next = Some(now + Duration::from_secs(h.interval_s));
                if ok {
                    svc.health.failures = 0;
                    if svc.health.status != proto::Health::Healthy {
                        let was_unhealthy = svc.health.status == proto::Health::Unhealthy;
                        svc.health.status = proto::Health::Healthy;
                        if was_unhealthy {
                            notes.push(note(proto::EventKind::Healthy, svc, svc.state.pid(), ""));
                        }
                    }
                    return;
                }
                svc.health.failures += 1;
                if svc.health.failures >= h.failures.max(1) {
                    svc.health.status = proto::Health::Unhealthy;
                    notes.push(note(proto::EventKind::Unhealthy, svc, svc.state.pid(), format!("{} failed probe(s), last: {detail}; restarting", svc.health.failures)));
                    svc.consecutive_failures += 1;
                    svc.last_exit = Some(format!("unhealthy: {detail}"));
                    self.request_stop(i, AfterStop::Restart);
                    self.advance(os, now, notes);
                }
            }
        }
    }

    /// A message on the notify socket from `pid` (which may be a child of the main process).
    pub fn notify(&mut self, i: usize, msg: &str, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) {
        for line in msg.lines() {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            let svc = &mut self.services[i];
            match k {
                "READY" if v == "1" && svc.spec.ready == "notify" => self.became_ready(i, now, notes),
                "STATUS" => {
                    // A changed status is an event too (download progress on the console);
                    // the service decides how often it speaks, the event ring bounds the cost.
                    let text: String = v.chars().take(200).collect();
                    if svc.status_text.as_deref() != Some(text.as_str()) {
                        notes.push(note(proto::EventKind::Status, svc, svc.state.pid(), &text));
                        svc.status_text = Some(text);
                    }
                }
                "WATCHDOG" if v == "1" && svc.spec.watchdog_s > 0 => {
                    svc.watchdog_deadline = Some(now + Duration::from_secs(svc.spec.watchdog_s));
                }
                "MAINPID" => {
                    if let (Ok(p), State::Starting { since, .. } | State::Running { since, .. }) = (v.parse::<i32>(), svc.state.clone()) {
                        if p > 0 {
                            svc.mainpid = true;
                            svc.state = match svc.state {
                                State::Starting { .. } => State::Starting { pid: p, since },
                                _ => State::Running { pid: p, since },
                            };
                        }
                    }
                }
                "STOPPING" if v == "1" => notes.push(note(proto::EventKind::Stopping, svc, svc.state.pid(), "the service says it is stopping")),
                _ => {}
            }
        }
        self.advance(os, now, notes);
    }

    /// The service whose overlapping restart involves `pid` (its new or its old process).
    pub fn find_overlap(&self, pid: i32) -> Option<usize> {
        self.services.iter().position(|s| s.overlap.is_some_and(|o| o.pid() == pid))
    }

    /// Whether an overlapping restart is under way anywhere (a re-exec waits for its end).
    pub fn overlapping(&self) -> Option<&str> {
        self.services.iter().find(|s| s.overlap.is_some()).map(|s| s.name.as_str())
    }

    /// A message from the new process of an overlapping restart: READY=1 makes it the
    /// service's process and asks the old one to stop.
    pub fn successor_notify(&mut self, i: usize, msg: &str, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) {
        let grace = self.services[i].spec.stop_timeout_s.map(Duration::from_secs).unwrap_or(self.stop_timeout);
        let svc = &mut self.services[i];
        let (Some(Overlap::Successor { pid: mut new, deadline }), State::Running { pid: old, .. }) = (svc.overlap, svc.state.clone()) else { return };
        // A forking daemon names its real main process before it is ready: that one is the
        // successor from now on.
        let mut named = false;
        for l in msg.lines() {
            if let Some(p) = l.strip_prefix("MAINPID=").and_then(|v| v.parse::<i32>().ok()).filter(|&p| p > 0) {
                new = p;
                named = true;
                svc.overlap = Some(Overlap::Successor { pid: new, deadline });
            }
        }
        if !msg.lines().any(|l| l == "READY=1") {
            return;
        }
        svc.mainpid = named;
        svc.state = State::Running { pid: new, since: now };
        svc.restarts += 1;
        svc.health = HealthState { status: svc.health.status, failures: 0, next: svc.spec.health.as_ref().map(|h| now + Duration::from_secs(h.interval_s)), in_flight: false };
        svc.watchdog_deadline = (svc.spec.watchdog_s > 0).then(|| now + Duration::from_secs(svc.spec.watchdog_s));
        notes.push(note(proto::EventKind::Ready, svc, Some(new), format!("replaces pid {old}")));
        let sig = signal_number(&svc.spec.stop_signal).unwrap_or(libc::SIGTERM);
        os.signal(svc, old, sig);
        os.signal(svc, old, libc::SIGCONT);
        svc.overlap = Some(Overlap::Retiring { pid: old, deadline: now + grace, killed: false });
        notes.push(note(proto::EventKind::Stopping, svc, Some(old), format!("replaced by pid {new}: signal {sig}, {} ms to stop", grace.as_millis())));
    }

    /// A process of an overlapping restart ended; false when `pid` is none of those.
    pub fn overlap_exited(&mut self, pid: i32, exit: Exit, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) -> bool {
        let Some(i) = self.find_overlap(pid) else { return false };
        let svc = &mut self.services[i];
        match svc.overlap.take() {
            Some(Overlap::Successor { .. }) => {
                // The kernel's OOM count moves on here too, so that the old process's later
                // exit is not taken for this one's OOM.
                if os.oom_killed(svc) {
                    notes.push(note(proto::EventKind::Oom, svc, Some(pid), "the new process was killed by the OOM killer"));
                }
                let svc = &mut self.services[i];
                // What it left in its own process group goes with it; the old one is untouched.
                os.signal(svc, pid, libc::SIGKILL);
                let old = svc.state.pid().map(|p| format!("; pid {p} goes on")).unwrap_or_default();
                svc.last_exit = Some(exit.to_string());
                notes.push(note(proto::EventKind::Exited, svc, Some(pid), format!("the new process ended before it was ready ({exit}){old}")));
            }
            Some(Overlap::Retiring { .. }) => {
                let _ = os.oom_killed(svc);
                let svc = &mut self.services[i];
                os.signal(svc, pid, libc::SIGKILL);
                notes.push(note(proto::EventKind::Stopped, svc, Some(pid), format!("replaced ({exit})")));
            }
            None => {}
        }
        self.advance(os, now, notes);
        true
    }

    /// Deadlines of overlapping restarts: a new process never ready is killed (the old one
    /// goes on), an old one that does not stop is killed.
    fn overlap_tick(&mut self, i: usize, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) {
        let svc = &mut self.services[i];
        match svc.overlap {
            Some(Overlap::Successor { pid, deadline }) if deadline <= now => {
                os.signal(svc, pid, libc::SIGKILL);
                svc.overlap = None;
                notes.push(note(proto::EventKind::Exited, svc, Some(pid), format!("the new process was not ready within {} s; killed, the old one goes on", OVERLAP_READY.as_secs())));
            }
            Some(Overlap::Retiring { pid, deadline, killed: false }) if deadline <= now => {
                os.signal(svc, pid, libc::SIGKILL);
                svc.overlap = Some(Overlap::Retiring { pid, deadline, killed: true });
                notes.push(note(proto::EventKind::Stopping, svc, Some(pid), "the replaced process did not stop in time; killed"));
            }
            _ => {}
        }
    }

    /// The service wrote its readiness newline (`ready = "fd:N"`).
    pub fn ready_fd(&mut self, id: u32, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) {
        if let Some(i) = self.by_id(id) {
            self.became_ready(i, now, notes);
            self.advance(os, now, notes);
        }
    }

    /// Operator: start a service (and what it requires).
    pub fn start_service(&mut self, name: &str, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) -> Result<(), String> {
        let i = self.index_of(name).ok_or_else(|| format!("no service named `{name}`"))?;
        if self.shutting_down {
            return Err("the system is shutting down".into());
        }
        let mut todo = vec![i];
        while let Some(j) = todo.pop() {
            let s = &mut self.services[j];
            s.wanted = true;
            if s.stop == Some(AfterStop::Stay) {
                s.stop = Some(AfterStop::Restart);
            }
            if matches!(s.state, State::Stopped) {
                s.state = State::Pending;
                s.consecutive_failures = 0;
                s.crash_loop = false;
            }
            if let State::Backoff { .. } = s.state {
                s.state = State::Pending;
            }
            let reqs = s.spec.requires.clone();
            todo.extend(reqs.iter().filter_map(|r| self.index_of(r)));
        }
        self.advance(os, now, notes);
        Ok(())
    }

    /// Operator: stop a service (services that require it stop first and wait for it).
    pub fn stop_service(&mut self, name: &str, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) -> Result<(), String> {
        let i = self.index_of(name).ok_or_else(|| format!("no service named `{name}`"))?;
        self.services[i].wanted = false;
        self.request_stop(i, AfterStop::Stay);
        self.advance(os, now, notes);
        Ok(())
    }

    /// Operator: restart (or start, when it is down).
    pub fn restart_service(&mut self, name: &str, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) -> Result<(), String> {
        let i = self.index_of(name).ok_or_else(|| format!("no service named `{name}`"))?;
        if !self.services[i].state.is_up() {
            return self.start_service(name, os, now, notes);
        }
        if let (true, State::Running { pid: old, .. }, None, None) = (self.services[i].spec.overlap, &self.services[i].state, &self.services[i].overlap, self.services[i].stop) {
            let old = *old;
            let svc = &mut self.services[i];
            match os.spawn(svc) {
                Ok(pid) => {
                    svc.overlap = Some(Overlap::Successor { pid, deadline: now + OVERLAP_READY });
                    notes.push(note(proto::EventKind::Starting, svc, Some(pid), format!("beside pid {old}, which stops once this one is ready")));
                    return Ok(());
                }
                Err(why) => {
                    notes.push(note(proto::EventKind::Exited, svc, None, format!("the new process failed to start ({why}); pid {old} goes on")));
                    return Err(format!("{name}: the new process failed to start: {why}; pid {old} goes on"));
                }
            }
        }
        self.services[i].wanted = true;
        self.services[i].consecutive_failures = 0;
        self.services[i].crash_loop = false;
        self.request_stop(i, AfterStop::Restart);
        self.advance(os, now, notes);
        Ok(())
    }

    /// Shutdown: everything stops, dependents before what they depend on, in parallel where
    /// the graph allows.
    pub fn stop_all(&mut self, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) {
        self.shutting_down = true;
        for i in 0..self.services.len() {
            self.services[i].wanted = false;
            self.services[i].stop = Some(AfterStop::Stay);
        }
        self.advance(os, now, notes);
    }

    /// Applies a new set of service files: new ones start, removed ones stop, changed ones
    /// restart with the new file, unchanged ones are not touched.
    pub fn reload(&mut self, files: BTreeMap<String, ServiceFile>, mut errors: Vec<String>, os: &mut dyn Os, now: Instant, notes: &mut Vec<Note>) -> proto::ReloadReport {
        let (admitted, problems) = admit(files);
        errors.extend(problems);
        let mut report = proto::ReloadReport { errors, ..Default::default() };
        let new_names: Vec<&String> = admitted.iter().map(|(n, _)| n).collect();
        for s in &self.services {
            if !new_names.contains(&&s.name) {
                report.removed.push(s.name.clone());
            }
        }
        for name in report.removed.clone() {
            if let Some(i) = self.index_of(&name) {
                self.services[i].wanted = false;
                self.request_stop(i, AfterStop::Stay);
            }
        }
        let mut order = Vec::new();
        for (name, spec) in admitted {
            match self.index_of(&name) {
                Some(i) if self.services[i].spec == spec => {
                    report.unchanged.push(name.clone());
                    order.push(self.services[i].id);
                }
                Some(i) => {
                    report.changed.push(name.clone());
                    let s = &mut self.services[i];
                    s.spec = spec;
                    if s.state.is_up() {
                        s.consecutive_failures = 0;
                        self.request_stop(i, AfterStop::Restart);
                    }
                    order.push(self.services[i].id);
                }
                None => {
                    report.added.push(name.clone());
                    let id = self.alloc_id();
                    let mut s = new_service(id, name, spec);
                    s.wanted = true;
                    self.services.push(s);
                    order.push(id);
                }
            }
        }
        // Keep the new dependency order; removed services stay (stopping) until they are down.
        self.services.sort_by_key(|s| order.iter().position(|&id| id == s.id).unwrap_or(usize::MAX));
        self.advance(os, now, notes);
        notes.push(Note { kind: proto::EventKind::Reloaded, service: String::new(), pid: None, detail: format!("{} added, {} removed, {} changed, {} unchanged", report.added.len(), report.removed.len(), report.changed.len(), report.unchanged.len()) });
        report
    }

    /// Forgets services that were removed by a reload and are down now; returns (id, name).
    pub fn drop_removed(&mut self, removed: &[String]) -> Vec<(u32, String)> {
        let mut gone = Vec::new();
        self.services.retain(|s| {
            let drop = removed.contains(&s.name) && !s.state.is_up() && s.stop.is_none();
            if drop {
                gone.push((s.id, s.name.clone()));
            }
            !drop
        });
        gone
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.services
            .iter()
            .flat_map(|s| {
                let state = match s.state {
                    State::Backoff { until } => Some(until),
                    State::Stopping { deadline, killed: false, .. } => Some(deadline),
                    _ => None,
                };
                [state, s.ready_next.filter(|_| !s.ready_in_flight), s.health.next.filter(|_| !s.health.in_flight), s.watchdog_deadline, s.overlap.and_then(Overlap::deadline)]
            })
            .flatten()
            .min()
    }

    pub fn all_down(&self) -> bool {
        self.services.iter().all(|s| !s.state.is_up())
    }

    /// The longest shutdown could take: every stop timeout along the longest dependency chain.
    pub fn worst_case_stop(&self) -> Duration {
        let grace = |s: &Service| s.spec.stop_timeout_s.map(Duration::from_secs).unwrap_or(self.stop_timeout);
        // Services are in dependency order: a service's chain is its grace plus the longest
        // chain of anything ordered after it (those stop first).
        let mut chain: HashMap<&str, Duration> = HashMap::new();
        for s in self.services.iter().rev() {
            let after_me = self
                .services
                .iter()
                .filter(|d| d.spec.requires.contains(&s.name) || d.spec.after.contains(&s.name))
                .filter_map(|d| chain.get(d.name.as_str()).copied())
                .max()
                .unwrap_or_default();
            chain.insert(&s.name, after_me + grace(s));
        }
        chain.values().copied().max().unwrap_or_default()
    }

    /// Critical services: all ready (boot may complete), or one failed for good.
    pub fn critical_state(&self) -> (bool, Option<String>) {
        let crit: Vec<&Service> = self.services.iter().filter(|s| s.spec.critical).collect();
        let all_ready = crit.iter().all(|s| s.ever_ready);
        // A start that fails outright (missing binary, unknown user) will not fix itself; a
        // process that keeps exiting gets until its crash loop.
        let failed = crit.iter().find(|s| !s.ever_ready && (s.crash_loop || s.start_failed.is_some() || (s.state == State::Stopped && !s.wanted))).map(|s| {
            format!("{}: {}", s.name, s.start_failed.clone().or_else(|| s.last_exit.clone()).unwrap_or_else(|| "failed".into()))
        });
        (all_ready, failed)
    }

    /// The operator's view of one service.
    pub fn status_of(&self, s: &Service, now: Instant, memory: Option<u64>) -> proto::ServiceStatus {
        let (state, uptime, next) = match s.state {
            State::Pending if !s.wanted => (proto::State::Stopped, None, None),
            State::Pending => (if s.spec.requires.is_empty() { proto::State::Starting } else { proto::State::Blocked }, None, None),
            State::Starting { since, .. } => (proto::State::Starting, Some(since), None),
            State::Running { since, .. } => (proto::State::Running, Some(since), None),
            State::Backoff { until } => (if s.crash_loop { proto::State::CrashLoop } else { proto::State::Backoff }, None, Some(until)),
            State::Stopping { .. } => (proto::State::Stopping, None, None),
            State::Stopped => (proto::State::Stopped, None, None),
        };
        proto::ServiceStatus {
            name: s.name.clone(),
            description: s.spec.description.clone(),
            state,
            pid: s.state.pid(),
            uptime_s: uptime.map(|t| now.saturating_duration_since(t).as_secs_f64()),
            restarts: s.restarts,
            health: s.spec.health.as_ref().map(|_| s.health.status),
            memory_bytes: memory,
            last_exit: s.last_exit.clone(),
            next_restart_ms: next.map(|t| t.saturating_duration_since(now).as_millis() as u64),
            status_text: s.status_text.clone(),
            critical: s.spec.critical,
        }
    }
}

fn new_service(id: u32, name: String, spec: ServiceFile) -> Service {
    Service {
        id,
        name,
        spec,
        state: State::Pending,
        wanted: false,
        stop: None,
        restarts: 0,
        consecutive_failures: 0,
        crash_loop: false,
        last_exit: None,
        health: HealthState { status: proto::Health::Unknown, failures: 0, next: None, in_flight: false },
        ready_next: None,
        ready_interval: READY_PROBE_FIRST,
        ready_in_flight: false,
        watchdog_deadline: None,
        status_text: None,
        ever_ready: false,
        start_failed: None,
        overlap: None,
        mainpid: false,
    }
}

fn health_spec(spec: &ServiceFile) -> Option<ProbeSpec> {
    let h = spec.health.as_ref()?;
    if let Some(e) = &h.exec {
        return Some(ProbeSpec::Exec(e.clone()));
    }
    if let Some(t) = &h.tcp {
        return Some(ProbeSpec::Tcp(t.clone()));
    }
    h.http.as_ref().map(|u| ProbeSpec::Http(u.clone()))
}

/// The delay before restart number `failures` (1-based) in a row: the first is immediate,
/// then `restart_delay_ms` doubling up to `restart_max_delay_ms`, spread by `jitter`.
pub fn restart_delay(spec: &ServiceFile, failures: u32, jitter: f64) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let exp = (failures - 2).min(40);
    let ms = spec.restart_delay_ms.saturating_mul(1u64 << exp).min(spec.restart_max_delay_ms);
    let j = jitter.clamp(0.9, 1.1);
    Duration::from_millis(((ms as f64) * j).round().min(spec.restart_max_delay_ms as f64) as u64)
}

/// Leaves out services with unknown requirements and cycles; returns the rest in dependency
/// order (Kahn's algorithm, name order among equals) and one line per service left out.
fn admit(mut files: BTreeMap<String, ServiceFile>) -> (Vec<(String, ServiceFile)>, Vec<String>) {
    let mut problems = Vec::new();
    loop {
        let missing: Vec<(String, String)> = files
            .iter()
            .filter_map(|(name, s)| {
                s.requires
                    .iter()
                    .find(|r| !files.contains_key(*r) && !BUILTIN_TARGETS.contains(&r.as_str()))
                    .map(|r| (name.clone(), r.clone()))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        for (name, req) in missing {
            problems.push(format!("service {name}: key `requires`: `{req}` is not a service that can start; {name} left out"));
            files.remove(&name);
        }
    }
    let mut indegree: HashMap<&str, usize> = files.keys().map(|k| (k.as_str(), 0)).collect();
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, spec) in &files {
        for dep in spec.requires.iter().chain(&spec.after) {
            if dep == name {
                problems.push(format!("service {name}: depends on itself; that dependency is ignored"));
            } else if files.contains_key(dep) {
                if let Some(d) = indegree.get_mut(name.as_str()) {
                    *d += 1;
                }
                dependents.entry(dep.as_str()).or_default().push(name.as_str());
            }
        }
    }
    let mut ready: std::collections::BTreeSet<&str> = indegree.iter().filter(|(_, d)| **d == 0).map(|(n, _)| *n).collect();
    let mut order: Vec<String> = Vec::new();
    while let Some(n) = ready.pop_first() {
        order.push(n.to_string());
        for d in dependents.get(n).into_iter().flatten() {
            if let Some(e) = indegree.get_mut(d) {
                *e -= 1;
                if *e == 0 {
                    ready.insert(d);
                }
            }
        }
    }
    if order.len() < files.len() {
        let mut stuck: Vec<&str> = files.keys().map(String::as_str).filter(|n| !order.iter().any(|o| o == n)).collect();
        stuck.sort();
        problems.push(format!("services {} form a dependency cycle (or wait on one); left out", stuck.join(", ")));
    }
    let out = order.into_iter().filter_map(|n| files.remove(&n).map(|s| (n, s))).collect();
    (out, problems)
}

mod handover;
pub use handover::SavedSupervisor;

#[cfg(test)]
mod tests;
