//! ghostctl against a real hosted ghost-init: status (table, JSON, exit codes), start/stop,
//! restart, logs (tail and follow), events, a missing socket, and import-unit's output being
//! accepted and started by ghost-init.

use ghost_proto::{Event, LogLine, ServiceStatus, State};
use ghost_tests::{eventually, Ghost, Isolation, Root};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(20);

/// The ghostctl binary: from GHOST_BIN_DIR when it is there, else the host debug build that
/// `cargo test --workspace` makes (ghostctl has integration tests of its own, so cargo builds it).
fn ghostctl_bin() -> PathBuf {
    let from_dir = std::env::var_os("GHOST_BIN_DIR").map(|d| PathBuf::from(d).join("ghostctl"));
    let host = ghost_tests::workspace_root().join("target/debug/ghostctl");
    match from_dir.filter(|p| p.is_file()) {
        Some(p) => p,
        None if host.is_file() => host,
        None => ghost_tests::bin("ghostctl"),
    }
}

/// ghostctl pointed at `root` the way a user of a hosted root would: GHOST_ROOT.
fn ctl_cmd(root: &Root, args: &[&str]) -> Command {
    let mut c = Command::new(ghostctl_bin());
    c.args(args).env("GHOST_ROOT", root.path()).env_remove("GHOST_SOCKET").env_remove("NO_COLOR");
    c
}

fn ctl(root: &Root, args: &[&str]) -> Output {
    ctl_cmd(root, args).stdin(Stdio::null()).output().expect("run ghostctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// ghost-init on `root`, booted, with its control socket accepting connections.
fn boot(root: &Root) -> Ghost {
    let g = Ghost::start(root, Isolation::Subreaper, "");
    g.console.wait_for("boot complete", BOOT);
    let sock = root.path().join("run/ghost/control.sock");
    assert!(
        eventually(Duration::from_secs(10), || std::os::unix::net::UnixStream::connect(&sock).is_ok()),
        "no control socket at {} after boot; console:\n{}",
        sock.display(),
        g.console.text()
    );
    g
}

fn statuses(root: &Root) -> Vec<ServiceStatus> {
    let o = ctl(root, &["status", "--json"]);
    assert_eq!(code(&o), 0, "status --json: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("status --json is not a services array ({e}): {}", text(&o.stdout)))
}

fn status_of(root: &Root, name: &str) -> ServiceStatus {
    statuses(root).into_iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no `{name}` in status"))
}

fn running_pid(root: &Root, name: &str) -> Option<i32> {
    let s = status_of(root, name);
    (s.state == State::Running).then_some(s.pid).flatten()
}

/// A root with one service, `web`, booted and running.
fn booted_with_web() -> (Root, Ghost) {
    let root = Root::new();
    root.service("web", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let g = boot(&root);
    assert!(eventually(Duration::from_secs(10), || running_pid(&root, "web").is_some()), "web does not run: {}", g.console.text());
    (root, g)
}

/// Waits for a ghostctl child to end on its own.
fn wait_child(c: &mut std::process::Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        assert!(t.elapsed() < timeout, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop_ghost(mut g: Ghost) {
    g.signal(libc::SIGTERM);
    let st = g.wait_exit(Duration::from_secs(15)).expect("ghost-init did not exit after SIGTERM");
    assert!(st.success(), "{st:?}\n{}", g.console.text());
}

#[test]
fn status_lists_services_with_their_states_as_a_table_and_as_json() {
    let root = Root::new();
    root.service("web", "description = \"Web server\"\nexec = [\"/bin/sleep\", \"1000\"]\n")
        .service("idle", "exec = [\"/bin/sleep\", \"1001\"]\n");
    let g = boot(&root);
    assert!(eventually(Duration::from_secs(10), || running_pid(&root, "web").is_some() && running_pid(&root, "idle").is_some()));
    let o = ctl(&root, &["stop", "idle"]);
    assert_eq!(code(&o), 0, "stop: {}", text(&o.stderr));
    assert!(eventually(Duration::from_secs(10), || status_of(&root, "idle").state == State::Stopped));

    let o = ctl(&root, &["status"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let table = text(&o.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("STATE") && lines[0].contains("PID") && lines[0].contains("UPTIME"), "{table}");
    assert!(!table.contains('\x1b'), "no colour when stdout is not a terminal: {table:?}");
    let web_pid = running_pid(&root, "web").unwrap();
    let web = lines.iter().find(|l| l.starts_with("web ")).unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = web.split_whitespace().collect();
    assert_eq!((cols[1], cols[2]), ("running", web_pid.to_string().as_str()), "{table}");
    let idle = lines.iter().find(|l| l.starts_with("idle ")).unwrap_or_else(|| panic!("{table}"));
    assert_eq!(idle.split_whitespace().nth(1), Some("stopped"), "{table}");
    // Columns line up: STATE starts at the same place in every row.
    let at = lines[0].find("STATE").unwrap();
    assert!(lines.iter().skip(1).all(|l| l[at..].starts_with(|c: char| c.is_ascii_lowercase())), "{table}");

    let all = statuses(&root);
    assert_eq!(all.iter().find(|s| s.name == "web").map(|s| (&*s.description, s.state)), Some(("Web server", State::Running)));
    assert!(all.iter().any(|s| s.name == "idle" && s.state == State::Stopped && s.pid.is_none()), "{all:?}");
    stop_ghost(g);
}

#[test]
fn status_of_one_service_exits_0_running_4_not_running_1_unknown() {
    let root = Root::new();
    root.service("web", "exec = [\"/bin/sleep\", \"1000\"]\n").service("idle", "exec = [\"/bin/sleep\", \"1001\"]\n");
    let g = boot(&root);
    assert!(eventually(Duration::from_secs(10), || running_pid(&root, "web").is_some()));
    let o = ctl(&root, &["status", "web"]);
    assert_eq!(code(&o), 0, "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).contains("running"), "{}", text(&o.stdout));

    assert_eq!(code(&ctl(&root, &["stop", "idle"])), 0);
    let o = ctl(&root, &["status", "idle"]);
    assert_eq!(code(&o), 4, "a stopped service: {}{}", text(&o.stdout), text(&o.stderr));
    assert!(o.stderr.is_empty(), "exit 4 says it with the code alone: {}", text(&o.stderr));
    let o = ctl(&root, &["status", "idle", "--json"]);
    assert_eq!(code(&o), 4);
    let one: Vec<ServiceStatus> = serde_json::from_slice(&o.stdout).expect("status NAME --json is an array");
    assert_eq!((one.len(), one[0].name.as_str()), (1, "idle"));

    let o = ctl(&root, &["status", "nosuch"]);
    assert_eq!(code(&o), 1, "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("nosuch"), "the error names the service: {}", text(&o.stderr));
    let o = ctl(&root, &["restart", "nosuch"]);
    assert_eq!(code(&o), 1, "{}", text(&o.stderr));

    assert_eq!(code(&ctl(&root, &["start", "idle"])), 0);
    assert!(eventually(Duration::from_secs(10), || code(&ctl(&root, &["status", "idle"])) == 0), "started again");
    stop_ghost(g);
}

#[test]
fn restart_gives_the_service_a_new_pid() {
    let (root, g) = booted_with_web();
    let old = running_pid(&root, "web").unwrap();
    let o = ctl(&root, &["restart", "web"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(
        eventually(Duration::from_secs(10), || running_pid(&root, "web").is_some_and(|p| p != old)),
        "web kept pid {old}: {:?}",
        status_of(&root, "web")
    );
    let new = running_pid(&root, "web").unwrap();
    assert!(g.processes().iter().any(|p| p.pid == new && p.cmdline == "/bin/sleep 1000"), "{:?}", g.processes());
    assert!(eventually(Duration::from_secs(5), || !g.processes().iter().any(|p| p.pid == old && p.state != 'Z')), "the old process is gone");
    stop_ghost(g);
}

#[test]
fn logs_show_the_last_lines_a_service_wrote() {
    let root = Root::new();
    // stderr first and a pause: stdout and stderr are separate pipes, so only time orders them.
    root.service("talker", "exec = [\"/bin/sh\", \"-c\", \"echo oops >&2; sleep 0.3; for i in 1 2 3 4 5 6 7; do echo line-$i; done; exec sleep 1000\"]\n");
    let g = boot(&root);
    let tail = || text(&ctl(&root, &["logs", "talker", "-n", "5"]).stdout);
    assert!(eventually(Duration::from_secs(10), || tail().contains("line-7")), "{}", tail());
    assert!(text(&ctl(&root, &["logs", "talker"]).stdout).contains("talker | oops"), "stderr is in the logs too");
    let o = ctl(&root, &["logs", "talker", "-n", "5"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let texts: Vec<&str> = lines.iter().map(|l| l.split_once(" talker | ").unwrap_or_else(|| panic!("not `TIME SERVICE | text`: {l}")).1).collect();
    assert_eq!(texts, ["line-3", "line-4", "line-5", "line-6", "line-7"], "the last 5, oldest first");
    // The time is HH:MM:SS.mmm.
    let time = lines[0].split(' ').next().unwrap();
    assert!(time.len() == 12 && time.as_bytes()[2] == b':' && time.as_bytes()[8] == b'.', "{time}");

    let o = ctl(&root, &["logs", "talker", "-n", "5", "--json"]);
    let parsed: Vec<LogLine> = text(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(parsed.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["line-3", "line-4", "line-5", "line-6", "line-7"]);
    assert!(parsed.iter().all(|l| l.service == "talker"));

    let o = ctl(&root, &["logs", "nosuch"]);
    assert_eq!(code(&o), 1, "{}", text(&o.stderr));
    stop_ghost(g);
}

/// A `logs -f` whose reader goes away ends at once, even while the service is silent.
#[test]
fn logs_follow_ends_when_stdout_is_closed() {
    let root = Root::new();
    root.service("quiet", "exec = [\"/bin/sh\", \"-c\", \"echo hello-quiet; exec sleep 1000\"]\n");
    let g = boot(&root);
    assert!(eventually(Duration::from_secs(10), || text(&ctl(&root, &["logs", "quiet"]).stdout).contains("hello-quiet")));
    let mut child = ctl_cmd(&root, &["logs", "quiet", "-f"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains("quiet | hello-quiet"), "{first}");
    drop(reader);
    let st = wait_child(&mut child, Duration::from_secs(5), "ghostctl logs -f still runs after its reader left");
    assert!(st.success(), "a closed stdout is a clean end: {st:?}");
    stop_ghost(g);
}

#[test]
fn events_stream_state_changes_and_end_when_ghost_init_stops() {
    let (root, g) = booted_with_web();
    let spawn = |json: bool| {
        let args: &[&str] = if json { &["events", "--json"] } else { &["events"] };
        let mut c = ctl_cmd(&root, args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let out = c.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (c, rx)
    };
    let (mut human, human_lines) = spawn(false);
    let (mut json, json_lines) = spawn(true);
    // Both streams are open once a request on another connection is answered after them.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(code(&ctl(&root, &["restart", "web"])), 0);

    let wait_line = |rx: &std::sync::mpsc::Receiver<String>, pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                let hit = pred(&l);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
        }
        panic!("no matching event line; saw {seen:?}");
    };
    let seen = wait_line(&human_lines, &|l| l.contains(" web "));
    assert!(seen.iter().all(|l| !l.starts_with('{')), "human lines, not JSON: {seen:?}");
    let seen = wait_line(&json_lines, &|l| serde_json::from_str::<Event>(l).is_ok_and(|e| e.service.as_deref() == Some("web")));
    for l in &seen {
        serde_json::from_str::<Event>(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}"));
    }

    // ghost-init going away closes the streams; the clients end by themselves, successfully.
    stop_ghost(g);
    for (name, c) in [("events", &mut human), ("events --json", &mut json)] {
        let st = wait_child(c, Duration::from_secs(10), &format!("ghostctl {name} still runs after ghost-init exited"));
        assert!(st.success(), "ghostctl {name}: {st:?}");
    }
}

#[test]
fn an_unreachable_socket_exits_3_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere/control.sock");
    let o = Command::new(ghostctl_bin()).args(["--socket", missing.to_str().unwrap(), "status"]).output().unwrap();
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains(missing.to_str().unwrap()) && err.contains("no such socket"), "{err}");
    assert!(err.contains("GHOST_SOCKET") && err.contains("--socket"), "the message says how to pick another socket: {err}");

    // GHOST_ROOT without a running ghost-init: the path under the root is named.
    let root = Root::new();
    let o = ctl(&root, &["logs", "-f"]);
    assert_eq!(code(&o), 3);
    assert!(text(&o.stderr).contains(&format!("{}/run/ghost/control.sock", root.path().display())), "{}", text(&o.stderr));

    // GHOST_SOCKET wins over GHOST_ROOT, and --socket over both.
    let o = ctl_cmd(&root, &["status"]).env("GHOST_SOCKET", &missing).output().unwrap();
    assert!(text(&o.stderr).contains("from GHOST_SOCKET"), "{}", text(&o.stderr));

    // A usage error is 2, not 3.
    let o = ctl(&root, &["restart"]);
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));
}

/// Writes a systemd unit, imports it into the root's services with `-o`, and returns the stderr.
fn import_into(root: &Root, unit: &Path) -> String {
    let name = unit.file_stem().unwrap().to_str().unwrap();
    let out = root.path().join(format!("etc/ghost/services/{name}.toml"));
    let o = Command::new(ghostctl_bin()).arg("import-unit").arg(unit).arg("-o").arg(&out).output().unwrap();
    assert_eq!(code(&o), 0, "import-unit {}: {}", unit.display(), text(&o.stderr));
    assert!(o.stdout.is_empty(), "with -o nothing goes to stdout");
    text(&o.stderr)
}

/// A problem line of ghost-init about one service file (`services: <file>: key ...`).
fn file_problems(g: &Ghost, file: &str) -> Vec<String> {
    g.console.text().lines().filter(|l| l.contains("services: ") && l.contains(file)).map(str::to_string).collect()
}

#[test]
fn an_imported_unit_is_accepted_and_started_by_ghost_init() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("hello.service");
    std::fs::write(
        &unit,
        r#"[Unit]
Description=Imported hello
After=network.target

[Service]
Type=simple
Environment="GREETING=hello from systemd"
ExecStart=/bin/sh -c 'echo "$GREETING in $PWD"; exec sleep 1002'
WorkingDirectory=/tmp
Restart=on-failure
RestartSec=200ms
TimeoutStopSec=3
KillSignal=SIGTERM
LimitNOFILE=4096
PIDFile=/run/hello.pid

[Install]
WantedBy=multi-user.target
"#,
    )
    .unwrap();
    let root = Root::new();
    let report = import_into(&root, &unit);
    assert!(report.contains("not carried over: [Service] PIDFile=/run/hello.pid"), "{report}");
    assert!(report.contains("not carried over: [Install] WantedBy=multi-user.target"), "{report}");
    let file = std::fs::read_to_string(root.path().join("etc/ghost/services/hello.toml")).unwrap();
    assert!(file.starts_with("# hello: imported from") && file.contains("#   [Service] PIDFile=/run/hello.pid"), "{file}");

    let g = boot(&root);
    assert!(file_problems(&g, "hello.toml").is_empty(), "{:?}", file_problems(&g, "hello.toml"));
    assert!(
        eventually(Duration::from_secs(10), || g.processes().iter().any(|p| p.cmdline == "sleep 1002")),
        "the imported service does not run: {:?}\n{}",
        g.processes(),
        g.console.text()
    );
    assert!(
        eventually(Duration::from_secs(10), || text(&ctl(&root, &["logs", "hello"]).stdout).contains("hello | hello from systemd in /tmp")),
        "env and working_dir carried over: {}",
        text(&ctl(&root, &["logs", "hello"]).stdout)
    );
    stop_ghost(g);
}

/// Debian's redis-server and nginx units import into files ghost-init's parser accepts. The
/// program is swapped for a sleep so that the test starts no real daemon on the host's ports;
/// every other key stays as imported.
#[test]
fn debian_units_import_into_files_ghost_init_accepts() {
    let fixtures = ghost_tests::workspace_root().join("services/ctl/tests/fixtures");
    let root = Root::new();
    for (unit, noted) in [("redis-server.service", "[Service] PIDFile=/run/redis/redis-server.pid"), ("nginx.service", "[Service] Type=forking")] {
        let report = import_into(&root, &fixtures.join(unit));
        assert!(report.contains(&format!("not carried over: {noted}")), "{report}");
        let name = unit.trim_end_matches(".service");
        let path = root.path().join(format!("etc/ghost/services/{name}.toml"));
        let toml = std::fs::read_to_string(&path).unwrap();
        let exec_line = toml.lines().find(|l| l.starts_with("exec = ")).unwrap_or_else(|| panic!("{toml}")).to_string();
        std::fs::write(&path, toml.replace(&exec_line, "exec = [\"/bin/sleep\", \"1003\"]")).unwrap();
    }
    let g = boot(&root);
    for file in ["redis-server.toml", "nginx.toml"] {
        assert!(file_problems(&g, file).is_empty(), "{:?}\n{}", file_problems(&g, file), g.console.text());
    }
    let names: Vec<String> = statuses(&root).into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"redis-server".to_string()) && names.contains(&"nginx".to_string()), "{names:?}");
    stop_ghost(g);
}
