//! The agent's senses, each a thread feeding the heartbeat: ghost-init's event stream, the
//! services' log lines that some log rule's pattern matches, a sampler of CPU, load, memory,
//! disks and each service's memory against the thresholds the rules watch (`cpu.used_percent`,
//! `load.1m`, `memory.used_percent`, `disk.used_percent` per filesystem, `service.memory_mb`
//! per service), file changes and timers.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use ghost_agent::perceive::MetricWatch;
use ghost_agent::{Observation, Source};
use ghost_proto::{Event, Request, StreamItem};
use ghostctl::client::{socket_path_from_env, Connection, Endpoint};

use super::known_good::now_ms;
use regex::Regex;
use serde_json::{json, Map, Value};

/// What the senses hand the heartbeat.
pub enum Input {
    /// A supervisor event, as it came (the heartbeat also schedules configuration copies).
    Event(Event),
    Obs(Observation),
    /// An operator resolved a call a playbook waits for: approved (and run) or not.
    Resolved { request_id: String, outcome: Result<ghost_audit::gate::Handled, String> },
    /// The rule files changed (a proposal was accepted): read them again.
    ReloadRules,
}

/// Hands an observation to the heartbeat without waiting: when it is behind (a long
/// verification, a slow model), what does not fit in the queue is dropped here rather than
/// held without bound. False when the heartbeat is gone.
fn offer(tx: &SyncSender<Input>, o: Observation) -> bool {
    match tx.try_send(Input::Obs(o)) {
        Ok(()) | Err(TrySendError::Full(_)) => true,
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// ghost-init's control socket (GHOST_SOCKET, or under GHOST_ROOT).
pub fn control(req: &Request) -> Result<ghost_proto::Reply, String> {
    ghostctl::client::control_request(req).map_err(failure)
}

pub fn failure(f: ghostctl::failure::Failure) -> String {
    use ghostctl::failure::Failure;
    match f {
        Failure::Daemon(s) | Failure::Unreachable(s) => s,
        other => format!("{other:?}"),
    }
}

/// Follows a stream request (`events`, `logs -f`) for as long as the agent runs, connecting
/// again (100 ms, doubling to 2 s) when ghost-init closes it.
fn follow(what: &'static str, req: Request, stop: Arc<AtomicBool>, mut each: impl FnMut(StreamItem) -> bool + Send + 'static) {
    std::thread::Builder::new()
        .name(format!("agent-{what}"))
        .spawn(move || {
            let mut delay = Duration::from_millis(100);
            while !stop.load(Ordering::Relaxed) {
                let socket = socket_path_from_env(Endpoint::Control, None);
                match Connection::open(&socket).and_then(|mut c| c.request(&req).map(|_| c)) {
                    Ok(mut c) => {
                        delay = Duration::from_millis(100);
                        while let Ok(Some(item)) = c.next_item() {
                            if !each(item) || stop.load(Ordering::Relaxed) {
                                return;
                            }
                        }
                    }
                    Err(e) => eprintln!("ghost agent: {what}: {}; trying again in {} ms", failure(e), delay.as_millis()),
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        })
        .expect("spawn a perception thread");
}

pub fn spawn_events(tx: SyncSender<Input>, stop: Arc<AtomicBool>) {
    follow("events", Request::Events, stop, move |item| match item {
        StreamItem::Event(e) => tx.send(Input::Event(e)).is_ok(),
        _ => true,
    });
}

/// Log lines matched against the log rules' patterns; a match is an observation whose data
/// holds the pattern's named groups (digits as numbers: `(?P<port>\d+)` gives a port).
pub fn spawn_logs(patterns: Vec<Regex>, tx: SyncSender<Input>, stop: Arc<AtomicBool>) {
    if patterns.is_empty() {
        return;
    }
    let req = Request::Logs { name: None, lines: Some(0), follow: true };
    follow("logs", req, stop, move |item| {
        let StreamItem::Log(line) = item else { return true };
        for re in &patterns {
            if let Some(caps) = re.captures(&line.text) {
                let mut data = Map::new();
                for name in re.capture_names().flatten() {
                    if let Some(m) = caps.name(name) {
                        let v = m.as_str().parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::from(m.as_str()));
                        data.insert(name.to_string(), v);
                    }
                }
                let o = Observation::new(Source::Log, "line", &format!("{}: {}", line.service, line.text), line.ts_ms)
                    .service(&line.service)
                    .salience(0.7)
                    .data(Value::Object(data));
                return offer(&tx, o);
            }
        }
        true
    });
}

/// `disk.used_percent` of the filesystem holding `path`, as df counts it (blocks in use over
/// blocks in use plus those available to users).
pub fn disk_used_percent(path: &Path) -> Option<f64> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is valid; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let used = s.f_blocks.saturating_sub(s.f_bfree) as f64;
    let total = used + s.f_bavail as f64;
    (total > 0.0).then(|| (used / total * 1000.0).round() / 10.0)
}

fn st_dev(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.dev())
}

/// `memory.used_percent` of the machine (MemAvailable against MemTotal).
pub fn memory_used_percent() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| text.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse::<f64>().ok();
    let (total, avail) = (field("MemTotal:")?, field("MemAvailable:")?);
    Some(((total - avail) / total * 1000.0).round() / 10.0)
}

/// `load.1m`: the one-minute load average.
pub fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// The busy and total jiffies of all CPUs (/proc/stat), for `cpu.used_percent` between samples.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = text.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The resident memory of each service, MiB.
pub fn services_memory_mb() -> Vec<(String, f64)> {
    let Ok(reply) = control(&Request::Status { name: None }) else { return Vec::new() };
    reply.services.unwrap_or_default().into_iter().filter_map(|s| Some((s.name, s.memory_bytes? as f64 / (1024.0 * 1024.0)))).collect()
}

/// One fresh sample of `metric` for `subject` (what a playbook's metric check reads).
pub fn sample(metric: &str, subject: &str) -> Option<f64> {
    match metric {
        "disk.used_percent" => disk_used_percent(Path::new(subject)),
        "memory.used_percent" => memory_used_percent(),
        "load.1m" => load_1m(),
        "cpu.used_percent" => {
            let (b0, t0) = cpu_jiffies()?;
            std::thread::sleep(Duration::from_millis(200));
            let (b1, t1) = cpu_jiffies()?;
            (t1 > t0).then(|| ((b1 - b0) as f64 / (t1 - t0) as f64 * 1000.0).round() / 10.0)
        }
        "service.memory_mb" => services_memory_mb().into_iter().find(|(n, _)| n == subject).map(|(_, v)| v),
        _ => None,
    }
}

/// The metrics every `interval`; only crossings become observations.
pub fn spawn_sampler(mut watch: MetricWatch, disks: Vec<PathBuf>, service_memory: bool, interval: Duration, tx: SyncSender<Input>, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("agent-metrics".into())
        .spawn(move || {
            let mut last_cpu = cpu_jiffies();
            while !stop.load(Ordering::Relaxed) {
                let now = now_ms();
                let mut out = Vec::new();
                let cpu = cpu_jiffies();
                if let (Some((b0, t0)), Some((b1, t1))) = (last_cpu, cpu) {
                    if t1 > t0 {
                        let pct = ((b1 - b0) as f64 / (t1 - t0) as f64 * 1000.0).round() / 10.0;
                        out.extend(watch.sample("cpu.used_percent", "", pct, now));
                    }
                }
                last_cpu = cpu;
                if let Some(l) = load_1m() {
                    out.extend(watch.sample("load.1m", "", l, now));
                }
                let mut seen = Vec::new();
                for d in &disks {
                    let Some(dev) = st_dev(d) else { continue };
                    if seen.contains(&dev) {
                        continue;
                    }
                    seen.push(dev);
                    if let Some(v) = disk_used_percent(d) {
                        out.extend(watch.sample("disk.used_percent", &d.display().to_string(), v, now));
                    }
                }
                if let Some(v) = memory_used_percent() {
                    out.extend(watch.sample("memory.used_percent", "", v, now));
                }
                if service_memory {
                    for (name, mb) in services_memory_mb() {
                        out.extend(watch.sample("service.memory_mb", &name, mb, now).into_iter().map(|o| o.service(&name)));
                    }
                }
                for o in out {
                    if tx.send(Input::Obs(o)).is_err() {
                        return;
                    }
                }
                std::thread::sleep(interval);
            }
        })
        .expect("spawn the metrics sampler");
}

/// An operator's message as an observation.
pub fn operator_message(text: &str) -> Observation {
    Observation::new(Source::Operator, "message", text, now_ms()).salience(0.9).data(json!({ "text": text }))
}

/// File changes under the watched paths (inotify; a directory's entries, not its subtrees):
/// one observation per changed path (`file` / `changed`, data `path` as the system names it).
pub fn spawn_file_watch(root: crate::paths::GhostRoot, paths: Vec<String>, tx: SyncSender<Input>, stop: Arc<AtomicBool>) {
    if paths.is_empty() {
        return;
    }
    // SAFETY: inotify_init1 has no preconditions.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        eprintln!("ghost agent: WARNING: inotify: {}; file changes are not watched", std::io::Error::last_os_error());
        return;
    }
    let mut watches: Vec<(i32, String)> = Vec::new();
    for p in paths {
        let Ok(c) = std::ffi::CString::new(root.path(&p).as_os_str().as_bytes()) else { continue };
        let mask = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_ATTRIB;
        // SAFETY: a valid fd and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) };
        if wd < 0 {
            eprintln!("ghost agent: WARNING: watch {p}: {}", std::io::Error::last_os_error());
        } else {
            watches.push((wd, p));
        }
    }
    let spawned = std::thread::Builder::new().name("agent-files".into()).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: reading into a buffer we own, of the length given.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            let mut at = 0usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            let mut seen: Vec<String> = Vec::new();
            while at + head <= n as usize {
                // SAFETY: the kernel wrote whole events; read_unaligned copes with the offset.
                let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let name_bytes = &buf[at + head..at + head + ev.len as usize];
                let name = String::from_utf8_lossy(name_bytes.split(|b| *b == 0).next().unwrap_or(&[])).into_owned();
                at += head + ev.len as usize;
                let Some((_, dir)) = watches.iter().find(|(wd, _)| *wd == ev.wd) else { continue };
                let path = if name.is_empty() { dir.clone() } else { format!("{}/{name}", dir.trim_end_matches('/')) };
                // Editors write a temporary file and rename it: one observation per path per read.
                if name.starts_with('.') || name.ends_with('~') || seen.contains(&path) {
                    continue;
                }
                seen.push(path.clone());
                let what = if ev.mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 { "removed" } else { "changed" };
                let o = Observation::new(Source::File, what, &format!("{path} {what}"), now_ms()).salience(0.4).data(json!({ "path": path }));
                if !offer(&tx, o) {
                    return;
                }
            }
        }
    });
    if spawned.is_err() {
        eprintln!("ghost agent: WARNING: cannot start the file watcher");
    }
}

/// Named timers: an observation `timer` / NAME every period.
pub fn spawn_timers(timers: Vec<(String, Duration)>, tx: SyncSender<Input>, stop: Arc<AtomicBool>) {
    for (name, every) in timers {
        let (tx, stop) = (tx.clone(), stop.clone());
        let spawned = std::thread::Builder::new().name(format!("agent-timer-{name}")).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                let o = Observation::new(Source::Timer, &name, &format!("timer {name} ({} s)", every.as_secs()), now_ms()).salience(0.3);
                if !offer(&tx, o) {
                    return;
                }
            }
        });
        if spawned.is_err() {
            eprintln!("ghost agent: WARNING: cannot start a timer thread");
        }
    }
}
