//! `ghostctl import-unit`: a systemd `.service` file turned into a ghost service file. Every key
//! that is not carried over, or only in part, is listed with the reason; nothing is dropped
//! silently.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::service_toml::ServiceToml;
use crate::unit_file::{Entry, UnitFile};
use crate::unit_reasons::why_not;
use crate::unit_values::{byte_size, ghost_signal, ghost_size, percent, time_span_us, Limit};
use crate::unit_words::{expand_vars, split, Specifiers};

/// Where systemd looks for a program named without a path, in its order.
pub const SEARCH_PATH: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// One key (or the part of one) that the ghost service file does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCarried {
    pub line: usize,
    pub section: String,
    pub key: String,
    pub value: String,
    pub why: String,
}

impl fmt::Display for NotCarried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}={} ({})", self.section, self.key, self.value, self.why)
    }
}

/// The result of one import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The ghost service name (the unit's file name without `.service`).
    pub name: String,
    pub service: ServiceToml,
    /// In the unit file's order.
    pub not_carried: Vec<NotCarried>,
    /// What will likely keep the service from working as it did under systemd.
    pub warnings: Vec<String>,
    /// Carried over, but worth knowing.
    pub notes: Vec<String>,
}

impl Imported {
    /// The service file, with what was not carried over as comments on top.
    pub fn to_toml(&self, origin: &str) -> String {
        let mut header = vec![
            format!("{}: imported from {origin} by `ghostctl import-unit`", self.name),
            format!("(install it as /etc/ghost/services/{}.toml)", self.name),
        ];
        let mut block = |title: &str, lines: Vec<String>| {
            if !lines.is_empty() {
                header.push(String::new());
                header.push(title.to_string());
                header.extend(lines.into_iter().map(|l| format!("  {l}")));
            }
        };
        block("Not carried over (ghost has no equivalent, or only in part):", self.not_carried.iter().map(|n| n.to_string()).collect());
        block("Warnings:", self.warnings.clone());
        block("Notes:", self.notes.clone());
        self.service.to_toml(&header)
    }

    /// The lines for stderr: `not carried over: ...`, `warning: ...`, `note: ...`.
    pub fn report(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.not_carried.iter().map(|n| format!("not carried over: {n}")).collect();
        lines.extend(self.warnings.iter().map(|w| format!("warning: {w}")));
        lines.extend(self.notes.iter().map(|n| format!("note: {n}")));
        lines
    }
}

/// `(ghost name, unit name)` from the unit's file name: `redis-server.service` gives
/// `redis-server`; a template `getty@.service` gives `getty`.
pub fn names_from_path(path: &Path) -> Result<(String, String), String> {
    let file = path.file_name().and_then(|f| f.to_str()).ok_or_else(|| format!("{}: not a unit file name", path.display()))?;
    let stem = file.strip_suffix(".service").filter(|s| !s.is_empty()).ok_or_else(|| format!("{}: import-unit reads .service units only", path.display()))?;
    Ok((stem.trim_end_matches('@').to_string(), file.to_string()))
}

/// Converts the text of the unit `unit_name`; `program_exists` answers for the search of a
/// program named without a path. Fails only when there is nothing to run.
pub fn import_unit(text: &str, unit_name: &str, program_exists: &dyn Fn(&Path) -> bool) -> Result<Imported, String> {
    let (name, _) = names_from_path(Path::new(unit_name))?;
    let unit = UnitFile::parse(text);
    let mut im = Importer { spec: Specifiers { unit: unit_name.to_string() }, out: ServiceToml::default(), not_carried: Vec::new(), warnings: Vec::new(), notes: Vec::new() };
    for g in &unit.garbage {
        im.warnings.push(format!("line {}: `{}` is not a section, an assignment or a comment; ignored", g.line, g.text));
    }
    if unit_name.contains("@.") {
        im.notes.push(format!("{unit_name} is a template: %i is empty here; import an instance file (name@instance.service) to fill it in"));
    }

    // systemd semantics: a list key accumulates and an empty assignment clears it; a single-value
    // key takes its last assignment, and an empty one restores the default.
    let mut single: BTreeMap<&str, &Entry> = BTreeMap::new();
    let mut lists: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in &unit.entries {
        let key = e.key.as_str();
        match (e.section.as_str(), key) {
            ("Unit", "After" | "Requires") | ("Service", "Environment" | "ExecStart") => {
                let list = lists.entry(key).or_default();
                if e.value.is_empty() {
                    list.clear();
                } else {
                    list.push(e);
                }
            }
            ("Unit", "Description")
            | (
                "Service",
                "Type" | "User" | "Group" | "WorkingDirectory" | "Restart" | "RestartSec" | "RestartMaxDelaySec" | "WatchdogSec" | "MemoryMax" | "MemoryLimit"
                | "CPUQuota" | "TasksMax" | "LimitNOFILE" | "TimeoutStopSec" | "TimeoutSec" | "KillSignal",
            ) => {
                if e.value.is_empty() {
                    single.remove(key);
                } else {
                    single.insert(key, e);
                }
            }
            (section, key) => im.skip(e, why_not(section, key)),
        }
    }
    let list = |k: &str| lists.get(k).cloned().unwrap_or_default();

    if let Some(e) = single.get("Description") {
        im.out.description = Some(im.expand(e, &e.value));
    }
    im.environment(&list("Environment"));
    im.exec_start(&list("ExecStart"), program_exists)?;
    im.service_type(single.get("Type").copied());
    for (key, slot) in [("User", 0), ("Group", 1)] {
        if let Some(e) = single.get(key) {
            let v = im.expand(e, &e.value);
            *if slot == 0 { &mut im.out.user } else { &mut im.out.group } = Some(v);
        }
    }
    if let Some(e) = single.get("WorkingDirectory") {
        im.working_dir(e);
    }
    im.out.requires = im.dependencies(&list("Requires"));
    im.out.after = im.dependencies(&list("After"));
    im.restart(single.get("Restart").copied(), single.get("RestartSec").copied(), single.get("RestartMaxDelaySec").copied());
    if let Some(e) = single.get("WatchdogSec") {
        im.watchdog(e);
    }
    im.memory(single.get("MemoryMax").copied(), single.get("MemoryLimit").copied());
    if let Some(e) = single.get("CPUQuota") {
        im.cpu_quota(e);
    }
    if let Some(e) = single.get("TasksMax") {
        im.tasks_max(e);
    }
    if let Some(e) = single.get("LimitNOFILE") {
        im.nofile(e);
    }
    im.stop_timeout(single.get("TimeoutStopSec").copied(), single.get("TimeoutSec").copied());
    if let Some(e) = single.get("KillSignal") {
        match ghost_signal(&e.value) {
            Some(sig) => im.out.stop_signal = Some(sig),
            None => im.skip(e, "ghost's stop_signal is one of TERM, INT, QUIT, HUP, KILL, USR1, USR2, WINCH, PWR"),
        }
    }
    im.not_carried.sort_by_key(|n| n.line);
    Ok(Imported { name, service: im.out, not_carried: im.not_carried, warnings: im.warnings, notes: im.notes })
}

struct Importer {
    spec: Specifiers,
    out: ServiceToml,
    not_carried: Vec<NotCarried>,
    warnings: Vec<String>,
    notes: Vec<String>,
}

impl Importer {
    fn skip(&mut self, e: &Entry, why: impl Into<String>) {
        self.skip_value(e, &e.value, why);
    }

    /// Lists one part of an assignment (one word of After=, one variable).
    fn skip_value(&mut self, e: &Entry, value: &str, why: impl Into<String>) {
        self.not_carried.push(NotCarried { line: e.line, section: e.section.clone(), key: e.key.clone(), value: value.to_string(), why: why.into() });
    }

    /// `%` specifiers resolved; those that only systemd knows at run time are listed.
    fn expand(&mut self, e: &Entry, s: &str) -> String {
        let (v, unknown) = self.spec.expand(s);
        if !unknown.is_empty() {
            self.skip(e, format!("in part: {} is filled in by systemd at run time and stays as written", unknown.join(", ")));
        }
        v
    }

    fn environment(&mut self, entries: &[&Entry]) {
        for e in entries {
            let value = self.expand(e, &e.value);
            match split(&value) {
                Ok(words) => {
                    for w in words {
                        match w.split_once('=') {
                            Some((k, v)) if !k.is_empty() => {
                                self.out.env.insert(k.to_string(), v.to_string());
                            }
                            _ => self.skip_value(e, &w, "not a NAME=VALUE assignment"),
                        }
                    }
                }
                Err(why) => self.skip(e, why),
            }
        }
    }

    fn exec_start(&mut self, entries: &[&Entry], program_exists: &dyn Fn(&Path) -> bool) -> Result<(), String> {
        let Some(e) = entries.first() else {
            return Err("the unit has no ExecStart=: there is nothing for ghost to run".into());
        };
        for extra in &entries[1..] {
            self.skip(extra, "ghost runs one command per service; only the first ExecStart= is carried over");
        }
        let fail = |why: String| format!("[Service] ExecStart= (line {}): {why}", e.line);
        let raw = e.value.as_str();
        let prefix_len = raw.find(|c: char| !"-@:+!".contains(c)).unwrap_or(raw.len());
        let (prefixes, command) = raw.split_at(prefix_len);
        let command = self.expand(e, command);
        let mut words = split(&command).map_err(fail)?;
        if let Some(at) = words.iter().position(|w| w == ";") {
            let rest = words.split_off(at);
            self.skip_value(e, &rest[1..].join(" "), "ghost runs one command per service; the commands after `;` are not carried over");
        }
        let mut dropped = Vec::new();
        for p in prefixes.chars() {
            match p {
                '-' => dropped.push("`-`: a failing exit counted as success; ghost counts it as a failure".to_string()),
                '@' if words.len() >= 2 => {
                    let argv0 = words.remove(1);
                    dropped.push(format!("`@`: argv[0] was `{argv0}`; ghost passes the program path as argv[0]"));
                }
                '@' => return Err(fail("the `@` prefix needs a program and an argv[0]".into())),
                '+' => dropped.push("`+`: it ran with full privileges whatever User= said; ghost runs it as `user`".to_string()),
                '!' if !dropped.iter().any(|d| d.starts_with("`!`")) => {
                    dropped.push("`!`: the program dropped privileges itself; ghost sets user and group before it starts".to_string())
                }
                '!' => {}
                _ => self.notes.push("ExecStart's `:` prefix (no variable expansion) dropped: ghost never expands variables anyway".into()),
            }
        }
        if !dropped.is_empty() {
            self.skip(e, format!("in part: prefix {}", dropped.join("; prefix ")));
        }
        if !prefixes.contains(':') {
            let (expanded, unknown) = expand_vars(&words, &self.out.env);
            if !unknown.is_empty() {
                let vars = unknown.join(", ");
                self.skip(e, format!("in part: {vars} would be expanded by systemd from an environment ghost does not have; ghost runs argv as written"));
                self.warnings.push(format!("ExecStart passes {vars} literally; put the value into the command or `env`"));
            }
            words = expanded;
        }
        let program = words.first().cloned().ok_or_else(|| fail("no program to run".into()))?;
        if !program.starts_with('/') {
            if program.contains('/') {
                return Err(fail(format!("program `{program}` must be an absolute path or a plain name")));
            }
            let found = SEARCH_PATH.iter().map(|d| Path::new(d).join(&program)).find(|p| program_exists(p));
            let Some(found) = found else {
                return Err(fail(format!("program `{program}` is in none of {} on this machine; write its absolute path in the unit", SEARCH_PATH.join(", "))));
            };
            let found = found.display().to_string();
            self.notes.push(format!("ExecStart's `{program}` resolved to {found} (systemd's search path)"));
            words[0] = found;
        }
        self.out.exec = words;
        Ok(())
    }

    fn service_type(&mut self, e: Option<&Entry>) {
        let Some(e) = e else {
            self.out.ready = Some("started");
            return;
        };
        match e.value.as_str() {
            "simple" | "exec" => self.out.ready = Some("started"),
            "notify" => self.out.ready = Some("notify"),
            "notify-reload" => {
                self.out.ready = Some("notify");
                self.skip(e, "in part: ready = \"notify\"; reloading by signal is not carried over");
            }
            "idle" => {
                self.out.ready = Some("started");
                self.skip(e, "in part: ready = \"started\"; ghost starts it at once, not after the other jobs");
            }
            "forking" => {
                self.skip(e, "ghost supervises the process it starts, which must stay in the foreground");
                self.warnings.push(
                    "Type=forking: a daemon that forks into the background looks to ghost like an exit; run it in the foreground (nginx: -g 'daemon off;', redis-server: --daemonize no)".into(),
                );
            }
            "oneshot" => {
                self.skip(e, "ghost supervises long-running services; a command that runs once and exits has no equivalent");
                self.warnings.push("Type=oneshot: ghost treats the command's exit as the service ending (and restarts it per `restart`)".into());
            }
            "dbus" => {
                self.skip(e, "ghost has no D-Bus readiness; it counts the service ready once started");
                self.warnings.push("Type=dbus: the service is counted ready before it has taken its bus name".into());
            }
            _ => self.skip(e, "not a systemd service type"),
        }
    }

    fn working_dir(&mut self, e: &Entry) {
        let mut v = e.value.as_str();
        if let Some(rest) = v.strip_prefix('-') {
            self.skip(e, "in part: the `-` is dropped: ghost does not ignore a missing directory, it refuses to start the service");
            v = rest;
        }
        if v.starts_with('~') {
            return self.skip(e, "the user's home directory: write its path");
        }
        let v = self.expand(e, v);
        if v.starts_with('/') {
            self.out.working_dir = Some(v);
        } else {
            self.skip(e, "not an absolute path");
        }
    }

    /// Unit names to ghost service names: `.service` and `.target` stripped, systemd's network
    /// targets become ghost-init's builtin `network`, other well-known targets and unit types
    /// ghost does not have are listed.
    fn dependencies(&mut self, entries: &[&Entry]) -> Vec<String> {
        const SYSTEM_TARGETS: &[&str] = &[
            "basic", "sysinit", "multi-user", "graphical", "default", "local-fs", "local-fs-pre", "remote-fs", "remote-fs-pre",
            "nss-lookup", "nss-user-lookup", "time-sync", "time-set", "syslog", "sockets", "timers", "paths", "slices", "swap",
            "cryptsetup", "getty", "rescue", "emergency", "shutdown", "umount", "final", "network-pre", "rpcbind", "sound",
            "bluetooth", "printer", "smartcard", "sysinit", "user", "first-boot-complete",
        ];
        let mut names = Vec::new();
        for e in entries {
            let value = self.expand(e, &e.value);
            let units = match split(&value) {
                Ok(u) => u,
                Err(why) => {
                    self.skip(e, why);
                    continue;
                }
            };
            for unit in units {
                let name = match unit.rsplit_once('.') {
                    Some((n, "service")) => n.to_string(),
                    Some(("network" | "network-online", "target")) => "network".to_string(),
                    Some((n, "target")) if SYSTEM_TARGETS.contains(&n) => {
                        self.skip_value(e, &unit, "a systemd target: ghost-init brings the system up itself before any service");
                        continue;
                    }
                    Some((n, "target")) => {
                        self.notes.push(format!("{}={unit}: ghost has no targets, so this needs a ghost service named `{n}`", e.key));
                        n.to_string()
                    }
                    Some((_, kind @ ("socket" | "mount" | "automount" | "device" | "path" | "timer" | "slice" | "scope" | "swap"))) => {
                        self.skip_value(e, &unit, format!("ghost has no .{kind} units"));
                        continue;
                    }
                    _ => unit.clone(),
                };
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    fn restart(&mut self, restart: Option<&Entry>, sec: Option<&Entry>, max: Option<&Entry>) {
        self.out.restart = Some(match restart.map(|e| (e, e.value.as_str())) {
            None => {
                self.notes.push("Restart= is not set and systemd's default is `no`: restart = \"never\" (write \"always\" to have ghost keep it running)".into());
                "never"
            }
            Some((_, "always")) => "always",
            Some((_, "on-failure")) => "on-failure",
            Some((_, "no")) => "never",
            Some((e, "on-abnormal" | "on-abort" | "on-watchdog")) => {
                self.skip(e, "in part: restart = \"on-failure\", which also restarts after a non-zero exit code");
                "on-failure"
            }
            Some((e, "on-success")) => {
                self.skip(e, "in part: restart = \"always\", which also restarts after a failure");
                "always"
            }
            Some((e, _)) => {
                self.skip(e, "not a systemd restart policy; restart = \"never\" as systemd's default");
                "never"
            }
        });
        let mut ms = |e: &Entry| match time_span_us(&e.value) {
            Ok(Limit::Finite(us)) => Some(u64::try_from(us / 1000).unwrap_or(u64::MAX)),
            Ok(Limit::Infinity) => {
                self.skip(e, "ghost needs a finite delay");
                None
            }
            Err(why) => {
                self.skip(e, why);
                None
            }
        };
        let delay = sec.and_then(&mut ms);
        let max_delay = max.and_then(&mut ms);
        self.out.restart_delay_ms = delay;
        self.out.restart_max_delay_ms = max_delay;
        if let Some(d) = delay {
            // ghost-init refuses a base delay above the maximum (default 30 s).
            if d > max_delay.unwrap_or(30_000) {
                self.out.restart_max_delay_ms = Some(d);
                self.notes.push(format!("restart_max_delay_ms raised to {d} to match RestartSec= (ghost's default maximum is 30000)"));
            }
            if self.out.restart != Some("never") {
                self.notes.push(format!(
                    "RestartSec= is the base of ghost's backoff: the first restart after a healthy run is immediate, repeated failures wait {d} ms and more"
                ));
            }
        }
    }

    fn watchdog(&mut self, e: &Entry) {
        match time_span_us(&e.value) {
            Ok(Limit::Finite(0) | Limit::Infinity) => {}
            Ok(Limit::Finite(_)) if self.out.ready != Some("notify") => self.skip(e, "only a Type=notify service sends WATCHDOG=1"),
            Ok(Limit::Finite(us)) => self.out.watchdog_s = Some(self.whole_seconds(e, us)),
            Err(why) => self.skip(e, why),
        }
    }

    /// Whole seconds, rounded up (a shorter time would be stricter than the unit asked for).
    fn whole_seconds(&mut self, e: &Entry, us: u128) -> u64 {
        let s = us.div_ceil(1_000_000);
        if !us.is_multiple_of(1_000_000) {
            self.notes.push(format!("{}={} rounded up to {s} s: ghost counts it in whole seconds", e.key, e.value));
        }
        u64::try_from(s).unwrap_or(u64::MAX)
    }

    fn memory(&mut self, max: Option<&Entry>, limit: Option<&Entry>) {
        let e = match (max, limit) {
            (Some(m), Some(l)) => {
                self.skip(l, "superseded by MemoryMax=");
                m
            }
            (Some(m), None) => m,
            (None, Some(l)) => {
                self.notes.push("MemoryLimit= (the deprecated cgroup v1 setting) carried over as memory_max".into());
                l
            }
            (None, None) => return,
        };
        if e.value.trim().ends_with('%') {
            return self.skip(e, "a share of the machine's memory: ghost needs a size like 512M");
        }
        match byte_size(&e.value) {
            Ok(Limit::Finite(bytes)) => self.out.memory_max = Some(ghost_size(bytes)),
            Ok(Limit::Infinity) => self.notes.push(format!("{}=infinity: no limit, as with no memory_max", e.key)),
            Err(why) => self.skip(e, why),
        }
    }

    fn cpu_quota(&mut self, e: &Entry) {
        match percent(&e.value) {
            Some(p) if p > 0.0 => {
                let whole = p.ceil() as u64;
                if p.fract() != 0.0 {
                    self.skip(e, format!("in part: cpu_max = \"{whole}%\": ghost takes whole percents"));
                }
                self.out.cpu_max = Some(format!("{whole}%"));
            }
            _ => self.skip(e, "not a percentage above 0%"),
        }
    }

    fn tasks_max(&mut self, e: &Entry) {
        match e.value.trim() {
            "infinity" => self.notes.push("TasksMax=infinity: no limit, as with no pids_max".into()),
            v if v.ends_with('%') => self.skip(e, "a share of the kernel's limit: ghost needs a number"),
            v => match v.parse() {
                Ok(n) => self.out.pids_max = Some(n),
                Err(_) => self.skip(e, "not a number"),
            },
        }
    }

    fn nofile(&mut self, e: &Entry) {
        let number = |s: &str| s.trim().parse::<u64>().ok();
        match e.value.split_once(':') {
            None => match number(&e.value) {
                Some(n) => self.out.nofile = Some(n),
                None => self.skip(e, "ghost needs a number of files (infinity has no equivalent)"),
            },
            Some((soft, hard)) => match number(hard) {
                Some(h) => {
                    self.out.nofile = Some(h);
                    self.skip(e, format!("in part: nofile = {h}, the hard limit; ghost sets the soft limit to it too, not to {soft}"));
                }
                None => self.skip(e, "ghost needs a number of files for the hard limit"),
            },
        }
    }

    fn stop_timeout(&mut self, stop: Option<&Entry>, both: Option<&Entry>) {
        if let Some(b) = both {
            let why = if stop.is_some() { "its start part: ghost has no start timeout; its stop part is superseded by TimeoutStopSec=" } else { "in part: its stop part is carried as stop_timeout_s; ghost has no start timeout" };
            self.skip(b, why);
        }
        let Some(e) = stop.or(both) else { return };
        match time_span_us(&e.value) {
            Ok(Limit::Finite(0) | Limit::Infinity) => {
                self.skip(e, "systemd would wait for ever; ghost bounds every stop, so its default stop timeout applies")
            }
            Ok(Limit::Finite(us)) => self.out.stop_timeout_s = Some(self.whole_seconds(e, us)),
            Err(why) => self.skip(e, why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_debian(p: &Path) -> bool {
        ["/usr/bin/redis-server", "/usr/sbin/nginx", "/usr/bin/python3", "/bin/sleep"].contains(&p.to_str().unwrap())
    }

    fn import(text: &str, unit: &str) -> Imported {
        import_unit(text, unit, &on_debian).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parsed(im: &Imported) -> toml::Table {
        let text = im.to_toml("test.service");
        toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn not_carried(im: &Imported) -> Vec<String> {
        im.not_carried.iter().map(|n| format!("[{}] {}={}", n.section, n.key, n.value)).collect()
    }

    fn argv(t: &toml::Table) -> Vec<&str> {
        t["exec"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()
    }

    #[test]
    fn debian_redis_unit() {
        let im = import(include_str!("../tests/fixtures/redis-server.service"), "redis-server.service");
        assert_eq!(im.name, "redis-server");
        let t = parsed(&im);
        assert_eq!(argv(&t), ["/usr/bin/redis-server", "/etc/redis/redis.conf", "--supervised", "systemd", "--daemonize", "no"]);
        assert_eq!(t["ready"].as_str(), Some("notify"));
        assert_eq!((t["user"].as_str(), t["group"].as_str()), (Some("redis"), Some("redis")));
        assert_eq!(t["restart"].as_str(), Some("always"));
        assert_eq!(t["nofile"].as_integer(), Some(65535));
        assert_eq!(t["after"].as_array().unwrap()[0].as_str(), Some("network"));
        assert_eq!(t["description"].as_str(), Some("Advanced key-value store"));
        assert!(!t.contains_key("stop_timeout_s"), "TimeoutStopSec=0 means no timeout in systemd");
        let nc = not_carried(&im);
        for key in [
            "[Service] PIDFile=/run/redis/redis-server.pid",
            "[Service] TimeoutStopSec=0",
            "[Service] RuntimeDirectory=redis",
            "[Service] UMask=007",
            "[Service] ProtectSystem=strict",
            "[Service] ReadWritePaths=-/var/lib/redis",
            "[Service] ReadWritePaths=-/var/log/redis",
            "[Service] SystemCallFilter=~ @privileged @resources",
            "[Service] CapabilityBoundingSet=",
            "[Service] NoExecPaths=/",
            "[Unit] Documentation=http://redis.io/documentation, man:redis-server(1)",
            "[Install] WantedBy=multi-user.target",
            "[Install] Alias=redis.service",
        ] {
            assert!(nc.iter().any(|n| n == key), "{key} not listed in {nc:#?}");
        }
        for carried in ["ExecStart", "Type", "User", "Group", "Restart", "LimitNOFILE", "Description", "After"] {
            assert!(!im.not_carried.iter().any(|n| n.key == carried), "{carried} was carried over: {nc:#?}");
        }
        // Everything in the file is accounted for: carried over or listed.
        let assignments = include_str!("../tests/fixtures/redis-server.service").lines().filter(|l| l.contains('=') && !l.starts_with('#')).count();
        // Carried over: Description, After, Type, ExecStart, Restart, User, Group, LimitNOFILE.
        assert_eq!(assignments, nc.len() + 8, "{nc:#?}");
        let text = im.to_toml("/lib/systemd/system/redis-server.service");
        assert!(text.contains("\n#   [Service] PIDFile=/run/redis/redis-server.pid (ghost tracks"), "{text}");
        assert!(im.report().iter().any(|l| l.starts_with("not carried over: [Service] ExecPaths=/usr/bin/redis-server /usr/lib /lib (sandboxing")), "{:?}", im.report());
    }

    #[test]
    fn debian_nginx_unit() {
        let im = import(include_str!("../tests/fixtures/nginx.service"), "nginx.service");
        let t = parsed(&im);
        assert_eq!(argv(&t), ["/usr/sbin/nginx", "-g", "daemon on; master_process on;"]);
        assert!(!t.contains_key("ready"), "Type=forking has no ghost readiness");
        assert_eq!(t["restart"].as_str(), Some("never"), "systemd's default Restart=no");
        assert_eq!(t["stop_timeout_s"].as_integer(), Some(5));
        assert_eq!(t["after"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect::<Vec<_>>(), ["network"]);
        let nc = not_carried(&im);
        for key in [
            "[Service] Type=forking",
            "[Service] PIDFile=/run/nginx.pid",
            "[Service] ExecStartPre=/usr/sbin/nginx -t -q -g 'daemon on; master_process on;'",
            "[Service] ExecReload=/usr/sbin/nginx -g 'daemon on; master_process on;' -s reload",
            "[Service] ExecStop=-/sbin/start-stop-daemon --quiet --stop --retry QUIT/5 --pidfile /run/nginx.pid",
            "[Service] KillMode=mixed",
            "[Unit] After=remote-fs.target",
            "[Unit] After=nss-lookup.target",
            "[Unit] Wants=network-online.target",
        ] {
            assert!(nc.iter().any(|n| n == key), "{key} not listed in {nc:#?}");
        }
        assert!(im.warnings.iter().any(|w| w.contains("Type=forking") && w.contains("daemon off")), "{:?}", im.warnings);
        assert!(im.notes.iter().any(|n| n.contains("restart = \"never\"")), "{:?}", im.notes);
    }

    #[test]
    fn every_carried_key_maps_to_the_schema() {
        let unit = r#"
[Unit]
Description=Web app for %N
After=network-online.target db.service local-fs.target
Requires=db.service network-online.target cache.socket
[Service]
Type=exec
ExecStart=python3 -m http.server --bind "127.0.0.1" $PORT "${ARGS}" %t/app
Environment="ARGS=a b" PORT=8080
Environment=LANG=C.UTF-8
User=www-data
Group=www-data
WorkingDirectory=-/srv/app
Restart=on-abnormal
RestartSec=1min
MemoryMax=1.5G
CPUQuota=12.5%
TasksMax=64
LimitNOFILE=1024:524288
TimeoutSec=90s
KillSignal=SIGINT
"#;
        let im = import(unit, "webapp.service");
        let t = parsed(&im);
        assert_eq!(t["description"].as_str(), Some("Web app for webapp"));
        assert_eq!(argv(&t), ["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", "8080", "a b", "/run/app"]);
        assert_eq!(t["env"]["ARGS"].as_str(), Some("a b"));
        assert_eq!(t["env"]["LANG"].as_str(), Some("C.UTF-8"));
        assert_eq!(t["working_dir"].as_str(), Some("/srv/app"));
        assert_eq!(t["ready"].as_str(), Some("started"));
        assert_eq!(t["restart"].as_str(), Some("on-failure"));
        assert_eq!((t["restart_delay_ms"].as_integer(), t["restart_max_delay_ms"].as_integer()), (Some(60_000), Some(60_000)));
        assert_eq!(t["memory_max"].as_str(), Some("1536M"));
        assert_eq!(t["cpu_max"].as_str(), Some("13%"));
        assert_eq!(t["pids_max"].as_integer(), Some(64));
        assert_eq!(t["nofile"].as_integer(), Some(524_288));
        assert_eq!(t["stop_timeout_s"].as_integer(), Some(90));
        assert_eq!(t["stop_signal"].as_str(), Some("INT"));
        let list = |k: &str| t[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(list("after"), ["network", "db"]);
        assert_eq!(list("requires"), ["db", "network"]);
        let nc: Vec<String> = im.not_carried.iter().map(|n| n.to_string()).collect();
        let expect = [
            "[Unit] After=local-fs.target (a systemd target",
            "[Unit] Requires=cache.socket (ghost has no .socket units)",
            "[Service] WorkingDirectory=-/srv/app (in part: the `-`",
            "[Service] Restart=on-abnormal (in part: restart = \"on-failure\"",
            "[Service] CPUQuota=12.5% (in part: cpu_max = \"13%\"",
            "[Service] LimitNOFILE=1024:524288 (in part: nofile = 524288, the hard limit; ghost sets the soft limit to it too, not to 1024)",
            "[Service] TimeoutSec=90s (in part: its stop part",
        ];
        for e in expect {
            assert!(nc.iter().any(|n| n.starts_with(e)), "{e} not in {nc:#?}");
        }
        assert_eq!(nc.len(), expect.len(), "{nc:#?}");
        assert!(im.notes.iter().any(|n| n.contains("`python3` resolved to /usr/bin/python3")), "{:?}", im.notes);
    }

    #[test]
    fn exec_prefixes_are_stripped_and_said() {
        let im = import("[Service]\nExecStart=-@/bin/sleep sleeper 1000\nRestart=always\n", "s.service");
        assert_eq!(im.service.exec, ["/bin/sleep", "1000"]);
        let why = &im.not_carried[0].why;
        assert_eq!(why, "in part: prefix `-`: a failing exit counted as success; ghost counts it as a failure; prefix `@`: argv[0] was `sleeper`; ghost passes the program path as argv[0]");
        let im = import("[Service]\nExecStart=+:/bin/sleep $X\nRestart=always\n", "s.service");
        assert_eq!(im.service.exec, ["/bin/sleep", "$X"], "`:` turns variable expansion off");
        assert!(im.not_carried[0].why.contains("`+`: it ran with full privileges"));
        assert!(im.notes.iter().any(|n| n.contains("`:` prefix")));
        let im = import("[Service]\nExecStart=!!/bin/sleep 1\n", "s.service");
        assert_eq!(im.not_carried.len(), 1, "{:?}", im.not_carried);
    }

    #[test]
    fn unknown_variables_and_several_commands_are_reported() {
        let im = import("[Service]\nEnvironmentFile=/etc/default/app\nExecStart=/bin/sleep $DAEMON_OPTS ; /bin/true\nExecStart=/bin/false\n", "app.service");
        assert_eq!(im.service.exec, ["/bin/sleep", "$DAEMON_OPTS"]);
        let nc: Vec<String> = im.not_carried.iter().map(|n| n.to_string()).collect();
        assert!(nc[0].starts_with("[Service] EnvironmentFile=/etc/default/app (ghost does not read environment files"), "{nc:#?}");
        assert!(nc.iter().any(|n| n.starts_with("[Service] ExecStart=/bin/true (ghost runs one command")), "{nc:#?}");
        assert!(nc.iter().any(|n| n.starts_with("[Service] ExecStart=/bin/false (ghost runs one command")), "{nc:#?}");
        assert!(nc.iter().any(|n| n.contains("$DAEMON_OPTS would be expanded by systemd")), "{nc:#?}");
        assert!(im.warnings.iter().any(|w| w.contains("$DAEMON_OPTS")), "{:?}", im.warnings);
    }

    #[test]
    fn values_in_systemd_units() {
        let t = |body: &str| parsed(&import(&format!("[Service]\nExecStart=/bin/sleep 1\n{body}\n"), "v.service"));
        assert_eq!(t("RestartSec=100ms")["restart_delay_ms"].as_integer(), Some(100));
        assert_eq!(t("RestartSec=5")["restart_delay_ms"].as_integer(), Some(5000));
        assert!(!t("RestartSec=5").contains_key("restart_max_delay_ms"));
        assert_eq!(t("MemoryMax=infinity").get("memory_max"), None);
        assert_eq!(t("MemoryMax=512K")["memory_max"].as_str(), Some("512K"));
        assert_eq!(t("MemoryLimit=2G")["memory_max"].as_str(), Some("2G"));
        assert_eq!(t("TasksMax=infinity").get("pids_max"), None);
        assert_eq!(t("KillSignal=SIGTERM")["stop_signal"].as_str(), Some("TERM"));
        assert_eq!(t("TimeoutStopSec=1min 30s")["stop_timeout_s"].as_integer(), Some(90));
        assert_eq!(t("TimeoutStopSec=1500ms")["stop_timeout_s"].as_integer(), Some(2));
        assert_eq!(t("Type=notify\nWatchdogSec=30s")["watchdog_s"].as_integer(), Some(30));
        assert_eq!(t("Restart=no")["restart"].as_str(), Some("never"));
        assert_eq!(t("Restart=on-success")["restart"].as_str(), Some("always"));
        assert_eq!(t("Environment=A=1\nEnvironment=\nEnvironment=B=2")["env"].as_table().unwrap().keys().collect::<Vec<_>>(), ["B"], "an empty assignment resets");
        assert_eq!(t("User=a\nUser=b")["user"].as_str(), Some("b"), "the last assignment wins");
        let skipped = |body: &str| import(&format!("[Service]\nExecStart=/bin/sleep 1\n{body}\n"), "v.service").not_carried.iter().map(|n| n.key.clone()).collect::<Vec<_>>();
        assert_eq!(skipped("KillSignal=SIGCONT"), ["KillSignal"]);
        assert_eq!(skipped("MemoryMax=50%"), ["MemoryMax"]);
        assert_eq!(skipped("TasksMax=80%"), ["TasksMax"]);
        assert_eq!(skipped("LimitNOFILE=infinity"), ["LimitNOFILE"]);
        assert_eq!(skipped("WatchdogSec=10"), ["WatchdogSec"], "only notify services feed a watchdog");
        assert_eq!(skipped("Type=oneshot"), ["Type"]);
        assert_eq!(skipped("RestartSec=soon"), ["RestartSec"]);
    }

    #[test]
    fn what_cannot_be_imported_fails_with_a_reason() {
        let err = |text: &str| import_unit(text, "x.service", &on_debian).unwrap_err();
        assert!(err("[Service]\nType=simple\n").contains("no ExecStart="));
        assert!(err("[Service]\nExecStart=nosuchprog --flag\n").contains("`nosuchprog` is in none of /usr/sbin, /usr/bin, /sbin, /bin"));
        assert!(err("[Service]\nExecStart=bin/relative\n").contains("absolute path"));
        assert!(err("[Service]\nExecStart=/bin/echo 'open\n").contains("unterminated"));
        assert!(names_from_path(Path::new("/etc/x.socket")).unwrap_err().contains(".service units only"));
        assert_eq!(names_from_path(Path::new("/lib/systemd/system/getty@.service")).unwrap(), ("getty".into(), "getty@.service".into()));
    }
}
