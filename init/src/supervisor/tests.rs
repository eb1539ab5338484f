//! State-machine tests with a fake process table and explicit time.

use super::*;

fn spec(extra: &str) -> ServiceFile {
    ServiceFile::parse(&format!("exec = [\"/bin/true\"]\n{extra}"), "t.toml").unwrap()
}

#[derive(Default)]
struct FakeOs {
    next_pid: i32,
    missing: Vec<String>,
    spawned: Vec<(String, i32)>,
    signals: Vec<(String, i32)>,
    killed_all: Vec<String>,
    oom: Vec<String>,
}

impl Os for FakeOs {
    fn spawn(&mut self, svc: &Service) -> Result<i32, String> {
        if self.missing.contains(&svc.name) {
            return Err(format!("exec {}: No such file or directory", svc.spec.exec[0]));
        }
        self.next_pid += 1;
        self.spawned.push((svc.name.clone(), 100 + self.next_pid));
        Ok(100 + self.next_pid)
    }
    fn signal(&mut self, svc: &Service, _pid: i32, sig: i32) {
        if sig != libc::SIGCONT {
            self.signals.push((svc.name.clone(), sig));
        }
    }
    fn kill_all(&mut self, svc: &Service, _pid: i32) {
        self.killed_all.push(svc.name.clone());
    }
    fn oom_killed(&mut self, svc: &Service) -> bool {
        self.oom.contains(&svc.name)
    }
    fn jitter(&mut self) -> f64 {
        1.0
    }
}

struct World {
    sup: Supervisor,
    os: FakeOs,
    notes: Vec<Note>,
    now: Instant,
}

impl World {
    fn new(list: &[(&str, &str)]) -> World {
        let files = list.iter().map(|(n, e)| (n.to_string(), spec(e))).collect();
        let (sup, problems) = Supervisor::new(files, Duration::from_secs(5));
        assert!(problems.is_empty(), "{problems:?}");
        World { sup, os: FakeOs::default(), notes: vec![], now: Instant::now() }
    }
    fn boot(&mut self) {
        self.sup.start_wanted(&mut self.os, self.now, &mut self.notes);
    }
    fn svc(&self, name: &str) -> &Service {
        &self.sup.services[self.sup.index_of(name).unwrap()]
    }
    fn pid(&self, name: &str) -> i32 {
        self.svc(name).state.pid().unwrap_or_else(|| panic!("{name} has no process: {:?}", self.svc(name).state))
    }
    fn exit(&mut self, name: &str, exit: Exit) {
        let pid = self.pid(name);
        self.sup.child_exited(pid, exit, &mut self.os, self.now, &mut self.notes).unwrap();
    }
    fn later(&mut self, d: Duration) -> Vec<ProbeRequest> {
        self.now += d;
        self.sup.tick(&mut self.os, self.now, &mut self.notes)
    }
    fn kinds(&self, name: &str) -> Vec<proto::EventKind> {
        self.notes.iter().filter(|n| n.service == name).map(|n| n.kind).collect()
    }
    fn running(&self, name: &str) -> bool {
        matches!(self.svc(name).state, State::Running { .. })
    }
}

#[test]
fn dependency_order_and_services_left_out() {
    let files = [
        ("web", "requires = [\"db\", \"network\"]"),
        ("db", "after = [\"log\"]"),
        ("log", ""),
        ("a", "requires = [\"b\"]"),
        ("b", "after = [\"a\"]"),
        ("orphan", "requires = [\"nosuch\"]"),
        ("needs-orphan", "requires = [\"orphan\"]"),
    ]
    .iter()
    .map(|(n, e)| (n.to_string(), spec(e)))
    .collect();
    let (s, problems) = Supervisor::new(files, Duration::from_secs(5));
    let names: Vec<&str> = s.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["log", "db", "web"]);
    let all = problems.join("\n");
    assert!(all.contains("orphan: key `requires`: `nosuch`"), "{all}");
    assert!(all.contains("needs-orphan: key `requires`: `orphan`"), "{all}");
    assert!(all.contains("services a, b form a dependency cycle"), "{all}");
}

#[test]
fn requirements_start_first_and_builtin_network_gates() {
    let mut w = World::new(&[("web", "requires = [\"db\", \"network\"]"), ("db", "ready = \"notify\"")]);
    w.boot();
    assert_eq!(w.os.spawned.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["db"], "web waits for db to be ready");
    let db = w.sup.index_of("db").unwrap();
    w.sup.notify(db, "READY=1\nSTATUS=accepting", &mut w.os, w.now, &mut w.notes);
    assert!(w.running("db"));
    assert_eq!(w.svc("db").status_text.as_deref(), Some("accepting"));
    assert_eq!(w.os.spawned.len(), 1, "web also waits for the network target");
    w.sup.targets_up.push("network".into());
    w.later(Duration::ZERO);
    assert!(w.running("web"));
}

#[test]
fn a_changed_status_line_is_an_event_and_a_repeated_one_is_not() {
    let mut w = World::new(&[("model", "ready = \"notify\"")]);
    w.boot();
    let i = w.sup.index_of("model").unwrap();
    for msg in ["STATUS=downloading 10%", "STATUS=downloading 10%", "STATUS=downloading 55%"] {
        w.sup.notify(i, msg, &mut w.os, w.now, &mut w.notes);
    }
    let status: Vec<&str> = w.notes.iter().filter(|n| n.kind == proto::EventKind::Status).map(|n| n.detail.as_str()).collect();
    assert_eq!(status, ["downloading 10%", "downloading 55%"]);
    assert_eq!(w.svc("model").status_text.as_deref(), Some("downloading 55%"));
}

#[test]
fn crash_restarts_immediately_then_backs_off_then_crash_loop_and_a_healthy_run_resets() {
    let mut w = World::new(&[("svc", "restart_delay_ms = 100\nrestart_max_delay_ms = 350\nrestart_reset_s = 10")]);
    w.boot();
    let mut delays = vec![];
    for _ in 0..6 {
        w.exit("svc", Exit::Code(1));
        let State::Backoff { until } = w.svc("svc").state else { panic!("{:?}", w.svc("svc").state) };
        delays.push((until - w.now).as_millis());
        w.later(until - w.now);
    }
    assert_eq!(delays, [0, 100, 200, 350, 350, 350]);
    assert!(w.svc("svc").crash_loop);
    assert_eq!(w.kinds("svc").iter().filter(|k| **k == proto::EventKind::CrashLoop).count(), 1);
    let st = w.sup.status_of(w.svc("svc"), w.now, None);
    assert_eq!(st.state, proto::State::Running, "it is up again after its delay");
    // Ten healthy seconds later, the next crash restarts at once again and is no crash loop.
    w.later(Duration::from_secs(10));
    w.exit("svc", Exit::Signal(9));
    assert_eq!(w.svc("svc").state, State::Backoff { until: w.now });
    assert!(!w.svc("svc").crash_loop);
    assert_eq!(w.svc("svc").restarts, 6);
}

#[test]
fn jitter_spreads_delays_within_ten_percent_and_never_past_the_max() {
    let s = spec("restart_delay_ms = 1000\nrestart_max_delay_ms = 4000");
    assert_eq!(restart_delay(&s, 1, 1.1), Duration::ZERO);
    assert_eq!(restart_delay(&s, 2, 0.9), Duration::from_millis(900));
    assert_eq!(restart_delay(&s, 2, 1.1), Duration::from_millis(1100));
    assert_eq!(restart_delay(&s, 9, 1.1), Duration::from_millis(4000));
    assert_eq!(restart_delay(&s, 3, 5.0), Duration::from_millis(2200), "jitter is clamped");
}

#[test]
fn restart_policies_and_strangers() {
    let mut w = World::new(&[("never", "restart = \"never\""), ("onfail", "restart = \"on-failure\""), ("onfail2", "restart = \"on-failure\"")]);
    w.boot();
    w.exit("never", Exit::Code(3));
    w.exit("onfail", Exit::Code(0));
    w.exit("onfail2", Exit::Code(2));
    assert_eq!(w.svc("never").state, State::Stopped);
    assert_eq!(w.svc("onfail").state, State::Stopped);
    assert!(matches!(w.svc("onfail2").state, State::Running { .. } | State::Backoff { .. } | State::Pending));
    assert_eq!(w.sup.child_exited(999, Exit::Code(0), &mut w.os, w.now, &mut w.notes), None, "a stranger's exit is not ours");
}

#[test]
fn missing_binary_is_retried_and_fails_a_critical_service_at_once() {
    let mut w = World::new(&[("gone", "critical = true\nrestart_delay_ms = 10"), ("fine", "")]);
    w.os.missing.push("gone".into());
    w.boot();
    assert!(w.running("fine"));
    assert!(matches!(w.svc("gone").state, State::Backoff { .. }), "still retried");
    let (ready, failed) = w.sup.critical_state();
    assert!(!ready);
    assert!(failed.unwrap().contains("gone: exec /bin/true: No such file"));
}

#[test]
fn a_critical_service_that_keeps_crashing_fails_boot_once_crash_looping() {
    let mut w = World::new(&[("flaky", "critical = true\nready = \"notify\"\nrestart_delay_ms = 10")]);
    w.boot();
    for i in 0..CRASH_LOOP_AFTER {
        assert_eq!(w.sup.critical_state(), (false, None), "not failed for good after {i} exits");
        w.exit("flaky", Exit::Code(1));
        w.later(Duration::from_secs(60));
    }
    assert!(w.sup.critical_state().1.unwrap().starts_with("flaky: exit code 1"));
}

#[test]
fn shutdown_stops_dependents_first_and_kills_after_the_grace_period() {
    let mut w = World::new(&[("db", ""), ("web", "requires = [\"db\"]\nstop_signal = \"INT\"\nstop_timeout_s = 2"), ("solo", "")]);
    w.boot();
    w.sup.stop_all(&mut w.os, w.now, &mut w.notes);
    // web and solo at once; db waits for web.
    assert_eq!(w.os.signals, [("solo".to_string(), libc::SIGTERM), ("web".to_string(), libc::SIGINT)]);
    assert!(w.running("db"));
    w.exit("solo", Exit::Signal(15));
    let probes = w.later(Duration::from_secs(2));
    assert!(probes.is_empty());
    assert_eq!(w.os.killed_all.last().map(String::as_str), Some("web"), "web ignored SIGINT and was killed");
    w.exit("web", Exit::Signal(9));
    assert_eq!(w.os.signals.last(), Some(&("db".to_string(), libc::SIGTERM)), "db is signalled once web is down");
    w.exit("db", Exit::Code(0));
    assert!(w.sup.all_down());
    assert_eq!((w.sup.stopped_count, w.sup.killed_count), (2, 1));
    assert_eq!(w.os.spawned.len(), 3, "nothing restarts during shutdown");
    assert_eq!(w.sup.worst_case_stop(), Duration::from_secs(7), "web's 2 s then db's 5 s");
}

#[test]
fn a_requirement_that_crashes_takes_its_dependents_down_and_back_up() {
    let mut w = World::new(&[("db", ""), ("web", "requires = [\"db\"]")]);
    w.boot();
    let old_web = w.pid("web");
    w.exit("db", Exit::Signal(9));
    // db restarts at once (first failure), but web was asked to stop first.
    assert!(w.os.signals.contains(&("web".to_string(), libc::SIGTERM)));
    w.sup.child_exited(old_web, Exit::Signal(15), &mut w.os, w.now, &mut w.notes);
    w.later(Duration::ZERO);
    assert!(w.running("db"));
    assert!(w.running("web"), "web comes back after db: {:?}", w.svc("web").state);
    assert_ne!(w.pid("web"), old_web);
}

#[test]
fn operator_stop_cascades_and_start_brings_requirements() {
    let mut w = World::new(&[("db", ""), ("web", "requires = [\"db\"]")]);
    w.boot();
    w.sup.stop_service("db", &mut w.os, w.now, &mut w.notes).unwrap();
    assert_eq!(w.os.signals, [("web".to_string(), libc::SIGTERM)], "web stops before db");
    w.exit("web", Exit::Signal(15));
    assert_eq!(w.os.signals.last().unwrap().0, "db");
    w.exit("db", Exit::Signal(15));
    assert_eq!(w.svc("db").state, State::Stopped);
    assert_eq!(w.sup.status_of(w.svc("web"), w.now, None).state, proto::State::Blocked, "web waits for db");
    w.sup.start_service("web", &mut w.os, w.now, &mut w.notes).unwrap();
    assert!(w.running("db") && w.running("web"));
    assert!(w.sup.start_service("nosuch", &mut w.os, w.now, &mut w.notes).unwrap_err().contains("nosuch"));
}

#[test]
fn restart_gives_a_new_process() {
    let mut w = World::new(&[("a", "")]);
    w.boot();
    let old = w.pid("a");
    w.sup.restart_service("a", &mut w.os, w.now, &mut w.notes).unwrap();
    w.exit("a", Exit::Signal(15));
    assert!(w.running("a"));
    assert_ne!(w.pid("a"), old);
    assert_eq!(w.svc("a").consecutive_failures, 0, "an operator restart is no failure");
}

#[test]
fn readiness_by_tcp_probe_backs_off_until_it_passes() {
    let mut w = World::new(&[("srv", "ready = \"tcp:6380\""), ("user", "requires = [\"srv\"]")]);
    w.boot();
    assert!(matches!(w.svc("srv").state, State::Starting { .. }));
    let p = w.later(Duration::from_millis(5));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].spec, ProbeSpec::Tcp("127.0.0.1:6380".into()));
    let id = p[0].service;
    w.sup.probe_result(id, ProbePurpose::Ready, false, "refused", &mut w.os, w.now, &mut w.notes);
    assert!(w.later(Duration::from_millis(5)).is_empty(), "next probe after 10 ms, not 5");
    let p = w.later(Duration::from_millis(5));
    assert_eq!(p.len(), 1);
    w.sup.probe_result(id, ProbePurpose::Ready, true, "", &mut w.os, w.now, &mut w.notes);
    assert!(w.running("srv") && w.running("user"));
}

#[test]
fn failing_health_probes_restart_the_service() {
    let mut w = World::new(&[("srv", "health = { exec = [\"/bin/check\"], interval_s = 1, timeout_s = 1, failures = 2 }")]);
    w.boot();
    let old = w.pid("srv");
    let p = w.later(Duration::from_secs(1));
    assert_eq!(p[0].purpose, ProbePurpose::Health);
    w.sup.probe_result(p[0].service, ProbePurpose::Health, true, "", &mut w.os, w.now, &mut w.notes);
    assert_eq!(w.svc("srv").health.status, proto::Health::Healthy);
    for _ in 0..2 {
        let p = w.later(Duration::from_secs(1));
        w.sup.probe_result(p[0].service, ProbePurpose::Health, false, "process is stopped (SIGSTOP)", &mut w.os, w.now, &mut w.notes);
    }
    assert!(w.kinds("srv").contains(&proto::EventKind::Unhealthy));
    assert_eq!(w.os.signals, [("srv".to_string(), libc::SIGTERM)]);
    w.sup.child_exited(old, Exit::Signal(15), &mut w.os, w.now, &mut w.notes);
    assert!(w.running("srv"));
    assert_ne!(w.pid("srv"), old);
    assert_eq!(w.svc("srv").health.status, proto::Health::Unknown);
}

#[test]
fn a_silent_watchdog_restarts_the_service() {
    let mut w = World::new(&[("dog", "ready = \"notify\"\nwatchdog_s = 2")]);
    w.boot();
    let i = w.sup.index_of("dog").unwrap();
    w.sup.notify(i, "READY=1", &mut w.os, w.now, &mut w.notes);
    w.later(Duration::from_millis(1500));
    w.sup.notify(i, "WATCHDOG=1", &mut w.os, w.now, &mut w.notes);
    w.later(Duration::from_millis(1500));
    assert!(w.os.signals.is_empty(), "kept alive by WATCHDOG=1");
    w.later(Duration::from_millis(600));
    assert!(w.kinds("dog").contains(&proto::EventKind::WatchdogTimeout));
    assert_eq!(w.os.signals, [("dog".to_string(), libc::SIGTERM)]);
}

#[test]
fn oom_is_reported_as_oom() {
    let mut w = World::new(&[("hog", "")]);
    w.boot();
    w.os.oom.push("hog".into());
    w.exit("hog", Exit::Signal(9));
    assert!(w.kinds("hog").contains(&proto::EventKind::Oom));
    assert_eq!(w.svc("hog").last_exit.as_deref(), Some("oom"));
}

#[test]
fn reload_applies_only_the_difference() {
    let mut w = World::new(&[("same", ""), ("edit", ""), ("gone", "")]);
    w.boot();
    let (same, edit) = (w.pid("same"), w.pid("edit"));
    let files = [("same", ""), ("edit", "env = { X = \"1\" }"), ("new", "")].iter().map(|(n, e)| (n.to_string(), spec(e))).collect();
    let r = w.sup.reload(files, vec!["bad.toml: key `x`".into()], &mut w.os, w.now, &mut w.notes);
    assert_eq!((r.added, r.removed, r.changed, r.unchanged), (vec!["new".to_string()], vec!["gone".to_string()], vec!["edit".to_string()], vec!["same".to_string()]));
    assert_eq!(r.errors.len(), 1);
    assert_eq!(w.pid("same"), same, "unchanged services keep running untouched");
    assert!(w.running("new"));
    w.exit("edit", Exit::Signal(15));
    w.exit("gone", Exit::Signal(15));
    assert_ne!(w.pid("edit"), edit);
    assert_eq!(w.svc("edit").spec.env["X"], "1");
    assert_eq!(w.sup.drop_removed(&["gone".into()]).len(), 1);
    assert!(w.sup.index_of("gone").is_none());
}
