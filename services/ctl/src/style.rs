//! Colour for the human output: ANSI codes when stdout is a terminal and NO_COLOR is unset
//! (https://no-color.org), plain text otherwise.

use ghost_proto::{Health, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    pub const PLAIN: Style = Style { colour: false };

    /// `no_color` is the value of NO_COLOR; like the convention, only a non-empty value counts.
    pub fn decide(stdout_is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> Style {
        Style { colour: stdout_is_tty && no_color.is_none_or(|v| v.is_empty()) }
    }

    pub fn from_env() -> Style {
        use std::io::IsTerminal;
        Style::decide(std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour && !code.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }

    /// `text` (already padded) in the colour of `state`.
    pub fn state(&self, state: State, text: &str) -> String {
        let code = match state {
            State::Running => "32",
            State::Starting | State::Stopping | State::Backoff => "33",
            State::CrashLoop | State::Blocked => "1;31",
            State::Stopped => "2",
        };
        self.paint(code, text)
    }

    pub fn health(&self, health: Health, text: &str) -> String {
        let code = match health {
            Health::Healthy => "32",
            Health::Unhealthy => "1;31",
            Health::Unknown => "",
        };
        self.paint(code, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(Style::decide(true, None).colour);
        assert!(Style::decide(true, Some(OsStr::new(""))).colour, "an empty NO_COLOR does not count");
        assert!(!Style::decide(true, Some(OsStr::new("1"))).colour);
        assert!(!Style::decide(false, None).colour);
        assert_eq!(Style::PLAIN.state(State::CrashLoop, "x"), "x");
        assert_eq!(Style { colour: true }.state(State::Running, "up"), "\x1b[32mup\x1b[0m");
    }
}
