//! `render(&App, &mut Frame)`: the tab line, the screen, a status line (reconnecting, the last
//! action's result) and the keys of the screen in the footer; the help overlay and the
//! confirmation on top. Made to be read at 80×24 and to stay usable at 60×20.

use ghost_proto::{Health, ServiceStatus, State};
use ghostctl::human;
use ghostctl::render::kind_name;
use ghostctl::sys::{local_time, LocalTime};
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols;
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Borders, Clear, LineGauge, Paragraph, Row, Sparkline, Table, TableState, Wrap};
use ratatui::Frame;
use serde_json::Value;

use super::app::{App, Field, Link, Screen};
use super::system::{percent_in, ModelHealth};
use super::theme::Theme;

pub fn render(app: &App, f: &mut Frame) {
    let [tabs, body, status, footer] = Layout::vertical([Constraint::Length(1), Constraint::Min(1), Constraint::Length(1), Constraint::Length(1)]).areas(f.area());
    f.render_widget(tab_line(app, tabs.width), tabs);
    match app.screen {
        Screen::Overview => overview(app, f, body),
        Screen::Services => services(app, f, body),
        Screen::Logs => logs(app, f, body),
        Screen::Agent => agent(app, f, body),
        Screen::Memory => memory(app, f, body),
        Screen::Improve => improve(app, f, body),
    }
    f.render_widget(status_line(app), status);
    f.render_widget(footer_line(app), footer);
    if app.screen == Screen::Agent && app.agent.open {
        if let Some(d) = app.agent.decisions.get(app.agent.decision) {
            decision_popup(app, d, f);
        }
    }
    if app.help {
        help(app, f);
    }
    if let Some(c) = &app.confirm {
        confirm(app, &c.prompt, f);
    }
}

fn today(app: &App) -> Option<LocalTime> {
    local_time((app.now_ms / 1000) as i64)
}

fn block<'a>(theme: &Theme, title: impl Into<String>) -> Block<'a> {
    Block::default().borders(Borders::ALL).title(Span::styled(format!(" {} ", title.into()), theme.title()))
}

fn tab_line(app: &App, width: u16) -> Line<'static> {
    let t = &app.theme;
    let mut spans = Vec::new();
    for (i, s) in Screen::ALL.iter().enumerate() {
        let label = format!("{} {}", i + 1, s.title());
        let label = if width >= 72 { format!(" {label} ") } else { label };
        spans.push(if *s == app.screen { Span::styled(label, t.tab()) } else { Span::raw(label) });
        spans.push(Span::raw(if width >= 72 { "" } else { " " }));
    }
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let host = app.history.last.as_ref().and_then(|s| s.hostname.clone()).unwrap_or_else(|| "ghost".into());
    let right = format!("{host} console");
    if used + right.len() + 2 <= width as usize {
        spans.push(Span::raw(" ".repeat(width as usize - used - right.len())));
        spans.push(Span::styled(right, t.accent()));
    }
    Line::from(spans)
}

fn link_words(link: &Link) -> (String, bool) {
    match link {
        Link::Connecting => ("connecting…".into(), false),
        Link::Up => ("up".into(), false),
        Link::Down(why) => (format!("reconnecting… ({})", first_line(why)), true),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn status_line(app: &App) -> Line<'static> {
    let t = &app.theme;
    if let Link::Down(why) = &app.control {
        return Line::from(vec![Span::styled("ghost-init: reconnecting… ", t.bad()), Span::raw(first_line(why).to_string())]);
    }
    if let Some((text, error)) = app.current_flash() {
        return Line::from(Span::styled(text.clone(), if *error { t.bad() } else { t.ok() }));
    }
    let (agent, down) = link_words(&app.agent_link);
    Line::from(vec![
        Span::styled("ghost-init ", t.dim()),
        Span::styled(link_words(&app.control).0, t.ok()),
        Span::styled("  agent ", t.dim()),
        Span::styled(agent, if down { t.warn() } else { t.ok() }),
    ])
}

/// The keys of the screen; `? help` and `q quit` first so that they show on any width.
fn footer_keys(app: &App) -> Vec<(&'static str, &'static str)> {
    if app.confirm.is_some() {
        return vec![("y", "yes"), ("n", "no")];
    }
    if app.help {
        return vec![("?/Esc", "close help")];
    }
    if app.agent.open && app.screen == Screen::Agent {
        return vec![("Esc", "close")];
    }
    if let Some(field) = app.editing {
        let what = match field {
            Field::LogFilter => "filter",
            Field::LogSearch => "search",
            Field::MemoryQuery => "search memory",
        };
        return vec![("Enter", what), ("Esc", "done"), ("^U", "clear")];
    }
    let mut keys = vec![("?", "help"), ("q", "quit")];
    keys.extend(match app.screen {
        Screen::Overview | Screen::Improve => vec![("1-6", "screens"), ("Tab", "next")],
        Screen::Services => vec![("↑↓", "select"), ("r", "restart"), ("s", "start"), ("x", "stop"), ("l", "logs"), ("Enter", "details")],
        Screen::Logs => vec![("a", "all"), ("[ ]", "service"), ("f", "filter"), ("/", "search"), ("n N", "match"), ("Space", "pause")],
        Screen::Agent => vec![("↑↓", "select"), ("←→", "pane"), ("Enter", "why"), ("a", "approve"), ("d", "deny")],
        Screen::Memory => vec![("/", "search"), ("↑↓", "select")],
    });
    keys
}

fn footer_line(app: &App) -> Line<'static> {
    let t = &app.theme;
    let mut spans = Vec::new();
    for (k, what) in footer_keys(app) {
        let k = if t.console_font { k.replace("↑↓", "Up/Dn").replace("←→", "Lt/Rt") } else { k.to_string() };
        spans.push(Span::styled(k, t.key()));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    Line::from(spans)
}

// ---------------------------------------------------------------- overview

fn overview(app: &App, f: &mut Frame, area: Rect) {
    let [system, middle, rest] = Layout::vertical([Constraint::Length(7), Constraint::Length(7), Constraint::Min(3)]).areas(area);
    system_box(app, f, system);
    let [model, agent] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
    model_box(app, f, model);
    agent_box(app, f, agent);
    services_summary(app, f, rest);
}

fn system_box(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let b = block(t, "System");
    let inner = b.inner(area);
    f.render_widget(b, area);
    let rows = Layout::vertical([Constraint::Length(1); 5]).split(inner);
    let Some(s) = &app.history.last else {
        f.render_widget(Paragraph::new("reading /proc…"), inner);
        return;
    };
    let mut head = Vec::new();
    if let Some(h) = &s.hostname {
        head.push(Span::styled(h.clone(), t.title()));
        head.push(Span::raw("  "));
    }
    if let Some(u) = s.uptime_s {
        head.push(Span::raw(format!("up {}  ", human::duration_s(u))));
    }
    if let Some(b) = s.boot_time_s.and_then(|b| local_time(b as i64)) {
        head.push(Span::raw(format!("booted {:04}-{:02}-{:02} {:02}:{:02}  ", b.year, b.month, b.day, b.hour, b.minute)));
    }
    head.push(Span::styled(format!("{} CPU{}", s.cpus, if s.cpus == 1 { "" } else { "s" }), t.dim()));
    // The state partition, when it is a filesystem of its own.
    for (at, used, total) in s.disks.iter().skip(1).filter(|d| d.2 > 0) {
        let p = *used as f64 * 100.0 / *total as f64;
        head.push(Span::styled(format!("  {at} {p:.0}%"), if p >= 90.0 { t.bad() } else { Style::default() }));
    }
    f.render_widget(Line::from(head), rows[0]);

    let pct = |v: Option<f64>| v.map_or("  -".to_string(), |p| format!("{:>3.0}%", p));
    let mem = match (s.mem_used, s.mem_total) {
        (Some(u), Some(tot)) if tot > 0 => format!("Mem  {} {}/{}", pct(Some(u as f64 * 100.0 / tot as f64)), human::size(u), human::size(tot)),
        _ => "Mem     -".into(),
    };
    let disk = match s.disks.first() {
        Some((_, u, tot)) if *tot > 0 => format!("Disk {} {}/{}", pct(Some(*u as f64 * 100.0 / *tot as f64)), human::size(*u), human::size(*tot)),
        _ => "Disk    -".into(),
    };
    let load = match s.load {
        Some(l) => format!("Load {:.2} {:.2} {:.2}", l[0], l[1], l[2]),
        None => "Load    -".into(),
    };
    let cpus_max = (s.cpus as u64 * 100).max(app.history.load.iter().copied().max().unwrap_or(0));
    let lines = [
        (format!("CPU  {}", pct(s.cpu_percent)), &app.history.cpu, 100),
        (mem, &app.history.mem, 100),
        (disk, &app.history.disk, 100),
        (load, &app.history.load, cpus_max),
    ];
    for (i, (label, data, max)) in lines.into_iter().enumerate() {
        let [l, spark] = Layout::horizontal([Constraint::Length(26), Constraint::Min(0)]).areas(rows[i + 1]);
        f.render_widget(Paragraph::new(label), l);
        let width = spark.width as usize;
        let recent: Vec<u64> = data.iter().skip(data.len().saturating_sub(width)).copied().collect();
        let style = if i == 2 && recent.last().is_some_and(|d| *d >= 90) { t.bad() } else { t.accent().remove_modifier(Modifier::BOLD) };
        f.render_widget(Sparkline::default().data(&recent).max(max.max(1)).bar_set(t.bar_set()).style(style), spark);
    }
}

fn model_box(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let b = block(t, "Model");
    let inner = b.inner(area);
    f.render_widget(b, area);
    let service = app.service("model");
    let mut lines: Vec<Line> = Vec::new();
    let mut progress: Option<(u16, String)> = None;
    match &app.model {
        Some(ModelHealth::Answer(v)) => {
            let status = v["status"].as_str().unwrap_or("?").to_string();
            let style = if status == "ready" { t.ok() } else if status == "failed" { t.bad() } else { t.warn() };
            lines.push(Line::from(vec![Span::raw("server  "), Span::styled(status, style)]));
            if let Some(m) = v["model"].as_str() {
                lines.push(Line::from(format!("model   {m}")));
            }
            if let Some(m) = v["embedding_model"].as_str() {
                lines.push(Line::from(format!("embed   {m}")));
            }
            let detail = v["detail"].as_str().unwrap_or("").to_string();
            if let Some(p) = percent_in(&detail) {
                progress = Some((p, detail.clone()));
            }
            if !detail.is_empty() {
                lines.push(Line::styled(detail, t.dim()));
            }
            if let Some(q) = v["queued"].as_u64().filter(|q| *q > 0) {
                lines.push(Line::from(format!("queued  {q}")));
            }
        }
        other => {
            match other {
                Some(ModelHealth::NoSocket(p)) => lines.push(Line::styled(format!("no server on {}", p.display()), t.dim())),
                Some(ModelHealth::Error(e)) => lines.push(Line::styled(e.clone(), t.bad())),
                _ => lines.push(Line::styled("asking the model server…", t.dim())),
            }
            match service {
                Some(s) => {
                    lines.push(Line::from(vec![Span::raw("service model  "), Span::styled(state_name(s.state), t.state(s.state))]));
                    if let Some(text) = &s.status_text {
                        if let Some(p) = percent_in(text) {
                            progress = Some((p, text.clone()));
                        }
                        lines.push(Line::from(text.clone()));
                    }
                }
                None => lines.push(Line::styled("no `model` service in ghost-init", t.dim())),
            }
        }
    }
    let gauge_rows = u16::from(progress.is_some());
    let [text, gauge] = Layout::vertical([Constraint::Min(0), Constraint::Length(gauge_rows)]).areas(inner);
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text);
    if let Some((p, _)) = progress {
        let line_set = if t.console_font { symbols::line::NORMAL } else { symbols::line::THICK };
        f.render_widget(
            LineGauge::default().ratio(f64::from(p) / 100.0).label(format!("download {p:>3}%")).line_set(line_set).filled_style(t.ok()).unfilled_style(t.dim()),
            gauge,
        );
    }
}

fn agent_box(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let b = block(t, "Agent");
    let inner = b.inner(area);
    f.render_widget(b, area);
    let Some(s) = &app.agent.status else {
        let (words, _) = link_words(&app.agent_link);
        f.render_widget(Paragraph::new(vec![Line::styled(format!("agent: {words}"), t.warn()), Line::styled(app.agent_socket.clone(), t.dim())]).wrap(Wrap { trim: true }), inner);
        return;
    };
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let rate = app.agent.beats_per_s.map_or("-".into(), |r| if r >= 10.0 { format!("{r:.0}/s") } else { format!("{r:.1}/s") });
    let interval = s["interval_ms"].as_u64().map_or(String::new(), |ms| format!(" (every {})", human::duration_ms(ms)));
    let share = s["share_without_model"].as_f64().map_or("-".into(), |x| format!("{:.0}%", x * 100.0));
    let pending = n("pending_approvals");
    let pending_style = if pending > 0 { t.bad() } else { Style::default() };
    let memory = s["memory"].as_str().unwrap_or("-");
    // Narrow boxes (a 60-column terminal) get the same figures in fewer words.
    let mut lines = if inner.width >= 36 {
        vec![
            Line::from(format!("heartbeat  {rate}{interval}")),
            Line::from(format!("decisions  {}, {share} without a model", n("decisions"))),
            Line::from(format!("repairs    {} verified, {} failed", n("repairs_verified"), n("repairs_failed"))),
            Line::from(vec![Span::raw("approvals  "), Span::styled(format!("{pending} waiting"), pending_style)]),
            Line::from(format!("memory     {memory}, {} episodes", n("memory_episodes"))),
        ]
    } else {
        vec![
            Line::from(format!("beat {rate}{interval}")),
            Line::from(format!("decided {}, {share} no model", n("decisions"))),
            Line::from(format!("repairs {} ok, {} failed", n("repairs_verified"), n("repairs_failed"))),
            Line::from(vec![Span::raw("approvals "), Span::styled(format!("{pending} waiting"), pending_style)]),
            Line::from(format!("memory {memory}, {}", n("memory_episodes"))),
        ]
    };
    if let Link::Down(why) = &app.agent_link {
        lines.insert(0, Line::styled(format!("reconnecting… {}", first_line(why)), t.warn()));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
}

fn services_summary(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let running = app.services.iter().filter(|s| s.state == State::Running).count();
    let troubled: Vec<&ServiceStatus> = app.services.iter().filter(|s| matches!(s.state, State::CrashLoop | State::Blocked | State::Backoff) || s.health == Some(Health::Unhealthy)).collect();
    let b = block(t, format!("Services: {running} of {} running", app.services.len()));
    let inner = b.inner(area);
    f.render_widget(b, area);
    let mut lines: Vec<Line> = troubled
        .iter()
        .map(|s| Line::from(vec![Span::styled(format!("{} ", s.name), t.title()), Span::styled(state_name(s.state), t.state(s.state)), Span::raw(s.last_exit.as_ref().map_or(String::new(), |e| format!(" (last: {e})")))]))
        .collect();
    let room = (inner.height as usize).saturating_sub(lines.len());
    let today = today(app);
    let recent: Vec<Line> = app.events.iter().rev().take(room).map(|e| event_line(app, e, today)).collect();
    lines.extend(recent.into_iter().rev());
    if lines.is_empty() {
        lines.push(Line::styled("no events yet", t.dim()));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn event_line(app: &App, e: &ghost_proto::Event, today: Option<LocalTime>) -> Line<'static> {
    let t = &app.theme;
    let kind = kind_name(e.kind);
    let bad = matches!(e.kind, ghost_proto::EventKind::CrashLoop | ghost_proto::EventKind::Oom | ghost_proto::EventKind::Unhealthy | ghost_proto::EventKind::WatchdogTimeout | ghost_proto::EventKind::ConfigError);
    let mut rest = String::new();
    if let Some(pid) = e.pid {
        rest.push_str(&format!(", pid {pid}"));
    }
    if !e.detail.is_empty() {
        rest.push_str(": ");
        rest.push_str(&e.detail);
    }
    Line::from(vec![
        Span::styled(short_time(e.ts_ms, today), t.dim()),
        Span::raw(" "),
        Span::styled(e.service.clone().unwrap_or_else(|| "ghost-init".into()), t.title()),
        Span::raw(" "),
        Span::styled(kind, if bad { t.bad() } else { Style::default() }),
        Span::raw(rest),
    ])
}

/// `HH:MM:SS` today, the date too on another day.
fn short_time(ts_ms: u64, today: Option<LocalTime>) -> String {
    let full = human::timestamp(ts_ms, today);
    match full.rsplit_once('.') {
        Some((head, _)) => head.to_string(),
        None => full,
    }
}

fn state_name(s: State) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{s:?}"))
}

// ---------------------------------------------------------------- services

fn services(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let details_h = if app.details && !app.services.is_empty() { (area.height / 2).clamp(6, 12).min(area.height.saturating_sub(4)) } else { 0 };
    let [table_area, details_area] = Layout::vertical([Constraint::Min(3), Constraint::Length(details_h)]).areas(area);
    let title = match &app.control {
        Link::Down(_) => format!("Services ({}, last known: reconnecting…)", app.services.len()),
        _ => format!("Services ({})", app.services.len()),
    };
    // Narrow: shorter headings and no PID column.
    let wide = area.width >= 76;
    let headings: &[&str] = if wide { &["NAME", "STATE", "UPTIME", "RESTARTS", "HEALTH", "MEMORY", "PID"] } else { &["NAME", "STATE", "UP", "RST", "HEALTH", "MEM"] };
    let header = Row::new(headings.iter().copied()).style(t.title());
    let rows: Vec<Row> = app
        .services
        .iter()
        .map(|s| {
            let health = s.health.map_or(Span::raw("-"), |h| Span::styled(format!("{h:?}").to_lowercase(), t.health(h)));
            let mut cells = vec![
                Line::from(s.name.clone()),
                Line::from(Span::styled(state_name(s.state), t.state(s.state))),
                Line::from(s.uptime_s.map_or("-".into(), human::duration_s)),
                Line::from(s.restarts.to_string()),
                Line::from(health),
                Line::from(s.memory_bytes.map_or("-".into(), human::size)),
            ];
            if wide {
                cells.push(Line::from(s.pid.map_or("-".into(), |p| p.to_string())));
            }
            Row::new(cells)
        })
        .collect();
    // The longest name sets the first column; the figures follow it closely.
    let name_w = app.services.iter().map(|s| s.name.chars().count() as u16).max().unwrap_or(4).clamp(6, 28);
    let widths: Vec<Constraint> = if wide {
        vec![Constraint::Length(name_w), Constraint::Length(10), Constraint::Length(7), Constraint::Length(8), Constraint::Length(9), Constraint::Length(7), Constraint::Length(7)]
    } else {
        vec![Constraint::Length(name_w.min(16)), Constraint::Length(10), Constraint::Length(6), Constraint::Length(3), Constraint::Length(9), Constraint::Length(6)]
    };
    let table = Table::new(rows, widths).header(header).block(block(t, title)).row_highlight_style(t.selected()).highlight_symbol(t.marker()).column_spacing(1);
    if app.services.is_empty() {
        let why = match &app.control {
            Link::Up => "ghost-init supervises no services".to_string(),
            Link::Connecting => format!("connecting to {}…", app.control_socket),
            Link::Down(e) => format!("reconnecting… {e}"),
        };
        let b = block(t, "Services");
        let inner = b.inner(table_area);
        f.render_widget(b, table_area);
        f.render_widget(Paragraph::new(why).wrap(Wrap { trim: true }), inner);
        return;
    }
    let mut state = TableState::default().with_selected(Some(app.selected));
    f.render_stateful_widget(table, table_area, &mut state);
    if details_h > 0 {
        if let Some(s) = app.selected_service() {
            service_details(app, s, f, details_area);
        }
    }
}

fn service_details(app: &App, s: &ServiceStatus, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let b = block(t, format!("{}{}", s.name, if s.description.is_empty() { String::new() } else { format!(" — {}", s.description) }));
    let inner = b.inner(area);
    f.render_widget(b, area);
    let mut facts = vec![Span::styled(state_name(s.state), t.state(s.state))];
    if let Some(pid) = s.pid {
        facts.push(Span::raw(format!("  pid {pid}")));
    }
    if let Some(e) = &s.last_exit {
        facts.push(Span::raw(format!("  last exit: {e}")));
    }
    if let Some(ms) = s.next_restart_ms {
        facts.push(Span::raw(format!("  next try in {}", human::duration_ms(ms))));
    }
    if s.critical {
        facts.push(Span::styled("  critical", t.warn()));
    }
    let mut lines = vec![Line::from(facts)];
    if let Some(text) = &s.status_text {
        lines.push(Line::from(format!("status: {text}")));
    }
    let today = today(app);
    let room = (inner.height as usize).saturating_sub(lines.len() + 1);
    let mine: Vec<&ghost_proto::Event> = app.events.iter().filter(|e| e.service.as_deref() == Some(&s.name)).collect();
    lines.push(Line::styled(if mine.is_empty() { "no events since the console started".to_string() } else { "recent events:".to_string() }, t.dim()));
    lines.extend(mine.iter().skip(mine.len().saturating_sub(room)).map(|e| event_line(app, e, today)));
    f.render_widget(Paragraph::new(lines), inner);
}

// ---------------------------------------------------------------- logs

fn logs(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let l = &app.logs;
    let mut title = format!("Logs: {}", l.target.as_deref().unwrap_or("all services"));
    if l.paused {
        title.push_str(&format!(" — PAUSED ({} new)", l.unseen));
    } else if l.scroll > 0 {
        title.push_str(&format!(" — scrolled back ({} newer)", l.scroll));
    }
    let b = block(t, title);
    let inner = b.inner(area);
    f.render_widget(b, area);
    let mut bars: Vec<Line> = Vec::new();
    let editing = |field| app.editing == Some(field);
    if !l.filter.is_empty() || editing(Field::LogFilter) {
        bars.push(Line::from(vec![Span::styled("filter: ", t.key()), Span::raw(l.filter.clone()), Span::raw(if editing(Field::LogFilter) { "_" } else { "" })]));
    }
    if !l.search.is_empty() || editing(Field::LogSearch) {
        let shown = l.shown();
        let hits = shown.iter().filter(|x| l.matches(x)).count();
        bars.push(Line::from(vec![
            Span::styled("search: ", t.key()),
            Span::raw(l.search.clone()),
            Span::raw(if editing(Field::LogSearch) { "_" } else { "" }),
            Span::styled(format!("  ({hits} matching)"), t.dim()),
        ]));
    }
    if l.dropped > 0 {
        bars.push(Line::styled(format!("{} lines dropped by ghost-init (the console read too slowly)", l.dropped), t.warn()));
    }
    let [bar_area, text_area] = Layout::vertical([Constraint::Length(bars.len() as u16), Constraint::Min(0)]).areas(inner);
    f.render_widget(Paragraph::new(bars), bar_area);
    let shown = l.shown();
    let height = text_area.height as usize;
    let end = shown.len().saturating_sub(l.scroll);
    let start = end.saturating_sub(height);
    let today = today(app);
    let lines: Vec<Line> = shown[start..end]
        .iter()
        .map(|line| {
            let text_style = if line.stream == ghost_proto::Stream::Stderr { t.fg_err() } else { Style::default() };
            let mut spans = vec![Span::styled(short_time(line.ts_ms, today), t.dim()), Span::raw(" ")];
            if l.target.is_none() {
                spans.push(Span::styled(format!("{} ", line.service), t.title()));
            }
            spans.push(Span::styled("| ", t.dim()));
            spans.extend(highlighted(&line.text, &l.search, text_style, t.found()));
            Line::from(spans)
        })
        .collect();
    if lines.is_empty() {
        let why = if app.control != Link::Up {
            "waiting for ghost-init…".to_string()
        } else if !l.filter.is_empty() && !l.lines.is_empty() {
            format!("no line matches the filter \"{}\"", l.filter)
        } else {
            "no log lines yet".to_string()
        };
        f.render_widget(Paragraph::new(Line::styled(why, t.dim())), text_area);
    } else {
        f.render_widget(Paragraph::new(lines), text_area);
    }
}

/// `text` with every case-insensitive occurrence of `needle` in `found`.
fn highlighted(text: &str, needle: &str, normal: Style, found: Style) -> Vec<Span<'static>> {
    if needle.is_empty() {
        return vec![Span::styled(text.to_string(), normal)];
    }
    let lower = text.to_lowercase();
    let n = needle.to_lowercase();
    // Lower-casing can change byte lengths outside ASCII; then highlight nothing rather than
    // cut a character in two.
    if lower.len() != text.len() {
        return vec![Span::styled(text.to_string(), normal)];
    }
    let mut spans = Vec::new();
    let mut at = 0;
    while let Some(i) = lower[at..].find(&n) {
        let s = at + i;
        if s > at {
            spans.push(Span::styled(text[at..s].to_string(), normal));
        }
        spans.push(Span::styled(text[s..s + n.len()].to_string(), found));
        at = s + n.len();
    }
    if at < text.len() {
        spans.push(Span::styled(text[at..].to_string(), normal));
    }
    spans
}

// ---------------------------------------------------------------- agent

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.replace('\n', " "),
        other => other.to_string(),
    }
}

fn agent(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let a = &app.agent;
    let pending_h = if a.pending.is_empty() { 3 } else { (a.pending.len() as u16 + 3).min(7) };
    let goals_h = (a.goals.len() as u16 + 3).clamp(3, 7);
    let [head, pending_area, decisions_area, goals_area] = Layout::vertical([Constraint::Length(1), Constraint::Length(pending_h), Constraint::Min(4), Constraint::Length(goals_h)]).areas(area);
    let head_line = match (&a.status, &app.agent_link) {
        (_, Link::Down(why)) => Line::styled(format!("agent: reconnecting… {}", first_line(why)), t.warn()),
        (Some(s), _) => {
            let share = s["share_without_model"].as_f64().map_or("-".into(), |x| format!("{:.0}%", x * 100.0));
            let rate = a.beats_per_s.map_or("-".into(), |r| format!("{r:.1}/s"));
            Line::from(format!(
                "beats {} ({rate})  decisions {} ({share} without a model)  actions {}  mode {}",
                s["beats"].as_u64().unwrap_or(0),
                s["decisions"].as_u64().unwrap_or(0),
                s["actions"].as_u64().unwrap_or(0),
                s["mode"].as_str().unwrap_or("-")
            ))
        }
        (None, _) => Line::styled(format!("connecting to the agent at {}…", app.agent_socket), t.dim()),
    };
    f.render_widget(head_line, head);

    // Pending approvals: what the operator can act on, first.
    let focused = |on: bool| if on { t.accent() } else { Style::default() };
    let pb = block(t, format!("Waiting for approval ({})", a.pending.len())).border_style(focused(!a.on_decisions));
    if a.pending.is_empty() {
        let inner = pb.inner(pending_area);
        f.render_widget(pb, pending_area);
        f.render_widget(Paragraph::new(Line::styled("no calls wait for approval", t.dim())), inner);
    } else {
        let rows: Vec<Row> = a
            .pending
            .iter()
            .map(|p| {
                let expires = match p["expires_in_ms"].as_u64() {
                    Some(ms) if ms > 0 => format!("in {}", human::duration_ms(ms)),
                    Some(_) => "expired".into(),
                    None => "-".into(),
                };
                Row::new(vec![cell(&p["id"]), cell(&p["call"]["tool"]), cell(&p["call"]["args"]), cell(&p["call"]["why"]), expires])
            })
            .collect();
        let widths = [Constraint::Length(9), Constraint::Length(14), Constraint::Min(10), Constraint::Min(10), Constraint::Length(9)];
        let table = Table::new(rows, widths)
            .header(Row::new(["ID", "TOOL", "ARGS", "WHY", "EXPIRES"]).style(t.title()))
            .block(pb)
            .row_highlight_style(t.selected())
            .highlight_symbol(t.marker());
        let mut state = TableState::default().with_selected(Some(a.selected));
        f.render_stateful_widget(table, pending_area, &mut state);
    }

    // Decisions, newest first, with their layer and why.
    let today = today(app);
    let db = block(t, "Decisions (newest first)").border_style(focused(a.on_decisions));
    let wide = area.width >= 76;
    if a.decisions.is_empty() {
        let inner = db.inner(decisions_area);
        f.render_widget(db, decisions_area);
        f.render_widget(Paragraph::new(Line::styled("no decisions yet", t.dim())), inner);
    } else {
        let rows: Vec<Row> = a
            .decisions
            .iter()
            .map(|d| {
                let when = d["time_ms"].as_u64().map_or("-".into(), |ms| short_time(ms, today));
                let layer = cell(&d["layer"]);
                let layer_style = if layer == "model" { t.warn() } else { Style::default() };
                let mut cells = vec![Line::from(when), Line::from(Span::styled(layer, layer_style)), Line::from(cell(&d["rule"])), Line::from(why_of(&d["text"]))];
                if wide {
                    cells.push(Line::from(cell(&d["outcome"])));
                }
                Row::new(cells)
            })
            .collect();
        // The why first; the outcome where there is room for it.
        let (widths, headings): (Vec<Constraint>, &[&str]) = if wide {
            (vec![Constraint::Length(8), Constraint::Length(5), Constraint::Length(19), Constraint::Min(20), Constraint::Length(16)], &["WHEN", "LAYER", "RULE", "WHY", "OUTCOME"])
        } else {
            (vec![Constraint::Length(8), Constraint::Length(5), Constraint::Length(14), Constraint::Min(10)], &["WHEN", "LAYER", "RULE", "WHY"])
        };
        let table = Table::new(rows, widths).header(Row::new(headings.iter().copied()).style(t.title())).block(db);
        if a.on_decisions {
            let mut state = TableState::default().with_selected(Some(a.decision));
            f.render_stateful_widget(table.row_highlight_style(t.selected()).highlight_symbol(t.marker()), decisions_area, &mut state);
        } else {
            f.render_widget(table, decisions_area);
        }
    }

    let gb = block(t, "Goals");
    if a.goals.is_empty() {
        let inner = gb.inner(goals_area);
        f.render_widget(gb, goals_area);
        f.render_widget(Paragraph::new(Line::styled("no goals", t.dim())), inner);
    } else {
        let rows: Vec<Row> = a
            .goals
            .iter()
            .map(|g| {
                let status = cell(&g["status"]);
                let style = match status.as_str() {
                    "failed" | "blocked" => t.bad(),
                    "done" | "completed" => t.ok(),
                    _ => Style::default(),
                };
                Row::new(vec![Line::from(cell(&g["id"])), Line::from(cell(&g["priority"])), Line::from(Span::styled(status, style)), Line::from(cell(&g["check"])), Line::from(cell(&g["text"]))])
            })
            .collect();
        let widths = [Constraint::Length(6), Constraint::Length(4), Constraint::Length(9), Constraint::Length(24), Constraint::Min(10)];
        f.render_widget(Table::new(rows, widths).header(Row::new(["ID", "PRI", "STATUS", "CHECK", "GOAL"]).style(t.title())).block(gb), goals_area);
    }
}

/// A decision's why: its text says `rule R chose playbook P for: WHY` (or the model's
/// `… for: WHY`); the rule and the layer have columns of their own.
fn why_of(text: &Value) -> String {
    let text = cell(text);
    match text.split_once(" for: ") {
        Some((_, why)) => why.to_string(),
        None => text,
    }
}

/// A decision in full: when, layer, rule, playbook, outcome and the whole why.
fn decision_popup(app: &App, d: &Value, f: &mut Frame) {
    let t = &app.theme;
    let area = centered(f.area(), 76, 12);
    f.render_widget(Clear, area);
    let when = d["time_ms"].as_u64().map_or("-".into(), |ms| human::timestamp(ms, today(app)));
    let field = |k: &str, v: String| Line::from(vec![Span::styled(format!("{k:<9}"), t.key()), Span::raw(v)]);
    let lines = vec![
        field("when", when),
        field("layer", cell(&d["layer"])),
        field("rule", cell(&d["rule"])),
        field("playbook", cell(&d["playbook"])),
        field("outcome", cell(&d["outcome"])),
        Line::from(""),
        Line::from(d["text"].as_str().unwrap_or("-").to_string()),
    ];
    let title = format!("Decision {} (memory id; ghostctl why {})", cell(&d["id"]), cell(&d["id"]));
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block(t, title).border_style(t.accent())), area);
}

// ---------------------------------------------------------------- memory

fn memory(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let m = &app.memory;
    let [input, results, detail] = Layout::vertical([Constraint::Length(3), Constraint::Min(3), Constraint::Length(5)]).areas(area);
    let editing = app.editing == Some(Field::MemoryQuery);
    let ib = block(t, "Search the agent's memory").border_style(if editing { t.accent() } else { Style::default() });
    let shown = if m.query.is_empty() && !editing { Span::styled("press / and type what to look for", t.dim()) } else { Span::raw(format!("{}{}", m.query, if editing { "_" } else { "" })) };
    f.render_widget(Paragraph::new(Line::from(vec![Span::styled("> ", t.key()), shown])).block(ib), input);

    let title = match &m.asked {
        Some(q) => format!("Memories for \"{q}\""),
        None => "Memories".into(),
    };
    let rb = block(t, title);
    match &m.results {
        None => {
            let inner = rb.inner(results);
            f.render_widget(rb, results);
            let text = match &app.agent_link {
                Link::Down(why) => format!("the agent is not reachable: {}", first_line(why)),
                _ => "memory is searched by words and by meaning (when the model server embeds)".into(),
            };
            f.render_widget(Paragraph::new(Line::styled(text, t.dim())).wrap(Wrap { trim: true }), inner);
        }
        Some(Err(e)) => {
            let inner = rb.inner(results);
            f.render_widget(rb, results);
            f.render_widget(Paragraph::new(Line::styled(e.clone(), t.bad())).wrap(Wrap { trim: true }), inner);
        }
        Some(Ok(hits)) if hits.is_empty() => {
            let inner = rb.inner(results);
            f.render_widget(rb, results);
            f.render_widget(Paragraph::new("nothing in memory matches"), inner);
        }
        Some(Ok(hits)) => {
            let today = today(app);
            let rows: Vec<Row> = hits
                .iter()
                .map(|h| {
                    let score = h["score"].as_f64().map_or("-".into(), |s| format!("{s:.2}"));
                    let when = h["time_ms"].as_u64().map_or("-".into(), |ms| short_time(ms, today));
                    Row::new(vec![score, when, cell(&h["kind"]), cell(&h["text"])])
                })
                .collect();
            let widths = [Constraint::Length(5), Constraint::Length(8), Constraint::Length(11), Constraint::Min(10)];
            let table = Table::new(rows, widths).header(Row::new(["SCORE", "WHEN", "KIND", "TEXT"]).style(t.title())).block(rb).row_highlight_style(t.selected()).highlight_symbol(t.marker());
            let mut state = TableState::default().with_selected(Some(m.selected));
            f.render_stateful_widget(table, results, &mut state);
        }
    }
    let selected = m.results.as_ref().and_then(|r| r.as_ref().ok()).and_then(|h| h.get(m.selected));
    let db = block(t, selected.map_or("Memory".to_string(), |h| format!("Memory {} ({}, {})", cell(&h["id"]), cell(&h["kind"]), cell(&h["source"]))));
    let text = selected.map_or(String::new(), |h| h["text"].as_str().unwrap_or("").to_string());
    f.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }).block(db), detail);
}

// ---------------------------------------------------------------- improve

fn improve(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let title = "Improve: the crucible's history";
    let units = app.improve.as_deref().unwrap_or(&[]);
    if units.is_empty() {
        let text = vec![
            Line::styled("No improvable unit has a generation yet.", t.warn().add_modifier(Modifier::BOLD)),
            Line::from(""),
            Line::from("Units are described in /etc/ghost/improve/UNIT.toml; `ghost improve seed UNIT` builds and tests generation 0, `ghostctl improve run UNIT --patch FILE` (or --from-model) judges a candidate against it."),
        ];
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(block(t, title)), area);
        return;
    }
    let [head, table_area] = Layout::vertical([Constraint::Length(units.len().min(4) as u16 + 2), Constraint::Min(3)]).areas(area);
    let count = |u: &crate::tui::app::UnitHistory, o: &str| u.verdicts.iter().filter(|v| v["outcome"] == o).count();
    let lines: Vec<Line> = units
        .iter()
        .map(|u| {
            let gen = u.generation.map_or("none".to_string(), |g| g.to_string());
            Line::from(vec![
                Span::styled(format!("{:<12}", u.unit), t.title()),
                Span::raw(format!(" generation {gen} · {} verdicts · {} kept · {} refused · {} rolled back", u.verdicts.len(), count(u, "kept"), count(u, "refused"), count(u, "rolled-back"))),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(block(t, title)), head);
    // Every verdict, newest first.
    let mut all: Vec<(&str, &Value)> = units.iter().flat_map(|u| u.verdicts.iter().map(move |v| (u.unit.as_str(), v))).collect();
    all.sort_by_key(|(_, v)| std::cmp::Reverse(v["unix_ms"].as_u64().unwrap_or(0)));
    let wide = area.width >= 76;
    let header = Row::new(if wide { vec!["WHEN", "UNIT", "OUTCOME", "STAGE", "GAIN", "WHY"] } else { vec!["WHEN", "OUTCOME", "GAIN", "WHY"] }).style(t.title());
    let rows: Vec<Row> = all
        .iter()
        .map(|(unit, v)| {
            let outcome = v["outcome"].as_str().unwrap_or("?");
            let style = match outcome {
                "kept" | "seeded" => t.ok(),
                "rolled-back" => t.bad(),
                _ => t.dim(),
            };
            let when = v["unix_ms"].as_u64().map_or("-".into(), |ms| short_time(ms, today(app)));
            let gain = v["bench"]["gain"].as_f64().map_or("-".to_string(), |g| format!("{:+.0}%", -g * 100.0));
            let why = crate::tui::app::plain(v["reason"].as_str().unwrap_or(""), false);
            let mut cells = vec![Line::from(when)];
            if wide {
                cells.push(Line::from(unit.to_string()));
            }
            cells.push(Line::from(Span::styled(outcome.to_string(), style)));
            if wide {
                cells.push(Line::from(v["stage"].as_str().unwrap_or("").to_string()));
            }
            cells.push(Line::from(gain));
            cells.push(Line::from(why));
            Row::new(cells)
        })
        .collect();
    let widths: Vec<Constraint> = if wide {
        vec![Constraint::Length(8), Constraint::Length(10), Constraint::Length(11), Constraint::Length(9), Constraint::Length(5), Constraint::Min(10)]
    } else {
        vec![Constraint::Length(8), Constraint::Length(11), Constraint::Length(5), Constraint::Min(10)]
    };
    f.render_widget(Table::new(rows, widths).header(header).block(block(t, "Verdicts, newest first (time in the candidate's column is less: -60% is 60% less)")).column_spacing(1), table_area);
}

// ---------------------------------------------------------------- overlays

/// A rectangle of at most `w`×`h` in the middle of `area`.
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

pub const HELP: &[(&str, &str)] = &[
    ("1-6, Tab", "Overview, Services, Logs, Agent, Memory, Improve"),
    ("?, F1", "this help (Esc closes it)"),
    ("q, Ctrl-C", "quit the console"),
    ("Up/Dn, j/k", "select a row"),
    ("Services r s x", "restart, start, stop the selected service (asks y/n)"),
    ("Services Enter", "details pane with recent events on/off"),
    ("Services l", "follow the selected service's log"),
    ("Logs a, [ ]", "follow all services, or the previous/next one"),
    ("Logs f, /", "filter lines; search (n older, N newer match)"),
    ("Logs Space", "pause or resume following; End: back to live"),
    ("Agent a, d", "approve or deny the selected call (asks y/n)"),
    ("Agent ←→ Enter", "calls or decisions pane; a decision in full"),
    ("Memory /", "type a query, Enter searches the agent's memory"),
];

fn help(app: &App, f: &mut Frame) {
    let t = &app.theme;
    let area = centered(f.area(), 76, HELP.len() as u16 + 4);
    f.render_widget(Clear, area);
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            let k = if t.console_font { k.replace("←→", "Lt/Rt") } else { k.to_string() };
            Line::from(vec![Span::styled(format!("{k:<18}"), t.key()), Span::raw(*what)])
        })
        .collect();
    lines.push(Line::styled("colours: NO_COLOR=1 for none; TERM=linux uses 16", t.dim()));
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block(t, "Help: keys")), area);
}

fn confirm(app: &App, prompt: &str, f: &mut Frame) {
    let t = &app.theme;
    let w = (prompt.chars().count() as u16 + 6).max(30);
    let area = centered(f.area(), w, 4);
    f.render_widget(Clear, area);
    let text = Text::from(vec![
        Line::styled(prompt.to_string(), t.title()),
        Line::from(vec![Span::styled("y", t.key()), Span::raw(" yes   "), Span::styled("n", t.key()), Span::raw(" no")]),
    ]);
    f.render_widget(Paragraph::new(text).alignment(Alignment::Center).wrap(Wrap { trim: true }).block(block(t, "Confirm").border_style(t.warn())), area);
}
