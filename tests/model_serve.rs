//! `ghost model serve`, the real binary: first boot pulls a random-weight Qwen2 fixture (GGUF
//! Q8_0 in one repo, its tokenizer in another, as on the hub) and all-MiniLM-L6-v2 from the
//! local hub mirror, verifies them, loads them, and only then says READY=1; then the
//! OpenAI-compatible API over /run/ghost/model.sock: chat (deterministic by seed, streaming,
//! tool calls and JSON that are always valid), embeddings beside a running generation, fair
//! turns between clients, cancellation when a client goes away, named errors for bad
//! requests, a hub that is down at first, supervision by ghost-init, and the official OpenAI
//! Python client.

mod hub_mirror;
#[path = "support/http_unix.rs"]
mod http;
#[path = "support/minilm.rs"]
mod minilm;

use ghost_model::fixture::{self, FixtureForms, FixtureSpec};
use ghost_tests::{bin, eventually, free_port};
use hub_mirror::{commit_id, Mirror};
use serde_json::{json, Value};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const GEN_REPO: &str = "ghostos/tiny-qwen2-GGUF";
const GGUF: &str = "model-q8_0.gguf";
const TOK_REPO: &str = "ghostos/tiny-qwen2";
const EMB_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// The fixture's context: long enough that a generation can outlast what the socket buffers.
const CONTEXT: usize = 4096;

struct Repos {
    gguf: tempfile::TempDir,
    tokenizer: tempfile::TempDir,
    minilm: PathBuf,
    /// End-of-sequence ids and the `<tool_call>` id of the fixture's tokenizer.
    eos: Vec<u32>,
    tool_call: u32,
}

fn repos() -> &'static Repos {
    static R: OnceLock<Repos> = OnceLock::new();
    R.get_or_init(|| {
        let all = tempfile::tempdir().unwrap();
        let spec = FixtureSpec { max_position_embeddings: CONTEXT, ..FixtureSpec::tiny() };
        let forms = FixtureForms { safetensors: false, gguf_q8_0: true, gguf_q4_k_m: false };
        fixture::write(all.path(), &spec, forms).unwrap();
        let gguf = tempfile::tempdir().unwrap();
        std::fs::copy(all.path().join(GGUF), gguf.path().join(GGUF)).unwrap();
        let tokenizer = tempfile::tempdir().unwrap();
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(all.path().join(f), tokenizer.path().join(f)).unwrap();
        }
        let tok = tokenizers::Tokenizer::from_file(all.path().join("tokenizer.json")).unwrap();
        let id = |t: &str| tok.token_to_id(t).unwrap_or_else(|| panic!("the fixture tokenizer has no {t}"));
        Repos {
            gguf,
            tokenizer,
            minilm: minilm::model_dir(),
            eos: vec![id("<|im_end|>"), id("<|endoftext|>")],
            tool_call: id("<tool_call>"),
        }
    })
}

fn start_mirror(addr: &str) -> Mirror {
    let r = repos();
    Mirror::start_on(
        addr,
        &[
            (GEN_REPO, r.gguf.path(), &commit_id("gguf v1")),
            (TOK_REPO, r.tokenizer.path(), &commit_id("tokenizer v1")),
            (EMB_REPO, &r.minilm, &commit_id("minilm v1")),
        ],
    )
}

fn model_toml() -> String {
    format!(
        r#"[[model]]
repo = "{GEN_REPO}"
role = "generate"
files = ["{GGUF}"]

[[model]]
repo = "{TOK_REPO}"
role = "tokenizer"
files = ["tokenizer.json", "tokenizer_config.json"]

[[model]]
repo = "{EMB_REPO}"
role = "embed"
files = ["config.json", "model.safetensors", "tokenizer.json"]

[serve]
threads = 2
queue = 8
"#
    )
}

/// A `ghost model serve` with its own GHOST_ROOT and a notify socket the test reads.
struct Server {
    child: Child,
    root: tempfile::TempDir,
    notify: UnixDatagram,
    /// STATUS= lines received, in order.
    statuses: Vec<String>,
    ready: bool,
}

impl Server {
    fn start(endpoint: &str, extra: &[&str]) -> Server {
        let root = tempfile::Builder::new().prefix("ghost-serve-").tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/ghost")).unwrap();
        std::fs::write(root.path().join("etc/ghost/model.toml"), model_toml()).unwrap();
        let notify_path = root.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let log = std::fs::File::create(root.path().join("serve.log")).unwrap();
        let child = Command::new(bin("ghost"))
            .args(["model", "serve"])
            .args(extra)
            .env("GHOST_ROOT", root.path())
            .env("HF_ENDPOINT", endpoint)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn ghost model serve");
        Server { child, root, notify, statuses: Vec::new(), ready: false }
    }

    fn sock(&self) -> PathBuf {
        self.root.path().join("run/ghost/model.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("serve.log")).unwrap_or_default()
    }

    fn ghost_root(&self) -> &Path {
        self.root.path()
    }

    /// Reads notify datagrams until READY=1; fails with the log if the server dies or is slow.
    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !self.ready {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("ghost model serve exited ({status}) before READY=1:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no READY=1 within {timeout:?}; statuses {:?}\n{}", self.statuses, self.log());
            if let Ok(n) = self.notify.recv(&mut buf) {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    if let Some(s) = line.strip_prefix("STATUS=") {
                        self.statuses.push(s.to_string());
                    }
                    if line == "READY=1" {
                        self.ready = true;
                    }
                }
            }
        }
    }

    fn chat(&self, body: Value) -> Value {
        let r = http::post(&self.sock(), "/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready_server() -> (Mirror, Server) {
    let mirror = start_mirror("127.0.0.1:0");
    let mut s = Server::start(&mirror.url(), &[]);
    s.wait_ready(Duration::from_secs(120));
    (mirror, s)
}

fn ask(seed: u64, max_tokens: usize) -> Value {
    json!({
        "model": GEN_REPO,
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Is the disk full?"}],
        "seed": seed, "temperature": 0.8, "max_tokens": max_tokens,
    })
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"].as_str().unwrap_or_else(|| panic!("no content: {v}")).to_string()
}

#[test]
fn first_boot_pulls_verifies_then_serves_chat_deterministic_by_seed() {
    let (_mirror, s) = ready_server();
    assert!(s.statuses.iter().any(|l| l.starts_with("downloading")), "no download progress in STATUS: {:?}", s.statuses);
    let health = http::get(&s.sock(), "/health");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "ok");
    let models = http::get(&s.sock(), "/v1/models").json();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [GEN_REPO, EMB_REPO]);

    let a = s.chat(ask(7, 24));
    let b = s.chat(ask(7, 24));
    let c = s.chat(ask(8, 24));
    assert_eq!(content(&a), content(&b), "same seed, same answer");
    assert_ne!(content(&a), content(&c), "another seed, another answer");
    assert_eq!(a["object"], "chat.completion");
    let usage = &a["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5, "{usage}");
    assert!((1..=24).contains(&usage["completion_tokens"].as_u64().unwrap()), "{usage}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()));
    assert!(["stop", "length"].contains(&a["choices"][0]["finish_reason"].as_str().unwrap()), "{a}");

    // The CLI reads the same pulled files and, with the same settings, writes the same text.
    let out = Command::new(bin("ghost"))
        .args(["model", "generate", "--json", "--prompt", "Is the disk full?", "--system", "You are terse."])
        .args(["--seed", "7", "--temperature", "0.8", "--top-p", "1", "--repeat-penalty", "1", "--max-tokens", "24"])
        .env("GHOST_ROOT", s.ghost_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["text"].as_str().unwrap(), content(&a), "CLI and API disagree");

    // What was pulled verifies, and the cache lists all three repos.
    let verify = Command::new(bin("ghost")).args(["model", "verify"]).env("GHOST_ROOT", s.ghost_root()).output().unwrap();
    assert!(verify.status.success(), "{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    let list = Command::new(bin("ghost")).args(["model", "list"]).env("GHOST_ROOT", s.ghost_root()).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for repo in [GEN_REPO, TOK_REPO, EMB_REPO] {
        assert!(list.contains(repo), "{repo} missing from `ghost model list`:\n{list}");
    }
}

#[test]
fn streamed_deltas_add_up_to_the_whole_answer() {
    let (_mirror, s) = ready_server();
    let whole = s.chat(ask(11, 32));
    let mut body = ask(11, 32);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut stream = http::EventStream::open(&s.sock(), &body, &[]);
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let events = stream.rest();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, content(&whole));
    assert!(chunks.len() > 4, "pieces arrive one by one: {} chunks", chunks.len());
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "restart_service", "description": "Restart a service",
            "parameters": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "force": {"type": "boolean"}}, "required": ["name"]}}},
        {"type": "function", "function": {"name": "set_memory_limit",
            "parameters": {"type": "object", "properties": {"service": {"type": "string", "maxLength": 20}, "megabytes": {"type": "integer", "minimum": 16, "maximum": 4096}}, "required": ["service", "megabytes"]}}}
    ])
}

fn check_call(call: &Value) -> String {
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let name = call["function"]["name"].as_str().unwrap().to_string();
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().expect("arguments are a JSON string")).expect("arguments parse");
    let tools = tools();
    let tool = tools.as_array().unwrap().iter().find(|t| t["function"]["name"] == name.as_str()).unwrap_or_else(|| panic!("unknown tool {name}"));
    let validator = jsonschema::validator_for(&tool["function"]["parameters"]).unwrap();
    if let Err(e) = validator.validate(&args) {
        panic!("{name} arguments {args} are invalid: {e}");
    }
    name
}

#[test]
fn tool_calls_and_json_answers_are_always_valid() {
    let (_mirror, s) = ready_server();
    let user = json!([{"role": "user", "content": "nginx is down. Fix it."}]);
    let mut names = std::collections::BTreeSet::new();
    for seed in 0..6u64 {
        let v = s.chat(json!({"messages": user, "tools": tools(), "tool_choice": "required", "seed": seed, "temperature": 1.0 + seed as f64 * 0.2, "max_tokens": 80}));
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "seed {seed}: {v}");
        assert_eq!(choice["message"]["content"], Value::Null);
        names.insert(check_call(&choice["message"]["tool_calls"][0]));
    }
    assert!(!names.is_empty());
    // A named function is the one called.
    let v = s.chat(json!({"messages": user, "tools": tools(), "tool_choice": {"type": "function", "function": {"name": "set_memory_limit"}}, "seed": 3, "max_tokens": 80}));
    assert_eq!(check_call(&v["choices"][0]["message"]["tool_calls"][0]), "set_memory_limit");
    // auto: the model decides; pushed towards opening a call, what follows is a valid call,
    // streamed as a tool_calls delta.
    let r = repos();
    let bias = json!({ r.tool_call.to_string(): 100 });
    let v = s.chat(json!({"messages": user, "tools": tools(), "seed": 5, "max_tokens": 80, "logit_bias": bias}));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    check_call(&v["choices"][0]["message"]["tool_calls"][0]);
    let mut stream = http::EventStream::open(&s.sock(), &json!({"messages": user, "tools": tools(), "seed": 5, "max_tokens": 80, "logit_bias": bias, "stream": true}), &[]);
    let events = stream.rest();
    let chunks: Vec<Value> = events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    let call = chunks.iter().find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned()).expect("a tool_calls delta");
    assert_eq!(call["index"], 0);
    check_call(&call);
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"]["content"].as_str().is_none_or(|t| !t.contains("<tool_call>"))));
    // Too few tokens for any call is refused up front, naming max_tokens.
    let r = http::post(&s.sock(), "/v1/chat/completions", &json!({"messages": user, "tools": tools(), "tool_choice": "required", "max_tokens": 5}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "max_tokens");
    // Structured output: JSON valid against the schema, every seed.
    let schema = json!({"type": "object", "properties": {"severity": {"enum": ["low", "high"]}, "summary": {"type": "string", "maxLength": 40}}, "required": ["severity", "summary"]});
    let validator = jsonschema::validator_for(&schema).unwrap();
    for seed in 0..3u64 {
        let v = s.chat(json!({"messages": user, "seed": seed, "temperature": 1.2, "max_tokens": 60,
            "response_format": {"type": "json_schema", "json_schema": {"name": "triage", "schema": schema}}}));
        let answer: Value = serde_json::from_str(&content(&v)).unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {v}"));
        assert!(validator.is_valid(&answer), "seed {seed}: {answer}");
    }
}

#[test]
fn bad_requests_get_named_errors_and_the_server_stays_up() {
    let (_mirror, s) = ready_server();
    let sock = s.sock();
    let err = |r: http::Response, status: u16| -> Value {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        r.json()["error"].clone()
    };
    let e = err(http::request(&sock, "POST", "/v1/chat/completions", Some("{\"messages\": ["), &[]), 400);
    assert!(e["message"].as_str().unwrap().contains("not valid JSON"), "{e}");
    assert_eq!(err(http::post(&sock, "/v1/chat/completions", &json!({"model": "x"})), 400)["param"], "messages");
    let e = err(http::post(&sock, "/v1/chat/completions", &json!({"messages": [{"role": "robot", "content": "hi"}]})), 400);
    assert_eq!(e["param"], "messages[0].role");
    let e = err(http::post(&sock, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "temprature": 0.5})), 400);
    assert_eq!(e["param"], "temprature");
    // A prompt longer than the context: both lengths are named.
    let long = "disk full again ".repeat(3000);
    let e = err(http::post(&sock, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": long}]})), 400);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(&CONTEXT.to_string()) && msg.contains("does not fit"), "{msg}");
    assert_eq!(err(http::get(&sock, "/v1/completions/nothing"), 404)["type"], "not_found_error");
    assert_eq!(err(http::post(&sock, "/v1/embeddings", &json!({"input": [1, 2]})), 400)["param"], "input[0]");
    assert_eq!(err(http::post(&sock, "/v1/embeddings", &json!({"input": "x", "encoding_format": "hex"})), 400)["param"], "encoding_format");
    // Still up and answering.
    let v = s.chat(ask(1, 4));
    assert!(v["usage"]["completion_tokens"].as_u64().is_some_and(|n| n >= 1), "{v}");
    assert_eq!(http::get(&sock, "/health").status, 200);
}

#[test]
fn the_router_answers_from_the_real_server_on_its_socket() {
    let (_mirror, s) = ready_server();
    let out = Command::new(bin("ghost"))
        .args(["model", "ask", "--need", "decide", "--json", "--max-tokens", "8", "Restart nginx?"])
        .env("GHOST_ROOT", s.ghost_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["layer"], "operational", "{v}");
    assert_eq!(v["fallbacks"], json!([]), "{v}");
    assert_eq!(v["cost_usd"].as_f64(), Some(0.0), "{v}");
    let calls = std::fs::read_to_string(s.ghost_root().join("var/lib/ghost/router/calls.jsonl")).unwrap();
    let last: Value = serde_json::from_str(calls.lines().last().unwrap()).unwrap();
    assert_eq!((last["layer"].as_str(), last["ok"].as_bool()), (Some("operational"), Some(true)), "{last}");
    assert!(last["completion_tokens"].as_u64().is_some_and(|n| (1..=8).contains(&n)), "{last}");
}

fn health(sock: &Path) -> Value {
    http::get(sock, "/health").json()
}

#[test]
fn clients_take_turns_a_gone_client_is_cancelled_and_embeddings_answer_beside_a_generation() {
    let (_mirror, s) = ready_server();
    let sock = s.sock();
    let r = repos();
    let ban_eos: serde_json::Map<String, Value> = r.eos.iter().map(|id| (id.to_string(), json!(-100))).collect();
    // A long generation whose client does not read: it cannot end by itself (no end token,
    // and more text than the socket buffers hold before max_tokens).
    let mut long = ask(1, CONTEXT - 100);
    long["stream"] = json!(true);
    long["user"] = json!("a");
    long["logit_bias"] = Value::Object(ban_eos);
    let mut running = http::EventStream::open(&sock, &long, &[]);
    assert_eq!(running.status, 200);
    assert!(running.next_data().is_some());
    assert_eq!(running.header("x-ghost-seq"), Some("1"));

    // Embeddings are answered while that generation runs, and match the library's vectors.
    let v = http::post(&sock, "/v1/embeddings", &json!({"model": EMB_REPO, "input": ["the disk is full", "nginx crashed"]}));
    assert_eq!(v.status, 200, "{}", v.text());
    let h = health(&sock);
    assert_eq!((h["stats"]["running"].as_bool(), h["stats"]["completed"].as_u64()), (Some(true), Some(0)), "{h}");
    let v = v.json();
    let reference = ghost_model::embed::Embedder::load(&r.minilm).unwrap().embed(&["the disk is full", "nginx crashed"]).unwrap();
    for (i, want) in reference.iter().enumerate() {
        let got: Vec<f32> = v["data"][i]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(got.len(), 384);
        let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "text {i}: max difference {diff}");
    }
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 6);

    // Client a queues two more, then client b one: b goes next, before a's second and third.
    let spawn = |user: &'static str| {
        let sock = sock.clone();
        std::thread::spawn(move || {
            let mut body = ask(2, 2);
            body["user"] = json!(user);
            let r = http::post(&sock, "/v1/chat/completions", &body);
            assert_eq!(r.status, 200, "{}", r.text());
            r.header("x-ghost-seq").unwrap().parse::<u64>().unwrap()
        })
    };
    let a2 = spawn("a");
    assert!(eventually(Duration::from_secs(20), || health(&sock)["queued"] == 1), "{}", health(&sock));
    let a3 = spawn("a");
    assert!(eventually(Duration::from_secs(20), || health(&sock)["queued"] == 2), "{}", health(&sock));
    let b1 = spawn("b");
    assert!(eventually(Duration::from_secs(20), || health(&sock)["queued"] == 3), "{}", health(&sock));
    // Client a's long generation goes away: it is cancelled, and the queue moves.
    drop(running);
    let (a2, a3, b1) = (a2.join().unwrap(), a3.join().unwrap(), b1.join().unwrap());
    assert_eq!((b1, a2, a3), (2, 3, 4), "start order: b1, a2, a3");
    let h = health(&sock);
    assert_eq!((h["stats"]["cancelled"].as_u64(), h["stats"]["completed"].as_u64(), h["queued"].as_u64()), (Some(1), Some(3), Some(0)), "{h}");
}

#[test]
fn an_unreachable_hub_is_retried_while_the_api_says_why_then_the_pull_finishes() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut s = Server::start(&endpoint, &["--retry-delay-ms", "100", "--retry-max-delay-ms", "400"]);
    let sock = s.sock();
    // The listeners are up before the model: /health says what it waits for.
    assert!(
        eventually(Duration::from_secs(30), || {
            sock.exists() && {
                let h = http::get(&sock, "/health");
                h.status == 503 && h.json()["detail"].as_str().is_some_and(|d| d.contains("waiting for the hub"))
            }
        }),
        "{}",
        s.log()
    );
    let r = http::post(&sock, "/v1/chat/completions", &ask(1, 4));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("not loaded yet"), "{}", r.text());
    // The hub comes up on that address; the service pulls, loads and becomes ready by itself.
    let _mirror = start_mirror(&format!("127.0.0.1:{port}"));
    s.wait_ready(Duration::from_secs(120));
    assert!(s.statuses.iter().any(|l| l.contains("waiting for the hub")), "{:?}", s.statuses);
    assert_eq!(s.chat(ask(3, 6))["object"], "chat.completion");
    assert_eq!(http::get(&sock, "/health").status, 200);
    // Restarted offline, it serves from the cache without asking the hub.
    drop(_mirror);
    let root = s.root.path().to_path_buf();
    let _ = s.child.kill();
    let _ = s.child.wait();
    let notify = UnixDatagram::bind(root.join("notify2.sock")).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut again = Command::new(bin("ghost"))
        .args(["model", "serve"])
        .env("GHOST_ROOT", &root)
        .env("HF_ENDPOINT", &endpoint)
        .env("NOTIFY_SOCKET", root.join("notify2.sock"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut ready = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready && Instant::now() < deadline {
        if let Ok(n) = notify.recv(&mut buf) {
            ready = String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1");
        }
    }
    let _ = again.kill();
    let _ = again.wait();
    assert!(ready, "a restart with everything cached must not need the hub");
}

#[test]
fn supervised_by_ghost_init_ready_only_after_load_with_progress_as_events() {
    use ghost_proto::{EventKind, StreamItem};
    use ghost_tests::{control, status, wait_for_control, Ghost, Isolation, Root};
    use std::io::{BufRead, BufReader, Write};
    let mirror = start_mirror("127.0.0.1:0");
    let root = Root::new();
    std::fs::write(root.path().join("etc/ghost/model.toml"), model_toml()).unwrap();
    let mut ghost = Ghost::start(&root, Isolation::Subreaper, "");
    wait_for_control(&root, Duration::from_secs(10));
    // Follow the events first, then add the service, so that none of its events is missed.
    let mut events = std::os::unix::net::UnixStream::connect(root.path().join("run/ghost/control.sock")).unwrap();
    events.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    events.write_all(b"{\"cmd\":\"events\"}\n").unwrap();
    let mut events = BufReader::new(events);
    let mut line = String::new();
    events.read_line(&mut line).unwrap();
    assert!(line.contains("\"stream\":\"events\""), "{line}");
    root.service(
        "model",
        &format!(
            "exec = [{:?}, \"model\", \"serve\"]\nenv = {{ GHOST_ROOT = {:?}, HF_ENDPOINT = {:?} }}\nready = \"notify\"\nstop_timeout_s = 5\n",
            bin("ghost").display().to_string(),
            root.path().display().to_string(),
            mirror.url()
        ),
    );
    assert!(control(&root, "{\"cmd\":\"reload\"}").ok);
    let mut seen = Vec::new();
    loop {
        line.clear();
        let n = events.read_line(&mut line).unwrap_or_else(|e| panic!("no Ready event ({e}); saw {seen:?}\n{}", ghost.console.text()));
        assert!(n > 0, "event stream closed; saw {seen:?}");
        if let Ok(StreamItem::Event(e)) = serde_json::from_str::<StreamItem>(&line) {
            if e.service.as_deref() != Some("model") {
                continue;
            }
            assert!(!matches!(e.kind, EventKind::Exited | EventKind::CrashLoop), "{e:?}\n{}", ghost.console.text());
            let done = e.kind == EventKind::Ready;
            seen.push((e.kind, e.detail));
            if done {
                break;
            }
        }
    }
    let statuses: Vec<&str> = seen.iter().filter(|(k, _)| *k == EventKind::Status).map(|(_, d)| d.as_str()).collect();
    let downloading = statuses.iter().position(|d| d.starts_with("downloading")).unwrap_or_else(|| panic!("no download progress: {seen:?}"));
    let loading = statuses.iter().position(|d| d.starts_with("loading")).unwrap_or_else(|| panic!("no loading status: {seen:?}"));
    assert!(downloading < loading, "{statuses:?}");
    let st = status(&root, "model");
    assert!(st.status_text.as_deref().is_some_and(|t| t.starts_with("serving")), "{st:?}");
    ghost.signal(libc::SIGTERM);
    assert!(ghost.wait_exit(Duration::from_secs(20)).is_some(), "{}", ghost.console.text());
    let console = ghost.console.text();
    assert!(console.contains("service model") && console.contains("downloading"), "download progress reaches the console:\n{console}");
}

/// The official OpenAI Python library (pinned, from PyPI, cached under target/) talks to the
/// server over its Unix socket: chat, streaming, a tool call and embeddings.
#[test]
fn the_openai_python_client_talks_to_it() {
    let site = openai_python();
    let (_mirror, s) = ready_server();
    let script = ghost_tests::workspace_root().join("tests/support/openai_client.py");
    let out = Command::new("python3").arg(&script).arg(s.sock()).arg(GEN_REPO).arg(EMB_REPO).env("PYTHONPATH", &site).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(v["chat"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    assert_eq!(v["stream"], v["chat"], "streamed and whole answers of the same seed agree");
    assert_eq!(v["tool"]["name"], "restart_service");
    assert!(v["tool"]["arguments"]["name"].is_string(), "{v}");
    assert_eq!(v["embedding_len"], 384);
    assert_eq!(v["models"], json!([GEN_REPO, EMB_REPO]));
}

fn openai_python() -> PathBuf {
    static SITE: OnceLock<PathBuf> = OnceLock::new();
    SITE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openai-python-1.109.1");
        if dir.join("openai/__init__.py").is_file() {
            return dir;
        }
        let staging = dir.with_file_name(format!("openai-python-1.109.1.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let ok = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", "--target"])
            .arg(&staging)
            .arg("openai==1.109.1")
            .status()
            .expect("running python3 -m pip (install python3-pip)");
        assert!(ok.success(), "pip could not install openai==1.109.1 from PyPI");
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        dir
    })
    .clone()
}

/// The agent's model layer against the real server: an operator's message no rule covers is
/// put to the model with the tool registry as `tools`; the answer is a valid call of a real tool
/// (decoded under its schema even with random weights), and it goes through policy and into the
/// audit trail as the model's. Safe mode: a random model may only run low-risk calls.
#[test]
fn what_no_rule_covers_goes_to_the_model_and_its_call_through_policy_and_audit() {
    use ghost_tests::agent_world::World;
    let (_mirror, server) = ready_server();
    let root = ghost_tests::Root::new();
    root.ghost_toml("security = \"safe\"\n");
    // The server runs under its own root; the agent finds it through a link in its root
    // (ghost-init starts /run afresh, so the link lives elsewhere).
    let w = World::start_in(root, &[], |r| r, ghost_tests::Isolation::Subreaper, "[metrics]\ndisks = []\n[model]\nsocket = \"/var/lib/model.sock\"\nmax_tokens = 64\n", |root| {
        std::fs::create_dir_all(root.join("var/lib")).unwrap();
        std::os::unix::fs::symlink(server.sock(), root.join("var/lib/model.sock")).unwrap();
    });
    let (code, _, err) = w.ctl(&["tell", "the web site feels slow since this morning"]);
    assert_eq!(code, 0, "{err}");
    let mut status = Value::Null;
    let decided = eventually(Duration::from_secs(120), || {
        status = w.ctl_json(&["agent"]);
        status["decisions_by_model"].as_u64().unwrap_or(0) + status["model_invalid"].as_u64().unwrap_or(0) >= 1
    });
    assert!(decided, "the model was not asked: {status}\n{}\n{}", std::fs::read_to_string(w.path("/var/log/ghost/agent.log")).unwrap_or_default(), server.log());
    assert_eq!(status["decisions_by_model"], 1, "a schema-constrained answer is always a call: {status}");
    assert!(status["share_without_model"].as_f64().unwrap() < 1.0, "{status}");
    let decisions = w.ctl_json(&["decisions"]);
    let d = decisions.as_array().unwrap().iter().find(|d| d["layer"] == "model").unwrap_or_else(|| panic!("{decisions}"));
    assert!(d["text"].as_str().unwrap().contains("the web site feels slow"), "{d}");
    // The call's record follows the decision's (policy, then the outcome).
    let mut model_calls: Vec<Value> = Vec::new();
    let audited = eventually(Duration::from_secs(30), || {
        model_calls = w.audit_records().into_iter().filter(|r| r.to_string().contains("\"actor\":\"model\"")).collect();
        model_calls.iter().any(|r| !r.to_string().contains("\"status\":\"started\""))
    });
    assert!(audited, "the model's call is audited as the model's: {model_calls:#?}");
    let layer_and_policy = |r: &Value| {
        let t = r.to_string();
        t.contains("\"layer\":\"model\"") && t.contains("\"verdict\":")
    };
    assert!(model_calls.iter().all(layer_and_policy), "{model_calls:#?}");
    // Memory has the server's MiniLM embeddings: no word of the query is in the message.
    let hits = w.ctl_json(&["memory", "search", "sluggish website performance", "--limit", "3"]);
    assert!(hits[0]["text"].as_str().unwrap_or("").contains("feels slow"), "found by meaning first: {hits}");
    w.audit_intact();
}

/// Chat against the real server with the random test model: the first round must be a call
/// (decoded under a tool's schema), which runs through policy and the audit trail as the
/// chat's; the answer then streams from the server.
#[test]
fn chat_with_the_model_goes_through_the_tool_loop_with_valid_calls() {
    use ghost_tests::agent_world::World;
    let (_mirror, server) = ready_server();
    let root = ghost_tests::Root::new();
    root.ghost_toml("security = \"safe\"\n");
    let w = World::start_in(root, &[], |r| r, ghost_tests::Isolation::Subreaper, "[metrics]\ndisks = []\n[model]\nsocket = \"/var/lib/model.sock\"\nmax_tokens = 48\n", |root| {
        std::fs::create_dir_all(root.join("var/lib")).unwrap();
        std::os::unix::fs::symlink(server.sock(), root.join("var/lib/model.sock")).unwrap();
    });
    let (code, out, err) = w.ctl(&["chat", "--json", "is everything all right with the services?"]);
    assert_eq!(code, 0, "{out}{err}\n{}", server.log());
    let events: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let calls: Vec<&Value> = events.iter().filter(|e| e["event"] == "call").collect();
    assert!(!calls.is_empty(), "the first round is a call: {out}");
    // Every call names a real tool with object arguments, and each has its result.
    let registry = ghost_audit::tools::Registry::builtin();
    for c in &calls {
        let spec = registry.get(c["tool"].as_str().unwrap()).unwrap_or_else(|| panic!("not a tool: {c}"));
        let schema = jsonschema::validator_for(&spec.input_schema).unwrap();
        assert!(schema.is_valid(&c["args"]), "the arguments match {}'s schema: {c}", spec.name);
    }
    assert_eq!(events.iter().filter(|e| e["event"] == "result").count(), calls.len(), "{out}");
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done", "{out}");
    assert!(done["model"].is_string() && done["answer"].is_string() && done["calls"].as_u64() == Some(calls.len() as u64), "{done}");
    // The answer came as a stream of pieces, which add up to it.
    let streamed: String = events.iter().filter(|e| e["event"] == "text").map(|e| e["text"].as_str().unwrap()).collect();
    assert!(events.iter().filter(|e| e["event"] == "text").count() > 1 || done["answer"] == "", "{out}");
    assert_eq!(streamed, done["answer"].as_str().unwrap());
    // In the audit trail as the chat's, with the policy's verdict.
    let audited: Vec<Value> = w.audit_records().into_iter().filter(|r| r["who"]["actor"] == "chat").collect();
    assert!(audited.iter().any(|r| r["policy"]["verdict"].is_string() && r["outcome"]["status"] != "started"), "{audited:#?}");
    // Each call has its policy verdict (a schema-valid call may still be refused, e.g. a
    // service name with characters no service has: the policy's own checks go further).
    assert!(audited.iter().all(|r| r["policy"]["rule"] != "tool.unknown"), "{audited:#?}");
    w.audit_intact();
}
