//! The generation worker: one OS thread that owns the [`Generator`] and takes chat requests
//! from the [`FairQueue`] one at a time. Each request streams [`JobEvent`]s back over its own
//! channel; a client that goes away closes the channel, which cancels its generation at the
//! next token (or drops it from the queue before it starts).
//!
//! Tool calls and structured output are decoded under a [`Constraint`], so what comes back
//! parses and matches the schema whatever the model's logits:
//! - `tool_choice = "required"` or a named function: the whole completion is one call;
//! - `tool_choice = "auto"`: free text until the model writes its tool-call opening token
//!   (Qwen's `<tool_call>`), from there one valid call, then the end. A model without such a
//!   token answers in text. The opening token is forbidden once too few tokens are left to
//!   finish a call, so a call is never cut off by `max_tokens`;
//! - `response_format` `json_object` / `json_schema`: the whole completion is that JSON.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use super::api::{ApiError, ChatRequest, ResponseFormat, ToolChoice};
use super::queue::FairQueue;
use crate::constrain::{ConstrainError, Constraint, Grammar, Limits, ToolSpec, Vocabulary};
use crate::generate::{FinishReason, GenerateError, Generator, LogitsHook, Prompt};

/// Qwen2.5's tool-call markers (added tokens of its tokenizer).
pub const TOOL_CALL_OPEN: &str = "<tool_call>";
pub const TOOL_CALL_CLOSE: &str = "</tool_call>";

/// One queued chat request.
pub struct Job {
    pub request: ChatRequest,
    pub events: mpsc::Sender<JobEvent>,
    pub enqueued: Instant,
}

/// What a job reports, in order: `Started`, any number of `Piece`s, then `Finished`.
#[derive(Debug)]
pub enum JobEvent {
    /// The worker took the job; `seq` counts jobs started since the server began (from 1).
    Started { seq: u64, queued: Duration },
    /// Streamable text (never part of a tool call).
    Piece(String),
    Finished(Result<Completion, ApiError>),
}

#[derive(Debug, Clone)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, as the API carries them.
    pub arguments: String,
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    /// `stop`, `length` or `tool_calls`.
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub prompt_time: Duration,
    pub generation_time: Duration,
}

/// Counters for /health.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub completion_tokens: u64,
    pub running: bool,
}

struct State {
    queue: FairQueue<Job>,
    stats: Stats,
    shutting_down: bool,
}

/// The queue in front of the worker, shared with the HTTP handlers.
pub struct Engine {
    state: Mutex<State>,
    wake: Condvar,
}

impl Engine {
    pub fn new(capacity: usize) -> Arc<Engine> {
        Arc::new(Engine {
            state: Mutex::new(State { queue: FairQueue::new(capacity), stats: Stats::default(), shutting_down: false }),
            wake: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job for `client`; a full queue or a server shutting down refuses it.
    pub fn submit(&self, client: &str, job: Job) -> Result<(), ApiError> {
        let mut s = self.lock();
        if s.shutting_down {
            return Err(ApiError::unavailable("the model server is shutting down"));
        }
        let cap = s.queue.capacity();
        s.queue.push(client, job).map_err(|_| ApiError::unavailable(format!("the generation queue is full ({cap} requests waiting); try again later")))?;
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Lets the worker finish the job it has and end; queued jobs are refused.
    pub fn shut_down(&self) {
        let mut s = self.lock();
        s.shutting_down = true;
        let mut dropped = Vec::new();
        while let Some((_, job)) = s.queue.pop() {
            dropped.push(job);
        }
        drop(s);
        for job in dropped {
            let _ = job.events.try_send(JobEvent::Finished(Err(ApiError::unavailable("the model server is shutting down"))));
        }
        self.wake.notify_all();
    }

    fn next(&self) -> Option<Job> {
        let mut s = self.lock();
        loop {
            if s.shutting_down {
                return None;
            }
            // Requests whose client is gone are not worth starting.
            s.queue.retain(|j| !j.events.is_closed());
            if let Some((_, job)) = s.queue.pop() {
                s.stats.started += 1;
                s.stats.running = true;
                return Some(job);
            }
            s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn finished(&self, outcome: Outcome, tokens: usize) {
        let mut s = self.lock();
        s.stats.running = false;
        s.stats.completion_tokens += tokens as u64;
        match outcome {
            Outcome::Completed => s.stats.completed += 1,
            Outcome::Failed => s.stats.failed += 1,
            Outcome::Cancelled => s.stats.cancelled += 1,
        }
    }
}

enum Outcome {
    Completed,
    Failed,
    Cancelled,
}

/// Runs jobs until the engine shuts down. Call on a thread of its own.
pub fn run(engine: Arc<Engine>, mut generator: Generator) {
    let mut shapes = Shapes::default();
    while let Some(job) = engine.next() {
        let seq = engine.lock().stats.started;
        let _ = job.events.blocking_send(JobEvent::Started { seq, queued: job.enqueued.elapsed() });
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_job(&mut generator, &mut shapes, &job)))
            .unwrap_or_else(|_| Err(ApiError::internal("generation panicked; the server is still up")));
        let (outcome, tokens) = match &result {
            Ok(Some(c)) => (Outcome::Completed, c.completion_tokens),
            Ok(None) => (Outcome::Cancelled, 0),
            Err(_) => (Outcome::Failed, 0),
        };
        engine.finished(outcome, tokens);
        if let Some(r) = result.transpose() {
            let _ = job.events.blocking_send(JobEvent::Finished(r));
        }
    }
}

/// Grammars and the vocabulary, built on first use and kept: a client that sends the same
/// tool list every turn pays for compiling it once.
#[derive(Default)]
struct Shapes {
    vocab: Option<Arc<Vocabulary>>,
    grammars: HashMap<String, Arc<Grammar>>,
}

impl Shapes {
    fn vocab(&mut self, g: &Generator) -> Arc<Vocabulary> {
        self.vocab.get_or_insert_with(|| Arc::new(Vocabulary::from_tokenizer(g.tokenizer(), None))).clone()
    }

    fn grammar(&mut self, key: String, build: impl FnOnce() -> Result<Grammar, ApiError>) -> Result<Arc<Grammar>, ApiError> {
        if let Some(g) = self.grammars.get(&key) {
            return Ok(g.clone());
        }
        let g = Arc::new(build()?);
        if self.grammars.len() >= 16 {
            self.grammars.clear();
        }
        self.grammars.insert(key, g.clone());
        Ok(g)
    }
}

/// What the completion must be.
enum Mode {
    Free,
    /// JSON of a grammar from the first token: structured output.
    Json(Arc<Grammar>),
    /// One tool call from the first token.
    Call(Arc<Grammar>),
    /// Free text that may open one tool call with `trigger`.
    MayCall { grammar: Arc<Grammar>, trigger: u32 },
}

fn run_job(g: &mut Generator, shapes: &mut Shapes, job: &Job) -> Result<Option<Completion>, ApiError> {
    let req = &job.request;
    let tools_json = (!req.tools.is_empty()).then(|| Value::Array(req.tools.clone()));
    let prompt = g
        .encode(Prompt::Chat { messages: &req.messages, tools: tools_json.as_ref().filter(|_| req.tool_choice != ToolChoice::None) })
        .map_err(generate_error)?;
    let room = g.context_length().saturating_sub(prompt.len());
    if room == 0 || prompt.is_empty() {
        return Err(generate_error(GenerateError::PromptTooLong { prompt_tokens: prompt.len(), context: g.context_length() }));
    }
    let max_tokens = req.max_tokens.unwrap_or(room).min(room);
    let mode = mode(g, shapes, req)?;
    let vocab = shapes.vocab.clone();
    let eos = g.eos_token_ids().to_vec();
    let mut hook = ShapeHook::new(&mode, vocab.as_ref(), &eos, max_tokens)?;
    let mut opts = req.options.clone();
    opts.max_tokens = max_tokens;
    let streams_text = matches!(mode, Mode::Free | Mode::MayCall { .. } | Mode::Json(_));
    let mut in_call = false;
    let events = &job.events;
    let mut on_piece = |piece: &str| {
        if events.is_closed() {
            return ControlFlow::Break(());
        }
        if !streams_text || in_call {
            return ControlFlow::Continue(());
        }
        let text = match piece.find(TOOL_CALL_OPEN) {
            Some(at) if matches!(mode, Mode::MayCall { .. }) => {
                in_call = true;
                &piece[..at]
            }
            _ => piece,
        };
        if !text.is_empty() && events.blocking_send(JobEvent::Piece(text.to_string())).is_err() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    };
    hook.bias = &req.logit_bias;
    let hook_ref: Option<&mut dyn LogitsHook> = match mode {
        Mode::Free if req.logit_bias.is_empty() => None,
        _ => Some(&mut hook),
    };
    let out = g.generate(Prompt::Tokens(&prompt), &opts, &mut on_piece, hook_ref).map_err(generate_error)?;
    if let Some(e) = hook.failed.take() {
        return Err(ApiError::internal(format!("constrained decoding failed: {e}")));
    }
    if out.finish_reason == FinishReason::Cancelled {
        return Ok(None);
    }
    let mut c = Completion {
        content: None,
        tool_calls: Vec::new(),
        finish_reason: out.finish_reason.as_str(),
        prompt_tokens: out.prompt_tokens,
        completion_tokens: out.completion_tokens,
        prompt_time: out.prompt_time,
        generation_time: out.generation_time,
    };
    let call_text = match mode {
        Mode::Call(_) => Some(out.text.as_str()),
        Mode::MayCall { .. } => out.text.find(TOOL_CALL_OPEN).map(|at| {
            let before = out.text[..at].trim();
            c.content = (!before.is_empty()).then(|| before.to_string());
            out.text[at + TOOL_CALL_OPEN.len()..].trim().trim_end_matches(TOOL_CALL_CLOSE).trim()
        }),
        _ => None,
    };
    match call_text {
        Some(json) => {
            let call: Value = serde_json::from_str(json)
                .map_err(|e| ApiError::internal(format!("the constrained tool call did not parse ({e}): {json}")))?;
            let name = call["name"].as_str().unwrap_or_default().to_string();
            c.tool_calls.push(ToolCall { id: super::fresh_id("call_"), name, arguments: call["arguments"].to_string() });
            c.finish_reason = "tool_calls";
        }
        None => c.content = Some(out.text),
    }
    Ok(Some(c))
}

fn mode(g: &Generator, shapes: &mut Shapes, req: &ChatRequest) -> Result<Mode, ApiError> {
    let tool_grammar = |shapes: &mut Shapes, only: Option<&str>| -> Result<Arc<Grammar>, ApiError> {
        let specs: Vec<ToolSpec> =
            req.tools.iter().filter_map(ToolSpec::from_openai).filter(|t| only.is_none_or(|n| n == t.name)).collect();
        let key = format!("tools:{only:?}:{}", Value::Array(req.tools.clone()));
        shapes.grammar(key, || Grammar::tool_calls(&specs, &Limits::default()).map_err(|e| schema_error("tools", e)))
    };
    let mode = match (&req.tool_choice, &req.response_format) {
        (ToolChoice::Required, _) => Mode::Call(tool_grammar(shapes, None)?),
        (ToolChoice::Function(name), _) => Mode::Call(tool_grammar(shapes, Some(name))?),
        (ToolChoice::Auto, _) => match g.tokenizer().token_to_id(TOOL_CALL_OPEN) {
            Some(trigger) => Mode::MayCall { grammar: tool_grammar(shapes, None)?, trigger },
            None => Mode::Free,
        },
        (ToolChoice::None, ResponseFormat::Text) => Mode::Free,
        (ToolChoice::None, ResponseFormat::JsonObject) => {
            let schema = serde_json::json!({"type": "object"});
            Mode::Json(shapes.grammar("json_object".into(), || {
                Grammar::from_schema(&schema, &Limits::default()).map_err(|e| schema_error("response_format", e))
            })?)
        }
        (ToolChoice::None, ResponseFormat::JsonSchema(schema)) => Mode::Json(shapes.grammar(format!("schema:{schema}"), || {
            Grammar::from_schema(schema, &Limits::default()).map_err(|e| schema_error("response_format.json_schema.schema", e))
        })?),
    };
    if !matches!(mode, Mode::Free) {
        shapes.vocab(g);
    }
    Ok(mode)
}

/// The logits hook of the constrained modes.
struct ShapeHook<'a> {
    mode: &'a Mode,
    vocab: Option<&'a Arc<Vocabulary>>,
    eos: &'a [u32],
    max_tokens: usize,
    /// Tokens the shortest tool call needs (MayCall).
    needed: usize,
    constraint: Option<Constraint>,
    /// Where the constrained part begins among the generated ids.
    start: usize,
    failed: Option<ConstrainError>,
    /// `logit_bias`, applied before any constraint.
    bias: &'a [(u32, f32)],
}

impl<'a> ShapeHook<'a> {
    fn new(mode: &'a Mode, vocab: Option<&'a Arc<Vocabulary>>, eos: &'a [u32], max_tokens: usize) -> Result<Self, ApiError> {
        let mut h = ShapeHook { mode, vocab, eos, max_tokens, needed: 0, constraint: None, start: 0, failed: None, bias: &[] };
        match mode {
            Mode::Free => {}
            Mode::Json(grammar) | Mode::Call(grammar) => {
                // One token of the budget is kept for the end-of-sequence token.
                let budget = max_tokens.saturating_sub(1);
                h.constraint = Some(Constraint::new(grammar.clone(), h.vocab().clone(), budget).map_err(|e| budget_error(e, max_tokens))?);
            }
            Mode::MayCall { grammar, .. } => {
                h.needed = match Constraint::new(grammar.clone(), h.vocab().clone(), 0) {
                    Err(ConstrainError::BudgetTooSmall { needed, .. }) => needed,
                    Err(e) => return Err(ApiError::internal(format!("tool calls cannot be decoded with this vocabulary: {e}"))),
                    Ok(_) => 0,
                };
            }
        }
        Ok(h)
    }

    fn vocab(&self) -> &'a Arc<Vocabulary> {
        self.vocab.expect("the vocabulary is built for every constrained mode")
    }
}

impl LogitsHook for ShapeHook<'_> {
    fn apply(&mut self, generated: &[u32], logits: &mut [f32]) {
        for &(id, b) in self.bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if b <= -100.0 { f32::NEG_INFINITY } else { *l + b };
            }
        }
        if let Some(c) = &mut self.constraint {
            c.mask_generated(&generated[self.start.min(generated.len())..], self.eos, logits);
            return;
        }
        let Mode::MayCall { grammar, trigger } = self.mode else { return };
        if generated.last() == Some(trigger) {
            self.start = generated.len();
            let budget = self.max_tokens.saturating_sub(generated.len() + 1);
            match Constraint::new(grammar.clone(), self.vocab().clone(), budget) {
                Ok(mut c) => {
                    c.mask_generated(&[], self.eos, logits);
                    self.constraint = Some(c);
                }
                Err(e) => {
                    // Cannot happen: the trigger is forbidden below once the budget is short.
                    self.failed = Some(e);
                    logits.fill(f32::NEG_INFINITY);
                }
            }
        } else if self.max_tokens.saturating_sub(generated.len() + 2) < self.needed {
            if let Some(l) = logits.get_mut(*trigger as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

fn budget_error(e: ConstrainError, max_tokens: usize) -> ApiError {
    match e {
        ConstrainError::BudgetTooSmall { needed, .. } => ApiError::bad_request(
            "max_tokens",
            format!("{max_tokens} tokens cannot hold the shortest valid answer ({} tokens with the end token)", needed + 1),
        ),
        other => ApiError::internal(format!("constrained decoding is impossible with this vocabulary: {other}")),
    }
}

fn schema_error(param: &str, e: crate::constrain::SchemaError) -> ApiError {
    ApiError::bad_request(param, format!("schema at {}: {}", if e.pointer.is_empty() { "/" } else { &e.pointer }, e.reason))
}

fn generate_error(e: GenerateError) -> ApiError {
    match e {
        GenerateError::PromptTooLong { .. } | GenerateError::EmptyPrompt | GenerateError::BadOption(_) | GenerateError::Template(_) => {
            ApiError::bad_request("messages", e.to_string())
        }
        GenerateError::NoChatTemplate => ApiError::invalid(e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}
