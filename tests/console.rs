//! `ghost console` end to end (issue 7, the operator TUI): a hosted ghost-init with the agent
//! (tests/agent_world.rs), the real `ghost console` on a tmux terminal of 100×30, driven by
//! keys and read back with `tmux capture-pane`. What the operator does at the console is
//! checked where it lands: the restarted service has a new pid in ghost-init, the approved
//! call ran through the agent's queue and is in its audit trail.

use ghost_tests::agent_world::World;
use ghost_tests::{bin, eventually, status, Isolation};
use ghost_proto::State;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A tmux server of our own (`-L`), one session running `ghost console`.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// None (with the reason printed) when tmux is not installed.
    fn start(w: &World, width: u16, height: u16) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().map(|o| !o.status.success()).unwrap_or(true) {
            eprintln!("skipping: tmux is not installed (Debian package tmux; tests/install-deps installs it)");
            return None;
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = format!("ghost-console-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let t = Tmux { socket };
        let root = w.root.path();
        let control = root.join("run/ghost/control.sock");
        // When the console ends, say how and keep the pane (cat waits on the terminal).
        let script = "\"$0\" console; echo \"ghost console exited with status $?\"; exec cat";
        let out = t
            .tmux(&["-f", "/dev/null", "new-session", "-d", "-s", "console", "-x", &width.to_string(), "-y", &height.to_string()])
            .args(["-e", &format!("GHOST_ROOT={}", root.display()), "-e", &format!("GHOST_SOCKET={}", control.display())])
            .args(["sh", "-c", script])
            .arg(bin("ghost"))
            .env("GHOST_ROOT", root)
            .env("GHOST_SOCKET", &control)
            .env_remove("GHOST_AGENT_SOCKET")
            .env_remove("NO_COLOR")
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        Some(t)
    }

    fn tmux(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L").arg(&self.socket).args(args).stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.tmux(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "console"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "console"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Polls the screen until `cond` holds; panics with the last screen after `timeout`.
    fn wait(&self, what: &str, timeout: Duration, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "the console did not show {what} within {timeout:?}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for(&self, text: &str, timeout: Duration) -> String {
        self.wait(&format!("{text:?}"), timeout, |s| s.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]).output();
    }
}

fn sleep_bin() -> &'static str {
    if Path::new("/usr/bin/sleep").exists() {
        "/usr/bin/sleep"
    } else {
        "/bin/sleep"
    }
}

#[test]
fn the_operator_restarts_a_service_and_approves_a_pending_call_from_the_console() {
    let sleeper = format!("description = \"a sleeper\"\nexec = [\"/bin/sh\", \"-c\", \"echo sleeper says hello; exec {} 100000\"]\nrestart = \"always\"\n", sleep_bin());
    let w = World::start(&[("sleeper", sleeper)], |r| r, Isolation::Subreaper);
    let Some(tmux) = Tmux::start(&w, 100, 30) else { return };
    let long = Duration::from_secs(30);

    // The overview comes up with the agent's figures.
    tmux.wait_for("without a model", long);
    // Services: both, running, from ghost-init.
    tmux.keys(&["2"]);
    let s = tmux.wait("both services running", long, |s| s.lines().filter(|l| (l.contains("agent") || l.contains("sleeper")) && l.contains("running")).count() == 2);
    assert!(s.contains("RESTARTS") && s.contains("HEALTH"), "{s}");
    let before = w.running_pid("sleeper");

    // Select the sleeper (sorted: agent, sleeper), restart it, confirm.
    tmux.keys(&["Down"]);
    tmux.wait_for("> sleeper", long);
    tmux.keys(&["r"]);
    tmux.wait_for("Restart sleeper?", long);
    tmux.keys(&["y"]);
    tmux.wait_for("restart sleeper: done", long);
    // ghostctl sees a new process (exit 0: running), as the operator at a shell would.
    let pid_by_ghostctl = || -> Option<i64> {
        let (code, out, _) = w.ctl(&["status", "sleeper", "--json"]);
        (code == 0).then_some(())?;
        serde_json::from_str::<Value>(out.trim()).ok()?[0]["pid"].as_i64()
    };
    let restarted = eventually(long, || pid_by_ghostctl().is_some_and(|p| p != i64::from(before)));
    assert!(restarted, "ghost-init did not restart the sleeper: {:?}\nscreen:\n{}", status(&w.root, "sleeper"), tmux.screen());
    let after = w.running_pid("sleeper");
    assert_eq!(status(&w.root, "sleeper").state, State::Running);
    // The console shows the new pid and the restart in the details pane.
    tmux.wait(&format!("the new pid {after}"), long, |s| s.lines().any(|l| l.contains("> sleeper") && l.contains(&after.to_string())));

    // A risky call waits for an operator; the console shows it and approves it.
    let mut victim = Command::new(sleep_bin()).arg("1000").spawn().unwrap();
    let args = format!("{{\"pid\":{},\"signal\":\"TERM\"}}", victim.id());
    let (code, out, err) = w.ctl(&["tool", "call", "process.kill", "--args", &args, "--why", "console approval test", "--json"]);
    assert_eq!(code, 6, "the call waits for approval: {out}{err}");
    let id = serde_json::from_str::<Value>(out.trim()).unwrap()["request_id"].as_str().unwrap().to_string();
    tmux.keys(&["4"]);
    let s = tmux.wait_for(&id, long);
    assert!(s.contains("process.kill") && s.contains("console approval test"), "{s}");
    tmux.keys(&["a"]);
    tmux.wait_for(&format!("Approve {id} (process.kill)?"), long);
    assert!(victim.try_wait().unwrap().is_none(), "nothing runs before the answer");
    tmux.keys(&["y"]);
    tmux.wait_for(&format!("approve {id}: allow"), long);
    let killed = eventually(long, || victim.try_wait().unwrap().is_some());
    assert!(killed, "the approved call did not run; screen:\n{}", tmux.screen());
    // Through the agent's queue: no longer pending there, and the approval is in the audit trail.
    let pending = w.ctl_json(&["pending"]);
    assert!(!pending.as_array().unwrap().iter().any(|r| r["id"] == id.as_str() && r["resolution"].is_null()), "{pending}");
    let approved = w.audit_records().iter().any(|r| {
        let r = r.to_string();
        r.contains(&id) && r.contains("approved by operator")
    });
    assert!(approved, "no audit record of the approval of {id}");
    w.audit_intact();
    // Gone from the console's list too.
    tmux.wait_for("no calls wait for approval", long);

    // Logs: `l` on the services screen follows the sleeper; both runs said hello.
    tmux.keys(&["2"]);
    tmux.wait_for("> sleeper", long);
    tmux.keys(&["l"]);
    tmux.wait("the sleeper's two hellos", long, |s| s.contains("Logs: sleeper") && s.matches("| sleeper says hello").count() == 2);
    // Filtered to nothing, then all services again.
    tmux.keys(&["f"]);
    tmux.keys(&["-l", "no such words"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for("no line matches the filter \"no such words\"", long);

    // q ends the console cleanly.
    tmux.keys(&["q"]);
    tmux.wait_for("ghost console exited with status 0", long);
}

#[test]
fn the_console_says_reconnecting_while_the_control_socket_is_away_and_comes_back_by_itself() {
    let w = World::start(&[], |r| r, Isolation::Subreaper);
    // The control socket is away (as while ghost-init restarts) when the console starts.
    let sock = w.path("/run/ghost/control.sock");
    let aside = w.path("/run/ghost/control.sock.aside");
    std::fs::rename(&sock, &aside).unwrap();
    let Some(tmux) = Tmux::start(&w, 80, 24) else {
        std::fs::rename(&aside, &sock).unwrap();
        return;
    };
    let long = Duration::from_secs(30);
    tmux.keys(&["2"]);
    let s = tmux.wait_for("ghost-init: reconnecting…", long);
    assert!(s.contains("no such socket"), "the reason is shown:\n{s}");
    // It comes back: the console finds it without being touched.
    std::fs::rename(&aside, &sock).unwrap();
    let s = tmux.wait("the services, reconnected", long, |s| s.lines().any(|l| l.contains("agent") && l.contains("running")));
    assert!(!s.contains("reconnecting"), "{s}");
}
