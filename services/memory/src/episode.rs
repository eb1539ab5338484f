//! Episodes: what the agent observed, decided, did and saw come of it.

use serde::{Deserialize, Serialize};

use crate::MemoryError;

/// The id of an episode: assigned by memory, stable across in-process mode, flush-back,
/// consolidation (archived episodes keep theirs) and restarts.
pub type EpisodeId = i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EpisodeKind {
    Observation,
    Decision,
    Action,
    Outcome,
    Note,
}

impl EpisodeKind {
    pub const ALL: [EpisodeKind; 5] =
        [Self::Observation, Self::Decision, Self::Action, Self::Outcome, Self::Note];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observation => "observation",
            Self::Decision => "decision",
            Self::Action => "action",
            Self::Outcome => "outcome",
            Self::Note => "note",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EpisodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an episode is linked to. `caused_by` builds the decision chains that `why ID` walks
/// (observation → decision → action → outcome); the others are opaque ids of other subsystems.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Links {
    /// The episode that led to this one.
    pub caused_by: Option<EpisodeId>,
    /// The goal this served.
    pub goal: Option<String>,
    /// The rule or playbook (by name) that proposed it.
    pub playbook: Option<String>,
    /// The audited tool call that carried it out.
    pub tool_call: Option<String>,
}

/// One episode as the agent records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub kind: EpisodeKind,
    /// Who or what it is about: a service name, "agent", "kernel", …
    pub source: String,
    /// Unix time in milliseconds.
    pub time_ms: i64,
    /// How much it matters, 0 to 1. Consolidation archives low-salience episodes first.
    pub salience: f32,
    /// One-line summary: what search finds.
    pub text: String,
    /// Anything structured (JSON).
    pub details: serde_json::Value,
    pub links: Links,
}

impl Episode {
    /// An episode at the current time with salience 0.5 and no details or links.
    pub fn new(kind: EpisodeKind, source: impl Into<String>, text: impl Into<String>) -> Self {
        Episode {
            kind,
            source: source.into(),
            time_ms: now_ms(),
            salience: 0.5,
            text: text.into(),
            details: serde_json::Value::Null,
            links: Links::default(),
        }
    }

    pub fn at(mut self, time_ms: i64) -> Self {
        self.time_ms = time_ms;
        self
    }
    pub fn salience(mut self, salience: f32) -> Self {
        self.salience = salience;
        self
    }
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
    pub fn caused_by(mut self, id: EpisodeId) -> Self {
        self.links.caused_by = Some(id);
        self
    }
    pub fn goal(mut self, goal: impl Into<String>) -> Self {
        self.links.goal = Some(goal.into());
        self
    }
    pub fn playbook(mut self, name: impl Into<String>) -> Self {
        self.links.playbook = Some(name.into());
        self
    }
    pub fn tool_call(mut self, id: impl Into<String>) -> Self {
        self.links.tool_call = Some(id.into());
        self
    }

    /// Checks what SQLite's constraints would otherwise reject, naming the field.
    /// `at` prefixes field names ("batch[3].salience") for batches.
    pub(crate) fn validate(&self, at: &str) -> Result<(), MemoryError> {
        let field = |f: &str| if at.is_empty() { f.to_owned() } else { format!("{at}.{f}") };
        if !(0.0..=1.0).contains(&self.salience) {
            return Err(MemoryError::invalid(field("salience"), format!("{} is not between 0 and 1", self.salience)));
        }
        if self.text.trim().is_empty() {
            return Err(MemoryError::invalid(field("text"), "is empty: an episode needs a summary to be found by"));
        }
        if self.source.trim().is_empty() {
            return Err(MemoryError::invalid(field("source"), "is empty"));
        }
        if self.time_ms < 0 {
            return Err(MemoryError::invalid(field("time_ms"), format!("{} is before 1970", self.time_ms)));
        }
        if let Some(id) = self.links.caused_by {
            if id <= 0 {
                return Err(MemoryError::invalid(field("links.caused_by"), format!("{id} is not an episode id")));
            }
        }
        Ok(())
    }
}

/// Where a stored episode lives now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Place {
    /// In the hot tables: searchable by words and meaning.
    Hot,
    /// Moved to the archive by consolidation (a summary episode stands for it in search).
    Archived,
    /// Accepted while the database was unavailable; written when it is back.
    Pending,
}

/// An episode with its id, as memory returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEpisode {
    pub id: EpisodeId,
    #[serde(flatten)]
    pub episode: Episode,
    pub place: Place,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM UTC` of a unix time in milliseconds (for summaries; no time zone files).
pub(crate) fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = ghost_proto::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_matches_known_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(1_795_000_000_000), "2026-11-18 11:06 UTC");
    }

    #[test]
    fn validation_names_the_field() {
        let e = Episode::new(EpisodeKind::Note, "agent", "x").salience(f32::NAN);
        assert!(e.validate("").unwrap_err().to_string().starts_with("salience:"));
        let e = Episode::new(EpisodeKind::Note, "agent", "  ");
        assert!(e.validate("batch[2]").unwrap_err().to_string().starts_with("batch[2].text:"));
        let e = Episode::new(EpisodeKind::Note, "agent", "x").caused_by(0);
        assert!(e.validate("").unwrap_err().to_string().starts_with("links.caused_by:"));
        assert!(Episode::new(EpisodeKind::Note, "agent", "fine").validate("").is_ok());
        assert_eq!(EpisodeKind::parse("outcome"), Some(EpisodeKind::Outcome));
        assert_eq!(EpisodeKind::parse("bogus"), None);
    }
}
