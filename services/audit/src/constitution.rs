//! `/etc/ghost/constitution.toml`: the agent's directives, the tools it may use, its security
//! mode, the paranoid allow-list and the resource bounds it cannot exceed.
//!
//! ```toml
//! mode = "normal"                  # safe | normal | paranoid | trusted; absent: ghost.toml's `security`
//! allowed_tools = ["fs.read", ...] # absent: every built-in tool
//! paranoid_allow = ["fs.read", "shell.exec:uptime", "fs.read:/var/log/"]
//! protected_paths = ["/boot", "/efi"]   # added to the built-in ones (/boot, /efi, /boot/efi, ...)
//!
//! [bounds]
//! beats_per_minute = 1200
//! model_tokens_per_hour = 200000
//! actions_per_hour = 120
//!
//! [[directive]]
//! text = "Never destroy user data."
//! priority = 100                   # higher first
//! immutable = true                 # the agent may not change or drop it
//! ```
//!
//! Keys are closed. Every problem is one line `PATH: key: reason`; a bad directive is skipped
//! (the others load), a bad top-level value keeps its default, an unknown key is ignored. A
//! file that is not TOML at all leaves the whole constitution at its defaults.
//!
//! Paranoid allow-list entries are `TOOL` (every call of it) or `TOOL:PREFIX`: for
//! `shell.exec` the normalised command must start with PREFIX at a word boundary, for the
//! fs.*/log.tail/disk.cleanup tools the path must lie under PREFIX, for service.* the name
//! must equal it, for net.free_port the port.

use crate::policy::Mode;
use crate::tools::BUILTIN_TOOLS;
use serde::Serialize;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The constitution shipped in the image (`initramfs/etc/ghost/constitution.toml`) and used
/// when the file is missing.
pub const DEFAULT_TOML: &str = include_str!("../constitution.toml");

/// One directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    pub text: String,
    /// Higher is more important; directives are kept sorted by it, highest first.
    pub priority: i64,
    pub immutable: bool,
}

/// The resource bounds the agent cannot exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    pub beats_per_minute: u64,
    pub model_tokens_per_hour: u64,
    pub actions_per_hour: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds { beats_per_minute: 1200, model_tokens_per_hour: 200_000, actions_per_hour: 120 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Constitution {
    pub directives: Vec<Directive>,
    /// None: the system's `security` setting from ghost.toml applies.
    pub mode: Option<Mode>,
    pub allowed_tools: Vec<String>,
    pub paranoid_allow: Vec<String>,
    /// Extra protected paths (writes and removals are denied), beyond the built-in ones.
    pub protected_paths: Vec<String>,
    pub bounds: Bounds,
}

/// A constitution together with the complaints found while reading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub constitution: Constitution,
    pub problems: Vec<String>,
}

const KNOWN_KEYS: &str = "mode, allowed_tools, paranoid_allow, protected_paths, bounds, directive";

impl Default for Constitution {
    /// The built-in default ([`DEFAULT_TOML`]).
    fn default() -> Self {
        let loaded = Constitution::parse(DEFAULT_TOML, "default constitution");
        debug_assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        loaded.constitution
    }
}

impl Constitution {
    /// The fallback for a file that is unreadable or not TOML: no directives, every tool, the
    /// read-only paranoid list, default bounds.
    fn bare() -> Constitution {
        Constitution {
            directives: Vec::new(),
            mode: None,
            allowed_tools: BUILTIN_TOOLS.iter().map(|s| s.to_string()).collect(),
            paranoid_allow: READ_ONLY_TOOLS.iter().map(|s| s.to_string()).collect(),
            protected_paths: Vec::new(),
            bounds: Bounds::default(),
        }
    }

    /// Reads `path`; a missing file is the built-in default (said once).
    pub fn load(path: &Path) -> Loaded {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Loaded {
                constitution: Constitution::default(),
                problems: vec![format!("{}: not found; using the built-in constitution", path.display())],
            },
            Err(e) => Loaded {
                constitution: Constitution::default(),
                problems: vec![format!("{}: cannot read ({e}); using the built-in constitution", path.display())],
            },
        }
    }

    /// Parses the text of a constitution; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Loaded {
        let mut c = Constitution::bare();
        let mut problems = Vec::new();
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{origin}: not valid TOML, using defaults: {}", ghost_proto::one_line(&e.to_string())));
                return Loaded { constitution: c, problems };
            }
        };
        for (key, value) in table {
            let mut bad = |reason: String| problems.push(format!("{origin}: {key}: {reason}"));
            match key.as_str() {
                "mode" => match value.as_str().map(Mode::parse) {
                    Some(Some(m)) => c.mode = Some(m),
                    _ => bad(format!(
                        "expected one of safe, normal, paranoid, trusted, got {}; using ghost.toml's",
                        show(&value)
                    )),
                },
                "allowed_tools" => match string_list(&value) {
                    Ok(list) => {
                        let mut kept = Vec::new();
                        for t in list {
                            if BUILTIN_TOOLS.contains(&t.as_str()) {
                                kept.push(t);
                            } else {
                                bad(format!("unknown tool `{t}` (known: {}); skipped", BUILTIN_TOOLS.join(", ")));
                            }
                        }
                        c.allowed_tools = kept;
                    }
                    Err(r) => bad(format!("{r}; using every tool")),
                },
                "paranoid_allow" => match string_list(&value) {
                    Ok(list) => {
                        let mut kept = Vec::new();
                        for entry in list {
                            let tool = entry.split_once(':').map_or(entry.as_str(), |(t, _)| t);
                            if !BUILTIN_TOOLS.contains(&tool) {
                                bad(format!("`{entry}`: unknown tool `{tool}`; skipped"));
                            } else if entry.ends_with(':') {
                                bad(format!("`{entry}`: empty prefix; skipped"));
                            } else {
                                kept.push(entry);
                            }
                        }
                        c.paranoid_allow = kept;
                    }
                    Err(r) => bad(format!("{r}; using the read-only tools")),
                },
                "protected_paths" => match string_list(&value) {
                    Ok(list) => {
                        for p in list {
                            if p.starts_with('/') && p.len() > 1 {
                                c.protected_paths.push(p);
                            } else {
                                bad(format!("`{p}` is not an absolute path below /; skipped"));
                            }
                        }
                    }
                    Err(r) => bad(r),
                },
                "bounds" => match value {
                    toml::Value::Table(t) => {
                        for (k, v) in t {
                            let slot = match k.as_str() {
                                "beats_per_minute" => &mut c.bounds.beats_per_minute,
                                "model_tokens_per_hour" => &mut c.bounds.model_tokens_per_hour,
                                "actions_per_hour" => &mut c.bounds.actions_per_hour,
                                _ => {
                                    problems.push(format!(
                                        "{origin}: bounds.{k}: unknown key (known: beats_per_minute, model_tokens_per_hour, actions_per_hour); ignored"
                                    ));
                                    continue;
                                }
                            };
                            match v.as_integer() {
                                Some(n) if n >= 0 => *slot = n as u64,
                                _ => problems.push(format!(
                                    "{origin}: bounds.{k}: expected a non-negative integer, got {}; using {}",
                                    show(&v),
                                    *slot
                                )),
                            }
                        }
                    }
                    other => bad(format!("expected a table, got {}; using the default bounds", other.type_str())),
                },
                "directive" => match value {
                    toml::Value::Array(items) => {
                        for (i, item) in items.into_iter().enumerate() {
                            match directive(item) {
                                Ok(d) => c.directives.push(d),
                                Err((k, reason)) => {
                                    problems.push(format!("{origin}: directive[{i}]{k}: {reason}; directive skipped"))
                                }
                            }
                        }
                    }
                    other => bad(format!("expected [[directive]] tables, got {}", other.type_str())),
                },
                _ => bad(format!("unknown key (known: {KNOWN_KEYS}); ignored")),
            }
        }
        c.directives.sort_by_key(|d| std::cmp::Reverse(d.priority));
        Loaded { constitution: c, problems }
    }

    /// The mode in force: the constitution's, else the system's (`security` in ghost.toml).
    pub fn effective_mode(&self, system: Mode) -> Mode {
        self.mode.unwrap_or(system)
    }

    pub fn allows_tool(&self, tool: &str) -> bool {
        self.allowed_tools.iter().any(|t| t == tool)
    }

    /// What a proposed replacement (written by the agent itself) would break: an immutable
    /// directive changed or dropped, a bound raised, a tool added to `allowed_tools` or the
    /// paranoid allow-list, a protected path removed, a mode made less strict. Empty: the
    /// change keeps within this constitution.
    pub fn violations_of(&self, proposed: &Constitution) -> Vec<String> {
        let mut v = Vec::new();
        for d in self.directives.iter().filter(|d| d.immutable) {
            if !proposed.directives.iter().any(|p| p == d) {
                v.push(format!("immutable directive `{}` changed or removed", crate::util::clip(&d.text, 60)));
            }
        }
        let b = (&self.bounds, &proposed.bounds);
        for (name, old, new) in [
            ("beats_per_minute", b.0.beats_per_minute, b.1.beats_per_minute),
            ("model_tokens_per_hour", b.0.model_tokens_per_hour, b.1.model_tokens_per_hour),
            ("actions_per_hour", b.0.actions_per_hour, b.1.actions_per_hour),
        ] {
            if new > old {
                v.push(format!("bounds.{name} raised from {old} to {new}"));
            }
        }
        for t in &proposed.allowed_tools {
            if !self.allows_tool(t) {
                v.push(format!("allowed_tools gains `{t}`"));
            }
        }
        for t in &proposed.paranoid_allow {
            if !self.paranoid_allow.contains(t) {
                v.push(format!("paranoid_allow gains `{t}`"));
            }
        }
        for p in &self.protected_paths {
            if !proposed.protected_paths.contains(p) {
                v.push(format!("protected path `{p}` removed"));
            }
        }
        let strict = |m: Option<Mode>| m.map(Mode::strictness);
        if let (Some(old), new) = (strict(self.mode), strict(proposed.mode)) {
            if new.is_none_or(|n| n < old) {
                v.push(format!("mode relaxed from {:?} to {:?}", self.mode.unwrap(), proposed.mode));
            }
        }
        v
    }
}

/// The tools that change nothing: the default paranoid allow-list.
pub const READ_ONLY_TOOLS: &[&str] =
    &["fs.read", "fs.list", "process.list", "service.status", "log.tail", "sys.metrics", "net.check", "memory.search"];

fn string_list(v: &toml::Value) -> Result<Vec<String>, String> {
    let toml::Value::Array(items) = v else {
        return Err(format!("expected an array of strings, got {}", v.type_str()));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_str().map(str::to_string).ok_or_else(|| format!("[{i}]: expected a string, got {}", show(x)))
        })
        .collect()
}

fn directive(item: toml::Value) -> Result<Directive, (String, String)> {
    let toml::Value::Table(t) = item else {
        return Err((String::new(), format!("expected a table, got {}", item.type_str())));
    };
    let mut text = None;
    let mut priority = 0i64;
    let mut immutable = false;
    for (k, v) in t {
        match k.as_str() {
            "text" => match v.as_str() {
                Some(s) if !s.trim().is_empty() => text = Some(s.trim().to_string()),
                _ => return Err((".text".into(), format!("expected a non-empty string, got {}", show(&v)))),
            },
            "priority" => {
                priority =
                    v.as_integer().ok_or((".priority".to_string(), format!("expected an integer, got {}", show(&v))))?
            }
            "immutable" => {
                immutable = v
                    .as_bool()
                    .ok_or((".immutable".to_string(), format!("expected true or false, got {}", show(&v))))?
            }
            _ => return Err((format!(".{k}"), "unknown key (known: text, priority, immutable)".into())),
        }
    }
    let text = text.ok_or((".text".to_string(), "missing".to_string()))?;
    Ok(Directive { text, priority, immutable })
}

/// A value as a message shows it: short, on one line.
fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("\"{}\"", crate::util::clip(s, 40)),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}


// ---------------------------------------------------------------------------------------------
// Rate limiting

/// A monotonic clock in milliseconds, injectable for tests.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The real monotonic clock (milliseconds since it was made).
#[derive(Debug, Clone)]
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// A clock that moves only when told to (shared between clones).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The bounded resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Heartbeats, per minute.
    Beats,
    /// Model tokens, per hour.
    ModelTokens,
    /// Tool calls that act (every executed call), per hour.
    Actions,
}

impl Resource {
    pub fn window(self) -> Duration {
        match self {
            Resource::Beats => Duration::from_secs(60),
            Resource::ModelTokens | Resource::Actions => Duration::from_secs(3600),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Resource::Beats => "beats_per_minute",
            Resource::ModelTokens => "model_tokens_per_hour",
            Resource::Actions => "actions_per_hour",
        }
    }
}

/// A refusal from the [`RateLimiter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub resource: Resource,
    pub limit: u64,
    pub used: u64,
    pub requested: u64,
    /// When enough of the window will have passed for this request to fit.
    pub retry_after: Duration,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bound reached ({} used of {}, {} requested); retry in {} s",
            self.resource.name(),
            self.used,
            self.limit,
            self.requested,
            self.retry_after.as_secs_f64().ceil() as u64
        )
    }
}

/// Sliding-window limits for the constitution's bounds. Usage is kept in one-second buckets,
/// so memory stays bounded by the window length whatever the rate.
pub struct RateLimiter<C: Clock = MonotonicClock> {
    bounds: Bounds,
    clock: C,
    windows: [VecDeque<(u64, u64)>; 3],
}

impl RateLimiter<MonotonicClock> {
    pub fn new(bounds: Bounds) -> Self {
        Self::with_clock(bounds, MonotonicClock::default())
    }
}

impl<C: Clock> RateLimiter<C> {
    pub fn with_clock(bounds: Bounds, clock: C) -> Self {
        RateLimiter { bounds, clock, windows: Default::default() }
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// New bounds (a reloaded constitution); usage so far is kept.
    pub fn set_bounds(&mut self, bounds: Bounds) {
        self.bounds = bounds;
    }

    fn limit(&self, r: Resource) -> u64 {
        match r {
            Resource::Beats => self.bounds.beats_per_minute,
            Resource::ModelTokens => self.bounds.model_tokens_per_hour,
            Resource::Actions => self.bounds.actions_per_hour,
        }
    }

    fn slot(r: Resource) -> usize {
        r as usize
    }

    fn prune(&mut self, r: Resource, now: u64) {
        let window = r.window().as_millis() as u64;
        let w = &mut self.windows[Self::slot(r)];
        while let Some(&(t, _)) = w.front() {
            if t + window <= now {
                w.pop_front();
            } else {
                break;
            }
        }
    }

    /// How much of `r` has been used within its window.
    pub fn used(&mut self, r: Resource) -> u64 {
        let now = self.clock.now_ms();
        self.prune(r, now);
        self.windows[Self::slot(r)].iter().map(|&(_, n)| n).sum()
    }

    /// How much of `r` is left within its window.
    pub fn remaining(&mut self, r: Resource) -> u64 {
        self.limit(r).saturating_sub(self.used(r))
    }

    /// Checks that `amount` of `r` fits, without using it.
    pub fn check(&mut self, r: Resource, amount: u64) -> Result<(), Exceeded> {
        let now = self.clock.now_ms();
        self.prune(r, now);
        let limit = self.limit(r);
        let w = &self.windows[Self::slot(r)];
        let used: u64 = w.iter().map(|&(_, n)| n).sum();
        if used.saturating_add(amount) <= limit {
            return Ok(());
        }
        // The earliest time at which enough old usage has left the window.
        let window = r.window().as_millis() as u64;
        let mut freed = 0u64;
        let mut retry = r.window();
        if amount <= limit {
            for &(t, n) in w {
                freed += n;
                if used - freed + amount <= limit {
                    retry = Duration::from_millis((t + window).saturating_sub(now));
                    break;
                }
            }
        }
        Err(Exceeded { resource: r, limit, used, requested: amount, retry_after: retry })
    }

    /// Uses `amount` of `r` if it fits; refuses (using nothing) if it does not.
    pub fn try_acquire(&mut self, r: Resource, amount: u64) -> Result<(), Exceeded> {
        self.check(r, amount)?;
        self.record(r, amount);
        Ok(())
    }

    /// Counts usage that already happened (model tokens are known only after a reply).
    pub fn record(&mut self, r: Resource, amount: u64) {
        if amount == 0 {
            return;
        }
        let now = self.clock.now_ms();
        self.prune(r, now);
        let bucket = now / 1000 * 1000;
        let w = &mut self.windows[Self::slot(r)];
        match w.back_mut() {
            Some((t, n)) if *t == bucket => *n = n.saturating_add(amount),
            _ => w.push_back((bucket, amount)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_constitution_parses_cleanly() {
        let loaded = Constitution::parse(DEFAULT_TOML, "constitution.toml");
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let c = loaded.constitution;
        assert!(c.directives.len() >= 3);
        assert!(c.directives.windows(2).all(|w| w[0].priority >= w[1].priority));
        assert!(c.directives.iter().any(|d| d.immutable));
        for t in BUILTIN_TOOLS {
            assert!(c.allows_tool(t), "{t}");
        }
        assert_eq!(c, Constitution::default());
    }

    #[test]
    fn full_file_is_read() {
        let text = r#"
mode = "paranoid"
allowed_tools = ["fs.read", "shell.exec"]
paranoid_allow = ["fs.read:/var/log/", "shell.exec:uptime"]
protected_paths = ["/srv/data"]
[bounds]
beats_per_minute = 6
model_tokens_per_hour = 1000
actions_per_hour = 10
[[directive]]
text = "Keep redis up."
priority = 5
[[directive]]
text = "Never lose data."
priority = 50
immutable = true
"#;
        let l = Constitution::parse(text, "/etc/ghost/constitution.toml");
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        let c = l.constitution;
        assert_eq!(c.mode, Some(Mode::Paranoid));
        assert_eq!(c.effective_mode(Mode::Trusted), Mode::Paranoid);
        assert_eq!(c.allowed_tools, ["fs.read", "shell.exec"]);
        assert!(!c.allows_tool("fs.write"));
        assert_eq!(c.paranoid_allow, ["fs.read:/var/log/", "shell.exec:uptime"]);
        assert_eq!(c.protected_paths, ["/srv/data"]);
        assert_eq!(c.bounds, Bounds { beats_per_minute: 6, model_tokens_per_hour: 1000, actions_per_hour: 10 });
        assert_eq!(c.directives[0], Directive { text: "Never lose data.".into(), priority: 50, immutable: true });
        assert_eq!(c.directives[1].text, "Keep redis up.");
        assert!(!c.directives[1].immutable);
    }

    #[test]
    fn bad_directive_is_skipped_with_file_and_key_and_the_rest_loads() {
        let text = r#"
mode = "lax"
colour = "blue"
allowed_tools = ["fs.read", "fs.raed"]
[bounds]
actions_per_hour = -3
beats = 4
[[directive]]
text = "Good one."
priority = 1
[[directive]]
text = "Bad priority."
priority = "high"
[[directive]]
txt = "Typo in key."
[[directive]]
priority = 3
"#;
        let l = Constitution::parse(text, "/etc/ghost/constitution.toml");
        let p = l.problems.join("\n");
        for needle in [
            "/etc/ghost/constitution.toml: mode: expected one of safe, normal, paranoid, trusted",
            "/etc/ghost/constitution.toml: colour: unknown key",
            "/etc/ghost/constitution.toml: allowed_tools: unknown tool `fs.raed`",
            "/etc/ghost/constitution.toml: bounds.actions_per_hour: expected a non-negative integer",
            "/etc/ghost/constitution.toml: bounds.beats: unknown key",
            "/etc/ghost/constitution.toml: directive[1].priority: expected an integer",
            "/etc/ghost/constitution.toml: directive[2].txt: unknown key",
            "/etc/ghost/constitution.toml: directive[3].text: missing",
        ] {
            assert!(p.contains(needle), "missing `{needle}` in\n{p}");
        }
        assert_eq!(l.problems.len(), 8, "{p}");
        let c = l.constitution;
        assert_eq!(c.mode, None);
        assert_eq!(c.allowed_tools, ["fs.read"]);
        assert_eq!(c.bounds.actions_per_hour, Bounds::default().actions_per_hour);
        assert_eq!(c.directives.len(), 1);
        assert_eq!(c.directives[0].text, "Good one.");
    }

    #[test]
    fn not_toml_and_missing_file_fall_back() {
        let l = Constitution::parse("mode = \n", "c.toml");
        assert!(l.problems[0].starts_with("c.toml: not valid TOML"), "{:?}", l.problems);
        assert!(l.constitution.directives.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let l = Constitution::load(&dir.path().join("constitution.toml"));
        assert!(l.problems[0].contains("not found"));
        assert_eq!(l.constitution, Constitution::default());
    }

    #[test]
    fn self_amendments_cannot_break_immutable_directives_or_raise_bounds() {
        let c = Constitution::default();
        let mut p = c.clone();
        assert!(c.violations_of(&p).is_empty());
        p.directives.retain(|d| !d.immutable);
        p.bounds.actions_per_hour += 1;
        let v = c.violations_of(&p).join("\n");
        assert!(v.contains("immutable directive"), "{v}");
        assert!(v.contains("bounds.actions_per_hour raised"), "{v}");
        let mut q = c.clone();
        q.directives.retain(|d| d.immutable);
        q.bounds.actions_per_hour -= 1;
        assert!(c.violations_of(&q).is_empty(), "dropping mutable directives and lowering bounds is fine");
    }

    #[test]
    fn rate_limiter_refuses_beyond_the_bounds_and_recovers_as_the_window_slides() {
        let clock = ManualClock::default();
        let bounds = Bounds { beats_per_minute: 3, model_tokens_per_hour: 1000, actions_per_hour: 2 };
        let mut rl = RateLimiter::with_clock(bounds, clock.clone());
        for _ in 0..3 {
            rl.try_acquire(Resource::Beats, 1).unwrap();
            clock.advance(Duration::from_secs(10));
        }
        let e = rl.try_acquire(Resource::Beats, 1).unwrap_err();
        assert_eq!((e.resource, e.limit, e.used), (Resource::Beats, 3, 3));
        assert_eq!(e.retry_after, Duration::from_secs(30), "first beat at t=0 leaves the window at t=60");
        assert!(e.to_string().contains("beats_per_minute bound reached"), "{e}");
        clock.advance(Duration::from_secs(30));
        rl.try_acquire(Resource::Beats, 1).unwrap();

        rl.try_acquire(Resource::Actions, 1).unwrap();
        rl.try_acquire(Resource::Actions, 1).unwrap();
        assert!(rl.try_acquire(Resource::Actions, 1).is_err());
        assert_eq!(rl.remaining(Resource::Actions), 0);
        clock.advance(Duration::from_secs(3599));
        assert!(rl.check(Resource::Actions, 1).is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(rl.remaining(Resource::Actions), 2);

        rl.record(Resource::ModelTokens, 900);
        let e = rl.try_acquire(Resource::ModelTokens, 200).unwrap_err();
        assert_eq!(e.used, 900);
        assert_eq!(rl.used(Resource::ModelTokens), 900, "a refusal uses nothing");
        rl.try_acquire(Resource::ModelTokens, 100).unwrap();
        let e = rl.check(Resource::ModelTokens, 5000).unwrap_err();
        assert_eq!(e.retry_after, Resource::ModelTokens.window(), "more than the whole bound never fits");
    }

    #[test]
    fn rate_limiter_memory_is_bounded_by_the_window() {
        let clock = ManualClock::default();
        let mut rl =
            RateLimiter::with_clock(Bounds { model_tokens_per_hour: u64::MAX, ..Bounds::default() }, clock.clone());
        for _ in 0..20_000 {
            rl.record(Resource::ModelTokens, 1);
            clock.advance(Duration::from_millis(100));
        }
        assert!(rl.windows[Resource::ModelTokens as usize].len() <= 2000);
        assert_eq!(rl.used(Resource::ModelTokens), 20_000);
    }
}
