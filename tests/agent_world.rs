//! A hosted ghostos with the agent: ghost-init, `ghost agent` as one of its services with the
//! shipped constitution and Sentinel rules, operated through the real ghostctl. Shared by the
//! agent's tests (tests/agent.rs) and its benchmark (benches/agent.rs).

use crate::{bin, eventually, status, wait_for_control, workspace_root, Ghost, Isolation, Root};
use ghost_proto::State;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const REDIS: &str = "/usr/bin/redis-server";
pub const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// Whether redis is installed; a test that needs it says so when it is not (tests/install-deps
/// installs it, so CI always has it).
pub fn have_redis() -> bool {
    let ok = Path::new(REDIS).exists() && Path::new(REDIS_CLI).exists();
    if !ok {
        eprintln!("skipping: {REDIS} or {REDIS_CLI} is missing (Debian package redis-server; tests/install-deps installs it)");
    }
    ok
}

/// A hosted system: ghost-init, the agent as one of its services, the shipped constitution and
/// Sentinel rules (`edit` may change the rules' text), and fast sampling for tests.
pub struct World {
    pub root: Root,
    pub ghost: Ghost,
}

impl World {
    /// With fast sampling (100 ms) for tests, and no disks watched: the host's disks are not
    /// the test's (a CI machine whose disk is over 90% full would have free-disk-space act in
    /// every test).
    pub fn start(services: &[(&str, String)], edit: impl Fn(String) -> String, isolation: Isolation) -> World {
        Self::start_configured(services, edit, isolation, &Self::fast_config(&[]))
    }

    /// The tests' agent.toml: fast sampling (100 ms) watching `disks` (system paths).
    pub fn fast_config(disks: &[&str]) -> String {
        format!("[heartbeat]\nmin_interval_ms = 10\n[metrics]\ninterval_ms = 100\ndisks = {disks:?}\n[config]\nstable_ms = 300\n")
    }

    /// With `agent_toml` as /etc/ghost/agent.toml ("" for the shipped defaults).
    pub fn start_configured(services: &[(&str, String)], edit: impl Fn(String) -> String, isolation: Isolation, agent_toml: &str) -> World {
        Self::start_in(Root::new(), services, edit, isolation, agent_toml, |_| {})
    }

    /// In `root` (which may hold a ghost.toml already); `prepare` runs on the root's path
    /// before anything starts.
    pub fn start_in(root: Root, services: &[(&str, String)], edit: impl Fn(String) -> String, isolation: Isolation, agent_toml: &str, prepare: impl FnOnce(&Path)) -> World {
        prepare(root.path());
        let etc = root.path().join("etc/ghost");
        let shipped = workspace_root().join("initramfs/etc/ghost");
        std::fs::copy(shipped.join("constitution.toml"), etc.join("constitution.toml")).unwrap();
        std::fs::create_dir_all(etc.join("rules")).unwrap();
        let rules = std::fs::read_to_string(shipped.join("rules/sentinel.toml")).unwrap();
        std::fs::write(etc.join("rules/sentinel.toml"), edit(rules)).unwrap();
        std::fs::write(etc.join("agent.toml"), agent_toml).unwrap();
        root.service(
            "agent",
            &format!("exec = [\"{}\", \"agent\"]\nready = \"notify\"\nrestart = \"always\"\nenv = {{ RUST_BACKTRACE = \"1\" }}\n", bin("ghost").display()),
        );
        for (name, toml) in services {
            root.service(name, toml);
        }
        let ghost = Ghost::start(&root, isolation, "");
        wait_for_control(&root, Duration::from_secs(20));
        let w = World { root, ghost };
        let up = eventually(Duration::from_secs(60), || w.ctl(&["agent", "--json"]).0 == 0);
        assert!(up, "the agent never answered: {:?}\nconsole:\n{}", w.ctl(&["agent", "--json"]), w.ghost.console.text());
        w
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.root.path().join(p.trim_start_matches('/'))
    }

    /// ghostctl with this root: (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin("ghostctl")).args(args).env("GHOST_ROOT", self.root.path()).env_remove("GHOST_SOCKET").env_remove("GHOST_AGENT_SOCKET").stdin(Stdio::null()).output().expect("run ghostctl");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let (code, out, err) = self.ctl(&all);
        assert_eq!(code, 0, "ghostctl {args:?}: {err}{out}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("ghostctl {args:?} --json: {e}: {out}"))
    }

    /// Waits for a decision of `rule` whose outcome says it repaired (verified), or that it was
    /// done (a playbook with nothing to verify); returns the decision.
    pub fn repaired_by(&self, rule: &str, within: Duration) -> Value {
        let mut found = Value::Null;
        let ok = eventually(within, || {
            let decisions = self.ctl_json(&["decisions", "-n", "50"]);
            found = decisions.as_array().unwrap().iter().find(|d| d["rule"] == rule && d["outcome"].as_str().is_some_and(|o| o.contains(" repaired ") || o.contains(" done for "))).cloned().unwrap_or(Value::Null);
            !found.is_null()
        });
        assert!(
            ok,
            "no verified repair by {rule} within {within:?}\ndecisions: {}\nagent: {}\nconsole:\n{}",
            self.ctl(&["decisions"]).1,
            self.ctl(&["agent"]).1,
            self.ghost.console.text()
        );
        found
    }

    /// The audit records (all files, in order).
    pub fn audit_records(&self) -> Vec<Value> {
        let dir = self.path("/var/lib/ghost/audit");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "jsonl")).collect();
        files.sort();
        files.iter().flat_map(|f| std::fs::read_to_string(f).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<Value>>()).collect()
    }

    /// Audit records of tool `tool` by `actor` with outcome status `status`.
    pub fn audited(&self, tool: &str, actor: &str, status: &str) -> usize {
        self.audit_records().iter().filter(|r| r.to_string().contains(&format!("\"tool\":\"{tool}\"")) && r.to_string().contains(&format!("\"actor\":\"{actor}\"")) && r.to_string().contains(&format!("\"status\":\"{status}\""))).count()
    }

    pub fn audit_intact(&self) {
        let v = self.ctl_json(&["audit", "verify"]);
        assert_eq!(v["intact"], true, "{v}");
    }

    pub fn running_pid(&self, name: &str) -> i32 {
        let mut pid = 0;
        assert!(eventually(Duration::from_secs(20), || {
            let s = status(&self.root, name);
            pid = s.pid.unwrap_or(0);
            s.state == State::Running
        }), "{name} is not running: {:?}", status(&self.root, name));
        pid
    }
}

pub fn redis_service(port: u16, restart: &str) -> String {
    format!("exec = [\"{REDIS}\", \"--port\", \"{port}\", \"--bind\", \"127.0.0.1\", \"--save\", \"\", \"--appendonly\", \"no\"]\nrestart = \"{restart}\"\nrestart_delay_ms = 100\nready = \"tcp:{port}\"\n")
}

pub fn redis_answers(port: u16) -> bool {
    Command::new(REDIS_CLI).args(["-p", &port.to_string(), "ping"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG").unwrap_or(false)
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid of this test's tree.
    unsafe { libc::kill(pid, sig) };
}

