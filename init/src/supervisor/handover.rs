//! The supervisor's part of a PID 1 re-execution (reexec.rs): every service with its state,
//! counters and pending timers, written before the exec and read back by the new program.
//! Instants do not survive an exec as values, so each is kept as milliseconds from the moment
//! of saving (negative: in the past); the monotonic clock itself goes on across the exec.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use ghost_proto as proto;

use super::{AfterStop, HealthState, Service, State, Supervisor};
use crate::service_file::ServiceFile;

/// `t` as milliseconds from `now` (negative when past).
fn rel(t: Instant, now: Instant) -> i64 {
    if t >= now {
        (t - now).as_millis() as i64
    } else {
        -((now - t).as_millis() as i64)
    }
}

/// Back from [`rel`]; a moment before the monotonic clock's start is clamped to it.
fn abs(ms: i64, now: Instant) -> Instant {
    if ms >= 0 {
        now + Duration::from_millis(ms as u64)
    } else {
        now.checked_sub(Duration::from_millis(ms.unsigned_abs())).unwrap_or(now)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
enum SavedState {
    Pending,
    Starting { pid: i32, since: i64 },
    Running { pid: i32, since: i64 },
    Backoff { until: i64 },
    Stopping { pid: i32, deadline: i64, killed: bool },
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedService {
    id: u32,
    name: String,
    spec: ServiceFile,
    state: SavedState,
    wanted: bool,
    stop: Option<AfterStop>,
    restarts: u32,
    consecutive_failures: u32,
    crash_loop: bool,
    last_exit: Option<String>,
    health: proto::Health,
    health_failures: u32,
    /// The next health probe; a probe in flight at the exec is lost, so it runs again at once.
    health_next: Option<i64>,
    ready_next: Option<i64>,
    ready_interval_ms: u64,
    watchdog: Option<i64>,
    status_text: Option<String>,
    ever_ready: bool,
    start_failed: Option<String>,
    #[serde(default)]
    mainpid: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSupervisor {
    services: Vec<SavedService>,
    stop_timeout_ms: u64,
    next_id: u32,
    targets_up: Vec<String>,
}

impl SavedSupervisor {
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether service `name`'s main pid was named by the service itself (MAINPID=), so that
    /// it need not be PID 1's child.
    pub fn named_pid(&self, name: &str) -> bool {
        self.services.iter().find(|s| s.name == name).is_some_and(|s| s.mainpid)
    }

    /// (service, pid) of every service process.
    pub fn pids(&self) -> Vec<(&str, i32)> {
        self.services
            .iter()
            .filter_map(|s| match s.state {
                SavedState::Starting { pid, .. } | SavedState::Running { pid, .. } | SavedState::Stopping { pid, .. } => Some((s.name.as_str(), pid)),
                _ => None,
            })
            .collect()
    }
}

impl Supervisor {
    pub fn save(&self, now: Instant) -> SavedSupervisor {
        let services = self.services.iter().map(|s| save_service(s, now)).collect();
        SavedSupervisor { services, stop_timeout_ms: self.stop_timeout.as_millis() as u64, next_id: self.next_id, targets_up: self.targets_up.clone() }
    }

    /// The supervisor as it was saved; pids of the services are checked by the caller.
    pub fn restore(saved: SavedSupervisor, now: Instant) -> Supervisor {
        let mut sup = Supervisor::empty(Duration::from_millis(saved.stop_timeout_ms));
        sup.next_id = saved.next_id;
        sup.targets_up = saved.targets_up;
        sup.services = saved.services.into_iter().map(|s| restore_service(s, now)).collect();
        // Ids must stay unique whatever the file said.
        let top = sup.services.iter().map(|s| s.id).max().unwrap_or(0);
        sup.next_id = sup.next_id.max(top + 1);
        sup
    }
}

fn save_service(s: &Service, now: Instant) -> SavedService {
    let state = match s.state {
        State::Pending => SavedState::Pending,
        State::Starting { pid, since } => SavedState::Starting { pid, since: rel(since, now) },
        State::Running { pid, since } => SavedState::Running { pid, since: rel(since, now) },
        State::Backoff { until } => SavedState::Backoff { until: rel(until, now) },
        State::Stopping { pid, deadline, killed } => SavedState::Stopping { pid, deadline: rel(deadline, now), killed },
        State::Stopped => SavedState::Stopped,
    };
    let in_flight_now = |next: Option<Instant>, in_flight: bool| if in_flight { Some(0) } else { next.map(|t| rel(t, now)) };
    SavedService {
        id: s.id,
        name: s.name.clone(),
        spec: s.spec.clone(),
        state,
        wanted: s.wanted,
        stop: s.stop,
        restarts: s.restarts,
        consecutive_failures: s.consecutive_failures,
        crash_loop: s.crash_loop,
        last_exit: s.last_exit.clone(),
        health: s.health.status,
        health_failures: s.health.failures,
        health_next: in_flight_now(s.health.next, s.health.in_flight),
        ready_next: in_flight_now(s.ready_next, s.ready_in_flight),
        ready_interval_ms: s.ready_interval.as_millis() as u64,
        watchdog: s.watchdog_deadline.map(|t| rel(t, now)),
        status_text: s.status_text.clone(),
        ever_ready: s.ever_ready,
        start_failed: s.start_failed.clone(),
        mainpid: s.mainpid,
    }
}

fn restore_service(s: SavedService, now: Instant) -> Service {
    let mut svc = super::new_service(s.id, s.name, s.spec);
    svc.state = match s.state {
        SavedState::Pending => State::Pending,
        SavedState::Starting { pid, since } => State::Starting { pid, since: abs(since, now) },
        SavedState::Running { pid, since } => State::Running { pid, since: abs(since, now) },
        SavedState::Backoff { until } => State::Backoff { until: abs(until, now) },
        SavedState::Stopping { pid, deadline, killed } => State::Stopping { pid, deadline: abs(deadline, now), killed },
        SavedState::Stopped => State::Stopped,
    };
    svc.wanted = s.wanted;
    svc.stop = s.stop;
    svc.restarts = s.restarts;
    svc.consecutive_failures = s.consecutive_failures;
    svc.crash_loop = s.crash_loop;
    svc.last_exit = s.last_exit;
    svc.health = HealthState { status: s.health, failures: s.health_failures, next: s.health_next.map(|t| abs(t, now)), in_flight: false };
    svc.ready_next = s.ready_next.map(|t| abs(t, now));
    svc.ready_interval = Duration::from_millis(s.ready_interval_ms.max(1));
    svc.ready_in_flight = false;
    svc.watchdog_deadline = s.watchdog.map(|t| abs(t, now));
    svc.status_text = s.status_text;
    svc.ever_ready = s.ever_ready;
    svc.start_failed = s.start_failed;
    svc.mainpid = s.mainpid;
    svc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(exec: &str) -> ServiceFile {
        toml::from_str(&format!("exec = [\"{exec}\"]\nready = \"health\"\nhealth = {{ exec = [\"/bin/true\"] }}\n")).unwrap()
    }

    #[test]
    fn every_state_and_timer_survives_a_round_trip_through_json() {
        let mut files = BTreeMap::new();
        for n in ["a", "b", "c", "d", "e"] {
            files.insert(n.to_string(), spec(&format!("/bin/{n}")));
        }
        let (mut sup, problems) = Supervisor::new(files, Duration::from_secs(7));
        assert!(problems.is_empty());
        let now = Instant::now() + Duration::from_secs(100);
        let past = now - Duration::from_millis(61_000);
        sup.services[0].state = State::Running { pid: 41, since: past };
        sup.services[0].restarts = 3;
        sup.services[0].health = HealthState { status: proto::Health::Healthy, failures: 1, next: None, in_flight: true };
        sup.services[1].state = State::Backoff { until: now + Duration::from_millis(2_500) };
        sup.services[1].crash_loop = true;
        sup.services[1].last_exit = Some("exit code 3".into());
        sup.services[2].state = State::Stopping { pid: 43, deadline: now + Duration::from_secs(4), killed: false };
        sup.services[2].stop = Some(AfterStop::Restart);
        sup.services[3].state = State::Stopped;
        sup.services[4].state = State::Starting { pid: 45, since: now };
        sup.services[4].ready_in_flight = true;
        sup.services[4].watchdog_deadline = Some(now + Duration::from_secs(9));
        sup.targets_up.push("network".into());

        let text = serde_json::to_string(&sup.save(now)).unwrap();
        let back = Supervisor::restore(serde_json::from_str(&text).unwrap(), now);
        assert_eq!(back.services.len(), 5);
        assert_eq!(back.services[0].state, State::Running { pid: 41, since: past });
        assert_eq!(back.services[0].restarts, 3);
        // The probe in flight at the exec is asked for again at once.
        assert_eq!((back.services[0].health.next, back.services[0].health.in_flight), (Some(now), false));
        assert_eq!(back.services[0].health.status, proto::Health::Healthy);
        assert_eq!(back.services[1].state, State::Backoff { until: now + Duration::from_millis(2_500) });
        assert!(back.services[1].crash_loop);
        assert_eq!(back.services[2].stop, Some(AfterStop::Restart));
        assert_eq!(back.services[2].state, State::Stopping { pid: 43, deadline: now + Duration::from_secs(4), killed: false });
        assert_eq!(back.services[3].state, State::Stopped);
        assert_eq!((back.services[4].ready_next, back.services[4].ready_in_flight), (Some(now), false));
        assert_eq!(back.services[4].watchdog_deadline, Some(now + Duration::from_secs(9)));
        assert_eq!(back.services[0].spec, sup.services[0].spec);
        assert_eq!(back.targets_up, ["network"]);
        assert_eq!(back.stop_timeout, Duration::from_secs(7));
        assert_eq!(back.services.iter().map(|s| s.id).collect::<Vec<_>>(), sup.services.iter().map(|s| s.id).collect::<Vec<_>>());
        assert_eq!(back.next_id, sup.next_id);
    }
}
