//! The control-socket protocol of ghost-init (`/run/ghost/control.sock`), shared by PID 1 and
//! its clients (ghostctl, the agent, the TUI). Dependency-light on purpose: serde only.
//!
//! # Wire format: JSON lines
//! A client writes one request per line and reads one reply per line, in order:
//!
//! ```text
//! → {"cmd":"status"}
//! ← {"ok":true,"services":[{"name":"redis","state":"running",...}]}
//! → {"cmd":"restart","name":"redis"}
//! ← {"ok":true}
//! → {"cmd":"stop","name":"nosuch"}
//! ← {"ok":false,"error":"no service named `nosuch`"}
//! ```
//!
//! `logs` with `follow: true` and `events` turn the connection into a stream: after the first
//! reply (`{"ok":true,"stream":"logs"}`), every further line is a [`StreamItem`] until the
//! client closes the connection. A malformed line gets `{"ok":false,"error":...}` and the
//! connection stays usable. Lines longer than [`MAX_LINE`] are refused the same way.

pub mod agent;
pub mod settings;

use serde::{Deserialize, Serialize};

/// The longest request line PID 1 reads; longer ones are refused with an error reply.
pub const MAX_LINE: usize = 64 * 1024;

/// One request. `cmd` names the variant (`{"cmd":"logs","name":"redis","lines":50}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// All services, or one.
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Start { name: String },
    Stop { name: String },
    Restart { name: String },
    /// The last `lines` lines (default 50) of one service, or of all; `follow` keeps streaming.
    Logs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<usize>,
        #[serde(default)]
        follow: bool,
    },
    /// Streams every event from now on.
    Events,
    /// Re-reads the service files and applies only the difference.
    Reload,
    Poweroff,
    Reboot,
    /// What PID 1 itself is: its binary, uptime and re-executions ([`InitInfo`]).
    Init,
    /// PID 1 replaces its own program without a reboot, keeping every service: `binary`, or
    /// the running one again. The new program's checks run first (`BINARY --reexec-check`);
    /// a refusal is an error reply and nothing changes. Once the program is replaced the
    /// connection closes without a reply: ask `init` to see how it went (a new program that
    /// failed its checks has put the previous one back, and says why).
    Reexec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<String>,
    },
}

/// One reply line. Exactly one of `error`, `services`, `logs`, `reload`, `stream` is set
/// (none for a plain acknowledgement).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<LogLine>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadReport>,
    /// `logs` or `events`: stream items follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitInfo>,
}

/// PID 1 itself (the `init` request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitInfo {
    pub pid: i32,
    /// The program it runs now.
    pub binary: String,
    pub version: String,
    /// Since the kernel (or the host) started the first ghost-init, across re-executions.
    pub up_ms: u64,
    /// Re-executions since boot (fallbacks included).
    pub reexecs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reexec: Option<ReexecReport>,
}

/// How the last re-execution went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReexecReport {
    pub from: String,
    pub to: String,
    /// From the old program's execve to the new one serving its loop again.
    pub took_us: u64,
    /// Services carried over (their processes untouched).
    pub services: usize,
    /// The new program failed its checks and the previous one (`from`) runs again: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fell_back: Option<String>,
    pub ts_ms: u64,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply { ok: true, ..Reply::default() }
    }
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply { ok: false, error: Some(msg.into()), ..Reply::default() }
    }
}

/// The state of a service as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Started, waiting for its readiness signal.
    Starting,
    Running,
    /// Waiting to be restarted after an exit.
    Backoff,
    /// Failing again and again; still retried at the longest delay.
    CrashLoop,
    Stopping,
    Stopped,
    /// Cannot be started as configured (for example its requirement is stopped).
    Blocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub state: State,
    /// Main process, while there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Seconds since it last started (running or starting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<f64>,
    pub restarts: u32,
    /// Present when the service has a health probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Resident memory of its cgroup (or main process without cgroups), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// How it last ended: `exit code 1`, `signal 9`, `oom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Milliseconds until the next restart attempt, in backoff or crash-loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart_ms: Option<u64>,
    /// The service's own STATUS= text (sd_notify), if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    #[serde(default)]
    pub critical: bool,
}

impl ServiceStatus {
    /// A service of this name in this state, nothing else known yet (no pid, no uptime).
    pub fn new(name: &str, state: State) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            description: String::new(),
            state,
            pid: None,
            uptime_s: None,
            restarts: 0,
            health: None,
            memory_bytes: None,
            last_exit: None,
            next_restart_ms: None,
            status_text: None,
            critical: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line a service wrote, as captured by PID 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub service: String,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub stream: Stream,
    pub text: String,
}

/// What happened, for the agent, the TUI and `ghostctl events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Starting,
    Ready,
    Exited,
    Restarting,
    CrashLoop,
    Unhealthy,
    Healthy,
    /// Killed by the kernel's OOM killer in its cgroup.
    Oom,
    WatchdogTimeout,
    /// The service's own status line changed (sd_notify `STATUS=`): progress of long work.
    Status,
    Stopping,
    Stopped,
    /// Left out at load or reload (bad file, unknown requirement, cycle).
    ConfigError,
    Reloaded,
    BootComplete,
    Shutdown,
    /// PID 1 re-executed itself (or fell back to its previous program).
    Reexec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub ts_ms: u64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Human-readable detail: the exit status, the delay, the probe's error.
    #[serde(default)]
    pub detail: String,
}

/// What `reload` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
    /// One line per service file that could not be used.
    pub errors: Vec<String>,
}

/// A line of a stream after its first reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamItem {
    Log(LogLine),
    Event(Event),
    /// Lines or events were dropped because this client read too slowly.
    Dropped(u64),
}

/// A size like `512K`, `256M`, `2G` or plain bytes (service files' `memory_max`, units'
/// `build_memory_max`); `None` when it is not one.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        (i, 'T' | 't') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

/// Parses one request line, with an error message fit for the reply.
pub fn parse_request(line: &str) -> Result<Request, String> {
    if line.len() > MAX_LINE {
        return Err(format!("request longer than {MAX_LINE} bytes"));
    }
    serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))
}

/// Serialises a value as one line (with the trailing newline).
pub fn to_line<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"cannot encode reply: {e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_explained() {
        let r = parse_request(r#"{"cmd":"logs","name":"redis","lines":5,"follow":true}"#).unwrap();
        assert_eq!(r, Request::Logs { name: Some("redis".into()), lines: Some(5), follow: true });
        assert_eq!(parse_request(&to_line(&r)).unwrap(), r);
        assert_eq!(parse_request(r#"{"cmd":"status"}"#).unwrap(), Request::Status { name: None });
        assert!(parse_request(r#"{"cmd":"explode"}"#).unwrap_err().contains("explode"));
        assert!(parse_request(r#"{"cmd":"stop"}"#).unwrap_err().contains("name"));
        assert!(parse_request(r#"{"cmd":"status","nmae":"x"}"#).unwrap_err().contains("nmae"));
        assert!(parse_request("not json").unwrap_err().starts_with("bad request"));
        assert!(parse_request(&"x".repeat(MAX_LINE + 1)).unwrap_err().contains("longer"));
    }

    #[test]
    fn replies_and_stream_items_have_a_stable_shape() {
        assert_eq!(to_line(&Reply::ok()), "{\"ok\":true}\n");
        assert_eq!(to_line(&Reply::error("no")), "{\"ok\":false,\"error\":\"no\"}\n");
        let e = StreamItem::Event(Event { ts_ms: 1, kind: EventKind::CrashLoop, service: Some("a".into()), pid: None, detail: String::new() });
        assert_eq!(to_line(&e), "{\"event\":{\"ts_ms\":1,\"kind\":\"crash-loop\",\"service\":\"a\",\"detail\":\"\"}}\n");
    }
}

/// `(year, month, day)` of a day number since 1970-01-01, proleptic Gregorian (Howard
/// Hinnant's civil_from_days). UTC dates without a time-zone database: PID 1's log
/// timestamps and its clients' (audit days, budget days, memory summaries) share this one.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A parser's message (toml's, with its source excerpt on `|` lines) as one line, for a
/// console line or a `FILE: key: reason` complaint. PID 1, the agent's constitution and the
/// wizard's seeds share it.
pub fn one_line(msg: &str) -> String {
    msg.split('\n').map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('|')).collect::<Vec<_>>().join(": ")
}

/// The day number since 1970-01-01 of a proleptic Gregorian date: the inverse of
/// [`civil_from_days`] (Howard Hinnant's days_from_civil).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod civil_tests {
    #[test]
    fn days_from_civil_inverts_civil_from_days() {
        for days in [-800_000, -1, 0, 11_016, 20_414, 2_932_896] {
            let (y, m, d) = super::civil_from_days(days);
            assert_eq!(super::days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn civil_from_days_matches_known_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(super::civil_from_days(-1), (1969, 12, 31));
        assert_eq!(super::civil_from_days(20_779), (2026, 11, 22));
    }
}
