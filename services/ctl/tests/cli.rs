//! The ghostctl binary without a ghost-init: import-unit's outputs and exit codes, `--help`,
//! and the agent's commands against a fake agent socket that records each request and answers
//! with a canned reply. (Tests against a running ghost-init are in the workspace's tests/ctl.rs;
//! the real agent, `ghost agent`, is tested end to end there too.)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn ghostctl(args: &[&str]) -> std::process::Output {
    ghostctl_env(args, &[])
}

/// ghostctl with none of the socket variables of the calling environment, only `env`.
fn ghostctl_env(args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ghostctl"));
    c.args(args).env_remove("GHOST_SOCKET").env_remove("GHOST_ROOT").env_remove("GHOST_AGENT_SOCKET").env("NO_COLOR", "1");
    c.envs(env.iter().copied()).output().expect("run ghostctl")
}

const REDIS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/redis-server.service");

#[test]
fn import_unit_writes_toml_to_stdout_and_the_not_carried_list_to_stderr() {
    let o = ghostctl(&["import-unit", REDIS]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8(o.stdout).unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(out.contains("\nexec = [\"/usr/bin/redis-server\", \"/etc/redis/redis.conf\", \"--supervised\", \"systemd\", \"--daemonize\", \"no\"]\n"), "{out}");
    assert!(out.contains("\nready = \"notify\"\n") && out.contains("\nuser = \"redis\"\n"), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("not carried")), "the report is not mixed into the file");
    assert!(err.lines().any(|l| l.starts_with("not carried over: [Service] PIDFile=/run/redis/redis-server.pid (")), "{err}");
    // The same list is in the file as comments.
    assert!(out.contains("#   [Service] PIDFile=/run/redis/redis-server.pid ("), "{out}");
}

#[test]
fn import_unit_with_output_writes_the_file_and_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("redis-server.toml");
    let o = ghostctl(&["import-unit", REDIS, "-o", target.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    let toml = std::fs::read_to_string(&target).unwrap();
    assert!(toml.starts_with("# redis-server: imported from "), "{toml}");

    let o = ghostctl(&["import-unit", "/nonexistent/x.service"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/x.service"));
    let o = ghostctl(&["import-unit", REDIS, "-o", "/nonexistent/dir/x.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot write /nonexistent/dir/x.toml"));
}

#[test]
fn help_documents_the_exit_codes_and_usage_errors_exit_2() {
    let o = ghostctl(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8(o.stdout).unwrap();
    for line in ["0  ok", "1  ghost-init or the agent answered with an error", "2  usage error", "3  cannot reach the control socket", "4  status NAME only", "5  tool call", "6  tool call", "$GHOST_AGENT_SOCKET"] {
        assert!(help.contains(line), "{line} not in --help:\n{help}");
    }
    assert_eq!(ghostctl(&["logs", "-n", "x"]).status.code(), Some(2));
    assert_eq!(ghostctl(&["frobnicate"]).status.code(), Some(2));
}

/// A stand-in for the agent's socket at `path`: takes one connection, records its request line
/// and answers `reply`. Gives up after 10 s without a client (then the request is empty).
fn fake_agent(path: &Path, reply: &str) -> JoinHandle<String> {
    let listener = UnixListener::bind(path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let reply = format!("{reply}\n");
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return String::new(),
            }
        };
        stream.set_nonblocking(false).unwrap();
        let mut line = String::new();
        BufReader::new(stream.try_clone().unwrap()).read_line(&mut line).unwrap();
        let _ = (&stream).write_all(reply.as_bytes());
        line.trim_end().to_string()
    })
}

struct Asked {
    request: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `ghostctl ARGS --agent-socket S` against a fake agent answering `reply`; the control
/// socket's variable points nowhere, so that only the agent's socket can answer.
fn ask(reply: &str, args: &[&str]) -> Asked {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let agent = fake_agent(&socket, reply);
    let mut all = args.to_vec();
    all.extend(["--agent-socket", socket.to_str().unwrap()]);
    let o = ghostctl_env(&all, &[("GHOST_SOCKET", &dir.path().join("no-control.sock"))]);
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    Asked { request: agent.join().unwrap(), code: o.status.code(), stdout: text(o.stdout), stderr: text(o.stderr) }
}

#[test]
fn agent_status_lists_every_figure_in_the_agents_order() {
    let reply = r#"{"ok":true,"result":{"beats":42,"interval_ms":1000,"share_without_model":0.97,"memory":"sqlite","uptime_s":65.5,"a_new_figure":"x"}}"#;
    let a = ask(reply, &["agent"]);
    assert_eq!((a.code, a.request.as_str()), (Some(0), r#"{"cmd":"status"}"#), "{}", a.stderr);
    assert_eq!(a.stdout, "beats:               42\ninterval_ms:         1000\nshare_without_model: 0.97\nmemory:              sqlite\nuptime_s:            1m05s\na_new_figure:        x\n");
    let a = ask(reply, &["--json", "agent"]);
    assert_eq!(a.code, Some(0));
    assert_eq!(a.stdout, "{\"beats\":42,\"interval_ms\":1000,\"share_without_model\":0.97,\"memory\":\"sqlite\",\"uptime_s\":65.5,\"a_new_figure\":\"x\"}\n");
}

#[test]
fn tool_call_sends_the_call_and_its_exit_code_says_what_came_of_it() {
    let ran = r#"{"ok":true,"result":{"decision":"allow","reason":"reads are free","rule":"fs-read","audit_seq":7,"result":{"tool":"fs.read","ok":true,"output":"ghost\n","duration_ms":1}}}"#;
    let a = ask(ran, &["tool", "call", "fs.read", "--args", r#"{"path": "/etc/hostname"}"#, "--why", "look at it"]);
    assert_eq!(a.request, r#"{"cmd":"tool-call","tool":"fs.read","args":{"path":"/etc/hostname"},"why":"look at it","dry_run":false}"#);
    assert_eq!((a.code, a.stdout.as_str()), (Some(0), "allow (fs-read): reads are free\nghost\n"), "{}", a.stderr);

    let dry = r#"{"ok":true,"result":{"decision":"allow","reason":"r","rule":"fs-read","audit_seq":8,"dry_run":true}}"#;
    let a = ask(dry, &["tool", "call", "fs.read", "--why", "w", "--dry-run"]);
    assert_eq!(a.request, r#"{"cmd":"tool-call","tool":"fs.read","args":{},"why":"w","dry_run":true}"#);
    assert_eq!((a.code, a.stdout.as_str()), (Some(0), "allow (fs-read): r\ndry run: nothing ran\n"));

    let failed = r#"{"ok":true,"result":{"decision":"allow","reason":"r","rule":"fs-read","audit_seq":9,"result":{"tool":"fs.read","ok":false,"error":"not-found","message":"/nope: no such file","duration_ms":0}}}"#;
    let a = ask(failed, &["tool", "call", "fs.read", "--args", r#"{"path":"/nope"}"#, "--why", "w"]);
    assert_eq!((a.code, a.stdout.as_str()), (Some(1), "allow (fs-read): r\nfs.read failed: not-found: /nope: no such file\n"));

    let denied = r#"{"ok":true,"result":{"decision":"deny","reason":"no shell for the agent","rule":"no-shell","audit_seq":10}}"#;
    let a = ask(denied, &["tool", "call", "shell.run", "--args", r#"{"cmd":"rm -rf /"}"#, "--why", "w"]);
    assert_eq!((a.code, a.stdout.as_str()), (Some(5), "deny (no-shell): no shell for the agent\n"));
    // --json prints the object and keeps the exit code.
    let a = ask(denied, &["--json", "tool", "call", "shell.run", "--why", "w"]);
    assert_eq!(a.code, Some(5));
    let v: serde_json::Value = serde_json::from_str(&a.stdout).unwrap();
    assert_eq!((v["decision"].as_str(), v["audit_seq"].as_u64()), (Some("deny"), Some(10)));

    let asks = r#"{"ok":true,"result":{"decision":"ask","reason":"writes need a person","rule":"fs-write","audit_seq":11,"request_id":"r-3"}}"#;
    let a = ask(asks, &["tool", "call", "fs.write", "--args", r#"{"path":"/etc/motd","content":"hi"}"#, "--why", "greet"]);
    assert_eq!((a.code, a.stdout.as_str()), (Some(6), "ask (fs-write): writes need a person\nwaiting for approval: ghostctl approve r-3\n"));
}

#[test]
fn bad_tool_args_are_a_usage_error_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let o = ghostctl_env(&["tool", "call", "fs.read", "--args", "{path: /x}", "--why", "w"], &[("GHOST_AGENT_SOCKET", &dir.path().join("none.sock"))]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--args") && err.contains("not JSON") && !err.contains("cannot connect"), "{err}");
}

#[test]
fn approvals_list_approve_and_deny() {
    let waiting = r#"{"ok":true,"result":[{"id":"r-3","call":{"tool":"fs.write","args":{"path":"/etc/motd"},"why":"greet"},"decision":{"verdict":"ask","reason":"writes","rule":"fs-write"},"requested":1700000000000,"expires_in_ms":90000,"resolution":null}]}"#;
    let a = ask(waiting, &["pending"]);
    assert_eq!((a.code, a.request.as_str()), (Some(0), r#"{"cmd":"pending"}"#));
    assert_eq!(a.stdout, "ID   TOOL      ARGS                  WHY    EXPIRES\nr-3  fs.write  {\"path\":\"/etc/motd\"}  greet  in 1m30s\n");
    let a = ask(r#"{"ok":true,"result":[]}"#, &["pending"]);
    assert_eq!(a.stdout, "no calls wait for approval\n");
    let a = ask(r#"{"ok":true,"result":[]}"#, &["pending", "--json"]);
    assert_eq!(a.stdout, "[]\n");

    let ran = r#"{"ok":true,"result":{"decision":"allow","reason":"approved by the operator","rule":"fs-write","audit_seq":12,"result":{"tool":"fs.write","ok":true,"output":{"bytes":2},"duration_ms":3}}}"#;
    let a = ask(ran, &["approve", "r-3"]);
    assert_eq!((a.code, a.request.as_str()), (Some(0), r#"{"cmd":"approve","id":"r-3"}"#));
    assert_eq!(a.stdout, "allow (fs-write): approved by the operator\n{\n  \"bytes\": 2\n}\n");

    let a = ask(r#"{"ok":false,"error":"no pending request `r-4`"}"#, &["approve", "r-4"]);
    assert_eq!((a.code, a.stdout.as_str(), a.stderr.as_str()), (Some(1), "", "ghostctl: agent: no pending request `r-4`\n"));

    let a = ask(r#"{"ok":true}"#, &["deny", "r-5", "--reason", "not today"]);
    assert_eq!(a.request, r#"{"cmd":"deny","id":"r-5","reason":"not today"}"#);
    assert_eq!((a.code, a.stdout.as_str()), (Some(0), "denied r-5\n"));
    let a = ask(r#"{"ok":true}"#, &["deny", "r-5", "--json"]);
    assert_eq!((a.code, a.stdout.as_str()), (Some(0), "{\"ok\":true}\n"));
}

#[test]
fn audit_verify_exits_1_and_names_each_record_when_the_trail_is_broken() {
    let a = ask(r#"{"ok":true,"result":{"intact":true,"records":12,"problems":[]}}"#, &["audit", "verify"]);
    assert_eq!((a.code, a.request.as_str(), a.stdout.as_str()), (Some(0), r#"{"cmd":"audit-verify"}"#, "audit trail intact: 12 records\n"));
    let broken = r#"{"ok":true,"result":{"intact":false,"records":12,"problems":[{"seq":4,"problem":"signature does not verify"},{"seq":null,"problem":"records 9 to 11 are missing"}]}}"#;
    let a = ask(broken, &["audit", "verify"]);
    assert_eq!((a.code, a.stdout.as_str()), (Some(1), "record 4: signature does not verify\naudit trail: records 9 to 11 are missing\n"));
    let a = ask(broken, &["audit", "verify", "--json"]);
    assert_eq!(a.code, Some(1));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&a.stdout).unwrap()["problems"][0]["seq"], 4);
}

#[test]
fn memory_decisions_why_and_goals_send_their_questions_and_print_tables() {
    let hits = r#"{"ok":true,"result":[{"id":"e-1","score":0.8765,"kind":"observation","source":"heartbeat","text":"disk /var at 95%","time_ms":1700000000000}]}"#;
    let a = ask(hits, &["memory", "search", "disk", "full", "--limit", "2"]);
    assert_eq!(a.request, r#"{"cmd":"memory-search","query":"disk full","limit":2}"#);
    let lines: Vec<&str> = a.stdout.lines().collect();
    assert_eq!(lines[0], "SCORE  WHEN                     KIND         TEXT");
    assert!(lines[1].starts_with(" 0.88  2023-11-1") && lines[1].ends_with("  observation  disk /var at 95%"), "{}", a.stdout);

    let decisions = r#"{"ok":true,"result":[{"id":"d-9","time_ms":1700000000000,"text":"restart redis","layer":"rule","rule":"restart-crashed","playbook":"restart","outcome":"ok"}]}"#;
    let a = ask(decisions, &["decisions", "-n", "5"]);
    assert_eq!(a.request, r#"{"cmd":"decisions","limit":5}"#);
    assert!(a.stdout.starts_with("ID   WHEN") && a.stdout.contains("  rule   restart-crashed  restart   ok       restart redis\n"), "{}", a.stdout);

    let chain = r#"{"ok":true,"result":[{"id":"e-1","time_ms":1700000000000,"kind":"observation","source":"heartbeat","text":"redis exited"},{"id":"d-9","time_ms":1700000000100,"kind":"decision","source":"rule","text":"restart redis"}]}"#;
    let a = ask(chain, &["why", "d-9"]);
    assert_eq!(a.request, r#"{"cmd":"why","id":"d-9"}"#);
    let lines: Vec<&str> = a.stdout.lines().collect();
    assert!(lines[0].starts_with("e-1 ") && lines[0].ends_with(" observation (heartbeat): redis exited"), "{}", a.stdout);
    assert!(lines[1].starts_with("└ d-9 ") && lines[1].ends_with(" decision (rule): restart redis"), "{}", a.stdout);

    let goals = r#"{"ok":true,"result":[{"id":"g-1","text":"keep redis up","priority":10,"status":"active","reason":"","check":"service:redis:running","parent":null,"attempts":0,"updated_ms":1700000000000}]}"#;
    let a = ask(goals, &["goals"]);
    assert_eq!(a.request, r#"{"cmd":"goals"}"#);
    assert!(a.stdout.starts_with("ID   PRI  STATUS  TRIES  CHECK                  PARENT  UPDATED") && a.stdout.contains("g-1   10  active      0  service:redis:running  -       2023-"), "{}", a.stdout);
    let a = ask(goals, &["goals", "--json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&a.stdout).unwrap()[0]["id"], "g-1");
}

#[test]
fn goals_and_messages_are_acknowledged() {
    let a = ask(r#"{"ok":true,"result":{"id":"g-2"}}"#, &["goal", "add", "keep disk below 90%", "--priority", "5", "--check", "disk:/:below:90"]);
    assert_eq!(a.request, r#"{"cmd":"goal-add","text":"keep disk below 90%","priority":5,"check":"disk:/:below:90"}"#);
    assert_eq!((a.code, a.stdout.as_str()), (Some(0), "g-2\n"));
    let a = ask(r#"{"ok":true,"result":{"id":"g-2"}}"#, &["--json", "goal", "add", "x"]);
    assert_eq!(a.stdout, "{\"id\":\"g-2\"}\n");
    let a = ask(r#"{"ok":true}"#, &["goal", "drop", "g-2", "--reason", "done by hand"]);
    assert_eq!((a.request.as_str(), a.stdout.as_str()), (r#"{"cmd":"goal-drop","id":"g-2","reason":"done by hand"}"#, "dropped goal g-2\n"));
    let a = ask(r#"{"ok":false,"error":"no goal `g-7`"}"#, &["goal", "drop", "g-7"]);
    assert_eq!((a.code, a.stderr.as_str()), (Some(1), "ghostctl: agent: no goal `g-7`\n"));
    let a = ask(r#"{"ok":true}"#, &["tell", "redis", "is", "being", "upgraded"]);
    assert_eq!((a.code, a.request.as_str(), a.stdout.as_str()), (Some(0), r#"{"cmd":"message","text":"redis is being upgraded"}"#, ""));
}

#[test]
fn the_agent_socket_comes_from_the_flag_the_variable_or_ghost_root_and_a_missing_one_exits_3() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("run/ghost")).unwrap();
    let agent = fake_agent(&root.path().join("run/ghost/agent.sock"), r#"{"ok":true,"result":[]}"#);
    let o = ghostctl_env(&["goals"], &[("GHOST_ROOT", root.path())]);
    assert_eq!((o.status.code(), agent.join().unwrap().as_str()), (Some(0), r#"{"cmd":"goals"}"#));

    let other = root.path().join("elsewhere.sock");
    let agent = fake_agent(&other, r#"{"ok":true,"result":[]}"#);
    let o = ghostctl_env(&["goals"], &[("GHOST_ROOT", root.path()), ("GHOST_AGENT_SOCKET", &other)]);
    assert_eq!((o.status.code(), agent.join().unwrap().as_str()), (Some(0), r#"{"cmd":"goals"}"#));

    let missing: PathBuf = root.path().join("gone/agent.sock");
    let o = ghostctl_env(&["agent"], &[("GHOST_AGENT_SOCKET", &missing)]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(missing.to_str().unwrap()) && err.contains("from GHOST_AGENT_SOCKET") && err.contains("`ghost agent`"), "{err}");
}
