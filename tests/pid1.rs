//! ghost-init as a real PID 1 (of a PID namespace) and as a subreaper: reaping, shutdown,
//! bad input, panics and the rescue console, with real processes.

use ghost_tests::{eventually, pid_namespaces_available, Ghost, Isolation, Root};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(20);

/// Namespace tests need root; without it they say why and do nothing (CI runs as root).
fn namespaces() -> bool {
    match pid_namespaces_available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIP: PID namespace test not run: {why}");
            false
        }
    }
}

/// A service whose subshell starts `n` processes (`sleep 1001`) and exits, orphaning them to
/// ghost-init, while the service itself goes on (`sleep 1000`). Like double-forking daemons,
/// the orphans leave the service's session (setsid), so stopping the service does not end them.
fn orphan_maker(n: usize) -> String {
    let spawns = "setsid sleep 1001 & ".repeat(n);
    format!("exec = [\"/bin/sh\", \"-c\", \"({spawns}) ; exec sleep 1000\"]\n")
}

#[test]
fn orphans_that_exit_leave_no_zombies() {
    if !namespaces() {
        return;
    }
    let root = Root::new();
    root.service("orphans", &orphan_maker(5)).service("steady", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let mut g = Ghost::start(&root, Isolation::PidNamespace, "");
    g.console.wait_for("boot complete", BOOT);
    // The orphans are re-parented to ghost-init, PID 1 of the namespace.
    let orphans = || g.processes().into_iter().filter(|p| p.cmdline == "sleep 1001").collect::<Vec<_>>();
    assert!(eventually(Duration::from_secs(10), || orphans().len() == 5 && orphans().iter().all(|p| p.ppid == g.pid)),
        "expected 5 orphans parented to ghost-init (pid {}), saw {:?}", g.pid, orphans());
    for p in orphans() {
        // SAFETY: kill(2) on a process of our namespace.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
    }
    // Gone entirely: not even a zombie left in the namespace.
    let settled = eventually(Duration::from_secs(5), || g.processes().iter().all(|p| p.cmdline != "sleep 1001" && p.state != 'Z'));
    assert!(settled, "zombies or orphans remain: {:?}", g.processes());
    assert!(g.processes().iter().any(|p| p.pid == g.pid), "ghost-init itself must still run");
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).expect("exit").success());
}

#[test]
fn sigterm_as_namespace_pid1_ends_everything_and_exits_zero_within_the_grace_period() {
    if !namespaces() {
        return;
    }
    let root = Root::new();
    root.ghost_toml("stop_timeout_s = 1\n")
        .service("polite", "exec = [\"/bin/sleep\", \"1000\"]\n")
        .service("stubborn", "exec = [\"/bin/sh\", \"-c\", \"trap '' TERM; sleep 1000\"]\nstop_timeout_s = 1\n")
        .service("orphans", &orphan_maker(3));
    let mut g = Ghost::start(&root, Isolation::PidNamespace, "");
    g.console.wait_for("boot complete", BOOT);
    assert!(eventually(Duration::from_secs(10), || g.processes().iter().filter(|p| p.cmdline == "sleep 1001").count() == 3));
    let t = Instant::now();
    g.signal(libc::SIGTERM);
    let status = g.wait_exit(Duration::from_secs(15)).expect("ghost-init did not exit after SIGTERM");
    let took = t.elapsed();
    assert!(status.success(), "exit status {status:?}\n{}", g.console.text());
    // Grace: 1 s stop timeout + 2 s for stragglers, and slack for a loaded 2-core machine.
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    let last = g.console.wait_for("stopped cleanly", Duration::from_secs(1));
    // polite and the orphan maker stopped; stubborn killed after 1 s; the 3 orphans killed.
    assert!(last.contains("(2 services stopped, "), "{last}");
    let killed: usize = last.rsplit(", ").next().unwrap().trim_end_matches(" killed)").parse().unwrap();
    assert!(killed >= 4, "stubborn and the 3 orphans should be counted as killed: {last}");
}

#[test]
fn sigterm_as_subreaper_leaves_no_descendant_alive() {
    let root = Root::new();
    root.service("polite", "exec = [\"/bin/sleep\", \"1000\"]\n")
        .service("stubborn", "exec = [\"/bin/sh\", \"-c\", \"trap '' TERM; sleep 1000\"]\nstop_timeout_s = 1\n")
        .service("orphans", &orphan_maker(3));
    let mut g = Ghost::start(&root, Isolation::Subreaper, "");
    g.console.wait_for("boot complete", BOOT);
    assert!(eventually(Duration::from_secs(10), || g.processes().iter().filter(|p| p.cmdline == "sleep 1001").count() == 3));
    let tree: Vec<i32> = g.processes().iter().map(|p| p.pid).filter(|&p| p != g.pid).collect();
    assert!(tree.len() >= 6, "services and orphans should be running: {:?}", g.processes());
    g.signal(libc::SIGTERM);
    let status = g.wait_exit(Duration::from_secs(15)).expect("exit");
    assert!(status.success(), "{status:?}\n{}", g.console.text());
    let alive: Vec<_> = ghost_tests::process_table().into_iter().filter(|p| tree.contains(&p.pid) && p.state != 'Z').collect();
    assert!(alive.is_empty(), "left alive after ghost-init exited: {alive:?}");
    g.console.wait_for("stopped cleanly", Duration::from_secs(1));
}

#[test]
fn a_missing_service_binary_is_reported_and_survived() {
    let root = Root::new();
    root.service("ghostly", "exec = [\"/nonexistent/bin/ghostly\", \"--serve\"]\nrestart_delay_ms = 50\n")
        .service("real", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let mut g = Ghost::start(&root, Isolation::Subreaper, "");
    let line = g.console.wait_for("service ghostly: failed to start", BOOT);
    assert!(line.contains("/nonexistent/bin/ghostly") && line.contains("No such file"), "{line}");
    g.console.wait_for("services failed: 1 of 2 services failed to start: ghostly", BOOT);
    g.console.wait_for("boot complete", BOOT);
    // It keeps being retried with a growing delay (50 ms doubling, ±10% jitter), and the rest
    // of the system is unaffected.
    g.console.wait_for("crash loop: 5 failures in a row", Duration::from_secs(10));
    let delays = || -> Vec<u64> {
        g.console.text().lines()
            .filter_map(|l| l.strip_prefix("ghost-init: service ghostly: restarting in ")?.strip_suffix(" ms")?.parse().ok())
            .collect()
    };
    assert!(eventually(Duration::from_secs(10), || delays().len() >= 5), "{:?}", delays());
    let delays = delays();
    assert_eq!(delays[0], 0, "the first retry is immediate");
    for w in delays[1..5].windows(2) {
        assert!(w[1] as f64 >= w[0] as f64 * 2.0 * 0.9 / 1.1, "delays grow: {delays:?}");
    }
    assert!(eventually(Duration::from_secs(5), || g.processes().iter().any(|p| p.cmdline == "/bin/sleep 1000")), "{:?}", g.processes());
    assert!(g.child.try_wait().unwrap().is_none(), "ghost-init must still be running");
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn a_panic_in_a_boot_step_is_survived() {
    if !namespaces() {
        return;
    }
    for step in ["config", "state", "services"] {
        let root = Root::new();
        root.service("real", "exec = [\"/bin/sleep\", \"1000\"]\n");
        let mut g = Ghost::start(&root, Isolation::PidNamespace, &format!("ghost.debug_panic={step}"));
        let failed = g.console.wait_for(&format!("{step} failed: panicked"), BOOT);
        assert!(failed.contains("ghost.debug_panic"), "{failed}");
        g.console.wait_for("PANIC at", BOOT);
        g.console.wait_for("boot complete", BOOT);
        if step != "services" {
            assert!(eventually(Duration::from_secs(5), || g.processes().iter().any(|p| p.cmdline == "/bin/sleep 1000")));
        }
        // PID 1 still answers signals after the panic.
        g.signal(libc::SIGTERM);
        let st = g.wait_exit(Duration::from_secs(10)).expect("exit after panic");
        assert!(st.success(), "{st:?}: {}", g.console.text());
    }
}

#[test]
fn bad_configuration_is_named_and_boot_goes_on() {
    let root = Root::new();
    root.ghost_toml("hostname = \"ok\"\nmodules = 7\nfancy = true\n")
        .service("typo", "exec = [\"/bin/sleep\", \"1000\"]\nrestrat = \"always\"\n")
        .service("broken", "exec = [\"/bin/sleep\"\n")
        .service("fine", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let mut g = Ghost::start(&root, Isolation::Subreaper, "");
    g.console.wait_for("boot complete", BOOT);
    let text = g.console.text();
    assert!(text.contains("ghost.toml: key `modules`"), "{text}");
    assert!(text.contains("ghost.toml: unknown key `fancy`"), "{text}");
    assert!(text.contains("typo.toml") && text.contains("restrat") && text.contains("service typo left out"), "{text}");
    assert!(text.contains("broken.toml") && text.contains("service broken left out"), "{text}");
    // Services are forked before `boot complete`; their exec may still be under way.
    let sleepers = || g.processes().iter().filter(|p| p.cmdline == "/bin/sleep 1000").count();
    assert!(eventually(Duration::from_secs(5), || sleepers() == 1), "only `fine` runs: {:?}", g.processes());
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn poweroff_after_ready_stops_by_itself() {
    let root = Root::new();
    root.service("a", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let mut g = Ghost::start(&root, Isolation::Subreaper, "ghost.poweroff_after_ready=1");
    let st = g.wait_exit(Duration::from_secs(15)).expect("exit");
    assert!(st.success());
    let text = g.console.text();
    let complete = text.find("boot complete").expect("boot complete");
    let end = text.find("stopped cleanly (1 services stopped, 0 killed)").unwrap_or_else(|| panic!("{text}"));
    assert!(complete < end);
    // First boot was recorded on the state directory.
    assert!(root.path().join("var/lib/ghost/.ghost-first-boot-done").exists());
    let mut again = Ghost::start(&root, Isolation::Subreaper, "ghost.poweroff_after_ready=1");
    again.wait_exit(Duration::from_secs(15)).expect("second exit");
    assert!(!again.console.text().contains("first boot"), "{}", again.console.text());
    assert!(text.contains("ghost-init: first boot"));
}

#[test]
fn emergency_opens_the_rescue_prompt_and_continue_finishes_boot() {
    let root = Root::new();
    root.service("a", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let mut g = Ghost::start_with_stdin(&root, Isolation::Subreaper, "ghost.emergency=1", Some("help\nlog\nbogus\ncontinue\n"));
    g.console.wait_for("ghost.emergency=1: stopping after the mounts", BOOT);
    g.console.wait_for("boot complete", BOOT);
    // stdout (the prompt's answers) is a separate stream from the console lines: await it.
    g.stdout.wait_for("commands: help, log", BOOT);
    g.stdout.wait_for("ghost-init: state ok", BOOT); // the `log` command shows the boot log
    g.stdout.wait_for("unknown command `bogus`", BOOT);
    // Services start only after `continue`.
    let text = g.console.text();
    assert!(text.find("continuing boot").unwrap() < text.find("services ok").unwrap(), "{text}");
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn a_critical_service_that_cannot_start_opens_the_rescue_console() {
    let root = Root::new();
    root.service("vital", "exec = [\"/nonexistent/vital\"]\ncritical = true\nrestart_delay_ms = 1000\n");
    let mut g = Ghost::start_with_stdin(&root, Isolation::Subreaper, "", Some("poweroff\n"));
    let line = g.console.wait_for("opening the rescue console", BOOT);
    assert!(line.contains("critical service vital: exec /nonexistent/vital: No such file"), "{line}");
    let st = g.wait_exit(Duration::from_secs(15)).expect("poweroff from the rescue prompt");
    assert!(st.success());
    assert!(!g.console.text().contains("boot complete"), "boot must not claim completion: {}", g.console.text());
}

/// `ghostctl ARGS` against a hosted ghost-init's socket: (exit code, stdout, stderr).
fn ghostctl(root: &Root, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(ghost_tests::bin("ghostctl"))
        .arg("--socket")
        .arg(root.path().join("run/ghost/control.sock"))
        .args(args)
        .output()
        .expect("run ghostctl");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Descriptors PID 1 (host pid `pid`) still holds that only a re-exec needed: the handover's
/// memfd, or a program file (the previous program kept for a fall-back).
fn reexec_leftovers(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).map(|p| p.display().to_string()).filter(|t| t.contains("ghost-init-handover") || t.ends_with("/ghost-init") || t.ends_with("ghost-init (deleted)")).collect())
        .unwrap_or_default()
}

fn init_info(root: &Root) -> ghost_proto::InitInfo {
    ghost_tests::control(root, "{\"cmd\":\"init\"}").init.expect("init info")
}

/// Services in each state a re-execution must carry: running (with a health probe), waiting
/// out a long restart delay, and stopped by the operator.
fn reexec_world() -> Root {
    let root = Root::new();
    root.service("steady", "exec = [\"/bin/sh\", \"-c\", \"echo hello from $$; exec sleep 1000\"]\nhealth = { exec = [\"/bin/true\"], interval_s = 1 }\n")
        .service("flaky", "exec = [\"/bin/sh\", \"-c\", \"echo flaky run; exit 3\"]\nrestart_delay_ms = 1500\nrestart_max_delay_ms = 1500\n")
        .service("parked", "exec = [\"/bin/sleep\", \"1000\"]\n");
    root
}

#[test]
fn reexec_as_namespace_pid1_keeps_every_service_process_and_its_state() {
    if !namespaces() {
        return;
    }
    let root = reexec_world();
    let mut g = Ghost::start(&root, Isolation::PidNamespace, "");
    g.console.wait_for("boot complete", BOOT);
    let (code, _, err) = ghostctl(&root, &["stop", "parked"]);
    assert_eq!(code, 0, "{err}");
    assert!(eventually(Duration::from_secs(10), || {
        let s = ghost_tests::status(&root, "steady");
        s.health == Some(ghost_proto::Health::Healthy) && ghost_tests::status(&root, "flaky").restarts >= 1 && ghost_tests::status(&root, "parked").state == ghost_proto::State::Stopped
    }), "steady healthy, flaky restarted once, parked stopped");
    let before = ghost_tests::control(&root, "{\"cmd\":\"status\"}").services.unwrap();
    let steady = before.iter().find(|s| s.name == "steady").unwrap().clone();
    let flaky_restarts = before.iter().find(|s| s.name == "flaky").unwrap().restarts;
    let info0 = init_info(&root);
    assert_eq!((info0.pid, info0.reexecs), (1, 0));

    let (code, out, err) = ghostctl(&root, &["reexec"]);
    assert_eq!(code, 0, "ghostctl reexec: {out}{err}\n{}", g.console.text());
    assert!(out.contains("re-execs  1") && out.contains("service(s) kept"), "{out}");
    g.console.wait_for("re-exec: ", Duration::from_secs(5));
    let info = init_info(&root);
    assert_eq!((info.pid, info.reexecs), (1, 1), "{info:?}");
    let report = info.last_reexec.expect("a report of the re-exec");
    assert_eq!((report.services, report.fell_back.as_deref()), (3, None), "{report:?}");
    assert!(info.up_ms >= info0.up_ms, "uptime goes on across the exec: {} then {}", info0.up_ms, info.up_ms);

    // The same processes under the same PID 1, in the same states.
    let after = ghost_tests::control(&root, "{\"cmd\":\"status\"}").services.unwrap();
    let steady_now = after.iter().find(|s| s.name == "steady").unwrap();
    assert_eq!((steady_now.pid, steady_now.restarts, steady_now.state), (steady.pid, steady.restarts, steady.state), "{steady_now:?}");
    assert!(steady_now.uptime_s.unwrap() >= steady.uptime_s.unwrap(), "uptime kept: {steady_now:?} vs {steady:?}");
    assert_eq!(steady_now.health, Some(ghost_proto::Health::Healthy));
    assert_eq!(after.iter().find(|s| s.name == "parked").unwrap().state, ghost_proto::State::Stopped, "an operator's stop is kept");
    assert!(g.processes().iter().any(|p| p.pid == g.pid), "ghost-init runs as the same process");
    assert_eq!(reexec_leftovers(g.pid), Vec::<String>::new(), "descriptors of the re-exec left open in PID 1");
    let logs = ghost_tests::control(&root, "{\"cmd\":\"logs\",\"name\":\"steady\"}").logs.unwrap();
    assert!(logs.iter().any(|l| l.text.starts_with("hello from")), "the lines before the exec are kept: {logs:?}");

    // Its timers go on: flaky's restart delay runs out and it runs again.
    assert!(eventually(Duration::from_secs(10), || ghost_tests::status(&root, "flaky").restarts > flaky_restarts), "flaky was not restarted after the re-exec");
    // Its children are still its own: a killed service is reaped and started again, and what
    // the new process writes reaches the same log.
    let old = steady.pid.unwrap();
    let (code, _, err) = ghostctl(&root, &["restart", "steady"]);
    assert_eq!(code, 0, "{err}");
    assert!(eventually(Duration::from_secs(10), || {
        let s = ghost_tests::status(&root, "steady");
        s.state == ghost_proto::State::Running && s.pid.is_some_and(|p| p != old)
    }));
    let new = ghost_tests::status(&root, "steady").pid.unwrap();
    assert!(eventually(Duration::from_secs(5), || ghost_tests::control(&root, "{\"cmd\":\"logs\",\"name\":\"steady\"}").logs.unwrap().iter().any(|l| l.text == format!("hello from {new}"))),
        "the new process's output did not reach the log after the re-exec");
    let events = ghost_tests::control(&root, "{\"cmd\":\"logs\",\"name\":\"flaky\"}").logs.unwrap();
    assert!(events.iter().filter(|l| l.text == "flaky run").count() as u32 > flaky_restarts, "{events:?}");

    // And it still shuts down cleanly.
    g.signal(libc::SIGTERM);
    let status = g.wait_exit(Duration::from_secs(15)).expect("ghost-init did not exit after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", g.console.text());
}

#[test]
fn a_program_that_refuses_is_not_run_and_one_that_fails_its_checks_falls_back() {
    if !namespaces() {
        return;
    }
    let root = reexec_world();
    let mut g = Ghost::start(&root, Isolation::PidNamespace, "");
    g.console.wait_for("boot complete", BOOT);
    let pids = || {
        let mut v: Vec<(String, Option<i32>)> = ghost_tests::control(&root, "{\"cmd\":\"status\"}").services.unwrap().into_iter().filter(|s| s.name != "flaky").map(|s| (s.name, s.pid)).collect();
        v.sort();
        v
    };
    assert!(eventually(Duration::from_secs(10), || ghost_tests::status(&root, "steady").state == ghost_proto::State::Running));
    let before = pids();
    let original = init_info(&root).binary;

    // Refused before anything is handed over: nothing changes.
    let (code, _, err) = ghostctl(&root, &["reexec", "/bin/false"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/bin/false refused the handover (exit code 1)"), "{err}");
    let (code, _, err) = ghostctl(&root, &["reexec", "ghost-init"]);
    assert_eq!(code, 1);
    assert!(err.contains("must be an absolute path"), "{err}");
    let (code, _, err) = ghostctl(&root, &["reexec", "/nonexistent/ghost-init"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/ghost-init: No such file"), "{err}");
    assert_eq!(init_info(&root).reexecs, 0);
    assert_eq!(pids(), before);

    // A program that says yes to the check, then fails its checks once it is PID 1.
    let wrapper = root.path().join("bad-init");
    std::fs::write(&wrapper, format!("#!/bin/sh\nGHOST_INIT_FAIL_RESUME=1 exec {} \"$@\"\n", ghost_tests::bin("ghost-init").display())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, out, err) = ghostctl(&root, &["reexec", wrapper.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("failed its checks") && err.contains("GHOST_INIT_FAIL_RESUME=1 is set"), "{err}");
    let info = init_info(&root);
    assert_eq!((info.pid, info.reexecs, info.binary.as_str()), (1, 1, original.as_str()), "the previous program runs again: {info:?}");
    assert!(info.last_reexec.unwrap().fell_back.is_some());
    assert_eq!(pids(), before, "every service kept its process through the fall-back");
    assert_eq!(reexec_leftovers(g.pid), Vec::<String>::new(), "descriptors of the re-exec left open in PID 1 after the fall-back");
    g.console.wait_for("going back to the previous one", Duration::from_secs(5));

    // And a good re-exec still works after it.
    let (code, out, err) = ghostctl(&root, &["reexec"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(init_info(&root).reexecs, 2);
    assert_eq!(pids(), before);
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(15)).expect("exit").success());
}
