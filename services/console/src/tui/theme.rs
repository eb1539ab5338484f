//! Colours and glyphs that suit the terminal: the full set on a modern terminal emulator, the
//! 16 ANSI colours and the glyphs of the VGA font on the Linux console (`TERM=linux`) and on
//! serial lines, and no colour at all with `NO_COLOR` (https://no-color.org) — selection and
//! emphasis then stay visible through reverse video and bold.

use ghost_proto::{Health, State};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colours {
    /// 256 colours: named colours plus a few greys for selection.
    Full,
    /// The 16 ANSI colours only (the Linux console, serial terminals).
    Basic,
    /// None: modifiers only.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub colours: Colours,
    /// Only glyphs the Linux console's default (CP437) font has: no eighth blocks, no `…`.
    pub console_font: bool,
}

impl Theme {
    pub const PLAIN: Theme = Theme { colours: Colours::None, console_font: true };
    pub const FULL: Theme = Theme { colours: Colours::Full, console_font: false };

    /// From `TERM` and `NO_COLOR` (only a non-empty value counts, as the convention says).
    pub fn decide(term: Option<&str>, no_color: Option<&str>) -> Theme {
        let term = term.unwrap_or("");
        let console_font = term == "linux" || term.is_empty() || term.starts_with("vt") || term == "dumb";
        let colours = if no_color.is_some_and(|v| !v.is_empty()) || term == "dumb" {
            Colours::None
        } else if term.contains("256color") || term.contains("truecolor") || term.starts_with("xterm") || term.starts_with("tmux") || term.starts_with("screen") {
            Colours::Full
        } else {
            Colours::Basic
        };
        Theme { colours, console_font }
    }

    pub fn from_env() -> Theme {
        Theme::decide(std::env::var("TERM").ok().as_deref(), std::env::var("NO_COLOR").ok().as_deref())
    }

    fn fg(&self, c: Color) -> Style {
        match self.colours {
            Colours::None => Style::default(),
            _ => Style::default().fg(c),
        }
    }

    pub fn ok(&self) -> Style {
        self.fg(Color::Green)
    }

    pub fn warn(&self) -> Style {
        self.fg(Color::Yellow)
    }

    pub fn bad(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// A service's stderr line.
    pub fn fg_err(&self) -> Style {
        self.fg(Color::Red)
    }

    pub fn dim(&self) -> Style {
        match self.colours {
            Colours::None => Style::default(),
            _ => Style::default().fg(Color::DarkGray),
        }
    }

    pub fn accent(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn key(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn title(&self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    /// The selected row of a table.
    pub fn selected(&self) -> Style {
        match self.colours {
            Colours::Full => Style::default().bg(Color::Indexed(237)).add_modifier(Modifier::BOLD),
            _ => Style::default().add_modifier(Modifier::REVERSED),
        }
    }

    /// The active tab.
    pub fn tab(&self) -> Style {
        match self.colours {
            Colours::None => Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD),
            _ => Style::default().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD),
        }
    }

    /// A search match in the logs.
    pub fn found(&self) -> Style {
        match self.colours {
            Colours::None => Style::default().add_modifier(Modifier::REVERSED),
            _ => Style::default().fg(Color::Black).bg(Color::Yellow),
        }
    }

    pub fn state(&self, s: State) -> Style {
        match s {
            State::Running => self.ok(),
            State::Starting | State::Stopping | State::Backoff => self.warn(),
            State::CrashLoop | State::Blocked => self.bad(),
            State::Stopped => self.dim(),
        }
    }

    pub fn health(&self, h: Health) -> Style {
        match h {
            Health::Healthy => self.ok(),
            Health::Unhealthy => self.bad(),
            Health::Unknown => Style::default(),
        }
    }

    pub fn bar_set(&self) -> symbols::bar::Set {
        if self.console_font {
            symbols::bar::THREE_LEVELS
        } else {
            symbols::bar::NINE_LEVELS
        }
    }

    pub fn ellipsis(&self) -> &'static str {
        if self.console_font {
            "..."
        } else {
            "…"
        }
    }

    /// What marks the selected row.
    pub fn marker(&self) -> &'static str {
        "> "
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linux_console_gets_16_colours_and_no_color_gets_none() {
        assert_eq!(Theme::decide(Some("linux"), None), Theme { colours: Colours::Basic, console_font: true });
        assert_eq!(Theme::decide(Some("xterm-256color"), None), Theme { colours: Colours::Full, console_font: false });
        assert_eq!(Theme::decide(Some("xterm-256color"), Some("1")).colours, Colours::None);
        assert_eq!(Theme::decide(Some("xterm-256color"), Some("")).colours, Colours::Full, "an empty NO_COLOR does not count");
        assert_eq!(Theme::decide(Some("vt220"), None), Theme { colours: Colours::Basic, console_font: true });
        assert_eq!(Theme::decide(None, None).colours, Colours::Basic);
        assert_eq!(Theme::decide(Some("dumb"), None).colours, Colours::None);
        assert_eq!(Theme::PLAIN.selected(), Style::default().add_modifier(Modifier::REVERSED), "selection stays visible without colour");
    }
}
