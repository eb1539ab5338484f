//! `ghost agent`: the heartbeat that keeps the machine healthy. Each beat perceives (events,
//! matched log lines, metric crossings, operator messages), remembers (every observation,
//! decision, action and outcome in memory), deliberates (rules first), acts (playbooks whose
//! every call goes through policy, approvals and the signed audit trail), verifies, and learns
//! (playbook success counts, loop guard). Its socket (`/run/ghost/agent.sock`) answers
//! ghostctl. It works fully without a model: decisions without a rule are counted and, when
//! salient, escalated to the operator.

mod act;
mod chat;
mod config;
mod goals;
mod known_good;
mod learn;
mod oracle;
mod perceive;
mod safety;
mod socket;
mod think;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ghost_agent::guard::Verdict;
use ghost_agent::perceive::{from_event, thresholds, MetricWatch};
use ghost_agent::{Attention, Decision, Guard, Observation, Pace, RuleSet, Source};
use ghost_audit::approvals::ApprovalQueue;
use ghost_audit::audit::{AuditLog, Entry, Why};
use ghost_audit::constitution::{Constitution, RateLimiter, Resource};
use ghost_audit::gate::{Gate, Handled};
use ghost_audit::identity::{Identity, PublicKey};
use ghost_audit::policy::Mode;
use ghost_audit::tools::{ExecConfig, Executor, Registry};
use ghost_memory::{Episode, EpisodeKind, Memory, PlaybookSpec};
use ghost_proto::{EventKind, Request, State};
use serde::Serialize;
use serde_json::{json, Value};

use crate::paths::GhostRoot;
use act::{remember, run_playbook, subject_of, End, SystemDelegate, Verification, VERIFY_POLL};
use config::AgentConfig;
use goals::Goals;
use known_good::{now_ms, KnownGood};
use perceive::Input;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Rule files (default: /etc/ghost/rules under GHOST_ROOT)
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
}

/// The heartbeat's figures (`ghostctl agent`).
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub beats: u64,
    pub interval_ms: u64,
    pub last_beat_ms: f64,
    pub max_beat_ms: f64,
    pub observations: u64,
    pub suppressed: u64,
    pub dropped: u64,
    pub decisions: u64,
    pub decisions_by_rule: u64,
    pub decisions_by_model: u64,
    /// Salient observations no rule covered and no model could be asked about.
    pub unhandled: u64,
    /// Model answers that were not a call of a known tool (discarded).
    pub model_invalid: u64,
    pub actions: u64,
    pub repairs_verified: u64,
    pub repairs_failed: u64,
    /// Playbooks whose precondition said the supervisor was already on it.
    pub skipped: u64,
    pub escalations: u64,
    pub waiting_for_approval: u64,
    /// Repairs whose verification is under way.
    pub verifying: u64,
    pub errors: u64,
    pub rules: usize,
    /// Observation time (as the source stamped it) to verified repair, ms, newest last (≤ 200).
    #[serde(skip)]
    pub repair_ms: Vec<u64>,
}

/// What the heartbeat, the socket and the tools share.
pub struct Shared {
    pub root: GhostRoot,
    pub gate: Gate,
    /// For read-only checks (preconditions, verification), outside the gate.
    pub executor: Executor,
    pub memory: Arc<Memory>,
    pub goals: Mutex<Goals>,
    pub tx: Mutex<SyncSender<Input>>,
    pub audit_dir: PathBuf,
    pub public_key: PublicKey,
    pub rules_dir: PathBuf,
    pub learning: Mutex<learn::Learning>,
    pub oracle: Mutex<oracle::Oracle>,
    pub started: Instant,
    /// The local model server (the heartbeat's model layer and chat share it).
    pub model: Arc<think::Model>,
    stats: Mutex<Stats>,
}

impl Shared {
    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn send(&self, input: Input) {
        let _ = self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(input);
    }

    /// The status object of `ghostctl agent`.
    pub fn status_json(&self) -> Value {
        let (mut v, mut sorted, decisions, by_rule) = {
            let s = self.stats();
            (serde_json::to_value(&*s).unwrap_or(Value::Null), s.repair_ms.clone(), s.decisions, s.decisions_by_rule)
        };
        sorted.sort_unstable();
        let pct = |p: f64| sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied();
        v["repair_ms"] = json!({ "count": sorted.len(), "p50": pct(0.5), "p95": pct(0.95), "max": sorted.last() });
        v["share_without_model"] = json!(if decisions == 0 { 1.0 } else { by_rule as f64 / decisions as f64 });
        v["pending_approvals"] = json!(self.gate.approvals().pending().len());
        let health = self.memory.health();
        v["memory"] = json!(match health.mode {
            ghost_memory::Mode::Durable => "sqlite",
            ghost_memory::Mode::InProcess => "in-process",
        });
        v["memory_episodes"] = json!(health.hot_episodes);
        let oracle = self.oracle.lock().unwrap_or_else(|p| p.into_inner());
        let mut o = oracle.accuracy();
        o["prewarms"] = json!(oracle.prewarms);
        v["oracle"] = o;
        v["mode"] = json!(self.gate.mode().as_str());
        v["uptime_s"] = json!((self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        v
    }
}

fn system_mode(root: &GhostRoot) -> (Mode, Option<String>) {
    // The wizard's overlay (/var/lib/ghost/etc) first, as ghost-init reads it.
    let path = root.etc("ghost.toml");
    let Ok(text) = std::fs::read_to_string(&path) else { return (Mode::Normal, None) };
    let value = toml::from_str::<toml::Table>(&text).ok().and_then(|t| t.get("security").and_then(|v| v.as_str().map(str::to_string)));
    match value {
        None => (Mode::Normal, None),
        Some(s) => match Mode::parse(&s) {
            Some(m) => (m, None),
            None => (Mode::Normal, Some(format!("{}: security: {s:?} is not safe, normal, paranoid or trusted; using normal", path.display()))),
        },
    }
}

/// A playbook run whose verification is under way.
struct InFlight {
    verification: Verification,
    decision: Decision,
    obs: Observation,
    memory_ids: Vec<String>,
    decision_id: Option<i64>,
}

/// Where a playbook waits for an operator.
struct Parked {
    decision: Decision,
    obs: Observation,
    memory_ids: Vec<String>,
    decision_id: Option<i64>,
    step: usize,
}

/// The beat loop's own state.
struct Heart {
    sh: Arc<Shared>,
    rules: RuleSet,
    guard: Guard,
    attention: Attention,
    known_good: KnownGood,
    parked: HashMap<String, Parked>,
    /// Playbook runs whose verification the loop polls between beats.
    verifying: Vec<InFlight>,
    /// Services to copy the configuration of once they have run `stable` (due, service, pid).
    snapshots: Vec<(Instant, String, Option<i32>)>,
    stable: Duration,
    max_failures: u32,
    last_goal_check: Instant,
    model: Arc<think::Model>,
    /// When the Oracle last pre-warmed each service.
    prewarmed: HashMap<String, Instant>,
    /// The constitution's model tokens per hour.
    tokens: RateLimiter,
    hourly: safety::Hourly,
}

pub fn run(args: AgentArgs, root: &GhostRoot) -> anyhow::Result<std::process::ExitCode> {
    let paths = ghost_audit::Paths::under(root.dir());
    let warn = |line: &str| eprintln!("ghost agent: WARNING: {line}");
    let (cfg, problems) = AgentConfig::load(&root.path("/etc/ghost/agent.toml"));
    problems.iter().for_each(|p| warn(p));
    let loaded = Constitution::load(&paths.constitution);
    loaded.problems.iter().for_each(|p| warn(p));
    let mut constitution = loaded.constitution;
    constitution.protected_paths.extend(paths.protected());
    let (mode, problem) = system_mode(root);
    problem.iter().for_each(|p| warn(p));

    let identity = Identity::load_or_create(&paths.identity_dir, "ghost").with_context(|| format!("the agent's identity in {}", paths.identity_dir.display()))?;
    identity.notes.iter().for_each(|n| eprintln!("ghost agent: {n}"));
    let identity = Arc::new(identity.identity);
    let public_key = identity.public_key();
    let opened = AuditLog::open(&paths.audit_dir, identity.clone()).with_context(|| format!("the audit trail in {}", paths.audit_dir.display()))?;
    opened.notes.iter().for_each(|n| eprintln!("ghost agent: audit: {n}"));
    let audit = Arc::new(opened.log);
    let memory_path = root.path(&cfg.memory_path);
    let memory = Arc::new(Memory::open(&memory_path, ghost_memory::Options::default()).with_context(|| format!("memory at {}", memory_path.display()))?);
    // Meaning as well as words, from the model server's embedder when it is up.
    memory.set_embedder(Some(Arc::new(think::ServerEmbedder { socket: root.path(&cfg.model_socket), timeout: Duration::from_secs(10) })));

    let exec_config = ExecConfig {
        log_dir: paths.log_dir.clone(),
        protected_paths: constitution.protected_paths.clone(),
        cleanable_dirs: vec![root.path("/tmp"), root.path("/var/tmp")],
        ..ExecConfig::default()
    };
    let delegate = Arc::new(SystemDelegate { memory: memory.clone(), known_good: KnownGood::new(root) });
    let executor = Executor::new(Arc::new(Registry::builtin()), exec_config).with_delegate(delegate);
    let bounds = constitution.bounds;
    let allowed_tools = constitution.allowed_tools.clone();
    let gate = Gate::new(executor.clone(), audit.clone(), Arc::new(ApprovalQueue::new(cfg.approval_timeout)), constitution, mode);
    // Safe execution: risky calls run inside a snapshot of what they can touch.
    gate.set_safety_net(Arc::new(safety::SnapshotNet { root: root.dir().to_path_buf() }));

    let rules_dir = args.rules.unwrap_or_else(|| root.path("/etc/ghost/rules"));
    let (rules, problems) = RuleSet::load_dir(&rules_dir);
    problems.iter().for_each(|p| warn(p));
    let hosted_root = if root.dir() == Path::new("/") { String::new() } else { root.dir().display().to_string() };
    let rules = rules.with_root(&hosted_root);
    upsert_playbooks(&rules, &memory);
    let (goals, problem) = Goals::load(root.path("/var/lib/ghost/agent/goals.json"), now_ms());
    problem.iter().for_each(|p| warn(p));

    let model = Arc::new(think::Model::new(root.path(&cfg.model_socket), cfg.model_max_tokens, cfg.model_timeout, &Registry::builtin(), gate.mode(), &|t: &str| allowed_tools.contains(&t.to_string())));
    // Bounded: senses drop what does not fit while the heartbeat is busy (events wait).
    let (tx, rx) = mpsc::sync_channel(4096);
    let sh = Arc::new(Shared {
        root: root.clone(),
        gate,
        executor,
        memory: memory.clone(),
        goals: Mutex::new(goals),
        tx: Mutex::new(tx.clone()),
        audit_dir: paths.audit_dir.clone(),
        public_key,
        rules_dir: rules_dir.clone(),
        learning: Mutex::new(learn::Learning::load(&paths.identity_dir, 3)),
        oracle: Mutex::new(oracle::Oracle::load(paths.identity_dir.join("oracle.json"), 3, 0.6)),
        started: Instant::now(),
        model: model.clone(),
        stats: Mutex::new(Stats { rules: rules.rules().len(), ..Stats::default() }),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let socket_path = root.path(&format!("/{}", ghost_proto::agent::AGENT_SOCKET));
    socket::serve(sh.clone(), &socket_path).with_context(|| format!("the agent socket {}", socket_path.display()))?;
    perceive::spawn_events(tx.clone(), stop.clone());
    let log_patterns = rules.rules().iter().filter(|r| r.source == Source::Log).filter_map(|r| r.text_pattern().cloned()).collect();
    perceive::spawn_logs(log_patterns, tx.clone(), stop.clone());
    let watch = MetricWatch::new(thresholds(&rules), 0.05);
    perceive::spawn_sampler(watch, cfg.disk_paths(root), cfg.service_memory, cfg.metrics_interval, tx.clone(), stop.clone());
    perceive::spawn_file_watch(root.clone(), cfg.watch.clone(), tx.clone(), stop.clone());
    perceive::spawn_timers(cfg.timers.clone(), tx.clone(), stop.clone());

    let text = format!("agent started: {} rules, mode {}, memory {}", rules.rules().len(), sh.gate.mode().as_str(), memory_path.display());
    remember(&memory, Episode::new(EpisodeKind::Note, "agent", &text).salience(0.3), None);
    if let Err(e) = audit.append(Entry::decision("agent", &text, json!({ "rules": rules.rules().len() }), Why { rule: None, layer: Some("agent".into()), memory_ids: vec![], text: "start".into() })) {
        anyhow::bail!("the audit trail cannot be written: {e}");
    }
    eprintln!("ghost agent: {text}; socket {}", socket_path.display());
    ghost_model::serve::notify::Notifier::from_env().ready(&text);

    let mut heart = Heart {
        sh,
        rules,
        guard: Guard::new(cfg.max_failures),
        attention: Attention::new(256, 8, 10_000),
        known_good: KnownGood::new(root),
        parked: HashMap::new(),
        verifying: Vec::new(),
        snapshots: Vec::new(),
        stable: cfg.stable,
        max_failures: cfg.max_failures,
        model,
        tokens: RateLimiter::new(bounds),
        prewarmed: HashMap::new(),
        last_goal_check: Instant::now() - Duration::from_secs(60),
        hourly: safety::Hourly::new(root.dir().to_path_buf()),
    };
    heart.schedule_running_services();
    let pace = Pace::new(cfg.min_interval, cfg.max_interval).with_max_beats_per_minute(bounds.beats_per_minute.min(u32::MAX as u64) as u32);
    heart.beat_forever(rx, pace, RateLimiter::new(bounds));
    Ok(std::process::ExitCode::SUCCESS)
}

impl Heart {
    /// Services that already run when the agent starts: their configuration is copied once
    /// they have run `stable` (at once when they have).
    fn schedule_running_services(&mut self) {
        let Ok(reply) = perceive::control(&Request::Status { name: None }) else { return };
        for s in reply.services.unwrap_or_default() {
            if s.state == State::Running {
                let left = self.stable.saturating_sub(Duration::from_secs_f64(s.uptime_s.unwrap_or(0.0)));
                self.snapshots.push((Instant::now() + left, s.name, s.pid));
            }
        }
    }

    fn beat_forever(&mut self, rx: Receiver<Input>, mut pace: Pace, mut beats: RateLimiter) {
        let mut waiting: Vec<Input> = Vec::new();
        let mut last_beat: Option<Instant> = None;
        loop {
            let next_timer = self.snapshots.iter().map(|(due, ..)| due.saturating_duration_since(Instant::now())).min();
            let mut wait = next_timer.map_or(pace.current(), |t| t.min(pace.current()));
            if !self.verifying.is_empty() {
                wait = wait.min(VERIFY_POLL);
            }
            if waiting.is_empty() {
                match rx.recv_timeout(wait) {
                    Ok(input) => waiting.push(input),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            // Repairs under way are checked between beats; when only they were due (nothing
            // arrived, no timer, the pace not yet up), that is all this turn does.
            if !self.verifying.is_empty() {
                self.poll_verifications();
                let beat_due = last_beat.is_none_or(|t| t.elapsed() >= pace.current()) || next_timer.is_some_and(|t| t <= wait);
                if waiting.is_empty() && !beat_due {
                    self.sh.stats().verifying = self.verifying.len() as u64;
                    continue;
                }
            }
            // Never faster than the fastest pace, nor than the constitution's beats per minute.
            if let Some(t) = last_beat {
                let since = t.elapsed();
                if since < pace.min {
                    std::thread::sleep(pace.min - since);
                }
            }
            if let Err(exceeded) = beats.try_acquire(Resource::Beats, 1).or_else(|e| if e.limit == 0 { Ok(()) } else { Err(e) }) {
                std::thread::sleep(exceeded.retry_after.min(Duration::from_secs(1)));
                continue;
            }
            let started = Instant::now();
            last_beat = Some(started);
            while waiting.len() < 1024 {
                match rx.try_recv() {
                    Ok(i) => waiting.push(i),
                    Err(_) => break,
                }
            }
            let seen = self.beat(std::mem::take(&mut waiting));
            let interval = pace.after_beat(seen, self.attention.backlog());
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut s = self.sh.stats();
            s.beats += 1;
            s.last_beat_ms = (ms * 100.0).round() / 100.0;
            s.max_beat_ms = s.max_beat_ms.max(s.last_beat_ms);
            s.interval_ms = interval.as_millis() as u64;
            s.suppressed = self.attention.suppressed;
            s.dropped = self.attention.dropped;
            s.waiting_for_approval = self.parked.len() as u64;
            s.verifying = self.verifying.len() as u64;
        }
    }

    /// One beat: perceive, remember, deliberate, act, verify, learn. Returns the observations
    /// it attended to.
    fn beat(&mut self, inputs: Vec<Input>) -> usize {
        let mut resolved = Vec::new();
        for input in inputs {
            match input {
                Input::Event(e) => {
                    if let Some(service) = &e.service {
                        match e.kind {
                            EventKind::Ready => {
                                self.snapshots.push((Instant::now() + self.stable, service.clone(), e.pid));
                                // Well again: rules held back on it after failed repairs may act again.
                                self.guard.clear_subject(service);
                            }
                            EventKind::Exited | EventKind::CrashLoop | EventKind::Stopped | EventKind::Oom => self.snapshots.retain(|(_, s, _)| s != service),
                            _ => {}
                        }
                    }
                    self.anticipate(&e);
                    if let Some(o) = from_event(&e) {
                        self.attention.offer(o);
                    }
                }
                Input::Obs(o) => {
                    self.attention.offer(o);
                }
                Input::Resolved { request_id, outcome } => resolved.push((request_id, outcome)),
                Input::ReloadRules => self.reload_rules(),
            }
        }
        self.attention.close_windows(now_ms());
        let batch = self.attention.take(32);
        let seen = batch.len();
        for o in batch {
            self.attend(o);
        }
        for (id, outcome) in resolved {
            self.resume(&id, outcome);
        }
        self.poll_verifications();
        self.expire_approvals();
        self.take_due_snapshots();
        self.check_goals();
        seen
    }

    fn attend(&mut self, o: Observation) {
        self.sh.stats().observations += 1;
        let details = json!({ "source": o.source.as_str(), "kind": o.kind, "data": o.data });
        let who = o.service.clone().unwrap_or_else(|| o.source.as_str().to_string());
        let obs_id = remember(&self.sh.memory, Episode::new(EpisodeKind::Observation, who, &o.text).at(o.ts_ms as i64).salience(o.salience).details(details), None);
        let subject = subject_of(&o);
        let now = now_ms();
        let guard = &self.guard;
        let parked = &self.parked;
        let verifying = &self.verifying;
        let mut escalated = None;
        let decision = self.rules.decide_where(&o, |r| match guard.check(&r.name, &subject, r.cooldown_s.saturating_mul(1000), now) {
            // One run per rule and subject at a time: not again while one waits for approval
            // or for its verification.
            Verdict::Act => {
                !parked.values().any(|p| p.decision.rule == r.name && subject_of(&p.obs) == subject)
                    && !verifying.iter().any(|f| f.decision.rule == r.name && subject_of(&f.obs) == subject)
            }
            Verdict::Escalated { failures } => {
                escalated.get_or_insert((r.name.clone(), failures));
                false
            }
            Verdict::CoolingDown { .. } => false,
        });
        let Some(d) = decision else {
            if let Some((rule, failures)) = escalated {
                remember(&self.sh.memory, Episode::new(EpisodeKind::Note, subject.clone(), format!("rule {rule} is held back for {subject:?} after {failures} failed repairs; waiting for the operator: {}", o.text)).salience(0.9), obs_id);
            } else if o.salience >= 0.8 {
                self.think(&o, obs_id);
            }
            return;
        };
        // Reflect: how this playbook has done, and what the last repairs of this subject were.
        let recalled = self.sh.memory.query(&ghost_memory::EpisodeFilter { kinds: vec![EpisodeKind::Outcome], source: Some(subject.clone()), limit: 3, ..Default::default() }).unwrap_or_default();
        let record = self.sh.memory.playbook(&d.playbook).ok().flatten();
        let mut memory_ids: Vec<String> = obs_id.iter().map(|i| i.to_string()).collect();
        memory_ids.extend(recalled.iter().map(|e| e.id.to_string()));
        let text = format!("rule {} chose playbook {} for: {}", d.rule, d.playbook, o.text);
        let data = json!({
            "layer": "rule", "rule": d.rule, "playbook": d.playbook, "subject": subject,
            "steps": d.steps.iter().map(|s| json!({"tool": s.tool, "args": s.args})).collect::<Vec<_>>(),
            "playbook_record": record.as_ref().map(|p| json!({ "successes": p.success_count, "failures": p.failure_count, "verified": p.verified })),
            "recalled": recalled.iter().map(|e| e.episode.text.clone()).collect::<Vec<_>>(),
        });
        let decision_id = remember(&self.sh.memory, Episode::new(EpisodeKind::Decision, subject.clone(), &text).playbook(&d.playbook).salience(0.7).details(data.clone()), obs_id);
        {
            let mut s = self.sh.stats();
            s.decisions += 1;
            s.decisions_by_rule += 1;
        }
        let why = Why { rule: Some(d.rule.clone()), layer: Some("rule".into()), memory_ids: memory_ids.clone(), text: o.text.clone() };
        if let Err(e) = self.sh.gate.audit().append(Entry::decision("agent", &text, data, why)) {
            self.sh.stats().errors += 1;
            eprintln!("ghost agent: audit: {e}; the playbook is not run");
            return;
        }
        let end = run_playbook(&self.sh, &d, &o, &memory_ids, 0, decision_id);
        self.finish(d, o, memory_ids, decision_id, end);
    }

    /// What no rule covers goes to the model; its call goes through the gate like any other.
    fn think(&mut self, o: &Observation, obs_id: Option<i64>) {
        let subject = subject_of(o);
        let unhandled = |sh: &Shared, why: String| {
            eprintln!("ghost agent: no rule covers {:?}; {why}", o.text);
            sh.stats().unhandled += 1;
            remember(&sh.memory, Episode::new(EpisodeKind::Note, subject.clone(), format!("no rule covers: {} ({why})", o.text)).salience(0.6), obs_id);
        };
        if !self.model.available() {
            return unhandled(&self.sh, "no model server".into());
        }
        if let Err(e) = self.tokens.try_acquire(Resource::ModelTokens, u64::from(self.model.max_tokens) + 1024) {
            return unhandled(&self.sh, e.to_string());
        }
        // What memory recalls about it, for the prompt and for the audit record's why.
        let recalled = self.sh.memory.search(&o.text, 3).map(|r| r.hits).unwrap_or_default();
        let context: Vec<String> = recalled.iter().map(|h| h.episode.episode.text.clone()).collect();
        let mut memory_ids: Vec<String> = obs_id.iter().map(|i| i.to_string()).collect();
        memory_ids.extend(recalled.iter().map(|h| h.episode.id.to_string()));
        let (call, model) = match self.model.ask(o, &context) {
            think::Answer::Call(call, model) => (call, model),
            think::Answer::Invalid(why) => {
                self.sh.stats().model_invalid += 1;
                return unhandled(&self.sh, format!("the model's answer was discarded: {why}"));
            }
            think::Answer::Unavailable(why) => return unhandled(&self.sh, why),
        };
        let text = format!("model {model} chose {} {} for: {}", call.tool, call.args, o.text);
        let data = json!({ "layer": "model", "model": model, "subject": subject, "steps": [{ "tool": call.tool, "args": call.args }] });
        let decision_id = remember(&self.sh.memory, Episode::new(EpisodeKind::Decision, subject.clone(), &text).salience(0.7).details(data.clone()), obs_id);
        {
            // Counted once memory has it: `ghostctl decisions` shows what `ghostctl agent` counts.
            let mut s = self.sh.stats();
            s.decisions += 1;
            s.decisions_by_model += 1;
        }
        let why = Why { rule: None, layer: Some("model".into()), memory_ids, text: o.text.clone() };
        if let Err(e) = self.sh.gate.audit().append(Entry::decision("agent", &text, data, why.clone())) {
            self.sh.stats().errors += 1;
            eprintln!("ghost agent: audit: {e}; the model's call is not made");
            return;
        }
        let (tool, args) = (call.tool.clone(), call.args.clone());
        let outcome = match self.sh.gate.handle(ghost_audit::gate::CallRequest { call, actor: "model".into(), why, dry_run: false }) {
            Ok(Handled::Ran { result, .. }) => {
                self.sh.stats().actions += 1;
                let today = ghost_model::router::budget::utc_date(now_ms());
                let proposed = self.sh.learning.lock().unwrap_or_else(|p| p.into_inner()).record(o, &tool, &args, result.is_ok(), &today);
                if let Some(name) = proposed {
                    let line = format!("learned: the model's {tool} for {} / {} worked again and again; proposed as rule {name} (ghostctl proposals, ghostctl accept {name})", o.source.as_str(), o.kind);
                    eprintln!("ghost agent: {line}");
                    remember(&self.sh.memory, Episode::new(EpisodeKind::Note, "agent", line).salience(0.8), decision_id);
                }
                format!("the model's call ran: {}", if result.is_ok() { "ok" } else { "failed" })
            }
            Ok(Handled::Pending { request_id, .. }) => format!("the model's call waits for the operator: ghostctl approve {request_id}"),
            Ok(other) => format!("the model's call was refused: {}", other.decision().reason),
            Err(e) => format!("the model's call could not be made: {e}"),
        };
        remember(&self.sh.memory, Episode::new(EpisodeKind::Outcome, subject, outcome).salience(0.6), decision_id);
    }

    /// The Oracle sees the event; a predicted start of a stopped service is pre-warmed.
    fn anticipate(&mut self, e: &ghost_proto::Event) {
        let Some(tok) = oracle::token(e) else { return };
        let prediction = {
            let mut o = self.sh.oracle.lock().unwrap_or_else(|p| p.into_inner());
            let p = o.observe(tok);
            if o.history_len().is_multiple_of(20) {
                o.save();
            }
            p
        };
        let Some(p) = prediction else { return };
        let Some(service) = p.next.strip_prefix("starting:").or_else(|| p.next.strip_prefix("ready:")) else { return };
        // A service's own stop or death is never undone ahead of time: that is the operator's
        // (or the restart policy's) business, not a habit to anticipate.
        if p.after.split_once(':').is_some_and(|(_, s)| s == service) {
            return;
        }
        // Once a minute per service at most, and only when it is down.
        if self.prewarmed.get(service).is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        let down = perceive::control(&Request::Status { name: Some(service.to_string()) }).ok().and_then(|r| r.services).and_then(|mut s| s.pop()).is_some_and(|s| s.state == State::Stopped);
        if !down {
            return;
        }
        self.prewarmed.insert(service.to_string(), Instant::now());
        let text = format!("after {} comes {} ({:.0}% of {} times): starting {service} ahead", p.after, p.next, p.p * 100.0, p.seen);
        let call = ghost_audit::tools::ToolCall::new("service.start", json!({ "name": service }), text.clone());
        let why = Why { rule: None, layer: Some("oracle".into()), memory_ids: vec![], text: text.clone() };
        let outcome = self.sh.gate.handle(ghost_audit::gate::CallRequest { call, actor: "oracle".into(), why, dry_run: false });
        if let Ok(Handled::Ran { result, .. }) = &outcome {
            if result.is_ok() {
                self.sh.oracle.lock().unwrap_or_else(|p| p.into_inner()).prewarms += 1;
            }
        }
        remember(&self.sh.memory, Episode::new(EpisodeKind::Action, service.to_string(), format!("oracle: {text}")).salience(0.5), None);
    }

    /// Reads the rule files again (after a proposal was accepted); the old rules stay when the
    /// new ones have problems.
    fn reload_rules(&mut self) {
        let (rules, problems) = RuleSet::load_dir(&self.sh.rules_dir);
        problems.iter().for_each(|p| eprintln!("ghost agent: WARNING: {p}"));
        if !problems.is_empty() {
            eprintln!("ghost agent: the rules were not reloaded; the {} rules in use stay", self.rules.rules().len());
            return;
        }
        upsert_playbooks(&rules, &self.sh.memory);
        let root = if self.sh.root.dir() == Path::new("/") { String::new() } else { self.sh.root.dir().display().to_string() };
        self.rules = rules.with_root(&root);
        self.sh.stats().rules = self.rules.rules().len();
        eprintln!("ghost agent: rules reloaded: {} rules", self.rules.rules().len());
    }

    /// Records how a playbook run ended, and learns from it.
    fn finish(&mut self, d: Decision, o: Observation, memory_ids: Vec<String>, decision_id: Option<i64>, end: End) {
        let subject = subject_of(&o);
        let now = now_ms();
        let end = match end {
            End::Verifying(verification) => {
                self.verifying.push(InFlight { verification, decision: d, obs: o, memory_ids, decision_id });
                self.sh.stats().verifying = self.verifying.len() as u64;
                return;
            }
            other => other,
        };
        let (verified, text) = match &end {
            End::Parked { id, step } => {
                let text = format!("playbook {} waits for the operator: ghostctl approve {id}", d.playbook);
                remember(&self.sh.memory, Episode::new(EpisodeKind::Note, subject, &text).playbook(&d.playbook).salience(0.9), decision_id);
                self.parked.insert(id.clone(), Parked { step: *step, decision: d, obs: o, memory_ids, decision_id });
                return;
            }
            // Taken above.
            End::Verifying(_) => return,
            End::Skipped(why) => {
                self.sh.stats().skipped += 1;
                remember(&self.sh.memory, Episode::new(EpisodeKind::Outcome, subject, format!("playbook {} not needed: {why}", d.playbook)).playbook(&d.playbook).salience(0.3), decision_id);
                return;
            }
            End::Verified { .. } if d.verify.is_none() => {
                remember(&self.sh.memory, Episode::new(EpisodeKind::Outcome, subject.clone(), format!("playbook {} done for {subject} (it has nothing to verify)", d.playbook)).playbook(&d.playbook).salience(0.4), decision_id);
                let _ = self.sh.memory.record_outcome(&d.playbook, true);
                return;
            }
            End::Verified { checks } => (true, format!("playbook {} repaired {subject}: verified after {checks} checks", d.playbook)),
            End::Failed(why) => (false, format!("playbook {} did not repair {subject}: {why}", d.playbook)),
        };
        let total_ms = now.saturating_sub(o.ts_ms);
        {
            let mut s = self.sh.stats();
            if verified {
                s.repairs_verified += 1;
                s.repair_ms.push(total_ms);
                if s.repair_ms.len() > 200 {
                    s.repair_ms.remove(0);
                }
            } else {
                s.repairs_failed += 1;
            }
        }
        let escalate = self.guard.record(&d.rule, &subject, now, verified);
        if let Err(e) = self.sh.memory.record_outcome(&d.playbook, verified) {
            eprintln!("ghost agent: memory: {e}");
        }
        let data = json!({ "rule": d.rule, "playbook": d.playbook, "subject": subject, "verified": verified, "ms_since_observed": total_ms });
        remember(&self.sh.memory, Episode::new(EpisodeKind::Outcome, subject.clone(), &text).playbook(&d.playbook).salience(if verified { 0.5 } else { 0.9 }).details(data.clone()), decision_id);
        let why = Why { rule: Some(d.rule.clone()), layer: Some("rule".into()), memory_ids, text: o.text.clone() };
        if let Err(e) = self.sh.gate.audit().append(Entry::decision("agent", &text, data, why)) {
            self.sh.stats().errors += 1;
            eprintln!("ghost agent: audit: {e}");
        }
        if escalate {
            self.sh.stats().escalations += 1;
            let text = format!("ESCALATION: rule {} failed {} times in a row on {subject}; it stops acting there until the operator steps in", d.rule, self.max_failures);
            eprintln!("ghost agent: {text}");
            remember(&self.sh.memory, Episode::new(EpisodeKind::Note, subject, &text).salience(1.0), decision_id);
        }
    }

    /// Checks every verification under way once; the decided ones finish.
    fn poll_verifications(&mut self) {
        for mut f in std::mem::take(&mut self.verifying) {
            match f.verification.poll(&self.sh) {
                None => self.verifying.push(f),
                Some(result) => {
                    let end = match result {
                        Ok(checks) => End::Verified { checks },
                        Err(why) => End::Failed(why),
                    };
                    self.finish(f.decision, f.obs, f.memory_ids, f.decision_id, end);
                }
            }
        }
    }

    fn resume(&mut self, id: &str, outcome: Result<Handled, String>) {
        let Some(p) = self.parked.remove(id) else { return };
        let end = match outcome {
            Ok(Handled::Ran { result, .. }) if result.is_ok() => {
                self.sh.stats().actions += 1;
                run_playbook(&self.sh, &p.decision, &p.obs, &p.memory_ids, p.step, p.decision_id)
            }
            Ok(Handled::Ran { result, .. }) => End::Failed(format!("the approved call failed: {}", result.to_json()["message"])),
            Ok(other) => End::Failed(format!("the call was not run after approval: {}", other.to_json())),
            Err(why) => End::Failed(why),
        };
        self.finish(p.decision, p.obs, p.memory_ids, p.decision_id, end);
    }

    fn expire_approvals(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        if let Ok(expired) = self.sh.gate.expire() {
            for id in expired {
                self.resume(&id, Err("no operator answered in time".into()));
            }
        }
    }

    fn take_due_snapshots(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.snapshots).into_iter().partition(|(t, ..)| *t <= now);
        self.snapshots = later;
        for (_, service, pid) in due {
            let Ok(reply) = perceive::control(&Request::Status { name: Some(service.clone()) }) else { continue };
            let Some(s) = reply.services.and_then(|mut v| v.pop()) else { continue };
            if s.state != State::Running || (pid.is_some() && s.pid != pid) {
                continue;
            }
            match self.known_good.snapshot(&service) {
                Ok(true) => {
                    remember(&self.sh.memory, Episode::new(EpisodeKind::Note, service.clone(), format!("{service} ran with its current configuration; kept as the one to roll back to")).salience(0.2), None);
                }
                Ok(false) => {}
                Err(e) => eprintln!("ghost agent: keeping the configuration of {service}: {e}"),
            }
        }
    }

    fn check_goals(&mut self) {
        if self.last_goal_check.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_goal_check = Instant::now();
        self.hourly.tick();
        // The memory budget: past it, old low-salience episodes are summarised and archived.
        let health = self.sh.memory.health();
        if health.hot_episodes > health.max_hot_episodes {
            match self.sh.memory.consolidate() {
                Ok(r) => eprintln!("ghost agent: memory consolidated: {r:?}"),
                Err(e) => eprintln!("ghost agent: memory: consolidate: {e}"),
            }
        }
        // Episodes recorded while the model server was away get their embeddings now.
        if self.model.available() {
            if let Err(e) = self.sh.memory.embed_pending(256) {
                eprintln!("ghost agent: memory: {e}");
            }
        }
        let mut status: Option<Vec<ghost_proto::ServiceStatus>> = None;
        let root = self.sh.root.clone();
        let changed = self.sh.goals.lock().unwrap_or_else(|p| p.into_inner()).check(now_ms(), |c| {
            let mut services = || -> Option<Vec<ghost_proto::ServiceStatus>> {
                if status.is_none() {
                    status = perceive::control(&Request::Status { name: None }).ok().and_then(|r| r.services);
                }
                status.clone()
            };
            match c {
                goals::Check::ServiceRunning(n) => services().map(|all| all.iter().any(|s| &s.name == n && s.state == State::Running)),
                goals::Check::ServicesRunning => services().map(|all| all.iter().all(|s| !matches!(s.state, State::CrashLoop | State::Backoff | State::Blocked))),
                goals::Check::DiskBelow(p, pct) => perceive::disk_used_percent(&root.path(p)).map(|v| v < *pct),
            }
        });
        for (id, text, holds) in changed {
            let line = format!("goal {id} ({text}) {}", if holds { "holds" } else { "does not hold" });
            remember(&self.sh.memory, Episode::new(EpisodeKind::Note, "goals", line).goal(id).salience(if holds { 0.3 } else { 0.7 }), None);
        }
    }
}

/// Procedural memory knows every playbook of the rules (their outcomes are counted there).
fn upsert_playbooks(rules: &RuleSet, memory: &Memory) {
    for r in rules.rules() {
        if let Some(pb) = rules.playbook(&r.playbook) {
            let steps = json!(pb.steps.iter().map(|s| json!({ "tool": s.tool, "args": s.args })).collect::<Vec<_>>());
            let spec = PlaybookSpec { name: pb.name.clone(), description: pb.description.clone(), trigger: format!("{} ({})", r.name, r.description), steps };
            if let Err(e) = memory.upsert_playbook(&spec) {
                eprintln!("ghost agent: WARNING: memory: playbook {}: {e}", pb.name);
            }
        }
    }
}

impl Drop for Heart {
    fn drop(&mut self) {
        self.sh.oracle.lock().unwrap_or_else(|p| p.into_inner()).save();
        let _ = self.sh.memory.flush();
    }
}
