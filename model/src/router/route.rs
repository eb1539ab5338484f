//! The router itself: the order in which layers are tried, one attempt at a layer, the budget
//! around a strategic call, and the record of every attempt.

use super::budget::{rfc3339, usd, Budget, BudgetError, Clock, Usage};
use super::config::{Api, ApiKey, LocalEndpoint, LocalLayer, RouterConfig, StrategicLayer};
use super::http::{HttpClient, HttpReply};
use super::records::{CallLog, CallRecord};
use super::wire::{self, WireAnswer};
use super::{fallback_note, Fallback, Layer, Need, ReactiveRules, Reason, Request, RouteError, Routed, Tokens};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tokens a message may take beyond its text (role and framing), counted generously.
const PER_MESSAGE_TOKENS: u64 = 16;
/// Tokens a request may take beyond its messages (the reply's priming).
const PER_REQUEST_TOKENS: u64 = 16;

/// The worst case of a request, `(prompt, completion)` tokens: one token per byte of message
/// text (byte-level BPE tokenizers never make a token of less than a byte) plus
/// [`PER_MESSAGE_TOKENS`] per message and [`PER_REQUEST_TOKENS`], and `max_tokens`.
pub fn worst_case_tokens(req: &Request) -> (u64, u64) {
    let prompt = req.messages.iter().map(|m| m.content.len() as u64 + PER_MESSAGE_TOKENS).sum::<u64>() + PER_REQUEST_TOKENS;
    (prompt, u64::from(req.max_tokens))
}

struct Local {
    client: HttpClient,
    model: String,
    timeout: Duration,
}

struct Remote {
    client: HttpClient,
    api: Api,
    model: String,
    key: ApiKey,
    timeout: Duration,
    budget: Budget,
}

enum Backend<'a> {
    Local(&'a Local),
    Remote(&'a Remote),
}

/// A layer that could not answer, with what the budget and the down memory need to know.
struct Miss {
    reason: Reason,
    /// The server could not be reached or broke down: remember the layer as down.
    down: bool,
}

/// A successful model call.
struct Hit {
    text: String,
    model: String,
    tokens: Tokens,
    cost_usd: f64,
}

/// Which attempt a record is about: request `id`, at `layer`, first routed to `from`.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    id: &'a str,
    need: Need,
    layer: Layer,
    from: Option<Layer>,
}

/// A layer that was found down, and until when that is believed without trying again.
struct Down {
    at: Instant,
    until: Instant,
    reason: String,
}

/// Routes requests to the layers of one configuration; shared by threads (`&self`).
pub struct Router {
    operational: Local,
    tactical: Option<Local>,
    strategic: Option<Remote>,
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    log: CallLog,
    down: Mutex<HashMap<Layer, Down>>,
    down_memory: Duration,
}

fn local(l: &LocalLayer) -> Local {
    let client = match &l.endpoint {
        LocalEndpoint::Socket(p) => HttpClient::unix(p, "/v1"),
        LocalEndpoint::Url(u) if u.ends_with("/v1") => HttpClient::url(u, false),
        LocalEndpoint::Url(u) => HttpClient::url(&format!("{u}/v1"), false),
    };
    Local { client, model: l.model.clone(), timeout: l.timeout }
}

fn remote(s: &StrategicLayer, dir: &Path) -> Remote {
    Remote {
        client: HttpClient::url(&s.url, true),
        api: s.api,
        model: s.model.clone(),
        key: s.api_key.clone(),
        timeout: s.timeout,
        budget: Budget::new(dir, s.daily_tokens, s.daily_usd, s.usd_per_million_input, s.usd_per_million_output, s.timeout.as_millis() as u64),
    }
}

impl Router {
    /// A router for `cfg` that keeps its ledger and call log in `router_dir` (created when
    /// first written) and reads the day from `clock`. Nothing is contacted until a request.
    pub fn from_config(cfg: &RouterConfig, router_dir: impl Into<PathBuf>, clock: Arc<dyn Clock>) -> Router {
        let dir = router_dir.into();
        Router {
            operational: local(&cfg.operational),
            tactical: cfg.tactical.as_ref().map(local),
            strategic: cfg.strategic.as_ref().map(|s| remote(s, &dir)),
            log: CallLog::new(&dir),
            dir,
            clock,
            down: Mutex::new(HashMap::new()),
            down_memory: Duration::from_secs(10),
        }
    }

    /// How long a layer that was found down is skipped before it is tried again (zero: always
    /// try).
    pub fn with_down_memory(mut self, d: Duration) -> Router {
        self.down_memory = d;
        self
    }

    /// The call log's size limit before rotation.
    pub fn with_log_limit(mut self, bytes: u64) -> Router {
        self.log.max_bytes = bytes;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `calls.jsonl` in the router directory.
    pub fn calls_path(&self) -> PathBuf {
        self.log.path()
    }

    /// Whether a layer is configured (the reactive layer and operational always are).
    pub fn configured(&self, layer: Layer) -> bool {
        match layer {
            Layer::Reactive | Layer::Operational => true,
            Layer::Tactical => self.tactical.is_some(),
            Layer::Strategic => self.strategic.is_some(),
        }
    }

    /// The strategic layer's figures for today; `None` without a strategic layer.
    pub fn usage_today(&self) -> Result<Option<Usage>, String> {
        match &self.strategic {
            None => Ok(None),
            Some(r) => r.budget.usage(self.clock.now_unix_ms()).map(Some).map_err(|e| e.to_string()),
        }
    }

    /// The order in which the model layers are tried for `need`: its own layer, the more
    /// capable ones above it, then the less capable ones below it (never the reactive layer).
    pub fn order(need: Need) -> Vec<Layer> {
        let first = need.layer();
        let mut v = vec![first];
        v.extend(Layer::ALL.iter().copied().filter(|l| *l > first));
        v.extend(Layer::ALL.iter().rev().copied().filter(|l| *l < first && *l != Layer::Reactive));
        v
    }

    /// Answers `req` from the cheapest layer that can; see the module documentation.
    pub fn route(&self, req: &Request, reactive: Option<&dyn ReactiveRules>) -> Result<Routed, RouteError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        req.validate().map_err(RouteError::BadRequest)?;
        let start = Instant::now();
        let id = format!("{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let mut warnings = Vec::new();
        if let (Need::Classify, Some(rules)) = (req.need, reactive) {
            let t = Instant::now();
            if let Some(text) = rules.answer(req.last_user_text()) {
                let hit = Hit { text, model: "rules".into(), tokens: Tokens::default(), cost_usd: 0.0 };
                self.record(Attempt { id: &id, need: req.need, layer: Layer::Reactive, from: None }, &hit.model, t.elapsed(), Ok(&hit), &mut warnings);
                return Ok(routed(hit, Layer::Reactive, Vec::new(), start, warnings));
            }
        }
        let first = req.need.layer();
        let mut fallbacks: Vec<Fallback> = Vec::new();
        for layer in Router::order(req.need) {
            let from = (layer != first).then_some(first);
            match self.attempt(layer, req, &id, from, &mut warnings) {
                Ok(hit) => return Ok(routed(hit, layer, fallbacks, start, warnings)),
                Err(reason) => fallbacks.push(Fallback { layer, reason }),
            }
        }
        Err(RouteError::AllFailed { need: req.need, attempts: fallbacks })
    }

    fn attempt(&self, layer: Layer, req: &Request, id: &str, from: Option<Layer>, warnings: &mut Vec<String>) -> Result<Hit, Reason> {
        // The reactive layer is never tried here: `route` asks the rules before the models.
        let backend = match layer {
            Layer::Reactive => return Err(Reason::NotConfigured),
            Layer::Operational => Backend::Local(&self.operational),
            Layer::Tactical => Backend::Local(self.tactical.as_ref().ok_or(Reason::NotConfigured)?),
            Layer::Strategic => Backend::Remote(self.strategic.as_ref().ok_or(Reason::NotConfigured)?),
        };
        if let Some(reason) = self.still_down(layer) {
            return Err(Reason::Down(reason));
        }
        let t = Instant::now();
        let (result, model) = match backend {
            Backend::Remote(r) => (self.call_remote(r, req, warnings), r.model.as_str()),
            Backend::Local(l) => (call_local(l, req), l.model.as_str()),
        };
        match result {
            Ok(hit) => {
                self.record(Attempt { id, need: req.need, layer, from }, model, t.elapsed(), Ok(&hit), warnings);
                self.down.lock().unwrap_or_else(|p| p.into_inner()).remove(&layer);
                Ok(hit)
            }
            Err(miss) => {
                self.record(Attempt { id, need: req.need, layer, from }, model, t.elapsed(), Err(&miss.reason), warnings);
                if miss.down && !self.down_memory.is_zero() {
                    let now = Instant::now();
                    let d = Down { at: now, until: now + self.down_memory, reason: detail(&miss.reason) };
                    self.down.lock().unwrap_or_else(|p| p.into_inner()).insert(layer, d);
                }
                Err(miss.reason)
            }
        }
    }

    /// The reason a layer is still believed down, if it is.
    fn still_down(&self, layer: Layer) -> Option<String> {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match down.get(&layer) {
            Some(d) if d.until > now => Some(format!("{}; last tried {} s ago", d.reason, now.duration_since(d.at).as_secs())),
            Some(_) => {
                down.remove(&layer);
                None
            }
            None => None,
        }
    }

    fn call_remote(&self, r: &Remote, req: &Request, warnings: &mut Vec<String>) -> Result<Hit, Miss> {
        let (prompt, completion) = worst_case_tokens(req);
        let reservation = r.budget.reserve(prompt, completion, self.clock.now_unix_ms()).map_err(|e| Miss {
            reason: Reason::OverBudget(match e {
                BudgetError::Refused(m) => m,
                BudgetError::Ledger(m) => format!("cannot check the budget: budget ledger {m}"),
            }),
            down: false,
        })?;
        let (path, body, key_header) = match r.api {
            Api::OpenAi => ("/chat/completions", wire::openai_request(&r.model, req), ("Authorization", format!("Bearer {}", r.key.expose()))),
            Api::Anthropic => ("/messages", wire::anthropic_request(&r.model, req), ("x-api-key", r.key.expose().to_string())),
        };
        let mut headers: Vec<(&str, &str)> = vec![(key_header.0, key_header.1.as_str())];
        if r.api == Api::Anthropic {
            headers.push(("anthropic-version", wire::ANTHROPIC_VERSION));
        }
        let reply = r.client.post_json(path, &headers, &body, r.timeout);
        let redact = |s: String| s.replace(r.key.expose(), "[key]");
        // What happens to the reservation: released (cannot have been billed), or settled
        // with the reported usage, or at its worst case when that is unknown.
        let mut settle = |used: Option<Tokens>| -> u64 {
            match r.budget.settle(&reservation, used, self.clock.now_unix_ms()) {
                Ok(p) => p,
                Err(e) => {
                    warnings.push(format!("strategic: the call was made but could not be written to the budget: {e}"));
                    used.map(|t| r.budget.cost_pusd(t)).unwrap_or(reservation.pusd)
                }
            }
        };
        let url = r.client.url_of(path);
        let parsed = match reply {
            Err(e) => {
                if e.sent() {
                    settle(None);
                } else if let Err(le) = r.budget.release(&reservation, self.clock.now_unix_ms()) {
                    warnings.push(format!("strategic: {le}"));
                }
                return Err(Miss { reason: Reason::Down(redact(e.to_string())), down: true });
            }
            Ok(HttpReply { status, body }) if !(200..300).contains(&status) => {
                if let Err(le) = r.budget.release(&reservation, self.clock.now_unix_ms()) {
                    warnings.push(format!("strategic: {le}"));
                }
                let msg = redact(format!("HTTP {status} from {url}: {}", wire::error_detail(&body)));
                let down = status >= 500 || status == 429;
                return Err(Miss { reason: if down { Reason::Down(msg) } else { Reason::Failed(msg) }, down });
            }
            Ok(HttpReply { body, .. }) => match r.api {
                Api::OpenAi => wire::parse_openai(&body),
                Api::Anthropic => wire::parse_anthropic(&body),
            },
        };
        match parsed {
            Err(m) => {
                settle(None);
                Err(Miss { reason: Reason::Failed(redact(format!("{url}: {m}"))), down: false })
            }
            Ok(WireAnswer { text, usage }) => {
                let pusd = settle(usage);
                let tokens = usage.unwrap_or(Tokens { prompt, completion });
                Ok(Hit { text, model: r.model.clone(), tokens, cost_usd: usd(pusd) })
            }
        }
    }

    /// One line of calls.jsonl for an attempt.
    fn record(&self, at: Attempt, model: &str, latency: Duration, outcome: Result<&Hit, &Reason>, warnings: &mut Vec<String>) {
        let Attempt { id, need, layer, from: fallback_from } = at;
        let (tokens, cost_usd) = match outcome {
            Ok(h) => (h.tokens, h.cost_usd),
            Err(_) => (Tokens::default(), 0.0),
        };
        let rec = CallRecord {
            ts: rfc3339(self.clock.now_unix_ms()),
            id: id.to_string(),
            need,
            layer,
            model: model.to_string(),
            ok: outcome.is_ok(),
            latency_ms: latency.as_millis() as u64,
            prompt_tokens: tokens.prompt,
            completion_tokens: tokens.completion,
            cost_usd,
            error: outcome.err().map(Reason::to_string),
            fallback_from,
        };
        self.write_record(&rec, warnings);
    }

    fn write_record(&self, rec: &CallRecord, warnings: &mut Vec<String>) {
        if let Err(e) = self.log.append(rec) {
            if !warnings.contains(&e) {
                warnings.push(e);
            }
        }
    }
}

/// The text of a reason without its kind.
fn detail(r: &Reason) -> String {
    match r {
        Reason::NotConfigured => "not configured".into(),
        Reason::Down(d) | Reason::Failed(d) | Reason::OverBudget(d) => d.clone(),
    }
}

fn call_local(l: &Local, req: &Request) -> Result<Hit, Miss> {
    let path = "/chat/completions";
    let body = wire::openai_request(&l.model, req);
    let url = l.client.url_of(path);
    let reply = l.client.post_json(path, &[], &body, l.timeout).map_err(|e| Miss { reason: Reason::Down(e.to_string()), down: true })?;
    if !(200..300).contains(&reply.status) {
        let msg = format!("HTTP {} from {url}: {}", reply.status, wire::error_detail(&reply.body));
        let down = reply.status >= 500 || reply.status == 429;
        return Err(Miss { reason: if down { Reason::Down(msg) } else { Reason::Failed(msg) }, down });
    }
    let a = wire::parse_openai(&reply.body).map_err(|m| Miss { reason: Reason::Failed(format!("{url}: {m}")), down: false })?;
    Ok(Hit { text: a.text, model: l.model.clone(), tokens: a.usage.unwrap_or_default(), cost_usd: 0.0 })
}

fn routed(hit: Hit, layer: Layer, fallbacks: Vec<Fallback>, start: Instant, warnings: Vec<String>) -> Routed {
    Routed {
        note: fallback_note(&fallbacks, layer),
        text: hit.text,
        layer,
        model: hit.model,
        fallbacks,
        latency: start.elapsed(),
        tokens: hit.tokens,
        cost_usd: hit.cost_usd,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::tempfile_lite::Dir;
    use super::super::config::DEFAULT_SOCKET;
    use super::super::Message;
    use super::*;

    #[test]
    fn router_order_goes_up_then_down() {
        use Layer::*;
        assert_eq!(Router::order(Need::Classify), vec![Operational, Tactical, Strategic]);
        assert_eq!(Router::order(Need::Decide), vec![Operational, Tactical, Strategic]);
        assert_eq!(Router::order(Need::Plan), vec![Tactical, Strategic, Operational]);
        assert_eq!(Router::order(Need::Code), vec![Strategic, Tactical, Operational]);
    }

    #[test]
    fn router_worst_case_is_at_least_one_token_per_byte() {
        let mut r = Request::new(Need::Code, "héllo").max_tokens(100);
        assert_eq!(worst_case_tokens(&r), (6 + 16 + 16, 100));
        r.messages.push(Message::assistant("x"));
        assert_eq!(worst_case_tokens(&r).0, 6 + 1 + 32 + 16);
    }

    #[test]
    fn router_reactive_rules_answer_classification_only() {
        let d = Dir::new("router-reactive");
        let sock = d.path().join("none.sock");
        let cfg = RouterConfig::local_only(&|_| sock.clone());
        assert!(cfg.operational.endpoint == LocalEndpoint::Socket(sock.clone()) && DEFAULT_SOCKET.ends_with(".sock"));
        let r = Router::from_config(&cfg, d.path().join("router"), Arc::new(|| 1_740_823_200_000u64));
        let rules = |t: &str| (t.contains("disk")).then(|| "storage".to_string());
        let a = r.route(&Request::new(Need::Classify, "disk full"), Some(&rules)).unwrap();
        assert_eq!((a.text.as_str(), a.layer, a.cost_usd, a.note.clone()), ("storage", Layer::Reactive, 0.0, None));
        let e = r.route(&Request::new(Need::Decide, "disk full"), Some(&rules)).unwrap_err().to_string();
        assert!(e.starts_with("no layer could serve decide: operational: down: no socket at "), "{e}");
        assert!(e.contains("tactical: not configured; strategic: not configured"), "{e}");
        let e = r.route(&Request::new(Need::Code, "x").max_tokens(0), None).unwrap_err();
        assert!(matches!(e, RouteError::BadRequest(_)));
    }
}
