use super::*;
use serde_json::json;
use std::net::TcpListener;
use std::time::Duration;

fn exec() -> Executor {
    Executor::new(Arc::new(Registry::builtin()), ExecConfig::default())
}

fn ok(r: ToolResult) -> Value {
    match r.outcome {
        Ok(v) => v,
        Err(e) => panic!("{} failed: {e}", r.tool),
    }
}

/// The keywords `ghost_model::constrain::Grammar::from_schema` compiles or ignores.
const DECODABLE: &[&str] = &[
    "type",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "properties",
    "required",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "additionalProperties",
    "unevaluatedProperties",
    "contentMediaType",
    "contentEncoding",
    "strict",
];

fn decodable(schema: &Value, at: &str) {
    let obj = schema.as_object().unwrap_or_else(|| panic!("{at}: not an object"));
    for (k, v) in obj {
        assert!(DECODABLE.contains(&k.as_str()), "{at}: `{k}` is not in the decoding subset");
        match k.as_str() {
            "properties" => {
                for (name, sub) in v.as_object().unwrap() {
                    decodable(sub, &format!("{at}.{name}"));
                }
            }
            "items" => decodable(v, &format!("{at}[]")),
            "additionalProperties" if v.is_object() => decodable(v, &format!("{at}.*")),
            _ => {}
        }
    }
}

#[test]
fn builtin_registry_has_every_tool_with_decodable_input_schemas() {
    let r = Registry::builtin();
    let names: Vec<&str> = r.specs().map(|s| s.name.as_str()).collect();
    let mut want = BUILTIN_TOOLS.to_vec();
    want.sort();
    assert_eq!(names, want);
    for s in r.specs() {
        decodable(&s.input_schema, &s.name);
        assert_eq!(s.input_schema["type"], "object", "{}", s.name);
        assert_eq!(s.input_schema["additionalProperties"], false, "{}", s.name);
        assert!(!s.description.is_empty());
    }
    let risk = |n: &str| r.get(n).unwrap().risk;
    assert_eq!(risk("shell.exec"), Risk::Critical);
    assert_eq!(risk("fs.read"), Risk::Low);
    assert!(!r.get("process.kill").unwrap().reversible);
    assert_eq!(serde_json::to_value(r.get("fs.write").unwrap().permission).unwrap(), "fs.write");
    let judged = |n: &str| {
        let s = r.get(n).unwrap();
        (serde_json::to_value(s.permission).unwrap(), s.risk, s.reversible)
    };
    assert_eq!(judged("service.rollback"), (json!("service.control"), Risk::Medium, true));
    assert_eq!(judged("disk.cleanup"), (json!("fs.write"), Risk::Low, false));
    assert_eq!(judged("net.free_port"), (json!("process.signal"), Risk::High, false));
    assert_eq!(r.get("service.rollback").unwrap().input_schema, r.get("service.restart").unwrap().input_schema);
}

#[test]
fn bad_arguments_are_refused_with_the_field_named() {
    let r = Registry::builtin();
    let cases: &[(&str, Value, &str)] = &[
        ("fs.read", json!({"path": 3}), "args.path: expected a string, got an integer"),
        ("fs.read", json!({}), "args.path: required field is missing"),
        (
            "fs.read",
            json!({"path": "/x", "colour": 1}),
            "args.colour: unknown field; known fields: max_bytes, offset, path",
        ),
        ("fs.read", json!({"path": "etc/passwd"}), "args.path: expected an absolute path"),
        ("fs.read", json!({"path": "/x", "max_bytes": 0}), "args.max_bytes: must be at least 1"),
        ("fs.read", json!("/etc/passwd"), "args: expected an object, got a string"),
        (
            "fs.write",
            json!({"path": "/tmp/x", "content": "", "append": "yes"}),
            "args.append: expected a boolean, got a string",
        ),
        ("process.kill", json!({"pid": 1}), "args.pid: must be at least 2"),
        (
            "process.kill",
            json!({"pid": 5, "signal": "BOOM"}),
            "args.signal: expected one of TERM, KILL, INT, HUP, QUIT, USR1, USR2, STOP, CONT",
        ),
        ("shell.exec", json!({"argv": ["ls", 3]}), "args.argv[1]: expected a string, got an integer"),
        ("shell.exec", json!({}), "args.command: required field is missing (give `command` or `argv`)"),
        ("shell.exec", json!({"command": "ls", "argv": ["ls"]}), "args.argv: give `command` or `argv`, not both"),
        ("shell.exec", json!({"command": "ls", "env": {"A": 1}}), "args.env.A: expected a string, got an integer"),
        ("shell.exec", json!({"command": "ls", "timeout_s": 0}), "args.timeout_s: must be at least 1"),
        ("shell.exec", json!({"command": "ls", "cwd": "tmp"}), "args.cwd: expected an absolute path"),
        ("net.check", json!({"kind": "http", "target": "https://x"}), "args.target: expected an http:// URL"),
        ("net.check", json!({"kind": "tcp", "target": "localhost"}), "args.target: expected HOST:PORT"),
        ("net.check", json!({"kind": "udp", "target": "x:1"}), "args.kind: expected one of tcp, http"),
        ("log.tail", json!({"path": "/x", "service": "y"}), "args.service: give `path` or `service`, not both"),
        ("service.restart", json!({"name": "../etc"}), "args.name: expected a service name"),
        ("service.rollback", json!({"name": "../etc"}), "args.name: expected a service name"),
        ("service.rollback", json!({}), "args.name: required field is missing"),
        ("disk.cleanup", json!({"path": "tmp"}), "args.path: expected an absolute path"),
        ("disk.cleanup", json!({"path": "/tmp", "older_than_s": -1}), "args.older_than_s: must be at least 0"),
        ("disk.cleanup", json!({"path": "/tmp", "dry_run": 1}), "args.dry_run: expected a boolean, got an integer"),
        ("disk.cleanup", json!({"path": "/tmp", "recursive": true}), "args.recursive: unknown field"),
        ("net.free_port", json!({"port": 0}), "args.port: must be at least 1"),
        ("net.free_port", json!({"port": 65536}), "args.port: must be at most 65535"),
        ("net.free_port", json!({"port": "80"}), "args.port: expected an integer, got a string"),
        ("net.free_port", json!({"port": 80, "grace_ms": 30001}), "args.grace_ms: must be at most 30000"),
        ("memory.search", json!({"query": ""}), "args.query: must be at least 1 characters long"),
        ("nope.nope", json!({}), "tool: unknown tool `nope.nope`"),
    ];
    for (tool, args, want) in cases {
        let e = r.validate(tool, args).expect_err(&format!("{tool} {args} should be refused"));
        assert!(e.to_string().starts_with(want), "{tool} {args}:\n  got  {e}\n  want {want}");
    }
    r.validate("fs.read", &json!({"path": "/etc/hostname"})).unwrap();
    r.validate("shell.exec", &json!({"argv": ["ls", "-l"], "env": {"LANG": "C"}})).unwrap();
    // The executor refuses them the same way without running anything.
    let res = exec().call("fs.read", &json!({"path": 3}));
    assert!(matches!(&res.outcome, Err(ToolError::InvalidArgs(e)) if e.field() == "args.path"), "{res:?}");
}

#[test]
fn fs_tools_write_read_list_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let x = exec();
    let p = dir.path().join("a.txt");
    let ps = p.to_str().unwrap();
    let w = ok(x.call("fs.write", &json!({"path": ps, "content": "hello\n", "mode": 0o600})));
    assert_eq!(
        (w["created"].as_bool(), w["bytes_written"].as_u64(), w["previous_sha256"].is_null()),
        (Some(true), Some(6), true)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    let w = ok(x.call("fs.write", &json!({"path": ps, "content": "more\n", "append": true})));
    assert_eq!(w["previous_size"], 6);
    assert_eq!(w["previous_sha256"], crate::util::hex(&<sha2::Sha256 as sha2::Digest>::digest(b"hello\n")));
    let r = ok(x.call("fs.read", &json!({"path": ps})));
    assert_eq!(
        (r["content"].as_str(), r["encoding"].as_str(), r["truncated"].as_bool()),
        (Some("hello\nmore\n"), Some("utf8"), Some(false))
    );
    let r = ok(x.call("fs.read", &json!({"path": ps, "offset": 6, "max_bytes": 2})));
    assert_eq!(
        (r["content"].as_str(), r["truncated"].as_bool(), r["size"].as_u64()),
        (Some("mo"), Some(true), Some(11))
    );
    std::fs::write(dir.path().join("b.bin"), [0xff, 0, 1]).unwrap();
    let r = ok(x.call("fs.read", &json!({"path": dir.path().join("b.bin")})));
    assert_eq!((r["encoding"].as_str(), r["content"].as_str()), (Some("base64"), Some("/wAB")));
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let l = ok(x.call("fs.list", &json!({"path": dir.path()})));
    let names: Vec<(&str, &str)> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("a.txt", "file"), ("b.bin", "file"), ("sub", "dir")]);
    let l = ok(x.call("fs.list", &json!({"path": dir.path(), "max_entries": 1})));
    assert_eq!((l["entries"].as_array().unwrap().len(), l["truncated"].as_bool()), (1, Some(true)));
    let e = x.call("fs.read", &json!({"path": dir.path().join("missing")}));
    assert!(matches!(&e.outcome, Err(ToolError::Failed(m)) if m.contains("No such file")), "{e:?}");
}

#[test]
fn fs_write_refuses_protected_paths_even_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    std::fs::create_dir(&vault).unwrap();
    std::os::unix::fs::symlink(&vault, dir.path().join("innocent")).unwrap();
    let config = ExecConfig { protected_paths: vec![vault.to_string_lossy().into_owned()], ..ExecConfig::default() };
    let x = Executor::new(Arc::new(Registry::builtin()), config);
    for p in [vault.join("f"), dir.path().join("innocent/f")] {
        let r = x.call("fs.write", &json!({"path": p, "content": "x"}));
        assert!(matches!(&r.outcome, Err(ToolError::Failed(m)) if m.contains("refused")), "{p:?}: {r:?}");
    }
    assert!(!vault.join("f").exists());
    let r = x.call("fs.write", &json!({"path": "/boot/ghost-test", "content": "x"}));
    assert!(matches!(&r.outcome, Err(ToolError::Failed(m)) if m.contains("protected")), "{r:?}");
}

#[test]
fn process_list_and_kill() {
    let x = exec();
    let me = std::process::id();
    let l = ok(x.call("process.list", &json!({"max": 10000})));
    let procs = l["processes"].as_array().unwrap();
    let mine = procs.iter().find(|p| p["pid"] == me).expect("own pid listed");
    assert!(mine["rss_kib"].as_u64().unwrap() > 0);
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let l = ok(x.call("process.list", &json!({"filter": "sleep 30"})));
    assert!(l["processes"].as_array().unwrap().iter().any(|p| p["pid"] == child.id()), "{l}");
    let k = ok(x.call("process.kill", &json!({"pid": child.id(), "signal": "KILL"})));
    assert_eq!(k["sent"], true);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    let r = x.call("process.kill", &json!({"pid": me}));
    assert!(matches!(&r.outcome, Err(ToolError::Failed(m)) if m.contains("agent itself")), "{r:?}");
}

#[test]
fn log_tail_reads_the_last_lines_only() {
    let dir = tempfile::tempdir().unwrap();
    let log: String = (1..=500).map(|i| format!("line {i}\n")).collect();
    std::fs::write(dir.path().join("redis.log"), &log).unwrap();
    let x = Executor::new(
        Arc::new(Registry::builtin()),
        ExecConfig { log_dir: dir.path().into(), ..ExecConfig::default() },
    );
    let t = ok(x.call("log.tail", &json!({"service": "redis", "lines": 3})));
    assert_eq!(t["lines"], json!(["line 498", "line 499", "line 500"]));
    assert_eq!(t["truncated"], true);
    let t = ok(x.call("log.tail", &json!({"path": dir.path().join("redis.log"), "lines": 1000, "max_bytes": 30})));
    assert_eq!(t["lines"], json!(["line 498", "line 499", "line 500"]), "the partial first line is dropped");
    std::fs::write(dir.path().join("short.log"), "a\nb").unwrap();
    let t = ok(x.call("log.tail", &json!({"path": dir.path().join("short.log")})));
    assert_eq!((t["lines"].clone(), t["truncated"].as_bool()), (json!(["a", "b"]), Some(false)));
}

#[test]
fn sys_metrics_match_their_schema() {
    let m = ok(exec().call("sys.metrics", &json!({"cpu_sample_ms": 0})));
    assert!(m["memory"]["total_bytes"].as_u64().unwrap() > 0);
    assert!(m["cpus"].as_u64().unwrap() >= 1);
    assert!(m["cpu_usage_percent"].is_null());
    assert!(m["processes"].as_u64().unwrap() > 1);
    let m = ok(exec().call("sys.metrics", &json!({"cpu_sample_ms": 200, "disks": false})));
    assert!(m["cpu_usage_percent"].as_f64().is_some());
}

#[test]
fn net_check_probes_tcp_and_http() {
    let x = exec();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for (i, conn) in listener.incoming().take(3).enumerate() {
            let mut s = conn.unwrap();
            if i == 0 {
                continue; // the TCP probe: connect only
            }
            let mut buf = [0u8; 1024];
            let n = std::io::Read::read(&mut s, &mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let status = if req.starts_with("GET /health ") { "200 OK" } else { "503 Unavailable" };
            std::io::Write::write_all(&mut s, format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .unwrap();
        }
    });
    let t = ok(x.call("net.check", &json!({"kind": "tcp", "target": format!("127.0.0.1:{port}")})));
    assert_eq!((t["ok"].as_bool(), t["address"].as_str()), (Some(true), Some(format!("127.0.0.1:{port}").as_str())));
    let h = ok(x.call("net.check", &json!({"kind": "http", "target": format!("http://127.0.0.1:{port}/health")})));
    assert_eq!((h["ok"].as_bool(), h["status"].as_u64()), (Some(true), Some(200)), "{h}");
    let h = ok(x.call("net.check", &json!({"kind": "http", "target": format!("http://127.0.0.1:{port}/other")})));
    assert_eq!(
        (h["ok"].as_bool(), h["status"].as_u64(), h["error"].as_str()),
        (Some(false), Some(503), Some("status 503"))
    );
    server.join().unwrap();
    // A closed port: a result that says so, quickly.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c =
        ok(x.call("net.check", &json!({"kind": "tcp", "target": format!("127.0.0.1:{closed}"), "timeout_ms": 500})));
    assert_eq!(c["ok"], false);
    assert!(c["error"].as_str().unwrap().contains("refused"), "{c}");
}

#[test]
fn shell_exec_captures_output_exit_code_and_stdin() {
    let x = exec();
    let r = ok(x.call(
        "shell.exec",
        &json!({"command": "echo out; echo err >&2; read l; echo got $l; exit 3", "stdin": "hi\n"}),
    ));
    assert_eq!(
        (r["stdout"].as_str(), r["stderr"].as_str(), r["exit_code"].as_i64()),
        (Some("out\ngot hi\n"), Some("err\n"), Some(3))
    );
    assert_eq!(r["timed_out"], false);
    let r = ok(x.call("shell.exec", &json!({"argv": ["/bin/echo", "a  b", "$HOME"]})));
    assert_eq!(r["stdout"], "a  b $HOME\n");
    let dir = tempfile::tempdir().unwrap();
    let r = ok(
        x.call("shell.exec", &json!({"command": "pwd; echo $GREETING", "cwd": dir.path(), "env": {"GREETING": "hey"}}))
    );
    assert_eq!(
        r["stdout"].as_str().unwrap(),
        format!("{}\nhey\n", std::fs::canonicalize(dir.path()).unwrap().display())
    );
    assert_eq!(
        ok(x.call("shell.exec", &json!({"command": "pwd"})))["stdout"],
        "/\n",
        "the policy assumes / by default"
    );
    let e = x.call("shell.exec", &json!({"argv": ["/nonexistent/program"]}));
    assert!(matches!(&e.outcome, Err(ToolError::Failed(m)) if m.contains("cannot start")), "{e:?}");
}

#[test]
fn shell_exec_applies_resource_limits_and_output_caps() {
    let x = exec();
    let r = ok(x.call("shell.exec", &json!({"command": "ulimit -n; ulimit -v; ulimit -c; ulimit -t", "timeout_s": 7})));
    let lines: Vec<&str> = r["stdout"].as_str().unwrap().lines().collect();
    assert_eq!(lines, ["256", &(ShellLimits::default().address_space / 1024).to_string(), "0", "8"], "{r}");
    let r = ok(x.call("shell.exec", &json!({"command": "head -c 200000 /dev/zero | tr '\\0' a; echo done >&2"})));
    assert_eq!((r["stdout_bytes"].as_u64(), r["stdout_truncated"].as_bool()), (Some(200_000), Some(true)));
    assert_eq!(r["stdout"].as_str().unwrap().len(), ShellLimits::default().output_cap);
    assert_eq!(r["stderr"], "done\n");
}

fn gone(pid: i32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        // A zombie waiting for its reaper counts as gone: it runs no more.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| process::parse_stat(&s))
            .map(|p| p.state);
        if state.as_deref().is_none_or(|s| s == "Z") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_runaway_command_is_killed_at_its_timeout_with_its_children() {
    let x = exec();
    let started = std::time::Instant::now();
    let r = ok(x.call("shell.exec", &json!({"command": "sleep 60 & echo $!; while :; do :; done", "timeout_s": 1})));
    let took = started.elapsed();
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(r["signal"], libc::SIGKILL);
    assert!(r["exit_code"].is_null());
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "{took:?}");
    let child: i32 = r["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(gone(child), "the background child {child} survived the timeout");

    // A command that exits at once but leaves a child behind: the child goes too.
    let r = ok(x.call("shell.exec", &json!({"command": "sleep 60 >/dev/null 2>&1 & echo $!"})));
    assert_eq!((r["timed_out"].as_bool(), r["exit_code"].as_i64()), (Some(false), Some(0)));
    let child: i32 = r["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(gone(child), "the left-behind child {child} survived");
}

struct FakeAgent;

impl Delegate for FakeAgent {
    fn service(&self, action: ServiceAction, name: &str) -> Result<Value, String> {
        match name {
            "slow" => {
                std::thread::sleep(Duration::from_secs(2));
                Ok(json!({}))
            }
            "missing" => Err("no such service `missing`".into()),
            _ => Ok(json!({ "name": name, "action": action, "state": "running" })),
        }
    }

    fn memory_search(&self, query: &str, limit: usize) -> Result<Vec<MemoryHit>, String> {
        Ok((0..limit.min(2))
            .map(|i| MemoryHit { id: format!("m{i}"), score: 0.5, text: format!("about {query}") })
            .collect())
    }
}

#[test]
fn delegated_tools_and_the_call_timeout() {
    let config = ExecConfig { default_timeout: Duration::from_millis(300), ..ExecConfig::default() };
    let bare = Executor::new(Arc::new(Registry::builtin()), config);
    let r = bare.call("service.status", &json!({"name": "redis"}));
    assert!(matches!(&r.outcome, Err(ToolError::Unavailable(_))), "{r:?}");
    let r = bare.call("service.rollback", &json!({"name": "redis"}));
    assert!(matches!(&r.outcome, Err(ToolError::Unavailable(m)) if m.contains("service.rollback")), "{r:?}");
    let x = bare.with_delegate(Arc::new(FakeAgent));
    let r = ok(x.call("service.restart", &json!({"name": "redis"})));
    assert_eq!((r["action"].as_str(), r["name"].as_str()), (Some("restart"), Some("redis")));
    let r = ok(x.call("service.rollback", &json!({"name": "redis"})));
    assert_eq!((r["action"].as_str(), r["name"].as_str()), (Some("rollback"), Some("redis")));

    let r = x.call("service.start", &json!({"name": "missing"}));
    assert!(matches!(&r.outcome, Err(ToolError::Failed(m)) if m.contains("no such service")));
    let m = ok(x.call("memory.search", &json!({"query": "redis crash", "limit": 5})));
    assert_eq!(m["results"][1]["id"], "m1");
    let started = std::time::Instant::now();
    let r = x.call("service.status", &json!({"name": "slow"}));
    assert_eq!(r.outcome, Err(ToolError::TimedOut { after_ms: 300 }));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(r.duration >= Duration::from_millis(300));
    let j = r.to_json();
    assert_eq!((j["ok"].as_bool(), j["error"]["kind"].as_str()), (Some(false), Some("timed_out")));
}

// ---------------------------------------------------------------------------------------------
// disk.cleanup

/// Sets the modification (and access) time of `p` itself, a symbolic link included, to `secs`
/// seconds ago.
fn age(p: &std::path::Path, secs: i64) {
    use std::os::unix::ffi::OsStrExt;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let t = libc::timespec { tv_sec: now - secs, tv_nsec: 0 };
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat {p:?}: {}", std::io::Error::last_os_error());
}

fn file(p: &std::path::Path, bytes: usize, secs_ago: i64) {
    std::fs::write(p, vec![b'x'; bytes]).unwrap();
    age(p, secs_ago);
}

/// A tempdir with `tmp/` (cleanable), `logs/` (the log directory) and `outside/` (neither,
/// with a precious old file), and an executor configured so.
struct CleanupWorld {
    _base: tempfile::TempDir,
    tmp: std::path::PathBuf,
    logs: std::path::PathBuf,
    outside: std::path::PathBuf,
    x: Executor,
}

fn cleanup_world() -> CleanupWorld {
    let base = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(base.path()).unwrap();
    let (tmp, logs, outside) = (root.join("tmp"), root.join("logs"), root.join("outside"));
    for d in [&tmp, &logs, &outside] {
        std::fs::create_dir(d).unwrap();
    }
    file(&outside.join("precious"), 100, 86400);
    let config = ExecConfig { cleanable_dirs: vec![tmp.clone()], log_dir: logs.clone(), ..ExecConfig::default() };
    let x = Executor::new(Arc::new(Registry::builtin()), config);
    CleanupWorld { _base: base, tmp, logs, outside, x }
}

fn counts(v: &Value) -> [u64; 4] {
    ["removed_files", "removed_dirs", "freed_bytes", "kept_files"].map(|k| v[k].as_u64().unwrap())
}

#[test]
fn disk_cleanup_removes_old_files_then_empty_old_dirs_and_keeps_new_ones() {
    let w = cleanup_world();
    let t = &w.tmp;
    file(&t.join("old.bin"), 1000, 3600);
    file(&t.join("new.txt"), 10, 0);
    std::fs::create_dir(t.join("sub")).unwrap();
    file(&t.join("sub/old2"), 500, 3600);
    age(&t.join("sub"), 3600);
    std::fs::create_dir(t.join("keepdir")).unwrap();
    file(&t.join("keepdir/new"), 5, 0);
    age(&t.join("keepdir"), 3600);
    std::fs::create_dir(t.join("old-empty")).unwrap();
    age(&t.join("old-empty"), 3600);
    std::fs::create_dir(t.join("fresh-empty")).unwrap();
    // Links to the outside: the links go, never what they point to.
    std::os::unix::fs::symlink(w.outside.join("precious"), t.join("link")).unwrap();
    age(&t.join("link"), 3600);
    std::os::unix::fs::symlink(&w.outside, t.join("dirlink")).unwrap();
    age(&t.join("dirlink"), 3600);
    // A FIFO is no regular file: kept however old.
    let fifo = std::ffi::CString::new(t.join("fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    age(&t.join("fifo"), 3600);

    let dry = ok(w.x.call("disk.cleanup", &json!({"path": t, "older_than_s": 600, "dry_run": true})));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["path"], t.to_str().unwrap());
    // old.bin, sub/old2, link, dirlink; sub, old-empty; 1000 + 500 bytes; new.txt, keepdir/new, fifo.
    assert_eq!(counts(&dry), [4, 2, 1500, 3], "{dry}");
    assert_eq!(dry["errors"], json!([]));
    for p in ["old.bin", "sub/old2", "link", "dirlink", "old-empty"] {
        assert!(t.join(p).symlink_metadata().is_ok(), "dry run removed {p}");
    }

    let real = ok(w.x.call("disk.cleanup", &json!({"path": t, "older_than_s": 600})));
    assert_eq!((counts(&real), real["dry_run"].as_bool()), ([4, 2, 1500, 3], Some(false)), "{real}");
    for p in ["old.bin", "sub", "link", "dirlink", "old-empty"] {
        assert!(t.join(p).symlink_metadata().is_err(), "{p} survived");
    }
    for p in ["new.txt", "keepdir/new", "fresh-empty", "fifo"] {
        assert!(t.join(p).symlink_metadata().is_ok(), "{p} was removed");
    }
    assert_eq!(std::fs::read(w.outside.join("precious")).unwrap().len(), 100, "the link's target is untouched");

    // older_than_s 0: everything but the FIFO, and the directories left empty.
    let all = ok(w.x.call("disk.cleanup", &json!({"path": t})));
    assert_eq!(counts(&all), [2, 2, 15, 1], "{all}");
    let left: Vec<String> =
        std::fs::read_dir(t).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["fifo"]);
    assert!(t.is_dir(), "the cleaned directory itself stays");
}

#[test]
fn disk_cleanup_of_the_log_dir_removes_only_old_rotated_logs() {
    let w = cleanup_world();
    let l = &w.logs;
    for (name, bytes, secs_ago) in [
        ("redis.log", 100, 3600),
        ("redis.log.1", 200, 3600),
        ("redis.log.2.gz", 300, 3600),
        ("nginx.log.10.zst", 50, 3600),
        ("nginx.log.11.xz", 7, 3600),
        ("redis.log.3", 1000, 0),
        ("redis.log.old", 10, 3600),
        ("notes.txt", 10, 3600),
    ] {
        file(&l.join(name), bytes, secs_ago);
    }
    std::fs::create_dir(l.join("app")).unwrap();
    file(&l.join("app/app.log.1"), 40, 3600);
    age(&l.join("app"), 3600);
    std::os::unix::fs::symlink(w.outside.join("precious"), l.join("link.log.1")).unwrap();
    age(&l.join("link.log.1"), 3600);

    let r = ok(w.x.call("disk.cleanup", &json!({"path": l, "older_than_s": 60})));
    // Gone: redis.log.1, redis.log.2.gz, nginx.log.10.zst, nginx.log.11.xz, app/app.log.1.
    // Kept: redis.log, redis.log.3 (new), redis.log.old, notes.txt, link.log.1 (a link).
    assert_eq!(counts(&r), [5, 0, 200 + 300 + 50 + 7 + 40, 5], "{r}");
    let mut left: Vec<String> =
        std::fs::read_dir(l).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["app", "link.log.1", "notes.txt", "redis.log", "redis.log.3", "redis.log.old"]);
    assert!(std::fs::read_dir(l.join("app")).unwrap().next().is_none(), "app/ emptied, and kept");
    assert!(w.outside.join("precious").exists());
}

#[test]
fn disk_cleanup_refuses_anything_but_exactly_a_cleanable_dir() {
    let w = cleanup_world();
    std::os::unix::fs::symlink(&w.outside, w.tmp.join("escape")).unwrap();
    std::fs::create_dir(w.tmp.join("sub")).unwrap();
    let refused = |path: String, want: &str| {
        let r = w.x.call("disk.cleanup", &json!({"path": path}));
        match &r.outcome {
            Err(ToolError::InvalidArgs(e)) => {
                assert_eq!(e.field(), "args.path", "{path}: {e}");
                assert!(e.to_string().contains(want), "{path}: {e}");
            }
            other => panic!("{path}: not refused: {other:?}"),
        }
    };
    let outside = w.outside.display().to_string();
    let tmp = w.tmp.display().to_string();
    refused(format!("{tmp}/escape"), &format!("(it is {outside}) is not a cleanable directory"));
    refused(format!("{tmp}/../outside"), "is not a cleanable directory");
    refused(format!("{tmp}/sub"), "is not a cleanable directory");
    refused(outside.clone(), &format!("cleanable directories: {tmp}, "));
    refused("/etc".into(), "/etc is not a cleanable directory");
    refused(format!("{tmp}/missing"), "No such file");
    assert_eq!(std::fs::read(w.outside.join("precious")).unwrap().len(), 100);
    // The default executor cleans /tmp and /var/tmp, not /etc.
    let r = exec().call("disk.cleanup", &json!({"path": "/etc", "dry_run": true}));
    assert!(matches!(&r.outcome, Err(ToolError::InvalidArgs(e)) if e.field() == "args.path"), "{r:?}");
    // Another spelling of a cleanable directory is that directory.
    let alias = w.outside.join("alias");
    std::os::unix::fs::symlink(&w.tmp, &alias).unwrap();
    let r = ok(w.x.call("disk.cleanup", &json!({"path": alias, "dry_run": true})));
    assert_eq!(r["path"], tmp.as_str());
    let r = ok(w.x.call("disk.cleanup", &json!({"path": format!("{tmp}/"), "dry_run": true})));
    assert_eq!(r["path"], tmp.as_str());
    assert!(w.tmp.join("escape").symlink_metadata().is_ok(), "dry runs remove nothing");
}

// ---------------------------------------------------------------------------------------------
// net.free_port

/// A `sleep 60` holding `listener`'s socket as its stdin; with `ignore_term`, SIGTERM is
/// ignored (set before the exec, so in place when spawn returns).
fn holder(listener: &TcpListener, ignore_term: bool) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let fd: std::os::fd::OwnedFd = listener.try_clone().unwrap().into();
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("60").stdin(std::process::Stdio::from(fd)).stdout(std::process::Stdio::null());
    if ignore_term {
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    let child = cmd.spawn().unwrap();
    drop(cmd); // our copy of the socket
    child
}

/// Polls (bounded) until process `pid` is in `state` (`T`: stopped).
fn wait_state(pid: u32, state: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| process::parse_stat(&s));
        if now.as_ref().is_some_and(|p| p.state == state) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "pid {pid} never reached state {state}: {now:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn net_free_port_terms_then_kills_the_holders() {
    use std::os::unix::process::ExitStatusExt;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut stopped = holder(&listener, false);
    let mut stubborn = holder(&listener, true);
    drop(listener);
    // Stopped, it would not act on SIGTERM: the tool continues it first.
    assert_eq!(unsafe { libc::kill(stopped.id() as i32, libc::SIGSTOP) }, 0);
    wait_state(stopped.id(), "T");

    let started = std::time::Instant::now();
    let r = ok(exec().call("net.free_port", &json!({"port": port, "grace_ms": 400})));
    let took = started.elapsed();
    assert_eq!((r["port"].as_u64(), r["freed"].as_bool()), (Some(port as u64), Some(true)), "{r}");
    let holders = r["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 2, "{r}");
    let signal_of = |pid: u32| holders.iter().find(|h| h["pid"] == pid).map(|h| h["signal"].clone());
    assert_eq!(signal_of(stopped.id()), Some(json!("TERM")), "{r}");
    assert_eq!(signal_of(stubborn.id()), Some(json!("KILL")), "{r}");
    assert!(holders.iter().all(|h| h["cmdline"] == "sleep 60"), "{r}");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "{took:?}");
    assert_eq!(stopped.wait().unwrap().signal(), Some(libc::SIGTERM));
    assert_eq!(stubborn.wait().unwrap().signal(), Some(libc::SIGKILL));

    // Nothing listens now: nothing to do.
    let again = ok(exec().call("net.free_port", &json!({"port": port})));
    assert_eq!(again, json!({"port": port, "holders": [], "freed": true}));
}

#[test]
fn net_free_port_refuses_to_signal_the_agent_itself() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut other = holder(&listener, false);
    let r = exec().call("net.free_port", &json!({"port": port, "grace_ms": 0}));
    let me = std::process::id();
    match &r.outcome {
        Err(ToolError::Failed(m)) => {
            assert!(m.contains(&format!("held by the agent itself (pid {me})")), "{m}");
            assert!(m.contains("nothing was signalled"), "{m}");
        }
        other => panic!("not refused: {other:?}"),
    }
    // Nothing was sent: the other holder runs on and the socket still accepts connections.
    assert!(other.try_wait().unwrap().is_none());
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    other.kill().unwrap();
    other.wait().unwrap();
    drop(listener);
}
