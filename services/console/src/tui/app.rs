//! The console's state, what the pollers tell it ([`Update`]) and what a key does to it
//! ([`App::handle_key`], which returns the [`Command`]s for the pollers). Pure: no I/O, no
//! clock of its own, so every screen is tested without a terminal.

use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ghost_proto::agent::AgentRequest;
use ghost_proto::{Event, LogLine, Request, ServiceStatus};
use serde_json::Value;

use super::system::{ModelHealth, Sample};
use super::theme::Theme;

/// How many readings the sparklines keep (one a second).
pub const HISTORY: usize = 240;
/// Events kept for the details pane.
pub const EVENTS: usize = 500;
/// Log lines kept.
pub const LOG_LINES: usize = 5000;
/// How long the result of an action stays in the status line.
pub const FLASH_MS: u64 = 15_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Overview,
    Services,
    Logs,
    Agent,
    Memory,
    Improve,
}

impl Screen {
    pub const ALL: [Screen; 6] = [Screen::Overview, Screen::Services, Screen::Logs, Screen::Agent, Screen::Memory, Screen::Improve];

    pub fn title(self) -> &'static str {
        match self {
            Screen::Overview => "Overview",
            Screen::Services => "Services",
            Screen::Logs => "Logs",
            Screen::Agent => "Agent",
            Screen::Memory => "Memory",
            Screen::Improve => "Improve",
        }
    }

    fn index(self) -> usize {
        Screen::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// A connection as the operator should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not tried yet.
    Connecting,
    Up,
    /// Lost or never made; the poller keeps trying.
    Down(String),
}

/// What the pollers send.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Control(Link),
    Services(Vec<ServiceStatus>),
    Event(Event),
    /// A new log stream began (after a change of what is followed, or a reconnection).
    LogsBegin { generation: u64 },
    Log { generation: u64, line: LogLine },
    /// Lines ghost-init dropped because the console read too slowly.
    LogsDropped { generation: u64, count: u64 },
    Agent(Link),
    /// The agent's status object and when it was read (ms on a monotonic clock).
    AgentStatus { status: Value, at_ms: u64 },
    Decisions(Vec<Value>),
    Goals(Vec<Value>),
    Pending(Vec<Value>),
    MemoryResults { query: String, result: Result<Vec<Value>, String> },
    /// The result of a start, stop, restart, approve or deny.
    Done { what: String, result: Result<String, String> },
    System(Sample),
    Model(ModelHealth),
    /// The crucible's units: the generation each runs and its verdicts (history.jsonl).
    Improve(Vec<UnitHistory>),
}

/// One improvable unit as `/var/lib/ghost/generations/UNIT/` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitHistory {
    pub unit: String,
    /// What `current` points at.
    pub generation: Option<u64>,
    /// Every verdict, oldest first.
    pub verdicts: Vec<Value>,
}

/// What a key asks the pollers to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Control(Request),
    Agent(AgentRequest),
    /// Follow this service's log (None: all), as stream `generation`.
    FollowLogs { name: Option<String>, generation: u64 },
}

/// An action that waits for `y`.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirm {
    pub prompt: String,
    pub command: Command,
}

/// Which text box has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    LogFilter,
    LogSearch,
    MemoryQuery,
}

#[derive(Debug, Clone, Default)]
pub struct LogView {
    pub lines: VecDeque<LogLine>,
    /// The service followed; None: all.
    pub target: Option<String>,
    pub generation: u64,
    /// Frozen: new lines are kept but the view does not move.
    pub paused: bool,
    /// Lines that arrived since the pause.
    pub unseen: usize,
    /// How many (shown) lines up from the newest the view's bottom is.
    pub scroll: usize,
    pub filter: String,
    pub search: String,
    pub dropped: u64,
}

impl LogView {
    /// The lines that pass the filter (case-insensitive substring of service or text).
    pub fn shown(&self) -> Vec<&LogLine> {
        let f = self.filter.to_lowercase();
        self.lines.iter().filter(|l| f.is_empty() || l.text.to_lowercase().contains(&f) || l.service.to_lowercase().contains(&f)).collect()
    }

    pub fn matches(&self, l: &LogLine) -> bool {
        !self.search.is_empty() && l.text.to_lowercase().contains(&self.search.to_lowercase())
    }
}

#[derive(Debug, Clone, Default)]
pub struct AgentView {
    pub status: Option<Value>,
    /// (beats, at_ms) of the previous status, for the rate.
    pub last_beats: Option<(u64, u64)>,
    pub beats_per_s: Option<f64>,
    pub decisions: Vec<Value>,
    pub goals: Vec<Value>,
    pub pending: Vec<Value>,
    /// The selected waiting call.
    pub selected: usize,
    /// The keys move in the decisions (else in the waiting calls).
    pub on_decisions: bool,
    /// The selected decision.
    pub decision: usize,
    /// The selected decision is open in full.
    pub open: bool,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryView {
    pub query: String,
    /// The query of the results shown, and the results.
    pub asked: Option<String>,
    pub results: Option<Result<Vec<Value>, String>>,
    pub selected: usize,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    pub cpu: VecDeque<u64>,
    pub mem: VecDeque<u64>,
    pub disk: VecDeque<u64>,
    /// Load × 100.
    pub load: VecDeque<u64>,
    pub last: Option<Sample>,
}

fn push(q: &mut VecDeque<u64>, v: u64) {
    if q.len() == HISTORY {
        q.pop_front();
    }
    q.push_back(v);
}

pub struct App {
    pub screen: Screen,
    pub theme: Theme,
    /// Wall-clock now (ms since the epoch), set by the loop before each frame.
    pub now_ms: u64,
    pub control: Link,
    pub agent_link: Link,
    pub control_socket: String,
    pub agent_socket: String,
    pub services: Vec<ServiceStatus>,
    pub selected: usize,
    pub details: bool,
    pub events: VecDeque<Event>,
    pub logs: LogView,
    pub agent: AgentView,
    pub memory: MemoryView,
    pub history: History,
    pub model: Option<ModelHealth>,
    /// The crucible's units (None until first read).
    pub improve: Option<Vec<UnitHistory>>,
    pub editing: Option<Field>,
    pub confirm: Option<Confirm>,
    pub help: bool,
    /// The last action's result: (text, is an error), shown for [`FLASH_MS`].
    pub flash: Option<(String, bool)>,
    /// When the flash was set (`now_ms` then).
    pub flash_at_ms: u64,
    pub quit: bool,
}

impl App {
    pub fn new(theme: Theme, control_socket: String, agent_socket: String) -> App {
        App {
            screen: Screen::Overview,
            theme,
            now_ms: 0,
            control: Link::Connecting,
            agent_link: Link::Connecting,
            control_socket,
            agent_socket,
            services: Vec::new(),
            selected: 0,
            details: true,
            events: VecDeque::new(),
            logs: LogView::default(),
            agent: AgentView::default(),
            memory: MemoryView::default(),
            history: History::default(),
            model: None,
            improve: None,
            editing: None,
            confirm: None,
            help: false,
            flash: None,
            flash_at_ms: 0,
            quit: false,
        }
    }

    pub fn selected_service(&self) -> Option<&ServiceStatus> {
        self.services.get(self.selected)
    }

    pub fn service(&self, name: &str) -> Option<&ServiceStatus> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn apply(&mut self, u: Update) {
        let before = self.flash.clone();
        self.apply_inner(u);
        self.stamp_flash(before);
    }

    /// The flash's clock starts when its text changes.
    fn stamp_flash(&mut self, before: Option<(String, bool)>) {
        if self.flash.is_some() && self.flash != before {
            self.flash_at_ms = self.now_ms;
        }
    }

    /// The flash, while it is fresh.
    pub fn current_flash(&self) -> Option<&(String, bool)> {
        self.flash.as_ref().filter(|_| self.now_ms.saturating_sub(self.flash_at_ms) < FLASH_MS)
    }

    fn apply_inner(&mut self, u: Update) {
        match clean_update(u) {
            Update::Control(link) => self.control = link,
            Update::Agent(link) => self.agent_link = link,
            Update::Services(mut list) => {
                list.sort_by(|a, b| a.name.cmp(&b.name));
                // Keep the same service selected when the list changes.
                let name = self.selected_service().map(|s| s.name.clone());
                self.services = list;
                if let Some(i) = name.and_then(|n| self.services.iter().position(|s| s.name == n)) {
                    self.selected = i;
                }
                self.selected = self.selected.min(self.services.len().saturating_sub(1));
                self.control = Link::Up;
            }
            Update::Event(e) => {
                if self.events.len() == EVENTS {
                    self.events.pop_front();
                }
                self.events.push_back(e);
            }
            Update::LogsBegin { generation } if generation == self.logs.generation => {
                self.logs.lines.clear();
                self.logs.unseen = 0;
                self.logs.scroll = 0;
            }
            Update::Log { generation, line } if generation == self.logs.generation => {
                if self.logs.lines.len() == LOG_LINES {
                    self.logs.lines.pop_front();
                }
                let passes = {
                    let f = self.logs.filter.to_lowercase();
                    f.is_empty() || line.text.to_lowercase().contains(&f) || line.service.to_lowercase().contains(&f)
                };
                self.logs.lines.push_back(line);
                if passes && (self.logs.paused || self.logs.scroll > 0) {
                    self.logs.unseen += 1;
                    // A view scrolled back stays on the same lines.
                    if self.logs.scroll > 0 || self.logs.paused {
                        self.logs.scroll += 1;
                    }
                }
            }
            Update::LogsDropped { generation, count } if generation == self.logs.generation => self.logs.dropped += count,
            Update::LogsBegin { .. } | Update::Log { .. } | Update::LogsDropped { .. } => {}
            Update::AgentStatus { status, at_ms } => {
                if let Some(beats) = status["beats"].as_u64() {
                    if let Some((b0, t0)) = self.agent.last_beats {
                        if at_ms > t0 && beats >= b0 {
                            self.agent.beats_per_s = Some((beats - b0) as f64 * 1000.0 / (at_ms - t0) as f64);
                        }
                    }
                    self.agent.last_beats = Some((beats, at_ms));
                }
                self.agent.status = Some(status);
                self.agent_link = Link::Up;
            }
            Update::Decisions(d) => {
                // The same decision stays selected as newer ones arrive above it.
                let id = self.agent.decisions.get(self.agent.decision).map(|x| x["id"].clone());
                self.agent.decisions = d;
                if let Some(i) = id.and_then(|id| self.agent.decisions.iter().position(|x| x["id"] == id)) {
                    self.agent.decision = i;
                }
                self.agent.decision = self.agent.decision.min(self.agent.decisions.len().saturating_sub(1));
                if self.agent.decisions.is_empty() {
                    self.agent.open = false;
                }
            }
            Update::Goals(g) => self.agent.goals = g,
            Update::Pending(p) => {
                self.agent.pending = p;
                self.agent.selected = self.agent.selected.min(self.agent.pending.len().saturating_sub(1));
            }
            Update::MemoryResults { query, result } => {
                self.memory.asked = Some(query);
                self.memory.results = Some(result);
                self.memory.selected = 0;
            }
            Update::Done { what, result } => {
                self.flash = Some(match result {
                    Ok(text) if text.is_empty() => (format!("{what}: done"), false),
                    Ok(text) => (format!("{what}: {text}"), false),
                    Err(e) => (format!("{what}: {e}"), true),
                });
            }
            Update::System(s) => {
                let h = &mut self.history;
                if let Some(c) = s.cpu_percent {
                    push(&mut h.cpu, c.round() as u64);
                }
                if let (Some(u), Some(t)) = (s.mem_used, s.mem_total) {
                    push(&mut h.mem, (u * 100).checked_div(t).unwrap_or(0));
                }
                if let Some((_, used, total)) = s.disks.first() {
                    push(&mut h.disk, (used * 100).checked_div(*total).unwrap_or(0));
                }
                if let Some(l) = s.load {
                    push(&mut h.load, (l[0] * 100.0).round() as u64);
                }
                h.last = Some(s);
            }
            Update::Model(m) => self.model = Some(m),
            Update::Improve(units) => self.improve = Some(units),
        }
    }

    /// One key. Returns what the pollers should do.
    pub fn handle_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let before = self.flash.clone();
        let commands = self.key_inner(key);
        self.stamp_flash(before);
        commands
    }

    fn key_inner(&mut self, key: KeyEvent) -> Vec<Command> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('q')) {
            self.quit = true;
            return Vec::new();
        }
        if let Some(c) = self.confirm.take() {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
                    self.flash = Some((format!("{}…", c.prompt.trim_end_matches('?')), false));
                    vec![c.command]
                }
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {
                    self.flash = Some(("cancelled".into(), false));
                    Vec::new()
                }
                _ => {
                    // Anything else leaves the question open.
                    self.confirm = Some(c);
                    Vec::new()
                }
            };
        }
        if self.agent.open {
            if matches!(key.code, KeyCode::Esc | KeyCode::Char('q') | KeyCode::Enter) {
                self.agent.open = false;
            }
            return Vec::new();
        }
        if self.help {
            if matches!(key.code, KeyCode::Char('?') | KeyCode::Esc | KeyCode::Char('q') | KeyCode::Enter) {
                self.help = false;
            }
            return Vec::new();
        }
        if let Some(field) = self.editing {
            return self.edit(field, key);
        }
        match key.code {
            KeyCode::Char('q') => {
                self.quit = true;
                return Vec::new();
            }
            KeyCode::Char('?') | KeyCode::F(1) => {
                self.help = true;
                return Vec::new();
            }
            KeyCode::Tab => {
                self.screen = Screen::ALL[(self.screen.index() + 1) % Screen::ALL.len()];
                return Vec::new();
            }
            KeyCode::BackTab => {
                self.screen = Screen::ALL[(self.screen.index() + Screen::ALL.len() - 1) % Screen::ALL.len()];
                return Vec::new();
            }
            KeyCode::Char(c @ '1'..='6') => {
                self.screen = Screen::ALL[(c as u8 - b'1') as usize];
                return Vec::new();
            }
            KeyCode::Esc => {
                self.flash = None;
                return Vec::new();
            }
            _ => {}
        }
        match self.screen {
            Screen::Overview | Screen::Improve => Vec::new(),
            Screen::Services => self.services_key(key),
            Screen::Logs => self.logs_key(key),
            Screen::Agent => self.agent_key(key),
            Screen::Memory => self.memory_key(key),
        }
    }

    fn services_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let n = self.services.len();
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(n.saturating_sub(1)),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = n.saturating_sub(1),
            KeyCode::Enter => self.details = !self.details,
            KeyCode::Char('l') => {
                if let Some(name) = self.selected_service().map(|s| s.name.clone()) {
                    self.screen = Screen::Logs;
                    return self.follow(Some(name));
                }
            }
            KeyCode::Char(c @ ('r' | 's' | 'x')) => {
                let Some(name) = self.selected_service().map(|s| s.name.clone()) else {
                    self.flash = Some(("no service selected".into(), true));
                    return Vec::new();
                };
                let (verb, request) = match c {
                    'r' => ("Restart", Request::Restart { name: name.clone() }),
                    's' => ("Start", Request::Start { name: name.clone() }),
                    _ => ("Stop", Request::Stop { name: name.clone() }),
                };
                self.confirm = Some(Confirm { prompt: format!("{verb} {name}?"), command: Command::Control(request) });
            }
            _ => {}
        }
        Vec::new()
    }

    /// Follow another log: a new stream generation, the old lines go.
    pub fn follow(&mut self, name: Option<String>) -> Vec<Command> {
        self.logs.generation += 1;
        self.logs.target = name.clone();
        self.logs.lines.clear();
        self.logs.unseen = 0;
        self.logs.scroll = 0;
        self.logs.dropped = 0;
        vec![Command::FollowLogs { name, generation: self.logs.generation }]
    }

    fn logs_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let shown = self.logs.shown().len();
        match key.code {
            KeyCode::Char('a') => return self.follow(None),
            KeyCode::Char(c @ ('[' | ']')) => {
                if self.services.is_empty() {
                    return Vec::new();
                }
                let n = self.services.len();
                let at = self.logs.target.as_ref().and_then(|t| self.services.iter().position(|s| &s.name == t));
                let next = match (at, c) {
                    (None, ']') => 0,
                    (None, _) => n - 1,
                    (Some(i), ']') => (i + 1) % n,
                    (Some(i), _) => (i + n - 1) % n,
                };
                return self.follow(Some(self.services[next].name.clone()));
            }
            KeyCode::Char(' ') | KeyCode::Char('p') => {
                self.logs.paused = !self.logs.paused;
                if !self.logs.paused {
                    self.logs.scroll = 0;
                    self.logs.unseen = 0;
                }
            }
            KeyCode::Char('f') => self.editing = Some(Field::LogFilter),
            KeyCode::Char('/') => self.editing = Some(Field::LogSearch),
            KeyCode::Up | KeyCode::Char('k') => self.logs.scroll = (self.logs.scroll + 1).min(shown.saturating_sub(1)),
            KeyCode::Down | KeyCode::Char('j') => self.logs.scroll = self.logs.scroll.saturating_sub(1),
            KeyCode::PageUp => self.logs.scroll = (self.logs.scroll + 10).min(shown.saturating_sub(1)),
            KeyCode::PageDown => self.logs.scroll = self.logs.scroll.saturating_sub(10),
            KeyCode::End | KeyCode::Char('G') => {
                self.logs.scroll = 0;
                self.logs.unseen = 0;
                self.logs.paused = false;
            }
            KeyCode::Char(c @ ('n' | 'N')) => self.jump_to_match(c == 'n'),
            _ => {}
        }
        if self.logs.scroll == 0 && !self.logs.paused {
            self.logs.unseen = 0;
        }
        Vec::new()
    }

    /// Moves the view to the next older (`older`) or newer search match.
    fn jump_to_match(&mut self, older: bool) {
        if self.logs.search.is_empty() {
            self.flash = Some(("no search: press / to search".into(), true));
            return;
        }
        let shown = self.logs.shown();
        let len = shown.len();
        // Index from the bottom: 0 is the newest.
        let from_bottom = |i: usize| len - 1 - i;
        let current = self.logs.scroll;
        let found = if older {
            (current + 1..len).find(|&k| self.logs.matches(shown[from_bottom(k)]))
        } else {
            (0..current).rev().find(|&k| self.logs.matches(shown[from_bottom(k)]))
        };
        match found {
            Some(k) => {
                self.logs.scroll = k;
                self.flash = None;
            }
            None => self.flash = Some((format!("no {} match for \"{}\"", if older { "older" } else { "newer" }, self.logs.search), true)),
        }
    }

    fn agent_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let a = &mut self.agent;
        let (at, n) = if a.on_decisions { (&mut a.decision, a.decisions.len()) } else { (&mut a.selected, a.pending.len()) };
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => *at = at.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => *at = (*at + 1).min(n.saturating_sub(1)),
            KeyCode::Left | KeyCode::Right | KeyCode::Char('h') | KeyCode::Char('l') => a.on_decisions = !a.on_decisions,
            KeyCode::Enter if a.on_decisions && !a.decisions.is_empty() => a.open = true,
            KeyCode::Char(c @ ('a' | 'd')) => {
                let Some(p) = self.agent.pending.get(self.agent.selected) else {
                    self.flash = Some(("no call waits for approval".into(), true));
                    return Vec::new();
                };
                let id = p["id"].as_str().unwrap_or_default().to_string();
                let tool = p["call"]["tool"].as_str().unwrap_or("?").to_string();
                let (prompt, request) = if c == 'a' {
                    (format!("Approve {id} ({tool})?"), AgentRequest::Approve { id })
                } else {
                    (format!("Deny {id} ({tool})?"), AgentRequest::Deny { id, reason: "denied by the operator at the console".into() })
                };
                self.confirm = Some(Confirm { prompt, command: Command::Agent(request) });
            }
            _ => {}
        }
        Vec::new()
    }

    fn memory_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let n = self.memory.results.as_ref().and_then(|r| r.as_ref().ok()).map_or(0, Vec::len);
        match key.code {
            KeyCode::Char('/') | KeyCode::Char('i') => self.editing = Some(Field::MemoryQuery),
            KeyCode::Up | KeyCode::Char('k') => self.memory.selected = self.memory.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.memory.selected = (self.memory.selected + 1).min(n.saturating_sub(1)),
            _ => {}
        }
        Vec::new()
    }

    fn edit(&mut self, field: Field, key: KeyEvent) -> Vec<Command> {
        let text = match field {
            Field::LogFilter => &mut self.logs.filter,
            Field::LogSearch => &mut self.logs.search,
            Field::MemoryQuery => &mut self.memory.query,
        };
        match key.code {
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
            // At most 200 characters: a query, not a document.
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) && text.chars().count() < 200 => text.push(c),
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Esc => {
                self.editing = None;
            }
            KeyCode::Enter => {
                self.editing = None;
                match field {
                    Field::MemoryQuery => {
                        let query = self.memory.query.trim().to_string();
                        if query.is_empty() {
                            self.flash = Some(("type what to look for, then Enter".into(), true));
                            return Vec::new();
                        }
                        self.flash = Some((format!("searching memory for \"{query}\"…"), false));
                        return vec![Command::Agent(AgentRequest::MemorySearch { query, limit: Some(50) })];
                    }
                    Field::LogSearch => {
                        self.logs.scroll = 0;
                        self.jump_to_match(true);
                        // The newest line may itself match.
                        if let Some(last) = self.logs.shown().last() {
                            if self.logs.matches(last) {
                                self.logs.scroll = 0;
                                self.flash = None;
                            }
                        }
                    }
                    Field::LogFilter => self.logs.scroll = 0,
                }
            }
            _ => {}
        }
        Vec::new()
    }
}

/// Text from outside (service logs above all) as it can be shown: ANSI escape sequences
/// removed (a log line must not clear the operator's screen or move its cursor), tabs as four
/// spaces, carriage returns dropped, other control characters as `?`; newlines kept only where
/// `newlines` (long texts shown in a pane), else a space.
pub fn plain(s: &str, newlines: bool) -> String {
    if !s.chars().any(|c| c.is_control()) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \\).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push_str("    "),
            '\r' => {}
            '\n' if newlines => out.push('\n'),
            '\n' => out.push(' '),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

fn plain_opt(s: Option<String>) -> Option<String> {
    s.map(|s| plain(&s, false))
}

/// Every string in a JSON value made [`plain`] (newlines kept: tables flatten them, panes wrap).
pub fn plain_value(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(plain(&s, true)),
        Value::Array(a) => Value::Array(a.into_iter().map(plain_value).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (plain(&k, false), plain_value(v))).collect()),
        other => other,
    }
}

fn clean_link(l: Link) -> Link {
    match l {
        Link::Down(why) => Link::Down(plain(&why, true)),
        other => other,
    }
}

/// An update with every text from outside made [`plain`].
fn clean_update(u: Update) -> Update {
    let list = |v: Vec<Value>| v.into_iter().map(plain_value).collect::<Vec<_>>();
    match u {
        Update::Control(l) => Update::Control(clean_link(l)),
        Update::Agent(l) => Update::Agent(clean_link(l)),
        Update::Services(list) => Update::Services(
            list.into_iter()
                .map(|s| ServiceStatus {
                    name: plain(&s.name, false),
                    description: plain(&s.description, false),
                    last_exit: plain_opt(s.last_exit),
                    status_text: plain_opt(s.status_text),
                    ..s
                })
                .collect(),
        ),
        Update::Event(e) => Update::Event(Event { service: plain_opt(e.service), detail: plain(&e.detail, false), ..e }),
        Update::Log { generation, line } => Update::Log { generation, line: LogLine { service: plain(&line.service, false), text: plain(&line.text, false), ..line } },
        Update::AgentStatus { status, at_ms } => Update::AgentStatus { status: plain_value(status), at_ms },
        Update::Decisions(v) => Update::Decisions(list(v)),
        Update::Goals(v) => Update::Goals(list(v)),
        Update::Pending(v) => Update::Pending(list(v)),
        Update::MemoryResults { query, result } => Update::MemoryResults { query, result: result.map(list).map_err(|e| plain(&e, false)) },
        Update::Done { what, result } => Update::Done { what: plain(&what, false), result: result.map(|t| plain(&t, false)).map_err(|e| plain(&e, false)) },
        Update::Model(ModelHealth::Answer(v)) => Update::Model(ModelHealth::Answer(plain_value(v))),
        Update::Model(ModelHealth::Error(e)) => Update::Model(ModelHealth::Error(plain(&e, false))),
        other => other,
    }
}

/// A key press without modifiers, for tests and the loop.
pub fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}
