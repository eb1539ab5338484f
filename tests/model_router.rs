//! The intelligence router against fake servers on 127.0.0.1 and on a Unix socket, written
//! here: an OpenAI-compatible and an Anthropic remote that record what they were sent and
//! answer with chosen usage figures (or a 5xx, or nothing at all), and local model servers.
//! What is checked is what a user would notice: which layer answered and why, what the
//! remote saw (key, model, cap), that the daily budget is never exceeded — also by racing
//! threads, across routers, and with the money limit binding — and that it resets the next
//! UTC day, the call log, configuration errors, and `ghost model ask` end to end.

use ghost_model::router::{worst_case_tokens, Fallback, Layer, Message, Need, Reason, Request, RouteError, Routed, Router, RouterConfig};
use ghost_tests::{bin, free_port};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

// 2025-03-01T10:00:00Z
const T0: u64 = 1_740_823_200_000;
const DAY_MS: u64 = 86_400_000;
const KEY: &str = "sk-test-7f3a9c1e";

// ---------------------------------------------------------------------------------------------
// Fake servers

/// How a fake server answers.
#[derive(Clone, Debug)]
enum Reply {
    /// An OpenAI-style chat completion with this usage.
    OpenAi { text: &'static str, prompt: u64, completion: u64 },
    /// An Anthropic message with this usage.
    Anthropic { text: &'static str, input: u64, output: u64 },
    /// This status with this body.
    Status(u16, String),
    /// Reads the request and never answers (until the client hangs up).
    Silent,
}

/// A request a fake server received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    /// Header names in lower case.
    headers: HashMap<String, String>,
    body: Value,
}

#[derive(Default)]
struct FakeState {
    reply: Option<Reply>,
    seen: Vec<Seen>,
}

enum Addr {
    Tcp(u16),
    Unix(PathBuf),
}

struct Fake {
    addr: Addr,
    state: Arc<Mutex<FakeState>>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

trait Conn: Read + Write + Send + 'static {}
impl<T: Read + Write + Send + 'static> Conn for T {}

impl Fake {
    fn tcp(reply: Reply) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        Fake::start(Addr::Tcp(port), reply, move || {
            let (s, _) = l.accept().ok()?;
            s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
            Some(Box::new(s) as Box<dyn Conn>)
        })
    }

    fn unix(path: &Path, reply: Reply) -> Fake {
        let l = UnixListener::bind(path).unwrap();
        Fake::start(Addr::Unix(path.to_path_buf()), reply, move || {
            let (s, _) = l.accept().ok()?;
            s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
            Some(Box::new(s) as Box<dyn Conn>)
        })
    }

    fn start(addr: Addr, reply: Reply, mut accept: impl FnMut() -> Option<Box<dyn Conn>> + Send + 'static) -> Fake {
        let state = Arc::new(Mutex::new(FakeState { reply: Some(reply), seen: Vec::new() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let accept = std::thread::spawn(move || loop {
            let conn = accept();
            if sp.load(Ordering::SeqCst) {
                return;
            }
            if let Some(c) = conn {
                let st = st.clone();
                std::thread::spawn(move || serve(c, &st));
            }
        });
        Fake { addr, state, stop, accept: Some(accept) }
    }

    /// `http://127.0.0.1:PORT`.
    fn url(&self) -> String {
        match &self.addr {
            Addr::Tcp(p) => format!("http://127.0.0.1:{p}"),
            Addr::Unix(p) => panic!("{} is a socket", p.display()),
        }
    }

    fn set(&self, reply: Reply) {
        self.state.lock().unwrap().reply = Some(reply);
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop with one last connection.
        match &self.addr {
            Addr::Tcp(p) => drop(std::net::TcpStream::connect(("127.0.0.1", *p))),
            Addr::Unix(p) => drop(std::os::unix::net::UnixStream::connect(p)),
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(conn: Box<dyn Conn>, state: &Mutex<FakeState>) {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let n: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; n];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = {
        let mut st = state.lock().unwrap();
        st.seen.push(Seen { path, headers, body: body.clone() });
        st.reply.clone().unwrap()
    };
    let (status, out) = match reply {
        Reply::OpenAi { text, prompt, completion } => (
            200,
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            })
            .to_string(),
        ),
        Reply::Anthropic { text, input, output } => (
            200,
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "usage": {"input_tokens": input, "output_tokens": output}
            })
            .to_string(),
        ),
        Reply::Status(s, b) => (s, b),
        Reply::Silent => {
            // Until the client gives up and closes the connection.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
            return;
        }
    };
    let mut w = r.into_inner();
    let _ = write!(w, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}", out.len());
    let _ = w.flush();
}

fn openai(text: &'static str, prompt: u64, completion: u64) -> Reply {
    Reply::OpenAi { text, prompt, completion }
}

// ---------------------------------------------------------------------------------------------
// Configurations and routers

struct Env {
    dir: tempfile::TempDir,
    clock: Arc<AtomicU64>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("ghost-router-").tempdir().unwrap();
        std::fs::write(dir.path().join("key"), format!("{KEY}\n")).unwrap();
        Env { dir, clock: Arc::new(AtomicU64::new(T0)) }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn key_file(&self) -> String {
        self.path().join("key").display().to_string()
    }

    /// A socket path where nothing listens.
    fn no_socket(&self) -> String {
        self.path().join("nobody.sock").display().to_string()
    }

    fn config(&self, toml: &str) -> Result<RouterConfig, String> {
        let file = self.path().join("model.toml");
        std::fs::write(&file, toml).unwrap();
        RouterConfig::load(&file, &|p: &Path| p.to_path_buf()).map_err(|e| e.to_string())
    }

    /// A router over `toml`, with its directory under the temp dir and the test's clock.
    fn router(&self, toml: &str) -> Router {
        let cfg = self.config(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let c = self.clock.clone();
        Router::from_config(&cfg, self.path().join("router"), Arc::new(move || c.load(Ordering::SeqCst)))
    }

    fn calls(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path().join("router/calls.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
    }
}

fn local_url(layer: &str, url: &str) -> String {
    format!("[router.{layer}]\nurl = \"{url}\"\nmodel = \"{layer}-model\"\n")
}

fn local_socket(layer: &str, socket: &str) -> String {
    format!("[router.{layer}]\nsocket = \"{socket}\"\nmodel = \"{layer}-model\"\n")
}

struct Strategic<'a> {
    api: &'a str,
    url: String,
    key_file: String,
    daily_tokens: u64,
    daily_usd: f64,
    usd_in: f64,
    usd_out: f64,
    timeout_s: u64,
}

impl Strategic<'_> {
    fn toml(&self) -> String {
        format!(
            "[router.strategic]\napi = \"{}\"\nurl = \"{}/v1\"\nmodel = \"remote-model\"\napi_key_file = \"{}\"\ndaily_tokens = {}\ndaily_usd = {:?}\nusd_per_million_input = {:?}\nusd_per_million_output = {:?}\ntimeout_s = {}\n",
            self.api, self.url, self.key_file, self.daily_tokens, self.daily_usd, self.usd_in, self.usd_out, self.timeout_s
        )
    }
}

fn strategic(env: &Env, remote: &Fake, daily_tokens: u64, daily_usd: f64) -> String {
    Strategic { api: "openai", url: remote.url(), key_file: env.key_file(), daily_tokens, daily_usd, usd_in: 0.0, usd_out: 0.0, timeout_s: 10 }.toml()
}

fn code(prompt: &str, max_tokens: u32) -> Request {
    Request::new(Need::Code, prompt).max_tokens(max_tokens)
}

fn worst(req: &Request) -> u64 {
    let (p, c) = worst_case_tokens(req);
    p + c
}

fn reason_of(r: &Routed, layer: Layer) -> &Reason {
    &r.fallbacks.iter().find(|f| f.layer == layer).unwrap_or_else(|| panic!("{layer} not among the fallbacks: {:?}", r.fallbacks)).reason
}

// ---------------------------------------------------------------------------------------------
// Wire protocols

#[test]
fn openai_remote_gets_the_key_model_and_cap_and_its_usage_is_charged() {
    let env = Env::new();
    let remote = Fake::tcp(openai("fn main() {}", 30, 12));
    let local = Fake::tcp(openai("local", 1, 1));
    let toml = format!(
        "{}{}",
        local_url("operational", &local.url()),
        Strategic {
            api: "openai",
            url: remote.url(),
            key_file: env.key_file(),
            daily_tokens: 100_000,
            daily_usd: 10.0,
            usd_in: 1.0,
            usd_out: 2.0,
            timeout_s: 10
        }
        .toml()
    );
    let router = env.router(&toml);
    let mut req = code("write hello world", 64);
    req.messages.insert(0, Message::system("you write Rust"));
    let r = router.route(&req, None).unwrap();
    assert_eq!((r.text.as_str(), r.layer, r.model.as_str()), ("fn main() {}", Layer::Strategic, "remote-model"));
    assert!(r.fallbacks.is_empty() && r.note.is_none(), "{r:?}");
    assert_eq!((r.tokens.prompt, r.tokens.completion), (30, 12));
    assert!((r.cost_usd - (30.0 * 1e-6 + 12.0 * 2e-6)).abs() < 1e-12, "{}", r.cost_usd);
    assert_eq!(local.count(), 0, "the local model was not asked");

    let seen = remote.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.path, "/v1/chat/completions");
    assert_eq!(s.headers.get("authorization").map(String::as_str), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(s.body["model"], "remote-model");
    assert_eq!(s.body["max_tokens"], 64, "the answer is capped at what the budget reserved");
    assert_eq!(s.body["messages"], json!([{"role": "system", "content": "you write Rust"}, {"role": "user", "content": "write hello world"}]));

    let u = router.usage_today().unwrap().unwrap();
    assert_eq!((u.day.as_str(), u.tokens_used, u.tokens_reserved, u.calls), ("2025-03-01", 42, 0, 1));
    assert!((u.usd_used - r.cost_usd).abs() < 1e-12);
    // The key is nowhere on disk but in its own file.
    for e in std::fs::read_dir(env.path().join("router")).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        assert!(!text.contains(KEY), "{} has the key", e.path().display());
    }
}

#[test]
fn anthropic_remote_gets_its_headers_and_system_prompt() {
    let env = Env::new();
    let remote = Fake::tcp(Reply::Anthropic { text: "plan: 1. 2. 3.", input: 11, output: 7 });
    let toml = format!(
        "{}{}",
        local_socket("operational", &env.no_socket()),
        Strategic {
            api: "anthropic",
            url: remote.url(),
            key_file: env.key_file(),
            daily_tokens: 10_000,
            daily_usd: 1.0,
            usd_in: 3.0,
            usd_out: 15.0,
            timeout_s: 10
        }
        .toml()
    );
    let router = env.router(&toml);
    let mut req = code("make a plan", 100);
    req.messages.insert(0, Message::system("be brief"));
    let r = router.route(&req, None).unwrap();
    assert_eq!((r.text.as_str(), r.layer, r.tokens.prompt, r.tokens.completion), ("plan: 1. 2. 3.", Layer::Strategic, 11, 7));
    let s = &remote.seen()[0];
    assert_eq!(s.path, "/v1/messages");
    assert_eq!(s.headers.get("x-api-key").map(String::as_str), Some(KEY));
    assert_eq!(s.headers.get("anthropic-version").map(String::as_str), Some("2023-06-01"));
    assert!(!s.headers.contains_key("authorization"));
    assert_eq!(s.body["model"], "remote-model");
    assert_eq!(s.body["system"], "be brief");
    assert_eq!(s.body["messages"], json!([{"role": "user", "content": "make a plan"}]));
    assert_eq!(s.body["max_tokens"], 100);
}

// ---------------------------------------------------------------------------------------------
// Budget

/// Routes `req` until the strategic layer is refused (at most `max` times); returns how many
/// calls the remote answered. Checks on the way that the budget refused only when it had to.
fn spend_until_refused(router: &Router, remote: &Fake, req: &Request, daily_tokens: u64, max: usize) -> (usize, Routed) {
    let mut answered = 0;
    for _ in 0..max {
        let before = router.usage_today().unwrap().unwrap();
        let seen_before = remote.count();
        let r = router.route(req, None).unwrap();
        match r.layer {
            Layer::Strategic => {
                answered += 1;
                assert!(before.tokens_used + worst(req) <= daily_tokens, "a call whose worst case did not fit was made");
            }
            Layer::Operational => {
                assert_eq!(remote.count(), seen_before, "a refused call must not reach the remote");
                return (answered, r);
            }
            other => panic!("answered by {other}"),
        }
    }
    panic!("the budget never refused within {max} calls");
}

#[test]
fn token_budget_stops_the_remote_and_falls_back_to_operational() {
    let env = Env::new();
    let remote = Fake::tcp(openai("remote", 20, 100));
    let local = Fake::tcp(openai("local answer", 5, 5));
    let daily = 1000;
    let router = env.router(&format!("{}{}", local_url("operational", &local.url()), strategic(&env, &remote, daily, 100.0)));
    let req = code("p", 200);
    let (answered, r) = spend_until_refused(&router, &remote, &req, daily, 20);
    assert!(answered >= 2, "{answered}");
    assert_eq!(remote.count(), answered);
    let u = router.usage_today().unwrap().unwrap();
    assert_eq!(u.tokens_used, 120 * answered as u64, "the ledger holds what the remote reported");
    assert!(u.tokens_used <= daily);
    assert!(u.tokens_used + worst(&req) > daily, "refused although the worst case fitted: {u:?}");
    // What the user sees.
    assert_eq!(r.text, "local answer");
    let Reason::OverBudget(why) = reason_of(&r, Layer::Strategic) else { panic!("{:?}", r.fallbacks) };
    assert!(why.starts_with(&format!("daily budget: {} of {daily} tokens used", u.tokens_used)), "{why}");
    let note = r.note.clone().unwrap();
    assert!(note.starts_with("strategic is over budget (daily budget: ") && note.ends_with("; used operational"), "{note}");
    assert_eq!(u.refused, 1);
    // Still refused, still not called.
    assert_eq!(router.route(&req, None).unwrap().layer, Layer::Operational);
    assert_eq!(remote.count(), answered);
    // A smaller request that fits is still served.
    let small = code("p", (daily - u.tokens_used - (worst(&req) - 200)) as u32);
    assert!(worst(&small) <= daily - u.tokens_used);
    assert_eq!(router.route(&small, None).unwrap().layer, Layer::Strategic);
}

#[test]
fn money_budget_binds_before_tokens() {
    let env = Env::new();
    let remote = Fake::tcp(openai("remote", 10, 100));
    let local = Fake::tcp(openai("local", 1, 1));
    let s = Strategic {
        api: "openai",
        url: remote.url(),
        key_file: env.key_file(),
        daily_tokens: 1 << 40,
        daily_usd: 0.01,
        usd_in: 10.0,
        usd_out: 30.0,
        timeout_s: 10,
    };
    let router = env.router(&format!("{}{}", local_url("operational", &local.url()), s.toml()));
    let req = code("p", 100);
    let (answered, r) = spend_until_refused(&router, &remote, &req, 1 << 40, 20);
    // Each call costs 10 × $10/M + 100 × $30/M = $0.0031; its worst case a little more.
    assert_eq!(answered, 3);
    let u = router.usage_today().unwrap().unwrap();
    assert!((u.usd_used - 3.0 * 0.0031).abs() < 1e-9 && u.usd_used <= 0.01, "{u:?}");
    let Reason::OverBudget(why) = reason_of(&r, Layer::Strategic) else { panic!("{:?}", r.fallbacks) };
    assert!(why.starts_with("daily budget: $0.009300 of $0.010000 used; this call may cost up to $0.003"), "{why}");
}

#[test]
fn budget_survives_a_new_router_and_resets_the_next_utc_day() {
    let env = Env::new();
    let remote = Fake::tcp(openai("remote", 20, 100));
    let local = Fake::tcp(openai("local", 1, 1));
    let toml = format!("{}{}", local_url("operational", &local.url()), strategic(&env, &remote, 500, 100.0));
    let req = code("p", 200);
    let answered = {
        let first = env.router(&toml);
        spend_until_refused(&first, &remote, &req, 500, 10).0
    };
    // A new router (another process, after a restart) reads the same ledger.
    let second = env.router(&toml);
    assert_eq!(second.usage_today().unwrap().unwrap().tokens_used, 120 * answered as u64);
    assert_eq!(second.route(&req, None).unwrap().layer, Layer::Operational);
    assert_eq!(remote.count(), answered);
    // 14:00 UTC the same day: still refused. Midnight UTC: a fresh day.
    env.clock.store(T0 + 4 * 3_600_000, Ordering::SeqCst);
    assert_eq!(second.route(&req, None).unwrap().layer, Layer::Operational);
    env.clock.store(T0 + DAY_MS - 10 * 3_600_000, Ordering::SeqCst);
    let r = second.route(&req, None).unwrap();
    assert_eq!(r.layer, Layer::Strategic, "{:?}", r.note);
    let u = second.usage_today().unwrap().unwrap();
    assert_eq!((u.day.as_str(), u.tokens_used), ("2025-03-02", 120));
    assert!(env.path().join("router/budget-2025-03-01.json").is_file() && env.path().join("router/budget-2025-03-02.json").is_file());
}

#[test]
fn racing_routers_cannot_overspend() {
    let env = Env::new();
    let req = code("race", 50);
    let w = worst(&req);
    let (p, c) = worst_case_tokens(&req);
    // The remote reports each call's full worst case: room for exactly five.
    let remote = Fake::tcp(openai("remote", p, c));
    let local = Fake::tcp(openai("local", 1, 1));
    let toml = format!("{}{}", local_url("operational", &local.url()), strategic(&env, &remote, 5 * w, 100.0));
    let routers = [Arc::new(env.router(&toml)), Arc::new(env.router(&toml))];
    let threads = 12;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (router, barrier, req) = (routers[i % 2].clone(), barrier.clone(), req.clone());
            std::thread::spawn(move || {
                barrier.wait();
                router.route(&req, None).unwrap().layer
            })
        })
        .collect();
    let layers: Vec<Layer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let remote_answers = layers.iter().filter(|l| **l == Layer::Strategic).count();
    assert_eq!(remote_answers, 5, "{layers:?}");
    assert_eq!(remote.count(), 5);
    assert_eq!(local.count(), threads - 5);
    let u = routers[0].usage_today().unwrap().unwrap();
    assert_eq!((u.tokens_used, u.tokens_reserved, u.refused), (5 * w, 0, threads as u64 - 5));
}

// ---------------------------------------------------------------------------------------------
// Fallback

#[test]
fn tactical_down_is_passed_over_and_named() {
    let env = Env::new();
    let dead = free_port();
    let remote = Fake::tcp(openai("remote plan", 10, 10));
    let toml = format!(
        "{}{}{}",
        local_socket("operational", &env.no_socket()),
        local_url("tactical", &format!("http://127.0.0.1:{dead}")),
        strategic(&env, &remote, 10_000, 1.0)
    );
    let router = env.router(&toml);
    let r = router.route(&Request::new(Need::Plan, "plan the upgrade"), None).unwrap();
    assert_eq!((r.text.as_str(), r.layer), ("remote plan", Layer::Strategic));
    assert_eq!(r.fallbacks, vec![Fallback { layer: Layer::Tactical, reason: Reason::Down(format!("connection refused to 127.0.0.1:{dead}")) }]);
    assert_eq!(r.note.as_deref(), Some(format!("tactical is down (connection refused to 127.0.0.1:{dead}); used strategic").as_str()));
    // The log has both attempts of the one request.
    let calls = env.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!((calls[0]["layer"].as_str(), calls[0]["ok"].as_bool()), (Some("tactical"), Some(false)));
    assert!(calls[0]["error"].as_str().unwrap().contains("connection refused"));
    assert_eq!(calls[0]["fallback_from"], Value::Null);
    assert_eq!((calls[1]["layer"].as_str(), calls[1]["ok"].as_bool(), calls[1]["fallback_from"].as_str()), (Some("strategic"), Some(true), Some("tactical")));
    assert_eq!(calls[0]["id"], calls[1]["id"]);
}

#[test]
fn plan_falls_down_to_operational_on_its_socket() {
    let env = Env::new();
    let sock = env.path().join("model.sock");
    let local = Fake::unix(&sock, openai("local plan", 9, 4));
    let dead = free_port();
    let toml = format!("{}{}", local_socket("operational", &sock.display().to_string()), local_url("tactical", &format!("http://127.0.0.1:{dead}")));
    let router = env.router(&toml);
    let r = router.route(&Request::new(Need::Plan, "plan it").max_tokens(32), None).unwrap();
    assert_eq!((r.text.as_str(), r.layer, r.model.as_str(), r.cost_usd), ("local plan", Layer::Operational, "operational-model", 0.0));
    assert_eq!((r.tokens.prompt, r.tokens.completion), (9, 4));
    assert_eq!(r.fallbacks.len(), 2);
    assert!(matches!(&r.fallbacks[0], Fallback { layer: Layer::Tactical, reason: Reason::Down(_) }));
    assert_eq!(r.fallbacks[1], Fallback { layer: Layer::Strategic, reason: Reason::NotConfigured });
    assert!(r.note.as_deref().unwrap().ends_with("; strategic is not configured; used operational"), "{:?}", r.note);
    let s = &local.seen()[0];
    assert_eq!((s.path.as_str(), s.body["model"].as_str(), s.body["max_tokens"].as_u64()), ("/v1/chat/completions", Some("operational-model"), Some(32)));
    assert!(!s.headers.contains_key("authorization"), "no key goes to a local server");
}

#[test]
fn remote_errors_fall_back_cost_nothing_and_are_remembered() {
    let env = Env::new();
    let remote = Fake::tcp(Reply::Status(500, r#"{"error":{"message":"overloaded"}}"#.into()));
    let local = Fake::tcp(openai("local", 1, 1));
    let toml = format!("{}{}", local_url("operational", &local.url()), strategic(&env, &remote, 10_000, 1.0));
    let router = env.router(&toml);
    let r = router.route(&code("x", 100), None).unwrap();
    assert_eq!(r.layer, Layer::Operational);
    let want = format!("HTTP 500 from {}/v1/chat/completions: overloaded", remote.url());
    assert_eq!(reason_of(&r, Layer::Strategic), &Reason::Down(want.clone()));
    let u = router.usage_today().unwrap().unwrap();
    assert_eq!((u.tokens_used, u.tokens_reserved), (0, 0), "an error answer is not billed");
    // Within the down memory the remote is not tried again, and the reason says so.
    let r = router.route(&code("x", 100), None).unwrap();
    assert_eq!(remote.count(), 1);
    let Reason::Down(d) = reason_of(&r, Layer::Strategic) else { panic!() };
    assert!(d.starts_with(&format!("{want}; last tried ")) && d.ends_with(" s ago"), "{d}");

    // A 401 that echoes the key: passed over as failed, with the key blanked out.
    remote.set(Reply::Status(401, format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#)));
    let router = env.router(&toml).with_down_memory(Duration::ZERO);
    let r = router.route(&code("x", 100), None).unwrap();
    let Reason::Failed(d) = reason_of(&r, Layer::Strategic) else { panic!("{:?}", r.fallbacks) };
    assert!(d.ends_with("Incorrect API key provided: [key]"), "{d}");
    assert!(!std::fs::read_to_string(env.path().join("router/calls.jsonl")).unwrap().contains(KEY));
}

#[test]
fn a_silent_remote_times_out_and_is_charged_its_worst_case() {
    let env = Env::new();
    let remote = Fake::tcp(Reply::Silent);
    let local = Fake::tcp(openai("local", 1, 1));
    let s =
        Strategic { api: "openai", url: remote.url(), key_file: env.key_file(), daily_tokens: 10_000, daily_usd: 1.0, usd_in: 0.0, usd_out: 0.0, timeout_s: 1 };
    let router = env.router(&format!("{}{}", local_url("operational", &local.url()), s.toml()));
    let req = code("x", 100);
    let t = Instant::now();
    let r = router.route(&req, None).unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(r.layer, Layer::Operational);
    assert_eq!(reason_of(&r, Layer::Strategic), &Reason::Down("timed out after 1 s".into()));
    // The request was sent: the API may bill it, so the ledger counts its worst case.
    assert_eq!(router.usage_today().unwrap().unwrap().tokens_used, worst(&req));
}

#[test]
fn every_layer_down_is_an_error_naming_each() {
    let env = Env::new();
    let dead = free_port();
    let remote = Fake::tcp(Reply::Status(503, "busy".into()));
    let toml = format!(
        "{}{}{}",
        local_socket("operational", &env.no_socket()),
        local_url("tactical", &format!("http://127.0.0.1:{dead}")),
        strategic(&env, &remote, 10_000, 1.0)
    );
    let router = env.router(&toml);
    let e = router.route(&Request::new(Need::Decide, "restart nginx?"), None).unwrap_err();
    let RouteError::AllFailed { need, attempts } = &e else { panic!("{e}") };
    assert_eq!(*need, Need::Decide);
    assert_eq!(attempts.iter().map(|f| f.layer).collect::<Vec<_>>(), vec![Layer::Operational, Layer::Tactical, Layer::Strategic]);
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("no layer could serve decide: operational: down: no socket at {}; ", env.no_socket())), "{msg}");
    assert!(msg.contains(&format!("tactical: down: connection refused to 127.0.0.1:{dead}; ")), "{msg}");
    assert!(msg.contains("strategic: down: HTTP 503 from ") && msg.ends_with(": busy"), "{msg}");
    assert_eq!(env.calls().iter().filter(|c| c["ok"] == false).count(), 3);
}

// ---------------------------------------------------------------------------------------------
// Reactive rules and records

#[test]
fn rules_answer_classification_without_any_request() {
    let env = Env::new();
    let remote = Fake::tcp(openai("remote", 1, 1));
    let local = Fake::tcp(openai("local label", 3, 2));
    let router = env.router(&format!("{}{}", local_url("operational", &local.url()), strategic(&env, &remote, 10_000, 1.0)));
    let rules = |t: &str| t.contains("No space left").then(|| "disk-full".to_string());
    let r = router.route(&Request::new(Need::Classify, "write failed: No space left on device"), Some(&rules)).unwrap();
    assert_eq!((r.text.as_str(), r.layer, r.model.as_str(), r.cost_usd, r.tokens.total()), ("disk-full", Layer::Reactive, "rules", 0.0, 0));
    assert_eq!((local.count(), remote.count()), (0, 0), "no model was asked");
    let calls = env.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0]["layer"].as_str(), calls[0]["ok"].as_bool(), calls[0]["cost_usd"].as_f64()), (Some("reactive"), Some(true), Some(0.0)));
    // Rules that do not know: the operational model classifies, and that is no fallback.
    let r = router.route(&Request::new(Need::Classify, "segfault in nginx"), Some(&rules)).unwrap();
    assert_eq!((r.text.as_str(), r.layer, r.note.clone()), ("local label", Layer::Operational, None));
    assert!(r.fallbacks.is_empty());
    // Rules are for classification only.
    let r = router.route(&Request::new(Need::Decide, "No space left: what now?"), Some(&rules)).unwrap();
    assert_eq!(r.layer, Layer::Operational);
    assert_eq!(remote.count(), 0);
}

#[test]
fn call_log_lines_have_every_field() {
    let env = Env::new();
    let remote = Fake::tcp(openai("remote", 40, 60));
    let local = Fake::tcp(openai("local", 7, 3));
    let s =
        Strategic { api: "openai", url: remote.url(), key_file: env.key_file(), daily_tokens: 300, daily_usd: 1.0, usd_in: 1.0, usd_out: 1.0, timeout_s: 10 };
    let router = env.router(&format!("{}{}", local_url("operational", &local.url()), s.toml()));
    router.route(&code("a", 200), None).unwrap();
    router.route(&code("b", 200), None).unwrap(); // over budget: operational
    router.route(&Request::new(Need::Decide, "c"), None).unwrap();
    let calls = env.calls();
    let fields = ["ts", "id", "need", "layer", "model", "ok", "latency_ms", "prompt_tokens", "completion_tokens", "cost_usd", "error", "fallback_from"];
    for c in &calls {
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = fields.to_vec();
        want.sort();
        let mut got = keys.clone();
        got.sort();
        assert_eq!(got, want, "{c}");
        assert!(c["ts"].as_str().unwrap().starts_with("2025-03-01T10:00:00"), "{c}");
        assert!(c["latency_ms"].as_u64().unwrap() < 10_000);
    }
    type Line<'a> = (&'a str, &'a str, bool, u64, u64, Option<&'a str>);
    let summary: Vec<Line> = calls
        .iter()
        .map(|c| {
            (
                c["need"].as_str().unwrap(),
                c["layer"].as_str().unwrap(),
                c["ok"].as_bool().unwrap(),
                c["prompt_tokens"].as_u64().unwrap(),
                c["completion_tokens"].as_u64().unwrap(),
                c["fallback_from"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("code", "strategic", true, 40, 60, None),
            ("code", "strategic", false, 0, 0, None),
            ("code", "operational", true, 7, 3, Some("strategic")),
            ("decide", "operational", true, 7, 3, None),
        ]
    );
    assert!((calls[0]["cost_usd"].as_f64().unwrap() - 100e-6).abs() < 1e-12);
    assert_eq!(calls[0]["model"], "remote-model");
    assert_eq!(calls[0]["error"], Value::Null);
    assert!(calls[1]["error"].as_str().unwrap().starts_with("over budget: daily budget: 100 of 300 tokens used"), "{}", calls[1]);
    assert_eq!(calls[2]["model"], "operational-model");
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert_eq!(calls[1]["id"], calls[2]["id"]);
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn config_errors_name_the_file_and_the_key() {
    let env = Env::new();
    let file = env.path().join("model.toml").display().to_string();
    let good = Strategic {
        api: "openai",
        url: "http://127.0.0.1:1".into(),
        key_file: env.key_file(),
        daily_tokens: 10,
        daily_usd: 1.0,
        usd_in: 0.0,
        usd_out: 0.0,
        timeout_s: 10,
    }
    .toml();
    assert!(env.config(&good).is_ok());
    std::fs::write(env.path().join("empty-key"), "\n").unwrap();
    let missing = env.path().join("no-such-key").display().to_string();
    let cases = [
        (good.replace("model = ", "modle = "), "router.strategic.modle: unknown key".to_string()),
        (good.replace("daily_tokens = 10", "daily_tokens = \"10\""), "router.strategic.daily_tokens: expected a whole number, found string \"10\"".into()),
        (good.replace(&env.key_file(), &missing), format!("router.strategic.api_key_file: cannot read {missing}: ")),
        (good.replace(&env.key_file(), &env.path().join("empty-key").display().to_string()), "router.strategic.api_key_file: ".into()),
        (good.replace("daily_usd = 1.0\n", ""), "router.strategic.daily_usd: missing".into()),
        ("[router.tactical]\nport = 8081\n".into(), "router.tactical.port: unknown key".into()),
    ];
    for (toml, needle) in cases {
        let e = env.config(&toml).expect_err(&toml);
        assert!(e.starts_with(&format!("{file}: ")), "{e}");
        assert!(e.contains(&needle), "{e}\nshould contain {needle:?}");
        assert!(!e.contains(KEY));
    }
    let e = env.config(&good.replace(&env.key_file(), &env.path().join("empty-key").display().to_string())).unwrap_err();
    assert!(e.contains("empty-key") && e.contains("empty"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// ghost model ask

fn ghost_ask(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("ghost"))
        .args(["model", "ask"])
        .args(args)
        .env("GHOST_ROOT", root)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("http_proxy")
        .stdin(Stdio::null())
        .output()
        .expect("run ghost")
}

#[test]
fn ghost_model_ask_end_to_end() {
    let root = tempfile::Builder::new().prefix("ghost-root-").tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/ghost/keys")).unwrap();
    std::fs::write(r.join("etc/ghost/keys/strategic"), KEY).unwrap();
    let remote = Fake::tcp(openai("fn answer() -> u32 { 42 }", 12, 9));
    let local = Fake::tcp(openai("restart it", 4, 2));
    let toml = format!(
        "[[model]]\nrepo = \"a/b\"\n\n{}{}",
        local_url("operational", &local.url()),
        Strategic {
            api: "openai",
            url: remote.url(),
            key_file: "/etc/ghost/keys/strategic".into(),
            daily_tokens: 100_000,
            daily_usd: 1.0,
            usd_in: 1.0,
            usd_out: 1.0,
            timeout_s: 10
        }
        .toml()
    );
    std::fs::write(r.join("etc/ghost/model.toml"), &toml).unwrap();

    let out = ghost_ask(r, &["--need", "code", "--json", "--max-tokens", "50", "write", "the", "answer"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["text"], "fn answer() -> u32 { 42 }");
    assert_eq!(v["layer"], "strategic");
    assert_eq!(v["fallbacks"], json!([]));
    assert_eq!(v["tokens"], json!({"prompt": 12, "completion": 9}));
    assert!((v["cost_usd"].as_f64().unwrap() - 21e-6).abs() < 1e-12, "{v}");
    assert!(v["latency_ms"].is_u64());
    let s = &remote.seen()[0];
    assert_eq!(s.headers["authorization"], format!("Bearer {KEY}"), "the key file is read under GHOST_ROOT");
    assert_eq!((s.body["max_tokens"].as_u64(), s.body["messages"][0]["content"].as_str()), (Some(50), Some("write the answer")));
    assert!(r.join("var/lib/ghost/router/calls.jsonl").is_file());
    assert!(r.join("var/lib/ghost/router/budget.lock").is_file());

    // Plain output; the remote down: the answer from operational and a line saying why.
    remote.set(Reply::Status(502, "bad gateway".into()));
    let out = ghost_ask(r, &["--need", "code", "fix", "it"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "restart it\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ghost: strategic is down (HTTP 502 from ") && err.contains("; used operational"), "{err}");

    // A configuration error names the file and the key, and nothing is asked.
    std::fs::write(r.join("etc/ghost/model.toml"), toml.replace("daily_usd", "daily_dollars")).unwrap();
    let before = (remote.count(), local.count());
    let out = ghost_ask(r, &["--need", "decide", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}: router.strategic.daily_dollars: unknown key", r.join("etc/ghost/model.toml").display())), "{err}");
    assert_eq!((remote.count(), local.count()), before);

    // A bad need is a usage error.
    let out = ghost_ask(r, &["--need", "dream", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
