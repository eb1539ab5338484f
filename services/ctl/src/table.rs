//! `ghostctl status` for people: an aligned table of every service, or the details of one.

use ghost_proto::{Health, ServiceStatus, State};

use crate::columns::columns;
use crate::human;
use crate::style::Style;

pub fn state_name(s: State) -> &'static str {
    match s {
        State::Starting => "starting",
        State::Running => "running",
        State::Backoff => "backoff",
        State::CrashLoop => "crash-loop",
        State::Stopping => "stopping",
        State::Stopped => "stopped",
        State::Blocked => "blocked",
    }
}

fn health_name(h: Health) -> &'static str {
    match h {
        Health::Unknown => "unknown",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

/// What the operator most needs to know beyond the columns: when it restarts, what the
/// service last said of itself, how it last ended.
fn detail(s: &ServiceStatus) -> String {
    let mut parts = Vec::new();
    if let Some(ms) = s.next_restart_ms {
        parts.push(format!("restart in {}", human::duration_ms(ms)));
    }
    if let Some(t) = s.status_text.as_deref().filter(|t| !t.is_empty()) {
        parts.push(t.to_string());
    }
    if let Some(e) = &s.last_exit {
        parts.push(format!("last exit: {e}"));
    }
    parts.join("; ")
}

const COLUMNS: [&str; 8] = ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "HEALTH", "MEMORY", "DETAIL"];

/// One row per service (PID, RESTARTS and MEMORY align right); STATE and HEALTH in colour.
pub fn status_table(services: &[ServiceStatus], style: Style) -> String {
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                state_name(s.state).to_string(),
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.uptime_s.map_or("-".into(), human::duration_s),
                s.restarts.to_string(),
                s.health.map_or("-", health_name).to_string(),
                s.memory_bytes.map_or("-".into(), human::size),
                detail(s),
            ]
        })
        .collect();
    let mut out = columns(&COLUMNS, &[2, 4, 6], &rows, style, |r, i, padded| match (i, services[r].health) {
        (1, _) => style.state(services[r].state, &padded),
        (5, Some(h)) => style.health(h, &padded),
        _ => padded,
    });
    if services.is_empty() {
        out.push_str("(no services)\n");
    }
    out
}

/// Every field of one service, one per line.
pub fn status_detail(s: &ServiceStatus, style: Style) -> String {
    let mut lines = vec![if s.description.is_empty() { style.bold(&s.name) } else { format!("{} - {}", style.bold(&s.name), s.description) }];
    let mut field = |k: &str, v: String| lines.push(format!("  {:<11}{v}", format!("{k}:")));
    let mut state = style.state(s.state, state_name(s.state));
    if let Some(pid) = s.pid {
        state.push_str(&format!(", pid {pid}"));
    }
    if let Some(up) = s.uptime_s {
        state.push_str(&format!(", up {}", human::duration_s(up)));
    }
    field("state", state);
    if let Some(ms) = s.next_restart_ms {
        field("restart", format!("in {}", human::duration_ms(ms)));
    }
    field("restarts", s.restarts.to_string());
    if let Some(e) = &s.last_exit {
        field("last exit", e.clone());
    }
    if let Some(h) = s.health {
        field("health", style.health(h, health_name(h)));
    }
    if let Some(m) = s.memory_bytes {
        field("memory", human::size(m));
    }
    if let Some(t) = &s.status_text {
        field("status", t.clone());
    }
    if s.critical {
        field("critical", "yes: boot waits for it; its permanent failure opens the rescue console".into());
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn svc(name: &str, state: State) -> ServiceStatus {
        ServiceStatus::new(name, state)
    }

    #[test]
    fn the_table_is_aligned_and_says_why_a_service_is_down() {
        let mut redis = svc("redis", State::Running);
        (redis.pid, redis.uptime_s, redis.memory_bytes, redis.health) = (Some(4242), Some(130.2), Some(12_897_485), Some(Health::Healthy));
        redis.status_text = Some("Ready to accept connections".into());
        let mut web = svc("nginx-frontend", State::CrashLoop);
        (web.restarts, web.last_exit, web.next_restart_ms) = (17, Some("exit code 1".into()), Some(30_000));
        let t = status_table(&[redis, web, svc("idle", State::Stopped)], Style::PLAIN);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME            STATE        PID  UPTIME  RESTARTS  HEALTH   MEMORY  DETAIL");
        assert_eq!(lines[1], "redis           running     4242  2m10s          0  healthy   12.3M  Ready to accept connections");
        assert_eq!(lines[2], "nginx-frontend  crash-loop     -  -             17  -             -  restart in 30s; last exit: exit code 1");
        assert_eq!(lines[3], "idle            stopped        -  -              0  -             -");
        assert_eq!(lines.len(), 4);
        // Colour never changes what a column holds or where it starts.
        let coloured = status_table(&[svc("a", State::Running)], Style { colour: true });
        assert!(coloured.contains("\x1b[32mrunning\x1b[0m"), "{coloured:?}");
        assert_eq!(status_table(&[], Style::PLAIN).lines().nth(1), Some("(no services)"));
    }

    #[test]
    fn the_detail_view_shows_what_is_known() {
        let mut s = svc("redis", State::Backoff);
        (s.description, s.restarts, s.last_exit, s.next_restart_ms, s.critical) = ("Redis".into(), 2, Some("signal 9".into()), Some(400), true);
        let d = status_detail(&s, Style::PLAIN);
        assert!(d.starts_with("redis - Redis\n  state:     backoff\n  restart:   in 400ms\n  restarts:  2\n  last exit: signal 9\n"), "{d}");
        assert!(d.contains("critical:  yes") && !d.contains("memory"), "{d}");
    }
}
