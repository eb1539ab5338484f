//! Human text for what is not a table: log lines (`TIME SERVICE | text`), events (one
//! readable line each) and the report of a reload.

use ghost_proto::{Event, EventKind, InitInfo, LogLine, ReloadReport, Stream};

use crate::human;
use crate::style::Style;
use crate::sys::LocalTime;

/// `12:00:01.234 redis | Ready to accept connections`; on a terminal, stderr text is red.
pub fn log_line(l: &LogLine, style: Style, today: Option<LocalTime>) -> String {
    let text = match l.stream {
        Stream::Stdout => l.text.clone(),
        Stream::Stderr => style.red(&l.text),
    };
    format!("{} {} | {text}", style.dim(&human::timestamp(l.ts_ms, today)), style.bold(&l.service))
}

/// The wire name of an event kind (`crash-loop`), one source of truth with the protocol.
pub fn kind_name(k: EventKind) -> String {
    serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{k:?}"))
}

/// `12:00:01.234 redis exited, pid 42: exit code 1`; events of ghost-init itself name it.
pub fn event_line(e: &Event, style: Style, today: Option<LocalTime>) -> String {
    let kind = kind_name(e.kind);
    let kind = match e.kind {
        EventKind::CrashLoop | EventKind::Oom | EventKind::Unhealthy | EventKind::WatchdogTimeout | EventKind::ConfigError => style.red(&kind),
        _ => kind,
    };
    let mut line = format!("{} {} {kind}", style.dim(&human::timestamp(e.ts_ms, today)), style.bold(e.service.as_deref().unwrap_or("ghost-init")));
    if let Some(pid) = e.pid {
        line.push_str(&format!(", pid {pid}"));
    }
    if !e.detail.is_empty() {
        line.push_str(": ");
        line.push_str(&e.detail);
    }
    line
}

/// PID 1 itself (`ghostctl init`, and after `ghostctl reexec`).
pub fn init_info(i: &InitInfo) -> String {
    let mut out = format!("{:<10}{} (ghost-init {}), pid {}\n{:<10}{}\n{:<10}{}\n", "program", i.binary, i.version, i.pid, "up", human::duration_ms(i.up_ms), "re-execs", i.reexecs);
    if let Some(r) = &i.last_reexec {
        let line = match &r.fell_back {
            None => format!("{} -> {} in {:.2} ms, {} service(s) kept", r.from, r.to, r.took_us as f64 / 1000.0, r.services),
            Some(why) => format!("FELL BACK: the new program failed its checks ({why}); {} runs again, {} service(s) kept", r.to, r.services),
        };
        out.push_str(&format!("{:<10}{line}\n", "last"));
    }
    out
}

/// What a reload changed, one line per kind of change; the unusable files last.
pub fn reload_report(r: &ReloadReport) -> String {
    let mut out = String::new();
    for (what, names) in [("added", &r.added), ("removed", &r.removed), ("changed", &r.changed)] {
        if !names.is_empty() {
            out.push_str(&format!("{what:<10}{}\n", names.join(", ")));
        }
    }
    if out.is_empty() {
        out.push_str("nothing changed\n");
    }
    if !r.unchanged.is_empty() {
        out.push_str(&format!("{:<10}{} service(s) left running as they were\n", "unchanged", r.unchanged.len()));
    }
    for e in &r.errors {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_and_event_lines_read_well() {
        let l = LogLine { service: "redis".into(), ts_ms: 1_700_000_000_042, stream: Stream::Stderr, text: "oops".into() };
        let today = crate::sys::local_time(1_700_000_000);
        let line = log_line(&l, Style::PLAIN, today);
        assert!(line.ends_with(":20.042 redis | oops") && line.len() == "HH:MM:SS.mmm redis | oops".len(), "{line}");
        assert!(log_line(&l, Style { colour: true }, today).ends_with("| \x1b[31moops\x1b[0m"));
        let e = Event { ts_ms: 1_700_000_000_000, kind: EventKind::CrashLoop, service: Some("web".into()), pid: Some(42), detail: "exit code 1".into() };
        assert!(event_line(&e, Style::PLAIN, today).ends_with(":20.000 web crash-loop, pid 42: exit code 1"));
        let e = Event { ts_ms: 1_700_000_000_000, kind: EventKind::BootComplete, service: None, pid: None, detail: String::new() };
        assert!(event_line(&e, Style::PLAIN, today).ends_with(" ghost-init boot-complete"));
    }

    #[test]
    fn reload_reports() {
        let r = ReloadReport { added: vec!["a".into(), "b".into()], unchanged: vec!["c".into()], errors: vec!["x.toml: key `y`: unknown".into()], ..Default::default() };
        assert_eq!(reload_report(&r), "added     a, b\nunchanged 1 service(s) left running as they were\nerror: x.toml: key `y`: unknown\n");
        assert_eq!(reload_report(&ReloadReport::default()), "nothing changed\n");
    }
}
