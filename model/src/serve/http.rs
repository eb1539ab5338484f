//! The HTTP side: OpenAI's routes on axum, over the Unix socket and optionally TCP.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use super::api::{self, ApiError};
use super::worker::{Completion, Engine, Job, JobEvent};
use crate::embed::Embedder;

/// Where the server is in bringing its model up.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Starting,
    /// Fetching from the hub; the detail is the progress line.
    Downloading(String),
    Loading(String),
    Ready,
    /// Bring-up failed for good (an unsupported or corrupt model); the reason.
    Failed(String),
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Downloading(_) => "downloading",
            Phase::Loading(_) => "loading",
            Phase::Ready => "ok",
            Phase::Failed(_) => "failed",
        }
    }
    fn detail(&self) -> &str {
        match self {
            Phase::Downloading(d) | Phase::Loading(d) | Phase::Failed(d) => d,
            Phase::Starting | Phase::Ready => "",
        }
    }
}

/// Everything the handlers share. Models arrive after the listeners are up, so /health can
/// say what the server is doing while it downloads and loads.
pub struct AppState {
    phase: RwLock<Phase>,
    engine: OnceLock<Arc<Engine>>,
    embedder: OnceLock<Arc<Embedder>>,
    /// The ids `/v1/models` lists (the hub repo of each model).
    pub generate_id: Option<String>,
    pub embed_id: Option<String>,
    created: u64,
    /// One embedding batch at a time; it runs beside a generation, not behind it.
    embed_gate: Semaphore,
}

impl AppState {
    pub fn new(generate_id: Option<String>, embed_id: Option<String>) -> Arc<AppState> {
        Arc::new(AppState {
            phase: RwLock::new(Phase::Starting),
            engine: OnceLock::new(),
            embedder: OnceLock::new(),
            generate_id,
            embed_id,
            created: unix_now(),
            embed_gate: Semaphore::new(1),
        })
    }

    pub fn set_phase(&self, p: Phase) {
        *self.phase.write().unwrap_or_else(|e| e.into_inner()) = p;
    }

    pub fn phase(&self) -> Phase {
        self.phase.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_engine(&self, e: Arc<Engine>) {
        let _ = self.engine.set(e);
    }

    pub fn engine(&self) -> Option<&Arc<Engine>> {
        self.engine.get()
    }

    pub fn set_embedder(&self, e: Arc<Embedder>) {
        let _ = self.embedder.set(e);
    }

    fn not_ready(&self, what: &str) -> ApiError {
        match self.phase() {
            Phase::Failed(reason) => ApiError::unavailable(format!("the {what} model could not be loaded: {reason}")),
            Phase::Ready => ApiError::not_found(format!("no {what} model is configured in model.toml")),
            p => {
                let d = p.detail();
                ApiError::unavailable(format!("the {what} model is not loaded yet ({}{}{})", p.name(), if d.is_empty() { "" } else { ": " }, d))
            }
        }
    }
}

/// The routes. Bodies up to 8 MiB (long chats, embedding batches).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .fallback(|| async { error(ApiError::not_found("no such route; see /v1/models, /v1/chat/completions, /v1/embeddings, /health")) })
        .layer(DefaultBodyLimit::max(8 << 20))
        .with_state(state)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(e: ApiError) -> Response {
    json_response(StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e.body())
}

async fn health(State(app): State<Arc<AppState>>) -> Response {
    let phase = app.phase();
    let (queued, stats) = match app.engine() {
        Some(e) => (e.queued(), serde_json::to_value(e.stats()).unwrap_or(Value::Null)),
        None => (0, Value::Null),
    };
    let body = json!({
        "status": phase.name(),
        "detail": phase.detail(),
        "model": app.generate_id,
        "embedding_model": app.embed_id,
        "generation": app.engine.get().is_some(),
        "embeddings": app.embedder.get().is_some(),
        "queued": queued,
        "stats": stats,
    });
    let code = if phase == Phase::Ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(code, &body)
}

fn model_entry(id: &str, created: u64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "ghostos"})
}

fn loaded_models(app: &AppState) -> Vec<&str> {
    let mut ids = Vec::new();
    if let (Some(id), Some(_)) = (&app.generate_id, app.engine.get()) {
        ids.push(id.as_str());
    }
    if let (Some(id), Some(_)) = (&app.embed_id, app.embedder.get()) {
        ids.push(id.as_str());
    }
    ids
}

async fn models(State(app): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = loaded_models(&app).into_iter().map(|id| model_entry(id, app.created)).collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

async fn model(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match loaded_models(&app).into_iter().find(|m| *m == id) {
        Some(m) => json_response(StatusCode::OK, &model_entry(m, app.created)),
        None => error(ApiError::not_found(format!("model {id:?} is not served here"))),
    }
}

async fn chat(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match api::parse_chat(&body) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    let Some(engine) = app.engine.get() else { return error(app.not_ready("generation")) };
    let client = request
        .user
        .clone()
        .or_else(|| headers.get("x-ghost-client").and_then(|v| v.to_str().ok()).map(str::to_string))
        .unwrap_or_else(|| "anonymous".to_string());
    let (stream, include_usage) = (request.stream, request.include_usage);
    let (tx, mut rx) = mpsc::channel(64);
    if let Err(e) = engine.submit(&client, Job { request, events: tx, enqueued: Instant::now() }) {
        return error(e);
    }
    let meta = Meta { id: super::fresh_id("chatcmpl-"), created: unix_now(), model: app.generate_id.clone().unwrap_or_default() };
    // Wait until the worker has the request and has either refused it or produced something,
    // so that a refusal (a prompt that does not fit) is an HTTP error, not half a stream.
    let mut seq = 0;
    let mut queued_ms = 0;
    let first = loop {
        match rx.recv().await {
            Some(JobEvent::Started { seq: s, queued }) => {
                seq = s;
                queued_ms = queued.as_millis() as u64;
            }
            Some(other) => break other,
            None => return error(ApiError::internal("the generation worker dropped the request")),
        }
    };
    if let JobEvent::Finished(Err(e)) = first {
        return error(e);
    }
    let mut response = if !stream {
        let mut ev = first;
        loop {
            match ev {
                JobEvent::Finished(Ok(c)) => break json_response(StatusCode::OK, &meta.completion(&c)),
                JobEvent::Finished(Err(e)) => break error(e),
                _ => match rx.recv().await {
                    Some(next) => ev = next,
                    None => break error(ApiError::internal("the generation worker dropped the request")),
                },
            }
        }
    } else {
        let (out, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
        tokio::spawn(async move {
            let mut sse = Sse { out, meta };
            if !sse.send(&sse.meta.chunk(json!({"role": "assistant", "content": ""}), None)).await {
                return;
            }
            let mut ev = Some(first);
            while let Some(e) = ev.take() {
                let open = match e {
                    JobEvent::Piece(p) => sse.send(&sse.meta.chunk(json!({"content": p}), None)).await,
                    JobEvent::Started { .. } => true,
                    JobEvent::Finished(r) => {
                        sse.finish(r, include_usage).await;
                        return;
                    }
                };
                if !open {
                    return; // the client went away; dropping `rx` cancels the generation
                }
                ev = rx.recv().await;
            }
            sse.finish(Err(ApiError::internal("the generation worker dropped the request")), false).await;
        });
        let mut r = Response::new(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(body_rx)));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    };
    let h = response.headers_mut();
    h.insert("x-ghost-seq", HeaderValue::from(seq));
    h.insert("x-ghost-queued-ms", HeaderValue::from(queued_ms));
    response
}

struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn completion(&self, c: &Completion) -> Value {
        let mut message = json!({"role": "assistant", "content": c.content});
        if !c.tool_calls.is_empty() {
            message["tool_calls"] = tool_calls_json(c, false);
        }
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "system_fingerprint": Value::Null,
            "choices": [{"index": 0, "message": message, "logprobs": Value::Null, "finish_reason": c.finish_reason}],
            "usage": usage(c),
            "timings": timings(c),
        })
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "system_fingerprint": Value::Null,
            "choices": [{"index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": finish}],
        })
    }
}

fn usage(c: &Completion) -> Value {
    json!({"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "total_tokens": c.prompt_tokens + c.completion_tokens})
}

/// llama.cpp's server reports these too; clients ignore what they do not know.
fn timings(c: &Completion) -> Value {
    let pp = c.prompt_time.as_secs_f64();
    let tg = c.generation_time.as_secs_f64();
    json!({
        "prompt_ms": pp * 1e3,
        "prompt_per_second": if pp > 0.0 { c.prompt_tokens as f64 / pp } else { 0.0 },
        "predicted_ms": tg * 1e3,
        "predicted_per_second": if tg > 0.0 { c.completion_tokens as f64 / tg } else { 0.0 },
    })
}

fn tool_calls_json(c: &Completion, streaming: bool) -> Value {
    Value::Array(
        c.tool_calls
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut v = json!({"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}});
                if streaming {
                    v["index"] = json!(i);
                }
                v
            })
            .collect(),
    )
}

struct Sse {
    out: mpsc::Sender<Result<Bytes, Infallible>>,
    meta: Meta,
}

impl Sse {
    async fn send(&mut self, v: &Value) -> bool {
        self.send_raw(&v.to_string()).await
    }

    async fn send_raw(&mut self, data: &str) -> bool {
        self.out.send(Ok(Bytes::from(format!("data: {data}\n\n")))).await.is_ok()
    }

    async fn finish(&mut self, r: Result<Completion, ApiError>, include_usage: bool) {
        match r {
            Ok(c) => {
                if !c.tool_calls.is_empty() {
                    let chunk = self.meta.chunk(json!({"tool_calls": tool_calls_json(&c, true)}), None);
                    if !self.send(&chunk).await {
                        return;
                    }
                }
                let last = self.meta.chunk(json!({}), Some(c.finish_reason));
                if !self.send(&last).await {
                    return;
                }
                if include_usage {
                    let mut u = self.meta.chunk(json!({}), None);
                    u["choices"] = json!([]);
                    u["usage"] = usage(&c);
                    if !self.send(&u).await {
                        return;
                    }
                }
            }
            Err(e) => {
                if !self.send(&e.body()).await {
                    return;
                }
            }
        }
        self.send_raw("[DONE]").await;
    }
}

async fn embeddings(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = match api::parse_embeddings(&body) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    let Some(embedder) = app.embedder.get().cloned() else { return error(app.not_ready("embedding")) };
    let Ok(_permit) = app.embed_gate.acquire().await else { return error(ApiError::unavailable("shutting down")) };
    let input = request.input;
    let result = tokio::task::spawn_blocking(move || {
        let tokens = embedder.count_tokens(&input)?;
        embedder.embed(&input).map(|v| (v, tokens))
    })
    .await;
    let (vectors, tokens) = match result {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return error(ApiError::internal(format!("embedding failed: {e}"))),
        Err(_) => return error(ApiError::internal("embedding panicked; the server is still up")),
    };
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if request.base64 { json!(api::base64_f32(v)) } else { json!(v) };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": app.embed_id, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
