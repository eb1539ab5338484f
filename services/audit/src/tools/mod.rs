//! Typed tools: each has JSON schemas for its input and output, the permission it needs, a
//! risk level and whether it is reversible. The [`Registry`] holds the built-in tools and
//! validates arguments (errors name the field: `args.path: expected a string`); the
//! [`Executor`] runs a validated call with a timeout and returns a [`ToolResult`] with its
//! duration.
//!
//! Input schemas use only the JSON-schema subset that the model's constrained decoding
//! (`ghost_model::constrain`) compiles — `type`, `enum`, `const`, `properties`, `required`,
//! `items`, `minItems`/`maxItems`, `minLength`/`maxLength`, `minimum`/`maximum` and
//! annotations — so the agent can hand them to the model as they are. What that subset cannot
//! say (an absolute path, exactly one of two fields) is checked after the schema, with the
//! same `args.FIELD: reason` errors.

mod builtin;
mod disk;
mod fs;
mod logtail;
mod metrics;
mod net;
mod process;
pub mod shell;

use crate::util;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

pub use shell::ShellLimits;

/// The names of the built-in tools.
pub const BUILTIN_TOOLS: &[&str] = &[
    "fs.read",
    "fs.write",
    "fs.list",
    "process.list",
    "process.kill",
    "service.status",
    "service.start",
    "service.stop",
    "service.restart",
    "service.rollback",
    "log.tail",
    "sys.metrics",
    "net.check",
    "memory.search",
    "shell.exec",
    "disk.cleanup",
    "net.free_port",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

/// The permission a tool needs (`fs.read`, `process.kill`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Permission {
    #[serde(rename = "fs.read")]
    FsRead,
    #[serde(rename = "fs.write")]
    FsWrite,
    #[serde(rename = "process.read")]
    ProcessRead,
    #[serde(rename = "process.signal")]
    ProcessSignal,
    #[serde(rename = "service.read")]
    ServiceRead,
    #[serde(rename = "service.control")]
    ServiceControl,
    #[serde(rename = "log.read")]
    LogRead,
    #[serde(rename = "system.read")]
    SystemRead,
    #[serde(rename = "net.probe")]
    NetProbe,
    #[serde(rename = "memory.read")]
    MemoryRead,
    #[serde(rename = "shell.exec")]
    ShellExec,
}

/// A tool's description: what the model sees and what the policy judges.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
    pub permission: Permission,
    pub risk: Risk,
    pub reversible: bool,
}

/// A field-level problem with a call's arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgError {
    /// `args`, `args.path`, `args.argv[2]`, `args.env.LANG`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a call's arguments (at least one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgErrors(pub Vec<ArgError>);

impl ArgErrors {
    fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        ArgErrors(vec![ArgError { field: field.into(), message: message.into() }])
    }

    /// The first problem's field.
    pub fn field(&self) -> &str {
        self.0.first().map_or("args", |e| e.field.as_str())
    }
}

impl fmt::Display for ArgErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ArgErrors {}

/// Checks that JSON schema cannot express in the decoding subset.
type ExtraCheck = fn(&Value) -> Result<(), ArgErrors>;

struct Entry {
    spec: ToolSpec,
    input: jsonschema::Validator,
    output: jsonschema::Validator,
    extra: Option<ExtraCheck>,
}

/// The tools the agent knows, with compiled validators.
pub struct Registry {
    tools: BTreeMap<String, Entry>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("tools", &self.tools.keys().collect::<Vec<_>>()).finish()
    }
}

impl Registry {
    /// The built-in tools of this module.
    pub fn builtin() -> Registry {
        let mut r = Registry { tools: BTreeMap::new() };
        for (spec, extra) in builtin::specs() {
            r.insert(spec, extra).expect("built-in schemas compile");
        }
        r
    }

    /// Adds (or replaces) a tool; its schemas must compile. The executor runs only built-in
    /// tools; others are for the agent to run itself after the policy allowed them.
    pub fn register(&mut self, spec: ToolSpec) -> Result<(), String> {
        self.insert(spec, None)
    }

    fn insert(&mut self, spec: ToolSpec, extra: Option<ExtraCheck>) -> Result<(), String> {
        let compile = |s: &Value, which: &str| {
            jsonschema::validator_for(s).map_err(|e| format!("{}: {which} schema: {e}", spec.name))
        };
        let input = compile(&spec.input_schema, "input")?;
        let output = compile(&spec.output_schema, "output")?;
        self.tools.insert(spec.name.clone(), Entry { spec, input, output, extra });
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&ToolSpec> {
        self.tools.get(name).map(|e| &e.spec)
    }

    /// Every tool, by name.
    pub fn specs(&self) -> impl Iterator<Item = &ToolSpec> {
        self.tools.values().map(|e| &e.spec)
    }

    /// Validates `args` for `tool`; errors name the field.
    pub fn validate(&self, tool: &str, args: &Value) -> Result<(), ArgErrors> {
        let entry = self
            .tools
            .get(tool)
            .ok_or_else(|| ArgErrors::one("tool", format!("unknown tool `{}`", util::clip(tool, 64))))?;
        let errors: Vec<ArgError> =
            entry.input.iter_errors(args).map(|e| arg_error("args", &e, &entry.spec.input_schema)).collect();
        if !errors.is_empty() {
            return Err(ArgErrors(errors));
        }
        match entry.extra {
            Some(check) => check(args),
            None => Ok(()),
        }
    }

    /// Validates a tool's output (the executor checks every result against its schema).
    pub fn validate_output(&self, tool: &str, output: &Value) -> Result<(), ArgErrors> {
        let entry = self.tools.get(tool).ok_or_else(|| ArgErrors::one("tool", format!("unknown tool `{tool}`")))?;
        let errors: Vec<ArgError> =
            entry.output.iter_errors(output).map(|e| arg_error("output", &e, &entry.spec.output_schema)).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ArgErrors(errors))
        }
    }
}

/// `/argv/2` → `args.argv[2]`.
fn field_name(root: &str, location: &jsonschema::paths::Location) -> String {
    let mut s = root.to_string();
    for seg in location.iter() {
        match seg {
            jsonschema::paths::LocationSegment::Index(i) => s.push_str(&format!("[{i}]")),
            jsonschema::paths::LocationSegment::Property(p) => {
                s.push('.');
                s.push_str(&p);
            }
        }
    }
    s
}

fn article(t: &str) -> String {
    match t {
        "integer" | "object" | "array" => format!("an {t}"),
        "null" => "null".into(),
        other => format!("a {other}"),
    }
}

fn arg_error(root: &str, e: &jsonschema::ValidationError<'_>, schema: &Value) -> ArgError {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    let field = field_name(root, e.instance_path());
    let got = || match e.instance().as_ref() {
        Value::Null => "null".to_string(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    };
    let (field, message) = match e.kind() {
        K::Type { kind: TypeKind::Single(t) } => (field, format!("expected {}, got {}", article(t.as_str()), got())),
        K::Type { kind: TypeKind::Multiple(set) } => {
            let names: Vec<String> = set.iter().map(|t| article(t.as_str())).collect();
            (field, format!("expected {}, got {}", names.join(" or "), got()))
        }
        K::Required { property } => {
            let name = property.as_str().map(str::to_string).unwrap_or_else(|| property.to_string());
            (format!("{field}.{name}"), "required field is missing".to_string())
        }
        K::AdditionalProperties { unexpected } => {
            let known = schema_at(schema, e.instance_path())
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            let first = unexpected.first().cloned().unwrap_or_default();
            let also =
                if unexpected.len() > 1 { format!(" (and {})", unexpected[1..].join(", ")) } else { String::new() };
            (format!("{field}.{first}"), format!("unknown field{also}; known fields: {known}"))
        }
        K::Enum { options } => {
            let opts: Vec<String> = options
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect())
                .unwrap_or_default();
            (field, format!("expected one of {}", opts.join(", ")))
        }
        K::Constant { expected_value } => (field, format!("expected {expected_value}")),
        K::Minimum { limit } => (field, format!("must be at least {limit}")),
        K::Maximum { limit } => (field, format!("must be at most {limit}")),
        K::ExclusiveMinimum { limit } => (field, format!("must be greater than {limit}")),
        K::ExclusiveMaximum { limit } => (field, format!("must be less than {limit}")),
        K::MinLength { limit } => (field, format!("must be at least {limit} characters long")),
        K::MaxLength { limit } => (field, format!("must be at most {limit} characters long")),
        K::MinItems { limit } => (field, format!("must have at least {limit} items")),
        K::MaxItems { limit } => (field, format!("must have at most {limit} items")),
        _ => (field, util::clip(&e.to_string(), 200)),
    };
    ArgError { field, message }
}

/// The sub-schema describing the value at `location` (through `properties` and `items`).
fn schema_at<'a>(schema: &'a Value, location: &jsonschema::paths::Location) -> Option<&'a Value> {
    let mut s = schema;
    for seg in location.iter() {
        s = match seg {
            jsonschema::paths::LocationSegment::Property(p) => s
                .get("properties")
                .and_then(|props| props.get(p.as_ref()))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))?,
            jsonschema::paths::LocationSegment::Index(_) => s.get("items")?,
        };
    }
    Some(s)
}

// ---------------------------------------------------------------------------------------------
// Calls and results

/// One requested tool call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    /// A UUID v7, unique per call: ties policy, approval, execution and audit records together.
    pub id: String,
    pub tool: String,
    pub args: Value,
    /// Why the caller wants it (`--why TEXT`, or the model's stated reason).
    pub why: String,
}

impl ToolCall {
    pub fn new(tool: impl Into<String>, args: Value, why: impl Into<String>) -> ToolCall {
        ToolCall { id: uuid::Uuid::now_v7().to_string(), tool: tool.into(), args, why: why.into() }
    }
}

/// Why a call produced no output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum ToolError {
    UnknownTool(String),
    InvalidArgs(ArgErrors),
    /// The tool ran and failed (a missing file, a refused connection, a protected path...).
    Failed(String),
    /// The call did not finish within its timeout (the worker is abandoned, a child process
    /// group is killed).
    TimedOut {
        after_ms: u64,
    },
    /// The tool needs a delegate (service.*, memory.search) and none was given, or it is not
    /// a built-in tool the executor can run.
    Unavailable(String),
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::UnknownTool(t) => write!(f, "unknown tool `{t}`"),
            ToolError::InvalidArgs(e) => write!(f, "{e}"),
            ToolError::Failed(m) => write!(f, "{m}"),
            ToolError::TimedOut { after_ms } => write!(f, "timed out after {after_ms} ms"),
            ToolError::Unavailable(m) => write!(f, "unavailable: {m}"),
        }
    }
}

/// The outcome of one call, with how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub tool: String,
    pub outcome: Result<Value, ToolError>,
    pub duration: Duration,
}

impl ToolResult {
    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }

    /// `{"tool", "ok", "output" | "error": {"kind", "detail"}, "duration_ms"}`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "tool": self.tool, "ok": self.is_ok(), "duration_ms": self.duration.as_millis() as u64 });
        match &self.outcome {
            Ok(out) => v["output"] = out.clone(),
            Err(e) => {
                v["error"] = serde_json::to_value(e).unwrap_or(Value::Null);
                v["message"] = Value::String(e.to_string());
            }
        }
        v
    }
}

/// What service.* does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceAction {
    Status,
    Start,
    Stop,
    Restart,
    /// Restore the last configuration the service ran with (the agent keeps the files it
    /// replaces), and reload.
    Rollback,
}

/// One memory.search hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryHit {
    pub id: String,
    pub score: f64,
    pub text: String,
}

/// The tools that need agent state: the agent wires service.* to the control socket and
/// memory.search to the memory crate. Calls come from a worker thread and may block; the
/// executor's timeout bounds them.
pub trait Delegate: Send + Sync {
    /// service.status/start/stop/restart/rollback of service `name`: the control socket's
    /// answer (an object), or why it failed.
    fn service(&self, action: ServiceAction, name: &str) -> Result<Value, String>;
    /// The best `limit` memories for `query`.
    fn memory_search(&self, query: &str, limit: usize) -> Result<Vec<MemoryHit>, String>;
}

/// Settings of the executor.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Timeout of tools that have no timeout argument.
    pub default_timeout: Duration,
    /// Where `log.tail {"service": NAME}` finds `NAME.log` (`/var/log/ghost`).
    pub log_dir: PathBuf,
    /// Protected paths beyond the built-in ones (the constitution's `protected_paths`);
    /// fs.write checks them again after resolving symbolic links.
    pub protected_paths: Vec<String>,
    /// The directories disk.cleanup may empty of old files (`/tmp`, `/var/tmp`); `log_dir` is
    /// cleanable too, of rotated logs only.
    pub cleanable_dirs: Vec<PathBuf>,
    pub shell: ShellLimits,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            default_timeout: Duration::from_secs(10),
            log_dir: PathBuf::from("/var/log/ghost"),
            protected_paths: Vec::new(),
            cleanable_dirs: vec![PathBuf::from("/tmp"), PathBuf::from("/var/tmp")],
            shell: ShellLimits::default(),
        }
    }
}

/// Runs validated calls of the built-in tools, each on a worker thread with a timeout.
/// Policy is not its business: ask [`crate::policy::decide`] first.
#[derive(Clone)]
pub struct Executor {
    registry: Arc<Registry>,
    delegate: Option<Arc<dyn Delegate>>,
    config: Arc<ExecConfig>,
}

impl Executor {
    pub fn new(registry: Arc<Registry>, config: ExecConfig) -> Executor {
        Executor { registry, delegate: None, config: Arc::new(config) }
    }

    pub fn with_delegate(mut self, delegate: Arc<dyn Delegate>) -> Executor {
        self.delegate = Some(delegate);
        self
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The timeout of one call of `tool` with `args` (its own argument where it has one).
    pub fn timeout_for(&self, tool: &str, args: &Value) -> Duration {
        let n = |k: &str| args.get(k).and_then(Value::as_u64);
        match tool {
            // The shell enforces its own deadline and kills the group; this only bounds the
            // worker if something goes badly wrong.
            "shell.exec" => Duration::from_secs(n("timeout_s").unwrap_or(shell::DEFAULT_TIMEOUT_S) + 5),
            "net.check" => Duration::from_millis(n("timeout_ms").unwrap_or(net::DEFAULT_TIMEOUT_MS) + 1000),
            "sys.metrics" => self.config.default_timeout + Duration::from_millis(n("cpu_sample_ms").unwrap_or(0)),
            // disk.cleanup stops walking at default_timeout by itself and reports what it did.
            "disk.cleanup" => self.config.default_timeout + Duration::from_secs(2),
            "net.free_port" => {
                let grace = n("grace_ms").unwrap_or(net::DEFAULT_GRACE_MS).min(net::MAX_GRACE_MS);
                self.config.default_timeout + Duration::from_millis(grace + net::KILL_WAIT_MS)
            }
            _ => self.config.default_timeout,
        }
    }

    /// Validates and runs one call.
    pub fn call(&self, tool: &str, args: &Value) -> ToolResult {
        let started = Instant::now();
        let done = |outcome| ToolResult { tool: tool.to_string(), outcome, duration: started.elapsed() };
        if self.registry.get(tool).is_none() {
            return done(Err(ToolError::UnknownTool(tool.to_string())));
        }
        if let Err(e) = self.registry.validate(tool, args) {
            return done(Err(ToolError::InvalidArgs(e)));
        }
        if !BUILTIN_TOOLS.contains(&tool) {
            return done(Err(ToolError::Unavailable(format!("`{tool}` is not a built-in tool"))));
        }
        let timeout = self.timeout_for(tool, args);
        let (tx, rx) = mpsc::channel();
        let (me, name, a) = (self.clone(), tool.to_string(), args.clone());
        let spawned = std::thread::Builder::new().name(format!("tool {tool}")).spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| me.run(&name, &a)));
            let _ = tx.send(r.unwrap_or_else(|_| Err(ToolError::Failed("the tool panicked".into()))));
        });
        if let Err(e) = spawned {
            return done(Err(ToolError::Failed(format!("cannot start a worker: {e}"))));
        }
        let outcome = match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => Err(ToolError::TimedOut { after_ms: timeout.as_millis() as u64 }),
        };
        let outcome = outcome.and_then(|out| match self.registry.validate_output(tool, &out) {
            Ok(()) => Ok(out),
            Err(e) => Err(ToolError::Failed(format!("the tool's output does not match its schema: {e}"))),
        });
        done(outcome)
    }

    fn run(&self, tool: &str, args: &Value) -> Result<Value, ToolError> {
        let fail = ToolError::Failed;
        let delegate = || {
            self.delegate
                .clone()
                .ok_or_else(|| ToolError::Unavailable(format!("{tool} needs the agent (no delegate configured)")))
        };
        let service = |action| {
            let name = args["name"].as_str().unwrap_or_default();
            delegate()?.service(action, name).map_err(fail)
        };
        match tool {
            "fs.read" => fs::read(args).map_err(fail),
            "fs.write" => fs::write(args, &self.config.protected_paths).map_err(fail),
            "fs.list" => fs::list(args).map_err(fail),
            "process.list" => process::list(args).map_err(fail),
            "process.kill" => process::kill(args).map_err(fail),
            "service.status" => service(ServiceAction::Status),
            "service.start" => service(ServiceAction::Start),
            "service.stop" => service(ServiceAction::Stop),
            "service.restart" => service(ServiceAction::Restart),
            "service.rollback" => service(ServiceAction::Rollback),
            "log.tail" => logtail::tail(args, &self.config.log_dir).map_err(fail),
            "sys.metrics" => metrics::collect(args).map_err(fail),
            "net.check" => net::check(args).map_err(fail),
            "net.free_port" => net::free_port(args).map_err(fail),
            "disk.cleanup" => disk::cleanup(args, &self.config),
            "memory.search" => {
                let q = args["query"].as_str().unwrap_or_default();
                let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
                let hits = delegate()?.memory_search(q, limit).map_err(fail)?;
                Ok(json!({ "results": hits }))
            }
            "shell.exec" => shell::exec(args, &self.config.shell).map_err(fail),
            other => Err(ToolError::Unavailable(format!("`{other}` has no implementation"))),
        }
    }
}

#[cfg(test)]
mod tests;
