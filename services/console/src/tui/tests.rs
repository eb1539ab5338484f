//! Screen tests: the App fed as the pollers would feed it, drawn on ratatui's TestBackend at
//! 80×24 and 60×20, asserting what an operator looks for on each screen.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ghost_proto::agent::AgentRequest;
use ghost_proto::{Event, EventKind, Health, LogLine, Request, ServiceStatus, State, Stream};
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;
use serde_json::json;

use super::app::{key, App, Command, Link, Screen, Update};
use super::system::{ModelHealth, Sample};
use super::theme::{Colours, Theme};
use super::view::render;

const NOW_MS: u64 = 1_763_840_000_000;

fn service(name: &str, state: State) -> ServiceStatus {
    ServiceStatus::new(name, state)
}

fn log(service: &str, text: &str, stream: Stream) -> LogLine {
    LogLine { service: service.into(), ts_ms: NOW_MS - 5_000, stream, text: text.into() }
}

/// A machine as the pollers would report it: four services (one crash-looping, the model
/// downloading), events, logs, the agent with a decision, goals and a call waiting.
fn world(theme: Theme) -> App {
    let mut app = App::new(theme, "/run/ghost/control.sock".into(), "/run/ghost/agent.sock".into());
    app.now_ms = NOW_MS;
    let mut redis = service("redis", State::Running);
    redis.pid = Some(4242);
    redis.uptime_s = Some(3725.0);
    redis.restarts = 2;
    redis.health = Some(Health::Healthy);
    redis.memory_bytes = Some(12 << 20);
    redis.description = "Redis key-value store".into();
    redis.last_exit = Some("signal 9".into());
    let mut web = service("web", State::CrashLoop);
    web.restarts = 7;
    web.last_exit = Some("exit code 1".into());
    web.next_restart_ms = Some(30_000);
    let mut model = service("model", State::Starting);
    model.pid = Some(77);
    model.status_text = Some("downloading Qwen/Qwen2.5-0.5B: model.safetensors  45M / 100M  45%  2M/s  27s left".into());
    let mut agent = service("agent", State::Running);
    agent.pid = Some(99);
    agent.uptime_s = Some(120.0);
    app.apply(Update::Services(vec![web, redis, model, agent]));
    app.apply(Update::Event(Event { ts_ms: NOW_MS - 60_000, kind: EventKind::Exited, service: Some("redis".into()), pid: Some(4000), detail: "signal 9".into() }));
    app.apply(Update::Event(Event { ts_ms: NOW_MS - 59_000, kind: EventKind::Ready, service: Some("redis".into()), pid: Some(4242), detail: String::new() }));
    app.apply(Update::Event(Event { ts_ms: NOW_MS - 10_000, kind: EventKind::CrashLoop, service: Some("web".into()), pid: None, detail: "7 exits in 60 s".into() }));
    app.apply(Update::LogsBegin { generation: 0 });
    app.apply(Update::Log { generation: 0, line: log("redis", "Ready to accept connections tcp", Stream::Stdout) });
    app.apply(Update::Log { generation: 0, line: log("web", "bind: address already in use", Stream::Stderr) });
    app.apply(Update::Log { generation: 0, line: log("redis", "Background saving started", Stream::Stdout) });
    for i in 0..3u64 {
        app.apply(Update::System(Sample {
            cpu_percent: Some(10.0 + i as f64 * 20.0),
            mem_total: Some(4 << 30),
            mem_used: Some(1 << 30),
            load: Some([0.42, 0.30, 0.25]),
            cpus: 2,
            uptime_s: Some(3900.0),
            boot_time_s: Some(NOW_MS / 1000 - 3900),
            disks: vec![("/".into(), 6 << 30, 20 << 30)],
            hostname: Some("ghostbox".into()),
        }));
    }
    app.apply(Update::Model(ModelHealth::NoSocket("/run/ghost/model.sock".into())));
    let status = json!({"beats": 100, "interval_ms": 500, "decisions": 12, "decisions_by_rule": 11, "share_without_model": 11.0 / 12.0,
        "actions": 10, "repairs_verified": 8, "repairs_failed": 1, "pending_approvals": 1, "memory": "sqlite", "memory_episodes": 345, "mode": "normal"});
    app.apply(Update::AgentStatus { status: status.clone(), at_ms: 1_000 });
    let mut later = status;
    later["beats"] = json!(104);
    app.apply(Update::AgentStatus { status: later, at_ms: 3_000 });
    app.apply(Update::Decisions(vec![
        json!({"id": "41", "time_ms": NOW_MS - 30_000, "kind": "decision", "text": "rule revive-dead-service chose playbook revive for: redis exited (signal 9)", "layer": "rule", "rule": "revive-dead-service", "playbook": "revive", "outcome": "redis repaired in 120 ms"}),
        json!({"id": "40", "time_ms": NOW_MS - 90_000, "kind": "decision", "text": "model qwen chose service.restart {\"name\":\"web\"} for: operator says web is slow", "layer": "model", "rule": null, "playbook": null, "outcome": null}),
    ]));
    app.apply(Update::Goals(vec![
        json!({"id": "g-1", "text": "no service is in backoff, crash loop or blocked", "priority": 90, "status": "active", "check": "services:running", "parent": null, "attempts": 3}),
        json!({"id": "g-2", "text": "the state partition stays below 90%", "priority": 80, "status": "active", "check": "disk:/var/lib/ghost:below:90", "parent": null, "attempts": 0}),
    ]));
    app.apply(Update::Pending(vec![
        json!({"id": "5a7c01f2", "call": {"tool": "process.kill", "args": {"pid": 4321, "signal": "TERM"}, "why": "free port 6379"}, "requested": "2026-11-22T19:50:00Z", "expires_in_ms": 250_000, "resolution": null}),
    ]));
    app
}

fn draw(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| render(app, f)).unwrap();
    buffer_text(t.backend())
}

fn buffer_text(b: &TestBackend) -> String {
    let buf = b.buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

fn press(app: &mut App, keys: &[KeyCode]) -> Vec<Command> {
    keys.iter().flat_map(|k| app.handle_key(key(*k))).collect()
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        assert!(app.handle_key(key(KeyCode::Char(c))).is_empty());
    }
}

#[test]
fn overview_shows_the_machine_the_model_download_the_agent_and_what_is_wrong() {
    let app = world(Theme::FULL);
    let s = draw(&app, 80, 24);
    for want in ["1 Overview", "ghostbox", "up 1h05m", "booted ", "2 CPUs", "CPU   50%", "Mem   25% 1G/4G", "Disk  30% 6G/20G", "Load 0.42 0.30 0.25"] {
        assert!(s.contains(want), "{want:?} missing:\n{s}");
    }
    // The model server is not up yet: ghost-init's view of the model service, with the download.
    for want in ["no server on /run/ghost/model.sock", "service model  starting", "download  45%"] {
        assert!(s.contains(want), "{want:?} missing:\n{s}");
    }
    // The agent: 4 beats in 2 s, and the share of decisions made without a model.
    for want in ["heartbeat  2.0/s (every 500ms)", "decisions  12, 92% without a model", "1 waiting"] {
        assert!(s.contains(want), "{want:?} missing:\n{s}");
    }
    assert!(s.contains("Services: 2 of 4 running"), "{s}");
    assert!(s.contains("web crash-loop (last: exit code 1)"), "the service in trouble is named:\n{s}");
    // A state partition of its own is shown beside the root's disk.
    let mut two = app.history.last.clone().unwrap();
    two.disks.push(("/var/lib/ghost".into(), 19 << 30, 20 << 30));
    let mut app = app;
    app.apply(Update::System(two));
    assert!(draw(&app, 80, 24).contains("2 CPUs  /var/lib/ghost 95%"));
    // Once the server answers, its own words replace ghost-init's: first while it downloads…
    app.apply(Update::Model(ModelHealth::Answer(json!({"status": "downloading", "detail": "downloading Qwen/Qwen2.5-0.5B: model.safetensors  80M / 100M  80%  2M/s  10s left", "model": "Qwen/Qwen2.5-0.5B"}))));
    let s = draw(&app, 80, 24);
    assert!(s.contains("server  downloading") && s.contains("download  80%") && !s.contains("no server on"), "{s}");
    // …then ready.
    app.apply(Update::Model(ModelHealth::Answer(json!({"status": "ready", "model": "Qwen/Qwen2.5-0.5B-Instruct", "detail": ""}))));
    let s = draw(&app, 80, 24);
    assert!(s.contains("server  ready") && s.contains("model   Qwen/Qwen2.5-0.5B-Instruct"), "{s}");
}

#[test]
fn services_table_shows_state_uptime_restarts_health_memory_and_the_details_pane() {
    let mut app = world(Theme::FULL);
    press(&mut app, &[KeyCode::Char('2')]);
    assert_eq!(app.screen, Screen::Services);
    // Sorted by name: agent, model, redis, web.
    press(&mut app, &[KeyCode::Down, KeyCode::Down]);
    let s = draw(&app, 80, 24);
    for want in ["NAME", "STATE", "RESTARTS", "HEALTH", "MEMORY", "agent", "model", "web"] {
        assert!(s.contains(want), "{want:?} missing:\n{s}");
    }
    let redis_row = s.lines().find(|l| l.contains("> redis")).unwrap_or_else(|| panic!("redis is not the selected row:\n{s}"));
    for want in ["running", "1h02m", " 2 ", "healthy", "12M", "4242"] {
        assert!(redis_row.contains(want), "{want:?} not in the redis row {redis_row:?}");
    }
    assert!(s.lines().any(|l| l.contains("web") && l.contains("crash-loop") && l.contains(" 7 ")), "{s}");
    // Details of the selected service, with its own recent events only.
    assert!(s.contains("redis — Redis key-value store"), "{s}");
    assert!(s.contains("last exit: signal 9"), "{s}");
    assert!(s.contains("redis exited, pid 4000: signal 9") && s.contains("redis ready, pid 4242"), "{s}");
    assert!(!s.contains("7 exits in 60 s"), "another service's event is not in redis's details:\n{s}");
    // Enter hides the pane.
    press(&mut app, &[KeyCode::Enter]);
    assert!(!draw(&app, 80, 24).contains("Redis key-value store"));
}

#[test]
fn restart_start_and_stop_ask_first_and_only_yes_sends_the_request() {
    let mut app = world(Theme::FULL);
    press(&mut app, &[KeyCode::Char('2'), KeyCode::Down, KeyCode::Down]);
    assert!(press(&mut app, &[KeyCode::Char('r')]).is_empty(), "nothing is sent before the answer");
    let s = draw(&app, 80, 24);
    assert!(s.contains("Restart redis?") && s.contains("y yes") && s.contains("n no"), "{s}");
    // Other keys leave the question open; n cancels.
    assert!(press(&mut app, &[KeyCode::Char('j'), KeyCode::Char('n')]).is_empty());
    assert!(app.confirm.is_none() && app.selected_service().unwrap().name == "redis", "the cursor did not move behind the dialog");
    assert!(draw(&app, 80, 24).contains("cancelled"));
    let sent = press(&mut app, &[KeyCode::Char('r'), KeyCode::Char('y')]);
    assert_eq!(sent, vec![Command::Control(Request::Restart { name: "redis".into() })]);
    let sent = press(&mut app, &[KeyCode::Char('x'), KeyCode::Enter]);
    assert_eq!(sent, vec![Command::Control(Request::Stop { name: "redis".into() })]);
    let sent = press(&mut app, &[KeyCode::Up, KeyCode::Char('s'), KeyCode::Char('y')]);
    assert_eq!(sent, vec![Command::Control(Request::Start { name: "model".into() })]);
    // The daemon's answer shows in the status line, for a while.
    app.apply(Update::Done { what: "start model".into(), result: Err("no service named `model`".into()) });
    assert!(draw(&app, 80, 24).contains("start model: no service named `model`"));
    app.now_ms += super::app::FLASH_MS;
    let s = draw(&app, 80, 24);
    assert!(!s.contains("no service named") && s.contains("ghost-init up  agent up"), "{s}");
}

#[test]
fn logs_follow_all_or_one_service_filter_search_and_pause() {
    let mut app = world(Theme::FULL);
    press(&mut app, &[KeyCode::Char('3')]);
    let s = draw(&app, 80, 24);
    assert!(s.contains("Logs: all services"), "{s}");
    assert!(s.contains("redis | Ready to accept connections tcp") && s.contains("web | bind: address already in use"), "{s}");
    // Filter: only matching lines.
    press(&mut app, &[KeyCode::Char('f')]);
    typed(&mut app, "saving");
    press(&mut app, &[KeyCode::Enter]);
    let s = draw(&app, 80, 24);
    assert!(s.contains("filter: saving") && s.contains("Background saving started") && !s.contains("address already in use"), "{s}");
    press(&mut app, &[KeyCode::Char('f')]);
    app.handle_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    press(&mut app, &[KeyCode::Enter]);
    // Search: counted and highlighted, every line still shown.
    press(&mut app, &[KeyCode::Char('/')]);
    typed(&mut app, "READY TO");
    press(&mut app, &[KeyCode::Enter]);
    let s = draw(&app, 80, 24);
    assert!(s.contains("search: READY TO  (1 matching)"), "{s}");
    // The view moved back to the match (the two newer lines do not match).
    assert!(s.contains("scrolled back (2 newer)") && s.contains("Ready to accept") && !s.contains("Background saving"), "{s}");
    assert_eq!(press(&mut app, &[KeyCode::Char('n')]), vec![]);
    assert!(draw(&app, 80, 24).contains("no older match for \"READY TO\""));
    press(&mut app, &[KeyCode::End]);
    assert!(draw(&app, 80, 24).contains("Background saving"));
    // Pause: new lines are counted, not shown; resuming shows them.
    press(&mut app, &[KeyCode::Char(' ')]);
    app.apply(Update::Log { generation: 0, line: log("web", "a line that arrived while paused", Stream::Stdout) });
    let s = draw(&app, 80, 24);
    assert!(s.contains("PAUSED (1 new)") && !s.contains("arrived while paused"), "{s}");
    press(&mut app, &[KeyCode::Char(' ')]);
    assert!(draw(&app, 80, 24).contains("arrived while paused"));
    // Following one service starts a new stream; lines of the old one are ignored.
    let sent = press(&mut app, &[KeyCode::Char(']')]);
    assert_eq!(sent, vec![Command::FollowLogs { name: Some("agent".into()), generation: 1 }]);
    app.apply(Update::Log { generation: 0, line: log("web", "late line of the old stream", Stream::Stdout) });
    app.apply(Update::LogsBegin { generation: 1 });
    app.apply(Update::Log { generation: 1, line: log("agent", "heartbeat started", Stream::Stdout) });
    let s = draw(&app, 80, 24);
    assert!(s.contains("Logs: agent") && s.contains("| heartbeat started") && !s.contains("late line"), "{s}");
    assert_eq!(press(&mut app, &[KeyCode::Char('a')]), vec![Command::FollowLogs { name: None, generation: 2 }]);
    // `l` on the services screen follows the selected service.
    press(&mut app, &[KeyCode::Char('2'), KeyCode::End]);
    assert_eq!(press(&mut app, &[KeyCode::Char('l')]), vec![Command::FollowLogs { name: Some("web".into()), generation: 3 }]);
    assert_eq!(app.screen, Screen::Logs);
}

#[test]
fn agent_screen_shows_decisions_with_layer_and_why_goals_and_approves_a_pending_call() {
    let mut app = world(Theme::FULL);
    press(&mut app, &[KeyCode::Char('4')]);
    let s = draw(&app, 80, 24);
    for want in ["Waiting for approval (1)", "5a7c01f2", "process.kill", "free port 6379", "in 4m10s"] {
        assert!(s.contains(want), "{want:?} missing:\n{s}");
    }
    let rule = s.lines().find(|l| l.contains("revive-dead-service")).unwrap_or_else(|| panic!("no rule decision:\n{s}"));
    assert!(rule.contains("rule") && rule.contains("redis exited (signal 9)"), "the why is shown: {rule:?}");
    let model = s.lines().find(|l| l.contains("operator says web is slow")).unwrap_or_else(|| panic!("no model decision:\n{s}"));
    assert!(model.contains("model"), "{model:?}");
    assert!(s.contains("92% without a model"), "{s}");
    assert!(s.contains("g-1") && s.contains("services:running"), "{s}");
    // a asks, y approves through the agent's socket.
    press(&mut app, &[KeyCode::Char('a')]);
    assert!(draw(&app, 80, 24).contains("Approve 5a7c01f2 (process.kill)?"));
    assert_eq!(press(&mut app, &[KeyCode::Char('y')]), vec![Command::Agent(AgentRequest::Approve { id: "5a7c01f2".into() })]);
    let sent = press(&mut app, &[KeyCode::Char('d'), KeyCode::Char('y')]);
    assert!(matches!(&sent[..], [Command::Agent(AgentRequest::Deny { id, .. })] if id == "5a7c01f2"), "{sent:?}");
    // → moves to the decisions; Enter shows the selected one in full.
    press(&mut app, &[KeyCode::Right, KeyCode::Down]);
    let s = draw(&app, 80, 24);
    assert!(s.lines().any(|l| l.contains("> ") && l.contains("operator says web is")), "the model's decision is selected:\n{s}");
    press(&mut app, &[KeyCode::Enter]);
    let s = draw(&app, 80, 24);
    assert!(s.contains("Decision 40") && s.contains("model qwen chose service.restart {\"name\":\"web\"} for: operator says web is"), "{s}");
    // A newer decision arriving keeps the same one selected.
    let mut newer = vec![json!({"id": "42", "time_ms": NOW_MS, "text": "rule x chose playbook y for: z", "layer": "rule"})];
    newer.extend(app.agent.decisions.clone());
    app.apply(Update::Decisions(newer));
    assert!(draw(&app, 80, 24).contains("Decision 40"));
    press(&mut app, &[KeyCode::Esc, KeyCode::Left]);
    assert!(!draw(&app, 80, 24).contains("Decision 40") && !app.agent.on_decisions);
    // Nothing pending: a says so instead of asking.
    app.apply(Update::Pending(vec![]));
    assert!(press(&mut app, &[KeyCode::Char('a')]).is_empty() && app.confirm.is_none());
    assert!(draw(&app, 80, 24).contains("no call waits for approval"));
}

#[test]
fn memory_search_box_sends_the_query_and_shows_hits() {
    let mut app = world(Theme::FULL);
    press(&mut app, &[KeyCode::Char('5')]);
    assert!(draw(&app, 80, 24).contains("press / and type what to look for"));
    press(&mut app, &[KeyCode::Char('/')]);
    // While typing, digits and q are text, not screen keys.
    typed(&mut app, "disk full 9q");
    assert_eq!(app.screen, Screen::Memory);
    assert!(!app.quit);
    assert!(draw(&app, 80, 24).contains("> disk full 9q_"));
    let sent = press(&mut app, &[KeyCode::Enter]);
    assert_eq!(sent, vec![Command::Agent(AgentRequest::MemorySearch { query: "disk full 9q".into(), limit: Some(50) })]);
    app.apply(Update::MemoryResults {
        query: "disk full 9q".into(),
        result: Ok(vec![
            json!({"id": "17", "time_ms": NOW_MS - 3_600_000, "kind": "observation", "source": "sampler", "text": "disk.used_percent of / crossed 90", "score": 0.912}),
            json!({"id": "18", "time_ms": NOW_MS - 3_500_000, "kind": "outcome", "source": "rule", "text": "free-disk-space repaired: / at 71%", "score": 0.5}),
        ]),
    });
    let s = draw(&app, 80, 24);
    assert!(s.contains("Memories for \"disk full 9q\"") && s.contains("0.91") && s.contains("disk.used_percent of / crossed 90"), "{s}");
    press(&mut app, &[KeyCode::Down]);
    let s = draw(&app, 80, 24);
    assert!(s.contains("Memory 18 (outcome, rule)"), "the selected hit in full:\n{s}");
    app.apply(Update::MemoryResults { query: "x".into(), result: Err("agent: memory is not available".into()) });
    assert!(draw(&app, 80, 24).contains("agent: memory is not available"));
}

#[test]
fn improve_shows_each_units_generation_and_the_crucibles_verdicts() {
    let mut app = world(Theme::FULL);
    press(&mut app, &[KeyCode::Char('6')]);
    let s = draw(&app, 80, 24);
    assert!(s.contains("No improvable unit has a generation yet") && s.contains("ghost improve seed UNIT"), "{s}");
    let v = |ms: u64, outcome: &str, stage: &str, gain: Option<f64>, reason: &str| {
        json!({ "unit": "sample", "unix_ms": NOW_MS - ms, "outcome": outcome, "stage": stage, "reason": reason, "bench": gain.map(|g| json!({ "gain": g })) })
    };
    app.apply(Update::Improve(vec![super::app::UnitHistory {
        unit: "sample".into(),
        generation: Some(1),
        verdicts: vec![
            v(60_000, "seeded", "swap", None, "built and tested from the unit's source"),
            v(30_000, "refused", "tests", None, "its tests fail (exit code 101)"),
            v(10_000, "kept", "probation", Some(0.98), "faster by 98.0% (1.20 ms against 60.00 ms, 95% intervals apart)"),
        ],
    }]));
    let s = draw(&app, 80, 24);
    assert!(s.contains("generation 1 · 3 verdicts · 1 kept · 1 refused · 0 rolled back"), "{s}");
    let kept = s.lines().position(|l| l.contains("kept") && l.contains("-98%") && l.contains("faster by 98.0%")).unwrap_or_else(|| panic!("{s}"));
    let refused = s.lines().position(|l| l.contains("refused") && l.contains("tests fail")).unwrap_or_else(|| panic!("{s}"));
    assert!(kept < refused, "newest first:\n{s}");
    let narrow = draw(&app, 60, 20);
    assert!(narrow.contains("kept") && narrow.contains("-98%"), "{narrow}");
}

#[test]
fn help_overlay_lists_the_keys_and_closes_with_escape() {
    let mut app = world(Theme::FULL);
    let s = draw(&app, 80, 24);
    assert!(s.lines().last().unwrap().starts_with("? help  q quit"), "the footer names the help key:\n{s}");
    press(&mut app, &[KeyCode::Char('?')]);
    let s = draw(&app, 80, 24);
    for want in ["Help: keys", "restart, start, stop", "approve or deny", "filter lines; search"] {
        assert!(s.contains(want), "{want:?} missing:\n{s}");
    }
    // Keys do nothing else while help is open.
    assert!(press(&mut app, &[KeyCode::Char('2')]).is_empty());
    assert_eq!(app.screen, Screen::Overview);
    press(&mut app, &[KeyCode::Esc]);
    assert!(!draw(&app, 80, 24).contains("Help: keys"));
    press(&mut app, &[KeyCode::Char('q')]);
    assert!(app.quit);
}

#[test]
fn a_lost_control_socket_shows_reconnecting_and_the_last_known_services() {
    let mut app = world(Theme::FULL);
    app.apply(Update::Control(Link::Down("cannot connect to /run/ghost/control.sock: no such socket (is ghost-init running?)\n  hint: …".into())));
    press(&mut app, &[KeyCode::Char('2')]);
    let s = draw(&app, 80, 24);
    assert!(s.contains("ghost-init: reconnecting… cannot connect to /run/ghost/control.sock"), "{s}");
    assert!(s.contains("last known: reconnecting…") && s.contains("redis"), "{s}");
    // Back: the banner goes.
    app.apply(Update::Services(vec![service("redis", State::Running)]));
    assert!(!draw(&app, 80, 24).contains("reconnecting"));
    // The agent away: its box says so, the rest goes on.
    app.apply(Update::Agent(Link::Down("cannot connect to /run/ghost/agent.sock: no such socket".into())));
    press(&mut app, &[KeyCode::Char('1')]);
    let s = draw(&app, 80, 24);
    assert!(s.contains("agent reconnecting… (cannot connect to /run/ghost/agent.sock"), "the status line says so:\n{s}");
    assert!(s.contains("│reconnecting… cannot connect"), "the agent's box says so:\n{s}");
}

#[test]
fn every_screen_is_readable_on_a_narrow_terminal() {
    let mut app = world(Theme::PLAIN);
    let wants: [(char, &[&str]); 6] = [
        ('1', &["CPU", "beat", "web crash-loop"]),
        ('2', &["redis", "crash-loop", "running"]),
        ('3', &["Ready to accept", "address already in use"]),
        ('4', &["5a7c01f2", "redis exited (signal 9)"]),
        ('5', &["Search the agent's memory"]),
        ('6', &["No improvable unit has a generation yet."]),
    ];
    for (k, want) in wants {
        press(&mut app, &[KeyCode::Char(k)]);
        for (w, h) in [(60, 20), (80, 24)] {
            let s = draw(&app, w, h);
            for text in want {
                assert!(s.contains(text), "screen {k} at {w}×{h}: {text:?} missing:\n{s}");
            }
            assert!(s.contains("? help  q quit"), "screen {k} at {w}×{h}: no footer:\n{s}");
            assert!(s.contains(&format!("{k} {}", app.screen.title())), "screen {k} at {w}×{h}: no tab line:\n{s}");
        }
    }
    press(&mut app, &[KeyCode::Char('?')]);
    assert!(draw(&app, 60, 20).contains("Help: keys"));
    // Tiny or degenerate sizes draw without panicking.
    for (w, h) in [(1, 1), (20, 5), (30, 8), (200, 60)] {
        for k in '1'..='6' {
            app.help = false;
            press(&mut app, &[KeyCode::Char(k)]);
            draw(&app, w, h);
        }
    }
}

#[test]
fn colours_degrade_to_16_on_the_linux_console_and_to_none_with_no_color() {
    let check = |theme: Theme, allowed: &dyn Fn(Color) -> bool| {
        let mut app = world(theme);
        for k in '1'..='6' {
            press(&mut app, &[KeyCode::Char(k)]);
            let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
            t.draw(|f| render(&app, f)).unwrap();
            for cell in t.backend().buffer().content() {
                assert!(allowed(cell.fg) && allowed(cell.bg), "{theme:?} screen {k}: {:?}/{:?} at {:?}", cell.fg, cell.bg, cell.symbol());
            }
        }
    };
    check(Theme::decide(Some("xterm"), Some("1")), &|c| c == Color::Reset);
    check(Theme::decide(Some("linux"), None), &|c| !matches!(c, Color::Indexed(_) | Color::Rgb(..)));
    // The Linux console's font has no eighth blocks and no `…`.
    let mut app = world(Theme::decide(Some("linux"), None));
    let s = draw(&app, 80, 24);
    assert!(!s.contains('▁') && !s.contains('▂') && !s.contains('…') && s.contains("Up/Dn") == (app.screen != Screen::Overview), "{s}");
    press(&mut app, &[KeyCode::Char('2')]);
    assert!(draw(&app, 80, 24).contains("Up/Dn select"));
    assert_eq!(Theme::decide(Some("linux"), None).colours, Colours::Basic);
}

/// Every view at 80×24 as text; with GHOST_CONSOLE_SCREENS=FILE they are written there (the
/// screens of the README and the closing note).
#[test]
fn screens_at_80x24() {
    let mut app = world(Theme::PLAIN);
    let mut out = String::new();
    for (i, s) in Screen::ALL.iter().enumerate() {
        press(&mut app, &[KeyCode::Char((b'1' + i as u8) as char)]);
        if *s == Screen::Services {
            press(&mut app, &[KeyCode::Home, KeyCode::Down, KeyCode::Down]);
        }
        if *s == Screen::Memory {
            app.memory.query = "redis".into();
            app.apply(Update::MemoryResults {
                query: "redis".into(),
                result: Ok(vec![
                    json!({"id": "41", "time_ms": NOW_MS - 30_000, "kind": "decision", "source": "rule", "text": "rule revive-dead-service chose playbook revive for: redis exited (signal 9)", "score": 0.934}),
                    json!({"id": "39", "time_ms": NOW_MS - 31_000, "kind": "observation", "source": "supervisor", "text": "redis exited (signal 9)", "score": 0.871}),
                    json!({"id": "43", "time_ms": NOW_MS - 29_000, "kind": "outcome", "source": "rule", "text": "redis repaired in 120 ms: running, held 100 ms", "score": 0.802}),
                ]),
            });
        }
        let text = draw(&app, 80, 24);
        assert_eq!(text.lines().count(), 24);
        out.push_str(&format!("==== {} (80×24) ====\n{text}\n", s.title()));
    }
    press(&mut app, &[KeyCode::Char('4'), KeyCode::Right, KeyCode::Enter]);
    out.push_str(&format!("==== Agent: a decision in full (80×24) ====\n{}\n", draw(&app, 80, 24)));
    press(&mut app, &[KeyCode::Esc, KeyCode::Left, KeyCode::Char('6'), KeyCode::Char('?')]);
    out.push_str(&format!("==== Help overlay (80×24) ====\n{}\n", draw(&app, 80, 24)));
    press(&mut app, &[KeyCode::Esc, KeyCode::Char('2'), KeyCode::Char('r')]);
    out.push_str(&format!("==== Restart confirmation (80×24) ====\n{}\n", draw(&app, 80, 24)));
    press(&mut app, &[KeyCode::Char('n'), KeyCode::Esc]);
    for (i, s) in Screen::ALL.iter().enumerate() {
        press(&mut app, &[KeyCode::Char((b'1' + i as u8) as char)]);
        let text = draw(&app, 60, 20);
        assert_eq!(text.lines().count(), 20);
        out.push_str(&format!("==== {} (60×20) ====\n{text}\n", s.title()));
    }
    if let Some(path) = std::env::var_os("GHOST_CONSOLE_SCREENS") {
        std::fs::write(&path, &out).unwrap();
        eprintln!("screens written to {}", std::path::Path::new(&path).display());
    }
}

#[test]
fn overview_at_60x20_keeps_the_figures() {
    let app = world(Theme::PLAIN);
    let s = draw(&app, 60, 20);
    for want in ["CPU   50%", "Mem   25%", "Disk  30%", "Load 0.42", "beat 2.0/s (every 500ms)", "decided 12, 92% no model", "approvals 1 waiting", "download  45%"] {
        assert!(s.contains(want), "{want:?} missing:\n{s}");
    }
}

#[test]
fn resizing_redraws_the_whole_screen_at_the_new_size() {
    let mut app = world(Theme::FULL);
    press(&mut app, &[KeyCode::Char('2')]);
    let mut t = Terminal::new(TestBackend::new(100, 30)).unwrap();
    t.draw(|f| render(&app, f)).unwrap();
    assert!(buffer_text(t.backend()).contains("RESTARTS"));
    // Smaller, as a terminal window dragged narrower: the layout follows, nothing is left over.
    t.backend_mut().resize(60, 20);
    t.draw(|f| render(&app, f)).unwrap();
    let s = buffer_text(t.backend());
    assert_eq!((s.lines().count(), s.lines().next().unwrap().chars().count()), (20, 60));
    assert!(s.contains("RST") && !s.contains("RESTARTS") && s.contains("web"), "{s}");
    t.backend_mut().resize(120, 40);
    t.draw(|f| render(&app, f)).unwrap();
    let s = buffer_text(t.backend());
    assert!(s.contains("RESTARTS") && s.lines().last().unwrap().starts_with("? help"), "{s}");
}

#[test]
fn escape_sequences_in_a_log_line_never_reach_the_terminal() {
    use super::app::plain;
    assert_eq!(plain("\x1b[31mred\x1b[0m and \x1b[2Jcleared", false), "red and cleared");
    assert_eq!(plain("title\x1b]0;pwned\x07 after", false), "title after");
    assert_eq!(plain("a\tb\r\nc\x00d\u{9b}e", false), "a    b c?d?e");
    assert_eq!(plain("line one\nline two", true), "line one\nline two");
    let mut app = world(Theme::FULL);
    app.apply(Update::Log { generation: 0, line: log("web", "\x1b[1;32mGET /\x1b[0m 200\x1b[2J\x1b[H", Stream::Stdout) });
    app.apply(Update::Event(Event { ts_ms: NOW_MS, kind: EventKind::Status, service: Some("web".into()), pid: None, detail: "50%\r\x1b[K".into() }));
    app.apply(Update::Decisions(vec![json!({"id": "1", "text": "rule r chose playbook p for: \x1b[31mbad\x1b[0m input", "layer": "rule"})]));
    for k in ['1', '2', '3', '4'] {
        press(&mut app, &[KeyCode::Char(k)]);
        let s = draw(&app, 80, 24);
        assert!(!s.chars().any(|c| c.is_control() && c != '\n'), "screen {k} carries a control character:\n{s:?}");
    }
    press(&mut app, &[KeyCode::Char('3')]);
    assert!(draw(&app, 80, 24).contains("web | GET / 200"));
}

#[test]
fn the_crucibles_units_are_read_from_the_generations_directory() {
    let t = tempfile::tempdir().unwrap();
    let unit = t.path().join("var/lib/ghost/generations/sample");
    std::fs::create_dir_all(unit.join("1")).unwrap();
    std::os::unix::fs::symlink("1", unit.join("current")).unwrap();
    std::fs::write(unit.join("history.jsonl"), "{\"outcome\":\"seeded\",\"unix_ms\":1}\nnot json\n{\"outcome\":\"kept\",\"unix_ms\":2}\n").unwrap();
    let units = super::poll::crucible_units(t.path());
    assert_eq!(units.len(), 1);
    assert_eq!((units[0].unit.as_str(), units[0].generation, units[0].verdicts.len()), ("sample", Some(1), 2));
    assert!(super::poll::crucible_units(&t.path().join("nowhere")).is_empty());
}
