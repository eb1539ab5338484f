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
    let x = bare.with_delegate(Arc::new(FakeAgent));
    let r = ok(x.call("service.restart", &json!({"name": "redis"})));
    assert_eq!((r["action"].as_str(), r["name"].as_str()), (Some("restart"), Some("redis")));
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
