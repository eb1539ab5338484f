//! ghost-agent: the agent's mind, as pure logic the `ghost agent` process drives each beat —
//! what it perceives ([`observation`]), what gets its attention ([`attention`]), what the
//! reactive rules decide ([`rules`]), what keeps actions in check ([`guard`]) and how fast it
//! beats ([`pace`]). Nothing here blocks or does I/O except loading rule files.

pub mod attention;
pub mod guard;
pub mod observation;
pub mod pace;
pub mod perceive;
pub mod rules;

pub use attention::{Attention, Offer};
pub use guard::{Guard, Verdict};
pub use observation::{Observation, Source};
pub use pace::Pace;
pub use rules::{expect_matches, Check, Condition, Decision, Playbook, Rule, RuleSet, Step, Verify};
