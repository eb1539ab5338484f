//! What the agent perceives: one [`Observation`] per event, log match, metric crossing, file
//! change, timer or operator message.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where an observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The supervisor's event stream (exited, crash loop, unhealthy, OOM, …).
    Supervisor,
    /// A service log line that matched a pattern.
    Log,
    /// A system metric against a threshold.
    Metrics,
    /// A watched file changed.
    File,
    Timer,
    Operator,
}

impl Source {
    pub const ALL: [Source; 6] = [Source::Supervisor, Source::Log, Source::Metrics, Source::File, Source::Timer, Source::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Supervisor => "supervisor",
            Source::Log => "log",
            Source::Metrics => "metrics",
            Source::File => "file",
            Source::Timer => "timer",
            Source::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One thing perceived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub source: Source,
    /// What happened, in the source's words: `exited`, `crash_loop`, `oom` (supervisor),
    /// the pattern's name (log), the metric's name (metrics), `changed` (file), …
    pub kind: String,
    /// The service it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A line a person can read.
    pub text: String,
    /// Unix milliseconds.
    pub ts_ms: u64,
    /// 0 (noise) to 1 (act now).
    pub salience: f32,
    /// Source-specific details: a metric's `value`, a file's `path`, an event's `pid`.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

impl Observation {
    pub fn new(source: Source, kind: &str, text: &str, ts_ms: u64) -> Observation {
        Observation { source, kind: kind.to_string(), service: None, text: text.to_string(), ts_ms, salience: 0.5, data: Value::Null }
    }

    pub fn service(mut self, name: &str) -> Observation {
        self.service = Some(name.to_string());
        self
    }

    pub fn salience(mut self, s: f32) -> Observation {
        self.salience = s.clamp(0.0, 1.0);
        self
    }

    pub fn data(mut self, d: Value) -> Observation {
        self.data = d;
        self
    }

    /// What floods are counted by: the same source, kind and service.
    pub fn key(&self) -> (Source, &str, &str) {
        (self.source, self.kind.as_str(), self.service.as_deref().unwrap_or(""))
    }

    /// A numeric detail (`data.value` for metrics).
    pub fn number(&self, field: &str) -> Option<f64> {
        self.data.get(field).and_then(Value::as_f64)
    }
}
