//! The intelligence router: one request names what it needs, and the router picks the cheapest
//! layer of the hierarchy that can serve it, falls back when that layer is down, keeps a
//! remote API within its daily budget, and records every call.
//!
//! ## Layers and needs
//!
//! | layer | what it is | cost |
//! | --- | --- | --- |
//! | reactive | the caller's rules ([`ReactiveRules`]), no model | nothing |
//! | operational | the small local model (`ghost model serve`, `/run/ghost/model.sock`) | nothing |
//! | tactical | a larger local model server, if configured | nothing |
//! | strategic | a remote OpenAI-compatible or Anthropic API, if configured | tokens, money |
//!
//! [`Need::Classify`] is served by the reactive rules when they answer it, else by
//! operational; [`Need::Decide`] by operational, [`Need::Plan`] by tactical, [`Need::Code`] by
//! strategic ([`Need::layer`]). Only classification is ever answered by rules: a plan needs a
//! model, so the rules are not consulted for the other needs, not even as a last resort.
//!
//! ## Falling back
//!
//! When the chosen layer cannot serve — not configured, connection refused, no socket, timed
//! out, an HTTP error, an answer that is not the protocol, or (strategic) a call that could
//! take the day's budget over its limit — the router tries the more capable layers above it,
//! in order, then the less capable ones below it, and says so: [`Routed::fallbacks`] lists
//! every layer passed over with its reason and [`Routed::note`] is one line such as
//! `tactical is down (connection refused to 127.0.0.1:8081); used strategic`. When no layer
//! can serve, [`RouteError::AllFailed`] names each one with its reason.
//!
//! A layer whose server could not be reached (refused, no socket, timeout, 5xx) is remembered
//! as down for a short while ([`Router::with_down_memory`], 10 s by default), so that an agent
//! thread does not wait out the same timeout on every request; the reason then says when it
//! was last tried.
//!
//! ## The budget
//!
//! The strategic layer has a daily token and money budget that is never exceeded: before each
//! call the router reserves the call's worst case ([`worst_case_tokens`]: one token per byte of
//! message text plus a per-message overhead, plus `max_tokens`, which is also sent as the
//! request's cap) and its price, in a ledger shared through a lock file by every process that
//! uses the same router directory; a call whose worst case does not fit beside what is used
//! and reserved today is not made. Afterwards the reservation is settled with the usage the
//! API reports. See [`budget`] for the ledger's file format and the accounting rules.
//!
//! ## Records
//!
//! Every attempt — answered, failed, or refused by the budget — appends one JSON line to
//! `calls.jsonl` in the router directory (`/var/lib/ghost/router`); see [`records`].
//!
//! ## Configuration
//!
//! The `[router]` table of `/etc/ghost/model.toml`; see [`config`]. The API key is read from a
//! file, held in memory only, and never logged, recorded or put into an error message.
//!
//! ## Wire protocols
//!
//! Local layers and OpenAI-compatible remotes: `POST {base}/chat/completions`, where the base
//! of a local server is `/v1` (on its socket or URL); Anthropic: `POST {url}/messages`. See
//! [`wire`]. Plain `http(s)://` goes through ureq; Unix sockets through the small HTTP/1.1
//! client of [`http`]. Every request has an overall deadline.

pub mod budget;
pub mod config;
pub mod http;
pub mod records;
mod route;
pub mod wire;

pub use budget::{utc_date, Clock, SystemClock, Usage};
pub use config::{Api, ConfigError, LocalEndpoint, LocalLayer, RouterConfig, StrategicLayer};
pub use route::{worst_case_tokens, Router};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// What a request needs; decides the layer the router tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    /// Sort an input into one of a few known answers.
    Classify,
    /// Choose what to do next.
    Decide,
    /// Lay out several steps.
    Plan,
    /// Write or change code.
    Code,
}

impl Need {
    pub const ALL: [Need; 4] = [Need::Classify, Need::Decide, Need::Plan, Need::Code];

    /// The cheapest layer that can serve this need (for `Classify`, when no rule answers it).
    pub fn layer(self) -> Layer {
        match self {
            Need::Classify | Need::Decide => Layer::Operational,
            Need::Plan => Layer::Tactical,
            Need::Code => Layer::Strategic,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Need::Classify => "classify",
            Need::Decide => "decide",
            Need::Plan => "plan",
            Need::Code => "code",
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Need {
    type Err = String;
    fn from_str(s: &str) -> Result<Need, String> {
        Need::ALL.into_iter().find(|n| n.as_str() == s).ok_or_else(|| format!("unknown need {s:?} (expected classify, decide, plan or code)"))
    }
}

/// The intelligence hierarchy, from the cheapest to the most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Reactive,
    Operational,
    Tactical,
    Strategic,
}

impl Layer {
    pub const ALL: [Layer; 4] = [Layer::Reactive, Layer::Operational, Layer::Tactical, Layer::Strategic];

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Reactive => "reactive",
            Layer::Operational => "operational",
            Layer::Tactical => "tactical",
            Layer::Strategic => "strategic",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(text: impl Into<String>) -> Message {
        Message { role: Role::System, content: text.into() }
    }
    pub fn user(text: impl Into<String>) -> Message {
        Message { role: Role::User, content: text.into() }
    }
    pub fn assistant(text: impl Into<String>) -> Message {
        Message { role: Role::Assistant, content: text.into() }
    }
}

/// One request to the router.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub need: Need,
    /// The conversation; at least one message.
    pub messages: Vec<Message>,
    /// The most tokens the answer may have (1 to [`MAX_TOKENS_LIMIT`]); sent to every layer as
    /// its cap, and the strategic layer's budget reserves it in full.
    pub max_tokens: u32,
    /// Sampling temperature, 0 to 2.
    pub temperature: f32,
}

/// The largest `max_tokens` a request may ask for.
pub const MAX_TOKENS_LIMIT: u32 = 1 << 20;

impl Request {
    /// One user message, 512 tokens at most, temperature 0.2.
    pub fn new(need: Need, prompt: impl Into<String>) -> Request {
        Request { need, messages: vec![Message::user(prompt)], max_tokens: 512, temperature: 0.2 }
    }

    pub fn max_tokens(mut self, n: u32) -> Request {
        self.max_tokens = n;
        self
    }

    pub fn temperature(mut self, t: f32) -> Request {
        self.temperature = t;
        self
    }

    /// The text the reactive rules see: the last user message.
    pub fn last_user_text(&self) -> &str {
        self.messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.as_str()).unwrap_or("")
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.messages.is_empty() {
            return Err("a request needs at least one message".into());
        }
        if !self.messages.iter().any(|m| m.role == Role::User) {
            return Err("a request needs a user message".into());
        }
        if self.max_tokens == 0 || self.max_tokens > MAX_TOKENS_LIMIT {
            return Err(format!("max_tokens must be 1 to {MAX_TOKENS_LIMIT}, not {}", self.max_tokens));
        }
        if !self.temperature.is_finite() || !(0.0..=2.0).contains(&self.temperature) {
            return Err(format!("temperature must be 0 to 2, not {}", self.temperature));
        }
        Ok(())
    }
}

/// The caller's reactive rules: an answer without any model, or `None` to pass the request on.
/// Consulted for [`Need::Classify`] only. Any `Fn(&str) -> Option<String>` is a rule set.
pub trait ReactiveRules {
    fn answer(&self, text: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> ReactiveRules for F {
    fn answer(&self, text: &str) -> Option<String> {
        self(text)
    }
}

/// Tokens of one call as the serving layer reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }
}

/// Why a layer was passed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Reason {
    /// Nothing in `[router]` for this layer.
    NotConfigured,
    /// Its server could not be reached or broke down (refused, no socket, timeout, 5xx).
    Down(String),
    /// It answered, but not with an answer (a 4xx, or something that is not the protocol).
    Failed(String),
    /// The call's worst case does not fit in what is left of today's budget.
    OverBudget(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Reason::NotConfigured => f.write_str("not configured"),
            Reason::Down(d) => write!(f, "down: {d}"),
            Reason::Failed(d) => write!(f, "failed: {d}"),
            Reason::OverBudget(d) => write!(f, "over budget: {d}"),
        }
    }
}

/// A layer the router passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fallback {
    pub layer: Layer,
    pub reason: Reason,
}

impl Fallback {
    /// "tactical is down (connection refused to 127.0.0.1:8081)".
    pub fn describe(&self) -> String {
        let l = self.layer;
        match &self.reason {
            Reason::NotConfigured => format!("{l} is not configured"),
            Reason::Down(d) => format!("{l} is down ({d})"),
            Reason::Failed(d) => format!("{l} failed ({d})"),
            Reason::OverBudget(d) => format!("{l} is over budget ({d})"),
        }
    }
}

/// An answer and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub text: String,
    /// The layer that answered.
    pub layer: Layer,
    /// The model that answered (`rules` for the reactive layer).
    pub model: String,
    /// Every layer passed over before `layer`, in the order they were tried.
    pub fallbacks: Vec<Fallback>,
    /// One line saying what was passed over and what was used; `None` without fallbacks.
    pub note: Option<String>,
    /// From the start of `route` to the answer, fallbacks included.
    pub latency: Duration,
    /// The usage the answering layer reported; zero for rules and for a local server that
    /// reports none; for a remote that reports none, the worst case it was charged.
    pub tokens: Tokens,
    /// What the answering call cost (0 except for the strategic layer), as charged to the
    /// budget.
    pub cost_usd: f64,
    /// Things that went wrong without costing the answer (e.g. the call log could not be
    /// written).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("no layer could serve {need}: {}", describe_all(.attempts))]
    AllFailed { need: Need, attempts: Vec<Fallback> },
}

fn describe_all(attempts: &[Fallback]) -> String {
    attempts.iter().map(|f| format!("{}: {}", f.layer, f.reason)).collect::<Vec<_>>().join("; ")
}

/// The one-line note of a routed answer.
pub(crate) fn fallback_note(fallbacks: &[Fallback], used: Layer) -> Option<String> {
    if fallbacks.is_empty() {
        return None;
    }
    let passed: Vec<String> = fallbacks.iter().map(Fallback::describe).collect();
    Some(format!("{}; used {used}", passed.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_needs_map_to_the_cheapest_layer() {
        assert_eq!(Need::Classify.layer(), Layer::Operational);
        assert_eq!(Need::Decide.layer(), Layer::Operational);
        assert_eq!(Need::Plan.layer(), Layer::Tactical);
        assert_eq!(Need::Code.layer(), Layer::Strategic);
        assert!(Layer::Reactive < Layer::Operational && Layer::Tactical < Layer::Strategic);
        assert_eq!("plan".parse::<Need>(), Ok(Need::Plan));
        assert!("think".parse::<Need>().unwrap_err().contains("classify, decide, plan or code"));
    }

    #[test]
    fn router_note_says_what_was_passed_over() {
        let f = vec![
            Fallback { layer: Layer::Tactical, reason: Reason::Down("connection refused to 127.0.0.1:8081".into()) },
            Fallback { layer: Layer::Strategic, reason: Reason::NotConfigured },
        ];
        assert_eq!(
            fallback_note(&f, Layer::Operational).unwrap(),
            "tactical is down (connection refused to 127.0.0.1:8081); strategic is not configured; used operational"
        );
        assert_eq!(fallback_note(&[], Layer::Operational), None);
        let e = RouteError::AllFailed { need: Need::Plan, attempts: f };
        assert_eq!(e.to_string(), "no layer could serve plan: tactical: down: connection refused to 127.0.0.1:8081; strategic: not configured");
    }

    #[test]
    fn router_request_validation() {
        assert!(Request::new(Need::Code, "x").validate().is_ok());
        assert!(Request::new(Need::Code, "x").max_tokens(0).validate().unwrap_err().contains("max_tokens"));
        assert!(Request::new(Need::Code, "x").temperature(f32::NAN).validate().unwrap_err().contains("temperature"));
        let mut r = Request::new(Need::Code, "x");
        r.messages = vec![Message::system("s")];
        assert!(r.validate().unwrap_err().contains("user message"));
        r.messages.clear();
        assert!(r.validate().is_err());
    }
}
