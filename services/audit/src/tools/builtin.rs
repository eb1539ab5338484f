//! The built-in tools' specifications and JSON schemas.

use super::{ArgErrors, ExtraCheck, Permission as P, Risk, ToolSpec};
use serde_json::{json, Value};

pub const MAX_READ: u64 = 1 << 20;
pub const MAX_WRITE_CHARS: u64 = 1 << 20;
pub const MAX_PATH: u64 = 4096;
/// The largest disk.cleanup `older_than_s`: ten years.
pub const MAX_AGE_S: u64 = 10 * 365 * 86400;

fn path_prop(what: &str) -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": MAX_PATH, "description": format!("{what} (absolute)") })
}

fn service_name() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": 64, "description": "service name, as in /etc/ghost/services/NAME.toml" })
}

fn object(props: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false })
}

fn spec(
    name: &str,
    description: &str,
    input: Value,
    output: Value,
    permission: P,
    risk: Risk,
    reversible: bool,
) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: description.into(),
        input_schema: input,
        output_schema: output,
        permission,
        risk,
        reversible,
    }
}

fn absolute(args: &Value, key: &str) -> Result<(), ArgErrors> {
    match args.get(key).and_then(Value::as_str) {
        Some(p) if !p.starts_with('/') => Err(ArgErrors::one(format!("args.{key}"), "expected an absolute path")),
        Some(p) if p.contains('\0') => Err(ArgErrors::one(format!("args.{key}"), "contains a NUL byte")),
        _ => Ok(()),
    }
}

fn path_check(args: &Value) -> Result<(), ArgErrors> {
    absolute(args, "path")
}

/// service.start/stop/restart: a service name in, ghost-init's answer out; medium risk,
/// reversible (what one does, another undoes).
fn service_control(name: &str, description: &str, output: Value) -> (ToolSpec, Option<ExtraCheck>) {
    let input = object(json!({ "name": service_name() }), &["name"]);
    (spec(name, description, input, output, P::ServiceControl, Risk::Medium, true), Some(service_check))
}

fn service_check(args: &Value) -> Result<(), ArgErrors> {
    let name = args.get("name").and_then(Value::as_str).unwrap_or("");
    valid_service(name).map_err(|m| ArgErrors::one("args.name", m))
}

fn valid_service(name: &str) -> Result<(), String> {
    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) && !name.starts_with('.') {
        Ok(())
    } else {
        Err("expected a service name (letters, digits, - _ . @)".into())
    }
}

fn exactly_one(args: &Value, a: &str, b: &str) -> Result<(), ArgErrors> {
    match (args.get(a).is_some(), args.get(b).is_some()) {
        (true, false) | (false, true) => Ok(()),
        (false, false) => {
            Err(ArgErrors::one(format!("args.{a}"), format!("required field is missing (give `{a}` or `{b}`)")))
        }
        (true, true) => Err(ArgErrors::one(format!("args.{b}"), format!("give `{a}` or `{b}`, not both"))),
    }
}

fn log_check(args: &Value) -> Result<(), ArgErrors> {
    exactly_one(args, "path", "service")?;
    absolute(args, "path")?;
    match args.get("service").and_then(Value::as_str) {
        Some(s) => valid_service(s).map_err(|m| ArgErrors::one("args.service", m)),
        None => Ok(()),
    }
}

fn shell_check(args: &Value) -> Result<(), ArgErrors> {
    exactly_one(args, "command", "argv")?;
    absolute(args, "cwd")?;
    if let Some(argv) = args.get("argv").and_then(Value::as_array) {
        if argv.first().and_then(Value::as_str).is_some_and(str::is_empty) {
            return Err(ArgErrors::one("args.argv[0]", "must not be empty"));
        }
    }
    let env = args.get("env").and_then(Value::as_object);
    if env.is_some_and(|e| e.len() > 256) {
        return Err(ArgErrors::one("args.env", "at most 256 variables"));
    }
    for (k, v) in env.into_iter().flatten() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ArgErrors::one(format!("args.env.{k}"), "not a valid environment variable name"));
        }
        if v.as_str().is_some_and(|s| s.contains('\0')) {
            return Err(ArgErrors::one(format!("args.env.{k}"), "contains a NUL byte"));
        }
    }
    Ok(())
}

fn net_check(args: &Value) -> Result<(), ArgErrors> {
    let target = args.get("target").and_then(Value::as_str).unwrap_or("");
    match args.get("kind").and_then(Value::as_str) {
        Some("http") if !target.starts_with("http://") => Err(ArgErrors::one(
            "args.target",
            "expected an http:// URL (https is not probed; use kind = \"tcp\" for its port)",
        )),
        Some("tcp") if !host_port(target) => Err(ArgErrors::one("args.target", "expected HOST:PORT")),
        _ => Ok(()),
    }
}

fn host_port(target: &str) -> bool {
    matches!(target.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok())
}

pub(super) fn specs() -> Vec<(ToolSpec, Option<ExtraCheck>)> {
    let any_object = json!({ "type": "object" });
    let signals = ["TERM", "KILL", "INT", "HUP", "QUIT", "USR1", "USR2", "STOP", "CONT"];
    vec![
        (
            spec(
                "fs.read",
                "Read a file (at most max_bytes from offset; binary content comes back as base64).",
                object(
                    json!({
                        "path": path_prop("file to read"),
                        "offset": { "type": "integer", "minimum": 0, "default": 0 },
                        "max_bytes": { "type": "integer", "minimum": 1, "maximum": MAX_READ, "default": 65536 },
                    }),
                    &["path"],
                ),
                object(
                    json!({
                        "path": { "type": "string" },
                        "size": { "type": "integer", "minimum": 0 },
                        "offset": { "type": "integer", "minimum": 0 },
                        "bytes": { "type": "integer", "minimum": 0 },
                        "encoding": { "enum": ["utf8", "base64"] },
                        "content": { "type": "string" },
                        "truncated": { "type": "boolean" },
                    }),
                    &["path", "size", "offset", "bytes", "encoding", "content", "truncated"],
                ),
                P::FsRead,
                Risk::Low,
                true,
            ),
            Some(path_check),
        ),
        (
            spec(
                "fs.write",
                "Write (atomically replace) or append to a file.",
                object(
                    json!({
                        "path": path_prop("file to write"),
                        "content": { "type": "string", "maxLength": MAX_WRITE_CHARS },
                        "append": { "type": "boolean", "default": false },
                        "create_dirs": { "type": "boolean", "default": false },
                        "mode": { "type": "integer", "minimum": 0, "maximum": 4095, "description": "permission bits for a new file (default 0644, or the replaced file's)" },
                    }),
                    &["path", "content"],
                ),
                object(
                    json!({
                        "path": { "type": "string" },
                        "bytes_written": { "type": "integer", "minimum": 0 },
                        "created": { "type": "boolean" },
                        "previous_size": { "type": ["integer", "null"] },
                        "previous_sha256": { "type": ["string", "null"] },
                    }),
                    &["path", "bytes_written", "created", "previous_size", "previous_sha256"],
                ),
                P::FsWrite,
                Risk::High,
                false,
            ),
            Some(path_check),
        ),
        (
            spec(
                "fs.list",
                "List a directory.",
                object(
                    json!({
                        "path": path_prop("directory to list"),
                        "max_entries": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 1000 },
                    }),
                    &["path"],
                ),
                object(
                    json!({
                        "path": { "type": "string" },
                        "entries": { "type": "array", "items": object(json!({
                            "name": { "type": "string" },
                            "kind": { "enum": ["file", "dir", "symlink", "other"] },
                            "size": { "type": "integer", "minimum": 0 },
                            "mode": { "type": "integer", "minimum": 0 },
                        }), &["name", "kind", "size", "mode"]) },
                        "truncated": { "type": "boolean" },
                    }),
                    &["path", "entries", "truncated"],
                ),
                P::FsRead,
                Risk::Low,
                true,
            ),
            Some(path_check),
        ),
        (
            spec(
                "process.list",
                "List processes (from /proc), optionally those whose name or command line contains `filter`.",
                object(
                    json!({
                        "filter": { "type": "string", "maxLength": 256 },
                        "max": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 500 },
                    }),
                    &[],
                ),
                object(
                    json!({
                        "processes": { "type": "array", "items": object(json!({
                            "pid": { "type": "integer" },
                            "ppid": { "type": "integer" },
                            "name": { "type": "string" },
                            "state": { "type": "string" },
                            "uid": { "type": ["integer", "null"] },
                            "threads": { "type": "integer" },
                            "rss_kib": { "type": "integer" },
                            "cmdline": { "type": "string" },
                        }), &["pid", "ppid", "name", "state", "uid", "threads", "rss_kib", "cmdline"]) },
                        "total": { "type": "integer", "minimum": 0 },
                        "truncated": { "type": "boolean" },
                    }),
                    &["processes", "total", "truncated"],
                ),
                P::ProcessRead,
                Risk::Low,
                true,
            ),
            None,
        ),
        (
            spec(
                "process.kill",
                "Send a signal to a process (never PID 1 or the agent itself).",
                object(
                    json!({
                        "pid": { "type": "integer", "minimum": 2, "maximum": 4194304 },
                        "signal": { "enum": signals, "default": "TERM" },
                    }),
                    &["pid"],
                ),
                object(
                    json!({
                        "pid": { "type": "integer" },
                        "signal": { "type": "string" },
                        "sent": { "type": "boolean" },
                    }),
                    &["pid", "signal", "sent"],
                ),
                P::ProcessSignal,
                Risk::High,
                false,
            ),
            None,
        ),
        (
            spec(
                "service.status",
                "Status of a supervised service.",
                object(json!({ "name": service_name() }), &["name"]),
                any_object.clone(),
                P::ServiceRead,
                Risk::Low,
                true,
            ),
            Some(service_check),
        ),
        service_control("service.start", "Start a supervised service.", any_object.clone()),
        service_control("service.stop", "Stop a supervised service.", any_object.clone()),
        service_control("service.restart", "Restart a supervised service.", any_object.clone()),
        (
            // Reversible: the agent keeps the files it replaces.
            spec(
                "service.rollback",
                "Restore the last configuration of a service that ran, and reload.",
                object(json!({ "name": service_name() }), &["name"]),
                any_object,
                P::ServiceControl,
                Risk::Medium,
                true,
            ),
            Some(service_check),
        ),
        (
            spec(
                "log.tail",
                "The last lines of a log file, or of a service's log (/var/log/ghost/NAME.log). Give `path` or `service`.",
                object(
                    json!({
                        "path": path_prop("log file"),
                        "service": service_name(),
                        "lines": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 },
                        "max_bytes": { "type": "integer", "minimum": 1, "maximum": MAX_READ, "default": 262144 },
                    }),
                    &[],
                ),
                object(
                    json!({
                        "path": { "type": "string" },
                        "lines": { "type": "array", "items": { "type": "string" } },
                        "truncated": { "type": "boolean" },
                    }),
                    &["path", "lines", "truncated"],
                ),
                P::LogRead,
                Risk::Low,
                true,
            ),
            Some(log_check),
        ),
        (
            spec(
                "sys.metrics",
                "Load, CPU, memory, swap, disks and uptime of the machine.",
                object(
                    json!({
                        "cpu_sample_ms": { "type": "integer", "minimum": 0, "maximum": 2000, "default": 200, "description": "0: no CPU usage sample" },
                        "disks": { "type": "boolean", "default": true },
                    }),
                    &[],
                ),
                object(
                    json!({
                        "hostname": { "type": ["string", "null"] },
                        "uptime_s": { "type": "integer", "minimum": 0 },
                        "load_avg": { "type": "array", "items": { "type": "number" }, "minItems": 3, "maxItems": 3 },
                        "cpus": { "type": "integer", "minimum": 0 },
                        "cpu_usage_percent": { "type": ["number", "null"] },
                        "memory": object(json!({
                            "total_bytes": { "type": "integer" }, "used_bytes": { "type": "integer" }, "available_bytes": { "type": "integer" },
                        }), &["total_bytes", "used_bytes", "available_bytes"]),
                        "swap": object(json!({
                            "total_bytes": { "type": "integer" }, "used_bytes": { "type": "integer" },
                        }), &["total_bytes", "used_bytes"]),
                        "disks": { "type": "array", "items": object(json!({
                            "mount": { "type": "string" }, "fs": { "type": "string" },
                            "total_bytes": { "type": "integer" }, "available_bytes": { "type": "integer" },
                        }), &["mount", "fs", "total_bytes", "available_bytes"]) },
                        "processes": { "type": "integer", "minimum": 0 },
                    }),
                    &["hostname", "uptime_s", "load_avg", "cpus", "cpu_usage_percent", "memory", "swap", "disks", "processes"],
                ),
                P::SystemRead,
                Risk::Low,
                true,
            ),
            None,
        ),
        (
            spec(
                "net.check",
                "Probe a TCP port (HOST:PORT) or an http:// URL (GET), with a timeout.",
                object(
                    json!({
                        "kind": { "enum": ["tcp", "http"] },
                        "target": { "type": "string", "minLength": 1, "maxLength": 2048 },
                        "timeout_ms": { "type": "integer", "minimum": 1, "maximum": 30000, "default": 3000 },
                        "expect_status": { "type": "integer", "minimum": 100, "maximum": 599 },
                    }),
                    &["kind", "target"],
                ),
                object(
                    json!({
                        "kind": { "enum": ["tcp", "http"] },
                        "target": { "type": "string" },
                        "ok": { "type": "boolean" },
                        "latency_ms": { "type": "integer", "minimum": 0 },
                        "address": { "type": ["string", "null"] },
                        "status": { "type": ["integer", "null"] },
                        "error": { "type": ["string", "null"] },
                    }),
                    &["kind", "target", "ok", "latency_ms", "address", "status", "error"],
                ),
                P::NetProbe,
                Risk::Low,
                true,
            ),
            Some(net_check),
        ),
        (
            spec(
                "memory.search",
                "Search the agent's memory.",
                object(
                    json!({
                        "query": { "type": "string", "minLength": 1, "maxLength": 4096 },
                        "limit": { "type": "integer", "minimum": 1, "maximum": 100, "default": 10 },
                    }),
                    &["query"],
                ),
                object(
                    json!({
                        "results": { "type": "array", "items": object(json!({
                            "id": { "type": "string" }, "score": { "type": "number" }, "text": { "type": "string" },
                        }), &["id", "score", "text"]) },
                    }),
                    &["results"],
                ),
                P::MemoryRead,
                Risk::Low,
                true,
            ),
            None,
        ),
        (
            spec(
                "shell.exec",
                "Run a shell command (`command`, through /bin/sh -c) or a program (`argv`) in its own process group with a timeout, output caps and resource limits.",
                object(
                    json!({
                        "command": { "type": "string", "minLength": 1, "maxLength": 65536 },
                        "argv": { "type": "array", "items": { "type": "string", "maxLength": 65536 }, "minItems": 1, "maxItems": 4096 },
                        "cwd": path_prop("working directory"),
                        "timeout_s": { "type": "integer", "minimum": 1, "maximum": 3600, "default": super::shell::DEFAULT_TIMEOUT_S },
                        "env": { "type": "object", "additionalProperties": { "type": "string", "maxLength": 65536 } },
                        "stdin": { "type": "string", "maxLength": MAX_WRITE_CHARS },
                    }),
                    &[],
                ),
                object(
                    json!({
                        "exit_code": { "type": ["integer", "null"] },
                        "signal": { "type": ["integer", "null"] },
                        "stdout": { "type": "string" },
                        "stderr": { "type": "string" },
                        "stdout_bytes": { "type": "integer", "minimum": 0 },
                        "stderr_bytes": { "type": "integer", "minimum": 0 },
                        "stdout_truncated": { "type": "boolean" },
                        "stderr_truncated": { "type": "boolean" },
                        "timed_out": { "type": "boolean" },
                        "duration_ms": { "type": "integer", "minimum": 0 },
                    }),
                    &["exit_code", "signal", "stdout", "stderr", "stdout_bytes", "stderr_bytes", "stdout_truncated", "stderr_truncated", "timed_out", "duration_ms"],
                ),
                P::ShellExec,
                Risk::Critical,
                false,
            ),
            Some(shell_check),
        ),
        (
            // Low risk: it removes only disposable files, and only in the executor's cleanable
            // directories (anything else is refused naming `args.path`).
            spec(
                "disk.cleanup",
                "Free disk space as systemd-tmpfiles does: remove files (and then empty subdirectories) older than older_than_s from a temporary directory (/tmp, /var/tmp), or rotated logs (NAME.log.1, NAME.log.2.gz, ...) from the service log directory (/var/log/ghost; the live NAME.log stays). Never follows symbolic links nor leaves the directory's filesystem. dry_run: report what would go, remove nothing.",
                object(
                    json!({
                        "path": path_prop("the directory to clean: exactly one of the cleanable directories"),
                        "older_than_s": { "type": "integer", "minimum": 0, "maximum": MAX_AGE_S, "default": 0, "description": "keep files modified less than this many seconds ago" },
                        "dry_run": { "type": "boolean", "default": false },
                    }),
                    &["path"],
                ),
                object(
                    json!({
                        "path": { "type": "string" },
                        "removed_files": { "type": "integer", "minimum": 0 },
                        "removed_dirs": { "type": "integer", "minimum": 0 },
                        "freed_bytes": { "type": "integer", "minimum": 0 },
                        "kept_files": { "type": "integer", "minimum": 0 },
                        "errors": { "type": "array", "items": { "type": "string" }, "maxItems": super::disk::MAX_ERRORS },
                        "dry_run": { "type": "boolean" },
                    }),
                    &["path", "removed_files", "removed_dirs", "freed_bytes", "kept_files", "errors", "dry_run"],
                ),
                P::FsWrite,
                Risk::Low,
                false,
            ),
            Some(path_check),
        ),
        (
            spec(
                "net.free_port",
                "Free a TCP port held by a stuck process: SIGCONT and SIGTERM to every process holding its listening socket, SIGKILL to those still holding it after grace_ms. Refuses (signalling nothing) when a holder is PID 1, the agent or one of its ancestors.",
                object(
                    json!({
                        "port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                        "grace_ms": { "type": "integer", "minimum": 0, "maximum": super::net::MAX_GRACE_MS, "default": super::net::DEFAULT_GRACE_MS },
                    }),
                    &["port"],
                ),
                object(
                    json!({
                        "port": { "type": "integer" },
                        "holders": { "type": "array", "items": object(json!({
                            "pid": { "type": "integer" },
                            "cmdline": { "type": "string" },
                            "signal": { "enum": ["TERM", "KILL"] },
                        }), &["pid", "cmdline", "signal"]) },
                        "freed": { "type": "boolean" },
                    }),
                    &["port", "holders", "freed"],
                ),
                P::ProcessSignal,
                Risk::High,
                false,
            ),
            None,
        ),
    ]
}
