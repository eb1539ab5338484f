//! The console's I/O, off the drawing thread: one thread per source, each feeding
//! [`Update`]s into the loop's channel and reconnecting by itself when its socket goes away
//! (ghost-init restarted, the agent restarted): the screen says "reconnecting…" meanwhile.
//!
//! - control: `status` every second over one connection, and the operator's start, stop and
//!   restart on the same connection;
//! - events: ghost-init's event stream;
//! - logs: the followed log stream; following another service ends the stream (shutdown of a
//!   duplicate of its socket) and the thread opens the new one;
//! - agent: status, decisions, goals and pending calls every second, and approve, deny and
//!   memory search;
//! - system: /proc and statvfs every second; the model server's `/health` every two seconds.

use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ghost_proto::agent::AgentRequest;
use ghost_proto::{Request, StreamItem};
use ghostctl::client::{Connection, SocketPath};
use ghostctl::failure::Failure;
use serde_json::Value;

use super::app::{Link, Update};
use super::system::{model_health, Paths, Sampler};

/// How often status is asked.
pub const REFRESH: Duration = Duration::from_secs(1);
/// The longest wait between two tries to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Whatever the loop receives: a key or resize from the terminal, or an update.
#[derive(Debug)]
pub enum Msg {
    Input(crossterm::event::Event),
    /// The terminal cannot be read any more.
    InputGone(String),
    Update(Update),
}

/// Sends an update; false when the loop has gone (the thread then ends).
fn send(tx: &Sender<Msg>, u: Update) -> bool {
    tx.send(Msg::Update(u)).is_ok()
}

/// What the loop holds to give the pollers work.
pub struct Pollers {
    pub control: Sender<Request>,
    pub agent: Sender<AgentRequest>,
    pub logs: LogFollow,
}

/// The log stream to follow, shared with the logs thread.
#[derive(Clone, Default)]
pub struct LogFollow {
    inner: Arc<Mutex<Target>>,
}

#[derive(Default)]
struct Target {
    name: Option<String>,
    generation: u64,
    /// A duplicate of the open stream's socket, to end it from here.
    stream: Option<UnixStream>,
}

impl LogFollow {
    /// Follow `name` (None: all) as stream `generation`; the open stream ends at once.
    pub fn follow(&self, name: Option<String>, generation: u64) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.name = name;
        t.generation = generation;
        if let Some(s) = t.stream.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn current(&self) -> (Option<String>, u64) {
        let t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (t.name.clone(), t.generation)
    }
}

pub fn spawn(control: SocketPath, agent: SocketPath, paths: Paths, tx: Sender<Msg>) -> std::io::Result<Pollers> {
    let (control_tx, control_rx) = std::sync::mpsc::channel();
    let (agent_tx, agent_rx) = std::sync::mpsc::channel();
    let logs = LogFollow::default();
    let named = |name: &str| std::thread::Builder::new().name(format!("console-{name}"));
    {
        let (s, tx) = (control.clone(), tx.clone());
        named("control").spawn(move || control_loop(&s, &tx, &control_rx))?;
    }
    {
        let (s, tx) = (control.clone(), tx.clone());
        named("events").spawn(move || events_loop(&s, &tx))?;
    }
    {
        let (s, tx, follow) = (control.clone(), tx.clone(), logs.clone());
        named("logs").spawn(move || logs_loop(&s, &tx, &follow))?;
    }
    {
        let tx = tx.clone();
        named("agent").spawn(move || agent_loop(&agent, &tx, &agent_rx))?;
    }
    {
        let (p, tx) = (paths.clone(), tx.clone());
        named("system").spawn(move || {
            let mut sampler = Sampler::new(p);
            while send(&tx, Update::System(sampler.sample())) {
                std::thread::sleep(REFRESH);
            }
        })?;
    }
    {
        let (root, tx) = (paths.root.clone(), tx.clone());
        named("improve").spawn(move || {
            while send(&tx, Update::Improve(crucible_units(&root))) {
                std::thread::sleep(REFRESH * 2);
            }
        })?;
    }
    named("model").spawn(move || {
        while send(&tx, Update::Model(model_health(&paths.model_socket, Duration::from_secs(2)))) {
            std::thread::sleep(REFRESH * 2);
        }
    })?;
    Ok(Pollers { control: control_tx, agent: agent_tx, logs })
}

/// What an operator's control request is called in the status line.
fn describe(req: &Request) -> String {
    match req {
        Request::Start { name } => format!("start {name}"),
        Request::Stop { name } => format!("stop {name}"),
        Request::Restart { name } => format!("restart {name}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn unreachable_now(e: &Failure) -> bool {
    matches!(e, Failure::Unreachable(_))
}

/// Waits up to `d` for a command; every command that arrives is handed to `each`, which says
/// whether to keep waiting. Returns false when the loop has gone.
fn wait_commands<T>(rx: &Receiver<T>, d: Duration, mut each: impl FnMut(T) -> bool) -> bool {
    let deadline = Instant::now() + d;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(cmd) => {
                if !each(cmd) {
                    return true;
                }
            }
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

pub fn control_loop(socket: &SocketPath, tx: &Sender<Msg>, cmds: &Receiver<Request>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut conn = match Connection::open(socket) {
            Ok(c) => c,
            Err(e) => {
                let why = e.to_string();
                if !send(tx, Update::Control(Link::Down(why.clone()))) {
                    return;
                }
                let alive = wait_commands(cmds, backoff, |req| send(tx, Update::Done { what: describe(&req), result: Err(format!("ghost-init is not reachable: {}", why.lines().next().unwrap_or(""))) }));
                if !alive {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        loop {
            match conn.request(&Request::Status { name: None }) {
                Ok(r) => {
                    if !send(tx, Update::Services(r.services.unwrap_or_default())) {
                        return;
                    }
                }
                Err(e) => {
                    if !send(tx, Update::Control(Link::Down(e.to_string()))) {
                        return;
                    }
                    break;
                }
            }
            let mut lost = false;
            let alive = wait_commands(cmds, REFRESH, |req| {
                let what = describe(&req);
                let result = conn.request(&req).map(|_| String::new()).map_err(|e| {
                    lost = unreachable_now(&e);
                    e.to_string()
                });
                // After an action, refresh the status at once (a loop that has gone is
                // noticed by the next send).
                let _ = send(tx, Update::Done { what, result });
                false
            });
            if !alive {
                return;
            }
            if lost {
                break;
            }
        }
    }
}

pub fn events_loop(socket: &SocketPath, tx: &Sender<Msg>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Ok(mut conn) = Connection::open(socket) {
            if conn.request(&Request::Events).is_ok() {
                backoff = FIRST_BACKOFF;
                while let Ok(Some(item)) = conn.next_item() {
                    if let StreamItem::Event(e) = item {
                        if !send(tx, Update::Event(e)) {
                            return;
                        }
                    }
                }
            }
        }
        // The control loop tells the operator; this one only tries again.
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

pub fn logs_loop(socket: &SocketPath, tx: &Sender<Msg>, follow: &LogFollow) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let (name, generation) = follow.current();
        let opened = Connection::open(socket).and_then(|mut c| c.request(&Request::Logs { name: name.clone(), lines: Some(500), follow: true }).map(|_| c));
        if let Ok(mut conn) = opened {
            backoff = FIRST_BACKOFF;
            let dup = conn.socket_fd().try_clone_to_owned().map(UnixStream::from);
            {
                let mut t = follow.inner.lock().unwrap_or_else(|p| p.into_inner());
                if t.generation != generation {
                    continue;
                }
                t.stream = dup.ok();
            }
            if !send(tx, Update::LogsBegin { generation }) {
                return;
            }
            while let Ok(Some(item)) = conn.next_item() {
                let u = match item {
                    StreamItem::Log(line) => Update::Log { generation, line },
                    StreamItem::Dropped(count) => Update::LogsDropped { generation, count },
                    StreamItem::Event(_) => continue,
                };
                if !send(tx, u) {
                    return;
                }
            }
            follow.inner.lock().unwrap_or_else(|p| p.into_inner()).stream = None;
            if follow.current().1 != generation {
                // Ended on purpose: follow the new target at once.
                continue;
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn at_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Asks the agent for one list; an error other than a lost connection leaves the list as it
/// was (an older agent may not know a request).
fn list(conn: &mut Connection, req: &AgentRequest) -> Result<Option<Vec<Value>>, Failure> {
    match conn.agent_request::<Vec<Value>>(req) {
        Ok(v) => Ok(Some(v.unwrap_or_default())),
        Err(e) if unreachable_now(&e) => Err(e),
        Err(_) => Ok(None),
    }
}

/// What the agent's counters said when decisions were last read.
#[derive(Default)]
struct Seen {
    counters: Option<Vec<u64>>,
    at: Option<Instant>,
}

/// Decisions are read again only when a counter that a new decision or a new outcome moves
/// has moved (each decision costs the agent a memory query for its outcome), and at least
/// every 10 s.
const COUNTERS: [&str; 8] = ["decisions", "actions", "repairs_verified", "repairs_failed", "skipped", "escalations", "errors", "waiting_for_approval"];

fn refresh_agent(conn: &mut Connection, tx: &Sender<Msg>, start: Instant, seen: &mut Seen) -> Result<bool, Failure> {
    let status: Value = conn.agent_request(&AgentRequest::Status)?.unwrap_or_default();
    let counters: Vec<u64> = COUNTERS.iter().map(|k| status[*k].as_u64().unwrap_or(0)).collect();
    let stale = seen.counters.as_ref() != Some(&counters) || seen.at.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
    if !send(tx, Update::AgentStatus { status, at_ms: at_ms(start) }) {
        return Ok(false);
    }
    type Make = fn(Vec<Value>) -> Update;
    let mut asks: Vec<(AgentRequest, Make)> = vec![(AgentRequest::Pending, Update::Pending), (AgentRequest::Goals, Update::Goals)];
    if stale {
        asks.push((AgentRequest::Decisions { limit: Some(50) }, Update::Decisions));
    }
    for (req, make) in asks {
        if let Some(v) = list(conn, &req)? {
            if !send(tx, make(v)) {
                return Ok(false);
            }
        }
    }
    if stale {
        *seen = Seen { counters: Some(counters), at: Some(Instant::now()) };
    }
    Ok(true)
}

/// The agent's answer to an approve or deny, in a few words.
fn resolution_words(req: &AgentRequest, v: &Value) -> String {
    match req {
        AgentRequest::Approve { .. } => ghostctl::agent_render::tool_outcome(v).lines().next().unwrap_or("approved").to_string(),
        _ => "denied".into(),
    }
}

pub fn agent_loop(socket: &SocketPath, tx: &Sender<Msg>, cmds: &Receiver<AgentRequest>) {
    let start = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut conn = match Connection::open(socket) {
            Ok(c) => c,
            Err(e) => {
                let why = e.to_string();
                if !send(tx, Update::Agent(Link::Down(why.clone()))) {
                    return;
                }
                let alive = wait_commands(cmds, backoff, |req| {
                    let err = format!("the agent is not reachable: {}", why.lines().next().unwrap_or(""));
                    match req {
                        AgentRequest::MemorySearch { query, .. } => send(tx, Update::MemoryResults { query, result: Err(err) }),
                        other => send(tx, Update::Done { what: describe_agent(&other), result: Err(err) }),
                    }
                });
                if !alive {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        // A new connection (perhaps a new agent) reads everything again.
        let mut seen = Seen::default();
        loop {
            match refresh_agent(&mut conn, tx, start, &mut seen) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    if !send(tx, Update::Agent(Link::Down(e.to_string()))) {
                        return;
                    }
                    break;
                }
            }
            let mut lost = false;
            let alive = wait_commands(cmds, REFRESH, |req| {
                let outcome = conn.agent_request::<Value>(&req);
                if let Err(e) = &outcome {
                    lost = unreachable_now(e);
                }
                match req {
                    AgentRequest::MemorySearch { query, .. } => {
                        let result = outcome.map(|v| v.and_then(|v| v.as_array().cloned()).unwrap_or_default()).map_err(|e| e.to_string());
                        // A search does not need the lists again.
                        send(tx, Update::MemoryResults { query, result }) && !lost
                    }
                    other => {
                        let result = outcome.map(|v| resolution_words(&other, &v.unwrap_or_default())).map_err(|e| e.to_string());
                        let _ = send(tx, Update::Done { what: describe_agent(&other), result });
                        false
                    }
                }
            });
            if !alive {
                return;
            }
            if lost {
                break;
            }
        }
    }
}

fn describe_agent(req: &AgentRequest) -> String {
    match req {
        AgentRequest::Approve { id } => format!("approve {id}"),
        AgentRequest::Deny { id, .. } => format!("deny {id}"),
        AgentRequest::MemorySearch { query, .. } => format!("memory search \"{query}\""),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghostctl::client::{socket_path, Endpoint};
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A fake ghost-init that answers `status` with one service, then hangs up (as when
    /// ghost-init restarts).
    fn serve_one_client(listener: &UnixListener, service: &str) {
        let (s, _) = listener.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"status\""), "{line}");
        writeln!(w, r#"{{"ok":true,"services":[{{"name":"{service}","state":"running","restarts":0}}]}}"#).unwrap();
    }

    fn next_control(rx: &Receiver<Msg>) -> Update {
        loop {
            match rx.recv_timeout(Duration::from_secs(20)).expect("the control poller said nothing for 20 s") {
                Msg::Update(u @ (Update::Services(_) | Update::Control(_) | Update::Done { .. })) => return u,
                _ => continue,
            }
        }
    }

    #[test]
    fn the_control_poller_reports_a_lost_socket_and_reconnects_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let socket = socket_path(Endpoint::Control, Some(&path), None, None);
        let (tx, rx) = std::sync::mpsc::channel();
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || control_loop(&socket, &tx, &cmd_rx));
        // Nothing listens yet: down, with the reason.
        let Update::Control(Link::Down(why)) = next_control(&rx) else { panic!("expected down first") };
        assert!(why.contains("no such socket"), "{why}");
        // A ghost-init appears: its services arrive.
        let listener = UnixListener::bind(&path).unwrap();
        serve_one_client(&listener, "first");
        let got = loop {
            if let Update::Services(s) = next_control(&rx) {
                break s;
            }
        };
        assert_eq!(got[0].name, "first");
        // It goes away (the connection closes): down again, then back with a new ghost-init.
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        loop {
            if let Update::Control(Link::Down(_)) = next_control(&rx) {
                break;
            }
        }
        // A command while it is down is answered with the reason, not lost silently.
        cmd_tx.send(Request::Restart { name: "first".into() }).unwrap();
        loop {
            if let Update::Done { what, result } = next_control(&rx) {
                assert_eq!(what, "restart first");
                assert!(result.unwrap_err().contains("not reachable"));
                break;
            }
        }
        let listener = UnixListener::bind(&path).unwrap();
        serve_one_client(&listener, "second");
        loop {
            if let Update::Services(s) = next_control(&rx) {
                assert_eq!(s[0].name, "second");
                break;
            }
        }
    }

    #[test]
    fn following_another_log_ends_the_open_stream_and_opens_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let socket = socket_path(Endpoint::Control, Some(&path), None, None);
        let (tx, rx) = std::sync::mpsc::channel();
        let follow = LogFollow::default();
        let f2 = follow.clone();
        std::thread::spawn(move || logs_loop(&socket, &tx, &f2));
        let (requests_tx, requests) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let s = stream.unwrap();
                let tx = requests_tx.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut w = s;
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    let _ = tx.send(line.clone());
                    let who = if line.contains("\"web\"") { "web" } else { "all" };
                    let _ = writeln!(w, r#"{{"ok":true,"stream":"logs"}}"#);
                    let _ = writeln!(w, r#"{{"log":{{"service":"{who}","ts_ms":1,"stream":"stdout","text":"hello from {who}"}}}}"#);
                    // Keep the stream open until the client ends it.
                    let mut rest = String::new();
                    let _ = r.read_line(&mut rest);
                });
            }
        });
        let first = requests.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(first.contains("\"follow\":true") && !first.contains("\"name\""), "{first}");
        let text_of = |want_gen: u64| loop {
            match rx.recv_timeout(Duration::from_secs(20)).expect("no log line") {
                Msg::Update(Update::Log { generation, line }) if generation == want_gen => return line.text,
                _ => continue,
            }
        };
        assert_eq!(text_of(0), "hello from all");
        follow.follow(Some("web".into()), 1);
        let second = requests.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(second.contains("\"name\":\"web\""), "{second}");
        assert_eq!(text_of(1), "hello from web");
    }

    #[test]
    fn the_agent_poller_reads_decisions_only_when_they_can_have_changed_and_passes_approvals_on() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let decisions = Arc::new(AtomicU64::new(1));
        let asked = Arc::new(AtomicU64::new(0));
        let (d, a) = (decisions.clone(), asked.clone());
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let req: Value = serde_json::from_str(&line).unwrap();
                let result = match req["cmd"].as_str().unwrap() {
                    "status" => serde_json::json!({"beats": 7, "decisions": d.load(Ordering::SeqCst)}),
                    "decisions" => {
                        a.fetch_add(1, Ordering::SeqCst);
                        serde_json::json!([{"id": "1", "text": "rule r chose playbook p for: x", "layer": "rule"}])
                    }
                    "approve" => serde_json::json!({"decision": "allow", "reason": "approved by operator", "rule": "approvals.approved", "result": {"ok": true}}),
                    _ => serde_json::json!([]),
                };
                writeln!(w, "{}", serde_json::json!({"ok": true, "result": result})).unwrap();
                line.clear();
            }
        });
        let socket = socket_path(Endpoint::Agent, Some(&path), None, None);
        let (tx, rx) = std::sync::mpsc::channel();
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || agent_loop(&socket, &tx, &cmd_rx));
        let next = || match rx.recv_timeout(Duration::from_secs(20)).expect("the agent poller said nothing for 20 s") {
            Msg::Update(u) => u,
            other => panic!("{other:?}"),
        };
        let statuses_until_decisions = |limit: usize| {
            let mut statuses = 0;
            loop {
                match next() {
                    Update::AgentStatus { .. } => statuses += 1,
                    Update::Decisions(d) => return Some((statuses, d)),
                    _ => {}
                }
                if statuses > limit {
                    return None;
                }
            }
        };
        let (_, first) = statuses_until_decisions(1).expect("decisions are read on connecting");
        assert_eq!(first[0]["layer"], "rule");
        // Two more rounds with the same counters: no decisions asked.
        assert!(statuses_until_decisions(2).is_none(), "decisions were read again though nothing changed");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // A new decision: read again.
        decisions.store(2, Ordering::SeqCst);
        assert!(statuses_until_decisions(2).is_some());
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        cmd_tx.send(AgentRequest::Approve { id: "r-1".into() }).unwrap();
        loop {
            if let Update::Done { what, result } = next() {
                assert_eq!((what.as_str(), result.as_deref()), ("approve r-1", Ok("allow (approvals.approved): approved by operator")));
                break;
            }
        }
    }
}

/// The crucible's units under `root` (`/var/lib/ghost/generations/UNIT/`: the `current` link
/// and `history.jsonl`), by name.
pub fn crucible_units(root: &std::path::Path) -> Vec<crate::tui::app::UnitHistory> {
    let dir = root.join("var/lib/ghost/generations");
    let mut units: Vec<crate::tui::app::UnitHistory> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let generation = std::fs::read_link(e.path().join("current")).ok().and_then(|l| l.to_str()?.parse().ok());
            let verdicts = std::fs::read_to_string(e.path().join("history.jsonl")).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            crate::tui::app::UnitHistory { unit: e.file_name().to_string_lossy().into_owned(), generation, verdicts }
        })
        .collect();
    units.sort_by(|a, b| a.unit.cmp(&b.unit));
    units
}
