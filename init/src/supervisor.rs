//! Service supervision: start in dependency order, notice exits, restart with backoff, stop.
//!
//! A pure state machine: time comes in as an argument and processes are started and signalled
//! through the `Spawn` trait, so every transition is unit-tested with a fake process table.
//! Nothing here blocks; the event loop in `main` feeds it exits and timer ticks.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

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
    /// Not started yet.
    Pending,
    Running { pid: i32, since: Instant },
    /// Waiting for its restart delay to pass.
    Backoff { until: Instant },
    /// Stop signal sent; SIGKILL at `deadline`.
    Stopping { pid: i32, deadline: Instant, killed: bool },
    /// Down, and not coming back by itself.
    Stopped,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub spec: ServiceFile,
    pub state: State,
    pub restarts: u32,
    /// Failures since the last healthy run; drives the backoff.
    pub consecutive_failures: u32,
    pub last_exit: Option<Exit>,
}

/// Starts and signals processes; the real one forks and execs, the test one pretends.
pub trait Spawn {
    /// Starts the service's process in a new session; returns its pid.
    fn spawn(&mut self, svc: &Service) -> Result<i32, String>;
    /// Sends `sig` to the process group led by `pid`.
    fn signal_group(&mut self, pid: i32, sig: i32);
}

/// What the supervisor wants said on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Started { name: String, pid: i32 },
    StartFailed { name: String, why: String, critical: bool },
    Exited { name: String, exit: Exit },
    Restarting { name: String, delay: Duration },
    GaveUp { name: String, why: String },
    Killed { name: String },
}

pub struct Supervisor {
    pub services: Vec<Service>,
    stop_timeout: Duration,
    shutting_down: bool,
    /// Services that ended within their grace period during shutdown, and those that were killed.
    pub stopped_count: usize,
    pub killed_count: usize,
}

/// Targets that PID 1 itself provides; services may name them in `requires`/`after`.
pub const BUILTIN_TARGETS: &[&str] = &["network"];

impl Supervisor {
    /// Orders services so that each comes after what it requires or is ordered after.
    /// Returns the supervisor and one line per service left out (unknown requirement, cycle).
    pub fn new(files: BTreeMap<String, ServiceFile>, stop_timeout: Duration) -> (Supervisor, Vec<String>) {
        let mut problems = Vec::new();
        let mut files = files;
        // A service that requires something unknown (or left out) is left out, repeatedly.
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
        let order = topological(&files, &mut problems);
        let services = order
            .into_iter()
            .filter_map(|n| files.remove(&n).map(|spec| (n, spec)))
            .map(|(name, spec)| Service { name, spec, state: State::Pending, restarts: 0, consecutive_failures: 0, last_exit: None })
            .collect();
        (Supervisor { services, stop_timeout, shutting_down: false, stopped_count: 0, killed_count: 0 }, problems)
    }

    pub fn find_pid(&self, pid: i32) -> Option<usize> {
        self.services.iter().position(|s| matches!(s.state, State::Running { pid: p, .. } | State::Stopping { pid: p, .. } if p == pid))
    }

    /// Starts every pending service in order.
    pub fn start_all(&mut self, os: &mut dyn Spawn, now: Instant, notes: &mut Vec<Note>) {
        for i in 0..self.services.len() {
            if self.services[i].state == State::Pending {
                self.start(i, os, now, notes);
            }
        }
    }

    fn start(&mut self, i: usize, os: &mut dyn Spawn, now: Instant, notes: &mut Vec<Note>) {
        let svc = &mut self.services[i];
        match os.spawn(svc) {
            Ok(pid) => {
                svc.state = State::Running { pid, since: now };
                notes.push(Note::Started { name: svc.name.clone(), pid });
            }
            Err(why) => {
                notes.push(Note::StartFailed { name: svc.name.clone(), why: why.clone(), critical: svc.spec.critical });
                self.after_failure(i, now, notes, why);
            }
        }
    }

    /// A child ended; returns the service it belonged to, if any.
    pub fn child_exited(&mut self, pid: i32, exit: Exit, now: Instant, notes: &mut Vec<Note>) -> Option<usize> {
        let i = self.find_pid(pid)?;
        let svc = &mut self.services[i];
        svc.last_exit = Some(exit);
        match svc.state.clone() {
            State::Stopping { killed, .. } => {
                svc.state = State::Stopped;
                if killed {
                    self.killed_count += 1;
                } else {
                    self.stopped_count += 1;
                }
                notes.push(Note::Exited { name: svc.name.clone(), exit });
            }
            State::Running { since, .. } => {
                notes.push(Note::Exited { name: svc.name.clone(), exit });
                if now.duration_since(since) >= Duration::from_secs(svc.spec.restart_reset_s) {
                    svc.consecutive_failures = 0;
                }
                let wanted = match svc.spec.restart {
                    Restart::Always => true,
                    Restart::OnFailure => !exit.success(),
                    Restart::Never => false,
                };
                if wanted && !self.shutting_down {
                    self.after_failure(i, now, notes, exit.to_string());
                } else {
                    svc.state = State::Stopped;
                }
            }
            _ => {}
        }
        Some(i)
    }

    fn after_failure(&mut self, i: usize, now: Instant, notes: &mut Vec<Note>, why: String) {
        let svc = &mut self.services[i];
        if svc.spec.restart == Restart::Never || self.shutting_down {
            svc.state = State::Stopped;
            notes.push(Note::GaveUp { name: svc.name.clone(), why });
            return;
        }
        svc.consecutive_failures += 1;
        let delay = restart_delay(&svc.spec, svc.consecutive_failures);
        svc.state = State::Backoff { until: now + delay };
        notes.push(Note::Restarting { name: svc.name.clone(), delay });
    }

    /// Runs what is due: restarts after backoff, SIGKILL after a stop timeout.
    pub fn tick(&mut self, os: &mut dyn Spawn, now: Instant, notes: &mut Vec<Note>) {
        for i in 0..self.services.len() {
            match self.services[i].state {
                State::Backoff { until } if until <= now => {
                    self.services[i].restarts += 1;
                    self.start(i, os, now, notes);
                }
                State::Stopping { pid, deadline, killed: false } if deadline <= now => {
                    os.signal_group(pid, libc::SIGKILL);
                    self.services[i].state = State::Stopping { pid, deadline, killed: true };
                    notes.push(Note::Killed { name: self.services[i].name.clone() });
                }
                _ => {}
            }
        }
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.services
            .iter()
            .filter_map(|s| match s.state {
                State::Backoff { until } => Some(until),
                State::Stopping { deadline, killed: false, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// Shutdown: every running service gets its stop signal, last started first.
    pub fn stop_all(&mut self, os: &mut dyn Spawn, now: Instant) {
        self.shutting_down = true;
        for svc in self.services.iter_mut().rev() {
            match svc.state {
                State::Running { pid, .. } => {
                    let sig = signal_number(&svc.spec.stop_signal).unwrap_or(libc::SIGTERM);
                    os.signal_group(pid, sig);
                    // A stopped (SIGSTOP) process must wake up to see its stop signal.
                    os.signal_group(pid, libc::SIGCONT);
                    let grace = svc.spec.stop_timeout_s.map(Duration::from_secs).unwrap_or(self.stop_timeout);
                    svc.state = State::Stopping { pid, deadline: now + grace, killed: false };
                }
                State::Backoff { .. } | State::Pending => svc.state = State::Stopped,
                _ => {}
            }
        }
    }

    pub fn all_down(&self) -> bool {
        self.services.iter().all(|s| matches!(s.state, State::Stopped | State::Pending))
    }

    /// The latest deadline of a stopping service, which bounds the whole stop.
    pub fn stop_bound(&self) -> Option<Instant> {
        self.services.iter().filter_map(|s| if let State::Stopping { deadline, .. } = s.state { Some(deadline) } else { None }).max()
    }
}

/// The delay before restart number `failures` (1-based) in a row: the first is immediate,
/// then `restart_delay_ms` doubling up to `restart_max_delay_ms`.
pub fn restart_delay(spec: &ServiceFile, failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let exp = (failures - 2).min(40);
    let ms = spec.restart_delay_ms.saturating_mul(1u64 << exp).min(spec.restart_max_delay_ms);
    Duration::from_millis(ms)
}

/// Kahn's algorithm over `requires` and `after`, in name order among equals (stable output).
/// Services on a cycle are reported with its members and left out.
fn topological(files: &BTreeMap<String, ServiceFile>, problems: &mut Vec<String>) -> Vec<String> {
    let mut indegree: HashMap<&str, usize> = files.keys().map(|k| (k.as_str(), 0)).collect();
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, spec) in files {
        for dep in spec.requires.iter().chain(&spec.after) {
            if files.contains_key(dep) && dep != name {
                *indegree.get_mut(name.as_str()).unwrap_or(&mut 0) += 1;
                dependents.entry(dep.as_str()).or_default().push(name.as_str());
            } else if dep == name {
                problems.push(format!("service {name}: depends on itself; the dependency is ignored"));
            }
        }
    }
    let mut ready: std::collections::BTreeSet<&str> = indegree.iter().filter(|(_, d)| **d == 0).map(|(n, _)| *n).collect();
    let mut order = Vec::new();
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
        let mut stuck: Vec<&str> = indegree.iter().filter(|(n, d)| **d > 0 && !order.iter().any(|o| o == *n)).map(|(n, _)| *n).collect();
        stuck.sort();
        problems.push(format!("services {} form a dependency cycle (or wait on one); left out", stuck.join(", ")));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> ServiceFile {
        ServiceFile::parse(&format!("exec = [\"/bin/true\"]\n{extra}"), "t.toml").unwrap()
    }

    #[derive(Default)]
    struct FakeOs {
        next_pid: i32,
        missing: Vec<String>,
        spawned: Vec<(String, i32)>,
        signals: Vec<(i32, i32)>,
    }

    impl Spawn for FakeOs {
        fn spawn(&mut self, svc: &Service) -> Result<i32, String> {
            if self.missing.contains(&svc.name) {
                return Err(format!("exec {}: No such file or directory", svc.spec.exec[0]));
            }
            self.next_pid += 1;
            self.spawned.push((svc.name.clone(), self.next_pid + 100));
            Ok(self.next_pid + 100)
        }
        fn signal_group(&mut self, pid: i32, sig: i32) {
            self.signals.push((pid, sig));
        }
    }

    fn sup(list: &[(&str, &str)]) -> (Supervisor, Vec<String>) {
        let files = list.iter().map(|(n, e)| (n.to_string(), spec(e))).collect();
        Supervisor::new(files, Duration::from_secs(5))
    }

    #[test]
    fn starts_in_dependency_order_and_leaves_out_cycles_and_unknowns() {
        let (s, problems) = sup(&[
            ("web", "requires = [\"db\", \"network\"]"),
            ("db", "after = [\"log\"]"),
            ("log", ""),
            ("a", "requires = [\"b\"]"),
            ("b", "after = [\"a\"]"),
            ("orphan", "requires = [\"nosuch\"]"),
            ("needs-orphan", "requires = [\"orphan\"]"),
        ]);
        let names: Vec<&str> = s.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["log", "db", "web"]);
        let all = problems.join("\n");
        assert!(all.contains("orphan: key `requires`: `nosuch`"), "{all}");
        assert!(all.contains("needs-orphan: key `requires`: `orphan`"), "{all}");
        assert!(all.contains("services a, b form a dependency cycle"), "{all}");
    }

    #[test]
    fn crash_restarts_immediately_then_backs_off_and_a_healthy_run_resets() {
        let (mut s, _) = sup(&[("svc", "restart_delay_ms = 100\nrestart_max_delay_ms = 350\nrestart_reset_s = 10")]);
        let mut os = FakeOs::default();
        let mut notes = vec![];
        let t0 = Instant::now();
        s.start_all(&mut os, t0, &mut notes);
        let mut now = t0;
        let mut delays = vec![];
        for _ in 0..5 {
            let State::Running { pid, .. } = s.services[0].state else { panic!("not running: {:?}", s.services[0].state) };
            s.child_exited(pid, Exit::Code(1), now, &mut notes);
            let State::Backoff { until } = s.services[0].state else { panic!() };
            delays.push(until - now);
            now = until;
            s.tick(&mut os, now, &mut notes);
        }
        let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 100, 200, 350, 350]);
        // Ten healthy seconds later, the next crash restarts at once again.
        let State::Running { pid, .. } = s.services[0].state else { panic!() };
        now += Duration::from_secs(10);
        s.child_exited(pid, Exit::Signal(9), now, &mut notes);
        assert_eq!(s.services[0].state, State::Backoff { until: now });
        assert_eq!(s.services[0].restarts, 5);
    }

    #[test]
    fn restart_policies() {
        let (mut s, _) = sup(&[("never", "restart = \"never\""), ("onfail", "restart = \"on-failure\"")]);
        let mut os = FakeOs::default();
        let mut notes = vec![];
        let now = Instant::now();
        s.start_all(&mut os, now, &mut notes);
        s.child_exited(101, Exit::Code(3), now, &mut notes);
        s.child_exited(102, Exit::Code(0), now, &mut notes);
        assert_eq!(s.services[0].state, State::Stopped);
        assert_eq!(s.services[1].state, State::Stopped);
        assert_eq!(s.child_exited(999, Exit::Code(0), now, &mut notes), None, "a stranger's exit is not ours");
    }

    #[test]
    fn missing_binary_is_reported_and_retried_not_fatal() {
        let (mut s, _) = sup(&[("gone", "critical = true"), ("fine", "")]);
        let mut os = FakeOs { missing: vec!["gone".into()], ..Default::default() };
        let mut notes = vec![];
        let now = Instant::now();
        s.start_all(&mut os, now, &mut notes);
        assert!(notes.iter().any(|n| matches!(n, Note::StartFailed { name, critical: true, why } if name == "gone" && why.contains("No such file"))));
        assert!(matches!(s.services.iter().find(|x| x.name == "fine").unwrap().state, State::Running { .. }));
        assert!(matches!(s.services.iter().find(|x| x.name == "gone").unwrap().state, State::Backoff { .. }));
    }

    #[test]
    fn shutdown_stops_in_reverse_order_and_kills_after_the_grace_period() {
        let (mut s, _) = sup(&[("first", ""), ("second", "after = [\"first\"]\nstop_signal = \"INT\"\nstop_timeout_s = 2")]);
        let mut os = FakeOs::default();
        let mut notes = vec![];
        let t0 = Instant::now();
        s.start_all(&mut os, t0, &mut notes);
        assert_eq!(os.spawned, [("first".to_string(), 101), ("second".to_string(), 102)]);
        s.stop_all(&mut os, t0);
        let stops: Vec<(i32, i32)> = os.signals.iter().copied().filter(|(_, sig)| *sig != libc::SIGCONT).collect();
        assert_eq!(stops, [(102, libc::SIGINT), (101, libc::SIGTERM)]);
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(2)));
        // "first" stops politely; "second" ignores SIGINT and is killed after 2 s.
        s.child_exited(101, Exit::Code(0), t0, &mut notes);
        s.tick(&mut os, t0 + Duration::from_secs(2), &mut notes);
        assert_eq!(os.signals.last(), Some(&(102, libc::SIGKILL)));
        assert!(!s.all_down());
        s.child_exited(102, Exit::Signal(9), t0 + Duration::from_secs(2), &mut notes);
        assert!(s.all_down());
        assert_eq!((s.stopped_count, s.killed_count), (1, 1));
        // Nothing restarts during shutdown.
        assert_eq!(os.spawned.len(), 2);
    }
}
